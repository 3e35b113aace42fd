//! Scores of recorded calls: online evaluators' (source `online`) and people's feedback
//! (source `human`), one row per (request, evaluator, source); and the durable queue of
//! online evaluation work (`online_queue`), filled with the records it points at (see
//! `Store::insert_batch`) and drained by the gateway's online worker.

use crate::evals::json_col;
use crate::record::Feedback;
use crate::store::{now_ms, BindF64, Store, StoreError};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// One score of one call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredScore {
    pub request_id: String,
    pub evaluator: String,
    /// `online` (an online evaluator), `human` (feedback).
    pub source: String,
    pub feature: Option<String>,
    pub feature_version: Option<i64>,
    pub env: Option<String>,
    /// `provider/model` that answered the call.
    pub model: Option<String>,
    pub value: Option<f64>,
    pub pass: Option<bool>,
    pub label: Option<String>,
    pub comment: Option<String>,
    pub detail: Option<String>,
    /// `judge-name v3` for judge scores.
    pub judge: Option<String>,
    pub error: Option<String>,
    /// What producing this score cost (a judge's call).
    pub cost_usd: Option<f64>,
    pub created_at_ms: i64,
}

/// A score a deterministic online check gave a call where its record was built, kept in
/// the record's row (`records.online_scores`, a compact JSON array) and read through
/// the `all_scores` view like any other `online` score of the call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InlineScore {
    #[serde(rename = "e")]
    pub evaluator: String,
    /// `None` when it is the pass itself (1 or 0): read as the pass.
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// 1 or 0 in the JSON (both databases read it as the `pass` integer column).
    #[serde(
        rename = "p",
        default,
        skip_serializing_if = "Option::is_none",
        with = "pass01"
    )]
    pub pass: Option<bool>,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl InlineScore {
    /// A score as kept in the row: a value that only repeats the pass (1 or 0), and the
    /// detail of a check that passed, are left out (every call of a feature checked on
    /// every request carries these bytes).
    pub fn compact(
        evaluator: String,
        value: Option<f64>,
        pass: Option<bool>,
        detail: Option<String>,
        error: Option<String>,
    ) -> InlineScore {
        let implied = pass.map(|p| if p { 1.0 } else { 0.0 });
        InlineScore {
            evaluator,
            value: value.filter(|v| Some(*v) != implied),
            pass,
            detail: detail.filter(|_| pass != Some(true)),
            error,
        }
    }
}

mod pass01 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<bool>, s: S) -> Result<S::Ok, S::Error> {
        v.map(u8::from).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        Ok(Option::<u8>::deserialize(d)?.map(|x| x != 0))
    }
}

/// Queued online evaluation of one call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueuedEval {
    pub request_id: String,
    pub feature: String,
    pub evaluators: Vec<String>,
    pub enqueued_at_ms: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// Aggregated scores (`llmop scores`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreGroup {
    pub feature: Option<String>,
    pub feature_version: Option<i64>,
    pub evaluator: String,
    pub source: String,
    /// Start of the UTC day (ms) when grouped by day.
    pub day_ms: Option<i64>,
    pub count: i64,
    pub errors: i64,
    pub mean: Option<f64>,
    pub pass_rate: Option<f64>,
}

/// What `llmop scores` and `GET /admin/scores` filter on.
#[derive(Debug, Clone, Default)]
pub struct ScoreFilter {
    pub feature: Option<String>,
    pub evaluator: Option<String>,
    pub source: Option<String>,
    pub since_ms: Option<i64>,
    pub by_day: bool,
}

const SCORE_COLS: &str = "request_id, evaluator, source, feature, feature_version, env, model, value, pass, label, comment, detail, judge, error, cost_usd, created_at_ms";

