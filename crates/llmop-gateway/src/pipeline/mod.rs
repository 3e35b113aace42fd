//! The conductor: every call, from every entry point, runs these stages in this order
//! ([`conduct`]; the list is [`Stage::ALL`], and each stage marks itself on the call's
//! record as it starts, so `stages` in a record says how far its call went):
//!
//! 1. **authenticate** — who calls: the client key (the entry point reads it).
//! 2. **context** — request id and `x-llmop-*` metadata.
//! 3. **parse** — the body, bounded, in the entry point's format, into an [`Ask`]: a
//!    `ChatRequest`, and the feature it names, if any.
//! 4. **authorize** — the key's scope: this model or feature, in this environment.
//! 5. **feature** — a feature's version chosen (deployment, split arm, pinned) and
//!    rendered into the request; the key's scope checked against its route.
//!    **5a. idempotency** — an `idempotency-key`: an earlier answer replayed, a
//!    duplicate waiting for the first, another body refused, or this call leading
//!    (`caching`).
//! 6. **restore** — reasoning state llmop kept for this conversation put back.
//! 7. **route** — `model` resolved once to an ordered list of targets; the deadline set.
//! 8. **check** — caps, session budgets, rate limits, budget reservations, with the
//!    call's one token estimate ([`Estimate`]).
//! 9. **guard_in** — input guardrails (`llmop_guard::policy`): the rules for this
//!    route, feature and key check the request's text, tool arguments and tool results;
//!    they block, redact or pseudonymize before any provider sees it.
//!    **9a. cache** — the response cache looked up (`caching`): a hit skips *call* and
//!    runs the output stages on the kept answer; provider prompt caching was set on the
//!    request at *route*.
//! 10. **call** — the targets with retries, breakers, quotas and fallbacks ([`targets`]).
//! 11. **guard_out** — output guardrails on a whole answer, placeholders restored (a
//!     stream's output guard runs in its relay, `respond`, with a hold-back window).
//! 12. **parse_output** — a feature's output parser and its failure policy, which may
//!     re-enter the call stage (`repair`, `next_target`) within the same deadline.
//!     Disclaimers are added to a whole answer after it.
//! 13. **respond** — the answer (or the error) encoded by the entry point.
//! 14. **record** — the call's record handed to the writer (`record`), exactly once;
//!     guardrail verdicts go with it, and every value a rule found is masked in it.
//!
//! Capabilities beyond the request path live in their own crates (see ARCHITECTURE.md)
//! and are called from here: caching (`llmop-cache`) in 5a and 9a, guardrails
//! (`llmop-guard`), online evaluation and telemetry after *record*, off the request path.
//!
//! Entry points ([`Entry`]) are thin format adapters: they authenticate, read their
//! context, parse their body and encode the outcome. Chat completions and messages
//! (`handlers`), invoke (`handlers`) and shadows ([`shadow`]) are entries; replays come
//! in through the chat endpoints. Stages take what they need, not the whole `AppState`.

pub mod internal;
pub mod shadow;
pub mod targets;

pub use crate::stage::Stage;
pub use targets::Answer;

