-- Guardrail verdicts of a call, in its own row (a JSON array of {rule, direction, part,
-- action, outcome, detectors, evidence, latency_us}: evidence holds fingerprints, never
-- values). `guardrail_verdicts` shows them one row per verdict, for SQL.
ALTER TABLE records ADD COLUMN guardrails TEXT;
CREATE VIEW guardrail_verdicts AS
SELECT r.request_id, r.created_at_ms, r.feature, r.feature_version, r.env, r.route, r.key_id,
       j.value ->> 'rule' AS rule,
       j.value ->> 'direction' AS direction,
       j.value ->> 'part' AS part,
       j.value ->> 'action' AS action,
       j.value ->> 'outcome' AS outcome,
       (j.value -> 'detectors')::text AS detectors,
       (j.value ->> 'latency_us')::bigint AS latency_us
  FROM records r CROSS JOIN LATERAL jsonb_array_elements(r.guardrails::jsonb) AS j
 WHERE r.guardrails IS NOT NULL
