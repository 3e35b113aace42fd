//! `llmop rollback`: restore the deployment before the latest change of an environment.

use super::deploy::show_event;
use super::{actor, open, store_url, StoreArg};
use clap::Args;
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct RollbackArgs {
    feature: String,
    #[arg(long)]
    env: String,
    #[arg(long)]
    reason: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

pub fn run(config: &Path, a: RollbackArgs) -> ExitCode {
    super::run_async(rollback(
        config,
        a.store.store,
        &a.feature,
        &a.env,
        a.reason.as_deref(),
        a.json,
    ))
}

async fn rollback(
    config: &Path,
    store: Option<String>,
    feature: &str,
    env: &str,
    reason: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let store = open(&store_url(config, store)?).await?;
    let who = actor();
    let event = store
        .rollback(
            feature,
            env,
            llmop_store::ChangeBy {
                actor: Some(&who),
                reason,
                ..Default::default()
            },
        )
        .await?;
    show_event(&event, json)
}
