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

use crate::routing::{Resolved, Target};
use llmop_core::budget::{Scope, Window};
use llmop_core::codes;
use llmop_core::config::{BudgetConfig, Config, OnCounterError};
use llmop_core::context::RequestContext;
use llmop_core::{ChatRequest, GatewayError, Part};
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

/// Reserves `amount` on every line unless one would pass its hard limit: `Ok(None)`, or
/// `Ok(Some((index, spent)))` of the first line that refused.
const RESERVE: &str = r#"
local amount = tonumber(ARGV[1])
local n = #KEYS
for i = 1, n do
  local limit = tonumber(ARGV[1 + i])
  if limit >= 0 then
    local spent = tonumber(redis.call('HGET', KEYS[i], 'spent') or '0')
    local reserved = tonumber(redis.call('HGET', KEYS[i], 'reserved') or '0')
    if spent + reserved + amount > limit then
      return {i, tostring(spent + reserved)}
    end
  end
end
for i = 1, n do
  redis.call('HINCRBYFLOAT', KEYS[i], 'reserved', amount)
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[1 + n + i]))
end
return {0, '0'}
"#;

/// Replaces a reservation by the real cost; returns each line's spend before and after.
const SETTLE: &str = r#"
local reserved = tonumber(ARGV[1])
local actual = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local before = tonumber(redis.call('HGET', KEYS[i], 'spent') or '0')
  redis.call('HINCRBYFLOAT', KEYS[i], 'reserved', -reserved)
  local after = redis.call('HINCRBYFLOAT', KEYS[i], 'spent', actual)
  table.insert(out, tostring(before))
  table.insert(out, after)
end
return out
"#;

/// GCRA: admits `cost` units at `rate` per minute with a burst of one minute's worth;
/// returns 0, or the milliseconds until it would admit.
const GCRA: &str = r#"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local new_tat = tat + interval * cost
if new_tat - now > burst then
  return math.ceil(new_tat - now - burst)
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1)
return 0
"#;

