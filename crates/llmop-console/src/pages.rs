//! The pages.

use crate::session::Session;
use crate::view::{self, safe_next};
use crate::{now_s, presented, set_cookie, Console};
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use llmop_store::{ListFilter, Record};
use minijinja::context;
use std::sync::Arc;

/// A rendered page, or a plain error page when the template cannot render.
pub(crate) fn render(
    c: &Console,
    name: &str,
    status: StatusCode,
    ctx: minijinja::Value,
) -> Response {
    match c.env.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "console page did not render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// What every page's frame needs.
pub(crate) fn frame(c: &Console, s: &Session, depth: usize) -> minijinja::Value {
    context! {
        base => view::base(depth),
        role => s.role,
        csrf => c.signer.csrf(s),
        open => (c.open)(),
    }
}

pub(crate) fn see_other(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

pub(crate) fn form(body: &Bytes) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(crate) fn field<'a>(f: &'a [(String, String)], k: &str) -> Option<&'a str> {
    f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// `/ui` and `/ui/`: the overview (relative to where the client is).
pub async fn home(OriginalUri(uri): OriginalUri) -> Response {
    if uri.path().ends_with('/') {
        see_other("overview")
    } else {
        // `/ui` itself: a relative `overview` would leave the console's directory.
        let last = uri.path().rsplit('/').next().unwrap_or("ui");
        see_other(&format!("{last}/overview"))
    }
}

pub async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../assets/console.css"),
    )
        .into_response()
}

pub async fn login_form(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let next = q
        .as_deref()
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "next")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_default();
    if presented(&c, &headers).is_some() || (c.open)() {
        return see_other(&safe_next(&next));
    }
    render(
        &c,
        "login.html",
        StatusCode::OK,
        context! { base => "", next => next, error => None::<String>, viewer => c.viewer_hash.is_some() },
    )
}

pub async fn login(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    let next = safe_next(field(&f, "next").unwrap_or_default());
    let now = now_s();
    let fail = |status: StatusCode, msg: &str| {
        render(
            &c,
            "login.html",
            status,
            context! { base => "", next => next.clone(), error => msg, viewer => c.viewer_hash.is_some() },
        )
    };
    if c.logins_blocked(now) {
        metrics::counter!("llmop_console_logins_total", "outcome" => "throttled").increment(1);
        return fail(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed logins: try again in a minute.",
        );
    }
    let role = field(&f, "token").and_then(|t| c.role_of(t));
    let Some(role) = role else {
        metrics::counter!("llmop_console_logins_total", "outcome" => "refused").increment(1);
        let status = if c.failed_login(now) {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        return fail(status, "That is not the admin token or the console token.");
    };
    metrics::counter!("llmop_console_logins_total", "outcome" => "ok").increment(1);
    let (cookie, _) = c.signer.issue(role, now, c.ttl_s);
    let mut resp = see_other(&next);
    resp.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&cookie, c.ttl_s, &headers));
    resp
}

pub async fn logout(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    if !c.signer.csrf_ok(&s, field(&f, "csrf").unwrap_or_default()) {
        return (StatusCode::FORBIDDEN, "missing or wrong CSRF token").into_response();
    }
    let mut resp = see_other("login");
    resp.headers_mut()
        .append(header::SET_COOKIE, set_cookie("", 0, &headers));
    resp
}

