//! llmop-store: the durable record of every call.
//!
//! # Layout
//! - [`record`]: the record model (what one call leaves behind) and the list filter.
//! - [`store`]: [`Store`], one interface over SQLite (embedded, the zero-setup default)
//!   and PostgreSQL (shared by several gateway replicas).
//! - `migrate`: versioned schema migrations, applied at open.
//! - `query`: read-only SQL with row and time limits, enforced by the database.
//! - [`features`]: registered feature versions (immutable, numbered, one per content hash).
//! - [`deployments`]: what each environment of each feature serves, and the audited
//!   history of every change (deploy, split, shadow, rollback).
//! - [`evals`]: dataset versions, eval runs and results, the answer cache, compares
//!   and judge calibrations.
//! - [`replay`]: the request that replays a recorded call (`llmop replay`, the console).
//! - [`cost`]: spend over the records, grouped (`llmop cost`).
//! - [`overview`]: calls over time from per-minute rollups the writer keeps (the
//!   console's overview).
//! - [`scores`]: scores of calls (online evaluators, feedback) and the durable queue of
//!   online evaluation work.
//! - [`keys`]: client API keys (hashed, scoped, revocable).
//! - [`writer`]: the record writer: bounded queue, group commit, back-pressure, spill.
//!
//! Both backends run the same queries through sqlx's `Any` driver; only the DDL differs
//! (`migrations/sqlite`, `migrations/postgres`). Flags are stored as integers 0/1 and
//! times as Unix milliseconds on both, so one SQL dialect serves both for the queries
//! people write (`WHERE created_at_ms > …`).
//!
//! Invariants: no SQL outside this crate; inserts are idempotent (a record written twice,
//! e.g. replayed from a spill file, stays one record); no secret is a field of a record.

pub mod agents;
pub mod cost;
pub mod deployments;
pub mod evals;
pub mod features;
pub mod keys;
mod migrate;
pub mod overview;
mod query;
pub mod record;
pub mod replay;
pub mod scores;
mod sqlite_writer;
mod store;
pub mod writer;

pub use agents::{Approval, NewApproval, RedteamRun};
pub use cost::{CostBy, CostRow, SavingsRow, SessionRow, Turn};
pub use deployments::{
    Arm, ChangeBy, DeployError, Deployment, DeploymentEvent, DeploymentState, EventKind,
};
pub use evals::{Calibration, DatasetVersion, EvalCompare, EvalRun};
pub use features::{FeatureVersion, Pushed, ShadowReport, ShadowSide};
pub use keys::{hash_key, key_id_of, ApiKey, KeyScopes, StoredBudget};
pub use overview::{Dim, Overview, OverviewQuery};
pub use query::{QueryError, QueryResult};
pub use record::{
    parse_time, Attempt, Feedback, KeptState, ListFilter, Page, Record, StatusFilter,
};
pub use scores::{
    DriftAlert, InlineScore, ModelSighting, QueuedEval, ScoreFilter, ScoreGroup, ScorePoint,
    StoredScore,
};
pub use store::{Backend, Store, StoreError};
pub use writer::{IntoRecord, RecordWriter, StatsSnapshot, WriterConfig, WriterStopped};