/// A session's calls so far (after this one) and its first call's time.
const SESSION: &str = r#"
redis.call('HSETNX', KEYS[1], 'first', ARGV[1])
local calls = redis.call('HINCRBY', KEYS[1], 'calls', 1)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return {calls, redis.call('HGET', KEYS[1], 'first')}
"#;

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

    pub fn spawn_refresh(
        self: Arc<Self>,
        store: llmop_store::Store,
        every: std::time::Duration,
        shutdown: crate::shutdown::Shutdown,
    ) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.triggered() => return,
                }
                if let Err(e) = self.refresh(&store).await {
                    tracing::warn!(error = %e, "cannot re-read budgets");
                }
            }
        });
    }

    fn lock(m: &Mutex<Local>) -> std::sync::MutexGuard<'_, Local> {
        match m.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    async fn reserve(
        &self,
        lines: &[Line],
        amount: f64,
    ) -> Result<Option<(usize, f64)>, CounterError> {
        match &self.store {
            Store::Local(m) => {
                let now = now_ms();
                let mut l = Self::lock(m);
                l.money.retain(|_, v| v.expires_ms > now);
                for (i, line) in lines.iter().enumerate() {
                    if let Some(limit) = line.hard {
                        let c = l.money.get(&line.key);
                        let used = c.map_or(0.0, |c| c.spent + c.reserved);
                        if used + amount > limit {
                            return Ok(Some((i, used)));
                        }
                    }
                }
                for line in lines {
                    let c = l.money.entry(line.key.clone()).or_default();
                    c.reserved += amount;
                    c.expires_ms = line.window_end_ms.max(now) + 60_000;
                }
                Ok(None)
            }
            Store::Redis(conn) => {
                let mut conn = conn.clone();
                let script = redis::Script::new(RESERVE);
                let mut inv = script.prepare_invoke();
                for line in lines {
                    inv.key(&line.key);
                }
                inv.arg(amount);
                for line in lines {
                    inv.arg(line.hard.unwrap_or(-1.0));
                }
                let now = now_ms();
                for line in lines {
                    inv.arg((line.window_end_ms - now).max(0) + 60_000);
                }
                let (i, used): (usize, String) = inv.invoke_async(&mut conn).await?;
                Ok((i > 0).then(|| (i - 1, used.parse().unwrap_or(0.0))))
            }
        }
    }

    async fn settle_lines(
        &self,
        lines: &[Line],
        reserved: f64,
        actual: f64,
    ) -> Result<Vec<(f64, f64)>, CounterError> {
        match &self.store {
            Store::Local(m) => {
                let mut l = Self::lock(m);
                Ok(lines
                    .iter()
                    .map(|line| {
                        let c = l.money.entry(line.key.clone()).or_default();
                        let before = c.spent;
                        c.reserved = (c.reserved - reserved).max(0.0);
                        c.spent += actual;
                        (before, c.spent)
                    })
                    .collect())
            }
            Store::Redis(conn) => {
                let mut conn = conn.clone();
                let script = redis::Script::new(SETTLE);
                let mut inv = script.prepare_invoke();
                for line in lines {
                    inv.key(&line.key);
                }
                inv.arg(reserved).arg(actual);
                let out: Vec<String> = inv.invoke_async(&mut conn).await?;
                Ok(out
                    .chunks(2)
                    .map(|p| {
                        let f = |s: &String| s.parse().unwrap_or(0.0);
                        (f(&p[0]), p.get(1).map_or(0.0, f))
                    })
                    .collect())
            }
        }
    }

    /// `Ok(None)`: admitted; `Ok(Some(ms))`: retry after.
    async fn gcra(
        &self,
        key: &str,
        per_minute: u32,
        cost: u64,
    ) -> Result<Option<u64>, CounterError> {
        let interval = 60_000.0 / f64::from(per_minute.max(1));
        let burst = 60_000.0;
        let now = now_ms();
        match &self.store {
            Store::Local(m) => {
                let mut l = Self::lock(m);
                match gcra_step(l.tat.get(key).copied(), now, per_minute, cost) {
                    Ok(new_tat) => {
                        l.tat.insert(key.to_string(), new_tat);
                        if l.tat.len() > 100_000 {
                            l.tat.retain(|_, t| *t > now);
                        }
                        Ok(None)
                    }
                    Err(wait) => Ok(Some(wait)),
                }
            }
            Store::Redis(conn) => {
                let mut conn = conn.clone();
                let wait: i64 = redis::Script::new(GCRA)
                    .key(key)
                    .arg(now)
                    .arg(interval)
                    .arg(cost)
                    .arg(burst)
                    .invoke_async(&mut conn)
                    .await?;
                Ok((wait > 0).then_some(wait as u64))
            }
        }
    }

    async fn session(&self, key: &str, ttl_ms: i64) -> Result<(u64, i64), CounterError> {
        let now = now_ms();
        match &self.store {
            Store::Local(m) => {
                let mut l = Self::lock(m);
                l.sessions.retain(|_, s| s.2 > now);
                let s = l.sessions.entry(key.to_string()).or_insert((0, now, 0));
                s.0 += 1;
                s.2 = now + ttl_ms;
                Ok((s.0, s.1))
            }
            Store::Redis(conn) => {
                let mut conn = conn.clone();
                let (calls, first): (u64, i64) = redis::Script::new(SESSION)
                    .key(key)
                    .arg(now)
                    .arg(ttl_ms)
                    .invoke_async(&mut conn)
                    .await?;
                Ok((calls, first))
            }
        }
    }

    /// `true` the first time per key (until `until_ms`).
    async fn first_alert(&self, key: &str, until_ms: i64) -> Result<bool, CounterError> {
        let now = now_ms();
        match &self.store {
            Store::Local(m) => {
                let mut l = Self::lock(m);
                l.alerted.retain(|_, t| *t > now);
                Ok(l.alerted
                    .insert(key.to_string(), until_ms.max(now + 1))
                    .is_none())
            }
            Store::Redis(conn) => {
                let mut conn = conn.clone();
                let set: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg((until_ms - now).max(1) + 60_000)
                    .query_async(&mut conn)
                    .await?;
                Ok(set.is_some())
            }
        }
    }

    /// A counter store failure, by policy: `Ok(())` (serve uncounted) or 503.
    fn on_counter_error(&self, e: &CounterError) -> Result<(), GatewayError> {
        metrics::counter!("llmop_counter_errors_total").increment(1);
        match self.on_error {
            OnCounterError::FailOpen => {
                tracing::warn!(error = %e, "counters unavailable: serving uncounted ([counters] on_error = fail_open)");
                Ok(())
            }
            OnCounterError::FailClosed => {
                tracing::warn!(error = %e, "counters unavailable: refusing ([counters] on_error = fail_closed)");
                Err(GatewayError::Unavailable {
                    message: "budgets and rate limits cannot be checked right now; retry shortly"
                        .into(),
                    code: codes::COUNTERS_UNAVAILABLE,
                })
            }
        }
    }

    /// Soft alerts for lines whose spend crossed their soft limit in this settlement:
    /// once per window per scope, logged, counted, and POSTed to the webhook.
    async fn alerts(self: &Arc<Self>, lines: &[Line], spends: &[(f64, f64)]) {
        for (line, (before, after)) in lines.iter().zip(spends) {
            let Some(soft) = line.soft else { continue };
            if !(*after >= soft && *before < soft) {
                continue;
            }
            let key = format!("{}:alerted", line.key);
            match self.first_alert(&key, line.window_end_ms).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record a budget alert; alerting anyway");
                }
            }
            metrics::counter!("llmop_budget_alerts_total").increment(1);
            tracing::warn!(scope = %line.subject, window = line.window.as_str(), spent = after, soft_usd = soft, "budget soft limit reached");
            if let Some(url) = &self.webhook {
                let body = serde_json::json!({
                    "type": "budget.soft_limit",
                    "scope": line.subject,
                    "window": line.window.as_str(),
                    "window_end_ms": line.window_end_ms,
                    "spent_usd": after,
                    "soft_usd": soft,
                    "hard_usd": line.hard,
                    "at_ms": now_ms(),
                });
                let (http, url) = (self.http.clone(), url.clone());
                tokio::spawn(async move {
                    for attempt in 0..3u32 {
                        match http.post(&url).json(&body).send().await {
                            Ok(r) if r.status().is_success() => return,
                            Ok(r) => {
                                tracing::warn!(status = %r.status(), attempt, "alert webhook refused")
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, attempt, "alert webhook unreachable")
                            }
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                    }
                    metrics::counter!("llmop_alert_webhook_failures_total").increment(1);
                });
            }
        }
    }
}

