//! `llmop replay`: a recorded request sent through a running gateway again (so the new
//! call is recorded like any other), on the recorded model, another route or model, or
//! for a feature call another version; both answers side by side.

use super::requests::{served_by, status};
use super::{open, opt, store_url, table, StoreArg};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use llmop_core::config::Config;
use llmop_store::{Record, Store};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct ReplayArgs {
    request_id: String,
    /// Replay on this route instead of the recorded model.
    #[arg(long, conflicts_with = "model")]
    route: Option<String>,
    /// Replay on this `provider/model` instead of the recorded model.
    #[arg(long)]
    model: Option<String>,
    /// Re-run a recorded feature call on this version, with the recorded variables
    /// (default for feature calls: the recorded version).
    #[arg(long)]
    version: Option<i64>,
    /// The running gateway (default: the config's `[server] listen`).
    #[arg(long, env = "LLMOP_GATEWAY_URL")]
    gateway: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

pub fn run(config: &Path, a: ReplayArgs) -> ExitCode {
    super::run_async(async {
        let store = open(&store_url(config, a.store.store)?).await?;
        let gateway = match a.gateway {
            Some(g) => g,
            None => {
                let config = Config::load(config).map_err(|e| {
                    anyhow!("cannot find the gateway's address (pass --gateway):\n{e}")
                })?;
                format!("http://{}", config.server.listen)
            }
        };
        replay(
            &store,
            &a.request_id,
            a.route.or(a.model).as_deref(),
            a.version,
            &gateway,
            a.json,
        )
        .await
    })
}

/// The recorded request as an OpenAI Chat Completions body, for `model`. Replays are
/// sent whole (not streamed): the answer is the same, and it is printed whole.
fn replay_body(r: &Record, model: Option<&str>) -> anyhow::Result<Value> {
    let Value::Object(params) = &r.request_params else {
        bail!("record {} has no request parameters", r.request_id);
    };
    if r.truncated {
        bail!(
            "record {} was cut to the store's max_field_bytes: its request cannot be replayed exactly",
            r.request_id
        );
    }
    if params.contains_key("invalid_body") {
        bail!(
            "request {} was refused as invalid ({}): there is nothing to replay",
            r.request_id,
            r.error_code.as_deref().unwrap_or("invalid_request")
        );
    }
    let msgs = r.input_messages.as_array().filter(|m| !m.is_empty());
    let Some(msgs) = msgs else {
        bail!("record {} has no input messages to replay", r.request_id);
    };
    let mut body: Map<String, Value> = params
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "stream" | "stream_options" | "anthropic_extra"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(m) = model {
        body.insert("model".into(), Value::String(m.to_string()));
    }
    if !body.contains_key("model") {
        bail!(
            "record {} does not say which model it asked for: pass --model or --route",
            r.request_id
        );
    }
    body.insert("messages".into(), Value::Array(msgs.clone()));
    Ok(Value::Object(body))
}

/// Which version a feature call is replayed on: `--version N`, else the recorded one.
/// `None`: replay the recorded messages through the chat endpoint.
fn replay_feature_version(
    original: &Record,
    version: Option<i64>,
    model: Option<&str>,
) -> anyhow::Result<Option<(String, i64, Value)>> {
    let feature_call = match (
        &original.feature,
        original.feature_version,
        &original.variables,
    ) {
        (Some(f), Some(v), Some(vars)) => Some((f.clone(), v, vars.clone())),
        _ => None,
    };
    match (feature_call, version) {
        (None, Some(_)) => bail!(
            "request `{}` was not a feature call: --version applies to feature calls only",
            original.request_id
        ),
        (Some(_), Some(_)) if model.is_some() => {
            bail!("--version re-runs the feature: it cannot be combined with --route or --model")
        }
        (Some((f, recorded, vars)), v) if model.is_none() => {
            Ok(Some((f, v.unwrap_or(recorded), vars)))
        }
        _ => Ok(None),
    }
}

async fn replay(
    store: &Store,
    id: &str,
    model: Option<&str>,
    version: Option<i64>,
    gateway: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    let original = store
        .get(id)
        .await?
        .ok_or_else(|| anyhow!("no record of request `{id}`"))?;
    let new_id = format!("replay-{}", uuid::Uuid::now_v7());
    let base = gateway.trim_end_matches('/');
    let client = reqwest::Client::new();
    let mut req = match replay_feature_version(&original, version, model)? {
        // A feature call: the recorded variables, on the chosen version.
        Some((feature, v, variables)) => client
            .post(format!("{base}/v1/features/{feature}/invoke"))
            .json(&json!({"variables": variables, "version": v})),
        None => client
            .post(format!("{base}/v1/chat/completions"))
            .json(&replay_body(&original, model)?),
    }
    .timeout(Duration::from_secs(600))
    .header("x-request-id", &new_id)
    .header("x-llmop-replay-of", &original.request_id);
    for (h, v) in [
        ("x-llmop-env", &original.env),
        ("x-llmop-user", &original.user),
        ("x-llmop-session", &original.session),
        ("x-llmop-feature", &original.feature),
    ] {
        if let Some(v) = v {
            req = req.header(h, v);
        }
    }
    if !original.tags.is_empty() {
        let tags: Vec<String> = original
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        req = req.header("x-llmop-tags", tags.join(","));
    }
    let resp = req.send().await.with_context(|| {
        format!("cannot reach the gateway at {gateway} (is it running? --gateway sets its URL)")
    })?;
    let http_status = resp.status();
    let _ = resp.bytes().await;
    // The replay's own record holds its tokens, cost and latency as the gateway saw them.
    let mut replayed = None;
    for _ in 0..100 {
        if let Some(r) = store.get(&new_id).await? {
            replayed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replayed = replayed.ok_or_else(|| {
        anyhow!("the gateway answered {http_status} but its record {new_id} did not reach the store within 5 s: is the gateway using the same store?")
    })?;
    if as_json {
        out!("{}", json!({"original": original, "replay": replayed}));
        return Ok(());
    }
    let mut t = table();
    t.set_header(["", "original", "replay"]);
    let row = |name: &str, f: &dyn Fn(&Record) -> String| {
        vec![name.to_string(), f(&original), f(&replayed)]
    };
    t.add_row(row("request id", &|r| r.request_id.clone()));
    if original.feature_version.is_some() {
        t.add_row(row("feature version", &|r| {
            r.feature_version
                .map(|v| format!("v{v}"))
                .unwrap_or_else(|| "-".into())
        }));
        t.add_row(row("parse", &|r| {
            r.parse_status.clone().unwrap_or_else(|| "-".into())
        }));
    }
    t.add_row(row("served by", &served_by));
    t.add_row(row("status", &status));
    t.add_row(row("latency ms", &|r| r.latency_ms.to_string()));
    t.add_row(row("tokens in/out", &|r| {
        format!("{}/{}", opt(&r.input_tokens), opt(&r.output_tokens))
    }));
    t.add_row(row("cost", &|r| {
        r.cost_usd
            .map(|c| format!("${}", llmop_cost::format_usd(c)))
            .unwrap_or_else(|| "unknown".into())
    }));
    t.add_row(row("output", &|r| {
        let mut s = r.output_text.clone().unwrap_or_default();
        if let Value::Array(calls) = &r.output_tool_calls {
            for c in calls {
                s.push_str(&format!(
                    "\ntool call {}({})",
                    c.get("name").and_then(Value::as_str).unwrap_or("?"),
                    c.get("arguments").and_then(Value::as_str).unwrap_or("")
                ));
            }
        }
        s
    }));
    out!("{t}");
    if original.output_text == replayed.output_text
        && original.output_tool_calls == replayed.output_tool_calls
    {
        out!("outputs are identical");
    } else {
        out!("outputs differ");
    }
    Ok(())
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
}
