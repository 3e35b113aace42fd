//! `POST /v1/embeddings` (OpenAI format) and `POST /v1/messages/count_tokens`
//! (Anthropic format): the endpoints that are not conversations.
//!
//! They are not chat calls, so they do not run the conductor (`pipeline`), whose call
//! stage asks for answers; they run its stages that apply, in its order, with the same
//! functions: authenticate, context, parse, authorize, route, check (the same budget
//! and rate-limit admission, with the inputs as the estimate and no output allowance),
//! guard in (embeddings: the input guardrails on the texts to embed), call (targets in
//! order, retries within the route's budget, breakers), respond and record (one record
//! per call, through the same writer).
//!
//! Embeddings fall back only between targets that embed with the same model (its
//! `embedding_model`, else its `model`): vectors from different models are not
//! comparable, so a target with another one is never tried in the first one's place
//! (`llmop check` refuses an `embeddings = true` route that mixes them).

use crate::auth;
use crate::context::{self, RequestId};
use crate::handlers::read_body_within;
use crate::http_error::{self, WireFormat};
use crate::limits::{self, Estimate};
use crate::pipeline::Load;
use crate::record::{CallRecord, EmbedRecord};
use crate::stage::Stage;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use llmop_core::config::EmbeddingInputs;
use llmop_core::embed::{EmbedInput, EmbedRequest};
use llmop_core::{codes, ChatRequest, GatewayError, Message, ProviderError, Role, Usage};
use llmop_wire::{anthropic, embeddings};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn invalid(e: llmop_wire::WireError) -> GatewayError {
    GatewayError::InvalidRequest {
        message: e.to_string(),
        param: e.param,
        code: codes::INVALID_REQUEST,
    }
}

/// The stand-in chat request the check stage counts: the inputs as user messages, no
/// output allowance (an embedding produces no tokens). Token-id inputs count one
/// token per id (each ` a` is one token in every tokenizer llmop estimates with).
fn stand_in(req: &EmbedRequest) -> ChatRequest {
    let messages = match &req.input {
        EmbedInput::Texts(t) => t
            .iter()
            .map(|t| Message::text(Role::User, t.clone()))
            .collect(),
        EmbedInput::Tokens(ids) => ids
            .iter()
            .map(|t| Message::text(Role::User, " a".repeat(t.len())))
            .collect(),
    };
    let mut r = ChatRequest::new(req.model.clone(), messages, llmop_core::WireFormat::OpenAi);
    r.params.max_tokens = Some(0);
    r
}

/// What the record keeps of the inputs (`[store] embedding_inputs`).
fn recorded_inputs(input: &EmbedInput, how: EmbeddingInputs) -> Value {
    match (input, how) {
        (EmbedInput::Texts(t), EmbeddingInputs::Store) => json!(t),
        (EmbedInput::Tokens(t), EmbeddingInputs::Store) => json!(t),
        (EmbedInput::Texts(t), EmbeddingInputs::Hash) => json!(t
            .iter()
            .map(|s| format!("sha256:{}", hex::encode(Sha256::digest(s.as_bytes()))))
            .collect::<Vec<_>>()),
        (EmbedInput::Tokens(t), EmbeddingInputs::Hash) => json!(t
            .iter()
            .map(|ids| {
                let mut h = Sha256::new();
                for i in ids {
                    h.update(i.to_le_bytes());
                }
                format!("sha256:{}", hex::encode(h.finalize()))
            })
            .collect::<Vec<_>>()),
    }
}

/// `POST /v1/embeddings`.
pub async fn create(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let _load = Load::enter(&app);
    let mut rec = CallRecord::new(&rid, "/v1/embeddings", app.recorder.clone());
    let out = embed(&app, &headers, body, &mut rec).await;
    rec.entered(Stage::Respond);
    let resp = match out {
        Ok(r) => {
            rec.status = Some(200);
            r
        }
        Err(e) => {
            let r = http_error::response(WireFormat::OpenAi, &e, &rid);
            rec.failed(&e, r.status().as_u16());
            r
        }
    };
    let mut resp = resp;
    crate::respond::call_headers(&mut resp, &rec);
    rec.finish().await;
    resp
}