/// The filters of a requests view as the URL holds them (minus the cursor).
fn filter_pairs(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.as_bytes())
        .filter(|(k, v)| k != "cursor" && !v.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn query_of(pairs: &[(String, String)], extra: Option<(&str, &str)>) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    if let Some((k, v)) = extra {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The filter a page or export asks for: empty fields are left out (a form sends
/// them), the rest as `GET /v1/requests` reads them.
/// URL query pairs, in order.
pub type Pairs = Vec<(String, String)>;

/// The filter, and the pairs that express it (for links); errors are `(parameter,
/// message)`.
pub fn filter_of(q: &str) -> Result<(ListFilter, Pairs), (String, String)> {
    let mut pairs = filter_pairs(q);
    let cursor = url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, v)| k == "cursor" && !v.is_empty())
        .map(|(_, v)| v.into_owned());
    let mut all = pairs.clone();
    if let Some(c) = &cursor {
        all.push(("cursor".into(), c.clone()));
    }
    let f = ListFilter::from_query(&query_of(&all, None), crate::now_ms())?;
    pairs.retain(|(k, _)| k != "limit");
    if let Some(l) = f.limit {
        pairs.push(("limit".into(), l.to_string()));
    }
    Ok((f, pairs))
}

/// The record store, or the page that says recording is off.
fn store_or_page<'a>(
    c: &'a Console,
    s: &Session,
    depth: usize,
) -> Result<&'a llmop_store::Store, Box<Response>> {
    c.store.as_ref().ok_or_else(|| {
        Box::new(render(
            c,
            "requests.html",
            StatusCode::NOT_FOUND,
            context! { error => "Recording is off ([store] enabled = false): there are no records to show.", ..frame(c, s, depth) },
        ))
    })
}

/// `/ui/requests?…`: the filtered list, newest first, one page at a time.
pub async fn requests(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    RawQuery(q): RawQuery,
) -> Response {
    let store = match store_or_page(&c, &s, 0) {
        Ok(st) => st,
        Err(r) => return *r,
    };
    let q = q.unwrap_or_default();
    let (mut f, pairs) = match filter_of(&q) {
        Ok(x) => x,
        Err((param, msg)) => {
            return render(
                &c,
                "requests.html",
                StatusCode::BAD_REQUEST,
                context! { ..frame(&c, &s, 0), ..context! { error => format!("{param}: {msg}"), filters => filter_pairs(&q).into_iter().collect::<std::collections::BTreeMap<_, _>>(), records => Vec::<Record>::new() } },
            )
        }
    };
    if f.limit.is_none() {
        f.limit = Some(50);
    }
    let started = std::time::Instant::now();
    let page = match store.list(&f).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "console: record list failed");
            return render(
                &c,
                "requests.html",
                StatusCode::SERVICE_UNAVAILABLE,
                context! { ..frame(&c, &s, 0), ..context! { error => "The record store cannot be read right now.", filters => pairs.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(), records => Vec::<Record>::new() } },
            );
        }
    };
    let took_ms = started.elapsed().as_millis() as u64;
    let next = page
        .next_cursor
        .as_deref()
        .map(|cur| format!("requests?{}", query_of(&pairs, Some(("cursor", cur)))));
    let export: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "limit")
        .cloned()
        .collect();
    let export_q = query_of(&export, None);
    // A search for one id that found one call: straight to its story.
    if f.q.is_some()
        && f.cursor.is_none()
        && page.records.len() == 1
        && pairs.iter().all(|(k, _)| k == "q" || k == "limit")
    {
        let id = &page.records[0].request_id;
        return see_other(&format!(
            "requests/{}",
            url::form_urlencoded::byte_serialize(id.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        ));
    }
    render(
        &c,
        "requests.html",
        StatusCode::OK,
        context! { ..frame(&c, &s, 0), ..context! {
            records => page.records.iter().map(Row::of).collect::<Vec<_>>(),
            filters => pairs.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            next => next,
            export_q => export_q,
            took_ms => took_ms,
            error => None::<String>,
        } },
    )
}

/// A row of the requests table: what it shows, nothing more (the list never carries
/// messages to the page).
#[derive(serde::Serialize)]
struct Row<'a> {
    request_id: &'a str,
    created_at_ms: i64,
    feature: Option<&'a str>,
    feature_version: Option<i64>,
    arm: Option<&'a str>,
    route: Option<&'a str>,
    provider: Option<&'a str>,
    model: Option<&'a str>,
    status: u16,
    error_code: Option<&'a str>,
    user: Option<&'a str>,
    session: Option<&'a str>,
    key_id: Option<&'a str>,
    cost_usd: Option<f64>,
    latency_ms: i64,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    degraded: bool,
    fallback: bool,
    shadow: bool,
    stream: bool,
}

