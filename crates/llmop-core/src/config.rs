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
    /// Directory of the config file: relative paths in it are relative to this.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// One `[[budgets]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// `global`, `key:<id|*>`, `user:<id|*>`, `feature:<name|*>`, `tag:<k>=<v>`,
    /// `session:*`, `request`.
    pub scope: String,
    /// `request`, `minute`, `hour`, `day`, `month` (calendar, UTC). Default `day`
    /// (`request` for the `request` scope).
    pub window: Option<String>,
    /// Alert once per window per scope when spend reaches this.
    pub soft_usd: Option<f64>,
    /// Refuse (429 `budget_exceeded`) what would take spend past this.
    pub hard_usd: Option<f64>,
    /// `session:*` only: calls per session.
    pub max_calls: Option<u64>,
    /// `session:*` only: seconds from a session's first call.
    pub max_duration_s: Option<u64>,
}

/// `[alerts]`: where soft-budget alerts go besides the log and metrics.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Each alert is POSTed here as JSON (retried; never blocks a request).
    pub webhook_url: Option<String>,
}

/// `[counters]`: where budgets and rate limits are counted.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountersConfig {
    /// `redis://…`: shared by every replica (atomic Lua scripts). Unset: in process.
    pub url: Option<String>,
    /// When Redis cannot be reached: `fail_open` (serve, uncounted) or `fail_closed`
    /// (refuse with 503).
    #[serde(default)]
    pub on_error: OnCounterError,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCounterError {
    #[default]
    FailOpen,
    FailClosed,
}

/// One `[prices."<provider>/<model>"]` entry: USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input: f64,
    pub output: f64,
    /// Cache reads; the input price when unset.
    pub cached_input: Option<f64>,
    /// Cache writes; the input price when unset.
    pub cache_write: Option<f64>,
}

/// `[features]`: how the gateway serves versioned features.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesConfig {
    /// The environment of a feature call that names none (`x-llmop-env`, `env`).
    #[serde(default = "default_env")]
    pub default_env: String,
    /// How often deployments, client keys and budgets added through the API are re-read
    /// from the store, so that a change made on another replica (or by the CLI) is in
    /// force within this time.
    #[serde(default = "default_refresh_ms")]
    pub refresh_ms: u64,
    /// Most shadow calls in flight at once; beyond it shadows are skipped (counted),
    /// never queued behind primaries.
    #[serde(default = "default_shadow_concurrency")]
    pub shadow_concurrency: usize,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        FeaturesConfig {
            default_env: default_env(),
            refresh_ms: default_refresh_ms(),
            shadow_concurrency: default_shadow_concurrency(),
        }
    }
}

fn default_env() -> String {
    "prod".into()
}
fn default_refresh_ms() -> u64 {
    250
}
fn default_shadow_concurrency() -> usize {
    16
}

pub const DEFAULT_STORE_URL: &str = "sqlite://llmop.db";

/// `[store]`: where records go and how durable they are before the client hears back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `false` turns recording off (and the read API with it).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `sqlite://<path>` (relative to the config file) or `postgres://…`.
    #[serde(default = "default_store_url")]
    pub url: String,
    #[serde(default)]
    pub durability: Durability,
    /// Records older than this many days are deleted by a background purge; unset keeps
    /// them forever.
    pub retention_days: Option<u32>,
    /// Where records that cannot be committed at shutdown are written (JSON lines), to
    /// be committed at the next start. Default: `<db>.spill.jsonl` beside a SQLite
    /// database, `llmop-spill.jsonl` beside the config for PostgreSQL.
    pub spill_path: Option<PathBuf>,
    /// Records waiting for the writer before new calls wait for room (back-pressure).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Most bytes a record keeps of each large field (input messages, request
    /// parameters, output text, tool calls, a feature's variables and rendered prompt);
    /// a larger one is cut and the record flagged `truncated`.
    #[serde(default = "default_max_field_bytes")]
    pub max_field_bytes: usize,
}

fn default_max_field_bytes() -> usize {
    1 << 20
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            enabled: true,
            url: default_store_url(),
            durability: Durability::default(),
            retention_days: None,
            spill_path: None,
            queue_capacity: default_queue_capacity(),
            max_field_bytes: default_max_field_bytes(),
        }
    }
}

/// When the client hears back relative to when the record is committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// The response goes out at once; the record is committed by the next group commit
    /// (milliseconds later). A crash can lose the records of that last window.
    #[default]
    Default,
    /// The response (for streams: the final event) is held until its record is
    /// committed: every answer a client received is in the store.
    Strict,
}

