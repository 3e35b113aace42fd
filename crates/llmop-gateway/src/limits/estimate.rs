//! The call's one token estimate.

use super::DEFAULT_OUTPUT_ESTIMATE;
use crate::routing::Resolved;
use llmop_core::{ChatRequest, Part};

/// The one token estimate of a call, shared by every stage that counts tokens (caps,
/// budgets, key and target rate limits): computed at most once per call, and only when
/// something counts.
pub struct Estimate {
    openai_family: bool,
    tokens_in: std::sync::OnceLock<u64>,
}

impl Estimate {
    /// For a call that may reach `resolved`'s targets.
    pub fn new(resolved: &Resolved<'_>) -> Estimate {
        Estimate {
            openai_family: resolved.targets.iter().all(|t| {
                matches!(
                    t.provider.kind(),
                    llmop_core::config::ProviderKind::Openai
                        | llmop_core::config::ProviderKind::Mock
                )
            }),
            tokens_in: std::sync::OnceLock::new(),
        }
    }

    /// A fresh estimate for another request to the same targets (a repair pass, which
    /// sends more than the call it repairs).
    pub fn again(&self) -> Estimate {
        Estimate {
            openai_family: self.openai_family,
            tokens_in: std::sync::OnceLock::new(),
        }
    }

    /// Input tokens of `req` (see [`input_tokens`]), computed on first use.
    pub async fn tokens_in(&self, req: &ChatRequest) -> u64 {
        if let Some(t) = self.tokens_in.get() {
            return *t;
        }
        let t = input_tokens(req, self.openai_family).await;
        *self.tokens_in.get_or_init(|| t)
    }

    /// Input tokens plus the output allowance (`max_tokens`, else the default estimate).
    pub async fn total(&self, req: &ChatRequest) -> u64 {
        self.tokens_in(req).await
            + u64::from(
                req.params
                    .max_tokens
                    .unwrap_or(DEFAULT_OUTPUT_ESTIMATE as u32),
            )
    }
}

/// Input tokens of a request: the o200k tokenizer for OpenAI-family models (exact for
/// them, close for others), else characters / 3.5, rounded up. Linear in the prompt's
/// size; a large prompt is tokenized on a blocking thread, never on an async worker.
async fn input_tokens(req: &ChatRequest, openai_family: bool) -> u64 {
    let mut text = String::new();
    for m in &req.messages {
        for p in &m.parts {
            match p {
                Part::Text(t) => text.push_str(t),
                Part::ToolCall(c) => text.push_str(&c.arguments),
                Part::ToolResult { content, .. } => text.push_str(content),
                // Thinking sent back is billed as input: its text counts.
                Part::Reasoning(llmop_core::Reasoning::Thinking { text: t, .. })
                | Part::Reasoning(llmop_core::Reasoning::Thought { text: t, .. }) => {
                    text.push_str(t)
                }
                Part::Image(_) | Part::Reasoning(_) => {}
            }
        }
        text.push('\n');
    }
    // Message framing, roughly as providers count it.
    let framing = 4 * req.messages.len() as u64;
    let body = if openai_family {
        llmop_providers::tokenizer::count_off_runtime(text).await
    } else {
        (text.chars().count() as f64 / 3.5).ceil() as u64
    };
    body + framing
}
