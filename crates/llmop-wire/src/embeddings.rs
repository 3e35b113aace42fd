//! Embeddings: OpenAI's `POST /v1/embeddings` (spoken by clients and by `openai`-kind
//! providers) and Gemini's `batchEmbedContents`.
//!
//! Reference: the OpenAI API reference for embeddings (`input` as a string, an array of
//! strings, an array of token ids or an array of such arrays; `dimensions`;
//! `encoding_format` `float` or `base64`, the latter little-endian `f32`s) and Gemini's
//! `models.batchEmbedContents` (`requests[].content.parts[].text`,
//! `outputDimensionality`; answers `embeddings[].values`, without token counts).

use crate::{from_json, WireError};
use base64::Engine;
use llmop_core::embed::{EmbedInput, EmbedRequest, Embeddings};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Most inputs in one request, as OpenAI allows.
pub const MAX_INPUTS: usize = 2048;

#[derive(Deserialize)]
struct InRequest {
    model: String,
    input: InInput,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    ManyTokens(Vec<Vec<u32>>),
}

/// Parses an inbound embeddings body.
pub fn parse_request(body: &[u8]) -> Result<EmbedRequest, WireError> {
    let r: InRequest = from_json(body).map_err(|e| match e.param.as_deref() {
        // The untagged input's own message says nothing useful.
        None if e.message.contains("InInput") || e.message.contains("untagged") => WireError::new(
            "must be a string, an array of strings, an array of token ids, or an array of arrays of token ids",
            Some("input".into()),
        ),
        _ => e,
    })?;
    if r.model.is_empty() {
        return Err(WireError::new("must not be empty", Some("model".into())));
    }
    if let Some(k) = r.extra.iter().find(|(_, v)| !v.is_null()).map(|(k, _)| k) {
        return Err(WireError::new(
            "is not a field of the embeddings API",
            Some(k.clone()),
        ));
    }
    let input = match r.input {
        InInput::One(s) => EmbedInput::Texts(vec![s]),
        InInput::Many(v) => EmbedInput::Texts(v),
        InInput::Tokens(t) => EmbedInput::Tokens(vec![t]),
        InInput::ManyTokens(v) => EmbedInput::Tokens(v),
    };
    if input.is_empty() {
        return Err(WireError::new("must not be empty", Some("input".into())));
    }
    if input.len() > MAX_INPUTS {
        return Err(WireError::new(
            format!("at most {MAX_INPUTS} inputs per request"),
            Some("input".into()),
        ));
    }
    let empty = match &input {
        EmbedInput::Texts(t) => t.iter().position(String::is_empty),
        EmbedInput::Tokens(t) => t.iter().position(Vec::is_empty),
    };
    if let Some(i) = empty {
        return Err(WireError::new(
            "an input must not be empty",
            Some(format!("input[{i}]")),
        ));
    }
    if r.dimensions == Some(0) {
        return Err(WireError::new(
            "must be at least 1",
            Some("dimensions".into()),
        ));
    }
    let base64 = match r.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(WireError::new(
                format!("unknown encoding_format `{other}` (expected float or base64)"),
                Some("encoding_format".into()),
            ))
        }
    };
    Ok(EmbedRequest {
        model: r.model,
        input,
        dimensions: r.dimensions,
        user: r.user,
        base64,
    })
}

