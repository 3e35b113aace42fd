//! llmop-telemetry: every recorded call as an OpenTelemetry GenAI span, exported over
//! OTLP/HTTP (protobuf) to a collector, and the GenAI client metrics on `/metrics`.
//!
//! # Where it runs
//! Spans are built from the records, on the record writer's task once a batch is
//! committed ([`Exporter::tap`]), never on the request path. The writer hands them to a
//! bounded queue with `try_send`: a full queue drops the span and counts it, so a slow
//! or unreachable collector can never hold up the writer, let alone a call. One task
//! batches the queue (`batch_spans`, `flush_ms`), posts each batch with a time limit,
//! retries connection errors, 429 and 5xx with backoff (`max_retries`), and drops the
//! batch (counted) after that.
//!
//! # What a span says
//! See [`span`]: the attribute set is one versioned table, [`span::ATTRIBUTES`].
//!
//! Counters: `llmop_telemetry_spans_total{outcome}` with `exported`,
//! `dropped_queue_full`, `dropped_export_failed`, `dropped_rejected`, `not_sampled`.

pub mod span;

use llmop_core::config::TelemetryConfig;
use llmop_core::context::TraceParent;
use llmop_store::Record;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Why the exporter could not start.
#[derive(Debug)]
pub enum StartError {
    /// A `headers_env` variable is not set.
    MissingEnv { header: String, var: String },
    /// A header value is not valid in HTTP.
    BadHeader(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::MissingEnv { header, var } => write!(
                f,
                "[telemetry] headers_env.{header}: environment variable {var} is not set"
            ),
            StartError::BadHeader(h) => {
                write!(
                    f,
                    "[telemetry] header `{h}` has a value HTTP does not allow"
                )
            }
        }
    }
}

impl std::error::Error for StartError {}

/// Counts a span outcome.
fn count(outcome: &'static str, n: u64) {
    metrics::counter!("llmop_telemetry_spans_total", "outcome" => outcome).increment(n);
}

/// A record's metric labels: operation, provider (the conventions' name) and the model
/// the client asked for, when it named one llmop serves: a route, a registered feature,
/// or a provider's model the provider answered. Any other name is whatever string a
/// client sent (an unknown route or feature, a model a provider refused): as a label it
/// would make a series per string and put that string on `/metrics`, so such calls
/// share the empty label.
fn metric_labels<'r>(
    r: &'r Record,
    provider_kind: Option<&str>,
) -> (&'static str, &'static str, &'r str) {
    let resolved = r.route.is_some()
        || r.feature_version.is_some()
        || (r.provider.is_some() && r.status < 400);
    let model = r
        .request_params
        .get("model")
        .and_then(serde_json::Value::as_str)
        .or(r.model.as_deref())
        .filter(|_| resolved)
        .unwrap_or_default();
    (
        span::operation(r),
        span::provider_name(provider_kind.unwrap_or("")),
        model,
    )
}

