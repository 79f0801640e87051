-- SyncShield's write-ahead budget ledger. Budget actors keep campaign state in memory as a
-- cache of these rows: an event is acknowledged only after its row is committed, and an
-- actor that restarts replays its campaigns' events in seq order.
CREATE TABLE budget_campaigns (
    tenant_id   uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    campaign_id text        NOT NULL CHECK (campaign_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    currency    char(3)     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, campaign_id)
);

CREATE TABLE budget_ledger (
    seq             bigserial   PRIMARY KEY,
    tenant_id       uuid        NOT NULL,
    campaign_id     text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('budget_set', 'policy_set', 'reserved',
                                    'committed', 'released', 'expired', 'unblocked')),
    reservation_id  uuid,
    platform        text,
    amount_micros   bigint      NOT NULL DEFAULT 0 CHECK (amount_micros >= 0),
    budget_day      date,
    idempotency_key text,
    -- reservations: what was asked for, and when an unclaimed hold lapses
    requested_micros bigint     NOT NULL DEFAULT 0,
    expires_at      timestamptz,
    -- commits: spend the platform reported beyond the reservation
    over_delivered_micros bigint NOT NULL DEFAULT 0,
    -- budget and policy settings
    data            jsonb,
    recorded_at     timestamptz NOT NULL,
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES budget_campaigns (tenant_id, campaign_id)
        ON DELETE CASCADE
);

-- A retried write with the same key can never apply twice, whatever the actors do.
CREATE UNIQUE INDEX budget_ledger_idempotency
    ON budget_ledger (tenant_id, campaign_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- One open/close per reservation.
CREATE UNIQUE INDEX budget_ledger_reservation_once
    ON budget_ledger (reservation_id, (kind = 'reserved'))
    WHERE reservation_id IS NOT NULL;
CREATE INDEX budget_ledger_campaign ON budget_ledger (tenant_id, campaign_id, seq);
