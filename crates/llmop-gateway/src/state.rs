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
    /// Deployed features; `None` without a store.
    pub features: Option<Arc<crate::features::FeatureRegistry>>,
    /// Renders `/metrics`; `None` when another gateway in this process owns the registry.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl AppState {
    pub fn new(config: Config, recorder: Option<Recorder>) -> Result<Arc<AppState>, String> {
        let providers = Providers::from_config(&config)?;
        let router = Router::new(&config, &providers)?;
        let features = recorder.as_ref().map(|r| {
            Arc::new(crate::features::FeatureRegistry::new(
                r.store.clone(),
                &config.features,
            ))
        });
        Ok(Arc::new(AppState {
            features,
            config,
            providers,
            router,
            shutdown: Shutdown::new(),
            recorder: recorder.map(Arc::new),
            metrics: crate::metrics::install(),
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
