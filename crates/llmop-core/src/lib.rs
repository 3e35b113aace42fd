//! llmop-core: the vocabulary every other crate shares.
//!
//! # Layout
//! - [`chat`]: the provider-neutral chat model (requests, responses, stream events, usage).
//!   Every wire format is translated to and from it; nothing here knows any wire format.
//! - [`config`]: the `llmop.toml` contract, parsed and validated with errors that name
//!   the file, line and key.
//! - [`context`]: per-request metadata (request id, user, session, env, tags).
//! - [`json`]: writing JSON text fast (sonic-rs), byte for byte what serde_json writes.
//! - [`error`]: typed errors of the request path. Mapping them to HTTP statuses happens
//!   once, in the gateway.
//!
//! Invariant: this crate does no network I/O and knows no HTTP status codes.

pub mod budget;
pub mod chat;
pub mod codes;
pub mod config;
pub mod context;
pub mod embed;
pub mod error;
pub mod guard;
pub mod json;
pub mod secret;

pub use chat::*;
pub use error::{GatewayError, ProviderError, Refusal, TimeoutStage};
