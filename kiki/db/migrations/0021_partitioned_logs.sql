-- The other append-only tables that grow with traffic, partitioned by UTC day like the audit
-- trail (0018), so `kiki db retention` can export and drop a whole old day:
--   billing_events              usage, by received_at (set by the server: always about now)
--   engage_messages             the message delivery log, by created_at
--   billing_webhook_deliveries  the tenants' webhook outbox, by created_at
--
-- A unique index on a partitioned table must contain the partition key, so the all-time
-- idempotency keys of billing_events (tenant_id, transaction_id) and engage_messages
-- (tenant_id, idempotency_key) move to small unpartitioned key tables, written by a trigger in
-- the inserting statement's own transaction (or, for usage ingest, by kiki.billing.metering in
-- the same statement, set-based): a key seen on any day of the kept ones stops a
-- second row, as the unique index did. billing_events skips the duplicate row (ON CONFLICT DO
-- NOTHING's behaviour, so its row count still says how many were new); engage_messages raises
-- unique_violation (its unique index's behaviour). Deleting a row (an erasure) frees its key,
-- as deleting it from the unique index did; retention deletes the keys of a day it drops.
--
-- Each table gets a DEFAULT partition: a row for a day without a partition lands there
-- instead of failing (usage is money: no insert may fail for want of a partition), and
-- kiki_day_partition moves such rows into the day's partition when it creates it.

-- 0018's function, now also for parents with a DEFAULT partition: rows of the day already in
-- it are moved into the new day's table before that table is attached (PostgreSQL refuses a
-- new partition whose range has rows in the default one). The fast path takes no lock.
CREATE OR REPLACE FUNCTION kiki_day_partition(parent text, day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    child text := parent || '_' || to_char(day, 'YYYYMMDD');
    fallback regclass := to_regclass(parent || '_default');
    low text := day::text || ' 00:00:00+00';
    high text := (day + 1)::text || ' 00:00:00+00';
    key text;
    waiting boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_partitioned_table WHERE partrelid = parent::regclass) THEN
        RETURN NULL;
    END IF;
    IF to_regclass(child) IS NOT NULL THEN
        RETURN child;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(child));
    IF to_regclass(child) IS NOT NULL THEN
        RETURN child;
    END IF;
    IF fallback IS NOT NULL THEN
        SELECT a.attname INTO key FROM pg_partitioned_table p
        JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
        WHERE p.partrelid = parent::regclass;
        EXECUTE format('SELECT EXISTS (SELECT FROM %s WHERE %I >= %L AND %I < %L)',
                       fallback, key, low, key, high) INTO waiting;
        IF waiting THEN
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                           child, parent);
            -- A move, not an erasure: the delete triggers keep the rows' keys.
            PERFORM set_config('kiki.moving_partition', 'on', true);
            EXECUTE format(
                'WITH moved AS (DELETE FROM %s WHERE %I >= %L AND %I < %L RETURNING *) '
                'INSERT INTO %I SELECT * FROM moved', fallback, key, low, key, high, child);
            PERFORM set_config('kiki.moving_partition', 'off', true);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           parent, child, low, high);
            RETURN child;
        END IF;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                   child, parent, low, high);
    RETURN child;
END $$;

-- The new partitioned `parent` filled with the old table's rows (`source`, partitioned on
-- `key`): its DEFAULT partition, a partition for every day with rows and for today and the
-- next two days, then the rows.
CREATE FUNCTION kiki_fill_by_day(parent text, source text, key text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', parent || '_default', parent);
    EXECUTE format(
        'SELECT kiki_day_partition(%L, day) FROM (
             SELECT DISTINCT (%I AT TIME ZONE ''UTC'')::date AS day FROM %I
             UNION SELECT (now() AT TIME ZONE ''UTC'')::date + ahead
                   FROM generate_series(0, 2) AS ahead) AS days',
        parent, key, source);
    EXECUTE format('INSERT INTO %I SELECT * FROM %I', parent, source);
END $$;

-- billing_events ------------------------------------------------------------------------------

CREATE TABLE billing_event_keys (
    tenant_id      uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    transaction_id text        NOT NULL,
    received_at    timestamptz NOT NULL,  -- the row's partition key: retention frees by day
    PRIMARY KEY (tenant_id, transaction_id)
);
CREATE INDEX billing_event_keys_received ON billing_event_keys USING brin (received_at);

ALTER TABLE billing_events RENAME TO billing_events_unpartitioned;
CREATE TABLE billing_events (
    LIKE billing_events_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
) PARTITION BY RANGE (received_at);
SELECT kiki_fill_by_day('billing_events', 'billing_events_unpartitioned', 'received_at');
INSERT INTO billing_event_keys
SELECT tenant_id, transaction_id, received_at FROM billing_events_unpartitioned;
DROP TABLE billing_events_unpartitioned;
CREATE INDEX billing_events_usage ON billing_events (tenant_id, customer_id, occurred_at);
CREATE INDEX billing_events_received ON billing_events USING brin (received_at);

