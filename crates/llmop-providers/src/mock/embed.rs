//! The mock's embeddings: deterministic vectors from the text itself (feature hashing
//! of its tokens, signed, L2-normalised), so texts that share words are close and the
//! same text always gets the same vector, for a given seed and model.

use crate::tokenizer;
use llmop_core::embed::{EmbedInput, EmbedRequest, Embeddings};
use std::hash::Hasher;

/// The vector length when the request names no `dimensions` (OpenAI's
/// `text-embedding-3-small`).
pub const DEFAULT_DIMENSIONS: u32 = 1536;
/// The longest vector the mock makes.
pub const MAX_DIMENSIONS: u32 = 3072;

fn vector(seed: u64, model: &str, tokens: impl Iterator<Item = u64>, dims: usize) -> Vec<f32> {
    let mut v = vec![0f32; dims];
    for t in tokens {
        let mut h = fnv::FnvHasher::default();
        h.write_u64(seed);
        h.write(model.as_bytes());
        h.write_u64(t);
        let x = h.finish();
        let sign = if x >> 63 == 0 { 1.0 } else { -1.0 };
        v[(x % dims as u64) as usize] += sign;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v
}

fn text_token(piece: &str) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(piece.trim().to_lowercase().as_bytes());
    h.finish()
}

/// Vectors for every input, and the input tokens counted with the mock's tokenizer.
pub fn embed(seed: u64, model: &str, req: &EmbedRequest) -> Embeddings {
    // At most OpenAI's largest (3,072): a request cannot make the mock build vectors
    // of any size.
    let dims = req
        .dimensions
        .unwrap_or(DEFAULT_DIMENSIONS)
        .clamp(1, MAX_DIMENSIONS) as usize;
    let (vectors, tokens) = match &req.input {
        EmbedInput::Texts(texts) => {
            let mut n = 0;
            let vs = texts
                .iter()
                .map(|t| {
                    let pieces = tokenizer::pieces(t);
                    n += pieces.len() as u64;
                    vector(seed, model, pieces.iter().map(|p| text_token(p)), dims)
                })
                .collect();
            (vs, n)
        }
        EmbedInput::Tokens(ids) => (
            ids.iter()
                .map(|t| vector(seed, model, t.iter().map(|&i| u64::from(i)), dims))
                .collect(),
            ids.iter().map(|t| t.len() as u64).sum(),
        ),
    };
    Embeddings {
        model: model.to_string(),
        vectors,
        input_tokens: Some(tokens),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(texts: &[&str], dims: Option<u32>) -> EmbedRequest {
        EmbedRequest {
            model: "m".into(),
            input: EmbedInput::Texts(texts.iter().map(|s| s.to_string()).collect()),
            dimensions: dims,
            user: None,
            base64: false,
        }
    }

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn deterministic_normalised_and_meaningful() {
        let r = req(
            &[
                "the cat sat on the mat",
                "the cat sat on a mat",
                "quarterly tax filing deadline",
            ],
            None,
        );
        let a = embed(0, "m", &r);
        let b = embed(0, "m", &r);
        assert_eq!(a, b);
        assert_eq!(a.vectors[0].len(), 1536);
        assert!((cos(&a.vectors[0], &a.vectors[0]) - 1.0).abs() < 1e-5);
        assert!(cos(&a.vectors[0], &a.vectors[1]) > cos(&a.vectors[0], &a.vectors[2]));
        assert!(a.input_tokens.unwrap() > 10);
        assert_eq!(embed(0, "m", &req(&["x"], Some(8))).vectors[0].len(), 8);
        // Another model's vectors are not the same space.
        assert_ne!(embed(0, "other", &r).vectors[0], a.vectors[0]);
    }
}
