//! What comes from outside to the model-based guardrails: a remote check service's
//! answer (llmop's protocol and OpenAI's moderation API) and any text the language
//! allow-list reads. Reading never panics, and what is recorded of an answer (its
//! evidence) stays bounded whatever the service sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmop_core::config::RemoteProtocol;
use llmop_guard::language::Languages;
use std::sync::OnceLock;

fn english() -> &'static Languages {
    static L: OnceLock<Languages> = OnceLock::new();
    L.get_or_init(|| Languages::new(&["en".into()], 0.5).expect("en"))
}

fuzz_target!(|data: &[u8]| {
    for p in [RemoteProtocol::Llmop, RemoteProtocol::OpenaiModeration] {
        for only in [&[][..], &["violence".to_string()][..]] {
            if let Ok(f) = llmop_guard::remote::read_answer(p, data, only) {
                assert!(f.evidence.chars().count() <= 8 * 80, "{}", f.evidence.len());
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = english().foreign(text);
    }
});
