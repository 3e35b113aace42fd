//! Features (versions, what each environment serves, the audited history, diffs;
//! deploy and rollback) and circuits.
//!
//! Reads come straight from the store. Changes go through the gateway's own admin API,
//! called in process ([`Console::attach_admin`]): the same checks (the version is
//! servable here, the environment's eval gate), the same audit trail (actor `console`),
//! the same refresh of every replica, as `llmop deploy` and `POST /admin/...`.

use crate::pages::{field, form, frame, render, see_other};
use crate::session::{Role, Session};
use crate::view::seg_of;
use crate::Console;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use minijinja::context;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

/// Most bytes of an admin API answer the console reads.
const MAX_ADMIN_ANSWER: usize = 4 << 20;

/// Calls the gateway's admin API in process; `(status, JSON answer)`.
async fn admin(
    c: &Console,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value), String> {
    in_process(
        c,
        method,
        path,
        &[("x-llmop-actor", "console".to_string())],
        body,
    )
    .await
}

/// Calls the gateway's in-process API (the admin API; the chat and feature endpoints
/// as an operator's call, for replays); `(status, JSON answer)`.
pub(crate) async fn in_process(
    c: &Console,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Option<Value>,
) -> Result<(StatusCode, Value), String> {
    let Some(router) = c.admin.get().and_then(|f| f()) else {
        return Err("the admin API is not attached to the console".into());
    };
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req
        .body(match body {
            Some(b) => Body::from(serde_json::to_vec(&b).unwrap_or_default()),
            None => Body::empty(),
        })
        .map_err(|e| e.to_string())?;
    let resp = router.oneshot(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), MAX_ADMIN_ANSWER)
        .await
        .map_err(|e| e.to_string())?;
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, v))
}

/// The message of an admin API error answer.
fn message_of(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .map_or_else(|| "the change was refused".to_string(), str::to_string)
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the record store cannot be read right now",
    )
        .into_response()
}

/// `/ui/features`: every registered feature, its latest version and what each
/// environment serves.
pub async fn features(State(c): State<Arc<Console>>, Extension(s): Extension<Session>) -> Response {
    let Some(store) = &c.store else {
        return (
            StatusCode::NOT_FOUND,
            "recording is off: features need the store",
        )
            .into_response();
    };
    let (names, deployments) = match (store.feature_names().await, store.deployments().await) {
        (Ok(n), Ok(d)) => (n, d),
        _ => return unavailable(),
    };
    let mut rows = Vec::with_capacity(names.len());
    for name in names {
        let versions = match store.feature_versions(&name).await {
            Ok(v) => v,
            Err(_) => return unavailable(),
        };
        let envs: Vec<Value> = deployments
            .iter()
            .filter(|d| d.feature == name)
            .map(|d| json!({"env": d.env, "serves": d.state.describe(), "updated_at_ms": d.updated_at_ms}))
            .collect();
        rows.push(json!({
            "name": name,
            "latest": versions.last().map(|v| v.version),
            "versions": versions.len(),
            "envs": envs,
        }));
    }
    render(
        &c,
        "features.html",
        StatusCode::OK,
        context! { nav => "features", features => rows, ..frame(&c, &s, 0) },
    )
}

/// `/ui/features/{name}[?diff=a..b][&done=…]`: one feature's versions, environments,
/// history, a diff, and (for an admin) the deploy and rollback forms.
pub async fn feature(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = q.unwrap_or_default();
    let get = |k: &str| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    feature_page(
        &c,
        &s,
        &name,
        get("diff"),
        get("done"),
        None,
        StatusCode::OK,
    )
    .await
}

