//! The web console at `/ui` (docs/console.md): server-rendered pages over the record
//! store, served by the gateway's own binary with every asset compiled in.
//!
//! Pages: requests (filters in the URL, one search box for any id, keyset paging,
//! CSV/JSONL export streamed), one call's story, an agent session's calls. Every page
//! and export needs a session (the signed cookie of [`session`]) once the gateway is
//! closed (an admin token, or client keys in force); while it is open (loopback, no
//! keys, no admin token) a session is issued on the first visit, as the admin API is
//! open then. Changes are POSTs that carry the session's CSRF token.
//!
//! Links are relative, so the console works behind a path prefix. The console reads
//! the store only: it never sits on the request path.

mod chart;
mod export;
mod ops;
mod overview;
mod pages;
mod replay;
pub mod session;
mod view;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use llmop_store::Store;
use session::{Role, Session, Signer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use session::Role as ConsoleRole;

/// The cookie that carries the session.
pub const COOKIE: &str = "llmop_console";

/// Whether the gateway is open (no admin token, no client keys in force): asked on
/// every visit, since keys can appear while it runs.
pub type OpenFn = Arc<dyn Fn() -> bool + Send + Sync>;

/// The console's state.
pub struct Console {
    store: Option<Store>,
    signer: Signer,
    /// SHA-256 (hex) of the admin token and of the read-only console token.
    admin_hash: Option<String>,
    viewer_hash: Option<String>,
    open: OpenFn,
    ttl_s: u64,
    env: minijinja::Environment<'static>,
    /// Failed logins in the current minute (`minute << 32 | count`).
    failures: AtomicU64,
    /// The gateway's admin API, called in process for changes and live state.
    admin: std::sync::OnceLock<AdminFn>,
}

/// Builds the gateway's admin API router (`None` once the gateway is gone).
pub type AdminFn = Arc<dyn Fn() -> Option<axum::Router> + Send + Sync>;

/// Most failed logins per minute (per process) before logins are refused for the rest
/// of the minute: the tokens are long, this makes guessing slower still.
const MAX_FAILURES_PER_MINUTE: u64 = 20;

impl Console {
    pub fn new(
        store: Option<Store>,
        admin_token: Option<&str>,
        viewer_token: Option<&str>,
        open: OpenFn,
        ttl_s: u64,
    ) -> Console {
        let admin_token = admin_token.filter(|t| !t.is_empty());
        let viewer_token = viewer_token.filter(|t| !t.is_empty());
        Console {
            store,
            signer: Signer::new(admin_token),
            admin_hash: admin_token.map(llmop_store::hash_key),
            viewer_hash: viewer_token.map(llmop_store::hash_key),
            open,
            ttl_s: ttl_s.max(60),
            env: view::environment(),
            failures: AtomicU64::new(0),
            admin: std::sync::OnceLock::new(),
        }
    }

    /// The gateway's admin API (its routes, without the token check: the console's own
    /// session and CSRF checks stand in front of every call). Set once.
    pub fn attach_admin(&self, admin: AdminFn) {
        let _ = self.admin.set(admin);
    }

    /// The role a presented token grants.
    fn role_of(&self, token: &str) -> Option<Role> {
        let h = llmop_store::hash_key(token.trim());
        // Hashes of equal length compared: nothing about a token leaks through timing.
        if self.admin_hash.as_deref() == Some(h.as_str()) {
            return Some(Role::Admin);
        }
        if self.viewer_hash.as_deref() == Some(h.as_str()) {
            return Some(Role::Viewer);
        }
        None
    }

    /// Counts a failed login; false once the minute's allowance is spent.
    fn failed_login(&self, now_s: u64) -> bool {
        let minute = now_s / 60;
        let mut cur = self.failures.load(Ordering::Relaxed);
        loop {
            let (m, n) = (cur >> 32, cur & 0xffff_ffff);
            let next = if m == minute {
                (m << 32) | (n + 1)
            } else {
                minute << 32 | 1
            };
            match self
                .failures
                .compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return (next & 0xffff_ffff) <= MAX_FAILURES_PER_MINUTE,
                Err(c) => cur = c,
            }
        }
    }

    fn logins_blocked(&self, now_s: u64) -> bool {
        let cur = self.failures.load(Ordering::Relaxed);
        cur >> 32 == now_s / 60 && (cur & 0xffff_ffff) >= MAX_FAILURES_PER_MINUTE
    }
}

