//! Who is calling: client API keys (`Authorization: Bearer <key>` or `x-api-key`) and
//! the admin token.
//!
//! Keys live in the store (created by `llmop keys create`, shown once, stored hashed);
//! each replica holds the active ones in memory, re-read every `[features] refresh_ms`,
//! so a revocation takes effect everywhere within that time. A presented key is hashed
//! (SHA-256) and looked up: no key material is kept in memory or logged.
//!
//! Modes:
//! - no active key, loopback listener: the gateway is **open** (the first-run
//!   experience), and so is the admin API unless an admin token is configured;
//! - any active key, or a listener beyond loopback: every client call needs a valid
//!   key (401 otherwise), scoped calls outside their scope get 403, and the admin API
//!   and the records API need the admin token (`[server] admin_token_env`).

use crate::headers::X_API_KEY;
use axum::http::{header, HeaderMap};
use llmop_core::codes;
use llmop_core::GatewayError;
use llmop_store::{hash_key, ApiKey, Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

pub struct Auth {
    store: Option<Store>,
    /// Active keys by hash.
    keys: RwLock<Arc<HashMap<String, Arc<ApiKey>>>>,
    /// Keys are required even when none exist (the listener is beyond loopback).
    required: AtomicBool,
    /// SHA-256 of the admin token, if one is configured.
    admin: Option<String>,
}

/// The credential a request presents.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(t.trim());
        }
    }
    headers
        .get(&X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl Auth {
    pub fn new(store: Option<Store>, admin_token: Option<&str>) -> Auth {
        if let Some(t) = admin_token {
            // Scrubbed from any upstream text, like provider keys.
            llmop_core::secret::register(t);
        }
        Auth {
            store,
            keys: RwLock::new(Arc::new(HashMap::new())),
            required: AtomicBool::new(false),
            admin: admin_token.filter(|t| !t.is_empty()).map(hash_key),
        }
    }

    /// From now on every client call needs a key, even if none exists.
    pub fn require_keys(&self) {
        self.required.store(true, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Arc<HashMap<String, Arc<ApiKey>>> {
        match self.keys.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Whether client calls need a key.
    pub fn enforcing(&self) -> bool {
        self.required.load(Ordering::Relaxed) || !self.snapshot().is_empty()
    }

    /// Re-reads the active keys.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let active: HashMap<String, Arc<ApiKey>> = store
            .keys()
            .await?
            .into_iter()
            .filter(ApiKey::active)
            .map(|k| (k.hash.clone(), Arc::new(k)))
            .collect();
        let next = Arc::new(active);
        match self.keys.write() {
            Ok(mut g) => *g = next,
            Err(p) => *p.into_inner() = next,
        }
        Ok(())
    }

    /// The calling key: `None` while the gateway is open; 401 without a valid key once
    /// keys are enforced.
    pub fn client(&self, headers: &HeaderMap) -> Result<Option<Arc<ApiKey>>, GatewayError> {
        let keys = self.snapshot();
        if keys.is_empty() && !self.required.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let Some(token) = presented(headers).filter(|t| !t.is_empty()) else {
            return Err(GatewayError::Unauthorized {
                message: "an API key is required: send `Authorization: Bearer <key>` (or `x-api-key`); create one with `llmop keys create`".into(),
                code: codes::MISSING_API_KEY,
            });
        };
        match keys.get(&hash_key(token)) {
            Some(k) => Ok(Some(k.clone())),
            None => Err(GatewayError::Unauthorized {
                message: match llmop_store::key_id_of(token) {
                    Some(id) => format!("API key `{id}` is not valid (revoked or unknown)"),
                    None => "the API key is not valid".into(),
                },
                code: codes::INVALID_API_KEY,
            }),
        }
    }

    /// Whether client calls need no key (the gateway listens on loopback, and no key
    /// is in force).
    pub fn open_to_clients(&self) -> bool {
        !self.enforcing()
    }

    /// Whether the admin side is open: no admin token, and no client keys in force.
    pub fn open(&self) -> bool {
        self.admin.is_none() && !self.enforcing()
    }

    /// The admin token check (admin API, records API).
    pub fn admin(&self, headers: &HeaderMap) -> Result<(), GatewayError> {
        match &self.admin {
            Some(want) => match presented(headers) {
                // Comparing hashes: equal-length strings that leak nothing about the
                // token through timing.
                Some(t) if hash_key(t) == *want => Ok(()),
                Some(_) => Err(GatewayError::Unauthorized {
                    message: "the admin token is not valid".into(),
                    code: codes::INVALID_ADMIN_TOKEN,
                }),
                None => Err(GatewayError::Unauthorized {
                    message: "this endpoint needs the admin token: `Authorization: Bearer <token>`".into(),
                    code: codes::MISSING_ADMIN_TOKEN,
                }),
            },
            None if self.enforcing() => Err(GatewayError::Unauthorized {
                message: "client keys are in force and no admin token is configured: set [server] admin_token_env to use this endpoint".into(),
                code: codes::MISSING_ADMIN_TOKEN,
            }),
            None => Ok(()),
        }
    }
}

/// Where a request comes from, when that is not this machine: a `Host` that names
/// another host, or an `Origin` (a web page's) on another host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    Host,
    Origin,
}

/// Whether a request names only this machine (docs/api.md, "Open on loopback"): its
/// `Host` and its target's authority (HTTP/2's `:authority`, an absolute-form target),
/// each when sent, and its `Origin` (when sent; `null` never is) must be loopback names
/// or one of `extra` (`[server] allowed_hosts`). Checked while client calls need no
/// key: a browser is a client on the machine, and this is how a web page's request
/// (directly, or by rebinding its DNS name to 127.0.0.1) gives itself away.
pub fn foreign(headers: &HeaderMap, authority: Option<&str>, extra: &[String]) -> Option<Foreign> {
    // A Host that is not visible ASCII names nothing here.
    let host = headers.get(header::HOST).map(|h| h.to_str().unwrap_or(""));
    for h in [host, authority].into_iter().flatten() {
        if !this_machine(strip_port(h), extra) {
            return Some(Foreign::Host);
        }
    }
    let o = headers.get(header::ORIGIN)?;
    let ok = o
        .to_str()
        .ok()
        .and_then(|o| url::Url::parse(o).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .and_then(|u| u.host_str().map(|h| this_machine(h, extra)))
        .unwrap_or(false);
    (!ok).then_some(Foreign::Origin)
}

/// `host:port` → `host`; `[::1]:port` → `[::1]`.
fn strip_port(h: &str) -> &str {
    let h = h.trim();
    if h.starts_with('[') {
        return match h.find(']') {
            Some(end) => &h[..=end],
            None => h,
        };
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    }
}

/// A loopback name or address, or one the operator allowed. Names compare without case
/// and without a trailing dot.
fn this_machine(host: &str, extra: &[String]) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    // What nearly every request names, without parsing it (an address parse was about
    // 200 instructions a call, callgrind).
    if name == "127.0.0.1" || name == "localhost" {
        return true;
    }
    if name.is_empty() {
        return false;
    }
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        if let Ok(ip) = inner.parse::<std::net::Ipv6Addr>() {
            if ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()) {
                return true;
            }
        }
    } else if let Ok(ip) = name.parse::<std::net::Ipv4Addr>() {
        if ip.is_loopback() {
            return true;
        }
    } else {
        let b = name.as_bytes();
        let tail = b.len().checked_sub(b".localhost".len()).map(|at| &b[at..]);
        if name.eq_ignore_ascii_case("localhost")
            || tail.is_some_and(|t| t.eq_ignore_ascii_case(b".localhost"))
        {
            return true;
        }
    }
    extra.iter().any(|e| {
        let e = e.strip_suffix('.').unwrap_or(e);
        e.eq_ignore_ascii_case(name)
    })
}

