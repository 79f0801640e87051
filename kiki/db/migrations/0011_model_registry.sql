-- One model registry for SyncValue and SyncEngage (kiki.model_registry): churn models get the
-- columns LTV models have, so both tables answer the same queries. Churn keeps one serving
-- version (no candidate status), which the registry enforces.
ALTER TABLE churn_models
    ADD COLUMN traffic_percent integer NOT NULL DEFAULT 0
        CHECK (traffic_percent BETWEEN 0 AND 100),
    ADD COLUMN reference jsonb NOT NULL DEFAULT '{}';
UPDATE churn_models SET traffic_percent = 100 WHERE status = 'production';
