//! One module per CLI verb: each holds its arguments (clap derive), a `run` that turns
//! them into an exit code, and the work. What they share lives here: the `--store`
//! argument, the small runtime CLI commands run on, opening the record store, and
//! writing to stdout.
//!
//! Commands that read or write the store do so directly (the URL of `[store]` in the
//! config, or `--store`), so they work whether or not a gateway is running; gateways
//! pick up changes to features, deployments and keys within `[features] refresh_ms`.

use anyhow::{anyhow, bail, Context};
use clap::Args;
use comfy_table::{presets, ContentArrangement, Table};
use llmop_core::config::Config;
use llmop_store::Store;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// `println!` that ends the program quietly when stdout is closed (`llmop … | head`)
/// instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::write_out(format_args!($($t)*))
    };
}

pub mod budgets;
pub mod check;
pub mod cost;
pub mod dataset;
pub mod demo;
pub mod deploy;
pub mod eval;
pub mod feature;
pub mod guard;
pub mod keys;
pub mod prices;
pub mod quality;
pub mod query;
pub mod redteam;
pub mod replay;
pub mod requests;
pub mod rollback;
pub mod scores;
pub mod serve;
pub mod sessions;
pub mod shadow;

#[derive(Args)]
pub struct StoreArg {
    /// The record store, overriding the config's `[store] url`.
    #[arg(long, env = "LLMOP_STORE_URL")]
    pub store: Option<String>,
}

/// Runs a CLI command on a small runtime; errors print as `llmop: …` with exit code 1.
fn run_async(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    block_on(tokio::runtime::Builder::new_current_thread(), work, 1)
}

/// Runs `work` on a runtime from `builder`; an error prints as `llmop: …` and exits with
/// `failure` (a runtime that cannot start: 2).
fn block_on(
    mut builder: tokio::runtime::Builder,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
    failure: u8,
) -> ExitCode {
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("llmop: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmop: {e:#}");
            ExitCode::from(failure)
        }
    }
}

/// `--json` output: the value as one line.
fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    write_out(format_args!("{}", serde_json::to_string(v)?));
    Ok(())
}

/// One line to stdout; a closed stdout ends the program quietly (see `out!`).
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
fn store_url(config_path: &Path, store: Option<String>) -> anyhow::Result<String> {
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
async fn open(url: &str) -> anyhow::Result<Store> {
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A record's time, to the millisecond (UTC).
fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A change's time, to the second (UTC).
fn when(ms: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

/// The actor recorded for changes made from this CLI.
fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into())
    )
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