/// What a key may call: the model (`feature/<name>`, a route, or `provider/model`) and
/// the environment. 403 outside the key's scope.
pub fn check_scope(key: &ApiKey, model: &str, env: Option<&str>) -> Result<(), GatewayError> {
    let s = &key.scopes;
    let allowed = match model.strip_prefix("feature/") {
        Some(feature) => s.allows_feature(feature),
        None => s.allows_route(model),
    };
    if !allowed {
        return Err(GatewayError::Forbidden {
            message: format!("API key `{}` may not call `{model}`", key.id),
            code: codes::KEY_NOT_ALLOWED,
        });
    }
    if let Some(env) = env {
        if !s.allows_env(env) {
            return Err(GatewayError::Forbidden {
                message: format!("API key `{}` may not call environment `{env}`", key.id),
                code: codes::KEY_NOT_ALLOWED,
            });
        }
    }
    Ok(())
}

/// A feature call's version runs on `model` (its route or `provider/model`): a key that
/// names routes may only run features on those.
pub fn check_feature_route(key: &ApiKey, feature: &str, model: &str) -> Result<(), GatewayError> {
    if key.scopes.allows_feature_route(model) {
        return Ok(());
    }
    Err(GatewayError::Forbidden {
        message: format!(
            "API key `{}` may not call `{model}`, which feature `{feature}` runs on",
            key.id
        ),
        code: codes::KEY_NOT_ALLOWED,
    })
}

