//! The call stage: the targets of the call's route, tried in order until one answers.
//!
//! An error that says the request itself is wrong (4xx other than 408/409/429) is
//! returned at once; any other is retried on the same target when the route allows it
//! (`retry`: backoff with full jitter, `Retry-After` as a floor, within the deadline and
//! the target's retry budget), then the call moves on to the next target. A target
//! whose circuit is open, or that is at its provider quota, is skipped. For streams, a
//! target counts as answering once its first event arrived, so a stream is never
//! restarted on another target after the client has seen bytes. When every target
//! failed, the route's `fallback_response` answers (marked degraded).

use super::Plan;
use crate::limits::Estimate;
use crate::record::CallRecord;
use crate::resilience;
use crate::routing::Target;
use futures::StreamExt;
use llmop_core::codes;
use llmop_core::{
    ChatRequest, ChatResponse, FinishReason, GatewayError, Part, ProviderError, Refusal,
    StreamEvent, TimeoutStage,
};
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

/// Tries the plan's targets for `req`, leaving out those in `skip` (`(provider,
/// model)`): a feature whose output did not parse moves on to a target that has not
/// answered yet. Every pass for one call keeps the deadline the route stage set.
pub async fn call(
    plan: &Plan<'_>,
    req: &ChatRequest,
    estimate: &Estimate,
    rec: &mut CallRecord,
    skip: &[(String, String)],
) -> Result<Answer, GatewayError> {
    let resolved = &plan.resolved;
    let deadline = *rec
        .deadline
        .get_or_insert_with(|| Instant::now() + plan.budget);
    let attempts_before = rec.attempts.len();

    let mut last: Option<ProviderError> = None;
    let mut candidates = 0usize;
    let mut quota_skipped = false;
    for target in &resolved.targets {
        if skip
            .iter()
            .any(|(p, m)| p == target.provider.name() && **m == *target.model)
        {
            continue;
        }
        candidates += 1;
        if Instant::now() >= deadline {
            break;
        }
        if rec
            .attempts
            .last()
            .is_some_and(|a| a.retry_reason.is_none())
        {
            rec.moving_on("fallback");
        }
        if let Some(b) = &target.breaker {
            if !b.allow(Instant::now()) {
                // Skipped, and the record says why.
                rec.attempt_skipped(target.provider.name(), &target.model, codes::CIRCUIT_OPEN);
                continue;
            }
        }
        if let (Some(limits), Some(_)) = (plan.limits, target.quota) {
            let tokens = estimate.total(req).await;
            let route = resolved.route.unwrap_or("");
            if !crate::limits::target_admits(limits, route, target, tokens).await {
                // Over the provider's quota for this target: the next one, if any.
                rec.attempt_skipped(target.provider.name(), &target.model, codes::RATE_LIMITED);
                quota_skipped = true;
                continue;
            }
        }
        if let Some(p) = &target.retry {
            p.budget.on_call();
        }
        // Overrides make this target's own copy of the request; without them the
        // client's request is used as is (no copy on the common path).
        let overridden;
        let req: &ChatRequest = match &target.params {
            Some(o) => {
                let mut r = req.clone();
                o.apply(&mut r.params);
                overridden = r;
                &overridden
            }
            None => req,
        };
        let mut retries = 0u32;
        loop {
            let started = Instant::now();
            // This attempt's own bound: the first token within the target's timeout.
            let attempt_deadline = target
                .first_token_timeout
                .and_then(|t| started.checked_add(t))
                .map_or(deadline, |t| t.min(deadline));
            // Boxed: the provider's future (HTTP client, body reading, decoding) is the
            // largest state of a call; behind a pointer, the call's own future stays
            // small and is not copied around at each await (measured: memmove was ~5% of
            // a core).
            let first_token = Box::pin(async {
                if req.stream {
                    // The stream itself lives until the call's deadline; only waiting for
                    // its first event is bounded by the attempt's.
                    start_stream(target, req, deadline, &rec.request_id).await
                } else {
                    target
                        .provider
                        .complete(req, &target.model, attempt_deadline, &rec.request_id)
                        .await
                        .map(Answer::Whole)
                }
            });
            let result = match tokio::time::timeout_at(attempt_deadline, first_token).await {
                Ok(r) => r,
                Err(_) => Err(ProviderError::Timeout {
                    provider: target.provider.name().to_string(),
                    stage: TimeoutStage::FirstByte,
                }),
            };
            let failed = matches!(&result, Err(e) if e.is_retryable());
            if let Some(b) = &target.breaker {
                b.record(Instant::now(), failed);
            }
            if let Some(s) = &target.stats {
                s.observe(started.elapsed(), failed);
            }
            let e = match result {
                Ok(answer) => {
                    rec.attempt(target.provider.name(), &target.model, started, None);
                    rec.price = target.price;
                    if req.stream {
                        rec.time_to_first_token = Some(rec.started.elapsed());
                    }
                    return Ok(answer);
                }
                Err(e) => e,
            };
            rec.attempt(target.provider.name(), &target.model, started, Some(&e));
            // A refusal that is about this model, not the request: another target may
            // take it (a larger context window; a different policy, if allowed). Not
            // retried here: the same model would refuse again.
            let moves_on = match e.refusal() {
                Some(Refusal::ContextWindow) => Some("context_window"),
                Some(Refusal::ContentPolicy) if resolved.fallback_on_content_policy => {
                    Some("content_policy")
                }
                Some(Refusal::QuotaExhausted) => Some("quota_exhausted"),
                _ if matches!(e, ProviderError::Unsupported { .. }) => Some("unsupported"),
                _ => None,
            };
            if let Some(reason) = moves_on {
                rec.moving_on(reason);
                last = Some(e);
                break;
            }
            if !e.is_retryable() {
                return Err(e.into());
            }
            let wait = match &target.retry {
                Some(p) if retries < p.config.attempts => {
                    let wait = resilience::delay(
                        &p.config,
                        retries + 1,
                        e.retry_after(),
                        &mut rand::thread_rng(),
                    );
                    // Only a retry that can finish before the deadline, and that the
                    // target's budget allows.
                    let fits = Instant::now()
                        .checked_add(wait)
                        .is_some_and(|at| at < deadline);
                    let closed = target
                        .breaker
                        .as_ref()
                        .is_none_or(|b| b.allow(Instant::now()));
                    (fits && closed && p.budget.try_retry()).then_some(wait)
                }
                _ => None,
            };
            tracing::debug!(request_id = %rec.request_id, error = %e, retry_in_ms = wait.map(|w| w.as_millis() as u64), "target failed");
            last = Some(e);
            match wait {
                Some(wait) => {
                    rec.moving_on("retry");
                    retries += 1;
                    tokio::time::sleep(wait).await;
                }
                None => break,
            }
        }
    }
    // No attempt followed the last one: it has no retry reason.
    if rec.attempts.len() > attempts_before {
        rec.no_next_attempt();
    }
    let err = match last {
        Some(e) => e.into(),
        None if quota_skipped => GatewayError::Limited {
            message: "rate limited: every target of this route is at its provider quota (rpm/tpm); retry shortly".into(),
            code: codes::RATE_LIMITED,
            retry_after_s: Some(1),
            handoff: false,
        },
        None if candidates == 0 => GatewayError::Unavailable {
            message: "no target of this route is left to try".into(),
            code: codes::NO_TARGET_LEFT,
        },
        None if rec.attempts.len() > attempts_before => GatewayError::Unavailable {
            message: "every target of this route is failing and its circuit is open; retry later"
                .into(),
            code: codes::CIRCUIT_OPEN,
        },
        None => GatewayError::DeadlineExceeded {
            ms: plan.budget.as_millis() as u64,
        },
    };
    // Every target failed in a way that is not the request's fault: the route's
    // degraded answer, if it has one, instead of an error.
    // A refusal of the request itself (every target's window too small) is not hidden.
    let refused = matches!(&err, GatewayError::Provider(e)
        if matches!(e.refusal(), Some(Refusal::ContextWindow | Refusal::ContentPolicy))
            || matches!(e, ProviderError::Unsupported { .. }));
    match &resolved.fallback {
        Some(text) if !refused => {
            tracing::debug!(request_id = %rec.request_id, error = %err, "every target failed: answering with the route's fallback_response");
            rec.degraded = true;
            rec.error_code = Some(err.code());
            Ok(degraded_answer(text, req.stream))
        }
        _ => Err(err),
    }
}

/// The route's fallback text as an answer, whole or as a stream.
fn degraded_answer(text: &str, stream: bool) -> Answer {
    if stream {
        let rest = futures::stream::iter([
            Ok(StreamEvent::Text(text.to_string())),
            Ok(StreamEvent::Finish(FinishReason::Stop)),
        ]);
        Answer::Stream {
            first: StreamEvent::Start {
                id: String::new(),
                model: String::new(),
            },
            rest: Box::pin(rest),
        }
    } else {
        Answer::Whole(ChatResponse {
            id: String::new(),
            model: String::new(),
            created: llmop_wire::unix_now(),
            parts: vec![Part::Text(text.to_string())],
            finish_reason: FinishReason::Stop,
            usage: None,
            details: Default::default(),
        })
    }
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
