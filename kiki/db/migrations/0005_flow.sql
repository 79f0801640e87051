-- SyncFlow: campaigns the bid loop runs, and the audit trail of every bid decision.
CREATE TABLE flow_campaigns (
    tenant_id      uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    campaign_id    text        NOT NULL CHECK (campaign_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    status         text        NOT NULL CHECK (status IN ('draft', 'running', 'paused', 'stopped')),
    -- The validated campaign (kiki.flow.campaigns.Campaign), amounts in integer micros.
    spec           jsonb       NOT NULL,
    -- `kiki simulate` campaigns: run only by the simulation's own bid loop, never the live one.
    simulation     boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, campaign_id)
);
CREATE INDEX flow_campaigns_running ON flow_campaigns (simulation) WHERE status = 'running';

-- Append-only, written by the bid-loop actors with COPY, one batch per tick.
CREATE TABLE flow_decisions (
    tick_id            bigint           NOT NULL,
    decided_at         timestamptz      NOT NULL,
    tenant_id          uuid             NOT NULL,
    campaign_id        text             NOT NULL,
    ad_group_id        text             NOT NULL,
    platform           text             NOT NULL,
    -- inputs
    value_micros       bigint           NOT NULL,  -- value per conversion of the segment
    cvr                double precision NOT NULL,  -- conversion-rate estimate
    pacing_multiplier  double precision NOT NULL,
    target_micros      bigint           NOT NULL,  -- the pacing curve's target at tick end
    spent_micros       bigint           NOT NULL,  -- the campaign's spend so far
    budget_left_micros bigint           NOT NULL,
    reserved_micros    bigint           NOT NULL,  -- granted to the unit's (campaign, platform)
    -- output
    bid_micros         bigint           NOT NULL,
    reason             text             NOT NULL,
    connector_result   text             NOT NULL,
    shard              integer          NOT NULL
);
CREATE INDEX flow_decisions_by_campaign ON flow_decisions (tenant_id, campaign_id, decided_at);
