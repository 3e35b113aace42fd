//! The configured rules (`[guardrails]`) applied to calls: which findings a rule
//! selects, what it does with them, on the provider-neutral request, the whole answer
//! and a streamed answer. Pure: the gateway calls it from its guard stages and its
//! stream relay, and records the [`GuardVerdict`]s it returns.
//!
//! Streams ([`OutStream`]): text is held back by `stream_hold_back_bytes` and scanned
//! before it is released, so a value up to that long is caught before any byte of it
//! is sent; a `block` finding cuts the stream there (the caller ends it with an error
//! event; nothing after the match is sent). A tool call's arguments are held until the
//! call is complete and checked whole. `json_schema` rules on a stream are checked at
//! its end (the client has seen the text; a failure ends the stream with an error
//! event instead of its normal end).

use crate::transform::{Restorer, Vault};
use crate::{Category, Finding, Guard, GuardSpec, Want};
use llmop_core::config::{
    DisclaimerPosition, FailMode, GuardAction, GuardDirection, GuardPart, GuardRuleConfig,
    GuardrailsConfig,
};
use llmop_core::guard::{GuardVerdict, Label};
use llmop_core::{ChatRequest, ChatResponse, Part, Reasoning, StreamEvent};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::Instant;

/// What a rule selects.
enum Select {
    /// Every finding of a category (`pii`, `secrets`, `injection`).
    Category(Category),
    /// Findings of one detector (`pii.email`, `deny.competitors`).
    Detector(String),
    /// An answer's text longer than this many characters.
    MaxLength(usize),
    /// An answer's text that is not JSON valid against this schema.
    Schema(Box<jsonschema::Validator>),
    /// A text reliably in a language not on this list.
    Language(crate::language::Languages),
    /// A check the gateway runs off the runtime (a classifier) or over the network (a
    /// remote service): see [`Ask`].
    Model(Check),
}

/// A model-based check a rule selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Index into the policy's classifiers.
    Classifier(usize),
    /// A `[guardrails.remote.<name>]` service.
    Remote(String),
}

/// One model-based check to run for a call: a rule's check on the texts of one part.
/// The gateway runs it ([`Policy::classifier`] on the blocking pool, a remote service
/// over HTTP), each with its timeout, and hands the outcome to [`Policy::settle`].
#[derive(Debug, Clone)]
pub struct Ask {
    pub rule: usize,
    pub rule_name: String,
    pub check: Check,
    pub direction: &'static str,
    pub part: GuardPart,
    /// The texts, as the provider (input) or client (output) would see them: values
    /// other rules mask are masked here too.
    pub texts: Vec<String>,
}

/// What a model-based check said of an ask's texts.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFinding {
    pub found: bool,
    /// Recorded with the verdict: labels and scores, never the text.
    pub evidence: String,
}

struct Rule {
    /// Shared with every verdict it makes (a count, not a copy, per call).
    name: Arc<str>,
    select: Vec<Select>,
    /// The detector families `select` needs.
    want: Want,
    input: bool,
    output: bool,
    parts: [bool; 4],
    action: GuardAction,
    routes: Vec<String>,
    features: Vec<String>,
    keys: Vec<String>,
    on_error: FailMode,
    /// The model-based check this rule is (it is then the rule's only selector).
    model: Option<Check>,
    /// Checked on a streamed answer's whole text when it ends (language, model
    /// checks); a `block` rule of this kind holds the whole stream until then.
    at_end: bool,
}

impl Rule {
    fn selects(&self, f: &Finding) -> bool {
        self.select.iter().any(|s| match s {
            Select::Category(c) => *c == f.category,
            Select::Detector(d) => *d == f.rule,
            _ => false,
        })
    }

    fn on(&self, part: GuardPart) -> bool {
        self.parts[part_index(part)]
    }
}

/// Where a text checked by [`Policy::check_text`] comes from.
#[derive(Clone, Copy)]
enum Source {
    /// A request message's text, tool-call arguments or tool result.
    Message,
    /// A request's other strings, joined ([`crate::fields`]).
    Fields,
    /// One of those strings on its own (when they cannot be joined).
    Field,
    /// An answer's text or tool-call arguments.
    Answer,
    /// An answer's reasoning: read, never changed (the provider needs it back as it
    /// gave it, and Anthropic's is signed), so `redact` and `pseudonymize` find values
    /// there without masking them.
    Reasoning,
}

/// The text of a message part that rules scan, and which part it is (reasoning and
/// images are not scanned).
fn scanned_mut(p: &mut Part) -> Option<(GuardPart, &mut String)> {
    match p {
        Part::Text(t) => Some((GuardPart::Text, t)),
        Part::ToolCall(c) => Some((GuardPart::ToolArguments, &mut c.arguments)),
        Part::ToolResult { content, .. } => Some((GuardPart::ToolResults, content)),
        _ => None,
    }
}

fn part_index(p: GuardPart) -> usize {
    match p {
        GuardPart::Text => 0,
        GuardPart::ToolArguments => 1,
        GuardPart::ToolResults => 2,
        GuardPart::Reasoning => 3,
    }
}

/// The texts of a piece of reasoning the client sees (signatures and encrypted state
/// are not text).
fn reasoning_texts(r: &mut Reasoning) -> SmallVec<[&mut String; 2]> {
    match r {
        Reasoning::Thinking { text, .. } | Reasoning::Thought { text, .. } => {
            smallvec::smallvec![text]
        }
        Reasoning::OpenAi { summary, .. } => summary.iter_mut().collect(),
        Reasoning::Redacted { .. } | Reasoning::Signature { .. } => SmallVec::new(),
    }
}

struct Disclaimer {
    text: String,
    position: DisclaimerPosition,
    routes: Vec<String>,
    features: Vec<String>,
}

/// A text's findings: scanned now (a text seen once), or remembered (shared with the
/// cache, not copied into it for a text that will not come again).
enum Found {
    Fresh(Vec<Finding>),
    Kept(Arc<[Finding]>),
}

impl std::ops::Deref for Found {
    type Target = [Finding];
    fn deref(&self) -> &[Finding] {
        match self {
            Found::Fresh(v) => v,
            Found::Kept(a) => a,
        }
    }
}

/// The compiled `[guardrails]` section: built once at start.
pub struct Policy {
    guard: Guard,
    /// Findings of request texts already scanned (a system prompt, an agent's history
    /// re-sent every turn), keyed by a keyed 64-bit hash of the text and its length.
    seen: quick_cache::sync::Cache<(u64, usize, Want), Arc<[Finding]>>,
    /// The doorkeeper of `seen`: the hash of the last text to land in each slot. A text
    /// is remembered from its second sighting on; one seen once (most users' messages)
    /// costs a hash and a store, not a cache insert that evicts another entry.
    sighted: Box<[std::sync::atomic::AtomicU64]>,
    /// The doorkeeper's marks' hash (fast, keyed per process).
    quick: foldhash::fast::RandomState,
    /// The cache key's hash (SipHash, keyed per process).
    seed: std::collections::hash_map::RandomState,
    rules: Vec<Rule>,
    disclaimers: Vec<Disclaimer>,
    hold_back: usize,
    max_scan: usize,
    classifiers: Vec<Arc<crate::classifier::Classifier>>,
    /// Whether any rule selects `language` (else its check is skipped outright).
    has_language: bool,
    /// Timeouts of the model-based checks, by check.
    timeouts: std::collections::HashMap<String, std::time::Duration>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.rules.iter().map(|r| &*r.name).collect();
        f.debug_struct("Policy").field("rules", &names).finish()
    }
}

/// What a call is, for choosing its rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub route: Option<&'a str>,
    pub feature: Option<&'a str>,
    pub key: Option<&'a str>,
}

/// Rule (or disclaimer) indices: a call's handful inline, not on the heap.
type Indices = SmallVec<[usize; 6]>;

/// The rules and disclaimers that apply to one call (indices into the policy).
#[derive(Debug, Clone, Default)]
pub struct Applicable {
    input: Indices,
    output: Indices,
    disclaimers: Indices,
}

impl Applicable {
    pub fn has_input(&self) -> bool {
        !self.input.is_empty()
    }
    pub fn has_output(&self) -> bool {
        !self.output.is_empty() || !self.disclaimers.is_empty()
    }
}

impl Policy {
    /// Whether any of the rules runs a classifier (CPU work of milliseconds: the
    /// gateway runs such a call's checks off the runtime).
    pub fn has_classifier(&self, a: &Applicable) -> bool {
        a.input
            .iter()
            .chain(&a.output)
            .any(|&i| matches!(self.rules[i].model, Some(Check::Classifier(_))))
    }

    /// The longest text any check reads (`max_scan_bytes`).
    pub fn max_scan_bytes(&self) -> usize {
        self.max_scan
    }