/// The GenAI histograms of one label set, each looked up in the recorder once: the token
/// histograms when a record first has such tokens (a label set with no token counts,
/// such as failed calls, shows no token series).
struct GenAiHistograms {
    labels: [(&'static str, String); 3],
    duration: metrics::Histogram,
    input: Option<metrics::Histogram>,
    output: Option<metrics::Histogram>,
}

impl GenAiHistograms {
    fn new(operation: &'static str, provider: &'static str, model: &str) -> GenAiHistograms {
        let labels = [
            ("gen_ai_operation_name", operation.to_string()),
            ("gen_ai_provider_name", provider.to_string()),
            ("gen_ai_request_model", model.to_string()),
        ];
        GenAiHistograms {
            duration: metrics::histogram!("gen_ai_client_operation_duration_seconds", &labels),
            labels,
            input: None,
            output: None,
        }
    }

    fn record(&mut self, r: &Record) {
        self.duration.record(r.latency_ms as f64 / 1000.0);
        for (kind, tokens, h) in [
            ("input", r.input_tokens, &mut self.input),
            ("output", r.output_tokens, &mut self.output),
        ] {
            let Some(v) = tokens else { continue };
            h.get_or_insert_with(|| {
                let mut l = self.labels.to_vec();
                l.push(("gen_ai_token_type", kind.to_string()));
                metrics::histogram!("gen_ai_client_token_usage", &l)
            })
            .record(v as f64);
        }
    }
}

/// Most label sets whose histograms [`Exporter`] keeps at hand; past it (clients naming
/// many models), a record's histograms are looked up in the recorder each time.
const MAX_KEPT_HISTOGRAMS: usize = 1024;

/// Histogram handles by operation and provider, then model. A record's metrics were
/// three lookups in the recorder's registry, each building its key's label strings and
/// hashing them (about 10k instructions a record, a few % of a call); a kept handle
/// records directly.
type KeptHistograms = HashMap<(&'static str, &'static str), HashMap<String, GenAiHistograms>>;

/// Buckets of the GenAI client histograms, as the conventions advise.
pub const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// The exporter: builds spans from committed records and queues them for export.
pub struct Exporter {
    /// `None`: metrics only (no `[telemetry] endpoint`).
    tx: Option<mpsc::Sender<Span>>,
    ratio: f64,
    content: bool,
    /// Provider name (as configured) → kind.
    kinds: HashMap<String, &'static str>,
    /// Locked only by the record writer's tap, which runs on one task: uncontended.
    kept: std::sync::Mutex<(KeptHistograms, usize)>,
}

impl Exporter {
    /// Starts the export task (when an endpoint is configured). `kinds`: each
    /// configured provider's name and kind.
    pub fn start(
        cfg: &TelemetryConfig,
        kinds: HashMap<String, &'static str>,
    ) -> Result<Arc<Exporter>, StartError> {
        let mut tx = None;
        if let Some(endpoint) = &cfg.endpoint {
            let mut headers = reqwest::header::HeaderMap::new();
            let mut add = |name: &str, value: &str| -> Result<(), StartError> {
                let n = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| StartError::BadHeader(name.to_string()))?;
                let mut v = reqwest::header::HeaderValue::from_str(value)
                    .map_err(|_| StartError::BadHeader(name.to_string()))?;
                v.set_sensitive(true);
                headers.insert(n, v);
                Ok(())
            };
            for (k, v) in &cfg.headers {
                add(k, v)?;
            }
            for (k, var) in &cfg.headers_env {
                let v = std::env::var(var).map_err(|_| StartError::MissingEnv {
                    header: k.clone(),
                    var: var.clone(),
                })?;
                add(k, &v)?;
            }
            let (s, rx) = mpsc::channel(cfg.queue_spans.max(1));
            tx = Some(s);
            let task = Task {
                url: traces_url(endpoint),
                headers,
                client: reqwest::Client::builder()
                    .timeout(Duration::from_millis(cfg.timeout_ms.max(1)))
                    .build()
                    .unwrap_or_default(),
                batch: cfg.batch_spans.max(1),
                flush: Duration::from_millis(cfg.flush_ms.max(1)),
                retries: cfg.max_retries,
                resource: resource(&cfg.service_name),
            };
            tokio::spawn(task.run(rx));
        }
        Ok(Arc::new(Exporter {
            tx,
            ratio: cfg.sample_ratio.clamp(0.0, 1.0),
            content: cfg.content,
            kinds,
            kept: Default::default(),
        }))
    }

    /// The GenAI client metrics of a record (the conventions' names, in Prometheus
    /// form), through the kept handles.
    fn record_metrics(&self, r: &Record, provider_kind: Option<&str>) {
        let (operation, provider, model) = metric_labels(r, provider_kind);
        // A poisoned lock only means a panic elsewhere mid-insert: the map is whole.
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let (by_labels, count) = &mut *kept;
        let models = by_labels.entry((operation, provider)).or_default();
        if let Some(h) = models.get_mut(model) {
            h.record(r);
            return;
        }
        let mut h = GenAiHistograms::new(operation, provider, model);
        h.record(r);
        if *count < MAX_KEPT_HISTOGRAMS {
            *count += 1;
            models.insert(model.to_string(), h);
        }
    }

    /// What the record writer calls with each committed batch.
    pub fn tap(self: &Arc<Self>) -> llmop_store::writer::Tap {
        let me = self.clone();
        Arc::new(move |records: &[Record]| me.offer(records))
    }

    /// Metrics for every record; a span for each sampled one, queued without waiting.
    pub fn offer(&self, records: &[Record]) {
        let mut rng = rand::thread_rng();
        for r in records {
            let kind = r
                .provider
                .as_deref()
                .and_then(|p| self.kinds.get(p).copied());
            self.record_metrics(r, kind);
            let Some(tx) = &self.tx else { continue };
            let parent = r.traceparent.as_deref().and_then(TraceParent::parse);
            let trace_id = match &parent {
                Some(p) => p.trace_id,
                None => {
                    let mut t = [0u8; 16];
                    rng.fill_bytes(&mut t);
                    t
                }
            };
            if !sampled(parent.as_ref(), &trace_id, self.ratio) {
                count("not_sampled", 1);
                continue;
            }
            let mut span_id = [0u8; 8];
            rng.fill_bytes(&mut span_id);
            span_id[0] |= 1; // never all zeros
            let span = span::span_of(r, kind, trace_id, span_id, parent.as_ref(), self.content);
            if tx.try_send(span).is_err() {
                count("dropped_queue_full", 1);
            }
        }
    }
}

/// Parent-based sampling: a client's trace decides for itself (its sampled flag);
/// otherwise the share `ratio` of traces, by trace id (the same trace id always gets
/// the same answer, on every replica).
fn sampled(parent: Option<&TraceParent>, trace_id: &[u8; 16], ratio: f64) -> bool {
    if let Some(p) = parent {
        return p.sampled;
    }
    if ratio >= 1.0 {
        return true;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let x = u64::from_be_bytes(low) >> 11; // 53 bits, exactly representable
    (x as f64) < ratio * (1u64 << 53) as f64
}

/// `<endpoint>/v1/traces`, unless the endpoint already names a path of its own.
fn traces_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    let after_scheme = e.split_once("://").map_or(e, |(_, rest)| rest);
    if after_scheme.contains('/') {
        e.to_string()
    } else {
        format!("{e}/v1/traces")
    }
}

fn resource(service: &str) -> Resource {
    let s = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..KeyValue::default()
    };
    Resource {
        attributes: vec![
            s("service.name", service),
            s("service.version", env!("CARGO_PKG_VERSION")),
            s("telemetry.sdk.name", "llmop"),
            s("telemetry.sdk.language", "rust"),
        ],
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    }
}

