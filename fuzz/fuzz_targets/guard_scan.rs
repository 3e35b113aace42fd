//! Guardrail detectors on any text (prompts, answers, tool arguments and results are
//! all outside input): scanning never panics, every span is inside the text on char
//! boundaries, and redacting then pseudonymizing and restoring give back the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmop_guard::{pii::PiiSpec, transform, Guard, GuardSpec};
use std::sync::OnceLock;

fn guard() -> &'static Guard {
    static G: OnceLock<Guard> = OnceLock::new();
    G.get_or_init(|| {
        Guard::new(&GuardSpec {
            pii: Some(PiiSpec {
                kinds: vec![],
                locales: llmop_guard::pii::LOCALES.iter().map(|s| s.to_string()).collect(),
            }),
            ..GuardSpec::default()
        })
        .expect("the default spec")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let found = guard().scan(text);
    for f in &found {
        assert!(text.get(f.span.clone()).is_some(), "{f:?}");
        let _ = f.fingerprint(text);
    }
    let _ = transform::redact(text, &found);
    let mut vault = transform::Vault::default();
    let masked = transform::pseudonymize(text, &found, &mut vault);
    // A text that already held placeholder-shaped strings may restore differently;
    // one without any '<' must come back exactly.
    if !text.contains('<') {
        assert_eq!(vault.restore(&masked), text);
    }
});
