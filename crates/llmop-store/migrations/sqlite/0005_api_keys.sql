-- Client API keys, stored hashed (SHA-256 of the whole key) and shown once at creation. The id is the key's visible prefix.
CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    hash            TEXT NOT NULL,
    scopes          TEXT NOT NULL DEFAULT '{}',
    created_at_ms   INTEGER NOT NULL,
    created_by      TEXT,
    revoked_at_ms   INTEGER
);
CREATE UNIQUE INDEX api_keys_hash ON api_keys (hash)
