//! `[store]`: where records go and how durable they are.

use super::*;

pub const DEFAULT_STORE_URL: &str = "sqlite://llmop.db";

/// `[store]`: where records go and how durable they are before the client hears back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `false` turns recording off (and the read API with it).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `sqlite://<path>` (relative to the config file) or `postgres://…`.
    #[serde(default = "default_store_url")]
    pub url: String,
    #[serde(default)]
    pub durability: Durability,
    /// Records older than this many days are deleted by a background purge; unset keeps
    /// them forever.
    pub retention_days: Option<u32>,
    /// Where records that cannot be committed at shutdown are written (JSON lines), to
    /// be committed at the next start. Default: `<db>.spill.jsonl` beside a SQLite
    /// database, `llmop-spill.jsonl` beside the config for PostgreSQL.
    pub spill_path: Option<PathBuf>,
    /// Records waiting for the writer before new calls wait for room (back-pressure).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Default durability: the furthest (ms) the record writer may fall behind the
    /// answers while its commits succeed. When the oldest uncommitted record is older
    /// (or more than four batches of records are waiting), new answers wait for their own record's commit, as in `strict`, until it catches
    /// up; so a crash loses at most about this window. `0`: no bound (only
    /// `queue_capacity` holds the writer's backlog). A small batch waits for company
    /// three fifths of this long (30 ms with no bound) before it is committed.
    #[serde(default = "default_max_lag_ms")]
    pub max_lag_ms: u64,
    /// Most bytes a record keeps of each large field (input messages, request
    /// parameters, output text, tool calls, a feature's variables and rendered prompt);
    /// a larger one is cut and the record flagged `truncated`.
    #[serde(default = "default_max_field_bytes")]
    pub max_field_bytes: usize,
    /// What an embeddings call's record keeps of its inputs: the texts (`store`, the
    /// default, like a chat call's messages) or only their SHA-256 (`hash`).
    #[serde(default)]
    pub embedding_inputs: EmbeddingInputs,
    /// Whether an embeddings call's record keeps the vectors (off by default: large,
    /// and derived from the inputs).
    #[serde(default)]
    pub embedding_vectors: bool,
    /// Whether the records keep an index of their own on the provider's answer id. A
    /// search by any id (the console's search box, `GET /v1/requests?q=`) finds a call
    /// by the id its provider gave the answer either way: through this index, or
    /// without it (the default) by a scan of the time index, which carries the id and
    /// costs a lookup time in proportion to the store. Provider ids are random keys, so
    /// the index costs the record writer about a page per record once it is large:
    /// `false` drops it at start, `true` builds it again.
    #[serde(default)]
    pub index_provider_ids: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingInputs {
    #[default]
    Store,
    Hash,
}

fn default_max_field_bytes() -> usize {
    1 << 20
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            enabled: true,
            url: default_store_url(),
            durability: Durability::default(),
            retention_days: None,
            spill_path: None,
            queue_capacity: default_queue_capacity(),
            max_lag_ms: default_max_lag_ms(),
            max_field_bytes: default_max_field_bytes(),
            embedding_inputs: EmbeddingInputs::default(),
            embedding_vectors: false,
            index_provider_ids: false,
        }
    }
}

/// When the client hears back relative to when the record is committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// The response goes out at once; the record is committed by the next group commit
    /// (milliseconds later). A crash can lose the records of that last window.
    #[default]
    Default,
    /// The response (for streams: the final event) is held until its record is
    /// committed: every answer a client received is in the store.
    Strict,
}

impl StoreConfig {
    /// The store URL with a relative SQLite path made relative to `dir`.
    pub fn resolved_url(&self, dir: &Path) -> String {
        match self.url.strip_prefix("sqlite://") {
            Some(rest) if !rest.starts_with('/') && !rest.starts_with(':') => {
                format!("sqlite://{}", dir.join(rest).display())
            }
            _ => self.url.clone(),
        }
    }

    /// The spill file path, resolved against `dir`.
    pub fn resolved_spill_path(&self, dir: &Path) -> PathBuf {
        if let Some(p) = &self.spill_path {
            return dir.join(p);
        }
        let url = self.resolved_url(dir);
        match url.strip_prefix("sqlite://") {
            Some(db) if !db.starts_with(':') => {
                let db = db.split('?').next().unwrap_or(db);
                PathBuf::from(format!("{db}.spill.jsonl"))
            }
            _ => dir.join("llmop-spill.jsonl"),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_store_url() -> String {
    DEFAULT_STORE_URL.to_string()
}
fn default_queue_capacity() -> usize {
    10_000
}
fn default_max_lag_ms() -> u64 {
    50
}

impl StoreConfig {
    /// What the types cannot check, as (key path, message) pairs.
    pub(super) fn validate(&self, out: &mut Problems) {
        let k = key;
        let url = &self.url;
        if !(url.starts_with("sqlite://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
            || url == "sqlite://"
        {
            out.push((
                k(&["store", "url"]),
                format!("`{url}` is not a store URL: use sqlite://<path> or postgres://…"),
            ));
        }
        if self.retention_days == Some(0) {
            out.push((
                k(&["store", "retention_days"]),
                "must be at least 1 (leave it out to keep records forever)".into(),
            ));
        }
        if self.queue_capacity == 0 {
            out.push((
                k(&["store", "queue_capacity"]),
                "must be greater than 0".into(),
            ));
        }
    }
}
