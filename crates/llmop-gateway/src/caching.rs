//! The gateway's side of caching (docs/caching.md): which calls the response cache and
//! idempotency keys apply to, the lookups the conductor makes before its call stage, and
//! the answer kept when a call is over. The store and the fingerprints are
//! `llmop_cache`'s.

use crate::headers::IDEMPOTENCY_KEY;
use axum::http::HeaderMap;
use llmop_cache::{key, Begin, Entry, Idempotency, Lease, Store};
use llmop_core::config::{CacheBackend, CacheConfig, CacheRule, OnCounterError};
use llmop_core::{codes, ChatRequest, ChatResponse, GatewayError};
use std::sync::Arc;
use std::time::Duration;

/// The cache's store, its idempotent calls and its rules.
pub struct Caching {
    pub store: Arc<Store>,
    pub idem: Arc<Idempotency>,
    pub config: CacheConfig,
}

impl Caching {
    pub fn new(config: &CacheConfig) -> Result<Caching, String> {
        let store = Arc::new(match (config.backend, &config.url) {
            (CacheBackend::Redis, Some(url)) => {
                Store::redis(url, &config.prefix).map_err(|e| format!("[cache] url: {e}"))?
            }
            _ => Store::memory(config.max_bytes),
        });
        Ok(Caching {
            idem: Arc::new(Idempotency::new(
                store.clone(),
                Duration::from_secs(config.idempotency_ttl_s),
            )),
            store,
            config: config.clone(),
        })
    }
}

/// What caching did for one call, on its record.
#[derive(Default)]
pub struct CacheUse {
    /// `hit | miss | bypass` (the response cache), `replay` (an idempotent retry);
    /// `None`: no caching applies.
    pub outcome: Option<&'static str>,
    /// What a served answer cost when it was made.
    pub saved_usd: Option<f64>,
    /// The call that made a served answer.
    pub source: Option<String>,
    /// Where the call's answer goes when it is over.
    pub ticket: Option<Box<Ticket>>,
    /// A stream's events as its client got them (after guardrails and disclaimers):
    /// what an idempotent retry replays.
    pub sent: Option<llmop_core::StreamAccumulator>,
}

impl std::fmt::Debug for CacheUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheUse")
            .field("outcome", &self.outcome)
            .field("saved_usd", &self.saved_usd)
            .field("source", &self.source)
            .field("ticket", &self.ticket.is_some())
            .finish()
    }
}

impl CacheUse {
    /// The answer came from the cache or an earlier idempotent call: no provider call.
    pub fn served(&self) -> bool {
        matches!(self.outcome, Some("hit" | "replay"))
    }
}

/// Where a call's answer is kept when it succeeds: the response cache under its key, an
/// idempotency lease, or both.
pub struct Ticket {
    pub put: Option<Put>,
    pub lease: Option<Lease>,
    /// A whole answer as the provider gave it (before the output guardrails and
    /// disclaimers, which run again on every hit).
    pub raw: Option<ChatResponse>,
}

impl Ticket {
    fn empty() -> Box<Ticket> {
        Box::new(Ticket {
            put: None,
            lease: None,
            raw: None,
        })
    }
}

/// Who made an answer being kept: from the call's record.
pub struct Made {
    pub provider: Option<String>,
    pub model: Option<String>,
    pub cost_usd: Option<f64>,
    pub request_id: String,
    /// A feature call's parsed output.
    pub parsed: Option<serde_json::Value>,
}

pub struct Put {
    pub store: Arc<Store>,
    pub key: String,
    pub ttl: Duration,
    pub max_bytes: u64,
}

