-- What the provider said about the answering system, and the reasoning share of the
-- output tokens.
ALTER TABLE records ADD COLUMN reasoning_tokens BIGINT;
ALTER TABLE records ADD COLUMN system_fingerprint TEXT;
ALTER TABLE records ADD COLUMN service_tier TEXT;
-- The model version the provider named in its answer (gemini-2.0-flash-001, …).
ALTER TABLE records ADD COLUMN upstream_model TEXT;
-- Reasoning state llmop keeps for clients whose format has no place for it, keyed by
-- the tool-call id llmop issued, so any replica sharing the store can restore it.
CREATE TABLE reasoning_state (
    call_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX reasoning_state_created ON reasoning_state (created_at_ms)
