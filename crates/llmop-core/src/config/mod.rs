//! The `llmop.toml` contract.
//!
//! Parsing happens in two passes: serde turns the text into typed structs (type errors,
//! unknown keys), then [`Config::validate`] checks what types cannot say (a route naming
//! a provider that does not exist, a rate outside 0..1). Both passes report errors as
//! `file:line:column: key.path: message`; the second pass finds the line of a key path
//! in a span-keeping parse of the same text (`toml_edit`).

use crate::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

mod agents;
mod cache;
mod console;
mod cost;
mod features;
mod guardrails;
mod providers;
mod routes;
mod server;
mod store;
mod telemetry;

pub use agents::*;
pub use cache::*;
pub use console::*;
pub use cost::*;
pub use features::*;
pub use guardrails::*;
pub use providers::*;
pub use routes::*;
pub use server::*;
pub use store::*;
pub use telemetry::*;

/// Problems found by validation: (key path, message).
type Problems = Vec<(Vec<KeySeg>, String)>;

/// A key path of plain keys (`["server", "listen"]`).
fn key(parts: &[&str]) -> Vec<KeySeg> {
    parts.iter().map(|p| KeySeg::Key(p.to_string())).collect()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub routes: BTreeMap<String, RouteConfig>,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub features: FeaturesConfig,
    /// Price overrides, USD per million tokens, by `"<provider>/<model>"` or
    /// `"<provider>/*"`; models not listed get the built-in catalog's price.
    #[serde(default)]
    pub prices: BTreeMap<String, PriceConfig>,
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub counters: CountersConfig,
    /// Per environment: the eval evidence a deploy needs.
    #[serde(default)]
    pub eval_gates: BTreeMap<String, EvalGate>,
    /// The online evaluation worker.
    #[serde(default)]
    pub online: OnlineConfig,
    /// Guardrails: detectors, rules and disclaimers (docs/guardrails.md).
    #[serde(default)]
    pub guardrails: GuardrailsConfig,
    /// Agent safety: tool capabilities, session taint policies, end-user scopes
    /// (docs/agents.md).
    #[serde(default)]
    pub agents: AgentsConfig,
    /// The web console at `/ui` (docs/console.md).
    #[serde(default)]
    pub console: ConsoleConfig,
    /// OpenTelemetry export of the recorded calls (docs/telemetry.md).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The response cache, idempotency keys, provider prompt caching
    /// (docs/caching.md).
    #[serde(default)]
    pub cache: CacheConfig,
    /// Directory of the config file: relative paths in it are relative to this.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// A config error that points at the place to fix.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A list of config errors, reported together so one run shows them all.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Whether a gateway with this config can serve `target` (a feature version's
    /// `route` or `model`): a route name, or `<provider>/<model>` with a configured
    /// provider. The same rule as the gateway's router; the admin API and `llmop deploy`
    /// both refuse to deploy a version that fails it.
    pub fn serves(&self, target: &str) -> Result<(), String> {
        if self.routes.contains_key(target) {
            return Ok(());
        }
        match target.split_once('/') {
            Some((p, m)) if self.providers.contains_key(p) && !m.is_empty() => Ok(()),
            Some((p, _)) if self.providers.contains_key(p) => {
                Err(format!("`{target}` names no model after the provider"))
            }
            _ => Err(format!(
                "unknown model `{target}`: name a route, or a configured provider as `<provider>/<model>`"
            )),
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("cannot read config: {e}"),
            }])
        })?;
        let mut config = Config::parse(&text, path)?;
        config.dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(config)
    }

    /// Parses and validates config text; `path` is used in error messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let (line, column) = inner
                .span()
                .map(|s| line_col(text, s.start))
                .unwrap_or((0, 0));
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line,
                column,
                key: if key == "." { String::new() } else { key },
                message: inner.message().to_string(),
            }])
        })?;
        let problems = config.validate();
        if problems.is_empty() {
            return Ok(config);
        }
        let doc = text.parse::<toml_edit::ImDocument<String>>().ok();
        Err(ConfigErrors(
            problems
                .into_iter()
                .map(|(key, message)| {
                    let (line, column) = doc
                        .as_ref()
                        .and_then(|d| key_offset(d, &key))
                        .map(|o| line_col(text, o))
                        .unwrap_or((0, 0));
                    ConfigError {
                        file: path.to_path_buf(),
                        line,
                        column,
                        key: render_key(&key),
                        message,
                    }
                })
                .collect(),
        ))
    }

    /// Checks what the types cannot: each section checks itself. Returns (key path,
    /// message) pairs.
    fn validate(&self) -> Problems {
        let mut out = Vec::new();
        self.server.validate(&mut out);
        self.store.validate(&mut out);
        self.features.validate(&mut out);
        cost::validate(self, &mut out);
        providers::validate(self, &mut out);
        routes::validate(self, &mut out);
        features::validate_gates(self, &mut out);
        features::validate_online(self, &mut out);
        guardrails::validate(self, &mut out);
        agents::validate(self, &mut out);
        console::validate(self, &mut out);
        telemetry::validate(self, &mut out);
        cache::validate(self, &mut out);
        out
    }
}

#[derive(Debug, Clone)]
enum KeySeg {
    Key(String),
    Idx(usize),
}

