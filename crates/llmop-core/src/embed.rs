//! The provider-neutral embeddings model: what `/v1/embeddings` asks, and what any
//! provider answers.

use serde::{Deserialize, Serialize};

/// What to embed: texts, or token ids (OpenAI's `input` as arrays of integers, which
/// only OpenAI-format targets and the mock can take).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EmbedInput {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

impl EmbedInput {
    pub fn len(&self) -> usize {
        match self {
            EmbedInput::Texts(t) => t.len(),
            EmbedInput::Tokens(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    pub model: String,
    pub input: EmbedInput,
    /// Vector length asked for (OpenAI `dimensions`, Gemini `outputDimensionality`).
    pub dimensions: Option<u32>,
    pub user: Option<String>,
    /// The client asked for base64 vectors (`encoding_format: "base64"`, the OpenAI
    /// SDKs' default): how the gateway encodes its answer, not what it asks upstream.
    pub base64: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// The model that answered, as the provider named it.
    pub model: String,
    /// One vector per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Input tokens as the provider counted them; `None` when it says nothing (Gemini).
    pub input_tokens: Option<u64>,
}
