//! `llmop dataset push|add|list|show|diff`: datasets for evals, versioned by content
//! hash, in the store.

use super::{actor, open, print_json, store_url, table, when, write_out, StoreArg};
use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use llmop_eval::dataset::{self, Item};
use llmop_store::{ListFilter, Record, Store};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub enum DatasetCommand {
    /// Register a dataset file (JSON Lines or CSV) as the next version of its dataset
    /// (unchanged content registers nothing).
    Push {
        file: PathBuf,
        /// The dataset's name (default: the file's name without its extension).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Add recorded calls to a dataset as items (a new version): their variables (or
    /// messages), optionally their outputs as the expected ones.
    Add {
        name: String,
        /// Which records: a filter like `feature=summarize&status=ok&since=7d` (the
        /// parameters of GET /v1/requests), or a read-only SQL query returning a
        /// `request_id` column.
        #[arg(long)]
        from_records: String,
        /// Keep each record's output (parsed, else text) as the item's expected output.
        #[arg(long)]
        with_outputs: bool,
        /// Items for judge calibration: the record's variables as `input`, its output as
        /// `output`, and its feedback label as the human label (records without one are
        /// left out).
        #[arg(long, conflicts_with = "with_outputs")]
        feedback_labels: bool,
        /// At most this many records.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Every dataset: latest version, items, content hash.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// One version of a dataset (default: the latest) and its items.
    Show {
        name: String,
        #[arg(long)]
        version: Option<i64>,
        /// Items shown in the table (all with --json).
        #[arg(long, default_value_t = 20)]
        items: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Items added, removed and changed between two versions.
    Diff {
        name: String,
        a: i64,
        b: i64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
}

pub fn run(config: &Path, c: DatasetCommand) -> ExitCode {
    super::run_async(async move {
        match c {
            DatasetCommand::Push {
                file,
                name,
                json,
                store,
            } => {
                let store = open_or_create(config, store).await?;
                push(&store, &file, name, json).await
            }
            DatasetCommand::Add {
                name,
                from_records,
                with_outputs,
                feedback_labels,
                limit,
                json,
                store,
            } => {
                let store = open(&store_url(config, store.store)?).await?;
                let how = if feedback_labels {
                    AddAs::JudgeLabels
                } else if with_outputs {
                    AddAs::WithOutputs
                } else {
                    AddAs::Inputs
                };
                add(&store, &name, &from_records, how, limit, json).await
            }
            DatasetCommand::List { json, store } => {
                let store = open(&store_url(config, store.store)?).await?;
                list(&store, json).await
            }
            DatasetCommand::Show {
                name,
                version,
                items,
                json,
                store,
            } => {
                let store = open(&store_url(config, store.store)?).await?;
                show(&store, &name, version, items, json).await
            }
            DatasetCommand::Diff {
                name,
                a,
                b,
                json,
                store,
            } => {
                let store = open(&store_url(config, store.store)?).await?;
                diff(&store, &name, a, b, json).await
            }
        }
    })
}

/// The store, created when it does not exist yet (a dataset can be pushed before any
/// call was served, like a feature).
async fn open_or_create(config: &Path, store: StoreArg) -> anyhow::Result<Store> {
    let url = store_url(config, store.store)?;
    Store::open(&url)
        .await
        .with_context(|| format!("cannot open the record store {url}"))
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("dataset name `{name}`: use 1-64 letters, digits, `-`, `_`, `.`");
    }
    Ok(())
}

async fn register(
    store: &Store,
    name: &str,
    items: &[Item],
    source: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    let hash = dataset::content_hash(items);
    let (v, created) = store
        .push_dataset_version(name, &hash, &json!(items), Some(source), Some(&actor()))
        .await?;
    if as_json {
        return print_json(&json!({
            "name": v.name, "version": v.version, "content_hash": v.content_hash,
            "items": v.item_count, "created": created,
        }));
    }
    if created {
        out!(
            "{} v{} registered ({} items, {})",
            v.name,
            v.version,
            v.item_count,
            short(&v.content_hash)
        );
    } else {
        out!(
            "{} v{} already has this content ({}); nothing registered",
            v.name,
            v.version,
            short(&v.content_hash)
        );
    }
    Ok(())
}

fn short(hash: &str) -> String {
    hash.chars().take(19).collect::<String>() + "…"
}

async fn push(
    store: &Store,
    file: &Path,
    name: Option<String>,
    as_json: bool,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = match name {
        Some(n) => n,
        None => file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .ok_or_else(|| {
                anyhow!(
                    "cannot name a dataset after {} (pass --name)",
                    file.display()
                )
            })?,
    };
    check_name(&name)?;
    let items = dataset::parse_file(&file.to_string_lossy(), &text)
        .map_err(|errs| anyhow!("{} has problems:\n  {}", file.display(), errs.join("\n  ")))?;
    register(
        store,
        &name,
        &items,
        &format!("file:{}", file.display()),
        as_json,
    )
    .await
}

#[derive(Clone, Copy, PartialEq)]
enum AddAs {
    Inputs,
    WithOutputs,
    JudgeLabels,
}

/// The records a `--from-records` argument names.
async fn records(store: &Store, from: &str, limit: usize) -> anyhow::Result<Vec<Record>> {
    let lower = from.trim_start().to_ascii_lowercase();
    let mut out = Vec::new();
    if lower.starts_with("select") || lower.starts_with("with") {
        let r = store
            .query_readonly(from, limit, Duration::from_secs(30))
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let col = r
            .columns
            .iter()
            .position(|c| c == "request_id")
            .ok_or_else(|| anyhow!("the query must return a `request_id` column"))?;
        for row in &r.rows {
            if let Some(Value::String(id)) = row.get(col) {
                if let Some(rec) = store.get(id).await? {
                    out.push(rec);
                }
            }
        }
        return Ok(out);
    }
    let mut filter = ListFilter::from_query(from, super::now_ms())
        .map_err(|(p, m)| anyhow!("--from-records: `{p}`: {m}"))?;
    filter.limit = Some(limit.min(1000) as u32);
    loop {
        let page = store.list(&filter).await?;
        out.extend(page.records);
        match page.next_cursor {
            Some(c) if out.len() < limit => filter.cursor = Some(c),
            _ => break,
        }
    }
    out.truncate(limit);
    Ok(out)
}

/// One record as an item, or why it cannot be one.
fn item_of(r: &Record, how: AddAs) -> Result<Item, &'static str> {
    let variables = match &r.variables {
        Some(Value::Object(v)) => v.clone(),
        _ => Default::default(),
    };
    let messages = match &r.input_messages {
        Value::Array(m) if !m.is_empty() && variables.is_empty() => Some(m.clone()),
        _ => None,
    };
    if variables.is_empty() && messages.is_none() {
        return Err("no variables or input messages");
    }
    let output = r
        .parsed_output
        .clone()
        .filter(|p| !p.is_null())
        .or_else(|| r.output_text.clone().map(Value::String));
    let mut item = Item {
        id: r.request_id.clone(),
        variables,
        messages,
        expected: None,
        labels: vec![],
        tags: r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        source: Some(format!("record:{}", r.request_id)),
    };
    match how {
        AddAs::Inputs => {}
        AddAs::WithOutputs => {
            if r.status != 200 || output.is_none() {
                return Err("no successful output");
            }
            item.expected = output;
        }
        AddAs::JudgeLabels => {
            let label = r
                .feedback
                .as_ref()
                .and_then(|f| f.label.clone())
                .ok_or("no feedback label")?;
            let input = if item.variables.is_empty() {
                serde_json::to_string_pretty(&item.messages).unwrap_or_default()
            } else {
                serde_json::to_string_pretty(&item.variables).unwrap_or_default()
            };
            let out_text = match output {
                Some(Value::String(s)) => s,
                Some(v) => v.to_string(),
                None => return Err("no output"),
            };
            item.variables = [
                ("input".to_string(), Value::String(input)),
                ("output".to_string(), Value::String(out_text)),
            ]
            .into_iter()
            .collect();
            item.messages = None;
            item.labels = vec![label];
        }
    }
    Ok(item)
}

async fn add(
    store: &Store,
    name: &str,
    from: &str,
    how: AddAs,
    limit: usize,
    as_json: bool,
) -> anyhow::Result<()> {
    check_name(name)?;
    let recs = records(store, from, limit).await?;
    let mut items: Vec<Item> = match store.dataset_version(name, None).await? {
        Some(v) => serde_json::from_value(v.items)?,
        None => vec![],
    };
    let mut added = 0;
    let mut skipped: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &recs {
        match item_of(r, how) {
            Ok(item) => {
                match items.iter_mut().find(|i| i.id == item.id) {
                    Some(existing) => *existing = item,
                    None => items.push(item),
                }
                added += 1;
            }
            Err(why) => *skipped.entry(why).or_default() += 1,
        }
    }
    if added == 0 {
        bail!(
            "none of the {} matching records could become an item{}",
            recs.len(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(" ({skipped:?})")
            }
        );
    }
    if !as_json {
        for (why, n) in &skipped {
            eprintln!("llmop: left out {n} records: {why}");
        }
    }
    register(store, name, &items, &format!("records:{from}"), as_json).await
}

async fn list(store: &Store, as_json: bool) -> anyhow::Result<()> {
    let all = store.dataset_versions(None).await?;
    if as_json {
        return print_json(&all);
    }
    if all.is_empty() {
        out!("no datasets (llmop dataset push <file>)");
        return Ok(());
    }
    let mut t = table();
    t.set_header([
        "dataset",
        "latest",
        "items",
        "content hash",
        "registered (UTC)",
        "by",
    ]);
    let mut seen = std::collections::BTreeSet::new();
    for v in &all {
        if !seen.insert(v.name.clone()) {
            continue;
        }
        t.add_row([
            v.name.clone(),
            format!("v{}", v.version),
            v.item_count.to_string(),
            short(&v.content_hash),
            when(v.created_at_ms),
            v.created_by.clone().unwrap_or_default(),
        ]);
    }
    write_out(format_args!("{t}"));
    Ok(())
}

async fn get(
    store: &Store,
    name: &str,
    version: Option<i64>,
) -> anyhow::Result<(llmop_store::DatasetVersion, Vec<Item>)> {
    let v = store
        .dataset_version(name, version)
        .await?
        .ok_or_else(|| match version {
            Some(n) => anyhow!("dataset `{name}` has no version {n}"),
            None => anyhow!("no dataset `{name}` (llmop dataset push <file> --name {name})"),
        })?;
    let items: Vec<Item> = serde_json::from_value(v.items.clone())?;
    Ok((v, items))
}

async fn show(
    store: &Store,
    name: &str,
    version: Option<i64>,
    n: usize,
    as_json: bool,
) -> anyhow::Result<()> {
    let (v, items) = get(store, name, version).await?;
    if as_json {
        return print_json(&v);
    }
    out!(
        "{} v{}: {} items, {}\nregistered {} by {} from {}",
        v.name,
        v.version,
        v.item_count,
        v.content_hash,
        when(v.created_at_ms),
        v.created_by.as_deref().unwrap_or("-"),
        v.source.as_deref().unwrap_or("-")
    );
    let mut t = table();
    t.set_header(["id", "variables / messages", "expected", "tags"]);
    let clip = |s: String| -> String {
        if s.chars().count() > 60 {
            s.chars().take(59).collect::<String>() + "…"
        } else {
            s
        }
    };
    for i in items.iter().take(n) {
        let input = if i.variables.is_empty() {
            serde_json::to_string(&i.messages).unwrap_or_default()
        } else {
            Value::Object(i.variables.clone()).to_string()
        };
        t.add_row([
            i.id.clone(),
            clip(input),
            clip(i.expected_text().unwrap_or_default()),
            i.tags.join(", "),
        ]);
    }
    write_out(format_args!("{t}"));
    if items.len() > n {
        out!("… and {} more (--items N, or --json)", items.len() - n);
    }
    Ok(())
}

async fn diff(store: &Store, name: &str, a: i64, b: i64, as_json: bool) -> anyhow::Result<()> {
    let (_, ia) = get(store, name, Some(a)).await?;
    let (_, ib) = get(store, name, Some(b)).await?;
    let d = dataset::diff(&ia, &ib);
    if as_json {
        return print_json(&d);
    }
    out!(
        "{name} v{a} -> v{b}: {} added, {} removed, {} changed, {} unchanged",
        d.added.len(),
        d.removed.len(),
        d.changed.len(),
        d.unchanged
    );
    for id in &d.added {
        out!("+ {id}");
    }
    for id in &d.removed {
        out!("- {id}");
    }
    for id in &d.changed {
        out!("~ {id}");
    }
    Ok(())
}