fn parse_budgets(specs: &[BudgetConfig]) -> Result<Vec<Budget>, String> {
    specs
        .iter()
        .map(|b| {
            let scope = Scope::parse(&b.scope)?;
            let window = match b.window.as_deref() {
                Some(w) => Window::parse(w).ok_or_else(|| format!("window `{w}`"))?,
                None if scope == Scope::Request => Window::Request,
                None => Window::Day,
            };
            Ok(Budget {
                id: format!("{}|{}", b.scope, window.as_str()),
                scope,
                window,
                soft: b.soft_usd,
                hard: b.hard_usd,
                max_calls: b.max_calls,
                max_duration_ms: b.max_duration_s.map(|s| s as i64 * 1000),
            })
        })
        .collect()
}

/// One GCRA decision (the same arithmetic as the Redis script): `Ok(new_tat)` admits
/// `cost` units at `per_minute` with a burst of one minute's allowance; `Err(ms)` is
/// the wait until it would.
fn gcra_step(tat: Option<i64>, now: i64, per_minute: u32, cost: u64) -> Result<i64, u64> {
    let interval = 60_000.0 / f64::from(per_minute.max(1));
    let burst = 60_000.0;
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + (interval * cost as f64).ceil() as i64;
    if (new_tat - now) as f64 > burst {
        return Err(((new_tat - now) as f64 - burst).ceil() as u64);
    }
    Ok(new_tat)
}