impl Store {
    /// Inserts or replaces scores (a re-run of the same evaluator on the same call keeps
    /// the latest).
    pub async fn put_scores(&self, scores: &[StoredScore]) -> Result<(), StoreError> {
        if scores.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for s in scores {
            upsert(s).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Feedback on a call as a `human` score named `feedback`: its value the feedback's
    /// score, passing at 0.5 and above.
    pub(crate) async fn put_feedback_score(
        &self,
        request_id: &str,
        fb: &Feedback,
    ) -> Result<(), StoreError> {
        let row = sqlx::query(
            "SELECT feature, feature_version, env, provider, model FROM records WHERE request_id = $1",
        )
        .bind(request_id.to_string())
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(()) };
        let provider: Option<String> = row.try_get("provider")?;
        let model: Option<String> = row.try_get("model")?;
        let s = StoredScore {
            request_id: request_id.to_string(),
            evaluator: "feedback".into(),
            source: "human".into(),
            feature: row.try_get("feature")?,
            feature_version: row.try_get("feature_version")?,
            env: row.try_get("env")?,
            model: match (provider, model) {
                (Some(p), Some(m)) => Some(format!("{p}/{m}")),
                (_, m) => m,
            },
            value: fb.score,
            pass: fb.score.map(|v| v >= 0.5),
            label: fb.label.clone(),
            comment: fb.comment.clone(),
            created_at_ms: fb.at_ms,
            ..StoredScore::default()
        };
        self.put_scores(&[s]).await
    }

    /// Scores of one call.
    pub async fn scores_of(&self, request_id: &str) -> Result<Vec<StoredScore>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SCORE_COLS} FROM all_scores WHERE request_id = $1 ORDER BY evaluator, source"
        ))
        .bind(request_id.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(read_score).collect()
    }

    /// Scores grouped by feature, version, evaluator, source (and UTC day).
    pub async fn score_groups(&self, f: &ScoreFilter) -> Result<Vec<ScoreGroup>, StoreError> {
        let day = if f.by_day {
            "(created_at_ms / 86400000) * 86400000"
        } else {
            "CAST(NULL AS BIGINT)"
        };
        let sql = format!(
            "SELECT feature, feature_version, evaluator, source, {day} AS day_ms, COUNT(*) AS n, \
             SUM(CASE WHEN error IS NULL THEN 0 ELSE 1 END) AS errors, \
             AVG(value) AS mean, AVG(CAST(pass AS DOUBLE PRECISION)) AS pass_rate \
             FROM all_scores WHERE ($1 IS NULL OR feature = $1) AND ($2 IS NULL OR evaluator = $2) \
             AND ($3 IS NULL OR source = $3) AND created_at_ms >= $4 \
             GROUP BY feature, feature_version, evaluator, source, day_ms \
             ORDER BY feature, feature_version, evaluator, source, day_ms"
        );
        let rows = sqlx::query(&sql)
            .bind(f.feature.clone())
            .bind(f.evaluator.clone())
            .bind(f.source.clone())
            .bind(f.since_ms.unwrap_or(0))
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ScoreGroup {
                    feature: r.try_get("feature")?,
                    feature_version: r.try_get("feature_version")?,
                    evaluator: r.try_get("evaluator")?,
                    source: r.try_get("source")?,
                    day_ms: r.try_get("day_ms")?,
                    count: r.try_get("n")?,
                    errors: r.try_get("errors")?,
                    mean: r.try_get("mean")?,
                    pass_rate: r.try_get("pass_rate")?,
                })
            })
            .collect()
    }

    /// Queued online work due by `now_ms`, oldest first.
    pub async fn due_online(&self, now: i64, limit: i64) -> Result<Vec<QueuedEval>, StoreError> {
        let rows = sqlx::query(
            "SELECT request_id, feature, evaluators, enqueued_at_ms, attempts, last_error FROM online_queue \
             WHERE next_at_ms <= $1 ORDER BY next_at_ms, request_id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("request_id")?;
                Ok(QueuedEval {
                    evaluators: serde_json::from_value(json_col(r, "evaluators", &id)?)
                        .map_err(|e| StoreError::Corrupt(id.clone(), format!("evaluators: {e}")))?,
                    feature: r.try_get("feature")?,
                    enqueued_at_ms: r.try_get("enqueued_at_ms")?,
                    attempts: r.try_get("attempts")?,
                    last_error: r.try_get("last_error")?,
                    request_id: id,
                })
            })
            .collect()
    }

    /// The work of one call is done: its scores stored and its queue entry gone, in one
    /// transaction (a crash between them redoes the work; scores are upserts).
    pub async fn finish_online(
        &self,
        request_id: &str,
        scores: &[StoredScore],
    ) -> Result<(), StoreError> {
        self.finish_online_batch(&[(request_id.to_string(), scores.to_vec())])
            .await
    }

    /// The work of several calls is done: their scores stored and their queue entries
    /// gone, in one transaction.
    pub async fn finish_online_batch(
        &self,
        done: &[(String, Vec<StoredScore>)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for (request_id, scores) in done {
            for s in scores {
                upsert(s).execute(&mut *tx).await?;
            }
            sqlx::query("DELETE FROM online_queue WHERE request_id = $1")
                .bind(request_id.clone())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The work of one call failed for now: tried again at `next_at_ms`.
    pub async fn retry_online(
        &self,
        request_id: &str,
        next_at_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE online_queue SET attempts = attempts + 1, next_at_ms = $1, last_error = $2 WHERE request_id = $3",
        )
        .bind(next_at_ms)
        .bind(error.to_string())
        .bind(request_id.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Calls waiting for online evaluation.
    pub async fn online_queue_len(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM online_queue")
            .fetch_one(self.pool())
            .await?
            .try_get("n")?)
    }

    /// What online judges of `feature` cost since `since_ms` (their daily cap).
    pub async fn online_judge_spend(
        &self,
        feature: &str,
        since_ms: i64,
    ) -> Result<f64, StoreError> {
        let v: Option<f64> = sqlx::query(
            "SELECT SUM(cost_usd) AS s FROM scores WHERE feature = $1 AND source = 'online' AND judge IS NOT NULL AND created_at_ms >= $2",
        )
        .bind(feature.to_string())
        .bind(since_ms)
        .fetch_one(self.pool())
        .await?
        .try_get("s")?;
        Ok(v.unwrap_or(0.0))
    }
}

fn upsert(s: &StoredScore) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    let q = sqlx::query(
        "INSERT INTO scores (request_id, evaluator, source, feature, feature_version, env, model, value, pass, label, comment, detail, judge, error, cost_usd, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (request_id, evaluator, source) DO UPDATE SET value = excluded.value, pass = excluded.pass, \
         label = excluded.label, comment = excluded.comment, detail = excluded.detail, judge = excluded.judge, \
         error = excluded.error, cost_usd = excluded.cost_usd, created_at_ms = excluded.created_at_ms",
    );
    bind_score(q, s)
}

/// Binds a score's 16 columns, in `SCORE_COLS` order.
pub(crate) fn bind_score<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    s: &StoredScore,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(s.request_id.clone())
        .bind(s.evaluator.clone())
        .bind(s.source.clone())
        .bind(s.feature.clone())
        .bind(s.feature_version)
        .bind(s.env.clone())
        .bind(s.model.clone())
        .bind_f64(s.value)
        .bind(s.pass.map(i64::from))
        .bind(s.label.clone())
        .bind(s.comment.clone())
        .bind(s.detail.clone())
        .bind(s.judge.clone())
        .bind(s.error.clone())
        .bind_f64(s.cost_usd)
        .bind(if s.created_at_ms > 0 {
            s.created_at_ms
        } else {
            now_ms()
        })
}