async fn feature_page(
    c: &Console,
    s: &Session,
    name: &str,
    diff: Option<String>,
    done: Option<String>,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let Some(store) = &c.store else {
        return (
            StatusCode::NOT_FOUND,
            "recording is off: features need the store",
        )
            .into_response();
    };
    let versions = match store.feature_versions(name).await {
        Ok(v) => v,
        Err(_) => return unavailable(),
    };
    if versions.is_empty() {
        return render(
            c,
            "feature.html",
            StatusCode::NOT_FOUND,
            context! { nav => "features", missing => name, ..frame(c, s, 1) },
        );
    }
    let (deployments, history) = match (
        store.deployments().await,
        store.deployment_history(name, None, 100).await,
    ) {
        (Ok(d), Ok(h)) => (d, h),
        _ => return unavailable(),
    };
    let envs: Vec<Value> = deployments
        .iter()
        .filter(|d| d.feature == name)
        .map(|d| json!({"env": d.env, "serves": d.state.describe(), "seq": d.seq, "updated_at_ms": d.updated_at_ms}))
        .collect();
    let history: Vec<Value> = history
        .iter()
        .map(|e| {
            json!({
                "at_ms": e.at_ms,
                "env": e.env,
                "kind": e.kind,
                "from": e.from.as_ref().map(|f| f.describe()),
                "to": e.to.describe(),
                "actor": e.actor,
                "reason": e.reason,
                "gate": e.gate,
            })
        })
        .collect();
    // A diff of two versions (`a..b`), as `llmop diff` shows it.
    let mut diff_text = None;
    let mut diff_pair = None;
    if let Some(d) = diff.as_deref() {
        let pair = d.split_once("..").and_then(|(a, b)| {
            Some((a.trim().parse::<i64>().ok()?, b.trim().parse::<i64>().ok()?))
        });
        let spec = |v: i64| {
            versions.iter().find(|x| x.version == v).and_then(|x| {
                serde_json::from_value::<llmop_features::FeatureSpec>(x.spec.clone()).ok()
            })
        };
        diff_text = Some(
            match pair.and_then(|(a, b)| Some((a, b, spec(a)?, spec(b)?))) {
                Some((a, b, sa, sb)) => {
                    diff_pair = Some((a, b));
                    let t = llmop_features::diff(
                        &sa,
                        &sb,
                        &format!("{name}@{a}"),
                        &format!("{name}@{b}"),
                    );
                    if t.is_empty() {
                        "(the two versions are the same)".to_string()
                    } else {
                        t
                    }
                }
                None => format!("`{d}` is not two versions of {name} (write it as 1..2)"),
            },
        );
    }
    let latest = versions.last().map(|v| v.version);
    let list: Vec<Value> = versions
        .iter()
        .rev()
        .map(|v| json!({"version": v.version, "content_hash": v.content_hash, "created_at_ms": v.created_at_ms, "created_by": v.created_by}))
        .collect();
    render(
        c,
        "feature.html",
        status,
        context! {
            nav => "features",
            name => name,
            name_seg => seg_of(name),
            versions => list,
            latest => latest,
            envs => envs,
            history => history,
            diff => diff_text,
            diff_pair => diff_pair,
            done => done,
            error => error,
            ..frame(c, s, 1)
        },
    )
}

/// Why a change was refused before it was looked at.
#[derive(Debug)]
pub(crate) enum Refused {
    Csrf,
    ReadOnly,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let m = match self {
            Refused::Csrf => "missing or wrong CSRF token",
            Refused::ReadOnly => {
                "the read-only console token cannot change deployments or replay calls"
            }
        };
        (StatusCode::FORBIDDEN, m).into_response()
    }
}

/// Checks a change's session: an admin's, with its CSRF token. The form if so.
pub(crate) fn change_allowed(
    c: &Console,
    s: &Session,
    body: &Bytes,
) -> Result<Vec<(String, String)>, Refused> {
    let f = form(body);
    if !c.signer.csrf_ok(s, field(&f, "csrf").unwrap_or_default()) {
        return Err(Refused::Csrf);
    }
    if s.role != Role::Admin {
        return Err(Refused::ReadOnly);
    }
    Ok(f)
}

pub(crate) fn opt_i64(f: &[(String, String)], k: &str) -> Result<Option<i64>, String> {
    match field(f, k).map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("{k} must be a version number")),
    }
}

