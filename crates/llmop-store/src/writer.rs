//! The record writer: takes records off the request path and commits them in batches.
//!
//! Handlers [`RecordWriter::submit`] a record into a bounded queue and move on (default
//! durability), or [`RecordWriter::submit_strict`] and wait for its commit (`strict`).
//! One task drains the queue: it takes every record waiting (up to `max_batch`), commits
//! them in one transaction (group commit) and acknowledges each. A record is therefore
//! durable one commit after it was queued: while the store keeps up, within the time of
//! one batch commit.
//!
//! When it does not keep up (a slow disk, a starved CPU) a backlog would grow to the
//! queue's capacity, and with it what a crash can lose. `max_lag` bounds that in time:
//! while the oldest uncommitted record is older than `max_lag`, or more than four whole
//! batches are waiting (a burst the age alone would let through: a record behind it
//! waits for that many commits), a default submit waits for its own record's commit, as
//! a strict one does (counted as `held`), so answers slow to the pace of the commits
//! instead of running ahead of them. The bound is lifted while commits fail (the store is
//! down, the disk is full): then calls go on and the queue absorbs the outage, as it
//! always did, and held submits are let go.
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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify};

#[derive(Clone)]
pub struct WriterConfig {
    /// Records the queue holds before submitters wait.
    pub capacity: usize,
    /// Most records committed in one transaction.
    pub max_batch: usize,
    /// Where records that could not be committed at shutdown go, and are replayed from.
    pub spill_path: Option<PathBuf>,
    /// How long the writer waits for more records before committing a small batch of
    /// records nobody waits for (default durability), or less once half of `max_batch`
    /// is in hand. Fewer, larger commits leave more CPU to the request path
    /// under load; strict submits are never held back.
    pub linger: Duration,
    /// How far behind the answers the writer may fall (the age of its oldest uncommitted
    /// record) before default submits wait for their commits; zero: no bound.
    pub max_lag: Duration,
    /// Shown every batch of records once it is committed, on the writer's task (off the
    /// request path): the OpenTelemetry exporter builds its spans here. Must not block.
    pub tap: Option<Tap>,
}

/// What [`WriterConfig::tap`] calls with each committed batch.
pub type Tap = Arc<dyn Fn(&[Record]) + Send + Sync>;

impl std::fmt::Debug for WriterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterConfig")
            .field("capacity", &self.capacity)
            .field("max_batch", &self.max_batch)
            .field("spill_path", &self.spill_path)
            .field("linger", &self.linger)
            .field("max_lag", &self.max_lag)
            .field("tap", &self.tap.is_some())
            .finish()
    }
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            capacity: 10_000,
            max_batch: 512,
            spill_path: None,
            linger: Duration::ZERO,
            max_lag: Duration::ZERO,
            tap: None,
        }
    }
}

/// Counters of the writer's life, for metrics and logs.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub queued: AtomicU64,
    pub written: AtomicU64,
    pub delayed: AtomicU64,
    /// Default submits that waited for their own commit because the writer was more
    /// than `max_lag` behind.
    pub held: AtomicU64,
    pub failed_commits: AtomicU64,
    pub spilled: AtomicU64,
    pub replayed: AtomicU64,
    /// Records that could not be committed nor spilled (no spill file, or it failed),
    /// or that arrived after the writer stopped. Always logged as errors.
    pub lost: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    pub queued: u64,
    pub written: u64,
    pub delayed: u64,
    pub held: u64,
    pub failed_commits: u64,
    pub spilled: u64,
    pub replayed: u64,
    pub lost: u64,
}

impl WriterStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            queued: self.queued.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            held: self.held.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            spilled: self.spilled.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }
}

/// The writer stopped before the record was made durable.
#[derive(Debug, thiserror::Error)]
#[error("the record writer stopped before the record was committed")]
pub struct WriterStopped;

/// What the writer takes: a [`Record`], or anything that becomes one. Conversion runs on
/// the writer's task, off the request path: a gateway hands over the parts of a call it
/// already owns and the writer assembles and serializes the record.
pub trait IntoRecord: Send + 'static {
    fn into_record(self) -> Record;
}

impl IntoRecord for Record {
    fn into_record(self) -> Record {
        self
    }
}

struct Job<T> {
    item: T,
    ack: Option<oneshot::Sender<()>>,
    /// When it was queued (µs on the writer's clock): the batch's first tells how far
    /// behind the writer is.
    at: u64,
}

/// How far behind the answers the writer is, shared by the writer task (which sets it)
/// and submitters (which read it): two atomics, no lock.
struct Lag {
    epoch: std::time::Instant,
    /// When the oldest uncommitted record was queued, µs since `epoch` plus one; zero
    /// while nothing is in the writer's hands.
    oldest: AtomicU64,
    /// Set while the last commit failed: the bound is lifted (see the module header).
    failing: watch::Sender<bool>,
    /// Tells a lingering writer its wait is over (see [`RecordWriter::queued`]).
    company: Company,
}

