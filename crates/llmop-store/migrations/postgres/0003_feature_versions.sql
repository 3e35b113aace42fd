-- Immutable, numbered versions of each feature (identical content is one version).
CREATE TABLE feature_versions (
    feature        TEXT NOT NULL,
    version        BIGINT NOT NULL,
    content_hash   TEXT NOT NULL,
    spec           TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    created_by     TEXT,
    PRIMARY KEY (feature, version)
);
CREATE UNIQUE INDEX feature_versions_hash ON feature_versions (feature, content_hash);