struct Task {
    url: String,
    headers: reqwest::header::HeaderMap,
    client: reqwest::Client,
    batch: usize,
    flush: Duration,
    retries: u32,
    resource: Resource,
}

impl Task {
    async fn run(self, mut rx: mpsc::Receiver<Span>) {
        loop {
            let Some(first) = rx.recv().await else { return };
            let mut spans = vec![first];
            let deadline = tokio::time::Instant::now() + self.flush;
            while spans.len() < self.batch {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(s)) => spans.push(s),
                    Ok(None) | Err(_) => break,
                }
            }
            self.send(spans).await;
        }
    }

    fn body(&self, spans: Vec<Span>) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "llmop".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        attributes: Vec::new(),
                        dropped_attributes_count: 0,
                    }),
                    spans,
                    schema_url: span::SCHEMA_URL.into(),
                }],
                schema_url: span::SCHEMA_URL.into(),
            }],
        }
        .encode_to_vec()
    }

    async fn send(&self, spans: Vec<Span>) {
        let n = spans.len() as u64;
        let body = bytes::Bytes::from(self.body(spans));
        let mut backoff = Duration::from_millis(200);
        for attempt in 0..=self.retries {
            let sent = self
                .client
                .post(&self.url)
                .headers(self.headers.clone())
                .header("content-type", "application/x-protobuf")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    count("exported", n);
                    return;
                }
                Ok(r) if !(r.status().as_u16() == 429 || r.status().is_server_error()) => {
                    tracing::warn!(
                        status = r.status().as_u16(),
                        spans = n,
                        "telemetry: the collector refused spans; dropped"
                    );
                    count("dropped_rejected", n);
                    return;
                }
                Ok(r) => {
                    tracing::debug!(
                        status = r.status().as_u16(),
                        attempt,
                        "telemetry: export failed"
                    )
                }
                Err(e) => tracing::debug!(error = %e, attempt, "telemetry: export failed"),
            }
            if attempt < self.retries {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        tracing::warn!(spans = n, url = %self.url, "telemetry: the collector could not be reached; spans dropped");
        count("dropped_export_failed", n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kept handles count every record in its label set's histograms, as the recorder's
    /// own lookups did: two calls of one model in one series, another model in its own,
    /// and no token series for a label set whose records had no token counts.
    #[test]
    fn kept_histograms_count_each_record_once() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let exporter = Exporter::start(
            &llmop_core::config::TelemetryConfig::default(),
            HashMap::from([("up".to_string(), "openai")]),
        )
        .unwrap();
        let rec = |model: &str, tokens: Option<i64>| {
            let mut r = Record::new("r", 0, "/v1/chat/completions");
            r.provider = Some("up".into());
            r.model = Some(model.into());
            r.latency_ms = 250;
            r.input_tokens = tokens;
            r
        };
        metrics::with_local_recorder(&recorder, || {
            exporter.offer(&[rec("m1", Some(10)), rec("m1", Some(20))]);
            exporter.offer(&[rec("m2", None), rec("m1", Some(30))]);
        });
        let mut seen: Vec<(String, String, Vec<f64>)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let model = key
                    .labels()
                    .find(|l| l.key() == "gen_ai_request_model")
                    .map(|l| l.value().to_string())
                    .unwrap_or_default();
                let DebugValue::Histogram(v) = value else {
                    panic!("not a histogram: {key:?}")
                };
                let mut v: Vec<f64> = v.into_iter().map(|x| x.into_inner()).collect();
                v.sort_by(f64::total_cmp);
                (key.name().to_string(), model, v)
            })
            .collect();
        seen.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        assert_eq!(
            seen,
            vec![
                (
                    "gen_ai_client_operation_duration_seconds".to_string(),
                    "m1".to_string(),
                    vec![0.25, 0.25, 0.25]
                ),
                (
                    "gen_ai_client_operation_duration_seconds".to_string(),
                    "m2".to_string(),
                    vec![0.25]
                ),
                (
                    "gen_ai_client_token_usage".to_string(),
                    "m1".to_string(),
                    vec![10.0, 20.0, 30.0]
                ),
            ]
        );
    }

    /// A call whose model resolved to nothing (a client's typo, or anything it sent
    /// there) makes no series of its own: its label is empty, however many there are.
    #[test]
    fn an_unresolved_model_is_not_a_label() {
        let unresolved = |model: &str| {
            let mut r = Record::new("r", 0, "/v1/chat/completions");
            r.request_params = serde_json::json!({ "model": model });
            r
        };
        for m in ["no-such-model", "sk_live_0123456789abcdefghijklmnop"] {
            assert_eq!(metric_labels(&unresolved(m), None).2, "");
        }
        let mut routed = unresolved("support");
        routed.route = Some("support".into());
        assert_eq!(metric_labels(&routed, None).2, "support");
        let mut direct = unresolved("up/gpt-4o");
        direct.provider = Some("up".into());
        direct.status = 200;
        assert_eq!(metric_labels(&direct, Some("openai")).2, "up/gpt-4o");
        // A model the provider refused, or a feature that is not registered.
        direct.status = 404;
        assert_eq!(metric_labels(&direct, Some("openai")).2, "");
        let mut feature = unresolved("feature/nope");
        feature.feature = Some("nope".into());
        feature.status = 404;
        assert_eq!(metric_labels(&feature, None).2, "");
    }

    #[test]
    fn urls_take_the_standard_path_unless_they_have_one() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("https://cloud.langfuse.com/api/public/otel/v1/traces"),
            "https://cloud.langfuse.com/api/public/otel/v1/traces"
        );
    }

    #[test]
    fn sampling_follows_the_parent_then_the_ratio() {
        let p = |sampled| TraceParent {
            trace_id: [1; 16],
            parent_id: [1; 8],
            sampled,
        };
        assert!(sampled(Some(&p(true)), &[0; 16], 0.0));
        assert!(!sampled(Some(&p(false)), &[0; 16], 1.0));
        // Over many random trace ids the share sampled is the ratio.
        let mut rng = rand::thread_rng();
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| {
                let mut t = [0u8; 16];
                rng.fill_bytes(&mut t);
                sampled(None, &t, 0.25)
            })
            .count();
        let share = hits as f64 / n as f64;
        assert!((share - 0.25).abs() < 0.02, "{share}");
        assert!(!sampled(None, &[0xff; 16], 0.0));
    }
}
