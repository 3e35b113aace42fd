//! Deployments: which version (or split of versions, plus an optional shadow) each
//! environment of each feature serves, and the audited history of every change.
//!
//! Every change is an event numbered per (feature, env); the `deployments` row holds the
//! state the latest event produced and is updated in the same transaction, guarded by
//! the sequence number it read, so two changes racing from two machines cannot both
//! apply on top of the same state (the loser retries on the new state).
//!
//! Rollback restores the state before the change that produced the current one, and a
//! second rollback walks one step further back: each event keeps `basis_seq`, the event
//! that produced the state it replaced (for a deploy) or restored (for a rollback).

use crate::store::{is_conflict, now_ms, race_pause, Store, StoreError, RACE_ATTEMPTS};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// One arm of a deployment: a version and its share of traffic in percent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    pub version: i64,
    pub weight: u32,
}

/// What an environment of a feature serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentState {
    /// One arm (a plain deployment) or several (a split); weights sum to 100.
    pub arms: Vec<Arm>,
    /// A version run on a copy of each call after the primary answered; never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<i64>,
}

impl DeploymentState {
    pub fn single(version: i64) -> Self {
        DeploymentState {
            arms: vec![Arm {
                version,
                weight: 100,
            }],
            shadow: None,
        }
    }

    /// Checks the shape: at least one arm, distinct versions, weights summing to 100,
    /// a shadow that is not also an arm.
    pub fn check(&self) -> Result<(), String> {
        if self.arms.is_empty() {
            return Err("a deployment needs at least one version".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in &self.arms {
            if a.version < 1 {
                return Err(format!(
                    "version {} does not exist: versions start at 1",
                    a.version
                ));
            }
            if !seen.insert(a.version) {
                return Err(format!("version {} appears twice in the split", a.version));
            }
        }
        let total: u32 = self.arms.iter().map(|a| a.weight).sum();
        if total != 100 {
            return Err(format!("split weights must sum to 100, not {total}"));
        }
        if self.arms.iter().any(|a| a.weight == 0) {
            return Err("a split arm needs a weight above 0".into());
        }
        if let Some(s) = self.shadow {
            if seen.contains(&s) {
                return Err(format!(
                    "shadow version {s} is also served: a shadow must be a version not in the deployment"
                ));
            }
        }
        Ok(())
    }

    /// The state a deploy command asks for: `version` alone, or a split `3=90,4=10`
    /// (weights in percent), plus an optional shadow version.
    pub fn from_parts(
        version: Option<i64>,
        split: Option<&str>,
        shadow: Option<i64>,
    ) -> Result<DeploymentState, String> {
        let arms = match (version, split) {
            (Some(_), Some(_)) => {
                return Err("give a version or a split, not both".into());
            }
            (None, None) => return Err("give a version to deploy, or a split".into()),
            (Some(v), None) => vec![Arm {
                version: v,
                weight: 100,
            }],
            (None, Some(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|part| {
                    let (v, w) = part.split_once('=').ok_or_else(|| {
                        format!("`{part}` is not version=weight (e.g. 3=90,4=10)")
                    })?;
                    let version = v
                        .trim()
                        .trim_start_matches('v')
                        .parse()
                        .map_err(|_| format!("`{v}` is not a version number"))?;
                    let weight = w
                        .trim()
                        .trim_end_matches('%')
                        .parse()
                        .map_err(|_| format!("`{w}` is not a weight in percent"))?;
                    Ok(Arm { version, weight })
                })
                .collect::<Result<Vec<_>, String>>()?,
        };
        let state = DeploymentState { arms, shadow };
        state.check()?;
        Ok(state)
    }

    /// Every version this state refers to (arms, then shadow).
    pub fn versions(&self) -> impl Iterator<Item = i64> + '_ {
        self.arms.iter().map(|a| a.version).chain(self.shadow)
    }

    /// `v3`, `v3=90 v4=10`, with ` shadow v5` when set: for tables and messages.
    pub fn describe(&self) -> String {
        let mut s = if self.arms.len() == 1 {
            format!("v{}", self.arms[0].version)
        } else {
            self.arms
                .iter()
                .map(|a| format!("v{}={}%", a.version, a.weight))
                .collect::<Vec<_>>()
                .join(" ")
        };
        if let Some(v) = self.shadow {
            s.push_str(&format!(" (shadow v{v})"));
        }
        s
    }
}

/// The current deployment of one environment of one feature.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deployment {
    pub feature: String,
    pub env: String,
    /// The sequence number of the event that produced this state.
    pub seq: i64,
    pub state: DeploymentState,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Deploy,
    Rollback,
}

/// One audited change of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentEvent {
    pub feature: String,
    pub env: String,
    pub seq: i64,
    pub kind: EventKind,
    /// `None`: the environment served nothing before.
    pub from: Option<DeploymentState>,
    pub to: DeploymentState,
    pub actor: Option<String>,
    pub reason: Option<String>,
    pub at_ms: i64,
    /// How a deploy got past its environment's eval gate: `compare <id>`, or `forced`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    #[serde(skip)]
    basis_seq: Option<i64>,
}

