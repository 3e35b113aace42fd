//! Typed errors of the request path.
//!
//! [`ProviderError`] is what a provider adapter returns; [`GatewayError`] is what the
//! request pipeline returns. Each carries a stable snake_case `code` for clients. The
//! HTTP status of each variant is decided in exactly one place: the gateway's
//! `http_error` module.

use crate::codes;
use std::time::Duration;
use thiserror::Error;

/// Which deadline an upstream call missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutStage {
    Connect,
    FirstByte,
    Total,
}

impl TimeoutStage {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutStage::Connect => "connect",
            TimeoutStage::FirstByte => "first_byte",
            TimeoutStage::Total => "total",
        }
    }
}

/// A refusal that says *this target* cannot take the request, though another might:
/// the basis of fallbacks on 4xx answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The prompt does not fit the model's context window.
    ContextWindow,
    /// The provider's content policy refused the request.
    ContentPolicy,
    /// The operator's account at the provider has no quota or credit left (OpenAI
    /// `insufficient_quota`): no retry helps, another provider may.
    QuotaExhausted,
}

/// An upstream call failed.
#[derive(Debug, Clone, Error)]
pub enum ProviderError {
    #[error("provider `{provider}` did not answer in time ({})", stage.as_str())]
    Timeout {
        provider: String,
        stage: TimeoutStage,
    },
    #[error("could not reach provider `{provider}`: {message}")]
    Connect { provider: String, message: String },
    /// The provider answered with an error status. `message` is the message extracted
    /// from the provider's error body, never the raw body.
    #[error("provider `{provider}` answered {status}: {message}")]
    Status {
        provider: String,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
        /// What a 4xx said about this target, when the body said it.
        refusal: Option<Refusal>,
    },
    /// The provider answered something that is not its documented format.
    #[error("provider `{provider}` sent a malformed response: {message}")]
    Protocol { provider: String, message: String },
    /// The provider reported an error inside a stream, or the stream broke.
    #[error("provider `{provider}` stream failed: {message}")]
    Stream { provider: String, message: String },
    /// The provider ended its answer with a finish reason that means it failed (Gemini
    /// `MALFORMED_FUNCTION_CALL`, `OTHER`…): not a clean stop. Retryable.
    #[error("provider `{provider}` ended the answer with {reason}: the model's output failed")]
    Incomplete { provider: String, reason: String },
    /// The request asks for something this target's format cannot express (a JSON mode
    /// with no equivalent…). Another target may; the request is never sent here.
    #[error("provider `{provider}` cannot honour `{param}`: {message}")]
    Unsupported {
        provider: String,
        param: String,
        message: String,
    },
}

impl ProviderError {
    /// The same error with every registered secret ([`crate::secret::scrub`]) removed
    /// from its message: upstream text may echo the credential it was sent.
    pub fn scrubbed(mut self) -> Self {
        match &mut self {
            ProviderError::Connect { message, .. }
            | ProviderError::Status { message, .. }
            | ProviderError::Protocol { message, .. }
            | ProviderError::Stream { message, .. } => {
                if let std::borrow::Cow::Owned(clean) = crate::secret::scrub(message) {
                    *message = clean;
                }
            }
            ProviderError::Timeout { .. }
            | ProviderError::Incomplete { .. }
            | ProviderError::Unsupported { .. } => {}
        }
        self
    }

    /// The provider's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Timeout { .. } => codes::UPSTREAM_TIMEOUT,
            ProviderError::Connect { .. } => codes::UPSTREAM_UNREACHABLE,
            ProviderError::Status {
                refusal: Some(Refusal::ContextWindow),
                ..
            } => codes::CONTEXT_WINDOW_EXCEEDED,
            ProviderError::Status {
                refusal: Some(Refusal::ContentPolicy),
                ..
            } => codes::CONTENT_POLICY_VIOLATION,
            ProviderError::Status {
                refusal: Some(Refusal::QuotaExhausted),
                ..
            } => codes::UPSTREAM_QUOTA_EXHAUSTED,
            ProviderError::Status { status, .. } => match status {
                429 => codes::UPSTREAM_RATE_LIMITED,
                401 | 403 => codes::UPSTREAM_AUTH_FAILED,
                400..=499 => codes::UPSTREAM_BAD_REQUEST,
                _ => codes::UPSTREAM_ERROR,
            },
            ProviderError::Protocol { .. } => codes::UPSTREAM_PROTOCOL_ERROR,
            ProviderError::Stream { .. } => codes::UPSTREAM_STREAM_ERROR,
            ProviderError::Incomplete { .. } => codes::UPSTREAM_INCOMPLETE_ANSWER,
            ProviderError::Unsupported { .. } => codes::UNSUPPORTED_BY_TARGET,
        }
    }

    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            ProviderError::Status { refusal, .. } => *refusal,
            _ => None,
        }
    }

    /// Whether another target could succeed where this one failed: the request itself
    /// was not at fault. A 4xx other than 408/409/429 says the request is wrong and
    /// would fail anywhere.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Status {
                refusal: Some(Refusal::QuotaExhausted),
                ..
            } => false,
            ProviderError::Status { status, .. } => {
                matches!(status, 408 | 409 | 429) || *status >= 500
            }
            ProviderError::Unsupported { .. } => false,
            _ => true,
        }
    }
}