impl Ticket {
    /// Keeps `answer` (what the client got) for later calls. Dropping the ticket without
    /// it releases the idempotency lease: the next retry runs.
    ///
    /// `raw` (the provider's answer) goes to the response cache, whose hits run the
    /// output stages again; `client` (what the client got) to the idempotency lease,
    /// whose replays are sent as they are.
    pub fn complete(self, made: Made, raw: Option<ChatResponse>, client: Option<ChatResponse>) {
        let now = llmop_cache::now_ms();
        let entry = |response: ChatResponse| Entry {
            response,
            provider: made.provider.clone(),
            model: made.model.clone(),
            cost_usd: made.cost_usd,
            request_id: made.request_id.clone(),
            stored_at_ms: now,
            expires_at_ms: now,
            fingerprint: None,
            parsed: made.parsed.clone(),
        };
        if let (Some(p), Some(raw)) = (self.put, raw) {
            let mut e = entry(raw);
            e.expires_at_ms = now + p.ttl.as_millis() as i64;
            if e.weight() <= p.max_bytes {
                p.store
                    .put_detached(llmop_cache::response_slot(&p.key), Arc::new(e));
                metrics::counter!("llmop_cache_stores_total").increment(1);
            }
        }
        if let (Some(l), Some(client)) = (self.lease, client) {
            l.complete(entry(client));
        }
    }
}

/// An `idempotency-key` header, checked: 1 to 255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, GatewayError> {
    let Some(v) = headers.get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s) if !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(s))
        }
        _ => Err(GatewayError::invalid(
            "idempotency-key must be 1 to 255 visible ASCII characters",
            Some("idempotency-key".into()),
        )),
    }
}

/// Begins an idempotent call: `Ok(Some(entry))` is an earlier answer to replay;
/// `Ok(None)` runs the call (its lease on the record, when one was taken).
pub async fn begin_idempotent(
    c: &Caching,
    scoped: &str,
    fingerprint: &str,
    wait: Duration,
    cache: &mut CacheUse,
) -> Result<Option<Arc<Entry>>, GatewayError> {
    // A crashed leader's lock expires after its deadline (and a margin).
    let lock_for = wait + Duration::from_secs(5);
    match c.idem.begin(scoped, fingerprint, wait, lock_for).await {
        Ok(Begin::Lead(lease)) => {
            metrics::counter!("llmop_idempotency_total", "outcome" => "first").increment(1);
            let t = cache.ticket.get_or_insert_with(Ticket::empty);
            t.lease = Some(lease);
            Ok(None)
        }
        Ok(Begin::Replay(e)) => {
            metrics::counter!("llmop_idempotency_total", "outcome" => "replay").increment(1);
            Ok(Some(e))
        }
        Ok(Begin::Conflict) => {
            metrics::counter!("llmop_idempotency_total", "outcome" => "conflict").increment(1);
            Err(GatewayError::Conflict {
                message: "this idempotency-key was used with another request body; use a new key for a new request".into(),
                code: codes::IDEMPOTENCY_KEY_REUSED,
            })
        }
        Ok(Begin::Busy) => {
            metrics::counter!("llmop_idempotency_total", "outcome" => "busy").increment(1);
            Err(GatewayError::Conflict {
                message: "the first call with this idempotency-key is still running; retry later"
                    .into(),
                code: codes::IDEMPOTENCY_IN_PROGRESS,
            })
        }
        Err(e) => {
            metrics::counter!("llmop_cache_errors_total", "op" => "idempotency").increment(1);
            match c.config.on_error {
                OnCounterError::FailOpen => {
                    tracing::warn!(error = %e, "idempotency store unreachable: serving without the guarantee (fail_open)");
                    Ok(None)
                }
                OnCounterError::FailClosed => Err(GatewayError::Unavailable {
                    message:
                        "the cache store cannot be reached, and idempotent calls are fail_closed"
                            .into(),
                    code: codes::CACHE_UNAVAILABLE,
                }),
            }
        }
    }
}

/// Requests with more text than this are hashed with the runtime told the thread blocks.
const HASH_INLINE_BYTES: usize = 64 * 1024;

