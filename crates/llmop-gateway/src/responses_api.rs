//! `/v1/responses` beyond the call itself (which is the chat entry, `handlers`): a
//! recorded response read back (`GET /v1/responses/{id}`) and the conversation of
//! `previous_response_id` rebuilt from the records.
//!
//! llmop keeps no conversation state of its own: a response *is* its call's record
//! (`resp_<request_id>`), in whatever store the replicas share. A continuation is the
//! earlier call's input messages, without its `instructions` (as OpenAI does), then its
//! answer; the reasoning state of its tool calls comes back through the `restore`
//! stage as for any other client. What a record masked (guardrails) stays masked; a
//! record cut at `[store] max_field_bytes` cannot be continued (refused, not guessed).

use crate::auth::Auth;
use crate::context::RequestId;
use crate::http_error::{self, WireFormat};
use crate::respond;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use llmop_core::{codes, GatewayError, Message, Part, Role, ToolCall};
use llmop_store::{Record, Store};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// How long a lookup waits for the record of a response that was just answered (on
/// this replica or another) to be committed: the writer commits within ~50 ms in
/// default durability. Polls back off (25 ms, doubling, at most 400 ms: six reads), and
/// an id llmop made long before is looked up once: an unknown id cannot make the
/// gateway poll its store thirty times.
const COMMIT_WAIT: Duration = Duration::from_millis(1_500);
const FIRST_POLL: Duration = Duration::from_millis(25);
const MAX_POLL: Duration = Duration::from_millis(400);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn not_found(id: &str, param: Option<&str>) -> GatewayError {
    let message = format!("no stored response `{id}` for this key");
    match param {
        Some(p) => GatewayError::InvalidRequest {
            message,
            param: Some(p.into()),
            code: codes::PREVIOUS_RESPONSE_NOT_FOUND,
        },
        None => GatewayError::NotFound {
            message,
            code: codes::RESPONSE_NOT_FOUND,
        },
    }
}

fn unavailable(e: llmop_store::StoreError) -> GatewayError {
    tracing::error!(error = %e, "record store read failed");
    GatewayError::Unavailable {
        message: "the record store cannot be read right now".into(),
        code: codes::STORE_UNAVAILABLE,
    }
}

/// The stored response `id` as `key_id` may see it: its record, if it is a
/// `/v1/responses` call of the same key (any, while the gateway is open) that did not
/// ask `store: false`. `param` names the request field for errors (`None`: a read).
pub(crate) async fn load(
    store: Option<&Store>,
    id: &str,
    key_id: Option<&str>,
    param: Option<&str>,
) -> Result<Record, GatewayError> {
    let store = store.ok_or_else(|| GatewayError::NotFound {
        message: "recording is off ([store] enabled = false): responses cannot be stored".into(),
        code: codes::STORE_DISABLED,
    })?;
    let rid = respond::request_id_of(id).ok_or_else(|| not_found(id, param))?;
    // A client-chosen id may be any age: it gets the wait. One llmop made says when.
    let recent = llmop_core::context::request_id_made_at_ms(rid)
        .is_none_or(|made| now_ms() - made < COMMIT_WAIT.as_millis() as i64 * 2);
    let until = tokio::time::Instant::now() + COMMIT_WAIT;
    let mut poll = FIRST_POLL;
    let rec = loop {
        match store.get(rid).await.map_err(unavailable)? {
            Some(r) => break r,
            None if recent && tokio::time::Instant::now() + poll < until => {
                tokio::time::sleep(poll).await;
                poll = (poll * 2).min(MAX_POLL);
            }
            None => return Err(not_found(id, param)),
        }
    };
    let stored = rec.request_params["responses"]["store"]
        .as_bool()
        .unwrap_or(false);
    // Another key's response is as absent as one that never was.
    if rec.endpoint != "/v1/responses"
        || !stored
        || (key_id.is_some() && rec.key_id.as_deref() != key_id)
    {
        return Err(not_found(id, param));
    }
    Ok(rec)
}