/// `x-llmop-feature` attributes a passthrough call (its cost, its budget) to a feature:
/// a key may only do that for features it may call.
pub fn check_feature_tag(key: &ApiKey, feature: Option<&str>) -> Result<(), GatewayError> {
    match feature {
        Some(f) if !key.scopes.allows_feature(f) => Err(GatewayError::Forbidden {
            message: format!(
                "API key `{}` may not attribute calls to feature `{f}` (x-llmop-feature)",
                key.id
            ),
            code: codes::KEY_NOT_ALLOWED,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmop_store::KeyScopes;

    fn key(scopes: KeyScopes) -> ApiKey {
        ApiKey {
            id: "k1".into(),
            name: "n".into(),
            hash: String::new(),
            scopes,
            created_at_ms: 0,
            created_by: None,
            revoked_at_ms: None,
        }
    }

    fn with(host: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = host {
            h.insert(header::HOST, v.parse().unwrap());
        }
        if let Some(v) = origin {
            h.insert(header::ORIGIN, v.parse().unwrap());
        }
        h
    }

    /// Loopback names and addresses, with or without a port, in any case and with a
    /// trailing dot; an operator's own names; nothing else.
    #[test]
    fn only_this_machines_hosts_and_origins_pass() {
        let extra = vec!["llmop.test".to_string(), "[fd00::1]".to_string()];
        for host in [
            "127.0.0.1:8080",
            "127.3.4.5",
            "localhost",
            "LocalHost:80",
            "localhost.:8080",
            "api.localhost:8080",
            "[::1]:8080",
            "[::1]",
            "[::ffff:127.0.0.1]:9",
            "LLMOP.test:8080",
            "[fd00::1]:1",
        ] {
            assert_eq!(
                foreign(&with(Some(host), None), None, &extra),
                None,
                "{host}"
            );
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "evillocalhost",
            "10.0.0.1:8080",
            "0.0.0.0:8080",
            "[::2]:8080",
            "[fd00::2]",
            "",
            ":8080",
            "[::1",
        ] {
            assert_eq!(
                foreign(&with(Some(host), None), None, &extra),
                Some(Foreign::Host),
                "{host:?}"
            );
        }
        // No Host (HTTP/1.0, a raw socket): no browser sends that.
        assert_eq!(foreign(&HeaderMap::new(), None, &[]), None);
        // HTTP/2 names the host in the target's authority, not in Host; an
        // absolute-form target has both, and both must be this machine.
        let none = HeaderMap::new();
        assert_eq!(foreign(&none, Some("127.0.0.1:8080"), &[]), None);
        assert_eq!(
            foreign(&none, Some("evil.example:8080"), &[]),
            Some(Foreign::Host)
        );
        let local = with(Some("127.0.0.1:8080"), None);
        assert_eq!(
            foreign(&local, Some("evil.example"), &[]),
            Some(Foreign::Host)
        );
        for origin in [
            "http://localhost:3000",
            "https://127.0.0.1",
            "http://[::1]:5173",
            "http://app.localhost",
            "http://llmop.test:8080",
        ] {
            let h = with(Some("127.0.0.1:8080"), Some(origin));
            assert_eq!(foreign(&h, None, &extra), None, "{origin}");
        }
        for origin in [
            "https://evil.example",
            "http://127.0.0.1.evil.example",
            "null",
            "file://",
            "chrome-extension://abc",
            "not a url",
            "http://localhost@evil.example",
        ] {
            let h = with(Some("127.0.0.1:8080"), Some(origin));
            assert_eq!(foreign(&h, None, &extra), Some(Foreign::Origin), "{origin}");
        }
    }

    #[test]
    fn credentials_come_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert("x-api-key", "abc".parse().unwrap());
        assert_eq!(presented(&h), Some("abc"));
        h.insert("authorization", "Bearer xyz".parse().unwrap());
        assert_eq!(presented(&h), Some("xyz"));
    }

    #[test]
    fn open_until_keys_exist_or_are_required() {
        let a = Auth::new(None, None);
        assert!(a.client(&HeaderMap::new()).unwrap().is_none());
        assert!(a.admin(&HeaderMap::new()).is_ok());
        a.require_keys();
        assert_eq!(
            a.client(&HeaderMap::new()).unwrap_err().code(),
            "missing_api_key"
        );
        assert!(a.admin(&HeaderMap::new()).is_err());
        let with_token = Auth::new(None, Some("s3cret"));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(with_token.admin(&h).is_ok());
        h.insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(
            with_token.admin(&h).unwrap_err().code(),
            "invalid_admin_token"
        );
    }

    #[test]
    fn scopes_give_403_outside() {
        let k = key(KeyScopes {
            features: vec!["summ".into()],
            routes: vec!["smart".into()],
            envs: vec!["prod".into()],
            ..KeyScopes::default()
        });
        assert!(check_scope(&k, "feature/summ", Some("prod")).is_ok());
        assert!(check_scope(&k, "smart", None).is_ok());
        // Scopes compose: a feature-only key calls no route, a route-only key no
        // feature; a feature runs only on the key's routes when it names some.
        let features_only = key(KeyScopes {
            features: vec!["summ".into()],
            ..KeyScopes::default()
        });
        assert!(check_scope(&features_only, "sim/echo", None).is_err());
        assert!(check_scope(&features_only, "feature/summ", None).is_ok());
        assert!(check_feature_route(&features_only, "summ", "sim/echo").is_ok());
        let routes_only = key(KeyScopes {
            routes: vec!["sim/*".into()],
            ..KeyScopes::default()
        });
        assert!(check_scope(&routes_only, "feature/summ", None).is_err());
        assert!(check_scope(&routes_only, "sim/echo", None).is_ok());
        assert!(check_feature_route(&k, "summ", "other/model").is_err());
        assert!(check_feature_route(&k, "summ", "smart").is_ok());
        assert!(check_feature_tag(&features_only, Some("summ")).is_ok());
        assert!(check_feature_tag(&features_only, Some("billing")).is_err());
        assert!(check_feature_tag(&routes_only, Some("summ")).is_err());
        assert!(check_feature_tag(&routes_only, None).is_ok());
        assert_eq!(
            check_scope(&k, "feature/other", Some("prod"))
                .unwrap_err()
                .code(),
            "key_not_allowed"
        );
        assert!(check_scope(&k, "openai/gpt-4o", None).is_err());
        assert!(check_scope(&k, "feature/summ", Some("dev")).is_err());
    }
}
