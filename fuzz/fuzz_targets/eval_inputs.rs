//! Eval inputs from outside: dataset files (JSON Lines, CSV) and eval files. Any text is
//! items or a list of problems, an eval file or a list of problems; what parsed hashes
//! and diffs without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for name in ["d.jsonl", "d.csv"] {
            if let Ok(items) = llmop_eval::dataset::parse_file(name, text) {
                let _ = llmop_eval::dataset::content_hash(&items);
                let _ = llmop_eval::dataset::diff(&items, &items[..items.len() / 2]);
                for i in &items {
                    let _ = i.input_hash();
                }
            }
        }
        if let Ok(f) = llmop_eval::spec::EvalFile::parse(text) {
            let _ = f.evals_hash();
            let _ = f.evaluators_hash();
        }
    }
});