    /// A classifier by index (from [`Check::Classifier`]).
    pub fn classifier(&self, i: usize) -> Option<&Arc<crate::classifier::Classifier>> {
        self.classifiers.get(i)
    }

    /// How long a call waits for a check.
    pub fn timeout(&self, c: &Check) -> std::time::Duration {
        self.timeouts
            .get(&self.check_name(c))
            .copied()
            .unwrap_or(std::time::Duration::from_secs(1))
    }

    /// The model-based checks of a request's input rules, on the request as it will be
    /// sent (after `check_input` masked it).
    pub fn asks_input(&self, a: &Applicable, req: &ChatRequest) -> Vec<Ask> {
        let texts = |part: GuardPart| -> Vec<String> {
            req.messages
                .iter()
                .flat_map(|m| &m.parts)
                .filter_map(|p| match (p, part) {
                    (Part::Text(t), GuardPart::Text) => Some(t),
                    (Part::ToolCall(c), GuardPart::ToolArguments) => Some(&c.arguments),
                    (Part::ToolResult { content, .. }, GuardPart::ToolResults) => Some(content),
                    _ => None,
                })
                .filter(|t| !t.is_empty())
                .cloned()
                .collect()
        };
        self.asks(&a.input, "input", texts)
    }

    /// The model-based checks of an answer's output rules, on the answer as the client
    /// will see it (after `check_output` masked it, before placeholders are restored).
    pub fn asks_output(&self, a: &Applicable, resp: &ChatResponse) -> Vec<Ask> {
        let texts = |part: GuardPart| -> Vec<String> {
            resp.parts
                .iter()
                .filter_map(|p| match (p, part) {
                    (Part::Text(t), GuardPart::Text) => Some(t),
                    (Part::ToolCall(c), GuardPart::ToolArguments) => Some(&c.arguments),
                    _ => None,
                })
                .filter(|t| !t.is_empty())
                .cloned()
                .collect()
        };
        self.asks(&a.output, "output", texts)
    }

    fn asks(
        &self,
        rules: &[usize],
        direction: &'static str,
        texts: impl Fn(GuardPart) -> Vec<String>,
    ) -> Vec<Ask> {
        let mut asks = Vec::new();
        for &i in rules {
            let r = &self.rules[i];
            let Some(check) = &r.model else { continue };
            for part in GuardPart::ALL {
                if !r.on(part) {
                    continue;
                }
                let t = texts(part);
                if t.is_empty() {
                    continue;
                }
                asks.push(Ask {
                    rule: i,
                    rule_name: r.name.to_string(),
                    check: check.clone(),
                    direction,
                    part,
                    texts: t,
                });
            }
        }
        asks
    }

    /// The outcomes of a direction's model-based checks into `book` as verdicts; the
    /// first stop (in the config's rule order) if any.
    pub fn settle(
        &self,
        direction: &'static str,
        outcomes: Vec<(Ask, Result<ModelFinding, String>)>,
        took: std::time::Duration,
        book: &mut Book,
    ) -> Result<(), Stop> {
        let mut rules: Indices = outcomes.iter().map(|(a, _)| a.rule).collect();
        rules.sort_unstable();
        rules.dedup();
        let mut tally = Tally::new(rules, direction);
        for (ask, outcome) in outcomes {
            let name = self.check_name(&ask.check);
            let t = tally.at(ask.rule, ask.part);
            t.ran = true;
            match outcome {
                Ok(f) => {
                    if f.found {
                        t.found = true;
                        t.detect(Label::Owned(name));
                    }
                    if !f.evidence.is_empty() && t.evidence.len() < 16 {
                        t.evidence.push(f.evidence);
                    }
                }
                Err(reason) => t.error = Some(reason),
            }
        }
        tally.finish(self, took, book)
    }

    /// `classifier.<name>` or `remote.<name>`.
    pub fn check_name(&self, c: &Check) -> String {
        match c {
            Check::Classifier(i) => format!(
                "classifier.{}",
                self.classifiers.get(*i).map_or("?", |c| c.name())
            ),
            Check::Remote(n) => format!("remote.{n}"),
        }
    }
}

/// Why a call stops at a guardrail.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// A `block` rule found something: the rule and the detectors (never the values).
    Blocked {
        rule: String,
        direction: &'static str,
        part: &'static str,
        detectors: Vec<String>,
    },
    /// A `fail_closed` rule could not check the call.
    Failed { rule: String, reason: String },
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Blocked {
                rule,
                direction,
                part,
                detectors,
            } => write!(
                f,
                "guardrail `{rule}` blocked this call: {} found in the {direction} {}",
                detectors.join(", "),
                part.replace('_', " ")
            ),
            Stop::Failed { rule, reason } => write!(
                f,
                "guardrail `{rule}` could not check this call ({reason}) and fails closed"
            ),
        }
    }
}

/// The outcomes a verdict can have.
pub const OUTCOMES: [&str; 7] = [
    "pass",
    "blocked",
    "redacted",
    "pseudonymized",
    "flagged",
    "would_block",
    "error",
];

/// Request texts whose findings are remembered.
const SEEN_TEXTS: usize = 16_384;
/// Shorter texts are scanned again: cheaper than hashing and looking up.
const CACHE_MIN_BYTES: usize = 64;
/// Slots of the remembered texts' doorkeeper (a power of two; 8 bytes each).
const SIGHTED_SLOTS: usize = 16_384;

/// Problems compiling a policy: (key path, message), as config errors are.
pub type PolicyErrors = Vec<(String, String)>;

/// Every detector id a selector may name.
pub fn detector_names() -> Vec<String> {
    let mut v: Vec<String> = crate::pii::KINDS
        .iter()
        .map(|k| format!("pii.{k}"))
        .collect();
    v.extend(crate::secrets::rule_names().map(|n| format!("secret.{n}")));
    v.extend(crate::injection::signal_names().map(|n| format!("injection.{n}")));
    v
}

impl Policy {
    /// `dir`: where relative paths (classifier models) are found, the config file's
    /// directory. A classifier no rule selects is not loaded.
    pub fn new(cfg: &GuardrailsConfig, dir: &std::path::Path) -> Result<Policy, PolicyErrors> {
        let mut errors = Vec::new();
        let known = detector_names();
        let mut classifier_names: Vec<&str> = Vec::new();
        for r in &cfg.rules {
            for d in &r.detect {
                if let Some(n) = d.strip_prefix("classifier.") {
                    if cfg.classifiers.contains_key(n) && !classifier_names.contains(&n) {
                        classifier_names.push(n);
                    }
                }
            }
        }
        let mut classifiers = Vec::new();
        let mut timeouts = std::collections::HashMap::new();
        for n in &classifier_names {
            let c = &cfg.classifiers[*n];
            match crate::classifier::Classifier::load(n, c, dir) {
                Ok(c) => classifiers.push(Arc::new(c)),
                Err(e) => errors.push((format!("guardrails.classifiers.{n}"), e)),
            }
            timeouts.insert(
                format!("classifier.{n}"),
                std::time::Duration::from_millis(c.timeout_ms),
            );
        }
        for (n, r) in &cfg.remote {
            timeouts.insert(
                format!("remote.{n}"),
                std::time::Duration::from_millis(r.timeout_ms),
            );
        }
        let mut rules = Vec::with_capacity(cfg.rules.len());
        for (i, r) in cfg.rules.iter().enumerate() {
            match compile_rule(r, &known, cfg, &classifier_names) {
                Ok(rule) => {
                    rules.push(rule);
                }
                Err((field, msg)) => errors.push((format!("guardrails.rules[{i}].{field}"), msg)),
            }
        }
        // Only the families some rule selects are compiled.
        let need = rules
            .iter()
            .fold(Want::default(), |w: Want, r: &Rule| w.union(r.want));
        let spec = GuardSpec {
            pii: need.pii.then(|| crate::pii::PiiSpec {
                kinds: Vec::new(),
                locales: cfg.pii.locales.clone(),
            }),
            secrets: need.secrets,
            injection: need.injection,
            deny: cfg
                .deny
                .iter()
                .map(|(name, d)| crate::deny::DenySpec {
                    name: name.clone(),
                    terms: d.terms.clone(),
                    patterns: d.patterns.clone(),
                })
                .collect(),
        };
        let guard = match Guard::new(&spec) {
            Ok(g) => Some(g),
            Err(e) => {
                errors.push(("guardrails".into(), e.0));
                None
            }
        };
        match guard {
            Some(guard) if errors.is_empty() => Ok(Policy {
                has_language: rules
                    .iter()
                    .any(|r| r.select.iter().any(|s| matches!(s, Select::Language(_)))),
                guard,
                seen: quick_cache::sync::Cache::new(SEEN_TEXTS),
                sighted: (0..SIGHTED_SLOTS)
                    .map(|_| std::sync::atomic::AtomicU64::new(0))
                    .collect(),
                quick: foldhash::fast::RandomState::default(),
                seed: std::collections::hash_map::RandomState::new(),
                rules,
                disclaimers: cfg
                    .disclaimers
                    .iter()
                    .map(|d| Disclaimer {
                        text: d.text.clone(),
                        position: d.position,
                        routes: d.routes.clone(),
                        features: d.features.clone(),
                    })
                    .collect(),
                hold_back: cfg.stream_hold_back_bytes,
                max_scan: cfg.max_scan_bytes,
                classifiers,
                timeouts,
            }),
            _ => Err(errors),
        }
    }

