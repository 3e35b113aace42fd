//! The record of one call, and how records are listed.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// One try of one target, in the order they happened. The one attempt type: the
/// gateway fills it as the call goes (its codes are `&'static str`, borrowed), the store
/// reads it back (owned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub provider: String,
    pub model: String,
    /// `None` on success, else the error's stable code.
    pub error: Option<Cow<'static, str>>,
    pub upstream_status: Option<u16>,
    pub latency_ms: u64,
    /// Why the next attempt happened (e.g. `upstream_error`, `timeout`), if one did.
    pub retry_reason: Option<Cow<'static, str>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub score: Option<f64>,
    pub label: Option<String>,
    pub comment: Option<String>,
    pub at_ms: i64,
}

/// Everything about one call. Fields that later layers fill (feature version, cost,
/// parse status…) are `None` until they exist; `None` means unknown, never zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub request_id: String,
    pub created_at_ms: i64,
    pub endpoint: String,
    pub env: Option<String>,
    pub key_id: Option<String>,
    pub user: Option<String>,
    pub session: Option<String>,
    pub feature: Option<String>,
    pub feature_version: Option<i64>,
    pub content_hash: Option<String>,
    pub arm: Option<String>,
    pub shadow: bool,
    pub replay_of: Option<String>,
    pub route: Option<String>,
    pub stream: bool,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub upstream_id: Option<String>,
    /// HTTP status the client saw; 499 when it went away first.
    pub status: u16,
    pub error_code: Option<String>,
    pub client_disconnected: bool,
    pub parse_status: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cached_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub tags: BTreeMap<String, String>,
    pub attempts: Vec<Attempt>,
    /// Sampling and length parameters, tools, response format: what was asked.
    pub request_params: Value,
    pub input_messages: Value,
    pub rendered_prompt: Option<String>,
    pub output_text: Option<String>,
    pub output_tool_calls: Value,
    pub parsed_output: Option<Value>,
    pub feedback: Option<Feedback>,
    /// Answered by the route's `fallback_response` after every target failed.
    #[serde(default)]
    pub degraded: bool,
    /// The variables a feature call's templates were rendered from.
    #[serde(default)]
    pub variables: Option<Value>,
    /// For a shadow call: the request id of the primary call it copied.
    #[serde(default)]
    pub shadow_of: Option<String>,
    /// This call's own identity, unique per call even when clients reuse request ids.
    /// Empty in records made before it existed (the request id stands for it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub call_uid: String,
    /// Set when the client reused an `x-request-id` that an earlier call already holds:
    /// the id this call was answered with. The record itself is then stored under
    /// `<id>~<call_uid>`, so no call is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    /// A large field (the input messages, the output text) was cut to the store's
    /// `max_field_bytes`; what is kept is its beginning.
    #[serde(default)]
    pub truncated: bool,
    /// The part of `output_tokens` the model spent reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<i64>,
    /// OpenAI's `system_fingerprint`: a change means the provider changed the system
    /// behind the same model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// The model as the provider named it in its answer (a dated version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_model: Option<String>,
    /// Reasoning state kept for the follow-up of this call's tool calls (stored in
    /// `reasoning_state`, not in the record's row).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasoning_state: Vec<KeptState>,
    /// Online evaluators sampled to score this call: queued (`online_queue`) in the same
    /// transaction as the record, so the work is durable exactly when the record is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub online_evals: Vec<String>,
    /// Scores the online evaluators that score in place (deterministic checks) gave this
    /// call when its record was built: stored in the record's own row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub online_scores: Vec<crate::scores::InlineScore>,
    /// The W3C `traceparent` the client sent, for the call's exported span (kept in
    /// the spill file, not in the record's row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The pipeline stages this call went through, in order (`authenticate`, `context`,
    /// `parse`, …, `record`): where a refused or failed call stopped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
    /// What the call's guardrails decided (`guardrail_verdicts` in SQL): rules, actions,
    /// outcomes, fingerprints of what they found; never the values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<llmop_core::guard::GuardVerdict>,
    /// What the agent policy decided for this call (`agent_decisions` in SQL): the end
    /// user's scope source, the session's taint, tools removed, one decision per
    /// proposed tool call with its reason; never argument values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Value>,
    /// What caching did: `hit | miss | bypass` (response cache), `replay` (an
    /// idempotent retry); `None` when none applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// For a served call (`hit`, `replay`): what its answer cost when it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_usd: Option<f64>,
    /// For a served call: the request id of the call that made its answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_source: Option<String>,
    /// Input tokens written to the provider's prompt cache (`cached_tokens` are read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<i64>,
    /// A cascade's answer: what the same tokens would have cost on the route's last
    /// (most capable) target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_usd: Option<f64>,
}