impl StoreConfig {
    /// The store URL with a relative SQLite path made relative to `dir`.
    pub fn resolved_url(&self, dir: &Path) -> String {
        match self.url.strip_prefix("sqlite://") {
            Some(rest) if !rest.starts_with('/') && !rest.starts_with(':') => {
                format!("sqlite://{}", dir.join(rest).display())
            }
            _ => self.url.clone(),
        }
    }

    /// The spill file path, resolved against `dir`.
    pub fn resolved_spill_path(&self, dir: &Path) -> PathBuf {
        if let Some(p) = &self.spill_path {
            return dir.join(p);
        }
        let url = self.resolved_url(dir);
        match url.strip_prefix("sqlite://") {
            Some(db) if !db.starts_with(':') => {
                let db = db.split('?').next().unwrap_or(db);
                PathBuf::from(format!("{db}.spill.jsonl"))
            }
            _ => dir.join("llmop-spill.jsonl"),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_store_url() -> String {
    DEFAULT_STORE_URL.to_string()
}
fn default_queue_capacity() -> usize {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Requests with a larger body are refused with 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How long SIGTERM waits for in-flight requests before exiting anyway.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_ms: u64,
    /// Deadline of a whole request unless its route sets one.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// How long a client may take to send its request body (408 after that), so a
    /// client trickling bytes cannot hold a request open forever.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_ms: u64,
    /// The environment variable holding the admin token (`/admin/*`, `/v1/requests`).
    /// Unset: the admin API is open while the gateway is (no keys, loopback), and closed
    /// once client keys exist.
    pub admin_token_env: Option<String>,
    /// How long a connection may wait for a request's headers to be complete: from the
    /// moment it is open, and between requests on a kept-alive connection. Bounds
    /// clients that trickle headers (slowloris) and idle keep-alive sockets alike.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// Most client connections open at once; past it, new connections wait in the
    /// kernel's backlog. 0: derived from the open-file limit (raised to its hard limit at
    /// start), keeping room for upstream connections and the store.
    #[serde(default)]
    pub max_connections: usize,
    /// After SIGTERM, how long `/readyz` answers 503 while the gateway still serves,
    /// before it stops accepting connections: time for a load balancer to notice.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            shutdown_timeout_ms: default_shutdown_timeout(),
            request_timeout_ms: default_request_timeout(),
            body_timeout_ms: default_body_timeout(),
            admin_token_env: None,
            idle_timeout_ms: default_idle_timeout(),
            max_connections: 0,
            shutdown_grace_ms: default_shutdown_grace(),
        }
    }
}

fn default_idle_timeout() -> u64 {
    30_000
}
fn default_shutdown_grace() -> u64 {
    1_000
}
fn default_max_response_bytes() -> usize {
    32 << 20
}
fn default_max_event_bytes() -> usize {
    1 << 20
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_shutdown_timeout() -> u64 {
    30_000
}
fn default_request_timeout() -> u64 {
    600_000
}
fn default_body_timeout() -> u64 {
    30_000
}
fn default_connect_timeout() -> u64 {
    5_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Gemini,
    Mock,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Mock => "mock",
        }
    }

    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::Mock => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    pub base_url: Option<String>,
    /// Name of the environment variable that holds the API key.
    pub api_key_env: Option<String>,
    /// Path of a file that holds the API key (e.g. a mounted secret).
    pub api_key_file: Option<PathBuf>,
    /// A PEM file of extra root certificates to trust for this provider (a private CA
    /// in front of an internal model server). The system's public roots stay trusted.
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Largest upstream answer body read (whole answers, error bodies); past it the
    /// call fails with `upstream_protocol_error` (502) instead of filling memory.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Largest single server-sent event from the upstream (bytes buffered without an
    /// event's end); past it the stream fails with `upstream_protocol_error`. A stream
    /// may be long; one event may not.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Models listed by `GET /v1/models` as `<provider>/<model>`.
    #[serde(default)]
    pub models: Vec<String>,
    // Knobs of the built-in `mock` provider.
    pub latency_ms: Option<u64>,
    pub tokens_per_second: Option<f64>,
    pub error_rate: Option<f64>,
    pub error_status: Option<u16>,
    pub timeout_rate: Option<f64>,
    pub reply: Option<String>,
    pub seed: Option<u64>,
}

impl ProviderConfig {
    pub fn base_url(&self) -> Option<&str> {
        self.base_url
            .as_deref()
            .or_else(|| self.kind.default_base_url())
    }

