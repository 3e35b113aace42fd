//! `llmop serve`: build the gateway from the config and run it
//! (`llmop_gateway::server::run`) until shutdown, logging to stderr.

use anyhow::Context;
use clap::{Args, ValueEnum};
use llmop_core::config::{Config, ProviderKind};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct ServeArgs {
    /// Listen address, overriding `[server] listen` (use port 0 for any free port).
    #[arg(long)]
    listen: Option<String>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "LLMOP_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

pub fn run(config: &Path, a: ServeArgs) -> ExitCode {
    // Held until exit: dropping it flushes the log lines still queued.
    let _log_guard = init_logging(a.log_format);
    super::block_on(
        tokio::runtime::Builder::new_multi_thread(),
        serve(config, a.listen),
        2,
    )
}

pub(crate) async fn serve(path: &Path, listen: Option<String>) -> anyhow::Result<()> {
    let mut config = Config::load(path).map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
    if let Some(l) = listen {
        config.server.listen = l;
    }
    let addr: SocketAddr = config
        .server
        .listen
        .parse()
        .with_context(|| format!("`{}` is not an address:port", config.server.listen))?;
    if config
        .providers
        .values()
        .any(|p| p.kind == ProviderKind::Mock)
    {
        // The mock provider's tokenizer tables take a moment to load; load them now,
        // off the runtime, rather than on the first request.
        tokio::task::spawn_blocking(llmop_providers::tokenizer::warm);
    }
    // Spans and GenAI metrics from the committed records (docs/telemetry.md).
    let kinds = config
        .providers
        .iter()
        .map(|(name, p)| (name.clone(), p.kind.as_str()))
        .collect();
    let exporter = llmop_telemetry::Exporter::start(&config.telemetry, kinds)
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    if let Some(e) = &config.telemetry.endpoint {
        if config.store.enabled {
            tracing::info!(endpoint = %redact_url(e), sample_ratio = config.telemetry.sample_ratio, "telemetry: exporting a span per call over OTLP/HTTP");
        } else {
            tracing::warn!("[telemetry] endpoint is set but [store] enabled = false: spans are built from the records, so none are exported");
        }
    }
    let recorder = if config.store.enabled {
        let r = llmop_gateway::record::Recorder::open(&config, Some(exporter.tap()))
            .await
            .with_context(|| format!("cannot open the record store `{}`", config.store.url))?;
        let replayed = r.writer.stats().snapshot().replayed;
        if replayed > 0 {
            tracing::warn!(
                records = replayed,
                "committed records spilled by an earlier shutdown"
            );
        }
        tracing::info!(url = %redact_url(&config.store.url), durability = ?config.store.durability, "record store");
        Some(r)
    } else {
        tracing::warn!("[store] enabled = false: calls are not recorded");
        None
    };
    let limits = llmop_gateway::limits::Limits::new(&config)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let app = llmop_gateway::AppState::new(config, recorder, Some(limits))
        .map_err(|e| anyhow::anyhow!(e))?;
    // Keys, budgets and deployments: read once, then kept fresh by one task.
    app.load_and_refresh()
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    // Beyond loopback the gateway is never open: without keys, every call gets 401.
    if !addr.ip().is_loopback() {
        app.auth.require_keys();
        if !app.auth.enforcing() || app.recorder.is_none() {
            tracing::warn!(
                "listening beyond loopback: client calls need an API key (`llmop keys create`)"
            );
        }
    } else if !app.auth.enforcing() {
        tracing::warn!("no API keys exist: the gateway is open, on loopback only; `llmop keys create` closes it");
    }
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
    llmop_gateway::server::run(app, listener).await?;
    Ok(())
}

/// A store URL fit for a log line: without its password.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Logs go to stderr through a background writer thread: a request-path log line never
/// waits on a slow terminal or pipe. Lines are never dropped (the queue blocks when
/// full rather than lose the record of a call).
pub(crate) fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
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
