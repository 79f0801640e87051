-- Who was erased, so that no CRM sync, ingestion or message brings them back. Each row is a
-- keyed hash (HMAC-SHA256 under a key derived from KIKI_SECRET_KEY, which never reaches the
-- database) of one identifier the person had in the tenant: the customer id, an email
-- address, a phone number, a CRM record. Not the person: without the key a digest cannot be
-- tested against a guessed id. Written by the erasure, in its transaction, next to its audit row.
CREATE TABLE gdpr_suppressions (
    tenant_id     uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    digest        bytea       NOT NULL CHECK (length(digest) = 32),
    audit_id      bigint      NOT NULL REFERENCES gdpr_audit(id),
    suppressed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, digest)
);

CREATE TRIGGER gdpr_suppressions_append_only BEFORE UPDATE ON gdpr_suppressions
    FOR EACH ROW EXECUTE FUNCTION reject_rewrite();
