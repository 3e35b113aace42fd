//! Encoding answers in the client's format: whole JSON responses and SSE streams.

use crate::headers;
use crate::http_error::WireFormat;
use crate::record::CallRecord;
use crate::state::AppState;
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use llmop_core::codes;
use llmop_core::{ChatResponse, GatewayError, StreamEvent};
use llmop_providers::EventStream;
use llmop_wire::{anthropic, openai, responses};
use std::convert::Infallible;

/// The id a client sees for an answer whose upstream gave none.
fn fallback_id(format: WireFormat, request_id: &str) -> String {
    match format {
        WireFormat::OpenAi => format!("chatcmpl-{request_id}"),
        WireFormat::Anthropic => format!("msg_{request_id}"),
        WireFormat::Responses => response_id(request_id),
    }
}

/// The id of a `/v1/responses` answer: always the gateway's, so that
/// `GET /v1/responses/{id}` and `previous_response_id` find its record.
pub fn response_id(request_id: &str) -> String {
    format!("resp_{request_id}")
}

/// The request id of a response id, if it is one llmop issued.
pub fn request_id_of(response_id: &str) -> Option<&str> {
    response_id.strip_prefix("resp_").filter(|r| !r.is_empty())
}

pub fn call_headers(resp: &mut Response, rec: &CallRecord) {
    let h = resp.headers_mut();
    if let Some(p) = rec
        .provider
        .as_deref()
        .and_then(|p| HeaderValue::from_str(p).ok())
    {
        h.insert(headers::X_LLMOP_PROVIDER, p);
    }
    if let Some(m) = rec
        .model
        .as_deref()
        .and_then(|m| HeaderValue::from_str(m).ok())
    {
        h.insert(headers::X_LLMOP_MODEL, m);
    }
    if let Ok(v) = HeaderValue::from_str(&rec.attempts.len().to_string()) {
        h.insert(headers::X_LLMOP_ATTEMPTS, v);
    }
    if rec.degraded {
        h.insert(headers::X_LLMOP_DEGRADED, HeaderValue::from_static("true"));
    }
    match rec.cache.outcome {
        Some("replay") => {
            h.insert(
                headers::IDEMPOTENT_REPLAYED,
                HeaderValue::from_static("true"),
            );
        }
        Some(o) => {
            h.insert(headers::X_LLMOP_CACHE, HeaderValue::from_static(o));
        }
        None => {}
    }
    if let Some(v) = rec
        .cache
        .source
        .as_deref()
        .and_then(|s| HeaderValue::from_str(s).ok())
    {
        h.insert(headers::X_LLMOP_CACHE_SOURCE, v);
    }
    if let Some(v) = rec
        .cost_usd()
        .and_then(|c| HeaderValue::from_str(&llmop_cost::format_usd(c)).ok())
    {
        h.insert(headers::X_LLMOP_COST_USD, v);
    }
    if let Some(f) = &rec.feature {
        if let Ok(v) = HeaderValue::from_str(&f.version.to_string()) {
            h.insert(headers::X_LLMOP_FEATURE_VERSION, v);
        }
        if let Some(arm) = f.arm.as_deref().and_then(|a| HeaderValue::from_str(a).ok()) {
            h.insert(headers::X_LLMOP_FEATURE_ARM, arm);
        }
    }
}

/// A whole answer as JSON.
pub fn whole(
    app: &AppState,
    format: WireFormat,
    mut resp: ChatResponse,
    rec: &mut CallRecord,
) -> Response {
    rec.kept = app.reasoning.keep_whole(format, &mut resp);
    if !resp.id.is_empty() {
        rec.upstream_id = Some(resp.id.clone());
    }
    if resp.id.is_empty() || format == WireFormat::Responses {
        resp.id = fallback_id(format, &rec.request_id);
    }
    if resp.model.is_empty() {
        resp.model = rec.model.clone().unwrap_or_default();
    }
    let body = match format {
        WireFormat::OpenAi => openai::encode_response(&resp),
        WireFormat::Anthropic => anthropic::encode_response(&resp),
        WireFormat::Responses => {
            let empty = serde_json::Map::new();
            let echo = rec.responses.as_deref().map_or(&empty, |e| &e.fields);
            responses::encode_response(&resp, &resp.id, echo)
        }
    };
    rec.succeeded(resp);
    let mut r = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    call_headers(&mut r, rec);
    r
}

enum Encoder {
    OpenAi(openai::StreamEncoder),
    Anthropic(anthropic::StreamEncoder),
    Responses(Box<responses::StreamEncoder>),
}

