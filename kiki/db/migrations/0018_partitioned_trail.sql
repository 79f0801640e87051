-- The bid loop's audit trail, partitioned by UTC day (declarative RANGE partitioning on
-- decided_at), so `kiki db retention` exports a whole old day to Parquet and drops it
-- instead of deleting hundreds of millions of rows. flow_decisions has no primary key or
-- unique index (COPY appends; nothing upserts into it), so no key has to take decided_at in.

-- The partition of `parent` holding `day` (UTC), created when missing: by the migration for
-- the days already present, by `kiki db retention` ahead of time, and by the audit writer for
-- any day that lacks one, so no insert fails for want of a partition. The advisory lock makes
-- concurrent callers (several bid-loop shards at midnight) create it once. A parent that is
-- not partitioned (`kiki bench flow`'s unpartitioned run) needs none: NULL.
CREATE FUNCTION kiki_day_partition(parent text, day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    child text := parent || '_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF NOT EXISTS (SELECT FROM pg_partitioned_table WHERE partrelid = parent::regclass) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(child));
    IF to_regclass(child) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            child, parent, day::text || ' 00:00:00+00', (day + 1)::text || ' 00:00:00+00'
        );
    END IF;
    RETURN child;
END $$;

ALTER TABLE flow_decisions RENAME TO flow_decisions_unpartitioned;
ALTER INDEX flow_decisions_by_campaign RENAME TO flow_decisions_unpartitioned_by_campaign;

CREATE TABLE flow_decisions (
    LIKE flow_decisions_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS
) PARTITION BY RANGE (decided_at);
CREATE INDEX flow_decisions_by_campaign ON flow_decisions (tenant_id, campaign_id, decided_at);

-- A partition for every day with rows, and for today and the next two days.
SELECT kiki_day_partition('flow_decisions', day)
FROM (
    SELECT DISTINCT (decided_at AT TIME ZONE 'UTC')::date AS day FROM flow_decisions_unpartitioned
    UNION
    SELECT (now() AT TIME ZONE 'UTC')::date + ahead FROM generate_series(0, 2) AS ahead
) AS days;

INSERT INTO flow_decisions SELECT * FROM flow_decisions_unpartitioned;
DROP TABLE flow_decisions_unpartitioned;
