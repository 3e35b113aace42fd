//! `llmop requests list|show`: recorded calls, newest first, and one call whole. They
//! read the store directly, so they work whether or not a gateway is running.

use super::{now_ms, open, opt, store_url, table, time, StoreArg};
use anyhow::anyhow;
use clap::Subcommand;
use llmop_store::{parse_time, ListFilter, Record, StatusFilter, Store};
use serde_json::{json, Value};
use std::path::Path;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum RequestsCommand {
    /// Recorded calls, newest first.
    List {
        #[arg(long)]
        feature: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        session: Option<String>,
        /// `ok`, `error` or an HTTP status.
        #[arg(long)]
        status: Option<StatusFilter>,
        /// From this time: Unix ms, RFC 3339, a date, or an age such as `7d` or `1h`.
        #[arg(long)]
        since: Option<String>,
        /// Before this time (same forms as --since).
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Continue from a previous page.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// One call: messages, attempts, tokens, cost, latency, output.
    Show {
        request_id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
}

pub fn run(config: &Path, command: RequestsCommand) -> ExitCode {
    super::run_async(async {
        match command {
            RequestsCommand::List {
                feature,
                user,
                session,
                status,
                since,
                until,
                limit,
                cursor,
                json,
                store,
            } => {
                let store = open(&store_url(config, store.store)?).await?;
                let filter = ListFilter {
                    feature,
                    user,
                    session,
                    status,
                    limit: Some(limit),
                    cursor,
                    ..ListFilter::default()
                };
                list(
                    &store,
                    ListArgs {
                        filter,
                        since,
                        until,
                        json,
                    },
                )
                .await
            }
            RequestsCommand::Show {
                request_id,
                json,
                store,
            } => {
                let store = open(&store_url(config, store.store)?).await?;
                show(&store, &request_id, json).await
            }
        }
    })
}

pub(super) fn served_by(r: &Record) -> String {
    match (&r.provider, &r.model) {
        (Some(p), Some(m)) => format!("{p}/{m}"),
        _ => "-".into(),
    }
}

pub(super) fn status(r: &Record) -> String {
    match &r.error_code {
        Some(code) => format!("{} {code}", r.status),
        None => r.status.to_string(),
    }
}

struct ListArgs {
    filter: ListFilter,
    since: Option<String>,
    until: Option<String>,
    json: bool,
}

async fn list(store: &Store, mut a: ListArgs) -> anyhow::Result<()> {
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

async fn show(store: &Store, id: &str, as_json: bool) -> anyhow::Result<()> {
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
fn render(r: &Record) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record {
        let mut r = Record::new("r1", 1_700_000_000_000, "/v1/messages");
        r.status = 200;
        r.request_params = json!({"model": "default", "temperature": 0.5});
        r.input_messages = json!([{"role": "user", "content": "hi"}]);
        r
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
