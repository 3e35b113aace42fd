//! The read side of the record store over HTTP: one record by request id, a filtered
//! newest-first list with cursor paging, and feedback on a record.

use crate::context::RequestId;
use crate::http_error::{self, WireFormat};
use crate::state::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use llmop_core::codes;
use llmop_core::GatewayError;
use llmop_store::{Feedback, ListFilter, Store, StoreError};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

fn store(app: &AppState) -> Result<&Store, GatewayError> {
    app.recorder
        .as_ref()
        .map(|r| &r.store)
        .ok_or_else(|| GatewayError::NotFound {
            message: "recording is off ([store] enabled = false): there are no records".into(),
            code: codes::STORE_DISABLED,
        })
}

fn store_error(e: StoreError) -> GatewayError {
    match e {
        StoreError::BadCursor => GatewayError::invalid(e.to_string(), Some("cursor".into())),
        e => {
            tracing::error!(error = %e, "record store read failed");
            GatewayError::Unavailable {
                message: "the record store cannot be read right now".into(),
                code: codes::STORE_UNAVAILABLE,
            }
        }
    }
}

fn not_found(id: &str) -> GatewayError {
    GatewayError::NotFound {
        message: format!("no record of request `{id}`"),
        code: codes::RECORD_NOT_FOUND,
    }
}

fn reply(rid: &str, r: Result<Response, GatewayError>) -> Response {
    r.unwrap_or_else(|e| http_error::response(WireFormat::OpenAi, &e, rid))
}

/// The longest a read of a missing record waits for the writer (a store that stalls).
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_millis(1_500);

/// Waits until every record queued before now is done (committed, spilled or lost), at
/// most [`SETTLE_WAIT`]. The writer lingers to batch its commits, so a call's record
/// lands moments after its response: a client that reads its own call's record at once
/// would otherwise get 404. Nothing is waited for while the writer has no backlog, so a
/// read of an id that never was stays quick.
async fn settle(recorder: &crate::record::Recorder) {
    let stats = recorder.writer.stats();
    let before = stats.snapshot().queued;
    let done = || {
        let s = stats.snapshot();
        s.written + s.spilled + s.lost >= before
    };
    let until = tokio::time::Instant::now() + SETTLE_WAIT;
    let mut poll = std::time::Duration::from_millis(2);
    while !done() && tokio::time::Instant::now() < until {
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(std::time::Duration::from_millis(50));
    }
}

/// `GET /v1/requests/{id}`: a record queued before the read (the client's own call,
/// just answered) is waited for rather than missed.
pub async fn get(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path(id): Path<String>,
) -> Response {
    let r = async {
        let store = store(&app)?;
        let mut rec = store.get(&id).await.map_err(store_error)?;
        if let (None, Some(recorder)) = (&rec, &app.recorder) {
            settle(recorder).await;
            rec = store.get(&id).await.map_err(store_error)?;
        }
        let rec = rec.ok_or_else(|| not_found(&id))?;
        Ok(axum::Json(rec).into_response())
    }
    .await;
    reply(&rid, r)
}

fn filter_from_query(q: &str, now_ms: i64) -> Result<ListFilter, GatewayError> {
    ListFilter::from_query(q, now_ms).map_err(|(param, m)| GatewayError::invalid(m, Some(param)))
}

/// `GET /v1/requests?feature=&user=&session=&status=&since=&until=&limit=&cursor=`
pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    RawQuery(q): RawQuery,
) -> Response {
    let r = async {
        let store = store(&app)?;
        let filter = filter_from_query(q.as_deref().unwrap_or(""), unix_ms())?;
        let page = store.list(&filter).await.map_err(store_error)?;
        Ok(axum::Json(json!({
            "object": "list",
            "data": page.records,
            "has_more": page.next_cursor.is_some(),
            "next_cursor": page.next_cursor,
        }))
        .into_response())
    }
    .await;
    reply(&rid, r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    score: Option<f64>,
    label: Option<String>,
    comment: Option<String>,
}

const MAX_LABEL: usize = 256;
const MAX_COMMENT: usize = 16 * 1024;

/// `POST /v1/requests/{id}/feedback` `{"score":…,"label":…,"comment":…}`: sets (replaces)
/// the record's feedback; a record still queued is waited for, as by [`get`].
pub async fn feedback(
    State(app): State<Arc<AppState>>,
    Extension(RequestId(rid)): Extension<RequestId>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let r = async {
        let store = store(&app)?;
        let b: FeedbackBody = serde_json::from_slice(&body)
            .map_err(|e| GatewayError::invalid(format!("invalid feedback: {e}"), None))?;
        if b.score.is_none() && b.label.is_none() && b.comment.is_none() {
            return Err(GatewayError::invalid(
                "feedback needs at least one of score, label, comment",
                None,
            ));
        }
        if b.score.is_some_and(|s| !s.is_finite()) {
            return Err(GatewayError::invalid(
                "score must be a finite number",
                Some("score".into()),
            ));
        }
        if b.label.as_ref().is_some_and(|l| l.len() > MAX_LABEL) {
            return Err(GatewayError::invalid(
                format!("label is longer than {MAX_LABEL} bytes"),
                Some("label".into()),
            ));
        }
        if b.comment.as_ref().is_some_and(|c| c.len() > MAX_COMMENT) {
            return Err(GatewayError::invalid(
                format!("comment is longer than {MAX_COMMENT} bytes"),
                Some("comment".into()),
            ));
        }
        let fb = Feedback {
            score: b.score,
            label: b.label,
            comment: b.comment,
            at_ms: unix_ms(),
        };
        // Feedback often comes the moment an answer is shown: its record may still be
        // queued.
        let mut set = store.set_feedback(&id, &fb).await.map_err(store_error)?;
        if let (false, Some(recorder)) = (set, &app.recorder) {
            settle(recorder).await;
            set = store.set_feedback(&id, &fb).await.map_err(store_error)?;
        }
        if !set {
            return Err(not_found(&id));
        }
        Ok(axum::Json(json!({"request_id": id, "feedback": fb})).into_response())
    }
    .await;
    reply(&rid, r)
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmop_store::StatusFilter;

    #[test]
    fn query_string_to_filter() {
        let f = filter_from_query(
            "feature=summ&user=u%201&status=error&since=1000&limit=5&cursor=1%3Aa",
            0,
        )
        .unwrap();
        assert_eq!(f.feature.as_deref(), Some("summ"));
        assert_eq!(f.user.as_deref(), Some("u 1"));
        assert_eq!(f.status, Some(StatusFilter::Error));
        assert_eq!(f.since_ms, Some(1000));
        assert_eq!(f.limit, Some(5));
        assert_eq!(f.cursor.as_deref(), Some("1:a"));
    }

    #[test]
    fn bad_parameters_name_themselves() {
        for (q, param) in [
            ("users=x", "users"),
            ("limit=0", "limit"),
            ("limit=abc", "limit"),
            ("status=fine", "status"),
            ("since=tomorrow", "since"),
        ] {
            let e = filter_from_query(q, 0).unwrap_err();
            assert_eq!(e.param(), Some(param), "{q}");
        }
    }
}