async fn embed(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
    rec: &mut CallRecord,
) -> Result<Response, GatewayError> {
    rec.entered(Stage::Authenticate);
    let key = app.auth.client(headers)?;
    if let Some(k) = &key {
        rec.key_id = Some(k.id.clone());
    }
    rec.entered(Stage::Context);
    rec.context = context::from_headers(headers, &rec.request_id)?;

    rec.entered(Stage::Parse);
    let bytes = read_body_within(app, headers, Some(body)).await?;
    let mut req = embeddings::parse_request(&bytes).map_err(|e| {
        rec.keep_invalid_body(&bytes);
        invalid(e)
    })?;
    rec.model_requested.clone_from(&req.model);
    if let Some(u) = &req.user {
        let u = context::body_meta(u, "user")?;
        if rec.context.user.is_none() {
            rec.context.user = u;
        }
    }
    let store = &app.config.store;
    rec.embed = Some(Box::new(EmbedRecord {
        params: json!({
            "model": req.model,
            "inputs": req.input.len(),
            "dimensions": req.dimensions,
            "encoding_format": if req.base64 { "base64" } else { "float" },
        }),
        inputs: recorded_inputs(&req.input, store.embedding_inputs),
        vectors: None,
    }));

    rec.entered(Stage::Authorize);
    if req.model.starts_with("feature/") {
        return Err(GatewayError::invalid(
            "features are chat calls: embed with a route or a provider/model",
            Some("model".into()),
        ));
    }
    if let Some(k) = &key {
        if rec.context.env.is_none() {
            rec.context.env.clone_from(&k.scopes.default_env);
        }
        auth::check_scope(k, &req.model, rec.context.env.as_deref())?;
    }

    rec.entered(Stage::Route);
    let resolved = app.router.resolve(&req.model)?;
    rec.route = resolved.route.map(str::to_string);
    let mut budget = resolved.timeout.unwrap_or(app.default_timeout());
    if let Some(ms) = rec.context.timeout_ms {
        budget = budget.min(Duration::from_millis(ms));
    }
    let deadline = Instant::now() + budget;

    rec.entered(Stage::Check);
    let mut counted = stand_in(&req);
    let estimate = Estimate::new(&resolved);
    if let Some(l) = &app.limits {
        rec.admission = limits::admit(
            l,
            &resolved,
            &estimate,
            &mut counted,
            &rec.context,
            key.as_deref(),
        )
        .await?;
    }

    // The input guardrails on the texts to embed (token ids are not text): what a
    // rule masks is masked in what the provider embeds and in the record; a block
    // refuses the call before any provider sees it.
    if let (Some(policy), EmbedInput::Texts(_)) = (&app.guard, &req.input) {
        rec.entered(Stage::GuardIn);
        let means = (&app.guard_counters, app.guard_checks.as_ref());
        let (checked_req, checked) =
            crate::pipeline::guard_in(policy, means, stand_in(&req), rec).await;
        if let EmbedInput::Texts(texts) = &mut req.input {
            for (t, m) in texts.iter_mut().zip(checked_req.messages) {
                if let Some(llmop_core::Part::Text(masked)) = m.parts.into_iter().next() {
                    *t = masked;
                }
            }
        }
        if let Some(er) = rec.embed.as_mut() {
            er.inputs = recorded_inputs(&req.input, store.embedding_inputs);
        }
        checked?;
    }

    rec.entered(Stage::Call);
    let identity = resolved.targets.first().map(|t| t.embedding.clone());
    let mut last: Option<ProviderError> = None;
    let mut quota_skipped = false;
    for t in resolved
        .targets
        .iter()
        .filter(|t| Some(&t.embedding) == identity.as_ref())
    {
        if let Some(b) = &t.breaker {
            if !b.allow(Instant::now()) {
                rec.attempt_skipped(t.provider.name(), &t.model, codes::CIRCUIT_OPEN);
                continue;
            }
        }
        if let (Some(l), Some(_)) = (&app.limits, t.quota) {
            let tokens = estimate.tokens_in(&counted).await;
            if !limits::target_admits(l, resolved.route.unwrap_or(""), t, tokens).await {
                // Over the provider's quota for this target: the next one, if any.
                rec.attempt_skipped(t.provider.name(), &t.model, codes::RATE_LIMITED);
                quota_skipped = true;
                continue;
            }
        }
        let mut retry = 0u32;
        loop {
            let started = Instant::now();
            let r = t
                .provider
                .embed(&req, &t.model, deadline, &rec.request_id)
                .await;
            if let Some(b) = &t.breaker {
                b.record(Instant::now(), r.as_ref().is_err_and(|e| e.is_retryable()));
            }
            match r {
                Ok(e) => {
                    rec.attempt(t.provider.name(), &t.model, started, None);
                    rec.price = t.price;
                    let tokens = match e.input_tokens {
                        Some(n) => n,
                        // Gemini says nothing: the check stage's estimate is billed.
                        None => estimate.tokens_in(&counted).await,
                    };
                    rec.usage = Some(Usage {
                        input_tokens: tokens,
                        ..Usage::default()
                    });
                    // Encoding thousands of floats is CPU work: off the async worker
                    // when large, as the cache's hashing of large requests.
                    let approx: usize = e.vectors.iter().map(|v| v.len() * 12).sum();
                    let body = crate::caching::heavy(approx, || {
                        embeddings::encode_response(&e, &req.model, tokens, req.base64)
                    });
                    if store.embedding_vectors {
                        if let Some(er) = rec.embed.as_mut() {
                            er.vectors = Some(json!(e.vectors));
                        }
                    }
                    return Ok((
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        )],
                        body,
                    )
                        .into_response());
                }
                Err(e) => {
                    rec.attempt(t.provider.name(), &t.model, started, Some(&e));
                    let moves_on = e.is_retryable()
                        || matches!(e, ProviderError::Unsupported { .. })
                        || e.refusal() == Some(llmop_core::Refusal::QuotaExhausted);
                    if !moves_on || Instant::now() >= deadline {
                        return Err(GatewayError::Provider(e));
                    }
                    let again = e.is_retryable()
                        && t.retry
                            .as_ref()
                            .is_some_and(|p| retry < p.config.attempts && p.budget.try_retry());
                    if again {
                        retry += 1;
                        let p = t.retry.as_ref().map(|p| p.config);
                        let wait = p.map_or(Duration::ZERO, |c| {
                            crate::resilience::delay(
                                &c,
                                retry,
                                e.retry_after(),
                                &mut rand::thread_rng(),
                            )
                        });
                        if Instant::now() + wait >= deadline {
                            return Err(GatewayError::Provider(e));
                        }
                        rec.moving_on(e.code());
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    rec.moving_on(e.code());
                    last = Some(e);
                    break;
                }
            }
        }
    }
    rec.no_next_attempt();
    Err(match last {
        Some(e) => GatewayError::Provider(e),
        None if quota_skipped => GatewayError::Limited {
            message: "every target of the route is at its provider quota".into(),
            code: codes::RATE_LIMITED,
            retry_after_s: Some(1),
            handoff: false,
        },
        None => GatewayError::Unavailable {
            message: "every target of the route is unavailable (circuit breakers open)".into(),
            code: codes::CIRCUIT_OPEN,
        },
    })
}

