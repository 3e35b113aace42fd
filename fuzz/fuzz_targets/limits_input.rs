//! What the cost-control layer reads from outside: budget scopes and windows (config
//! and admin API), `--by` groups, presented API keys, and admin budget bodies. None may
//! panic; valid ones round-trip through their checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(scope) = llmop_core::budget::Scope::parse(text) {
        let ctx = llmop_core::context::RequestContext::default();
        let _ = scope.subject(&ctx, Some(text));
        // Its canonical text reads back to the same scope.
        assert_eq!(llmop_core::budget::Scope::parse(&scope.to_string()), Ok(scope));
    }
    if let Some(w) = llmop_core::budget::Window::parse(text) {
        let (start, end) = w.bounds(i64::from_le_bytes([data.len() as u8, 0, 0, 0, 0, 0, 0, 0]) * 1_000_000_000);
        assert!(start <= end);
    }
    let _ = llmop_store::CostBy::parse(text);
    let _ = llmop_store::key_id_of(text);
    if let Ok(spec) = serde_json::from_str::<llmop_core::config::BudgetConfig>(text) {
        let _ = llmop_core::budget::check(&spec);
    }
});
