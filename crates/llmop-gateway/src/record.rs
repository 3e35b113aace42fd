//! The record of one call, filled in as the call moves through the pipeline and handed
//! to the record writer exactly once when the call is over: when its response (or its
//! stream) is done, or when the client went away and the call was dropped mid-way.
//!
//! The request path only *moves* what it already has (the parsed request, the answer,
//! the stream accumulator) into a [`CallData`]; assembling and serializing the stored
//! [`Record`] happens on the writer's task ([`IntoRecord`]), off the request path.
//!
//! Nothing secret is recorded: no headers (so no `Authorization`, no `x-api-key`), no
//! provider keys; only the metadata headers llmop defines (`x-llmop-*`).

pub use crate::stage::Stage;
use llmop_core::config::{Config, Durability};
use llmop_core::context::RequestContext;
use llmop_core::{
    ChatRequest, ChatResponse, GatewayError, Part, ProviderError, StreamAccumulator, Usage,
    WireFormat,
};
use llmop_store::{IntoRecord, Record, RecordWriter, Store, WriterConfig};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One try of one target: the store's own type, filled here as the call goes.
pub use llmop_store::Attempt;

/// Tokens and cost of answers that were paid for and discarded.
#[derive(Debug, Clone, Copy)]
pub struct Spent {
    pub usage: Usage,
    /// `None`: unknown (an unpriced target, or an answer without usage).
    pub cost: Option<f64>,
}

/// What a feature call adds to its record.
#[derive(Debug, Default)]
pub struct FeatureRecord {
    pub version: i64,
    pub content_hash: String,
    /// The split arm (`v4`) when the deployment is a split.
    pub arm: Option<String>,
    pub variables: Map<String, Value>,
    pub rendered_prompt: String,
    /// `ok | repaired | next_target | static | failed`; `None`: not parsed (text parser,
    /// degraded answer, or no answer).
    pub parse_status: Option<&'static str>,
    pub parsed: Option<Value>,
    /// A streamed answer is parsed when its record is built, off the request path.
    pub parse_later: Option<Arc<llmop_features::CompiledFeature>>,
    /// For a shadow call: the primary's request id.
    pub shadow_of: Option<String>,
}

/// Status shown for a call whose client disconnected before the answer was complete
/// (nginx's convention; no response was sent).
pub const CLIENT_CLOSED: u16 = 499;

/// Most bytes of an unparseable request body kept in its record.
const INVALID_BODY_KEPT: usize = 16 * 1024;

/// `text` cut to at most `max` bytes at a character boundary; `true` if it was cut.
fn cut_text(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// Bytes of text in a JSON value (its strings and keys): about its serialized size,
/// escapes aside, found without serializing it.
fn text_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 2,
        Value::Array(a) => a.iter().map(text_bytes).sum::<usize>() + 2,
        Value::Object(o) => {
            o.iter()
                .map(|(k, v)| k.len() + 3 + text_bytes(v))
                .sum::<usize>()
                + 2
        }
        _ => 8,
    }
}

/// Replaces a JSON field whose text passes `max` bytes by
/// `{"truncated_from_bytes": n, "head": "<the beginning of its JSON text>"}` (inside an
/// array when the field is one, so that its type stays what readers expect). `true` if
/// it was cut.
fn cap_json(v: &mut Value, max: usize) -> bool {
    let size = text_bytes(v);
    if size <= max {
        return false;
    }
    let mut head = v.to_string();
    cut_text(&mut head, max);
    let marker = serde_json::json!({"truncated_from_bytes": size, "head": head});
    *v = if v.is_array() {
        Value::Array(vec![marker])
    } else {
        marker
    };
    true
}

/// The record store as the gateway uses it: the writer that commits records, the store
/// the read API answers from, and the durability mode.
pub struct Recorder {
    /// Boxed: a call's data is a few kilobytes, and a box moves through the writer's
    /// queue and batch as a pointer where the data itself would be copied each time.
    pub writer: Arc<RecordWriter<Box<CallData>>>,
    pub store: Store,
    pub strict: bool,
    /// `[store] max_field_bytes`: the most a record keeps of one large field.
    pub max_field_bytes: usize,
    /// Which calls online evaluators score (from the eval files' `[online]` sections);
    /// `None`: none.
    pub online: Option<Arc<llmop_eval::online::Sampler>>,
    /// The guardrails policy (set by the gateway's state): a record whose call never
    /// reached the input guard (refused earlier) is still masked of what its input
    /// rules find.
    pub guard: Option<Arc<llmop_guard::policy::Policy>>,
}

