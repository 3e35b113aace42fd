//! The `llmop` binary: thin glue between the command line and the crates that do the
//! work. Each verb is a module of `cli` holding its arguments and its work; this file
//! lists the verbs and hands each its arguments.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod alloc;
mod cli;

/// mimalloc: the request path allocates many small, short-lived buffers (JSON, headers,
/// SSE frames) across threads, where it is measurably faster than the system allocator
/// (see docs/benchmarks.md). Built without transparent huge pages (the workspace's
/// `no_thp` feature): they held RSS 10-20 MiB above what is in use.
#[global_allocator]
static GLOBAL: alloc::MiMalloc = alloc::MiMalloc;

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
    Serve(cli::serve::ServeArgs),
    /// A gateway on mock providers with demo features, budgets and a flaky target, fed
    /// a few minutes of realistic traffic: a populated console in one command.
    Demo(cli::demo::DemoArgs),
    /// Versioned features: register, list and compare versions.
    Feature {
        #[command(subcommand)]
        command: cli::feature::FeatureCommand,
    },
    /// Point an environment of a feature at a version, a split, and/or a shadow;
    /// `llmop deploy history <feature>` lists every change.
    Deploy(cli::deploy::DeployArgs),
    /// Restore the deployment before the latest change of an environment.
    Rollback(cli::rollback::RollbackArgs),
    /// Client API keys: create (shown once), list, revoke.
    Keys {
        #[command(subcommand)]
        command: cli::keys::KeysCommand,
    },
    /// Spend over the recorded calls, grouped.
    Cost(cli::cost::CostArgs),
    /// Agent loops: recent sessions, or one session's turns (input growth per turn, how
    /// much the provider's prompt cache served).
    Sessions(cli::sessions::SessionsArgs),
    /// Each budget's spend in its current window, its limits and burn rate.
    Budgets(cli::budgets::BudgetsArgs),
    /// The price each configured model gets: config override, built-in catalog, or
    /// unknown.
    Prices(cli::prices::PricesArgs),
    /// Datasets for evals: push files, add recorded calls, list, show, diff versions.
    Dataset {
        #[command(subcommand)]
        command: cli::dataset::DatasetCommand,
    },
    /// Evals: run a version over a dataset, compare a candidate with a baseline (exit 0
    /// pass, 1 fail, 2 inconclusive, 3 error), calibrate a judge.
    Eval {
        #[command(subcommand)]
        command: cli::eval::EvalCommand,
    },
    /// Scores of recorded calls (online evaluators, feedback), aggregated over a window.
    Scores(cli::scores::ScoresArgs),
    /// A feature's quality in production: scores over time per version and evaluator,
    /// open drift alerts.
    Quality(cli::quality::QualityArgs),
    /// Shadow versions: how they compare with what was served.
    Shadow {
        #[command(subcommand)]
        command: cli::shadow::ShadowCommand,
    },
    /// Look up recorded calls.
    Requests {
        #[command(subcommand)]
        command: cli::requests::RequestsCommand,
    },
    /// Run one read-only SQL statement over the records (table `records`).
    Query(cli::query::QueryArgs),
    /// Send a recorded request through the gateway again and compare the two answers.
    Replay(cli::replay::ReplayArgs),
    /// Validate the config without serving. Exit code 0 when valid, 1 when not.
    Check(cli::check::CheckArgs),
    /// Red teaming: the built-in attack corpus through the gateway against a feature or
    /// route; exit 1 when attacks got through, 3 when the run could not tell.
    Redteam(cli::redteam::RedteamArgs),
    /// Guardrail detectors: precision and recall on a labeled set.
    Guard {
        #[command(subcommand)]
        command: cli::guard::GuardCommand,
    },
}

fn main() -> ExitCode {
    let Cli { config, command } = Cli::parse();
    let config = config.as_path();
    match command {
        Command::Serve(a) => cli::serve::run(config, a),
        Command::Demo(a) => cli::demo::run(a),
        Command::Feature { command } => cli::feature::run(config, command),
        Command::Deploy(a) => cli::deploy::run(config, a),
        Command::Rollback(a) => cli::rollback::run(config, a),
        Command::Keys { command } => cli::keys::run(config, command),
        Command::Cost(a) => cli::cost::run(config, a),
        Command::Sessions(a) => cli::sessions::run(config, a),
        Command::Budgets(a) => cli::budgets::run(config, a),
        Command::Prices(a) => cli::prices::run(config, a),
        Command::Dataset { command } => cli::dataset::run(config, command),
        Command::Eval { command } => cli::eval::run(config, command),
        Command::Scores(a) => cli::scores::run(config, a),
        Command::Quality(a) => cli::quality::run(config, a),
        Command::Shadow { command } => cli::shadow::run(config, command),
        Command::Requests { command } => cli::requests::run(config, command),
        Command::Query(a) => cli::query::run(config, a),
        Command::Replay(a) => cli::replay::run(config, a),
        Command::Check(a) => cli::check::run(config, a),
        Command::Guard { command } => cli::guard::run(command),
        Command::Redteam(a) => cli::redteam::run(config, a),
    }
}