/// Why a deployment change was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Invalid(String),
    #[error("feature `{feature}` has no version {version}: push it first (`llmop feature push`)")]
    UnknownVersion { feature: String, version: i64 },
    #[error("{0}")]
    NothingToRollBack(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for DeployError {
    fn from(e: sqlx::Error) -> Self {
        DeployError::Store(StoreError::Db(e))
    }
}

fn parse_state(feature: &str, col: &str, text: &str) -> Result<DeploymentState, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("deployment of {feature}"), format!("{col}: {e}")))
}

fn read_event(row: &sqlx::any::AnyRow) -> Result<DeploymentEvent, StoreError> {
    let feature: String = row.try_get("feature")?;
    let from: Option<String> = row.try_get("from_state")?;
    let to: String = row.try_get("to_state")?;
    let kind: String = row.try_get("kind")?;
    Ok(DeploymentEvent {
        env: row.try_get("env")?,
        seq: row.try_get("seq")?,
        kind: if kind == "rollback" {
            EventKind::Rollback
        } else {
            EventKind::Deploy
        },
        from: from
            .map(|f| parse_state(&feature, "from_state", &f))
            .transpose()?,
        to: parse_state(&feature, "to_state", &to)?,
        actor: row.try_get("actor")?,
        reason: row.try_get("reason")?,
        at_ms: row.try_get("at_ms")?,
        gate: row.try_get("gate")?,
        basis_seq: row.try_get("basis_seq")?,
        feature,
    })
}

const EVENT_COLS: &str =
    "feature, env, seq, kind, from_state, to_state, basis_seq, actor, reason, at_ms, gate";

/// Who and why, for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct ChangeBy<'a> {
    pub actor: Option<&'a str>,
    pub reason: Option<&'a str>,
    /// How the change got past its environment's eval gate (kept in the history).
    pub gate: Option<&'a str>,
    /// The change number the caller decided on (`Some(0)`: nothing deployed): a change
    /// made meanwhile refuses this one instead of applying it over a state the caller
    /// never saw (the eval gate checked against what was served).
    pub expect_seq: Option<i64>,
}

impl Store {
    /// Points `env` of `feature` at `state`. Every version must be registered.
    pub async fn deploy(
        &self,
        feature: &str,
        env: &str,
        state: &DeploymentState,
        by: ChangeBy<'_>,
    ) -> Result<DeploymentEvent, DeployError> {
        state.check().map_err(DeployError::Invalid)?;
        check_env(env)?;
        for v in state.versions() {
            if self.feature_version(feature, v).await?.is_none() {
                return Err(DeployError::UnknownVersion {
                    feature: feature.to_string(),
                    version: v,
                });
            }
        }
        self.change(feature, env, by, |current| {
            // The state this deploy replaces was produced by the current event.
            Ok((EventKind::Deploy, state.clone(), current.map(|c| c.seq)))
        })
        .await
    }

    /// Restores the state before the change that produced the current one.
    pub async fn rollback(
        &self,
        feature: &str,
        env: &str,
        by: ChangeBy<'_>,
    ) -> Result<DeploymentEvent, DeployError> {
        check_env(env)?;
        self.change(feature, env, by, |current| {
            let Some(cur) = current else {
                return Err(DeployError::NothingToRollBack(format!(
                    "`{feature}` is not deployed in `{env}`: nothing to roll back"
                )));
            };
            // The event that produced the current state: the latest one if it was a
            // deploy, else the one that latest rollback restored.
            let producer = match cur.kind {
                EventKind::Deploy => Some(cur.seq),
                EventKind::Rollback => cur.basis_seq,
            };
            Ok((EventKind::Rollback, (), producer))
        })
        .await
    }