/// How long the record writer waits for company before a small batch is committed, in
/// default durability: three fifths of `max_lag_ms` (30 ms at the default 50), so a
/// batch is committed well inside the lag bound (and a lower bound never holds answers
/// only because the writer lingered), and 30 ms when there is no bound (`0`).
///
/// Why not less: a commit's fixed cost is large at a moderate rate, where each one runs
/// on cold caches (about 260 µs of the writer's thread, against 12 µs per record at
/// 1,000 req/s). Lingering 30 ms rather than 20 cut the gateway's CPU per call there by
/// about a tenth (docs/benchmarks.md, fourteenth session).
fn linger_for(max_lag_ms: u64) -> Duration {
    match max_lag_ms {
        0 => Duration::from_millis(30),
        ms => Duration::from_micros(ms * 600),
    }
}

/// The online evaluators' sampler from the eval files' `[online]` sections (read once,
/// at start); `None` when there are none or `[online] enabled = false`. A file that
/// cannot be read is logged and left out: evals never stop the gateway from serving.
fn online_sampler(config: &Config) -> Option<Arc<llmop_eval::online::Sampler>> {
    if !config.online.enabled {
        return None;
    }
    let (files, problems) =
        llmop_eval::online::load_dir(&config.dir.join(&config.online.evals_dir));
    for p in problems {
        tracing::error!(problem = %p, "online evaluation: an eval file was left out");
    }
    let sampler = llmop_eval::online::Sampler::new(&files);
    (!sampler.is_empty()).then(|| Arc::new(sampler))
}

impl Recorder {
    /// Opens the store named by `[store]`, replays any spill file and starts the writer.
    /// `tap` sees every committed batch (the telemetry exporter).
    pub async fn open(
        config: &Config,
        tap: Option<llmop_store::writer::Tap>,
    ) -> Result<Recorder, llmop_store::StoreError> {
        let store = Store::open(&config.store.resolved_url(&config.dir)).await?;
        store
            .index_provider_ids(config.store.index_provider_ids)
            .await?;
        let writer = RecordWriter::start(
            store.clone(),
            WriterConfig {
                capacity: config.store.queue_capacity,
                spill_path: Some(config.store.resolved_spill_path(&config.dir)),
                // Default durability promises a record within `max_lag_ms` (50) of
                // its response; lingering for company keeps commits few and large: a
                // commit's fixed cost (every touched B-tree page written to the WAL,
                // and later checkpointed) is paid per batch, not per record.
                linger: if config.store.durability == Durability::Strict {
                    Duration::ZERO
                } else {
                    linger_for(config.store.max_lag_ms)
                },
                // ...and a writer that falls further behind than `max_lag_ms` (default
                // 50) holds new answers until their records are committed.
                max_lag: if config.store.durability == Durability::Strict {
                    Duration::ZERO
                } else {
                    Duration::from_millis(config.store.max_lag_ms)
                },
                tap,
                ..WriterConfig::default()
            },
        )
        .await?;
        Ok(Recorder {
            writer: Arc::new(writer),
            store,
            strict: config.store.durability == Durability::Strict,
            max_field_bytes: config.store.max_field_bytes.max(1024),
            online: online_sampler(config),
            guard: None,
        })
    }
}

