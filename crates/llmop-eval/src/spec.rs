//! The eval file (`evals/<feature>.toml`): which evaluators score a feature's answers and
//! the policy a compare's verdict follows. Reviewed like code, validated as a whole
//! (every problem named by its key), and hashed: the evaluator set's hash is part of
//! every stored run (a run is reused only by a compare with the same evaluators), and
//! the whole file's hash is part of every stored compare (the deploy gate asks for one
//! made under the file as it is now).
//!
//! ```toml
//! feature = "summarize-ticket"
//! dataset = "tickets"                 # the default for run and compare
//!
//! [policy]
//! min_items = 20                      # fewer items: inconclusive
//! non_inferiority_margin = 0.05       # the candidate may be this much worse, no more
//! method = "t"                        # t | bootstrap
//! max_error_rate = 0.02               # more evaluator errors: the compare is an error
//! min_judge_kappa = 0.4               # warn on judges calibrated below it (or never)
//!
//! [[evaluators]]
//! name = "mentions-order"
//! kind = "contains"
//! values = ["order"]
//! ```

use crate::dataset::hash_json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalFile {
    pub feature: String,
    pub dataset: Option<String>,
    pub policy: Policy,
    pub evaluators: Vec<EvaluatorSpec>,
    /// Which evaluators score production calls, and how often (see `crate::online`).
    /// Not part of the file's hash: sampling does not change what a compare decides.
    #[serde(skip_serializing)]
    pub online: Option<Online>,
}

/// `[online]`: evaluators run on production calls, after they are recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Online {
    /// The evaluators that score production calls (default: every one but pairwise).
    #[serde(default)]
    pub evaluators: Vec<String>,
    /// The share of calls each evaluator scores, 0..1 (default: 1 for deterministic
    /// checks, 0.1 for judges and commands).
    #[serde(default)]
    pub sample: BTreeMap<String, f64>,
    /// Environments whose calls are scored (default: every one but `eval`).
    #[serde(default)]
    pub envs: Vec<String>,
    /// Only calls carrying every one of these tags (`key=value`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Most spent per UTC day on this feature's online judge calls (USD); past it,
    /// judges wait for the next day (counted), deterministic checks go on.
    #[serde(default = "default_judge_daily_usd")]
    pub judge_daily_usd: f64,
    /// Drift alerts on these scores (see `crate::drift`).
    #[serde(default)]
    pub drift: Option<crate::drift::DriftSpec>,
    /// Canary analysis of two-arm splits (see `crate::canary`).
    #[serde(default)]
    pub canary: Option<crate::canary::CanarySpec>,
}

fn default_judge_daily_usd() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default = "default_min_items")]
    pub min_items: usize,
    #[serde(default = "default_margin")]
    pub non_inferiority_margin: f64,
    #[serde(default)]
    pub method: Method,
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    #[serde(default = "default_kappa")]
    pub min_judge_kappa: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_items: default_min_items(),
            non_inferiority_margin: default_margin(),
            method: Method::default(),
            max_error_rate: default_max_error_rate(),
            min_judge_kappa: default_kappa(),
        }
    }
}

fn default_min_items() -> usize {
    20
}
fn default_margin() -> f64 {
    0.05
}
fn default_max_error_rate() -> f64 {
    0.02
}
fn default_kappa() -> f64 {
    0.4
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Paired t interval over per-item differences.
    #[default]
    T,
    /// Paired percentile bootstrap over items (10,000 resamples, fixed seed).
    Bootstrap,
}

/// One evaluator: a name, what it checks, and its part in the verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvaluatorSpec {
    pub name: String,
    pub kind: Kind,
    /// This evaluator's non-inferiority margin (default: the policy's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// `false`: reported, but not part of the verdict.
    pub gate: bool,
}

