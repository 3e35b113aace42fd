//! The built-in `mock` provider: a real part of the product that serves the demo and lets
//! users rehearse failures with no API key.
//!
//! It answers like a model would, in any client format (the gateway encodes its answer
//! like any provider's): deterministic for a given seed and input, usage counted with a
//! real tokenizer (`o200k_base`), tool calls with arguments drawn from the tool's schema,
//! JSON drawn from a requested schema, `max_tokens` honoured (`finish_reason = length`).
//!
//! Knobs (`[providers.<name>]`): `latency_ms` before the answer, `tokens_per_second` for
//! streams, `error_rate` + `error_status` for failures, `timeout_rate` for hangs, `reply`
//! (`echo`, `json`, `lorem`, `gullible`, or any fixed text), `seed`, and `rules`: regex → reply pairs
//! over the conversation's text, tried before `reply` (how judges, regressions and
//! flipped items are staged without a real model).

mod embed;
mod gullible;
mod schema;

use crate::tokenizer;
use crate::EventStream;
use futures::StreamExt;
use llmop_core::config::ProviderConfig;
use llmop_core::error::TimeoutStage;
use llmop_core::{
    ChatRequest, ChatResponse, FinishReason, Part, ProviderError, ResponseFormat, StreamEvent,
    ToolCall, ToolChoice, Usage,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hash::Hasher;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Echo,
    Json,
    Lorem,
    /// A deliberately weak model that follows any instruction it reads (`gullible`).
    Gullible,
    Fixed(String),
}

pub struct MockProvider {
    name: String,
    latency: Duration,
    tokens_per_second: Option<f64>,
    error_rate: f64,
    error_status: u16,
    timeout_rate: f64,
    reply: Reply,
    rules: Vec<(regex::Regex, String)>,
    seed: u64,
    models: Vec<String>,
    /// Calls so far: failures are drawn per call, so a retry of the same conversation
    /// can succeed, as against a real provider.
    calls: std::sync::atomic::AtomicU64,
}

const LOREM: &[&str] = &[
    "the",
    "gateway",
    "routes",
    "each",
    "request",
    "to",
    "a",
    "healthy",
    "model",
    "and",
    "records",
    "what",
    "happened",
    "so",
    "that",
    "operators",
    "can",
    "answer",
    "for",
    "every",
    "call",
    "cost",
    "latency",
    "version",
    "budget",
    "prompt",
    "answer",
    "with",
];

