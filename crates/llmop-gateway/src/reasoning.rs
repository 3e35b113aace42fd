//! Reasoning state the client's format has no place for, kept by the gateway.
//!
//! A reasoning model's tool loop works only if the provider's opaque state comes back
//! with the next request exactly where it was given: Anthropic's `thinking` blocks at
//! the start of the assistant turn, Gemini's `thoughtSignature` on the function call
//! that carried it. A client whose format can carry the state gets it in its answer
//! (an Anthropic client on an Anthropic target) and sends it back itself. Where the
//! format cannot (an OpenAI Chat Completions client; Gemini's signatures in any client
//! format), the gateway keeps it:
//!
//! 1. **keep** (after the answer, whole or streamed): each tool call that follows state
//!    the client cannot carry gets an id llmop issues (`llmop_call_…`); the state, and
//!    the provider's own id of the call, are kept under it: in this process's cache at
//!    once, and in the store with the call's record (table `reasoning_state`), so any
//!    replica sharing the store can restore it.
//! 2. **restore** (before the next request goes out): each assistant tool call with an
//!    issued id gets its state back where it was (Anthropic's at the start of its turn,
//!    Gemini's just before the call) and its provider id back, on the call and on the
//!    results that answer it.
//!
//! Calls a provider gave no id (Gemini's may have none) also get issued ids, and a kept
//! entry (possibly empty), so that every issued id can be looked up.

use crate::http_error::WireFormat;
use llmop_core::{
    is_issued_call_id, issue_call_id, ChatRequest, ChatResponse, Part, Reasoning, Role, StreamEvent,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Bytes of kept state held in this process (the store keeps it all): a thinking block
/// can be tens of KiB, so the cache is bounded by size, not by entries.
const CACHE_BYTES: u64 = 64 << 20;

/// How long a restore waits for another replica's record to be committed before it
/// gives up on an id of the conversation's last assistant turn (the writer commits
/// within ~50 ms of an answer in default durability; strict durability has committed
/// before the answer was sent). Older turns' state was committed long ago: never waited
/// for.
const STORE_WAIT: Duration = Duration::from_millis(1_500);
const STORE_POLL: Duration = Duration::from_millis(50);

/// Most issued ids one request looks up: a conversation longer than that gets the
/// state of its latest calls (the only ones providers require) and no unbounded store
/// work from one request.
const MAX_LOOKUPS: usize = 1_024;

/// Most bytes of state kept for one tool call. An upstream that streams more thinking
/// than this before a call gets none of it kept (logged), rather than the gateway
/// holding whatever it sends: the provider then refuses the next step as it would
/// without llmop.
const MAX_KEPT_BYTES: usize = 8 << 20;

/// What is kept for one tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kept {
    /// The provider's id of the call; `None` when it gave none.
    pub upstream_id: Option<String>,
    /// The state to put back, in order.
    pub parts: Vec<Reasoning>,
}

impl Kept {
    fn weight(&self) -> u64 {
        let parts: usize = self.parts.iter().map(Reasoning::byte_len).sum();
        (64 + parts + self.upstream_id.as_ref().map_or(0, String::len)) as u64
    }
}

#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<String, Arc<Kept>> for ByBytes {
    fn weight(&self, key: &String, val: &Arc<Kept>) -> u64 {
        key.len() as u64 + val.weight()
    }
}

/// This process's cache of kept state, in front of the store.
pub struct Keeper {
    cache: quick_cache::sync::Cache<String, Arc<Kept>, ByBytes>,
}

impl Default for Keeper {
    fn default() -> Self {
        Keeper {
            // ~ a thinking block of a few KiB per entry: the item estimate only sizes
            // the table; the weight bounds the memory.
            cache: quick_cache::sync::Cache::with_weighter(
                (CACHE_BYTES / 4096) as usize,
                CACHE_BYTES,
                ByBytes,
            ),
        }
    }
}

/// Kept state on its way to the record (serialized on the writer's task).
pub type KeptFor = Vec<(String, Arc<Kept>)>;

/// Whether a client of `format` receives `r` in its answer (and can send it back).
fn carries(format: WireFormat, r: &Reasoning) -> bool {
    match format {
        WireFormat::Anthropic => r.is_anthropic(),
        // Responses: the gateway keeps it, as for Chat Completions (the `responses`
        // wire module's docs say why).
        WireFormat::OpenAi | WireFormat::Responses => false,
    }
}