    /// How many rules there are.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The index of the rule a verdict of this policy names (the verdict shares the
    /// rule's name, so this compares pointers first).
    pub fn rule_index(&self, name: &Arc<str>) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| Arc::ptr_eq(&r.name, name))
            .or_else(|| self.rules.iter().position(|r| r.name == *name))
    }

    /// Whether any rule or disclaimer is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.disclaimers.is_empty()
    }

    /// The rules and disclaimers for a call.
    pub fn for_call(&self, s: Scope<'_>) -> Applicable {
        let within = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
        };
        let mut a = Applicable::default();
        for (i, r) in self.rules.iter().enumerate() {
            if within(&r.routes, s.route)
                && within(&r.features, s.feature)
                && within(&r.keys, s.key)
            {
                if r.input {
                    a.input.push(i);
                }
                if r.output {
                    a.output.push(i);
                }
            }
        }
        for (i, d) in self.disclaimers.iter().enumerate() {
            let any = d.routes.is_empty() && d.features.is_empty();
            let by_route = s.route.is_some_and(|r| d.routes.iter().any(|x| x == r));
            let by_feature = s.feature.is_some_and(|f| d.features.iter().any(|x| x == f));
            if any || by_route || by_feature {
                a.disclaimers.push(i);
            }
        }
        a
    }

    /// The rules checked in process, inline (all but the model-based checks).
    fn local(&self, rules: &[usize]) -> Indices {
        rules
            .iter()
            .copied()
            .filter(|&i| self.rules[i].model.is_none())
            .collect()
    }

    /// The detector families the given rules select on a part.
    fn want(&self, rules: &[usize], part: GuardPart) -> Want {
        rules
            .iter()
            .map(|&i| &self.rules[i])
            .filter(|r| r.on(part))
            .fold(Want::default(), |w, r| w.union(r.want))
    }

    /// `scan`, remembered for texts a request sends again: what the detectors find in
    /// a text depends on the text alone. The key is the text's length and its SipHash
    /// under a per-process random key (so no one can aim a collision at it; two texts
    /// of one length colliding by chance is a 2^-64 event per pair).
    ///
    /// A text is remembered from its second sighting: the doorkeeper (`sighted`) keeps
    /// a fast hash of the last text per slot, and a text whose mark is not in its slot is
    /// scanned without the cache (looked up, inserted, evicting another) and marked.
    /// What a slot holds only decides whether the cache is used: a text whose mark
    /// another overwrote is scanned again, never given another text's findings.
    fn scan_cached(&self, text: &str, want: Want) -> Result<Found, String> {
        use std::sync::atomic::Ordering::Relaxed;
        if text.len() < CACHE_MIN_BYTES {
            return self.scan(text, want).map(Found::Fresh);
        }
        // The doorkeeper's mark is a fast hash: it only decides whether the cache is
        // used, so a collision (even an aimed one) costs a lookup, never a wrong
        // finding. The key itself is the SipHash, made only for a text seen before:
        // a unique prompt no longer pays for it (~1.2k instructions for 409 bytes).
        let quick = std::hash::BuildHasher::hash_one(&self.quick, text);
        // A hash of zero (an empty slot's value) is marked as one: at worst a text is
        // taken for seen once, and goes through the cache.
        let mark = quick.max(1);
        let slot = &self.sighted[quick as usize & (SIGHTED_SLOTS - 1)];
        if slot.load(Relaxed) != mark {
            slot.store(mark, Relaxed);
            return self.scan(text, want).map(Found::Fresh);
        }
        let hash = std::hash::BuildHasher::hash_one(&self.seed, text);
        let key = (hash, text.len(), want);
        if let Some(f) = self.seen.get(&key) {
            return Ok(Found::Kept(f));
        }
        let f: Arc<[Finding]> = Arc::from(self.scan(text, want)?);
        self.seen.insert(key, f.clone());
        Ok(Found::Kept(f))
    }

    /// Scans one text for `rules`: the findings, or why it could not be scanned.
    fn scan(&self, text: &str, want: Want) -> Result<Vec<Finding>, String> {
        if text.len() > self.max_scan {
            return Err(format!(
                "{} bytes is more than max_scan_bytes = {}",
                text.len(),
                self.max_scan
            ));
        }
        // A detector that panics is a bug; the rule's fail mode still holds.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.guard.scan_with(text, want)
        }))
        .map_err(|_| "a detector failed".to_string())
    }

    /// The input stage: every text part, tool-call argument and tool result of the
    /// request checked by the call's input rules; values masked in place (`redact`,
    /// `pseudonymize` into `vault`). Values the rules found and left in place (flag,
    /// shadow, block) are added to `scrub`, for the record to mask.
    pub fn check_input(
        &self,
        a: &Applicable,
        req: &mut ChatRequest,
        vault: &mut Vault,
        book: &mut Book,
    ) -> Result<(), Stop> {
        let fields = crate::fields::Fields::of(req);
        self.check_input_with(a, req, fields, vault, book)
    }

    /// [`Policy::check_input`] with the request's fields already joined (the gateway
    /// joins them once, to weigh the call before it is checked).
    pub fn check_input_with(
        &self,
        a: &Applicable,
        req: &mut ChatRequest,
        fields: crate::fields::Fields,
        vault: &mut Vault,
        book: &mut Book,
    ) -> Result<(), Stop> {
        if a.input.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut tally = Tally::new(self.local(&a.input), "input");
        for m in &mut req.messages {
            for p in &mut m.parts {
                let Some((part, text)) = scanned_mut(p) else {
                    continue;
                };
                self.check_text(&mut tally, part, text, Some(vault), book, Source::Message);
            }
        }
        self.check_fields(&mut tally, req, fields, vault, book);
        tally.finish(self, started.elapsed(), book)
    }

    /// The request's other strings (tool definitions, schemas, `user`, `metadata`, stop
    /// sequences, passed-through fields: [`crate::fields`]) checked as `text`, as one
    /// joined text, and masked in place.
    fn check_fields(
        &self,
        tally: &mut Tally,
        req: &mut ChatRequest,
        fields: crate::fields::Fields,
        vault: &mut Vault,
        book: &mut Book,
    ) {
        let crate::fields::Fields {
            text: mut joined,
            clean,
            count,
        } = fields;
        if joined.is_empty() {
            return;
        }
        let each =
            |req: &mut ChatRequest, tally: &mut Tally, vault: &mut Vault, book: &mut Book| {
                crate::fields::each_mut(req, &mut |s| {
                    self.check_text(
                        tally,
                        GuardPart::Text,
                        s,
                        Some(&mut *vault),
                        book,
                        Source::Field,
                    );
                });
            };
        if !clean {
            // A field holds the separator: the joined text could not be split back.
            return each(req, tally, vault, book);
        }
        if self.check_text(
            tally,
            GuardPart::Text,
            &mut joined,
            Some(&mut *vault),
            book,
            Source::Fields,
        ) {
            if crate::fields::separators(&joined) == count {
                crate::fields::split_into(req, &joined);
            } else {
                // A rule masked a finding about the text as a whole, separators and
                // all. No rule can today (the config refuses `redact` and
                // `pseudonymize` for injection signals, the one such finding), but if
                // one could, the other fields must not be left unchecked: each field
                // is checked on its own instead. What the first pass recorded is
                // recorded once (a verdict holds each detector and fingerprint once;
                // the vault gives a value one placeholder).
                each(req, tally, vault, book);
            }
        }
    }

    /// One text of one part checked by the tally's rules, masked in place.
    fn check_text(
        &self,
        tally: &mut Tally,
        part: GuardPart,
        text: &mut String,
        vault: Option<&mut Vault>,
        book: &mut Book,
        source: Source,
    ) -> bool {
        // By position in the tally (no lookups, no copy of its rule list).
        let n = tally.rules.len();
        if text.is_empty() || !(0..n).any(|k| self.rules[tally.rules[k]].on(part)) {
            return false;
        }
        // A language rule reads what people wrote, not a request's tool schemas, nor a
        // model's reasoning (often in another language than its answer).
        if self.has_language
            && !matches!(source, Source::Field | Source::Fields | Source::Reasoning)
        {
            self.check_language(tally, part, text);
        }
        let want = self.want(&tally.rules, part);
        if !want.any() {
            for k in 0..n {
                if self.rules[tally.rules[k]].on(part) {
                    tally.hits[k][part_index(part)].ran = true;
                }
            }
            return false;
        }
        // Request texts come again (a system prompt, an agent's history and tools).
        let scanned = if matches!(source, Source::Message | Source::Fields) {
            self.scan_cached(text, want)
        } else {
            self.scan(text, want).map(Found::Fresh)
        };
        let found = match scanned {
            Ok(f) => f,
            Err(reason) => {
                for k in 0..n {
                    if self.rules[tally.rules[k]].on(part) {
                        tally.hits[k][part_index(part)].error = Some(reason.clone());
                    }
                }
                return false;
            }
        };
        // In the joined fields a finding across a separator is two fields' ends, not a
        // value (an injection signal, about the text as a whole, stays). Elsewhere a
        // NUL is the client's own text, and what spans it is found as ever.
        let joined = matches!(source, Source::Fields);
        let crosses = |f: &Finding| {
            joined
                && f.category != Category::Injection
                && text
                    .get(f.span.clone())
                    .is_some_and(|v| v.contains(crate::fields::SEP))
        };
        let found = if found.iter().any(crosses) {
            Found::Fresh(found.iter().filter(|f| !crosses(f)).cloned().collect())
        } else {
            found
        };
        // Per finding: 0 leave, 1 pseudonymize, 2 redact (the stronger wins).
        let mut mode: SmallVec<[u8; 8]> = smallvec::smallvec![0u8; found.len()];
        for k in 0..n {
            let r = &self.rules[tally.rules[k]];
            if !r.on(part) {
                continue;
            }
            let t = &mut tally.hits[k][part_index(part)];
            t.ran = true;
            for (j, f) in found.iter().enumerate() {
                if !r.selects(f) {
                    continue;
                }
                t.hit(f, text);
                match r.action {
                    _ if matches!(source, Source::Reasoning) => {}
                    GuardAction::Redact => mode[j] = 2,
                    GuardAction::Pseudonymize => mode[j] = mode[j].max(1),
                    _ => {}
                }
            }
        }
        // What stays in the text is masked in the record.
        for (k, f) in found.iter().enumerate() {
            if mode[k] == 0 && f.category != Category::Injection && tally.any_selects(self, f) {
                if let Some(v) = text.get(f.span.clone()) {
                    book.scrub(v, &format!("[REDACTED:{}]", f.label()));
                }
            }
        }
        if mode.iter().any(|m| *m > 0) {
            let masked: SmallVec<[crate::transform::Masked<'_>; 4]> = found
                .iter()
                .zip(mode)
                .filter(|(_, m)| *m > 0)
                .map(|(f, m)| (f.span.clone(), f, m))
                .collect();
            *text = crate::transform::mask(text, &masked, vault);
            return true;
        }
        false
    }

    /// The tally's `language` rules on one text.
    fn check_language(&self, tally: &mut Tally, part: GuardPart, text: &str) {
        let mut detected: Option<Option<crate::language::Foreign>> = None;
        for &i in &tally.rules.clone() {
            let r = &self.rules[i];
            if !r.on(part) {
                continue;
            }
            for s in &r.select {
                let Select::Language(l) = s else { continue };
                let foreign = l.foreign(text);
                let _ = detected.insert(foreign.clone());
                let t = tally.at(i, part);
                t.ran = true;
                if let Some(f) = foreign {
                    t.found = true;
                    t.detect(Label::Borrowed("language"));
                    let e = format!("language {} ({:.2})", f.code, f.confidence);
                    if t.evidence.len() < 16 && !t.evidence.contains(&e) {
                        t.evidence.push(e);
                    }
                }
            }
        }
    }

    /// For a record whose call never reached the input stage: every value the input
    /// rules select in the request, into `book`'s masks (nothing is changed, no verdict
    /// is made: the rules did not run on the call).
    pub fn collect_input(&self, a: &Applicable, req: &ChatRequest, book: &mut Book) {
        for m in &req.messages {
            for p in &m.parts {
                let (part, text) = match p {
                    Part::Text(t) => (GuardPart::Text, t),
                    Part::ToolCall(c) => (GuardPart::ToolArguments, &c.arguments),
                    Part::ToolResult { content, .. } => (GuardPart::ToolResults, content),
                    _ => continue,
                };
                self.collect_text(a, part, text, book);
            }
        }
        let mut fields = crate::fields::Fields::of(req);
        // The model asked for, too: a call refused before its guard stage may have
        // been refused for naming no model, and its record keeps the name.
        fields.text.push_str(&req.model);
        if !fields.is_empty() {
            // A value across a separator masks nothing in the record (no field holds
            // it whole), so the joined text serves even when it could not be split.
            self.collect_text(a, GuardPart::Text, &fields.text, book);
        }
    }

    /// The same for one text (a body that did not parse, as `text`).
    pub fn collect_text(&self, a: &Applicable, part: GuardPart, text: &str, book: &mut Book) {
        let rules: Vec<&Rule> = a
            .input
            .iter()
            .map(|&i| &self.rules[i])
            .filter(|r| r.on(part))
            .collect();
        if rules.is_empty() || text.is_empty() {
            return;
        }
        let want = self.want(&a.input, part);
        let Ok(found) = self.scan_cached(text, want) else {
            return;
        };
        for f in found.iter() {
            if f.category != Category::Injection && rules.iter().any(|r| r.selects(f)) {
                if let Some(v) = text.get(f.span.clone()) {
                    book.scrub(v, &format!("[REDACTED:{}]", f.label()));
                }
            }
        }
    }

    /// Whether any of `rules` reads an answer's reasoning: only the detectors do (not
    /// length, schema or language rules).
    fn reads_reasoning(&self, rules: &[usize]) -> bool {
        self.want(rules, GuardPart::Reasoning).any()
    }

    /// For a record: every value the input rules select in a JSON object's strings
    /// (keys included), into `book`'s masks. A feature call's variables are recorded
    /// whole, and one that no template uses is never sent, so never checked on the way.
    pub fn collect_object(
        &self,
        a: &Applicable,
        o: &serde_json::Map<String, serde_json::Value>,
        book: &mut Book,
    ) {
        let mut text = String::new();
        crate::fields::object(o, &mut |s| {
            text.push_str(s);
            text.push(crate::fields::SEP);
        });
        // A value across a separator masks nothing (no string holds it whole).
        self.collect_text(a, GuardPart::Text, &text, book);
    }

    /// The output stage of a whole answer: text and tool-call arguments checked by the
    /// call's output rules (`block`, `redact`, `flag`, `shadow`); its
    /// model-based checks ([`Policy::asks_output`]) and placeholders ([`Policy::restore`])
    /// follow, then the disclaimers ([`Policy::disclaim`]).
    pub fn check_output(
        &self,
        a: &Applicable,
        resp: &mut ChatResponse,
        book: &mut Book,
    ) -> Result<(), Stop> {
        if !a.output.is_empty() {
            let started = Instant::now();
            let mut tally = Tally::new(self.local(&a.output), "output");
            let reads_reasoning = self.reads_reasoning(&a.output);
            for p in &mut resp.parts {
                if let Part::Reasoning(r) = p {
                    if !reads_reasoning {
                        continue;
                    }
                    for text in reasoning_texts(r) {
                        let part = GuardPart::Reasoning;
                        self.check_text(&mut tally, part, text, None, book, Source::Reasoning);
                    }
                    continue;
                }
                let Some((part, text)) = scanned_mut(p) else {
                    continue;
                };
                self.check_text(&mut tally, part, text, None, book, Source::Answer);
            }
            let whole_text_rules = a.output.iter().any(|&i| {
                self.rules[i]
                    .select
                    .iter()
                    .any(|s| matches!(s, Select::MaxLength(_) | Select::Schema(_)))
            });
            if whole_text_rules {
                self.check_answer_text(&mut tally, &resp.text(), false);
            }
            tally.finish(self, started.elapsed(), book)?;
        }
        Ok(())
    }

    /// The vault's placeholders in a whole answer put back (after its output checks,
    /// before the client sees it).
    pub fn restore(&self, resp: &mut ChatResponse, vault: &Vault) {
        if !vault.is_empty() {
            for p in &mut resp.parts {
                // A text with no `<` holds no placeholder: left as it is, not copied.
                match p {
                    Part::Text(t) if t.contains('<') => *t = vault.restore(t),
                    Part::ToolCall(c) if c.arguments.contains('<') => {
                        c.arguments = vault.restore_json(&c.arguments)
                    }
                    _ => {}
                }
            }
        }
    }

    /// The call's disclaimers added to a whole answer (after its parser has read it).
    pub fn disclaim(&self, a: &Applicable, resp: &mut ChatResponse) {
        if a.disclaimers.is_empty() {
            return;
        }
        // Into the text part it borders, if any: one content block, as the model's own.
        for &i in &a.disclaimers {
            let d = &self.disclaimers[i];
            match (d.position, &mut resp.parts[..]) {
                (DisclaimerPosition::Prepend, [Part::Text(t), ..]) => t.insert_str(0, &d.text),
                (DisclaimerPosition::Prepend, _) => {
                    resp.parts.insert(0, Part::Text(d.text.clone()))
                }
                (DisclaimerPosition::Append, [.., Part::Text(t)]) => t.push_str(&d.text),
                (DisclaimerPosition::Append, _) => resp.parts.push(Part::Text(d.text.clone())),
            }
        }
        // Adjacent texts as one part (an answer may come in more than one).
        if !resp
            .parts
            .windows(2)
            .any(|w| matches!(w, [Part::Text(_), Part::Text(_)]))
        {
            return;
        }
        let mut parts: Vec<Part> = Vec::with_capacity(resp.parts.len());
        for p in std::mem::take(&mut resp.parts) {
            match (parts.last_mut(), p) {
                (Some(Part::Text(a)), Part::Text(b)) => a.push_str(&b),
                (_, p) => parts.push(p),
            }
        }
        resp.parts = parts;
    }

    /// The checks on an answer's whole text: `max_length` and `json_schema` (and, for a
    /// stream, `language`: a whole answer's parts were checked one by one).
    fn check_answer_text(&self, tally: &mut Tally, text: &str, language: bool) {
        if language {
            self.check_language(tally, GuardPart::Text, text);
        }
        for &i in &tally.rules.clone() {
            let r = &self.rules[i];
            for s in &r.select {
                let failed = match s {
                    Select::MaxLength(max) => {
                        let n = text.chars().count();
                        (n > *max).then(|| format!("length {n} > {max}"))
                    }
                    Select::Schema(v) => match serde_json::from_str::<serde_json::Value>(text) {
                        Err(_) => Some("not JSON".to_string()),
                        Ok(value) => v.iter_errors(&value).next().map(|e| {
                            let at = e.instance_path().to_string();
                            format!("schema: at `{}`", if at.is_empty() { "/" } else { &at })
                        }),
                    },
                    _ => None,
                };
                let t = tally.at(i, GuardPart::Text);
                if matches!(s, Select::MaxLength(_) | Select::Schema(_)) {
                    t.ran = true;
                }
                if let Some(evidence) = failed {
                    t.found = true;
                    t.detect(Label::Borrowed(if matches!(s, Select::MaxLength(_)) {
                        "max_length"
                    } else {
                        "json_schema"
                    }));
                    t.evidence.push(evidence);
                }
            }
        }
    }

    /// A streamed answer's output guard.
    pub fn stream(self: &std::sync::Arc<Self>, a: Applicable, vault: Vault) -> OutStream {
        let whole = a.output.iter().any(|&i| {
            self.rules[i]
                .select
                .iter()
                .any(|s| matches!(s, Select::Schema(_) | Select::Language(_)))
        });
        let model_on = |part: GuardPart| {
            a.output
                .iter()
                .any(|&i| self.rules[i].model.is_some() && self.rules[i].on(part))
        };
        // A block rule checked at the end holds the whole answer until then.
        let hold = a.output.iter().any(|&i| {
            let r = &self.rules[i];
            r.at_end && r.action == GuardAction::Block
        });
        let local = self.local(&a.output);
        let reads_reasoning = self.reads_reasoning(&local);
        OutStream {
            policy: self.clone(),
            tally: Tally::new(local, "output"),
            pending: hold.then(Vec::new),
            late_text: model_on(GuardPart::Text).then(String::new),
            late_args: model_on(GuardPart::ToolArguments).then(Vec::new),
            ended: false,
            bytes: 0,
            late_settled: false,
            a,
            vault,
            restorer: Restorer::default(),
            held: String::new(),
            tail: String::new(),
            chars: 0,
            whole: whole.then(String::new),
            calls: Vec::new(),
            thinking: None,
            reads_reasoning,
            started_text: false,
            scan_time: std::time::Duration::ZERO,
            stopped: false,
        }
    }
}