/// Everything recorded about one call, from its first stage to the store: the one place
/// a recorded field lives on the gateway's side. The request path fills it (through
/// [`CallRecord`], which derefs to it) and moves it whole to the writer, whose task turns
/// it into a [`Record`] ([`IntoRecord`]). Adding a recorded field is a field here, its
/// line in `into_record`, and the store's column.
#[derive(Debug)]
pub struct CallData {
    pub request_id: String,
    pub endpoint: &'static str,
    pub started: Instant,
    /// Wall-clock start, Unix ms.
    pub started_at_ms: i64,
    pub context: RequestContext,
    pub model_requested: String,
    pub route: Option<String>,
    pub stream: bool,
    pub attempts: Vec<Attempt>,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// The answer's id as the upstream gave it (`chatcmpl-…`, `msg_…`): what a
    /// provider's support asks for.
    pub upstream_id: Option<String>,
    pub usage: Option<Usage>,
    pub time_to_first_token: Option<Duration>,
    /// HTTP status sent to the client; `None` until there is one.
    pub status: Option<u16>,
    pub error_code: Option<&'static str>,
    /// The parsed request, moved here once the pipeline is done with it.
    pub request: Option<Arc<ChatRequest>>,
    /// The start of a body that could not be parsed.
    pub invalid_body: Option<String>,
    /// A whole answer, moved here once encoded.
    pub response: Option<ChatResponse>,
    /// A stream's events folded as they are relayed: a stream cut short still leaves
    /// what the client saw.
    pub stream_acc: Option<StreamAccumulator>,
    /// Answered by the route's fallback_response.
    pub degraded: bool,
    /// What the check stage reserved on budgets; settled when the record is handed over.
    pub admission: Option<crate::limits::Admission>,
    /// The client key that made the call (its id); `None` while the gateway is open.
    pub key_id: Option<String>,
    /// Set for feature calls.
    pub feature: Option<Box<FeatureRecord>>,
    /// The price of the target that answered; `None`: unknown (or nothing answered).
    pub price: Option<llmop_cost::Price>,
    /// Answers paid for and then discarded (a feature's output that did not parse,
    /// before a repair or the next target): their usage and cost count too.
    pub discarded: Option<Spent>,
    /// The call's deadline, fixed by its first pass through the pipeline, so that a
    /// second pass (a feature's repair or next target) stays within it.
    pub deadline: Option<Instant>,
    /// Reasoning state kept for this answer's tool calls (stored with the record).
    pub kept: crate::reasoning::KeptFor,
    /// The pipeline stages the call went through.
    pub stages: Stages,
    /// The call's guardrails (its rules, the pseudonym vault, the verdicts); `None`
    /// when no rule applies.
    pub guard: Option<Box<crate::guard::GuardCall>>,
    /// The call's agent-safety decisions; `None` when the agent policy has nothing to
    /// say about it.
    pub agent: Option<Box<crate::agent::AgentCall>>,
    /// What the response cache and idempotency did for the call.
    pub cache: crate::caching::CacheUse,
    /// A cascade's answer: what it would have cost on the route's last target.
    pub baseline_usd: Option<f64>,
    /// A `/v1/responses` call: what its response object echoes, and llmop's own
    /// `store` and `previous_response_id` (recorded under `request_params.responses`).
    pub responses: Option<Box<llmop_wire::responses::Echo>>,
    /// An embeddings call: what its record keeps (`embeddings`).
    pub embed: Option<Box<EmbedRecord>>,
    /// Wall time from the start to the hand-over; set when handed over.
    latency: Duration,
    /// `[store] max_field_bytes`, from the recorder.
    max_field_bytes: usize,
    /// The online evaluators' sampler, from the recorder: applied when the record is
    /// built (off the request path).
    online: Option<Arc<llmop_eval::online::Sampler>>,
    /// The guardrails policy, from the recorder.
    policy: Option<Arc<llmop_guard::policy::Policy>>,
}

/// What an embeddings call's record keeps: its parameters, its inputs (or their
/// hashes) and, when `[store] embedding_vectors`, its vectors.
#[derive(Debug, Default)]
pub struct EmbedRecord {
    pub params: Value,
    pub inputs: Value,
    pub vectors: Option<Value>,
}

/// A call on its way through the pipeline: its [`CallData`] and where it goes when the
/// call is over. Handed over exactly once: by [`CallRecord::finish`], or on drop.
pub struct CallRecord {
    /// Boxed, so the conductor's futures that hold a call do not carry its data inline
    /// (they are moved into boxes of their own), and handing it to the writer moves a
    /// pointer.
    data: Box<CallData>,
    recorder: Option<Arc<Recorder>>,
    emitted: bool,
}

impl std::ops::Deref for CallRecord {
    type Target = CallData;
    fn deref(&self) -> &CallData {
        &self.data
    }
}

impl std::ops::DerefMut for CallRecord {
    fn deref_mut(&mut self) -> &mut CallData {
        &mut self.data
    }
}

/// The stages a call went through, as a set (each [`Stage`] once, in the pipeline's
/// order when listed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stages(u32);

impl Stages {
    pub fn mark(&mut self, s: Stage) {
        self.0 |= 1 << s as u32;
    }
    pub fn has(&self, s: Stage) -> bool {
        self.0 & (1 << s as u32) != 0
    }
    /// The stages' names, in the pipeline's order.
    pub fn names(&self) -> Vec<String> {
        Stage::ALL
            .iter()
            .filter(|s| self.has(**s))
            .map(|s| s.name().to_string())
            .collect()
    }
}

impl CallData {
    /// The call as the agent stage sees it.
    pub fn agent_who(&self) -> crate::agent::Who<'_> {
        crate::agent::Who {
            request_id: &self.request_id,
            key_id: self.key_id.as_deref(),
            session: self.context.session.as_deref(),
            route: self.route.as_deref(),
            feature: self.context.feature.as_deref(),
        }
    }

    fn entered_record(&mut self) {
        self.stages.mark(Stage::Record);
    }

    fn new(
        request_id: &str,
        endpoint: &'static str,
        max_field_bytes: usize,
        online: Option<Arc<llmop_eval::online::Sampler>>,
        policy: Option<Arc<llmop_guard::policy::Policy>>,
    ) -> CallData {
        CallData {
            request_id: request_id.to_string(),
            endpoint,
            started: Instant::now(),
            started_at_ms: unix_ms(),
            context: RequestContext::default(),
            model_requested: String::new(),
            route: None,
            stream: false,
            attempts: Vec::new(),
            provider: None,
            model: None,
            upstream_id: None,
            usage: None,
            time_to_first_token: None,
            status: None,
            error_code: None,
            request: None,
            invalid_body: None,
            response: None,
            stream_acc: None,
            degraded: false,
            admission: None,
            key_id: None,
            feature: None,
            price: None,
            discarded: None,
            deadline: None,
            kept: Vec::new(),
            stages: Stages::default(),
            guard: None,
            agent: None,
            cache: Default::default(),
            baseline_usd: None,
            responses: None,
            embed: None,
            latency: Duration::ZERO,
            max_field_bytes,
            online,
            policy,
        }
    }
}

