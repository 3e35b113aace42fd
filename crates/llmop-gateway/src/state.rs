//! Shared state of the gateway, built once from the config and read by every request.

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
    pub max_body_bytes: usize,
    pub default_timeout: Duration,
    pub body_timeout: Duration,
}

impl AppState {
    pub fn new(config: Config) -> Result<Arc<AppState>, String> {
        let providers = Providers::from_config(&config)?;
        let router = Router::new(&config, &providers)?;
        Ok(Arc::new(AppState {
            max_body_bytes: config.server.max_body_bytes,
            default_timeout: Duration::from_millis(config.server.request_timeout_ms),
            body_timeout: Duration::from_millis(config.server.body_timeout_ms),
            config,
            providers,
            router,
            shutdown: Shutdown::new(),
        }))
    }
}
