//! Inbound bodies from clients: OpenAI Chat Completions, Anthropic Messages (and its
//! `count_tokens`), OpenAI Responses and embeddings. Whatever
//! the bytes, parsing returns Ok or a WireError, never panics; whatever parses can be
//! translated to every provider format and encoded back without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmop_wire::{anthropic, embeddings, gemini, openai, responses};

fuzz_target!(|data: &[u8]| {
    if let Ok((req, echo)) = responses::parse_request(data) {
        let _ = anthropic::build_request(&req, "m", req.stream);
        let _ = gemini::build_request(&req, "gemini-3-pro-preview");
        let _ = openai::build_request(&req, "m", req.stream);
        let _ = responses::check_calls(&req.messages);
        let resp = llmop_core::ChatResponse {
            id: String::new(),
            model: "m".into(),
            created: 0,
            parts: req.messages.iter().flat_map(|m| m.parts.clone()).collect(),
            finish_reason: llmop_core::FinishReason::Stop,
            usage: None,
            details: Default::default(),
        };
        let _ = responses::encode_response(&resp, "resp_f", &echo.fields);
    }
    if let Ok(req) = embeddings::parse_request(data) {
        let _ = embeddings::build_openai(&req, "m");
        let _ = embeddings::build_gemini(&req, "m");
    }
    if let Ok(req) = anthropic::parse_count_request(data) {
        let _ = anthropic::build_count_tokens(&req, "m");
    }
    for parsed in [openai::parse_request(data), anthropic::parse_request(data)] {
        if let Ok(req) = parsed {
            let _ = openai::build_request(&req, "m", req.stream);
            let _ = anthropic::build_request(&req, "m", req.stream);
            let _ = gemini::build_request(&req, "gemini-3-pro-preview");
        }
    }
});