/// `POST /v1/messages/count_tokens` (Anthropic format): the first target's count when
/// its provider offers counting (Anthropic's `count_tokens`, Gemini's `countTokens`),
/// else llmop's estimate (the
/// tokenizer of the check stage), said by `x-llmop-token-count: estimate`. Not a model
/// call: not recorded, not billed, not rate-limited beyond the key's scope.
pub async fn count_tokens(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let key = app.auth.client(&headers)?;
        let ctx = context::from_headers(&headers, &rid)?;
        let bytes = read_body_within(&app, &headers, Some(body)).await?;
        let req = anthropic::parse_count_request(&bytes).map_err(invalid)?;
        if let Some(k) = &key {
            let env = ctx.env.clone().or_else(|| k.scopes.default_env.clone());
            auth::check_scope(k, &req.model, env.as_deref())?;
        }
        let resolved = app.router.resolve(&req.model)?;
        let deadline = Instant::now() + resolved.timeout.unwrap_or(app.default_timeout());
        let mut source = "estimate";
        let mut counted = None;
        if let Some(t) = resolved.targets.first() {
            match t
                .provider
                .count_tokens(&req, &t.model, deadline, &rid)
                .await
            {
                Ok(Some(n)) => {
                    counted = Some(n);
                    source = "provider";
                }
                Ok(None) => {}
                // Counting is advisory: a provider that cannot count now gets the
                // estimate, said so in the header.
                Err(e) => tracing::warn!(error = %e, "count_tokens upstream failed; estimating"),
            }
        }
        let n = match counted {
            Some(n) => n,
            None => Estimate::new(&resolved).tokens_in(&req).await,
        };
        let mut resp = axum::Json(json!({"input_tokens": n})).into_response();
        resp.headers_mut()
            .insert("x-llmop-token-count", HeaderValue::from_static(source));
        Ok::<_, GatewayError>(resp)
    }
    .await;
    r.unwrap_or_else(|e| http_error::response(WireFormat::Anthropic, &e, &rid))
}
