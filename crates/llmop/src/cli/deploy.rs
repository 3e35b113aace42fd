//! `llmop deploy` and `llmop deploy history`: point an environment of a feature at a
//! version, a split and/or a shadow (after the same servability check as the admin
//! API's), and list every change. Written to the store directly; gateways pick changes
//! up within `[features] refresh_ms`.

use super::{actor, open, store_url, when, write_out, StoreArg};
use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DeployArgs {
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
    /// Deploy past the environment's eval gate (`[eval_gates]`); needs --reason, and is
    /// recorded as forced.
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
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

pub fn run(config: &Path, a: DeployArgs) -> ExitCode {
    super::run_async(async {
        match a.command {
            Some(DeployCommand::History {
                feature,
                env,
                limit,
                json,
                store,
            }) => history(config, store.store, &feature, env.as_deref(), limit, json).await,
            None => {
                let feature = a.feature.ok_or_else(|| {
                    anyhow!("usage: llmop deploy <feature> <version> --env <env> [--split 3=90,4=10] [--shadow N]")
                })?;
                let env = a
                    .env
                    .ok_or_else(|| anyhow!("--env is required: which environment to deploy to"))?;
                deploy(
                    config,
                    a.store.store,
                    DeployRequest {
                        feature: &feature,
                        env: &env,
                        version: a.version,
                        split: a.split.as_deref(),
                        shadow: a.shadow,
                        reason: a.reason.as_deref(),
                        force: a.force,
                    },
                    a.json,
                )
                .await
            }
        }
    })
}

pub(super) fn show_event(e: &llmop_store::DeploymentEvent, json: bool) -> anyhow::Result<()> {
    if json {
        write_out(format_args!("{}", serde_json::to_string(e)?));
        return Ok(());
    }
    let from = e
        .from
        .as_ref()
        .map_or_else(|| "nothing".to_string(), |s| s.describe());
    let verb = match e.kind {
        llmop_store::EventKind::Deploy => "deployed",
        llmop_store::EventKind::Rollback => "rolled back",
    };
    write_out(format_args!(
        "{} {verb} in {}: {from} -> {} (change #{}; gateways serve it within their refresh interval)",
        e.feature,
        e.env,
        e.to.describe(),
        e.seq
    ));
    Ok(())
}

struct DeployRequest<'a> {
    feature: &'a str,
    env: &'a str,
    version: Option<i64>,
    split: Option<&'a str>,
    shadow: Option<i64>,
    reason: Option<&'a str>,
    force: bool,
}

async fn deploy(
    config: &Path,
    store: Option<String>,
    d: DeployRequest<'_>,
    json: bool,
) -> anyhow::Result<()> {
    let state = llmop_store::DeploymentState::from_parts(d.version, d.split, d.shadow)
        .map_err(|m| anyhow!(m))?;
    // The config, when there is one to read, says what this gateway can serve: the same
    // check as the admin API's (with only `--store` and no config, there is nothing to
    // check against).
    let gateway = llmop_core::config::Config::load(config).ok();
    let store = open(&store_url(config, store)?).await?;
    if let Some(gw) = &gateway {
        for v in state.versions() {
            let Some(stored) = store.feature_version(d.feature, v).await? else {
                continue; // the store's refusal names it
            };
            let spec: llmop_features::FeatureSpec = serde_json::from_value(stored.spec)?;
            let target = spec
                .route
                .as_deref()
                .or(spec.model.as_deref())
                .unwrap_or("");
            if let Err(e) = gw.serves(target) {
                bail!(
                    "`{}` v{v} targets `{target}`, which the gateway of {} cannot serve: {e}",
                    d.feature,
                    config.display()
                );
            }
        }
    }
    // The environment's eval gate (in the config): evidence, or --force with a reason.
    let gate = match gateway
        .as_ref()
        .and_then(|gw| gw.eval_gates.get(d.env).map(|g| (gw, g)))
    {
        None => None,
        Some(_) if d.force => {
            if d.reason.is_none_or(|r| r.trim().is_empty()) {
                bail!("--force past the eval gate needs --reason (it is kept in the history)");
            }
            let seq = store
                .current_deployment(d.feature, d.env)
                .await?
                .map_or(0, |c| c.seq);
            Some(llmop_eval::gate::Passed {
                note: "forced past the eval gate".into(),
                expect_seq: seq,
            })
        }
        Some((gw, g)) => Some(
            llmop_eval::gate::check(&store, g, &gw.dir, d.feature, d.env, &state)
                .await
                .map_err(|r| anyhow!("refused: {r}"))?,
        ),
    };
    let who = actor();
    let event = store
        .deploy(
            d.feature,
            d.env,
            &state,
            llmop_store::ChangeBy {
                actor: Some(&who),
                reason: d.reason,
                gate: gate.as_ref().map(|g| g.note.as_str()),
                expect_seq: gate.as_ref().map(|g| g.expect_seq),
            },
        )
        .await?;
    show_event(&event, json)
}

async fn history(
    config: &Path,
    store: Option<String>,
    feature: &str,
    env: Option<&str>,
    limit: u32,
    json: bool,
) -> anyhow::Result<()> {
    let store = open(&store_url(config, store)?).await?;
    let events = store.deployment_history(feature, env, limit).await?;
    if json {
        return super::print_json(&events);
    }
    if events.is_empty() {
        bail!("`{feature}` has never been deployed");
    }
    let mut t = super::table();
    t.set_header([
        "when (UTC)",
        "env",
        "#",
        "change",
        "from",
        "to",
        "by",
        "reason",
        "gate",
    ]);
    for e in &events {
        t.add_row([
            when(e.at_ms),
            e.env.clone(),
            e.seq.to_string(),
            match e.kind {
                llmop_store::EventKind::Deploy => "deploy".to_string(),
                llmop_store::EventKind::Rollback => "rollback".to_string(),
            },
            e.from
                .as_ref()
                .map_or_else(|| "-".to_string(), |s| s.describe()),
            e.to.describe(),
            e.actor.clone().unwrap_or_else(|| "-".into()),
            e.reason.clone().unwrap_or_default(),
            e.gate.clone().unwrap_or_default(),
        ]);
    }
    write_out(format_args!("{t}"));
    Ok(())
}
