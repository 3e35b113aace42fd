//! One function per endpoint. The calling endpoints (chat completions, messages,
//! invoke) are thin format adapters ([`Entry`]): they read their key, context and body
//! and encode the outcome; the pipeline's conductor runs every stage in between.

use crate::auth::{self, Auth};
use crate::context::{self, RequestId};
use crate::features::InvokeBody;
use crate::http_error::{self, WireFormat};
use crate::pipeline::{self, Answer, Answered, Ask, Entry, FeatureAsk, Pick, Vars};
use crate::record::CallRecord;
use crate::respond;
use crate::responses_api;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use llmop_core::codes;
use llmop_core::{ChatRequest, GatewayError};
use llmop_store::ApiKey;
use llmop_wire::{anthropic, openai, responses};
use serde_json::json;
use std::sync::Arc;

// Each calling endpoint boxes the conductor's future: it holds the whole call's state,
// and the handler's future is moved by axum and hyper on every request; a box makes
// those moves a pointer's.
pub async fn chat_completions(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    operator: Option<Extension<Operator>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let entry = Chat {
        format: WireFormat::OpenAi,
        headers,
        body: Some(body),
        operator: operator.is_some(),
    };
    Box::pin(pipeline::conduct(&app, &rid, entry)).await
}

pub async fn messages(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let entry = Chat {
        format: WireFormat::Anthropic,
        headers,
        body: Some(body),
        operator: false,
    };
    Box::pin(pipeline::conduct(&app, &rid, entry)).await
}

/// `POST /v1/responses`: the OpenAI Responses API, whole or as its typed event stream.
pub async fn responses(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let entry = Chat {
        format: WireFormat::Responses,
        headers,
        body: Some(body),
        operator: false,
    };
    Box::pin(pipeline::conduct(&app, &rid, entry)).await
}

/// `POST /v1/features/{name}/invoke`: the native call. Answers
/// `{request_id, feature, version, env, arm, output: {text, parsed}, parse_status,
/// usage, cost_usd, latency_ms, degraded}`.
pub async fn invoke(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    operator: Option<Extension<Operator>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let entry = Invoke {
        name,
        headers,
        body: Some(body),
        operator: operator.is_some(),
    };
    Box::pin(pipeline::conduct(&app, &rid, entry)).await
}

/// Marks a call the console makes in process for an operator behind its own session
/// and CSRF checks (a replay): it needs no client key. Only in-process code can attach
/// a request extension; nothing a client sends over HTTP can.
#[derive(Clone, Copy)]
pub struct Operator;

/// The key of a call: none for an operator's call (the console authenticated it), else
/// the client's.
fn client_key(
    operator: bool,
    auth: &Auth,
    headers: &HeaderMap,
) -> Result<Option<Arc<ApiKey>>, GatewayError> {
    if operator {
        Ok(None)
    } else {
        auth.client(headers)
    }
}

/// The chat endpoints: `/v1/chat/completions` (OpenAI), `/v1/messages` (Anthropic) and
/// `/v1/responses` (OpenAI Responses).
struct Chat {
    format: WireFormat,
    headers: HeaderMap,
    body: Option<Body>,
    operator: bool,
}

impl Entry for Chat {
    type Output = Response;

    fn endpoint(&self) -> &'static str {
        match self.format {
            WireFormat::OpenAi => "/v1/chat/completions",
            WireFormat::Anthropic => "/v1/messages",
            WireFormat::Responses => "/v1/responses",
        }
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    fn authenticate(
        &self,
        auth: &Auth,
        _rec: &mut CallRecord,
    ) -> Result<Option<Arc<ApiKey>>, GatewayError> {
        client_key(self.operator, auth, &self.headers)
    }

