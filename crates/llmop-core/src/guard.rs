//! What a guardrail decided about one part of one call, as recorded: never the values
//! it caught, only their fingerprints (`sha256:<12 hex>…/<length>`).

use serde::{Deserialize, Serialize};

/// A verdict's fixed vocabulary (direction, part, action, outcome): borrowed from the
/// code when a call makes it, owned when a record is read back.
pub type Label = std::borrow::Cow<'static, str>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardVerdict {
    /// The configured rule's name.
    pub rule: String,
    /// `input` or `output`.
    pub direction: Label,
    /// `text`, `tool_arguments`, `tool_results`.
    pub part: Label,
    /// The rule's configured action: `block`, `redact`, `pseudonymize`, `flag`, `shadow`.
    pub action: Label,
    /// `pass` (ran, found nothing), `blocked`, `redacted`, `pseudonymized`, `flagged`,
    /// `would_block` (a `shadow` rule that found something), `error` (could not check:
    /// its `on_error` let the call through, or blocked it with `guardrail_error`).
    pub outcome: Label,
    /// Which detectors found something (`pii.email`, `secret.github_token`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detectors: Vec<String>,
    /// The findings' fingerprints, or what a check that is not about a value found
    /// (`length 1203 > 1000`); never a value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// Time spent scanning this direction of the call (shared by its rules), µs.
    pub latency_us: u64,
}
