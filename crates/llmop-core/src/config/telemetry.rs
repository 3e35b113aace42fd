//! `[telemetry]`: OpenTelemetry export of every recorded call as a GenAI span
//! (docs/telemetry.md).

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`): spans are posted
    /// to `<endpoint>/v1/traces` unless it already ends in a path of its own
    /// (`…/api/public/otel/v1/traces`). No endpoint: no export.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Headers sent with every export (not secret: they appear in the config).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values are read from environment variables (header → variable):
    /// credentials, e.g. `{ authorization = "OTEL_AUTH" }`.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// Share of calls exported (0..1), decided by trace id; an incoming `traceparent`
    /// decides for its own trace (sampled flag).
    #[serde(default = "one")]
    pub sample_ratio: f64,
    /// Export messages and outputs (`gen_ai.input.messages`, `gen_ai.output.messages`).
    /// Off by default: prompts often hold personal data.
    #[serde(default)]
    pub content: bool,
    /// `service.name` of the exported resource.
    #[serde(default = "default_service")]
    pub service_name: String,
    /// Spans held for export; past it new spans are dropped (and counted).
    #[serde(default = "default_queue")]
    pub queue_spans: usize,
    /// Most spans per export request.
    #[serde(default = "default_batch")]
    pub batch_spans: usize,
    /// Longest a span waits for company before its batch is sent.
    #[serde(default = "default_flush")]
    pub flush_ms: u64,
    /// Time limit of one export request.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Retries of a failed export (connection error, 429, 5xx) before its spans are
    /// dropped (and counted).
    #[serde(default = "default_retries")]
    pub max_retries: u32,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            endpoint: None,
            headers: BTreeMap::new(),
            headers_env: BTreeMap::new(),
            sample_ratio: 1.0,
            content: false,
            service_name: default_service(),
            queue_spans: default_queue(),
            batch_spans: default_batch(),
            flush_ms: default_flush(),
            timeout_ms: default_timeout(),
            max_retries: default_retries(),
        }
    }
}

fn one() -> f64 {
    1.0
}
fn default_service() -> String {
    "llmop".into()
}
fn default_queue() -> usize {
    8192
}
fn default_batch() -> usize {
    512
}
fn default_flush() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    5000
}
fn default_retries() -> u32 {
    3
}

pub(super) fn validate(c: &Config, out: &mut Problems) {
    let t = &c.telemetry;
    if let Some(e) = &t.endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() < 10 {
            out.push((
                key(&["telemetry", "endpoint"]),
                "must be an http:// or https:// URL (the collector's OTLP/HTTP endpoint)".into(),
            ));
        }
    }
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        out.push((
            key(&["telemetry", "sample_ratio"]),
            "must be between 0 and 1".into(),
        ));
    }
    for (k, v) in [
        ("queue_spans", t.queue_spans as u64),
        ("batch_spans", t.batch_spans as u64),
        ("timeout_ms", t.timeout_ms),
        ("flush_ms", t.flush_ms),
    ] {
        if v == 0 {
            out.push((key(&["telemetry", k]), "must be at least 1".into()));
        }
    }
    for name in t.headers.keys().chain(t.headers_env.keys()) {
        if !valid_header_name(name) {
            out.push((
                key(&["telemetry", "headers", name]),
                "is not a valid HTTP header name".into(),
            ));
        }
    }
}

/// A header name's characters (RFC 9110 token).
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
