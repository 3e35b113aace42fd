//! The optional model-based detector: an ONNX sequence classifier the operator supplies
//! (a prompt-injection or toxicity model exported from Hugging Face, say), run in
//! process by tract, a pure-Rust ONNX runtime, with the model's own `tokenizer.json`.
//!
//! The model's inputs are named as Hugging Face exports name them (`input_ids`, and
//! optionally `attention_mask` and `token_type_ids`, int64 `[1, tokens]`); its first
//! output is one logit per configured label (`[1, labels]`). A text longer than
//! `max_tokens` is read in windows that overlap by `stride` tokens and its most flagged
//! window decides, so an instruction hidden at the end of a long tool result is read.
//!
//! Classifying is CPU work of milliseconds: the gateway runs it on the blocking pool,
//! at most `concurrency` texts at once, and remembers the verdict of a text it has seen
//! (a system prompt sent with every call is classified once).

use llmop_core::config::ClassifierConfig;
use std::path::Path;
use std::sync::Arc;
use tokenizers::{Tokenizer, TruncationDirection};
use tract_onnx::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Ids,
    Mask,
    TypeIds,
}

/// What the classifier made of a text: its most flagged window's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The label with the highest probability in that window.
    pub label: String,
    /// The flagged labels' probability in that window (the highest over windows).
    pub score: f32,
    pub flagged: bool,
}

pub struct Classifier {
    name: String,
    plan: Arc<TypedRunnableModel>,
    inputs: Vec<Input>,
    tokenizer: Tokenizer,
    labels: Vec<String>,
    flag: Vec<usize>,
    threshold: f32,
    /// Tokens of text per window (`max_tokens` less the special tokens).
    window: usize,
    stride: usize,
    max_windows: usize,
    seen: quick_cache::sync::Cache<(u64, usize), Verdict>,
    seed: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .finish()
    }
}

/// Texts whose verdicts are remembered, per classifier.
const SEEN: usize = 8192;

impl Classifier {
    /// Loads the model and tokenizer (paths relative to `dir`) and checks them on a
    /// probe text: the model's inputs and its output's width against `labels`.
    pub fn load(name: &str, cfg: &ClassifierConfig, dir: &Path) -> Result<Classifier, String> {
        let model_path = dir.join(&cfg.model);
        let tok_path = dir.join(&cfg.tokenizer);
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| format!("cannot read tokenizer {}: {e}", tok_path.display()))?;
        // Windows are cut here (see `run`); a tokenizer.json's own truncation would drop
        // the rest of the text, and its padding would pad every window.
        tokenizer
            .with_truncation(None)
            .map_err(|e| format!("tokenizer {}: {e}", tok_path.display()))?;
        tokenizer.with_padding(None);
        let special = tokenizer
            .get_post_processor()
            .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, false));
        if cfg.max_tokens <= special + cfg.stride {
            return Err(format!(
                "max_tokens = {} leaves no room beside {special} special tokens and stride = {}",
                cfg.max_tokens, cfg.stride
            ));
        }
        let model = tract_onnx::onnx()
            .model_for_path(&model_path)
            .map_err(|e| format!("cannot load ONNX model {}: {e}", model_path.display()))?;
        let mut inputs = Vec::new();
        for outlet in model
            .input_outlets()
            .map_err(|e| format!("model {}: {e}", model_path.display()))?
        {
            let input_name = &model.node(outlet.node).name;
            inputs.push(match input_name.as_str() {
                "input_ids" => Input::Ids,
                "attention_mask" => Input::Mask,
                "token_type_ids" => Input::TypeIds,
                other => {
                    return Err(format!(
                        "model {}: input `{other}` is none of input_ids, attention_mask, token_type_ids",
                        model_path.display()
                    ))
                }
            });
        }
        if !inputs.contains(&Input::Ids) {
            return Err(format!(
                "model {}: no `input_ids` input",
                model_path.display()
            ));
        }
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| format!("model {}: {e}", model_path.display()))?;
        let flag = cfg
            .flag
            .iter()
            .filter_map(|l| cfg.labels.iter().position(|x| x == l))
            .collect();
        let c = Classifier {
            name: name.to_string(),
            plan,
            inputs,
            tokenizer,
            labels: cfg.labels.clone(),
            flag,
            threshold: cfg.threshold,
            window: cfg.max_tokens - special,
            stride: cfg.stride,
            max_windows: cfg.max_windows,
            seen: quick_cache::sync::Cache::new(SEEN),
            seed: std::collections::hash_map::RandomState::new(),
        };
        c.run("probe")
            .map_err(|e| format!("model {} fails on a probe text: {e}", model_path.display()))?;
        Ok(c)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verdict on `text` (remembered for texts seen before).
    pub fn classify(&self, text: &str) -> Result<Verdict, String> {
        let key = (
            std::hash::BuildHasher::hash_one(&self.seed, text),
            text.len(),
        );
        if let Some(v) = self.seen.get(&key) {
            return Ok(v);
        }
        // A tokenizer or model that panics on some input is a failed check (the rule's
        // `on_error` decides), not a lost worker.
        let v = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(text)))
            .map_err(|_| "the classifier failed on this text".to_string())??;
        self.seen.insert(key, v.clone());
        Ok(v)
    }

    fn run(&self, text: &str) -> Result<Verdict, String> {
        // The whole text's tokens, cut into overlapping windows, each given the
        // model's special tokens. (By hand: tokenizers 0.23's own truncation stops
        // tokenizing at the first window and returns no overflow.)
        let mut enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| format!("tokenizer: {e}"))?;
        let needed = match enc.get_ids().len() {
            n if n <= self.window => 1,
            n => 1 + (n - self.window).div_ceil(self.window - self.stride),
        };
        if needed > self.max_windows {
            return Err(format!(
                "the text needs {needed} windows of tokens, more than max_windows = {}",
                self.max_windows
            ));
        }
        enc.truncate(self.window, self.stride, TruncationDirection::Right);
        let rest = enc.take_overflowing();
        let mut windows = Vec::with_capacity(1 + rest.len());
        for w in std::iter::once(enc).chain(rest) {
            windows.push(
                self.tokenizer
                    .post_process(w, None, true)
                    .map_err(|e| format!("tokenizer: {e}"))?,
            );
        }
        let mut best: Option<Verdict> = None;
        for w in &windows {
            let n = w.get_ids().len();
            if n == 0 {
                continue;
            }
            let tensor = |v: &[u32]| -> Result<TValue, String> {
                let data: Vec<i64> = v.iter().map(|&x| i64::from(x)).collect();
                tract_ndarray::Array2::from_shape_vec((1, n), data)
                    .map(|a| a.into_tensor().into())
                    .map_err(|e| e.to_string())
            };
            let mut feed: TVec<TValue> = TVec::new();
            for i in &self.inputs {
                feed.push(match i {
                    Input::Ids => tensor(w.get_ids())?,
                    Input::Mask => tensor(w.get_attention_mask())?,
                    Input::TypeIds => tensor(w.get_type_ids())?,
                });
            }
            let out = self.plan.run(feed).map_err(|e| format!("model: {e}"))?;
            let logits = out
                .first()
                .ok_or("the model has no output")?
                .to_plain_array_view::<f32>()
                .map_err(|e| format!("model output: {e}"))?
                .iter()
                .copied()
                .collect::<Vec<f32>>();
            if logits.len() != self.labels.len() {
                return Err(format!(
                    "the model answers {} logits for {} labels",
                    logits.len(),
                    self.labels.len()
                ));
            }
            let probs = softmax(&logits);
            let score: f32 = self.flag.iter().map(|&i| probs[i]).sum();
            let top = probs
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            if best.as_ref().is_none_or(|b| score > b.score) {
                best = Some(Verdict {
                    label: self.labels[top].clone(),
                    score,
                    flagged: score >= self.threshold,
                });
            }
        }
        Ok(best.unwrap_or(Verdict {
            label: String::new(),
            score: 0.0,
            flagged: false,
        }))
    }
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
pub(crate) mod tests;

