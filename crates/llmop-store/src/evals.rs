//! Evaluation's storage: dataset versions, runs and their per-item results, the answer
//! cache, compares (the deploy gate's evidence) and judge calibrations. Values the eval
//! crate owns (items, results, reports) are stored as JSON text; the columns are what
//! is looked up by.

use crate::store::{now_ms, until_won, BindF64, Store, StoreError};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use std::collections::HashMap;

/// One version of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetVersion {
    pub name: String,
    pub version: i64,
    pub content_hash: String,
    /// The items, a JSON array.
    pub items: Value,
    pub item_count: i64,
    pub source: Option<String>,
    pub created_at_ms: i64,
    pub created_by: Option<String>,
}

/// A stored eval run (its results are read with [`Store::eval_results`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRun {
    pub id: String,
    pub feature: String,
    pub version: i64,
    pub content_hash: String,
    pub dataset: String,
    pub dataset_version: i64,
    pub dataset_hash: String,
    pub evaluators_hash: String,
    pub repeats: i64,
    /// `running`, `complete`, `partial` (stopped at its cost cap), `failed`.
    pub status: String,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub cost_usd: Option<f64>,
    pub summary: Option<Value>,
    pub created_by: Option<String>,
}

/// A stored compare.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalCompare {
    pub id: String,
    pub feature: String,
    pub baseline_version: i64,
    pub baseline_hash: String,
    pub candidate_version: i64,
    pub candidate_hash: String,
    pub dataset: String,
    pub dataset_hash: String,
    pub evals_hash: String,
    pub verdict: String,
    pub report: Value,
    pub created_at_ms: i64,
    pub created_by: Option<String>,
}

/// A judge version's agreement with human labels on one dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub judge: String,
    pub version: i64,
    pub content_hash: String,
    pub dataset: String,
    pub dataset_hash: String,
    pub kappa: Option<f64>,
    pub report: Value,
    pub created_at_ms: i64,
}

/// A JSON text column, parsed; a bad one is `Corrupt`, naming `what` and the column.
pub(crate) fn json_col(
    row: &sqlx::any::AnyRow,
    col: &str,
    what: &str,
) -> Result<Value, StoreError> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(what.to_string(), format!("{col}: {e}")))
}

fn opt_json(row: &sqlx::any::AnyRow, col: &str, what: &str) -> Result<Option<Value>, StoreError> {
    let text: Option<String> = row.try_get(col)?;
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| StoreError::Corrupt(what.to_string(), format!("{col}: {e}")))
    })
    .transpose()
}

const DATASET_COLS: &str =
    "name, version, content_hash, items, item_count, source, created_at_ms, created_by";

fn read_dataset(row: &sqlx::any::AnyRow, with_items: bool) -> Result<DatasetVersion, StoreError> {
    let name: String = row.try_get("name")?;
    Ok(DatasetVersion {
        items: if with_items {
            json_col(row, "items", &name)?
        } else {
            Value::Null
        },
        version: row.try_get("version")?,
        content_hash: row.try_get("content_hash")?,
        item_count: row.try_get("item_count")?,
        source: row.try_get("source")?,
        created_at_ms: row.try_get("created_at_ms")?,
        created_by: row.try_get("created_by")?,
        name,
    })
}

const RUN_COLS: &str = "id, feature, version, content_hash, dataset, dataset_version, dataset_hash, evaluators_hash, repeats, status, started_at_ms, finished_at_ms, cost_usd, summary, created_by";