/// Collects, over an answer's parts or events, the state before each tool call that the
/// client cannot carry, and decides each call's id.
struct Collector {
    format: WireFormat,
    pending: Vec<Reasoning>,
    /// Bytes in `pending`; past [`MAX_KEPT_BYTES`], `overflow` drops it until the next
    /// call.
    pending_bytes: usize,
    overflow: bool,
    kept: KeptFor,
}

impl Collector {
    fn new(format: WireFormat) -> Self {
        Collector {
            format,
            pending: Vec::new(),
            pending_bytes: 0,
            overflow: false,
            kept: Vec::new(),
        }
    }

    /// Whether `n` more bytes of state may be kept.
    fn room(&mut self, n: usize) -> bool {
        if self.overflow {
            return false;
        }
        self.pending_bytes += n;
        if self.pending_bytes > MAX_KEPT_BYTES {
            tracing::warn!(
                bytes = self.pending_bytes,
                "reasoning state before a tool call is larger than 8 MiB: not kept"
            );
            self.overflow = true;
            self.pending.clear();
            return false;
        }
        true
    }

    fn reasoning(&mut self, r: &Reasoning) {
        if !carries(self.format, r) && self.room(r.byte_len()) {
            self.pending.push(r.clone());
        }
    }

    /// More thinking text (or signature) for the open thinking block.
    fn thinking_delta(&mut self, more: &str, signature: bool) {
        if !self.room(more.len()) {
            return;
        }
        if let Some(Reasoning::Thinking { text, signature: s }) = self.pending.last_mut() {
            if signature {
                s.push_str(more);
            } else {
                text.push_str(more);
            }
        }
    }

    /// Text came: a Gemini signature just before it was the text's (optional to send
    /// back), not the next call's.
    fn text(&mut self) {
        while matches!(self.pending.last(), Some(Reasoning::Signature { .. })) {
            self.pending.pop();
        }
    }

    /// A tool call with `id`: returns the id the client is to see.
    fn call(&mut self, id: &str) -> Option<String> {
        self.pending_bytes = 0;
        self.overflow = false;
        if self.pending.is_empty() && !is_issued_call_id(id) {
            return None;
        }
        let (client_id, upstream_id) = if is_issued_call_id(id) {
            (id.to_string(), None)
        } else {
            (issue_call_id(), Some(id.to_string()))
        };
        self.kept.push((
            client_id.clone(),
            Arc::new(Kept {
                upstream_id,
                parts: std::mem::take(&mut self.pending),
            }),
        ));
        Some(client_id)
    }
}

impl Keeper {
    fn remember(&self, kept: &[(String, Arc<Kept>)]) {
        for (id, k) in kept {
            self.cache.insert(id.clone(), k.clone());
        }
    }

    /// Keeps the state of a whole answer for a client of `format`, rewriting the ids of
    /// the calls it is kept under. Returns what the record is to store.
    pub fn keep_whole(&self, format: WireFormat, resp: &mut ChatResponse) -> KeptFor {
        let mut c = Collector::new(format);
        for p in resp.parts.iter_mut() {
            match p {
                Part::Reasoning(r) => c.reasoning(r),
                Part::Text(_) => c.text(),
                Part::ToolCall(call) => {
                    if let Some(id) = c.call(&call.id) {
                        call.id = id;
                    }
                }
                _ => {}
            }
        }
        self.remember(&c.kept);
        c.kept
    }

    /// A stream's keeper: see [`StreamKeeper::observe`].
    pub fn stream(self: &Arc<Self>, format: WireFormat) -> StreamKeeper {
        StreamKeeper {
            keeper: self.clone(),
            c: Collector::new(format),
            thinking_kept: false,
        }
    }

