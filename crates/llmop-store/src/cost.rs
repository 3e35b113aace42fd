//! Spend over the records, grouped by a dimension: what `llmop cost` prints.

use crate::store::{Backend, Store, StoreError};
use serde::Serialize;
use sqlx::Row;

/// What to group spend by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CostBy {
    Feature,
    User,
    Model,
    Key,
    Env,
    Session,
    /// A tag's value (`tag:team`).
    Tag(String),
}

impl CostBy {
    pub fn parse(s: &str) -> Result<CostBy, String> {
        Ok(match s {
            "feature" => CostBy::Feature,
            "user" => CostBy::User,
            "model" => CostBy::Model,
            "key" => CostBy::Key,
            "env" => CostBy::Env,
            "session" => CostBy::Session,
            other => match other.strip_prefix("tag:") {
                Some(k)
                    if !k.is_empty()
                        && k.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
                        }) =>
                {
                    CostBy::Tag(k.to_string())
                }
                _ => {
                    return Err(format!(
                        "`{other}`: group by feature, user, model, key, env, session or tag:<name>"
                    ))
                }
            },
        })
    }

    /// The SQL expression of the group, per backend. A tag name is checked by `parse`
    /// (letters, digits, `_-.`), so it is safe inside the JSON path.
    fn expr(&self, backend: Backend) -> String {
        match self {
            CostBy::Feature => "feature".into(),
            CostBy::User => "user_id".into(),
            CostBy::Model => "provider || '/' || model".into(),
            CostBy::Key => "key_id".into(),
            CostBy::Env => "env".into(),
            CostBy::Session => "session_id".into(),
            CostBy::Tag(k) => match backend {
                Backend::Sqlite => format!("json_extract(tags, '$.\"{k}\"')"),
                Backend::Postgres => format!("(tags::json ->> '{k}')"),
            },
        }
    }
}

/// Spend of one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostRow {
    /// `None`: calls without this dimension (no feature, no user…).
    pub group: Option<String>,
    pub calls: i64,
    /// Sum of the known costs.
    pub cost_usd: f64,
    /// Calls that used tokens but have no price: their cost is not in `cost_usd`.
    pub unpriced_calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

impl Store {
    /// Spend since `since_ms`, grouped, most expensive first.
    pub async fn cost_by(&self, by: &CostBy, since_ms: i64) -> Result<Vec<CostRow>, StoreError> {
        let sql = format!(
            "SELECT {g} AS grp, CAST(COUNT(*) AS BIGINT) AS calls, \
             CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost, \
             CAST(SUM(CASE WHEN cost_usd IS NULL AND input_tokens IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) AS unpriced, \
             CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
             CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens \
             FROM records WHERE created_at_ms >= $1 GROUP BY {g} ORDER BY cost DESC, calls DESC",
            g = by.expr(self.backend())
        );
        let rows = sqlx::query(&sql)
            .bind(since_ms)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(CostRow {
                    group: r.try_get("grp")?,
                    calls: r.try_get("calls")?,
                    cost_usd: r.try_get("cost")?,
                    unpriced_calls: r.try_get("unpriced")?,
                    input_tokens: r.try_get("input_tokens")?,
                    output_tokens: r.try_get("output_tokens")?,
                })
            })
            .collect()
    }
}

/// What caching and tiering saved for one (feature, provider, model), from the records.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SavingsRow {
    pub feature: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub calls: i64,
    /// What was paid.
    pub cost_usd: f64,
    /// Answered from the response cache: how many, and what their answers had cost.
    pub cache_hits: i64,
    pub cache_saved_usd: f64,
    /// Idempotent retries replayed.
    pub replays: i64,
    pub replay_saved_usd: f64,
    /// Provider prompt caching: input tokens read from and written to the cache.
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    /// Cascade answers: how many, how many escalated, what they cost, and what the
    /// same answers would have cost on the route's last target.
    pub cascade_calls: i64,
    pub cascade_escalated: i64,
    pub cascade_cost_usd: f64,
    pub cascade_baseline_usd: f64,
}