fn compile_rule(
    r: &GuardRuleConfig,
    known: &[String],
    cfg: &GuardrailsConfig,
    classifiers: &[&str],
) -> Result<Rule, (&'static str, String)> {
    let deny = &cfg.deny;
    let mut select = Vec::new();
    for d in &r.detect {
        let s = match d.as_str() {
            "pii" => Select::Category(Category::Pii),
            "secrets" | "secret" => Select::Category(Category::Secret),
            "injection" => Select::Category(Category::Injection),
            "max_length" => Select::MaxLength(r.max_chars.unwrap_or(usize::MAX)),
            "json_schema" => {
                let schema = r.schema.clone().unwrap_or(serde_json::Value::Bool(true));
                let v = jsonschema::validator_for(&schema)
                    .map_err(|e| ("schema", format!("not a valid JSON Schema: {e}")))?;
                Select::Schema(Box::new(v))
            }
            "language" => Select::Language(
                crate::language::Languages::new(
                    &r.languages,
                    r.min_confidence
                        .unwrap_or(crate::language::DEFAULT_MIN_CONFIDENCE),
                )
                .map_err(|e| ("languages", e))?,
            ),
            s if s.starts_with("classifier.") => {
                let n = &s["classifier.".len()..];
                match classifiers.iter().position(|c| *c == n) {
                    Some(i) => Select::Model(Check::Classifier(i)),
                    None => {
                        return Err(("detect", format!("no classifier `{n}` in [guardrails.classifiers]")))
                    }
                }
            }
            s if s.starts_with("remote.") => {
                let n = &s["remote.".len()..];
                if !cfg.remote.contains_key(n) {
                    return Err(("detect", format!("no remote check `{n}` in [guardrails.remote]")));
                }
                Select::Model(Check::Remote(n.to_string()))
            }
            s if s.starts_with("deny.") => {
                if !deny.contains_key(&s[5..]) {
                    return Err(("detect", format!("no deny list `{}`", &s[5..])));
                }
                Select::Detector(s.to_string())
            }
            s if known.iter().any(|k| k == s) => Select::Detector(s.to_string()),
            s => {
                return Err((
                    "detect",
                    format!(
                        "unknown detector `{s}`; known: pii, secrets, injection, deny.<list>, language, classifier.<name>, remote.<name>, max_length, json_schema, {}",
                        known.join(", ")
                    ),
                ))
            }
        };
        select.push(s);
    }
    let mut parts = [false; 4];
    if r.parts.is_empty() {
        parts = [true; 4];
    }
    for p in &r.parts {
        parts[part_index(*p)] = true;
    }
    let mut want = Want::default();
    for s in &select {
        match s {
            Select::Category(Category::Pii) => want.pii = true,
            Select::Category(Category::Secret) => want.secrets = true,
            Select::Category(Category::Injection) => want.injection = true,
            Select::Category(Category::Deny) => want.deny = true,
            Select::Detector(d) if d.starts_with("pii.") => want.pii = true,
            Select::Detector(d) if d.starts_with("secret.") => want.secrets = true,
            Select::Detector(d) if d.starts_with("injection.") => want.injection = true,
            Select::Detector(_) => want.deny = true,
            Select::MaxLength(_) | Select::Schema(_) | Select::Language(_) | Select::Model(_) => {}
        }
    }
    let model = select.iter().find_map(|s| match s {
        Select::Model(c) => Some(c.clone()),
        _ => None,
    });
    let at_end = select
        .iter()
        .any(|s| matches!(s, Select::Language(_) | Select::Model(_)));
    Ok(Rule {
        model,
        at_end,
        name: Arc::from(r.name.as_str()),
        select,
        want,
        input: r.direction != GuardDirection::Output,
        output: r.direction != GuardDirection::Input,
        parts,
        action: r.action,
        routes: r.routes.clone(),
        features: r.features.clone(),
        keys: r.keys.clone(),
        on_error: r.on_error,
    })
}

