//! The config file: any text is either a valid config or a list of errors that point at
//! a line; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = llmop_core::config::Config::parse(text, std::path::Path::new("fuzz.toml"));
    }
});