impl Store {
    /// Savings since `since_ms`, per feature, provider and model.
    pub async fn savings(&self, since_ms: i64) -> Result<Vec<SavingsRow>, StoreError> {
        let f = |e: &str| format!("CAST(COALESCE(SUM({e}), 0) AS DOUBLE PRECISION)");
        let n = |e: &str| format!("CAST(COALESCE(SUM({e}), 0) AS BIGINT)");
        let sql = format!(
            "SELECT feature, provider, model, CAST(COUNT(*) AS BIGINT) AS calls, {cost} AS cost, \
             {hits} AS hits, {hit_saved} AS hit_saved, {replays} AS replays, {replay_saved} AS replay_saved, \
             {cached} AS cached, {written} AS written, {cc} AS cc, {esc} AS esc, {ccost} AS ccost, {base} AS base \
             FROM records WHERE created_at_ms >= $1 AND shadow = 0 \
             GROUP BY feature, provider, model ORDER BY cost DESC, calls DESC",
            cost = f("cost_usd"),
            hits = n("CASE WHEN cache = 'hit' THEN 1 ELSE 0 END"),
            hit_saved = f("CASE WHEN cache = 'hit' THEN saved_usd ELSE 0 END"),
            replays = n("CASE WHEN cache = 'replay' THEN 1 ELSE 0 END"),
            replay_saved = f("CASE WHEN cache = 'replay' THEN saved_usd ELSE 0 END"),
            cached = n("cached_tokens"),
            written = n("cache_write_tokens"),
            cc = n("CASE WHEN baseline_usd IS NOT NULL THEN 1 ELSE 0 END"),
            esc = n("CASE WHEN baseline_usd IS NOT NULL AND attempts LIKE '%\"retry_reason\":\"cascade_%' THEN 1 ELSE 0 END"),
            ccost = f("CASE WHEN baseline_usd IS NOT NULL THEN cost_usd ELSE 0 END"),
            base = f("baseline_usd"),
        );
        let rows = sqlx::query(&sql)
            .bind(since_ms)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SavingsRow {
                    feature: r.try_get("feature")?,
                    provider: r.try_get("provider")?,
                    model: r.try_get("model")?,
                    calls: r.try_get("calls")?,
                    cost_usd: r.try_get("cost")?,
                    cache_hits: r.try_get("hits")?,
                    cache_saved_usd: r.try_get("hit_saved")?,
                    replays: r.try_get("replays")?,
                    replay_saved_usd: r.try_get("replay_saved")?,
                    cached_tokens: r.try_get("cached")?,
                    cache_write_tokens: r.try_get("written")?,
                    cascade_calls: r.try_get("cc")?,
                    cascade_escalated: r.try_get("esc")?,
                    cascade_cost_usd: r.try_get("ccost")?,
                    cascade_baseline_usd: r.try_get("base")?,
                })
            })
            .collect()
    }
}

/// One turn of a session (an agent loop's call), in order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Turn {
    pub request_id: String,
    pub created_at_ms: i64,
    pub feature: Option<String>,
    pub model: Option<String>,
    pub status: i64,
    pub input_tokens: Option<i64>,
    /// Of the input: read from the provider's prompt cache.
    pub cached_tokens: Option<i64>,
    /// Of the input: written to it.
    pub cache_write_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    /// `hit`, `replay`… (the response cache, idempotency).
    pub cache: Option<String>,
}

/// A session's totals.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionRow {
    pub session: String,
    pub calls: i64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub cost_usd: f64,
}

impl Store {
    /// A session's calls (shadows left out), oldest first, at most `limit`.
    pub async fn session_turns(&self, session: &str, limit: i64) -> Result<Vec<Turn>, StoreError> {
        let rows = sqlx::query(
            "SELECT request_id, created_at_ms, feature, model, status, input_tokens, cached_tokens, \
             cache_write_tokens, output_tokens, cost_usd, cache FROM records \
             WHERE session_id = $1 AND shadow = 0 ORDER BY created_at_ms, request_id LIMIT $2",
        )
        .bind(session)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Turn {
                    request_id: r.try_get("request_id")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                    feature: r.try_get("feature")?,
                    model: r.try_get("model")?,
                    status: r.try_get("status")?,
                    input_tokens: r.try_get("input_tokens")?,
                    cached_tokens: r.try_get("cached_tokens")?,
                    cache_write_tokens: r.try_get("cache_write_tokens")?,
                    output_tokens: r.try_get("output_tokens")?,
                    cost_usd: r.try_get("cost_usd")?,
                    cache: r.try_get("cache")?,
                })
            })
            .collect()
    }

    /// Sessions with calls since `since_ms`, the most recent first, at most `limit`.
    pub async fn sessions(&self, since_ms: i64, limit: i64) -> Result<Vec<SessionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT session_id, CAST(COUNT(*) AS BIGINT) AS calls, MIN(created_at_ms) AS first_ms, \
             MAX(created_at_ms) AS last_ms, CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input, \
             CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS cached, \
             CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost FROM records \
             WHERE session_id IS NOT NULL AND created_at_ms >= $1 AND shadow = 0 \
             GROUP BY session_id ORDER BY last_ms DESC LIMIT $2",
        )
        .bind(since_ms)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SessionRow {
                    session: r.try_get("session_id")?,
                    calls: r.try_get("calls")?,
                    first_ms: r.try_get("first_ms")?,
                    last_ms: r.try_get("last_ms")?,
                    input_tokens: r.try_get("input")?,
                    cached_tokens: r.try_get("cached")?,
                    cost_usd: r.try_get("cost")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_parse_and_tags_are_checked() {
        assert_eq!(CostBy::parse("feature"), Ok(CostBy::Feature));
        assert_eq!(CostBy::parse("tag:team"), Ok(CostBy::Tag("team".into())));
        assert!(CostBy::parse("tag:").is_err());
        assert!(CostBy::parse("tag:x') OR 1=1 --").is_err());
        assert!(CostBy::parse("price").is_err());
    }
}
