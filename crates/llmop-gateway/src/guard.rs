//! The guard stages' glue: a call's guardrail state (its rules, the pseudonym vault and
//! what the rules found, for the record) and the one mapping of a guardrail's stop to
//! the HTTP error envelope. The rules themselves are `llmop_guard::policy`'s.

use llmop_core::codes;
use llmop_core::GatewayError;
use llmop_guard::policy::{Applicable, Ask, Book, Check, ModelFinding, Policy, Stop, OUTCOMES};
use llmop_guard::transform::Vault;
use std::sync::Arc;

/// One call's guardrails, from its input stage to its record. The vault holds the
/// values behind placeholders: it lives as long as the call and is never recorded.
pub struct GuardCall {
    pub policy: Arc<Policy>,
    /// The verdict counters' handles, shared by every call.
    pub counters: Arc<Counters>,
    /// The model-based checks' runner, when a rule has one.
    pub checks: Option<Arc<Checks>>,
    pub applicable: Applicable,
    pub vault: Vault,
    pub book: Book,
}

impl std::fmt::Debug for GuardCall {
    /// Never the values (the vault and book print counts only).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardCall")
            .field("vault", &self.vault)
            .field("book", &self.book)
            .finish()
    }
}

impl GuardCall {
    pub fn new(
        policy: Arc<Policy>,
        counters: Arc<Counters>,
        checks: Option<Arc<Checks>>,
        applicable: Applicable,
    ) -> GuardCall {
        GuardCall {
            policy,
            counters,
            checks,
            applicable,
            vault: Vault::default(),
            book: Book::default(),
        }
    }

    /// Whether answers of this call go through the output guard: output rules,
    /// disclaimers, or placeholders to restore.
    pub fn guards_output(&self) -> bool {
        self.applicable.has_output() || !self.vault.is_empty()
    }
}

/// A guardrail's stop as the client sees it: 422 `guardrail_blocked` naming the rule and
/// the detectors (never the value), or 422 `guardrail_error` for a fail-closed rule that
/// could not check the call.
pub fn stop_error(request_id: &str, stop: &Stop) -> GatewayError {
    let code = match stop {
        Stop::Blocked { .. } => codes::GUARDRAIL_BLOCKED,
        Stop::Failed { .. } => codes::GUARDRAIL_ERROR,
    };
    let rule = match stop {
        Stop::Blocked { rule, .. } | Stop::Failed { rule, .. } => rule.as_str(),
    };
    tracing::info!(request_id, rule, code, "guardrail stopped the call");
    GatewayError::Unprocessable {
        message: stop.to_string(),
        code,
    }
}

/// The guardrail counters' handles: `llmop_guardrail_checks_total{direction}`, and
/// `llmop_guardrail_verdicts_total{rule, direction, outcome}` per rule, direction and
/// outcome, each taken from the registry the first time it counts. A lookup in the
/// registry (the key's labels copied, hashed and compared) cost more than the count.
pub struct Counters {
    checks: [std::sync::OnceLock<metrics::Counter>; 2],
    /// By (rule index in the policy, direction, outcome).
    verdicts: Box<[std::sync::OnceLock<metrics::Counter>]>,
}

impl Counters {
    /// For `policy`'s rules (none without a policy).
    pub fn new(policy: Option<&Policy>) -> Counters {
        let rules = policy.map_or(0, Policy::rule_count);
        let verdicts = (0..rules * 2 * OUTCOMES.len())
            .map(|_| std::sync::OnceLock::new())
            .collect();
        // Taken on first use, not here: the metrics recorder is installed after the
        // state is built, and a handle taken before it counts nowhere.
        Counters {
            checks: Default::default(),
            verdicts,
        }
    }

    /// The counter of a verdict of `policy`'s rules.
    fn verdict(
        &self,
        policy: &Policy,
        rule: &Arc<str>,
        direction: usize,
        outcome: &str,
    ) -> metrics::Counter {
        let r = policy.rule_index(rule);
        let o = OUTCOMES.iter().position(|x| *x == outcome);
        let slot = r
            .zip(o)
            .and_then(|(r, o)| self.verdicts.get((r * 2 + direction) * OUTCOMES.len() + o));
        match slot {
            Some(s) => s
                .get_or_init(|| verdict_counter(rule, direction, outcome))
                .clone(),
            // A verdict these counters were not made for (another policy's): counted
            // through the registry rather than not at all.
            None => verdict_counter(rule, direction, outcome),
        }
    }
}