fn read_score(r: &sqlx::any::AnyRow) -> Result<StoredScore, StoreError> {
    let pass: Option<i64> = r.try_get("pass")?;
    Ok(StoredScore {
        request_id: r.try_get("request_id")?,
        evaluator: r.try_get("evaluator")?,
        source: r.try_get("source")?,
        feature: r.try_get("feature")?,
        feature_version: r.try_get("feature_version")?,
        env: r.try_get("env")?,
        model: r.try_get("model")?,
        value: r.try_get("value")?,
        pass: pass.map(|p| p != 0),
        label: r.try_get("label")?,
        comment: r.try_get("comment")?,
        detail: r.try_get("detail")?,
        judge: r.try_get("judge")?,
        error: r.try_get("error")?,
        cost_usd: r.try_get("cost_usd")?,
        created_at_ms: r.try_get("created_at_ms")?,
    })
}

/// One online score, for drift windows.
#[derive(Debug, Clone, PartialEq)]
pub struct ScorePoint {
    pub env: Option<String>,
    pub feature_version: i64,
    pub evaluator: String,
    pub model: String,
    pub value: f64,
    pub created_at_ms: i64,
}

/// A drift episode (open while `closed_at_ms` is `None`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftAlert {
    pub id: String,
    pub feature: String,
    pub feature_version: i64,
    pub evaluator: String,
    pub model: String,
    /// The baseline level the episode was opened against (it closes when the recent
    /// level is back within the margin of it).
    pub baseline: f64,
    pub evidence: serde_json::Value,
    pub opened_at_ms: i64,
    pub closed_at_ms: Option<i64>,
}

