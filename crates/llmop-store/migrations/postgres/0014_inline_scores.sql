-- Scores the deterministic online checks gave a call when its record was built, kept in
-- the record's own row (a compact JSON array: e = evaluator, p = pass 0/1, v = value when it is not
-- the pass itself, d = detail of a check that did not pass, x = error) instead of one `scores` row each: on a feature checked on every
-- call, three more rows and six more index inserts per call were most of what online
-- evaluation cost. `all_scores` shows both as one table. An inline score's time is its
-- call's, so a window over a feature's scores is a range of the records' (feature,
-- created_at_ms) index.
ALTER TABLE records ADD COLUMN online_scores TEXT;
CREATE VIEW all_scores AS
SELECT request_id, evaluator, source, feature, feature_version, env, model, value, pass,
       label, comment, detail, judge, error, cost_usd, created_at_ms
  FROM scores
UNION ALL
SELECT r.request_id, j->>'e', 'online', r.feature, r.feature_version, r.env,
       CASE WHEN r.provider IS NOT NULL AND r.model IS NOT NULL THEN r.provider || '/' || r.model ELSE r.model END,
       COALESCE((j->>'v')::double precision, (j->>'p')::double precision), (j->>'p')::bigint, NULL::text, NULL::text,
       j->>'d', NULL::text, j->>'x', NULL::double precision,
       r.created_at_ms
  FROM records r CROSS JOIN LATERAL jsonb_array_elements(r.online_scores::jsonb) AS j
 WHERE r.online_scores IS NOT NULL