impl Lag {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

pub struct RecordWriter<T: IntoRecord = Record> {
    tx: mpsc::Sender<Job<T>>,
    stats: Arc<WriterStats>,
    /// `true` once shutdown began: the task closes the queue and commits what is left.
    closing: watch::Sender<bool>,
    /// `true` once the shutdown deadline passed: the task spills what is uncommitted.
    spill_now: watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    lag: Arc<Lag>,
    /// `WriterConfig::max_lag` in µs; zero: no bound.
    max_lag: u64,
    /// Records queued beyond which a default submit is held too (four batches).
    max_waiting: usize,
    /// Records in hand that end a linger ([`enough`]).
    enough: usize,
}

impl<T: IntoRecord> RecordWriter<T> {
    /// Replays the spill file, if any, then starts the writer task.
    pub async fn start(store: Store, cfg: WriterConfig) -> Result<RecordWriter<T>, StoreError> {
        let stats = Arc::new(WriterStats::default());
        if let Some(path) = &cfg.spill_path {
            replay(&store, path, &stats).await?;
        }
        let (tx, rx) = mpsc::channel(cfg.capacity.max(1));
        let (spill_now, spill_rx) = watch::channel(false);
        let (closing, closing_rx) = watch::channel(false);
        let lag = Arc::new(Lag {
            epoch: std::time::Instant::now(),
            oldest: AtomicU64::new(0),
            failing: watch::channel(false).0,
            company: Company::default(),
        });
        let max_lag = cfg.max_lag.as_micros() as u64;
        // Four, not one: under a steady load at saturation a commit's worth of records
        // queues behind every commit, and holding those answers would add to the tail
        // latency without bounding anything the age does not already bound.
        let max_waiting = cfg.max_batch.max(1) * 4;
        let enough = enough(cfg.max_batch);
        let task = tokio::spawn(run(
            store,
            cfg,
            rx,
            closing_rx,
            spill_rx,
            stats.clone(),
            lag.clone(),
        ));
        Ok(RecordWriter {
            tx,
            stats,
            closing,
            spill_now,
            task: std::sync::Mutex::new(Some(task)),
            lag,
            max_lag,
            max_waiting,
            enough,
        })
    }

    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }

    /// After a record is queued: a lingering writer is told when its wait is over (a
    /// half batch is queued, or this record's submitter waits for its commit). Not
    /// on every record: at a moderate rate that would wake the writer's task once per
    /// call for nothing.
    fn queued(&self, waited_for: bool) {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let waiting = self.tx.max_capacity() - self.tx.capacity();
        if waited_for || waiting + self.lag.company.in_hand.load(Ordering::Relaxed) >= self.enough {
            self.lag.company.word.notify_one();
        }
    }

