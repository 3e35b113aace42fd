//! The one place where errors become HTTP statuses and error bodies.
//!
//! Clients of `/v1/chat/completions` get the OpenAI envelope
//! `{"error":{"type","code","message","param","request_id"}}`; clients of
//! `/v1/messages` get Anthropic's `{"type":"error","error":{"type","message"}}`, with the
//! same stable `code` inside.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use llmop_core::{GatewayError, ProviderError};
use llmop_wire::{anthropic, openai};

/// The wire format a client speaks decides the shape of every answer: the one enum of
/// formats, `llmop_core::WireFormat`.
pub use llmop_core::WireFormat;

pub fn status_of(e: &GatewayError) -> StatusCode {
    match e {
        GatewayError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
        GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        GatewayError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        GatewayError::NotFound { .. } => StatusCode::NOT_FOUND,
        GatewayError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
        GatewayError::Forbidden { .. } | GatewayError::Held { .. } => StatusCode::FORBIDDEN,
        GatewayError::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
        GatewayError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
        GatewayError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        GatewayError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        GatewayError::Conflict { .. } => StatusCode::CONFLICT,
        GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        GatewayError::Provider(p) => match p {
            ProviderError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            // What the request asks cannot be expressed to this target: the client
            // can change the request (or the route).
            ProviderError::Unsupported { .. } => StatusCode::BAD_REQUEST,
            // The operator's account is out of quota: not the client's doing.
            ProviderError::Status {
                refusal: Some(llmop_core::Refusal::QuotaExhausted),
                ..
            } => StatusCode::BAD_GATEWAY,
            ProviderError::Status { status, .. } => match status {
                429 => StatusCode::TOO_MANY_REQUESTS,
                // The upstream refused the request itself: the client can fix it.
                400 | 404 | 413 | 422 => {
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
                }
                // Our credentials towards the upstream, or anything else: not the
                // client's doing.
                _ => StatusCode::BAD_GATEWAY,
            },
            _ => StatusCode::BAD_GATEWAY,
        },
    }
}

fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 404 | 408 | 409 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// The error response for `e` in the client's format.
pub fn response(format: WireFormat, e: &GatewayError, request_id: &str) -> Response {
    let status = status_of(e);
    let message = e.to_string();
    let mut body = match format {
        WireFormat::OpenAi | WireFormat::Responses => openai::error_body(
            openai_type(status),
            e.code(),
            &message,
            e.param(),
            request_id,
        ),
        WireFormat::Anthropic => anthropic::error_body(
            anthropic::error_type_for_status(status.as_u16()),
            e.code(),
            &message,
            request_id,
        ),
    };
    if let GatewayError::Limited { handoff: true, .. } = e {
        // The hint an agent loop acts on: stop, and hand the conversation to a person.
        if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) {
            if let Some(err) = v.get_mut("error").and_then(|e| e.as_object_mut()) {
                err.insert(
                    "handoff".into(),
                    serde_json::json!({"to": "human", "reason": message}),
                );
                body = serde_json::to_vec(&v).unwrap_or(body);
            }
        }
    }
    if let GatewayError::Held { approval_id, .. } = e {
        // The hint an agent loop acts on: a person decides, then the same call is
        // retried with `x-llmop-approval`.
        if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) {
            if let Some(err) = v.get_mut("error").and_then(|e| e.as_object_mut()) {
                err.insert(
                    "handoff".into(),
                    serde_json::json!({"to": "human", "approval_id": approval_id, "retry_with_header": "x-llmop-approval"}),
                );
                body = serde_json::to_vec(&v).unwrap_or(body);
            }
        }
    }
    let mut resp = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    let retry_after = match e {
        GatewayError::Provider(ProviderError::Status {
            retry_after: Some(d),
            refusal: None,
            ..
        }) => Some(d.as_secs_f64().ceil().max(1.0) as u64),
        GatewayError::Limited { retry_after_s, .. } => *retry_after_s,
        _ => None,
    };
    if let Some(v) = retry_after.and_then(|s| HeaderValue::from_str(&s.max(1).to_string()).ok()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    if let GatewayError::Limited { handoff: true, .. } = e {
        resp.headers_mut()
            .insert("x-llmop-handoff", HeaderValue::from_static("human"));
    }
    if let GatewayError::Held { approval_id, .. } = e {
        if let Ok(v) = HeaderValue::from_str(approval_id) {
            resp.headers_mut().insert("x-llmop-approval-id", v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(status: u16) -> GatewayError {
        GatewayError::Provider(ProviderError::Status {
            provider: "p".into(),
            status,
            message: "m".into(),
            retry_after: None,
            refusal: None,
        })
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(status_of(&upstream(429)), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status_of(&upstream(500)), StatusCode::BAD_GATEWAY);
        assert_eq!(status_of(&upstream(401)), StatusCode::BAD_GATEWAY);
        assert_eq!(status_of(&upstream(400)), StatusCode::BAD_REQUEST);
        assert_eq!(
            status_of(&GatewayError::PayloadTooLarge { limit: 1 }),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status_of(&GatewayError::Provider(ProviderError::Timeout {
                provider: "p".into(),
                stage: llmop_core::error::TimeoutStage::Total
            })),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