impl MockProvider {
    pub fn new(name: &str, pc: &ProviderConfig) -> Self {
        let reply = match pc.reply.as_deref() {
            None | Some("echo") => Reply::Echo,
            Some("json") => Reply::Json,
            Some("lorem") => Reply::Lorem,
            Some("gullible") => Reply::Gullible,
            Some(t) => Reply::Fixed(t.to_string()),
        };
        MockProvider {
            name: name.to_string(),
            latency: Duration::from_millis(pc.latency_ms.unwrap_or(0)),
            tokens_per_second: pc.tokens_per_second,
            error_rate: pc.error_rate.unwrap_or(0.0),
            error_status: pc.error_status.unwrap_or(503),
            timeout_rate: pc.timeout_rate.unwrap_or(0.0),
            reply,
            // The config's validation refused a rule that does not compile.
            rules: pc
                .rules
                .iter()
                .filter_map(|r| Some((regex::Regex::new(&r.when).ok()?, r.reply.clone())))
                .collect(),
            seed: pc.seed.unwrap_or(0),
            calls: std::sync::atomic::AtomicU64::new(0),
            models: if pc.models.is_empty() {
                vec!["echo".to_string()]
            } else {
                pc.models.clone()
            },
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn models(&self) -> &[String] {
        &self.models
    }

    /// The RNG of one call's answer: a function of the seed, the model and the
    /// conversation, so the same input gets the same answer.
    fn rng(&self, req: &ChatRequest, model: &str) -> ChaCha8Rng {
        let mut h = fnv::FnvHasher::default();
        h.write_u64(self.seed);
        h.write(model.as_bytes());
        for m in &req.messages {
            h.write_u8(m.role as u8);
            for p in &m.parts {
                match p {
                    Part::Text(t) => h.write(t.as_bytes()),
                    Part::ToolCall(c) => {
                        h.write(c.name.as_bytes());
                        h.write(c.arguments.as_bytes());
                    }
                    Part::ToolResult { content, .. } => h.write(content.as_bytes()),
                    Part::Image(_) => h.write_u8(0xff),
                    // Reasoning state is opaque: the same conversation with or without
                    // it gets the same answer.
                    Part::Reasoning(_) => {}
                }
            }
        }
        ChaCha8Rng::seed_from_u64(h.finish())
    }

    /// The reply of the first rule whose pattern matches the conversation's text.
    fn rule_reply(&self, req: &ChatRequest) -> Option<String> {
        if self.rules.is_empty() {
            return None;
        }
        let mut text = String::new();
        for m in &req.messages {
            text.push_str(match m.role {
                llmop_core::Role::System => "[system]\n",
                llmop_core::Role::User => "[user]\n",
                llmop_core::Role::Assistant => "[assistant]\n",
                llmop_core::Role::Tool => "[tool]\n",
            });
            for p in &m.parts {
                match p {
                    Part::Text(t) => text.push_str(t),
                    Part::ToolResult { content, .. } => text.push_str(content),
                    _ => {}
                }
            }
            text.push('\n');
        }
        self.rules.iter().find_map(|(re, reply)| {
            let caps = re.captures(&text)?;
            let mut out = String::new();
            caps.expand(reply, &mut out);
            Some(out)
        })
    }

    /// Waits out the latency and rolls the failure knobs.
    /// Failures are drawn per call (seed and call number), not per conversation: the
    /// n-th call of a process fails or not the same way for a given seed, and retrying a
    /// conversation can succeed.
    async fn begin(&self, rng: &mut ChaCha8Rng, deadline: Instant) -> Result<(), ProviderError> {
        let n = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut draws =
            ChaCha8Rng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // The answer's RNG advances as it always did, so answers stay what they were.
        let _ = self.timeout_rate > 0.0 && rng.gen_bool(self.timeout_rate);
        let _ = self.error_rate > 0.0 && rng.gen_bool(self.error_rate);
        let hang = self.timeout_rate > 0.0 && draws.gen_bool(self.timeout_rate);
        let fail = self.error_rate > 0.0 && draws.gen_bool(self.error_rate);
        if hang {
            tokio::time::sleep_until(deadline).await;
            return Err(ProviderError::Timeout {
                provider: self.name.clone(),
                stage: TimeoutStage::FirstByte,
            });
        }
        if !self.latency.is_zero() {
            if Instant::now() + self.latency > deadline {
                tokio::time::sleep_until(deadline).await;
                return Err(ProviderError::Timeout {
                    provider: self.name.clone(),
                    stage: TimeoutStage::FirstByte,
                });
            }
            tokio::time::sleep(self.latency).await;
        }
        if fail {
            return Err(ProviderError::Status {
                provider: self.name.clone(),
                status: self.error_status,
                message: format!(
                    "simulated error (mock provider, error_rate = {})",
                    self.error_rate
                ),
                retry_after: (self.error_status == 429).then(|| Duration::from_secs(1)),
                refusal: None,
            });
        }
        Ok(())
    }

    /// What the model says: text, or tool calls.
    fn answer(&self, req: &ChatRequest, rng: &mut ChaCha8Rng) -> (String, Vec<ToolCall>) {
        let last = req.messages.last();
        let answering_tool =
            last.is_some_and(|m| m.parts.iter().any(|p| matches!(p, Part::ToolResult { .. })));
        if self.reply == Reply::Gullible {
            if let Some(a) = gullible::answer(req, rng) {
                return a;
            }
        }
        let wants_tool = self.reply != Reply::Gullible
            && !req.tools.is_empty()
            && !answering_tool
            && !matches!(req.tool_choice, Some(ToolChoice::None));
        if wants_tool {
            let tool = match &req.tool_choice {
                Some(ToolChoice::Named(n)) => req.tools.iter().find(|t| &t.name == n),
                _ => None,
            }
            .unwrap_or(&req.tools[0]);
            let args = schema::generate(&tool.parameters, rng);
            let id = format!("call_{:016x}", rng.gen::<u64>());
            return (
                String::new(),
                vec![ToolCall {
                    id,
                    name: tool.name.clone(),
                    arguments: args.to_string(),
                }],
            );
        }
        if answering_tool {
            let results: Vec<&str> = last
                .into_iter()
                .flat_map(|m| m.parts.iter())
                .filter_map(|p| match p {
                    Part::ToolResult { content, .. } => Some(content.as_str()),
                    _ => None,
                })
                .collect();
            return (format!("The tool returned: {}", results.join("; ")), vec![]);
        }
        if let Some(text) = self.rule_reply(req) {
            return (text, vec![]);
        }
        match &req.response_format {
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                return (schema::generate(schema, rng).to_string(), vec![])
            }
            Some(ResponseFormat::JsonObject) => {
                let text = req.last_user_text().unwrap_or_default();
                return (serde_json::json!({ "reply": text }).to_string(), vec![]);
            }
            _ => {}
        }
        let text = match &self.reply {
            Reply::Echo | Reply::Gullible => req
                .last_user_text()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "Hello from the llmop mock provider.".to_string()),
            Reply::Json => {
                serde_json::json!({ "reply": req.last_user_text().unwrap_or_default() }).to_string()
            }
            Reply::Lorem => {
                let n = rng.gen_range(12..40);
                let mut words: Vec<&str> = (0..n)
                    .map(|_| LOREM[rng.gen_range(0..LOREM.len())])
                    .collect();
                if let Some(w) = words.first_mut() {
                    *w = "The";
                }
                format!("{}.", words.join(" "))
            }
            Reply::Fixed(t) => t.clone(),
        };
        (text, vec![])
    }

