//! What a guardrail decided about one part of one call, as recorded: never the values
//! it caught, only their fingerprints (`sha256:<12 hex>…/<length>`).

use serde::{Deserialize, Serialize};

/// A verdict's fixed vocabulary (direction, part, action, outcome): borrowed from the
/// code when a call makes it, owned when a record is read back.
pub type Label = std::borrow::Cow<'static, str>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardVerdict {
    /// The configured rule's name (shared with the policy: a verdict made per call
    /// copies no string).
    pub rule: std::sync::Arc<str>,
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
    pub detectors: Vec<Label>,
    /// The findings' fingerprints, or what a check that is not about a value found
    /// (`length 1203 > 1000`); never a value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// Time spent scanning this direction of the call (shared by its rules), µs.
    pub latency_us: u64,
}

/// A call's verdicts as the JSON text its record stores: the same text as
/// `serde_json::to_string(verdicts)` (a property test checks), written field by field.
///
/// Written by hand because serde's path cost about 2.1k instructions per verdict (a
/// call with the default rule set has four), a tenth of what the guardrails add to a
/// call (callgrind, `docs/benchmarks.md`): every key and label went through the
/// serializer's per-byte escaping and a write per piece, where here the keys are
/// constant text and a value is copied whole once a scan shows it needs no escape.
pub fn verdicts_json(verdicts: &[GuardVerdict]) -> String {
    let mut out = String::with_capacity(verdicts.len() * 160 + 2);
    out.push('[');
    for (i, v) in verdicts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"rule\":");
        push_json_str(&mut out, &v.rule);
        out.push_str(",\"direction\":");
        push_label(&mut out, &v.direction);
        out.push_str(",\"part\":");
        push_label(&mut out, &v.part);
        out.push_str(",\"action\":");
        push_label(&mut out, &v.action);
        out.push_str(",\"outcome\":");
        push_label(&mut out, &v.outcome);
        push_list(&mut out, ",\"detectors\":[", &v.detectors, push_label);
        push_list(&mut out, ",\"evidence\":[", &v.evidence, |o, s: &String| {
            push_json_str(o, s)
        });
        out.push_str(",\"latency_us\":");
        out.push_str(itoa::Buffer::new().format(v.latency_us));
        out.push('}');
    }
    out.push(']');
    out
}

/// `key` (which opens the array) and the items of a non-empty list, each written by `push`.
fn push_list<T>(out: &mut String, key: &str, list: &[T], push: impl Fn(&mut String, &T)) {
    if list.is_empty() {
        return;
    }
    out.push_str(key);
    for (j, item) in list.iter().enumerate() {
        if j > 0 {
            out.push(',');
        }
        push(out, item);
    }
    out.push(']');
}

/// A label as a JSON string. A borrowed label is the code's own vocabulary (`input`,
/// `tool_arguments`, `pii.email`): identifiers with nothing to escape, copied without
/// looking (a test checks every one the code has); an owned one (read back from a
/// record, or named at run time) goes through [`push_json_str`].
fn push_label(out: &mut String, s: &Label) {
    match s {
        Label::Borrowed(b) => {
            debug_assert!(is_plain(b), "a borrowed label needing an escape: {b:?}");
            out.push('"');
            out.push_str(b);
            out.push('"');
        }
        Label::Owned(o) => push_json_str(out, o),
    }
}

/// Whether `s` goes into a JSON string as it is.
pub fn is_plain(s: &str) -> bool {
    s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// `s` as a JSON string: copied whole when nothing in it needs an escape (the common
/// case: labels, rule names, fingerprints), else written by serde_json.
fn push_json_str(out: &mut String, s: &str) {
    if is_plain(s) {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // Serialising a string into a String cannot fail.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn label() -> impl Strategy<Value = Label> {
        prop_oneof![
            Just(Label::Borrowed("input")),
            Just(Label::Borrowed("tool_arguments")),
            ".{0,12}".prop_map(Label::Owned),
        ]
    }

    proptest! {
        // The hand-written text is serde_json's, byte for byte, whatever the strings
        // hold (quotes, backslashes, control characters, non-ASCII).
        #[test]
        fn verdicts_json_is_serde_jsons_text(
            verdicts in proptest::collection::vec(
                (
                    "\\PC{0,12}|[\"\\\\\u{0}-\u{1f}a-z]{0,8}",
                    label(),
                    label(),
                    label(),
                    label(),
                    proptest::collection::vec(".{0,10}", 0..3),
                    proptest::collection::vec("[a-z\"\\\\\u{7}\u{e9}]{0,10}", 0..3),
                    any::<u64>(),
                )
                    .prop_map(|(rule, direction, part, action, outcome, detectors, evidence, latency_us)| {
                        let rule = rule.as_str().into();
                        let detectors = detectors.into_iter().map(Label::Owned).collect();
                        GuardVerdict { rule, direction, part, action, outcome, detectors, evidence, latency_us }
                    }),
                0..4,
            )
        ) {
            let want = serde_json::to_string(&verdicts).unwrap();
            prop_assert_eq!(verdicts_json(&verdicts), want);
        }
    }
}
