//! Evaluators at work: each scores one answer to one item.
//!
//! A score is a `value` in 0..1 and whether it `pass`es, or an `error`. An error is never
//! a zero: a judge whose answer does not parse, a command that crashes, a check that
//! needs an expected output the item lacks — each is counted as an error, kept out of the
//! means and reported, and too many of them make a compare an error rather than a
//! verdict. An answer that does not exist because the *version* failed (its output did
//! not parse under the feature's policy) is not an error but a failed answer: every
//! check of its output fails.
//!
//! Judges are registered features called through the gateway (so their calls are
//! recorded and priced like any other); their version is part of the eval file, hence
//! of every score. Their answers are cached by judge version, input and repeat index.

use crate::dataset::{canonical, hash_json, Item};
use crate::gateway::{CallError, Invoker};
use crate::spec::{EvalFile, EvaluatorSpec, Kind, SimilarityMethod};
use llmop_features::{FeatureSpec, Parser};
use llmop_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// One answer of the evaluated version to one item (one repeat).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parsed: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_status: Option<String>,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Why the output did not parse (`parse_status = "failed"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
    /// Served from the answer cache (this run paid nothing for it).
    #[serde(default)]
    pub cached: bool,
    /// The call did not answer (gateway or provider failure): every evaluator errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    /// A recorded call as the answer evaluators score (online evaluation, shadows).
    pub fn from_record(r: &llmop_store::Record) -> Answer {
        Answer {
            request_id: Some(r.request_id.clone()),
            text: r.output_text.clone(),
            parsed: r.parsed_output.clone(),
            parse_status: r.parse_status.clone(),
            latency_ms: r.latency_ms.max(0) as u64,
            cost_usd: r.cost_usd,
            ..Answer::default()
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `judge-name v3`: the judge version that gave this score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
    /// What this score's own calls cost this run (judges; cached: 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The error is worth retrying later (a judge's provider failed), not a verdict.
    #[serde(skip)]
    pub retryable: bool,
}

impl Score {
    fn of(pass: bool, detail: impl Into<Option<String>>) -> Score {
        Score {
            value: Some(if pass { 1.0 } else { 0.0 }),
            pass: Some(pass),
            detail: detail.into(),
            ..Score::default()
        }
    }
    fn graded(value: f64, pass: bool, detail: Option<String>) -> Score {
        Score {
            value: Some(value),
            pass: Some(pass),
            detail,
            ..Score::default()
        }
    }
    pub fn error(e: impl Into<String>) -> Score {
        Score {
            error: Some(e.into()),
            ..Score::default()
        }
    }
}

/// What a judge feature is, read from the store once per run.
#[derive(Debug, Clone)]
struct JudgeInfo {
    content_hash: String,
    declared: BTreeSet<String>,
}

enum Check {
    None,
    Regex(regex::Regex),
    Schema(Box<jsonschema::Validator>),
}

/// The eval file's evaluators, compiled, with their judges resolved.
pub struct Evaluators {
    pub file: EvalFile,
    checks: Vec<Check>,
    judges: HashMap<(String, i64), JudgeInfo>,
}

impl Evaluators {
    /// Compiles the checks and resolves every judge version in the store: it must be
    /// registered, answer JSON (the forced structured output), and its schema must ask
    /// for a `reasoning` string before an enumerated verdict whose values are the
    /// evaluator's choices.
    pub async fn load(file: EvalFile, store: &Store) -> Result<Evaluators, String> {
        let mut evaluators = Evaluators::compile(file)?;
        let mut judges = HashMap::new();
        for e in &evaluators.file.evaluators {
            let (feature, version, field, values): (&str, i64, &str, Vec<String>) = match &e.kind {
                Kind::Judge {
                    feature,
                    version,
                    verdict_field,
                    choices,
                    ..
                } => (
                    feature,
                    *version,
                    verdict_field,
                    choices.keys().cloned().collect(),
                ),
                Kind::Pairwise {
                    feature,
                    version,
                    winner_field,
                    first,
                    second,
                    tie,
                } => (
                    feature,
                    *version,
                    winner_field,
                    vec![first.clone(), second.clone(), tie.clone()],
                ),
                _ => continue,
            };
            let info = judge_info(store, &e.name, feature, version, field, &values).await?;
            judges.insert((feature.to_string(), version), info);
        }
        evaluators.judges = judges;
        Ok(evaluators)
    }

    /// The file's checks compiled, its judges not resolved: enough for the evaluators
    /// that score in place ([`Evaluators::score_inline`]), without a store.
    pub fn compile(file: EvalFile) -> Result<Evaluators, String> {
        let mut checks = Vec::with_capacity(file.evaluators.len());
        for e in &file.evaluators {
            checks.push(match &e.kind {
                Kind::Regex { pattern } => Check::Regex(
                    regex::Regex::new(pattern).map_err(|err| format!("{}: {err}", e.name))?,
                ),
                Kind::JsonSchema { schema } => Check::Schema(Box::new(
                    jsonschema::validator_for(schema)
                        .map_err(|err| format!("{}: {err}", e.name))?,
                )),
                _ => Check::None,
            });
        }
        Ok(Evaluators {
            file,
            checks,
            judges: HashMap::new(),
        })
    }

    /// Whether an evaluator of this kind scores in place: synchronously, from the
    /// answer alone, in bounded time (no judge call, no process, no second answer).
    pub fn is_inline(kind: &Kind) -> bool {
        !matches!(
            kind,
            Kind::Judge { .. } | Kind::Command { .. } | Kind::Pairwise { .. }
        )
    }

    /// Scores `a` now with those of the evaluators named in `names` that score in
    /// place, and removes them from `names` (what is left needs [`Evaluators::score_only`]:
    /// judges and commands). Online evaluation runs this where a record is built, so a
    /// deterministic check costs no queue entry and no second read of the record.
    pub fn score_inline(
        &self,
        item: &Item,
        a: &Answer,
        names: &mut Vec<String>,
    ) -> Vec<(String, Score)> {
        let mut out = Vec::new();
        names.retain(|n| {
            let Some((e, check)) = self
                .file
                .evaluators
                .iter()
                .zip(&self.checks)
                .find(|(e, _)| &e.name == n)
            else {
                return true;
            };
            let scored = match &a.error {
                Some(err) if Self::is_inline(&e.kind) => {
                    Some(Score::error(format!("no answer: {err}")))
                }
                _ => self.score_now(e, check, item, a),
            };
            match scored {
                Some(s) => {
                    out.push((e.name.clone(), s));
                    false
                }
                None => true,
            }
        });
        out
    }

    pub fn specs(&self) -> &[EvaluatorSpec] {
        &self.file.evaluators
    }

    /// Scores one answer with every evaluator except pairwise ones (which need two
    /// answers: see [`Evaluators::pairwise`]).
    pub async fn score(
        &self,
        ctx: &Ctx<'_>,
        item: &Item,
        a: &Answer,
        repeat: i64,
    ) -> Vec<(String, Score)> {
        self.score_only(ctx, item, a, repeat, None).await
    }

    /// [`Evaluators::score`] with only the evaluators named in `only` (online
    /// evaluation: the ones sampled for a call).
    pub async fn score_only(
        &self,
        ctx: &Ctx<'_>,
        item: &Item,
        a: &Answer,
        repeat: i64,
        only: Option<&[String]>,
    ) -> Vec<(String, Score)> {
        let mut out = Vec::with_capacity(self.checks.len());
        for (e, check) in self.file.evaluators.iter().zip(&self.checks) {
            if matches!(e.kind, Kind::Pairwise { .. }) {
                continue;
            }
            if only.is_some_and(|names| !names.iter().any(|n| n == &e.name)) {
                continue;
            }
            let s = if let Some(err) = &a.error {
                Score::error(format!("no answer: {err}"))
            } else {
                self.score_one(ctx, e, check, item, a, repeat).await
            };
            out.push((e.name.clone(), s));
        }
        out
    }

    async fn score_one(
        &self,
        ctx: &Ctx<'_>,
        e: &EvaluatorSpec,
        check: &Check,
        item: &Item,
        a: &Answer,
        repeat: i64,
    ) -> Score {
        if let Some(s) = self.score_now(e, check, item, a) {
            return s;
        }
        let text = a.text.as_deref();
        let no_output = || Score::of(false, Some("no output (it did not parse)".to_string()));
        match &e.kind {
            Kind::Judge {
                feature,
                version,
                verdict_field,
                choices,
                pass_at,
            } => {
                let Some(t) = text else { return no_output() };
                let Some(info) = self.judges.get(&(feature.clone(), *version)) else {
                    return Score::error(format!(
                        "the judge {feature} v{version} was not resolved"
                    ));
                };
                let mut vars = Map::new();
                put(&mut vars, info, "input", item_input(item));
                put(&mut vars, info, "output", t.to_string());
                put(
                    &mut vars,
                    info,
                    "expected",
                    item.expected_text().unwrap_or_default(),
                );
                let label = format!("{feature} v{version}");
                match ctx.judge(feature, *version, info, &vars, repeat).await {
                    Err(e) => Score {
                        judge: Some(label),
                        retryable: e.retryable,
                        ..Score::error(e.message)
                    },
                    Ok((verdict_json, cost)) => {
                        let verdict = verdict_json.get(verdict_field).and_then(Value::as_str);
                        match verdict.and_then(|v| choices.get(v).map(|s| (v, *s))) {
                            Some((v, s)) => Score {
                                value: Some(s),
                                pass: Some(s >= *pass_at),
                                detail: Some(v.to_string()),
                                judge: Some(label),
                                cost_usd: cost,
                                error: None,
                                retryable: false,
                            },
                            None => Score {
                                judge: Some(label),
                                cost_usd: cost,
                                ..Score::error(format!(
                                    "the judge's `{verdict_field}` is {} — not one of {:?}",
                                    verdict_json.get(verdict_field).unwrap_or(&Value::Null),
                                    choices.keys().collect::<Vec<_>>()
                                ))
                            },
                        }
                    }
                }
            }
            Kind::Command {
                command,
                timeout_ms,
                threshold,
            } => run_command(command, *timeout_ms, *threshold, item, a).await,
            // Pairwise is scored in compares.
            _ => Score::error("this evaluator cannot score a single answer"),
        }
    }

    /// The score of an evaluator that scores in place ([`Evaluators::is_inline`]);
    /// `None` for the others.
    fn score_now(
        &self,
        e: &EvaluatorSpec,
        check: &Check,
        item: &Item,
        a: &Answer,
    ) -> Option<Score> {
        Self::is_inline(&e.kind).then(|| Self::check(e, check, item, a))
    }

    fn check(e: &EvaluatorSpec, check: &Check, item: &Item, a: &Answer) -> Score {
        let text = a.text.as_deref();
        let no_output = || Score::of(false, Some("no output (it did not parse)".to_string()));
        let fold = |s: &str, cs: bool| if cs { s.to_string() } else { s.to_lowercase() };
        match (&e.kind, check) {
            (Kind::Exact { case_sensitive }, _) => {
                let Some(expected) = &item.expected else {
                    return Score::error("the item has no expected output");
                };
                let Some(t) = text else { return no_output() };
                let same = match expected {
                    Value::String(x) => {
                        fold(x.trim(), *case_sensitive) == fold(t.trim(), *case_sensitive)
                    }
                    // Expected JSON: the answer's JSON must be the same value.
                    json_expected => answer_json(a)
                        .is_some_and(|got| canonical(&got) == canonical(json_expected)),
                };
                Score::of(same, None)
            }
            (
                Kind::Contains {
                    values,
                    case_sensitive,
                },
                _,
            ) => {
                let Some(t) = text else { return no_output() };
                let wanted: Vec<String> = if values.is_empty() {
                    match item.expected_text() {
                        Some(x) => vec![x],
                        None => {
                            return Score::error("no `values` and the item has no expected output")
                        }
                    }
                } else {
                    values.clone()
                };
                let hay = fold(t, *case_sensitive);
                let missing: Vec<&String> = wanted
                    .iter()
                    .filter(|v| !hay.contains(&fold(v, *case_sensitive)))
                    .collect();
                Score::of(
                    missing.is_empty(),
                    (!missing.is_empty()).then(|| format!("missing {missing:?}")),
                )
            }
            (
                Kind::NotContains {
                    values,
                    case_sensitive,
                },
                _,
            ) => {
                let Some(t) = text else { return no_output() };
                let hay = fold(t, *case_sensitive);
                let found: Vec<&String> = values
                    .iter()
                    .filter(|v| hay.contains(&fold(v, *case_sensitive)))
                    .collect();
                Score::of(
                    found.is_empty(),
                    (!found.is_empty()).then(|| format!("contains {found:?}")),
                )
            }
            (Kind::Regex { .. }, Check::Regex(re)) => {
                let Some(t) = text else { return no_output() };
                Score::of(re.is_match(t), None)
            }
            (Kind::JsonSchema { .. }, Check::Schema(v)) => {
                let Some(j) = answer_json(a) else {
                    return Score::of(false, Some("the output is not JSON".to_string()));
                };
                let first = v
                    .iter_errors(&j)
                    .next()
                    .map(|err| format!("at {}: {err}", err.instance_path()));
                match first {
                    None => Score::of(true, None),
                    Some(problem) => Score::of(false, Some(problem)),
                }
            }
            (Kind::JsonField { field, equals }, _) => {
                let want = match equals {
                    Some(v) => v.clone(),
                    None => {
                        let exp = match &item.expected {
                            Some(Value::String(s)) => serde_json::from_str(s).ok(),
                            other => other.clone(),
                        };
                        match exp.as_ref().and_then(|x| x.pointer(field)) {
                            Some(v) => v.clone(),
                            None => {
                                return Score::error(format!(
                                    "no `equals` and the item's expected output has no `{field}`"
                                ))
                            }
                        }
                    }
                };
                let Some(got) = answer_json(a) else {
                    return Score::of(false, Some("the output is not JSON".to_string()));
                };
                match got.pointer(field) {
                    Some(v) if canonical(v) == canonical(&want) => Score::of(true, None),
                    Some(v) => Score::of(false, Some(format!("{field} is {v}, expected {want}"))),
                    None => Score::of(false, Some(format!("the output has no {field}"))),
                }
            }
            (Kind::ParseStatus { allowed }, _) => {
                let status = a.parse_status.as_deref().unwrap_or("none");
                Score::of(
                    allowed.iter().any(|x| x == status),
                    Some(format!("parse status {status}")),
                )
            }
            (Kind::MaxLatency { ms }, _) => {
                Score::of(a.latency_ms <= *ms, Some(format!("{} ms", a.latency_ms)))
            }
            (Kind::MaxCost { usd }, _) => match a.cost_usd {
                Some(c) => Score::of(c <= *usd, Some(format!("${c:.6}"))),
                None => Score::error("the call's cost is unknown (no price for its model)"),
            },
            (
                Kind::Length {
                    min_chars,
                    max_chars,
                    min_words,
                    max_words,
                },
                _,
            ) => {
                let Some(t) = text else { return no_output() };
                let chars = t.chars().count();
                let words = t.split_whitespace().count();
                let ok = min_chars.is_none_or(|m| chars >= m)
                    && max_chars.is_none_or(|m| chars <= m)
                    && min_words.is_none_or(|m| words >= m)
                    && max_words.is_none_or(|m| words <= m);
                Score::of(ok, Some(format!("{chars} chars, {words} words")))
            }
            (Kind::Similarity { method, threshold }, _) => {
                let Some(expected) = item.expected_text() else {
                    return Score::error("the item has no expected output");
                };
                let Some(t) = text else { return no_output() };
                let v = similarity(*method, t, &expected);
                Score::graded(v, v >= *threshold, None)
            }
            // Checks without a compiled form were refused when the file was loaded.
            _ => Score::error("this evaluator cannot score a single answer"),
        }
    }

    /// The pairwise evaluators of the file, scoring the candidate's answer against the
    /// baseline's: asked in both orders; the candidate wins (1) only when both orders
    /// prefer it, loses (0) only when both prefer the baseline, otherwise a tie (0.5).
    pub async fn pairwise(
        &self,
        ctx: &Ctx<'_>,
        item: &Item,
        candidate: &Answer,
        baseline: &Answer,
        repeat: i64,
    ) -> Vec<(String, Score)> {
        let mut out = Vec::new();
        for e in &self.file.evaluators {
            let Kind::Pairwise {
                feature,
                version,
                winner_field,
                first,
                second,
                tie,
            } = &e.kind
            else {
                continue;
            };
            let label = format!("{feature} v{version}");
            let (Some(c), Some(b)) = (&candidate.text, &baseline.text) else {
                // One side has no answer: it loses, both without: a tie.
                let s = match (&candidate.text, &baseline.text) {
                    (Some(_), None) => {
                        Score::graded(1.0, true, Some("baseline has no output".into()))
                    }
                    (None, Some(_)) => {
                        Score::graded(0.0, false, Some("candidate has no output".into()))
                    }
                    _ => Score::graded(0.5, true, Some("neither has an output".into())),
                };
                out.push((e.name.clone(), s));
                continue;
            };
            if candidate.error.is_some() || baseline.error.is_some() {
                out.push((e.name.clone(), Score::error("a side has no answer")));
                continue;
            }
            let info = &self.judges[&(feature.clone(), *version)];
            let ask = |a: &str, b: &str| {
                let mut vars = Map::new();
                put(&mut vars, info, "input", item_input(item));
                put(&mut vars, info, "a", a.to_string());
                put(&mut vars, info, "b", b.to_string());
                put(
                    &mut vars,
                    info,
                    "expected",
                    item.expected_text().unwrap_or_default(),
                );
                vars
            };
            // Order 1: candidate first; order 2: baseline first.
            let one = ctx.judge(feature, *version, info, &ask(c, b), repeat).await;
            let two = ctx.judge(feature, *version, info, &ask(b, c), repeat).await;
            let pick = |r: &Result<(Value, Option<f64>), JudgeError>| -> Result<String, String> {
                let (v, _) = r.as_ref().map_err(|e| e.message.clone())?;
                match v.get(winner_field).and_then(Value::as_str) {
                    Some(w) if w == first || w == second || w == tie => Ok(w.to_string()),
                    other => Err(format!(
                        "the judge's `{winner_field}` is {other:?} — not one of {first:?}, {second:?}, {tie:?}"
                    )),
                }
            };
            let cost: Option<f64> = [&one, &two]
                .iter()
                .filter_map(|r| r.as_ref().ok().and_then(|(_, c)| *c))
                .reduce(|a, b| a + b);
            let s = match (pick(&one), pick(&two)) {
                (Err(e), _) | (_, Err(e)) => Score {
                    judge: Some(label),
                    cost_usd: cost,
                    ..Score::error(e)
                },
                (Ok(w1), Ok(w2)) => {
                    // In order 1 the candidate is `first`; in order 2 it is `second`.
                    let cand1 = &w1 == first;
                    let cand2 = &w2 == second;
                    let base1 = &w1 == second;
                    let base2 = &w2 == first;
                    let (v, what) = if cand1 && cand2 {
                        (1.0, "candidate preferred in both orders")
                    } else if base1 && base2 {
                        (0.0, "baseline preferred in both orders")
                    } else {
                        (0.5, "tie (or the orders disagree)")
                    };
                    Score {
                        value: Some(v),
                        pass: Some(v >= 0.5),
                        detail: Some(format!("{what}: {w1} / {w2}")),
                        judge: Some(label),
                        cost_usd: cost,
                        error: None,
                        retryable: false,
                    }
                }
            };
            out.push((e.name.clone(), s));
        }
        out
    }

    pub fn has_pairwise(&self) -> bool {
        self.file
            .evaluators
            .iter()
            .any(|e| matches!(e.kind, Kind::Pairwise { .. }))
    }

    /// The judges (feature, version) the evaluators use.
    pub fn judges(&self) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = self.judges.keys().cloned().collect();
        v.sort();
        v
    }
}

