-- Audience segments that SyncFlow's ad groups target: which customers belong to each. SyncValue
-- values a segment as the mean predicted LTV of its members; SyncEngage may fill it from its
-- rule-based segments.
CREATE TABLE audience_segments (
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    segment_id  text NOT NULL CHECK (segment_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    customer_id text NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 128),
    PRIMARY KEY (tenant_id, segment_id, customer_id)
);
