-- Work a tenant's models wait on, done in the background (the first run's demo: its data
-- loaded, then an LTV and a churn model trained), so every replica on every node can answer
-- "being trained, ready in about N s" instead of "train one". A row counts as running only
-- while its worker's heartbeat is fresh (kiki.training_jobs): a worker that died leaves a row
-- nobody reads as running.
CREATE TABLE training_jobs (
    tenant_id    uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind         text        NOT NULL CHECK (kind IN ('data', 'ltv', 'churn')),
    purpose      text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    ready_by     timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    detail       text,
    PRIMARY KEY (tenant_id, kind)
);
