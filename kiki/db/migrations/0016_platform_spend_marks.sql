-- The live market (KIKI_PLATFORM_CREDENTIALS): how far committed budget leases have charged
-- each platform's spend reports, per ad group and day. Written by the budget actors in the
-- same transaction as the commit that charges the spend, so a restarted bid-loop shard
-- charges only what was reported since (kiki.flow.live.SpendMarks).
CREATE TABLE platform_spend_marks (
    tenant_id     uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    campaign_id   text        NOT NULL,
    platform      text        NOT NULL,
    ad_group_ref  text        NOT NULL,  -- the platform's ad group (LinkedIn: campaign) id
    day           date        NOT NULL,  -- the day of the platform's report row
    spend_micros  bigint      NOT NULL CHECK (spend_micros >= 0),
    clicks        bigint      NOT NULL CHECK (clicks >= 0),
    conversions   bigint      NOT NULL CHECK (conversions >= 0),
    value_micros  bigint      NOT NULL CHECK (value_micros >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, platform, ad_group_ref, day)
);
CREATE INDEX platform_spend_marks_by_day ON platform_spend_marks (day);

-- The daily budgets the bid loop pushed to each platform campaign (kiki.flow.caps), per day:
-- what `kiki flow reconcile` holds a platform's delivery against.
CREATE TABLE platform_budget_pushes (
    tenant_id          uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    campaign_id        text        NOT NULL,
    platform           text        NOT NULL,
    account_id         text        NOT NULL,
    campaign_ref       text        NOT NULL,
    day                date        NOT NULL,
    currency           text        NOT NULL,
    max_budget_micros  bigint      NOT NULL CHECK (max_budget_micros >= 0),
    last_budget_micros bigint      NOT NULL CHECK (last_budget_micros >= 0),
    pushes             integer     NOT NULL DEFAULT 1,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, platform, account_id, campaign_ref, day)
);