    async fn parse(&mut self, app: &AppState, rec: &mut CallRecord) -> Result<Ask, GatewayError> {
        let bytes = read_body_within(app, &self.headers, self.body.take()).await?;
        let parsed = match self.format {
            WireFormat::OpenAi => openai::parse_request(&bytes).map(|r| (r, None)),
            WireFormat::Anthropic => anthropic::parse_request(&bytes).map(|r| (r, None)),
            WireFormat::Responses => responses::parse_request(&bytes).map(|(r, e)| (r, Some(e))),
        };
        let (mut req, echo) = match parsed {
            Ok(r) => r,
            Err(e) => {
                rec.keep_invalid_body(&bytes);
                return Err(GatewayError::InvalidRequest {
                    message: e.to_string(),
                    param: e.param,
                    code: codes::INVALID_REQUEST,
                });
            }
        };
        rec.model_requested.clone_from(&req.model);
        rec.stream = req.stream;
        if let Some(echo) = echo {
            if let Some(prev) = &echo.previous_response_id {
                // The earlier response's conversation goes after this request's
                // instructions and before its input.
                let store = app.recorder.as_ref().map(|r| &r.store);
                let earlier = responses_api::load(
                    store,
                    prev,
                    rec.key_id.as_deref(),
                    Some("previous_response_id"),
                )
                .await?;
                let history = responses_api::conversation(&earlier, prev)?;
                let at = usize::from(echo.has_instructions);
                req.messages.splice(at..at, history);
                responses::check_calls(&req.messages).map_err(|e| {
                    GatewayError::InvalidRequest {
                        message: e.to_string(),
                        param: e.param,
                        code: codes::INVALID_REQUEST,
                    }
                })?;
            }
            rec.responses = Some(Box::new(echo));
        }
        if let Some(u) = &req.user {
            // Held to the header's rules: a 100 KB user id is refused, not stored.
            let field = match self.format {
                WireFormat::OpenAi | WireFormat::Responses => "user",
                WireFormat::Anthropic => "metadata.user_id",
            };
            let u = context::body_meta(u, field)?;
            if rec.context.user.is_none() {
                rec.context.user = u;
            }
        }
        // `feature/<name>`: the deployed version's messages, route and parameters.
        let feature = req.model.strip_prefix("feature/").map(|name| FeatureAsk {
            name: name.to_string(),
            pick: Pick::Deployed,
            vars: Vars::FromCall,
            shadow_of: None,
        });
        Ok(Ask { req, feature })
    }

    async fn respond(
        self,
        app: &Arc<AppState>,
        outcome: Result<Answered, GatewayError>,
        mut rec: CallRecord,
    ) -> Response {
        match outcome {
            Ok(Answered {
                answer: Answer::Whole(resp),
                ..
            }) => {
                let r = respond::whole(app, self.format, resp, &mut rec);
                rec.finish().await;
                r
            }
            Ok(Answered {
                answer: Answer::Stream { first, rest },
                ..
            }) => {
                let include_usage = rec.request.as_ref().is_some_and(|r| r.include_usage);
                respond::stream(self.format, first, rest, include_usage, rec, app)
            }
            Err(e) => fail(self.format, e, rec).await,
        }
    }
}

/// `POST /v1/features/{name}/invoke`.
struct Invoke {
    name: String,
    headers: HeaderMap,
    body: Option<Body>,
    operator: bool,
}

impl Entry for Invoke {
    type Output = Response;

