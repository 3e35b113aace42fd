//! The guard stages' glue: a call's guardrail state (its rules, the pseudonym vault and
//! what the rules found, for the record) and the one mapping of a guardrail's stop to
//! the HTTP error envelope. The rules themselves are `llmop_guard::policy`'s.

use llmop_core::codes;
use llmop_core::GatewayError;
use llmop_guard::policy::{Applicable, Book, Policy, Stop};
use llmop_guard::transform::Vault;
use std::sync::Arc;

/// One call's guardrails, from its input stage to its record. The vault holds the
/// values behind placeholders: it lives as long as the call and is never recorded.
pub struct GuardCall {
    pub policy: Arc<Policy>,
    pub applicable: Applicable,
    pub vault: Vault,
    pub book: Book,
}

impl std::fmt::Debug for GuardCall {
    /// Never the values (the vault and book print counts only).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardCall")
            .field("vault", &self.vault)
            .field("book", &self.book)
            .finish()
    }
}

impl GuardCall {
    pub fn new(policy: Arc<Policy>, applicable: Applicable) -> GuardCall {
        GuardCall {
            policy,
            applicable,
            vault: Vault::default(),
            book: Book::default(),
        }
    }

    /// Whether answers of this call go through the output guard: output rules,
    /// disclaimers, or placeholders to restore.
    pub fn guards_output(&self) -> bool {
        self.applicable.has_output() || !self.vault.is_empty()
    }
}

/// A guardrail's stop as the client sees it: 422 `guardrail_blocked` naming the rule and
/// the detectors (never the value), or 422 `guardrail_error` for a fail-closed rule that
/// could not check the call.
pub fn stop_error(request_id: &str, stop: &Stop) -> GatewayError {
    let code = match stop {
        Stop::Blocked { .. } => codes::GUARDRAIL_BLOCKED,
        Stop::Failed { .. } => codes::GUARDRAIL_ERROR,
    };
    let rule = match stop {
        Stop::Blocked { rule, .. } | Stop::Failed { rule, .. } => rule.as_str(),
    };
    tracing::info!(request_id, rule, code, "guardrail stopped the call");
    GatewayError::Unprocessable {
        message: stop.to_string(),
        code,
    }
}

/// Counts a call's guardrails: `llmop_guardrail_checks_total{direction}` once per
/// direction its rules checked, and `llmop_guardrail_verdicts_total{rule, direction,
/// outcome}` for each verdict other than `pass` (the pass count of a rule is its
/// direction's checks less these; counting it per call cost more than the rest).
pub fn count(book: &Book) {
    let (mut input, mut output) = (false, false);
    for v in &book.verdicts {
        match v.direction.as_str() {
            "input" => input = true,
            _ => output = true,
        }
        if v.outcome == "pass" {
            continue;
        }
        metrics::counter!(
            "llmop_guardrail_verdicts_total",
            "rule" => v.rule.clone(),
            "direction" => v.direction.clone(),
            "outcome" => v.outcome.clone()
        )
        .increment(1);
    }
    if input {
        metrics::counter!("llmop_guardrail_checks_total", "direction" => "input").increment(1);
    }
    if output {
        metrics::counter!("llmop_guardrail_checks_total", "direction" => "output").increment(1);
    }
}
