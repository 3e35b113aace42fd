//! Building the router and serving it until shutdown.

use crate::admin;

use crate::context::{request_id_from, RequestId};
use crate::embeddings;
use crate::handlers;

use crate::records_api;
use crate::responses_api;
use crate::state::AppState;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

/// The admin API and the records API, without their guards.
fn admin_routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/v1/requests", get(records_api::list))
        .route("/v1/requests/{id}", get(records_api::get))
        .route("/v1/requests/{id}/feedback", post(records_api::feedback))
        .route("/admin/circuits", get(handlers::circuits))
        .route(
            "/admin/budgets",
            get(admin::budgets).post(admin::add_budget),
        )
        .route(
            "/admin/budgets/{id}",
            axum::routing::delete(admin::delete_budget),
        )
        .route("/admin/features", get(admin::list).post(admin::push))
        .route("/admin/features/{name}", get(admin::show))
        .route(
            "/admin/features/{name}/versions/{version}",
            get(admin::version),
        )
        .route("/admin/features/{name}/deploy", post(admin::deploy))
        .route("/admin/features/{name}/rollback", post(admin::rollback))
        .route("/admin/features/{name}/history", get(admin::history))
        .route("/admin/quality", get(admin::quality))
        .route("/admin/approvals", get(admin::approvals))
        .route(
            "/admin/approvals/{id}",
            get(admin::approval).post(admin::decide),
        )
}

pub fn router(app: Arc<AppState>) -> axum::Router {
    // The console calls the admin API in process, behind its own session and CSRF
    // checks (it changes deployments through the same code as `POST /admin/...`). It
    // holds the state weakly: the state holds the console.
    if let Some(c) = &app.console {
        let weak = Arc::downgrade(&app);
        c.attach_admin(Arc::new(move || {
            weak.upgrade().map(|app| {
                admin_routes()
                    // An operator's replay: the chat and feature endpoints without a
                    // client key (the console checked the session and CSRF token).
                    .route("/v1/chat/completions", post(handlers::chat_completions))
                    .route("/v1/features/{name}/invoke", post(handlers::invoke))
                    .layer(axum::Extension(handlers::Operator))
                    .layer(middleware::from_fn(request_id))
                    .with_state(app)
            })
        }));
    }
    // The admin API and the records API: the admin token once keys are in force.
    let admin = admin_routes()
        // Bodies of the admin and records APIs are read like the chat endpoints':
        // bounded in size (413) and in time (408), after the token is checked and
        // before any handler sees them.
        .route_layer(middleware::from_fn_with_state(app.clone(), bounded_body))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            admin::require_admin,
        ));
    let front = app.clone();
    let mut root = axum::Router::new();
    if let Some(c) = &app.console {
        root = root.nest_service("/ui", llmop_console::router(c.clone()));
    }
    root.route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/messages", post(handlers::messages))
        .route("/v1/responses", post(handlers::responses))
        .route("/v1/embeddings", post(embeddings::create))
        .route("/v1/messages/count_tokens", post(embeddings::count_tokens))
        .route("/v1/responses/{id}", get(responses_api::get))
        .route("/v1/models", get(handlers::models))
        .route("/v1/models/{*id}", get(handlers::model))
        .route("/v1/features/{name}/invoke", post(handlers::invoke))
        .route("/metrics", get(handlers::metrics))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .merge(admin)
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(app)
        // Inner: a panic becomes a JSON 500, never a dropped connection or an HTML page.
        .layer(CatchPanicLayer::custom(panic_response))
        // Outer: every response, the panic one included, carries x-request-id; while
        // the gateway is open, only this machine is served.
        .layer(middleware::from_fn_with_state(front, front_door))
}

