//! The check stage: caps, session budgets, key rate limits and budget reservations
//! ([`admit`]); settlement of a reservation; per-target provider quotas.

use super::*;
use crate::routing::{Resolved, Target};

/// The check stage: per-request caps (clamping `max_tokens` where that fits), session
/// budgets, key rate limits, and reservations on every budget the call falls in.
/// The admission goes on the call's record and is settled when the record is handed
/// over.
pub async fn admit(
    limits: &Arc<Limits>,
    resolved: &Resolved<'_>,
    estimate: &Estimate,
    req: &mut ChatRequest,
    context: &RequestContext,
    key: Option<&llmop_store::ApiKey>,
) -> Result<Option<Admission>, GatewayError> {
    let key_limits = key.is_some_and(|k| {
        k.scopes.rpm.is_some() || k.scopes.tpm.is_some() || k.scopes.budget_usd_day.is_some()
    });
    if !limits.active(key_limits) {
        return Ok(None);
    }
    // The highest price among the targets this call may reach.
    let (mut p_in, mut p_out) = (0.0f64, 0.0f64);
    for t in &resolved.targets {
        if let Some(p) = t.price {
            p_in = p_in.max(p.input);
            p_out = p_out.max(p.output);
        }
    }
    let tokens_in = estimate.tokens_in(req).await;
    let now = now_ms();

    // Per-request caps: clamp max_tokens when that keeps the call under, else refuse.
    let budgets = limits.budgets();
    for b in budgets.iter().filter(|b| b.scope == Scope::Request) {
        let Some(cap) = b.hard else { continue };
        let cost_in = tokens_in as f64 * p_in / 1e6;
        let out = u64::from(
            req.params
                .max_tokens
                .unwrap_or(DEFAULT_OUTPUT_ESTIMATE as u32),
        );
        if cost_in + out as f64 * p_out / 1e6 <= cap {
            continue;
        }
        let fits = if p_out > 0.0 {
            ((cap - cost_in) * 1e6 / p_out).floor()
        } else {
            0.0
        };
        if fits >= 1.0 {
            req.params.max_tokens = Some(fits.min(u32::MAX as f64) as u32);
        } else {
            return Err(GatewayError::Limited {
                message: format!(
                    "budget exceeded: this request's prompt alone (~{tokens_in} tokens, {}) is over the per-request cap of {}",
                    usd(cost_in),
                    usd(cap)
                ),
                code: codes::BUDGET_EXCEEDED,
                retry_after_s: None,
                handoff: false,
            });
        }
    }
    let tokens_out = u64::from(
        req.params
            .max_tokens
            .unwrap_or(DEFAULT_OUTPUT_ESTIMATE as u32),
    );
    let cost = (tokens_in as f64 * p_in + tokens_out as f64 * p_out) / 1e6;
    let key_id = key.map(|k| k.id.as_str());

    // Session budgets: calls and wall time per x-llmop-session.
    for b in budgets.iter().filter(|b| {
        b.scope == Scope::Session && (b.max_calls.is_some() || b.max_duration_ms.is_some())
    }) {
        let Some(subject) = b.scope.subject(context, key_id) else {
            continue;
        };
        let ttl = b.max_duration_ms.unwrap_or(86_400_000).max(3_600_000);
        let counter = format!("{}s:{}:{subject}", limits.prefix, b.id);
        match limits.session(&counter, ttl).await {
            Ok((calls, first)) => {
                let over_calls = b.max_calls.is_some_and(|m| calls > m);
                let over_time = b.max_duration_ms.is_some_and(|d| now - first > d);
                if over_calls || over_time {
                    let why = if over_calls {
                        format!(
                            "{} calls (max_calls = {})",
                            calls - 1,
                            b.max_calls.unwrap_or(0)
                        )
                    } else {
                        format!(
                            "{} s (max_duration_s = {})",
                            (now - first) / 1000,
                            b.max_duration_ms.unwrap_or(0) / 1000
                        )
                    };
                    metrics::counter!("llmop_session_budget_exceeded_total").increment(1);
                    return Err(GatewayError::Limited {
                        message: format!("session budget exceeded: `{subject}` has used {why}; hand the conversation to a person"),
                        code: codes::SESSION_BUDGET_EXCEEDED,
                        retry_after_s: None,
                        handoff: true,
                    });
                }
            }
            Err(e) => limits.on_counter_error(&e)?,
        }
    }

    // Key rate limits.
    if let Some(k) = key {
        for (what, per_minute, cost) in [
            ("rpm", k.scopes.rpm, 1),
            ("tpm", k.scopes.tpm, tokens_in + tokens_out),
        ] {
            let Some(per_minute) = per_minute else {
                continue;
            };
            let counter = format!("{}r:key:{}:{what}", limits.prefix, k.id);
            match limits.gcra(&counter, per_minute, cost).await {
                Ok(None) => {}
                Ok(Some(wait_ms)) => {
                    metrics::counter!("llmop_rate_limited_total", "limit" => what).increment(1);
                    return Err(GatewayError::Limited {
                        message: format!(
                            "rate limited: key `{}` allows {per_minute} {} per minute",
                            k.id,
                            if what == "rpm" { "requests" } else { "tokens" }
                        ),
                        code: codes::RATE_LIMITED,
                        retry_after_s: Some(wait_ms.div_ceil(1000)),
                        handoff: false,
                    });
                }
                Err(e) => limits.on_counter_error(&e)?,
            }
        }
    }

    // Money: every budget (and the key's daily budget) the call falls in.
    let mut lines = Vec::new();
    for b in budgets.iter().filter(|b| b.scope != Scope::Request) {
        if b.hard.is_none() && b.soft.is_none() {
            continue;
        }
        let Some(subject) = b.scope.subject(context, key_id) else {
            continue;
        };
        let (start, end) = b.window.bounds(now);
        lines.push(Line {
            key: format!("{}b:{}:{subject}:{start}", limits.prefix, b.id),
            hard: b.hard,
            soft: b.soft,
            subject,
            window: b.window,
            window_end_ms: end,
        });
    }
    if let Some(k) = key {
        if let Some(day) = k.scopes.budget_usd_day {
            let (start, end) = Window::Day.bounds(now);
            lines.push(Line {
                key: format!("{}b:key:{}:{start}", limits.prefix, k.id),
                hard: Some(day),
                soft: None,
                subject: format!("key:{}", k.id),
                window: Window::Day,
                window_end_ms: end,
            });
        }
    }
    if lines.is_empty() {
        return Ok(None);
    }
    match limits.reserve(&lines, cost).await {
        Ok(None) => Ok(Some(Admission {
            lines,
            reserved: cost,
            limits: limits.clone(),
        })),
        Ok(Some((i, used))) => {
            let line = &lines[i];
            metrics::counter!("llmop_budget_exceeded_total").increment(1);
            // A session's dollars run out like its calls: hand the loop to a person.
            let session = line.subject.starts_with("session:");
            Err(GatewayError::Limited {
                message: format!(
                    "budget exceeded: {} has used {} of its {} hard limit for this {} (this call would need ~{}); the window ends at {}",
                    line.subject,
                    usd(used),
                    usd(line.hard.unwrap_or(0.0)),
                    line.window.as_str(),
                    usd(cost),
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(line.window_end_ms.max(0) as u64)
                    )
                ),
                code: if session {
                    codes::SESSION_BUDGET_EXCEEDED
                } else {
                    codes::BUDGET_EXCEEDED
                },
                retry_after_s: Some(((line.window_end_ms - now).max(0) as u64).div_ceil(1000)),
                handoff: session,
            })
        }
        Err(e) => limits.on_counter_error(&e).map(|()| None),
    }
}

