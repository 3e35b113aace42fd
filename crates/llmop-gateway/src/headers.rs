//! The header names the request path reads and writes, parsed once: a lookup or insert
//! under a `&str` name parses and validates the name on every call.

use axum::http::HeaderName;

// Read from the request.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

// Written on the answer (and `x-request-id`).
pub const X_LLMOP_PROVIDER: HeaderName = HeaderName::from_static("x-llmop-provider");
pub const X_LLMOP_MODEL: HeaderName = HeaderName::from_static("x-llmop-model");
pub const X_LLMOP_ATTEMPTS: HeaderName = HeaderName::from_static("x-llmop-attempts");
pub const X_LLMOP_DEGRADED: HeaderName = HeaderName::from_static("x-llmop-degraded");
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
pub const X_LLMOP_CACHE: HeaderName = HeaderName::from_static("x-llmop-cache");
pub const X_LLMOP_CACHE_SOURCE: HeaderName = HeaderName::from_static("x-llmop-cache-source");
pub const X_LLMOP_COST_USD: HeaderName = HeaderName::from_static("x-llmop-cost-usd");
pub const X_LLMOP_FEATURE_VERSION: HeaderName = HeaderName::from_static("x-llmop-feature-version");
pub const X_LLMOP_FEATURE_ARM: HeaderName = HeaderName::from_static("x-llmop-feature-arm");
