//! `[features]`: how the gateway serves versioned features.

use super::*;

/// `[features]`: how the gateway serves versioned features.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesConfig {
    /// The environment of a feature call that names none (`x-llmop-env`, `env`).
    #[serde(default = "default_env")]
    pub default_env: String,
    /// How often deployments, client keys and budgets added through the API are re-read
    /// from the store, so that a change made on another replica (or by the CLI) is in
    /// force within this time.
    #[serde(default = "default_refresh_ms")]
    pub refresh_ms: u64,
    /// Most shadow calls in flight at once; beyond it shadows are skipped (counted),
    /// never queued behind primaries.
    #[serde(default = "default_shadow_concurrency")]
    pub shadow_concurrency: usize,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        FeaturesConfig {
            default_env: default_env(),
            refresh_ms: default_refresh_ms(),
            shadow_concurrency: default_shadow_concurrency(),
        }
    }
}

fn default_env() -> String {
    "prod".into()
}
fn default_refresh_ms() -> u64 {
    250
}
fn default_shadow_concurrency() -> usize {
    16
}

impl FeaturesConfig {
    /// What the types cannot check, as (key path, message) pairs.
    pub(super) fn validate(&self, out: &mut Problems) {
        let k = key;
        if !(10..=60_000).contains(&self.refresh_ms) {
            out.push((
                k(&["features", "refresh_ms"]),
                "must be between 10 and 60000".into(),
            ));
        }
        if self.default_env.is_empty() {
            out.push((k(&["features", "default_env"]), "must not be empty".into()));
        }
    }
}
