//! Calling an upstream over HTTP: the mechanics the `openai`, `anthropic` and `gemini`
//! kinds share. What differs between them (URL, auth header, body, error body, stream
//! events) comes from `llmop-wire`.
//!
//! Each provider has its own connection pool (hyper's client): keep-alive, TCP_NODELAY,
//! and HTTP/2 when the upstream offers it over TLS (ALPN).
//!
//! hyper's client, not `reqwest`: a call is one POST to a URL known at start-up, and
//! reqwest's layers around hyper (its `Url` turned into a `Uri` through a string, the
//! redirect layer parsing every request's URL again even with redirects off, default
//! headers merged per request) cost about a tenth of a recorded call's instructions.
//! Redirects are not followed: a 3xx from a provider is an upstream error (a redirect
//! would also be a way for a hostile upstream to send the credentials elsewhere). An
//! egress proxy named by the environment (`HTTPS_PROXY`, `NO_PROXY`) is used through its
//! `CONNECT` tunnel.

use crate::EventStream;
use bytes::Bytes;
use futures::StreamExt;
use http::header::{
    HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT,
};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyDataStream, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use llmop_core::config::{OpenAiApi, ProviderConfig, ProviderKind};
use llmop_core::embed::{EmbedRequest, Embeddings};
use llmop_core::error::TimeoutStage;
use llmop_core::{ChatRequest, ChatResponse, ProviderError, StreamAccumulator, StreamEvent};
use llmop_wire::sse::{SseEvent, SseParser};
use llmop_wire::{anthropic, embeddings, gemini, openai, responses, WireError};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::{timeout_at, Instant};

/// Most of an upstream error body llmop reads to find its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// After the finish event (and its usage), how long a stream may stay open without its
/// end marker (`[DONE]`, `message_stop`) or the end of the body before it is ended
/// cleanly: an upstream that never closes must not turn a complete answer into a
/// timeout.
const AFTER_FINISH_IDLE: Duration = Duration::from_secs(2);

pub struct HttpProvider {
    name: String,
    kind: ProviderKind,
    /// An `openai`-kind provider's API: Chat Completions or Responses.
    api: OpenAiApi,
    base_url: String,
    /// The credentials header, built once and marked sensitive (kept out of hyper's
    /// debug output): `authorization: Bearer …`, `x-api-key` or `x-goog-api-key`.
    auth: Option<(HeaderName, HeaderValue)>,
    client: Client<hyper_rustls::HttpsConnector<Connect>, Full<Bytes>>,
    models: Vec<String>,
    /// Largest whole answer read; past it, `upstream_protocol_error`.
    max_response_bytes: usize,
    /// Largest single stream event.
    max_event_bytes: usize,
    /// The chat endpoint, parsed once (OpenAI and Anthropic kinds; Gemini's URL holds the
    /// model, so it is built per call).
    endpoint: Option<Uri>,
}

const USER_AGENT_VALUE: HeaderValue =
    HeaderValue::from_static(concat!("llmop/", env!("CARGO_PKG_VERSION")));
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

/// How a provider's connections are made: straight to the upstream, or through an HTTP
/// proxy's `CONNECT` tunnel when the environment names one for the provider's URL
/// (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, less `NO_PROXY`, as curl reads them; read
/// once, when the provider is built). TLS to the upstream runs inside the tunnel, so the
/// proxy sees only the host and port.
#[derive(Clone)]
enum Connect {
    Direct(HttpConnector),
    Tunnel(Tunnel<HttpConnector>),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connect {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        match self {
            Connect::Direct(c) => c.poll_ready(cx).map_err(Into::into),
            Connect::Tunnel(t) => t.poll_ready(cx).map_err(Into::into),
        }
    }

    /// Once per new connection (a pooled connection is reused without it).
    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            Connect::Direct(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            Connect::Tunnel(t) => {
                let f = t.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
        }
    }
}