/// [`request_id`], and while client calls need no key, a refusal of requests that do not
/// name this machine (`crate::auth::foreign`): a web page's, sent directly or through a
/// DNS name it rebound to 127.0.0.1. The headers are looked at first, so a gateway with
/// keys in force pays only for the look.
async fn front_door(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let authority = req.uri().authority().map(|a| a.as_str());
    let foreign = crate::auth::foreign(req.headers(), authority, &app.config.server.allowed_hosts)
        .filter(|_| app.auth.open_to_clients());
    let Some(f) = foreign else {
        return request_id(req, next).await;
    };
    let id = request_id_from(req.headers());
    let (what, code) = match f {
        crate::auth::Foreign::Host => ("a Host", llmop_core::codes::HOST_NOT_ALLOWED),
        crate::auth::Foreign::Origin => ("an Origin", llmop_core::codes::ORIGIN_NOT_ALLOWED),
    };
    tracing::warn!(request_id = %id, code, "refused a request that names another host while the gateway is open");
    let e = llmop_core::GatewayError::Forbidden {
        message: format!(
            "this gateway needs no API key, so it serves only this machine, and the request names {what} that is not a loopback name or one of [server] allowed_hosts; create a key (`llmop keys create`) to serve other hosts"
        ),
        code,
    };
    let format = handlers::format_of(req.uri(), req.headers());
    tagged(crate::http_error::response(format, &e, &id), &id)
}

/// Reads a request's whole body within `max_body_bytes` and `body_timeout_ms`, then
/// hands the request on with that body. A body that is too large or too slow is
/// answered here (413 / 408); nothing after this waits on a client's bytes.
async fn bounded_body(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let rid = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(
        app.body_timeout(),
        handlers::read_body(body, &parts.headers, app.config.server.max_body_bytes),
    )
    .await
    .unwrap_or(Err(llmop_core::GatewayError::RequestTimeout {
        ms: app.config.server.body_timeout_ms,
    }));
    match read {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Err(e) => crate::http_error::response(crate::http_error::WireFormat::OpenAi, &e, &rid),
    }
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = request_id_from(req.headers());
    req.extensions_mut().insert(RequestId(id.clone()));
    tagged(next.run(req).await, &id)
}

/// `resp` with the call's `x-request-id`.
fn tagged(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(crate::headers::X_REQUEST_ID, v);
    }
    resp
}

fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("panic");
    tracing::error!(panic = detail, "request handler panicked");
    let body = llmop_wire::openai::error_body(
        "api_error",
        llmop_core::codes::INTERNAL_ERROR,
        "internal error: the gateway failed while handling this request",
        None,
        "",
    );
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// File descriptors kept free of client connections: upstream connections, the store,
/// the spill and log files.
const RESERVED_FDS: u64 = 512;

/// Raises the soft open-file limit to the hard one (a default soft limit of 1,024 lets
/// a thousand idle sockets starve everyone) and returns the connection cap: the
/// configured one, or what the limit leaves after [`RESERVED_FDS`].
pub fn connection_cap(configured: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    };
    let derived = limit.saturating_sub(RESERVED_FDS).clamp(64, 1_000_000) as usize;
    if configured == 0 {
        derived
    } else {
        configured
    }
}

