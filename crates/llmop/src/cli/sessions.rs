//! `llmop sessions`: agent loops as their calls saw them. Without an id, the recent
//! sessions; with one, its turns: how the input grows from turn to turn (an agent loop
//! re-sends its history, so its input cost grows with the square of its length unless
//! the provider's prompt cache serves the repeated prefix), and how much of each turn's
//! input was read from that cache.

use super::{now_ms, open, store_url, when, write_out, StoreArg};
use anyhow::anyhow;
use clap::Args;
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct SessionsArgs {
    /// A session id (`x-llmop-session`): its turns. Without one: the recent sessions.
    session: Option<String>,
    /// Sessions with calls since: an age such as `7d`, a date, RFC 3339 or Unix ms.
    #[arg(long, default_value = "7d")]
    since: String,
    /// Most sessions (or turns) listed.
    #[arg(long, default_value_t = 50)]
    limit: i64,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

pub fn run(config: &Path, a: SessionsArgs) -> ExitCode {
    super::run_async(sessions(config, a))
}

/// Percent of `part` in `whole`, or empty when there is no whole.
fn share(part: i64, whole: i64) -> String {
    if whole > 0 {
        format!("{:.0}%", 100.0 * part as f64 / whole as f64)
    } else {
        String::new()
    }
}

async fn sessions(config: &Path, a: SessionsArgs) -> anyhow::Result<()> {
    let store = open(&store_url(config, a.store.store)?).await?;
    let limit = a.limit.clamp(1, 100_000);
    let usd = llmop_cost::format_usd;
    let Some(id) = a.session else {
        let since =
            llmop_store::parse_time(&a.since, now_ms()).map_err(|m| anyhow!("--since: {m}"))?;
        let rows = store.sessions(since, limit).await?;
        if a.json {
            return super::print_json(&rows);
        }
        let mut t = super::table();
        t.set_header([
            "session",
            "calls",
            "first",
            "last",
            "input tokens",
            "cached",
            "cost (USD)",
        ]);
        for r in &rows {
            t.add_row([
                r.session.clone(),
                r.calls.to_string(),
                when(r.first_ms),
                when(r.last_ms),
                r.input_tokens.to_string(),
                share(r.cached_tokens, r.input_tokens),
                usd(r.cost_usd),
            ]);
        }
        write_out(format_args!("{t}"));
        return Ok(());
    };
    let turns = store.session_turns(&id, limit).await?;
    if turns.is_empty() {
        return Err(anyhow!("no recorded calls in session `{id}`"));
    }
    if a.json {
        return super::print_json(&turns);
    }
    let mut t = super::table();
    t.set_header([
        "turn",
        "request id",
        "time",
        "model",
        "status",
        "input",
        "growth",
        "cached",
        "written",
        "output",
        "cost (USD)",
    ]);
    let mut prev: Option<i64> = None;
    let (mut input, mut cached, mut cost, mut unknown) = (0i64, 0i64, 0.0, 0);
    for (i, r) in turns.iter().enumerate() {
        let inp = r.input_tokens;
        let growth = match (prev, inp) {
            (Some(p), Some(n)) if r.cache.is_none() || r.cache.as_deref() == Some("miss") => {
                format!("{:+}", n - p)
            }
            _ => String::new(),
        };
        if let Some(n) = inp.filter(|_| r.cache.as_deref() != Some("hit")) {
            prev = Some(n);
        }
        input += inp.unwrap_or(0);
        cached += r.cached_tokens.unwrap_or(0);
        match r.cost_usd {
            Some(c) => cost += c,
            None => unknown += 1,
        }
        t.add_row([
            (i + 1).to_string(),
            r.request_id.clone(),
            when(r.created_at_ms),
            r.model.clone().unwrap_or_default(),
            match r.cache.as_deref() {
                Some(c @ ("hit" | "replay")) => format!("{} ({c})", r.status),
                _ => r.status.to_string(),
            },
            inp.map(|n| n.to_string()).unwrap_or_default(),
            growth,
            match (r.cached_tokens, inp) {
                (Some(c), Some(n)) => format!("{c} ({})", share(c, n)),
                _ => String::new(),
            },
            r.cache_write_tokens
                .map(|n| n.to_string())
                .unwrap_or_default(),
            r.output_tokens.map(|n| n.to_string()).unwrap_or_default(),
            r.cost_usd.map(usd).unwrap_or_else(|| "unknown".into()),
        ]);
    }
    write_out(format_args!("{t}"));
    write_out(format_args!(
        "{} turns · {input} input tokens, {} read from the provider's prompt cache · {} paid{}",
        turns.len(),
        if input > 0 {
            share(cached, input)
        } else {
            "0%".into()
        },
        usd(cost),
        if unknown > 0 {
            format!(" ({unknown} calls of unknown cost not included)")
        } else {
            String::new()
        }
    ));
    Ok(())
}