    async fn enqueue(&self, job: Job<T>) -> Result<(), WriterStopped> {
        let waited_for = job.ack.is_some();
        let job = match self.tx.try_send(job) {
            Ok(()) => {
                self.queued(waited_for);
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Full(job)) => job,
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.stopped()),
        };
        let n = self.stats.delayed.fetch_add(1, Ordering::Relaxed) + 1;
        // Logged at the first delay and every 1,000th after, not once per request: a
        // saturated store must not also flood the logs.
        if n == 1 || n.is_multiple_of(1_000) {
            tracing::warn!(
                delayed_total = n,
                "record queue full: requests wait for the record writer (back-pressure)"
            );
        }
        if self.tx.send(job).await.is_err() {
            return Err(self.stopped());
        }
        self.queued(waited_for);
        Ok(())
    }

    fn stopped(&self) -> WriterStopped {
        self.stats.lost.fetch_add(1, Ordering::Relaxed);
        tracing::error!("a record arrived after the record writer stopped: it is lost");
        WriterStopped
    }

    /// Queues a record; returns once it is queued (waiting for room if the queue is
    /// full), or, while the writer is more than `max_lag` (or four batches) behind and
    /// its commits succeed, once it is committed.
    pub async fn submit(&self, item: T) -> Result<(), WriterStopped> {
        let at = self.lag.now();
        let oldest = self.lag.oldest.load(Ordering::Relaxed);
        let behind = self.max_lag != 0
            && ((oldest != 0 && at.saturating_sub(oldest - 1) > self.max_lag)
                || self.tx.max_capacity() - self.tx.capacity() > self.max_waiting)
            && !*self.lag.failing.borrow();
        if !behind {
            return self
                .enqueue(Job {
                    item,
                    ack: None,
                    at,
                })
                .await;
        }
        self.stats.held.fetch_add(1, Ordering::Relaxed);
        let (ack, done) = oneshot::channel();
        // Subscribed before queuing, so a failure that begins meanwhile is seen.
        let mut failing = self.lag.failing.subscribe();
        self.enqueue(Job {
            item,
            ack: Some(ack),
            at,
        })
        .await?;
        tokio::select! {
            r = done => r.map_err(|_| WriterStopped),
            // Commits began to fail: the record stays queued, the call goes on.
            _ = failing.wait_for(|f| *f) => Ok(()),
        }
    }

    /// Queues a record and returns once it is committed (or spilled and fsynced).
    pub async fn submit_strict(&self, item: T) -> Result<(), WriterStopped> {
        let (ack, done) = oneshot::channel();
        self.enqueue(Job {
            item,
            ack: Some(ack),
            at: self.lag.now(),
        })
        .await?;
        done.await.map_err(|_| WriterStopped)
    }

    /// Queues a record from code that cannot wait (a `Drop`). When the queue is full the
    /// wait moves to a task of its own: the record is delayed, never dropped.
    pub fn submit_detached(self: &Arc<Self>, item: T) {
        match self.tx.try_send(Job {
            item,
            ack: None,
            at: self.lag.now(),
        }) {
            Ok(()) => self.queued(false),
            Err(mpsc::error::TrySendError::Full(job)) => {
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        let w = self.clone();
                        rt.spawn(async move {
                            let _ = w.enqueue(job).await;
                        });
                    }
                    Err(_) => {
                        self.stopped();
                    }
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stopped();
            }
        }
    }

    /// Stops taking records, commits what is queued, and after `deadline` spills what is
    /// still uncommitted to the spill file. Later submits fail with [`WriterStopped`].
    pub async fn shutdown(&self, deadline: Duration) {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        let Some(mut task) = task else { return };
        self.closing.send_replace(true);
        if tokio::time::timeout(deadline, &mut task).await.is_err() {
            self.spill_now.send_replace(true);
            let _ = task.await;
        }
    }
}