impl CallRecord {
    pub fn new(request_id: &str, endpoint: &'static str, recorder: Option<Arc<Recorder>>) -> Self {
        let max_field_bytes = recorder.as_ref().map_or(0, |r| r.max_field_bytes);
        let online = recorder.as_ref().and_then(|r| r.online.clone());
        let policy = recorder.as_ref().and_then(|r| r.guard.clone());
        CallRecord {
            data: Box::new(CallData::new(
                request_id,
                endpoint,
                max_field_bytes,
                online,
                policy,
            )),
            recorder,
            emitted: false,
        }
    }

    /// Notes that the call entered stage `s`.
    pub fn entered(&mut self, s: Stage) {
        self.data.stages.mark(s);
    }

    pub fn attempt(
        &mut self,
        provider: &str,
        model: &str,
        started: Instant,
        error: Option<&ProviderError>,
    ) {
        self.attempts.push(Attempt {
            provider: provider.to_string(),
            model: model.to_string(),
            error: error.map(|e| Cow::Borrowed(e.code())),
            upstream_status: match error {
                Some(ProviderError::Status { status, .. }) => Some(*status),
                _ => None,
            },
            latency_ms: started.elapsed().as_millis() as u64,
            retry_reason: None,
        });
        if error.is_none() {
            self.provider = Some(provider.to_string());
            self.model = Some(model.to_string());
        }
    }

    /// A stream that had answered failed mid-way: the attempt that was answering carries
    /// the error (it was recorded as a success at its first event).
    pub fn stream_failed(&mut self, e: &ProviderError) {
        if let Some(a) = self.attempts.iter_mut().rev().find(|a| a.error.is_none()) {
            a.error = Some(Cow::Borrowed(e.code()));
            if let ProviderError::Status { status, .. } = e {
                a.upstream_status = Some(*status);
            }
        }
    }

    /// A target not tried, and why (`circuit_open`).
    pub fn attempt_skipped(&mut self, provider: &str, model: &str, reason: &'static str) {
        self.attempts.push(Attempt {
            provider: provider.to_string(),
            model: model.to_string(),
            error: Some(Cow::Borrowed(reason)),
            upstream_status: None,
            latency_ms: 0,
            retry_reason: None,
        });
    }

    /// The last attempt turned out to be the last: whatever reason it was given for a
    /// next one (none came) is taken back.
    pub fn no_next_attempt(&mut self) {
        if let Some(a) = self.attempts.last_mut() {
            a.retry_reason = None;
        }
    }

    /// Notes why the call moves on from its last attempt.
    pub fn moving_on(&mut self, reason: &'static str) {
        if let Some(a) = self.attempts.last_mut() {
            a.retry_reason = Some(Cow::Borrowed(reason));
        }
    }

    pub fn keep_invalid_body(&mut self, body: &[u8]) {
        let end = body.len().min(INVALID_BODY_KEPT);
        self.invalid_body = Some(String::from_utf8_lossy(&body[..end]).into_owned());
    }

    /// The call's cost in USD, once its usage is known; `None` when the usage or the
    /// price is unknown.
    pub fn cost_usd(&self) -> Option<f64> {
        if self.cache.served() {
            // Answered from a kept answer: no provider was paid.
            return Some(0.0);
        }
        let last = self.price?.cost(self.usage.as_ref()?);
        let total = match &self.discarded {
            Some(d) => last + d.cost?,
            None => last,
        };
        Some(llmop_cost::round_usd(total))
    }

    /// An answer that will not be returned (its output did not parse): its tokens and
    /// cost are added to the call's.
    pub fn discard(&mut self, usage: Option<Usage>) {
        let price = self.price;
        let d = self.discarded.get_or_insert(Spent {
            usage: Usage::default(),
            cost: Some(0.0),
        });
        match usage {
            Some(u) => {
                d.usage.input_tokens += u.input_tokens;
                d.usage.output_tokens += u.output_tokens;
                d.usage.cached_input_tokens += u.cached_input_tokens;
                d.usage.cache_write_tokens += u.cache_write_tokens;
                d.cost = match (d.cost, price) {
                    (Some(c), Some(p)) => Some(c + p.cost(&u)),
                    _ => None,
                };
            }
            None => d.cost = None,
        }
    }

    pub fn succeeded(&mut self, resp: ChatResponse) {
        self.usage = resp.usage;
        self.status = Some(200);
        self.response = Some(resp);
    }