/// The TLS settings of every provider's client: the public web's roots (Mozilla's, as
/// `webpki-roots` ships them) and the provider's own `ca_file`, if any; ALPN offers h2
/// and http/1.1 (set by the connector).
fn tls_config(pc: &ProviderConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &pc.ca_file {
        use rustls::pki_types::pem::PemObject;
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read ca_file `{}`: {e}", path.display()))?;
        let mut n = 0usize;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                format!("ca_file `{}` is not PEM certificates: {e}", path.display())
            })?;
            roots.add(cert).map_err(|e| {
                format!(
                    "ca_file `{}` holds a certificate rustls refuses: {e}",
                    path.display()
                )
            })?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("ca_file `{}` holds no certificate", path.display()));
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

impl HttpProvider {
    pub fn new(name: &str, pc: &ProviderConfig) -> Result<Self, String> {
        let api_key = pc.api_key()?;
        let base_url = pc
            .base_url()
            .ok_or("no base_url")?
            .trim_end_matches('/')
            .to_string();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(Duration::from_millis(pc.connect_timeout_ms)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(pc)?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connect(&base_url, tcp)?);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        let auth = match &api_key {
            None => None,
            Some(key) => {
                let (name, value) = match pc.kind {
                    ProviderKind::Anthropic => (
                        HeaderName::from_static("x-api-key"),
                        HeaderValue::from_str(key.expose()),
                    ),
                    ProviderKind::Gemini => (
                        HeaderName::from_static("x-goog-api-key"),
                        HeaderValue::from_str(key.expose()),
                    ),
                    _ => (
                        AUTHORIZATION,
                        HeaderValue::from_str(&format!("Bearer {}", key.expose())),
                    ),
                };
                // The key itself stays out of the message.
                let mut value =
                    value.map_err(|_| "api_key holds characters a header cannot carry")?;
                value.set_sensitive(true);
                Some((name, value))
            }
        };
        let endpoint = match pc.kind {
            ProviderKind::Anthropic => Some(format!("{base_url}/v1/messages")),
            ProviderKind::Gemini | ProviderKind::Mock => None,
            ProviderKind::Openai if pc.api == OpenAiApi::Responses => {
                Some(format!("{base_url}/responses"))
            }
            ProviderKind::Openai => Some(format!("{base_url}/chat/completions")),
        }
        .map(|u| Uri::try_from(u).map_err(|e| format!("base_url: {e}")))
        .transpose()?;
        Ok(HttpProvider {
            name: name.to_string(),
            kind: pc.kind,
            api: pc.api,
            endpoint,
            base_url,
            auth,
            client,
            models: pc.models.clone(),
            max_response_bytes: pc.max_response_bytes.max(1024),
            max_event_bytes: pc.max_event_bytes.max(1024),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    pub fn models(&self) -> &[String] {
        &self.models
    }

    fn request(
        &self,
        req: &ChatRequest,
        model: &str,
        stream: bool,
        request_id: &str,
    ) -> Result<Request<Full<Bytes>>, ProviderError> {
        let body = match self.kind {
            ProviderKind::Anthropic => anthropic::build_request(req, model, stream),
            ProviderKind::Gemini => Ok(gemini::build_request(req, model)),
            _ if self.api == OpenAiApi::Responses => responses::build_request(req, model, stream),
            _ => Ok(openai::build_request(req, model, stream)),
        }
        .map_err(|u| ProviderError::Unsupported {
            provider: self.name.clone(),
            param: u.param,
            message: u.message,
        })?;
        let uri = match &self.endpoint {
            Some(uri) => uri.clone(),
            None => self.uri(&gemini::path(model, stream))?,
        };
        Ok(self.post(uri, body, stream, request_id))
    }

    /// `base_url` joined with a path (Gemini's model-bearing paths, the side endpoints).
    fn uri(&self, path: &str) -> Result<Uri, ProviderError> {
        Uri::try_from(format!("{}{path}", self.base_url)).map_err(|e| ProviderError::Connect {
            provider: self.name.clone(),
            message: format!("the upstream URL is not valid: {e}"),
        })
    }

    /// A POST of a JSON body with the request id, the provider's version header and its
    /// credentials.
    fn post(
        &self,
        uri: Uri,
        body: Vec<u8>,
        stream: bool,
        request_id: &str,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.insert(USER_AGENT, USER_AGENT_VALUE);
        h.insert(CONTENT_TYPE, JSON);
        h.insert(ACCEPT, if stream { EVENT_STREAM } else { JSON });
        // The id came in as a header or was made here, so it is a valid value; one that
        // is not is left off rather than failing the call.
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(X_REQUEST_ID, v);
        }
        if self.kind == ProviderKind::Anthropic {
            h.insert(
                ANTHROPIC_VERSION,
                HeaderValue::from_static(anthropic::API_VERSION),
            );
        }
        if let Some((name, value)) = &self.auth {
            h.insert(name.clone(), value.clone());
        }
        req
    }

    fn timeout(&self, stage: TimeoutStage) -> ProviderError {
        ProviderError::Timeout {
            provider: self.name.clone(),
            stage,
        }
    }

    fn protocol(&self, e: WireError) -> ProviderError {
        wire_error(&self.name, e)
    }

    /// Sends the request and waits for the status line and headers.
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
        deadline: Instant,
    ) -> Result<Response<Incoming>, ProviderError> {
        let resp = match timeout_at(deadline, self.client.request(req)).await {
            Err(_) => return Err(self.timeout(TimeoutStage::FirstByte)),
            Ok(Err(e)) if is_connect_timeout(&e) => return Err(self.timeout(TimeoutStage::Connect)),
            Ok(Err(e)) => {
                return Err(ProviderError::Connect {
                    provider: self.name.clone(),
                    // hyper's errors carry no URL: nothing the operator does not know.
                    message: error_chain(&e),
                });
            }
            Ok(Ok(r)) => r,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.status_error(resp, deadline).await)
    }

    async fn status_error(&self, resp: Response<Incoming>, deadline: Instant) -> ProviderError {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = read_limited(resp, MAX_ERROR_BODY, deadline).await;
        status_error(self.kind, &self.name, status, retry_after, &body)
    }

    fn parse(&self, body: &[u8]) -> Result<ChatResponse, WireError> {
        match self.kind {
            ProviderKind::Anthropic => anthropic::parse_response(body),
            ProviderKind::Gemini => gemini::parse_response(body),
            _ if self.api == OpenAiApi::Responses => responses::parse_response(body),
            _ => openai::parse_response(body),
        }
    }

    pub async fn complete(
        &self,
        req: &ChatRequest,
        model: &str,
        deadline: Instant,
        request_id: &str,
    ) -> Result<ChatResponse, ProviderError> {
        let resp = self
            .send(self.request(req, model, false, request_id)?, deadline)
            .await
            .map_err(ProviderError::scrubbed)?;
        self.read_whole(resp, deadline)
            .await
            .map_err(ProviderError::scrubbed)
    }

    /// POSTs `body` to `path` (under `base_url`) with the provider's credentials and
    /// reads the answer within the deadline and `max_response_bytes`: the side
    /// endpoints (embeddings, token counting).
    async fn post_json(
        &self,
        path: &str,
        body: Vec<u8>,
        deadline: Instant,
        request_id: &str,
    ) -> Result<Bytes, ProviderError> {
        let req = self.post(self.uri(path)?, body, false, request_id);
        let resp = self
            .send(req, deadline)
            .await
            .map_err(ProviderError::scrubbed)?;
        self.read_capped(resp, deadline)
            .await
            .map_err(ProviderError::scrubbed)
    }

    /// Embeddings: OpenAI-format providers' `/embeddings`, Gemini's
    /// `batchEmbedContents`; Anthropic has none.
    pub async fn embed(
        &self,
        req: &EmbedRequest,
        model: &str,
        deadline: Instant,
        request_id: &str,
    ) -> Result<Embeddings, ProviderError> {
        let unsupported = |message: &str| ProviderError::Unsupported {
            provider: self.name.clone(),
            param: "input".into(),
            message: message.into(),
        };
        let n = req.input.len();
        match self.kind {
            ProviderKind::Gemini => {
                let bodies = embeddings::build_gemini(req, model)
                    .ok_or_else(|| unsupported("Gemini embeds text, not token ids"))?;
                // One call per batch Gemini allows, in order; the vectors joined.
                let mut all = Embeddings {
                    model: model.to_string(),
                    vectors: Vec::with_capacity(n),
                    input_tokens: None,
                };
                let mut left = n;
                for body in bodies {
                    let size = left.min(embeddings::GEMINI_BATCH);
                    left -= size;
                    let b = self
                        .post_json(&embeddings::gemini_path(model), body, deadline, request_id)
                        .await?;
                    let e =
                        embeddings::parse_gemini(&b, size, model).map_err(|e| self.protocol(e))?;
                    all.vectors.extend(e.vectors);
                }
                Ok(all)
            }
            ProviderKind::Anthropic => Err(unsupported("Anthropic offers no embeddings")),
            _ => {
                let b = self
                    .post_json(
                        "/embeddings",
                        embeddings::build_openai(req, model),
                        deadline,
                        request_id,
                    )
                    .await?;
                embeddings::parse_openai(&b, n).map_err(|e| self.protocol(e))
            }
        }
    }

    /// The provider's own count: Anthropic's `POST /v1/messages/count_tokens`, Gemini's
    /// `countTokens`; `None` for OpenAI-format providers (no counting endpoint for chat
    /// completions).
    pub async fn count_tokens(
        &self,
        req: &ChatRequest,
        model: &str,
        deadline: Instant,
        request_id: &str,
    ) -> Result<Option<u64>, ProviderError> {
        if self.kind == ProviderKind::Gemini {
            let body = gemini::build_count_tokens(req, model);
            let b = self
                .post_json(
                    &gemini::count_tokens_path(model),
                    body,
                    deadline,
                    request_id,
                )
                .await?;
            return gemini::parse_count_tokens(&b)
                .map(Some)
                .map_err(|e| self.protocol(e));
        }
        if self.kind != ProviderKind::Anthropic {
            return Ok(None);
        }
        let body =
            anthropic::build_count_tokens(req, model).map_err(|u| ProviderError::Unsupported {
                provider: self.name.clone(),
                param: u.param,
                message: u.message,
            })?;
        let b = self
            .post_json("/v1/messages/count_tokens", body, deadline, request_id)
            .await?;
        anthropic::parse_count_tokens(&b)
            .map(Some)
            .map_err(|e| self.protocol(e))
    }

    /// Reads and parses a whole (non-SSE) answer body within the deadline.
    async fn read_whole(
        &self,
        resp: Response<Incoming>,
        deadline: Instant,
    ) -> Result<ChatResponse, ProviderError> {
        let body = self.read_capped(resp, deadline).await?;
        self.parse(&body).map_err(|e| self.protocol(e))
    }

    /// Reads a whole body within the deadline and `max_response_bytes`.
    async fn read_capped(
        &self,
        resp: Response<Incoming>,
        deadline: Instant,
    ) -> Result<Bytes, ProviderError> {
        let limit = self.max_response_bytes;
        let too_large = || ProviderError::Protocol {
            provider: self.name.clone(),
            message: format!("the answer is larger than max_response_bytes ({limit} bytes)"),
        };
        let length = content_length(&resp);
        if length.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        // Read chunk by chunk against the cap: an upstream cannot make the gateway hold
        // more than `max_response_bytes` of one answer. A body that arrives as one chunk
        // (the usual small answer) is parsed where it is, without a copy.
        let hint = length.unwrap_or(0) as usize;
        let mut first: Option<Bytes> = None;
        let mut joined: Vec<u8> = Vec::new();
        let mut total = 0usize;
        let mut chunks = BodyDataStream::new(resp.into_body());
        loop {
            match timeout_at(deadline, chunks.next()).await {
                Err(_) => return Err(self.timeout(TimeoutStage::Total)),
                Ok(Some(Err(e))) => {
                    return Err(ProviderError::Stream {
                        provider: self.name.clone(),
                        message: error_chain(&e),
                    })
                }
                Ok(Some(Ok(chunk))) => {
                    total += chunk.len();
                    if total > limit {
                        return Err(too_large());
                    }
                    if first.is_none() && joined.is_empty() {
                        first = Some(chunk);
                    } else {
                        if let Some(f) = first.take() {
                            joined.reserve(hint.max(total).min(limit));
                            joined.extend_from_slice(&f);
                        }
                        joined.extend_from_slice(&chunk);
                    }
                }
                Ok(None) => break,
            }
        }
        Ok(match first {
            Some(f) => f,
            None => Bytes::from(joined),
        })
    }

    pub async fn stream(
        &self,
        req: &ChatRequest,
        model: &str,
        deadline: Instant,
        request_id: &str,
    ) -> Result<EventStream, ProviderError> {
        let resp = self
            .send(self.request(req, model, true, request_id)?, deadline)
            .await
            .map_err(ProviderError::scrubbed)?;
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            // Some compatible servers ignore `stream` and answer whole; serve that as a
            // stream rather than fail.
            let whole = self
                .read_whole(resp, deadline)
                .await
                .map_err(ProviderError::scrubbed)?;
            return Ok(futures::stream::iter(whole.into_events().into_iter().map(Ok)).boxed());
        }
        let decoder = match self.kind {
            ProviderKind::Anthropic => Decoder::Anthropic(anthropic::StreamDecoder::new()),
            ProviderKind::Gemini => Decoder::Gemini(gemini::StreamDecoder::new()),
            _ if self.api == OpenAiApi::Responses => {
                Decoder::Responses(responses::StreamDecoder::new())
            }
            _ => Decoder::OpenAi(openai::StreamDecoder::new()),
        };
        let state = StreamState {
            body: BodyDataStream::new(resp.into_body()).boxed(),
            parser: SseParser::with_max_event(self.max_event_bytes),
            decoder,
            pending: VecDeque::new(),
            decoded: Vec::new(),
            ended: false,
            saw_finish: false,
            deferred: None,
            provider: self.name.clone(),
            deadline,
        };
        // Boxed: `unfold` moves its state into each item's future and out again, and
        // the state (parser, decoder, queue) is a few hundred bytes; a box moves as a
        // pointer.
        Ok(futures::stream::unfold(Box::new(state), StreamState::next).boxed())
    }
}

