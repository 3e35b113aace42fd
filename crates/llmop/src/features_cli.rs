//! `llmop feature push|versions|diff`, `llmop deploy`, `llmop rollback`, `llmop deploy
//! history` and `llmop shadow report`: versions, deployments and their audit trail,
//! read and written in the store directly (gateways pick changes up within
//! `[features] refresh_ms`).

use crate::records_cli::{open, store_url};
use anyhow::{anyhow, bail, Context};
use llmop_features::FeatureSpec;
use llmop_store::FeatureVersion;
use std::path::Path;

/// Reads and validates a feature file; every problem is reported with the file's name.
pub fn load(path: &Path) -> anyhow::Result<FeatureSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    FeatureSpec::parse(&text).map_err(|errors| {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect();
        anyhow!("invalid feature file:\n{}", lines.join("\n"))
    })
}

fn spec_of(v: &FeatureVersion) -> anyhow::Result<FeatureSpec> {
    serde_json::from_value(v.spec.clone()).with_context(|| {
        format!(
            "stored version {} of `{}` is unreadable",
            v.version, v.feature
        )
    })
}

pub async fn push(
    config: &Path,
    store: Option<String>,
    file: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let spec = load(file)?;
    let hash = spec.content_hash();
    let canonical = serde_json::to_value(&spec)?;
    let who = std::env::var("USER").ok();
    let url = store_url(config, store)?;
    // Pushing is how a store gets its first feature: create it if need be.
    let store = llmop_store::Store::open(&url)
        .await
        .with_context(|| format!("cannot open the store {url}"))?;
    let pushed = store
        .push_feature_version(&spec.name, &hash, &canonical, who.as_deref())
        .await?;
    if json {
        crate::records_cli::write_out(format_args!(
            "{}",
            serde_json::json!({
                "feature": spec.name,
                "version": pushed.version.version,
                "content_hash": hash,
                "created": pushed.created,
            })
        ));
    } else if pushed.created {
        crate::records_cli::write_out(format_args!(
            "{} v{} registered ({hash})",
            spec.name, pushed.version.version
        ));
    } else {
        crate::records_cli::write_out(format_args!(
            "{} v{} already has this content ({hash}); nothing registered",
            spec.name, pushed.version.version
        ));
    }
    Ok(())
}