    /// Builds the whole answer and its usage.
    async fn respond(
        &self,
        req: &ChatRequest,
        model: &str,
        deadline: Instant,
    ) -> Result<(ChatResponse, Vec<String>), ProviderError> {
        let mut rng = self.rng(req, model);
        self.begin(&mut rng, deadline).await?;
        let input_tokens = count_prompt(req).await;
        // Building the answer is CPU work (a schema to fill, a long prompt to echo and
        // tokenize): when it may be large it leaves the async worker's other tasks to
        // the rest of the runtime.
        let (mut text, calls, mut pieces) = cpu_work(heavy(req), || {
            let (text, calls) = self.answer(req, &mut rng);
            let pieces = tokenizer::pieces(&text);
            (text, calls, pieces)
        });
        let mut finish = if calls.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        };
        if let Some(max) = req.params.max_tokens {
            if calls.is_empty() && pieces.len() > max as usize {
                pieces.truncate(max as usize);
                text = pieces.concat();
                finish = FinishReason::Length;
            }
        }
        let output_tokens = if calls.is_empty() {
            pieces.len() as u64
        } else {
            calls
                .iter()
                .map(|c| tokenizer::count(&c.name) + tokenizer::count(&c.arguments) + 3)
                .sum()
        };
        let mut parts = Vec::with_capacity(1 + calls.len());
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        parts.extend(calls.into_iter().map(Part::ToolCall));
        let resp = ChatResponse {
            id: format!("mock-{:016x}", rng.gen::<u64>()),
            model: model.to_string(),
            created: llmop_wire::unix_now(),
            parts,
            finish_reason: finish,
            usage: Some(Usage {
                input_tokens,
                output_tokens,
                cached_input_tokens: 0,
                cache_write_tokens: 0,
                reasoning_tokens: 0,
            }),
            details: Default::default(),
        };
        Ok((resp, pieces))
    }

    pub async fn complete(
        &self,
        req: &ChatRequest,
        model: &str,
        deadline: Instant,
    ) -> Result<ChatResponse, ProviderError> {
        self.respond(req, model, deadline).await.map(|(r, _)| r)
    }

    /// Deterministic embeddings ([`embed`]), with the provider's latency and failure
    /// knobs.
    pub async fn embed(
        &self,
        req: &llmop_core::embed::EmbedRequest,
        model: &str,
        deadline: Instant,
    ) -> Result<llmop_core::embed::Embeddings, ProviderError> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        self.begin(&mut rng, deadline).await?;
        let big = req.input.len() > 16;
        Ok(cpu_work(big, || embed::embed(self.seed, model, req)))
    }

    pub async fn stream(
        &self,
        req: &ChatRequest,
        model: &str,
        deadline: Instant,
    ) -> Result<EventStream, ProviderError> {
        let (resp, pieces) = self.respond(req, model, deadline).await?;
        let mut events = vec![StreamEvent::Start {
            id: resp.id.clone(),
            model: resp.model.clone(),
        }];
        events.extend(pieces.into_iter().map(StreamEvent::Text));
        for (i, c) in resp.tool_calls().enumerate() {
            events.push(StreamEvent::ToolCallStart {
                index: i as u32,
                id: c.id.clone(),
                name: c.name.clone(),
            });
            for piece in tokenizer::pieces(&c.arguments) {
                events.push(StreamEvent::ToolCallDelta {
                    index: i as u32,
                    arguments: piece,
                });
            }
        }
        events.push(StreamEvent::Finish(resp.finish_reason.clone()));
        if let Some(u) = resp.usage {
            events.push(StreamEvent::Usage(u));
        }
        let gap = self
            .tokens_per_second
            .map(|tps| Duration::from_secs_f64(1.0 / tps));
        let stream = futures::stream::iter(events.into_iter().map(Ok));
        Ok(match gap {
            None => stream.boxed(),
            Some(gap) => {
                let provider = self.name.clone();
                // One token per `gap`, paced against a start time so that timer
                // granularity does not slow the whole stream down.
                let start = Instant::now();
                stream
                    .enumerate()
                    .then(move |(i, ev)| {
                        let provider = provider.clone();
                        async move {
                            let at = start + gap.mul_f64(i as f64);
                            if at > deadline {
                                tokio::time::sleep_until(deadline).await;
                                return Err(ProviderError::Timeout {
                                    provider,
                                    stage: TimeoutStage::Total,
                                });
                            }
                            tokio::time::sleep_until(at).await;
                            ev
                        }
                    })
                    .boxed()
            }
        })
    }
}