/// Collects a stream into a whole answer (used where a caller needs the whole).
pub async fn collect(mut s: EventStream) -> Result<ChatResponse, ProviderError> {
    let mut acc = StreamAccumulator::default();
    while let Some(ev) = s.next().await {
        acc.push(&ev?);
    }
    Ok(acc.finish(llmop_wire::unix_now()))
}

enum Decoder {
    OpenAi(openai::StreamDecoder),
    Responses(responses::StreamDecoder),
    Anthropic(anthropic::StreamDecoder),
    Gemini(gemini::StreamDecoder),
}

impl Decoder {
    fn decode(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        match self {
            Decoder::OpenAi(d) => d.decode(data, out),
            Decoder::Responses(d) => d.decode(data, out),
            Decoder::Anthropic(d) => d.decode(data, out),
            Decoder::Gemini(d) => d.decode(data, out),
        }
    }

    /// The format's own end marker was seen (`[DONE]`, `message_stop`).
    fn is_done(&self) -> bool {
        match self {
            Decoder::OpenAi(d) => d.is_done(),
            Decoder::Responses(d) => d.is_done(),
            Decoder::Anthropic(d) => d.is_done(),
            // Gemini has no end marker; its stream ends with the connection.
            Decoder::Gemini(_) => false,
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        if let Decoder::Gemini(d) = self {
            if d.is_done() {
                return d.finish(out);
            }
        }
        Ok(())
    }
}

type ByteStream = futures::stream::BoxStream<'static, Result<Bytes, hyper::Error>>;

/// The most events [`StreamState`]'s scratch vector keeps room for between events (a
/// chunk decodes to one to three).
const SCRATCH_EVENTS: usize = 16;

struct StreamState {
    body: ByteStream,
    parser: SseParser,
    decoder: Decoder,
    pending: VecDeque<StreamEvent>,
    /// Scratch for [`StreamState::decode`] (empty between events).
    decoded: Vec<StreamEvent>,
    ended: bool,
    saw_finish: bool,
    /// An error to return once the events before it have been delivered.
    deferred: Option<ProviderError>,
    provider: String,
    deadline: Instant,
}

impl StreamState {
    fn fail(
        mut self: Box<Self>,
        e: ProviderError,
    ) -> Option<(Result<StreamEvent, ProviderError>, Box<Self>)> {
        self.ended = true;
        self.pending.clear();
        Some((Err(e.scrubbed()), self))
    }

