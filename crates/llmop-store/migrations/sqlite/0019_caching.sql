-- What caching did for a call: `cache` is hit, miss or bypass (the response cache) or
-- replay (an idempotent retry), NULL when no caching applied. A served call costs
-- nothing, and `saved_usd` is what its answer cost when it was made, and `cache_source` the
-- call that made it. `cache_write_tokens` counts the input tokens written to a
-- provider's prompt cache (priced at its cache-write rate), beside `cached_tokens` (read).
-- `baseline_usd` is what a cascade's answer would have cost on the route's last target.
ALTER TABLE records ADD COLUMN cache TEXT;
ALTER TABLE records ADD COLUMN saved_usd REAL;
ALTER TABLE records ADD COLUMN cache_source TEXT;
ALTER TABLE records ADD COLUMN cache_write_tokens BIGINT;
ALTER TABLE records ADD COLUMN baseline_usd REAL
