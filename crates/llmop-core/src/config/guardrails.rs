//! `[guardrails]`: which detectors run on which calls, in which direction, and what a
//! finding does. The detectors themselves are `llmop-guard`'s; the rule names a
//! selector may use (`secret.github_token`) are checked when the gateway compiles the
//! policy (at start, and by `llmop check`).

use super::{key, Config, KeySeg, Problems};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailsConfig {
    /// PII detector settings, shared by every rule that selects `pii`.
    #[serde(default)]
    pub pii: GuardPiiConfig,
    /// Deny lists by name; a rule selects one as `deny.<name>`.
    #[serde(default)]
    pub deny: BTreeMap<String, DenyListConfig>,
    /// Bytes of a streamed answer's text held back and scanned before the client sees
    /// them: a value up to this long is caught before any of it is sent.
    #[serde(default = "default_hold_back")]
    pub stream_hold_back_bytes: usize,
    /// A text longer than this is not scanned (the rule's `on_error` decides).
    #[serde(default = "default_max_scan")]
    pub max_scan_bytes: usize,
    #[serde(default)]
    pub rules: Vec<GuardRuleConfig>,
    /// Fixed texts added to every answer of the routes and features they name.
    #[serde(default)]
    pub disclaimers: Vec<DisclaimerConfig>,
    /// ONNX text classifiers by name, run in process; a rule selects one as
    /// `classifier.<name>`.
    #[serde(default)]
    pub classifiers: BTreeMap<String, ClassifierConfig>,
    /// Remote check services by name; a rule selects one as `remote.<name>`.
    #[serde(default)]
    pub remote: BTreeMap<String, RemoteCheckConfig>,
}

/// An ONNX sequence classifier the operator supplies (e.g. a prompt-injection model
/// exported from Hugging Face): token ids in, one logit per label out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// The `.onnx` file (relative paths: to the config file's directory).
    pub model: std::path::PathBuf,
    /// Its `tokenizer.json` (the Hugging Face tokenizers format).
    pub tokenizer: std::path::PathBuf,
    /// The model's labels, in the order of its output logits.
    pub labels: Vec<String>,
    /// The labels that are a finding.
    pub flag: Vec<String>,
    /// The probability (softmax over the logits) a flagged label needs.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// Tokens per window; a longer text is read in overlapping windows and its most
    /// flagged window decides.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Tokens two windows share.
    #[serde(default = "default_stride")]
    pub stride: usize,
    /// A text that needs more windows than this is not checked (the rule's
    /// `on_error` decides).
    #[serde(default = "default_max_windows")]
    pub max_windows: usize,
    /// How long a call waits for the classifier; past it, the rule's `on_error`.
    #[serde(default = "default_check_timeout")]
    pub timeout_ms: u64,
    /// Texts classified at once (default: the machine's cores).
    #[serde(default)]
    pub concurrency: Option<usize>,
}

fn default_threshold() -> f32 {
    0.5
}
fn default_max_tokens() -> usize {
    512
}
fn default_stride() -> usize {
    64
}
fn default_max_windows() -> usize {
    16
}
fn default_check_timeout() -> u64 {
    1000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteProtocol {
    /// llmop's own: `{"rule", "direction", "part", "texts"}` in,
    /// `{"flagged", "labels", "score"}` out (docs/guardrails.md).
    #[default]
    Llmop,
    /// OpenAI's moderation API (`POST /v1/moderations`) and services that speak it.
    OpenaiModeration,
}

/// A check service called over HTTP during the guard stages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteCheckConfig {
    pub url: String,
    #[serde(default)]
    pub protocol: RemoteProtocol,
    /// How long a call waits for the service; past it, the rule's `on_error`.
    #[serde(default = "default_check_timeout")]
    pub timeout_ms: u64,
    /// Environment variable holding a bearer token for the service (never recorded).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// `model` sent with `openai_moderation` requests.
    #[serde(default)]
    pub model: Option<String>,
    /// Only these categories count as a finding (`openai_moderation`: its category
    /// names; `llmop`: the labels the service returns). Empty: the service's own
    /// `flagged`.
    #[serde(default)]
    pub categories: Vec<String>,
}

impl Default for GuardrailsConfig {
    fn default() -> Self {
        GuardrailsConfig {
            pii: GuardPiiConfig::default(),
            deny: BTreeMap::new(),
            stream_hold_back_bytes: default_hold_back(),
            max_scan_bytes: default_max_scan(),
            rules: Vec::new(),
            disclaimers: Vec::new(),
            classifiers: BTreeMap::new(),
            remote: BTreeMap::new(),
        }
    }
}