async fn run<T: IntoRecord>(
    store: Store,
    cfg: WriterConfig,
    mut rx: mpsc::Receiver<Job<T>>,
    mut closing: watch::Receiver<bool>,
    mut spill_rx: watch::Receiver<bool>,
    stats: Arc<WriterStats>,
    lag: Arc<Lag>,
) {
    let max_batch = cfg.max_batch.max(1);
    // The last committed batch, freed when the next one is made.
    let mut committed: Option<Arc<Vec<Record>>> = None;
    loop {
        let first = tokio::select! {
            j = rx.recv() => j,
            // Shutdown: take no more; what is already queued is still received below.
            // (Also when the writer was dropped without a shutdown: the queue is drained.)
            _ = async { closing.wait_for(|c| *c).await.is_ok() } => {
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { break };
        // The queue is first in, first out: the batch's first record is the oldest not
        // yet committed.
        lag.oldest.store(first.at + 1, Ordering::Relaxed);
        let mut batch = Vec::with_capacity(max_batch.min(64));
        batch.push(first);
        drain_into(&mut batch, &mut rx, max_batch);
        if !cfg.linger.is_zero()
            && batch.len() < enough(max_batch)
            && batch.iter().all(|j| j.ack.is_none())
            && !*closing.borrow()
        {
            linger(&mut batch, &mut rx, &lag.company, cfg.linger, max_batch).await;
        }
        let (records, acks) = match made(batch, committed.take()).await {
            Some(made) => made,
            None => break,
        };
        // Shared with the store's writer thread while it writes, without a copy.
        let records = Arc::new(records);
        let mut backoff = Duration::from_millis(50);
        loop {
            if *spill_rx.borrow() {
                let records = Arc::try_unwrap(records).unwrap_or_else(|r| (*r).clone());
                spill_all(&cfg, records, acks, &mut rx, &stats).await;
                return;
            }
            match store.insert_shared(&records).await {
                Ok(()) => {
                    // Nothing left uncommitted, or (records queued meanwhile) the mark
                    // stays on this batch's first, older than the true one, until the
                    // next batch is taken a moment later: an overestimate is safe.
                    if rx.is_empty() {
                        lag.oldest.store(0, Ordering::Relaxed);
                    }
                    lag.failing
                        .send_if_modified(|f| std::mem::replace(f, false));
                    stats
                        .written
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    for ack in acks.into_iter().flatten() {
                        let _ = ack.send(());
                    }
                    if let Some(tap) = &cfg.tap {
                        tap(&records);
                    }
                    // Freed with the next batch, off this thread (see `made`).
                    committed = Some(records);
                    break;
                }
                Err(e) => {
                    lag.failing
                        .send_if_modified(|f| !std::mem::replace(f, true));
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

/// A batch's records and their acknowledgements, parted (the records moved, not copied),
/// made on a blocking thread, where `done`, the last committed batch, is freed too.
///
/// The writer's task shares the runtime's thread with the calls. Making a record and
/// freeing one are a few µs each (more at a moderate rate, with cold caches), so a
/// batch made here held the thread for hundreds of µs, and a request that arrived
/// meanwhile waited for all of it: the records' largest share of the p99 llmop added at
/// 1,000 req/s. On its own thread the work is the kernel's to schedule, and a call's
/// wake-up preempts it. `None` when the runtime is shutting down and the thread could not
/// run (the batch is then lost with the runtime, as it would be queued).
async fn made<T: IntoRecord>(
    batch: Vec<Job<T>>,
    done: Option<Arc<Vec<Record>>>,
) -> Option<(Vec<Record>, Vec<Option<oneshot::Sender<()>>>)> {
    let made = tokio::task::spawn_blocking(move || {
        drop(done);
        batch
            .into_iter()
            .map(|j| (j.item.into_record(), j.ack))
            .unzip()
    })
    .await;
    match made {
        Ok(made) => Some(made),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => {
            tracing::error!("the record writer stopped with the runtime: a batch was not made");
            None
        }
    }
}

/// Waits for company for a small batch: until `linger` has passed, [`enough`] records
/// are in hand, or a submitter waits for its commit (a held answer).
///
/// Enough ends the wait because at a high rate a fixed sleep filled whole batches and
/// aged their first records towards the lag bound, which then held answers back. The
/// submitters say when that is (`company`, see [`RecordWriter::queued`]); a word left
/// over from an earlier batch only makes this look again. A record queued while this
/// counts what it holds may go unannounced: the next one, or the linger's end, makes up
/// for it.
async fn linger<T>(
    batch: &mut Vec<Job<T>>,
    rx: &mut mpsc::Receiver<Job<T>>,
    company: &Company,
    linger: Duration,
    max: usize,
) {
    let over = tokio::time::sleep(linger);
    tokio::pin!(over);
    loop {
        let from = batch.len();
        drain_into(batch, rx, max);
        if batch.len() >= enough(max) || batch[from..].iter().any(|j| j.ack.is_some()) {
            break;
        }
        company.in_hand.store(batch.len(), Ordering::Relaxed);
        tokio::select! {
            biased;
            _ = company.word.notified() => {}
            _ = &mut over => {
                drain_into(batch, rx, max);
                break;
            }
        }
    }
    company.in_hand.store(0, Ordering::Relaxed);
}

/// Records in hand that end a linger (see [`linger`]): half a batch. Measured at
/// saturation against a fixed 20 ms sleep (docs/benchmarks.md, fourteenth session): a
/// quarter made commits so small that throughput fell; half raised it (+1,476 req/s,
/// 7 of 8 pairs) and cut the p99 by 2.8 ms (8 of 8).
fn enough(max_batch: usize) -> usize {
    (max_batch / 2).max(1)
}

/// What a lingering writer and the submitters share (see [`linger`]).
#[derive(Default)]
struct Company {
    /// Given by a submitter when the wait is over.
    word: Notify,
    /// Records the lingering writer holds (zero when it is not lingering): with those
    /// queued, they make the batch.
    in_hand: AtomicUsize,
}

fn drain_into<T>(batch: &mut Vec<Job<T>>, rx: &mut mpsc::Receiver<Job<T>>, max: usize) {
    while batch.len() < max {
        match rx.try_recv() {
            Ok(j) => batch.push(j),
            Err(_) => break,
        }
    }
}

/// Writes the batch in hand and everything still queued to the spill file.
async fn spill_all<T: IntoRecord>(
    cfg: &WriterConfig,
    mut records: Vec<Record>,
    mut acks: Vec<Option<oneshot::Sender<()>>>,
    rx: &mut mpsc::Receiver<Job<T>>,
    stats: &WriterStats,
) {
    rx.close();
    while let Ok(j) = rx.try_recv() {
        records.push(j.item.into_record());
        acks.push(j.ack);
    }
    let Some(path) = cfg.spill_path.clone() else {
        stats
            .lost
            .fetch_add(records.len() as u64, Ordering::Relaxed);
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
        Ok(Err(e)) => {
            stats.lost.fetch_add(n, Ordering::Relaxed);
            tracing::error!(error = %e, records = n, "cannot write the spill file: records lost");
        }
        Err(e) => {
            stats.lost.fetch_add(n, Ordering::Relaxed);
            tracing::error!(error = %e, records = n, "spill task failed: records lost");
        }
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
