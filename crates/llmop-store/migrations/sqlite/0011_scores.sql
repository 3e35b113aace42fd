-- Quality in production: every score a call got (online evaluators, human feedback), and the durable queue of online evaluation work, filled in the same transaction as the records it points at.
CREATE TABLE scores (
    request_id       TEXT NOT NULL,
    evaluator        TEXT NOT NULL,
    source           TEXT NOT NULL,
    feature          TEXT,
    feature_version  INTEGER,
    env              TEXT,
    model            TEXT,
    value            REAL,
    pass             INTEGER,
    label            TEXT,
    comment          TEXT,
    detail           TEXT,
    judge            TEXT,
    error            TEXT,
    cost_usd         REAL,
    created_at_ms    INTEGER NOT NULL,
    PRIMARY KEY (request_id, evaluator, source)
);
CREATE INDEX scores_feature_time ON scores (feature, created_at_ms);
CREATE TABLE online_queue (
    request_id      TEXT PRIMARY KEY,
    feature         TEXT NOT NULL,
    evaluators      TEXT NOT NULL,
    enqueued_at_ms  INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    next_at_ms      INTEGER NOT NULL,
    last_error      TEXT
);
CREATE INDEX online_queue_due ON online_queue (next_at_ms)
