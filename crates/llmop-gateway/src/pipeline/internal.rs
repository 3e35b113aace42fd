//! Calls the gateway makes for itself: an online evaluator's judge, a registered feature
//! version called with variables, through the same conductor as every call (recorded in
//! environment `eval`, tagged `online_of` = the scored call, priced and budgeted like any
//! traffic). It has no client: no key, no client deadline.

use super::{conduct, Answer, Answered, Ask, Entry, FeatureAsk, Pick, Vars};
use crate::auth::Auth;
use crate::http_error;
use crate::record::CallRecord;
use crate::state::AppState;
use axum::http::HeaderMap;
use futures::future::BoxFuture;
use llmop_core::context::RequestContext;
use llmop_core::{codes, ChatRequest, GatewayError, WireFormat};
use llmop_eval::gateway::{CallError, Invoked, Invoker};
use llmop_store::ApiKey;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Calls feature versions in process, on behalf of the call `of`.
pub struct InProcess {
    pub app: Arc<AppState>,
}

struct Internal {
    feature: String,
    version: i64,
    vars: Option<Map<String, Value>>,
    tags: BTreeMap<String, String>,
    /// Always empty: there is no client.
    headers: HeaderMap,
}

impl Invoker for InProcess {
    fn invoke<'a>(
        &'a self,
        feature: &'a str,
        version: i64,
        variables: &'a Map<String, Value>,
        tags: &'a [(&'a str, String)],
    ) -> BoxFuture<'a, Result<Invoked, CallError>> {
        let entry = Internal {
            feature: feature.to_string(),
            version,
            vars: Some(variables.clone()),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            headers: HeaderMap::new(),
        };
        let app = self.app.clone();
        Box::pin(async move {
            let rid = llmop_core::context::new_request_id();
            conduct(&app, &rid, entry).await
        })
    }
}

impl Entry for Internal {
    type Output = Result<Invoked, CallError>;

    fn endpoint(&self) -> &'static str {
        "internal/online-eval"
    }

    fn asked_for(&self) -> Option<String> {
        Some(format!("feature/{}", self.feature))
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    fn is_load(&self) -> bool {
        false
    }

    fn authenticate(
        &self,
        _: &Auth,
        _: &mut CallRecord,
    ) -> Result<Option<Arc<ApiKey>>, GatewayError> {
        Ok(None)
    }

    fn context(&mut self, request_id: &str) -> Result<RequestContext, GatewayError> {
        Ok(RequestContext {
            request_id: request_id.to_string(),
            env: Some("eval".into()),
            feature: Some(self.feature.clone()),
            tags: std::mem::take(&mut self.tags),
            ..RequestContext::default()
        })
    }

    async fn parse(&mut self, _: &AppState, _: &mut CallRecord) -> Result<Ask, GatewayError> {
        Ok(Ask {
            req: ChatRequest::new(String::new(), Vec::new(), WireFormat::OpenAi),
            feature: Some(FeatureAsk {
                name: self.feature.clone(),
                pick: Pick::Pinned(self.version),
                vars: Vars::Given(self.vars.take().unwrap_or_default()),
                shadow_of: None,
            }),
        })
    }

    async fn respond(
        self,
        _: &Arc<AppState>,
        outcome: Result<Answered, GatewayError>,
        mut rec: CallRecord,
    ) -> Result<Invoked, CallError> {
        let result = match outcome {
            Ok(Answered {
                answer: Answer::Whole(resp),
                ..
            }) => {
                if !resp.id.is_empty() {
                    rec.upstream_id = Some(resp.id.clone());
                }
                let text = resp.text();
                rec.succeeded(resp);
                let f = rec.feature.as_deref();
                Ok(Invoked {
                    request_id: rec.request_id.clone(),
                    text: Some(text),
                    parsed: f.and_then(|f| f.parsed.clone()),
                    parse_status: f.and_then(|f| f.parse_status).map(str::to_string),
                    cost_usd: rec.cost_usd(),
                    latency_ms: rec.started.elapsed().as_millis() as u64,
                    model: rec.model.clone(),
                })
            }
            Ok(Answered {
                answer: Answer::Stream { .. },
                ..
            }) => {
                let e = GatewayError::Internal("an internal call got a stream".into());
                rec.failed(&e, 500);
                Err(CallError::Failed {
                    status: 500,
                    code: codes::INTERNAL_ERROR.into(),
                    message: e.to_string(),
                })
            }
            Err(e) => {
                let status = http_error::status_of(&e).as_u16();
                rec.failed(&e, status);
                Err(if e.code() == codes::OUTPUT_PARSE_FAILED {
                    CallError::ParseFailed {
                        request_id: rec.request_id.clone(),
                        message: e.to_string(),
                    }
                } else {
                    CallError::Failed {
                        status,
                        code: e.code().to_string(),
                        message: e.to_string(),
                    }
                })
            }
        };
        rec.finish().await;
        result
    }
}