/// Common keys of every evaluator, split off before the kind's own keys are read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    name: String,
    margin: Option<f64>,
    #[serde(default = "yes")]
    gate: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Kind {
    /// The output equals the expected output (whitespace at the ends ignored).
    Exact {
        #[serde(default = "yes")]
        case_sensitive: bool,
    },
    /// Every value is in the output (`values`), or the expected output is (no `values`).
    Contains {
        #[serde(default)]
        values: Vec<String>,
        #[serde(default = "yes")]
        case_sensitive: bool,
    },
    /// None of the values is in the output.
    NotContains {
        values: Vec<String>,
        #[serde(default = "yes")]
        case_sensitive: bool,
    },
    /// The output matches the regex.
    Regex {
        pattern: String,
    },
    /// The output is JSON valid against the schema.
    JsonSchema {
        schema: Value,
    },
    /// The parsed output's field (a JSON pointer, `/summary`) equals `equals`, or the
    /// expected output's same field.
    JsonField {
        field: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        equals: Option<Value>,
    },
    /// The feature's parse status is one of `allowed` (default `ok`).
    ParseStatus {
        #[serde(default = "default_parse_ok")]
        allowed: Vec<String>,
    },
    MaxLatency {
        ms: u64,
    },
    MaxCost {
        usd: f64,
    },
    /// Output length within bounds, in characters and/or words.
    Length {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_chars: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_chars: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_words: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_words: Option<usize>,
    },
    /// A 0..1 similarity to the expected output; passes at `threshold`.
    Similarity {
        #[serde(default)]
        method: SimilarityMethod,
        #[serde(default = "half")]
        threshold: f64,
    },
    /// An LLM judge: a registered feature whose output is JSON with a `reasoning`
    /// string and a verdict among `choices`, each mapped to a score.
    Judge {
        feature: String,
        version: i64,
        #[serde(default = "default_verdict_field")]
        verdict_field: String,
        choices: BTreeMap<String, f64>,
        /// A score at or above this passes.
        #[serde(default = "half")]
        pass_at: f64,
    },
    /// A pairwise judge (compare only): which of two answers is better, asked in both
    /// orders; a disagreement between the orders is a tie.
    Pairwise {
        feature: String,
        version: i64,
        #[serde(default = "default_winner_field")]
        winner_field: String,
        /// The values of `winner_field` meaning the first answer, the second, a tie.
        #[serde(default = "default_first")]
        first: String,
        #[serde(default = "default_second")]
        second: String,
        #[serde(default = "default_tie")]
        tie: String,
    },
    /// A team's own code: JSON on stdin (`item`, `output`, `parsed`, `expected`, ...),
    /// a score on stdout (a number, or `{"score": x, "pass": bool}`).
    Command {
        command: Vec<String>,
        #[serde(default = "default_command_timeout")]
        timeout_ms: u64,
        #[serde(default = "half")]
        threshold: f64,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimilarityMethod {
    /// F1 over lower-cased word tokens (the SQuAD measure).
    #[default]
    TokenF1,
    /// 1 - normalized Levenshtein distance over characters.
    Levenshtein,
    JaroWinkler,
}

fn default_parse_ok() -> Vec<String> {
    vec!["ok".into()]
}
fn half() -> f64 {
    0.5
}
fn default_verdict_field() -> String {
    "verdict".into()
}
fn default_winner_field() -> String {
    "winner".into()
}
fn default_first() -> String {
    "A".into()
}
fn default_second() -> String {
    "B".into()
}
fn default_tie() -> String {
    "tie".into()
}
fn default_command_timeout() -> u64 {
    30_000
}

/// Whether an evaluator can only score against an item's expected output.
pub fn needs_expected(k: &Kind) -> bool {
    match k {
        Kind::Exact { .. } | Kind::Similarity { .. } => true,
        Kind::Contains { values, .. } => values.is_empty(),
        Kind::JsonField { equals, .. } => equals.is_none(),
        _ => false,
    }
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Exact { .. } => "exact",
            Kind::Contains { .. } => "contains",
            Kind::NotContains { .. } => "not_contains",
            Kind::Regex { .. } => "regex",
            Kind::JsonSchema { .. } => "json_schema",
            Kind::JsonField { .. } => "json_field",
            Kind::ParseStatus { .. } => "parse_status",
            Kind::MaxLatency { .. } => "max_latency",
            Kind::MaxCost { .. } => "max_cost",
            Kind::Length { .. } => "length",
            Kind::Similarity { .. } => "similarity",
            Kind::Judge { .. } => "judge",
            Kind::Pairwise { .. } => "pairwise",
            Kind::Command { .. } => "command",
        }
    }
}

