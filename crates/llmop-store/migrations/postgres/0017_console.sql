-- The console's search box takes any id a person may hold: the provider's answer id
-- and the key are looked up as directly as the request id and the session. The
-- provider and the rare degraded answers are filters of their own.
CREATE INDEX records_upstream_id ON records (upstream_id) WHERE upstream_id IS NOT NULL;
CREATE INDEX records_key ON records (key_id, created_at_ms) WHERE key_id IS NOT NULL;
CREATE INDEX records_provider ON records (provider, created_at_ms);
CREATE INDEX records_degraded ON records (created_at_ms) WHERE degraded = 1
