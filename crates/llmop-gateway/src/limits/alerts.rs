//! Soft-limit alerts: once per window per scope, logged, counted, and POSTed to the
//! configured webhook.

use super::*;

impl Limits {
    /// Soft alerts for lines whose spend crossed their soft limit in this settlement:
    /// once per window per scope, logged, counted, and POSTed to the webhook.
    pub(super) async fn alerts(self: &Arc<Self>, lines: &[Line], spends: &[(f64, f64)]) {
        for (line, (before, after)) in lines.iter().zip(spends) {
            let Some(soft) = line.soft else { continue };
            if !(*after >= soft && *before < soft) {
                continue;
            }
            let key = format!("{}:alerted", line.key);
            match self.first_alert(&key, line.window_end_ms).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record a budget alert; alerting anyway");
                }
            }
            metrics::counter!("llmop_budget_alerts_total").increment(1);
            tracing::warn!(scope = %line.subject, window = line.window.as_str(), spent = after, soft_usd = soft, "budget soft limit reached");
            if let Some(url) = &self.webhook {
                let body = serde_json::json!({
                    "type": "budget.soft_limit",
                    "scope": line.subject,
                    "window": line.window.as_str(),
                    "window_end_ms": line.window_end_ms,
                    "spent_usd": after,
                    "soft_usd": soft,
                    "hard_usd": line.hard,
                    "at_ms": now_ms(),
                });
                post_alert(&self.http, url, body);
            }
        }
    }
}

/// POSTs an alert to the webhook on a task of its own (3 attempts, backoff); failures
/// are logged and counted (`llmop_alert_webhook_failures_total`). Budget alerts and
/// drift alerts share it.
pub fn post_alert(http: &reqwest::Client, url: &str, body: serde_json::Value) {
    let (http, url) = (http.clone(), url.to_string());
    tokio::spawn(async move {
        for attempt in 0..3u32 {
            match http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => {
                    tracing::warn!(status = %r.status(), attempt, "alert webhook refused")
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "alert webhook unreachable")
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
        }
        metrics::counter!("llmop_alert_webhook_failures_total").increment(1);
    });
}
