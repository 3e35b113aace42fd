//! Request id and call metadata, read from headers before the body.

use axum::http::HeaderMap;
use llmop_core::context::{
    new_request_id, parse_tags, valid_record_id, valid_request_id, RequestContext, MAX_META_LEN,
};
use llmop_core::GatewayError;

/// The id of the current request, put in the request's extensions by the request-id
/// middleware so that every response (errors and unknown paths too) carries it.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub fn request_id_from(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(new_request_id)
}

fn meta(headers: &HeaderMap, name: &str) -> Result<Option<String>, GatewayError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    let s = v.to_str().map_err(|_| {
        GatewayError::invalid(
            format!("header `{name}` must be visible ASCII"),
            Some(name.to_string()),
        )
    })?;
    let s = s.trim();
    if s.len() > MAX_META_LEN {
        return Err(GatewayError::invalid(
            format!("header `{name}` is longer than {MAX_META_LEN} bytes"),
            Some(name.to_string()),
        ));
    }
    Ok((!s.is_empty()).then(|| s.to_string()))
}

/// A metadata value from a request body (`param` names its field), held to the header
/// rules: 400 naming the field otherwise.
pub fn body_meta(value: &str, param: &str) -> Result<Option<String>, GatewayError> {
    llmop_core::context::check_meta(value)
        .map_err(|m| GatewayError::invalid(format!("`{param}` {m}"), Some(param.to_string())))
}

/// Builds the call's context from `x-llmop-*` headers.
pub fn from_headers(headers: &HeaderMap, request_id: &str) -> Result<RequestContext, GatewayError> {
    let tags = match meta(headers, "x-llmop-tags")? {
        Some(raw) => {
            parse_tags(&raw).map_err(|m| GatewayError::invalid(m, Some("x-llmop-tags".into())))?
        }
        None => Default::default(),
    };
    Ok(RequestContext {
        request_id: request_id.to_string(),
        env: meta(headers, "x-llmop-env")?,
        user: meta(headers, "x-llmop-user")?,
        session: meta(headers, "x-llmop-session")?,
        feature: meta(headers, "x-llmop-feature")?,
        tags,
        replay_of: match meta(headers, "x-llmop-replay-of")? {
            // A recorded call's key: possibly re-keyed (`<id>~<uid>`) by the store.
            Some(id) if valid_record_id(&id) => Some(id),
            Some(_) => {
                return Err(GatewayError::invalid(
                    "header `x-llmop-replay-of` must be a request id",
                    Some("x-llmop-replay-of".into()),
                ))
            }
            None => None,
        },
        timeout_ms: match meta(headers, "x-llmop-timeout-ms")? {
            Some(v) => Some(
                v.parse::<u64>()
                    .ok()
                    .filter(|ms| (1..=86_400_000).contains(ms))
                    .ok_or_else(|| {
                        GatewayError::invalid(
                            "header `x-llmop-timeout-ms` must be a number of milliseconds from 1 to 86400000",
                            Some("x-llmop-timeout-ms".into()),
                        )
                    })?,
            ),
            None => None,
        },
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(llmop_core::context::TraceParent::parse),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn reads_metadata() {
        let mut h = HeaderMap::new();
        h.insert("x-llmop-user", HeaderValue::from_static("u-1"));
        h.insert("x-llmop-session", HeaderValue::from_static("s-1"));
        h.insert("x-llmop-env", HeaderValue::from_static("prod"));
        h.insert("x-llmop-feature", HeaderValue::from_static("summarize"));
        h.insert("x-llmop-tags", HeaderValue::from_static("team=a, tier=pro"));
        let c = from_headers(&h, "rid").unwrap();
        assert_eq!(c.user.as_deref(), Some("u-1"));
        assert_eq!(c.session.as_deref(), Some("s-1"));
        assert_eq!(c.env.as_deref(), Some("prod"));
        assert_eq!(c.feature.as_deref(), Some("summarize"));
        assert_eq!(c.tags.len(), 2);
    }

    #[test]
    fn rejects_bad_tags_and_keeps_good_ids() {
        let mut h = HeaderMap::new();
        h.insert("x-llmop-tags", HeaderValue::from_static("oops"));
        assert!(from_headers(&h, "rid").is_err());
        h.insert("x-request-id", HeaderValue::from_static("client-id-1"));
        assert_eq!(request_id_from(&h), "client-id-1");
        h.insert(
            "x-request-id",
            HeaderValue::from_static("bad id with spaces"),
        );
        assert_ne!(request_id_from(&h), "bad id with spaces");
    }
}
