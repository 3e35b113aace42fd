//! llmop-gateway: the HTTP face of llmop, and the request path.
//!
//! An HTTP request in an OpenAI or Anthropic shape (or a native feature call) comes in;
//! a response in the same shape comes out, and the whole call is recorded (its request,
//! answer, attempts, usage, cost, feature version and the stages it went through).
//!
//! # Layout, in layers (a module uses only those below it; a test checks for loops)
//! - [`server`]: builds the router and serves it until shutdown.
//! - [`handlers`], [`admin`], [`records_api`], [`responses_api`], [`embeddings`]:
//!   endpoints (`embeddings` also answers Anthropic's `count_tokens`). The calling
//!   endpoints (chat completions, messages, responses, invoke) are thin format adapters: they implement
//!   [`pipeline::Entry`] and leave every stage to the conductor.
//! - [`pipeline`]: the conductor. Every call from every entry point runs its stages in
//!   one order ([`stage::Stage::ALL`]): authenticate, context, parse, authorize, feature,
//!   restore, route, check, call, parse_output, respond, record. `pipeline::targets` is
//!   the call stage (retries, fallbacks, breakers); `pipeline::shadow` runs a
//!   deployment's shadow through the same conductor.
//! - [`respond`]: encodes answers, streams and errors in the client's format.
//! - [`state`]: `AppState`, built once from the config. Stages take narrow inputs (the
//!   router, the limits, the registry), not the whole state.
//! - [`features`]: versioned features: deployments (refreshed from the store), version
//!   and split arm selection, rendering helpers, parse failure policies.
//! - [`auth`]: client API keys (hashed, scoped, refreshed from the store) and the admin
//!   token.
//! - [`record`]: the one record of each call ([`record::CallData`]), filled by the
//!   stages and handed to the record writer (`llmop-store`) exactly once.
//! - [`limits`]: the check stage: budgets (reserve, then settle), session budgets, rate
//!   limits, counted in process or in Redis; the call's one token estimate.
//! - [`reasoning`]: reasoning state (Anthropic thinking, Gemini thought signatures)
//!   kept for clients whose format has no place for it, and put back on the next step.
//! - [`routing`]: turns a `model` string into an ordered list of targets.
//! - [`breaker`], [`resilience`]: circuit breakers; retry backoff and retry budgets.
//! - [`http_error`]: the one place where errors become HTTP statuses.
//! - [`context`]: request id and call metadata from headers.
//! - [`metrics`]: the metrics registry and descriptions (`GET /metrics`).
//! - [`stage`], [`shutdown`]: stage names; SIGTERM/SIGINT, readiness, bounded draining.

pub mod admin;
pub mod agent;
pub mod auth;
pub mod breaker;
pub mod caching;
pub mod context;
pub mod embeddings;
pub mod features;
pub mod guard;
pub mod handlers;
pub mod headers;
pub mod http_error;
pub mod limits;
pub mod metrics;
pub mod online;
pub mod pipeline;
pub mod reasoning;
pub mod record;
pub mod records_api;
pub mod resilience;
pub mod respond;
pub mod responses_api;
pub mod routing;
pub mod server;
pub mod shutdown;
pub mod stage;
pub mod state;

pub use server::serve;
pub use state::AppState;