impl Admission {
    /// Replaces the reservation with the real cost (0 when unknown: an unpriced call
    /// cannot be counted in dollars), off the request path.
    pub fn settle(self, actual: Option<f64>) {
        let actual = actual.unwrap_or(0.0);
        tokio::spawn(async move {
            match self
                .limits
                .settle_lines(&self.lines, self.reserved, actual)
                .await
            {
                Ok(spends) => self.limits.alerts(&self.lines, &spends).await,
                Err(e) => {
                    metrics::counter!("llmop_counter_errors_total").increment(1);
                    tracing::warn!(error = %e, "cannot settle a budget reservation; it expires with its window");
                }
            }
        });
    }
}

/// Per-target quotas (`rpm`, `tpm` on a route target): `true` when the target may take
/// this call now.
pub async fn target_admits(limits: &Limits, route: &str, target: &Target, tokens: u64) -> bool {
    let Some(q) = target.quota else {
        return true;
    };
    for (what, per_minute, cost) in [("rpm", q.0, 1), ("tpm", q.1, tokens)] {
        let Some(per_minute) = per_minute else {
            continue;
        };
        let counter = format!(
            "{}r:target:{route}:{}/{}:{what}",
            limits.prefix,
            target.provider.name(),
            target.model
        );
        match limits.gcra(&counter, per_minute, cost).await {
            Ok(None) => {}
            Ok(Some(_)) => return false,
            Err(e) => {
                if limits.on_counter_error(&e).is_err() {
                    return false;
                }
            }
        }
    }
    true
}
