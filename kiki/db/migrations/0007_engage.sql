-- SyncEngage: churn models, customer contact profiles, segments, the delivery log and the
-- in-app inbox.

CREATE TABLE churn_models (
    tenant_id       uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    version         integer     NOT NULL CHECK (version > 0),
    status          text        NOT NULL DEFAULT 'registered'
                                CHECK (status IN ('registered', 'production', 'retired')),
    metrics         jsonb       NOT NULL,
    feature_schema  jsonb       NOT NULL,
    config          jsonb       NOT NULL,
    calibration_end date        NOT NULL,
    horizon_days    integer     NOT NULL CHECK (horizon_days > 0),
    data_window     jsonb       NOT NULL,
    artifact_path   text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    promoted_at     timestamptz,
    PRIMARY KEY (tenant_id, version)
);
CREATE UNIQUE INDEX churn_models_one_production ON churn_models (tenant_id)
    WHERE status = 'production';

-- Where and how to reach a customer, and what templates may say about them.
CREATE TABLE engage_customers (
    tenant_id    uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    customer_id  text        NOT NULL CHECK (char_length(customer_id) BETWEEN 1 AND 128),
    email        text        CHECK (char_length(email) <= 254),
    phone        text        CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    push_token   text        CHECK (char_length(push_token) <= 4096),
    first_name   text        CHECK (char_length(first_name) <= 100),
    attributes   jsonb       NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_id)
);

-- A segment is a rule (kiki.engage.rules) compiled to parameterised SQL when evaluated.
CREATE TABLE segments (
    tenant_id    uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    segment_id   text        NOT NULL CHECK (segment_id ~ '^[a-z0-9_-]{1,64}$'),
    name         text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    rule         jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, segment_id)
);

-- One row per message request: refused ones too, with the reason.
CREATE TABLE engage_messages (
    id              bigserial   PRIMARY KEY,
    tenant_id       uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    idempotency_key text        NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    customer_id     text        NOT NULL CHECK (char_length(customer_id) BETWEEN 1 AND 128),
    channel         text        NOT NULL CHECK (channel IN ('email', 'sms', 'push', 'in_app')),
    template        text        NOT NULL,
    status          text        NOT NULL
                                CHECK (status IN ('sending', 'sent', 'failed', 'refused')),
    reason          text,
    provider_id     text,
    subject         text,
    body            text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX engage_messages_idempotency ON engage_messages (tenant_id, idempotency_key);
-- Frequency caps count a customer's recent deliveries.
CREATE INDEX engage_messages_recent ON engage_messages (tenant_id, customer_id, created_at)
    WHERE status IN ('sending', 'sent');

CREATE TABLE engage_inbox (
    id          bigserial   PRIMARY KEY,
    tenant_id   uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    customer_id text        NOT NULL,
    message_id  bigint      NOT NULL REFERENCES engage_messages(id) ON DELETE CASCADE,
    title       text        NOT NULL,
    body        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    read_at     timestamptz
);
CREATE INDEX engage_inbox_customer ON engage_inbox (tenant_id, customer_id, created_at DESC);