/// What the guard stages of one call found that the call's record needs: the verdicts,
/// and the values to mask in the recorded copy of the request and answer (never
/// recorded themselves).
#[derive(Default)]
pub struct Book {
    pub verdicts: Vec<GuardVerdict>,
    scrub: Vec<(String, String)>,
    /// The values in `scrub`, once there are more than a handful: a text of many
    /// values (flagged addresses by the thousand) is then not checked against each.
    scrub_index: Option<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Book {
    /// Never the values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Book")
            .field("verdicts", &self.verdicts)
            .field("scrub", &self.scrub.len())
            .finish()
    }
}

impl Book {
    pub fn scrub(&mut self, value: &str, replacement: &str) {
        if value.is_empty() {
            return;
        }
        let known = match &self.scrub_index {
            Some(index) => index.contains(value),
            None => self.scrub.iter().any(|(v, _)| v == value),
        };
        if known {
            return;
        }
        self.scrub
            .push((value.to_string(), replacement.to_string()));
        if let Some(index) = &mut self.scrub_index {
            index.insert(value.to_string());
        } else if self.scrub.len() > 16 {
            self.scrub_index = Some(self.scrub.iter().map(|(v, _)| v.clone()).collect());
        }
    }

    /// What to mask a call's record with, once the call is over: the values rules
    /// found, and the vault's (moved, not copied).
    pub fn scrubber(self, vault: Option<Vault>) -> Option<crate::transform::Scrubber> {
        let mut pairs = self.scrub;
        if let Some(v) = vault {
            pairs.extend(v.into_pairs());
        }
        crate::transform::Scrubber::new(pairs)
    }
}

