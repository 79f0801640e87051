-- The live market: ad groups (Meta ad sets, LinkedIn campaigns) the bid loop paused at their
-- platform because no daily budget of KIKI's was in force over them (actors.flow.pushes
-- CapPusher: a push refused or failed, no budget object, a budget below the platform's
-- minimum), so the bids placed earlier stop spending. The loop lets them serve again, and only
-- them, once a budget is in force; kept here so a restarted shard still knows which are its own.
CREATE TABLE platform_paused_ad_groups (
    tenant_id     uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    campaign_id   text        NOT NULL,
    platform      text        NOT NULL,
    account_id    text        NOT NULL,
    ad_group_ref  text        NOT NULL,
    paused_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, platform, account_id, ad_group_ref)
);
