//! Shadows: the deployment's shadow version on a copy of a call, after the primary
//! answered, through the same pipeline as every call, on its own task and record
//! (`shadow = true`, `shadow_of` = the primary's request id); never returned. At most
//! `[features] shadow_concurrency` run at once; beyond that the shadow is skipped and
//! counted, so shadows cannot pile up behind a slow shadow target.

use super::{conduct, Answer, Answered, Ask, Entry, FeatureAsk, Pick, Vars};
use crate::auth::Auth;
use crate::features::FeatureCall;
use crate::http_error;
use crate::record::CallRecord;
use crate::state::AppState;
use axum::http::HeaderMap;
use futures::future::BoxFuture;
use llmop_core::context::RequestContext;
use llmop_core::{ChatRequest, GatewayError, WireFormat};
use llmop_features::CompiledFeature;
use llmop_store::ApiKey;
use serde_json::{Map, Value};
use std::sync::Arc;

struct Shadow {
    version: Arc<CompiledFeature>,
    given: Option<Map<String, Value>>,
    context: Option<RequestContext>,
    primary_id: String,
    key_id: Option<String>,
    endpoint: &'static str,
    /// Always empty: a shadow has no client of its own (its key and context are the
    /// primary's, below).
    headers: HeaderMap,
}

/// Starts `fc`'s shadow of the primary call `primary`, if the deployment has one and a
/// slot is free.
pub fn spawn(app: &Arc<AppState>, fc: &FeatureCall, primary: &CallRecord) {
    let Some(version) = fc.shadow.clone() else {
        return;
    };
    let Some(reg) = app.features.as_ref() else {
        return;
    };
    let Some(permit) = reg.shadow_permit() else {
        metrics::counter!("llmop_shadow_skipped_total").increment(1);
        return;
    };
    let shadow = Shadow {
        version,
        given: Some(fc.given.clone()),
        context: Some(primary.context.clone()),
        primary_id: primary.request_id.clone(),
        key_id: primary.key_id.clone(),
        endpoint: primary.endpoint,
        headers: HeaderMap::new(),
    };
    tokio::spawn(run(app.clone(), shadow, permit));
}

/// Boxed with a named type: the shadow's pipeline is the same `conduct` that spawns it.
fn run(
    app: Arc<AppState>,
    shadow: Shadow,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let _permit = permit;
        let rid = llmop_core::context::new_request_id();
        conduct(&app, &rid, shadow).await;
    })
}

impl Entry for Shadow {
    type Output = ();

    fn endpoint(&self) -> &'static str {
        self.endpoint
    }

    fn asked_for(&self) -> Option<String> {
        Some(format!("feature/{}", self.version.name()))
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The primary's key is on the record; its rate limits are not applied (the client
    /// made one call), the budgets are (a shadow spends real money).
    fn authenticate(
        &self,
        _: &Auth,
        rec: &mut CallRecord,
    ) -> Result<Option<Arc<ApiKey>>, GatewayError> {
        rec.key_id.clone_from(&self.key_id);
        Ok(None)
    }

    fn context(&mut self, request_id: &str) -> Result<RequestContext, GatewayError> {
        let mut context = self.context.take().unwrap_or_default();
        context.request_id = request_id.to_string();
        // The shadow has its own deadline (the route's), not the client's.
        context.timeout_ms = None;
        Ok(context)
    }

    async fn parse(&mut self, _: &AppState, _: &mut CallRecord) -> Result<Ask, GatewayError> {
        Ok(Ask {
            req: ChatRequest::new(String::new(), Vec::new(), WireFormat::OpenAi),
            feature: Some(FeatureAsk {
                name: self.version.name().to_string(),
                pick: Pick::Version(self.version.clone()),
                vars: Vars::Given(self.given.take().unwrap_or_default()),
                shadow_of: Some(self.primary_id.clone()),
            }),
        })
    }

    async fn respond(
        self,
        _: &Arc<AppState>,
        outcome: Result<Answered, GatewayError>,
        mut rec: CallRecord,
    ) {
        match outcome {
            Ok(Answered {
                answer: Answer::Whole(resp),
                ..
            }) => {
                if !resp.id.is_empty() {
                    rec.upstream_id = Some(resp.id.clone());
                }
                rec.succeeded(resp);
            }
            Ok(Answered {
                answer: Answer::Stream { .. },
                ..
            }) => {
                let e = GatewayError::Internal("a shadow call got a stream".into());
                rec.failed(&e, 500);
            }
            Err(e) => {
                let status = http_error::status_of(&e).as_u16();
                rec.failed(&e, status);
            }
        }
        rec.finish().await;
    }
}