/// Runs a hash over a request of `bytes` of text. A large request (up to the body limit:
/// a few ms per MB) would hold this runtime thread: on a multi-threaded runtime it runs
/// in `block_in_place`, so the other calls on this worker move to another one.
pub fn heavy<T>(bytes: usize, f: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if bytes > HASH_INLINE_BYTES && multi {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// How the client's `cache-control` asks: (`may_read`, `may_store`).
fn client_directives(headers: &HeaderMap) -> (bool, bool) {
    let mut read = true;
    let mut store = true;
    for v in headers.get_all("cache-control") {
        for d in v.to_str().unwrap_or("").split(',') {
            match d.trim().to_ascii_lowercase().as_str() {
                "no-cache" => read = false,
                "no-store" => {
                    read = false;
                    store = false;
                }
                _ => {}
            }
        }
    }
    (read, store)
}

/// Why a call cannot use the response cache under `rule`, if it cannot.
fn bypass_reason(rule: &CacheRule, req: &ChatRequest, special: bool) -> Option<&'static str> {
    if special {
        return Some("special");
    }
    // An unset temperature is the provider's default, which samples (1.0 for OpenAI
    // and Anthropic).
    if !rule.any_temperature && req.params.temperature.is_none_or(|t| t > 0.0) {
        return Some("temperature");
    }
    None
}

/// The response-cache lookup for a call under `rule` (its response caching on): a hit
/// to serve, or `None` (a ticket is left on the record to keep the answer).
#[allow(clippy::too_many_arguments)]
pub async fn lookup(
    c: &Caching,
    rule: &CacheRule,
    headers: &HeaderMap,
    req: &ChatRequest,
    target: &str,
    special: bool,
    key_id: Option<&str>,
    cache: &mut CacheUse,
) -> Option<Arc<Entry>> {
    let (may_read, may_store) = client_directives(headers);
    if let Some(why) = bypass_reason(rule, req, special).or((!may_store).then_some("no-store")) {
        cache.outcome = Some("bypass");
        metrics::counter!("llmop_cache_lookups_total", "outcome" => "bypass", "reason" => why)
            .increment(1);
        return None;
    }
    let scope = if rule.shared {
        "*"
    } else {
        key_id.unwrap_or("-")
    };
    let k = heavy(req.text_bytes(), || key::response_key(req, scope, target));
    if may_read {
        match c.store.get(&llmop_cache::response_slot(&k)).await {
            Ok(Some(e)) => {
                cache.outcome = Some("hit");
                metrics::counter!("llmop_cache_lookups_total", "outcome" => "hit", "reason" => "")
                    .increment(1);
                return Some(e);
            }
            Ok(None) => {}
            Err(e) => {
                metrics::counter!("llmop_cache_errors_total", "op" => "get").increment(1);
                tracing::warn!(error = %e, "response cache lookup failed: answered as a miss");
            }
        }
    }
    cache.outcome = Some(if may_read { "miss" } else { "bypass" });
    metrics::counter!(
        "llmop_cache_lookups_total",
        "outcome" => if may_read { "miss" } else { "bypass" },
        "reason" => if may_read { "" } else { "no-cache" }
    )
    .increment(1);
    let t = cache.ticket.get_or_insert_with(Ticket::empty);
    t.put = Some(Put {
        store: c.store.clone(),
        key: k,
        ttl: Duration::from_secs(rule.ttl_s),
        max_bytes: c.config.max_entry_bytes,
    });
    None
}

/// Provider prompt caching for a call under `rule`: llmop's breakpoints and the
/// OpenAI cache key.
pub fn prompt_caching(
    rule: &CacheRule,
    req: &mut ChatRequest,
    route: Option<&str>,
    feature: Option<(&str, i64)>,
) {
    if !rule.prompt {
        return;
    }
    req.prompt_cache.auto = true;
    req.prompt_cache.key = Some(match (&rule.prompt_cache_key, feature, route) {
        (Some(k), _, _) => k.clone(),
        (None, Some((f, v)), _) => format!("llmop:{f}@v{v}"),
        (None, None, Some(r)) => format!("llmop:{r}"),
        (None, None, None) => format!("llmop:{}", req.model),
    });
}
