//! The replay action: a recorded call asked again (on its model, another route or
//! model, or for a feature call another version), through the gateway's own chat and
//! feature endpoints in process, so the replay is a call like any other (routed,
//! budgeted, guarded, recorded with `replay_of`); then both answers side by side.
//!
//! A replay spends money: it takes an admin session and the session's CSRF token. It
//! is made without a client key (the console's session stands for the operator), so it
//! counts against global, feature and user budgets but no key's.

use crate::ops::{change_allowed, in_process, opt_i64, text};
use crate::pages::{frame, render, see_other};
use crate::session::Session;
use crate::view::seg_of;
use crate::Console;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use llmop_store::Record;
use minijinja::context;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How long the page waits for the replay's record to reach the store.
const RECORD_WAIT: Duration = Duration::from_secs(10);

/// `POST /ui/requests/{id}/replay`: `model` (a route or `provider/model`, optional),
/// `version` (feature calls, optional).
pub async fn replay(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = match change_allowed(&c, &s, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let fail = |status: StatusCode, msg: String| {
        render(
            &c,
            "replay.html",
            status,
            context! { ..frame(&c, &s, 2), ..context! { error => msg, id => id.clone() } },
        )
    };
    let Some(store) = c.store.as_ref() else {
        return fail(
            StatusCode::NOT_FOUND,
            "Recording is off: there is nothing to replay.".into(),
        );
    };
    let version = match opt_i64(&f, "version") {
        Ok(v) => v,
        Err(m) => return fail(StatusCode::BAD_REQUEST, m),
    };
    let model = text(&f, "model");
    let original = match store.get(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return fail(StatusCode::NOT_FOUND, format!("No record of `{id}`.")),
        Err(e) => {
            tracing::error!(error = %e, "console: record read failed");
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "The record store cannot be read right now.".into(),
            );
        }
    };
    let new_id = format!("replay-{}", uuid::Uuid::now_v7());
    let call = match llmop_store::replay::replay_call(&original, model.as_deref(), version, &new_id)
    {
        Ok(call) => call,
        Err(m) => return fail(StatusCode::BAD_REQUEST, m),
    };
    let mut headers: Vec<(&str, String)> = call.headers.clone();
    headers.push(("x-llmop-actor", "console".into()));
    let (status, answer) =
        match in_process(&c, Method::POST, &call.path, &headers, Some(call.body)).await {
            Ok(x) => x,
            Err(m) => return fail(StatusCode::BAD_GATEWAY, m),
        };
    metrics::counter!("llmop_console_replays_total").increment(1);
    // The replay's own record carries its tokens, cost and latency as the gateway saw
    // them: wait for it (records are committed moments after the answer).
    let deadline = tokio::time::Instant::now() + RECORD_WAIT;
    loop {
        match store.get(&new_id).await {
            Ok(Some(_)) => return see_other(&format!("replays/{}", seg_of(&new_id))),
            Ok(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            _ => {
                let said = answer["error"]["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_default();
                return fail(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "The gateway answered {status} {said} but the replay's record {new_id} did not reach the store within {} s.",
                        RECORD_WAIT.as_secs()
                    ),
                );
            }
        }
    }
}

/// One side of the comparison.
#[derive(serde::Serialize)]
struct Side<'a> {
    request_id: &'a str,
    feature_version: Option<i64>,
    provider: Option<&'a str>,
    model: Option<&'a str>,
    status: u16,
    error_code: Option<&'a str>,
    parse_status: Option<&'a str>,
    latency_ms: i64,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cost_usd: Option<f64>,
    output_text: Option<&'a str>,
    tool_calls: Vec<(String, String)>,
}

impl<'a> Side<'a> {
    fn of(r: &'a Record) -> Side<'a> {
        let tool_calls = r
            .output_tool_calls
            .as_array()
            .map(|calls| {
                calls
                    .iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap_or("?").to_string(),
                            c["arguments"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Side {
            request_id: &r.request_id,
            feature_version: r.feature_version,
            provider: r.provider.as_deref(),
            model: r.model.as_deref(),
            status: r.status,
            error_code: r.error_code.as_deref(),
            parse_status: r.parse_status.as_deref(),
            latency_ms: r.latency_ms,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_usd: r.cost_usd,
            output_text: r.output_text.as_deref(),
            tool_calls,
        }
    }
}

/// `GET /ui/requests/{id}/replays/{replay}`: the original and its replay side by side.
pub async fn compare(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    Path((id, replay_id)): Path<(String, String)>,
) -> Response {
    let missing = |msg: String| {
        render(
            &c,
            "replay.html",
            StatusCode::NOT_FOUND,
            context! { ..frame(&c, &s, 3), ..context! { error => msg, id => id.clone() } },
        )
    };
    let Some(store) = c.store.as_ref() else {
        return missing("Recording is off: there is nothing to compare.".into());
    };
    let (original, replayed) = match (store.get(&id).await, store.get(&replay_id).await) {
        (Ok(Some(a)), Ok(Some(b))) if b.replay_of.as_deref() == Some(id.as_str()) => (a, b),
        (Ok(_), Ok(_)) => {
            return missing(format!("`{replay_id}` is not a replay of `{id}`."));
        }
        _ => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the record store cannot be read right now",
            )
                .into_response()
        }
    };
    let same = original.output_text == replayed.output_text
        && original.output_tool_calls == replayed.output_tool_calls;
    let parsed = |r: &Record| r.parsed_output.clone().unwrap_or(Value::Null);
    render(
        &c,
        "replay.html",
        StatusCode::OK,
        context! { ..frame(&c, &s, 3), ..context! {
            id => id,
            a => Side::of(&original),
            b => Side::of(&replayed),
            a_parsed => parsed(&original),
            b_parsed => parsed(&replayed),
            same => same,
        } },
    )
}
