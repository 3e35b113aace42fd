//! The `llmop` binary: thin glue between the command line and the crates that do the
//! work (`llmop-gateway` serves, `llmop-core` checks config).

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use llmop_core::config::{Config, ConfigErrors, ProviderKind};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mimalloc: the request path allocates many small, short-lived buffers (JSON, headers,
/// SSE frames) across threads, where it is measurably faster than the system allocator
/// (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "llmop",
    version,
    about = "The operational layer for LLM features in production"
)]
struct Cli {
    /// Config file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "llmop.toml",
        env = "LLMOP_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway.
    Serve {
        /// Listen address, overriding `[server] listen` (use port 0 for any free port).
        #[arg(long)]
        listen: Option<String>,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "LLMOP_LOG_FORMAT")]
        log_format: LogFormat,
    },
    /// Validate the config without serving. Exit code 0 when valid, 1 when not.
    Check {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { json } => check(&cli.config, json),
        Command::Serve { listen, log_format } => {
            // Held until exit: dropping it flushes the log lines still queued.
            let _log_guard = init_logging(log_format);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("llmop: cannot start the async runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(serve(&cli.config, listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("llmop: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Logs go to stderr through a background writer thread: a request-path log line never
/// waits on a slow terminal or pipe. Lines are never dropped (the queue blocks when
/// full rather than lose the record of a call).
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LLMOP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}

fn check(path: &Path, json: bool) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            // Keys are read at serve time; here a missing one is a warning, since the
            // machine that checks is often not the one that serves.
            let warnings: Vec<String> = config
                .providers
                .iter()
                .filter_map(|(name, p)| {
                    p.api_key().err().map(|e| format!("provider `{name}`: {e}"))
                })
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "file": path, "providers": config.providers.len(), "routes": config.routes.len(), "warnings": warnings})
                );
            } else {
                println!(
                    "{}: OK ({} providers, {} routes)",
                    path.display(),
                    config.providers.len(),
                    config.routes.len()
                );
                for w in warnings {
                    println!("warning: {w}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(ConfigErrors(errors)) => {
            if json {
                let list: Vec<_> = errors
                    .iter()
                    .map(|e| serde_json::json!({"file": e.file, "line": e.line, "column": e.column, "key": e.key, "message": e.message}))
                    .collect();
                println!("{}", serde_json::json!({"ok": false, "errors": list}));
            } else {
                for e in &errors {
                    eprintln!("error: {e}");
                }
            }
            ExitCode::from(1)
        }
    }
}

async fn serve(path: &Path, listen: Option<String>) -> anyhow::Result<()> {
    let mut config = Config::load(path).map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
    if let Some(l) = listen {
        config.server.listen = l;
    }
    let addr: SocketAddr = config
        .server
        .listen
        .parse()
        .with_context(|| format!("`{}` is not an address:port", config.server.listen))?;
    // No API keys exist yet, so the gateway is open: it serves on loopback only.
    if !addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {addr}: no API keys are configured, and an open gateway serves on loopback only"
        );
    }
    tracing::warn!("no API keys configured: the gateway is open, serving on loopback only");
    if config
        .providers
        .values()
        .any(|p| p.kind == ProviderKind::Mock)
    {
        // The mock provider's tokenizer tables take a moment to load; load them now,
        // off the runtime, rather than on the first request.
        tokio::task::spawn_blocking(llmop_providers::tokenizer::warm);
    }
    let app = llmop_gateway::AppState::new(config).map_err(|e| anyhow::anyhow!(e))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    app.shutdown.listen_for_signals();
    // On stdout, alone on its line, so scripts and tests can find the port.
    println!("llmop listening on http://{local}");
    for (name, p) in &app.config.providers {
        tracing::info!(provider = %name, kind = p.kind.as_str(), base_url = p.base_url().unwrap_or("-"), "provider");
    }
    for (name, r) in &app.config.routes {
        let targets: Vec<String> = r
            .targets
            .iter()
            .map(|t| format!("{}/{}", t.provider, t.model))
            .collect();
        tracing::info!(route = %name, strategy = ?r.strategy, targets = %targets.join(" -> "), "route");
    }
    tracing::info!(%local, "serving");
    llmop_gateway::serve(app, listener).await?;
    Ok(())
}
