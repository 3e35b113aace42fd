//! The response cache and the idempotent-call store (docs/caching.md).
//!
//! Both keep whole answers ([`Entry`]) in one [`Store`]: in process (a weighted
//! `quick_cache`, bounded by bytes, entries expiring by their own TTL) or in Redis
//! (shared by every replica, expiring by Redis's own TTL). The gateway looks an answer
//! up right before its call stage and stores one when its call is over; a stream's answer
//! is stored whole and replayed as events in the client's format.
//!
//! Idempotency ([`Idempotency`]): the first call with a key leads, runs and keeps its
//! answer; a retry with the same key and body replays it; a duplicate arriving while the
//! first runs waits for it (in this process through a watch channel, across replicas by
//! polling the Redis lock); the same key with another body is a conflict. An answer
//! that failed is not kept: the next retry runs again.

pub mod key;

use llmop_core::ChatResponse;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A kept answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub response: ChatResponse,
    /// Who answered it first.
    pub provider: Option<String>,
    pub model: Option<String>,
    /// What it cost when it was made: what a hit saves. `None`: unknown.
    pub cost_usd: Option<f64>,
    /// The call that made it.
    pub request_id: String,
    pub stored_at_ms: i64,
    /// Expiry, Unix ms (the in-process store checks it; Redis expires by itself).
    pub expires_at_ms: i64,
    /// An idempotent call's body fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// A feature call's parsed output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parsed: Option<serde_json::Value>,
}

impl Entry {
    /// About the bytes it holds: the in-process store's bound, and `max_entry_bytes`.
    pub fn weight(&self) -> u64 {
        let parts: usize = self
            .response
            .parts
            .iter()
            .map(llmop_core::Part::byte_len)
            .sum::<usize>()
            + 32 * self.response.parts.len();
        (256 + parts + self.request_id.len() + self.response.id.len()) as u64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the cache's redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("a cached entry could not be read: {0}")]
    Corrupt(#[from] serde_json::Error),
}

#[derive(Clone)]
pub struct ByBytes;

impl quick_cache::Weighter<String, Arc<Entry>> for ByBytes {
    fn weight(&self, key: &String, val: &Arc<Entry>) -> u64 {
        key.len() as u64 + val.weight()
    }
}

/// Where entries live.
pub enum Store {
    Memory(quick_cache::sync::Cache<String, Arc<Entry>, ByBytes>),
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
    },
}

/// Unix time in ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// In process, holding at most `max_bytes`.
    pub fn memory(max_bytes: u64) -> Store {
        // The item estimate only sizes the table (~4 KiB per answer); the weight bounds
        // the memory.
        Store::Memory(quick_cache::sync::Cache::with_weighter(
            (max_bytes / 4096).max(16) as usize,
            max_bytes,
            ByBytes,
        ))
    }

    /// In Redis at `url`, every key under `prefix`. Connects lazily: a Redis that is
    /// down makes lookups fail (answered as misses), not the gateway.
    pub fn redis(url: &str, prefix: &str) -> Result<Store, CacheError> {
        let client = redis::Client::open(url)?;
        // Short timeouts: a cache that cannot answer quickly is a miss, not a wait.
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1);
        let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, cfg)?;
        Ok(Store::Redis {
            conn,
            prefix: prefix.to_string(),
        })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, CacheError> {
        match self {
            Store::Memory(m) => Ok(m.get(key).filter(|e| {
                if e.expires_at_ms > now_ms() {
                    true
                } else {
                    m.remove(key);
                    false
                }
            })),
            Store::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let text: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(format!("{prefix}{key}"))
                    .query_async(&mut c)
                    .await?;
                match text {
                    Some(t) => Ok(Some(Arc::new(serde_json::from_slice(&t)?))),
                    None => Ok(None),
                }
            }
        }
    }

    pub async fn put(&self, key: &str, entry: Arc<Entry>) -> Result<(), CacheError> {
        let ttl_ms = (entry.expires_at_ms - now_ms()).max(1);
        match self {
            Store::Memory(m) => {
                m.insert(key.to_string(), entry);
                Ok(())
            }
            Store::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let text = serde_json::to_vec(&*entry)?;
                let _: () = redis::cmd("SET")
                    .arg(format!("{prefix}{key}"))
                    .arg(text)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut c)
                    .await?;
                Ok(())
            }
        }
    }

    /// Stores without waiting: in process at once, in Redis on a task of its own (the
    /// call that made the answer is over; nothing waits for the write).
    pub fn put_detached(self: &Arc<Self>, key: String, entry: Arc<Entry>) {
        match &**self {
            Store::Memory(m) => {
                m.insert(key, entry);
            }
            Store::Redis { .. } => {
                let store = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.put(&key, entry).await {
                        metrics::counter!("llmop_cache_errors_total", "op" => "put").increment(1);
                        tracing::warn!(error = %e, "the cache could not keep an answer");
                    }
                });
            }
        }
    }

    fn is_redis(&self) -> bool {
        matches!(self, Store::Redis { .. })
    }
}

