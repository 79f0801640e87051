-- Each decision also records its platform's share of the campaign's spend so far (the unit's
-- (campaign, platform) pool), so a campaign's pacing can be drawn per platform, tick by tick.
-- Rows written before this column have 0: the console draws no platform line for them. A
-- constant default adds the column without rewriting a partition.
ALTER TABLE flow_decisions ADD COLUMN platform_spent_micros bigint NOT NULL DEFAULT 0;