impl<'a> Row<'a> {
    fn of(r: &'a Record) -> Row<'a> {
        Row {
            request_id: &r.request_id,
            created_at_ms: r.created_at_ms,
            feature: r.feature.as_deref(),
            feature_version: r.feature_version,
            arm: r.arm.as_deref(),
            route: r.route.as_deref(),
            provider: r.provider.as_deref(),
            model: r.model.as_deref(),
            status: r.status,
            error_code: r.error_code.as_deref(),
            user: r.user.as_deref(),
            session: r.session.as_deref(),
            key_id: r.key_id.as_deref(),
            cost_usd: r.cost_usd,
            latency_ms: r.latency_ms,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            degraded: r.degraded,
            fallback: r.attempts.len() > 1,
            shadow: r.shadow,
            stream: r.stream,
        }
    }
}

/// `/ui/requests/{id}`: one call's whole story. The id may be llmop's or the one the
/// client sent (a reused id finds its call).
pub async fn call(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let store = match store_or_page(&c, &s, 1) {
        Ok(st) => st,
        Err(r) => return *r,
    };
    let found = match store.get(&id).await {
        Ok(Some(r)) => Ok(Some(r)),
        Ok(None) => {
            let f = ListFilter {
                q: Some(id.clone()),
                limit: Some(1),
                ..ListFilter::default()
            };
            store.list(&f).await.map(|p| p.records.into_iter().next())
        }
        Err(e) => Err(e),
    };
    let rec = match found {
        Ok(Some(r)) => r,
        Ok(None) => {
            return render(
                &c,
                "call.html",
                StatusCode::NOT_FOUND,
                context! { ..frame(&c, &s, 1), ..context! { missing => id } },
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "console: record read failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the record store cannot be read right now",
            )
                .into_response();
        }
    };
    let messages = view_messages(&rec.input_messages);
    render(
        &c,
        "call.html",
        StatusCode::OK,
        context! { ..frame(&c, &s, 1), ..context! {
            r => minijinja::Value::from_serialize(&rec),
            messages => messages,
            tools => rec.output_tool_calls.as_array().cloned().unwrap_or_default().into_iter().map(tool_call).collect::<Vec<_>>(),
        } },
    )
}

/// A recorded message as the page shows it: its role and readable parts.
#[derive(serde::Serialize)]
struct ShownMessage {
    role: String,
    parts: Vec<ShownPart>,
}

#[derive(serde::Serialize)]
struct ShownPart {
    kind: &'static str,
    text: String,
    name: Option<String>,
}

fn view_messages(v: &serde_json::Value) -> Vec<ShownMessage> {
    let Some(list) = v.as_array() else {
        return Vec::new();
    };
    list.iter()
        .map(|m| {
            // An embeddings call's inputs: texts (or their hashes), or token ids.
            if m.is_string() || m.is_array() {
                let text = m.as_str().map_or_else(|| m.to_string(), str::to_string);
                return ShownMessage {
                    role: "input".to_string(),
                    parts: vec![ShownPart {
                        kind: "text",
                        text,
                        name: None,
                    }],
                };
            }
            let role = m["role"].as_str().unwrap_or("?").to_string();
            let mut parts = Vec::new();
            match &m["content"] {
                serde_json::Value::String(t) => parts.push(ShownPart {
                    kind: "text",
                    text: t.clone(),
                    name: None,
                }),
                serde_json::Value::Array(items) => {
                    for p in items {
                        parts.push(shown_part(p));
                    }
                }
                _ => {}
            }
            if let Some(items) = m["parts"].as_array() {
                for p in items {
                    parts.push(shown_part(p));
                }
            }
            for tc in m["tool_calls"].as_array().into_iter().flatten() {
                parts.push(ShownPart {
                    kind: "tool_call",
                    text: tc["function"]["arguments"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    name: tc["function"]["name"].as_str().map(str::to_string),
                });
            }
            ShownMessage { role, parts }
        })
        .collect()
}

fn shown_part(p: &serde_json::Value) -> ShownPart {
    let text_of = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    };
    if let Some(t) = p.get("text").and_then(|t| t.as_str()) {
        return ShownPart {
            kind: "text",
            text: t.to_string(),
            name: None,
        };
    }
    let kind = p
        .get("type")
        .and_then(|t| t.as_str())
        .or_else(|| {
            p.as_object()
                .and_then(|o| o.keys().next())
                .map(String::as_str)
        })
        .unwrap_or("part");
    match kind {
        "tool_call" | "ToolCall" | "tool_use" | "function" => {
            let inner = p
                .get("tool_call")
                .or_else(|| p.get("ToolCall"))
                .unwrap_or(p);
            ShownPart {
                kind: "tool_call",
                text: inner
                    .get("arguments")
                    .or_else(|| inner.get("input"))
                    .map(text_of)
                    .unwrap_or_default(),
                name: inner
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map(str::to_string),
            }
        }
        "tool_result" | "ToolResult" => {
            let inner = p
                .get("tool_result")
                .or_else(|| p.get("ToolResult"))
                .unwrap_or(p);
            ShownPart {
                kind: "tool_result",
                text: inner.get("content").map(text_of).unwrap_or_default(),
                name: inner
                    .get("call_id")
                    .or_else(|| inner.get("tool_use_id"))
                    .and_then(|n| n.as_str())
                    .map(str::to_string),
            }
        }
        _ => ShownPart {
            kind: "other",
            text: text_of(p),
            name: None,
        },
    }
}

fn tool_call(v: serde_json::Value) -> ShownPart {
    let name = v["name"]
        .as_str()
        .or_else(|| v["function"]["name"].as_str())
        .map(str::to_string);
    let args = v
        .get("arguments")
        .or_else(|| v["function"].get("arguments"))
        .map(|a| match a {
            serde_json::Value::String(s) => serde_json::from_str::<serde_json::Value>(s)
                .ok()
                .and_then(|j| serde_json::to_string_pretty(&j).ok())
                .unwrap_or_else(|| s.clone()),
            other => serde_json::to_string_pretty(other).unwrap_or_default(),
        })
        .unwrap_or_default();
    ShownPart {
        kind: "tool_call",
        text: args,
        name,
    }
}

/// Most calls a session page shows.
const SESSION_CALLS: u32 = 1000;

/// `/ui/sessions/{id}`: an agent session's calls in order, with the running cost.
pub async fn session(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let store = match store_or_page(&c, &s, 1) {
        Ok(st) => st,
        Err(r) => return *r,
    };
    let f = ListFilter {
        session: Some(id.clone()),
        limit: Some(SESSION_CALLS),
        ..ListFilter::default()
    };
    let page = match store.list(&f).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "console: session read failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the record store cannot be read right now",
            )
                .into_response();
        }
    };
    let more = page.next_cursor.is_some();
    let mut running = 0.0;
    let mut rows: Vec<serde_json::Value> = Vec::with_capacity(page.records.len());
    for r in page.records.iter().rev() {
        running += r.cost_usd.unwrap_or(0.0);
        let mut v = serde_json::to_value(Row::of(r)).unwrap_or_default();
        v["running_cost_usd"] = serde_json::json!(running);
        rows.push(v);
    }
    render(
        &c,
        "session.html",
        StatusCode::OK,
        context! { ..frame(&c, &s, 1), ..context! {
            id => id,
            calls => rows,
            total_usd => running,
            more => more,
            limit => SESSION_CALLS,
        } },
    )
}