    fn endpoint(&self) -> &'static str {
        "/v1/features/invoke"
    }

    fn asked_for(&self) -> Option<String> {
        Some(format!("feature/{}", self.name))
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    fn authenticate(
        &self,
        auth: &Auth,
        _rec: &mut CallRecord,
    ) -> Result<Option<Arc<ApiKey>>, GatewayError> {
        client_key(self.operator, auth, &self.headers)
    }

    /// The body's metadata (`env`, `user`, `session`, `tags`) is held to the rules of
    /// the headers it stands for, and wins over them.
    async fn parse(&mut self, app: &AppState, rec: &mut CallRecord) -> Result<Ask, GatewayError> {
        let bytes = read_body_within(app, &self.headers, self.body.take()).await?;
        let body: InvokeBody = if bytes.iter().all(u8::is_ascii_whitespace) {
            serde_json::from_str("{}").map_err(|e| GatewayError::invalid(e.to_string(), None))?
        } else if let Ok(body) = serde_json::from_slice(&bytes) {
            body
        } else {
            // Path tracking costs on every field: only a body that failed is parsed
            // again with it, for an error that names the field.
            let de = &mut serde_json::Deserializer::from_slice(&bytes);
            serde_path_to_error::deserialize(de).map_err(|e| {
                rec.keep_invalid_body(&bytes);
                let path = e.path().to_string();
                GatewayError::invalid(
                    format!("invalid invoke body: {}", e.inner()),
                    (path != ".").then_some(path),
                )
            })?
        };
        let meta = |v: &Option<String>, field: &str| match v {
            Some(v) => context::body_meta(v, field),
            None => Ok(None),
        };
        if let Some(env) = meta(&body.env, "env")? {
            rec.context.env = Some(env);
        }
        if let Some(user) = meta(&body.user, "user")? {
            rec.context.user = Some(user);
        }
        if let Some(session) = meta(&body.session, "session")? {
            rec.context.session = Some(session);
        }
        if let Some(tags) = body.tags {
            llmop_core::context::check_tags(&tags)
                .map_err(|m| GatewayError::invalid(format!("`tags` {m}"), Some("tags".into())))?;
            rec.context.tags.extend(tags);
        }
        // The call is attributed to the feature it invokes.
        rec.context.feature = Some(self.name.clone());
        Ok(Ask {
            req: ChatRequest::new(String::new(), Vec::new(), WireFormat::OpenAi),
            feature: Some(FeatureAsk {
                name: self.name.clone(),
                // A pinned version bypasses the deployment (no arm, no shadow).
                pick: body.version.map_or(Pick::Deployed, Pick::Pinned),
                // Strict: an undeclared variable is an error.
                vars: Vars::Given(body.variables),
                shadow_of: None,
            }),
        })
    }

    async fn respond(
        self,
        _: &Arc<AppState>,
        outcome: Result<Answered, GatewayError>,
        mut rec: CallRecord,
    ) -> Response {
        let (resp, fc) = match outcome {
            Ok(Answered {
                answer: Answer::Whole(resp),
                feature: Some(fc),
            }) => (resp, fc),
            Ok(_) => {
                let e = GatewayError::Internal("an invoke call got no whole answer".into());
                return fail(WireFormat::OpenAi, e, rec).await;
            }
            Err(e) => return fail(WireFormat::OpenAi, e, rec).await,
        };
        if !resp.id.is_empty() {
            rec.upstream_id = Some(resp.id.clone());
        }
        let text = resp.text();
        let usage = resp.usage.map(|u| {
            json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "cached_tokens": u.cached_input_tokens})
        });
        rec.succeeded(resp);
        let cost = rec.cost_usd();
        let f = rec.feature.as_deref();
        let body = json!({
            "request_id": rec.request_id,
            "feature": self.name,
            "version": fc.version.version,
            "env": fc.env,
            "arm": f.and_then(|f| f.arm.as_deref()),
            "output": {"text": text, "parsed": f.and_then(|f| f.parsed.as_ref())},
            "parse_status": f.and_then(|f| f.parse_status),
            "usage": usage,
            "cost_usd": cost,
            "latency_ms": rec.started.elapsed().as_millis() as u64,
            "degraded": rec.degraded,
            "provider": rec.provider,
            "model": rec.model,
        });
        let mut r = axum::Json(body).into_response();
        respond::call_headers(&mut r, &rec);
        rec.finish().await;
        r
    }
}

/// The body, within `[server] body_timeout_ms` and `max_body_bytes`.
pub(crate) async fn read_body_within(
    app: &AppState,
    headers: &HeaderMap,
    body: Option<Body>,
) -> Result<Bytes, GatewayError> {
    let body = body.unwrap_or_else(Body::empty);
    tokio::time::timeout(
        app.body_timeout(),
        read_body(body, headers, app.config.server.max_body_bytes),
    )
    .await
    .map_err(|_| GatewayError::RequestTimeout {
        ms: app.config.server.body_timeout_ms,
    })?
}

async fn fail(format: WireFormat, e: GatewayError, mut rec: CallRecord) -> Response {
    let resp = http_error::response(format, &e, &rec.request_id);
    rec.failed(&e, resp.status().as_u16());
    rec.finish().await;
    resp
}

/// Reads the whole body, refusing more than `limit` bytes (413) without reading them.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(GatewayError::PayloadTooLarge { limit }),
        Err(e) => Err(GatewayError::invalid(
            format!("could not read the request body: {e}"),
            None,
        )),
    }
}

/// What a listed model can do: `chat` (chat completions, messages, responses; with
/// streaming and tools) or `embeddings`; `feature` for a deployed feature.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Route,
    EmbeddingRoute,
    Feature,
    Chat,
    Embedding,
}

impl Kind {
    fn owner(self) -> &'static str {
        match self {
            Kind::Route | Kind::EmbeddingRoute => "llmop-route",
            Kind::Feature => "llmop-feature",
            Kind::Chat | Kind::Embedding => "llmop-provider",
        }
    }

    fn capabilities(self) -> serde_json::Value {
        let chat = !matches!(self, Kind::EmbeddingRoute | Kind::Embedding);
        json!({
            "chat_completions": chat,
            "messages": chat,
            "responses": chat,
            "streaming": chat,
            "tools": chat,
            "embeddings": !chat,
            "count_tokens": chat,
            "feature": self == Kind::Feature,
        })
    }
}