pub(crate) fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The session cookie a request presents, verified.
fn presented(c: &Console, headers: &HeaderMap) -> Option<Session> {
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=') {
                if k == COOKIE {
                    if let Some(s) = c.signer.verify(val, now_s()) {
                        return Some(s);
                    }
                }
            }
        }
    }
    None
}

/// `Set-Cookie` for a session: HttpOnly, SameSite=Strict, Secure when the client came
/// over TLS (a proxy's `x-forwarded-proto: https`). No `Path`: the cookie's path is the
/// console's own directory, wherever a proxy mounts it.
fn set_cookie(value: &str, max_age_s: u64, headers: &HeaderMap) -> HeaderValue {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let s = format!(
        "{COOKIE}={value}; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Every page but the login needs a session. Open gateways issue one on the first
/// visit. A change (POST) needs the session's CSRF token too (checked by its handler,
/// which reads the form).
async fn require_session(State(c): State<Arc<Console>>, mut req: Request, next: Next) -> Response {
    if let Some(s) = presented(&c, req.headers()) {
        req.extensions_mut().insert(s);
        return next.run(req).await;
    }
    if (c.open)() {
        let (cookie, s) = c.signer.issue(Role::Admin, now_s(), c.ttl_s);
        let set = set_cookie(&cookie, c.ttl_s, req.headers());
        req.extensions_mut().insert(s);
        let mut resp = next.run(req).await;
        resp.headers_mut().append(header::SET_COOKIE, set);
        return resp;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (StatusCode::FORBIDDEN, "log in to the console first").into_response();
    }
    let depth = view::depth_of(req.uri().path());
    let back = view::back_target(req.uri());
    let to = format!(
        "{}login?next={}",
        view::base(depth),
        url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
    );
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Headers on every console response: no caching of pages that show records, no
/// framing, no sniffing, no referrer to other sites (ids are in URLs), scripts and styles only from
/// the console itself.
async fn hardened(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        // `same-origin`, not `no-referrer`: under `no-referrer` a browser sends the
        // console's own form posts with `Origin: null`, which an open gateway refuses
        // (any page can send that; docs/api.md, "Open on loopback").
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// The console's routes, to be nested at `/ui`.
pub fn router(c: Arc<Console>) -> axum::Router {
    let guarded = axum::Router::new()
        .route("/", get(pages::home))
        .route("/overview", get(overview::overview))
        .route("/requests", get(pages::requests))
        .route("/requests.csv", get(export::csv))
        .route("/requests.jsonl", get(export::jsonl))
        .route("/requests/{id}", get(pages::call))
        .route("/requests/{id}/replay", post(replay::replay))
        .route("/requests/{id}/replays/{replay}", get(replay::compare))
        .route("/sessions/{id}", get(pages::session))
        .route("/features", get(ops::features))
        .route("/features/{name}", get(ops::feature))
        .route("/features/{name}/deploy", post(ops::deploy))
        .route("/features/{name}/rollback", post(ops::rollback))
        .route("/circuits", get(ops::circuits))
        .route("/budgets", get(ops::budgets))
        .route("/logout", post(pages::logout))
        .route_layer(middleware::from_fn_with_state(c.clone(), require_session));
    axum::Router::new()
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/assets/console.css", get(pages::css))
        .merge(guarded)
        .layer(middleware::from_fn(hardened))
        .with_state(c)
}