fn render_key(path: &[KeySeg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            KeySeg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            KeySeg::Idx(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Byte offset of the deepest part of `path` that exists in the document.
fn key_offset(doc: &toml_edit::ImDocument<String>, path: &[KeySeg]) -> Option<usize> {
    let mut item: &toml_edit::Item = doc.as_item();
    let mut best = None;
    for seg in path {
        let next = match seg {
            KeySeg::Key(k) => {
                if let Some(t) = item.as_table_like() {
                    if let Some((key, _)) = t.get_key_value(k) {
                        best = key.span().map(|s| s.start).or(best);
                    }
                }
                item.get(k.as_str())
            }
            KeySeg::Idx(i) => item.get(*i),
        };
        match next {
            Some(n) => {
                if let Some(s) = n.span() {
                    if matches!(seg, KeySeg::Idx(_)) {
                        best = Some(s.start);
                    }
                }
                item = n;
            }
            None => break,
        }
    }
    best
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigErrors> {
        Config::parse(s, Path::new("llmop.toml"))
    }

    #[test]
    fn minimal_and_defaults() {
        let c = parse("[providers.sim]\nkind = \"mock\"\n").unwrap();
        assert_eq!(c.server.listen, DEFAULT_LISTEN);
        assert_eq!(c.server.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(c.providers["sim"].kind, ProviderKind::Mock);
    }

    /// `[server] allowed_hosts` takes host names and bracketed IPv6 addresses, nothing
    /// a `Host` header could not name exactly.
    #[test]
    fn allowed_hosts_are_host_names() {
        let ok = "[server]\nallowed_hosts = [\"llmop.test\", \"my-box_1.lan.\", \"[fd00::1]\", \"10.0.0.2\"]\n[providers.sim]\nkind = \"mock\"\n";
        assert_eq!(parse(ok).unwrap().server.allowed_hosts.len(), 4);
        for bad in [
            "https://llmop.test",
            "llmop.test:8080",
            "*.example.com",
            "",
            "a b",
            "[::g]",
            "[fd00::1",
        ] {
            let text =
                format!("[server]\nallowed_hosts = [{bad:?}]\n[providers.sim]\nkind = \"mock\"\n");
            let e = parse(&text).expect_err(bad).to_string();
            assert!(e.contains("server.allowed_hosts"), "{bad}: {e}");
        }
    }

    #[test]
    fn type_error_names_line_and_key() {
        let e =
            parse("[server]\nlisten = \"127.0.0.1:1\"\nmax_body_bytes = \"big\"\n").unwrap_err();
        let e = &e.0[0];
        assert_eq!(e.line, 3);
        assert_eq!(e.key, "server.max_body_bytes");
        assert!(e.to_string().starts_with("llmop.toml:3:"), "{e}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let e = parse("[providers.x]\nkind = \"openai\"\nbase_ulr = \"http://a\"\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("base_ulr"), "{s}");
        assert!(s.contains(":3:"), "{s}");
    }

    #[test]
    fn unknown_provider_in_route_names_line_and_key() {
        let text = "[providers.openai]\nkind = \"openai\"\n\n[routes.smart]\ntargets = [\n  { provider = \"openai\", model = \"a\" },\n  { provider = \"opena\", model = \"b\" },\n]\n";
        let e = parse(text).unwrap_err();
        let e = &e.0[0];
        assert_eq!(e.key, "routes.smart.targets[1].provider");
        assert_eq!(e.line, 7);
        assert!(e.message.contains("opena"));
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let text = "[server]\nlisten = \"nowhere\"\n[providers.sim]\nkind = \"mock\"\nerror_rate = 2.0\n[providers.o]\nkind = \"openai\"\nreply = \"x\"\n";
        let e = parse(text).unwrap_err();
        let keys: Vec<_> = e.0.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert!(keys.contains(&("server.listen", 2)), "{keys:?}");
        assert!(keys.contains(&("providers.sim.error_rate", 5)), "{keys:?}");
        assert!(keys.contains(&("providers.o.reply", 8)), "{keys:?}");
    }

    #[test]
    fn api_key_from_env_only() {
        let p: ProviderConfig =
            toml::from_str("kind = \"openai\"\napi_key_env = \"LLMOP_TEST_NO_SUCH_VAR\"").unwrap();
        assert!(p.api_key().unwrap_err().contains("LLMOP_TEST_NO_SUCH_VAR"));
    }

    #[test]
    fn store_paths_are_relative_to_the_config() {
        let c = parse("[store]\nurl = \"sqlite://data/r.db\"\n").unwrap();
        let dir = Path::new("/etc/llmop");
        assert_eq!(c.store.resolved_url(dir), "sqlite:///etc/llmop/data/r.db");
        assert_eq!(
            c.store.resolved_spill_path(dir),
            PathBuf::from("/etc/llmop/data/r.db.spill.jsonl")
        );
        let c = parse("[store]\nurl = \"postgres://u@h/db\"\n").unwrap();
        assert_eq!(c.store.resolved_url(dir), "postgres://u@h/db");
        assert_eq!(
            c.store.resolved_spill_path(dir),
            PathBuf::from("/etc/llmop/llmop-spill.jsonl")
        );
        let c = parse("").unwrap();
        assert!(c.store.enabled);
        assert_eq!(c.store.durability, Durability::Default);
    }

    #[test]
    fn bad_store_settings_are_refused() {
        let e =
            parse("[store]\nurl = \"mysql://x\"\nretention_days = 0\ndurability = \"strict\"\n")
                .unwrap_err();
        let keys: Vec<_> = e.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["store.url", "store.retention_days"]);
        let e = parse("[store]\ndurability = \"eventually\"\n").unwrap_err();
        assert_eq!(e.0[0].key, "store.durability");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