/// A tiny classifier built in code, for tests and the docs' walk-through: a word-level
/// tokenizer over `words` (lower-cased, split on whitespace and punctuation; any other
/// word is `[UNK]`, id 0) and an ONNX graph that averages each token's two logits
/// (`[benign, flagged]`). Not a useful model: a real one is trained and exported.
pub mod fixture {
    use prost::Message;
    use tract_onnx::pb;

    /// (model.onnx bytes, tokenizer.json text).
    pub fn tiny(words: &[(&str, [f32; 2])]) -> (Vec<u8>, String) {
        let mut vocab = serde_json::Map::new();
        vocab.insert("[UNK]".into(), 0.into());
        let mut weights = vec![0.0f32, 0.0];
        for (i, (w, logits)) in words.iter().enumerate() {
            vocab.insert(w.to_lowercase(), (i + 1).into());
            weights.extend_from_slice(logits);
        }
        let tokenizer = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": {"type": "Lowercase"},
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
        });
        let emb = pb::TensorProto {
            dims: vec![words.len() as i64 + 1, 2],
            data_type: 1, // FLOAT
            float_data: weights,
            name: "embedding".into(),
            ..Default::default()
        };
        let attr_int = |name: &str, i: i64| pb::AttributeProto {
            name: name.into(),
            r#type: 2, // INT
            i,
            ..Default::default()
        };
        let gather = pb::NodeProto {
            input: vec!["embedding".into(), "input_ids".into()],
            output: vec!["per_token".into()],
            op_type: "Gather".into(),
            name: "gather".into(),
            attribute: vec![attr_int("axis", 0)],
            ..Default::default()
        };
        let mean = pb::NodeProto {
            input: vec!["per_token".into()],
            output: vec!["logits".into()],
            op_type: "ReduceMean".into(),
            name: "mean".into(),
            attribute: vec![
                pb::AttributeProto {
                    name: "axes".into(),
                    r#type: 7, // INTS
                    ints: vec![1],
                    ..Default::default()
                },
                attr_int("keepdims", 0),
            ],
            ..Default::default()
        };
        let graph = pb::GraphProto {
            node: vec![gather, mean],
            name: "tiny".into(),
            initializer: vec![emb],
            input: vec![
                value("input_ids", 7, &[Some(1), None]), // INT64 [1, tokens]
                value("attention_mask", 7, &[Some(1), None]),
            ],
            output: vec![value("logits", 1, &[Some(1), Some(2)])],
            ..Default::default()
        };
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            producer_name: "llmop fixture".into(),
            graph: Some(graph),
            ..Default::default()
        };
        (model.encode_to_vec(), tokenizer.to_string())
    }

    fn value(name: &str, elem: i32, dims: &[Option<i64>]) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{dimension::Value, Dimension};
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: elem,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| Dimension {
                                denotation: String::new(),
                                value: Some(match d {
                                    Some(n) => Value::DimValue(*n),
                                    None => Value::DimParam("tokens".into()),
                                }),
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}
