//! llmop-gateway: the HTTP face of llmop.
//!
//! An HTTP request in an OpenAI or Anthropic shape comes in; a response in the same
//! shape comes out, and a summary of the call is recorded.
//!
//! # Layout
//! - [`server`]: builds the router and serves it until shutdown.
//! - [`handlers`]: one function per endpoint; each parses its format and calls the
//!   pipeline.
//! - [`pipeline`]: the stages every call goes through: authenticate, resolve, check,
//!   call (with fallback), respond, record.
//! - [`features`]: versioned features on the request path: deployments (refreshed
//!   from the store), version and split arm selection, rendering, output parsing and its
//!   failure policies, shadow calls.
//! - [`admin`]: the admin API for features (versions, deployments, rollback, history).
//! - [`auth`]: client API keys (hashed, scoped, refreshed from the store) and the admin
//!   token.
//! - [`limits`]: the check stage: budgets (reserve, then settle), session budgets, rate
//!   limits, counted in process or in Redis.
//! - [`breaker`]: circuit breakers per route target.
//! - [`resilience`]: retry backoff (full jitter, `Retry-After`) and retry budgets.
//! - [`routing`]: turns a `model` string into an ordered list of targets.
//! - [`reasoning`]: reasoning state (Anthropic thinking, Gemini thought signatures)
//!   kept for clients whose format has no place for it, and put back on the next step.
//! - [`respond`]: encodes answers, streams and errors in the client's format.
//! - [`http_error`]: the one place where errors become HTTP statuses.
//! - [`context`]: request id and call metadata from headers.
//! - [`record`]: the record of each call, assembled on the request path from what the
//!   call already owns and handed to the record writer (`llmop-store`) exactly once.
//! - [`records_api`]: the read side: `GET /v1/requests/{id}`, `GET /v1/requests`,
//!   `POST /v1/requests/{id}/feedback`.
//! - [`metrics`]: `GET /metrics` (Prometheus text format).
//! - [`shutdown`]: SIGTERM/SIGINT, readiness, bounded draining.

pub mod admin;
pub mod auth;
pub mod breaker;
pub mod context;
pub mod features;
pub mod handlers;
pub mod http_error;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod reasoning;
pub mod record;
pub mod records_api;
pub mod resilience;
pub mod respond;
pub mod routing;
pub mod server;
pub mod shutdown;
pub mod stage;
pub mod state;

pub use server::serve;
pub use state::AppState;