impl Encoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut BytesMut) {
        match self {
            Encoder::OpenAi(e) => e.encode(ev, out),
            Encoder::Anthropic(e) => e.encode(ev, out),
            Encoder::Responses(e) => e.encode(ev, out),
        }
    }
    fn finish(&mut self, out: &mut BytesMut) {
        match self {
            Encoder::OpenAi(e) => e.finish(out),
            Encoder::Anthropic(e) => e.finish(out),
            Encoder::Responses(e) => e.finish(out),
        }
    }
    fn error(&mut self, out: &mut BytesMut, code: &str, message: &str) {
        match self {
            Encoder::OpenAi(e) => e.error(out, code, message),
            Encoder::Anthropic(e) => e.error(out, code, message),
            Encoder::Responses(e) => e.error(out, code, message),
        }
    }
}

/// State of a stream being relayed to the client. Owns the call's record: when the
/// relay ends, or the client disconnects and the body is dropped, the record is emitted.
struct Relay {
    encoder: Encoder,
    first: Option<StreamEvent>,
    upstream: EventStream,
    /// Owns the stream's accumulator (`rec.stream_acc`), so a stream cut short by its
    /// client is recorded with what was relayed so far.
    rec: CallRecord,
    done: bool,
    /// The gateway's drain deadline: when it passes, the stream ends with a terminal
    /// `shutting_down` event instead of being cut mid-chunk.
    deadline: tokio::sync::watch::Receiver<bool>,
    /// Keeps reasoning state the client cannot carry (and renames its calls).
    keeper: crate::reasoning::StreamKeeper,
    /// The output guard: holds text back and tool calls until whole, and checks them.
    guard: Option<llmop_guard::policy::OutStream>,
    /// The guard's released events, reused from event to event.
    released: Vec<StreamEvent>,
    /// The upstream ended and the guard's model-based checks are still to run.
    ending: bool,
    /// The agent screen: tool calls held until the stream ends, then decided.
    agent: Option<(
        std::sync::Arc<crate::agent::AgentGate>,
        crate::agent::AgentStream,
    )>,
}

impl Drop for Relay {
    /// A client that goes away mid-stream still leaves the state kept so far in its
    /// record (the record itself is emitted when `rec` drops, right after).
    fn drop(&mut self) {
        if !self.done {
            self.rec.kept = self.keeper.take();
            self.close_guard();
        }
    }
}

/// Most bytes gathered into one body chunk before it is written.
const COALESCE_LIMIT: usize = 16 * 1024;

impl Relay {
    /// The guard's verdicts into the record, once.
    fn close_guard(&mut self) {
        if let (Some(g), Some(gc)) = (self.guard.as_mut(), self.rec.guard.as_deref_mut()) {
            g.close(&mut gc.book);
        }
        self.guard = None;
    }

    /// An event through the output guard (if any) and into `out`; false when the guard
    /// stopped the stream (an error event ends it: nothing after the match is sent).
    fn relay(&mut self, ev: Option<StreamEvent>, out: &mut BytesMut) -> bool {
        let (Some(g), Some(gc)) = (self.guard.as_mut(), self.rec.guard.as_deref_mut()) else {
            return match ev {
                Some(ev) => self.emit(ev, out),
                None => true,
            };
        };
        let checked = match ev {
            Some(ev) => g.push(ev, &mut self.released, &mut gc.book),
            None => g.finish(&mut self.released, &mut gc.book),
        };
        let mut released = std::mem::take(&mut self.released);
        let mut open = true;
        for ev in released.drain(..) {
            if open {
                open = self.emit(ev, out);
            }
        }
        self.released = released;
        if !open {
            return false;
        }
        match checked {
            Ok(()) => true,
            Err(stop) => {
                self.guard_stopped(&stop, out);
                false
            }
        }
    }

    /// An event on its way to the client: through the agent screen (which holds tool
    /// calls until the stream ends), then encoded. False when the screen ended the
    /// stream (it held more than it may).
    fn emit(&mut self, ev: StreamEvent, out: &mut BytesMut) -> bool {
        let ev = match self.agent.as_mut() {
            None => ev,
            Some((_, a)) => match a.pass(ev) {
                crate::agent::Pass::Out(ev) => ev,
                crate::agent::Pass::Held => return true,
                crate::agent::Pass::TooMuch(ge) => {
                    self.agent = None;
                    self.encoder.error(out, ge.code(), &ge.to_string());
                    self.rec.failed(&ge, 200);
                    self.close_guard();
                    self.done = true;
                    return false;
                }
            },
        };
        if let Some(s) = self.rec.cache.sent.as_mut() {
            s.push(&ev);
        }
        self.encoder.encode(&ev, out);
        true
    }