use crate::auth::{self, Auth};
use crate::context;
use crate::features::{self, FeatureCall, FeatureRegistry, Selected};
use crate::limits::{self, Estimate, Limits};
use crate::record::{CallRecord, FeatureRecord};
use crate::routing::{Resolved, Router};
use crate::state::AppState;
use axum::http::HeaderMap;
use llmop_core::codes;
use llmop_core::context::RequestContext;
use llmop_core::{ChatRequest, ChatResponse, GatewayError, Message, Role};
use llmop_features::{CompiledFeature, OnParseFailure};
use llmop_store::ApiKey;
use serde_json::{Map, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What an entry point parsed: the request, and the feature it asks for.
pub struct Ask {
    pub req: ChatRequest,
    pub feature: Option<FeatureAsk>,
}

/// A feature named by a call.
pub struct FeatureAsk {
    pub name: String,
    pub pick: Pick,
    pub vars: Vars,
    /// For a shadow: the primary's request id.
    pub shadow_of: Option<String>,
}

/// Which version of a feature runs.
pub enum Pick {
    /// The environment's deployment (a split picks its arm).
    Deployed,
    /// A registered version, bypassing the deployment (`version` on invoke).
    Pinned(i64),
    /// This compiled version (a shadow's).
    Version(Arc<CompiledFeature>),
}

/// Where a feature's variables come from.
pub enum Vars {
    /// From the chat request: `metadata`, and the last user message.
    FromCall,
    /// As given (`variables` on invoke): an undeclared one is an error.
    Given(Map<String, Value>),
}

/// What the call stage produced for the entry point to encode.
pub struct Answered {
    pub answer: Answer,
    pub feature: Option<FeatureCall>,
}

/// An entry point: how a call comes in and how its outcome goes out. Everything in
/// between is the conductor's.
pub trait Entry: Send + Sized {
    type Output: Send;
    /// The endpoint as recorded.
    fn endpoint(&self) -> &'static str;
    /// The model the entry's URL names, recorded even if the call fails before parsing.
    fn asked_for(&self) -> Option<String> {
        None
    }
    /// The client's request headers, which the default `authenticate` and `context` read.
    fn headers(&self) -> &HeaderMap;
    /// Whether the call is serving load (`AppState::in_flight`); the gateway's own calls
    /// (online judges) are not.
    fn is_load(&self) -> bool {
        true
    }
    /// 1. The caller's key (`None` while the gateway is open); may set `key_id`.
    fn authenticate(
        &self,
        auth: &Auth,
        _rec: &mut CallRecord,
    ) -> Result<Option<Arc<ApiKey>>, GatewayError> {
        auth.client(self.headers())
    }
    /// 2. The call's context, from the `x-llmop-*` headers.
    fn context(&mut self, request_id: &str) -> Result<RequestContext, GatewayError> {
        context::from_headers(self.headers(), request_id)
    }
    /// 3. The body, in the entry's format.
    fn parse(
        &mut self,
        app: &AppState,
        rec: &mut CallRecord,
    ) -> impl Future<Output = Result<Ask, GatewayError>> + Send;
    /// 11. The outcome in the entry's format; hands the record over (12) when done.
    fn respond(
        self,
        app: &Arc<AppState>,
        outcome: Result<Answered, GatewayError>,
        rec: CallRecord,
    ) -> impl Future<Output = Self::Output> + Send;
}

/// The call's route and what every pass through the call stage shares: resolved once.
pub struct Plan<'a> {
    pub resolved: Resolved<'a>,
    /// The one token estimate of the call.
    pub estimate: Estimate,
    pub limits: Option<&'a Arc<Limits>>,
    /// The call's time budget (the route's, shortened by `x-llmop-timeout-ms`).
    pub budget: Duration,
}

/// A call counted in `AppState::in_flight` for as long as it is alive (cancelled
/// calls included).
pub(crate) struct Load<'a>(&'a AppState);