/// The body for an OpenAI-format provider (floats: the gateway encodes for its client).
pub fn build_openai(req: &EmbedRequest, model: &str) -> Vec<u8> {
    let input = match &req.input {
        EmbedInput::Texts(t) => json!(t),
        EmbedInput::Tokens(t) => json!(t),
    };
    let mut body = json!({"model": model, "input": input, "encoding_format": "float"});
    if let Some(d) = req.dimensions {
        body["dimensions"] = json!(d);
    }
    if let Some(u) = &req.user {
        body["user"] = json!(u);
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

#[derive(Deserialize)]
struct InOpenAi {
    #[serde(default)]
    model: String,
    data: Vec<InDatum>,
    #[serde(default)]
    usage: Option<InUsage>,
}

#[derive(Deserialize)]
struct InDatum {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct InUsage {
    #[serde(default)]
    prompt_tokens: u64,
}

/// Parses an OpenAI-format answer for `n` inputs: one vector per input, put in input
/// order by `index`.
pub fn parse_openai(body: &[u8], n: usize) -> Result<Embeddings, WireError> {
    let r: InOpenAi = from_json(body)?;
    if r.data.len() != n {
        return Err(WireError::new(
            format!("{} embeddings for {n} inputs", r.data.len()),
            Some("data".into()),
        ));
    }
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; n];
    for (i, d) in r.data.into_iter().enumerate() {
        let at = d.index.unwrap_or(i);
        match vectors.get_mut(at) {
            Some(slot @ None) => *slot = Some(d.embedding),
            _ => {
                return Err(WireError::new(
                    format!("index {at} is out of range or repeated"),
                    Some(format!("data[{i}].index")),
                ))
            }
        }
    }
    Ok(Embeddings {
        model: r.model,
        vectors: vectors.into_iter().flatten().collect(),
        input_tokens: r.usage.map(|u| u.prompt_tokens),
    })
}

/// Most inputs Gemini takes in one `batchEmbedContents` call: a larger request is sent
/// as several batches.
pub const GEMINI_BATCH: usize = 100;

/// Gemini's path for a batch of embeddings.
pub fn gemini_path(model: &str) -> String {
    format!("/v1beta/models/{model}:batchEmbedContents")
}

/// The bodies for Gemini, one per batch of at most [`GEMINI_BATCH`] inputs: texts only
/// (token ids have no Gemini form).
pub fn build_gemini(req: &EmbedRequest, model: &str) -> Option<Vec<Vec<u8>>> {
    let EmbedInput::Texts(texts) = &req.input else {
        return None;
    };
    Some(
        texts
            .chunks(GEMINI_BATCH)
            .map(|batch| gemini_batch(batch, req.dimensions, model))
            .collect(),
    )
}

fn gemini_batch(texts: &[String], dimensions: Option<u32>, model: &str) -> Vec<u8> {
    let requests: Vec<Value> = texts
        .iter()
        .map(|t| {
            let mut r =
                json!({"model": format!("models/{model}"), "content": {"parts": [{"text": t}]}});
            if let Some(d) = dimensions {
                r["outputDimensionality"] = json!(d);
            }
            r
        })
        .collect();
    serde_json::to_vec(&json!({ "requests": requests })).unwrap_or_default()
}

#[derive(Deserialize)]
struct InGemini {
    embeddings: Vec<InValues>,
}

#[derive(Deserialize)]
struct InValues {
    values: Vec<f32>,
}

pub fn parse_gemini(body: &[u8], n: usize, model: &str) -> Result<Embeddings, WireError> {
    let r: InGemini = from_json(body)?;
    if r.embeddings.len() != n {
        return Err(WireError::new(
            format!("{} embeddings for {n} inputs", r.embeddings.len()),
            Some("embeddings".into()),
        ));
    }
    Ok(Embeddings {
        model: model.to_string(),
        vectors: r.embeddings.into_iter().map(|e| e.values).collect(),
        input_tokens: None,
    })
}

/// A vector as base64 of its little-endian `f32`s.
pub fn to_base64(v: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Encodes an answer for an OpenAI-format client. `input_tokens` is what the gateway
/// bills (the provider's count, else its estimate).
pub fn encode_response(e: &Embeddings, model: &str, input_tokens: u64, base64: bool) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        object: &'static str,
        data: Vec<Datum<'a>>,
        model: &'a str,
        usage: Usage,
    }
    #[derive(Serialize)]
    struct Datum<'a> {
        object: &'static str,
        index: usize,
        embedding: Vector<'a>,
    }
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Vector<'a> {
        Float(&'a [f32]),
        Base64(String),
    }
    #[derive(Serialize)]
    struct Usage {
        prompt_tokens: u64,
        total_tokens: u64,
    }
    let body = Body {
        object: "list",
        data: e
            .vectors
            .iter()
            .enumerate()
            .map(|(index, v)| Datum {
                object: "embedding",
                index,
                embedding: if base64 {
                    Vector::Base64(to_base64(v))
                } else {
                    Vector::Float(v)
                },
            })
            .collect(),
        model: if e.model.is_empty() { model } else { &e.model },
        usage: Usage {
            prompt_tokens: input_tokens,
            total_tokens: input_tokens,
        },
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_input_shape() {
        for (body, n, tokens) in [
            (r#"{"model":"m","input":"a"}"#, 1, false),
            (r#"{"model":"m","input":["a","b"]}"#, 2, false),
            (r#"{"model":"m","input":[1,2,3]}"#, 1, true),
            (r#"{"model":"m","input":[[1],[2,3]]}"#, 2, true),
        ] {
            let r = parse_request(body.as_bytes()).unwrap();
            assert_eq!(r.input.len(), n, "{body}");
            assert_eq!(matches!(r.input, EmbedInput::Tokens(_)), tokens);
        }
        let r = parse_request(
            br#"{"model":"m","input":"a","dimensions":8,"encoding_format":"base64"}"#,
        )
        .unwrap();
        assert_eq!(r.dimensions, Some(8));
        assert!(r.base64);
        for (body, param) in [
            (r#"{"model":"m","input":[]}"#, "input"),
            (r#"{"model":"m","input":["a",""]}"#, "input[1]"),
            (r#"{"model":"m","input":{"x":1}}"#, "input"),
            (r#"{"model":"m","input":"a","dimensions":0}"#, "dimensions"),
            (
                r#"{"model":"m","input":"a","encoding_format":"hex"}"#,
                "encoding_format",
            ),
            (r#"{"model":"m","input":"a","nope":1}"#, "nope"),
        ] {
            let e = parse_request(body.as_bytes()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e}");
        }
    }

    #[test]
    fn openai_answers_come_back_in_input_order() {
        // From the API reference's example, with two inputs answered out of order.
        let body = br#"{"object":"list","data":[
            {"object":"embedding","embedding":[0.5,0.25],"index":1},
            {"object":"embedding","embedding":[0.0023064255,-0.009327292],"index":0}],
            "model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        let e = parse_openai(body, 2).unwrap();
        assert_eq!(e.vectors[1], vec![0.5, 0.25]);
        assert_eq!(e.input_tokens, Some(8));
        assert!(parse_openai(body, 3).is_err());
        let dup = br#"{"data":[{"embedding":[1],"index":0},{"embedding":[2],"index":0}]}"#;
        assert!(parse_openai(dup, 2).is_err());
    }

    #[test]
    fn gemini_batch_round_trip() {
        let req = parse_request(br#"{"model":"m","input":["a","b"],"dimensions":4}"#).unwrap();
        let body: Value =
            serde_json::from_slice(&build_gemini(&req, "text-embedding-004").unwrap()[0]).unwrap();
        assert_eq!(body["requests"][1]["content"]["parts"][0]["text"], "b");
        assert_eq!(body["requests"][0]["model"], "models/text-embedding-004");
        assert_eq!(body["requests"][0]["outputDimensionality"], 4);
        let e = parse_gemini(
            br#"{"embeddings":[{"values":[1,2]},{"values":[3,4]}]}"#,
            2,
            "g",
        )
        .unwrap();
        assert_eq!(e.vectors[1], vec![3.0, 4.0]);
        assert_eq!(e.input_tokens, None);
        let tokens = parse_request(br#"{"model":"m","input":[1,2]}"#).unwrap();
        assert!(build_gemini(&tokens, "g").is_none());
        // 250 inputs go as batches of 100, 100 and 50.
        let many: Vec<String> = (0..250).map(|i| format!("t{i}")).collect();
        let big =
            parse_request(&serde_json::to_vec(&json!({"model": "m", "input": many})).unwrap())
                .unwrap();
        let sizes: Vec<usize> = build_gemini(&big, "g")
            .unwrap()
            .iter()
            .map(|b| {
                serde_json::from_slice::<Value>(b).unwrap()["requests"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let e = Embeddings {
            model: "m".into(),
            vectors: vec![vec![1.0, -2.5]],
            input_tokens: Some(1),
        };
        let v: Value = serde_json::from_slice(&encode_response(&e, "m", 1, true)).unwrap();
        let b = base64::engine::general_purpose::STANDARD
            .decode(v["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(f32::from_le_bytes(b[0..4].try_into().unwrap()), 1.0);
        assert_eq!(f32::from_le_bytes(b[4..8].try_into().unwrap()), -2.5);
        let v: Value = serde_json::from_slice(&encode_response(&e, "m", 1, false)).unwrap();
        assert_eq!(v["data"][0]["embedding"][1], -2.5);
        assert_eq!(v["usage"]["prompt_tokens"], 1);
    }
}