    /// The agent screen's end: the tool calls it held are decided; the allowed ones
    /// (and refusals in place of denied ones) go out, or an error event ends the stream
    /// (a held call's approval, `deny_as = "error"`). False when the stream ended so.
    async fn end_agent(&mut self, out: &mut BytesMut) -> bool {
        let Some((gate, a)) = self.agent.take() else {
            return true;
        };
        if !a.holds() {
            return true;
        }
        self.rec.entered(crate::stage::Stage::AgentOut);
        let Some(mut call) = self.rec.agent.take() else {
            return true;
        };
        let screened = gate.finish_stream(a, &mut call, self.rec.agent_who()).await;
        self.rec.agent = Some(call);
        match screened {
            Ok(events) => {
                for ev in &events {
                    if let Some(s) = self.rec.cache.sent.as_mut() {
                        s.push(ev);
                    }
                    self.encoder.encode(ev, out);
                }
                true
            }
            Err(ge) => {
                self.encoder.error(out, ge.code(), &ge.to_string());
                self.rec.failed(&ge, 200);
                self.close_guard();
                self.done = true;
                false
            }
        }
    }

    /// A guardrail ended the stream: one error event, and the record says why.
    fn guard_stopped(&mut self, stop: &llmop_guard::policy::Stop, out: &mut BytesMut) {
        let ge = crate::guard::stop_error(&self.rec.request_id, stop);
        self.encoder.error(out, ge.code(), &ge.to_string());
        self.rec.failed(&ge, 200);
        self.close_guard();
        self.done = true;
    }

    /// The stream's normal end.
    fn end_ok(&mut self, out: &mut BytesMut) {
        self.close_guard();
        self.encoder.finish(out);
        self.rec.status = Some(200);
        self.done = true;
    }

    /// The end of a stream whose output rules include model-based checks: what the
    /// guard still holds is checked, then the checks run on the whole answer (each
    /// bounded by its timeout); a stop ends the stream with an error event, and what
    /// a `block` rule held back is never sent.
    async fn end_checked(&mut self, out: &mut BytesMut) {
        self.ending = false;
        if !self.relay(None, out) {
            return;
        }
        if let (Some(g), Some(gc)) = (
            self.guard.as_mut().filter(|g| g.has_late()),
            self.rec.guard.as_deref_mut(),
        ) {
            let asks = g.late_asks();
            let started = std::time::Instant::now();
            let outcomes = crate::guard::run_asks(&gc.policy, gc.checks.as_ref(), asks).await;
            match g.settle_late(outcomes, started.elapsed(), &mut gc.book) {
                Ok(()) => {
                    let pending: Vec<StreamEvent> = g.take_pending().into_iter().collect();
                    for ev in pending {
                        if !self.emit(ev, out) {
                            return;
                        }
                    }
                }
                Err(stop) => {
                    self.guard_stopped(&stop, out);
                    return;
                }
            }
        }
        if self.end_agent(out).await {
            self.end_ok(out);
        }
    }

