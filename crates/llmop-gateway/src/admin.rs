//! The admin API: features (register versions, deploy, split, shadow, roll back, read
//! the audited history: the same operations as `llmop feature …`, `llmop deploy …`,
//! `llmop rollback …`, for tools that talk HTTP) and budgets (`/admin/budgets`), and
//! [`require_admin`], the middleware that guards the admin and records routes.
//!
//! A change made here is served by this replica from the very next request (its
//! deployments are re-read before the answer) and by every replica sharing the store
//! within `[features] refresh_ms`.
//!
//! Once any client key exists, or the listener is beyond loopback, these endpoints take
//! the admin token (`[server] admin_token_env`); the actor recorded is `x-llmop-actor`
//! if sent, else `admin-api`.

use crate::context::RequestId;
use crate::features::FeatureRegistry;
use crate::http_error::{self, WireFormat};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use llmop_core::codes;
use llmop_core::GatewayError;
use llmop_features::FeatureSpec;
use llmop_store::{ChangeBy, DeployError, DeploymentState, StoreError};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Middleware of the admin and records routes.
pub async fn require_admin(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match app.auth.admin(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            let rid = req
                .extensions()
                .get::<crate::context::RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default();
            crate::http_error::response(crate::http_error::WireFormat::OpenAi, &e, &rid)
        }
    }
}

fn registry(app: &AppState) -> Result<&Arc<FeatureRegistry>, GatewayError> {
    app.features.as_ref().ok_or_else(|| GatewayError::NotFound {
        message: "features need the record store: this gateway runs with [store] enabled = false"
            .into(),
        code: codes::FEATURE_NOT_FOUND,
    })
}

fn store_error(e: StoreError) -> GatewayError {
    tracing::error!(error = %e, "admin: store error");
    GatewayError::Unavailable {
        message: format!("the store cannot serve this now: {e}"),
        code: codes::STORE_UNAVAILABLE,
    }
}

fn deploy_error(e: DeployError) -> GatewayError {
    match e {
        DeployError::Invalid(m) => GatewayError::InvalidRequest {
            message: m,
            param: None,
            code: codes::INVALID_DEPLOYMENT,
        },
        e @ DeployError::UnknownVersion { .. } => GatewayError::NotFound {
            message: e.to_string(),
            code: codes::FEATURE_VERSION_NOT_FOUND,
        },
        DeployError::NothingToRollBack(m) => GatewayError::InvalidRequest {
            message: m,
            param: None,
            code: codes::NOTHING_TO_ROLL_BACK,
        },
        DeployError::Store(e) => store_error(e),
    }
}

fn answer(rid: &str, r: Result<serde_json::Value, GatewayError>) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => http_error::response(WireFormat::OpenAi, &e, rid),
    }
}

fn actor(headers: &HeaderMap) -> String {
    headers
        .get("x-llmop-actor")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| "admin-api".to_string(), |v| format!("admin-api:{v}"))
}

/// `GET /admin/features`: every registered feature with its latest version and what
/// each environment serves.
pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
) -> Response {
    let r = async {
        let reg = registry(&app)?;
        let store = reg.store();
        let deployments = store.deployments().await.map_err(store_error)?;
        let mut out = Vec::new();
        for name in store.feature_names().await.map_err(store_error)? {
            let versions = store.feature_versions(&name).await.map_err(store_error)?;
            let envs: serde_json::Map<String, serde_json::Value> = deployments
                .iter()
                .filter(|d| d.feature == name)
                .map(|d| (d.env.clone(), json!(d.state.describe())))
                .collect();
            out.push(json!({
                "feature": name,
                "latest_version": versions.last().map(|v| v.version),
                "versions": versions.len(),
                "deployments": envs,
            }));
        }
        Ok(json!({"features": out}))
    }
    .await;
    answer(&rid, r)
}

