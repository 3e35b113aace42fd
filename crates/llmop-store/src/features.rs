//! Registered feature versions: immutable, numbered per feature, one per content hash.

use crate::store::{now_ms, until_won, Store, StoreError};
use serde::Serialize;
use sqlx::Row;

/// One registered version of a feature. `spec` is the feature's canonical JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureVersion {
    pub feature: String,
    pub version: i64,
    pub content_hash: String,
    pub spec: serde_json::Value,
    pub created_at_ms: i64,
    pub created_by: Option<String>,
}

/// What `push_feature_version` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pushed {
    pub version: FeatureVersion,
    /// `false`: identical content was already registered as this version.
    pub created: bool,
}

fn read(row: &sqlx::any::AnyRow) -> Result<FeatureVersion, StoreError> {
    let feature: String = row.try_get("feature")?;
    let spec: String = row.try_get("spec")?;
    Ok(FeatureVersion {
        spec: serde_json::from_str(&spec)
            .map_err(|e| StoreError::Corrupt(feature.clone(), format!("spec: {e}")))?,
        feature,
        version: row.try_get("version")?,
        content_hash: row.try_get("content_hash")?,
        created_at_ms: row.try_get("created_at_ms")?,
        created_by: row.try_get("created_by")?,
    })
}

const COLS: &str = "feature, version, content_hash, spec, created_at_ms, created_by";

impl Store {
    /// Registers `spec` (canonical JSON) as the next version of `feature`, or returns the
    /// version that already has this content hash.
    ///
    /// The number is taken by one statement that reads the feature's highest version and
    /// inserts the next, doing nothing on a conflict. Two pushers (or replicas) racing for
    /// one number cannot both take it: the loser inserts nothing and looks again. Each
    /// round of a race has a winner, so a loser retries after a short random pause, up to
    /// `RACE_ATTEMPTS` times; a database error other than the conflict returns at once.
    pub async fn push_feature_version(
        &self,
        feature: &str,
        content_hash: &str,
        spec: &serde_json::Value,
        created_by: Option<&str>,
    ) -> Result<Pushed, StoreError> {
        let spec_text = &spec.to_string();
        until_won(&format!("feature {feature}"), || async move {
            if let Some(v) = self.feature_version_by_hash(feature, content_hash).await? {
                return Ok(Some(Pushed {
                    version: v,
                    created: false,
                }));
            }
            let at = now_ms();
            // SQLite needs the SELECT's WHERE clause before ON CONFLICT to parse it as an
            // upsert; both databases accept this form.
            let row = sqlx::query(
                "INSERT INTO feature_versions (feature, version, content_hash, spec, created_at_ms, created_by) \
                 SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5 FROM feature_versions WHERE feature = $1 \
                 ON CONFLICT DO NOTHING RETURNING version",
            )
            .bind(feature.to_string())
            .bind(content_hash.to_string())
            .bind(spec_text.clone())
            .bind(at)
            .bind(created_by.map(str::to_string))
            .fetch_optional(self.pool())
            .await?;
            // None: someone else took this number (or this content) first.
            row.map(|row| {
                Ok(Pushed {
                    version: FeatureVersion {
                        feature: feature.to_string(),
                        version: row.try_get("version")?,
                        content_hash: content_hash.to_string(),
                        spec: spec.clone(),
                        created_at_ms: at,
                        created_by: created_by.map(str::to_string),
                    },
                    created: true,
                })
            })
            .transpose()
        })
        .await
    }

    async fn feature_version_by_hash(
        &self,
        feature: &str,
        hash: &str,
    ) -> Result<Option<FeatureVersion>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM feature_versions WHERE feature = $1 AND content_hash = $2"
        ))
        .bind(feature.to_string())
        .bind(hash.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(read).transpose()
    }

    pub async fn feature_version(
        &self,
        feature: &str,
        version: i64,
    ) -> Result<Option<FeatureVersion>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM feature_versions WHERE feature = $1 AND version = $2"
        ))
        .bind(feature.to_string())
        .bind(version)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(read).transpose()
    }

    /// Every version of a feature, oldest first.
    pub async fn feature_versions(&self, feature: &str) -> Result<Vec<FeatureVersion>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM feature_versions WHERE feature = $1 ORDER BY version"
        ))
        .bind(feature.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(read).collect()
    }
}