/// The one token estimate of a call, shared by every stage that counts tokens (caps,
/// budgets, key and target rate limits): computed at most once per call, and only when
/// something counts.
pub struct Estimate {
    openai_family: bool,
    tokens_in: std::sync::OnceLock<u64>,
}

impl Estimate {
    /// For a call that may reach `resolved`'s targets.
    pub fn new(resolved: &Resolved<'_>) -> Estimate {
        Estimate {
            openai_family: resolved.targets.iter().all(|t| {
                matches!(
                    t.provider.kind(),
                    llmop_core::config::ProviderKind::Openai
                        | llmop_core::config::ProviderKind::Mock
                )
            }),
            tokens_in: std::sync::OnceLock::new(),
        }
    }

    /// Input tokens of `req` (see [`input_tokens`]), computed on first use.
    pub async fn tokens_in(&self, req: &ChatRequest) -> u64 {
        if let Some(t) = self.tokens_in.get() {
            return *t;
        }
        let t = input_tokens(req, self.openai_family).await;
        *self.tokens_in.get_or_init(|| t)
    }

    /// Input tokens plus the output allowance (`max_tokens`, else the default estimate).
    pub async fn total(&self, req: &ChatRequest) -> u64 {
        self.tokens_in(req).await
            + u64::from(
                req.params
                    .max_tokens
                    .unwrap_or(DEFAULT_OUTPUT_ESTIMATE as u32),
            )
    }
}

/// Input tokens of a request: the o200k tokenizer for OpenAI-family models (exact for
/// them, close for others), else characters / 3.5, rounded up. Linear in the prompt's
/// size; a large prompt is tokenized on a blocking thread, never on an async worker.
async fn input_tokens(req: &ChatRequest, openai_family: bool) -> u64 {
    let mut text = String::new();
    for m in &req.messages {
        for p in &m.parts {
            match p {
                Part::Text(t) => text.push_str(t),
                Part::ToolCall(c) => text.push_str(&c.arguments),
                Part::ToolResult { content, .. } => text.push_str(content),
                // Thinking sent back is billed as input: its text counts.
                Part::Reasoning(llmop_core::Reasoning::Thinking { text: t, .. })
                | Part::Reasoning(llmop_core::Reasoning::Thought { text: t, .. }) => {
                    text.push_str(t)
                }
                Part::Image(_) | Part::Reasoning(_) => {}
            }
        }
        text.push('\n');
    }
    // Message framing, roughly as providers count it.
    let framing = 4 * req.messages.len() as u64;
    let body = if openai_family {
        llmop_providers::tokenizer::count_off_runtime(text).await
    } else {
        (text.chars().count() as f64 / 3.5).ceil() as u64
    };
    body + framing
}

