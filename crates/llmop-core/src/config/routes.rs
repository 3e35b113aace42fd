//! `[routes.<name>]`: ordered targets, strategies, retries, breakers, fallbacks.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Targets in order; the next one only when the previous failed.
    #[default]
    Fallback,
    /// The first target drawn by weight, the others in order as fallbacks.
    Weighted,
    /// The target with the lowest recent latency (decaying average, penalized by its
    /// recent error rate) first, the others after it in the same order.
    LeastLatency,
    /// Targets in order, cheapest first: an answer is taken only if it passes the
    /// route's `accept` checks, else the call escalates to the next target (within the
    /// same deadline); the last target's answer is taken as it is.
    Cascade,
}

/// `accept = { … }` on a cascade route: what a cheap target's answer must pass to be
/// taken. (A feature call's own parser and schema apply too.)
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptConfig {
    /// The answer must be JSON.
    #[serde(default)]
    pub json: bool,
    /// The answer must be JSON valid under this schema.
    pub json_schema: Option<serde_json::Value>,
    /// Fewer characters than this is not an answer.
    pub min_chars: Option<usize>,
    /// Regexes (case-insensitive) that mark a non-answer ("I'm not sure", "I cannot").
    #[serde(default)]
    pub reject_patterns: Vec<String>,
    /// An answer cut by `max_tokens` (finish reason `length`) is not taken.
    #[serde(default = "yes")]
    pub complete: bool,
}

fn yes() -> bool {
    true
}

impl Default for AcceptConfig {
    fn default() -> Self {
        AcceptConfig {
            json: false,
            json_schema: None,
            min_chars: None,
            reject_patterns: Vec::new(),
            complete: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub strategy: Strategy,
    pub targets: Vec<TargetConfig>,
    /// Deadline of the whole request on this route, all attempts included.
    pub timeout_ms: Option<u64>,
    /// Retries of a target that failed with a retryable error, before the next target.
    pub retry: Option<RetryConfig>,
    /// A breaker per target of this route: skip a target that keeps failing.
    pub circuit_breaker: Option<BreakerConfig>,
    /// How long one attempt may wait for its first token before the call moves on
    /// (retry or next target): a stream's first event, or a whole answer. The route's
    /// `timeout_ms` still bounds everything. Targets may override it.
    pub first_token_timeout_ms: Option<u64>,
    /// Move on to the next target when a provider refuses the request under its content
    /// policy (off by default: another model answering what one refused is a product
    /// decision). Context-window refusals always move on.
    #[serde(default)]
    pub fallback_on_content_policy: bool,
    /// The answer when every target failed: returned as a normal answer, marked
    /// `x-llmop-degraded: true` and `degraded` in the record.
    pub fallback_response: Option<FallbackResponse>,
    /// A cascade's acceptance checks (`strategy = "cascade"`).
    pub accept: Option<AcceptConfig>,
    /// An embeddings route (`POST /v1/embeddings`): every target must embed with the
    /// same model (its `embedding_model`, else its `model`), because vectors from
    /// different models are not interchangeable.
    #[serde(default)]
    pub embeddings: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackResponse {
    pub text: String,
}

/// `circuit_breaker = { failure_rate, min_calls, open_ms }` on a route.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Share of failed calls over the last `window_ms` that opens the breaker.
    pub failure_rate: f64,
    /// Calls the window must hold before the rate counts.
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    /// How long an open breaker skips its target before letting one probe through.
    #[serde(default = "default_open_ms")]
    pub open_ms: u64,
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
}

fn default_min_calls() -> u32 {
    20
}
fn default_open_ms() -> u64 {
    30_000
}
fn default_window_ms() -> u64 {
    10_000
}

/// `retry = { attempts, backoff_ms, max_backoff_ms }` on a route.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries per target after its first try (0 = no retry).
    pub attempts: u32,
    /// Base of the exponential backoff: the n-th retry waits a random time in
    /// `0..=min(max_backoff_ms, backoff_ms * 2^(n-1))` (full jitter).
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// Retries may add at most this share of extra calls to a target over a 10 s window…
    #[serde(default = "default_budget_ratio")]
    pub budget_ratio: f64,
    /// …plus this many retries per window, so a quiet target can still be retried.
    #[serde(default = "default_budget_min")]
    pub budget_min: u32,
}

fn default_backoff() -> u64 {
    200
}
fn default_max_backoff() -> u64 {
    4_000
}
fn default_budget_ratio() -> f64 {
    0.2
}
fn default_budget_min() -> u32 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub provider: String,
    pub model: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Overrides the route's `first_token_timeout_ms` for this target.
    pub first_token_timeout_ms: Option<u64>,
    /// Request parameters set for this target whatever the client asked (a smaller
    /// `max_tokens` for a fallback model, a model-specific `temperature`).
    pub params: Option<ParamOverrides>,
    /// The provider's quota for this target: requests per minute. A call beyond it goes
    /// to the next target (recorded as `rate_limited`), or gets 429 when none is left.
    pub rpm: Option<u32>,
    /// The provider's quota: tokens per minute (estimated before the call).
    pub tpm: Option<u32>,
    /// The embedding model this target serves, when its `model` is a deployment name
    /// (an Azure-style or self-hosted server): targets that declare the same embedding
    /// model may stand in for each other.
    pub embedding_model: Option<String>,
}