fn read_run(row: &sqlx::any::AnyRow) -> Result<EvalRun, StoreError> {
    let id: String = row.try_get("id")?;
    Ok(EvalRun {
        summary: opt_json(row, "summary", &id)?,
        feature: row.try_get("feature")?,
        version: row.try_get("version")?,
        content_hash: row.try_get("content_hash")?,
        dataset: row.try_get("dataset")?,
        dataset_version: row.try_get("dataset_version")?,
        dataset_hash: row.try_get("dataset_hash")?,
        evaluators_hash: row.try_get("evaluators_hash")?,
        repeats: row.try_get("repeats")?,
        status: row.try_get("status")?,
        started_at_ms: row.try_get("started_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
        cost_usd: row.try_get("cost_usd")?,
        created_by: row.try_get("created_by")?,
        id,
    })
}

const COMPARE_COLS: &str = "id, feature, baseline_version, baseline_hash, candidate_version, candidate_hash, dataset, dataset_hash, evals_hash, verdict, report, created_at_ms, created_by";

fn read_compare(row: &sqlx::any::AnyRow) -> Result<EvalCompare, StoreError> {
    let id: String = row.try_get("id")?;
    Ok(EvalCompare {
        report: json_col(row, "report", &id)?,
        feature: row.try_get("feature")?,
        baseline_version: row.try_get("baseline_version")?,
        baseline_hash: row.try_get("baseline_hash")?,
        candidate_version: row.try_get("candidate_version")?,
        candidate_hash: row.try_get("candidate_hash")?,
        dataset: row.try_get("dataset")?,
        dataset_hash: row.try_get("dataset_hash")?,
        evals_hash: row.try_get("evals_hash")?,
        verdict: row.try_get("verdict")?,
        created_at_ms: row.try_get("created_at_ms")?,
        created_by: row.try_get("created_by")?,
        id,
    })
}

impl Store {
    /// Registers `items` as the next version of dataset `name`, or returns the version
    /// that already has this content hash (`false`: nothing new). Racing pushes of
    /// different items get distinct numbers (the primary key decides; the loser looks
    /// again); racing pushes of the same items get one version.
    pub async fn push_dataset_version(
        &self,
        name: &str,
        content_hash: &str,
        items: &Value,
        source: Option<&str>,
        created_by: Option<&str>,
    ) -> Result<(DatasetVersion, bool), StoreError> {
        let count = items.as_array().map_or(0, Vec::len) as i64;
        let text = items.to_string();
        // One statement reads the highest version and inserts the next unless this
        // content is stored already, doing nothing on a conflict; a loser of the race
        // looks again (see `push_feature_version`). The content check is in the same
        // statement because dataset versions have no unique index on their hash: two
        // pushes of the same items either see each other's row or race for one number.
        let text = &text;
        until_won(&format!("dataset {name}"), || async move {
            let existing = sqlx::query(&format!(
                "SELECT {DATASET_COLS} FROM dataset_versions WHERE name = $1 AND content_hash = $2"
            ))
            .bind(name.to_string())
            .bind(content_hash.to_string())
            .fetch_optional(self.pool())
            .await?;
            if let Some(row) = existing {
                return Ok(Some((read_dataset(&row, true)?, false)));
            }
            let at = now_ms();
            let row = sqlx::query(&format!(
                "INSERT INTO dataset_versions ({DATASET_COLS}) \
                 SELECT * FROM (SELECT $1 AS name, COALESCE(MAX(version), 0) + 1 AS version, $2 AS content_hash, \
                 $3 AS items, $4 AS item_count, $5 AS source, $6 AS created_at_ms, $7 AS created_by \
                 FROM dataset_versions WHERE name = $1) AS next \
                 WHERE NOT EXISTS (SELECT 1 FROM dataset_versions WHERE name = $1 AND content_hash = $2) \
                 ON CONFLICT DO NOTHING RETURNING version"
            ))
            .bind(name.to_string())
            .bind(content_hash.to_string())
            .bind(text.clone())
            .bind(count)
            .bind(source.map(str::to_string))
            .bind(at)
            .bind(created_by.map(str::to_string))
            .fetch_optional(self.pool())
            .await?;
            row.map(|row| {
                Ok((
                    DatasetVersion {
                        name: name.to_string(),
                        version: row.try_get("version")?,
                        content_hash: content_hash.to_string(),
                        items: items.clone(),
                        item_count: count,
                        source: source.map(str::to_string),
                        created_at_ms: at,
                        created_by: created_by.map(str::to_string),
                    },
                    true,
                ))
            })
            .transpose()
        })
        .await
    }

    /// A version of a dataset (`None`: the latest), with its items.
    pub async fn dataset_version(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<DatasetVersion>, StoreError> {
        let row = match version {
            Some(v) => {
                sqlx::query(&format!(
                    "SELECT {DATASET_COLS} FROM dataset_versions WHERE name = $1 AND version = $2"
                ))
                .bind(name.to_string())
                .bind(v)
                .fetch_optional(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {DATASET_COLS} FROM dataset_versions WHERE name = $1 ORDER BY version DESC LIMIT 1"
                ))
                .bind(name.to_string())
                .fetch_optional(self.pool())
                .await?
            }
        };
        row.as_ref().map(|r| read_dataset(r, true)).transpose()
    }

    /// Every version of every dataset (`name`: of one), without their items, newest
    /// version first per dataset.
    pub async fn dataset_versions(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<DatasetVersion>, StoreError> {
        let cols = "name, version, content_hash, item_count, source, created_at_ms, created_by";
        let rows = match name {
            Some(n) => {
                sqlx::query(&format!(
                    "SELECT {cols} FROM dataset_versions WHERE name = $1 ORDER BY version DESC"
                ))
                .bind(n.to_string())
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {cols} FROM dataset_versions ORDER BY name, version DESC"
                ))
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(|r| read_dataset(r, false)).collect()
    }

    /// Cached values by key (absent keys are missing from the map).
    pub async fn eval_cache_get(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, Value>, StoreError> {
        let mut out = HashMap::new();
        for chunk in keys.chunks(200) {
            let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT key, value FROM eval_cache WHERE key IN ({})",
                params.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for k in chunk {
                q = q.bind(k.clone());
            }
            for row in q.fetch_all(self.pool()).await? {
                let key: String = row.try_get("key")?;
                let v = json_col(&row, "value", &key)?;
                out.insert(key, v);
            }
        }
        Ok(out)
    }

    /// Keeps values in the cache; a key already there keeps its first value.
    pub async fn eval_cache_put(&self, entries: &[(String, Value)]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let at = now_ms();
        let mut tx = self.pool().begin().await?;
        for (k, v) in entries {
            sqlx::query(
                "INSERT INTO eval_cache (key, value, created_at_ms) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
            )
            .bind(k.clone())
            .bind(v.to_string())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn insert_eval_run(&self, r: &EvalRun) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO eval_runs ({RUN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ))
        .bind(r.id.clone())
        .bind(r.feature.clone())
        .bind(r.version)
        .bind(r.content_hash.clone())
        .bind(r.dataset.clone())
        .bind(r.dataset_version)
        .bind(r.dataset_hash.clone())
        .bind(r.evaluators_hash.clone())
        .bind(r.repeats)
        .bind(r.status.clone())
        .bind(r.started_at_ms)
        .bind(r.finished_at_ms)
        .bind(r.cost_usd.unwrap_or(0.0))
        .bind(r.summary.as_ref().map(Value::to_string))
        .bind(r.created_by.clone())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Ends a run: its status, cost and summary.
    pub async fn finish_eval_run(
        &self,
        id: &str,
        status: &str,
        cost_usd: f64,
        summary: &Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE eval_runs SET status = $1, finished_at_ms = $2, cost_usd = $3, summary = $4 WHERE id = $5",
        )
        .bind(status.to_string())
        .bind(now_ms())
        .bind(cost_usd)
        .bind(summary.to_string())
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Per-item results of a run: `(item id, repeat index, result)`.
    pub async fn insert_eval_results(
        &self,
        run_id: &str,
        results: &[(String, i64, Value)],
    ) -> Result<(), StoreError> {
        if results.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for (item, repeat, result) in results {
            sqlx::query(
                "INSERT INTO eval_results (run_id, item_id, repeat_idx, result) VALUES ($1, $2, $3, $4) ON CONFLICT (run_id, item_id, repeat_idx) DO UPDATE SET result = excluded.result",
            )
            .bind(run_id.to_string())
            .bind(item.clone())
            .bind(*repeat)
            .bind(result.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn eval_results(
        &self,
        run_id: &str,
    ) -> Result<Vec<(String, i64, Value)>, StoreError> {
        let rows = sqlx::query(
            "SELECT item_id, repeat_idx, result FROM eval_results WHERE run_id = $1 ORDER BY item_id, repeat_idx",
        )
        .bind(run_id.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("item_id")?,
                    r.try_get("repeat_idx")?,
                    json_col(r, "result", run_id)?,
                ))
            })
            .collect()
    }

    pub async fn eval_run(&self, id: &str) -> Result<Option<EvalRun>, StoreError> {
        let row = sqlx::query(&format!("SELECT {RUN_COLS} FROM eval_runs WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(read_run).transpose()
    }

    /// The newest complete run of this exact version on this dataset version under these
    /// evaluators with this many repeats: what a compare may reuse.
    pub async fn reusable_eval_run(
        &self,
        feature: &str,
        content_hash: &str,
        dataset_hash: &str,
        evaluators_hash: &str,
        repeats: i64,
    ) -> Result<Option<EvalRun>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLS} FROM eval_runs WHERE feature = $1 AND content_hash = $2 AND dataset_hash = $3 AND evaluators_hash = $4 AND repeats = $5 AND status = 'complete' ORDER BY started_at_ms DESC LIMIT 1"
        ))
        .bind(feature.to_string())
        .bind(content_hash.to_string())
        .bind(dataset_hash.to_string())
        .bind(evaluators_hash.to_string())
        .bind(repeats)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(read_run).transpose()
    }

    /// Runs of a feature, newest first.
    pub async fn eval_runs(&self, feature: &str, limit: u32) -> Result<Vec<EvalRun>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLS} FROM eval_runs WHERE feature = $1 ORDER BY started_at_ms DESC LIMIT $2"
        ))
        .bind(feature.to_string())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(read_run).collect()
    }

    pub async fn insert_eval_compare(&self, c: &EvalCompare) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO eval_compares ({COMPARE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(c.id.clone())
        .bind(c.feature.clone())
        .bind(c.baseline_version)
        .bind(c.baseline_hash.clone())
        .bind(c.candidate_version)
        .bind(c.candidate_hash.clone())
        .bind(c.dataset.clone())
        .bind(c.dataset_hash.clone())
        .bind(c.evals_hash.clone())
        .bind(c.verdict.clone())
        .bind(c.report.to_string())
        .bind(c.created_at_ms)
        .bind(c.created_by.clone())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The newest compare of this candidate against this baseline (by content hash) on
    /// this dataset version under this eval file.
    pub async fn latest_eval_compare(
        &self,
        feature: &str,
        candidate_hash: &str,
        baseline_hash: &str,
        dataset_hash: &str,
        evals_hash: &str,
    ) -> Result<Option<EvalCompare>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COMPARE_COLS} FROM eval_compares WHERE feature = $1 AND candidate_hash = $2 AND baseline_hash = $3 AND dataset_hash = $4 AND evals_hash = $5 ORDER BY created_at_ms DESC LIMIT 1"
        ))
        .bind(feature.to_string())
        .bind(candidate_hash.to_string())
        .bind(baseline_hash.to_string())
        .bind(dataset_hash.to_string())
        .bind(evals_hash.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(read_compare).transpose()
    }

    /// Keeps a judge's calibration (a new one on the same dataset replaces the old).
    pub async fn put_calibration(&self, c: &Calibration) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO judge_calibrations (judge, version, content_hash, dataset, dataset_hash, kappa, report, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (judge, version, dataset_hash) DO UPDATE SET kappa = excluded.kappa, report = excluded.report, created_at_ms = excluded.created_at_ms, content_hash = excluded.content_hash, dataset = excluded.dataset",
        )
        .bind(c.judge.clone())
        .bind(c.version)
        .bind(c.content_hash.clone())
        .bind(c.dataset.clone())
        .bind(c.dataset_hash.clone())
        .bind_f64(c.kappa.filter(|k| k.is_finite()))
        .bind(c.report.to_string())
        .bind(c.created_at_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The newest calibration of a judge version, if any.
    pub async fn calibration(
        &self,
        judge: &str,
        version: i64,
    ) -> Result<Option<Calibration>, StoreError> {
        let row = sqlx::query(
            "SELECT judge, version, content_hash, dataset, dataset_hash, kappa, report, created_at_ms FROM judge_calibrations WHERE judge = $1 AND version = $2 ORDER BY created_at_ms DESC LIMIT 1",
        )
        .bind(judge.to_string())
        .bind(version)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            let kappa: Option<f64> = r.try_get("kappa")?;
            Ok(Calibration {
                report: json_col(&r, "report", judge)?,
                judge: r.try_get("judge")?,
                version: r.try_get("version")?,
                content_hash: r.try_get("content_hash")?,
                dataset: r.try_get("dataset")?,
                dataset_hash: r.try_get("dataset_hash")?,
                kappa,
                created_at_ms: r.try_get("created_at_ms")?,
            })
        })
        .transpose()
    }
}