/// The check stage: per-request caps (clamping `max_tokens` where that fits), session
/// budgets, key rate limits, and reservations on every budget the call falls in.
/// The admission goes on the call's record and is settled when the record is handed
/// over.
pub async fn admit(
    limits: &Arc<Limits>,
    resolved: &Resolved<'_>,
    estimate: &Estimate,
    req: &mut ChatRequest,
    context: &RequestContext,
    key: Option<&llmop_store::ApiKey>,
) -> Result<Option<Admission>, GatewayError> {
    let key_limits = key.is_some_and(|k| {
        k.scopes.rpm.is_some() || k.scopes.tpm.is_some() || k.scopes.budget_usd_day.is_some()
    });
    if !limits.active(key_limits) {
        return Ok(None);
    }
    // The highest price among the targets this call may reach.
    let (mut p_in, mut p_out) = (0.0f64, 0.0f64);
    for t in &resolved.targets {
        if let Some(p) = t.price {
            p_in = p_in.max(p.input);
            p_out = p_out.max(p.output);
        }
    }
    let tokens_in = estimate.tokens_in(req).await;
    let now = now_ms();

    // Per-request caps: clamp max_tokens when that keeps the call under, else refuse.
    let budgets = limits.budgets();
    for b in budgets.iter().filter(|b| b.scope == Scope::Request) {
        let Some(cap) = b.hard else { continue };
        let cost_in = tokens_in as f64 * p_in / 1e6;
        let out = u64::from(
            req.params
                .max_tokens
                .unwrap_or(DEFAULT_OUTPUT_ESTIMATE as u32),
        );
        if cost_in + out as f64 * p_out / 1e6 <= cap {
            continue;
        }
        let fits = if p_out > 0.0 {
            ((cap - cost_in) * 1e6 / p_out).floor()
        } else {
            0.0
        };
        if fits >= 1.0 {
            req.params.max_tokens = Some(fits.min(u32::MAX as f64) as u32);
        } else {
            return Err(GatewayError::Limited {
                message: format!(
                    "budget exceeded: this request's prompt alone (~{tokens_in} tokens, {}) is over the per-request cap of {}",
                    usd(cost_in),
                    usd(cap)
                ),
                code: codes::BUDGET_EXCEEDED,
                retry_after_s: None,
                handoff: false,
            });
        }
    }
    let tokens_out = u64::from(
        req.params
            .max_tokens
            .unwrap_or(DEFAULT_OUTPUT_ESTIMATE as u32),
    );
    let cost = (tokens_in as f64 * p_in + tokens_out as f64 * p_out) / 1e6;
    let key_id = key.map(|k| k.id.as_str());

    // Session budgets: calls and wall time per x-llmop-session.
    for b in budgets.iter().filter(|b| {
        b.scope == Scope::Session && (b.max_calls.is_some() || b.max_duration_ms.is_some())
    }) {
        let Some(subject) = b.scope.subject(context, key_id) else {
            continue;
        };
        let ttl = b.max_duration_ms.unwrap_or(86_400_000).max(3_600_000);
        let counter = format!("{}s:{}:{subject}", limits.prefix, b.id);
        match limits.session(&counter, ttl).await {
            Ok((calls, first)) => {
                let over_calls = b.max_calls.is_some_and(|m| calls > m);
                let over_time = b.max_duration_ms.is_some_and(|d| now - first > d);
                if over_calls || over_time {
                    let why = if over_calls {
                        format!(
                            "{} calls (max_calls = {})",
                            calls - 1,
                            b.max_calls.unwrap_or(0)
                        )
                    } else {
                        format!(
                            "{} s (max_duration_s = {})",
                            (now - first) / 1000,
                            b.max_duration_ms.unwrap_or(0) / 1000
                        )
                    };
                    metrics::counter!("llmop_session_budget_exceeded_total").increment(1);
                    return Err(GatewayError::Limited {
                        message: format!("session budget exceeded: `{subject}` has used {why}; hand the conversation to a person"),
                        code: codes::SESSION_BUDGET_EXCEEDED,
                        retry_after_s: None,
                        handoff: true,
                    });
                }
            }
            Err(e) => limits.on_counter_error(&e)?,
        }
    }

    // Key rate limits.
    if let Some(k) = key {
        for (what, per_minute, cost) in [
            ("rpm", k.scopes.rpm, 1),
            ("tpm", k.scopes.tpm, tokens_in + tokens_out),
        ] {
            let Some(per_minute) = per_minute else {
                continue;
            };
            let counter = format!("{}r:key:{}:{what}", limits.prefix, k.id);
            match limits.gcra(&counter, per_minute, cost).await {
                Ok(None) => {}
                Ok(Some(wait_ms)) => {
                    metrics::counter!("llmop_rate_limited_total", "limit" => what).increment(1);
                    return Err(GatewayError::Limited {
                        message: format!(
                            "rate limited: key `{}` allows {per_minute} {} per minute",
                            k.id,
                            if what == "rpm" { "requests" } else { "tokens" }
                        ),
                        code: codes::RATE_LIMITED,
                        retry_after_s: Some(wait_ms.div_ceil(1000)),
                        handoff: false,
                    });
                }
                Err(e) => limits.on_counter_error(&e)?,
            }
        }
    }

    // Money: every budget (and the key's daily budget) the call falls in.
    let mut lines = Vec::new();
    for b in budgets.iter().filter(|b| b.scope != Scope::Request) {
        if b.hard.is_none() && b.soft.is_none() {
            continue;
        }
        let Some(subject) = b.scope.subject(context, key_id) else {
            continue;
        };
        let (start, end) = b.window.bounds(now);
        lines.push(Line {
            key: format!("{}b:{}:{subject}:{start}", limits.prefix, b.id),
            hard: b.hard,
            soft: b.soft,
            subject,
            window: b.window,
            window_end_ms: end,
        });
    }
    if let Some(k) = key {
        if let Some(day) = k.scopes.budget_usd_day {
            let (start, end) = Window::Day.bounds(now);
            lines.push(Line {
                key: format!("{}b:key:{}:{start}", limits.prefix, k.id),
                hard: Some(day),
                soft: None,
                subject: format!("key:{}", k.id),
                window: Window::Day,
                window_end_ms: end,
            });
        }
    }
    if lines.is_empty() {
        return Ok(None);
    }
    match limits.reserve(&lines, cost).await {
        Ok(None) => Ok(Some(Admission {
            lines,
            reserved: cost,
            limits: limits.clone(),
        })),
        Ok(Some((i, used))) => {
            let line = &lines[i];
            metrics::counter!("llmop_budget_exceeded_total").increment(1);
            // A session's dollars run out like its calls: hand the loop to a person.
            let session = line.subject.starts_with("session:");
            Err(GatewayError::Limited {
                message: format!(
                    "budget exceeded: {} has used {} of its {} hard limit for this {} (this call would need ~{}); the window ends at {}",
                    line.subject,
                    usd(used),
                    usd(line.hard.unwrap_or(0.0)),
                    line.window.as_str(),
                    usd(cost),
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(line.window_end_ms.max(0) as u64)
                    )
                ),
                code: if session {
                    codes::SESSION_BUDGET_EXCEEDED
                } else {
                    codes::BUDGET_EXCEEDED
                },
                retry_after_s: Some(((line.window_end_ms - now).max(0) as u64).div_ceil(1000)),
                handoff: session,
            })
        }
        Err(e) => limits.on_counter_error(&e).map(|()| None),
    }
}

