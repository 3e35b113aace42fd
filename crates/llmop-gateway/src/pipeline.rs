//! The stages every call goes through, in order:
//!
//! 1. **authenticate** — who is calling (API keys join here; until then the gateway is
//!    open and binds to loopback only, see `server`).
//! 2. **resolve** — `model` to an ordered list of targets (`routing`).
//! 3. **check** — limits that can refuse a call before it costs anything (budgets and
//!    rate limits join here).
//! 4. **call** — try the targets in order until one answers; an error that says the
//!    request itself is wrong (4xx other than 408/409/429) is returned at once, any
//!    other moves on to the next target. For streams, a target counts as answering
//!    once its first event arrived, so a stream is never restarted on another target
//!    after the client has seen bytes.
//! 5. **respond** and 6. **record** — in `respond` and `record`.

use crate::record::CallRecord;
use crate::routing::Target;
use crate::state::AppState;
use futures::StreamExt;
use llmop_core::{ChatRequest, ChatResponse, GatewayError, ProviderError, StreamEvent};
use llmop_providers::EventStream;
use tokio::time::Instant;

/// A successful upstream answer, whole or as a stream that has produced its first event.
pub enum Answer {
    Whole(ChatResponse),
    Stream {
        first: StreamEvent,
        rest: EventStream,
    },
}

pub async fn call(
    app: &AppState,
    req: &ChatRequest,
    rec: &mut CallRecord,
) -> Result<Answer, GatewayError> {
    // 2. resolve
    let resolved = app.router.resolve(&req.model)?;
    rec.route = resolved.route.map(str::to_string);
    let budget = resolved.timeout.unwrap_or_else(|| app.default_timeout());
    let deadline = Instant::now() + budget;

    // 4. call, with fallback over the targets
    let mut last: Option<ProviderError> = None;
    for target in &resolved.targets {
        if Instant::now() >= deadline {
            break;
        }
        if last.is_some() {
            rec.moving_on("fallback");
        }
        let started = Instant::now();
        let result = if req.stream {
            start_stream(target, req, deadline, &rec.request_id).await
        } else {
            target
                .provider
                .complete(req, &target.model, deadline, &rec.request_id)
                .await
                .map(Answer::Whole)
        };
        match result {
            Ok(answer) => {
                rec.attempt(target.provider.name(), &target.model, started, None);
                if req.stream {
                    rec.time_to_first_token = Some(rec.started.elapsed());
                }
                return Ok(answer);
            }
            Err(e) => {
                rec.attempt(target.provider.name(), &target.model, started, Some(&e));
                if !e.is_retryable() {
                    return Err(e.into());
                }
                tracing::debug!(request_id = %rec.request_id, error = %e, "target failed, trying the next");
                last = Some(e);
            }
        }
    }
    Err(match last {
        Some(e) => e.into(),
        None => GatewayError::DeadlineExceeded {
            ms: budget.as_millis() as u64,
        },
    })
}

/// Opens a stream and waits for its first event, so that a failure before any byte
/// reaches the client can still go to the next target.
async fn start_stream(
    target: &Target,
    req: &ChatRequest,
    deadline: Instant,
    request_id: &str,
) -> Result<Answer, ProviderError> {
    let mut rest = target
        .provider
        .stream(req, &target.model, deadline, request_id)
        .await?;
    match rest.next().await {
        Some(Ok(first)) => Ok(Answer::Stream { first, rest }),
        Some(Err(e)) => Err(e),
        None => Err(ProviderError::Stream {
            provider: target.provider.name().to_string(),
            message: "the stream ended before its first event".into(),
        }),
    }
}