fn default_hold_back() -> usize {
    256
}

fn default_max_scan() -> usize {
    4 * 1024 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardPiiConfig {
    /// Locales for national formats (phone numbers without `+`, national ids).
    #[serde(default = "default_locales")]
    pub locales: Vec<String>,
}

impl Default for GuardPiiConfig {
    fn default() -> Self {
        GuardPiiConfig {
            locales: default_locales(),
        }
    }
}

fn default_locales() -> Vec<String> {
    vec!["us".into()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyListConfig {
    /// Exact terms, matched case-insensitively on word boundaries.
    #[serde(default)]
    pub terms: Vec<String>,
    /// Regular expressions.
    #[serde(default)]
    pub patterns: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    /// Refuse the call (422 `guardrail_blocked`), or cut the stream.
    Block,
    /// Mask the value (`[REDACTED:EMAIL]`).
    Redact,
    /// Replace the value by a placeholder the answer's copy is restored from (input only).
    Pseudonymize,
    /// Record the finding; change nothing.
    Flag,
    /// Record that the rule would have blocked; change nothing.
    Shadow,
}

impl GuardAction {
    pub fn name(self) -> &'static str {
        match self {
            GuardAction::Block => "block",
            GuardAction::Redact => "redact",
            GuardAction::Pseudonymize => "pseudonymize",
            GuardAction::Flag => "flag",
            GuardAction::Shadow => "shadow",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardDirection {
    /// What the client sends, before the provider sees it.
    Input,
    /// What the model answers, before the client sees it.
    Output,
    #[default]
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardPart {
    /// Message text (system, user, assistant).
    Text,
    /// Tool-call arguments (the model's proposed calls; earlier ones in the history).
    ToolArguments,
    /// Tool results the client sends back.
    ToolResults,
    /// An answer's reasoning the client sees (Anthropic thinking, Gemini thought
    /// summaries, OpenAI reasoning summaries). Read on output only, and never changed:
    /// the provider needs it back as it gave it.
    Reasoning,
}

impl GuardPart {
    pub const ALL: [GuardPart; 4] = [
        GuardPart::Text,
        GuardPart::ToolArguments,
        GuardPart::ToolResults,
        GuardPart::Reasoning,
    ];
    pub fn name(self) -> &'static str {
        match self {
            GuardPart::Text => "text",
            GuardPart::ToolArguments => "tool_arguments",
            GuardPart::ToolResults => "tool_results",
            GuardPart::Reasoning => "reasoning",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// A rule that cannot check a call lets it through (recorded as an error).
    FailOpen,
    /// A rule that cannot check a call refuses it (422 `guardrail_error`).
    #[default]
    FailClosed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardRuleConfig {
    /// Named in errors, records and metrics.
    pub name: String,
    /// What the rule looks for: `pii`, `pii.<kind>`, `secrets`, `secret.<rule>`,
    /// `injection`, `injection.<signal>`, `deny.<list>`; `max_length` (output, with
    /// `max_chars`) and `json_schema` (output, with `schema`).
    pub detect: Vec<String>,
    #[serde(default)]
    pub direction: GuardDirection,
    pub action: GuardAction,
    /// Parts scanned; default all.
    #[serde(default)]
    pub parts: Vec<GuardPart>,
    /// Calls the rule applies to: through these routes, of these features, by these
    /// key ids. Empty: all. A call must match every list that is not empty.
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub on_error: FailMode,
    /// For `max_length`: the most characters an answer's text may have.
    #[serde(default)]
    pub max_chars: Option<usize>,
    /// For `json_schema`: the JSON Schema an answer's text must satisfy.
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
    /// For `language`: the languages a text may be in (ISO 639-1 `en` or 639-3 `eng`).
    #[serde(default)]
    pub languages: Vec<String>,
    /// For `language`: the detector's confidence a finding needs (0 to 1; default 0.5).
    #[serde(default)]
    pub min_confidence: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisclaimerPosition {
    Prepend,
    #[default]
    Append,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisclaimerConfig {
    pub text: String,
    #[serde(default)]
    pub position: DisclaimerPosition,
    /// Routes and features whose answers carry it; both empty: every answer.
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub features: Vec<String>,
}

/// Detector families a selector may start with.
const FAMILIES: [&str; 6] = ["pii", "secret", "injection", "deny", "classifier", "remote"];

pub(super) fn validate(c: &Config, out: &mut Problems) {
    let g = &c.guardrails;
    if !(16..=65_536).contains(&g.stream_hold_back_bytes) {
        out.push((
            key(&["guardrails", "stream_hold_back_bytes"]),
            "must be between 16 and 65536".into(),
        ));
    }
    if g.max_scan_bytes < 1024 {
        out.push((
            key(&["guardrails", "max_scan_bytes"]),
            "must be at least 1024".into(),
        ));
    }
    for (name, list) in &g.deny {
        if list.terms.is_empty() && list.patterns.is_empty() {
            out.push((
                key(&["guardrails", "deny", name]),
                "a deny list needs `terms` or `patterns`".into(),
            ));
        }
    }
    for (name, m) in &g.classifiers {
        let at = |f: &str| key(&["guardrails", "classifiers", name, f]);
        if m.labels.len() < 2 {
            out.push((
                at("labels"),
                "name the model's labels, in the order of its outputs".into(),
            ));
        }
        if m.flag.is_empty() {
            out.push((at("flag"), "name the labels that are a finding".into()));
        }
        for l in &m.flag {
            if !m.labels.contains(l) {
                out.push((at("flag"), format!("`{l}` is not one of `labels`")));
            }
        }
        if !(m.threshold > 0.0 && m.threshold < 1.0) {
            out.push((at("threshold"), "must be between 0 and 1".into()));
        }
        if !(8..=8192).contains(&m.max_tokens) {
            out.push((at("max_tokens"), "must be between 8 and 8192".into()));
        }
        if m.stride >= m.max_tokens / 2 {
            out.push((at("stride"), "must be less than half of max_tokens".into()));
        }
        if m.max_windows == 0 {
            out.push((at("max_windows"), "must be at least 1".into()));
        }
        if !(1..=60_000).contains(&m.timeout_ms) {
            out.push((at("timeout_ms"), "must be between 1 and 60000".into()));
        }
        if m.concurrency == Some(0) {
            out.push((at("concurrency"), "must be at least 1".into()));
        }
    }
    for (name, r) in &g.remote {
        let at = |f: &str| key(&["guardrails", "remote", name, f]);
        if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
            out.push((at("url"), "must be an http:// or https:// URL".into()));
        }
        if !(1..=60_000).contains(&r.timeout_ms) {
            out.push((at("timeout_ms"), "must be between 1 and 60000".into()));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, r) in g.rules.iter().enumerate() {
        let at = |field: &str| {
            vec![
                KeySeg::Key("guardrails".into()),
                KeySeg::Key("rules".into()),
                KeySeg::Idx(i),
                KeySeg::Key(field.into()),
            ]
        };
        if r.name.is_empty()
            || !r
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            out.push((
                at("name"),
                "a rule name is letters, digits, `-`, `_` or `.`".into(),
            ));
        } else if !seen.insert(r.name.as_str()) {
            out.push((at("name"), format!("rule `{}` is named twice", r.name)));
        }
        if r.detect.is_empty() {
            out.push((at("detect"), "name at least one detector".into()));
        }
        let mut whole = false;
        for d in &r.detect {
            match d.as_str() {
                "max_length" => {
                    whole = true;
                    if r.max_chars.is_none() {
                        out.push((at("max_chars"), "`max_length` needs `max_chars`".into()));
                    }
                }
                "json_schema" => {
                    whole = true;
                    if r.schema.is_none() {
                        out.push((at("schema"), "`json_schema` needs `schema`".into()));
                    }
                }
                "pii" | "secrets" => {}
                "injection" => whole = true,
                "language" => {
                    whole = true;
                    if r.min_confidence.is_some_and(|c| !(0.0..=1.0).contains(&c)) {
                        out.push((at("min_confidence"), "must be between 0 and 1".into()));
                    }
                    if r.languages.is_empty() {
                        out.push((
                            at("languages"),
                            "`language` needs `languages`, the ones allowed".into(),
                        ));
                    }
                }
                s => {
                    let family = s.split('.').next().unwrap_or("");
                    let family = if family == "secrets" {
                        "secret"
                    } else {
                        family
                    };
                    if !FAMILIES.contains(&family) || !s.contains('.') {
                        out.push((
                            at("detect"),
                            format!("unknown detector `{s}`: use pii, pii.<kind>, secrets, secret.<rule>, injection, injection.<signal>, deny.<list>, language, classifier.<name>, remote.<name>, max_length or json_schema"),
                        ));
                        continue;
                    }
                    if family == "deny" {
                        let list = &s["deny.".len()..];
                        if !g.deny.contains_key(list) {
                            out.push((
                                at("detect"),
                                format!("no deny list `{list}` in [guardrails.deny]"),
                            ));
                        }
                    }
                    if family == "injection" {
                        whole = true;
                    }
                    if family == "classifier" || family == "remote" {
                        whole = true;
                        let name = &s[family.len() + 1..];
                        let known = if family == "classifier" {
                            g.classifiers.contains_key(name)
                        } else {
                            g.remote.contains_key(name)
                        };
                        if !known {
                            let table = if family == "classifier" {
                                "classifiers"
                            } else {
                                "remote"
                            };
                            out.push((
                                at("detect"),
                                format!("no {family} `{name}` in [guardrails.{table}]"),
                            ));
                        }
                        if r.detect.len() > 1 {
                            out.push((
                                at("detect"),
                                format!("`{s}` is a rule of its own: a classifier or remote check is the rule's only detector"),
                            ));
                        }
                    }
                }
            }
        }
        if matches!(r.action, GuardAction::Redact | GuardAction::Pseudonymize) && whole {
            out.push((
                at("action"),
                format!(
                    "`{}` masks values; injection signals, language, classifiers, remote checks, max_length and json_schema name none: use block, flag or shadow",
                    r.action.name()
                ),
            ));
        }
        if r.action == GuardAction::Pseudonymize && r.direction != GuardDirection::Input {
            out.push((
                at("direction"),
                "`pseudonymize` applies to input (the answer's placeholders are restored): set direction = \"input\"".into(),
            ));
        }
        let output_only = r
            .detect
            .iter()
            .any(|d| d == "max_length" || d == "json_schema");
        if output_only && r.direction != GuardDirection::Output {
            out.push((
                at("direction"),
                "`max_length` and `json_schema` check answers: set direction = \"output\"".into(),
            ));
        }
        for route in &r.routes {
            if !c.routes.contains_key(route) {
                out.push((at("routes"), format!("no route `{route}`")));
            }
        }
    }
    for (i, d) in g.disclaimers.iter().enumerate() {
        if d.text.trim().is_empty() {
            out.push((
                vec![
                    KeySeg::Key("guardrails".into()),
                    KeySeg::Key("disclaimers".into()),
                    KeySeg::Idx(i),
                    KeySeg::Key("text".into()),
                ],
                "a disclaimer needs text".into(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, Path::new("llmop.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => {
                e.0.iter()
                    .map(|e| format!("{}: {}", e.key, e.message))
                    .collect()
            }
        }
    }

    #[test]
    fn a_valid_policy_parses() {
        let c = Config::parse(
            r#"
[guardrails.deny.competitors]
terms = ["Acme"]
[[guardrails.rules]]
name = "no-secrets"
detect = ["secrets", "pii.card"]
action = "block"
[[guardrails.rules]]
name = "mask-pii"
detect = ["pii"]
direction = "input"
action = "pseudonymize"
[[guardrails.rules]]
name = "short"
detect = ["max_length"]
max_chars = 100
direction = "output"
action = "shadow"
on_error = "fail_open"
[[guardrails.disclaimers]]
text = "AI-generated."
"#,
            Path::new("llmop.toml"),
        )
        .unwrap();
        assert_eq!(c.guardrails.rules.len(), 3);
        assert_eq!(c.guardrails.stream_hold_back_bytes, 256);
    }

    #[test]
    fn contradictions_are_refused_with_their_key() {
        let e = errors(
            r#"
[[guardrails.rules]]
name = "a"
detect = ["injection"]
action = "redact"
[[guardrails.rules]]
name = "a"
detect = ["pii"]
action = "pseudonymize"
[[guardrails.rules]]
name = "c"
detect = ["deny.nope", "bogus"]
action = "block"
routes = ["nowhere"]
"#,
        );
        let joined = e.join("\n");
        assert!(joined.contains("guardrails.rules[0].action"), "{joined}");
        assert!(
            joined.contains("guardrails.rules[1].name: rule `a` is named twice"),
            "{joined}"
        );
        assert!(joined.contains("guardrails.rules[1].direction"), "{joined}");
        assert!(joined.contains("no deny list `nope`"), "{joined}");
        assert!(joined.contains("unknown detector `bogus`"), "{joined}");
        assert!(joined.contains("no route `nowhere`"), "{joined}");
    }
}