/// Whether building an answer to `req` may take long enough to matter to other tasks.
fn heavy(req: &ChatRequest) -> bool {
    !req.tools.is_empty()
        || matches!(req.response_format, Some(ResponseFormat::JsonSchema { .. }))
        || req
            .last_user_text()
            .is_some_and(|t| t.len() > tokenizer::INLINE_LIMIT)
}

/// Runs `f`, telling a multi-threaded runtime first when it is heavy, so that the
/// worker's queued tasks move to other threads instead of waiting behind it.
fn cpu_work<R>(heavy: bool, f: impl FnOnce() -> R) -> R {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if heavy && multi {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Prompt tokens as OpenAI counts chat input: each message's text plus 3 tokens of
/// framing, plus 3 for the reply's priming, plus tool definitions.
async fn count_prompt(req: &ChatRequest) -> u64 {
    let mut text = String::new();
    for m in &req.messages {
        for p in &m.parts {
            match p {
                Part::Text(t) => text.push_str(t),
                Part::ToolCall(c) => {
                    text.push_str(&c.name);
                    text.push_str(&c.arguments);
                }
                Part::ToolResult { content, .. } => text.push_str(content),
                Part::Image(_) | Part::Reasoning(_) => {}
            }
            text.push('\n');
        }
    }
    for t in &req.tools {
        text.push_str(&t.name);
        if let Some(d) = &t.description {
            text.push_str(d);
        }
        text.push_str(&t.parameters.to_string());
    }
    let framing = 3 * req.messages.len() as u64 + 3;
    let images = req
        .messages
        .iter()
        .flat_map(|m| &m.parts)
        .filter(|p| matches!(p, Part::Image(_)))
        .count() as u64
        * 85;
    let counted = tokenizer::count_off_runtime(text).await;
    counted + framing + images
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmop_core::{Message, Role, Tool, WireFormat};

    fn provider(toml_text: &str) -> MockProvider {
        let pc: ProviderConfig = toml::from_str(toml_text).unwrap();
        MockProvider::new("sim", &pc)
    }

    fn req(text: &str) -> ChatRequest {
        ChatRequest::new(
            "sim/echo",
            vec![Message::text(Role::User, text)],
            WireFormat::OpenAi,
        )
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    #[tokio::test]
    async fn echo_with_real_usage() {
        let p = provider("kind = \"mock\"");
        let r = p
            .complete(&req("hello world"), "echo", far())
            .await
            .unwrap();
        assert_eq!(r.text(), "hello world");
        let u = r.usage.unwrap();
        assert_eq!(u.output_tokens, 2);
        // 2 text tokens + newline token + 3 framing + 3 priming.
        assert!(u.input_tokens >= 8, "{u:?}");
    }

    #[tokio::test]
    async fn rules_answer_before_the_reply_mode() {
        let p = provider(
            "kind = \"mock\"\nreply = \"lorem\"\nrules = [{ when = 'capital of (?P<c>\\w+)', reply = 'I do not know ${c}.' }, { when = '(?s)\\[user\\].*judge', reply = '{\"verdict\":\"pass\"}' }]",
        );
        let a = p
            .complete(&req("What is the capital of France?"), "echo", far())
            .await
            .unwrap();
        assert_eq!(a.text(), "I do not know France.");
        let b = p
            .complete(&req("please judge this"), "echo", far())
            .await
            .unwrap();
        assert_eq!(b.text(), "{\"verdict\":\"pass\"}");
        // No rule matches: the reply mode answers.
        let c = p.complete(&req("hello"), "echo", far()).await.unwrap();
        assert!(c.text().starts_with("The "), "{}", c.text());
    }

    #[tokio::test]
    async fn deterministic_for_a_seed() {
        let p = provider("kind = \"mock\"\nreply = \"lorem\"\nseed = 7");
        let a = p.complete(&req("x"), "m", far()).await.unwrap();
        let b = p.complete(&req("x"), "m", far()).await.unwrap();
        assert_eq!(a.text(), b.text());
        assert_eq!(a.id, b.id);
        let other = provider("kind = \"mock\"\nreply = \"lorem\"\nseed = 8");
        assert_ne!(
            other.complete(&req("x"), "m", far()).await.unwrap().text(),
            a.text()
        );
    }

    #[tokio::test]
    async fn max_tokens_truncates() {
        let p = provider("kind = \"mock\"");
        let mut r = req("one two three four five six");
        r.params.max_tokens = Some(2);
        let resp = p.complete(&r, "m", far()).await.unwrap();
        assert_eq!(resp.finish_reason, FinishReason::Length);
        assert_eq!(resp.usage.unwrap().output_tokens, 2);
        assert_eq!(resp.text(), "one two");
    }

    #[tokio::test]
    async fn errors_at_the_configured_rate() {
        let p = provider("kind = \"mock\"\nerror_rate = 0.3\nerror_status = 429");
        let mut failed = 0;
        for i in 0..1000 {
            match p.complete(&req(&format!("q{i}")), "m", far()).await {
                Err(ProviderError::Status {
                    status: 429,
                    retry_after,
                    ..
                }) => {
                    assert!(retry_after.is_some());
                    failed += 1;
                }
                Err(e) => panic!("{e}"),
                Ok(_) => {}
            }
        }
        assert!((230..370).contains(&failed), "{failed}");
    }

    #[tokio::test(start_paused = true)]
    async fn hangs_until_the_deadline() {
        let p = provider("kind = \"mock\"\ntimeout_rate = 1.0");
        let deadline = Instant::now() + Duration::from_millis(500);
        let e = p.complete(&req("x"), "m", deadline).await.unwrap_err();
        assert!(matches!(e, ProviderError::Timeout { .. }));
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test]
    async fn calls_tools_then_answers_their_result() {
        let p = provider("kind = \"mock\"");
        let mut r = req("weather in Paris?");
        r.tools.push(Tool {
            name: "get_weather".into(),
            description: None,
            parameters: serde_json::json!({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}),
            strict: None,
        });
        let first = p.complete(&r, "m", far()).await.unwrap();
        assert_eq!(first.finish_reason, FinishReason::ToolCalls);
        let call = first.tool_calls().next().unwrap().clone();
        let args: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
        assert!(args["city"].is_string());
        r.messages.push(Message {
            role: Role::Assistant,
            parts: vec![Part::ToolCall(call.clone())],
            name: None,
        });
        r.messages.push(Message {
            role: Role::Tool,
            parts: vec![Part::ToolResult {
                call_id: call.id,
                content: "sunny".into(),
                is_error: false,
            }],
            name: None,
        });
        let second = p.complete(&r, "m", far()).await.unwrap();
        assert_eq!(second.text(), "The tool returned: sunny");
    }

    #[tokio::test]
    async fn stream_matches_the_whole_answer() {
        let p = provider("kind = \"mock\"\nreply = \"lorem\"\ntokens_per_second = 2000");
        let whole = p.complete(&req("x"), "m", far()).await.unwrap();
        let s = p.stream(&req("x"), "m", far()).await.unwrap();
        let streamed = crate::http::collect(s).await.unwrap();
        assert_eq!(streamed.text(), whole.text());
        assert_eq!(streamed.usage, whole.usage);
    }
}
