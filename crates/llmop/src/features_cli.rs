//! `llmop feature push|versions|diff`: registering feature files as immutable, numbered
//! versions in the store, listing them, and comparing two of them.

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
    ]);
    for v in &list {
        let spec = spec_of(v)?;
        let when = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(v.created_at_ms.max(0) as u64),
        );
        t.add_row([
            v.version.to_string(),
            when.to_string(),
            v.created_by.clone().unwrap_or_else(|| "-".into()),
            v.content_hash.chars().take(19).collect::<String>(),
            spec.route
                .map(|r| format!("route {r}"))
                .or(spec.model)
                .unwrap_or_default(),
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