/// `POST /admin/features`: registers the feature file in the body (TOML) as a new
/// version, or returns the version that already has this content.
pub async fn push(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let reg = registry(&app)?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| GatewayError::invalid("the feature file is not UTF-8", None))?;
        let spec = FeatureSpec::parse(text).map_err(|errs| GatewayError::InvalidRequest {
            message: errs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            param: errs
                .first()
                .map(|e| e.key.clone())
                .filter(|k| !k.is_empty()),
            code: codes::INVALID_FEATURE,
        })?;
        let canonical =
            serde_json::to_value(&spec).map_err(|e| GatewayError::Internal(e.to_string()))?;
        let pushed = reg
            .store()
            .push_feature_version(
                &spec.name,
                &spec.content_hash(),
                &canonical,
                Some(&actor(&headers)),
            )
            .await
            .map_err(store_error)?;
        Ok(json!({
            "feature": spec.name,
            "version": pushed.version.version,
            "content_hash": pushed.version.content_hash,
            "created": pushed.created,
        }))
    }
    .await;
    answer(&rid, r)
}

/// `GET /admin/features/{name}`: versions and deployments.
pub async fn show(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path(name): Path<String>,
) -> Response {
    let r = async {
        let reg = registry(&app)?;
        let store = reg.store();
        let versions = store.feature_versions(&name).await.map_err(store_error)?;
        if versions.is_empty() {
            return Err(GatewayError::NotFound {
                message: format!("feature `{name}` has no registered version"),
                code: codes::FEATURE_NOT_FOUND,
            });
        }
        let deployments: Vec<_> = store
            .deployments()
            .await
            .map_err(store_error)?
            .into_iter()
            .filter(|d| d.feature == name)
            .map(|d| json!({"env": d.env, "serves": d.state.describe(), "state": d.state, "seq": d.seq, "updated_at_ms": d.updated_at_ms}))
            .collect();
        let versions: Vec<_> = versions
            .iter()
            .map(|v| json!({"version": v.version, "content_hash": v.content_hash, "created_at_ms": v.created_at_ms, "created_by": v.created_by}))
            .collect();
        Ok(json!({"feature": name, "versions": versions, "deployments": deployments}))
    }
    .await;
    answer(&rid, r)
}

/// `GET /admin/features/{name}/versions/{version}`: one version's canonical spec.
pub async fn version(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path((name, version)): Path<(String, i64)>,
) -> Response {
    let r = async {
        let v = registry(&app)?
            .store()
            .feature_version(&name, version)
            .await
            .map_err(store_error)?
            .ok_or_else(|| GatewayError::NotFound {
                message: format!("feature `{name}` has no version {version}"),
                code: codes::FEATURE_VERSION_NOT_FOUND,
            })?;
        serde_json::to_value(v).map_err(|e| GatewayError::Internal(e.to_string()))
    }
    .await;
    answer(&rid, r)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    pub env: String,
    pub version: Option<i64>,
    /// `"3=90,4=10"`.
    pub split: Option<String>,
    pub shadow: Option<i64>,
    pub reason: Option<String>,
    /// Deploy past the environment's eval gate (needs a `reason`; recorded as forced).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    pub env: String,
    pub reason: Option<String>,
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        GatewayError::invalid(e.inner().to_string(), (path != ".").then_some(path))
    })
}

/// After a change: this replica serves it from the next request on.
async fn applied(
    reg: &FeatureRegistry,
    change: Result<llmop_store::DeploymentEvent, DeployError>,
) -> Result<serde_json::Value, GatewayError> {
    let event = change.map_err(deploy_error)?;
    if let Err(e) = reg.refresh().await {
        tracing::warn!(error = %e, "deployment changed but could not be re-read at once; the next refresh will");
    }
    tracing::info!(feature = %event.feature, env = %event.env, kind = ?event.kind, to = %event.to.describe(), actor = ?event.actor, "deployment changed");
    serde_json::to_value(&event).map_err(|e| GatewayError::Internal(e.to_string()))
}

/// Only versions this gateway can serve: their route or provider must exist here.
/// (Unknown versions pass: the store's refusal names them.)
async fn servable(
    app: &AppState,
    reg: &FeatureRegistry,
    name: &str,
    state: &DeploymentState,
) -> Result<(), GatewayError> {
    for v in state.versions() {
        let Ok(compiled) = reg.version(name, v).await else {
            continue;
        };
        let spec = &compiled.spec;
        let target = spec
            .route
            .as_deref()
            .or(spec.model.as_deref())
            .unwrap_or("");
        if let Err(e) = app.config.serves(target) {
            return Err(GatewayError::InvalidRequest {
                message: format!(
                    "`{name}` v{v} targets `{target}`, which this gateway cannot serve: {e}"
                ),
                param: None,
                code: codes::INVALID_DEPLOYMENT,
            });
        }
    }
    Ok(())
}

