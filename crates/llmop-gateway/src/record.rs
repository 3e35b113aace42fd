//! The summary of one call, filled in as the call moves through the pipeline and
//! emitted exactly once when the call is over: when its response (or its stream) is
//! done, or when the client went away and the call was dropped mid-way.
//!
//! Today the summary is a structured log line (target `llmop::call`); the durable record
//! store takes it from here. It holds no secrets: no headers, no keys.

use llmop_core::context::RequestContext;
use llmop_core::{ChatResponse, GatewayError, ProviderError, Usage};
use std::time::Duration;
use tokio::time::Instant;

/// One try of one target.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub provider: String,
    pub model: String,
    /// `None` on success, else the error's stable code.
    pub error: Option<&'static str>,
    pub upstream_status: Option<u16>,
    pub latency: Duration,
}

/// Status shown for a call whose client disconnected before the answer was complete
/// (nginx's convention; no response was sent).
pub const CLIENT_CLOSED: u16 = 499;

#[derive(Debug)]
pub struct CallRecord {
    pub request_id: String,
    pub endpoint: &'static str,
    pub started: Instant,
    pub context: RequestContext,
    pub model_requested: String,
    pub route: Option<String>,
    pub stream: bool,
    pub attempts: Vec<Attempt>,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// The answer's id as the upstream gave it (`chatcmpl-…`, `msg_…`): what a
    /// provider's support asks for.
    pub upstream_id: Option<String>,
    pub usage: Option<Usage>,
    pub time_to_first_token: Option<Duration>,
    /// HTTP status sent to the client; `None` until there is one.
    pub status: Option<u16>,
    pub error_code: Option<&'static str>,
    emitted: bool,
}

impl CallRecord {
    pub fn new(request_id: &str, endpoint: &'static str) -> Self {
        CallRecord {
            request_id: request_id.to_string(),
            endpoint,
            started: Instant::now(),
            context: RequestContext::default(),
            model_requested: String::new(),
            route: None,
            stream: false,
            attempts: Vec::new(),
            provider: None,
            model: None,
            upstream_id: None,
            usage: None,
            time_to_first_token: None,
            status: None,
            error_code: None,
            emitted: false,
        }
    }

    pub fn attempt(
        &mut self,
        provider: &str,
        model: &str,
        started: Instant,
        error: Option<&ProviderError>,
    ) {
        self.attempts.push(Attempt {
            provider: provider.to_string(),
            model: model.to_string(),
            error: error.map(ProviderError::code),
            upstream_status: match error {
                Some(ProviderError::Status { status, .. }) => Some(*status),
                _ => None,
            },
            latency: started.elapsed(),
        });
        if error.is_none() {
            self.provider = Some(provider.to_string());
            self.model = Some(model.to_string());
        }
    }

    pub fn succeeded(&mut self, resp: &ChatResponse) {
        self.usage = resp.usage;
        self.status = Some(200);
    }

    pub fn failed(&mut self, e: &GatewayError, status: u16) {
        self.status = Some(status);
        self.error_code = Some(e.code());
    }

    /// Emits the summary now (further calls and the drop do nothing).
    pub fn emit(&mut self) {
        if self.emitted {
            return;
        }
        self.emitted = true;
        let status = self.status.unwrap_or(CLIENT_CLOSED);
        let usage = self.usage.unwrap_or_default();
        let attempts: Vec<String> = self
            .attempts
            .iter()
            .map(|a| {
                format!(
                    "{}/{}:{}:{}ms",
                    a.provider,
                    a.model,
                    a.error.unwrap_or("ok"),
                    a.latency.as_millis()
                )
            })
            .collect();
        tracing::info!(
            target: "llmop::call",
            request_id = %self.request_id,
            endpoint = self.endpoint,
            model = %self.model_requested,
            route = self.route.as_deref().unwrap_or(""),
            provider = self.provider.as_deref().unwrap_or(""),
            upstream_model = self.model.as_deref().unwrap_or(""),
            upstream_id = self.upstream_id.as_deref().unwrap_or(""),
            stream = self.stream,
            status,
            error = self.error_code.unwrap_or(""),
            client_disconnected = status == CLIENT_CLOSED,
            latency_ms = self.started.elapsed().as_millis() as u64,
            ttft_ms = self.time_to_first_token.map(|d| d.as_millis() as u64),
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            cached_tokens = usage.cached_input_tokens,
            user = self.context.user.as_deref().unwrap_or(""),
            session = self.context.session.as_deref().unwrap_or(""),
            env = self.context.env.as_deref().unwrap_or(""),
            feature = self.context.feature.as_deref().unwrap_or(""),
            attempts = %attempts.join(","),
            "call"
        );
    }
}

impl Drop for CallRecord {
    /// A call dropped before it finished (the client disconnected) is still recorded.
    fn drop(&mut self) {
        self.emit();
    }
}
