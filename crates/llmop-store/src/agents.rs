//! Agent safety state shared by every replica: each session's taint (a bit set that
//! only grows) and the tool calls held for a person's approval.

use crate::store::{now_ms, Store, StoreError};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// A held tool call and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// `pending`, `approved` or `denied` (an expired pending one reads as `expired`).
    pub status: String,
    /// The call that proposed the tool call.
    pub request_id: String,
    pub key_id: Option<String>,
    pub session: Option<String>,
    pub tool: String,
    pub rule: String,
    pub reason: String,
    /// The held answer (the gateway's JSON), served on an approved retry.
    pub answer: serde_json::Value,
    pub decided_at_ms: Option<i64>,
    /// Who decided (the admin API's actor).
    pub decided_by: Option<String>,
    pub decision_note: Option<String>,
}

/// A new held call.
pub struct NewApproval<'a> {
    pub id: &'a str,
    pub ttl_ms: i64,
    pub request_id: &'a str,
    pub key_id: Option<&'a str>,
    pub session: Option<&'a str>,
    pub tool: &'a str,
    pub rule: &'a str,
    pub reason: &'a str,
    pub answer: &'a serde_json::Value,
}

const APPROVAL_COLUMNS: &str = "id, created_at_ms, expires_at_ms, status, request_id, key_id, session, tool, rule, reason, answer, decided_at_ms, decided_by, decision_note";

fn approval_of(row: &sqlx::any::AnyRow) -> Result<Approval, StoreError> {
    let id: String = row.try_get("id")?;
    let answer: String = row.try_get("answer")?;
    let expires_at_ms: i64 = row.try_get("expires_at_ms")?;
    let mut status: String = row.try_get("status")?;
    if status == "pending" && expires_at_ms <= now_ms() {
        status = "expired".into();
    }
    Ok(Approval {
        answer: serde_json::from_str(&answer)
            .map_err(|e| StoreError::Corrupt(id.clone(), format!("approval answer: {e}")))?,
        created_at_ms: row.try_get("created_at_ms")?,
        expires_at_ms,
        status,
        request_id: row.try_get("request_id")?,
        key_id: row.try_get("key_id")?,
        session: row.try_get("session")?,
        tool: row.try_get("tool")?,
        rule: row.try_get("rule")?,
        reason: row.try_get("reason")?,
        decided_at_ms: row.try_get("decided_at_ms")?,
        decided_by: row.try_get("decided_by")?,
        decision_note: row.try_get("decision_note")?,
        id,
    })
}

impl Store {
    /// A session's taint (0 if it has none).
    pub async fn session_taint(&self, session_key: &str) -> Result<u32, StoreError> {
        let row = sqlx::query("SELECT taint FROM agent_sessions WHERE session_key = $1")
            .bind(session_key.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(r) => u32::try_from(r.try_get::<i64, _>("taint")?).unwrap_or(u32::MAX),
            None => 0,
        })
    }

    /// Adds to a session's taint (never removes); returns the taint it now has.
    pub async fn add_session_taint(&self, session_key: &str, bits: u32) -> Result<u32, StoreError> {
        sqlx::query(
            "INSERT INTO agent_sessions (session_key, taint, updated_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (session_key) DO UPDATE SET taint = agent_sessions.taint | excluded.taint, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(session_key.to_string())
        .bind(i64::from(bits))
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        self.session_taint(session_key).await
    }

    pub async fn insert_approval(&self, a: &NewApproval<'_>) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO approvals (id, created_at_ms, expires_at_ms, status, request_id, key_id, session, tool, rule, reason, answer) \
             VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(a.id.to_string())
        .bind(now)
        .bind(now.saturating_add(a.ttl_ms))
        .bind(a.request_id.to_string())
        .bind(a.key_id.map(str::to_string))
        .bind(a.session.map(str::to_string))
        .bind(a.tool.to_string())
        .bind(a.rule.to_string())
        .bind(a.reason.to_string())
        .bind(a.answer.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(approval_of).transpose()
    }

    /// Approvals, newest first; `status` filters (`pending` leaves out expired ones).
    pub async fn approvals(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Approval>, StoreError> {
        let rows = match status {
            Some("pending") => {
                sqlx::query(&format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE status = 'pending' AND expires_at_ms > $1 ORDER BY created_at_ms DESC LIMIT $2"
                ))
                .bind(now_ms())
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
            Some(s) => {
                sqlx::query(&format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE status = $1 ORDER BY created_at_ms DESC LIMIT $2"
                ))
                .bind(s.to_string())
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals ORDER BY created_at_ms DESC LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(approval_of).collect()
    }

    /// Decides a pending, unexpired approval (`approved` or `denied`). False if there is
    /// no such approval (unknown, expired, or decided already).
    pub async fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        note: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE approvals SET status = $1, decided_at_ms = $2, decision_note = $3, decided_by = $4 \
             WHERE id = $5 AND status = 'pending' AND expires_at_ms > $2",
        )
        .bind(if approve { "approved" } else { "denied" })
        .bind(now)
        .bind(note.map(str::to_string))
        .bind(by.to_string())
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// A stored red-team run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedteamRun {
    pub id: String,
    pub target: String,
    pub corpus_version: String,
    pub seed: i64,
    pub attacks: i64,
    pub got_through: i64,
    pub blocked: i64,
    pub resisted: i64,
    pub errors: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// The whole report (the red-team runner's JSON).
    pub report: serde_json::Value,
}

const REDTEAM_COLUMNS: &str = "id, target, corpus_version, seed, attacks, got_through, blocked, resisted, errors, started_at_ms, finished_at_ms, report";

fn redteam_of(row: &sqlx::any::AnyRow) -> Result<RedteamRun, StoreError> {
    let id: String = row.try_get("id")?;
    let report: String = row.try_get("report")?;
    Ok(RedteamRun {
        report: serde_json::from_str(&report)
            .map_err(|e| StoreError::Corrupt(id.clone(), format!("redteam report: {e}")))?,
        target: row.try_get("target")?,
        corpus_version: row.try_get("corpus_version")?,
        seed: row.try_get("seed")?,
        attacks: row.try_get("attacks")?,
        got_through: row.try_get("got_through")?,
        blocked: row.try_get("blocked")?,
        resisted: row.try_get("resisted")?,
        errors: row.try_get("errors")?,
        started_at_ms: row.try_get("started_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
        id,
    })
}

impl Store {
    pub async fn insert_redteam_run(&self, r: &RedteamRun) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO redteam_runs ({REDTEAM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(r.id.clone())
        .bind(r.target.clone())
        .bind(r.corpus_version.clone())
        .bind(r.seed)
        .bind(r.attacks)
        .bind(r.got_through)
        .bind(r.blocked)
        .bind(r.resisted)
        .bind(r.errors)
        .bind(r.started_at_ms)
        .bind(r.finished_at_ms)
        .bind(r.report.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Red-team runs, newest first, of one target or all.
    pub async fn redteam_runs(
        &self,
        target: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RedteamRun>, StoreError> {
        let rows = match target {
            Some(t) => {
                sqlx::query(&format!(
                    "SELECT {REDTEAM_COLUMNS} FROM redteam_runs WHERE target = $1 ORDER BY started_at_ms DESC LIMIT $2"
                ))
                .bind(t.to_string())
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {REDTEAM_COLUMNS} FROM redteam_runs ORDER BY started_at_ms DESC LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(redteam_of).collect()
    }

    pub async fn redteam_run(&self, id: &str) -> Result<Option<RedteamRun>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {REDTEAM_COLUMNS} FROM redteam_runs WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(redteam_of).transpose()
    }
}
