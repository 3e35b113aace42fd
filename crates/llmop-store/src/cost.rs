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
