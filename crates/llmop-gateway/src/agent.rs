//! Agent safety on the request path (`[agents]`, docs/agents.md): the end user's scopes,
//! the session's taint, and a decision for each tool call a model proposes. The rules
//! are `llmop_guard::agent`'s (pure); this module holds what they need from outside:
//! the taint of each session (in memory, and in the store for every replica and across
//! restarts) and the approvals.
//!
//! The taint is the gateway's own account: a session is tainted by the tool calls
//! llmop relayed to the client (and those it sees in the request's history), so a
//! client that cuts its history does not wash it.

use axum::http::HeaderMap;
use llmop_core::{codes, ChatRequest, ChatResponse, FinishReason, GatewayError, Part};
use llmop_guard::agent::{AgentPolicy, Caps, Decision, Outcome, Removed, Scope, UserScopes};
use llmop_store::Store;
use serde::Serialize;

/// The header a client's retry names an approval with.
pub const APPROVAL_HEADER: &str = "x-llmop-approval";

/// The compiled policy and the state it needs.
pub struct AgentGate {
    pub policy: AgentPolicy,
    /// Session key → taint bits, for this replica (the store is the shared truth).
    taint: quick_cache::sync::Cache<String, u32>,
    store: Option<Store>,
    ttl_ms: i64,
    max_held: usize,
}

/// What the agent stage decided for one call; rides on its record.
#[derive(Debug, Serialize)]
pub struct AgentCall {
    pub user: UserScopes,
    /// The session's taint when the call came in (the store's and the history's).
    pub taint: Caps,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<Removed>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<Decision>,
    /// The approval a retry came with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    #[serde(skip)]
    session_key: Option<String>,
    #[serde(skip)]
    session: Option<String>,
}

/// Who and what a call is, as the agent stage needs it (not the whole record: the
/// record holds an [`AgentCall`], so this module does not import the record's).
#[derive(Clone, Copy)]
pub struct Who<'a> {
    pub request_id: &'a str,
    pub key_id: Option<&'a str>,
    pub session: Option<&'a str>,
    pub route: Option<&'a str>,
    pub feature: Option<&'a str>,
}

/// What the agent stage lets through.
pub enum Admit {
    /// Call the model.
    Go,
    /// Answer with this (an approved held answer, or its refusal), no model call.
    Answer(ChatResponse),
}

impl AgentGate {
    pub fn new(
        config: &llmop_core::config::Config,
        store: Option<Store>,
    ) -> Result<Option<AgentGate>, String> {
        let a = &config.agents;
        if a.tools.is_empty() && a.policies.is_empty() {
            return Ok(None);
        }
        let policy = AgentPolicy::new(a, &config.dir)?;
        Ok(Some(AgentGate {
            policy,
            taint: quick_cache::sync::Cache::new(100_000),
            store,
            ttl_ms: i64::try_from(a.approval_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX),
            max_held: a.max_held_bytes,
        }))
    }

    /// Whether a call is the agent stage's business.
    pub fn applies(&self, req: &ChatRequest, headers: &HeaderMap) -> bool {
        self.policy.governs(req) || headers.contains_key(APPROVAL_HEADER)
    }

    /// The session's taint as far as this call can tell: what this replica knows is in
    /// the store, and the store itself when more taint could change a decision here
    /// (another replica may have tainted the session; see
    /// [`AgentPolicy::more_taint_matters`]).
    async fn session_taint(
        &self,
        key: &str,
        known: u32,
        who: Who<'_>,
    ) -> Result<u32, GatewayError> {
        let mem = self.taint.get(key).unwrap_or(0);
        let Some(store) = &self.store else {
            return Ok(mem);
        };
        let scope = Scope {
            route: who.route,
            feature: who.feature,
            key: who.key_id,
        };
        if !self.policy.more_taint_matters(Caps(known | mem), scope) {
            return Ok(mem);
        }
        let stored = store.session_taint(key).await.map_err(store_down)?;
        if stored & !mem != 0 {
            self.taint.insert(key.to_string(), mem | stored);
        }
        Ok(mem | stored)
    }

