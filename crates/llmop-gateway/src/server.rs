//! Building the router and serving it until shutdown.

use crate::admin;
use crate::auth;
use crate::context::{request_id_from, RequestId};
use crate::handlers;
use crate::metrics;
use crate::records_api;
use crate::state::AppState;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use std::any::Any;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

pub fn router(app: Arc<AppState>) -> axum::Router {
    // The admin API and the records API: the admin token once keys are in force.
    let admin = axum::Router::new()
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
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            auth::require_admin,
        ));
    axum::Router::new()
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/messages", post(handlers::messages))
        .route("/v1/models", get(handlers::models))
        .route("/v1/models/{*id}", get(handlers::model))
        .route("/v1/features/{name}/invoke", post(handlers::invoke))
        .route("/metrics", get(metrics::handler))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .merge(admin)
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(app)
        // Inner: a panic becomes a JSON 500, never a dropped connection or an HTML page.
        .layer(CatchPanicLayer::custom(panic_response))
        // Outer: every response, the panic one included, carries x-request-id.
        .layer(middleware::from_fn(request_id))
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = request_id_from(req.headers());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
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
        "internal_error",
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

/// Serves until shutdown is triggered, then drains in-flight requests for at most
/// `shutdown_timeout_ms`.
pub async fn serve(app: Arc<AppState>, listener: TcpListener) -> std::io::Result<()> {
    let shutdown = app.shutdown.clone();
    let drain_limit = Duration::from_millis(app.config.server.shutdown_timeout_ms);
    // Small writes (SSE events) go out at once: without TCP_NODELAY, Nagle's algorithm
    // and the client's delayed ACK hold each stream's tail for ~40 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    let server = axum::serve(listener, router(app)).with_graceful_shutdown({
        let s = shutdown.clone();
        async move { s.triggered().await }
    });
    let drain_timeout = async {
        shutdown.triggered().await;
        tokio::time::sleep(drain_limit).await;
    };
    tokio::select! {
        r = server.into_future() => {
            tracing::info!("all in-flight requests finished; exiting");
            r
        }
        _ = drain_timeout => {
            tracing::warn!(timeout_ms = drain_limit.as_millis() as u64, "drain timed out; exiting with requests still in flight");
            Ok(())
        }
    }
}