    /// Handles one upstream item; returns false once the stream is over.
    fn take(
        &mut self,
        item: Option<Result<StreamEvent, llmop_core::ProviderError>>,
        out: &mut BytesMut,
    ) -> bool {
        match item {
            Some(Ok(mut ev)) => {
                self.keeper.observe(&mut ev);
                if let Some(acc) = &mut self.rec.stream_acc {
                    acc.push(&ev);
                }
                self.relay(Some(ev), out)
            }
            Some(Err(e)) => {
                // Bytes were already sent: the stream is not restarted elsewhere; it
                // ends with a well-formed error event, and the attempt that produced it
                // carries the error.
                self.rec.stream_failed(&e);
                self.close_guard();
                let ge = GatewayError::Provider(e);
                self.encoder.error(out, ge.code(), &ge.to_string());
                tracing::warn!(request_id = %self.rec.request_id, error = ge.code(), "stream failed after its first event: ended with an error event");
                self.rec.failed(&ge, 200);
                self.done = true;
                false
            }
            None => {
                if self.guard.as_ref().is_some_and(|g| g.has_late()) || self.agent.is_some() {
                    // The model-based checks on the whole answer, and the agent
                    // screen's decisions, run (async) in `next`.
                    self.ending = true;
                    return false;
                }
                if self.relay(None, out) {
                    self.end_ok(out);
                }
                false
            }
        }
    }

    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        if self.done {
            return None;
        }
        let mut out = BytesMut::with_capacity(512);
        let item = match self.first.take() {
            Some(ev) => Some(Ok(ev)),
            None => {
                let deadline_passed = tokio::select! {
                    biased;
                    item = self.upstream.next() => Err(item),
                    _ = self.deadline.wait_for(|passed| *passed) => Ok(()),
                };
                match deadline_passed {
                    Err(item) => item,
                    Ok(()) => {
                        let ge = GatewayError::Unavailable {
                            message: "the gateway is shutting down: this stream was ended at its drain deadline".into(),
                            code: codes::SHUTTING_DOWN,
                        };
                        self.encoder.error(&mut out, ge.code(), &ge.to_string());
                        self.rec.failed(&ge, 200);
                        self.close_guard();
                        self.done = true;
                        self.rec.usage = self.rec.stream_acc.as_ref().and_then(|a| a.usage());
                        self.rec.kept = self.keeper.take();
                        self.rec.finish().await;
                        return Some((Ok(out.freeze()), self));
                    }
                }
            }
        };
        if self.take(item, &mut out) {
            // Events the upstream has already delivered go out in the same write: fewer
            // syscalls, and no event waits for one that has not arrived yet.
            while out.len() < COALESCE_LIMIT {
                match self.upstream.next().now_or_never() {
                    Some(item) => {
                        if !self.take(item, &mut out) {
                            break;
                        }
                    }
                    None => break,
                }
            }
        }
        if self.ending {
            self.end_checked(&mut out).await;
        }
        if self.done {
            // The last bytes wait for the record in strict mode (until it is committed),
            // under back-pressure (until it is queued), and while the writer lags more
            // than `max_lag_ms` (until it is committed).
            self.rec.usage = self.rec.stream_acc.as_ref().and_then(|a| a.usage());
            self.rec.kept = self.keeper.take();
            self.rec.finish().await;
        }
        Some((Ok(out.freeze()), self))
    }
}

/// A streamed answer as server-sent events.
pub fn stream(
    format: WireFormat,
    first: StreamEvent,
    upstream: EventStream,
    include_usage: bool,
    mut rec: CallRecord,
    app: &AppState,
) -> Response {
    let (id, model) = match &first {
        StreamEvent::Start { id, model } => (id.clone(), model.clone()),
        _ => (String::new(), String::new()),
    };
    if !id.is_empty() {
        rec.upstream_id = Some(id.clone());
    }
    let id = if id.is_empty() || format == WireFormat::Responses {
        fallback_id(format, &rec.request_id)
    } else {
        id
    };
    let model = if model.is_empty() {
        rec.model.clone().unwrap_or_default()
    } else {
        model
    };
    let encoder = match format {
        WireFormat::OpenAi => Encoder::OpenAi(openai::StreamEncoder::new(id, model, include_usage)),
        WireFormat::Anthropic => Encoder::Anthropic(anthropic::StreamEncoder::new(id, model)),
        WireFormat::Responses => Encoder::Responses(Box::new(responses::StreamEncoder::new(
            id,
            model,
            rec.responses
                .as_deref()
                .map(|e| e.fields.clone())
                .unwrap_or_default(),
        ))),
    };
    rec.stream_acc = Some(Default::default());
    if rec.cache.ticket.as_ref().is_some_and(|t| t.lease.is_some()) {
        rec.cache.sent = Some(Default::default());
    }
    let guard = rec
        .guard
        .as_deref()
        .filter(|g| g.guards_output())
        .map(|g| g.policy.stream(g.applicable.clone(), g.vault.clone()));
    if guard.is_some() {
        rec.entered(crate::stage::Stage::GuardOut);
    }
    let agent = app.agent.as_ref().and_then(|g| {
        g.stream(rec.agent.as_deref(), rec.request.as_deref())
            .map(|s| (g.clone(), s))
    });
    let mut head = Response::new(Body::empty());
    call_headers(&mut head, &rec);
    let relay = Relay {
        encoder,
        first: Some(first),
        upstream,
        rec,
        done: false,
        deadline: app.shutdown.deadline(),
        keeper: app.reasoning.stream(format),
        guard,
        released: Vec::new(),
        ending: false,
        agent,
    };
    let body = Body::from_stream(futures::stream::unfold(relay, Relay::next));
    let (mut parts, _) = head.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    parts
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies in front of llmop not to buffer the stream.
    parts
        .headers
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Response::from_parts(parts, body)
}
