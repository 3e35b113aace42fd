-- Agent safety. A call's agent decisions in its own row (a JSON object: the user's
-- scope source, the session's taint before the call, the tools removed, and one
-- decision per proposed tool call with its outcome, rule and reason, never argument
-- values). `agent_decisions` shows them one row per decision, for SQL.
ALTER TABLE records ADD COLUMN agent TEXT;
-- The taint of each session (per key): a bit set of capabilities its tool calls had.
-- Only ever grows (`taint | new`).
CREATE TABLE agent_sessions (
    session_key TEXT PRIMARY KEY,
    taint BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
-- Tool calls held for a person's approval, with the answer that proposed them.
CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    request_id TEXT NOT NULL,
    key_id TEXT,
    session TEXT,
    tool TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    answer TEXT NOT NULL,
    decided_at_ms BIGINT,
    decided_by TEXT,
    decision_note TEXT
);
CREATE INDEX approvals_status ON approvals (status, created_at_ms);
CREATE VIEW agent_decisions AS
SELECT r.request_id, r.created_at_ms, r.session_id AS session, r.feature, r.route, r.key_id,
       json_extract(j.value, '$.tool') AS tool,
       json_extract(j.value, '$.outcome') AS outcome,
       json_extract(j.value, '$.rule') AS rule,
       json_extract(j.value, '$.reason') AS reason,
       json_extract(j.value, '$.approval_id') AS approval_id
  FROM records r, json_each(json_extract(r.agent, '$.decisions')) j
 WHERE r.agent IS NOT NULL;
-- Red-team runs (`llmop redteam`): the counts, and the whole report (one result per
-- attack and variation) as JSON.
CREATE TABLE redteam_runs (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    corpus_version TEXT NOT NULL,
    seed BIGINT NOT NULL,
    attacks BIGINT NOT NULL,
    got_through BIGINT NOT NULL,
    blocked BIGINT NOT NULL,
    resisted BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX redteam_runs_target ON redteam_runs (target, started_at_ms)
