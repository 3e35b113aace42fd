-- Guardrail verdicts of a call, in its own row (a JSON array of {rule, direction, part,
-- action, outcome, detectors, evidence, latency_us}: evidence holds fingerprints, never
-- values). `guardrail_verdicts` shows them one row per verdict, for SQL.
ALTER TABLE records ADD COLUMN guardrails TEXT;
CREATE VIEW guardrail_verdicts AS
SELECT r.request_id, r.created_at_ms, r.feature, r.feature_version, r.env, r.route, r.key_id,
       json_extract(j.value, '$.rule') AS rule,
       json_extract(j.value, '$.direction') AS direction,
       json_extract(j.value, '$.part') AS part,
       json_extract(j.value, '$.action') AS action,
       json_extract(j.value, '$.outcome') AS outcome,
       json_extract(j.value, '$.detectors') AS detectors,
       json_extract(j.value, '$.latency_us') AS latency_us
  FROM records r, json_each(r.guardrails) j
 WHERE r.guardrails IS NOT NULL
