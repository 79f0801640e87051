-- SyncEngage CRM sync and retention automation: configured sources, cursors, the link from
-- each CRM record to a customer, merges, and retention rules.

-- A tenant's CRM source and its settings (kiki.engage.crm.sources validates them).
CREATE TABLE engage_crm_sources (
    tenant_id   uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    source      text        NOT NULL CHECK (source IN ('hubspot', 'salesforce', 'shopify', 'postgres')),
    config      jsonb       NOT NULL,
    enabled     boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, source)
);

-- The latest updated_at read, per source and kind; the next sync asks for changes from it.
CREATE TABLE engage_crm_cursors (
    tenant_id   uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    source      text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('contacts', 'orders')),
    cursor      timestamptz NOT NULL,
    synced_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, source, kind)
);

-- Which customer a CRM record is. Erasing the customer erases the link and the merges.
CREATE TABLE engage_crm_links (
    tenant_id   uuid        NOT NULL,
    source      text        NOT NULL,
    external_id text        NOT NULL,
    customer_id text        NOT NULL,
    linked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, source, external_id),
    FOREIGN KEY (tenant_id, customer_id)
        REFERENCES engage_customers (tenant_id, customer_id) ON DELETE CASCADE
);
CREATE INDEX engage_crm_links_customer ON engage_crm_links (tenant_id, customer_id);

-- A CRM record joined to an existing customer because they share an email address.
CREATE TABLE engage_crm_merges (
    id          bigserial   PRIMARY KEY,
    tenant_id   uuid        NOT NULL,
    source      text        NOT NULL,
    external_id text        NOT NULL,
    customer_id text        NOT NULL,
    email       text        NOT NULL,
    merged_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, customer_id)
        REFERENCES engage_customers (tenant_id, customer_id) ON DELETE CASCADE
);
CREATE INDEX engage_crm_merges_customer ON engage_crm_merges (tenant_id, customer_id);
CREATE INDEX engage_customers_email ON engage_customers (tenant_id, lower(email));

-- "churn risk >= 0.7 and LTV >= X -> win_back email" (kiki.engage.retention), evaluated on a
-- schedule; its messages carry the key rule:<rule>:<customer>:<period>, so one per period.
CREATE TABLE engage_retention_rules (
    tenant_id   uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    rule_id     text        NOT NULL CHECK (rule_id ~ '^[a-z0-9_-]{1,64}$'),
    definition  jsonb       NOT NULL,
    enabled     boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, rule_id)
);
