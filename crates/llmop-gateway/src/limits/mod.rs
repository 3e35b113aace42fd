//! The pipeline's *check* stage: budgets, session (agent loop) budgets and rate limits,
//! counted in process or, with `[counters] url = "redis://…"`, in Redis shared by every
//! replica (each operation one atomic Lua script).
//!
//! **Reserve, then settle.** Before a call, its cost is estimated (input tokens counted
//! with the o200k tokenizer for OpenAI models, characters / 3.5 for the others; output
//! as its `max_tokens`, else 1,024) at the highest price among the route's targets, and
//! that estimate is reserved on every budget the call falls in, atomically, refusing if
//! spent + reserved + estimate would pass a hard limit. After the call the reservation is
//! replaced by the real cost. So concurrent calls, on any number of replicas, can take a
//! budget past its limit by at most what the estimates of calls in flight under-counted.
//!
//! Settlement happens when the call's record is handed over (also when the client went
//! away), on a task of its own: never on the response's path.
//!
//! - this module: the budgets and counters (`Limits`), built from the config and
//!   refreshed from the store;
//! - [`check`]: the check stage itself ([`admit`]), settlement, target quotas;
//! - [`estimate`]: the call's one token estimate;
//! - [`counters`]: the counting operations, in process or as Redis scripts;
//! - [`alerts`]: soft-limit alerts and the webhook;
//! - [`report`]: each budget's spend from the records (the cold path behind `llmop
//!   budgets` and `GET /admin/budgets`).

use llmop_core::budget::{Scope, Window};
use llmop_core::codes;
use llmop_core::config::{BudgetConfig, Config, OnCounterError};
use llmop_core::context::RequestContext;
use llmop_core::{ChatRequest, GatewayError};
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Output tokens assumed for a call that sets no `max_tokens`.
pub const DEFAULT_OUTPUT_ESTIMATE: u64 = 1024;

/// One configured budget, parsed.
struct Budget {
    /// Names its counters: scope and window, so the same budget keeps its counters
    /// across restarts and config reorderings, on every replica.
    id: String,
    scope: Scope,
    window: Window,
    soft: Option<f64>,
    hard: Option<f64>,
    max_calls: Option<u64>,
    max_duration_ms: Option<i64>,
}

/// One money counter a call falls in.
#[derive(Debug, Clone)]
pub struct Line {
    key: String,
    hard: Option<f64>,
    soft: Option<f64>,
    subject: String,
    window: Window,
    window_end_ms: i64,
}

/// What a call reserved; settled when its record is handed over.
pub struct Admission {
    lines: Vec<Line>,
    reserved: f64,
    limits: Arc<Limits>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("lines", &self.lines.len())
            .field("reserved", &self.reserved)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("counters: {0}")]
pub struct CounterError(String);

impl From<redis::RedisError> for CounterError {
    fn from(e: redis::RedisError) -> Self {
        CounterError(e.to_string())
    }
}

#[derive(Default)]
struct Money {
    spent: f64,
    reserved: f64,
    expires_ms: i64,
}

#[derive(Default)]
struct Local {
    money: HashMap<String, Money>,
    /// GCRA: theoretical arrival time per limited key.
    tat: HashMap<String, i64>,
    /// Sessions: calls and first call time.
    sessions: HashMap<String, (u64, i64, i64)>,
    alerted: HashMap<String, i64>,
}

enum Store {
    Local(Mutex<Local>),
    Redis(ConnectionManager),
}

pub struct Limits {
    /// The config's budgets and those added through the admin API (refreshed).
    budgets: std::sync::RwLock<Arc<Vec<Budget>>>,
    specs: std::sync::RwLock<Arc<Vec<BudgetConfig>>>,
    config_budgets: Vec<BudgetConfig>,
    store: Store,
    on_error: OnCounterError,
    prefix: String,
    webhook: Option<String>,
    http: reqwest::Client,
}

pub mod alerts;
mod check;
mod counters;
mod estimate;
mod report;

