//! What upstreams send back: whole responses, error bodies, raw SSE bytes through the
//! event-stream parser (split into reads at a point the input chooses), and SSE `data`
//! payloads fed through each stream decoder (a payload per line, so one input exercises
//! a sequence).
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmop_wire::{anthropic, gemini, openai};

fuzz_target!(|data: &[u8]| {
    let _ = openai::parse_response(data);
    let _ = anthropic::parse_response(data);
    let _ = gemini::parse_response(data);
    let _ = llmop_wire::responses::parse_response(data);
    let _ = llmop_wire::embeddings::parse_openai(data, 3);
    let _ = llmop_wire::embeddings::parse_gemini(data, 3, "m");
    let _ = anthropic::parse_count_tokens(data);
    let _ = openai::parse_error_message(data);
    let _ = anthropic::parse_error_message(data);
    let _ = gemini::parse_error_message(data);
    let _ = gemini::error_info(data);
    let _ = openai::error_code(data);
    let mut parser = llmop_wire::sse::SseParser::new();
    let cut = data.first().map_or(0, |&b| b as usize).min(data.len());
    for part in [&data[..cut], &data[cut..]] {
        parser.push(part);
        while let Ok(Some(_)) = parser.next_event() {}
    }
    let _ = parser.finish();
    if let Ok(text) = std::str::from_utf8(data) {
        let mut out = Vec::new();
        let (mut o, mut a, mut g, mut r) = (
            openai::StreamDecoder::new(),
            anthropic::StreamDecoder::new(),
            gemini::StreamDecoder::new(),
            llmop_wire::responses::StreamDecoder::new(),
        );
        for line in text.lines() {
            let _ = o.decode(line, &mut out);
            let _ = r.decode(line, &mut out);
            let _ = a.decode(line, &mut out);
            let _ = g.decode(line, &mut out);
        }
        let _ = g.finish(&mut out);
        // Whatever was decoded (reasoning parts included) folds into an answer that
        // re-encodes for both client formats and builds a request for every provider.
        let mut acc = llmop_core::StreamAccumulator::default();
        for ev in &out {
            acc.push(ev);
        }
        let answer = acc.finish(0);
        let _ = openai::encode_response(&answer);
        let _ = anthropic::encode_response(&answer);
        let _ = llmop_wire::responses::encode_response(&answer, "resp_f", &Default::default());
        let mut req = llmop_core::ChatRequest::new(
            "m",
            vec![llmop_core::Message {
                role: llmop_core::Role::Assistant,
                parts: answer.parts,
                name: None,
            }],
            llmop_core::WireFormat::Anthropic,
        );
        let _ = anthropic::build_request(&req, "m", false);
        let _ = gemini::build_request(&req, "gemini-3-pro-preview");
        req.origin = llmop_core::WireFormat::OpenAi;
        let _ = openai::build_request(&req, "m", false);
        let _ = llmop_wire::responses::build_request(&req, "m", true);
        let mut re = llmop_wire::responses::StreamEncoder::new("resp_f".into(), "m".into(), Default::default());
        let mut rbuf = bytes::BytesMut::new();
        for ev in &out {
            re.encode(ev, &mut rbuf);
        }
        re.finish(&mut rbuf);
        let mut buf = bytes::BytesMut::new();
        let mut oe = openai::StreamEncoder::new("id".into(), "m".into(), true);
        let mut ae = anthropic::StreamEncoder::new("id".into(), "m".into());
        for ev in &out {
            oe.encode(ev, &mut buf);
            ae.encode(ev, &mut buf);
        }
        oe.finish(&mut buf);
        ae.finish(&mut buf);
    }
});