/// The request pipeline failed. Every variant maps to one HTTP status and `code`.
#[derive(Debug, Clone, Error)]
pub enum GatewayError {
    /// The request is malformed. `param` names the offending field when known.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
        code: &'static str,
    },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The client did not send its whole body in time.
    #[error("the request body did not arrive within {ms} ms")]
    RequestTimeout { ms: u64 },
    #[error("{message}")]
    NotFound { message: String, code: &'static str },
    /// No key, or not a valid one (401).
    #[error("{message}")]
    Unauthorized { message: String, code: &'static str },
    /// A budget, session budget or rate limit refused the call (429). `retry_after_s`:
    /// when the window ends or the limit admits again. `handoff`: the call is a step of
    /// an agent loop that should be handed to a human.
    #[error("{message}")]
    Limited {
        message: String,
        code: &'static str,
        retry_after_s: Option<u64>,
        handoff: bool,
    },
    /// A valid key that may not do this (403).
    #[error("{message}")]
    Forbidden { message: String, code: &'static str },
    /// A tool call the model proposed is held for a person's approval (403
    /// `approval_required`): `POST /admin/approvals/{id}` decides, and the client's
    /// retry with `x-llmop-approval: <id>` gets the held answer once approved.
    #[error("{message}")]
    Held {
        message: String,
        approval_id: String,
    },
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The deadline of the whole request passed.
    #[error("request did not complete within {ms} ms")]
    DeadlineExceeded { ms: u64 },
    /// The model answered, but its output did not pass the feature's parser and the
    /// parse-failure policy says to surface it (422).
    #[error("{message}")]
    Unprocessable { message: String, code: &'static str },
    /// The request conflicts with an earlier one (an idempotency key reused with
    /// another body, or still running) (409).
    #[error("{message}")]
    Conflict { message: String, code: &'static str },
    /// A dependency of the gateway (the record store) cannot serve now.
    #[error("{message}")]
    Unavailable { message: String, code: &'static str },
    /// A bug or an impossible state; the message is safe to show.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: Option<String>) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param,
            code: codes::INVALID_REQUEST,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::InvalidRequest { code, .. } => code,
            GatewayError::PayloadTooLarge { .. } => codes::PAYLOAD_TOO_LARGE,
            GatewayError::RequestTimeout { .. } => codes::REQUEST_TIMEOUT,
            GatewayError::NotFound { code, .. } => code,
            GatewayError::Unauthorized { code, .. } => code,
            GatewayError::Forbidden { code, .. } => code,
            GatewayError::Limited { code, .. } => code,
            GatewayError::Held { .. } => codes::APPROVAL_REQUIRED,
            GatewayError::Provider(e) => e.code(),
            GatewayError::DeadlineExceeded { .. } => codes::UPSTREAM_TIMEOUT,
            GatewayError::Unavailable { code, .. } => code,
            GatewayError::Unprocessable { code, .. } => code,
            GatewayError::Conflict { code, .. } => code,
            GatewayError::Internal(_) => codes::INTERNAL_ERROR,
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            GatewayError::InvalidRequest { param, .. } => param.as_deref(),
            GatewayError::Provider(ProviderError::Unsupported { param, .. }) => Some(param),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> ProviderError {
        ProviderError::Status {
            provider: "p".into(),
            status: s,
            message: "m".into(),
            retry_after: None,
            refusal: None,
        }
    }

    #[test]
    fn retryable_follows_the_contract() {
        for s in [408, 409, 429, 500, 502, 503, 504] {
            assert!(status(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 422] {
            assert!(!status(s).is_retryable(), "{s}");
        }
    }

    #[test]
    fn codes_are_stable() {
        assert_eq!(status(429).code(), "upstream_rate_limited");
        assert_eq!(status(503).code(), "upstream_error");
        assert_eq!(status(400).code(), "upstream_bad_request");
        assert_eq!(
            GatewayError::DeadlineExceeded { ms: 5 }.code(),
            "upstream_timeout"
        );
    }
}