    pub fn failed(&mut self, e: &GatewayError, status: u16) {
        self.status = Some(status);
        self.error_code = Some(e.code());
    }

    /// Hands the record to the writer and waits as the durability mode says: in
    /// `strict` mode until it is committed, else until it is queued (which waits only
    /// when the queue is full: back-pressure), or committed while the writer is more
    /// than `[store] max_lag_ms` behind.
    pub async fn finish(&mut self) {
        let Some(data) = self.take() else { return };
        let Some(recorder) = self.recorder.clone() else {
            return;
        };
        let result = if recorder.strict {
            recorder.writer.submit_strict(data).await
        } else {
            recorder.writer.submit(data).await
        };
        if result.is_err() {
            tracing::error!(request_id = %self.request_id, "the record of this call could not be committed");
        }
    }

    /// A successful call's answer, as its client got it, kept where its cache ticket
    /// says (response cache, idempotency lease); a failed one's ticket is dropped, which
    /// lets the next idempotent retry run.
    fn keep_answer(&mut self) {
        let Some(ticket) = self.cache.ticket.take() else {
            return;
        };
        let ok = self.status == Some(200) && !self.degraded && self.error_code.is_none();
        if !ok {
            return;
        }
        let mut ticket = ticket;
        // A feature answer its parser refused (answered by the static response, or an
        // error) is not one to serve again.
        if self
            .feature
            .as_ref()
            .is_some_and(|f| matches!(f.parse_status, Some("static" | "failed")))
        {
            ticket.put = None;
        }
        // Each answer is built only for the place that keeps it: a call with a cache
        // slot and no lease clones nothing for the lease, and the reverse.
        let raw = match ticket.put {
            Some(_) => ticket.raw.take().or_else(|| {
                self.stream_acc
                    .as_ref()
                    .filter(|a| a.is_finished())
                    .map(|a| a.clone().finish(0))
            }),
            None => None,
        };
        let client = match ticket.lease {
            Some(_) => self.response.clone().or_else(|| {
                self.cache
                    .sent
                    .take()
                    .filter(|a| a.is_finished())
                    .map(|a| a.finish(0))
            }),
            None => None,
        };
        let made = crate::caching::Made {
            provider: self.provider.clone(),
            model: self.model.clone(),
            cost_usd: self.cost_usd(),
            request_id: self.request_id.clone(),
            parsed: self.feature.as_ref().and_then(|f| f.parsed.clone()),
        };
        ticket.complete(made, raw, client);
    }

    /// Emits the call summary and moves the call's parts out; `None` when already done.
    fn take(&mut self) -> Option<Box<CallData>> {
        if self.emitted {
            return None;
        }
        self.emitted = true;
        self.keep_answer();
        if let Some(adm) = self.admission.take() {
            if self.usage.is_none() {
                self.usage = self.stream_acc.as_ref().and_then(StreamAccumulator::usage);
            }
            adm.settle(self.cost_usd());
        }
        if let Some(g) = &self.guard {
            crate::guard::count(g);
        }
        let status = self.status.unwrap_or(CLIENT_CLOSED);
        let latency = self.started.elapsed();
        // With a store, the record is the record; the log line is for debugging.
        if self.recorder.is_some() {
            tracing::debug!(target: "llmop::call", request_id = %self.request_id, status, latency_ms = latency.as_millis() as u64, "call");
        } else {
            let usage = self.usage.unwrap_or_default();
            tracing::info!(
                target: "llmop::call",
                request_id = %self.request_id,
                endpoint = self.endpoint,
                model = %self.model_requested,
                route = self.route.as_deref().unwrap_or(""),
                provider = self.provider.as_deref().unwrap_or(""),
                upstream_model = self.model.as_deref().unwrap_or(""),
                upstream_id = self.upstream_id.as_deref().unwrap_or(""),
                stream = self.stream,
                status,
                error = self.error_code.unwrap_or(""),
                client_disconnected = status == CLIENT_CLOSED,
                latency_ms = latency.as_millis() as u64,
                ttft_ms = self.time_to_first_token.map(|d| d.as_millis() as u64),
                input_tokens = usage.input_tokens,
                output_tokens = usage.output_tokens,
                cached_tokens = usage.cached_input_tokens,
                user = self.context.user.as_deref().unwrap_or(""),
                session = self.context.session.as_deref().unwrap_or(""),
                env = self.context.env.as_deref().unwrap_or(""),
                feature = self.context.feature.as_deref().unwrap_or(""),
                attempts = self.attempts.len(),
                "call"
            );
        }
        self.recorder.as_ref()?;
        self.data.entered_record();
        self.data.status = Some(status);
        self.data.latency = latency;
        let empty = Box::new(CallData::new("", self.data.endpoint, 0, None, None));
        Some(std::mem::replace(&mut self.data, empty))
    }
}

