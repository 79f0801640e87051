-- GDPR consent registry (SyncShield) and the audit trail of exports and erasures.

-- Append-only: a change of mind is a new event; the latest by recorded_at (then id) wins.
CREATE TABLE consent_events (
    id              bigserial   PRIMARY KEY,
    tenant_id       uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    customer_id     text        NOT NULL CHECK (char_length(customer_id) BETWEEN 1 AND 128),
    purpose         text        NOT NULL
                    CHECK (purpose IN ('ads_personalization', 'ad_user_data', 'email', 'sms', 'push')),
    granted         boolean     NOT NULL,
    source          text        NOT NULL CHECK (char_length(source) BETWEEN 1 AND 64),
    recorded_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    idempotency_key text
);

CREATE UNIQUE INDEX consent_events_idempotency_idx
    ON consent_events (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE INDEX consent_events_latest_idx
    ON consent_events (tenant_id, customer_id, purpose, recorded_at DESC, id DESC);

-- No customer_id here: the trail of an erasure must not keep the erased identifier.
CREATE TABLE gdpr_audit (
    id           bigserial   PRIMARY KEY,
    tenant_id    uuid        NOT NULL,
    action       text        NOT NULL CHECK (action IN ('export', 'erase')),
    subject_hash text        NOT NULL,
    requested_by text        NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    detail       jsonb       NOT NULL
);

CREATE INDEX gdpr_audit_subject_idx ON gdpr_audit (tenant_id, subject_hash, at);

-- History is never rewritten: consent events may only be erased, audit rows never change.
CREATE FUNCTION reject_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP;
END
$$;

CREATE TRIGGER consent_events_append_only BEFORE UPDATE ON consent_events
    FOR EACH ROW EXECUTE FUNCTION reject_rewrite();

CREATE TRIGGER gdpr_audit_append_only BEFORE UPDATE OR DELETE ON gdpr_audit
    FOR EACH ROW EXECUTE FUNCTION reject_rewrite();