/// The environment's eval gate, if it has one: `None` when ungated; refused without a
/// passing compare unless forced with a reason.
async fn gate(
    app: &AppState,
    reg: &FeatureRegistry,
    name: &str,
    b: &DeployBody,
    state: &DeploymentState,
) -> Result<Option<llmop_eval::gate::Passed>, GatewayError> {
    let Some(g) = app.config.eval_gates.get(&b.env) else {
        return Ok(None);
    };
    if b.force {
        if b.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err(GatewayError::InvalidRequest {
                message: "`force` past the eval gate needs a `reason` (it is kept in the history)"
                    .into(),
                param: Some("reason".into()),
                code: codes::INVALID_DEPLOYMENT,
            });
        }
        let current = reg
            .store()
            .current_deployment(name, &b.env)
            .await
            .map_err(store_error)?;
        return Ok(Some(llmop_eval::gate::Passed {
            note: "forced past the eval gate".into(),
            expect_seq: current.map_or(0, |c| c.seq),
        }));
    }
    llmop_eval::gate::check(reg.store(), g, &app.config.dir, name, &b.env, state)
        .await
        .map(Some)
        .map_err(|r| GatewayError::Forbidden {
            message: r.0,
            code: codes::EVAL_GATE_REFUSED,
        })
}

/// `POST /admin/features/{name}/deploy` `{"env","version"|"split","shadow","reason"}`.
pub async fn deploy(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r =
        async {
            let reg = registry(&app)?;
            let b: DeployBody = parse_body(&body)?;
            let state = DeploymentState::from_parts(b.version, b.split.as_deref(), b.shadow)
                .map_err(|m| GatewayError::InvalidRequest {
                    message: m,
                    param: None,
                    code: codes::INVALID_DEPLOYMENT,
                })?;
            servable(&app, reg, &name, &state).await?;
            let gate = gate(&app, reg, &name, &b, &state).await?;
            let who = actor(&headers);
            let by = ChangeBy {
                actor: Some(&who),
                reason: b.reason.as_deref(),
                gate: gate.as_ref().map(|g| g.note.as_str()),
                expect_seq: gate.as_ref().map(|g| g.expect_seq),
            };
            applied(reg, reg.store().deploy(&name, &b.env, &state, by).await).await
        }
        .await;
    answer(&rid, r)
}

/// `POST /admin/features/{name}/rollback` `{"env","reason"}`.
pub async fn rollback(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let reg = registry(&app)?;
        let b: RollbackBody = parse_body(&body)?;
        let who = actor(&headers);
        let by = ChangeBy {
            actor: Some(&who),
            reason: b.reason.as_deref(),
            ..Default::default()
        };
        applied(reg, reg.store().rollback(&name, &b.env, by).await).await
    }
    .await;
    answer(&rid, r)
}

/// `GET /admin/features/{name}/history?env=&limit=`: deployment changes, newest first.
pub async fn history(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let r = async {
        let (mut env, mut limit) = (None, 100u32);
        for (k, v) in url::form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes()) {
            match &*k {
                "env" => env = Some(v.into_owned()),
                "limit" => {
                    limit = v.parse().map_err(|_| {
                        GatewayError::invalid(
                            format!("`{v}` is not a number"),
                            Some("limit".into()),
                        )
                    })?
                }
                other => {
                    return Err(GatewayError::invalid(
                        format!("unknown parameter `{other}`: use env, limit"),
                        Some(other.to_string()),
                    ))
                }
            }
        }
        let events = registry(&app)?
            .store()
            .deployment_history(&name, env.as_deref(), limit.clamp(1, 1000))
            .await
            .map_err(store_error)?;
        Ok(json!({"feature": name, "events": events}))
    }
    .await;
    answer(&rid, r)
}