/// The response cache's namespace in the store.
pub fn response_slot(key: &str) -> String {
    format!("r:{key}")
}

/// How an idempotent call begins.
pub enum Begin {
    /// This call runs; its lease keeps the answer when it is done.
    Lead(Lease),
    /// An earlier call with this key and body answered: this is its answer.
    Replay(Arc<Entry>),
    /// The key was used with another body.
    Conflict,
    /// The first call with this key is still running past the wait allowed.
    Busy,
}

/// Idempotent calls: leaders, their waiters, and the answers kept for retries.
pub struct Idempotency {
    store: Arc<Store>,
    ttl: Duration,
    /// Calls running in this process, by scoped key: their fingerprint, and a channel
    /// that closes when they end.
    running: Mutex<Running>,
}

type Running = HashMap<String, (String, tokio::sync::watch::Receiver<()>)>;

/// How often a duplicate polls a lock held by another replica.
const POLL: Duration = Duration::from_millis(20);

/// Releases a lock only if it is still ours (its token).
const RELEASE: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

impl Idempotency {
    pub fn new(store: Arc<Store>, ttl: Duration) -> Idempotency {
        Idempotency {
            store,
            ttl,
            running: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Begins the call with `key` (already scoped to its API key) and body `fingerprint`.
    /// A duplicate waits for the running call up to `wait`; `lock_for` bounds how long a
    /// crashed leader's Redis lock holds others off.
    pub async fn begin(
        self: &Arc<Self>,
        key: &str,
        fingerprint: &str,
        wait: Duration,
        lock_for: Duration,
    ) -> Result<Begin, CacheError> {
        let until = Instant::now() + wait;
        let done_slot = format!("i:{key}");
        loop {
            if let Some(e) = self.store.get(&done_slot).await? {
                return Ok(if e.fingerprint.as_deref() == Some(fingerprint) {
                    Begin::Replay(e)
                } else {
                    Begin::Conflict
                });
            }
            // Same process: one leader, the others wait on its channel. (The guard is
            // dropped before any await: the block ends first.)
            let step = {
                let mut running = self.lock();
                match running.get(key) {
                    Some((fp, _)) if fp != fingerprint => return Ok(Begin::Conflict),
                    Some((_, rx)) => Step::Wait(rx.clone()),
                    None => {
                        let (tx, rx) = tokio::sync::watch::channel(());
                        running.insert(key.to_string(), (fingerprint.to_string(), rx));
                        Step::Lead(Lease {
                            idem: self.clone(),
                            key: key.to_string(),
                            fingerprint: fingerprint.to_string(),
                            token: String::new(),
                            _done: tx,
                            completed: false,
                        })
                    }
                }
            };
            let mut lease = match step {
                Step::Wait(mut rx) => {
                    // The leader's channel closes when it ends (answered or not).
                    match tokio::time::timeout_at(until, rx.changed()).await {
                        Ok(_) => continue,
                        Err(_) => return Ok(Begin::Busy),
                    }
                }
                Step::Lead(l) => l,
            };
            // Across replicas: a lock in Redis, taken or waited for.
            if let Store::Redis { conn, prefix } = &*self.store {
                lease.token = format!("{fingerprint}:{}", now_ms());
                let mut c = conn.clone();
                let set: Option<String> = redis::cmd("SET")
                    .arg(format!("{prefix}l:{key}"))
                    .arg(&lease.token)
                    .arg("NX")
                    .arg("PX")
                    .arg(lock_for.as_millis().max(1) as u64)
                    .query_async(&mut c)
                    .await?;
                if set.is_none() {
                    let held: Option<String> = redis::cmd("GET")
                        .arg(format!("{prefix}l:{key}"))
                        .query_async(&mut c)
                        .await?;
                    lease.token.clear();
                    drop(lease);
                    if held
                        .as_deref()
                        .is_some_and(|h| h.rsplit_once(':').map_or(h, |(fp, _)| fp) != fingerprint)
                    {
                        return Ok(Begin::Conflict);
                    }
                    if Instant::now() >= until {
                        return Ok(Begin::Busy);
                    }
                    tokio::time::sleep(POLL.min(until - Instant::now())).await;
                    continue;
                }
            }
            return Ok(Begin::Lead(lease));
        }
    }
}

enum Step {
    Wait(tokio::sync::watch::Receiver<()>),
    Lead(Lease),
}

/// The right to run an idempotent call. Completed with its answer, or dropped (the call
/// failed or was abandoned): then the next retry runs again.
pub struct Lease {
    idem: Arc<Idempotency>,
    key: String,
    fingerprint: String,
    /// The Redis lock's value, when one is held.
    token: String,
    /// Closed when the lease ends: wakes this process's waiters.
    _done: tokio::sync::watch::Sender<()>,
    completed: bool,
}

impl Lease {
    /// Keeps the answer for the key's retries, then ends the lease.
    pub fn complete(mut self, mut entry: Entry) {
        entry.fingerprint = Some(self.fingerprint.clone());
        entry.expires_at_ms = now_ms() + self.idem.ttl.as_millis() as i64;
        let entry = Arc::new(entry);
        self.completed = true;
        let slot = format!("i:{}", self.key);
        match &*self.idem.store {
            Store::Memory(m) => {
                m.insert(slot, entry);
            }
            Store::Redis { conn, prefix } => {
                // The answer, then the lock: a waiter polling sees one or the other.
                let (store, conn, lock) = (
                    self.idem.store.clone(),
                    conn.clone(),
                    format!("{prefix}l:{}", self.key),
                );
                let token = std::mem::take(&mut self.token);
                tokio::spawn(async move {
                    if let Err(e) = store.put(&slot, entry).await {
                        metrics::counter!("llmop_cache_errors_total", "op" => "idempotency_put")
                            .increment(1);
                        tracing::warn!(error = %e, "an idempotent call's answer could not be kept");
                    }
                    release(conn, lock, token).await;
                });
            }
        }
    }
}

async fn release(mut conn: redis::aio::ConnectionManager, lock: String, token: String) {
    if token.is_empty() {
        return;
    }
    let r: Result<i64, _> = redis::Script::new(RELEASE)
        .key(lock)
        .arg(token)
        .invoke_async(&mut conn)
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "an idempotency lock could not be released (it expires by itself)");
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut running = self.idem.lock();
            if running
                .get(&self.key)
                .is_some_and(|(fp, _)| *fp == self.fingerprint)
            {
                running.remove(&self.key);
            }
        }
        if !self.completed && !self.token.is_empty() && self.idem.store.is_redis() {
            if let Store::Redis { conn, prefix } = &*self.idem.store {
                let (conn, lock, token) = (
                    conn.clone(),
                    format!("{prefix}l:{}", self.key),
                    std::mem::take(&mut self.token),
                );
                if let Ok(h) = tokio::runtime::Handle::try_current() {
                    h.spawn(release(conn, lock, token));
                }
            }
        }
        // `_done` drops after this: this process's waiters wake and look again.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmop_core::{FinishReason, Part};

