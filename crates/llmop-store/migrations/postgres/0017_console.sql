-- The console's search box takes any id a person may hold: the provider's answer id
-- and the key are looked up as directly as the request id and the session. The
-- provider is a filter of its own. Rare rows (degraded answers, errors) get partial
-- indexes in the list's own order (newest first, request id breaking ties), so a
-- filter on them reads only them instead of scanning every record: their WHERE is
-- the exact condition the store's list writes.
CREATE INDEX records_upstream_id ON records (upstream_id) WHERE upstream_id IS NOT NULL;
CREATE INDEX records_key ON records (key_id, created_at_ms) WHERE key_id IS NOT NULL;
CREATE INDEX records_provider ON records (provider, created_at_ms);
CREATE INDEX records_degraded ON records (created_at_ms, request_id) WHERE degraded = 1;
CREATE INDEX records_errors ON records (created_at_ms, request_id) WHERE (status >= 400 OR error_code IS NOT NULL)
