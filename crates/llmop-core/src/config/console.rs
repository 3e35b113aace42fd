//! `[console]`: the web console at `/ui` (docs/console.md).

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve `/ui`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The environment variable holding a read-only console token: it logs in to read
    /// every page and act on nothing. The admin token (`[server] admin_token_env`) logs
    /// in with every right.
    #[serde(default)]
    pub viewer_token_env: Option<String>,
    /// How long a console session lasts (seconds).
    #[serde(default = "default_session_ttl")]
    pub session_ttl_s: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            viewer_token_env: None,
            session_ttl_s: default_session_ttl(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_session_ttl() -> u64 {
    12 * 3600
}

pub(super) fn validate(c: &Config, out: &mut Problems) {
    if c.console.session_ttl_s < 60 {
        out.push((
            key(&["console", "session_ttl_s"]),
            "must be at least 60 seconds".into(),
        ));
    }
}
