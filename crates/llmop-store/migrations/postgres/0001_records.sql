CREATE TABLE records (
    request_id          TEXT PRIMARY KEY,
    created_at_ms       BIGINT NOT NULL,
    endpoint            TEXT NOT NULL,
    env                 TEXT,
    key_id              TEXT,
    user_id             TEXT,
    session_id          TEXT,
    feature             TEXT,
    feature_version     BIGINT,
    content_hash        TEXT,
    arm                 TEXT,
    shadow              BIGINT NOT NULL DEFAULT 0,
    replay_of           TEXT,
    route               TEXT,
    stream              BIGINT NOT NULL DEFAULT 0,
    provider            TEXT,
    model               TEXT,
    upstream_id         TEXT,
    status              BIGINT NOT NULL,
    error_code          TEXT,
    client_disconnected BIGINT NOT NULL DEFAULT 0,
    parse_status        TEXT,
    input_tokens        BIGINT,
    output_tokens       BIGINT,
    cached_tokens       BIGINT,
    cost_usd            DOUBLE PRECISION,
    latency_ms          BIGINT NOT NULL,
    ttft_ms             BIGINT,
    tags                TEXT NOT NULL DEFAULT '{}',
    attempts            TEXT NOT NULL DEFAULT '[]',
    request_params      TEXT NOT NULL DEFAULT '{}',
    input_messages      TEXT NOT NULL DEFAULT '[]',
    rendered_prompt     TEXT,
    output_text         TEXT,
    output_tool_calls   TEXT NOT NULL DEFAULT '[]',
    parsed_output       TEXT,
    feedback_score      DOUBLE PRECISION,
    feedback_label      TEXT,
    feedback_comment    TEXT,
    feedback_at_ms      BIGINT
);
CREATE INDEX records_created ON records (created_at_ms, request_id);
CREATE INDEX records_feature ON records (feature, created_at_ms);
CREATE INDEX records_user ON records (user_id, created_at_ms);
CREATE INDEX records_session ON records (session_id, created_at_ms);
CREATE INDEX records_model ON records (model, created_at_ms);
CREATE INDEX records_status ON records (status, created_at_ms);