/// `GET /admin/quality?feature=&since=7d`: a feature's scores per version, evaluator,
/// source and UTC day, and its open drift episodes (what `llmop quality` shows).
pub async fn quality(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    RawQuery(q): RawQuery,
) -> Response {
    let r = async {
        let (mut feature, mut since) = (None, "7d".to_string());
        for (k, v) in url::form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes()) {
            match &*k {
                "feature" => feature = Some(v.into_owned()),
                "since" => since = v.into_owned(),
                other => {
                    return Err(GatewayError::invalid(
                        format!("unknown parameter `{other}`: use feature, since"),
                        Some(other.to_string()),
                    ))
                }
            }
        }
        let feature = feature.ok_or_else(|| {
            GatewayError::invalid("`feature` is required", Some("feature".into()))
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let since_ms = llmop_store::parse_time(&since, now)
            .map_err(|m| GatewayError::invalid(m, Some("since".into())))?;
        let store = registry(&app)?.store();
        let days = store
            .score_groups(&llmop_store::ScoreFilter {
                feature: Some(feature.clone()),
                since_ms: Some(since_ms),
                by_day: true,
                ..Default::default()
            })
            .await
            .map_err(store_error)?;
        let alerts = store
            .open_drift_alerts(Some(&feature))
            .await
            .map_err(store_error)?;
        Ok(json!({"feature": feature, "since_ms": since_ms, "days": days, "open_drift_alerts": alerts}))
    }
    .await;
    answer(&rid, r)
}

/// `GET /admin/budgets`: each configured budget's spend in its current window, limits,
/// burn rate and projection (from the records).
pub async fn budgets(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
) -> Response {
    let r = async {
        let reg = registry(&app)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let specs = app
            .limits
            .as_ref()
            .map_or_else(|| app.config.budgets.clone(), |l| (*l.specs()).clone());
        let rows = crate::limits::report(&specs, reg.store(), now)
            .await
            .map_err(store_error)?;
        let stored = reg.store().stored_budgets().await.map_err(store_error)?;
        Ok(json!({"budgets": rows, "added": stored}))
    }
    .await;
    answer(&rid, r)
}

/// `POST /admin/budgets`: adds a budget (the shape of a `[[budgets]]` entry), in force on
/// every replica within `[features] refresh_ms` and on this one at once.
pub async fn add_budget(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let reg = registry(&app)?;
        // A scope or window that does not parse is refused as it is read, naming it.
        let spec: llmop_core::config::BudgetConfig = parse_body(&body).map_err(|e| match e {
            GatewayError::InvalidRequest { message, param, .. } => GatewayError::InvalidRequest {
                message,
                param,
                code: codes::INVALID_BUDGET,
            },
            other => other,
        })?;
        if let Some((field, m)) = llmop_core::budget::check(&spec).into_iter().next() {
            return Err(GatewayError::InvalidRequest {
                message: m,
                param: Some(field.to_string()),
                code: codes::INVALID_BUDGET,
            });
        }
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| GatewayError::invalid(e.to_string(), None))?;
        let added = reg
            .store()
            .add_budget(&value, Some(&actor(&headers)))
            .await
            .map_err(store_error)?;
        if let Some(l) = &app.limits {
            l.refresh(reg.store()).await.map_err(store_error)?;
        }
        serde_json::to_value(added).map_err(|e| GatewayError::Internal(e.to_string()))
    }
    .await;
    answer(&rid, r)
}

/// `DELETE /admin/budgets/{id}`: removes a budget added through the admin API.
pub async fn delete_budget(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path(id): Path<String>,
) -> Response {
    let r = async {
        let reg = registry(&app)?;
        if !reg.store().delete_budget(&id).await.map_err(store_error)? {
            return Err(GatewayError::NotFound {
                message: format!("no budget `{id}` was added through the admin API (config budgets live in the config file)"),
                code: codes::BUDGET_NOT_FOUND,
            });
        }
        if let Some(l) = &app.limits {
            l.refresh(reg.store()).await.map_err(store_error)?;
        }
        Ok(json!({"deleted": id}))
    }
    .await;
    answer(&rid, r)
}

fn approvals_store(app: &AppState) -> Result<&llmop_store::Store, GatewayError> {
    app.recorder
        .as_ref()
        .map(|r| &r.store)
        .ok_or_else(|| GatewayError::NotFound {
            message:
                "approvals need the record store: this gateway runs with [store] enabled = false"
                    .into(),
            code: codes::APPROVAL_NOT_FOUND,
        })
}