    fn push(&mut self, evs: &mut Vec<StreamEvent>) {
        for e in evs.drain(..) {
            if matches!(e, StreamEvent::Finish(_)) {
                self.saw_finish = true;
            }
            self.pending.push_back(e);
        }
    }

    /// Decodes one SSE event; `Err` ends the stream.
    fn decode(&mut self, event: SseEvent) -> Result<(), ProviderError> {
        // The events of one SSE event: a vector kept across events, not one each.
        let mut evs = std::mem::take(&mut self.decoded);
        let decoded = self.decoder.decode(&event.data, &mut evs);
        self.push(&mut evs);
        // Kept only at a chunk's usual size: an upstream's one event that decodes to
        // thousands (tool-call deltas by the thousand) does not leave its room held
        // for the rest of the stream.
        if evs.capacity() <= SCRATCH_EVENTS {
            self.decoded = evs;
        }
        if let Err(e) = decoded {
            // What the decoder emitted before it failed (usage so far) still counts.
            let provider = self.provider.clone();
            // An `error` event is the upstream's word; a parse failure is ours.
            return Err(
                if event.event == "error" || event.data.contains("\"error\"") {
                    ProviderError::Stream {
                        provider,
                        message: e.message,
                    }
                } else {
                    ProviderError::Protocol {
                        provider,
                        message: e.to_string(),
                    }
                },
            );
        }
        if self.decoder.is_done() {
            self.ended = true;
        }
        Ok(())
    }