impl Admission {
    /// Replaces the reservation with the real cost (0 when unknown: an unpriced call
    /// cannot be counted in dollars), off the request path.
    pub fn settle(self, actual: Option<f64>) {
        let actual = actual.unwrap_or(0.0);
        tokio::spawn(async move {
            match self
                .limits
                .settle_lines(&self.lines, self.reserved, actual)
                .await
            {
                Ok(spends) => self.limits.alerts(&self.lines, &spends).await,
                Err(e) => {
                    metrics::counter!("llmop_counter_errors_total").increment(1);
                    tracing::warn!(error = %e, "cannot settle a budget reservation; it expires with its window");
                }
            }
        });
    }
}

/// Per-target quotas (`rpm`, `tpm` on a route target): `true` when the target may take
/// this call now.
pub async fn target_admits(limits: &Limits, route: &str, target: &Target, tokens: u64) -> bool {
    let Some(q) = target.quota else {
        return true;
    };
    for (what, per_minute, cost) in [("rpm", q.0, 1), ("tpm", q.1, tokens)] {
        let Some(per_minute) = per_minute else {
            continue;
        };
        let counter = format!(
            "{}r:target:{route}:{}/{}:{what}",
            limits.prefix,
            target.provider.name(),
            target.model
        );
        match limits.gcra(&counter, per_minute, cost).await {
            Ok(None) => {}
            Ok(Some(_)) => return false,
            Err(e) => {
                if limits.on_counter_error(&e).is_err() {
                    return false;
                }
            }
        }
    }
    true
}