/// Serves until shutdown, then drains.
///
/// The accept loop is ours rather than `axum::serve`'s because the request path needs
/// what that does not offer: a bound on how long a connection may take to send its
/// headers or sit idle between requests (`idle_timeout_ms`), a cap on open connections,
/// and a drain that ends open streams properly at its deadline.
///
/// Shutdown: `/readyz` answers 503 for `shutdown_grace_ms` while requests are still
/// served; then the listener closes and every connection finishes its in-flight
/// requests (kept-alive ones close after them). When `shutdown_timeout_ms` passes,
/// streams still open end with a `shutting_down` event, and after a moment for those
/// last bytes, whatever is still running is dropped, which records it (status 499).
/// This returns only once every connection task has ended, so every record has been
/// handed to the writer.
pub async fn serve(app: Arc<AppState>, listener: TcpListener) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt;

    let cfg = &app.config.server;
    let shutdown = app.shutdown.clone();
    let grace = Duration::from_millis(cfg.shutdown_grace_ms);
    let drain_limit = Duration::from_millis(
        cfg.shutdown_timeout_ms
            .saturating_sub(cfg.shutdown_grace_ms),
    );
    let cap = connection_cap(cfg.max_connections);
    let idle = Duration::from_millis(cfg.idle_timeout_ms);
    tracing::debug!(
        max_connections = cap,
        idle_timeout_ms = cfg.idle_timeout_ms,
        "accepting connections"
    );

    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Runs whenever the connection waits for a request's head: a new connection, a
        // slow one, and a kept-alive one between requests.
        .header_read_timeout(idle)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(idle))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(256);

    let router = router(app.clone());
    let permits = Arc::new(tokio::sync::Semaphore::new(cap));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    // Set when the listener closes: a connection that has not sent its first byte yet
    // is dropped then, rather than holding the drain open until its idle timeout.
    let (closed_tx, closed_rx) = tokio::sync::watch::channel(false);
    let stop_accepting = async {
        shutdown.triggered().await;
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(stop_accepting);
    let mut at_cap_logged = false;
    loop {
        // Finished connection tasks are reaped as we go.
        while tasks.try_join_next().is_some() {}
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !at_cap_logged {
                    tracing::warn!(
                        max_connections = cap,
                        "connection cap reached: new connections wait"
                    );
                    at_cap_logged = true;
                }
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = &mut stop_accepting => break,
                }
            }
        };
        let (tcp, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: wait
                    // a moment instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop_accepting => break,
        };
        at_cap_logged = false;
        // Small writes (SSE events) go out at once: without TCP_NODELAY, Nagle's
        // algorithm and the client's delayed ACK hold each stream's tail for ~40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let mut closed = closed_rx.clone();
        tasks.spawn(async move {
            // Before the protocol is known (HTTP/1 or HTTP/2), nothing in hyper times a
            // silent connection: one that sends no byte within the idle timeout (or before
            // the listener closes) is dropped here. After its first byte, the header
            // timeout takes over.
            let mut probe = [0u8; 1];
            let spoke = tokio::select! {
                r = tokio::time::timeout(idle, tcp.peek(&mut probe)) => matches!(r, Ok(Ok(n)) if n > 0),
                _ = closed.wait_for(|c| *c) => false,
            };
            if !spoke {
                drop(permit);
                return;
            }
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    router.clone().oneshot(req.map(axum::body::Body::new))
                });
            let conn = builder.serve_connection(TokioIo::new(tcp), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!("connection ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    closed_tx.send_replace(true);
    tracing::info!(
        connections = tasks.len(),
        "listener closed; draining in-flight requests"
    );
    tokio::select! {
        _ = graceful.shutdown() => {
            tracing::info!("all in-flight requests finished");
        }
        _ = tokio::time::sleep(drain_limit) => {
            tracing::warn!(timeout_ms = cfg.shutdown_timeout_ms, "drain deadline: ending open streams and recording calls still in flight");
            shutdown.pass_deadline();
            // A moment for the streams' last event to be written.
            tokio::time::sleep(Duration::from_millis(200)).await;
            tasks.abort_all();
        }
    }
    // Every task has ended (or was aborted and dropped): every call's record has been
    // handed to the record writer.
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The gateway's whole life on `listener`: [`serve`] until shutdown, then the shadow
/// calls the last primaries started finish (bounded by `shutdown_timeout_ms`), then the
/// record writer commits what is queued (spilling what misses the deadline) and the
/// store closes. `llmop serve` is this one call after building the state.
pub async fn run(app: Arc<AppState>, listener: TcpListener) -> std::io::Result<()> {
    if let (Some(rec), Some(days)) = (&app.recorder, app.config.store.retention_days) {
        crate::record::spawn_retention(rec.clone(), days, app.shutdown.clone());
    }
    crate::online::spawn(&app);
    serve(app.clone(), listener).await?;
    let deadline = std::time::Duration::from_millis(app.config.server.shutdown_timeout_ms);
    if let Some(f) = &app.features {
        if !f.drain_shadows(deadline).await {
            tracing::warn!("shadow calls still running at the shutdown deadline were abandoned");
        }
    }
    // In-flight calls are done (or the drain timed out): commit the records still queued.
    if let Some(rec) = &app.recorder {
        rec.writer.shutdown(deadline).await;
        let s = rec.writer.stats().snapshot();
        tracing::info!(
            written = s.written,
            delayed = s.delayed,
            held = s.held,
            spilled = s.spilled,
            lost = s.lost,
            "record writer stopped"
        );
        rec.store.close().await;
    }
    Ok(())
}