fn put(vars: &mut Map<String, Value>, info: &JudgeInfo, name: &str, v: String) {
    if info.declared.contains(name) {
        vars.insert(name.to_string(), Value::String(v));
    }
}

/// What the item asked, as text for a judge: its variables as JSON, or its messages.
fn item_input(item: &Item) -> String {
    if !item.variables.is_empty() {
        return serde_json::to_string_pretty(&item.variables).unwrap_or_default();
    }
    item.messages
        .iter()
        .flatten()
        .map(|m| {
            format!(
                "[{}] {}",
                m.get("role").and_then(Value::as_str).unwrap_or("?"),
                m.get("content").map_or(String::new(), |c| match c {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The answer as JSON: its parsed output, else its text parsed.
fn answer_json(a: &Answer) -> Option<Value> {
    if let Some(p) = &a.parsed {
        return Some(p.clone());
    }
    let t = a.text.as_deref()?.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|x| x.strip_suffix("```"))
        .unwrap_or(t);
    serde_json::from_str(t.trim()).ok()
}

async fn judge_info(
    store: &Store,
    evaluator: &str,
    feature: &str,
    version: i64,
    field: &str,
    values: &[String],
) -> Result<JudgeInfo, String> {
    let v = store
        .feature_version(feature, version)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!("evaluator `{evaluator}`: judge `{feature}` has no version {version} (push it: llmop feature push)")
        })?;
    let spec: FeatureSpec = serde_json::from_value(v.spec).map_err(|e| e.to_string())?;
    let bad = |m: String| format!("evaluator `{evaluator}`: judge `{feature}` v{version} {m}");
    if spec.output.parser != Parser::Json {
        return Err(bad(
            "must answer JSON: set [output] parser = \"json\" with a schema".into(),
        ));
    }
    let Some(schema) = &spec.output.schema else {
        return Err(bad(
            "needs an output schema (its structured output is forced with it)".into(),
        ));
    };
    let props = schema.get("properties").and_then(Value::as_object);
    let Some(props) = props else {
        return Err(bad("needs an object schema with `properties`".into()));
    };
    let keys: Vec<&String> = props.keys().collect();
    let r = keys.iter().position(|k| *k == "reasoning");
    let f = keys.iter().position(|k| *k == field);
    match (r, f) {
        (Some(r), Some(f)) if r < f => {}
        _ => {
            return Err(bad(format!(
                "must ask for `reasoning` before `{field}` in its schema's properties (reasoning before the verdict)"
            )))
        }
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !required.contains(&field) || !required.contains(&"reasoning") {
        return Err(bad(format!(
            "must require `reasoning` and `{field}` in its schema"
        )));
    }
    let allowed: Option<BTreeSet<&str>> = props
        .get(field)
        .and_then(|p| p.get("enum"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    let wanted: BTreeSet<&str> = values.iter().map(String::as_str).collect();
    if allowed.as_ref() != Some(&wanted) {
        return Err(bad(format!(
            "must enumerate exactly {wanted:?} for `{field}` (the evaluator's choices); it allows {allowed:?}"
        )));
    }
    let declared: BTreeSet<String> = spec.variables.keys().cloned().collect();
    let needs: &[&str] = if values.len() == 3 && !declared.contains("output") {
        &["a", "b"]
    } else {
        &["output"]
    };
    for n in needs {
        if !declared.contains(*n) {
            return Err(bad(format!(
                "must declare the variable `{n}` (the answer it judges)"
            )));
        }
    }
    Ok(JudgeInfo {
        content_hash: v.content_hash,
        declared,
    })
}

/// What the evaluators share during a run: who calls judges, the store (judge cache), and
/// the run's tag.
pub struct Ctx<'a> {
    pub gateway: &'a dyn Invoker,
    pub store: &'a Store,
    pub run_id: &'a str,
    /// Judge answers not yet written to the cache: a run writes them in its batches
    /// (one transaction per batch, not one per judge call); `None`: written at once.
    pub pending: Option<&'a std::sync::Mutex<HashMap<String, Value>>>,
}

impl Ctx<'_> {
    /// A judge's parsed answer (and what it cost, `None` when cached or unpriced), from
    /// the cache or through the gateway.
    async fn judge(
        &self,
        feature: &str,
        version: i64,
        info: &JudgeInfo,
        vars: &Map<String, Value>,
        repeat: i64,
    ) -> Result<(Value, Option<f64>), JudgeError> {
        let key = format!(
            "judge:{}",
            hash_json(&json!({"judge": info.content_hash, "vars": vars, "repeat": repeat}))
        );
        if let Some(p) = self.pending {
            let hit = p
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .cloned();
            if let Some(v) = hit {
                return Ok((v, None));
            }
        }
        if let Ok(hit) = self.store.eval_cache_get(std::slice::from_ref(&key)).await {
            if let Some(v) = hit.get(&key) {
                return Ok((v.clone(), None));
            }
        }
        let tags = [
            ("eval_run", self.run_id.to_string()),
            ("eval_judge", feature.to_string()),
        ];
        match self.gateway.invoke(feature, version, vars, &tags).await {
            Ok(inv) => {
                let Some(parsed) = inv.parsed.filter(Value::is_object) else {
                    return Err(JudgeError::final_(format!(
                        "judge {feature} v{version} answered no JSON object (request {})",
                        inv.request_id
                    )));
                };
                match self.pending {
                    Some(p) => {
                        p.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(key, parsed.clone());
                    }
                    None => {
                        let _ = self.store.eval_cache_put(&[(key, parsed.clone())]).await;
                    }
                }
                Ok((parsed, inv.cost_usd))
            }
            Err(CallError::ParseFailed {
                request_id,
                message,
            }) => Err(JudgeError::final_(format!(
                "judge {feature} v{version}: its answer did not parse (request {request_id}): {message}"
            ))),
            Err(e) => Err(JudgeError {
                retryable: e.transient(),
                message: format!("judge {feature} v{version}: {e}"),
            }),
        }
    }
}

/// Why a judge gave no verdict, and whether asking again later may help.
#[derive(Debug, Clone)]
pub struct JudgeError {
    pub message: String,
    pub retryable: bool,
}

impl JudgeError {
    fn final_(message: String) -> JudgeError {
        JudgeError {
            message,
            retryable: false,
        }
    }
}

/// Similarity of `a` to `b` in 0..1.
pub fn similarity(method: SimilarityMethod, a: &str, b: &str) -> f64 {
    match method {
        SimilarityMethod::TokenF1 => token_f1(a, b),
        SimilarityMethod::Levenshtein => strsim::normalized_levenshtein(a, b),
        SimilarityMethod::JaroWinkler => strsim::jaro_winkler(a, b),
    }
}

/// F1 over lower-cased word tokens (punctuation stripped), as SQuAD scores answers.
/// Written here: a dozen lines over a bag of words; no crate does just this.
fn token_f1(a: &str, b: &str) -> f64 {
    let toks = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|t| !t.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let (ta, tb) = (toks(a), toks(b));
    if ta.is_empty() || tb.is_empty() {
        return if ta.is_empty() && tb.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for t in &tb {
        *counts.entry(t).or_default() += 1;
    }
    let mut common = 0;
    for t in &ta {
        if let Some(c) = counts.get_mut(t.as_str()) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let p = common as f64 / ta.len() as f64;
    let r = common as f64 / tb.len() as f64;
    2.0 * p * r / (p + r)
}

/// Runs a team's evaluator: the item and the answer as JSON on stdin; a number, or
/// `{"score": x, "pass": bool}`, on stdout. A non-zero exit, a timeout or anything else
/// on stdout is an error.
async fn run_command(
    cmd: &[String],
    timeout_ms: u64,
    threshold: f64,
    item: &Item,
    a: &Answer,
) -> Score {
    let input = json!({
        "item": item,
        "output": a.text,
        "parsed": a.parsed,
        "parse_status": a.parse_status,
        "expected": item.expected,
        "variables": item.variables,
        "latency_ms": a.latency_ms,
        "cost_usd": a.cost_usd,
    });
    let Some((program, args)) = cmd.split_first() else {
        return Score::error("empty command");
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Score::error(format!("cannot start `{program}`: {e}")),
    };
    let work = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its input is its own business.
            let _ = stdin.write_all(input.to_string().as_bytes()).await;
        }
        child.wait_with_output().await
    };
    let out = match tokio::time::timeout(Duration::from_millis(timeout_ms), work).await {
        Err(_) => {
            return Score::error(format!("`{program}` did not answer within {timeout_ms} ms"))
        }
        Ok(Err(e)) => return Score::error(format!("`{program}`: {e}")),
        Ok(Ok(o)) => o,
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect::<String>();
        return Score::error(format!("`{program}` exited with {}: {first}", out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = stdout.trim();
    if let Ok(v) = text.parse::<f64>() {
        if v.is_finite() {
            return Score::graded(v, v >= threshold, None);
        }
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => match o.get("score").and_then(Value::as_f64) {
            Some(v) => {
                let pass = o
                    .get("pass")
                    .and_then(Value::as_bool)
                    .unwrap_or(v >= threshold);
                let detail = o.get("detail").and_then(Value::as_str).map(str::to_string);
                Score::graded(v, pass, detail)
            }
            None => Score::error(format!(
                "`{program}` printed no numeric `score`: {}",
                clip(text)
            )),
        },
        _ => Score::error(format!("`{program}` printed no score: {}", clip(text))),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn f1_and_friends() {
        assert_eq!(token_f1("Paris", "paris."), 1.0);
        assert_eq!(token_f1("the cat", "a dog"), 0.0);
        let v = token_f1("the capital is Paris", "Paris");
        assert!((v - 0.4).abs() < 1e-9, "{v}");
        assert!(similarity(SimilarityMethod::Levenshtein, "kitten", "sitting") > 0.5);
        assert_eq!(similarity(SimilarityMethod::JaroWinkler, "abc", "abc"), 1.0);
    }

    #[test]
    fn json_from_text_or_fence() {
        let a = Answer {
            text: Some("```json\n{\"a\":1}\n```".into()),
            ..Answer::default()
        };
        assert_eq!(answer_json(&a), Some(json!({"a": 1})));
    }

    fn item() -> Item {
        Item {
            id: "i".into(),
            variables: Map::new(),
            messages: None,
            expected: Some(json!("4")),
            labels: vec![],
            tags: vec![],
            source: None,
        }
    }

    /// Every deterministic kind, on answers that pass and answers that fail it.
    use crate::gateway::Gateway;

    #[tokio::test]
    async fn deterministic_evaluators() {
        let file = EvalFile::parse(
            r#"
feature = "f"
[[evaluators]]
name = "contains"
kind = "contains"
values = ["Order", "late"]
case_sensitive = false
[[evaluators]]
name = "contains-expected"
kind = "contains"
[[evaluators]]
name = "schema"
kind = "json_schema"
schema = { type = "object", properties = { n = { type = "integer" } }, required = ["n"] }
[[evaluators]]
name = "field"
kind = "json_field"
field = "/n"
[[evaluators]]
name = "field-fixed"
kind = "json_field"
field = "/n"
equals = 4
[[evaluators]]
name = "parsed"
kind = "parse_status"
allowed = ["ok", "repaired"]
[[evaluators]]
name = "fast"
kind = "max_latency"
ms = 100
[[evaluators]]
name = "cheap"
kind = "max_cost"
usd = 0.01
[[evaluators]]
name = "exact-json"
kind = "exact"
"#,
        )
        .unwrap();
        let store = Store::open("sqlite::memory:").await.unwrap();
        let evals = Evaluators::load(file, &store).await.unwrap();
        let gw = Gateway::new("http://127.0.0.1:9", None);
        let ctx = Ctx {
            gateway: &gw,
            store: &store,
            run_id: "r",
            pending: None,
        };
        let mut it = item();
        it.expected = Some(json!({"n": 4}));
        let good = Answer {
            // The text holds the expected output's JSON text (contains-expected); the
            // JSON checks read the parsed output.
            text: Some("{\"n\":4} ORDER is late".into()),
            parsed: Some(json!({"n": 4})),
            parse_status: Some("repaired".into()),
            latency_ms: 50,
            cost_usd: Some(0.001),
            ..Answer::default()
        };
        let scores: BTreeMap<String, Score> =
            evals.score(&ctx, &it, &good, 0).await.into_iter().collect();
        for (name, s) in &scores {
            assert_eq!(s.pass, Some(true), "{name}: {s:?}");
        }
        let bad = Answer {
            text: Some("{\"n\": \"four\"}".into()),
            parsed: None,
            parse_status: Some("failed".into()),
            latency_ms: 500,
            cost_usd: Some(0.5),
            ..Answer::default()
        };
        let scores: BTreeMap<String, Score> =
            evals.score(&ctx, &it, &bad, 0).await.into_iter().collect();
        for (name, s) in &scores {
            assert_eq!(s.pass, Some(false), "{name}: {s:?}");
            assert_eq!(s.value, Some(0.0), "{name}: {s:?}");
        }
        // What cannot be scored is an error, not a zero: no price, no expected output.
        let mut no_exp = item();
        no_exp.expected = None;
        let unpriced = Answer {
            cost_usd: None,
            ..good.clone()
        };
        let scores: BTreeMap<String, Score> = evals
            .score(&ctx, &no_exp, &unpriced, 0)
            .await
            .into_iter()
            .collect();
        for name in ["cheap", "contains-expected", "field", "exact-json"] {
            assert!(
                scores[name].error.is_some() && scores[name].value.is_none(),
                "{name}: {:?}",
                scores[name]
            );
        }
        // A call that failed errors every evaluator.
        let failed = Answer {
            error: Some("503".into()),
            ..Answer::default()
        };
        let scores = evals.score(&ctx, &it, &failed, 0).await;
        assert!(scores.iter().all(|(_, s)| s.error.is_some()));
    }

    #[tokio::test]
    async fn command_scores_and_errors() {
        let a = Answer {
            text: Some("4".into()),
            ..Answer::default()
        };
        let sh = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        let s = run_command(&sh("cat >/dev/null; echo 0.75"), 5000, 0.5, &item(), &a).await;
        assert_eq!((s.value, s.pass), (Some(0.75), Some(true)));
        let s = run_command(
            &sh("cat >/dev/null; echo '{\"score\": 0.2, \"pass\": true}'"),
            5000,
            0.5,
            &item(),
            &a,
        )
        .await;
        assert_eq!((s.value, s.pass), (Some(0.2), Some(true)));
        // The input reaches the command.
        let s = run_command(
            &sh("grep -q '\"output\":\"4\"' && echo 1 || echo 0"),
            5000,
            0.5,
            &item(),
            &a,
        )
        .await;
        assert_eq!(s.value, Some(1.0));
        for bad in ["echo nope", "exit 3", "sleep 5"] {
            let s = run_command(&sh(bad), 300, 0.5, &item(), &a).await;
            assert!(s.error.is_some() && s.value.is_none(), "{bad}: {s:?}");
        }
    }
}
