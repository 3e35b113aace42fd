-- Every (configured model, model the provider reported, system fingerprint) seen on recorded calls, with when it was first seen: a new one under a known configured model is a model change event.
CREATE TABLE model_fingerprints (
    model          TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    first_seen_ms  INTEGER NOT NULL,
    PRIMARY KEY (model, upstream_model, fingerprint)
)
