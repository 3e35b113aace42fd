//! Feature files: any text is a valid feature or a list of problems; a valid one
//! renders (or refuses its variables) and hashes without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(spec) = llmop_features::FeatureSpec::parse(text) {
            let _ = spec.content_hash();
            let _ = spec.render(&serde_json::Map::new());
            let _ = llmop_features::diff(&spec, &spec, "a", "b");
        }
    }
});