    /// One change under optimistic concurrency: read the current state, decide, write
    /// the event and the new state unless someone else changed it meanwhile (then again).
    async fn change<T>(
        &self,
        feature: &str,
        env: &str,
        by: ChangeBy<'_>,
        decide: impl Fn(Option<&DeploymentEvent>) -> Result<(EventKind, T, Option<i64>), DeployError>,
    ) -> Result<DeploymentEvent, DeployError>
    where
        T: IntoTarget,
    {
        for attempt in 0..RACE_ATTEMPTS {
            let current = self.latest_event(feature, env).await?;
            if let Some(expected) = by.expect_seq {
                let now = current.as_ref().map_or(0, |c| c.seq);
                if now != expected {
                    return Err(DeployError::Invalid(format!(
                        "`{feature}` in `{env}` changed (change #{now}) after this change was checked against change #{expected}; run it again"
                    )));
                }
            }
            let (kind, target, basis) = decide(current.as_ref())?;
            let (to, basis_seq) = match target.into_target() {
                Some(to) => (to, basis),
                None => {
                    // A rollback: the state before the producing event, produced in
                    // turn by that event's own basis.
                    let Some(seq) = basis else {
                        return Err(nothing_before(feature, env));
                    };
                    let producer = self
                        .event(feature, env, seq)
                        .await?
                        .ok_or_else(|| nothing_before(feature, env))?;
                    match producer.from {
                        Some(from) => (from, producer.basis_seq),
                        None => return Err(nothing_before(feature, env)),
                    }
                }
            };
            let seq = current.as_ref().map_or(1, |c| c.seq + 1);
            let at = now_ms();
            let from_text = current.as_ref().map(|c| json(&c.to));
            let to_text = json(&to);
            let mut tx = self.pool().begin().await?;
            let inserted = sqlx::query(&format!(
                "INSERT INTO deployment_events ({EVENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ))
            .bind(feature.to_string())
            .bind(env.to_string())
            .bind(seq)
            .bind(match kind {
                EventKind::Deploy => "deploy",
                EventKind::Rollback => "rollback",
            })
            .bind(from_text)
            .bind(to_text.clone())
            .bind(basis_seq)
            .bind(by.actor.map(str::to_string))
            .bind(by.reason.map(str::to_string))
            .bind(at)
            .bind(by.gate.map(str::to_string))
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => {
                    // Another change took this sequence number first: decide again on it.
                    let _ = tx.rollback().await;
                    race_pause(attempt).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            let updated = match &current {
                Some(c) => sqlx::query(
                    "UPDATE deployments SET seq = $1, state = $2, updated_at_ms = $3 WHERE feature = $4 AND env = $5 AND seq = $6",
                )
                .bind(seq)
                .bind(to_text)
                .bind(at)
                .bind(feature.to_string())
                .bind(env.to_string())
                .bind(c.seq)
                .execute(&mut *tx)
                .await
                .map(|r| r.rows_affected() == 1),
                None => sqlx::query(
                    "INSERT INTO deployments (feature, env, seq, state, updated_at_ms) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(feature.to_string())
                .bind(env.to_string())
                .bind(seq)
                .bind(to_text)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map(|r| r.rows_affected() == 1),
            };
            match updated {
                Ok(true) => {}
                // The state moved on (or its first row was taken) since it was read.
                Ok(false) => {
                    let _ = tx.rollback().await;
                    race_pause(attempt).await;
                    continue;
                }
                Err(e) if is_conflict(&e) => {
                    let _ = tx.rollback().await;
                    race_pause(attempt).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            tx.commit().await?;
            return Ok(DeploymentEvent {
                feature: feature.to_string(),
                env: env.to_string(),
                seq,
                kind,
                from: current.map(|c| c.to),
                to,
                actor: by.actor.map(str::to_string),
                reason: by.reason.map(str::to_string),
                at_ms: at,
                gate: by.gate.map(str::to_string),
                basis_seq,
            });
        }
        Err(DeployError::Invalid(format!(
            "`{feature}` in `{env}` kept changing under this change; try again"
        )))
    }

    /// The latest change of `env` of `feature` (its `to` is what it serves now).
    pub async fn current_deployment(
        &self,
        feature: &str,
        env: &str,
    ) -> Result<Option<DeploymentEvent>, StoreError> {
        self.latest_event(feature, env).await
    }

    async fn latest_event(
        &self,
        feature: &str,
        env: &str,
    ) -> Result<Option<DeploymentEvent>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLS} FROM deployment_events WHERE feature = $1 AND env = $2 ORDER BY seq DESC LIMIT 1"
        ))
        .bind(feature.to_string())
        .bind(env.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(read_event).transpose()
    }

    async fn event(
        &self,
        feature: &str,
        env: &str,
        seq: i64,
    ) -> Result<Option<DeploymentEvent>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLS} FROM deployment_events WHERE feature = $1 AND env = $2 AND seq = $3"
        ))
        .bind(feature.to_string())
        .bind(env.to_string())
        .bind(seq)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(read_event).transpose()
    }

    /// Every change of `feature` (optionally of one environment), newest first.
    pub async fn deployment_history(
        &self,
        feature: &str,
        env: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeploymentEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLS} FROM deployment_events WHERE feature = $1 {} ORDER BY at_ms DESC, seq DESC LIMIT {}",
            if env.is_some() { "AND env = $2" } else { "" },
            limit.max(1)
        );
        let mut q = sqlx::query(&sql).bind(feature.to_string());
        if let Some(env) = env {
            q = q.bind(env.to_string());
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter().map(read_event).collect()
    }

    /// Every current deployment (all features, all environments): what a gateway
    /// serves. Small (features × environments rows), read whole on each refresh.
    pub async fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        let rows = sqlx::query(
            "SELECT feature, env, seq, state, updated_at_ms FROM deployments ORDER BY feature, env",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let feature: String = row.try_get("feature")?;
                let state: String = row.try_get("state")?;
                Ok(Deployment {
                    state: parse_state(&feature, "state", &state)?,
                    env: row.try_get("env")?,
                    seq: row.try_get("seq")?,
                    updated_at_ms: row.try_get("updated_at_ms")?,
                    feature,
                })
            })
            .collect()
    }

    /// The names of every feature with at least one registered version.
    pub async fn feature_names(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT feature FROM feature_versions ORDER BY feature")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| r.try_get("feature").map_err(StoreError::from))
            .collect()
    }
}

