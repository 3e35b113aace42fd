//! `llmop check`: validate a config without serving. Exit code 0 when valid, 1 when
//! not; a provider key missing on this machine is only a warning (the machine that
//! checks is often not the one that serves).

use clap::Args;
use llmop_core::config::{Config, ConfigErrors};
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct CheckArgs {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// A cascade tries its targets in order and should go from cheap to expensive: a target
/// priced above the next one, or one without a price, is worth a warning.
fn cascade_warnings(config: &Config) -> Vec<String> {
    let pricing = llmop_cost::Pricing::new(&config.prices);
    let mut out = Vec::new();
    for (name, r) in &config.routes {
        if r.strategy != llmop_core::config::Strategy::Cascade {
            continue;
        }
        // A typical call's price: 1,000 tokens in, 200 out.
        let price = |t: &llmop_core::config::TargetConfig| {
            let kind = config.providers.get(&t.provider)?.kind;
            let p = pricing.price(&t.provider, kind, &t.model)?;
            Some(p.input * 1000.0 / 1e6 + p.output * 200.0 / 1e6)
        };
        let prices: Vec<Option<f64>> = r.targets.iter().map(price).collect();
        for (t, p) in r.targets.iter().zip(&prices) {
            if p.is_none() {
                out.push(format!(
                    "route `{name}`: cascade target {}/{} has no price: its savings cannot be reported",
                    t.provider, t.model
                ));
            }
        }
        for (i, w) in prices.windows(2).enumerate() {
            if let [Some(a), Some(b)] = w {
                if a > b {
                    out.push(format!(
                        "route `{name}`: cascade target {} ({}/{}) costs more than the one after it: list cascade targets cheapest first",
                        i + 1,
                        r.targets[i].provider,
                        r.targets[i].model
                    ));
                }
            }
        }
    }
    out
}

pub fn run(path: &Path, a: CheckArgs) -> ExitCode {
    let json = a.json;
    // What serde and validation cannot see: the guardrails' detector names and deny
    // patterns, compiled as the gateway compiles them at start (classifier models are
    // loaded and run on a probe text).
    let loaded = Config::load(path).and_then(|config| {
        match llmop_guard::policy::Policy::new(&config.guardrails, &config.dir) {
            Ok(_) => Ok(config),
            Err(errors) => Err(ConfigErrors(
                errors
                    .into_iter()
                    .map(|(key, message)| llmop_core::config::ConfigError {
                        file: path.to_path_buf(),
                        line: 0,
                        column: 0,
                        key,
                        message,
                    })
                    .collect(),
            )),
        }
    });
    match loaded {
        Ok(config) => {
            // Keys are read at serve time; here a missing one is a warning, since the
            // machine that checks is often not the one that serves.
            let mut warnings: Vec<String> = config
                .providers
                .iter()
                .filter_map(|(name, p)| {
                    p.api_key().err().map(|e| format!("provider `{name}`: {e}"))
                })
                .collect();
            warnings.extend(cascade_warnings(&config));
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "file": path, "providers": config.providers.len(), "routes": config.routes.len(), "warnings": warnings})
                );
            } else {
                println!(
                    "{}: OK ({} providers, {} routes)",
                    path.display(),
                    config.providers.len(),
                    config.routes.len()
                );
                for w in warnings {
                    println!("warning: {w}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(ConfigErrors(errors)) => {
            if json {
                let list: Vec<_> = errors
                    .iter()
                    .map(|e| serde_json::json!({"file": e.file, "line": e.line, "column": e.column, "key": e.key, "message": e.message}))
                    .collect();
                println!("{}", serde_json::json!({"ok": false, "errors": list}));
            } else {
                for e in &errors {
                    eprintln!("error: {e}");
                }
            }
            ExitCode::from(1)
        }
    }
}
