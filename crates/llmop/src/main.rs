//! The `llmop` binary: thin glue between the command line and the crates that do the
//! work (`llmop-gateway` serves, `llmop-core` checks config).

use clap::{Args, Parser, Subcommand, ValueEnum};
use llmop_core::config::Config;
use std::io::IsTerminal;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod cost_cli;
mod features_cli;
mod keys_cli;
mod records_cli;
mod serve_cli;
use llmop_store::{ListFilter, StatusFilter};

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
    /// Versioned features: register, list and compare versions.
    Feature {
        #[command(subcommand)]
        command: FeatureCommand,
    },
    /// Point an environment of a feature at a version, a split, and/or a shadow;
    /// `llmop deploy history <feature>` lists every change.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Deploy {
        #[command(subcommand)]
        command: Option<DeployCommand>,
        /// The feature.
        feature: Option<String>,
        /// The version to serve (or use --split).
        version: Option<i64>,
        #[arg(long)]
        env: Option<String>,
        /// Serve several versions: `3=90,4=10` (percent; sticky per user, else per
        /// session, else random).
        #[arg(long)]
        split: Option<String>,
        /// Also run this version on a copy of each call, never returned.
        #[arg(long)]
        shadow: Option<i64>,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Restore the deployment before the latest change of an environment.
    Rollback {
        feature: String,
        #[arg(long)]
        env: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Client API keys: create (shown once), list, revoke.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Spend over the recorded calls, grouped.
    Cost {
        /// feature, user, model, key, env, or tag:<name>.
        #[arg(long, default_value = "feature")]
        by: String,
        /// From this time: an age such as `7d`, a date, RFC 3339 or Unix ms.
        #[arg(long, default_value = "30d")]
        since: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Each budget's spend in its current window, its limits and burn rate.
    Budgets {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// The price each configured model gets: config override, built-in catalog, or
    /// unknown.
    Prices {
        #[arg(long)]
        json: bool,
    },
    /// Shadow versions: how they compare with what was served.
    Shadow {
        #[command(subcommand)]
        command: ShadowCommand,
    },
    /// Look up recorded calls.
    Requests {
        #[command(subcommand)]
        command: RequestsCommand,
    },
    /// Run one read-only SQL statement over the records (table `records`).
    Query {
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
    },
    /// Send a recorded request through the gateway again and compare the two answers.
    Replay {
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
    },
    /// Validate the config without serving. Exit code 0 when valid, 1 when not.
    Check {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct StoreArg {
    /// The record store, overriding the config's `[store] url`.
    #[arg(long, env = "LLMOP_STORE_URL")]
    store: Option<String>,
}

#[derive(Subcommand)]
enum RequestsCommand {
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

#[derive(Subcommand)]
enum FeatureCommand {
    /// Register a feature file as a new immutable version (identical content returns
    /// the existing version).
    Push {
        file: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Every registered version of a feature.
    Versions {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// What changed between two versions (templates and settings).
    Diff {
        name: String,
        a: i64,
        b: i64,
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// A new key, printed once.
    Create {
        #[arg(long)]
        name: String,
        /// Features it may call (comma-separated; default any).
        #[arg(long, num_args = 1..)]
        features: Vec<String>,
        /// Routes and provider/models it may call (`openai/*` for a provider).
        #[arg(long, num_args = 1..)]
        routes: Vec<String>,
        /// Environments it may call.
        #[arg(long = "env", num_args = 1..)]
        envs: Vec<String>,
        /// The environment of its calls that name none.
        #[arg(long)]
        default_env: Option<String>,
        #[arg(long)]
        rpm: Option<u32>,
        #[arg(long)]
        tpm: Option<u32>,
        #[arg(long)]
        budget_usd_day: Option<f64>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Active keys (`--all`: revoked ones too). Never the keys themselves.
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Revoke a key by id.
    Revoke {
        id: String,
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Subcommand)]
enum DeployCommand {
    /// Every deployment change of a feature, newest first: who, when, from, to, why.
    History {
        feature: String,
        #[arg(long)]
        env: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Subcommand)]
enum ShadowCommand {
    /// Primary vs shadow over a window: calls, parse success, latency, cost, identical
    /// outputs.
    Report {
        feature: String,
        /// From this time: an age such as `7d`, a date, RFC 3339 or Unix ms.
        #[arg(long, default_value = "7d")]
        since: String,
        #[arg(long)]
        env: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
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
        Command::Check { json } => serve_cli::check(&cli.config, json),
        Command::Feature { command } => run_cli(async {
            match command {
                FeatureCommand::Push { file, json, store } => {
                    features_cli::push(&cli.config, store.store, &file, json).await
                }
                FeatureCommand::Versions { name, json, store } => {
                    features_cli::versions(&cli.config, store.store, &name, json).await
                }
                FeatureCommand::Diff { name, a, b, store } => {
                    features_cli::diff(&cli.config, store.store, &name, a, b).await
                }
            }
        }),
        Command::Deploy {
            command,
            feature,
            version,
            env,
            split,
            shadow,
            reason,
            json,
            store,
        } => run_cli(async {
            match command {
                Some(DeployCommand::History {
                    feature,
                    env,
                    limit,
                    json,
                    store,
                }) => {
                    features_cli::history(
                        &cli.config,
                        store.store,
                        &feature,
                        env.as_deref(),
                        limit,
                        json,
                    )
                    .await
                }
                None => {
                    let feature = feature.ok_or_else(|| {
                        anyhow::anyhow!("usage: llmop deploy <feature> <version> --env <env> [--split 3=90,4=10] [--shadow N]")
                    })?;
                    let env = env.ok_or_else(|| {
                        anyhow::anyhow!("--env is required: which environment to deploy to")
                    })?;
                    features_cli::deploy(
                        &cli.config,
                        store.store,
                        features_cli::DeployRequest {
                            feature: &feature,
                            env: &env,
                            version,
                            split: split.as_deref(),
                            shadow,
                            reason: reason.as_deref(),
                        },
                        json,
                    )
                    .await
                }
            }
        }),
        Command::Keys { command } => run_cli(async {
            match command {
                KeysCommand::Create {
                    name,
                    features,
                    routes,
                    envs,
                    default_env,
                    rpm,
                    tpm,
                    budget_usd_day,
                    json,
                    store,
                } => {
                    keys_cli::create(
                        &cli.config,
                        store.store,
                        keys_cli::NewKey {
                            name,
                            features,
                            routes,
                            envs,
                            default_env,
                            rpm,
                            tpm,
                            budget_usd_day,
                        },
                        json,
                    )
                    .await
                }
                KeysCommand::List { all, json, store } => {
                    keys_cli::list(&cli.config, store.store, all, json).await
                }
                KeysCommand::Revoke { id, store } => {
                    keys_cli::revoke(&cli.config, store.store, &id).await
                }
            }
        }),
        Command::Cost {
            by,
            since,
            json,
            store,
        } => run_cli(async { cost_cli::cost(&cli.config, store.store, &by, &since, json).await }),
        Command::Budgets { json, store } => {
            run_cli(async { cost_cli::budgets(&cli.config, store.store, json).await })
        }
        Command::Prices { json } => match cost_cli::prices(&cli.config, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("llmop: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Rollback {
            feature,
            env,
            reason,
            json,
            store,
        } => run_cli(async {
            features_cli::rollback(
                &cli.config,
                store.store,
                &feature,
                &env,
                reason.as_deref(),
                json,
            )
            .await
        }),
        Command::Shadow {
            command:
                ShadowCommand::Report {
                    feature,
                    since,
                    env,
                    json,
                    store,
                },
        } => run_cli(async {
            features_cli::shadow_report(
                &cli.config,
                store.store,
                &feature,
                &since,
                env.as_deref(),
                json,
            )
            .await
        }),
        Command::Requests { command } => run_cli(async {
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
                    let store =
                        records_cli::open(&records_cli::store_url(&cli.config, store.store)?)
                            .await?;
                    let filter = ListFilter {
                        feature,
                        user,
                        session,
                        status,
                        limit: Some(limit),
                        cursor,
                        ..ListFilter::default()
                    };
                    records_cli::list(
                        &store,
                        records_cli::ListArgs {
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
                    let store =
                        records_cli::open(&records_cli::store_url(&cli.config, store.store)?)
                            .await?;
                    records_cli::show(&store, &request_id, json).await
                }
            }
        }),
        Command::Query {
            sql,
            max_rows,
            timeout_ms,
            json,
            store,
        } => run_cli(async {
            let store =
                records_cli::open(&records_cli::store_url(&cli.config, store.store)?).await?;
            records_cli::query(
                &store,
                &sql,
                max_rows,
                Duration::from_millis(timeout_ms),
                json,
            )
            .await
        }),
        Command::Replay {
            request_id,
            route,
            model,
            version,
            gateway,
            json,
            store,
        } => run_cli(async {
            let store =
                records_cli::open(&records_cli::store_url(&cli.config, store.store)?).await?;
            let gateway = match gateway {
                Some(g) => g,
                None => {
                    let config = Config::load(&cli.config).map_err(|e| {
                        anyhow::anyhow!("cannot find the gateway's address (pass --gateway):\n{e}")
                    })?;
                    format!("http://{}", config.server.listen)
                }
            };
            records_cli::replay(
                &store,
                &request_id,
                route.or(model).as_deref(),
                version,
                &gateway,
                json,
            )
            .await
        }),
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
            match rt.block_on(serve_cli::serve(&cli.config, listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("llmop: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Runs a CLI command on a small runtime; errors print as `llmop: …` with exit code 1.
fn run_cli(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
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
            ExitCode::from(1)
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
