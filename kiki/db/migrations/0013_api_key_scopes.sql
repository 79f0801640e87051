-- Keys carry scopes, may expire, remember their last use and the key they replaced. Keys made
-- before scopes existed were full tenant admins, and stay so.
ALTER TABLE api_keys
    ADD COLUMN scopes       text[]      NOT NULL DEFAULT ARRAY['read', 'write', 'admin'],
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN last_used_at timestamptz,
    ADD COLUMN rotated_from uuid        REFERENCES api_keys(id) ON DELETE SET NULL,
    ADD CONSTRAINT api_keys_scopes_known CHECK (
        cardinality(scopes) > 0
        AND scopes <@ ARRAY['read', 'write', 'admin', 'operator']::text[]
    );

CREATE INDEX api_keys_prefix_idx ON api_keys (prefix);