/// The raw file: common keys, then each evaluator's table read on its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    feature: String,
    dataset: Option<String>,
    #[serde(default)]
    policy: Policy,
    #[serde(default)]
    evaluators: Vec<toml::Table>,
    online: Option<Online>,
}

impl EvalFile {
    /// Parses and validates an eval file; every problem as `key: message`.
    pub fn parse(text: &str) -> Result<EvalFile, Vec<String>> {
        let de = toml::Deserializer::new(text);
        let raw: RawFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            vec![if path == "." {
                e.inner().message().trim().to_string()
            } else {
                format!("{path}: {}", e.inner().message().trim())
            }]
        })?;
        let mut errors = Vec::new();
        let mut evaluators = Vec::new();
        for (i, table) in raw.evaluators.into_iter().enumerate() {
            let at = format!("evaluators[{i}]");
            let mut common = toml::Table::new();
            let mut own = toml::Table::new();
            for (k, v) in table {
                if matches!(k.as_str(), "name" | "margin" | "gate") {
                    common.insert(k, v);
                } else {
                    own.insert(k, v);
                }
            }
            let common: Common = match common.try_into() {
                Ok(c) => c,
                Err(e) => {
                    errors.push(format!("{at}: {}", e.message().trim()));
                    continue;
                }
            };
            let kind: Kind = match serde_path_to_error::deserialize(toml::Value::Table(own)) {
                Ok(k) => k,
                Err(e) => {
                    let path = e.path().to_string();
                    let key = if path == "." {
                        at.clone()
                    } else {
                        format!("{at}.{path}")
                    };
                    errors.push(format!("{key}: {}", e.inner().message().trim()));
                    continue;
                }
            };
            evaluators.push(EvaluatorSpec {
                name: common.name,
                kind,
                margin: common.margin,
                gate: common.gate,
            });
        }
        let file = EvalFile {
            feature: raw.feature,
            dataset: raw.dataset,
            policy: raw.policy,
            evaluators,
            online: raw.online,
        };
        file.validate(&mut errors);
        file.validate_online(&mut errors);
        if errors.is_empty() {
            Ok(file)
        } else {
            Err(errors)
        }
    }

    fn validate(&self, errors: &mut Vec<String>) {
        let p = &self.policy;
        if !(0.0..1.0).contains(&p.non_inferiority_margin) {
            errors.push("policy.non_inferiority_margin: must be at least 0 and below 1".into());
        }
        if p.min_items < 2 {
            errors.push("policy.min_items: must be at least 2".into());
        }
        if !(0.0..=1.0).contains(&p.max_error_rate) {
            errors.push("policy.max_error_rate: must be between 0 and 1".into());
        }
        if !(-1.0..=1.0).contains(&p.min_judge_kappa) {
            errors.push("policy.min_judge_kappa: must be between -1 and 1".into());
        }
        if self.evaluators.is_empty() {
            errors.push("evaluators: declare at least one evaluator".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, e) in self.evaluators.iter().enumerate() {
            let at = |k: &str| format!("evaluators[{i}].{k}");
            let name_ok = !e.name.is_empty()
                && e.name.len() <= 64
                && e.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !name_ok {
                errors.push(format!(
                    "{}: `{}`: use 1-64 letters, digits, `-`, `_`, `.`",
                    at("name"),
                    e.name
                ));
            }
            if !names.insert(e.name.as_str()) {
                errors.push(format!("{}: `{}` is declared twice", at("name"), e.name));
            }
            if let Some(m) = e.margin {
                if !(0.0..1.0).contains(&m) {
                    errors.push(format!("{}: must be at least 0 and below 1", at("margin")));
                }
            }
            match &e.kind {
                Kind::Regex { pattern } => {
                    if let Err(err) = regex::Regex::new(pattern) {
                        errors.push(format!("{}: not a valid regex: {err}", at("pattern")));
                    }
                }
                Kind::JsonSchema { schema } => {
                    if let Err(err) = jsonschema::validator_for(schema) {
                        errors.push(format!("{}: not a valid JSON Schema: {err}", at("schema")));
                    }
                }
                Kind::JsonField { field, .. } if !field.is_empty() && !field.starts_with('/') => {
                    errors.push(format!(
                        "{}: `{field}` is not a JSON pointer (write `/{field}`)",
                        at("field")
                    ));
                }
                Kind::NotContains { values, .. } if values.is_empty() => {
                    errors.push(format!("{}: list at least one value", at("values")));
                }
                Kind::Similarity { threshold, .. } if !(0.0..=1.0).contains(threshold) => {
                    errors.push(format!("{}: must be between 0 and 1", at("threshold")));
                }
                Kind::Judge {
                    choices, version, ..
                } => {
                    if choices.is_empty() {
                        errors.push(format!(
                            "{}: map each verdict to a score, e.g. {{ correct = 1.0, wrong = 0.0 }}",
                            at("choices")
                        ));
                    }
                    if *version < 1 {
                        errors.push(format!(
                            "{}: a registered version (1, 2, ...)",
                            at("version")
                        ));
                    }
                }
                Kind::Pairwise { version, .. } if *version < 1 => {
                    errors.push(format!(
                        "{}: a registered version (1, 2, ...)",
                        at("version")
                    ));
                }
                Kind::Command { command, .. } if command.is_empty() => {
                    errors.push(format!(
                        "{}: the program and its arguments, e.g. [\"python3\", \"score.py\"]",
                        at("command")
                    ));
                }
                _ => {}
            }
        }
    }

    fn validate_online(&self, errors: &mut Vec<String>) {
        let Some(o) = &self.online else { return };
        let kind_of = |n: &str| {
            self.evaluators
                .iter()
                .find(|e| e.name == n)
                .map(|e| &e.kind)
        };
        for (i, n) in o.evaluators.iter().enumerate() {
            match kind_of(n) {
                None => errors.push(format!("online.evaluators[{i}]: no evaluator `{n}` in this file")),
                Some(Kind::Pairwise { .. }) => errors.push(format!(
                    "online.evaluators[{i}]: `{n}` is pairwise: it needs two answers (compares and shadows)"
                )),
                Some(k) if needs_expected(k) => errors.push(format!(
                    "online.evaluators[{i}]: `{n}` compares with an item's expected output, which production calls do not have"
                )),
                Some(_) => {}
            }
        }
        for (n, rate) in &o.sample {
            if kind_of(n).is_none() {
                errors.push(format!(
                    "online.sample.{n}: no evaluator `{n}` in this file"
                ));
            }
            if !(0.0..=1.0).contains(rate) {
                errors.push(format!(
                    "online.sample.{n}: {rate} is not a share between 0 and 1"
                ));
            }
        }
        for (i, t) in o.tags.iter().enumerate() {
            if !t.contains('=') {
                errors.push(format!("online.tags[{i}]: `{t}`: write key=value"));
            }
        }
        if o.judge_daily_usd.is_nan() || o.judge_daily_usd < 0.0 {
            errors.push("online.judge_daily_usd: must be 0 or more".into());
        }
        if let Some(d) = &o.drift {
            d.validate(errors);
        }
        if let Some(c) = &o.canary {
            c.validate(errors);
            for (i, n) in c.evaluators.iter().enumerate() {
                if kind_of(n).is_none() {
                    errors.push(format!(
                        "online.canary.evaluators[{i}]: no evaluator `{n}` in this file"
                    ));
                }
            }
        }
    }

    /// The margin of an evaluator: its own, else the policy's.
    pub fn margin(&self, e: &EvaluatorSpec) -> f64 {
        e.margin.unwrap_or(self.policy.non_inferiority_margin)
    }

    /// Hash of the evaluators (names, kinds, parameters, judge versions): a stored run is
    /// reused only under the same evaluators.
    pub fn evaluators_hash(&self) -> String {
        let v = serde_json::to_value(&self.evaluators).unwrap_or(Value::Null);
        format!("sha256:{}", hash_json(&v))
    }

    /// Hash of the whole file (evaluators and policy): a stored compare speaks for the
    /// deploy gate only under the file it was made with.
    pub fn evals_hash(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or(Value::Null);
        format!("sha256:{}", hash_json(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
feature = "qa"
dataset = "qa-set"

[policy]
min_items = 10

[[evaluators]]
name = "exact"
kind = "exact"

[[evaluators]]
name = "mentions"
kind = "contains"
values = ["Paris"]
case_sensitive = false
gate = false

[[evaluators]]
name = "judge"
kind = "judge"
feature = "judge-qa"
version = 1
choices = { correct = 1.0, wrong = 0.0 }
margin = 0.1
"#;

    #[test]
    fn parses_with_defaults() {
        let f = EvalFile::parse(FILE).unwrap();
        assert_eq!(f.feature, "qa");
        assert_eq!(f.policy.min_items, 10);
        assert_eq!(f.policy.non_inferiority_margin, 0.05);
        assert_eq!(f.evaluators.len(), 3);
        assert!(!f.evaluators[1].gate);
        assert_eq!(f.margin(&f.evaluators[2]), 0.1);
        assert_eq!(f.margin(&f.evaluators[0]), 0.05);
        assert!(
            matches!(&f.evaluators[2].kind, Kind::Judge { verdict_field, .. } if verdict_field == "verdict")
        );
    }

    #[test]
    fn every_problem_is_named() {
        let bad = r#"
feature = "qa"
[[evaluators]]
name = "r"
kind = "regex"
pattern = "("

[[evaluators]]
name = "r"
kind = "json_schema"
schema = { type = 12 }

[[evaluators]]
name = "typo"
kind = "contains"
valuez = ["x"]
"#;
        let errs = EvalFile::parse(bad).unwrap_err().join("\n");
        assert!(
            errs.contains("evaluators[0].pattern: not a valid regex"),
            "{errs}"
        );
        assert!(
            errs.contains("evaluators[1].schema: not a valid JSON Schema"),
            "{errs}"
        );
        assert!(
            errs.contains("evaluators[2]") && errs.contains("valuez"),
            "{errs}"
        );
        let unknown_kind = "feature = \"qa\"\n[[evaluators]]\nname = \"x\"\nkind = \"vibes\"\n";
        let errs = EvalFile::parse(unknown_kind).unwrap_err().join("\n");
        assert!(errs.contains("vibes"), "{errs}");
        assert!(EvalFile::parse("feature = \"qa\"\n").is_err());
    }

    #[test]
    fn hashes_follow_content() {
        let a = EvalFile::parse(FILE).unwrap();
        let b = EvalFile::parse(&FILE.replace("min_items = 10", "min_items = 12")).unwrap();
        // The policy changes the file's hash, not the evaluators'.
        assert_eq!(a.evaluators_hash(), b.evaluators_hash());
        assert_ne!(a.evals_hash(), b.evals_hash());
        let c = EvalFile::parse(&FILE.replace("version = 1", "version = 2")).unwrap();
        assert_ne!(a.evaluators_hash(), c.evaluators_hash());
        // Formatting does not.
        let d = EvalFile::parse(&FILE.replace("\n\n", "\n\n\n# note\n")).unwrap();
        assert_eq!(a.evals_hash(), d.evals_hash());
    }
}
