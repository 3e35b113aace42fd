-- Drift alert episodes: one open row per feature, version, evaluator and model at most (the partial unique index decides between replicas), closed when quality recovers.
CREATE TABLE drift_alerts (
    id               TEXT PRIMARY KEY,
    feature          TEXT NOT NULL,
    feature_version  BIGINT NOT NULL,
    evaluator        TEXT NOT NULL,
    model            TEXT NOT NULL,
    baseline         DOUBLE PRECISION NOT NULL,
    evidence         TEXT NOT NULL,
    opened_at_ms     BIGINT NOT NULL,
    closed_at_ms     BIGINT
);
CREATE UNIQUE INDEX drift_alerts_open ON drift_alerts (feature, feature_version, evaluator, model) WHERE closed_at_ms IS NULL
