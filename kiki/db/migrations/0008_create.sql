-- SyncCreate: generated creatives, grouped per request into an A/B experiment, and the
-- delivery results reported for each variant. The PNGs live on disk under KIKI_HOME.
CREATE TABLE creative_experiments (
    tenant_id     uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    experiment_id uuid        NOT NULL,
    placement     text        NOT NULL,
    -- The request as given (the logo's bytes left out) and the model that answered it.
    request       jsonb       NOT NULL,
    model         jsonb       NOT NULL,
    steps         integer     NOT NULL CHECK (steps > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, experiment_id)
);

CREATE TABLE creatives (
    tenant_id        uuid        NOT NULL,
    creative_id      uuid        NOT NULL,
    experiment_id    uuid        NOT NULL,
    variant          integer     NOT NULL CHECK (variant >= 0),
    seed             bigint      NOT NULL CHECK (seed >= 0),
    prompt           text        NOT NULL,
    copy             jsonb       NOT NULL,  -- headline, call_to_action, disclaimers
    width            integer     NOT NULL,
    height           integer     NOT NULL,
    image_path       text        NOT NULL,  -- relative to KIKI_HOME
    image_sha256     char(64)    NOT NULL,
    compliance_score smallint    NOT NULL CHECK (compliance_score BETWEEN 0 AND 100),
    compliance       jsonb       NOT NULL,
    safety           jsonb       NOT NULL,
    fit              jsonb       NOT NULL,
    layout           jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, creative_id),
    UNIQUE (tenant_id, experiment_id, variant),
    FOREIGN KEY (tenant_id, experiment_id)
        REFERENCES creative_experiments (tenant_id, experiment_id) ON DELETE CASCADE
);

-- Append-only increments (from SyncFlow or any reporter); totals are their sums. A retried
-- report carries the same idempotency key and is applied once.
CREATE TABLE creative_results (
    tenant_id       uuid        NOT NULL,
    experiment_id   uuid        NOT NULL,
    creative_id     uuid        NOT NULL,
    impressions     bigint      NOT NULL CHECK (impressions >= 0),
    clicks          bigint      NOT NULL CHECK (clicks >= 0),
    conversions     bigint      NOT NULL CHECK (conversions >= 0),
    source          text        NOT NULL,
    idempotency_key text        NOT NULL,
    reported_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key, creative_id),
    FOREIGN KEY (tenant_id, creative_id)
        REFERENCES creatives (tenant_id, creative_id) ON DELETE CASCADE
);
CREATE INDEX creative_results_by_experiment ON creative_results (tenant_id, experiment_id);