impl<'a> Load<'a> {
    pub(crate) fn enter(app: &'a AppState) -> Load<'a> {
        app.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Load(app)
    }
}

impl Drop for Load<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs one call through every stage. See the module header.
pub async fn conduct<E: Entry>(app: &Arc<AppState>, request_id: &str, mut entry: E) -> E::Output {
    let _load = entry.is_load().then(|| Load::enter(app));
    // The record exists from the first moment, so that a request refused for bad input,
    // or abandoned by its client, is recorded too.
    let mut rec = CallRecord::new(request_id, entry.endpoint(), app.recorder.clone());
    if let Some(m) = entry.asked_for() {
        rec.model_requested = m;
    }
    // Boxed for the same reason as the provider's future in `targets`: the stages'
    // state is large, the handler's future should not carry (and copy) it.
    let outcome = Box::pin(stages(app, &mut entry, &mut rec)).await;
    rec.entered(Stage::Respond);
    // Boxed too: an entry's respond future (a stream's encoder, its record) is large,
    // and the handler's future, which axum and hyper move, should hold only a pointer.
    Box::pin(entry.respond(app, outcome, rec)).await
}

async fn stages<E: Entry>(
    app: &Arc<AppState>,
    entry: &mut E,
    rec: &mut CallRecord,
) -> Result<Answered, GatewayError> {
    rec.entered(Stage::Authenticate);
    let key = entry.authenticate(&app.auth, rec)?;
    if let Some(k) = &key {
        rec.key_id = Some(k.id.clone());
    }

    rec.entered(Stage::Context);
    rec.context = entry.context(&rec.request_id)?;

    rec.entered(Stage::Parse);
    let ask = entry.parse(app, rec).await?;

    rec.entered(Stage::Authorize);
    authorize(
        key.as_deref(),
        &ask,
        &mut rec.context,
        &app.config.features.default_env,
    )?;

    // An idempotent call's fingerprint: the body as the client sent it (before a
    // feature renders it), so that a retry after a redeploy is still the same call.
    let idempotent = match crate::caching::idempotency_key(entry.headers())? {
        Some(k) => {
            let vars = ask.feature.as_ref().map(|f| {
                let mut m = Map::new();
                m.insert("feature".into(), Value::String(f.name.clone()));
                if let Vars::Given(v) = &f.vars {
                    m.insert("variables".into(), Value::Object(v.clone()));
                }
                m
            });
            let fp = crate::caching::heavy(ask.req.text_bytes(), || {
                llmop_cache::key::body_fingerprint(&ask.req, vars.as_ref())
            });
            let scope = key.as_deref().map_or("-", |k| k.id.as_str());
            Some((format!("{scope}:{k}"), fp))
        }
        None => None,
    };

    let (mut req, feature) = match ask.feature {
        Some(f) => {
            rec.entered(Stage::Feature);
            let (req, fc) = feature(app.features.as_ref(), f, ask.req, rec).await?;
            if let Some(k) = &key {
                auth::check_feature_route(k, fc.version.name(), &req.model)?;
            }
            (req, Some(fc))
        }
        None => (ask.req, None),
    };

    if let Some((scoped, fp)) = idempotent {
        rec.entered(Stage::Idempotency);
        let mut wait = app.default_timeout();
        if let Some(ms) = rec.context.timeout_ms {
            wait = wait.min(Duration::from_millis(ms));
        }
        if let Some(e) =
            crate::caching::begin_idempotent(&app.cache, &scoped, &fp, wait, &mut rec.cache).await?
        {
            rec.cache.outcome = Some("replay");
            serve_kept(rec, &e);
            let stream = req.stream;
            rec.request = Some(Arc::new(req));
            return Ok(Answered {
                answer: as_answer(e.response.clone(), stream),
                feature,
            });
        }
    }

    // Once the key may make this call; before the check, whose estimate counts it.
    rec.entered(Stage::Restore);
    app.reasoning
        .restore(app.recorder.as_ref().map(|r| &r.store), &mut req)
        .await;

    rec.entered(Stage::Route);
    // A call refused from here on is recorded with the request it made.
    let plan = match route(
        &app.router,
        app.limits.as_ref(),
        app.default_timeout(),
        &req,
        rec,
    ) {
        Ok(p) => p,
        Err(e) => {
            rec.request = Some(Arc::new(req));
            return Err(e);
        }
    };

    // Agent safety on the way in: the end user's scopes, tools they may not use taken
    // out before the model sees them, the session's taint; an approved held call is
    // answered from its approval (no model call, no spend). Shadows are not agents'
    // turns: nothing they propose reaches anyone.
    let is_shadow = rec.feature.as_ref().is_some_and(|f| f.shadow_of.is_some());
    let cache_rule = app
        .cache
        .config
        .rule(rec.route.as_deref(), rec.context.feature.as_deref());
    if let Some(rule) = cache_rule {
        let fv = feature
            .as_ref()
            .map(|f| (f.version.name(), f.version.version));
        crate::caching::prompt_caching(rule, &mut req, rec.route.as_deref(), fv);
    }
    if let Some(gate) = app.agent.as_ref().filter(|_| !is_shadow) {
        if gate.applies(&req, entry.headers()) {
            rec.entered(Stage::AgentIn);
            let (call, admitted) = gate.admit(entry.headers(), &mut req, rec.agent_who()).await;
            rec.agent = call;
            match admitted {
                Ok(crate::agent::Admit::Go) => {}
                Ok(crate::agent::Admit::Answer(resp)) => {
                    let stream = req.stream;
                    rec.request = Some(Arc::new(req));
                    return Ok(Answered {
                        answer: as_answer(resp, stream),
                        feature,
                    });
                }
                Err(e) => {
                    rec.request = Some(Arc::new(req));
                    return Err(e);
                }
            }
        }
    }

    rec.entered(Stage::Check);
    if let Some(l) = plan.limits {
        match limits::admit(
            l,
            &plan.resolved,
            &plan.estimate,
            &mut req,
            &rec.context,
            key.as_deref(),
        )
        .await
        {
            Ok(admission) => rec.admission = admission,
            Err(e) => {
                rec.request = Some(Arc::new(req));
                return Err(e);
            }
        }
    }

    if let Some(policy) = &app.guard {
        rec.entered(Stage::GuardIn);
        let checked;
        let means = (&app.guard_counters, app.guard_checks.as_ref());
        (req, checked) = guard_in(policy, means, req, rec).await;
        if let Err(e) = checked {
            rec.request = Some(Arc::new(req));
            return Err(e);
        }
    }

    // The response cache: after every refusal and the input guard (the key is the
    // request as the provider would get it), before any spend. Shadows, replays and
    // agents' turns (whose tool calls are decided per session) never use it.
    let mut hit = None;
    if let Some(rule) = cache_rule.filter(|r| r.response) {
        rec.entered(Stage::Cache);
        let special = is_shadow || rec.context.replay_of.is_some() || rec.agent.is_some();
        let target = match &feature {
            Some(fc) => format!("feature/{}@{}", fc.version.name(), fc.version.content_hash),
            None => req.model.clone(),
        };
        let key_id = rec.key_id.clone();
        hit = crate::caching::lookup(
            &app.cache,
            rule,
            entry.headers(),
            &req,
            &target,
            special,
            key_id.as_deref(),
            &mut rec.cache,
        )
        .await;
    }

    // Shared with the record from here, so that a call abandoned mid-way by its client
    // is still recorded with its input.
    let req = Arc::new(req);
    rec.request = Some(req.clone());

    if let Some(e) = hit {
        // A kept answer, as the provider gave it: the output stages run on it as on a
        // fresh one (guardrails, placeholders, disclaimers, a feature's parser).
        serve_kept(rec, &e);
        let mut resp = e.response.clone();
        let answer = if req.stream {
            as_answer(resp, true)
        } else {
            guard_out(rec, &mut resp).await?;
            if let Some(fc) = feature.as_ref().filter(|fc| fc.version.parses()) {
                rec.entered(Stage::ParseOutput);
                if let Ok(parsed) = fc.version.parse_output(&resp.text()) {
                    features::set_parse(rec, "ok", Some(parsed));
                }
            }
            if let Some(g) = &rec.guard {
                g.policy.disclaim(&g.applicable, &mut resp);
            }
            Answer::Whole(resp)
        };
        return Ok(Answered { answer, feature });
    }

    rec.entered(Stage::Call);
    let answer = match &feature {
        // A whole feature answer goes through its parser and failure policy.
        Some(fc) if !req.stream => parse_output(&plan, fc, &req, rec).await.map(Answer::Whole),
        _ => {
            if let Some(fc) = &feature {
                // A stream is relayed as it comes and parsed when recorded: the client
                // has seen the text, no policy can apply.
                if fc.version.parses() {
                    rec.entered(Stage::ParseOutput);
                    if let Some(f) = rec.feature.as_mut() {
                        f.parse_later = Some(fc.version.clone());
                    }
                }
            }
            let called = match &plan.resolved.accept {
                Some(accept) => {
                    let resp = cascade(&plan, accept, &req, rec).await?;
                    as_answer(resp, req.stream)
                }
                None => targets::call(&plan, &req, &plan.estimate, rec, &[]).await?,
            };
            match called {
                Answer::Whole(mut resp) => {
                    keep_raw(rec, &resp);
                    guard_out(rec, &mut resp).await?;
                    Ok(Answer::Whole(resp))
                }
                // A stream's output guard runs in its relay.
                stream => Ok(stream),
            }
        }
    }?;
    let answer = match answer {
        Answer::Whole(mut resp) => {
            // Agent safety on the way out: each proposed tool call decided (a stream's
            // in its relay, `respond`).
            if let (Some(gate), Some(mut call)) = (&app.agent, rec.agent.take()) {
                rec.entered(Stage::AgentOut);
                let screened = gate.screen(&mut call, rec.agent_who(), &mut resp).await;
                rec.agent = Some(call);
                if let Err(e) = screened {
                    rec.response = Some(resp);
                    return Err(e);
                }
            }
            if let Some(g) = &rec.guard {
                g.policy.disclaim(&g.applicable, &mut resp);
            }
            Answer::Whole(resp)
        }
        stream => stream,
    };
    // Once the primary has answered: its shadow, on its own task and record.
    if let Some(fc) = &feature {
        shadow::spawn(app, fc, rec);
    }
    Ok(Answered { answer, feature })
}

/// A cascade: the route's targets in order, each answer taken only if it passes the
/// route's acceptance checks, else the next target is asked (within the same deadline);
/// the last target's answer is taken as it is. A stream is asked whole (its answer must
/// be checked before the client sees any of it) and relayed as events afterwards. Each
/// rejected answer is an attempt with its reason, and its cost counts.
async fn cascade(
    plan: &Plan<'_>,
    accept: &crate::routing::Accept,
    req: &ChatRequest,
    rec: &mut CallRecord,
) -> Result<ChatResponse, GatewayError> {
    let whole;
    let req = if req.stream {
        let mut w = req.clone();
        w.stream = false;
        whole = w;
        &whole
    } else {
        req
    };
    let mut tried: Vec<(String, String)> = Vec::new();
    loop {
        let resp = match targets::call(plan, req, &plan.estimate, rec, &tried).await? {
            Answer::Whole(r) => r,
            Answer::Stream { .. } => {
                return Err(GatewayError::Internal("a cascade got a stream".into()))
            }
        };
        let (Some(p), Some(m)) = (rec.provider.clone(), rec.model.clone()) else {
            return Ok(resp);
        };
        let left = targets_left(plan, &p, &m, &tried);
        let verdict = accept.check(&resp);
        metrics::counter!(
            "llmop_cascade_answers_total",
            "route" => rec.route.clone().unwrap_or_default(),
            "outcome" => match (&verdict, left) {
                (Ok(()), _) => "accepted",
                (Err(_), 0) => "last_target",
                (Err(_), _) => "escalated",
            }
        )
        .increment(1);
        match verdict {
            Err(reason) if left > 0 => {
                rec.discard(resp.usage);
                rec.moving_on(reason);
                tried.push((p, m));
            }
            _ => {
                rec.baseline_usd = baseline(plan, &resp);
                return Ok(resp);
            }
        }
    }
}

/// What the tokens of a cascade's taken answer would have cost on the route's last (most
/// capable) target: the saving the cascade reports.
fn baseline(plan: &Plan<'_>, resp: &ChatResponse) -> Option<f64> {
    let price = plan.resolved.targets.last()?.price?;
    Some(llmop_cost::round_usd(price.cost(resp.usage.as_ref()?)))
}

/// Targets of the plan still to ask after `(provider, model)` answered, leaving out
/// those in `tried`.
fn targets_left(plan: &Plan<'_>, provider: &str, model: &str, tried: &[(String, String)]) -> usize {
    plan.resolved
        .targets
        .iter()
        .filter(|t| {
            (t.provider.name() != provider || &*t.model != model)
                && !tried
                    .iter()
                    .any(|(tp, tm)| t.provider.name() == tp && &*t.model == tm.as_str())
        })
        .count()
}

/// Serves a kept answer `e` (a cache hit, an idempotent replay) as this call's: who
/// made it, what it saved, a feature's parsed output.
fn serve_kept(rec: &mut CallRecord, e: &llmop_cache::Entry) {
    rec.provider.clone_from(&e.provider);
    rec.model.clone_from(&e.model);
    rec.cache.saved_usd = e.cost_usd;
    rec.cache.source = Some(e.request_id.clone());
    if let Some(f) = rec.feature.as_mut() {
        if e.parsed.is_some() {
            f.parse_status = Some("ok");
            f.parsed.clone_from(&e.parsed);
        }
    }
}

/// A whole answer as the provider gave it, for the response cache (only when the call
/// keeps its answer there).
fn keep_raw(rec: &mut CallRecord, resp: &ChatResponse) {
    if let Some(t) = rec.cache.ticket.as_mut().filter(|t| t.put.is_some()) {
        t.raw = Some(resp.clone());
    }
}

/// The input guard stage: the call's rules chosen (by route, feature and key) and
/// applied to the request; the call's guard state kept on its record for the output
/// guard and the record.
pub(crate) async fn guard_in(
    policy: &Arc<llmop_guard::policy::Policy>,
    (counters, checks): (
        &Arc<crate::guard::Counters>,
        Option<&Arc<crate::guard::Checks>>,
    ),
    mut req: ChatRequest,
    rec: &mut CallRecord,
) -> (ChatRequest, Result<(), GatewayError>) {
    let applicable = policy.for_call(llmop_guard::policy::Scope {
        route: rec.route.as_deref(),
        feature: rec.context.feature.as_deref(),
        key: rec.key_id.as_deref(),
    });
    if !applicable.has_input() && !applicable.has_output() {
        return (req, Ok(()));
    }
    let mut g = crate::guard::GuardCall::new(
        policy.clone(),
        counters.clone(),
        checks.cloned(),
        applicable,
    );
    // The request's other strings (tools, schemas, `user`, `metadata`…), joined once.
    let fields = llmop_guard::fields::Fields::of(&req);
    let checked = if req.text_bytes() + fields.len() <= SCAN_INLINE_BYTES {
        let p = g.policy.clone();
        p.check_input_with(&g.applicable, &mut req, fields, &mut g.vault, &mut g.book)
    } else {
        // A large request (up to the body limit) would hold this runtime thread for
        // as long as scanning it takes (~10 ms per MB): it is scanned on the blocking
        // pool instead, so other calls keep being served.
        let work = tokio::task::spawn_blocking(move || {
            let p = g.policy.clone();
            let r = p.check_input_with(&g.applicable, &mut req, fields, &mut g.vault, &mut g.book);
            (req, g, r)
        })
        .await;
        match work {
            Ok((back, back_g, r)) => {
                req = back;
                g = back_g;
                r
            }
            Err(_) => {
                return (
                    ChatRequest::new(
                        rec.model_requested.clone(),
                        Vec::new(),
                        llmop_core::WireFormat::OpenAi,
                    ),
                    Err(GatewayError::Internal(
                        "the input guardrails failed to run".into(),
                    )),
                )
            }
        }
    };
    // The model-based checks (classifiers, remote services) on the request as the
    // provider would get it, once the local rules passed.
    let checked = match checked {
        Ok(()) => {
            let asks = g.policy.asks_input(&g.applicable, &req);
            if asks.is_empty() {
                Ok(())
            } else {
                let started = std::time::Instant::now();
                let outcomes = crate::guard::run_asks(&g.policy, g.checks.as_ref(), asks).await;
                let p = g.policy.clone();
                p.settle("input", outcomes, started.elapsed(), &mut g.book)
            }
        }
        stop => stop,
    };
    rec.guard = Some(Box::new(g));
    let checked = checked.map_err(|stop| crate::guard::stop_error(&rec.request_id, &stop));
    (req, checked)
}

/// A whole answer the agent stage produced (an approved held call) as the entry's
/// answer: a stream of its events when the call asked for one.
fn as_answer(resp: ChatResponse, stream: bool) -> Answer {
    if !stream {
        return Answer::Whole(resp);
    }
    let mut events = resp.into_events().into_iter();
    let first = events.next().unwrap_or(llmop_core::StreamEvent::Start {
        id: String::new(),
        model: String::new(),
    });
    use futures::StreamExt;
    Answer::Stream {
        first,
        rest: futures::stream::iter(events.map(Ok)).boxed(),
    }
}

/// Requests whose scanned text is larger than this are scanned off the runtime.
const SCAN_INLINE_BYTES: usize = 64 * 1024;

/// The output guard stage of a whole answer: the call's output rules, then its
/// placeholders restored. A stop keeps the answer in the record (masked there).
async fn guard_out(rec: &mut CallRecord, resp: &mut ChatResponse) -> Result<(), GatewayError> {
    let Some(g) = rec.guard.as_deref_mut().filter(|g| g.guards_output()) else {
        return Ok(());
    };
    let p = g.policy.clone();
    let mut checked = p.check_output(&g.applicable, resp, &mut g.book);
    if checked.is_ok() {
        // The model-based checks on the answer as the client will see it (masked, its
        // placeholders not yet restored).
        let asks = p.asks_output(&g.applicable, resp);
        if !asks.is_empty() {
            let started = std::time::Instant::now();
            let outcomes = crate::guard::run_asks(&p, g.checks.as_ref(), asks).await;
            checked = p.settle("output", outcomes, started.elapsed(), &mut g.book);
        }
    }
    if checked.is_ok() {
        p.restore(resp, &g.vault);
    }
    rec.entered(Stage::GuardOut);
    if let Err(stop) = checked {
        rec.usage = resp.usage;
        rec.response = Some(resp.clone());
        return Err(crate::guard::stop_error(&rec.request_id, &stop));
    }
    Ok(())
}

/// The authorize stage: the key's scope, for the model (or feature) in the call's
/// environment, and for the feature the call is attributed to. The environment defaults
/// to the key's, then (for a feature) to `[features] default_env`.
fn authorize(
    key: Option<&ApiKey>,
    ask: &Ask,
    context: &mut RequestContext,
    default_env: &str,
) -> Result<(), GatewayError> {
    let Some(k) = key else { return Ok(()) };
    if context.env.is_none() {
        context.env.clone_from(&k.scopes.default_env);
    }
    if ask.feature.is_some() && context.env.is_none() {
        context.env = Some(default_env.to_string());
    }
    let model = match &ask.feature {
        Some(f) => std::borrow::Cow::Owned(format!("feature/{}", f.name)),
        None => std::borrow::Cow::Borrowed(ask.req.model.as_str()),
    };
    auth::check_scope(k, &model, context.env.as_deref())?;
    auth::check_feature_tag(k, context.feature.as_deref())
}

/// The feature stage: the feature's version, chosen and rendered into the request built on `base`.
async fn feature(
    registry: Option<&Arc<FeatureRegistry>>,
    ask: FeatureAsk,
    base: ChatRequest,
    rec: &mut CallRecord,
) -> Result<(ChatRequest, FeatureCall), GatewayError> {
    let reg = registry.ok_or_else(|| GatewayError::NotFound {
        message: "features need the record store: this gateway runs with [store] enabled = false"
            .into(),
        code: codes::FEATURE_NOT_FOUND,
    })?;
    let env = rec
        .context
        .env
        .get_or_insert_with(|| reg.default_env.clone())
        .clone();
    rec.context.feature = Some(ask.name.clone());
    let sel = match ask.pick {
        Pick::Deployed => {
            let stick = rec
                .context
                .user
                .as_deref()
                .or(rec.context.session.as_deref());
            reg.select_fresh(&ask.name, &env, stick).await?
        }
        Pick::Pinned(v) => Selected {
            version: reg.version(&ask.name, v).await?,
            arm: None,
            shadow: None,
        },
        Pick::Version(version) => Selected {
            version,
            arm: None,
            shadow: None,
        },
    };
    let (given, from) = match ask.vars {
        Vars::FromCall => (
            sel.version
                .variables_from_call(&base.metadata, base.last_user_text().as_deref()),
            "metadata",
        ),
        Vars::Given(m) => (m, "variables"),
    };
    let v = &sel.version;
    // Recorded before rendering: a call whose variables do not render still says which
    // version refused them.
    rec.feature = Some(Box::new(FeatureRecord {
        version: v.version,
        content_hash: v.content_hash.clone(),
        arm: sel.arm.clone(),
        variables: given.clone(),
        shadow_of: ask.shadow_of,
        ..FeatureRecord::default()
    }));
    let rendered = v
        .render(&given)
        .map_err(|e| features::render_error(v, &e, from))?;
    if let Some(f) = rec.feature.as_mut() {
        f.variables.clone_from(&rendered.variables);
        f.rendered_prompt = rendered.prompt_text();
    }
    let req = features::build_request(v, &rendered, base);
    Ok((
        req,
        FeatureCall {
            version: sel.version,
            shadow: sel.shadow,
            env,
            given,
        },
    ))
}

/// The route stage: `model` to targets, once per call; the deadline from the route's
/// timeout and the client's `x-llmop-timeout-ms`.
fn route<'a>(
    router: &'a Router,
    limits: Option<&'a Arc<Limits>>,
    default_timeout: Duration,
    req: &ChatRequest,
    rec: &mut CallRecord,
) -> Result<Plan<'a>, GatewayError> {
    let resolved = router.resolve(&req.model)?;
    rec.route = resolved.route.map(str::to_string);
    let mut budget = resolved.timeout.unwrap_or(default_timeout);
    if let Some(ms) = rec.context.timeout_ms {
        budget = budget.min(Duration::from_millis(ms));
    }
    rec.deadline.get_or_insert_with(|| Instant::now() + budget);
    Ok(Plan {
        estimate: Estimate::new(&resolved),
        resolved,
        limits,
        budget,
    })
}

