//! `llmop requests list|show`, `llmop query` and `llmop replay`: the record store from the
//! command line. They read the store directly (the URL of `[store]` in the config, or
//! `--store`), so they work whether or not a gateway is running; `replay` sends the
//! rebuilt request through a running gateway, so that the new call is recorded like any
//! other.

use anyhow::{anyhow, bail, Context};
use comfy_table::{presets, ContentArrangement, Table};
use llmop_core::config::Config;
use llmop_store::{parse_time, ListFilter, Record, Store};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Duration;

/// `println!` that ends the program quietly when stdout is closed (`llmop … | head`)
/// instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::records_cli::write_out(format_args!($($t)*))
    };
}

pub fn write_out(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|()| o.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Where the records are: `--store`, else the config's `[store] url`.
pub fn store_url(config_path: &Path, store: Option<String>) -> anyhow::Result<String> {
    if let Some(s) = store {
        return Ok(s);
    }
    let config = Config::load(config_path).map_err(|e| {
        anyhow!("cannot read the store URL from the config (or pass --store):\n{e}")
    })?;
    Ok(config.store.resolved_url(&config.dir))
}

/// Opens an existing store. A SQLite file that does not exist is an error here (a typo
/// should not create an empty store and report "no records").
pub async fn open(url: &str) -> anyhow::Result<Store> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if !path.starts_with(':') && !Path::new(path).exists() {
            bail!("no record store at {path} (has a gateway with this config served any call?)");
        }
    }
    Store::open(url)
        .await
        .with_context(|| format!("cannot open the record store {url}"))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_HORIZONTAL_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic);
    t
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(T::to_string).unwrap_or_else(|| "-".into())
}

fn served_by(r: &Record) -> String {
    match (&r.provider, &r.model) {
        (Some(p), Some(m)) => format!("{p}/{m}"),
        _ => "-".into(),
    }
}

fn status(r: &Record) -> String {
    match &r.error_code {
        Some(code) => format!("{} {code}", r.status),
        None => r.status.to_string(),
    }
}

pub struct ListArgs {
    pub filter: ListFilter,
    pub since: Option<String>,
    pub until: Option<String>,
    pub json: bool,
}

pub async fn list(store: &Store, mut a: ListArgs) -> anyhow::Result<()> {
    let now = now_ms();
    if let Some(s) = &a.since {
        a.filter.since_ms = Some(parse_time(s, now).map_err(|e| anyhow!("--since: {e}"))?);
    }
    if let Some(u) = &a.until {
        a.filter.until_ms = Some(parse_time(u, now).map_err(|e| anyhow!("--until: {e}"))?);
    }
    let page = store.list(&a.filter).await?;
    if a.json {
        out!(
            "{}",
            json!({"data": page.records, "next_cursor": page.next_cursor})
        );
        return Ok(());
    }
    let mut t = table();
    t.set_header([
        "time (UTC)",
        "request id",
        "status",
        "served by",
        "route",
        "ms",
        "tokens in/out",
        "user",
        "feature",
    ]);
    for r in &page.records {
        t.add_row([
            time(r.created_at_ms),
            r.request_id.clone(),
            status(r),
            served_by(r),
            opt(&r.route),
            r.latency_ms.to_string(),
            format!("{}/{}", opt(&r.input_tokens), opt(&r.output_tokens)),
            opt(&r.user),
            opt(&r.feature),
        ]);
    }
    out!("{t}");
    match &page.next_cursor {
        Some(c) => out!("{} records; more with --cursor {c}", page.records.len()),
        None => out!("{} records", page.records.len()),
    }
    Ok(())
}

pub async fn show(store: &Store, id: &str, as_json: bool) -> anyhow::Result<()> {
    let r = store
        .get(id)
        .await?
        .ok_or_else(|| anyhow!("no record of request `{id}`"))?;
    if as_json {
        out!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        out!("{}", render(&r).trim_end());
    }
    Ok(())
}