fn verdict_counter(rule: &Arc<str>, direction: usize, outcome: &str) -> metrics::Counter {
    metrics::counter!(
        "llmop_guardrail_verdicts_total",
        "rule" => rule.to_string(),
        "direction" => ["input", "output"][direction],
        "outcome" => outcome.to_string()
    )
}

/// Counts a call's guardrails: `llmop_guardrail_checks_total{direction}` once per
/// direction its rules checked, and `llmop_guardrail_verdicts_total{rule, direction,
/// outcome}` for each verdict other than `pass` (the pass count of a rule is its
/// direction's checks less these; counting it per call cost more than the rest).
pub fn count(g: &GuardCall) {
    let (mut input, mut output) = (false, false);
    for v in &g.book.verdicts {
        let direction = match &*v.direction {
            "input" => {
                input = true;
                0
            }
            _ => {
                output = true;
                1
            }
        };
        if v.outcome == "pass" {
            continue;
        }
        g.counters
            .verdict(&g.policy, &v.rule, direction, &v.outcome)
            .increment(1);
    }
    for (d, counted) in [(0, input), (1, output)] {
        if counted {
            g.counters.checks[d]
                .get_or_init(|| {
                    let direction = ["input", "output"][d];
                    metrics::counter!("llmop_guardrail_checks_total", "direction" => direction)
                })
                .increment(1);
        }
    }
}

/// The model-based checks' means: an HTTP client and the remote services' settings
/// (their tokens read from the environment at start), and a bound on the texts each
/// classifier works on at once. Shared by every call.
pub struct Checks {
    http: reqwest::Client,
    remote: std::collections::HashMap<String, Remote>,
    /// Per classifier (by its index in the policy): the texts it may work on at once.
    classifying: Vec<Arc<tokio::sync::Semaphore>>,
}

struct Remote {
    url: String,
    protocol: llmop_core::config::RemoteProtocol,
    /// `Bearer <token>`; never logged or recorded.
    authorization: Option<String>,
    model: Option<String>,
    categories: Vec<String>,
}

/// The most bytes read of a remote check's answer.
const REMOTE_ANSWER_LIMIT: usize = 1024 * 1024;