/// One side (primary or shadow) of a shadow comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowSide {
    pub version: Option<i64>,
    /// Calls that answered (status below 400).
    pub succeeded: i64,
    /// Calls whose output went through a parser, and how many of those parsed.
    pub parsed_attempts: i64,
    pub parsed: i64,
    pub mean_latency_ms: Option<f64>,
    /// `None` when no call of this side has a known cost.
    pub mean_cost_usd: Option<f64>,
}

/// Primary vs shadow for one pair of versions over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowReport {
    pub pairs: i64,
    pub primary: ShadowSide,
    pub shadow: ShadowSide,
    /// Pairs whose output texts are identical.
    pub identical: i64,
}

fn side(row: &sqlx::any::AnyRow, p: &str) -> Result<ShadowSide, StoreError> {
    Ok(ShadowSide {
        version: row.try_get(format!("{p}_version").as_str())?,
        succeeded: row.try_get(format!("{p}_ok").as_str())?,
        parsed_attempts: row.try_get(format!("{p}_parse_n").as_str())?,
        parsed: row.try_get(format!("{p}_parsed").as_str())?,
        mean_latency_ms: row.try_get(format!("{p}_latency").as_str())?,
        mean_cost_usd: row.try_get(format!("{p}_cost").as_str())?,
    })
}

impl Store {
    /// Shadow calls of `feature` since `since_ms` (optionally in one environment), each
    /// joined with the primary call it copied, grouped by (primary, shadow) version.
    /// Request ids of shadow calls and their primaries, newest first: `(primary, shadow)`.
    pub async fn shadow_pairs(
        &self,
        feature: &str,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.shadow_of AS p, s.request_id AS s FROM records s \
             WHERE s.shadow = 1 AND s.feature = $1 AND s.created_at_ms >= $2 AND s.status = 200 AND s.shadow_of IS NOT NULL \
             ORDER BY s.created_at_ms DESC LIMIT $3",
        )
        .bind(feature.to_string())
        .bind(since_ms)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("p")?, r.try_get("s")?)))
            .collect()
    }

    pub async fn shadow_report(
        &self,
        feature: &str,
        since_ms: i64,
        env: Option<&str>,
    ) -> Result<Vec<ShadowReport>, StoreError> {
        // Casts keep every aggregate a type both backends decode through `Any`
        // (PostgreSQL would otherwise answer NUMERIC for some).
        let per_side = |p: &str| {
            format!(
                "CAST(SUM(CASE WHEN {p}.status < 400 THEN 1 ELSE 0 END) AS BIGINT) AS {p}_ok, \
                 CAST(SUM(CASE WHEN {p}.parse_status IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) AS {p}_parse_n, \
                 CAST(SUM(CASE WHEN {p}.parse_status IN ('ok', 'repaired', 'next_target') THEN 1 ELSE 0 END) AS BIGINT) AS {p}_parsed, \
                 CAST(AVG({p}.latency_ms) AS DOUBLE PRECISION) AS {p}_latency, \
                 CAST(AVG({p}.cost_usd) AS DOUBLE PRECISION) AS {p}_cost"
            )
        };
        let sql = format!(
            "SELECT p.feature_version AS p_version, s.feature_version AS s_version, \
             CAST(COUNT(*) AS BIGINT) AS pairs, {}, {}, \
             CAST(SUM(CASE WHEN p.output_text = s.output_text THEN 1 ELSE 0 END) AS BIGINT) AS identical \
             FROM records s JOIN records p ON p.request_id = s.shadow_of \
             WHERE s.shadow = 1 AND s.feature = $1 AND s.created_at_ms >= $2 {} \
             GROUP BY p.feature_version, s.feature_version \
             ORDER BY p.feature_version, s.feature_version",
            per_side("p"),
            per_side("s"),
            if env.is_some() { "AND s.env = $3" } else { "" }
        );
        let mut q = sqlx::query(&sql).bind(feature.to_string()).bind(since_ms);
        if let Some(env) = env {
            q = q.bind(env.to_string());
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                Ok(ShadowReport {
                    pairs: row.try_get("pairs")?,
                    primary: side(row, "p")?,
                    shadow: side(row, "s")?,
                    identical: row.try_get("identical")?,
                })
            })
            .collect()
    }
}
