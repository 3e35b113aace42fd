//! Shared state of the gateway, built once from the config and read by every request.

use crate::record::Recorder;
use crate::routing::Router;
use crate::shutdown::Shutdown;
use llmop_core::config::Config;
use llmop_providers::Providers;
use std::sync::Arc;
use std::time::Duration;

pub struct AppState {
    pub config: Config,
    pub providers: Providers,
    pub router: Router,
    pub shutdown: Shutdown,
    /// The record store; `None` when `[store] enabled = false`.
    pub recorder: Option<Arc<Recorder>>,
    /// Budgets and rate limits; `None` only in tests that build a state by hand.
    pub limits: Option<Arc<crate::limits::Limits>>,
    /// Client keys and the admin token.
    pub auth: Arc<crate::auth::Auth>,
    /// Deployed features; `None` without a store.
    pub features: Option<Arc<crate::features::FeatureRegistry>>,
    /// Renders `/metrics`; `None` when another gateway in this process owns the registry.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Reasoning state kept for clients whose format cannot carry it.
    pub reasoning: Arc<crate::reasoning::Keeper>,
    /// Calls in the conductor now (clients' and shadows', not the gateway's own): how
    /// busy serving is, which the online worker yields to.
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// The compiled `[guardrails]`; `None` when no rule or disclaimer is configured.
    pub guard: Option<Arc<llmop_guard::policy::Policy>>,
    /// Runs the model-based guardrail checks (classifiers, remote services); `None`
    /// when no rule has one.
    pub guard_checks: Option<Arc<crate::guard::Checks>>,
    /// The guardrail counters' handles (for `guard`'s rules).
    pub guard_counters: Arc<crate::guard::Counters>,
    /// The compiled `[agents]` and its state; `None` when no tool or policy is declared.
    pub agent: Option<Arc<crate::agent::AgentGate>>,
    /// The web console (`/ui`); `None` when `[console] enabled = false`.
    pub console: Option<Arc<llmop_console::Console>>,
    /// The response cache and idempotent calls (docs/caching.md).
    pub cache: Arc<crate::caching::Caching>,
}

impl AppState {
    pub fn new(
        config: Config,
        mut recorder: Option<Recorder>,
        limits: Option<crate::limits::Limits>,
    ) -> Result<Arc<AppState>, String> {
        let guard = llmop_guard::policy::Policy::new(&config.guardrails, &config.dir).map_err(
            |errors| {
                errors
                    .iter()
                    .map(|(k, m)| format!("{k}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        )?;
        let guard_checks = crate::guard::Checks::new(&config.guardrails, &guard)?.map(Arc::new);
        let guard = (!guard.is_empty()).then(|| Arc::new(guard));
        let guard_counters = Arc::new(crate::guard::Counters::new(guard.as_deref()));
        if let Some(r) = recorder.as_mut() {
            r.guard.clone_from(&guard);
        }
        let agent =
            crate::agent::AgentGate::new(&config, recorder.as_ref().map(|r| r.store.clone()))?
                .map(Arc::new);
        let providers = Providers::from_config(&config)?;
        let router = Router::new(&config, &providers)?;
        let features = recorder.as_ref().map(|r| {
            Arc::new(crate::features::FeatureRegistry::new(
                r.store.clone(),
                &config.features,
            ))
        });
        let admin_token = match &config.server.admin_token_env {
            Some(var) => match std::env::var(var) {
                Ok(t) if !t.is_empty() => Some(t),
                _ => {
                    return Err(format!(
                        "[server] admin_token_env names `{var}`, which is not set (or empty)"
                    ))
                }
            },
            None => None,
        };
        let auth = Arc::new(crate::auth::Auth::new(
            recorder.as_ref().map(|r| r.store.clone()),
            admin_token.as_deref(),
        ));
        let console = if config.console.enabled {
            let viewer = match &config.console.viewer_token_env {
                Some(var) => match std::env::var(var) {
                    Ok(t) if !t.is_empty() => {
                        llmop_core::secret::register(&t);
                        Some(t)
                    }
                    _ => {
                        return Err(format!(
                            "[console] viewer_token_env names `{var}`, which is not set (or empty)"
                        ))
                    }
                },
                None => None,
            };
            let a = auth.clone();
            Some(Arc::new(llmop_console::Console::new(
                recorder.as_ref().map(|r| r.store.clone()),
                admin_token.as_deref(),
                viewer.as_deref(),
                Arc::new(move || a.open()),
                config.console.session_ttl_s,
            )))
        } else {
            None
        };
        let cache = Arc::new(crate::caching::Caching::new(&config.cache)?);
        Ok(Arc::new(AppState {
            cache,
            console,
            limits: limits.map(Arc::new),
            auth,
            features,
            config,
            providers,
            router,
            shutdown: Shutdown::new(),
            recorder: recorder.map(Arc::new),
            metrics: crate::metrics::install(),
            reasoning: Arc::default(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            guard,
            guard_checks,
            guard_counters,
            agent,
        }))
    }

    /// Deadline of a call whose route sets none.
    pub fn default_timeout(&self) -> Duration {
        Duration::from_millis(self.config.server.request_timeout_ms)
    }

    /// Reads client keys, API-added budgets and deployments from the store (an error
    /// stops the start), then re-reads them every `[features] refresh_ms` on one task
    /// until shutdown. A read that fails later keeps what was read last in force, and
    /// is logged (deployments: once per outage, and counted).
    pub async fn load_and_refresh(self: &Arc<Self>) -> Result<(), String> {
        self.auth
            .refresh()
            .await
            .map_err(|e| format!("cannot read API keys from the store: {e}"))?;
        if let (Some(limits), Some(rec)) = (&self.limits, &self.recorder) {
            limits
                .refresh(&rec.store)
                .await
                .map_err(|e| format!("cannot read budgets from the store: {e}"))?;
        }
        if let Some(features) = &self.features {
            features
                .refresh()
                .await
                .map_err(|e| format!("cannot read feature deployments from the store: {e}"))?;
        }
        let app = self.clone();
        tokio::spawn(async move {
            let every = Duration::from_millis(app.config.features.refresh_ms);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut deployments_failing = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = app.shutdown.triggered() => return,
                }
                let keys = app.auth.refresh();
                let budgets = async {
                    match (&app.limits, &app.recorder) {
                        (Some(l), Some(r)) => l.refresh(&r.store).await,
                        _ => Ok(()),
                    }
                };
                let deployments = async {
                    match &app.features {
                        Some(f) => f.refresh().await,
                        None => Ok(()),
                    }
                };
                let (keys, budgets, deployments) = tokio::join!(keys, budgets, deployments);
                if let Err(e) = keys {
                    // The keys read last stay in force.
                    tracing::warn!(error = %e, "cannot re-read API keys");
                }
                if let Err(e) = budgets {
                    tracing::warn!(error = %e, "cannot re-read budgets");
                }
                match deployments {
                    Ok(()) if deployments_failing => {
                        deployments_failing = false;
                        tracing::info!("deployments readable again");
                    }
                    Ok(()) => {}
                    Err(e) => {
                        if !deployments_failing {
                            tracing::error!(error = %e, "cannot read deployments; serving the last ones read");
                        }
                        deployments_failing = true;
                        metrics::counter!("llmop_deployment_load_errors_total").increment(1);
                    }
                }
            }
        });
        Ok(())
    }

    /// How long a client may take to send its body.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.config.server.body_timeout_ms)
    }
}
