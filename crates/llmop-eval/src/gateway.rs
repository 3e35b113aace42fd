//! The eval's client of a running gateway: every evaluated call and every judge call goes
//! through `POST /v1/features/{name}/invoke` with a pinned version, so it is recorded,
//! priced, budgeted and retried like any traffic (environment `eval`, tagged with the
//! run).

use futures::future::BoxFuture;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// Whatever calls a feature version for an evaluator: the HTTP [`Gateway`] (offline
/// runs, from the CLI), or the gateway's own pipeline (online evaluation, in process).
pub trait Invoker: Send + Sync {
    fn invoke<'a>(
        &'a self,
        feature: &'a str,
        version: i64,
        variables: &'a Map<String, Value>,
        tags: &'a [(&'a str, String)],
    ) -> BoxFuture<'a, Result<Invoked, CallError>>;
}

impl Invoker for Gateway {
    fn invoke<'a>(
        &'a self,
        feature: &'a str,
        version: i64,
        variables: &'a Map<String, Value>,
        tags: &'a [(&'a str, String)],
    ) -> BoxFuture<'a, Result<Invoked, CallError>> {
        Box::pin(Gateway::invoke(self, feature, version, variables, tags))
    }
}

#[derive(Clone)]
pub struct Gateway {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

/// A feature call's answer, as the invoke endpoint returns it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Invoked {
    pub request_id: String,
    pub text: Option<String>,
    pub parsed: Option<Value>,
    pub parse_status: Option<String>,
    pub cost_usd: Option<f64>,
    pub latency_ms: u64,
    pub model: Option<String>,
}

impl CallError {
    /// Worth trying again later: the gateway or a provider failed (5xx, 429, 408,
    /// unreachable), not the request.
    pub fn transient(&self) -> bool {
        match self {
            CallError::Unreachable(_) => true,
            CallError::Failed { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            CallError::ParseFailed { .. } => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The model answered but its output did not parse under the feature's policy: a
    /// result about the version (it scores as a failed answer), not an infrastructure
    /// error.
    #[error("the output did not parse: {message}")]
    ParseFailed { request_id: String, message: String },
    /// The gateway refused or failed the call (status, code, message).
    #[error("the gateway answered {status} ({code}): {message}")]
    Failed {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the gateway: {0}")]
    Unreachable(String),
}

impl Gateway {
    /// `key`: a client key when the gateway requires one (`LLMOP_API_KEY`).
    pub fn new(base: &str, key: Option<String>) -> Gateway {
        Gateway {
            base: base.trim_end_matches('/').to_string(),
            key,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap_or_default(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Calls `feature` v`version` with `variables` in environment `eval`.
    pub async fn invoke(
        &self,
        feature: &str,
        version: i64,
        variables: &Map<String, Value>,
        tags: &[(&str, String)],
    ) -> Result<Invoked, CallError> {
        let tags: Map<String, Value> = tags
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect();
        let request_id = uuid::Uuid::now_v7().to_string();
        let mut req = self
            .http
            .post(format!("{}/v1/features/{feature}/invoke", self.base))
            .header("x-request-id", &request_id)
            // A response cache must not answer an eval: a repeat is a new sample.
            .header("cache-control", "no-cache")
            .timeout(Duration::from_secs(600))
            .json(&json!({
                "variables": variables,
                "version": version,
                "env": "eval",
                "tags": tags,
            }));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CallError::Unreachable(format!("{}: {e}", self.base)))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.map_err(|e| CallError::Failed {
            status,
            code: "bad_body".into(),
            message: format!("the answer is not JSON: {e}"),
        })?;
        if !(200..300).contains(&status) {
            let err = body.get("error");
            let code = err
                .and_then(|e| e.get("code"))
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_string();
            let message = err
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if code == "output_parse_failed" {
                return Err(CallError::ParseFailed {
                    request_id,
                    message,
                });
            }
            return Err(CallError::Failed {
                status,
                code,
                message,
            });
        }
        let out = body.get("output");
        Ok(Invoked {
            request_id: body
                .get("request_id")
                .and_then(Value::as_str)
                .unwrap_or(&request_id)
                .to_string(),
            text: out
                .and_then(|o| o.get("text"))
                .and_then(Value::as_str)
                .map(str::to_string),
            parsed: out
                .and_then(|o| o.get("parsed"))
                .filter(|p| !p.is_null())
                .cloned(),
            parse_status: body
                .get("parse_status")
                .and_then(Value::as_str)
                .map(str::to_string),
            cost_usd: body.get("cost_usd").and_then(Value::as_f64),
            latency_ms: body.get("latency_ms").and_then(Value::as_u64).unwrap_or(0),
            model: body
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}