    /// Adds to the session's account what this call saw: the taint its history showed
    /// and its answer's allowed calls. The memory holds only what the store has (it is
    /// written after the store), so a bit is written once per replica, and a capability
    /// seen only in a client's history is kept even if the client later cuts it.
    async fn taint_with(&self, call: &AgentCall, bits: u32) -> Result<(), GatewayError> {
        let Some(key) = &call.session_key else {
            return Ok(());
        };
        let mem = self.taint.get(key).unwrap_or(0);
        let new = call.taint.0 | bits;
        if new & !mem == 0 {
            return Ok(());
        }
        if let Some(store) = &self.store {
            store
                .add_session_taint(key, new)
                .await
                .map_err(store_down)?;
        }
        self.taint.insert(key.clone(), mem | new);
        Ok(())
    }

    /// The agent-in stage: who the end user is and what they may use, the session's
    /// taint, tools taken out; a retry with an approval answered from it.
    pub async fn admit(
        &self,
        headers: &HeaderMap,
        req: &mut ChatRequest,
        who: Who<'_>,
    ) -> (Option<Box<AgentCall>>, Result<Admit, GatewayError>) {
        let user = match self.user(headers, who.key_id, req) {
            Ok(u) => u,
            Err(e) => return (None, Err(e)),
        };
        let session = who.session.map(str::to_string);
        let session_key = session
            .as_deref()
            .map(|s| format!("{}:{s}", who.key_id.unwrap_or("-")));
        let mut taint = self.policy.history_taint(req).0;
        if let Some(k) = &session_key {
            match self.session_taint(k, taint, who).await {
                Ok(t) => taint |= t,
                Err(e) => return (None, Err(e)),
            }
        }
        let removed = self.policy.filter_tools(req, &user);
        let mut call = AgentCall {
            user,
            taint: Caps(taint),
            removed,
            decisions: Vec::new(),
            approval: None,
            session_key,
            session,
        };
        for r in &call.removed {
            metrics::counter!("llmop_agent_tools_removed_total", "tool" => r.tool.clone())
                .increment(1);
        }
        let approval = headers
            .get(APPROVAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(id) = approval else {
            return (Some(Box::new(call)), Ok(Admit::Go));
        };
        call.approval = Some(id.clone());
        let answered = self.approved(&id, &mut call, who).await;
        (Some(Box::new(call)), answered)
    }

    /// A retry with an approval: the held answer if a person approved it, its refusal if
    /// they denied it, else an error saying what the approval waits for.
    async fn approved(
        &self,
        id: &str,
        call: &mut AgentCall,
        who: Who<'_>,
    ) -> Result<Admit, GatewayError> {
        let not_found = || GatewayError::NotFound {
            message: format!(
                "no approval `{}` for this key and session (unknown, or expired)",
                shown(id)
            ),
            code: codes::APPROVAL_NOT_FOUND,
        };
        let store = self.store.as_ref().ok_or_else(not_found)?;
        let a = store
            .approval(id)
            .await
            .map_err(store_down)?
            .filter(|a| a.key_id.as_deref() == who.key_id && a.session == call.session)
            .ok_or_else(not_found)?;
        let held: ChatResponse = serde_json::from_value(a.answer.clone())
            .map_err(|_| GatewayError::Internal("a held answer could not be read".into()))?;
        let outcome = match a.status.as_str() {
            "approved" => Outcome::Approved,
            "denied" => Outcome::Deny,
            "pending" => {
                return Err(GatewayError::Forbidden {
                    message: format!(
                        "approval `{id}` for the call to `{}` is still waiting for a decision",
                        a.tool
                    ),
                    code: codes::APPROVAL_PENDING,
                })
            }
            _ => return Err(not_found()),
        };
        let reason = match outcome {
            Outcome::Approved => format!("approved by a person ({})", a.reason),
            _ => format!(
                "denied by a person{}",
                a.decision_note
                    .as_deref()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default()
            ),
        };
        let mut answer = held;
        let mut bits = 0;
        let held_tool = a.tool.clone();
        let mut refused = Vec::new();
        for p in &answer.parts {
            if let Part::ToolCall(c) = p {
                let d = Decision {
                    tool: c.name.clone(),
                    call_id: c.id.clone(),
                    outcome: if c.name == held_tool {
                        outcome
                    } else {
                        Outcome::Allow
                    },
                    rule: Some(a.rule.clone()),
                    reason: reason.clone(),
                    taint: call.taint,
                    approval_id: Some(a.id.clone()),
                };
                if d.outcome == Outcome::Deny {
                    refused.push(c.id.clone());
                } else {
                    bits |= self.policy.caps_of(&c.name).0;
                }
                count(&d);
                call.decisions.push(d);
            }
        }
        if !refused.is_empty() {
            if self.policy.deny_as == llmop_core::config::DenyAs::Error {
                return Err(denied_error(&call.decisions));
            }
            replace_denied(&mut answer, &call.decisions);
        }
        self.taint_with(call, bits).await?;
        Ok(Admit::Answer(answer))
    }

    /// The end user's scopes: a verified token, else the trusted header (from a trusted
    /// key), else none.
    fn user(
        &self,
        headers: &HeaderMap,
        key_id: Option<&str>,
        req: &ChatRequest,
    ) -> Result<UserScopes, GatewayError> {
        let u = &self.policy.users;
        if let Some(v) = headers.get(u.token_header.as_str()) {
            let token = v.to_str().unwrap_or_default().trim();
            let token = token.strip_prefix("Bearer ").unwrap_or(token);
            return u.verify(token).map_err(|e| GatewayError::Unauthorized {
                message: e.to_string(),
                code: codes::INVALID_USER_TOKEN,
            });
        }
        if let Some(h) = &u.scopes_header {
            let trusted = u.trusted_keys.is_empty()
                || key_id.is_some_and(|k| u.trusted_keys.iter().any(|t| t == k));
            if let (Some(v), true) = (headers.get(h.as_str()), trusted) {
                return Ok(llmop_guard::agent::UserKeys::from_header(
                    v.to_str().unwrap_or_default(),
                ));
            }
        }
        if u.required && !req.tools.is_empty() {
            return Err(GatewayError::Unauthorized {
                message: format!(
                    "this call offers tools and must carry the end user's scopes (`{}`)",
                    u.token_header
                ),
                code: codes::USER_SCOPES_REQUIRED,
            });
        }
        Ok(UserScopes::none())
    }

    /// Decides every tool call of a whole answer, in order (an allowed call's taint counts for the
    /// next), and applies the outcome: denied calls become refusals (or a 403), a held
    /// call makes the answer wait for approval (403 `approval_required` with its id).
    pub async fn screen(
        &self,
        call: &mut AgentCall,
        who: Who<'_>,
        resp: &mut ChatResponse,
    ) -> Result<(), GatewayError> {
        let scope = Scope {
            route: who.route,
            feature: who.feature,
            key: who.key_id,
        };
        let mut taint = call.taint;
        let mut bits = 0;
        let mut held: Option<usize> = None;
        for p in &resp.parts {
            if let Part::ToolCall(c) = p {
                let d = self.policy.decide(c, taint, &call.user, scope);
                if matches!(d.outcome, Outcome::Allow | Outcome::WouldDeny) {
                    let caps = self.policy.caps_of(&c.name).0;
                    bits |= caps;
                    taint = Caps(taint.0 | caps);
                }
                if d.outcome == Outcome::RequiresApproval && held.is_none() {
                    held = Some(call.decisions.len());
                }
                count(&d);
                call.decisions.push(d);
            }
        }
        let denied = call.decisions.iter().any(|d| d.outcome == Outcome::Deny);
        if denied && self.policy.deny_as == llmop_core::config::DenyAs::Error {
            return Err(denied_error(&call.decisions));
        }
        if denied {
            replace_denied(resp, &call.decisions);
        }
        if let Some(i) = held {
            return Err(self.hold(call, who, resp, i).await);
        }
        self.taint_with(call, bits).await
    }

    /// Keeps the answer for a person's decision.
    async fn hold(
        &self,
        call: &mut AgentCall,
        who: Who<'_>,
        resp: &ChatResponse,
        i: usize,
    ) -> GatewayError {
        let Some(store) = &self.store else {
            return GatewayError::Forbidden {
                message: "a tool call needs approval, and approvals need the record store ([store] enabled = false here)".into(),
                code: codes::TOOL_CALL_DENIED,
            };
        };
        let id = format!("apr_{}", uuid_like());
        let d = &call.decisions[i];
        let answer = match serde_json::to_value(resp) {
            Ok(v) => v,
            Err(_) => return GatewayError::Internal("the held answer could not be kept".into()),
        };
        let put = store
            .insert_approval(&llmop_store::NewApproval {
                id: &id,
                ttl_ms: self.ttl_ms,
                request_id: who.request_id,
                key_id: who.key_id,
                session: call.session.as_deref(),
                tool: &d.tool,
                rule: d.rule.as_deref().unwrap_or("agents"),
                reason: &d.reason,
                answer: &answer,
            })
            .await;
        if let Err(e) = put {
            return store_down(e);
        }
        let message = format!(
            "the call to `{}` is held for approval ({}; policy `{}`): a person decides with POST /admin/approvals/{id}, then retry this call with `{APPROVAL_HEADER}: {id}`",
            d.tool,
            d.reason,
            d.rule.as_deref().unwrap_or("agents"),
        );
        call.decisions[i].approval_id = Some(id.clone());
        GatewayError::Held {
            message,
            approval_id: id,
        }
    }

    /// A stream's screen: its held tool-call events, decided at the stream's end.
    pub fn stream(
        &self,
        call: Option<&AgentCall>,
        req: Option<&ChatRequest>,
    ) -> Option<AgentStream> {
        let req = req?;
        // A retry's approved answer was decided already.
        let undecided = call.is_some_and(|a| a.approval.is_none());
        (undecided && !req.tools.is_empty()).then(|| AgentStream::new(self.max_held))
    }

    /// Decides the tool calls a stream held, and gives the events the client gets.
    pub async fn finish_stream(
        &self,
        s: AgentStream,
        call: &mut AgentCall,
        who: Who<'_>,
    ) -> Result<Vec<llmop_core::StreamEvent>, GatewayError> {
        use llmop_core::StreamEvent;
        let mut resp = s.acc.finish(0);
        let usage = resp.usage.take();
        let details = std::mem::take(&mut resp.details);
        self.screen(call, who, &mut resp).await?;
        let mut rest: Vec<StreamEvent> = Vec::with_capacity(resp.parts.len() * 2 + 3);
        let mut calls = 0;
        for p in resp.parts {
            llmop_core::chat::push_part_events(p, &mut calls, &mut rest);
        }
        if details != llmop_core::chat::AnswerDetails::default() {
            rest.push(StreamEvent::Details(details));
        }
        rest.push(StreamEvent::Finish(resp.finish_reason));
        if let Some(u) = usage {
            rest.push(StreamEvent::Usage(u));
        }
        Ok(rest)
    }
}

/// A stream's agent screen: every event from the first tool call on is held (folded
/// into the answer it builds, not kept as events) until the stream ends, when each call
/// is decided, so a denied call never reaches the client. What it holds is bounded by
/// `[agents] max_held_bytes`: past it the stream is cut, fail closed.
pub struct AgentStream {
    acc: llmop_core::StreamAccumulator,
    holding: bool,
    bytes: usize,
    max: usize,
}

/// What the agent screen does with one event of a stream.
pub enum Pass {
    /// It goes out now.
    Out(llmop_core::StreamEvent),
    /// It is held until the stream ends.
    Held,
    /// The held events are more than `max_held_bytes`: the stream ends with this.
    TooMuch(GatewayError),
}

impl AgentStream {
    fn new(max: usize) -> AgentStream {
        let mut acc = llmop_core::StreamAccumulator::default();
        acc.push(&llmop_core::StreamEvent::Start {
            id: String::new(),
            model: String::new(),
        });
        AgentStream {
            acc,
            holding: false,
            bytes: 0,
            max,
        }
    }

