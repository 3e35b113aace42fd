//! The record writer: takes records off the request path and commits them in batches.
//!
//! Handlers [`RecordWriter::submit`] a record into a bounded queue and move on (default
//! durability), or [`RecordWriter::submit_strict`] and wait for its commit (`strict`).
//! One task drains the queue: it takes every record waiting (up to `max_batch`), commits
//! them in one transaction (group commit) and acknowledges each. A record is therefore
//! durable one commit after it was queued: while the store keeps up, within the time of
//! one batch commit.
//!
//! Nothing is dropped:
//! - a full queue makes the submitter wait for room (back-pressure), counted as `delayed`;
//! - a failed commit is retried with exponential backoff (50 ms → 5 s), counted as
//!   `failed_commits`, while back-pressure slows the gateway instead of losing records;
//! - at shutdown the queue is drained; whatever cannot be committed before the deadline
//!   is appended to the spill file (JSON lines, fsynced), which the next start replays.
//!   Inserts are idempotent, so a record both committed and spilled stays one record.

use crate::{Record, Store, StoreError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Records the queue holds before submitters wait.
    pub capacity: usize,
    /// Most records committed in one transaction.
    pub max_batch: usize,
    /// Where records that could not be committed at shutdown go, and are replayed from.
    pub spill_path: Option<PathBuf>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            capacity: 10_000,
            max_batch: 512,
            spill_path: None,
        }
    }
}

/// Counters of the writer's life, for metrics and logs.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub queued: AtomicU64,
    pub written: AtomicU64,
    pub delayed: AtomicU64,
    pub failed_commits: AtomicU64,
    pub spilled: AtomicU64,
    pub replayed: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    pub queued: u64,
    pub written: u64,
    pub delayed: u64,
    pub failed_commits: u64,
    pub spilled: u64,
    pub replayed: u64,
}

impl WriterStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            queued: self.queued.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            spilled: self.spilled.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
        }
    }
}

/// The writer stopped before the record was made durable.
#[derive(Debug, thiserror::Error)]
#[error("the record writer stopped before the record was committed")]
pub struct WriterStopped;

struct Job {
    record: Record,
    ack: Option<oneshot::Sender<()>>,
}

pub struct RecordWriter {
    tx: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
    spill_now: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordWriter {
    /// Replays the spill file, if any, then starts the writer task.
    pub async fn start(store: Store, cfg: WriterConfig) -> Result<RecordWriter, StoreError> {
        let stats = Arc::new(WriterStats::default());
        if let Some(path) = &cfg.spill_path {
            replay(&store, path, &stats).await?;
        }
        let (tx, rx) = mpsc::channel(cfg.capacity.max(1));
        let (spill_now, spill_rx) = watch::channel(false);
        let task = tokio::spawn(run(store, cfg, rx, spill_rx, stats.clone()));
        Ok(RecordWriter {
            tx,
            stats,
            spill_now,
            task,
        })
    }

    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }

    async fn enqueue(&self, job: Job) -> Result<(), WriterStopped> {
        let job = match self.tx.try_send(job) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Full(job)) => job,
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(WriterStopped),
        };
        self.stats.delayed.fetch_add(1, Ordering::Relaxed);
        self.tx.send(job).await.map_err(|_| WriterStopped)?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Queues a record; returns once it is queued (waiting for room if the queue is full).
    pub async fn submit(&self, record: Record) -> Result<(), WriterStopped> {
        self.enqueue(Job { record, ack: None }).await
    }

    /// Queues a record and returns once it is committed (or spilled and fsynced).
    pub async fn submit_strict(&self, record: Record) -> Result<(), WriterStopped> {
        let (ack, done) = oneshot::channel();
        self.enqueue(Job {
            record,
            ack: Some(ack),
        })
        .await?;
        done.await.map_err(|_| WriterStopped)
    }

    /// Stops taking records, commits what is queued, and after `deadline` spills what is
    /// still uncommitted to the spill file.
    pub async fn shutdown(self, deadline: Duration) {
        let RecordWriter {
            tx,
            spill_now,
            mut task,
            ..
        } = self;
        drop(tx);
        if tokio::time::timeout(deadline, &mut task).await.is_err() {
            spill_now.send_replace(true);
            let _ = task.await;
        }
    }
}

async fn run(
    store: Store,
    cfg: WriterConfig,
    mut rx: mpsc::Receiver<Job>,
    mut spill_rx: watch::Receiver<bool>,
    stats: Arc<WriterStats>,
) {
    let max_batch = cfg.max_batch.max(1);
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(max_batch.min(64));
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        // Records and their acknowledgements part ways: the records are moved, not copied.
        let (records, acks): (Vec<Record>, Vec<Option<oneshot::Sender<()>>>) =
            batch.into_iter().map(|j| (j.record, j.ack)).unzip();
        let mut backoff = Duration::from_millis(50);
        loop {
            if *spill_rx.borrow() {
                spill_all(&cfg, records, acks, &mut rx, &stats).await;
                return;
            }
            match store.insert_batch(&records).await {
                Ok(()) => {
                    stats
                        .written
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    for ack in acks.into_iter().flatten() {
                        let _ = ack.send(());
                    }
                    break;
                }
                Err(e) => {
                    stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, records = records.len(), "record commit failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = spill_rx.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Writes the batch in hand and everything still queued to the spill file.
async fn spill_all(
    cfg: &WriterConfig,
    mut records: Vec<Record>,
    mut acks: Vec<Option<oneshot::Sender<()>>>,
    rx: &mut mpsc::Receiver<Job>,
    stats: &WriterStats,
) {
    rx.close();
    while let Ok(j) = rx.try_recv() {
        records.push(j.record);
        acks.push(j.ack);
    }
    let Some(path) = cfg.spill_path.clone() else {
        tracing::error!(
            records = records.len(),
            "records could not be committed and no spill file is configured: they are lost"
        );
        return;
    };
    let n = records.len() as u64;
    let written = tokio::task::spawn_blocking(move || append_lines(&path, &records)).await;
    match written {
        Ok(Ok(())) => {
            stats.spilled.fetch_add(n, Ordering::Relaxed);
            for ack in acks.into_iter().flatten() {
                let _ = ack.send(());
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "cannot write the spill file"),
        Err(e) => tracing::error!(error = %e, "spill task failed"),
    }
}

fn append_lines(path: &Path, records: &[Record]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut buf = Vec::with_capacity(records.len() * 512);
    for r in records {
        serde_json::to_writer(&mut buf, r).map_err(std::io::Error::other)?;
        buf.push(b'\n');
    }
    f.write_all(&buf)?;
    f.sync_all()
}

/// Commits the spill file's records, then removes it. Lines that do not parse (a torn
/// last line after a crash) are skipped and reported.
async fn replay(store: &Store, path: &Path, stats: &WriterStats) -> Result<(), StoreError> {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::Spill(e.to_string())),
    };
    let mut records = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Record>(line) {
            Ok(r) => records.push(r),
            Err(_) => bad += 1,
        }
    }
    for chunk in records.chunks(500) {
        store.insert_batch(chunk).await?;
    }
    stats
        .replayed
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    if bad > 0 {
        tracing::warn!(lines = bad, path = %path.display(), "skipped unreadable lines in the spill file");
    }
    tokio::fs::remove_file(path)
        .await
        .map_err(|e| StoreError::Spill(e.to_string()))?;
    Ok(())
}
