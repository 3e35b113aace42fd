//! The online evaluation worker: scores recorded production calls, off the request path.
//!
//! Which calls and which evaluators was decided when each record was built (the eval
//! files' `[online]` sections, `llmop_eval::online::Sampler`) and queued in the record's
//! own transaction (`online_queue`), so the work is exactly as durable as the record:
//! it survives a restart, and a call that was never recorded is never scored.
//! Deterministic checks never reach the queue: they score the answer where its record is
//! built (the record writer's task) and their scores are part of the record's row
//! (`records.online_scores`, read through the `all_scores` view). This task
//! drains the queue of the others (judges, commands): it reads the record, scores it with the feature's evaluators (judges
//! called in process through the conductor, `pipeline::internal`), and stores the scores
//! and removes the queue entry in one transaction. A judge whose provider fails is tried
//! again with exponential backoff (up to a day of attempts); it never blocks serving
//! (other calls are scored meanwhile, and serving never waits on this task). Each
//! feature's judges stop for the UTC day once their spend reaches `judge_daily_usd`.

use crate::pipeline::internal::InProcess;
use crate::state::AppState;
use futures::StreamExt;
use llmop_eval::canary::{self, CanarySpec};
use llmop_eval::dataset::Item;
use llmop_eval::drift::{self, DriftSpec};
use llmop_eval::evaluate::{Answer, Ctx, Evaluators};
use llmop_eval::spec::{EvalFile, Kind};
use llmop_store::{QueuedEval, Store, StoredScore};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Attempts before a call's scores are stored with the errors they still have.
const MAX_ATTEMPTS: i64 = 12;

struct Worker {
    app: Arc<AppState>,
    store: Store,
    files: HashMap<String, EvalFile>,
    /// Evaluators per feature, loaded on first use (a judge registered after the start is
    /// found on the next attempt).
    loaded: Mutex<HashMap<String, Arc<Evaluators>>>,
    /// Judge spend of this batch not yet committed with its scores, per feature: the
    /// daily cap counts it (the store has only what earlier batches committed).
    uncommitted: std::sync::Mutex<HashMap<String, f64>>,
}

/// Starts the worker when online evaluation is configured; it ends with the shutdown.
pub fn spawn(app: &Arc<AppState>) {
    let Some(recorder) = app.recorder.as_ref() else {
        return;
    };
    if recorder.online.is_none() {
        return;
    }
    let (files, _) =
        llmop_eval::online::load_dir(&app.config.dir.join(&app.config.online.evals_dir));
    let worker = Worker {
        app: app.clone(),
        store: recorder.store.clone(),
        files: files.into_iter().map(|f| (f.feature.clone(), f)).collect(),
        loaded: Mutex::new(HashMap::new()),
        uncommitted: std::sync::Mutex::new(HashMap::new()),
    };
    tracing::info!(
        features = worker.files.len(),
        "online evaluation: worker started"
    );
    let worker = Arc::new(worker);
    let watched: Vec<Watched> = worker
        .files
        .values()
        .filter_map(|f| {
            let o = f.online.as_ref()?;
            if o.drift.is_none() && o.canary.is_none() {
                return None;
            }
            // The canary's evaluators: its own list, else the online ones that gate.
            let sampled = llmop_eval::online::FeaturePlan::from_file(f)
                .map(|p| p.evaluators.into_iter().map(|(n, _)| n).collect::<Vec<_>>())
                .unwrap_or_default();
            let deciding = match &o.canary {
                Some(c) if !c.evaluators.is_empty() => c.evaluators.clone(),
                _ => sampled
                    .into_iter()
                    .filter(|n| f.evaluators.iter().any(|e| &e.name == n && e.gate))
                    .collect(),
            };
            Some(Watched {
                feature: f.feature.clone(),
                drift: o.drift.clone(),
                canary: o.canary.clone(),
                deciding,
            })
        })
        .collect();
    if !watched.is_empty() {
        let w = worker.clone();
        tokio::spawn(async move { w.watch(watched).await });
    }
    tokio::spawn(async move { worker.run().await });
}