/// An approval as the admin API shows it: the held tool calls whole (a person decides
/// on what the call would do).
fn approval_json(a: &llmop_store::Approval) -> serde_json::Value {
    let calls: Vec<serde_json::Value> = a
        .answer
        .get("parts")
        .and_then(|p| p.as_array())
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("ToolCall").or_else(|| p.get("tool_call")))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    json!({
        "id": a.id,
        "status": a.status,
        "created_at_ms": a.created_at_ms,
        "expires_at_ms": a.expires_at_ms,
        "request_id": a.request_id,
        "key_id": a.key_id,
        "session": a.session,
        "tool": a.tool,
        "rule": a.rule,
        "reason": a.reason,
        "tool_calls": calls,
        "decided_at_ms": a.decided_at_ms,
        "decided_by": a.decided_by,
        "note": a.decision_note,
    })
}

/// `GET /admin/approvals?status=pending&limit=`: held tool calls, newest first.
pub async fn approvals(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    RawQuery(q): RawQuery,
) -> Response {
    let r = async {
        let store = approvals_store(&app)?;
        let mut status = None;
        let mut limit = 100i64;
        for (k, v) in url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
            match &*k {
                "status" => status = Some(v.into_owned()),
                "limit" => {
                    limit = v.parse().map_err(|_| {
                        GatewayError::invalid("limit must be a number", Some("limit".into()))
                    })?
                }
                _ => {}
            }
        }
        let list = store
            .approvals(status.as_deref(), limit.clamp(1, 1000))
            .await
            .map_err(store_error)?;
        Ok(json!({"approvals": list.iter().map(approval_json).collect::<Vec<_>>()}))
    }
    .await;
    answer(&rid, r)
}

/// `GET /admin/approvals/{id}`.
pub async fn approval(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path(id): Path<String>,
) -> Response {
    let r = async {
        let store = approvals_store(&app)?;
        match store.approval(&id).await.map_err(store_error)? {
            Some(a) => Ok(approval_json(&a)),
            None => Err(GatewayError::NotFound {
                message: "no such approval".into(),
                code: codes::APPROVAL_NOT_FOUND,
            }),
        }
    }
    .await;
    answer(&rid, r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    /// `approve` or `deny`.
    decision: String,
    #[serde(default)]
    note: Option<String>,
}

/// `POST /admin/approvals/{id}` `{"decision": "approve"|"deny", "note"}`: decides a
/// held tool call, once. The client's retry with `x-llmop-approval: <id>` then gets
/// the held answer (approved) or its refusal (denied).
pub async fn decide(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let store = approvals_store(&app)?;
        let b: DecideBody = parse_body(&body)?;
        let approve = match b.decision.as_str() {
            "approve" | "approved" => true,
            "deny" | "denied" => false,
            _ => {
                return Err(GatewayError::InvalidRequest {
                    message: "decision must be `approve` or `deny`".into(),
                    param: Some("decision".into()),
                    code: codes::INVALID_APPROVAL,
                })
            }
        };
        let note = b.note.as_deref().map(|n| {
            let mut n = n.to_string();
            if n.len() > 2000 {
                let mut cut = 2000;
                while !n.is_char_boundary(cut) {
                    cut -= 1;
                }
                n.truncate(cut);
            }
            n
        });
        let who = actor(&headers);
        if !store
            .decide_approval(&id, approve, &who, note.as_deref())
            .await
            .map_err(store_error)?
        {
            return match store.approval(&id).await.map_err(store_error)? {
                Some(a) => Err(GatewayError::InvalidRequest {
                    message: format!("approval `{}` is {} already", a.id, a.status),
                    param: None,
                    code: codes::INVALID_APPROVAL,
                }),
                None => Err(GatewayError::NotFound {
                    message: "no such approval".into(),
                    code: codes::APPROVAL_NOT_FOUND,
                }),
            };
        }
        tracing::info!(approval = %id, approve, by = %who, "approval decided");
        metrics::counter!("llmop_agent_approvals_decided_total", "decision" => if approve { "approved" } else { "denied" }).increment(1);
        match store.approval(&id).await.map_err(store_error)? {
            Some(a) => Ok(approval_json(&a)),
            None => Err(GatewayError::Internal("a decided approval vanished".into())),
        }
    }
    .await;
    answer(&rid, r)
}