    /// Ends a stream whose body is complete.
    fn end_of_body(&mut self) -> Result<(), ProviderError> {
        self.ended = true;
        let mut evs = Vec::new();
        let finished = self.decoder.finish(&mut evs);
        self.push(&mut evs);
        if let Err(e) = finished {
            return Err(wire_error(&self.provider, e));
        }
        if self.saw_finish {
            Ok(())
        } else {
            Err(ProviderError::Stream {
                provider: self.provider.clone(),
                message: "the stream ended before the answer was complete".into(),
            })
        }
    }

    async fn next(mut self: Box<Self>) -> Option<(Result<StreamEvent, ProviderError>, Box<Self>)> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some((Ok(ev), self));
            }
            if let Some(e) = self.deferred.take() {
                return self.fail(e);
            }
            if self.ended {
                return None;
            }
            // Events already buffered first; the network only when none is complete.
            let parsed = self.parser.next_event();
            match parsed {
                Err(e) => {
                    let provider = self.provider.clone();
                    return self.fail(ProviderError::Protocol {
                        provider,
                        message: e.to_string(),
                    });
                }
                Ok(Some(event)) => {
                    if let Err(e) = self.decode(event) {
                        // What came before the error (usage so far) is delivered
                        // first, then the error.
                        self.ended = true;
                        self.deferred = Some(e);
                    }
                    continue;
                }
                Ok(None) => {}
            }
            // Once the answer is complete (its finish event came), a silent upstream
            // gets a short bound, then the stream ends cleanly.
            let wait_until = if self.saw_finish {
                self.deadline.min(Instant::now() + AFTER_FINISH_IDLE)
            } else {
                self.deadline
            };
            let item = match timeout_at(wait_until, self.body.next()).await {
                Err(_) if self.saw_finish => {
                    tracing::debug!(provider = %self.provider, "upstream stream idle after its finish event: ended");
                    // Complete: the finish came, so this ends cleanly.
                    let _ = self.end_of_body();
                    continue;
                }
                Err(_) => {
                    let provider = self.provider.clone();
                    return self.fail(ProviderError::Timeout {
                        provider,
                        stage: TimeoutStage::Total,
                    });
                }
                Ok(i) => i,
            };
            match item {
                Some(Ok(chunk)) => self.parser.push(&chunk),
                Some(Err(e)) => {
                    let provider = self.provider.clone();
                    return self.fail(ProviderError::Stream {
                        provider,
                        message: error_chain(&e),
                    });
                }
                None => {
                    let last = match self.parser.finish() {
                        Ok(ev) => ev,
                        Err(e) => {
                            let provider = self.provider.clone();
                            return self.fail(ProviderError::Protocol {
                                provider,
                                message: e.to_string(),
                            });
                        }
                    };
                    if let Some(event) = last {
                        if let Err(e) = self.decode(event) {
                            self.ended = true;
                            self.deferred = Some(e);
                            continue;
                        }
                    }
                    if let Err(e) = self.end_of_body() {
                        // What arrived before the cut is delivered first, then the error.
                        self.deferred = Some(e);
                    }
                }
            }
        }
    }
}

