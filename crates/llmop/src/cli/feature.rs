//! `llmop feature push|versions|diff`: register a feature file as a new immutable
//! version, list a feature's versions and where each is served, and compare two.

use super::{open, store_url, when, write_out, StoreArg};
use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use llmop_features::FeatureSpec;
use llmop_store::FeatureVersion;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum FeatureCommand {
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

pub fn run(config: &Path, command: FeatureCommand) -> ExitCode {
    super::run_async(async {
        match command {
            FeatureCommand::Push { file, json, store } => {
                push(config, store.store, &file, json).await
            }
            FeatureCommand::Versions { name, json, store } => {
                versions(config, store.store, &name, json).await
            }
            FeatureCommand::Diff { name, a, b, store } => {
                diff(config, store.store, &name, a, b).await
            }
        }
    })
}

/// Reads and validates a feature file; every problem is reported with the file's name.
fn load(path: &Path) -> anyhow::Result<FeatureSpec> {
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

async fn push(config: &Path, store: Option<String>, file: &Path, json: bool) -> anyhow::Result<()> {
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
        write_out(format_args!(
            "{}",
            serde_json::json!({
                "feature": spec.name,
                "version": pushed.version.version,
                "content_hash": hash,
                "created": pushed.created,
            })
        ));
    } else if pushed.created {
        write_out(format_args!(
            "{} v{} registered ({hash})",
            spec.name, pushed.version.version
        ));
    } else {
        write_out(format_args!(
            "{} v{} already has this content ({hash}); nothing registered",
            spec.name, pushed.version.version
        ));
    }
    Ok(())
}

async fn versions(
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
        return super::print_json(&list);
    }
    let mut t = super::table();
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
    write_out(format_args!("{t}"));
    Ok(())
}

async fn diff(
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
        write_out(format_args!("{name} v{a} and v{b} are identical"));
    } else {
        write_out(format_args!("{}", d.trim_end()));
    }
    Ok(())
}