/// Every model id visible to clients: deployed features (`feature/<name>`), route
/// names, `<provider>/<model>`s and `<provider>/<embedding model>`s, sorted.
fn model_ids(app: &AppState) -> Vec<(String, Kind)> {
    let mut ids: Vec<(String, Kind)> = app
        .router
        .routes()
        .map(|r| {
            let k = if r.embeddings {
                Kind::EmbeddingRoute
            } else {
                Kind::Route
            };
            (r.name.to_string(), k)
        })
        .collect();
    if let Some(f) = &app.features {
        ids.extend(
            f.deployed()
                .into_iter()
                .map(|n| (format!("feature/{n}"), Kind::Feature)),
        );
    }
    for (name, p) in app.providers.iter() {
        for m in p.models() {
            ids.push((format!("{name}/{m}"), Kind::Chat));
        }
        if let Some(pc) = app.config.providers.get(name) {
            for m in &pc.embedding_models {
                ids.push((format!("{name}/{m}"), Kind::Embedding));
            }
        }
    }
    ids.sort();
    ids.dedup_by(|a, b| a.0 == b.0);
    ids
}

fn openai_model(id: &str, kind: Kind) -> serde_json::Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": kind.owner(), "capabilities": kind.capabilities()})
}

fn anthropic_model(id: &str, kind: Kind) -> serde_json::Value {
    json!({"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z", "capabilities": kind.capabilities()})
}

/// `GET /v1/models`: routes, deployed features, and configured direct and embedding
/// models, with what each can do; only what the calling key may call. Answers in
/// Anthropic's list shape when the client sends `anthropic-version` (the Anthropic SDK
/// does).
pub async fn models(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    let mut ids = model_ids(&app);
    // Only what the calling key may call.
    match app.auth.client(&headers) {
        Ok(Some(k)) => ids.retain(|(id, _)| auth::check_scope(&k, id, None).is_ok()),
        Ok(None) => {}
        Err(e) => return http_error::response(WireFormat::OpenAi, &e, &rid),
    }
    let body = if headers.contains_key("anthropic-version") {
        let data: Vec<_> = ids.iter().map(|(id, k)| anthropic_model(id, *k)).collect();
        json!({"data": data, "has_more": false, "first_id": ids.first().map(|i| &i.0), "last_id": ids.last().map(|i| &i.0)})
    } else {
        let data: Vec<_> = ids.iter().map(|(id, k)| openai_model(id, *k)).collect();
        json!({"object": "list", "data": data})
    };
    axum::Json(body).into_response()
}

/// `GET /v1/models/{id}` (ids may hold a `/`: `sim/echo`). A `<provider>/<model>` that
/// the provider does not list is still callable, so any configured provider's model is
/// answered; an unknown provider or route is 404.
pub async fn model(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let anthropic = headers.contains_key("anthropic-version");
    let deployed_feature = id.strip_prefix("feature/").is_some_and(|name| {
        app.features
            .as_ref()
            .is_some_and(|f| f.deployed().iter().any(|d| d == name))
    });
    if deployed_feature {
        let body = if anthropic {
            anthropic_model(&id, Kind::Feature)
        } else {
            openai_model(&id, Kind::Feature)
        };
        return axum::Json(body).into_response();
    }
    match app.router.resolve(&id) {
        Ok(resolved) => {
            let kind = model_ids(&app)
                .into_iter()
                .find(|(i, _)| *i == id)
                .map(|(_, k)| k)
                .unwrap_or(if resolved.route.is_some() {
                    Kind::Route
                } else {
                    Kind::Chat
                });
            let body = if anthropic {
                anthropic_model(&id, kind)
            } else {
                openai_model(&id, kind)
            };
            axum::Json(body).into_response()
        }
        Err(e) => http_error::response(
            if anthropic {
                WireFormat::Anthropic
            } else {
                WireFormat::OpenAi
            },
            &e,
            &rid,
        ),
    }
}

pub async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Ready while serving; 503 once draining, so load balancers stop sending traffic.
pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.shutdown.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "draining"})),
        )
            .into_response()
    } else {
        axum::Json(json!({"status": "ready"})).into_response()
    }
}

/// The format a request without a known endpoint expects its error in: Anthropic's for
/// the Anthropic SDK (it sends `anthropic-version`) and paths under `/v1/messages`.
pub(crate) fn format_of(uri: &axum::http::Uri, headers: &HeaderMap) -> WireFormat {
    if headers.contains_key("anthropic-version") || uri.path().starts_with("/v1/messages") {
        WireFormat::Anthropic
    } else {
        WireFormat::OpenAi
    }
}