impl Checks {
    /// `None` when no rule needs one.
    pub fn new(
        cfg: &llmop_core::config::GuardrailsConfig,
        policy: &Policy,
    ) -> Result<Option<Checks>, String> {
        let used = |prefix: &str, name: &str| {
            cfg.rules
                .iter()
                .any(|r| r.detect.iter().any(|d| d == &format!("{prefix}.{name}")))
        };
        let mut remote = std::collections::HashMap::new();
        for (name, r) in &cfg.remote {
            if !used("remote", name) {
                continue;
            }
            let authorization = match &r.api_key_env {
                Some(var) => match std::env::var(var) {
                    Ok(t) if !t.is_empty() => Some(format!("Bearer {t}")),
                    _ => {
                        return Err(format!(
                            "guardrails.remote.{name}.api_key_env names `{var}`, which is not set (or empty)"
                        ))
                    }
                },
                None => None,
            };
            remote.insert(
                name.clone(),
                Remote {
                    url: r.url.clone(),
                    protocol: r.protocol,
                    authorization,
                    model: r.model.clone(),
                    categories: r.categories.clone(),
                },
            );
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let classifying: Vec<_> = (0..)
            .map_while(|i| policy.classifier(i))
            .map(|c| {
                let permits = cfg
                    .classifiers
                    .get(c.name())
                    .and_then(|c| c.concurrency)
                    .unwrap_or(cores);
                Arc::new(tokio::sync::Semaphore::new(permits))
            })
            .collect();
        if remote.is_empty() && classifying.is_empty() {
            return Ok(None);
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the remote checks' HTTP client: {e}"))?;
        Ok(Some(Checks {
            http,
            remote,
            classifying,
        }))
    }
}

/// Runs a direction's model-based checks, all at once, each bounded by its timeout; a
/// check that fails or times out is an error outcome (its rule's `on_error` decides).
pub async fn run_asks(
    policy: &Arc<Policy>,
    checks: Option<&Arc<Checks>>,
    asks: Vec<Ask>,
) -> Vec<(Ask, Result<ModelFinding, String>)> {
    let runs = asks.into_iter().map(|ask| async move {
        let limit = policy.timeout(&ask.check);
        let max = policy.max_scan_bytes();
        let work = async {
            // What the local detectors do not scan, no model reads or service gets.
            if let Some(t) = ask.texts.iter().find(|t| t.len() > max) {
                return Err(format!(
                    "{} bytes is more than max_scan_bytes = {max}",
                    t.len()
                ));
            }
            let Some(checks) = checks else {
                return Err("no check runner".to_string());
            };
            match &ask.check {
                Check::Classifier(i) => classify(policy, checks, *i, &ask.texts).await,
                Check::Remote(name) => remote(checks, name, &ask).await,
            }
        };
        let outcome = match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {} ms", limit.as_millis())),
        };
        if let Err(e) = &outcome {
            metrics::counter!("llmop_guardrail_check_errors_total", "check" => policy.check_name(&ask.check))
                .increment(1);
            tracing::warn!(rule = %ask.rule_name, check = %policy.check_name(&ask.check), error = %e, "a guardrail check failed");
        }
        (ask, outcome)
    });
    futures::future::join_all(runs).await
}

/// A classifier on texts, on the blocking pool (at most its `concurrency` at once).
async fn classify(
    policy: &Arc<Policy>,
    checks: &Checks,
    i: usize,
    texts: &[String],
) -> Result<ModelFinding, String> {
    let Some(sem) = checks.classifying.get(i) else {
        return Err("no such classifier".into());
    };
    let permit = sem
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| "the classifier is closed".to_string())?;
    let p = policy.clone();
    let texts = texts.to_vec();
    let verdicts = tokio::task::spawn_blocking(move || {
        // Held until the work ends, not until the call stops waiting: a call that
        // timed out does not free a slot its classification still uses.
        let _permit = permit;
        let c = p.classifier(i).ok_or("no such classifier")?;
        texts
            .iter()
            .map(|t| c.classify(t))
            .collect::<Result<Vec<_>, String>>()
    })
    .await
    .map_err(|_| "the classifier failed".to_string())??;
    let worst = verdicts.iter().max_by(|a, b| a.score.total_cmp(&b.score));
    Ok(ModelFinding {
        found: verdicts.iter().any(|v| v.flagged),
        evidence: worst.map_or(String::new(), |v| format!("{} {:.2}", v.label, v.score)),
    })
}

/// A remote service on texts, in its protocol.
async fn remote(checks: &Checks, name: &str, ask: &Ask) -> Result<ModelFinding, String> {
    use llmop_core::config::RemoteProtocol;
    let Some(r) = checks.remote.get(name) else {
        return Err("no such remote check".into());
    };
    let body = match r.protocol {
        RemoteProtocol::Llmop => serde_json::json!({
            "rule": ask.rule_name,
            "direction": ask.direction,
            "part": ask.part.name(),
            "texts": ask.texts,
        }),
        RemoteProtocol::OpenaiModeration => {
            let mut b = serde_json::json!({ "input": ask.texts });
            if let Some(m) = &r.model {
                b["model"] = serde_json::Value::String(m.clone());
            }
            b
        }
    };
    let mut req = checks.http.post(&r.url).json(&body);
    if let Some(a) = &r.authorization {
        req = req.header(reqwest::header::AUTHORIZATION, a);
    }
    let mut resp = req.send().await.map_err(|e| {
        if e.is_connect() {
            "cannot connect".to_string()
        } else {
            "the request failed".to_string()
        }
    })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("answered HTTP {}", status.as_u16()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > REMOTE_ANSWER_LIMIT as u64)
    {
        return Err("its answer is larger than 1 MB".into());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|_| "its answer was cut".to_string())?
    {
        if bytes.len() + chunk.len() > REMOTE_ANSWER_LIMIT {
            return Err("its answer is larger than 1 MB".into());
        }
        bytes.extend_from_slice(&chunk);
    }
    llmop_guard::remote::read_answer(r.protocol, &bytes, &r.categories)
}
