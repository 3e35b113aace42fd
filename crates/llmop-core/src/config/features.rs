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

/// `[eval_gates] <env> = { dataset = "…", against = "deployed" }`: a deploy to `env` needs
/// a passing eval compare of each newly served version against what `env` serves now, on
/// the latest version of `dataset`, under the feature's eval file as it is now
/// (`<evals_dir>/<feature>.toml`, relative to the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalGate {
    pub dataset: String,
    #[serde(default = "default_against")]
    pub against: String,
    #[serde(default = "default_evals_dir")]
    pub evals_dir: PathBuf,
}

fn default_against() -> String {
    "deployed".into()
}
fn default_evals_dir() -> PathBuf {
    PathBuf::from("evals")
}

impl EvalGate {
    /// The feature's eval file under this gate.
    pub fn eval_file(&self, config_dir: &Path, feature: &str) -> PathBuf {
        config_dir
            .join(&self.evals_dir)
            .join(format!("{feature}.toml"))
    }
}

pub(super) fn validate_gates(c: &Config, out: &mut Problems) {
    for (env, g) in &c.eval_gates {
        let at = |f: &str| key(&["eval_gates", env, f]);
        if g.against != "deployed" {
            out.push((
                at("against"),
                format!(
                    "`{}`: the only baseline is \"deployed\" (what the environment serves now)",
                    g.against
                ),
            ));
        }
        if g.dataset.trim().is_empty() {
            out.push((
                at("dataset"),
                "name the dataset the compare must use".into(),
            ));
        }
    }
}

/// `[online]`: the online evaluation worker (which calls are scored is in the eval
/// files' `[online]` sections, see docs/quality.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineConfig {
    /// Where the eval files are (`<feature>.toml`), relative to the config; read at start.
    #[serde(default = "default_evals_dir")]
    pub evals_dir: PathBuf,
    /// `false`: no call is sampled and the worker does not run.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How often the worker looks for queued work when it found none.
    #[serde(default = "default_online_poll_ms")]
    pub poll_ms: u64,
    /// Calls scored at once.
    #[serde(default = "default_online_concurrency")]
    pub concurrency: usize,
    /// While calls are being served, the share of time the worker may spend scoring
    /// (the rest of the work waits, durably, in the queue); idle, it runs flat out.
    #[serde(default = "default_busy_share")]
    pub busy_share: f64,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        OnlineConfig {
            evals_dir: default_evals_dir(),
            enabled: true,
            poll_ms: default_online_poll_ms(),
            concurrency: default_online_concurrency(),
            busy_share: default_busy_share(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_online_poll_ms() -> u64 {
    500
}
fn default_online_concurrency() -> usize {
    4
}
fn default_busy_share() -> f64 {
    0.05
}

pub(super) fn validate_online(c: &Config, out: &mut Problems) {
    let o = &c.online;
    if !(10..=60_000).contains(&o.poll_ms) {
        out.push((
            key(&["online", "poll_ms"]),
            "must be between 10 and 60000".into(),
        ));
    }
    if o.busy_share.is_nan() || o.busy_share <= 0.0 || o.busy_share > 1.0 {
        out.push((
            key(&["online", "busy_share"]),
            "must be above 0 and at most 1".into(),
        ));
    }
    if !(1..=256).contains(&o.concurrency) {
        out.push((
            key(&["online", "concurrency"]),
            "must be between 1 and 256".into(),
        ));
    }
}
