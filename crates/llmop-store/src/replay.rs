//! A recorded call, asked again: the request that replays it through a running gateway
//! (on the recorded model, another route or model, or for a feature call another
//! version), for `llmop replay` and the console's replay action. Pure: building the
//! request only; sending it is the caller's.

use crate::record::Record;
use serde_json::{json, Map, Value};

/// What to send: the path on the gateway, the JSON body, the headers (the new call's
/// request id, `x-llmop-replay-of`, and the original's context: env, user, session,
/// feature, tags).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayCall {
    pub path: String,
    pub body: Value,
    pub headers: Vec<(&'static str, String)>,
}

/// The replay of `original` as call `new_id`: on `model` (a route or `provider/model`)
/// or, for a feature call, on `version` (default: the recorded version, with the
/// recorded variables).
pub fn replay_call(
    original: &Record,
    model: Option<&str>,
    version: Option<i64>,
    new_id: &str,
) -> Result<ReplayCall, String> {
    let (path, body) = match replay_feature_version(original, version, model)? {
        // A feature call: the recorded variables, on the chosen version.
        Some((feature, v, variables)) => (
            format!("/v1/features/{}/invoke", url_segment(&feature)),
            json!({"variables": variables, "version": v}),
        ),
        None => (
            "/v1/chat/completions".to_string(),
            replay_body(original, model)?,
        ),
    };
    let mut headers = vec![
        ("x-request-id", new_id.to_string()),
        ("x-llmop-replay-of", original.request_id.clone()),
    ];
    for (h, v) in [
        ("x-llmop-env", &original.env),
        ("x-llmop-user", &original.user),
        ("x-llmop-session", &original.session),
        ("x-llmop-feature", &original.feature),
    ] {
        if let Some(v) = v {
            headers.push((h, v.clone()));
        }
    }
    if !original.tags.is_empty() {
        let tags: Vec<String> = original
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        headers.push(("x-llmop-tags", tags.join(",")));
    }
    Ok(ReplayCall {
        path,
        body,
        headers,
    })
}

/// A feature name as one path segment (names are checked when pushed; this keeps a
/// stray character from changing the path all the same).
fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The recorded request as an OpenAI Chat Completions body, for `model`. Replays are
/// sent whole (not streamed): the answer is the same, and it is shown whole.
fn replay_body(r: &Record, model: Option<&str>) -> Result<Value, String> {
    let Value::Object(params) = &r.request_params else {
        return Err(format!("record {} has no request parameters", r.request_id));
    };
    if r.endpoint == "/v1/embeddings" {
        return Err(format!(
            "record {} is an embeddings call: only conversations are replayed",
            r.request_id
        ));
    }
    if r.truncated {
        return Err(format!(
            "record {} was cut to the store's max_field_bytes: its request cannot be replayed exactly",
            r.request_id
        ));
    }
    if params.contains_key("invalid_body") {
        return Err(format!(
            "request {} was refused as invalid ({}): there is nothing to replay",
            r.request_id,
            r.error_code
                .as_deref()
                .unwrap_or(llmop_core::codes::INVALID_REQUEST)
        ));
    }
    let msgs = r.input_messages.as_array().filter(|m| !m.is_empty());
    let Some(msgs) = msgs else {
        return Err(format!(
            "record {} has no input messages to replay",
            r.request_id
        ));
    };
    let mut body: Map<String, Value> = params
        .iter()
        // llmop's own notes on the call (a Responses call's `responses`), not request
        // fields.
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "stream" | "stream_options" | "anthropic_extra" | "responses"
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(m) = model {
        body.insert("model".into(), Value::String(m.to_string()));
    }
    if !body.contains_key("model") {
        return Err(format!(
            "record {} does not say which model it asked for: name a model or route",
            r.request_id
        ));
    }
    body.insert("messages".into(), Value::Array(msgs.clone()));
    Ok(Value::Object(body))
}

/// Which version a feature call is replayed on: the one asked for, else the recorded one.
/// `None`: replay the recorded messages through the chat endpoint.
fn replay_feature_version(
    original: &Record,
    version: Option<i64>,
    model: Option<&str>,
) -> Result<Option<(String, i64, Value)>, String> {
    let feature_call = match (
        &original.feature,
        original.feature_version,
        &original.variables,
    ) {
        (Some(f), Some(v), Some(vars)) => Some((f.clone(), v, vars.clone())),
        _ => None,
    };
    match (feature_call, version) {
        (None, Some(_)) => Err(format!(
            "request `{}` was not a feature call: a version applies to feature calls only",
            original.request_id
        )),
        (Some(_), Some(_)) if model.is_some() => Err(
            "a version re-runs the feature: it cannot be combined with another route or model"
                .to_string(),
        ),
        (Some((f, recorded, vars)), v) if model.is_none() => {
            Ok(Some((f, v.unwrap_or(recorded), vars)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record {
        let mut r = Record::new("r1", 1_700_000_000_000, "/v1/messages");
        r.status = 200;
        r.request_params = json!({"model": "default", "temperature": 0.5, "stream": true, "stream_options": {"include_usage": true}, "anthropic_extra": {"top_k": 3}});
        r.input_messages = json!([{"role": "user", "content": "hi"}]);
        r
    }

    #[test]
    fn replay_body_keeps_parameters_and_drops_transport() {
        let b = replay_body(&rec(), None).unwrap();
        assert_eq!(
            b,
            json!({"model": "default", "temperature": 0.5, "messages": [{"role": "user", "content": "hi"}]})
        );
        let b = replay_body(&rec(), Some("sim/echo")).unwrap();
        assert_eq!(b["model"], "sim/echo");
    }

    #[test]
    fn invalid_requests_are_not_replayed() {
        let mut r = rec();
        r.request_params = json!({"invalid_body": "{bad"});
        assert!(replay_body(&r, None).is_err());
        let mut r = rec();
        r.input_messages = json!([]);
        assert!(replay_body(&r, None).is_err());
    }

    #[test]
    fn a_feature_call_is_replayed_on_a_version_with_its_variables() {
        let mut r = rec();
        r.feature = Some("summarize".into());
        r.feature_version = Some(3);
        r.variables = Some(json!({"ticket": "x"}));
        r.user = Some("ada".into());
        let c = replay_call(&r, None, Some(2), "new-1").unwrap();
        assert_eq!(c.path, "/v1/features/summarize/invoke");
        assert_eq!(c.body, json!({"variables": {"ticket": "x"}, "version": 2}));
        assert!(c.headers.contains(&("x-llmop-replay-of", "r1".to_string())));
        assert!(c.headers.contains(&("x-llmop-user", "ada".to_string())));
        assert!(replay_call(&r, Some("sim/echo"), Some(2), "n").is_err());
        // Another model: the recorded messages through the chat endpoint.
        let c = replay_call(&r, Some("sim/echo"), None, "n").unwrap();
        assert_eq!(c.path, "/v1/chat/completions");
        assert!(
            replay_call(&rec(), None, Some(2), "n").is_err(),
            "not a feature call"
        );
    }
}
