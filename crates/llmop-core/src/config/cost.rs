//! `[[budgets]]`, `[alerts]`, `[counters]`, `[prices]`: what calls may spend and how it is counted.

use super::*;

/// One `[[budgets]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// `global`, `key:<id|*>`, `user:<id|*>`, `feature:<name|*>`, `tag:<k>=<v>`,
    /// `session:*`, `request`.
    pub scope: crate::budget::Scope,
    /// `request`, `minute`, `hour`, `day`, `month` (calendar, UTC). Default `day`
    /// (`request` for the `request` scope).
    pub window: Option<crate::budget::Window>,
    /// Alert once per window per scope when spend reaches this.
    pub soft_usd: Option<f64>,
    /// Refuse (429 `budget_exceeded`) what would take spend past this.
    pub hard_usd: Option<f64>,
    /// `session:*` only: calls per session.
    pub max_calls: Option<u64>,
    /// `session:*` only: seconds from a session's first call.
    pub max_duration_s: Option<u64>,
}

impl BudgetConfig {
    /// The budget's window: as set, else `request` for the `request` scope and `day`
    /// for the others.
    pub fn window(&self) -> crate::budget::Window {
        use crate::budget::{Scope, Window};
        self.window.unwrap_or(if self.scope == Scope::Request {
            Window::Request
        } else {
            Window::Day
        })
    }
}

/// `[alerts]`: where soft-budget alerts go besides the log and metrics.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Each alert is POSTed here as JSON (retried; never blocks a request).
    pub webhook_url: Option<String>,
}

/// `[counters]`: where budgets and rate limits are counted.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountersConfig {
    /// `redis://…`: shared by every replica (atomic Lua scripts). Unset: in process.
    pub url: Option<String>,
    /// When Redis cannot be reached: `fail_open` (serve, uncounted) or `fail_closed`
    /// (refuse with 503).
    #[serde(default)]
    pub on_error: OnCounterError,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCounterError {
    #[default]
    FailOpen,
    FailClosed,
}

/// One `[prices."<provider>/<model>"]` entry: USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input: f64,
    pub output: f64,
    /// Cache reads; the input price when unset.
    pub cached_input: Option<f64>,
    /// Cache writes; the input price when unset.
    pub cache_write: Option<f64>,
}

/// Budgets, counters, alerts and price overrides: what the types cannot check.
pub(super) fn validate(c: &Config, out: &mut Problems) {
    use super::KeySeg::{Idx, Key};
    let k = key;
    for (i, b) in c.budgets.iter().enumerate() {
        for (field, m) in crate::budget::check(b) {
            out.push((vec![Key("budgets".into()), Idx(i), Key(field.into())], m));
        }
    }
    if let Some(u) = &c.counters.url {
        if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
            out.push((
                k(&["counters", "url"]),
                format!("`{u}` is not a redis:// URL"),
            ));
        }
    }
    if let Some(u) = &c.alerts.webhook_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            out.push((
                k(&["alerts", "webhook_url"]),
                format!("`{u}` is not an http(s) URL"),
            ));
        }
    }
    for (key, price) in &c.prices {
        let at = |field: &str| k(&["prices", key, field]);
        match key.split_once('/') {
            Some((provider, model)) if !model.is_empty() => {
                if !c.providers.contains_key(provider) {
                    out.push((
                        k(&["prices", key]),
                        format!("`{provider}` is not a configured provider"),
                    ));
                }
            }
            _ => out.push((
                k(&["prices", key]),
                "the key must be \"<provider>/<model>\" or \"<provider>/*\"".into(),
            )),
        }
        for (field, v) in [
            ("input", Some(price.input)),
            ("output", Some(price.output)),
            ("cached_input", price.cached_input),
            ("cache_write", price.cache_write),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                out.push((
                    at(field),
                    "must be a price of 0 or more (USD per million tokens)".into(),
                ));
            }
        }
    }
}