const DRIFT_COLS: &str = "id, feature, feature_version, evaluator, model, baseline, evidence, opened_at_ms, closed_at_ms";

impl Store {
    /// Online scores (with a value, without an error) of `feature` since `since_ms`.
    pub async fn score_points(
        &self,
        feature: &str,
        since_ms: i64,
    ) -> Result<Vec<ScorePoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT env, feature_version, evaluator, model, value, created_at_ms FROM all_scores \
             WHERE feature = $1 AND source = 'online' AND error IS NULL AND value IS NOT NULL AND created_at_ms >= $2",
        )
        .bind(feature.to_string())
        .bind(since_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let v: Option<i64> = r.try_get("feature_version")?;
                let m: Option<String> = r.try_get("model")?;
                Ok(ScorePoint {
                    env: r.try_get("env")?,
                    feature_version: v.unwrap_or(0),
                    evaluator: r.try_get("evaluator")?,
                    model: m.unwrap_or_default(),
                    value: r.try_get("value")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                })
            })
            .collect()
    }

    /// Opens a drift episode; `false` when one is already open for the same feature,
    /// version, evaluator and model (opened by this or another replica).
    pub async fn open_drift_alert(&self, a: &DriftAlert) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "INSERT INTO drift_alerts ({DRIFT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)"
        ))
        .bind(a.id.clone())
        .bind(a.feature.clone())
        .bind(a.feature_version)
        .bind(a.evaluator.clone())
        .bind(a.model.clone())
        .bind(a.baseline)
        .bind(a.evidence.to_string())
        .bind(a.opened_at_ms)
        .execute(self.pool())
        .await;
        match done {
            Ok(_) => Ok(true),
            Err(e) => {
                let open = self.open_drift_alerts(Some(&a.feature)).await?;
                let same = open.iter().any(|o| {
                    o.feature_version == a.feature_version
                        && o.evaluator == a.evaluator
                        && o.model == a.model
                });
                if same {
                    Ok(false)
                } else {
                    Err(StoreError::Db(e))
                }
            }
        }
    }

    pub async fn close_drift_alert(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE drift_alerts SET closed_at_ms = $1 WHERE id = $2 AND closed_at_ms IS NULL",
        )
        .bind(at_ms)
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Open drift episodes (of one feature, or all).
    pub async fn open_drift_alerts(
        &self,
        feature: Option<&str>,
    ) -> Result<Vec<DriftAlert>, StoreError> {
        self.drift_alerts(feature, true, 1000).await
    }

    /// Drift episodes, newest first; `open_only` leaves out closed ones.
    pub async fn drift_alerts(
        &self,
        feature: Option<&str>,
        open_only: bool,
        limit: i64,
    ) -> Result<Vec<DriftAlert>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DRIFT_COLS} FROM drift_alerts WHERE ($1 IS NULL OR feature = $1) \
             AND ($2 = 0 OR closed_at_ms IS NULL) ORDER BY opened_at_ms DESC LIMIT $3"
        ))
        .bind(feature.map(str::to_string))
        .bind(i64::from(open_only))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                Ok(DriftAlert {
                    evidence: json_col(r, "evidence", &id)?,
                    feature: r.try_get("feature")?,
                    feature_version: r.try_get("feature_version")?,
                    evaluator: r.try_get("evaluator")?,
                    model: r.try_get("model")?,
                    baseline: r.try_get("baseline")?,
                    opened_at_ms: r.try_get("opened_at_ms")?,
                    closed_at_ms: r.try_get("closed_at_ms")?,
                    id,
                })
            })
            .collect()
    }
}

