//! llmop-providers: calling upstream model APIs.
//!
//! # Layout
//! - [`http`]: the one HTTP mechanism shared by the `openai`, `anthropic` and `gemini`
//!   kinds: build the body with `llmop-wire`, send it over a pooled connection, map
//!   error statuses, and decode SSE streams into events.
//! - [`mock`]: the built-in simulated provider (deterministic answers, real token counts,
//!   failure knobs).
//! - [`tokenizer`]: the tokenizer the mock provider counts with.
//!
//! Invariants: a provider never sees a client's credentials; a provider error carries
//! a message extracted from the upstream's error body, never the raw body; dropping a
//! call's future (client gone) cancels the upstream request.

pub mod http;
pub mod mock;
pub mod tokenizer;

use futures::stream::BoxStream;
use llmop_core::config::{Config, ProviderKind};
use llmop_core::{ChatRequest, ChatResponse, ProviderError, StreamEvent};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

/// A stream of events from one upstream call. It ends after `Finish`/`Usage`, or with
/// one `Err`.
pub type EventStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;

/// One configured provider.
pub enum Provider {
    /// Boxed: the HTTP client and its pool handles make it several times the mock's size.
    Http(Box<http::HttpProvider>),
    Mock(mock::MockProvider),
}

impl Provider {
    pub fn name(&self) -> &str {
        match self {
            Provider::Http(p) => p.name(),
            Provider::Mock(p) => p.name(),
        }
    }

    pub fn kind(&self) -> ProviderKind {
        match self {
            Provider::Http(p) => p.kind(),
            Provider::Mock(_) => ProviderKind::Mock,
        }
    }

    /// A whole answer from `model`, within `deadline`. `request_id` is llmop's id of the
    /// call, sent upstream as `x-request-id` so the upstream's logs correlate.
    pub async fn complete(
        &self,
        req: &ChatRequest,
        model: &str,
        deadline: Instant,
        request_id: &str,
    ) -> Result<ChatResponse, ProviderError> {
        match self {
            Provider::Http(p) => p.complete(req, model, deadline, request_id).await,
            Provider::Mock(p) => p.complete(req, model, deadline).await,
        }
    }

    /// A streamed answer from `model`. Returns once the upstream has accepted the call
    /// (status and headers received), so that an error before the first byte can still
    /// be answered as a plain HTTP error or handed to the next target.
    pub async fn stream(
        &self,
        req: &ChatRequest,
        model: &str,
        deadline: Instant,
        request_id: &str,
    ) -> Result<EventStream, ProviderError> {
        match self {
            Provider::Http(p) => p.stream(req, model, deadline, request_id).await,
            Provider::Mock(p) => p.stream(req, model, deadline).await,
        }
    }

    /// Embeddings of every input from `model`, within `deadline`.
    pub async fn embed(
        &self,
        req: &llmop_core::embed::EmbedRequest,
        model: &str,
        deadline: Instant,
        request_id: &str,
    ) -> Result<llmop_core::embed::Embeddings, ProviderError> {
        match self {
            Provider::Http(p) => p.embed(req, model, deadline, request_id).await,
            Provider::Mock(p) => p.embed(req, model, deadline).await,
        }
    }

    /// Input tokens of `req` as `model` counts them, when the provider offers counting
    /// (Anthropic's `count_tokens`); `Ok(None)` when it does not.
    pub async fn count_tokens(
        &self,
        req: &ChatRequest,
        model: &str,
        deadline: Instant,
        request_id: &str,
    ) -> Result<Option<u64>, ProviderError> {
        match self {
            Provider::Http(p) => p.count_tokens(req, model, deadline, request_id).await,
            Provider::Mock(_) => Ok(None),
        }
    }

    /// Models this provider lists in `GET /v1/models`.
    pub fn models(&self) -> &[String] {
        match self {
            Provider::Http(p) => p.models(),
            Provider::Mock(p) => p.models(),
        }
    }
}

/// All configured providers by name.
#[derive(Clone, Default)]
pub struct Providers {
    by_name: HashMap<String, Arc<Provider>>,
}

impl Providers {
    /// Builds every provider of the config. Fails if a provider's key cannot be read.
    pub fn from_config(config: &Config) -> Result<Providers, String> {
        let mut by_name = HashMap::with_capacity(config.providers.len());
        for (name, pc) in &config.providers {
            let p = match pc.kind {
                ProviderKind::Mock => Provider::Mock(mock::MockProvider::new(name, pc)),
                _ => Provider::Http(Box::new(
                    http::HttpProvider::new(name, pc)
                        .map_err(|e| format!("provider `{name}`: {e}"))?,
                )),
            };
            by_name.insert(name.clone(), Arc::new(p));
        }
        Ok(Providers { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Provider>)> {
        self.by_name.iter()
    }
}
