-- The console's sign-in sessions: a browser holds a random token in an HttpOnly cookie; the
-- server keeps only its hash and the API key it stands for. A revoked key ends its sessions
-- (the lookup joins the key), and a deleted key takes them with it.
CREATE TABLE console_sessions (
    token_hash  text        PRIMARY KEY,
    key_id      uuid        NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

CREATE INDEX console_sessions_key_idx ON console_sessions (key_id);