/// The call and parse-output stages of a whole feature answer: the call stage, then the parser and its failure
/// policy (`repair` asks again with the problem; `next_target` moves on to a target that
/// has not answered; `static` answers the version's static response; `error` fails).
/// The answer's text is what the client gets; the parsed value goes to the record (and
/// to invoke's `output.parsed`).
async fn parse_output(
    plan: &Plan<'_>,
    fc: &FeatureCall,
    req: &ChatRequest,
    rec: &mut CallRecord,
) -> Result<ChatResponse, GatewayError> {
    let v = &fc.version;
    let mut answered: Vec<(String, String)> = Vec::new();
    // A repair asks with more messages than the call was estimated with: it has its own
    // estimate, so that target quotas count what it sends.
    let mut repair: Option<(ChatRequest, Estimate)> = None;
    loop {
        let (sent, estimate) = match &repair {
            Some((r, e)) => (r, e),
            None => (req, &plan.estimate),
        };
        let resp = match targets::call(plan, sent, estimate, rec, &answered).await {
            Ok(Answer::Whole(resp)) => resp,
            Ok(Answer::Stream { .. }) => {
                return Err(GatewayError::Internal(
                    "a whole feature call got a stream".into(),
                ))
            }
            Err(e) if !answered.is_empty() && e.code() == codes::NO_TARGET_LEFT => {
                return Err(features::parse_failed(
                    v,
                    "and no target of the route is left to try",
                ));
            }
            Err(e) => return features::feature_fallback(v, e, rec),
        };
        let mut resp = resp;
        // A cascade route: a feature's answer passes the route's checks and its parser,
        // or the next target is asked.
        if let (Some(a), false, Some(p), Some(m)) = (
            &plan.resolved.accept,
            rec.degraded,
            rec.provider.clone(),
            rec.model.clone(),
        ) {
            if targets_left(plan, &p, &m, &answered) > 0 {
                let verdict = a.check(&resp).and_then(|()| {
                    if v.parses() && v.parse_output(&resp.text()).is_err() {
                        Err("cascade_parse_failed")
                    } else {
                        Ok(())
                    }
                });
                if let Err(reason) = verdict {
                    rec.discard(resp.usage);
                    rec.moving_on(reason);
                    answered.push((p, m));
                    continue;
                }
            }
            rec.baseline_usd = baseline(plan, &resp);
        }
        keep_raw(rec, &resp);
        guard_out(rec, &mut resp).await?;
        if rec.degraded || !v.parses() {
            return Ok(resp);
        }
        rec.entered(Stage::ParseOutput);
        let text = resp.text();
        let problem = match v.parse_output(&text) {
            Ok(parsed) => {
                let status = if repair.is_some() {
                    "repaired"
                } else if !answered.is_empty() {
                    "next_target"
                } else {
                    "ok"
                };
                features::set_parse(rec, status, Some(parsed));
                return Ok(resp);
            }
            Err(p) => p,
        };
        metrics::counter!("llmop_feature_parse_failures_total", "feature" => v.name().to_string())
            .increment(1);
        tracing::debug!(request_id = %rec.request_id, feature = v.name(), problem = %problem, "output did not parse");
        match v.on_parse_failure() {
            OnParseFailure::Repair if repair.is_none() => {
                rec.discard(resp.usage);
                rec.moving_on("parse_repair");
                let mut again = req.clone();
                again.messages.push(Message::text(Role::Assistant, text));
                again
                    .messages
                    .push(Message::text(Role::User, v.repair_message(&problem)));
                repair = Some((again, plan.estimate.again()));
            }
            OnParseFailure::NextTarget => {
                rec.discard(resp.usage);
                rec.moving_on("parse_failure");
                if let (Some(p), Some(m)) = (rec.provider.clone(), rec.model.clone()) {
                    answered.push((p, m));
                }
            }
            OnParseFailure::Static => {
                let (text, parsed) = v.static_response().unwrap_or_default();
                features::set_parse(rec, "static", Some(parsed));
                return Ok(ChatResponse {
                    parts: vec![llmop_core::Part::Text(text)],
                    ..resp
                });
            }
            _ => {
                features::set_parse(rec, "failed", None);
                // The record keeps what the model said.
                rec.usage = resp.usage;
                rec.response = Some(resp);
                return Err(features::parse_failed(v, &problem.0));
            }
        }
    }
}