    /// Puts kept state back into `req` (see the module's doc). An issued id found
    /// nowhere (state expired, a store that never had it, a store that cannot answer)
    /// is left as is: the provider then answers as it would have without llmop.
    pub async fn restore(&self, store: Option<&llmop_store::Store>, req: &mut ChatRequest) {
        // Issued ids, newest first: the last assistant turn's are the ones worth
        // waiting for.
        let mut wanted: Vec<(&str, bool)> = Vec::new();
        let mut last_turn = true;
        'turns: for m in req.messages.iter().rev() {
            if m.role != Role::Assistant {
                continue;
            }
            for p in &m.parts {
                if let Part::ToolCall(c) = p {
                    if is_issued_call_id(&c.id) {
                        if wanted.len() == MAX_LOOKUPS {
                            break 'turns;
                        }
                        wanted.push((&c.id, last_turn));
                    }
                }
            }
            last_turn = false;
        }
        if wanted.is_empty() {
            return;
        }
        let mut found: HashMap<String, Arc<Kept>> = HashMap::with_capacity(wanted.len());
        let mut missing: Vec<String> = Vec::new();
        let mut wait_for = 0usize;
        for (id, recent) in wanted {
            match self.cache.get(id) {
                Some(k) => {
                    found.insert(id.to_string(), k);
                }
                None => {
                    missing.push(id.to_string());
                    wait_for += usize::from(recent);
                }
            }
        }
        if let (false, Some(store)) = (missing.is_empty(), store) {
            let until = tokio::time::Instant::now() + STORE_WAIT;
            loop {
                match store.reasoning_state(&missing).await {
                    Ok(rows) => {
                        for row in rows {
                            let Ok(k) = serde_json::from_value::<Kept>(row.state) else {
                                continue;
                            };
                            let k = Arc::new(k);
                            self.cache.insert(row.call_id.clone(), k.clone());
                            if let Some(i) = missing.iter().position(|m| *m == row.call_id) {
                                // The last turn's ids were pushed first.
                                if i < wait_for {
                                    wait_for -= 1;
                                }
                                missing.remove(i);
                            }
                            found.insert(row.call_id, k);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the store cannot serve kept reasoning state: sent without it");
                        break;
                    }
                }
                if wait_for == 0 || tokio::time::Instant::now() >= until {
                    break;
                }
                tokio::time::sleep(STORE_POLL).await;
            }
        }
        if !missing.is_empty() {
            metrics::counter!("llmop_reasoning_state_missing_total")
                .increment(missing.len() as u64);
            // The ids come from the client: only ones of the shape llmop issues are
            // logged (a few), so a forged one cannot put its text in the logs.
            let shown: Vec<&str> = missing
                .iter()
                .map(String::as_str)
                .filter(|id| issued_shape(id))
                .take(8)
                .collect();
            tracing::warn!(missing = missing.len(), ids = ?shown, "no kept reasoning state for these tool calls: sent without it");
        }
        if !found.is_empty() {
            apply(req, &found);
        }
    }
}