/// Reasoning state llmop keeps on a client's behalf, keyed by the tool-call id it
/// issued. `state` is the gateway's JSON; the store does not read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptState {
    pub call_id: String,
    pub state: Value,
}

impl Record {
    /// A record with the identifying fields set and everything else empty.
    pub fn new(
        request_id: impl Into<String>,
        created_at_ms: i64,
        endpoint: impl Into<String>,
    ) -> Self {
        Record {
            request_id: request_id.into(),
            created_at_ms,
            endpoint: endpoint.into(),
            env: None,
            key_id: None,
            user: None,
            session: None,
            feature: None,
            feature_version: None,
            content_hash: None,
            arm: None,
            shadow: false,
            replay_of: None,
            route: None,
            stream: false,
            provider: None,
            model: None,
            upstream_id: None,
            status: 0,
            error_code: None,
            client_disconnected: false,
            parse_status: None,
            input_tokens: None,
            output_tokens: None,
            cached_tokens: None,
            cost_usd: None,
            latency_ms: 0,
            ttft_ms: None,
            tags: BTreeMap::new(),
            attempts: Vec::new(),
            request_params: Value::Object(Default::default()),
            input_messages: Value::Array(Vec::new()),
            rendered_prompt: None,
            output_text: None,
            output_tool_calls: Value::Array(Vec::new()),
            parsed_output: None,
            feedback: None,
            degraded: false,
            variables: None,
            shadow_of: None,
            call_uid: String::new(),
            reasoning_tokens: None,
            system_fingerprint: None,
            service_tier: None,
            upstream_model: None,
            traceparent: None,
            stages: Vec::new(),
            reasoning_state: Vec::new(),
            online_evals: Vec::new(),
            online_scores: Vec::new(),
            guardrails: Vec::new(),
            agent: None,
            client_request_id: None,
            truncated: false,
            cache: None,
            saved_usd: None,
            cache_source: None,
            cache_write_tokens: None,
            baseline_usd: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Status below 400 and no error.
    Ok,
    /// Status 400 and above (client disconnects, 499, included), or an error after the
    /// status was sent (a stream that failed mid-way).
    Error,
    Exactly(u16),
}

impl std::str::FromStr for StatusFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ok" => Ok(StatusFilter::Ok),
            "error" => Ok(StatusFilter::Error),
            n => n
                .parse::<u16>()
                .map(StatusFilter::Exactly)
                .map_err(|_| format!("status must be ok, error or an HTTP status, not `{n}`")),
        }
    }
}

/// What `list` returns: newest first, at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// A request id as the client knows it: the record stored under it and the calls
    /// that reused it.
    pub request_id: Option<String>,
    pub feature: Option<String>,
    pub user: Option<String>,
    pub session: Option<String>,
    pub status: Option<StatusFilter>,
    /// Any id a person may hold: llmop's request id, the client's, the provider's answer
    /// id, or a session id.
    pub q: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    /// The API key's id (never the key).
    pub key: Option<String>,
    pub version: Option<i64>,
    pub degraded: Option<bool>,
    pub min_latency_ms: Option<i64>,
    pub max_latency_ms: Option<i64>,
    pub min_cost_usd: Option<f64>,
    pub max_cost_usd: Option<f64>,
    /// Inclusive lower bound, Unix ms.
    pub since_ms: Option<i64>,
    /// Exclusive upper bound, Unix ms.
    pub until_ms: Option<i64>,
    /// 1..=1000; 50 when unset.
    pub limit: Option<u32>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl ListFilter {
    /// The filter of `GET /v1/requests?…` from its query string. Unknown parameters are
    /// refused, so a typo (`?users=`) cannot silently return everything. Errors are
    /// `(parameter, message)`.
    pub fn from_query(q: &str, now_ms: i64) -> Result<ListFilter, (String, String)> {
        let mut f = ListFilter::default();
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            let bad = |m: String| (k.to_string(), m);
            let v = v.into_owned();
            match &*k {
                "request_id" => f.request_id = Some(v),
                "feature" => f.feature = Some(v),
                "user" => f.user = Some(v),
                "session" => f.session = Some(v),
                "status" => f.status = Some(v.parse().map_err(bad)?),
                "q" => f.q = Some(v.trim().to_string()).filter(|v| !v.is_empty()),
                "model" => f.model = Some(v),
                "provider" => f.provider = Some(v),
                "key" => f.key = Some(v),
                "version" => {
                    f.version = Some(
                        v.parse()
                            .map_err(|_| bad("version must be a whole number".into()))?,
                    )
                }
                "degraded" => {
                    f.degraded = Some(match &*v {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        _ => return Err(bad("degraded must be true or false".into())),
                    })
                }
                "min_latency_ms" | "max_latency_ms" => {
                    let n: i64 = v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| bad(format!("{k} must be a number of milliseconds")))?;
                    if k == "min_latency_ms" {
                        f.min_latency_ms = Some(n)
                    } else {
                        f.max_latency_ms = Some(n)
                    }
                }
                "min_cost_usd" | "max_cost_usd" => {
                    let n: f64 = v
                        .parse()
                        .ok()
                        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
                        .ok_or_else(|| bad(format!("{k} must be an amount in USD")))?;
                    if k == "min_cost_usd" {
                        f.min_cost_usd = Some(n)
                    } else {
                        f.max_cost_usd = Some(n)
                    }
                }
                "since" => f.since_ms = Some(parse_time(&v, now_ms).map_err(bad)?),
                "until" => f.until_ms = Some(parse_time(&v, now_ms).map_err(bad)?),
                "limit" => {
                    let n: u32 = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| bad(format!("limit must be a number from 1 to {MAX_LIMIT}")))?;
                    f.limit = Some(n);
                }
                "cursor" => {
                    if decode_cursor(&v).is_none() {
                        return Err(bad(
                            "invalid cursor: pass back the `next_cursor` of a previous page".into(),
                        ));
                    }
                    f.cursor = Some(v)
                }
                other => {
                    return Err(bad(format!(
                        "unknown parameter `{other}`: use q, feature, version, model, provider, key, user, session, status, degraded, min_latency_ms, max_latency_ms, min_cost_usd, max_cost_usd, since, until, limit or cursor"
                    )))
                }
            }
        }
        Ok(f)
    }
}

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub records: Vec<Record>,
    /// Pass back as `cursor` for the next (older) page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A cursor is the sort key of the last record of a page: `<created_at_ms>:<request_id>`.