/// Each configured budget's spend in its current window, from the records (what
/// `llmop budgets` and `GET /admin/budgets` show): subject, spend, calls, limits, burn
/// rate per hour and the spend projected to the window's end.
pub async fn report(
    budgets: &[BudgetConfig],
    store: &llmop_store::Store,
    now: i64,
) -> Result<Vec<serde_json::Value>, llmop_store::StoreError> {
    use llmop_store::CostBy;
    let mut out = Vec::new();
    for b in budgets {
        let scope = match Scope::parse(&b.scope) {
            Ok(s) => s,
            Err(_) => continue,
        };
        let window =
            b.window
                .as_deref()
                .and_then(Window::parse)
                .unwrap_or(if scope == Scope::Request {
                    Window::Request
                } else {
                    Window::Day
                });
        if window == Window::Request {
            out.push(
                serde_json::json!({"scope": b.scope, "window": "request", "hard_usd": b.hard_usd,
                "note": "a cap on each request: nothing accumulates"}),
            );
            continue;
        }
        let (start, end) = window.bounds(now);
        let (by, only): (CostBy, Option<String>) = match &scope {
            Scope::Global => (CostBy::Model, None),
            Scope::Key(k) => (CostBy::Key, k.clone()),
            Scope::User(u) => (CostBy::User, u.clone()),
            Scope::Feature(f) => (CostBy::Feature, f.clone()),
            Scope::Tag(k, v) => (CostBy::Tag(k.clone()), Some(v.clone())),
            Scope::Session => (CostBy::Session, None),
            Scope::Request => continue,
        };
        let rows = store.cost_by(&by, start).await?;
        let mut groups: Vec<(String, f64, i64)> = Vec::new();
        if scope == Scope::Global {
            groups.push((
                "global".into(),
                rows.iter().map(|r| r.cost_usd).sum(),
                rows.iter().map(|r| r.calls).sum(),
            ));
        } else {
            for r in rows {
                let Some(g) = r.group else { continue };
                if only.as_ref().is_some_and(|o| *o != g) {
                    continue;
                }
                groups.push((g, r.cost_usd, r.calls));
            }
        }
        let elapsed_h = ((now - start).max(1) as f64) / 3_600_000.0;
        let window_h = ((end - start) as f64) / 3_600_000.0;
        for (subject, spent, calls) in groups {
            let burn = spent / elapsed_h;
            out.push(serde_json::json!({
                "scope": b.scope, "subject": subject, "window": window.as_str(),
                "window_end_ms": end, "spent_usd": spent, "calls": calls,
                "soft_usd": b.soft_usd, "hard_usd": b.hard_usd, "max_calls": b.max_calls,
                "burn_usd_per_hour": burn, "projected_usd": burn * window_h,
            }));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_burst_gets_exactly_one_minute_of_allowance() {
        let mut tat = None;
        let admitted = (0..100)
            .filter(|_| match gcra_step(tat, 0, 30, 1) {
                Ok(t) => {
                    tat = Some(t);
                    true
                }
                Err(_) => false,
            })
            .count();
        assert_eq!(admitted, 30);
        // The wait is until one more fits: one interval (2 s) at 30 per minute.
        assert_eq!(gcra_step(tat, 0, 30, 1), Err(2_000));
    }

    proptest! {
        /// Over any arrival pattern, at most one minute's burst plus the rate times the
        /// elapsed time is admitted, and a saturating client gets the full rate.
        #[test]
        fn admitted_never_exceeds_rate_plus_burst(
            per_minute in 1u32..600,
            gaps in proptest::collection::vec(0i64..5_000, 1..400),
        ) {
            let (mut tat, mut now, mut admitted) = (None, 0i64, 0u64);
            for g in &gaps {
                now += g;
                if let Ok(t) = gcra_step(tat, now, per_minute, 1) {
                    tat = Some(t);
                    admitted += 1;
                }
            }
            let allowed = f64::from(per_minute) * (1.0 + now as f64 / 60_000.0);
            prop_assert!(admitted as f64 <= allowed.ceil() + 1.0, "{admitted} > {allowed}");
        }
    }
}