/// Whether `id` is exactly what [`issue_call_id`] makes: the prefix and 32 hex digits.
fn issued_shape(id: &str) -> bool {
    id.strip_prefix(llmop_core::ISSUED_CALL_PREFIX)
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Puts `found` back into the messages.
fn apply(req: &mut ChatRequest, found: &HashMap<String, Arc<Kept>>) {
    let mut renamed: HashMap<&str, &str> = HashMap::new();
    for m in req.messages.iter_mut() {
        if m.role != Role::Assistant {
            continue;
        }
        if !m
            .parts
            .iter()
            .any(|p| matches!(p, Part::ToolCall(c) if found.contains_key(&c.id)))
        {
            continue;
        }
        let has_own_thinking = m
            .parts
            .iter()
            .any(|p| matches!(p, Part::Reasoning(r) if r.is_anthropic()));
        let mut head: Vec<Part> = Vec::new();
        let mut body: Vec<Part> = Vec::with_capacity(m.parts.len());
        for p in m.parts.drain(..) {
            if let Part::ToolCall(mut c) = p {
                if let Some(k) = found.get(&c.id) {
                    for r in &k.parts {
                        if r.is_anthropic() {
                            if !has_own_thinking {
                                head.push(Part::Reasoning(r.clone()));
                            }
                        } else {
                            body.push(Part::Reasoning(r.clone()));
                        }
                    }
                    if let Some(up) = &k.upstream_id {
                        c.id.clone_from(up);
                    }
                }
                body.push(Part::ToolCall(c));
            } else {
                body.push(p);
            }
        }
        head.append(&mut body);
        m.parts = head;
    }
    for (id, k) in found {
        if let Some(up) = &k.upstream_id {
            renamed.insert(id.as_str(), up.as_str());
        }
    }
    if renamed.is_empty() {
        return;
    }
    for m in req.messages.iter_mut() {
        for p in m.parts.iter_mut() {
            if let Part::ToolResult { call_id, .. } = p {
                if let Some(up) = renamed.get(call_id.as_str()) {
                    *call_id = (*up).to_string();
                }
            }
        }
    }
}

/// Kept state as the store keeps it (on the writer's task).
pub fn to_store(kept: KeptFor) -> Vec<llmop_store::KeptState> {
    kept.into_iter()
        .filter_map(|(call_id, k)| {
            Some(llmop_store::KeptState {
                call_id,
                state: serde_json::to_value(&*k).ok()?,
            })
        })
        .collect()
}

/// Keeps the state of a stream as its events pass, rewriting tool-call ids on the way.
pub struct StreamKeeper {
    keeper: Arc<Keeper>,
    c: Collector,
    /// The open thinking block is being kept (the client cannot carry it).
    thinking_kept: bool,
}

impl StreamKeeper {
    /// Looks at one event before it is relayed (and may change a tool call's id).
    pub fn observe(&mut self, ev: &mut StreamEvent) {
        match ev {
            StreamEvent::ThinkingStart => {
                let r = Reasoning::Thinking {
                    text: String::new(),
                    signature: String::new(),
                };
                self.thinking_kept = !carries(self.c.format, &r);
                self.c.reasoning(&r);
            }
            StreamEvent::ThinkingDelta(t) if self.thinking_kept => self.c.thinking_delta(t, false),
            StreamEvent::SignatureDelta(s) if self.thinking_kept => self.c.thinking_delta(s, true),
            StreamEvent::Reasoning(r) => {
                self.thinking_kept = false;
                self.c.reasoning(r);
            }
            StreamEvent::Text(_) => {
                self.thinking_kept = false;
                self.c.text();
            }
            StreamEvent::ToolCallStart { id, .. } => {
                self.thinking_kept = false;
                if let Some(new) = self.c.call(id) {
                    *id = new;
                    if let Some(last) = self.c.kept.last() {
                        self.keeper.remember(std::slice::from_ref(last));
                    }
                }
            }
            _ => {}
        }
    }

    /// What the record is to store.
    pub fn take(&mut self) -> KeptFor {
        std::mem::take(&mut self.c.kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmop_core::{FinishReason, ToolCall, WireFormat};

    #[test]
    fn only_ids_of_the_issued_shape_are_logged() {
        assert!(issued_shape(&issue_call_id()));
        assert!(!issued_shape(
            "llmop_call_ghp_8f3KzQ1vW7xY2bN5mR9tL0aC4dE6gH1jK3pS"
        ));
        assert!(!issued_shape("llmop_call_"));
        assert!(!issued_shape("call_0123456789abcdef0123456789abcdef"));
    }

    fn call(id: &str) -> Part {
        Part::ToolCall(ToolCall {
            id: id.into(),
            name: "f".into(),
            arguments: "{}".into(),
        })
    }

    fn answer(parts: Vec<Part>) -> ChatResponse {
        ChatResponse {
            id: "r".into(),
            model: "m".into(),
            created: 0,
            parts,
            finish_reason: FinishReason::ToolCalls,
            usage: None,
            details: Default::default(),
        }
    }

    #[test]
    fn anthropic_thinking_is_kept_for_openai_clients_and_restored_first() {
        let k = Keeper::default();
        let thinking = Reasoning::Thinking {
            text: "plan".into(),
            signature: "sig".into(),
        };
        let mut resp = answer(vec![
            Part::Reasoning(thinking.clone()),
            Part::Text("let me look".into()),
            call("toolu_1"),
        ]);
        let stored = k.keep_whole(WireFormat::OpenAi, &mut resp);
        assert_eq!(stored.len(), 1);
        let issued = match &resp.parts[2] {
            Part::ToolCall(c) => c.id.clone(),
            p => panic!("{p:?}"),
        };
        assert!(is_issued_call_id(&issued));
        // The client sends back what it saw: text and the call under the issued id.
        let mut req = ChatRequest::new(
            "m",
            vec![
                llmop_core::Message::text(Role::User, "q"),
                llmop_core::Message {
                    role: Role::Assistant,
                    parts: vec![Part::Text("let me look".into()), call(&issued)],
                    name: None,
                },
                llmop_core::Message {
                    role: Role::Tool,
                    parts: vec![Part::ToolResult {
                        call_id: issued.clone(),
                        content: "42".into(),
                        is_error: false,
                    }],
                    name: None,
                },
            ],
            WireFormat::OpenAi,
        );
        let found: HashMap<String, Arc<Kept>> = k
            .cache
            .get(&issued)
            .map(|v| (issued.clone(), v))
            .into_iter()
            .collect();
        apply(&mut req, &found);
        assert_eq!(req.messages[1].parts[0], Part::Reasoning(thinking));
        assert!(matches!(&req.messages[1].parts[2], Part::ToolCall(c) if c.id == "toolu_1"));
        assert!(
            matches!(&req.messages[2].parts[0], Part::ToolResult { call_id, .. } if call_id == "toolu_1")
        );
    }

    #[test]
    fn an_endless_thinking_stream_is_not_kept_whole() {
        let k = Arc::new(Keeper::default());
        let mut s = k.stream(WireFormat::OpenAi);
        s.observe(&mut StreamEvent::ThinkingStart);
        let chunk = "t".repeat(1 << 20);
        for _ in 0..20 {
            s.observe(&mut StreamEvent::ThinkingDelta(chunk.clone()));
        }
        let mut call = StreamEvent::ToolCallStart {
            index: 0,
            id: "toolu_1".into(),
            name: "f".into(),
        };
        s.observe(&mut call);
        // Nothing kept for that call: its id stays the provider's.
        assert!(matches!(&call, StreamEvent::ToolCallStart { id, .. } if id == "toolu_1"));
        assert!(s.take().is_empty());
        // The next call's state is kept again.
        s.observe(&mut StreamEvent::ThinkingStart);
        s.observe(&mut StreamEvent::SignatureDelta("sig".into()));
        let mut call = StreamEvent::ToolCallStart {
            index: 1,
            id: "toolu_2".into(),
            name: "f".into(),
        };
        s.observe(&mut call);
        let kept = s.take();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            kept[0].1.parts,
            vec![Reasoning::Thinking {
                text: String::new(),
                signature: "sig".into()
            }]
        );
    }

    #[test]
    fn the_cache_is_bounded_by_bytes_not_entries() {
        let k = Keeper::default();
        for i in 0..200 {
            let kept = Arc::new(Kept {
                upstream_id: None,
                parts: vec![Reasoning::Redacted {
                    data: "x".repeat(1 << 20),
                }],
            });
            k.cache.insert(format!("llmop_call_{i}"), kept);
        }
        assert!(k.cache.weight() <= CACHE_BYTES, "{}", k.cache.weight());
        assert!(k.cache.len() < 200);
    }

    #[test]
    fn anthropic_clients_carry_thinking_themselves() {
        let k = Keeper::default();
        let mut resp = answer(vec![
            Part::Reasoning(Reasoning::Thinking {
                text: "t".into(),
                signature: "s".into(),
            }),
            call("toolu_1"),
        ]);
        assert!(k.keep_whole(WireFormat::Anthropic, &mut resp).is_empty());
        assert!(matches!(&resp.parts[1], Part::ToolCall(c) if c.id == "toolu_1"));
    }

    #[test]
    fn gemini_signatures_go_back_before_their_call_and_text_signatures_are_not_moved() {
        let k = Keeper::default();
        let sig = |s: &str| {
            Part::Reasoning(Reasoning::Signature {
                signature: s.into(),
            })
        };
        let issued = issue_call_id();
        let mut resp = answer(vec![
            sig("text-sig"),
            Part::Text("hm".into()),
            sig("call-sig"),
            call(&issued),
            call("gemini-id-2"),
        ]);
        let stored = k.keep_whole(WireFormat::Anthropic, &mut resp);
        // The issued call is kept (its signature, its lack of a provider id); the
        // second, with Gemini's own id and no signature, needs nothing.
        assert_eq!(stored.len(), 1);
        let kept = k.cache.get(&issued).unwrap();
        assert_eq!(kept.upstream_id, None);
        assert_eq!(
            kept.parts,
            vec![Reasoning::Signature {
                signature: "call-sig".into()
            }]
        );
    }
}