pub(crate) fn encode_cursor(r: &Record) -> String {
    format!("{}:{}", r.created_at_ms, r.request_id)
}

pub(crate) fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let (ms, id) = c.split_once(':')?;
    Some((ms.parse().ok()?, id.to_string()))
}

/// A point in time as people write it in a query: Unix milliseconds (`1763800000000`),
/// an RFC 3339 time (`2026-11-22T10:00:00Z`), a date (`2026-11-22`, midnight UTC), or an
/// age (`15m`, `24h`, `7d`: that long before `now_ms`). Returns Unix ms.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now_ms.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64));
    }
    let full;
    let text = if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') {
        full = format!("{s}T00:00:00Z");
        full.as_str()
    } else {
        s
    };
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| {
            format!(
                "`{s}` is not a time: use Unix ms, RFC 3339 (2026-11-22T10:00:00Z), a date (2026-11-22) or an age (7d, 24h)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_people_write() {
        let now = 1_763_800_000_000;
        assert_eq!(parse_time("1700000000000", now), Ok(1_700_000_000_000));
        assert_eq!(parse_time("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_time("15m", now), Ok(now - 900_000));
        assert_eq!(
            parse_time("2026-11-22T10:00:00Z", now),
            Ok(1_795_341_600_000)
        );
        assert_eq!(parse_time("2026-11-22", now), Ok(1_795_305_600_000));
        assert!(parse_time("yesterday-ish", now).is_err());
    }

    proptest::proptest! {
        #[test]
        fn query_strings_never_panic(q in ".{0,200}") {
            if let Ok(f) = ListFilter::from_query(&q, 1_795_305_600_000) {
                proptest::prop_assert!(f.limit.is_none_or(|l| (1..=MAX_LIMIT).contains(&l)));
            }
            let _ = parse_time(&q, 1_795_305_600_000);
        }

        #[test]
        fn unix_ms_and_cursors_round_trip(ms in 0i64..4_000_000_000_000, id in "[A-Za-z0-9:._-]{1,64}") {
            proptest::prop_assert_eq!(parse_time(&ms.to_string(), 0), Ok(ms));
            let mut r = Record::new(id.clone(), ms, "/x");
            r.status = 200;
            let q = format!("cursor={}", encode_cursor(&r));
            let f = ListFilter::from_query(&q, 0).map_err(|e| proptest::test_runner::TestCaseError::fail(e.1))?;
            proptest::prop_assert_eq!(f.cursor.as_deref().and_then(decode_cursor), Some((ms, id)));
        }
    }

    #[test]
    fn cursor_round_trip() {
        let mut r = Record::new("abc:def", 42, "/x");
        r.status = 200;
        let c = encode_cursor(&r);
        assert_eq!(decode_cursor(&c), Some((42, "abc:def".to_string())));
    }
}
