-- SyncValue: customers' purchases, and the registry of trained LTV models.
CREATE TABLE transactions (
    tenant_id     uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- The tenant's own order id: re-loading the same file inserts nothing twice.
    order_id      text        NOT NULL CHECK (length(order_id) BETWEEN 1 AND 128),
    customer_id   text        NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 128),
    occurred_at   timestamptz NOT NULL,
    amount_micros bigint      NOT NULL CHECK (amount_micros >= 0),
    currency      char(3)     NOT NULL,
    quantity      integer     NOT NULL DEFAULT 1 CHECK (quantity >= 0),
    ingested_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, order_id)
);
CREATE INDEX transactions_customer ON transactions (tenant_id, customer_id, occurred_at);

CREATE TABLE ltv_models (
    tenant_id       uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    version         integer     NOT NULL CHECK (version > 0),
    status          text        NOT NULL DEFAULT 'registered'
                                CHECK (status IN ('registered', 'production', 'candidate', 'retired')),
    -- Share of customers (by a stable hash of customer_id) a candidate serves in an A/B test.
    traffic_percent integer     NOT NULL DEFAULT 0 CHECK (traffic_percent BETWEEN 0 AND 100),
    metrics         jsonb       NOT NULL,
    feature_schema  jsonb       NOT NULL,
    config          jsonb       NOT NULL,
    calibration_end date        NOT NULL,
    horizon_days    integer     NOT NULL CHECK (horizon_days > 0),
    data_window     jsonb       NOT NULL,
    artifact_path   text        NOT NULL,
    -- Prediction distribution on the training reference set, for drift (PSI).
    reference       jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    promoted_at     timestamptz,
    PRIMARY KEY (tenant_id, version)
);
-- At most one production and one candidate model per tenant.
CREATE UNIQUE INDEX ltv_models_one_production ON ltv_models (tenant_id)
    WHERE status = 'production';
CREATE UNIQUE INDEX ltv_models_one_candidate ON ltv_models (tenant_id)
    WHERE status = 'candidate';