    /// Reads the API key from the environment or the key file. Never from the config
    /// text itself.
    pub fn api_key(&self) -> Result<Option<Secret>, String> {
        if let Some(var) = &self.api_key_env {
            return match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim()))),
                _ => Err(format!("environment variable `{var}` is not set")),
            };
        }
        if let Some(path) = &self.api_key_file {
            return std::fs::read_to_string(path)
                .map(|v| Some(Secret::new(v.trim())))
                .map_err(|e| format!("cannot read key file `{}`: {e}", path.display()));
        }
        Ok(None)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Targets in order; the next one only when the previous failed.
    #[default]
    Fallback,
    /// The first target drawn by weight, the others in order as fallbacks.
    Weighted,
    /// The target with the lowest recent latency (decaying average, penalized by its
    /// recent error rate) first, the others after it in the same order.
    LeastLatency,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub strategy: Strategy,
    pub targets: Vec<TargetConfig>,
    /// Deadline of the whole request on this route, all attempts included.
    pub timeout_ms: Option<u64>,
    /// Retries of a target that failed with a retryable error, before the next target.
    pub retry: Option<RetryConfig>,
    /// A breaker per target of this route: skip a target that keeps failing.
    pub circuit_breaker: Option<BreakerConfig>,
    /// How long one attempt may wait for its first token before the call moves on
    /// (retry or next target): a stream's first event, or a whole answer. The route's
    /// `timeout_ms` still bounds everything. Targets may override it.
    pub first_token_timeout_ms: Option<u64>,
    /// Move on to the next target when a provider refuses the request under its content
    /// policy (off by default: another model answering what one refused is a product
    /// decision). Context-window refusals always move on.
    #[serde(default)]
    pub fallback_on_content_policy: bool,
    /// The answer when every target failed: returned as a normal answer, marked
    /// `x-llmop-degraded: true` and `degraded` in the record.
    pub fallback_response: Option<FallbackResponse>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackResponse {
    pub text: String,
}

/// `circuit_breaker = { failure_rate, min_calls, open_ms }` on a route.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Share of failed calls over the last `window_ms` that opens the breaker.
    pub failure_rate: f64,
    /// Calls the window must hold before the rate counts.
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    /// How long an open breaker skips its target before letting one probe through.
    #[serde(default = "default_open_ms")]
    pub open_ms: u64,
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
}

fn default_min_calls() -> u32 {
    20
}
fn default_open_ms() -> u64 {
    30_000
}
fn default_window_ms() -> u64 {
    10_000
}

/// `retry = { attempts, backoff_ms, max_backoff_ms }` on a route.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries per target after its first try (0 = no retry).
    pub attempts: u32,
    /// Base of the exponential backoff: the n-th retry waits a random time in
    /// `0..=min(max_backoff_ms, backoff_ms * 2^(n-1))` (full jitter).
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// Retries may add at most this share of extra calls to a target over a 10 s window…
    #[serde(default = "default_budget_ratio")]
    pub budget_ratio: f64,
    /// …plus this many retries per window, so a quiet target can still be retried.
    #[serde(default = "default_budget_min")]
    pub budget_min: u32,
}

fn default_backoff() -> u64 {
    200
}
fn default_max_backoff() -> u64 {
    4_000
}
fn default_budget_ratio() -> f64 {
    0.2
}
fn default_budget_min() -> u32 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub provider: String,
    pub model: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Overrides the route's `first_token_timeout_ms` for this target.
    pub first_token_timeout_ms: Option<u64>,
    /// Request parameters set for this target whatever the client asked (a smaller
    /// `max_tokens` for a fallback model, a model-specific `temperature`).
    pub params: Option<ParamOverrides>,
    /// The provider's quota for this target: requests per minute. A call beyond it goes
    /// to the next target (recorded as `rate_limited`), or gets 429 when none is left.
    pub rpm: Option<u32>,
    /// The provider's quota: tokens per minute (estimated before the call).
    pub tpm: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamOverrides {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub seed: Option<i64>,
    pub stop: Option<Vec<String>>,
}

impl ParamOverrides {
    /// Applies the overrides to a request's parameters.
    pub fn apply(&self, p: &mut crate::Params) {
        if let Some(t) = self.temperature {
            p.temperature = Some(t);
        }
        if let Some(t) = self.top_p {
            p.top_p = Some(t);
        }
        if let Some(m) = self.max_tokens {
            p.max_tokens = Some(m);
        }
        if let Some(s) = self.seed {
            p.seed = Some(s);
        }
        if let Some(s) = &self.stop {
            p.stop.clone_from(s);
        }
    }
}