/// A model identity a provider reported for a configured model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelSighting {
    /// `provider/model` as configured.
    pub model: String,
    /// The model the provider named in its answer (a dated version), or "".
    pub upstream_model: String,
    /// The provider's system fingerprint, or "".
    pub fingerprint: String,
}

impl Store {
    /// The distinct (configured model, reported model, fingerprint) of `feature`'s
    /// answered calls since `since_ms`.
    pub async fn model_sightings(
        &self,
        feature: &str,
        since_ms: i64,
    ) -> Result<Vec<ModelSighting>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT provider, model, upstream_model, system_fingerprint FROM records \
             WHERE feature = $1 AND created_at_ms >= $2 AND status = 200 AND provider IS NOT NULL",
        )
        .bind(feature.to_string())
        .bind(since_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let p: Option<String> = r.try_get("provider")?;
                let m: Option<String> = r.try_get("model")?;
                let u: Option<String> = r.try_get("upstream_model")?;
                let f: Option<String> = r.try_get("system_fingerprint")?;
                Ok(ModelSighting {
                    model: format!("{}/{}", p.unwrap_or_default(), m.unwrap_or_default()),
                    upstream_model: u.unwrap_or_default(),
                    fingerprint: f.unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Records a sighting. `Ok(Some(previous))`: it is new, and the configured model had
    /// been seen answering as something else before (a model change); `Ok(None)`: known,
    /// or the model's first sighting.
    pub async fn note_model_sighting(
        &self,
        s: &ModelSighting,
        at_ms: i64,
    ) -> Result<Option<Vec<ModelSighting>>, StoreError> {
        let known = sqlx::query(
            "SELECT upstream_model, fingerprint FROM model_fingerprints WHERE model = $1",
        )
        .bind(s.model.clone())
        .fetch_all(self.pool())
        .await?;
        let before: Vec<ModelSighting> = known
            .iter()
            .map(|r| {
                Ok(ModelSighting {
                    model: s.model.clone(),
                    upstream_model: r.try_get("upstream_model")?,
                    fingerprint: r.try_get("fingerprint")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        if before.contains(s) {
            return Ok(None);
        }
        let inserted = sqlx::query(
            "INSERT INTO model_fingerprints (model, upstream_model, fingerprint, first_seen_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (model, upstream_model, fingerprint) DO NOTHING",
        )
        .bind(s.model.clone())
        .bind(s.upstream_model.clone())
        .bind(s.fingerprint.clone())
        .bind(at_ms)
        .execute(self.pool())
        .await?
        .rows_affected();
        // Another replica noted it first: its event, not ours.
        if inserted == 0 || before.is_empty() {
            return Ok(None);
        }
        Ok(Some(before))
    }
}