/// Per rule × part: what a direction's scan found.
#[derive(Default, Clone)]
struct Hits {
    ran: bool,
    found: bool,
    /// Each once; sorted when the verdict is made.
    detectors: Vec<Label>,
    evidence: Vec<String>,
    error: Option<String>,
}

impl Hits {
    fn detect(&mut self, name: Label) {
        if !self.detectors.contains(&name) {
            self.detectors.push(name);
        }
    }

    fn hit(&mut self, f: &Finding, text: &str) {
        self.found = true;
        if !self.detectors.contains(&f.rule) {
            self.detectors.push(f.rule.clone());
        }
        if f.category == Category::Injection {
            return;
        }
        // At most 16 pieces of evidence: once they are in, a finding costs no fingerprint
        // (no clone, no hash), however many a text holds.
        if self.evidence.len() >= 16 {
            return;
        }
        let fp = f.print_in(text);
        if !self.evidence.contains(&fp) {
            self.evidence.push(fp);
        }
    }
}

struct Tally {
    direction: &'static str,
    rules: Indices,
    /// Per rule, per part; inline for a call's handful of rules.
    hits: SmallVec<[[Hits; 4]; 4]>,
}

impl Tally {
    fn new(rules: Indices, direction: &'static str) -> Tally {
        Tally {
            direction,
            hits: std::iter::repeat_with(Default::default)
                .take(rules.len())
                .collect(),
            rules,
        }
    }

    fn at(&mut self, rule: usize, part: GuardPart) -> &mut Hits {
        let k = self.rules.iter().position(|&r| r == rule).unwrap_or(0);
        &mut self.hits[k][part_index(part)]
    }

    fn any_selects(&self, p: &Policy, f: &Finding) -> bool {
        self.rules.iter().any(|&i| p.rules[i].selects(f))
    }

    /// The verdicts into `book`; the first stop (in the config's rule order) if any.
    fn finish(
        &mut self,
        p: &Policy,
        took: std::time::Duration,
        book: &mut Book,
    ) -> Result<(), Stop> {
        let latency_us = took.as_micros() as u64;
        let mut stop = None;
        for (k, &i) in self.rules.iter().enumerate() {
            let r = &p.rules[i];
            for part in GuardPart::ALL {
                let mut h = std::mem::take(&mut self.hits[k][part_index(part)]);
                if !h.ran && h.error.is_none() {
                    continue;
                }
                h.detectors.sort_unstable();
                let outcome = match (&h.error, h.found, r.action) {
                    (Some(_), _, _) => "error",
                    (None, false, _) => "pass",
                    (None, true, GuardAction::Block) => "blocked",
                    // Reasoning is never changed: what these rules found there stays
                    // (and is masked in the record), so they only flagged it.
                    (None, true, GuardAction::Redact | GuardAction::Pseudonymize)
                        if part == GuardPart::Reasoning =>
                    {
                        "flagged"
                    }
                    (None, true, GuardAction::Redact) => "redacted",
                    (None, true, GuardAction::Pseudonymize) => "pseudonymized",
                    (None, true, GuardAction::Flag) => "flagged",
                    (None, true, GuardAction::Shadow) => "would_block",
                };
                if stop.is_none() {
                    if let Some(reason) = &h.error {
                        if r.on_error == FailMode::FailClosed {
                            stop = Some(Stop::Failed {
                                rule: r.name.to_string(),
                                reason: reason.clone(),
                            });
                        }
                    } else if outcome == "blocked" {
                        stop = Some(Stop::Blocked {
                            rule: r.name.to_string(),
                            direction: self.direction,
                            part: part.name(),
                            detectors: h.detectors.iter().map(|d| d.to_string()).collect(),
                        });
                    }
                }
                let mut evidence = h.evidence;
                if let Some(e) = h.error {
                    evidence.push(e);
                }
                book.verdicts.push(GuardVerdict {
                    rule: r.name.clone(),
                    direction: Label::Borrowed(self.direction),
                    part: Label::Borrowed(part.name()),
                    action: Label::Borrowed(r.action.name()),
                    outcome: Label::Borrowed(outcome),
                    detectors: h.detectors,
                    evidence,
                    latency_us,
                });
            }
        }
        stop.map_or(Ok(()), Err)
    }
}

/// A tool call being held until it is complete.
struct HeldCall {
    index: u32,
    id: String,
    name: String,
    arguments: String,
}

/// A thinking block being held until it is complete (its text, then its signature).
#[derive(Default)]
struct HeldThinking {
    /// Whether the block's start came (and goes out again before its text): thinking
    /// text without one (an upstream that skips it, or the rest of a block longer than
    /// a scan reads) is held and checked all the same, and goes out as it came.
    started: bool,
    text: String,
    signature: String,
}

/// Bytes of released text kept as left context for the next scan (word boundaries).
const CONTEXT: usize = 32;

/// The output guard of one streamed answer: events in, the events the client may see
/// out. See the module header.
pub struct OutStream {
    policy: std::sync::Arc<Policy>,
    a: Applicable,
    tally: Tally,
    vault: Vault,
    restorer: Restorer,
    /// Text received and not yet released.
    held: String,
    /// The end of the released text (as the model wrote it), for context.
    tail: String,
    /// Characters of answer text so far (for `max_length`).
    chars: usize,
    /// The whole text, when a `json_schema` rule needs it at the end.
    whole: Option<String>,
    calls: Vec<HeldCall>,
    /// The open thinking block, held whole while rules read reasoning.
    thinking: Option<HeldThinking>,
    /// [`Policy::reads_reasoning`] of the stream's rules: only then is thinking held.
    reads_reasoning: bool,
    started_text: bool,
    scan_time: std::time::Duration,
    stopped: bool,
    /// Events the client may see, held until the end-of-stream checks pass (a `block`
    /// rule checked at the end: language, model checks).
    pending: Option<Vec<StreamEvent>>,
    /// The released text and the completed tool-call arguments, as the client sees
    /// them before placeholders are restored: for the model-based checks at the end.
    late_text: Option<String>,
    late_args: Option<Vec<String>>,
    ended: bool,
    /// Bytes of text and tool-call arguments received.
    bytes: usize,
    /// The model-based checks were settled early (the answer outgrew what they read).
    late_settled: bool,
}

impl OutStream {
    /// Whether model-based checks run when the stream ends ([`OutStream::late_asks`]).
    pub fn has_late(&self) -> bool {
        !self.late_settled
            && self
                .a
                .output
                .iter()
                .any(|&i| self.policy.rules[i].model.is_some())
    }

    /// The model-based checks of the whole streamed answer (after [`OutStream::finish`]).
    pub fn late_asks(&self) -> Vec<Ask> {
        let text = self.late_text.clone().unwrap_or_default();
        let args = self.late_args.clone().unwrap_or_default();
        self.policy
            .asks(&self.a.output, "output", |part| match part {
                GuardPart::Text if !text.is_empty() => vec![text.clone()],
                GuardPart::ToolArguments => args.clone(),
                _ => Vec::new(),
            })
    }

    /// Their outcomes: a stop ends the stream with an error event (what was held is
    /// never sent); otherwise what was held is released by [`OutStream::take_pending`].
    pub fn settle_late(
        &mut self,
        outcomes: Vec<(Ask, Result<ModelFinding, String>)>,
        took: std::time::Duration,
        book: &mut Book,
    ) -> Result<(), Stop> {
        let r = self.policy.clone().settle("output", outcomes, took, book);
        if r.is_err() {
            self.stopped = true;
            self.pending = None;
        }
        r
    }

    /// The events held for the end-of-stream checks, once they passed.
    pub fn take_pending(&mut self) -> Vec<StreamEvent> {
        self.pending.take().unwrap_or_default()
    }
    /// Whether rules checked as the stream goes look at a part.
    fn rules_on(&self, part: GuardPart) -> bool {
        self.tally
            .rules
            .iter()
            .any(|&i| self.policy.rules[i].on(part))
    }

