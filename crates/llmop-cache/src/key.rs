//! Request fingerprints: what makes two calls "the same" for the response cache and for
//! idempotency keys.
//!
//! A fingerprint is the SHA-256 of a canonical JSON text of the request as the provider
//! would get it: messages, tools, tool choice, response format, sampling parameters,
//! the client's format and its other fields (sorted), plus what the caller names (the
//! route or model, a feature's version, the cache's scope). Left out: whether the
//! client streams (a cached answer is replayed in either mode), `metadata` and `user`
//! (labels for the provider's logs, not inputs of the answer), `stream_options`, and
//! `prompt_cache_key` (a routing hint).

use llmop_core::ChatRequest;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Fields of a request's `extra` that do not change its answer.
const NOT_INPUTS: [&str; 5] = [
    "metadata",
    "user",
    "stream",
    "stream_options",
    "prompt_cache_key",
];

/// Bumped when the canonical form changes, so that old entries are never read as new.
const VERSION: u32 = 1;

#[derive(Serialize)]
struct Canonical<'a> {
    v: u32,
    /// Who may share the entry (an API key's id, `*` for a shared cache) and what the
    /// call named (route or model, feature version).
    scope: &'a str,
    target: &'a str,
    origin: llmop_core::WireFormat,
    messages: &'a [llmop_core::Message],
    params: &'a llmop_core::Params,
    tools: &'a [llmop_core::Tool],
    tool_choice: &'a Option<llmop_core::ToolChoice>,
    response_format: &'a Option<llmop_core::ResponseFormat>,
    extra: BTreeMap<&'a str, &'a Value>,
    /// Feature variables (idempotency fingerprints of feature calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    variables: Option<&'a Map<String, Value>>,
}

/// The response cache's key for `req`: `scope` says whose cache it is (an API key's id,
/// or `*` when the rule shares it), `target` what the call named (its route or model;
/// for a feature call, `feature@content_hash`).
pub fn response_key(req: &ChatRequest, scope: &str, target: &str) -> String {
    digest(&canonical(req, scope, target, None))
}

/// The fingerprint of an idempotent call's body: the request as the client sent it
/// (before a feature renders it), and a feature's variables.
pub fn body_fingerprint(req: &ChatRequest, variables: Option<&Map<String, Value>>) -> String {
    digest(&canonical(req, "", &req.model, variables))
}

fn canonical<'a>(
    req: &'a ChatRequest,
    scope: &'a str,
    target: &'a str,
    variables: Option<&'a Map<String, Value>>,
) -> Canonical<'a> {
    Canonical {
        v: VERSION,
        scope,
        target,
        origin: req.origin,
        messages: &req.messages,
        params: &req.params,
        tools: &req.tools,
        tool_choice: &req.tool_choice,
        response_format: &req.response_format,
        extra: req
            .extra
            .iter()
            .filter(|(k, _)| !NOT_INPUTS.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v))
            .collect(),
        variables,
    }
}

fn digest(c: &Canonical<'_>) -> String {
    let mut h = Sha256::new();
    // Serializing into the hasher: no intermediate text. A value that cannot be
    // serialized (none can: every field is plain data) leaves a distinct digest.
    if serde_json::to_writer(HashWriter(&mut h), c).is_err() {
        h.update(b"\xffunserializable");
    }
    let out = h.finalize();
    let mut s = String::with_capacity(64);
    for b in out {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmop_core::{Message, Role, Tool, WireFormat};
    use serde_json::json;

    fn req() -> ChatRequest {
        let mut r = ChatRequest::new(
            "main",
            vec![
                Message::text(Role::System, "Be brief."),
                Message::text(Role::User, "Hi"),
            ],
            WireFormat::OpenAi,
        );
        r.params.temperature = Some(0.0);
        r
    }

    #[test]
    fn every_input_of_the_answer_is_in_the_key() {
        let base = response_key(&req(), "k1", "main");
        assert_eq!(base, response_key(&req(), "k1", "main"), "stable");
        assert_eq!(base.len(), 64);
        let changed: Vec<(&str, ChatRequest)> = vec![
            ("message text", {
                let mut r = req();
                r.messages[1] = Message::text(Role::User, "Hi!");
                r
            }),
            ("role", {
                let mut r = req();
                r.messages[0].role = Role::User;
                r
            }),
            ("temperature", {
                let mut r = req();
                r.params.temperature = Some(0.1);
                r
            }),
            ("max_tokens", {
                let mut r = req();
                r.params.max_tokens = Some(5);
                r
            }),
            ("seed", {
                let mut r = req();
                r.params.seed = Some(1);
                r
            }),
            ("tools", {
                let mut r = req();
                r.tools.push(Tool {
                    name: "f".into(),
                    description: None,
                    parameters: json!({"type": "object"}),
                    strict: None,
                });
                r
            }),
            ("response format", {
                let mut r = req();
                r.response_format = Some(llmop_core::ResponseFormat::JsonObject);
                r
            }),
            ("an unknown field", {
                let mut r = req();
                r.extra.insert("logit_bias".into(), json!({"1": 2}));
                r
            }),
            ("the client's format", {
                let mut r = req();
                r.origin = WireFormat::Anthropic;
                r
            }),
        ];
        for (what, r) in changed {
            assert_ne!(
                base,
                response_key(&r, "k1", "main"),
                "{what} changes the key"
            );
        }
        assert_ne!(base, response_key(&req(), "k2", "main"), "the scope");
        assert_ne!(base, response_key(&req(), "k1", "other"), "the target");
    }

    #[test]
    fn labels_and_the_stream_flag_are_not_inputs() {
        let base = response_key(&req(), "k", "main");
        let mut r = req();
        r.stream = true;
        r.include_usage = true;
        r.user = Some("u1".into());
        r.extra.insert("metadata".into(), json!({"trace": "t-1"}));
        r.extra.insert("stream".into(), json!(true));
        r.extra.insert("prompt_cache_key".into(), json!("x"));
        assert_eq!(base, response_key(&r, "k", "main"));
    }

    #[test]
    fn the_order_of_unknown_fields_does_not_matter() {
        let mut a = req();
        a.extra.insert("a".into(), json!(1));
        a.extra.insert("b".into(), json!(2));
        let mut b = req();
        b.extra.insert("b".into(), json!(2));
        b.extra.insert("a".into(), json!(1));
        assert_eq!(response_key(&a, "k", "m"), response_key(&b, "k", "m"));
    }

    #[test]
    fn a_fingerprint_covers_feature_variables() {
        let mut v = Map::new();
        v.insert("q".into(), json!("one"));
        let one = body_fingerprint(&req(), Some(&v));
        v.insert("q".into(), json!("two"));
        assert_ne!(one, body_fingerprint(&req(), Some(&v)));
        assert_ne!(one, body_fingerprint(&req(), None));
    }
}
