-- The variables a feature call was rendered from (JSON), and for a shadow call the primary's request id.
ALTER TABLE records ADD COLUMN variables TEXT;
ALTER TABLE records ADD COLUMN shadow_of TEXT;
CREATE INDEX records_shadow_of ON records (shadow_of);
-- What each environment of each feature serves now: one row per (feature, env), updated with its event.
CREATE TABLE deployments (
    feature        TEXT NOT NULL,
    env            TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    state          TEXT NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (feature, env)
);
-- Every change of a deployment, in order per (feature, env): the audit trail and the rollback history.
CREATE TABLE deployment_events (
    feature      TEXT NOT NULL,
    env          TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    from_state   TEXT,
    to_state     TEXT NOT NULL,
    basis_seq    INTEGER,
    actor        TEXT,
    reason       TEXT,
    at_ms        INTEGER NOT NULL,
    PRIMARY KEY (feature, env, seq)
)
