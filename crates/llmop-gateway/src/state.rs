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
}

impl AppState {
    pub fn new(
        config: Config,
        recorder: Option<Recorder>,
        limits: Option<crate::limits::Limits>,
    ) -> Result<Arc<AppState>, String> {
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
        Ok(Arc::new(AppState {
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
        }))
    }

    /// Deadline of a call whose route sets none.
    pub fn default_timeout(&self) -> Duration {
        Duration::from_millis(self.config.server.request_timeout_ms)
    }

    /// How long a client may take to send its body.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.config.server.body_timeout_ms)
    }
}