/// The human view of one call.
pub fn render(r: &Record) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "request   {}   {}   {}{}",
        r.request_id,
        time(r.created_at_ms),
        r.endpoint,
        if r.stream { "   (stream)" } else { "" }
    );
    let _ = writeln!(
        o,
        "status    {}{}",
        status(r),
        if r.client_disconnected {
            "   (the client disconnected before the answer was complete)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "served    {}{}{}",
        served_by(r),
        r.route
            .as_ref()
            .map(|x| format!("   via route {x}"))
            .unwrap_or_default(),
        r.upstream_id
            .as_ref()
            .map(|x| format!("   upstream id {x}"))
            .unwrap_or_default()
    );
    let mut who = Vec::new();
    for (k, v) in [
        ("env", &r.env),
        ("user", &r.user),
        ("session", &r.session),
        ("key", &r.key_id),
        ("feature", &r.feature),
        ("replay of", &r.replay_of),
    ] {
        if let Some(v) = v {
            who.push(format!("{k} {v}"));
        }
    }
    if let Some(v) = r.feature_version {
        who.push(format!("version {v}"));
    }
    for (k, v) in &r.tags {
        who.push(format!("{k}={v}"));
    }
    if !who.is_empty() {
        let _ = writeln!(o, "context   {}", who.join("   "));
    }
    let _ = writeln!(
        o,
        "tokens    in {} (cached {})   out {}",
        opt(&r.input_tokens),
        opt(&r.cached_tokens),
        opt(&r.output_tokens)
    );
    let _ = writeln!(
        o,
        "cost      {}",
        r.cost_usd
            .map(|c| format!("${}", llmop_cost::format_usd(c)))
            .unwrap_or_else(|| "unknown".into())
    );
    let _ = writeln!(
        o,
        "latency   {} ms{}",
        r.latency_ms,
        r.ttft_ms
            .map(|t| format!("   first token {t} ms"))
            .unwrap_or_default()
    );
    let _ = writeln!(o, "\nattempts");
    if r.attempts.is_empty() {
        let _ = writeln!(o, "  (none: refused before any upstream call)");
    }
    for (i, a) in r.attempts.iter().enumerate() {
        let outcome = match (&a.error, a.upstream_status) {
            (None, _) => "ok".to_string(),
            (Some(e), Some(s)) => format!("{s} {e}"),
            (Some(e), None) => e.to_string(),
        };
        let _ = writeln!(
            o,
            "  {}. {}/{}   {}   {} ms{}",
            i + 1,
            a.provider,
            a.model,
            outcome,
            a.latency_ms,
            a.retry_reason
                .as_ref()
                .map(|x| format!("   -> {x}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(o, "\nparameters\n  {}", r.request_params);
    let _ = writeln!(o, "\nmessages");
    if let Value::Array(msgs) = &r.input_messages {
        for m in msgs {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("?");
            let _ = writeln!(o, "  [{role}] {}", message_text(m));
        }
    }
    if let Some(p) = &r.rendered_prompt {
        let _ = writeln!(o, "\nrendered prompt\n  {p}");
    }
    let _ = writeln!(o, "\noutput");
    match &r.output_text {
        Some(t) => {
            let _ = writeln!(o, "  {}", t.replace('\n', "\n  "));
        }
        None if r.output_tool_calls.as_array().is_none_or(Vec::is_empty) => {
            let _ = writeln!(o, "  (none)");
        }
        None => {}
    }
    if let Value::Array(calls) = &r.output_tool_calls {
        for c in calls {
            let _ = writeln!(
                o,
                "  tool call {}({})",
                c.get("name").and_then(Value::as_str).unwrap_or("?"),
                c.get("arguments").and_then(Value::as_str).unwrap_or("")
            );
        }
    }
    if let Some(p) = &r.parsed_output {
        let _ = writeln!(o, "  parsed ({}): {p}", opt(&r.parse_status));
    }
    if let Some(f) = &r.feedback {
        let _ = writeln!(
            o,
            "\nfeedback  score {}   label {}   {}",
            opt(&f.score),
            opt(&f.label),
            f.comment.clone().unwrap_or_default()
        );
    }
    o
}

/// A message's content as one line of text (tool calls and results marked).
fn message_text(m: &Value) -> String {
    let mut out = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => p
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                Some(t) => format!("<{t}>"),
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    if let Some(Value::Array(calls)) = m.get("tool_calls") {
        for c in calls {
            let f = c.get("function").cloned().unwrap_or(Value::Null);
            out.push_str(&format!(
                " tool call {}({})",
                f.get("name").and_then(Value::as_str).unwrap_or("?"),
                f.get("arguments").and_then(Value::as_str).unwrap_or("")
            ));
        }
    }
    if let Some(id) = m.get("tool_call_id").and_then(Value::as_str) {
        out = format!("(result of {id}) {out}");
    }
    out.replace('\n', "\n    ")
}

pub async fn query(
    store: &Store,
    sql: &str,
    max_rows: usize,
    timeout: Duration,
    as_json: bool,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let res = store.query_readonly(sql, max_rows, timeout).await?;
    let took = started.elapsed();
    if as_json {
        out!("{}", serde_json::to_string(&res)?);
        return Ok(());
    }
    let mut t = table();
    t.set_header(res.columns.iter());
    for row in &res.rows {
        t.add_row(row.iter().map(|v| match v {
            Value::Null => "NULL".to_string(),
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }));
    }
    out!("{t}");
    out!(
        "{} row{}{} in {} ms",
        res.rows.len(),
        if res.rows.len() == 1 { "" } else { "s" },
        if res.truncated {
            format!(" (stopped at the limit of {max_rows}; raise it with --max-rows)")
        } else {
            String::new()
        },
        took.as_millis()
    );
    Ok(())
}

/// The recorded request as an OpenAI Chat Completions body, for `model`. Replays are
/// sent whole (not streamed): the answer is the same, and it is printed whole.
pub fn replay_body(r: &Record, model: Option<&str>) -> anyhow::Result<Value> {
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

pub async fn replay(
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

    #[test]
    fn render_shows_the_timeline() {
        let mut r = rec();
        r.attempts = vec![
            llmop_store::Attempt {
                provider: "flaky".into(),
                model: "echo".into(),
                error: Some("upstream_error".into()),
                upstream_status: Some(503),
                latency_ms: 4,
                retry_reason: Some("fallback".into()),
            },
            llmop_store::Attempt {
                provider: "sim".into(),
                model: "echo".into(),
                error: None,
                upstream_status: None,
                latency_ms: 20,
                retry_reason: None,
            },
        ];
        r.output_text = Some("hello".into());
        let s = render(&r);
        assert!(
            s.contains("1. flaky/echo   503 upstream_error   4 ms   -> fallback"),
            "{s}"
        );
        assert!(s.contains("2. sim/echo   ok   20 ms"), "{s}");
        assert!(s.contains("[user] hi"), "{s}");
        assert!(s.contains("cost      unknown"), "{s}");
    }
}