pub use check::{admit, target_admits};
pub use estimate::Estimate;
pub use report::report;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn usd(v: f64) -> String {
    format!("${}", llmop_cost::format_usd(v))
}

impl Limits {
    /// From the config; connects to Redis when `[counters] url` is set.
    pub async fn new(config: &Config) -> Result<Limits, String> {
        let budgets = parse_budgets(&config.budgets)?;
        let store = match &config.counters.url {
            Some(url) => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| format!("[counters] url: {e}"))?;
                // Short timeouts: a counter that cannot answer quickly is a failure the
                // on_error policy decides about, not a request left hanging.
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(std::time::Duration::from_millis(500)))
                    .set_response_timeout(Some(std::time::Duration::from_millis(500)))
                    .set_number_of_retries(1);
                let conn = ConnectionManager::new_lazy_with_config(client, cfg)
                    .map_err(|e| format!("[counters] url: {e}"))?;
                let mut probe = conn.clone();
                let ping: Result<String, _> = redis::cmd("PING").query_async(&mut probe).await;
                if let Err(e) = ping {
                    tracing::error!(error = %e, policy = ?config.counters.on_error, "cannot reach [counters] url; serving by its on_error policy until it answers");
                }
                Store::Redis(conn)
            }
            None => Store::Local(Mutex::new(Local::default())),
        };
        Ok(Limits {
            budgets: std::sync::RwLock::new(Arc::new(budgets)),
            specs: std::sync::RwLock::new(Arc::new(config.budgets.clone())),
            config_budgets: config.budgets.clone(),
            store,
            on_error: config.counters.on_error,
            prefix: std::env::var("LLMOP_COUNTERS_PREFIX").unwrap_or_else(|_| "llmop:".into()),
            webhook: config.alerts.webhook_url.clone(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        })
    }

    /// Whether any limit can apply (else the check stage costs nothing).
    pub fn active(&self, any_key_limits: bool) -> bool {
        !self.budgets().is_empty() || any_key_limits
    }

    fn budgets(&self) -> Arc<Vec<Budget>> {
        match self.budgets.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Every budget in force: the config's, then those added through the admin API.
    pub fn specs(&self) -> Arc<Vec<BudgetConfig>> {
        match self.specs.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the budgets added through the admin API. An unreadable one is skipped
    /// (and logged); the others stay in force.
    pub async fn refresh(&self, store: &llmop_store::Store) -> Result<(), llmop_store::StoreError> {
        let mut specs = self.config_budgets.clone();
        for b in store.stored_budgets().await? {
            match serde_json::from_value::<BudgetConfig>(b.spec) {
                Ok(spec) if llmop_core::budget::check(&spec).is_empty() => specs.push(spec),
                _ => tracing::warn!(budget = %b.id, "stored budget is invalid; ignored"),
            }
        }
        let parsed = match parse_budgets(&specs) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "budgets could not be parsed; keeping the previous ones");
                return Ok(());
            }
        };
        let (parsed, specs) = (Arc::new(parsed), Arc::new(specs));
        match self.budgets.write() {
            Ok(mut g) => *g = parsed,
            Err(p) => *p.into_inner() = parsed,
        }
        match self.specs.write() {
            Ok(mut g) => *g = specs,
            Err(p) => *p.into_inner() = specs,
        }
        Ok(())
    }

    fn lock(m: &Mutex<Local>) -> std::sync::MutexGuard<'_, Local> {
        match m.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

fn parse_budgets(specs: &[BudgetConfig]) -> Result<Vec<Budget>, String> {
    specs
        .iter()
        .map(|b| {
            let window = b.window();
            Ok(Budget {
                id: format!("{}|{}", b.scope, window.as_str()),
                scope: b.scope.clone(),
                window,
                soft: b.soft_usd,
                hard: b.hard_usd,
                max_calls: b.max_calls,
                max_duration_ms: b.max_duration_s.map(|s| s as i64 * 1000),
            })
        })
        .collect()
}