pub async fn versions(
    config: &Path,
    store: Option<String>,
    name: &str,
    json: bool,
) -> anyhow::Result<()> {
    let store = open(&store_url(config, store)?).await?;
    let list = store.feature_versions(name).await?;
    let deployments: Vec<_> = store
        .deployments()
        .await?
        .into_iter()
        .filter(|d| d.feature == name)
        .collect();
    if list.is_empty() {
        bail!("no versions of feature `{name}` (register one with `llmop feature push <file>`)");
    }
    if json {
        crate::records_cli::write_out(format_args!("{}", serde_json::to_string(&list)?));
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_HORIZONTAL_ONLY);
    t.set_header([
        "version",
        "registered (UTC)",
        "by",
        "content hash",
        "target",
        "serving",
    ]);
    for v in &list {
        let spec = spec_of(v)?;
        t.add_row([
            v.version.to_string(),
            when(v.created_at_ms),
            v.created_by.clone().unwrap_or_else(|| "-".into()),
            v.content_hash.chars().take(19).collect::<String>(),
            spec.route
                .map(|r| format!("route {r}"))
                .or(spec.model)
                .unwrap_or_default(),
            deployments
                .iter()
                .filter_map(|d| {
                    let arm = d.state.arms.iter().find(|a| a.version == v.version);
                    match arm {
                        Some(a) if d.state.arms.len() > 1 => {
                            Some(format!("{} {}%", d.env, a.weight))
                        }
                        Some(_) => Some(d.env.clone()),
                        None if d.state.shadow == Some(v.version) => {
                            Some(format!("{} (shadow)", d.env))
                        }
                        None => None,
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    crate::records_cli::write_out(format_args!("{t}"));
    Ok(())
}

pub async fn diff(
    config: &Path,
    store: Option<String>,
    name: &str,
    a: i64,
    b: i64,
) -> anyhow::Result<()> {
    let store = open(&store_url(config, store)?).await?;
    let get = |v: i64| {
        let store = store.clone();
        async move {
            store
                .feature_version(name, v)
                .await?
                .ok_or_else(|| anyhow!("feature `{name}` has no version {v}"))
        }
    };
    let (va, vb) = (get(a).await?, get(b).await?);
    let d = llmop_features::diff(
        &spec_of(&va)?,
        &spec_of(&vb)?,
        &format!("{name} v{a}"),
        &format!("{name} v{b}"),
    );
    if d.is_empty() {
        crate::records_cli::write_out(format_args!("{name} v{a} and v{b} are identical"));
    } else {
        crate::records_cli::write_out(format_args!("{}", d.trim_end()));
    }
    Ok(())
}

fn when(ms: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
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

fn show_event(e: &llmop_store::DeploymentEvent, json: bool) -> anyhow::Result<()> {
    if json {
        crate::records_cli::write_out(format_args!("{}", serde_json::to_string(e)?));
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
    crate::records_cli::write_out(format_args!(
        "{} {verb} in {}: {from} -> {} (change #{}; gateways serve it within their refresh interval)",
        e.feature,
        e.env,
        e.to.describe(),
        e.seq
    ));
    Ok(())
}

pub struct DeployRequest<'a> {
    pub feature: &'a str,
    pub env: &'a str,
    pub version: Option<i64>,
    pub split: Option<&'a str>,
    pub shadow: Option<i64>,
    pub reason: Option<&'a str>,
}

pub async fn deploy(
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
    let who = actor();
    let event = store
        .deploy(
            d.feature,
            d.env,
            &state,
            llmop_store::ChangeBy {
                actor: Some(&who),
                reason: d.reason,
            },
        )
        .await?;
    show_event(&event, json)
}

pub async fn rollback(
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
            },
        )
        .await?;
    show_event(&event, json)
}

pub async fn history(
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
        crate::records_cli::write_out(format_args!("{}", serde_json::to_string(&events)?));
        return Ok(());
    }
    if events.is_empty() {
        bail!("`{feature}` has never been deployed");
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_HORIZONTAL_ONLY);
    t.set_header([
        "when (UTC)",
        "env",
        "#",
        "change",
        "from",
        "to",
        "by",
        "reason",
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
        ]);
    }
    crate::records_cli::write_out(format_args!("{t}"));
    Ok(())
}

pub async fn shadow_report(
    config: &Path,
    store: Option<String>,
    feature: &str,
    since: &str,
    env: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let now = crate::records_cli::now_ms();
    let since_ms = llmop_store::parse_time(since, now).map_err(|m| anyhow!("--since: {m}"))?;
    let store = open(&store_url(config, store)?).await?;
    let report = store.shadow_report(feature, since_ms, env).await?;
    if json {
        crate::records_cli::write_out(format_args!("{}", serde_json::to_string(&report)?));
        return Ok(());
    }
    if report.is_empty() {
        bail!("no shadow calls of `{feature}` since {since} (deploy one with `llmop deploy {feature} <version> --env <env> --shadow <version>`)");
    }
    let pct = |n: i64, of: i64| {
        if of == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", 100.0 * n as f64 / of as f64)
        }
    };
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
    let usd = |v: Option<f64>| {
        v.map_or_else(
            || "unknown".to_string(),
            |v| format!("${}", llmop_cost::format_usd(v)),
        )
    };
    for r in &report {
        let label = |v: Option<i64>| v.map_or_else(|| "?".to_string(), |v| format!("v{v}"));
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::UTF8_HORIZONTAL_ONLY);
        t.set_header([
            String::new(),
            format!("primary {}", label(r.primary.version)),
            format!("shadow {}", label(r.shadow.version)),
        ]);
        t.add_row([
            "calls".to_string(),
            r.pairs.to_string(),
            r.pairs.to_string(),
        ]);
        t.add_row([
            "answered".to_string(),
            pct(r.primary.succeeded, r.pairs),
            pct(r.shadow.succeeded, r.pairs),
        ]);
        t.add_row([
            "parsed".to_string(),
            pct(r.primary.parsed, r.primary.parsed_attempts),
            pct(r.shadow.parsed, r.shadow.parsed_attempts),
        ]);
        t.add_row([
            "mean latency ms".to_string(),
            ms(r.primary.mean_latency_ms),
            ms(r.shadow.mean_latency_ms),
        ]);
        t.add_row([
            "mean cost".to_string(),
            usd(r.primary.mean_cost_usd),
            usd(r.shadow.mean_cost_usd),
        ]);
        crate::records_cli::write_out(format_args!("{t}"));
        crate::records_cli::write_out(format_args!(
            "identical outputs: {} of {} ({})",
            r.identical,
            r.pairs,
            pct(r.identical, r.pairs)
        ));
    }
    Ok(())
}
