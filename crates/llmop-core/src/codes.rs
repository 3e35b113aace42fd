//! Every stable error `code` llmop answers with, in one place. `docs/api.md`'s error
//! table lists the same set (a test checks both ways); a new code is a constant here
//! and a row there.

pub const INVALID_REQUEST: &str = "invalid_request";
pub const UPSTREAM_BAD_REQUEST: &str = "upstream_bad_request";
pub const MODEL_NOT_FOUND: &str = "model_not_found";
pub const NOT_FOUND: &str = "not_found";
pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
pub const REQUEST_TIMEOUT: &str = "request_timeout";
pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
pub const UPSTREAM_RATE_LIMITED: &str = "upstream_rate_limited";
pub const UPSTREAM_ERROR: &str = "upstream_error";
pub const UPSTREAM_UNREACHABLE: &str = "upstream_unreachable";
pub const UPSTREAM_AUTH_FAILED: &str = "upstream_auth_failed";
pub const UPSTREAM_PROTOCOL_ERROR: &str = "upstream_protocol_error";
pub const UPSTREAM_STREAM_ERROR: &str = "upstream_stream_error";
pub const UPSTREAM_INCOMPLETE_ANSWER: &str = "upstream_incomplete_answer";
pub const UPSTREAM_QUOTA_EXHAUSTED: &str = "upstream_quota_exhausted";
pub const UNSUPPORTED_BY_TARGET: &str = "unsupported_by_target";
pub const UPSTREAM_TIMEOUT: &str = "upstream_timeout";
pub const STORE_UNAVAILABLE: &str = "store_unavailable";
pub const RECORD_NOT_FOUND: &str = "record_not_found";
pub const STORE_DISABLED: &str = "store_disabled";
pub const CIRCUIT_OPEN: &str = "circuit_open";
pub const NO_TARGET_LEFT: &str = "no_target_left";
pub const CONTEXT_WINDOW_EXCEEDED: &str = "context_window_exceeded";
pub const CONTENT_POLICY_VIOLATION: &str = "content_policy_violation";
pub const MISSING_VARIABLE: &str = "missing_variable";
pub const INVALID_VARIABLE: &str = "invalid_variable";
pub const UNKNOWN_VARIABLE: &str = "unknown_variable";
pub const TEMPLATE_ERROR: &str = "template_error";
pub const MISSING_API_KEY: &str = "missing_api_key";
pub const INVALID_API_KEY: &str = "invalid_api_key";
pub const MISSING_ADMIN_TOKEN: &str = "missing_admin_token";
pub const INVALID_ADMIN_TOKEN: &str = "invalid_admin_token";
pub const KEY_NOT_ALLOWED: &str = "key_not_allowed";
pub const HOST_NOT_ALLOWED: &str = "host_not_allowed";
pub const ORIGIN_NOT_ALLOWED: &str = "origin_not_allowed";
pub const BUDGET_EXCEEDED: &str = "budget_exceeded";
pub const SESSION_BUDGET_EXCEEDED: &str = "session_budget_exceeded";
pub const RATE_LIMITED: &str = "rate_limited";
pub const COUNTERS_UNAVAILABLE: &str = "counters_unavailable";
pub const FEATURE_NOT_FOUND: &str = "feature_not_found";
pub const FEATURE_NOT_DEPLOYED: &str = "feature_not_deployed";
pub const FEATURE_VERSION_NOT_FOUND: &str = "feature_version_not_found";
pub const OUTPUT_PARSE_FAILED: &str = "output_parse_failed";
pub const INVALID_FEATURE: &str = "invalid_feature";
pub const INVALID_DEPLOYMENT: &str = "invalid_deployment";
pub const NOTHING_TO_ROLL_BACK: &str = "nothing_to_roll_back";
pub const EVAL_GATE_REFUSED: &str = "eval_gate_refused";
pub const INVALID_BUDGET: &str = "invalid_budget";
pub const BUDGET_NOT_FOUND: &str = "budget_not_found";
pub const INTERNAL_ERROR: &str = "internal_error";
pub const SHUTTING_DOWN: &str = "shutting_down";
pub const GUARDRAIL_BLOCKED: &str = "guardrail_blocked";
pub const GUARDRAIL_ERROR: &str = "guardrail_error";
pub const TOOL_CALL_DENIED: &str = "tool_call_denied";
pub const APPROVAL_REQUIRED: &str = "approval_required";
pub const APPROVAL_PENDING: &str = "approval_pending";
pub const APPROVAL_NOT_FOUND: &str = "approval_not_found";
pub const INVALID_USER_TOKEN: &str = "invalid_user_token";
pub const USER_SCOPES_REQUIRED: &str = "user_scopes_required";
pub const INVALID_APPROVAL: &str = "invalid_approval";
pub const IDEMPOTENCY_KEY_REUSED: &str = "idempotency_key_reused";
pub const IDEMPOTENCY_IN_PROGRESS: &str = "idempotency_in_progress";
pub const CACHE_UNAVAILABLE: &str = "cache_unavailable";
pub const RESPONSE_NOT_FOUND: &str = "response_not_found";
pub const PREVIOUS_RESPONSE_NOT_FOUND: &str = "previous_response_not_found";

