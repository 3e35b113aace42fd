//! A string that must never be printed: provider keys, client keys.
//!
//! Every secret llmop holds is also registered in a process-wide list, so that text
//! coming from outside (an upstream's error body that echoes the credential it was
//! sent, a database URL in a 500) can be [`scrub`]bed of it before it reaches a client,
//! a record or a log line.

use std::borrow::Cow;
use std::fmt;
use std::sync::RwLock;

/// What replaces a secret in scrubbed text.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not scrubbed from text: a 3-character "secret" would
/// redact ordinary words. Real keys and tokens are far longer.
const MIN_SCRUBBED_LEN: usize = 8;

static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds `value` to the secrets [`scrub`] removes from text (the admin token, a key read
/// from a file). Idempotent.
pub fn register(value: &str) {
    if value.len() < MIN_SCRUBBED_LEN {
        return;
    }
    if let Ok(mut known) = KNOWN.write() {
        if !known.iter().any(|k| k == value) {
            known.push(value.to_string());
            // Longest first, so that a secret containing another is removed whole.
            known.sort_by_key(|k| std::cmp::Reverse(k.len()));
        }
    }
}

/// `text` with every registered secret replaced by [`REDACTED`]. Borrowed (no copy)
/// when it holds none, which is the common case.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let Ok(known) = KNOWN.read() else {
        return Cow::Borrowed(text);
    };
    let mut out: Cow<'_, str> = Cow::Borrowed(text);
    for k in known.iter() {
        if out.contains(k.as_str()) {
            out = Cow::Owned(out.replace(k.as_str(), REDACTED));
        }
    }
    out
}

/// Holds a secret. `Debug` and `Display` print a fixed mask, so a secret cannot leak
/// through a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Holds `value` and registers it for [`scrub`].
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register(&value);
        Secret(value)
    }
    /// The secret itself, for the one place that sends it (an upstream header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn never_prints() {
        let s = Secret::new("sk-live-123");
        assert!(!format!("{s:?} {s}").contains("sk-live"));
        assert_eq!(s.expose(), "sk-live-123");
    }

    #[test]
    fn scrubs_registered_secrets_from_text() {
        let _s = Secret::new("sk-test-scrub-0123456789");
        register("postgres-pass-xyz");
        register("short");
        let t = "Incorrect API key provided: sk-test-scrub-0123456789. db=postgres://u:postgres-pass-xyz@h";
        let out = scrub(t);
        assert!(!out.contains("sk-test-scrub"), "{out}");
        assert!(!out.contains("postgres-pass-xyz"), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 2);
        assert!(matches!(
            scrub("nothing secret here, short"),
            Cow::Borrowed(_)
        ));
    }
}
