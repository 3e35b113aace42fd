-- Rollups for the console's overview: per minute, per feature / provider / model /
-- key, the calls, errors, degraded answers, fallbacks, budget refusals, cost, tokens
-- and a latency histogram (24 bins, edges in llmop-store's overview.rs, which a test
-- checks against this file), and per minute per user the calls, errors and cost. The
-- record writer adds each new record to them in the transaction that stores it. An
-- empty text stands for "none" (a call without a feature). Existing records are rolled
-- up here, in the migration's own transaction.
CREATE TABLE rollup_calls (
    minute_ms INTEGER NOT NULL,
    feature TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    key_id TEXT NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    degraded INTEGER NOT NULL DEFAULT 0,
    fallbacks INTEGER NOT NULL DEFAULT 0,
    refusals INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    unpriced INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    l0 INTEGER NOT NULL DEFAULT 0,
    l1 INTEGER NOT NULL DEFAULT 0,
    l2 INTEGER NOT NULL DEFAULT 0,
    l3 INTEGER NOT NULL DEFAULT 0,
    l4 INTEGER NOT NULL DEFAULT 0,
    l5 INTEGER NOT NULL DEFAULT 0,
    l6 INTEGER NOT NULL DEFAULT 0,
    l7 INTEGER NOT NULL DEFAULT 0,
    l8 INTEGER NOT NULL DEFAULT 0,
    l9 INTEGER NOT NULL DEFAULT 0,
    l10 INTEGER NOT NULL DEFAULT 0,
    l11 INTEGER NOT NULL DEFAULT 0,
    l12 INTEGER NOT NULL DEFAULT 0,
    l13 INTEGER NOT NULL DEFAULT 0,
    l14 INTEGER NOT NULL DEFAULT 0,
    l15 INTEGER NOT NULL DEFAULT 0,
    l16 INTEGER NOT NULL DEFAULT 0,
    l17 INTEGER NOT NULL DEFAULT 0,
    l18 INTEGER NOT NULL DEFAULT 0,
    l19 INTEGER NOT NULL DEFAULT 0,
    l20 INTEGER NOT NULL DEFAULT 0,
    l21 INTEGER NOT NULL DEFAULT 0,
    l22 INTEGER NOT NULL DEFAULT 0,
    l23 INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute_ms, feature, provider, model, key_id)
);
CREATE TABLE rollup_users (
    minute_ms INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (minute_ms, user_id)
);
INSERT INTO rollup_calls (minute_ms, feature, provider, model, key_id, calls, errors, degraded, fallbacks, refusals, cost_usd, unpriced, input_tokens, output_tokens, l0, l1, l2, l3, l4, l5, l6, l7, l8, l9, l10, l11, l12, l13, l14, l15, l16, l17, l18, l19, l20, l21, l22, l23)
SELECT
    (created_at_ms / 60000) * 60000,
    COALESCE(feature, ''),
    COALESCE(provider, ''),
    COALESCE(model, ''),
    COALESCE(key_id, ''),
    COUNT(*),
    SUM(CASE WHEN status >= 400 OR error_code IS NOT NULL THEN 1 ELSE 0 END),
    SUM(CASE WHEN degraded = 1 THEN 1 ELSE 0 END),
    SUM(CASE WHEN status < 400 AND error_code IS NULL AND degraded = 0 AND json_array_length(attempts) > 1 AND (json_extract(attempts, '$[0].provider') IS NOT json_extract(attempts, '$[#-1].provider') OR json_extract(attempts, '$[0].model') IS NOT json_extract(attempts, '$[#-1].model')) THEN 1 ELSE 0 END),
    SUM(CASE WHEN error_code IN ('budget_exceeded', 'session_budget_exceeded') THEN 1 ELSE 0 END),
    COALESCE(SUM(cost_usd), 0),
    SUM(CASE WHEN cost_usd IS NULL AND input_tokens IS NOT NULL THEN 1 ELSE 0 END),
    COALESCE(SUM(input_tokens), 0),
    COALESCE(SUM(output_tokens), 0),
    SUM(CASE WHEN latency_ms < 5 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 5 AND latency_ms < 10 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 10 AND latency_ms < 20 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 20 AND latency_ms < 35 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 35 AND latency_ms < 50 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 50 AND latency_ms < 75 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 75 AND latency_ms < 100 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 100 AND latency_ms < 150 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 150 AND latency_ms < 200 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 200 AND latency_ms < 300 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 300 AND latency_ms < 500 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 500 AND latency_ms < 750 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 750 AND latency_ms < 1000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 1000 AND latency_ms < 1500 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 1500 AND latency_ms < 2000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 2000 AND latency_ms < 3000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 3000 AND latency_ms < 5000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 5000 AND latency_ms < 7500 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 7500 AND latency_ms < 10000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 10000 AND latency_ms < 15000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 15000 AND latency_ms < 20000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 20000 AND latency_ms < 30000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 30000 AND latency_ms < 60000 THEN 1 ELSE 0 END),
    SUM(CASE WHEN latency_ms >= 60000 THEN 1 ELSE 0 END)
FROM records
GROUP BY (created_at_ms / 60000) * 60000, COALESCE(feature, ''), COALESCE(provider, ''), COALESCE(model, ''), COALESCE(key_id, '');
INSERT INTO rollup_users (minute_ms, user_id, calls, errors, cost_usd)
SELECT
    (created_at_ms / 60000) * 60000,
    user_id,
    COUNT(*),
    SUM(CASE WHEN status >= 400 OR error_code IS NOT NULL THEN 1 ELSE 0 END),
    COALESCE(SUM(cost_usd), 0)
FROM records
WHERE user_id IS NOT NULL
GROUP BY (created_at_ms / 60000) * 60000, user_id
