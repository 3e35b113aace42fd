//! llmop-eval: whether a change is good, decided on evidence.
//!
//! # Layout
//! - [`dataset`]: dataset files (JSON Lines, CSV), items, content hashes, diffs.
//! - [`spec`]: the eval file (`evals/<feature>.toml`): evaluators and the verdict policy.
//! - [`evaluate`]: evaluators at work: deterministic checks, similarity, LLM judges,
//!   pairwise judges, external commands.
//! - [`gateway`]: the client of a running gateway every eval call goes through.
//! - [`run`]: eval runs: items through the gateway, cached answers, the cost cap.
//! - [`stats`]: paired intervals, non-inferiority verdicts, judge agreement.
//! - [`compare`]: candidate vs baseline on the same items; the report and its formats.
//! - [`gate`]: the deploy gate's question (is there a passing compare for this deploy?).
//! - [`calibrate`]: a judge version's agreement with human labels.
//! - [`online`]: which production calls each online evaluator scores (the sampler).
//! - [`drift`]: recent vs baseline windows of online scores (Newcombe, Welch), episodes.
//! - [`canary`]: a split's candidate arm against its baseline arm: roll back, promote, wait.
//!
//! Invariants: every model call goes through a running gateway (recorded, priced and
//! budgeted like any traffic); an evaluator that cannot score is an error, never a
//! zero; a repeat is a new sample (its own cache key), a rerun reuses the cache.
pub mod calibrate;
pub mod canary;
pub mod compare;
pub mod dataset;
pub mod drift;
pub mod evaluate;
pub mod gate;
pub mod gateway;
pub mod online;
pub mod redteam;
pub mod run;
pub mod spec;
pub mod stats;
