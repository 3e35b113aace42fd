//! Inbound bodies from clients: OpenAI Chat Completions and Anthropic Messages. Whatever
//! the bytes, parsing returns Ok or a WireError, never panics; whatever parses can be
//! translated to every provider format and encoded back without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmop_wire::{anthropic, gemini, openai};

fuzz_target!(|data: &[u8]| {
    for parsed in [openai::parse_request(data), anthropic::parse_request(data)] {
        if let Ok(req) = parsed {
            let _ = openai::build_request(&req, "m", req.stream);
            let _ = anthropic::build_request(&req, "m", req.stream);
            let _ = gemini::build_request(&req, "gemini-3-pro-preview");
        }
    }
});