impl TargetConfig {
    /// What this target's vectors are comparable with.
    pub fn embedding_identity(&self) -> &str {
        self.embedding_model.as_deref().unwrap_or(&self.model)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamOverrides {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub seed: Option<i64>,
    pub stop: Option<Vec<String>>,
}

impl ParamOverrides {
    /// Applies the overrides to a request's parameters.
    pub fn apply(&self, p: &mut crate::Params) {
        if let Some(t) = self.temperature {
            p.temperature = Some(t);
        }
        if let Some(t) = self.top_p {
            p.top_p = Some(t);
        }
        if let Some(m) = self.max_tokens {
            p.max_tokens = Some(m);
        }
        if let Some(s) = self.seed {
            p.seed = Some(s);
        }
        if let Some(s) = &self.stop {
            p.stop.clone_from(s);
        }
    }
}

fn default_weight() -> u32 {
    1
}

/// Every route, checked against the providers it names.
pub(super) fn validate(c: &Config, out: &mut Problems) {
    use super::KeySeg::{Idx, Key};
    let k = key;
    for (name, r) in &c.routes {
        if name.is_empty() || name.contains('/') {
            out.push((
                k(&["routes", name]),
                "route names must be non-empty and contain no `/` (that form means provider/model)"
                    .into(),
            ));
        }
        if r.strategy == Strategy::Cascade && r.targets.len() < 2 {
            out.push((
                k(&["routes", name, "targets"]),
                "a cascade needs at least two targets (cheapest first)".into(),
            ));
        }
        if r.embeddings {
            if let Some(first) = r.targets.first() {
                let id = first.embedding_identity();
                if let Some(i) = r.targets.iter().position(|t| t.embedding_identity() != id) {
                    out.push((
                        k(&["routes", name, "targets"]),
                        format!(
                            "an embeddings route mixes embedding models (`{id}` and `{}` at targets[{i}]): their vectors are not interchangeable, so one cannot stand in for the other; declare `embedding_model` on targets that serve the same model under another name",
                            r.targets[i].embedding_identity()
                        ),
                    ));
                }
            }
            if r.strategy == Strategy::Cascade {
                out.push((
                    k(&["routes", name, "strategy"]),
                    "an embeddings route cannot cascade (there is no answer to check)".into(),
                ));
            }
        }
        if r.accept.is_some() && r.strategy != Strategy::Cascade {
            out.push((
                k(&["routes", name, "accept"]),
                "accept applies to strategy = \"cascade\" only".into(),
            ));
        }
        if let Some(a) = &r.accept {
            for (i, p) in a.reject_patterns.iter().enumerate() {
                if let Err(e) = regex::Regex::new(p) {
                    out.push((
                        vec![
                            Key("routes".into()),
                            Key(name.clone()),
                            Key("accept".into()),
                            Key("reject_patterns".into()),
                            Idx(i),
                        ],
                        format!("not a regex: {e}"),
                    ));
                }
            }
        }
        if r.targets.is_empty() {
            out.push((
                k(&["routes", name, "targets"]),
                "a route needs at least one target".into(),
            ));
        }
        if let Some(rt) = &r.retry {
            if rt.attempts > 10 {
                out.push((
                    k(&["routes", name, "retry", "attempts"]),
                    "at most 10 retries per target".into(),
                ));
            }
            if rt.backoff_ms == 0 || rt.max_backoff_ms < rt.backoff_ms {
                out.push((
                    k(&["routes", name, "retry", "backoff_ms"]),
                    "backoff_ms must be > 0 and at most max_backoff_ms".into(),
                ));
            }
            if !(0.0..=1.0).contains(&rt.budget_ratio) {
                out.push((
                    k(&["routes", name, "retry", "budget_ratio"]),
                    "must be between 0 and 1".into(),
                ));
            }
        }
        if let Some(b) = &r.circuit_breaker {
            if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0) {
                out.push((
                    k(&["routes", name, "circuit_breaker", "failure_rate"]),
                    "must be greater than 0 and at most 1".into(),
                ));
            }
            if b.min_calls == 0 || b.open_ms == 0 || b.window_ms < 1_000 {
                out.push((
                    k(&["routes", name, "circuit_breaker"]),
                    "min_calls and open_ms must be greater than 0, window_ms at least 1000".into(),
                ));
            }
        }
        if r.first_token_timeout_ms == Some(0)
            || r.targets
                .iter()
                .any(|t| t.first_token_timeout_ms == Some(0))
        {
            out.push((
                k(&["routes", name, "first_token_timeout_ms"]),
                "must be greater than 0".into(),
            ));
        }
        if r.timeout_ms == Some(0) {
            out.push((
                k(&["routes", name, "timeout_ms"]),
                "must be greater than 0".into(),
            ));
        }
        for (i, t) in r.targets.iter().enumerate() {
            let at = |field: &str| {
                vec![
                    Key("routes".into()),
                    Key(name.clone()),
                    Key("targets".into()),
                    Idx(i),
                    Key(field.into()),
                ]
            };
            if !c.providers.contains_key(&t.provider) {
                let known: Vec<&str> = c.providers.keys().map(String::as_str).collect();
                out.push((
                    at("provider"),
                    format!(
                        "unknown provider `{}` (configured: {})",
                        t.provider,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            if t.model.is_empty() {
                out.push((at("model"), "must not be empty".into()));
            }
            if r.strategy == Strategy::Weighted && t.weight == 0 && r.targets.len() == 1 {
                out.push((
                    at("weight"),
                    "the only target of a weighted route needs a weight above 0".into(),
                ));
            }
        }
    }
}