    /// One upstream event: what may go to the client now is pushed on `out`.
    pub fn push(
        &mut self,
        ev: StreamEvent,
        out: &mut Vec<StreamEvent>,
        book: &mut Book,
    ) -> Result<(), Stop> {
        if self.stopped {
            return Ok(());
        }
        self.bytes += match &ev {
            StreamEvent::Text(t) => t.len(),
            StreamEvent::ToolCallDelta { arguments, .. } => arguments.len(),
            _ => 0,
        };
        let r = match self.pending.take() {
            Some(mut held) => {
                let r = self.push_inner(ev, &mut held, book);
                self.pending = Some(held);
                r
            }
            None => self.push_inner(ev, out, book),
        }
        .and_then(|()| self.bound(out, book));
        if r.is_err() {
            self.stopped = true;
            self.pending = None;
        }
        r
    }

    /// What is kept for the end-of-stream checks (the whole text, the held events) is
    /// bounded by `max_scan_bytes`: past it those checks cannot run (a hostile or
    /// runaway upstream would otherwise fill memory). Their rules' `on_error` decides
    /// now: a `fail_closed` one ends the stream, `fail_open` ones record the error and
    /// what was held is released.
    fn bound(&mut self, out: &mut Vec<StreamEvent>, book: &mut Book) -> Result<(), Stop> {
        let keeps = self.whole.is_some()
            || self.late_text.is_some()
            || self.late_args.is_some()
            || self.pending.is_some();
        if !keeps || self.bytes <= self.policy.max_scan {
            return Ok(());
        }
        let reason = format!(
            "the answer is longer than max_scan_bytes = {}",
            self.policy.max_scan
        );
        for k in 0..self.tally.rules.len() {
            let r = &self.policy.rules[self.tally.rules[k]];
            if r.select
                .iter()
                .any(|s| matches!(s, Select::Schema(_) | Select::Language(_)))
            {
                self.tally.hits[k][0].error = Some(reason.clone());
            }
        }
        self.whole = None;
        let outcomes: Vec<(Ask, Result<ModelFinding, String>)> = self
            .a
            .output
            .iter()
            .filter_map(|&i| {
                let r = &self.policy.rules[i];
                let check = r.model.clone()?;
                let ask = Ask {
                    rule: i,
                    rule_name: r.name.to_string(),
                    check,
                    direction: "output",
                    part: GuardPart::Text,
                    texts: Vec::new(),
                };
                Some((ask, Err(reason.clone())))
            })
            .collect();
        self.late_text = None;
        self.late_args = None;
        self.late_settled = true;
        let settled = if outcomes.is_empty() {
            Ok(())
        } else {
            self.policy
                .clone()
                .settle("output", outcomes, std::time::Duration::ZERO, book)
        };
        self.stop_if_blocked()?;
        settled?;
        if let Some(mut held) = self.pending.take() {
            out.append(&mut held);
        }
        Ok(())
    }

    fn push_inner(
        &mut self,
        ev: StreamEvent,
        out: &mut Vec<StreamEvent>,
        book: &mut Book,
    ) -> Result<(), Stop> {
        // A held thinking block ends where anything but its own text, its signature or
        // metadata comes.
        if self.thinking.is_some()
            && !matches!(
                ev,
                StreamEvent::ThinkingDelta(_)
                    | StreamEvent::SignatureDelta(_)
                    | StreamEvent::Usage(_)
                    | StreamEvent::Details(_)
            )
        {
            self.complete_thinking(out, book)?;
        }
        match ev {
            StreamEvent::ThinkingStart if self.reads_reasoning => {
                self.release(true, out, book)?;
                self.complete_calls(out, book)?;
                self.thinking = Some(HeldThinking {
                    started: true,
                    ..HeldThinking::default()
                });
                Ok(())
            }
            // Every piece of thinking text is held and checked, with or without a start
            // before it: a hostile upstream cannot get reasoning past the rules by
            // leaving the block's start out.
            StreamEvent::ThinkingDelta(t) if self.reads_reasoning => {
                if self.thinking.is_none() {
                    self.release(true, out, book)?;
                    self.complete_calls(out, book)?;
                }
                let held = self.thinking.get_or_insert_with(HeldThinking::default);
                held.text.push_str(&t);
                // Past what a scan reads, the held text cannot be checked whole: its
                // rules' `on_error` decides now (a `fail_open` one lets it through, and
                // the rest is held and checked in pieces of its own), rather than the
                // gateway holding whatever it is sent.
                if held.text.len() > self.policy.max_scan {
                    self.complete_thinking(out, book)?;
                }
                Ok(())
            }
            StreamEvent::SignatureDelta(sig) if self.thinking.is_some() => {
                let held = self.thinking.get_or_insert_with(HeldThinking::default);
                held.signature.push_str(&sig);
                Ok(())
            }
            StreamEvent::Reasoning(mut r) if self.reads_reasoning => {
                self.release(true, out, book)?;
                self.complete_calls(out, book)?;
                self.check_reasoning(reasoning_texts(&mut r), book)?;
                out.push(StreamEvent::Reasoning(r));
                Ok(())
            }
            StreamEvent::Text(t) => {
                self.complete_calls(out, book)?;
                self.prepend(out);
                self.chars += t.chars().count();
                if let Some(w) = &mut self.whole {
                    w.push_str(&t);
                }
                self.held.push_str(&t);
                self.check_length()?;
                self.release(false, out, book)
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.release(true, out, book)?;
                self.prepend(out);
                self.calls.push(HeldCall {
                    index,
                    id,
                    name,
                    arguments: String::new(),
                });
                Ok(())
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                match self.calls.iter_mut().find(|c| c.index == index) {
                    Some(c) => c.arguments.push_str(&arguments),
                    // A delta of a call not held (its start came before the guard):
                    // checked alone.
                    None => {
                        let mut c = HeldCall {
                            index,
                            id: String::new(),
                            name: String::new(),
                            arguments,
                        };
                        self.check_call(&mut c, book)?;
                        out.push(StreamEvent::ToolCallDelta {
                            index,
                            arguments: c.arguments,
                        });
                    }
                }
                Ok(())
            }
            // Metadata: no content, no order to keep with it.
            ev @ (StreamEvent::Usage(_) | StreamEvent::Details(_) | StreamEvent::Start { .. }) => {
                out.push(ev);
                Ok(())
            }
            StreamEvent::Finish(reason) => {
                self.end(out, book)?;
                out.push(StreamEvent::Finish(reason));
                Ok(())
            }
            ev => {
                self.release(true, out, book)?;
                self.complete_calls(out, book)?;
                out.push(ev);
                Ok(())
            }
        }
    }

