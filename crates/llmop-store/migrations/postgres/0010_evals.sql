-- Evaluation: dataset versions (items as one JSON array, versioned by content hash), runs and their per-item results, the answer cache, compares (the deploy gate's evidence) and judge calibrations.
CREATE TABLE dataset_versions (
    name           TEXT NOT NULL,
    version        BIGINT NOT NULL,
    content_hash   TEXT NOT NULL,
    items          TEXT NOT NULL,
    item_count     BIGINT NOT NULL,
    source         TEXT,
    created_at_ms  BIGINT NOT NULL,
    created_by     TEXT,
    PRIMARY KEY (name, version)
);
CREATE TABLE eval_runs (
    id               TEXT PRIMARY KEY,
    feature          TEXT NOT NULL,
    version          BIGINT NOT NULL,
    content_hash     TEXT NOT NULL,
    dataset          TEXT NOT NULL,
    dataset_version  BIGINT NOT NULL,
    dataset_hash     TEXT NOT NULL,
    evaluators_hash  TEXT NOT NULL,
    repeats          BIGINT NOT NULL,
    status           TEXT NOT NULL,
    started_at_ms    BIGINT NOT NULL,
    finished_at_ms   BIGINT,
    cost_usd         DOUBLE PRECISION,
    summary          TEXT,
    created_by       TEXT
);
CREATE INDEX eval_runs_reuse ON eval_runs (feature, content_hash, dataset_hash, evaluators_hash);
CREATE TABLE eval_results (
    run_id      TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    repeat_idx  BIGINT NOT NULL,
    result      TEXT NOT NULL,
    PRIMARY KEY (run_id, item_id, repeat_idx)
);
CREATE TABLE eval_cache (
    key            TEXT PRIMARY KEY,
    value          TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL
);
CREATE TABLE eval_compares (
    id                 TEXT PRIMARY KEY,
    feature            TEXT NOT NULL,
    baseline_version   BIGINT NOT NULL,
    baseline_hash      TEXT NOT NULL,
    candidate_version  BIGINT NOT NULL,
    candidate_hash     TEXT NOT NULL,
    dataset            TEXT NOT NULL,
    dataset_hash       TEXT NOT NULL,
    evals_hash         TEXT NOT NULL,
    verdict            TEXT NOT NULL,
    report             TEXT NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    created_by         TEXT
);
CREATE INDEX eval_compares_gate ON eval_compares (feature, candidate_hash, baseline_hash);
CREATE TABLE judge_calibrations (
    judge          TEXT NOT NULL,
    version        BIGINT NOT NULL,
    content_hash   TEXT NOT NULL,
    dataset        TEXT NOT NULL,
    dataset_hash   TEXT NOT NULL,
    kappa          DOUBLE PRECISION,
    report         TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (judge, version, dataset_hash)
);
-- How a deploy got past its environment's eval gate: the passing compare's id, or forced.
ALTER TABLE deployment_events ADD COLUMN gate TEXT;