    /// Whether an event goes out now, is held, or is one too many.
    pub fn pass(&mut self, ev: llmop_core::StreamEvent) -> Pass {
        use llmop_core::StreamEvent;
        if matches!(ev, StreamEvent::ToolCallStart { .. }) {
            self.holding = true;
        }
        if !self.holding {
            return Pass::Out(ev);
        }
        self.bytes = self.bytes.saturating_add(held_size(&ev));
        if self.bytes > self.max {
            return Pass::TooMuch(GatewayError::Forbidden {
                message: format!(
                    "the answer's tool calls are more than [agents] max_held_bytes = {} and cannot be decided; the stream was cut",
                    self.max
                ),
                code: codes::TOOL_CALL_DENIED,
            });
        }
        self.acc.push(&ev);
        Pass::Held
    }

    pub fn holds(&self) -> bool {
        self.holding
    }
}

/// What a held event adds to the answer being built (its text; a small constant for
/// the rest, so a flood of empty events is bounded too).
fn held_size(ev: &llmop_core::StreamEvent) -> usize {
    use llmop_core::StreamEvent;
    const EVENT: usize = 16;
    EVENT
        + match ev {
            StreamEvent::Text(t)
            | StreamEvent::ThinkingDelta(t)
            | StreamEvent::SignatureDelta(t) => t.len(),
            StreamEvent::ToolCallStart { id, name, .. } => id.len() + name.len(),
            StreamEvent::ToolCallDelta { arguments, .. } => arguments.len(),
            StreamEvent::Reasoning(r) => serde_json::to_vec(r).map_or(0, |v| v.len()),
            _ => 0,
        }
}

/// Denied calls replaced by the refusal text an agent reads; with no call left, the
/// answer ends as a plain stop.
fn replace_denied(resp: &mut ChatResponse, decisions: &[Decision]) {
    for p in resp.parts.iter_mut() {
        if let Part::ToolCall(c) = p {
            if let Some(d) = decisions
                .iter()
                .find(|d| d.call_id == c.id && d.outcome == Outcome::Deny)
            {
                *p = Part::Text(AgentPolicy::refusal(d));
            }
        }
    }
    if !resp.parts.iter().any(|p| matches!(p, Part::ToolCall(_)))
        && resp.finish_reason == FinishReason::ToolCalls
    {
        resp.finish_reason = FinishReason::Stop;
    }
}

fn denied_error(decisions: &[Decision]) -> GatewayError {
    let d = decisions.iter().find(|d| d.outcome == Outcome::Deny);
    GatewayError::Forbidden {
        message: match d {
            Some(d) => format!(
                "the call to `{}` was denied: {} (policy `{}`)",
                d.tool,
                d.reason,
                d.rule.as_deref().unwrap_or("agents")
            ),
            None => "a tool call was denied".into(),
        },
        code: codes::TOOL_CALL_DENIED,
    }
}

fn count(d: &Decision) {
    let outcome = match d.outcome {
        Outcome::Allow => "allow",
        Outcome::Deny => "deny",
        Outcome::RequiresApproval => "requires_approval",
        Outcome::WouldDeny => "would_deny",
        Outcome::Approved => "approved",
    };
    metrics::counter!("llmop_agent_decisions_total", "outcome" => outcome, "rule" => d.rule.clone().unwrap_or_default())
        .increment(1);
}

fn store_down(e: llmop_store::StoreError) -> GatewayError {
    tracing::warn!(error = %e, "agent state unavailable in the store");
    GatewayError::Unavailable {
        message: "the agent policy could not read or write its state in the store".into(),
        code: codes::STORE_UNAVAILABLE,
    }
}

/// An approval id as shown in an error: bounded and printable.
fn shown(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(64)
        .collect()
}

fn uuid_like() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    format!("{:016x}{:016x}", rng.gen::<u64>(), rng.gen::<u64>())
}

impl AgentCall {
    /// The record's JSON of this call's decisions.
    pub fn to_record(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()
    }
}