/// The conversation of a recorded response: its input (without its instructions),
/// then its answer.
pub(crate) fn conversation(rec: &Record, id: &str) -> Result<Vec<Message>, GatewayError> {
    let unusable = |why: &str| GatewayError::InvalidRequest {
        message: format!("response `{id}` cannot be continued: {why}"),
        param: Some("previous_response_id".into()),
        code: codes::PREVIOUS_RESPONSE_NOT_FOUND,
    };
    if rec.status >= 400 {
        return Err(unusable("it failed"));
    }
    if rec.truncated {
        return Err(unusable(
            "its record was cut at [store] max_field_bytes; send the conversation as input items",
        ));
    }
    // Recorded in the Chat Completions shape (records.md): read back by that parser.
    let body = json!({"model": "-", "messages": rec.input_messages});
    let bytes = serde_json::to_vec(&body).map_err(|e| GatewayError::Internal(e.to_string()))?;
    let mut messages = match llmop_wire::openai::parse_request(&bytes) {
        Ok(r) => r.messages,
        Err(_) if rec.input_messages.as_array().is_some_and(Vec::is_empty) => Vec::new(),
        Err(e) => {
            return Err(unusable(&format!(
                "its recorded input does not parse ({e})"
            )))
        }
    };
    let had_instructions = rec.request_params["responses"]["instructions"]
        .as_bool()
        .unwrap_or(false);
    if had_instructions && messages.first().is_some_and(|m| m.role == Role::System) {
        messages.remove(0);
    }
    let mut answer = Vec::new();
    if let Some(t) = rec.output_text.as_deref().filter(|t| !t.is_empty()) {
        answer.push(Part::Text(t.to_string()));
    }
    if let Some(calls) = rec.output_tool_calls.as_array() {
        for c in calls {
            let call: ToolCall = serde_json::from_value(c.clone())
                .map_err(|_| unusable("its recorded tool calls do not parse"))?;
            answer.push(Part::ToolCall(call));
        }
    }
    if !answer.is_empty() {
        messages.push(Message {
            role: Role::Assistant,
            parts: answer,
            name: None,
        });
    }
    Ok(messages)
}

/// A response object from a record.
fn response_of(rec: &Record) -> Value {
    let id = respond::response_id(&rec.request_id);
    let mut parts = Vec::new();
    if let Some(t) = rec.output_text.as_deref().filter(|t| !t.is_empty()) {
        parts.push(Part::Text(t.to_string()));
    }
    for c in rec.output_tool_calls.as_array().into_iter().flatten() {
        if let Ok(call) = serde_json::from_value::<ToolCall>(c.clone()) {
            parts.push(Part::ToolCall(call));
        }
    }
    let usage = rec.input_tokens.map(|i| {
        let o = rec.output_tokens.unwrap_or(0);
        json!({
            "input_tokens": i,
            "input_tokens_details": {"cached_tokens": rec.cached_tokens.unwrap_or(0)},
            "output_tokens": o,
            "output_tokens_details": {"reasoning_tokens": rec.reasoning_tokens.unwrap_or(0)},
            "total_tokens": i + o,
        })
    });
    let failed = rec.status >= 400;
    let had_instructions = rec.request_params["responses"]["instructions"]
        .as_bool()
        .unwrap_or(false);
    let instructions = if had_instructions {
        rec.input_messages[0]["content"].clone()
    } else {
        Value::Null
    };
    json!({
        "id": id,
        "object": "response",
        "created_at": rec.created_at_ms / 1000,
        "status": if failed { "failed" } else { "completed" },
        "error": if failed { json!({"code": rec.error_code, "message": "the call failed"}) } else { Value::Null },
        "incomplete_details": null,
        "instructions": instructions,
        "model": rec.upstream_model.as_deref().or(rec.model.as_deref()),
        "output": llmop_wire::responses::output_items(&id, &parts),
        "usage": usage,
        "previous_response_id": rec.request_params["responses"]["previous_response_id"],
        "store": true,
        "metadata": {},
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
    })
}

/// `GET /v1/responses/{id}`: a stored response, for the key that made it.
pub async fn get(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let key = Auth::client(&app.auth, &headers)?;
        let store = app.recorder.as_ref().map(|r| &r.store);
        let rec = load(store, &id, key.as_ref().map(|k| k.id.as_str()), None).await?;
        Ok::<_, GatewayError>(axum::Json(response_of(&rec)).into_response())
    }
    .await;
    r.unwrap_or_else(|e| http_error::response(WireFormat::Responses, &e, &rid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(messages: Value, text: &str, instructions: bool) -> Record {
        let mut r = Record::new("rid1", 0, "/v1/responses");
        r.status = 200;
        r.input_messages = messages;
        r.output_text = Some(text.into());
        r.output_tool_calls = json!([{"id": "c1", "name": "f", "arguments": "{}"}]);
        r.request_params = json!({"responses": {"store": true, "instructions": instructions}});
        r
    }

    #[test]
    fn a_continuation_drops_the_instructions_and_keeps_the_answer() {
        let r = record(
            json!([{"role": "system", "content": "old"}, {"role": "user", "content": "hi"}]),
            "calling",
            true,
        );
        let m = conversation(&r, "resp_rid1").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].joined_text(), "hi");
        assert_eq!(m[1].role, Role::Assistant);
        assert_eq!(m[1].parts.len(), 2);
        // A system message the client sent as input stays.
        let r = record(
            json!([{"role": "system", "content": "mine"}, {"role": "user", "content": "hi"}]),
            "x",
            false,
        );
        assert_eq!(conversation(&r, "resp_rid1").unwrap().len(), 3);
        let mut cut = r.clone();
        cut.truncated = true;
        assert!(conversation(&cut, "resp_rid1").is_err());
        let v = response_of(&r);
        assert_eq!(v["id"], "resp_rid1");
        assert_eq!(v["output"][0]["content"][0]["text"], "x");
        assert_eq!(v["output"][1]["call_id"], "c1");
    }
}