/// A feature whose scores are watched: drift, and canaries of its splits.
struct Watched {
    feature: String,
    drift: Option<DriftSpec>,
    canary: Option<CanarySpec>,
    /// The evaluators that decide a canary.
    deciding: Vec<String>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// 2^attempts seconds, at most an hour.
fn backoff_ms(attempts: i64) -> i64 {
    1000 * (1i64 << attempts.clamp(0, 12)).min(3600)
}

impl Worker {
    /// Every `check_every`: each feature's recent scores against its baseline (drift),
    /// and each two-arm split's candidate against its baseline arm (canary).
    async fn watch(self: Arc<Self>, watched: Vec<Watched>) {
        let every = watched
            .iter()
            .flat_map(|w| {
                [
                    w.drift.as_ref().map(|d| d.check_every),
                    w.canary.as_ref().map(|c| c.check_every),
                ]
            })
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(60));
        let http = reqwest::Client::new();
        let mut last: HashMap<(String, &'static str), i64> = HashMap::new();
        let mut alerted: std::collections::HashSet<(String, String, i64, &'static str)> =
            Default::default();
        let shutdown = self.app.shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.triggered() => return,
            }
            let now = now_ms();
            for w in &watched {
                let mut due = |what: &'static str, every: Duration| {
                    let key = (w.feature.clone(), what);
                    let is_due = last
                        .get(&key)
                        .is_none_or(|t| now - t >= every.as_millis() as i64);
                    if is_due {
                        last.insert(key, now);
                    }
                    is_due
                };
                if let Some(spec) = &w.drift {
                    if due("drift", spec.check_every) {
                        if let Err(e) = self.check_drift(&http, &w.feature, spec, now).await {
                            tracing::warn!(feature = %w.feature, error = %e, "drift check failed");
                        }
                    }
                }
                if let Some(spec) = &w.canary {
                    if due("canary", spec.check_every) {
                        if let Err(e) = self.check_canary(&http, w, spec, now, &mut alerted).await {
                            tracing::warn!(feature = %w.feature, error = %e, "canary check failed");
                        }
                    }
                }
            }
        }
    }

    /// Each two-arm split of the feature: candidate against baseline since the split
    /// began; rolls back, promotes or alerts (see `llmop_eval::canary`).
    async fn check_canary(
        &self,
        http: &reqwest::Client,
        w: &Watched,
        spec: &CanarySpec,
        now: i64,
        alerted: &mut std::collections::HashSet<(String, String, i64, &'static str)>,
    ) -> Result<(), llmop_store::StoreError> {
        let deployments = self.store.deployments().await?;
        for d in deployments
            .iter()
            .filter(|d| d.feature == w.feature && d.state.arms.len() == 2)
        {
            let Some(base) = llmop_eval::gate::primary(&d.state) else {
                continue;
            };
            let Some(cand) = d.state.arms.iter().map(|a| a.version).find(|v| *v != base) else {
                continue;
            };
            let points = self.store.score_points(&w.feature, d.updated_at_ms).await?;
            let arms: Vec<(String, Vec<f64>, Vec<f64>)> = w
                .deciding
                .iter()
                .map(|name| {
                    let of = |v: i64| -> Vec<f64> {
                        points
                            .iter()
                            .filter(|p| {
                                &p.evaluator == name
                                    && p.feature_version == v
                                    && p.env.as_deref() == Some(d.env.as_str())
                            })
                            .map(|p| p.value)
                            .collect()
                    };
                    (name.clone(), of(base), of(cand))
                })
                .collect();
            let once = |what: &'static str, alerted: &mut std::collections::HashSet<_>| {
                alerted.insert((w.feature.clone(), d.env.clone(), d.seq, what))
            };
            match canary::decide(spec, &arms) {
                canary::Decision::Regressed(f) => {
                    let ev = canary::evidence(&f, base, cand, spec.margin);
                    match spec.on_regression {
                        canary::OnRegression::Rollback => {
                            let reason = format!(
                                "canary v{cand} is worse than v{base}: rolled back automatically. {ev}"
                            );
                            self.auto_deploy(http, d, base, &reason, "canary.rolled_back")
                                .await;
                        }
                        canary::OnRegression::Alert => {
                            if once("regressed", alerted) {
                                self.canary_alert(
                                    http,
                                    d,
                                    "canary.regressed",
                                    &format!("canary v{cand} is worse than v{base}: {ev}"),
                                );
                            }
                        }
                    }
                }
                canary::Decision::NotWorse(f) if spec.promote => {
                    let ev = canary::evidence(&f, base, cand, spec.margin);
                    let reason = format!(
                        "canary v{cand} is not worse than v{base}: promoted automatically. {ev}"
                    );
                    self.auto_deploy(http, d, cand, &reason, "canary.promoted")
                        .await;
                }
                _ => {
                    let age = now - d.updated_at_ms;
                    if age > spec.max_duration.as_millis() as i64 && once("undecided", alerted) {
                        self.canary_alert(
                            http,
                            d,
                            "canary.undecided",
                            &format!(
                                "canary v{cand} against v{base} is still undecided after {}",
                                humantime::format_duration(spec.max_duration)
                            ),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Deploys `version` alone in `d`'s environment as `llmop:canary`, unless the
    /// deployment changed since it was read (then a person, or another replica, acted).
    async fn auto_deploy(
        &self,
        http: &reqwest::Client,
        d: &llmop_store::Deployment,
        version: i64,
        reason: &str,
        kind: &'static str,
    ) {
        let by = llmop_store::ChangeBy {
            actor: Some("llmop:canary"),
            reason: Some(reason),
            gate: None,
            expect_seq: Some(d.seq),
        };
        let state = llmop_store::DeploymentState::single(version);
        match self.store.deploy(&d.feature, &d.env, &state, by).await {
            Ok(event) => {
                if let Some(reg) = &self.app.features {
                    let _ = reg.refresh().await;
                }
                metrics::counter!("llmop_canary_decisions_total", "feature" => d.feature.clone(), "decision" => kind)
                    .increment(1);
                tracing::warn!(feature = %d.feature, env = %d.env, change = event.seq, reason = %reason, "{kind}");
                self.canary_alert(http, d, kind, reason);
            }
            Err(e) => {
                tracing::info!(feature = %d.feature, env = %d.env, error = %e, "canary: the deployment changed meanwhile; nothing done");
            }
        }
    }

    fn canary_alert(
        &self,
        http: &reqwest::Client,
        d: &llmop_store::Deployment,
        kind: &str,
        message: &str,
    ) {
        tracing::warn!(feature = %d.feature, env = %d.env, "{message}");
        if let Some(url) = &self.app.config.alerts.webhook_url {
            crate::limits::alerts::post_alert(
                http,
                url,
                serde_json::json!({
                    "type": kind,
                    "feature": d.feature,
                    "env": d.env,
                    "message": message,
                    "at_ms": now_ms(),
                }),
            );
        }
    }

    async fn check_drift(
        &self,
        http: &reqwest::Client,
        feature: &str,
        spec: &DriftSpec,
        now: i64,
    ) -> Result<(), llmop_store::StoreError> {
        let window = spec.window.as_millis() as i64;
        let baseline = spec.baseline.as_millis() as i64;
        let points = self
            .store
            .score_points(feature, now - window - baseline)
            .await?;
        type Key = (i64, String, String);
        let mut groups: HashMap<Key, (Vec<f64>, Vec<f64>)> = HashMap::new();
        for p in points {
            let g = groups
                .entry((p.feature_version, p.evaluator, p.model))
                .or_default();
            if p.created_at_ms >= now - window {
                g.1.push(p.value);
            } else {
                g.0.push(p.value);
            }
        }
        let open = self.store.open_drift_alerts(Some(feature)).await?;
        for ((version, evaluator, model), (base, recent)) in &groups {
            let Some(c) = drift::compare(base, recent, spec.margin, spec.min_samples) else {
                continue;
            };
            let episode = open.iter().find(|a| {
                a.feature_version == *version && &a.evaluator == evaluator && &a.model == model
            });
            match episode {
                None if c.worse => {
                    let evidence = serde_json::json!({
                        "measure": c.measure,
                        "baseline": c.baseline,
                        "recent": c.recent,
                        "baseline_n": c.baseline_n,
                        "recent_n": c.recent_n,
                        "difference": c.difference,
                        "margin": spec.margin,
                        "window": humantime::format_duration(spec.window).to_string(),
                        "baseline_window": humantime::format_duration(spec.baseline).to_string(),
                    });
                    let alert = llmop_store::DriftAlert {
                        id: format!("drift-{}", llmop_core::context::new_request_id()),
                        feature: feature.to_string(),
                        feature_version: *version,
                        evaluator: evaluator.clone(),
                        model: model.clone(),
                        baseline: c.baseline,
                        evidence: evidence.clone(),
                        opened_at_ms: now,
                        closed_at_ms: None,
                    };
                    if !self.store.open_drift_alert(&alert).await? {
                        continue; // another replica opened this episode
                    }
                    metrics::counter!(
                        "llmop_drift_alerts_total",
                        "feature" => feature.to_string(),
                        "evaluator" => evaluator.clone()
                    )
                    .increment(1);
                    tracing::warn!(
                        feature = %feature, version = *version, evaluator = %evaluator, model = %model,
                        baseline = c.baseline, recent = c.recent, low = c.difference.lo, high = c.difference.hi,
                        "quality drift: the recent window is significantly worse than the baseline"
                    );
                    if let Some(url) = &self.app.config.alerts.webhook_url {
                        crate::limits::alerts::post_alert(
                            http,
                            url,
                            serde_json::json!({
                                "type": "quality.drift",
                                "id": alert.id,
                                "feature": feature,
                                "version": version,
                                "evaluator": evaluator,
                                "model": model,
                                "evidence": evidence,
                                "at_ms": now,
                            }),
                        );
                    }
                }
                Some(a) if drift::recovered(c.recent, a.baseline, spec.margin) => {
                    self.store.close_drift_alert(&a.id, now).await?;
                    tracing::info!(feature = %feature, version = *version, evaluator = %evaluator, "quality drift episode over: back within the margin");
                }
                _ => {}
            }
        }
        self.check_models(http, feature, now - window, now).await?;
        let still_open = self.store.open_drift_alerts(Some(feature)).await?.len();
        metrics::gauge!("llmop_drift_alerts_open", "feature" => feature.to_string())
            .set(still_open as f64);
        Ok(())
    }

    /// A configured model answering as a model or fingerprint not seen before (the
    /// provider changed it under the same name): its own event, once across replicas.
    async fn check_models(
        &self,
        http: &reqwest::Client,
        feature: &str,
        since: i64,
        now: i64,
    ) -> Result<(), llmop_store::StoreError> {
        for s in self.store.model_sightings(feature, since).await? {
            let Some(before) = self.store.note_model_sighting(&s, now).await? else {
                continue;
            };
            let was: Vec<String> = before
                .iter()
                .map(|b| format!("{} ({})", b.upstream_model, b.fingerprint))
                .collect();
            metrics::counter!("llmop_model_changes_total", "model" => s.model.clone()).increment(1);
            tracing::warn!(
                feature = %feature, model = %s.model, now_reports = %s.upstream_model,
                fingerprint = %s.fingerprint, before = %was.join(", "),
                "model change: the provider answers under the same configured model as a model or fingerprint not seen before"
            );
            if let Some(url) = &self.app.config.alerts.webhook_url {
                crate::limits::alerts::post_alert(
                    http,
                    url,
                    serde_json::json!({
                        "type": "model.changed",
                        "feature": feature,
                        "model": s.model,
                        "upstream_model": s.upstream_model,
                        "fingerprint": s.fingerprint,
                        "before": before,
                        "at_ms": now,
                    }),
                );
            }
        }
        Ok(())
    }

    async fn run(self: Arc<Self>) {
        let poll = Duration::from_millis(self.app.config.online.poll_ms);
        let concurrency = self.app.config.online.concurrency;
        let busy_share = self.app.config.online.busy_share;
        let shutdown = self.app.shutdown.clone();
        let mut gauge_at = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            if gauge_at.elapsed() >= Duration::from_secs(5) {
                gauge_at = std::time::Instant::now();
                if let Ok(n) = self.store.online_queue_len().await {
                    metrics::gauge!("llmop_online_queue").set(n as f64);
                }
            }
            let due = match self.store.due_online(now_ms(), 64).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "online evaluation: cannot read the queue");
                    Vec::new()
                }
            };
            if due.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => continue,
                    _ = shutdown.triggered() => return,
                }
            }
            // The work's cost: its wall time. The store's work runs on its own threads
            // and a judge's provider is waited for; both count, which keeps the share
            // conservative while calls are served.
            let started = std::time::Instant::now();
            let done: Vec<(QueuedEval, Vec<StoredScore>)> = futures::stream::iter(due)
                .map(|q| self.process(q))
                .buffer_unordered(concurrency)
                .filter_map(|d| async move { d })
                .collect()
                .await;
            self.finish(done).await;
            let cost = started.elapsed();
            // Scoring is deferred work: while calls are being served, it takes at most
            // `busy_share` of the time (the rest waits in the durable queue); when the
            // gateway is idle it runs flat out.
            let busy = self
                .app
                .in_flight
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0;
            if busy && busy_share < 1.0 {
                let pause = cost.mul_f64((1.0 - busy_share) / busy_share.max(0.01));
                tokio::select! {
                    _ = tokio::time::sleep(pause.min(Duration::from_secs(5))) => {}
                    _ = shutdown.triggered() => return,
                }
            }
        }
    }

    /// Stores a batch's scores and clears its queue entries in one transaction.
    async fn finish(&self, done: Vec<(QueuedEval, Vec<StoredScore>)>) {
        if done.is_empty() {
            return;
        }
        let batch: Vec<(String, Vec<StoredScore>)> = done
            .iter()
            .map(|(q, s)| (q.request_id.clone(), s.clone()))
            .collect();
        let stored = self.store.finish_online_batch(&batch).await;
        // Committed (now counted by the store), or lost with the batch (to be redone).
        self.uncommitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if let Err(e) = stored {
            tracing::warn!(error = %e, calls = batch.len(), "online evaluation: cannot store scores");
            return;
        }
        for (q, scores) in &done {
            for s in scores {
                crate::record::count_score(&q.feature, &s.evaluator, s.pass, s.error.is_some());
            }
        }
    }

    async fn evaluators(&self, feature: &str) -> Result<Arc<Evaluators>, String> {
        let mut loaded = self.loaded.lock().await;
        if let Some(e) = loaded.get(feature) {
            return Ok(e.clone());
        }
        let file = self
            .files
            .get(feature)
            .cloned()
            .ok_or_else(|| format!("no eval file for `{feature}` any more"))?;
        let e = Arc::new(Evaluators::load(file, &self.store).await?);
        loaded.insert(feature.to_string(), e.clone());
        Ok(e)
    }

    /// Scores one queued call; `None` when it failed for now (rescheduled).
    async fn process(&self, q: QueuedEval) -> Option<(QueuedEval, Vec<StoredScore>)> {
        match self.score(&q).await {
            Ok(scores) => Some((q, scores)),
            Err(why) => {
                let next = now_ms() + backoff_ms(q.attempts);
                tracing::info!(request_id = %q.request_id, attempts = q.attempts + 1, error = %why, "online evaluation: will try again");
                metrics::counter!("llmop_online_retries_total", "feature" => q.feature.clone())
                    .increment(1);
                if let Err(e) = self.store.retry_online(&q.request_id, next, &why).await {
                    tracing::warn!(error = %e, "online evaluation: cannot reschedule");
                }
                None
            }
        }
    }

    /// The scores of one queued call; `Err`: try again later.
    async fn score(&self, q: &QueuedEval) -> Result<Vec<StoredScore>, String> {
        let Some(rec) = self
            .store
            .get(&q.request_id)
            .await
            .map_err(|e| e.to_string())?
        else {
            // Purged by retention before it was scored: nothing left to score.
            return Ok(Vec::new());
        };
        let evals = self.evaluators(&q.feature).await?;
        let mut names = q.evaluators.clone();
        // Judges within their feature's daily cap.
        let judges: Vec<String> = names
            .iter()
            .filter(|n| {
                evals
                    .specs()
                    .iter()
                    .any(|e| &e.name == *n && matches!(e.kind, Kind::Judge { .. }))
            })
            .cloned()
            .collect();
        if !judges.is_empty() {
            let cap = evals
                .file
                .online
                .as_ref()
                .map_or(0.0, |o| o.judge_daily_usd);
            let day_start = now_ms() / 86_400_000 * 86_400_000;
            let committed = self
                .store
                .online_judge_spend(&q.feature, day_start)
                .await
                .map_err(|e| e.to_string())?;
            let pending = self
                .uncommitted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&q.feature)
                .copied()
                .unwrap_or(0.0);
            if committed + pending >= cap {
                names.retain(|n| !judges.contains(n));
                metrics::counter!("llmop_online_judge_capped_total", "feature" => q.feature.clone())
                    .increment(judges.len() as u64);
            }
        }
        let item = Item::from_record(&rec);
        let answer = Answer::from_record(&rec);
        let invoker = InProcess {
            app: self.app.clone(),
        };
        let ctx = Ctx {
            gateway: &invoker,
            store: &self.store,
            run_id: &format!("online:{}", rec.request_id),
            pending: None,
        };
        let scores = evals
            .score_only(&ctx, &item, &answer, 0, Some(&names))
            .await;
        let judged: f64 = scores.iter().filter_map(|(_, s)| s.cost_usd).sum();
        if judged > 0.0 {
            *self
                .uncommitted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(q.feature.clone())
                .or_default() += judged;
        }
        if q.attempts + 1 < MAX_ATTEMPTS {
            if let Some((_, s)) = scores.iter().find(|(_, s)| s.retryable) {
                return Err(s.error.clone().unwrap_or_default());
            }
        }
        let at = now_ms();
        Ok(scores
            .into_iter()
            .map(|(name, s)| stored_score(&rec, name, s, at))
            .collect())
    }
}

/// An online evaluator's score of the recorded call `rec`, as stored.
pub(crate) fn stored_score(
    rec: &llmop_store::Record,
    evaluator: String,
    s: llmop_eval::evaluate::Score,
    at: i64,
) -> StoredScore {
    StoredScore {
        request_id: rec.request_id.clone(),
        evaluator,
        source: "online".into(),
        feature: rec.feature.clone(),
        feature_version: rec.feature_version,
        env: rec.env.clone(),
        model: match (&rec.provider, &rec.model) {
            (Some(p), Some(m)) => Some(format!("{p}/{m}")),
            (_, m) => m.clone(),
        },
        value: s.value,
        pass: s.pass,
        label: None,
        comment: None,
        detail: s.detail,
        judge: s.judge,
        error: s.error,
        cost_usd: s.cost_usd,
        created_at_ms: at,
    }
}
