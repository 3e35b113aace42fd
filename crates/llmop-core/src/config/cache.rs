//! `[cache]`: the response cache, idempotency keys and provider prompt caching
//! (docs/caching.md).

use super::*;

/// `[cache]`: where cached answers and idempotent calls' answers are kept, and which
/// routes and features use which kind of caching.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// `memory` (this process, bounded by `max_bytes`) or `redis` (shared by every
    /// replica; `url` needed).
    #[serde(default)]
    pub backend: CacheBackend,
    /// `redis://…` for the `redis` backend.
    #[serde(default)]
    pub url: Option<String>,
    /// Prefix of every Redis key llmop writes for the cache.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Most bytes the in-process store holds (answers and idempotent answers); the
    /// least recently useful go first.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// An answer larger than this is not cached (it is still answered).
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: u64,
    /// How long an idempotent call's answer is kept for its retries.
    #[serde(default = "default_idem_ttl")]
    pub idempotency_ttl_s: u64,
    /// When the cache's store cannot be reached, idempotent calls are `fail_open`
    /// (served without the guarantee, logged and counted) or `fail_closed` (503).
    #[serde(default)]
    pub on_error: OnCounterError,
    /// Per route: `[cache.routes.<route>]`.
    #[serde(default)]
    pub routes: BTreeMap<String, CacheRule>,
    /// Per feature: `[cache.features.<feature>]`; wins over its route's rule.
    #[serde(default)]
    pub features: BTreeMap<String, CacheRule>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheBackend {
    #[default]
    Memory,
    Redis,
}

/// What one route or feature caches.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    /// Answer identical requests from the response cache.
    #[serde(default)]
    pub response: bool,
    /// How long a cached answer is served.
    #[serde(default = "default_ttl")]
    pub ttl_s: u64,
    /// Cache calls sampled with `temperature > 0` too (off: such calls ask for
    /// variety, and are bypassed).
    #[serde(default)]
    pub any_temperature: bool,
    /// One cache for every API key (off: each key has its own, so no tenant sees an
    /// answer made for another).
    #[serde(default)]
    pub shared: bool,
    /// Provider prompt caching: Anthropic `cache_control` breakpoints on the stable
    /// prefix (tools, system prompt, marked feature messages, the conversation so far);
    /// OpenAI `prompt_cache_key`.
    #[serde(default)]
    pub prompt: bool,
    /// OpenAI's `prompt_cache_key`; by default `llmop:<feature>@v<version>` for a
    /// feature call and `llmop:<route>` for a route.
    #[serde(default)]
    pub prompt_cache_key: Option<String>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            backend: CacheBackend::Memory,
            url: None,
            prefix: default_prefix(),
            max_bytes: default_max_bytes(),
            max_entry_bytes: default_max_entry_bytes(),
            idempotency_ttl_s: default_idem_ttl(),
            on_error: OnCounterError::FailOpen,
            routes: BTreeMap::new(),
            features: BTreeMap::new(),
        }
    }
}

fn default_prefix() -> String {
    "llmop:cache:".into()
}
fn default_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_max_entry_bytes() -> u64 {
    1024 * 1024
}
fn default_idem_ttl() -> u64 {
    86_400
}
fn default_ttl() -> u64 {
    300
}

impl CacheConfig {
    /// The rule for a call: its feature's, else its route's.
    pub fn rule(&self, route: Option<&str>, feature: Option<&str>) -> Option<&CacheRule> {
        feature
            .and_then(|f| self.features.get(f))
            .or_else(|| route.and_then(|r| self.routes.get(r)))
    }
}

/// What the types cannot check.
pub(super) fn validate(c: &Config, out: &mut Problems) {
    let k = key;
    let cc = &c.cache;
    match (&cc.backend, &cc.url) {
        (CacheBackend::Redis, None) => out.push((
            k(&["cache", "url"]),
            "the redis backend needs a redis:// url".into(),
        )),
        (_, Some(u)) if !(u.starts_with("redis://") || u.starts_with("rediss://")) => {
            out.push((k(&["cache", "url"]), format!("`{u}` is not a redis:// URL")))
        }
        _ => {}
    }
    if cc.max_bytes < 1024 * 1024 {
        out.push((k(&["cache", "max_bytes"]), "must be at least 1 MiB".into()));
    }
    if cc.max_entry_bytes == 0 || cc.max_entry_bytes > cc.max_bytes {
        out.push((
            k(&["cache", "max_entry_bytes"]),
            "must be above 0 and at most max_bytes".into(),
        ));
    }
    if !(1..=30 * 86_400).contains(&cc.idempotency_ttl_s) {
        out.push((
            k(&["cache", "idempotency_ttl_s"]),
            "must be between 1 and 2592000 (30 days)".into(),
        ));
    }
    for (kind, rules) in [("routes", &cc.routes), ("features", &cc.features)] {
        for (name, r) in rules {
            if kind == "routes" && !c.routes.contains_key(name) {
                out.push((
                    k(&["cache", kind, name]),
                    format!("no route `{name}` in [routes]"),
                ));
            }
            if !(1..=30 * 86_400).contains(&r.ttl_s) {
                out.push((
                    k(&["cache", kind, name, "ttl_s"]),
                    "must be between 1 and 2592000 (30 days)".into(),
                ));
            }
            if !r.response && !r.prompt {
                out.push((
                    k(&["cache", kind, name]),
                    "caches nothing: set response = true, prompt = true or both".into(),
                ));
            }
            if r.prompt_cache_key
                .as_deref()
                .is_some_and(|s| s.is_empty() || s.len() > 64)
            {
                out.push((
                    k(&["cache", kind, name, "prompt_cache_key"]),
                    "must be 1 to 64 characters".into(),
                ));
            }
        }
    }
}
