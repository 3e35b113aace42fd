//! Client API keys: created once (the whole key is shown then and never again), stored
//! as a SHA-256 hash, known by a visible id prefix, scoped to features / routes /
//! environments, carrying rate limits and a daily budget, revocable.
//!
//! A key looks like `llmop_k1a2b3c4d5_<32 random base62 characters>`; its id is
//! `k1a2b3c4d5`. SHA-256 (not a slow password hash) is right here: the secret part has
//! ~190 bits of entropy, so there is nothing to brute-force, and the gateway hashes one
//! key per request.

use crate::store::{now_ms, Store, StoreError};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

/// What a key may do. Empty lists mean "any".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyScopes {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Route names and `provider/model`s (`provider/*` for every model of a provider).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub envs: Vec<String>,
    /// The environment of this key's calls that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd_day: Option<f64>,
}

impl KeyScopes {
    /// Whether the key is limited in what it may call. A key with features or routes
    /// set is deny-by-default on both: `--features summarize` alone calls no route or
    /// model directly, and `--routes smart` alone calls no feature (`*` opens a
    /// dimension explicitly).
    pub fn scoped(&self) -> bool {
        !self.features.is_empty() || !self.routes.is_empty()
    }

    pub fn allows_feature(&self, feature: &str) -> bool {
        !self.scoped() || self.features.iter().any(|f| f == feature || f == "*")
    }

    /// Whether the key may call `model` (a route name or `provider/model`) directly.
    pub fn allows_route(&self, model: &str) -> bool {
        !self.scoped() || self.routes_allow(model)
    }

    /// Whether a feature whose version runs on `model` may run for this key: only
    /// limited when the key names routes.
    pub fn allows_feature_route(&self, model: &str) -> bool {
        self.routes.is_empty() || self.routes_allow(model)
    }

    fn routes_allow(&self, model: &str) -> bool {
        self.routes.iter().any(|r| {
            r == model
                || r == "*"
                || r.strip_suffix("/*")
                    .is_some_and(|p| model.split_once('/').is_some_and(|(mp, _)| mp == p))
        })
    }

    pub fn allows_env(&self, env: &str) -> bool {
        self.envs.is_empty() || self.envs.iter().any(|e| e == env)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    #[serde(skip)]
    pub hash: String,
    pub scopes: KeyScopes,
    pub created_at_ms: i64,
    pub created_by: Option<String>,
    pub revoked_at_ms: Option<i64>,
}

impl ApiKey {
    pub fn active(&self) -> bool {
        self.revoked_at_ms.is_none()
    }
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> String {
    let d = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in d {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// The id a presented key claims (`llmop_<id>_<secret>`), for messages and logs; the
/// hash decides whether it is real.
pub fn key_id_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("llmop_")?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some(id)
}

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

fn random(n: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rngs::OsRng;
    (0..n)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

fn read(row: &sqlx::any::AnyRow) -> Result<ApiKey, StoreError> {
    let id: String = row.try_get("id")?;
    let scopes: String = row.try_get("scopes")?;
    Ok(ApiKey {
        scopes: serde_json::from_str(&scopes)
            .map_err(|e| StoreError::Corrupt(format!("key {id}"), format!("scopes: {e}")))?,
        name: row.try_get("name")?,
        hash: row.try_get("hash")?,
        created_at_ms: row.try_get("created_at_ms")?,
        created_by: row.try_get("created_by")?,
        revoked_at_ms: row.try_get("revoked_at_ms")?,
        id,
    })
}

const COLS: &str = "id, name, hash, scopes, created_at_ms, created_by, revoked_at_ms";

impl Store {
    /// Creates a key; returns it with the whole key, which is not stored anywhere.
    pub async fn create_key(
        &self,
        name: &str,
        scopes: &KeyScopes,
        created_by: Option<&str>,
    ) -> Result<(ApiKey, String), StoreError> {
        let id = format!("k{}", random(9, &ALPHABET[..36]));
        let key = format!("llmop_{id}_{}", random(32, ALPHABET));
        let k = ApiKey {
            id,
            name: name.to_string(),
            hash: hash_key(&key),
            scopes: scopes.clone(),
            created_at_ms: now_ms(),
            created_by: created_by.map(str::to_string),
            revoked_at_ms: None,
        };
        sqlx::query(&format!(
            "INSERT INTO api_keys ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(k.id.clone())
        .bind(k.name.clone())
        .bind(k.hash.clone())
        .bind(serde_json::to_string(&k.scopes).unwrap_or_else(|_| "{}".into()))
        .bind(k.created_at_ms)
        .bind(k.created_by.clone())
        .bind(None::<i64>)
        .execute(self.pool())
        .await?;
        Ok((k, key))
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM api_keys ORDER BY created_at_ms, id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(read).collect()
    }

    /// Revokes a key; `false` when there is no such active key.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms())
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// A budget added through the admin API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredBudget {
    pub id: String,
    /// The budget as JSON (the shape of a `[[budgets]]` entry).
    pub spec: serde_json::Value,
    pub created_at_ms: i64,
    pub created_by: Option<String>,
}

impl Store {
    pub async fn add_budget(
        &self,
        spec: &serde_json::Value,
        created_by: Option<&str>,
    ) -> Result<StoredBudget, StoreError> {
        let b = StoredBudget {
            id: format!("b{}", random(9, &ALPHABET[..36])),
            spec: spec.clone(),
            created_at_ms: now_ms(),
            created_by: created_by.map(str::to_string),
        };
        sqlx::query(
            "INSERT INTO budgets (id, spec, created_at_ms, created_by) VALUES ($1, $2, $3, $4)",
        )
        .bind(b.id.clone())
        .bind(spec.to_string())
        .bind(b.created_at_ms)
        .bind(b.created_by.clone())
        .execute(self.pool())
        .await?;
        Ok(b)
    }

    pub async fn stored_budgets(&self) -> Result<Vec<StoredBudget>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, spec, created_at_ms, created_by FROM budgets ORDER BY created_at_ms, id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let spec: String = r.try_get("spec")?;
                Ok(StoredBudget {
                    spec: serde_json::from_str(&spec)
                        .map_err(|e| StoreError::Corrupt(format!("budget {id}"), e.to_string()))?,
                    created_at_ms: r.try_get("created_at_ms")?,
                    created_by: r.try_get("created_by")?,
                    id,
                })
            })
            .collect()
    }

    /// `false` when there is no such budget.
    pub async fn delete_budget(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM budgets WHERE id = $1")
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_allow_what_they_list() {
        let s = KeyScopes {
            features: vec!["summarize".into()],
            routes: vec!["smart".into(), "openai/*".into()],
            envs: vec!["prod".into()],
            ..KeyScopes::default()
        };
        assert!(s.allows_feature("summarize") && !s.allows_feature("other"));
        assert!(s.allows_route("smart") && s.allows_route("openai/gpt-4o"));
        assert!(!s.allows_route("anthropic/claude") && !s.allows_route("openai"));
        assert!(s.allows_env("prod") && !s.allows_env("dev"));
        let any = KeyScopes::default();
        assert!(any.allows_feature("x") && any.allows_route("y") && any.allows_env("z"));
    }

    #[test]
    fn ids_are_read_from_keys() {
        assert_eq!(key_id_of("llmop_k123_secret"), Some("k123"));
        assert_eq!(key_id_of("sk-openai"), None);
        assert_eq!(key_id_of("llmop__x"), None);
        assert_eq!(hash_key("a").len(), 64);
    }
}