    /// The upstream ended: what is still held, checked and released.
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>, book: &mut Book) -> Result<(), Stop> {
        if self.stopped {
            return Ok(());
        }
        let r = match self.pending.take() {
            // Held for checks at the end: the sync ones (language) have run in `end`;
            // with no model checks to wait for, what was held goes now.
            Some(mut held) => {
                let r = self.end(&mut held, book);
                if self.has_late() {
                    self.pending = Some(held);
                } else if r.is_ok() {
                    out.append(&mut held);
                }
                r
            }
            None => self.end(out, book),
        };
        if r.is_err() {
            self.stopped = true;
            self.pending = None;
        }
        r
    }

    /// The verdicts of the stream (once, when it is over or cut).
    pub fn close(&mut self, book: &mut Book) {
        let mut tally = std::mem::replace(&mut self.tally, Tally::new(Indices::new(), "output"));
        // The vault's values are masked from the call's own vault (this one is a copy).
        let _ = tally.finish(&self.policy, self.scan_time, book);
    }

    fn end(&mut self, out: &mut Vec<StreamEvent>, book: &mut Book) -> Result<(), Stop> {
        // Once: at the model's finish event, or when the upstream ends without one.
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        self.complete_thinking(out, book)?;
        self.release(true, out, book)?;
        self.complete_calls(out, book)?;
        if let Some(whole) = self.whole.take() {
            let t0 = Instant::now();
            let policy = self.policy.clone();
            policy.check_answer_text(&mut self.tally, &whole, true);
            self.scan_time += t0.elapsed();
            self.stop_if_blocked()?;
        }
        self.prepend(out);
        let rest = self.restorer.finish(&self.vault);
        if !rest.is_empty() {
            out.push(StreamEvent::Text(rest));
        }
        for &i in &self.a.disclaimers {
            let d = &self.policy.disclaimers[i];
            if d.position == DisclaimerPosition::Append {
                out.push(StreamEvent::Text(d.text.clone()));
            }
        }
        Ok(())
    }

    fn prepend(&mut self, out: &mut Vec<StreamEvent>) {
        if self.started_text {
            return;
        }
        self.started_text = true;
        for &i in &self.a.disclaimers {
            let d = &self.policy.disclaimers[i];
            if d.position == DisclaimerPosition::Prepend {
                out.push(StreamEvent::Text(d.text.clone()));
            }
        }
    }

    fn check_length(&mut self) -> Result<(), Stop> {
        for k in 0..self.tally.rules.len() {
            let i = self.tally.rules[k];
            let r = &self.policy.rules[i];
            for s in &r.select {
                if let Select::MaxLength(max) = s {
                    let t = &mut self.tally.hits[k][0];
                    t.ran = true;
                    if self.chars > *max && !t.found {
                        t.found = true;
                        t.detect(Label::Borrowed("max_length"));
                        t.evidence.push(format!("length > {max}"));
                    }
                }
            }
        }
        self.stop_if_blocked()
    }

    /// A `block` rule (or a failing `fail_closed` one) that has found something stops
    /// the stream now.
    fn stop_if_blocked(&self) -> Result<(), Stop> {
        for (k, &i) in self.tally.rules.iter().enumerate() {
            let r = &self.policy.rules[i];
            for part in GuardPart::ALL {
                let h = &self.tally.hits[k][part_index(part)];
                if let Some(reason) = &h.error {
                    if r.on_error == FailMode::FailClosed {
                        return Err(Stop::Failed {
                            rule: r.name.to_string(),
                            reason: reason.clone(),
                        });
                    }
                }
                if h.found && r.action == GuardAction::Block {
                    let mut detectors: Vec<String> =
                        h.detectors.iter().map(|d| d.to_string()).collect();
                    detectors.sort_unstable();
                    return Err(Stop::Blocked {
                        rule: r.name.to_string(),
                        direction: "output",
                        part: part.name(),
                        detectors,
                    });
                }
            }
        }
        Ok(())
    }

    /// Scans the held text; releases what is older than the hold-back window (all of
    /// it when `all`), with `redact` findings masked and placeholders restored.
    fn release(
        &mut self,
        all: bool,
        out: &mut Vec<StreamEvent>,
        book: &mut Book,
    ) -> Result<(), Stop> {
        if self.held.is_empty() {
            return Ok(());
        }
        let hold = self.policy.hold_back;
        if !all && self.held.len() <= hold {
            return Ok(());
        }
        if !self.rules_on(GuardPart::Text) {
            let text = std::mem::take(&mut self.held);
            self.emit(text, out);
            return Ok(());
        }
        let t0 = Instant::now();
        // The scanned text: the end of what was released (context), then what is held.
        let ctx = self.tail.len();
        let mut scanned = String::with_capacity(ctx + self.held.len());
        scanned.push_str(&self.tail);
        scanned.push_str(&self.held);
        let want = self.policy.want(&self.tally.rules, GuardPart::Text);
        let found = match self.policy.scan(&scanned, want) {
            Ok(f) => f,
            Err(reason) => {
                for k in 0..self.tally.rules.len() {
                    let i = self.tally.rules[k];
                    if self.policy.rules[i].on(GuardPart::Text) {
                        self.tally.hits[k][0].error = Some(reason.clone());
                    }
                }
                self.scan_time += t0.elapsed();
                self.stop_if_blocked()?;
                let text = std::mem::take(&mut self.held);
                self.emit(text, out);
                return Ok(());
            }
        };
        // Where the release ends (in `scanned`): the window's start, moved back to the
        // start of a finding that crosses it (the finding may still grow).
        let mut cut = if all {
            scanned.len()
        } else {
            floor_boundary(&scanned, scanned.len() - hold)
        };
        loop {
            let crossing = found.iter().find(|f| {
                f.category != Category::Injection && f.span.start < cut && f.span.end > cut
            });
            match crossing {
                Some(f) => cut = f.span.start.max(ctx),
                None => break,
            }
        }
        let mut masked: Vec<crate::transform::Masked<'_>> = Vec::new();
        for f in &found {
            // Already released (all of it in the context): handled then.
            if f.span.end <= ctx && f.category != Category::Injection {
                continue;
            }
            let settled = f.category == Category::Injection || f.span.end <= cut;
            let mut redact = false;
            let mut selected = false;
            for k in 0..self.tally.rules.len() {
                let i = self.tally.rules[k];
                let r = &self.policy.rules[i];
                if !r.on(GuardPart::Text) || !r.selects(f) {
                    continue;
                }
                let t = &mut self.tally.hits[k][0];
                t.ran = true;
                // A block acts on a match as soon as it is seen; the others once the
                // match is settled (it will not grow).
                if r.action == GuardAction::Block || settled {
                    t.hit(f, &scanned);
                }
                redact |= r.action == GuardAction::Redact;
                selected = true;
            }
            // Masked in the record even while it may still grow (a stream cut at a
            // block ends with it so).
            if selected && f.category != Category::Injection {
                if let Some(v) = scanned.get(f.span.clone()) {
                    book.scrub(v, &format!("[REDACTED:{}]", f.label()));
                }
            }
            if settled && redact && f.category != Category::Injection {
                // A match that begins in the context (a different reading of text
                // already released) is masked from where the held text starts.
                masked.push((f.span.start.max(ctx)..f.span.end, f, 2));
            }
        }
        for k in 0..self.tally.rules.len() {
            if self.policy.rules[self.tally.rules[k]].on(GuardPart::Text) {
                self.tally.hits[k][0].ran = true;
            }
        }
        self.scan_time += t0.elapsed();
        self.stop_if_blocked()?;
        if cut <= ctx {
            return Ok(());
        }
        let released = &scanned[..cut];
        let text = if masked.is_empty() {
            released[ctx..].to_string()
        } else {
            let m = crate::transform::mask(released, &masked, None);
            // The context is not masked: its findings were settled before.
            m[ctx..].to_string()
        };
        // The new context: the end of the released text, as written.
        let start = floor_boundary(released, released.len().saturating_sub(CONTEXT));
        self.tail = released[start..].to_string();
        self.held = scanned[cut..].to_string();
        self.emit(text, out);
        Ok(())
    }

    fn emit(&mut self, text: String, out: &mut Vec<StreamEvent>) {
        if let Some(l) = &mut self.late_text {
            l.push_str(&text);
        }
        let text = self.restorer.push(&self.vault, &text);
        if !text.is_empty() {
            out.push(StreamEvent::Text(text));
        }
    }

    fn complete_calls(&mut self, out: &mut Vec<StreamEvent>, book: &mut Book) -> Result<(), Stop> {
        if self.calls.is_empty() {
            return Ok(());
        }
        let calls = std::mem::take(&mut self.calls);
        for mut c in calls {
            self.check_call(&mut c, book)?;
            out.push(StreamEvent::ToolCallStart {
                index: c.index,
                id: c.id,
                name: c.name,
            });
            out.push(StreamEvent::ToolCallDelta {
                index: c.index,
                arguments: c.arguments,
            });
        }
        Ok(())
    }

    /// The held thinking block, checked whole, goes out as its start, its text and its
    /// signature.
    fn complete_thinking(
        &mut self,
        out: &mut Vec<StreamEvent>,
        book: &mut Book,
    ) -> Result<(), Stop> {
        let Some(mut held) = self.thinking.take() else {
            return Ok(());
        };
        self.check_reasoning(smallvec::smallvec![&mut held.text], book)?;
        if held.started {
            out.push(StreamEvent::ThinkingStart);
        }
        if !held.text.is_empty() {
            out.push(StreamEvent::ThinkingDelta(held.text));
        }
        if !held.signature.is_empty() {
            out.push(StreamEvent::SignatureDelta(held.signature));
        }
        Ok(())
    }

    fn check_reasoning(
        &mut self,
        texts: SmallVec<[&mut String; 2]>,
        book: &mut Book,
    ) -> Result<(), Stop> {
        let t0 = Instant::now();
        let policy = self.policy.clone();
        for text in texts {
            let part = GuardPart::Reasoning;
            policy.check_text(&mut self.tally, part, text, None, book, Source::Reasoning);
        }
        self.scan_time += t0.elapsed();
        self.stop_if_blocked()
    }

    fn check_call(&mut self, c: &mut HeldCall, book: &mut Book) -> Result<(), Stop> {
        if self.rules_on(GuardPart::ToolArguments) {
            let t0 = Instant::now();
            let policy = self.policy.clone();
            policy.check_text(
                &mut self.tally,
                GuardPart::ToolArguments,
                &mut c.arguments,
                None,
                book,
                Source::Answer,
            );
            self.scan_time += t0.elapsed();
            self.stop_if_blocked()?;
        }
        if let Some(l) = &mut self.late_args {
            l.push(c.arguments.clone());
        }
        if !self.vault.is_empty() {
            c.arguments = self.vault.restore_json(&c.arguments);
        }
        Ok(())
    }
}

/// The largest char boundary of `s` at or before `at`.
fn floor_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests;