pub(crate) fn text(f: &[(String, String)], k: &str) -> Option<String> {
    field(f, k)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// `POST /ui/features/{name}/deploy`: env, version or split, shadow, reason, force.
pub async fn deploy(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let f = match change_allowed(&c, &s, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let fail = |m: String, st: StatusCode| {
        let c = c.clone();
        let s = s.clone();
        let name = name.clone();
        async move { feature_page(&c, &s, &name, None, None, Some(m), st).await }
    };
    let Some(reason) = text(&f, "reason") else {
        return fail(
            "Say why: a deploy from the console needs a reason.".into(),
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    let Some(env) = text(&f, "env") else {
        return fail("Name the environment.".into(), StatusCode::BAD_REQUEST).await;
    };
    let (version, shadow) = match (opt_i64(&f, "version"), opt_i64(&f, "shadow")) {
        (Ok(v), Ok(sh)) => (v, sh),
        (Err(m), _) | (_, Err(m)) => return fail(m, StatusCode::BAD_REQUEST).await,
    };
    let split = text(&f, "split");
    let body = json!({
        "env": env,
        "version": if split.is_some() { None } else { version },
        "split": split,
        "shadow": shadow,
        "reason": reason,
        "force": field(&f, "force").is_some(),
    });
    let path = format!("/admin/features/{}/deploy", seg_of(&name));
    match admin(&c, Method::POST, &path, Some(body)).await {
        Ok((st, _)) if st.is_success() => see_other(&format!(
            "../{}?done=deployed+to+{}",
            seg_of(&name),
            seg_of(&env)
        )),
        Ok((st, v)) => {
            fail(
                message_of(&v),
                StatusCode::from_u16(st.as_u16()).unwrap_or(StatusCode::BAD_REQUEST),
            )
            .await
        }
        Err(e) => fail(e, StatusCode::INTERNAL_SERVER_ERROR).await,
    }
}

/// `POST /ui/features/{name}/rollback`: env, reason.
pub async fn rollback(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let f = match change_allowed(&c, &s, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let (Some(env), Some(reason)) = (text(&f, "env"), text(&f, "reason")) else {
        return feature_page(
            &c,
            &s,
            &name,
            None,
            None,
            Some("A rollback needs the environment and a reason.".into()),
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    let path = format!("/admin/features/{}/rollback", seg_of(&name));
    match admin(
        &c,
        Method::POST,
        &path,
        Some(json!({"env": env, "reason": reason})),
    )
    .await
    {
        Ok((st, _)) if st.is_success() => see_other(&format!(
            "../{}?done=rolled+back+{}",
            seg_of(&name),
            seg_of(&env)
        )),
        Ok((st, v)) => {
            feature_page(
                &c,
                &s,
                &name,
                None,
                None,
                Some(message_of(&v)),
                StatusCode::from_u16(st.as_u16()).unwrap_or(StatusCode::BAD_REQUEST),
            )
            .await
        }
        Err(e) => {
            feature_page(
                &c,
                &s,
                &name,
                None,
                None,
                Some(e),
                StatusCode::INTERNAL_SERVER_ERROR,
            )
            .await
        }
    }
}

/// `/ui/circuits`: the breaker of every route target, as this replica sees it.
pub async fn circuits(State(c): State<Arc<Console>>, Extension(s): Extension<Session>) -> Response {
    let list = match admin(&c, Method::GET, "/admin/circuits", None).await {
        Ok((st, v)) if st.is_success() => v["circuits"].as_array().cloned().unwrap_or_default(),
        Ok((_, v)) => return (StatusCode::SERVICE_UNAVAILABLE, message_of(&v)).into_response(),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    };
    render(
        &c,
        "circuits.html",
        StatusCode::OK,
        context! { nav => "circuits", circuits => list, ..frame(&c, &s, 0) },
    )
}

/// `/ui/budgets`: every budget's spend in its window against its limits, the burn rate
/// and where the window will end at that rate (the admin API's report, from the store).
pub async fn budgets(State(c): State<Arc<Console>>, Extension(s): Extension<Session>) -> Response {
    let v = match admin(&c, Method::GET, "/admin/budgets", None).await {
        Ok((st, v)) if st.is_success() => v,
        Ok((_, v)) => return (StatusCode::SERVICE_UNAVAILABLE, message_of(&v)).into_response(),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    };
    let rows: Vec<Value> = v["budgets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut b| {
            // How full the hard limit is, for the bar (capped at 100 %).
            let pct = match (b["spent_usd"].as_f64(), b["hard_usd"].as_f64()) {
                (Some(sp), Some(h)) if h > 0.0 => (sp / h * 100.0).clamp(0.0, 100.0),
                _ => 0.0,
            };
            b["pct"] = json!(pct.round());
            b["over_soft"] = json!(matches!(
                (b["spent_usd"].as_f64(), b["soft_usd"].as_f64()),
                (Some(sp), Some(so)) if sp >= so
            ));
            b["projected_over"] = json!(matches!(
                (b["projected_usd"].as_f64(), b["hard_usd"].as_f64()),
                (Some(p), Some(h)) if p > h
            ));
            b
        })
        .collect();
    let limits = match key_limits(&c).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "console: key limits could not be read");
            Vec::new()
        }
    };
    render(
        &c,
        "budgets.html",
        StatusCode::OK,
        context! { nav => "budgets", budgets => rows, added => v["added"].clone(), limits => limits, ..frame(&c, &s, 0) },
    )
}

/// A key's own limits (`llmop keys create --rpm --tpm --budget-usd-day`) against its use
/// from the records: calls and tokens in the last minute, spend since midnight UTC.
#[derive(serde::Serialize)]
struct KeyLimit {
    id: String,
    name: String,
    rpm: Option<u32>,
    calls_last_minute: i64,
    tpm: Option<u32>,
    tokens_last_minute: i64,
    budget_usd_day: Option<f64>,
    spent_today_usd: f64,
    /// The fullest of the three, in percent (for the bar).
    pct: f64,
}

async fn key_limits(c: &Console) -> Result<Vec<KeyLimit>, llmop_store::StoreError> {
    let Some(store) = c.store.as_ref() else {
        return Ok(Vec::new());
    };
    let keys: Vec<_> = store
        .keys()
        .await?
        .into_iter()
        .filter(|k| {
            k.active()
                && (k.scopes.rpm.is_some()
                    || k.scopes.tpm.is_some()
                    || k.scopes.budget_usd_day.is_some())
        })
        .collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let now = crate::now_ms();
    let minute = store
        .cost_by(&llmop_store::CostBy::Key, now - 60_000)
        .await?;
    let today = store
        .cost_by(&llmop_store::CostBy::Key, now - now.rem_euclid(86_400_000))
        .await?;
    let of = |rows: &[llmop_store::CostRow], id: &str| {
        rows.iter()
            .find(|r| r.group.as_deref() == Some(id))
            .map(|r| (r.calls, r.input_tokens + r.output_tokens, r.cost_usd))
            .unwrap_or((0, 0, 0.0))
    };
    Ok(keys
        .into_iter()
        .map(|k| {
            let (calls, tokens, _) = of(&minute, &k.id);
            let (_, _, spent) = of(&today, &k.id);
            let share = |used: f64, limit: Option<f64>| match limit {
                Some(l) if l > 0.0 => used / l * 100.0,
                _ => 0.0,
            };
            let pct = share(calls as f64, k.scopes.rpm.map(f64::from))
                .max(share(tokens as f64, k.scopes.tpm.map(f64::from)))
                .max(share(spent, k.scopes.budget_usd_day))
                .clamp(0.0, 100.0)
                .round();
            KeyLimit {
                id: k.id.clone(),
                name: k.name.clone(),
                rpm: k.scopes.rpm,
                calls_last_minute: calls,
                tpm: k.scopes.tpm,
                tokens_last_minute: tokens,
                budget_usd_day: k.scopes.budget_usd_day,
                spent_today_usd: spent,
                pct,
            }
        })
        .collect())
}