fn default_weight() -> u32 {
    1
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

    /// Checks what the types cannot. Returns (key path, message) pairs.
    fn validate(&self) -> Vec<(Vec<KeySeg>, String)> {
        use KeySeg::{Idx, Key};
        let mut out = Vec::new();
        let k = |parts: &[&str]| parts.iter().map(|p| Key(p.to_string())).collect::<Vec<_>>();

        if self.server.listen.parse::<SocketAddr>().is_err() {
            out.push((
                k(&["server", "listen"]),
                format!(
                    "`{}` is not an address:port such as 127.0.0.1:8080",
                    self.server.listen
                ),
            ));
        }
        if self.server.max_body_bytes == 0 {
            out.push((
                k(&["server", "max_body_bytes"]),
                "must be greater than 0".into(),
            ));
        }
        if self.server.body_timeout_ms == 0 {
            out.push((
                k(&["server", "body_timeout_ms"]),
                "must be greater than 0".into(),
            ));
        }
        if !(100..=300_000).contains(&self.server.idle_timeout_ms) {
            out.push((
                k(&["server", "idle_timeout_ms"]),
                "must be from 100 to 300000 (ms)".into(),
            ));
        }
        if self.server.shutdown_grace_ms > self.server.shutdown_timeout_ms {
            out.push((
                k(&["server", "shutdown_grace_ms"]),
                "must not be longer than shutdown_timeout_ms".into(),
            ));
        }
        let url = &self.store.url;
        if !(url.starts_with("sqlite://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
            || url == "sqlite://"
        {
            out.push((
                k(&["store", "url"]),
                format!("`{url}` is not a store URL: use sqlite://<path> or postgres://…"),
            ));
        }
        if self.store.retention_days == Some(0) {
            out.push((
                k(&["store", "retention_days"]),
                "must be at least 1 (leave it out to keep records forever)".into(),
            ));
        }
        if self.store.queue_capacity == 0 {
            out.push((
                k(&["store", "queue_capacity"]),
                "must be greater than 0".into(),
            ));
        }
        if !(10..=60_000).contains(&self.features.refresh_ms) {
            out.push((
                k(&["features", "refresh_ms"]),
                "must be between 10 and 60000".into(),
            ));
        }
        if self.features.default_env.is_empty() {
            out.push((k(&["features", "default_env"]), "must not be empty".into()));
        }
        if self.server.request_timeout_ms == 0 {
            out.push((
                k(&["server", "request_timeout_ms"]),
                "must be greater than 0".into(),
            ));
        }

        for (i, b) in self.budgets.iter().enumerate() {
            for (field, m) in crate::budget::check(b) {
                out.push((vec![Key("budgets".into()), Idx(i), Key(field.into())], m));
            }
        }
        if let Some(u) = &self.counters.url {
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                out.push((
                    k(&["counters", "url"]),
                    format!("`{u}` is not a redis:// URL"),
                ));
            }
        }
        if let Some(u) = &self.alerts.webhook_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                out.push((
                    k(&["alerts", "webhook_url"]),
                    format!("`{u}` is not an http(s) URL"),
                ));
            }
        }
        for (key, price) in &self.prices {
            let at = |field: &str| k(&["prices", key, field]);
            match key.split_once('/') {
                Some((provider, model)) if !model.is_empty() => {
                    if !self.providers.contains_key(provider) {
                        out.push((
                            k(&["prices", key]),
                            format!("`{provider}` is not a configured provider"),
                        ));
                    }
                }
                _ => out.push((
                    k(&["prices", key]),
                    "the key must be \"<provider>/<model>\" or \"<provider>/*\"".into(),
                )),
            }
            for (field, v) in [
                ("input", Some(price.input)),
                ("output", Some(price.output)),
                ("cached_input", price.cached_input),
                ("cache_write", price.cache_write),
            ] {
                if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                    out.push((
                        at(field),
                        "must be a price of 0 or more (USD per million tokens)".into(),
                    ));
                }
            }
        }
        for (name, p) in &self.providers {
            let at = |field: &str| k(&["providers", name, field]);
            if name.is_empty() || name.contains('/') {
                out.push((
                    k(&["providers", name]),
                    "provider names must be non-empty and contain no `/`".into(),
                ));
            }
            if let Some(u) = &p.base_url {
                match url::Url::parse(u) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                    _ => out.push((at("base_url"), format!("`{u}` is not an http(s) URL"))),
                }
            }
            if p.api_key_env.is_some() && p.api_key_file.is_some() {
                out.push((
                    at("api_key_file"),
                    "set either api_key_env or api_key_file, not both".into(),
                ));
            }
            let mock_knobs = [
                ("latency_ms", p.latency_ms.is_some()),
                ("tokens_per_second", p.tokens_per_second.is_some()),
                ("error_rate", p.error_rate.is_some()),
                ("error_status", p.error_status.is_some()),
                ("timeout_rate", p.timeout_rate.is_some()),
                ("reply", p.reply.is_some()),
                ("seed", p.seed.is_some()),
            ];
            if p.kind == ProviderKind::Mock {
                for (field, set) in [
                    ("base_url", p.base_url.is_some()),
                    ("ca_file", p.ca_file.is_some()),
                    ("api_key_env", p.api_key_env.is_some()),
                    ("api_key_file", p.api_key_file.is_some()),
                ] {
                    if set {
                        out.push((
                            at(field),
                            "the mock provider takes no `{field}`".replace("{field}", field),
                        ));
                    }
                }
            } else {
                for (field, set) in mock_knobs {
                    if set {
                        out.push((
                            at(field),
                            format!("`{field}` applies only to providers of kind = \"mock\""),
                        ));
                    }
                }
            }
            for (field, v) in [
                ("error_rate", p.error_rate),
                ("timeout_rate", p.timeout_rate),
            ] {
                if let Some(v) = v {
                    if !(0.0..=1.0).contains(&v) {
                        out.push((at(field), format!("{v} is not a rate between 0 and 1")));
                    }
                }
            }
            if let Some(s) = p.error_status {
                if !(400..=599).contains(&s) {
                    out.push((
                        at("error_status"),
                        format!("{s} is not an HTTP error status (400-599)"),
                    ));
                }
            }
            if let Some(t) = p.tokens_per_second {
                if t.is_nan() || t <= 0.0 {
                    out.push((at("tokens_per_second"), "must be greater than 0".into()));
                }
            }
        }

        for (name, r) in &self.routes {
            if name.is_empty() || name.contains('/') {
                out.push((
                    k(&["routes", name]),
                    "route names must be non-empty and contain no `/` (that form means provider/model)".into(),
                ));
            }
            if r.targets.is_empty() {
                out.push((
                    k(&["routes", name, "targets"]),
                    "a route needs at least one target".into(),
                ));
            }
            if let Some(rt) = &r.retry {
                if rt.attempts > 10 {
                    out.push((
                        k(&["routes", name, "retry", "attempts"]),
                        "at most 10 retries per target".into(),
                    ));
                }
                if rt.backoff_ms == 0 || rt.max_backoff_ms < rt.backoff_ms {
                    out.push((
                        k(&["routes", name, "retry", "backoff_ms"]),
                        "backoff_ms must be > 0 and at most max_backoff_ms".into(),
                    ));
                }
                if !(0.0..=1.0).contains(&rt.budget_ratio) {
                    out.push((
                        k(&["routes", name, "retry", "budget_ratio"]),
                        "must be between 0 and 1".into(),
                    ));
                }
            }
            if let Some(b) = &r.circuit_breaker {
                if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0) {
                    out.push((
                        k(&["routes", name, "circuit_breaker", "failure_rate"]),
                        "must be greater than 0 and at most 1".into(),
                    ));
                }
                if b.min_calls == 0 || b.open_ms == 0 || b.window_ms < 1_000 {
                    out.push((
                        k(&["routes", name, "circuit_breaker"]),
                        "min_calls and open_ms must be greater than 0, window_ms at least 1000"
                            .into(),
                    ));
                }
            }
            if r.first_token_timeout_ms == Some(0)
                || r.targets
                    .iter()
                    .any(|t| t.first_token_timeout_ms == Some(0))
            {
                out.push((
                    k(&["routes", name, "first_token_timeout_ms"]),
                    "must be greater than 0".into(),
                ));
            }
            if r.timeout_ms == Some(0) {
                out.push((
                    k(&["routes", name, "timeout_ms"]),
                    "must be greater than 0".into(),
                ));
            }
            for (i, t) in r.targets.iter().enumerate() {
                let at = |field: &str| {
                    vec![
                        Key("routes".into()),
                        Key(name.clone()),
                        Key("targets".into()),
                        Idx(i),
                        Key(field.into()),
                    ]
                };
                if !self.providers.contains_key(&t.provider) {
                    let known: Vec<&str> = self.providers.keys().map(String::as_str).collect();
                    out.push((
                        at("provider"),
                        format!(
                            "unknown provider `{}` (configured: {})",
                            t.provider,
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
                if t.model.is_empty() {
                    out.push((at("model"), "must not be empty".into()));
                }
                if r.strategy == Strategy::Weighted && t.weight == 0 && r.targets.len() == 1 {
                    out.push((
                        at("weight"),
                        "the only target of a weighted route needs a weight above 0".into(),
                    ));
                }
            }
        }
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
