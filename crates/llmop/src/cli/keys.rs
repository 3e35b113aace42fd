//! `llmop keys create|list|revoke`: client API keys, written to the store directly
//! (gateways pick changes up within `[features] refresh_ms`).

use super::{open, store_url, write_out, StoreArg};
use anyhow::{bail, Context};
use clap::Subcommand;
use llmop_store::KeyScopes;
use std::path::Path;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// A new key, printed once.
    Create {
        #[command(flatten)]
        key: NewKey,
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

#[derive(clap::Args)]
pub struct NewKey {
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
}

pub fn run(config: &Path, command: KeysCommand) -> ExitCode {
    super::run_async(async {
        match command {
            KeysCommand::Create { key, json, store } => {
                create(config, store.store, key, json).await
            }
            KeysCommand::List { all, json, store } => list(config, store.store, all, json).await,
            KeysCommand::Revoke { id, store } => revoke(config, store.store, &id).await,
        }
    })
}

fn list_arg(v: &[String]) -> Vec<String> {
    v.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

async fn create(config: &Path, store: Option<String>, k: NewKey, json: bool) -> anyhow::Result<()> {
    if k.name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    if k.budget_usd_day
        .is_some_and(|b| !(b.is_finite() && b >= 0.0))
    {
        bail!("--budget-usd-day must be 0 or more");
    }
    let scopes = KeyScopes {
        features: list_arg(&k.features),
        routes: list_arg(&k.routes),
        envs: list_arg(&k.envs),
        default_env: k.default_env,
        rpm: k.rpm,
        tpm: k.tpm,
        budget_usd_day: k.budget_usd_day,
    };
    let url = store_url(config, store)?;
    // Creating the first key may be the first use of the store: create it if need be.
    let store = llmop_store::Store::open(&url)
        .await
        .with_context(|| format!("cannot open the store {url}"))?;
    let who = std::env::var("USER").ok();
    let (key, secret) = store
        .create_key(k.name.trim(), &scopes, who.as_deref())
        .await?;
    if json {
        write_out(format_args!(
            "{}",
            serde_json::json!({"id": key.id, "name": key.name, "key": secret, "scopes": key.scopes})
        ));
    } else {
        write_out(format_args!(
            "created key {} ({})\n\n  {secret}\n\nThis is the only time the key is shown: store it now. Clients send it as `Authorization: Bearer <key>` (or `x-api-key`).",
            key.id, key.name
        ));
    }
    Ok(())
}

async fn list(config: &Path, store: Option<String>, all: bool, json: bool) -> anyhow::Result<()> {
    let store = open(&store_url(config, store)?).await?;
    let keys: Vec<_> = store
        .keys()
        .await?
        .into_iter()
        .filter(|k| all || k.active())
        .collect();
    if json {
        return super::print_json(&keys);
    }
    let mut t = super::table();
    t.set_header([
        "id",
        "name",
        "features",
        "routes",
        "envs",
        "rpm",
        "tpm",
        "budget/day",
        "state",
    ]);
    let list = |v: &[String]| {
        if v.is_empty() {
            "any".to_string()
        } else {
            v.join(",")
        }
    };
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for k in &keys {
        let s = &k.scopes;
        t.add_row([
            k.id.clone(),
            k.name.clone(),
            list(&s.features),
            list(&s.routes),
            list(&s.envs),
            opt(s.rpm.map(|v| v.to_string())),
            opt(s.tpm.map(|v| v.to_string())),
            opt(s.budget_usd_day.map(|v| format!("${v}"))),
            if k.active() {
                "active".into()
            } else {
                "revoked".into()
            },
        ]);
    }
    write_out(format_args!("{t}"));
    Ok(())
}

async fn revoke(config: &Path, store: Option<String>, id: &str) -> anyhow::Result<()> {
    let store = open(&store_url(config, store)?).await?;
    if !store.revoke_key(id).await? {
        bail!("no active key `{id}` (see `llmop keys list --all`)");
    }
    write_out(format_args!(
        "revoked {id}: gateways refuse it within their refresh interval"
    ));
    Ok(())
}