impl Drop for CallRecord {
    /// A call dropped before it finished (the client disconnected) is still recorded.
    fn drop(&mut self) {
        if let Some(data) = self.take() {
            if let Some(r) = &self.recorder {
                r.writer.submit_detached(data);
            }
        }
    }
}

/// Deletes records older than `days`, at start and then hourly, until shutdown.
pub fn spawn_retention(recorder: Arc<Recorder>, days: u32, shutdown: crate::shutdown::Shutdown) {
    tokio::spawn(async move {
        let keep_ms = i64::from(days) * 86_400_000;
        loop {
            let cutoff = unix_ms() - keep_ms;
            match recorder.store.purge_before(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(records = n, days, "retention: purged old records"),
                Err(e) => {
                    tracing::error!(error = %e, "retention purge failed; retrying in an hour")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = shutdown.triggered() => return,
            }
        }
    });
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The request as recorded: its messages and its other parameters in the OpenAI Chat
/// Completions shape, whatever format the client spoke: one documented shape to query
/// and to replay. Fields of an Anthropic request that have no OpenAI equivalent are kept
/// under `anthropic_extra`.
fn split_request(req: &ChatRequest) -> (Value, Value) {
    let mut params = match llmop_wire::openai::request_value(req) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let messages = params
        .remove("messages")
        .unwrap_or(Value::Array(Vec::new()));
    // What the client sent, not what llmop asks of an upstream on its own account.
    if !(req.origin == WireFormat::OpenAi && req.include_usage) {
        params.remove("stream_options");
    }
    if req.origin == WireFormat::Anthropic && !req.extra.is_empty() {
        params.insert("anthropic_extra".into(), Value::Object(req.extra.clone()));
    }
    (Value::Object(params), messages)
}

impl IntoRecord for Box<CallData> {
    fn into_record(self) -> Record {
        let c = *self;
        let status = c.status.unwrap_or(CLIENT_CLOSED);
        let mut r = Record::new(c.request_id, c.started_at_ms, c.endpoint);
        r.stages = c.stages.names();
        // The call's own identity, made here on the writer's task (off the request
        // path) once per record: retried commits and spill files carry the same one.
        r.call_uid = llmop_core::context::new_request_id();
        r.env = c.context.env;
        r.key_id = c.key_id;
        r.user = c.context.user;
        r.session = c.context.session;
        r.feature = c.context.feature;
        r.tags = c.context.tags;
        r.replay_of = c.context.replay_of;
        r.traceparent = c.context.traceparent.map(|t| t.to_header());
        r.route = c.route;
        r.stream = c.stream;
        r.provider = c.provider;
        r.model = c.model;
        r.upstream_id = c.upstream_id;
        r.status = status;
        r.error_code = c.error_code.map(str::to_string);
        r.client_disconnected = status == CLIENT_CLOSED;
        r.degraded = c.degraded;
        r.latency_ms = c.latency.as_millis() as i64;
        r.ttft_ms = c.time_to_first_token.map(|d| d.as_millis() as i64);
        r.attempts = c.attempts;
        match &c.request {
            Some(req) => {
                let (mut params, messages) = split_request(req);
                if let (Some(e), Value::Object(m)) = (&c.responses, &mut params) {
                    // What rebuilding the conversation (`previous_response_id`) and
                    // reading the response back (`GET /v1/responses/{id}`) need.
                    m.insert(
                        "responses".into(),
                        serde_json::json!({
                            "store": e.store,
                            "instructions": e.has_instructions,
                            "previous_response_id": e.previous_response_id,
                        }),
                    );
                }
                r.request_params = params;
                r.input_messages = messages;
            }
            None => {
                let mut params = Map::new();
                if !c.model_requested.is_empty() {
                    params.insert("model".into(), Value::String(c.model_requested));
                }
                if let Some(b) = c.invalid_body {
                    params.insert("invalid_body".into(), Value::String(b));
                }
                r.request_params = Value::Object(params);
            }
        }
        if let Some(e) = c.embed {
            r.request_params = e.params;
            r.input_messages = e.inputs;
            r.parsed_output = e.vectors;
        }
        r.reasoning_state = crate::reasoning::to_store(c.kept);
        let answer = c.response.or_else(|| c.stream_acc.map(|a| a.finish(0)));
        if let Some(a) = &answer {
            if !a.model.is_empty() {
                r.upstream_model = Some(a.model.clone());
            }
            r.system_fingerprint
                .clone_from(&a.details.system_fingerprint);
            r.service_tier.clone_from(&a.details.service_tier);
            let text = a.text();
            // A call that produced nothing (an error before any output) has no output
            // text, which is not the same as an empty answer.
            if !text.is_empty() || a.parts.is_empty() && status < 400 {
                r.output_text = Some(text);
            }
            r.output_tool_calls = Value::Array(
                a.parts
                    .iter()
                    .filter_map(|p| match p {
                        Part::ToolCall(tc) => serde_json::to_value(tc).ok(),
                        _ => None,
                    })
                    .collect(),
            );
        }
        r.agent = c.agent.and_then(|a| a.to_record());
        // Masked before anything is cut: a cut field keeps its text escaped.
        let variables = c.feature.as_ref().map(|f| &f.variables);
        let scrubber = guard_scrubber(&mut r, c.guard, c.policy, c.request.as_deref(), variables);
        if let Some(s) = &scrubber {
            s.value(&mut r.input_messages);
            s.value(&mut r.request_params);
            s.value(&mut r.output_tool_calls);
            if let Some(t) = r.output_text.as_mut() {
                s.text(t);
            }
            // A request's `user` (OpenAI) or `metadata.user_id` (Anthropic) is the
            // record's user too: the input rules read it as text.
            for t in [r.user.as_mut(), r.session.as_mut()].into_iter().flatten() {
                s.text(t);
            }
            r.tags.values_mut().for_each(|t| s.text(t));
        }
        // A record keeps at most max_field_bytes of each large field: a 200 MB answer or
        // a 10 MB tool list must not become a row that size. What is cut is flagged.
        let cap = c.max_field_bytes;
        if let Some(t) = r.output_text.as_mut() {
            r.truncated |= cut_text(t, cap);
        }
        r.truncated |= cap_json(&mut r.input_messages, cap);
        r.truncated |= cap_json(&mut r.request_params, cap);
        r.truncated |= cap_json(&mut r.output_tool_calls, cap);
        if let Some(v) = r.parsed_output.as_mut() {
            r.truncated |= cap_json(v, cap);
        }
        if let Some(f) = c.feature {
            let f = *f;
            r.feature_version = Some(f.version);
            r.content_hash = Some(f.content_hash);
            r.arm = f.arm;
            let mut variables = Value::Object(f.variables);
            let mut prompt = f.rendered_prompt;
            let mut parsed = f.parsed;
            if let Some(s) = &scrubber {
                s.value(&mut variables);
                s.text(&mut prompt);
                if let Some(p) = parsed.as_mut() {
                    s.value(p);
                }
            }
            r.truncated |= cap_json(&mut variables, cap);
            r.variables = Some(variables);
            r.truncated |= cut_text(&mut prompt, cap);
            r.rendered_prompt = Some(prompt);
            r.shadow = f.shadow_of.is_some();
            r.shadow_of = f.shadow_of;
            r.parse_status = f.parse_status.map(str::to_string);
            r.parsed_output = parsed;
            // A stream's output is parsed here, on the writer's task: its client saw
            // the text as it came; the record says whether it parsed.
            if let (Some(v), Some(text)) = (f.parse_later, &r.output_text) {
                if status < 400 && !c.degraded {
                    match v.parse_output(text) {
                        Ok(p) => {
                            r.parse_status = Some("ok".into());
                            r.parsed_output = Some(p);
                        }
                        Err(_) => r.parse_status = Some("failed".into()),
                    }
                }
            }
        }
        r.cache = c.cache.outcome.map(str::to_string);
        r.baseline_usd = c.baseline_usd;
        let served = c.cache.served();
        let usage = if served {
            // No provider was called: no tokens, no cost; what it saved is recorded.
            r.saved_usd = c.cache.saved_usd;
            r.cache_source = c.cache.source;
            r.input_tokens = Some(0);
            r.output_tokens = Some(0);
            r.cached_tokens = Some(0);
            r.cost_usd = Some(0.0);
            None
        } else {
            c.usage.or(answer.as_ref().and_then(|a| a.usage))
        };
        if let Some(u) = usage {
            let d0 = c.discarded.map_or(0, |d| d.usage.cache_write_tokens);
            r.cache_write_tokens = Some((u.cache_write_tokens + d0) as i64);
            let d = c.discarded.map_or(Usage::default(), |d| d.usage);
            r.input_tokens = Some((u.input_tokens + d.input_tokens) as i64);
            r.output_tokens = Some((u.output_tokens + d.output_tokens) as i64);
            r.cached_tokens = Some((u.cached_input_tokens + d.cached_input_tokens) as i64);
            r.reasoning_tokens = Some((u.reasoning_tokens + d.reasoning_tokens) as i64);
            let earlier = c.discarded.map_or(Some(0.0), |d| d.cost);
            match (c.price, earlier) {
                (Some(p), Some(e)) => r.cost_usd = Some(llmop_cost::round_usd(p.cost(&u) + e)),
                // Unknown, not zero: the record says NULL and the metric counts it.
                _ => metrics::counter!(
                    "llmop_cost_unknown_total",
                    "provider" => r.provider.clone().unwrap_or_default(),
                    "model" => r.model.clone().unwrap_or_default()
                )
                .increment(1),
            }
        }
        // Online evaluators sampled for this call: deterministic checks score it here
        // (their scores are part of the record's row); the others are queued with the record
        // and scored later by the online worker.
        if let Some(sampler) = &c.online {
            let mut names = sampler.sample(&llmop_eval::online::Call {
                request_id: &r.request_id,
                feature: r.feature.as_deref(),
                env: r.env.as_deref(),
                status: r.status,
                tags: &r.tags,
            });
            if let (false, Some(feature)) = (names.is_empty(), r.feature.clone()) {
                let answer = llmop_eval::evaluate::Answer::from_record(&r);
                let scored = sampler.score_inline(&feature, &answer, &mut names);
                r.online_scores = scored
                    .into_iter()
                    .map(|(name, s)| {
                        llmop_store::InlineScore::compact(name, s.value, s.pass, s.detail, s.error)
                    })
                    .collect();
                for s in &r.online_scores {
                    count_score(&feature, &s.evaluator, s.pass, s.error.is_some());
                }
            }
            r.online_evals = names;
        }
        r
    }
}

/// The guardrails' part of a record: their verdicts, and every value they found (or
/// put behind a placeholder) masked wherever the record holds it. A call refused before
/// its input guard ran is masked of what its input rules find now, on the writer's task,
/// and so are a feature call's variables (recorded whole; one no template uses is never
/// sent, so never checked on the way).
fn guard_scrubber(
    r: &mut Record,
    guard: Option<Box<crate::guard::GuardCall>>,
    policy: Option<Arc<llmop_guard::policy::Policy>>,
    request: Option<&ChatRequest>,
    variables: Option<&Map<String, Value>>,
) -> Option<llmop_guard::transform::Scrubber> {
    let variables = variables.filter(|v| !v.is_empty());
    match guard {
        Some(g) => {
            let mut g = *g;
            // The call's own policy and rules, as its guard stages applied them.
            if let Some(v) = variables {
                g.policy.collect_object(&g.applicable, v, &mut g.book);
            }
            r.guardrails = std::mem::take(&mut g.book.verdicts);
            g.book.scrubber(Some(g.vault))
        }
        None => {
            let p = policy?;
            let a = p.for_call(llmop_guard::policy::Scope {
                route: r.route.as_deref(),
                feature: r.feature.as_deref(),
                key: r.key_id.as_deref(),
            });
            let mut book = llmop_guard::policy::Book::default();
            if let Some(v) = variables {
                p.collect_object(&a, v, &mut book);
            }
            match request {
                Some(req) => p.collect_input(&a, req, &mut book),
                None => {
                    if let Some(Value::String(body)) = r.request_params.get("invalid_body") {
                        let part = llmop_core::config::GuardPart::Text;
                        p.collect_text(&a, part, body, &mut book);
                    }
                }
            }
            book.scrubber(None)
        }
    }
}

/// Counts a stored online score (`llmop_online_scores_total`): the
/// deterministic checks' here, as the record is built; the worker's for the rest.
pub(crate) fn count_score(feature: &str, evaluator: &str, pass: Option<bool>, error: bool) {
    let outcome = match (error, pass) {
        (true, _) => "error",
        (false, Some(true)) => "pass",
        (false, _) => "fail",
    };
    metrics::counter!(
        "llmop_online_scores_total",
        "feature" => feature.to_string(),
        "evaluator" => evaluator.to_string(),
        "outcome" => outcome
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer lingers three fifths of the lag bound: 30 ms at the default 50, less
    /// under a tighter bound (never past it), 30 ms with none.
    #[test]
    fn the_writer_lingers_well_inside_the_lag_bound() {
        assert_eq!(linger_for(50), Duration::from_millis(30));
        assert_eq!(linger_for(10), Duration::from_millis(6));
        assert_eq!(linger_for(1), Duration::from_micros(600));
        assert_eq!(linger_for(0), Duration::from_millis(30));
    }

    #[test]
    fn large_fields_are_cut_keeping_their_type() {
        let mut small = serde_json::json!([{"role": "user", "content": "hi"}]);
        assert!(!cap_json(&mut small, 1024));
        let mut big = serde_json::json!([{"role": "user", "content": "é".repeat(4000)}]);
        assert!(cap_json(&mut big, 1024));
        assert!(big.is_array());
        let head = big[0]["head"].as_str().unwrap();
        assert!(head.len() <= 1024 && head.starts_with("[{"));
        assert!(big[0]["truncated_from_bytes"].as_u64().unwrap() > 8000);
        let mut params = serde_json::json!({"tools": ["x".repeat(5000)]});
        assert!(cap_json(&mut params, 1024));
        assert!(params.is_object());
        let mut text = "ab€".repeat(1000);
        assert!(cut_text(&mut text, 1000));
        assert!(text.len() <= 1000);
    }
}