    fn entry(text: &str) -> Entry {
        Entry {
            response: ChatResponse {
                id: "chatcmpl-1".into(),
                model: "m".into(),
                created: 0,
                parts: vec![Part::Text(text.into())],
                finish_reason: FinishReason::Stop,
                usage: None,
                details: Default::default(),
            },
            provider: Some("p".into()),
            model: Some("m".into()),
            cost_usd: Some(0.01),
            request_id: "r1".into(),
            stored_at_ms: now_ms(),
            expires_at_ms: now_ms() + 60_000,
            fingerprint: None,
            parsed: None,
        }
    }

    #[tokio::test]
    async fn memory_entries_expire_and_are_bounded() {
        let s = Store::memory(1024 * 1024);
        s.put("a", Arc::new(entry("hi"))).await.unwrap();
        assert!(s.get("a").await.unwrap().is_some());
        let mut old = entry("old");
        old.expires_at_ms = now_ms() - 1;
        s.put("b", Arc::new(old)).await.unwrap();
        assert!(s.get("b").await.unwrap().is_none(), "expired");
        for i in 0..200 {
            s.put(&format!("k{i}"), Arc::new(entry(&"x".repeat(20_000))))
                .await
                .unwrap();
        }
        let Store::Memory(m) = &s else { unreachable!() };
        assert!(
            m.weight() <= 1024 * 1024,
            "bounded by bytes: {}",
            m.weight()
        );
    }