/// A deploy names its target state; a rollback finds it in the history.
trait IntoTarget {
    fn into_target(self) -> Option<DeploymentState>;
}

impl IntoTarget for DeploymentState {
    fn into_target(self) -> Option<DeploymentState> {
        Some(self)
    }
}

impl IntoTarget for () {
    fn into_target(self) -> Option<DeploymentState> {
        None
    }
}

fn nothing_before(feature: &str, env: &str) -> DeployError {
    DeployError::NothingToRollBack(format!(
        "`{feature}` in `{env}` has no earlier deployment to roll back to"
    ))
}

fn check_env(env: &str) -> Result<(), DeployError> {
    let ok = !env.is_empty()
        && env.len() <= 64
        && env
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(DeployError::Invalid(format!(
            "`{env}` is not an environment name: use letters, digits, '-', '_' or '.', up to 64"
        )))
    }
}

fn json(s: &DeploymentState) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn deploy_commands_become_states() {
        assert_eq!(
            DeploymentState::from_parts(Some(3), None, None).unwrap(),
            DeploymentState::single(3)
        );
        let s = DeploymentState::from_parts(None, Some("3=90, v4=10%"), Some(5)).unwrap();
        assert_eq!(s.describe(), "v3=90% v4=10% (shadow v5)");
        for bad in ["3=90,4=20", "3", "3=x", "3=100,3=0", "x=100"] {
            assert!(
                DeploymentState::from_parts(None, Some(bad), None).is_err(),
                "{bad}"
            );
        }
        assert!(DeploymentState::from_parts(Some(3), None, Some(3)).is_err());
        assert!(DeploymentState::from_parts(None, None, None).is_err());
    }

    proptest! {
        #[test]
        fn split_parsing_never_panics(s in "[ -~]{0,40}") {
            let _ = DeploymentState::from_parts(None, Some(&s), None);
        }
    }
}
