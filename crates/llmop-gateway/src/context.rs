//! Request id and call metadata, read from headers before the body.

use crate::headers::X_REQUEST_ID;
use axum::http::{HeaderMap, HeaderValue};
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
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(new_request_id)
}

/// A metadata header's value held to the header rules: visible ASCII, trimmed, at most
/// `MAX_META_LEN` bytes; empty counts as absent.
fn meta(value: Option<&HeaderValue>, name: &str) -> Result<Option<String>, GatewayError> {
    let Some(v) = value else {
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

/// The headers a call's context is read from, each the first value sent under its name
/// (what `HeaderMap::get` returns).
#[derive(Default)]
struct Found<'a> {
    tags: Option<&'a HeaderValue>,
    env: Option<&'a HeaderValue>,
    user: Option<&'a HeaderValue>,
    session: Option<&'a HeaderValue>,
    feature: Option<&'a HeaderValue>,
    replay_of: Option<&'a HeaderValue>,
    timeout_ms: Option<&'a HeaderValue>,
    traceparent: Option<&'a HeaderValue>,
}

impl<'a> Found<'a> {
    /// One pass over the request's headers. Looking each of the eight names up instead
    /// parsed and hashed every name anew (`HeaderMap::get(&str)`): about 4k instructions
    /// a call, where a pass over a request's few headers compares a prefix per header.
    fn in_headers(headers: &'a HeaderMap) -> Found<'a> {
        let mut f = Found::default();
        for (name, value) in headers {
            let name = name.as_str();
            let slot = match name.strip_prefix("x-llmop-") {
                Some("tags") => &mut f.tags,
                Some("env") => &mut f.env,
                Some("user") => &mut f.user,
                Some("session") => &mut f.session,
                Some("feature") => &mut f.feature,
                Some("replay-of") => &mut f.replay_of,
                Some("timeout-ms") => &mut f.timeout_ms,
                None if name == "traceparent" => &mut f.traceparent,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        f
    }
}

/// A metadata value from a request body (`param` names its field), held to the header
/// rules: 400 naming the field otherwise.
pub fn body_meta(value: &str, param: &str) -> Result<Option<String>, GatewayError> {
    llmop_core::context::check_meta(value)
        .map_err(|m| GatewayError::invalid(format!("`{param}` {m}"), Some(param.to_string())))
}

/// Builds the call's context from `x-llmop-*` headers.
pub fn from_headers(headers: &HeaderMap, request_id: &str) -> Result<RequestContext, GatewayError> {
    let found = Found::in_headers(headers);
    let tags = match meta(found.tags, "x-llmop-tags")? {
        Some(raw) => {
            parse_tags(&raw).map_err(|m| GatewayError::invalid(m, Some("x-llmop-tags".into())))?
        }
        None => Default::default(),
    };
    Ok(RequestContext {
        request_id: request_id.to_string(),
        env: meta(found.env, "x-llmop-env")?,
        user: meta(found.user, "x-llmop-user")?,
        session: meta(found.session, "x-llmop-session")?,
        feature: meta(found.feature, "x-llmop-feature")?,
        tags,
        replay_of: match meta(found.replay_of, "x-llmop-replay-of")? {
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
        timeout_ms: match meta(found.timeout_ms, "x-llmop-timeout-ms")? {
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
        traceparent: found
            .traceparent
            .and_then(|v| v.to_str().ok())
            .and_then(llmop_core::context::TraceParent::parse),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The one pass reads what a lookup by name would: the first of repeated values,
    /// names in any case, nothing from look-alike names.
    #[test]
    fn the_pass_reads_what_a_lookup_by_name_reads() {
        let mut h = HeaderMap::new();
        h.append("X-LLMOP-USER", HeaderValue::from_static("first"));
        h.append("x-llmop-user", HeaderValue::from_static("second"));
        h.insert("x-llmop-userx", HeaderValue::from_static("no"));
        h.insert("x-llmop-", HeaderValue::from_static("no"));
        h.insert("llmop-session", HeaderValue::from_static("no"));
        h.insert("x-llmop-timeout-ms", HeaderValue::from_static("2500"));
        h.insert("x-llmop-replay-of", HeaderValue::from_static("req-1"));
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let c = from_headers(&h, "rid").unwrap();
        assert_eq!(
            c.user.as_deref(),
            h.get("x-llmop-user").and_then(|v| v.to_str().ok())
        );
        assert_eq!(c.user.as_deref(), Some("first"));
        assert_eq!(c.session, None);
        assert_eq!(c.timeout_ms, Some(2500));
        assert_eq!(c.replay_of.as_deref(), Some("req-1"));
        assert!(c.traceparent.is_some());
        h.insert("x-llmop-timeout-ms", HeaderValue::from_static("0"));
        let e = from_headers(&h, "rid").unwrap_err();
        assert!(e.to_string().contains("x-llmop-timeout-ms"), "{e}");
    }
}