CREATE FUNCTION billing_events_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO billing_event_keys VALUES (NEW.tenant_id, NEW.transaction_id, NEW.received_at)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;  -- counted before (on this day or another): skipped, not an error
    END IF;
    RETURN NEW;
END $$;
-- kiki.billing.metering writes the keys of a batch itself, set-based, and says so for its
-- transaction (the per-row trigger cost about 30 % of ingest throughput); any other writer
-- gets the trigger.
CREATE TRIGGER billing_events_once BEFORE INSERT ON billing_events
FOR EACH ROW WHEN (current_setting('kiki.billing_event_keys', true) IS DISTINCT FROM 'written')
EXECUTE FUNCTION billing_events_once();

CREATE FUNCTION billing_events_free_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('kiki.moving_partition', true) IS DISTINCT FROM 'on' THEN
        DELETE FROM billing_event_keys
        WHERE tenant_id = OLD.tenant_id AND transaction_id = OLD.transaction_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER billing_events_free_key AFTER DELETE ON billing_events
FOR EACH ROW EXECUTE FUNCTION billing_events_free_key();

-- engage_messages -----------------------------------------------------------------------------

CREATE TABLE engage_message_keys (
    tenant_id       uuid        NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    idempotency_key text        NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, idempotency_key)
);
CREATE INDEX engage_message_keys_created ON engage_message_keys USING brin (created_at);

-- The in-app inbox keeps its copy of title and body; its rows outlive a dropped day of the
-- log (a foreign key to a partitioned table would forbid dropping it). An erased message
-- still takes its inbox rows with it (the trigger below), as ON DELETE CASCADE did.
ALTER TABLE engage_inbox DROP CONSTRAINT engage_inbox_message_id_fkey;
ALTER TABLE engage_messages RENAME TO engage_messages_unpartitioned;
CREATE TABLE engage_messages (
    LIKE engage_messages_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE engage_messages_id_seq OWNED BY engage_messages.id;
SELECT kiki_fill_by_day('engage_messages', 'engage_messages_unpartitioned', 'created_at');
INSERT INTO engage_message_keys
SELECT tenant_id, idempotency_key, created_at FROM engage_messages_unpartitioned;
DROP TABLE engage_messages_unpartitioned;
-- ids come from one sequence: unique across days, the key carries the day for PostgreSQL.
ALTER TABLE engage_messages ADD PRIMARY KEY (id, created_at);
CREATE INDEX engage_messages_idempotency ON engage_messages (tenant_id, idempotency_key);
CREATE INDEX engage_messages_recent ON engage_messages (tenant_id, customer_id, created_at)
    WHERE status IN ('sending', 'sent');
CREATE INDEX engage_inbox_message ON engage_inbox (message_id);

CREATE FUNCTION engage_messages_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A key already used raises unique_violation, as the unique index did.
    INSERT INTO engage_message_keys VALUES (NEW.tenant_id, NEW.idempotency_key, NEW.created_at);
    RETURN NEW;
END $$;
CREATE TRIGGER engage_messages_once BEFORE INSERT ON engage_messages
FOR EACH ROW EXECUTE FUNCTION engage_messages_once();

CREATE FUNCTION engage_messages_erased() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('kiki.moving_partition', true) IS DISTINCT FROM 'on' THEN
        DELETE FROM engage_message_keys
        WHERE tenant_id = OLD.tenant_id AND idempotency_key = OLD.idempotency_key;
        DELETE FROM engage_inbox WHERE message_id = OLD.id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER engage_messages_erased AFTER DELETE ON engage_messages
FOR EACH ROW EXECUTE FUNCTION engage_messages_erased();

-- billing_webhook_deliveries ------------------------------------------------------------------

ALTER TABLE billing_webhook_deliveries RENAME TO billing_webhook_deliveries_unpartitioned;
CREATE TABLE billing_webhook_deliveries (
    LIKE billing_webhook_deliveries_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    FOREIGN KEY (endpoint_id) REFERENCES billing_webhook_endpoints(id) ON DELETE CASCADE
) PARTITION BY RANGE (created_at);
SELECT kiki_fill_by_day(
    'billing_webhook_deliveries', 'billing_webhook_deliveries_unpartitioned', 'created_at'
);
DROP TABLE billing_webhook_deliveries_unpartitioned;
-- ids are random UUIDs (gen_random_uuid): unique across days; the key carries the day.
ALTER TABLE billing_webhook_deliveries ADD PRIMARY KEY (id, created_at);
CREATE INDEX billing_webhook_deliveries_due ON billing_webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';

DROP FUNCTION kiki_fill_by_day(text, text, text);