/// A request's path, cut to 200 bytes (at a character boundary) for logs and messages.
fn short_path(uri: &axum::http::Uri) -> &str {
    let path = uri.path();
    let mut cut = path.len().min(200);
    while !path.is_char_boundary(cut) {
        cut -= 1;
    }
    &path[..cut]
}

/// A request no route answers: logged (path cut to 200 bytes) and counted, and
/// answered in the caller's format, so that an SDK shows what went wrong.
fn unrouted(
    rid: &str,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    e: GatewayError,
    status: StatusCode,
) -> Response {
    tracing::info!(request_id = %rid, method = %method, path = short_path(uri), status = status.as_u16(), "no such endpoint");
    ::metrics::counter!("llmop_unknown_endpoint_total", "status" => status.as_str().to_string())
        .increment(1);
    let mut r = http_error::response(format_of(uri, headers), &e, rid);
    *r.status_mut() = status;
    r
}

pub async fn not_found(
    Extension(RequestId(rid)): Extension<RequestId>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let e = GatewayError::NotFound {
        message: format!("no such endpoint: {method} {}", short_path(&uri)),
        code: codes::NOT_FOUND,
    };
    unrouted(&rid, &method, &uri, &headers, e, StatusCode::NOT_FOUND)
}

pub async fn method_not_allowed(
    Extension(RequestId(rid)): Extension<RequestId>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let e = GatewayError::InvalidRequest {
        message: format!("method {method} is not allowed on this endpoint"),
        param: None,
        code: codes::METHOD_NOT_ALLOWED,
    };
    unrouted(
        &rid,
        &method,
        &uri,
        &headers,
        e,
        StatusCode::METHOD_NOT_ALLOWED,
    )
}

/// `GET /admin/circuits`: every route target's breaker. Each replica reports its own.
pub async fn circuits(State(app): State<Arc<AppState>>) -> Response {
    let now = tokio::time::Instant::now();
    let mut list: Vec<serde_json::Value> = Vec::new();
    for route in app.router.routes() {
        for t in &route.targets {
            if let Some(b) = &t.breaker {
                let mut v = serde_json::to_value(b.snapshot(now)).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("route".into(), json!(&*route.name));
                    o.insert("provider".into(), json!(t.provider.name()));
                    o.insert("model".into(), json!(&*t.model));
                }
                list.push(v);
            }
        }
    }
    list.sort_by(|a, b| {
        (
            a["route"].as_str(),
            a["provider"].as_str(),
            a["model"].as_str(),
        )
            .cmp(&(
                b["route"].as_str(),
                b["provider"].as_str(),
                b["model"].as_str(),
            ))
    });
    axum::Json(json!({"circuits": list})).into_response()
}

/// Copies the writer's counters into the registry.
fn sync_writer(app: &AppState) {
    let Some(rec) = &app.recorder else { return };
    let s = rec.writer.stats().snapshot();
    ::metrics::counter!("llmop_records_queued_total").absolute(s.queued);
    ::metrics::counter!("llmop_records_written_total").absolute(s.written);
    ::metrics::counter!("llmop_records_delayed_total").absolute(s.delayed);
    ::metrics::counter!("llmop_records_held_total").absolute(s.held);
    ::metrics::counter!("llmop_records_failed_commits_total").absolute(s.failed_commits);
    ::metrics::counter!("llmop_records_spilled_total").absolute(s.spilled);
    ::metrics::counter!("llmop_records_replayed_total").absolute(s.replayed);
    ::metrics::counter!("llmop_records_lost_total").absolute(s.lost);
    let pending = s.queued.saturating_sub(s.written + s.spilled + s.lost);
    ::metrics::gauge!("llmop_records_queue_depth").set(pending as f64);
}

/// Sets each breaker's state gauge (0 closed, 1 half-open, 2 open).
fn sync_breakers(app: &AppState) {
    let now = tokio::time::Instant::now();
    for route in app.router.routes() {
        for t in &route.targets {
            if let Some(b) = &t.breaker {
                let s = b.snapshot(now);
                let labels = [
                    ("route", route.name.to_string()),
                    ("provider", t.provider.name().to_string()),
                    ("model", t.model.to_string()),
                ];
                ::metrics::gauge!("llmop_circuit_state", &labels).set(s.state.as_number());
                ::metrics::counter!("llmop_circuit_opened_total", &labels).absolute(s.opened);
            }
        }
    }
}

/// `GET /metrics`: the Prometheus text format.
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    sync_writer(&app);
    sync_breakers(&app);
    let body = app
        .metrics
        .as_ref()
        .map(metrics_exporter_prometheus::PrometheusHandle::render)
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        body,
    )
        .into_response()
}