    #[tokio::test]
    async fn a_duplicate_waits_for_the_leader_and_replays_its_answer() {
        let idem = Arc::new(Idempotency::new(
            Arc::new(Store::memory(1 << 20)),
            Duration::from_secs(60),
        ));
        let w = Duration::from_secs(5);
        let Begin::Lead(lease) = idem.begin("k", "fp", w, w).await.unwrap() else {
            panic!("the first call leads")
        };
        let i2 = idem.clone();
        let dup = tokio::spawn(async move { i2.begin("k", "fp", w, w).await });
        assert!(matches!(
            idem.begin("k", "other", w, w).await.unwrap(),
            Begin::Conflict
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        lease.complete(entry("answer"));
        match dup.await.unwrap().unwrap() {
            Begin::Replay(e) => assert_eq!(e.response.text(), "answer"),
            _ => panic!("the duplicate replays"),
        }
        assert!(matches!(
            idem.begin("k", "other", w, w).await.unwrap(),
            Begin::Conflict
        ));
    }

    #[tokio::test]
    async fn a_failed_leader_lets_the_next_call_run() {
        let idem = Arc::new(Idempotency::new(
            Arc::new(Store::memory(1 << 20)),
            Duration::from_secs(60),
        ));
        let w = Duration::from_secs(5);
        let Begin::Lead(lease) = idem.begin("k", "fp", w, w).await.unwrap() else {
            panic!()
        };
        let i2 = idem.clone();
        let dup = tokio::spawn(async move { i2.begin("k", "fp", w, w).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(lease);
        assert!(matches!(dup.await.unwrap().unwrap(), Begin::Lead(_)));
    }

    #[tokio::test]
    async fn a_duplicate_gives_up_after_its_wait() {
        let idem = Arc::new(Idempotency::new(
            Arc::new(Store::memory(1 << 20)),
            Duration::from_secs(60),
        ));
        let w = Duration::from_secs(5);
        let _lease = idem.begin("k", "fp", w, w).await.unwrap();
        assert!(matches!(
            idem.begin("k", "fp", Duration::from_millis(30), w)
                .await
                .unwrap(),
            Begin::Busy
        ));
    }
}
