//! `llmop query`: one read-only SQL statement over the records (table `records`), with
//! a row limit and a time limit.

use super::{open, store_url, table, StoreArg};
use clap::Args;
use llmop_store::Store;
use serde_json::Value;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct QueryArgs {
    sql: String,
    /// Most rows returned.
    #[arg(long, default_value_t = 1000)]
    max_rows: usize,
    /// Time limit.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

pub fn run(config: &Path, a: QueryArgs) -> ExitCode {
    super::run_async(async {
        let store = open(&store_url(config, a.store.store)?).await?;
        query(
            &store,
            &a.sql,
            a.max_rows,
            Duration::from_millis(a.timeout_ms),
            a.json,
        )
        .await
    })
}

async fn query(
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
        return super::print_json(&res);
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