/// Every code above.
pub const ALL: &[&str] = &[
    INVALID_REQUEST,
    UPSTREAM_BAD_REQUEST,
    MODEL_NOT_FOUND,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    REQUEST_TIMEOUT,
    PAYLOAD_TOO_LARGE,
    UPSTREAM_RATE_LIMITED,
    UPSTREAM_ERROR,
    UPSTREAM_UNREACHABLE,
    UPSTREAM_AUTH_FAILED,
    UPSTREAM_PROTOCOL_ERROR,
    UPSTREAM_STREAM_ERROR,
    UPSTREAM_INCOMPLETE_ANSWER,
    UPSTREAM_QUOTA_EXHAUSTED,
    UNSUPPORTED_BY_TARGET,
    UPSTREAM_TIMEOUT,
    STORE_UNAVAILABLE,
    RECORD_NOT_FOUND,
    STORE_DISABLED,
    CIRCUIT_OPEN,
    NO_TARGET_LEFT,
    CONTEXT_WINDOW_EXCEEDED,
    CONTENT_POLICY_VIOLATION,
    MISSING_VARIABLE,
    INVALID_VARIABLE,
    UNKNOWN_VARIABLE,
    TEMPLATE_ERROR,
    MISSING_API_KEY,
    INVALID_API_KEY,
    MISSING_ADMIN_TOKEN,
    INVALID_ADMIN_TOKEN,
    KEY_NOT_ALLOWED,
    HOST_NOT_ALLOWED,
    ORIGIN_NOT_ALLOWED,
    BUDGET_EXCEEDED,
    SESSION_BUDGET_EXCEEDED,
    RATE_LIMITED,
    COUNTERS_UNAVAILABLE,
    FEATURE_NOT_FOUND,
    FEATURE_NOT_DEPLOYED,
    FEATURE_VERSION_NOT_FOUND,
    OUTPUT_PARSE_FAILED,
    INVALID_FEATURE,
    INVALID_DEPLOYMENT,
    NOTHING_TO_ROLL_BACK,
    EVAL_GATE_REFUSED,
    INVALID_BUDGET,
    BUDGET_NOT_FOUND,
    INTERNAL_ERROR,
    SHUTTING_DOWN,
    GUARDRAIL_BLOCKED,
    GUARDRAIL_ERROR,
    TOOL_CALL_DENIED,
    APPROVAL_REQUIRED,
    APPROVAL_PENDING,
    APPROVAL_NOT_FOUND,
    INVALID_USER_TOKEN,
    USER_SCOPES_REQUIRED,
    INVALID_APPROVAL,
    IDEMPOTENCY_KEY_REUSED,
    IDEMPOTENCY_IN_PROGRESS,
    CACHE_UNAVAILABLE,
    RESPONSE_NOT_FOUND,
    PREVIOUS_RESPONSE_NOT_FOUND,
];