/// The error an upstream's error status means, by its provider's contract: the
/// message from its error body (fixed text for credential and server failures, which
/// the client cannot act on and where echoed secrets turn up), its retry delay (the
/// `Retry-After` header, or Gemini's `RetryInfo` in the body), and what a 4xx says about
/// this target (a context window, a content policy, an account out of quota). Gemini's
/// 400 `API_KEY_INVALID` is treated as the 401 it means. Pure, so that the fidelity
/// matrix of the docs can probe it.
pub fn status_error(
    kind: ProviderKind,
    provider: &str,
    mut status: u16,
    mut retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    let mut quota_exhausted = false;
    match kind {
        ProviderKind::Gemini => {
            let info = gemini::error_info(body);
            // Gemini says when to retry in the body (RetryInfo), not in a header.
            retry_after = retry_after.or(info.retry_delay);
            // Gemini answers an invalid key with 400 API_KEY_INVALID: the
            // operator's credentials, not the client's request.
            if status == 400 && info.reason.as_deref() == Some("API_KEY_INVALID") {
                tracing::debug!(provider = %provider, "upstream 400 API_KEY_INVALID: treated as 401");
                status = 401;
            }
        }
        ProviderKind::Openai => {
            // 429 insufficient_quota: the account is out of credit; waiting does
            // not help, another provider may.
            quota_exhausted =
                status == 429 && openai::error_code(body).as_deref() == Some("insufficient_quota");
        }
        _ => {}
    }
    let message = match kind {
        ProviderKind::Anthropic => anthropic::parse_error_message(body),
        ProviderKind::Gemini => gemini::parse_error_message(body),
        _ => openai::parse_error_message(body),
    }
    .unwrap_or_else(|| {
        http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error")
            .to_string()
    });
    let refusal = if quota_exhausted {
        Some(llmop_core::Refusal::QuotaExhausted)
    } else {
        llmop_wire::classify_refusal(status, body, &message)
    };
    // An upstream's words about its credentials or its own failure say nothing the
    // client can act on, and are where echoed keys and internal URLs turn up: the
    // client gets a fixed message; the (scrubbed) original goes to the debug log.
    let message = if quota_exhausted {
        format!(
            "provider `{}` reports its account has no quota left (insufficient_quota); the operator must check its plan and billing",
            provider
        )
    } else if matches!(status, 401 | 403) || status >= 500 {
        tracing::debug!(
            provider = %provider,
            status,
            upstream_message = %llmop_core::secret::scrub(&message),
            "upstream error"
        );
        // The status's standard reason (and Anthropic's 529), never the body's words.
        let reason = match status {
            529 => "Overloaded",
            s => http::StatusCode::from_u16(s)
                .ok()
                .and_then(|c| c.canonical_reason())
                .unwrap_or("Error"),
        };
        match status {
            401 | 403 => format!(
                "the upstream refused llmop's credentials ({status} {reason}); the operator must check provider `{}`",
                provider
            ),
            _ => format!("the upstream answered {status} {reason}"),
        }
    } else {
        message
    };
    ProviderError::Status {
        provider: provider.to_string(),
        status,
        message,
        retry_after,
        refusal,
    }
}

/// A wire error as the provider error it means: a failed finish is the provider's
/// word that its answer failed; anything else is a malformed answer.
fn wire_error(provider: &str, e: WireError) -> ProviderError {
    match e.failed_finish {
        Some(reason) => ProviderError::Incomplete {
            provider: provider.to_string(),
            reason,
        },
        None => ProviderError::Protocol {
            provider: provider.to_string(),
            message: e.to_string(),
        },
    }
}

/// Reads at most `limit` bytes of a body, giving up at the deadline.
async fn read_limited(resp: Response<Incoming>, limit: usize, deadline: Instant) -> Bytes {
    let mut out = Vec::new();
    let mut s = BodyDataStream::new(resp.into_body());
    while let Ok(Some(Ok(chunk))) = timeout_at(deadline, s.next()).await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Bytes::from(out)
}

/// The provider's connector: through the proxy the environment names for `base_url`, if
/// any (with its credentials, if the proxy URL holds them), else direct.
fn connect(base_url: &str, tcp: HttpConnector) -> Result<Connect, String> {
    let dst = Uri::try_from(base_url).map_err(|e| format!("base_url: {e}"))?;
    let matcher = hyper_util::client::proxy::matcher::Matcher::from_env();
    Ok(match matcher.intercept(&dst) {
        None => Connect::Direct(tcp),
        Some(proxy) => {
            tracing::info!(proxy = %proxy_display(proxy.uri()), "upstream connections through a proxy");
            let mut t = Tunnel::new(proxy.uri().clone(), tcp);
            if let Some(auth) = proxy.basic_auth() {
                t = t.with_auth(auth.clone());
            }
            Connect::Tunnel(t)
        }
    })
}

/// A proxy URL without its credentials, for the log.
fn proxy_display(u: &Uri) -> String {
    format!(
        "{}://{}",
        u.scheme_str().unwrap_or("http"),
        u.authority()
            .map(|a| a.as_str().rsplit('@').next().unwrap_or_default())
            .unwrap_or_default()
    )
}

/// The body's length as the upstream declared it (`content-length`), if it did.
fn content_length(resp: &Response<Incoming>) -> Option<u64> {
    hyper::body::Body::size_hint(resp.body()).exact()
}

/// Whether a failed request never connected because the connect timeout ran out
/// (`connect_timeout_ms`): hyper reports it as an I/O error of kind `TimedOut` among the
/// error's causes.
fn is_connect_timeout(e: &hyper_util::client::legacy::Error) -> bool {
    if !e.is_connect() {
        return false;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    // A day at most: a longer wait is no answer a gateway can act on.
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(86_400)));
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs.min(86_400.0)));
        }
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// An error and its causes in one line ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        let future = SystemTime::now() + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(future)).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
