//! The SQLite record writer's own thread: batches of records committed through
//! statements prepared once, with one message per batch between the async writer and
//! this thread.
//!
//! Through sqlx's `Any` driver a batch cost, per record, 58 values cloned into `Any`
//! arguments and converted again into SQLite's, a statement text of up to 15 KB hashed
//! to find its prepared statement, and messages between the runtime and sqlx's
//! connection thread for every statement. Here a record's values are bound from where
//! they lie (SQLite copies them), each statement shape is prepared once per connection
//! and kept, and the runtime sends the thread one message per batch and gets one answer
//! back.
//!
//! Only the common case is written here: every record of the batch is new. When one is
//! not (a client reused a request id, or a batch is retried after a commit whose outcome
//! was unknown), the transaction is rolled back and [`Outcome::Conflict`] answered; the
//! caller then writes the batch through the path that asks which rows are new
//! (`Store::insert_batch`), so that logic exists once.
//!
//! Checkpoints are not the commit's business. SQLite's automatic checkpoint runs inside
//! the commit that crosses 1,000 WAL pages: that commit copies the pages into the
//! database file and syncs it, so once in a while one batch (and every answer waiting
//! for it in strict durability, and the age of everything queued behind it in default
//! durability) takes as long as the disk's slowest sync. Here the writer's connection
//! runs no automatic checkpoints; a second thread with its own connection runs
//! `PASSIVE` checkpoints (which never take the write lock) after commits: at most one a
//! second, or sooner once 4,096 records were committed since the last one.
//!
//! A `PASSIVE` checkpoint alone never catches up with a writer that commits without a
//! pause: it copies the frames there were when it began, the writer appends more
//! meanwhile, and SQLite starts a WAL over only once every frame was copied. Under
//! sustained load the WAL then grows without bound (320–376 MB after 10 s at saturation
//! with guardrails on, docs/records.md),
//! a disk-space problem and a slow one: every commit extends the file. So when the
//! thread's checkpoint finds a WAL of more than 4,096 frames, the writer copies what
//! is left itself, between two batches (after answering the first): only the
//! frames appended during the thread's checkpoint, and its next commit starts the WAL
//! over.
//!
//! rusqlite, not a hand-made FFI layer: it links the same `libsqlite3-sys` as sqlx, so
//! both drivers share one SQLite library.

use crate::overview::Rollup;
use crate::store::{
    batch_insert_or_rollback_sql, json_text, now_ms, record_values, statement_sizes, Backend,
    StoreError, Val, KEPT_STATE_INSERT, QUEUE_ROWS,
};
use crate::Record;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a batch came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every record was stored, with its rollups, kept state and evaluation work.
    Stored,
    /// A record's id was already stored: nothing was written.
    Conflict,
}

type Reply = oneshot::Sender<Result<Outcome, StoreError>>;

enum Cmd {
    Insert(Arc<Vec<Record>>, Reply),
    Close(oneshot::Sender<()>),
}

/// The handle the store keeps; the thread ends when it is closed or dropped.
pub(crate) struct SqliteWriter {
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
}

impl SqliteWriter {
    /// Starts the thread for the database file at `path` (opened on first use, and
    /// opened anew after any failed batch).
    pub(crate) fn start(path: PathBuf) -> std::io::Result<SqliteWriter> {
        SqliteWriter::start_tuned(path, Tuning::default())
    }

    /// [`SqliteWriter::start`] with other checkpoint settings (tests use small ones).
    pub(crate) fn start_tuned(path: PathBuf, tuning: Tuning) -> std::io::Result<SqliteWriter> {
        let (tx, rx) = mpsc::channel::<Cmd>();
        std::thread::Builder::new()
            .name("llmop-record-writer".into())
            .spawn(move || serve(path, rx, tuning))?;
        Ok(SqliteWriter {
            tx: Mutex::new(Some(tx)),
        })
    }

    fn sender(&self) -> Option<mpsc::Sender<Cmd>> {
        self.tx.lock().ok().and_then(|t| t.clone())
    }

    pub(crate) async fn insert(&self, records: Arc<Vec<Record>>) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .sender()
            .map(|tx| tx.send(Cmd::Insert(records, reply)).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(StoreError::WriterClosed);
        }
        answer.await.map_err(|_| StoreError::WriterClosed)?
    }

    /// Closes the connection (after the batch in hand) and ends the thread.
    pub(crate) async fn close(&self) {
        let tx = self.tx.lock().ok().and_then(|mut t| t.take());
        if let Some(tx) = tx {
            let (done, closed) = oneshot::channel();
            if tx.send(Cmd::Close(done)).is_ok() {
                let _ = closed.await;
            }
        }
    }
}

fn serve(path: PathBuf, rx: mpsc::Receiver<Cmd>, tuning: Tuning) {
    let mut conn: Option<Connection> = None;
    let checkpoints = Checkpointer::start(path.clone(), tuning);
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Insert(records, reply) => {
                let result = match &mut conn {
                    Some(c) => write(c, &records),
                    None => open(&path, checkpoints.is_some())
                        .and_then(|c| write(conn.insert(c), &records)),
                };
                if let (Ok(Outcome::Stored), Some(c)) = (&result, &checkpoints) {
                    c.committed(records.len());
                }
                if result.is_err() {
                    // After a failed statement (a full disk, an I/O error) the connection
                    // is not trusted with the next batch: it is opened anew.
                    conn = None;
                }
                // The batch goes back to its owner before the answer does, so the
                // writer can take it whole again (to spill it) without a copy.
                drop(records);
                let _ = reply.send(result.map_err(StoreError::from));
                // The checkpoint thread fell behind the commits: the rest of its work is
                // done here, between batches, so that the next commit starts the WAL
                // over (see the module header).
                if let (Some(c), Some(cp)) = (&conn, &checkpoints) {
                    if cp.catch_up.swap(false, Ordering::Relaxed) {
                        catch_up(c);
                    }
                }
            }
            Cmd::Close(done) => {
                drop(conn.take());
                if let Some(c) = checkpoints {
                    c.stop();
                }
                let _ = done.send(());
                return;
            }
        }
    }
}

/// The checkpoint thread's handle (see the module header).
struct Checkpointer {
    /// One pending wake-up at most: the writer never waits on it.
    wake: mpsc::SyncSender<()>,
    /// Records committed since the last checkpoint.
    since: Arc<AtomicUsize>,
    /// Set by the checkpoint thread when its checkpoint found the WAL longer than
    /// [`Tuning::reset_frames`] (not started over for a while); taken by the writer.
    catch_up: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// When checkpoints run, and when the writer catches one up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// At most one checkpoint per this long...
    pub(crate) every: Duration,
    /// ...unless this many records were committed since the last one.
    pub(crate) records: usize,
    /// A WAL found longer than this many frames by a checkpoint is caught up by the
    /// writer (see [`catch_up`]).
    pub(crate) reset_frames: i64,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            every: Duration::from_secs(1),
            records: 4096,
            // About 16 MB of 4 KB pages.
            reset_frames: 4096,
        }
    }
}

impl Checkpointer {
    /// `None` when the thread cannot be started: the writer's connection then keeps
    /// SQLite's automatic checkpoints (see [`open`]).
    fn start(path: PathBuf, tuning: Tuning) -> Option<Checkpointer> {
        let (wake, woken) = mpsc::sync_channel(1);
        let since = Arc::new(AtomicUsize::new(0));
        let counted = since.clone();
        let catch_up = Arc::new(AtomicBool::new(false));
        let behind = catch_up.clone();
        let thread = std::thread::Builder::new()
            .name("llmop-checkpoint".into())
            .spawn(move || checkpoint_loop(&path, &woken, &counted, &behind, tuning))
            .map_err(|e| tracing::warn!(error = %e, "no checkpoint thread: the record writer checkpoints itself"))
            .ok()?;
        Some(Checkpointer {
            wake,
            since,
            catch_up,
            thread,
        })
    }

    fn committed(&self, records: usize) {
        self.since.fetch_add(records, Ordering::Relaxed);
        let _ = self.wake.try_send(());
    }

    /// Ends the thread (after the checkpoint in hand, if any).
    fn stop(self) {
        drop(self.wake);
        let _ = self.thread.join();
    }
}

fn checkpoint_loop(
    path: &std::path::Path,
    woken: &mpsc::Receiver<()>,
    since: &AtomicUsize,
    catch_up: &AtomicBool,
    tuning: Tuning,
) {
    let mut conn: Option<Connection> = None;
    let mut last = Instant::now();
    // Wait for a commit, then until a second has passed since the last checkpoint or
    // enough records were committed; the writer's going away ends the thread.
    while woken.recv().is_ok() {
        while since.load(Ordering::Relaxed) < tuning.records {
            let Some(left) = tuning.every.checked_sub(last.elapsed()) else {
                break;
            };
            match woken.recv_timeout(left) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        since.store(0, Ordering::Relaxed);
        last = Instant::now();
        let c = match conn.take() {
            Some(c) => c,
            None => match open_plain(path) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the store for a checkpoint; the WAL grows until one succeeds");
                    continue;
                }
            },
        };
        // PASSIVE: copies what no reader still needs, never waits for a lock. Its row:
        // busy, frames in the WAL (since it was last started over), frames copied. The
        // frames it copies are those there were when it began: under sustained load
        // the writer has appended more by then, and a long WAL says it was not
        // started over since.
        let done = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
        match done {
            Ok(frames) => {
                if frames > tuning.reset_frames {
                    catch_up.store(true, Ordering::Relaxed);
                }
                conn = Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "a WAL checkpoint failed; the next commit tries again")
            }
        }
    }
}

/// The writer's share of a checkpoint: what the checkpoint thread could not copy
/// because the writer kept appending (under sustained load it never catches up, and a
/// WAL that is never started over grows without bound, every commit extending the file
/// into pages the kernel must allocate and zero: with guardrails on at saturation,
/// `pwrite` took 18.3 µs per call in a WAL that only grew, 3.9 µs once it was started
/// over). Run between batches, it copies only the frames appended since the thread's
/// checkpoint, and with every frame copied the writer's next transaction starts the
/// WAL over. A failure is only logged: the thread's next checkpoint tries again.
fn catch_up(c: &Connection) {
    if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "the record writer could not catch a WAL checkpoint up");
    }
}

/// The writer's connection; `checkpointer`: a checkpoint thread runs beside it.
fn open(path: &std::path::Path, checkpointer: bool) -> rusqlite::Result<Connection> {
    let c = open_plain(path)?;
    if checkpointer {
        // Checkpoints are the checkpoint thread's (module header).
        c.pragma_update(None, "wal_autocheckpoint", 0)?;
    }
    // A batch's `INSERT` may abort part-way (a constraint), so inside the transaction
    // SQLite keeps a statement journal: the pages the statement changed, as they were.
    // Past 64 KiB (a batch of about 20 records) that journal spills to a temporary file,
    // created and unlinked in /var/tmp for every commit, with a write per page changed:
    // at 1,000 req/s, a third of the writer's writes and three file-system operations a
    // commit. Kept in memory, it is a copy. This connection makes no temporary tables or
    // sorts, so nothing else moves into memory; its journal is bounded by the batch.
    c.pragma_update(None, "temp_store", "MEMORY")?;
    c.set_prepared_statement_cache_capacity(24);
    Ok(c)
}

/// A connection with the pool's settings.
fn open_plain(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // The same settings as the pool's connections: WAL, commits kept across a process
    // crash, and a wait for the lock when another connection writes (a purge, a deploy).
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.busy_timeout(Duration::from_secs(5))?;
    Ok(c)
}

impl ToSql for Val<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Val::Int(Some(v)) => ValueRef::Integer(*v),
            Val::Real(Some(v)) => ValueRef::Real(*v),
            Val::Text(Some(s)) => ValueRef::Text(s.as_bytes()),
            Val::Int(None) | Val::Real(None) | Val::Text(None) => ValueRef::Null,
        }))
    }
}

/// Writes `records` in one transaction, or nothing when one of them is already stored.
///
/// The transaction is begun and ended through statements prepared once and kept, like
/// the inserts: rusqlite's `Transaction` runs `BEGIN` and `COMMIT` as statement texts,
/// parsed and prepared anew for every batch (3% of this thread's time at 1,000 req/s).
fn write(conn: &mut Connection, records: &[Record]) -> rusqlite::Result<Outcome> {
    // IMMEDIATE: the write lock is taken (or waited for) at the start, never in the
    // middle of the batch where waiting cannot help a deferred transaction.
    conn.prepare_cached("BEGIN IMMEDIATE")?.raw_execute()?;
    let written = write_in(conn, records).and_then(|outcome| {
        if outcome == Outcome::Stored {
            conn.prepare_cached("COMMIT")?.raw_execute()?;
        }
        Ok(outcome)
    });
    // Whatever did not commit is undone (a failed `INSERT OR ROLLBACK` has done so).
    if !conn.is_autocommit() {
        if let Err(e) = conn
            .prepare_cached("ROLLBACK")
            .and_then(|mut s| s.raw_execute())
        {
            tracing::warn!(error = %e, "the record writer could not roll a batch back");
        }
    }
    written
}

/// [`write`]'s statements, inside its transaction.
fn write_in(conn: &Connection, records: &[Record]) -> rusqlite::Result<Outcome> {
    let mut rollup = Rollup::default();
    // Up to 64 rows per statement, in the same few shapes as the other path: one
    // statement per row cost SQLite more per record (a statement's set-up, its cursors
    // on the table and each index) than all the binding saved.
    let mut rest = records;
    for size in statement_sizes(records.len()) {
        let (chunk, after) = rest.split_at(size);
        rest = after;
        // `OR ROLLBACK` (see `batch_insert_or_rollback_sql`): a taken id ends the
        // transaction here, and the batch goes the careful way.
        let mut insert = conn.prepare_cached(batch_insert_or_rollback_sql(size))?;
        let mut at = 1;
        for r in chunk {
            for v in record_values(r) {
                insert.raw_bind_parameter(at, v)?;
                at += 1;
            }
        }
        match insert.raw_execute() {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                return Ok(Outcome::Conflict)
            }
            Err(e) => return Err(e),
        }
        chunk.iter().for_each(|r| rollup.add(r));
    }
    rollup.write_sqlite(conn)?;
    // Kept reasoning state and online evaluation work commit with their record, as on
    // the other path.
    let mut kept = None;
    let mut queue = None;
    let enqueued = now_ms();
    for r in records {
        for k in &r.reasoning_state {
            let stmt = match &mut kept {
                Some(s) => s,
                None => kept.insert(conn.prepare_cached(KEPT_STATE_INSERT)?),
            };
            stmt.execute(rusqlite::params![
                k.call_id,
                r.request_id,
                r.created_at_ms,
                json_text(&k.state)
            ])?;
        }
        if r.online_evals.is_empty() {
            continue;
        }
        let Some(feature) = r.feature.as_deref() else {
            continue;
        };
        let stmt = match &mut queue {
            Some(s) => s,
            None => queue.insert(conn.prepare_cached(QUEUE_ROWS.sql(1, Backend::Sqlite))?),
        };
        // The same columns as the other path: attempts 0, due at once.
        stmt.execute(rusqlite::params![
            r.request_id,
            feature,
            json_text(&r.online_evals),
            enqueued,
            0i64,
            enqueued
        ])?;
    }
    Ok(Outcome::Stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    fn rec(id: &str) -> Record {
        let mut r = Record::new(id, 1_000, "/v1/chat/completions");
        r.user = Some("ada".into());
        r.feature = Some("support".into());
        r
    }

    /// The store at `dir/w.db` (the schema made), and that path.
    async fn store_in(dir: &std::path::Path) -> (PathBuf, Store) {
        let path = dir.join("w.db");
        let store = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        (path, store)
    }

    fn batch(ids: &[&str]) -> Arc<Vec<Record>> {
        Arc::new(ids.iter().map(|id| rec(id)).collect())
    }

    #[tokio::test]
    async fn a_batch_is_all_written_or_nothing_when_an_id_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (path, store) = store_in(dir.path()).await;
        let w = SqliteWriter::start(path).unwrap();
        assert_eq!(w.insert(batch(&["a", "b"])).await.unwrap(), Outcome::Stored);
        // `a` is stored already: nothing of this batch is written, `c` included.
        assert_eq!(
            w.insert(batch(&["c", "a"])).await.unwrap(),
            Outcome::Conflict
        );
        assert_eq!(store.count().await.unwrap(), 2);
        assert!(store.get("c").await.unwrap().is_none());
        assert_eq!(w.insert(batch(&["c"])).await.unwrap(), Outcome::Stored);
        assert_eq!(store.count().await.unwrap(), 3);
        // The values went in where they belong, read back through the other driver.
        let c = store.get("c").await.unwrap().unwrap();
        assert_eq!(c, rec("c"));
        // Kept reasoning state and online evaluation work commit with their record.
        let mut e = rec("e");
        e.online_evals = vec!["tone".into()];
        e.reasoning_state = vec![crate::record::KeptState {
            call_id: "call-e".into(),
            state: serde_json::json!({"encrypted": "opaque"}),
        }];
        assert_eq!(w.insert(Arc::new(vec![e])).await.unwrap(), Outcome::Stored);
        let due = store.due_online(i64::MAX, 10).await.unwrap();
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(
            (
                due[0].request_id.as_str(),
                due[0].feature.as_str(),
                due[0].attempts
            ),
            ("e", "support", 0)
        );
        assert_eq!(due[0].evaluators, ["tone"]);
        let kept = store.reasoning_state(&["call-e".into()]).await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].state["encrypted"], "opaque");
        // Closed: a later batch is refused, not lost silently.
        w.close().await;
        assert!(matches!(
            w.insert(batch(&["d"])).await,
            Err(StoreError::WriterClosed)
        ));
        store.close().await;
    }

    /// Batches `batches` (their numbers make the records' ids) of 256 records of about
    /// 1 KB each, committed back to back.
    async fn write_kilobyte_records(w: &SqliteWriter, batches: std::ops::Range<usize>) {
        let text = "x".repeat(1000);
        for b in batches {
            let records = (0..256)
                .map(|i| {
                    let mut r = rec(&format!("r-{b}-{i}"));
                    r.output_text = Some(text.clone());
                    r
                })
                .collect();
            assert_eq!(w.insert(Arc::new(records)).await.unwrap(), Outcome::Stored);
        }
    }

    /// The writer's connection runs no automatic checkpoints; the checkpoint thread
    /// copies the WAL into the database file after enough records (4,096) or a second.
    #[tokio::test]
    async fn the_checkpoint_thread_moves_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let (path, store) = store_in(dir.path()).await;
        let before = std::fs::metadata(&path).unwrap().len();
        let w = SqliteWriter::start(path.clone()).unwrap();
        write_kilobyte_records(&w, 0..20).await;
        // 5 MB of records: in the WAL at first, then in the database file.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut size = before;
        while size < 5_000_000 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            size = std::fs::metadata(&path).unwrap().len();
        }
        assert!(size >= 5_000_000, "database file {before} → {size} bytes");
        assert_eq!(store.count().await.unwrap(), 5120);
        w.close().await;
        store.close().await;
    }

    /// The writer's statement journals stay in memory (`open`): a batch of 256
    /// kilobyte records, whose journal would spill to a temporary file, commits with
    /// `temp_store` at MEMORY, on the connection the thread writes with.
    #[tokio::test]
    async fn the_writer_keeps_its_statement_journal_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (path, store) = store_in(dir.path()).await;
        let mut c = open(&path, true).unwrap();
        let temp_store: i64 = c.query_row("PRAGMA temp_store", [], |r| r.get(0)).unwrap();
        assert_eq!(temp_store, 2, "2 is MEMORY");
        let records: Vec<Record> = (0..256)
            .map(|i| {
                let mut r = rec(&format!("m{i}"));
                r.output_text = Some("x".repeat(1000));
                r
            })
            .collect();
        assert_eq!(write(&mut c, &records).unwrap(), Outcome::Stored);
        assert_eq!(store.count().await.unwrap(), 256);
        store.close().await;
    }

    /// The `onError` of each constraint check (`Halt` and `HaltIfNull` raising a
    /// constraint error, their `p2`) in `sql`'s program on `c`: 1 is `ROLLBACK`, 2
    /// `ABORT` (the statement alone is undone, so SQLite keeps a statement journal).
    fn constraint_actions(c: &Connection, sql: &str) -> Vec<i64> {
        let mut explain = c.prepare(&format!("EXPLAIN {sql}")).unwrap();
        // Its parameters left unbound: the program is only listed.
        let mut rows = explain.raw_query();
        let mut actions = Vec::new();
        while let Some(r) = rows.next().unwrap() {
            let (op, p1, p2) = (
                r.get::<_, String>(1).unwrap(),
                r.get::<_, i64>(2).unwrap(),
                r.get::<_, i64>(3).unwrap(),
            );
            let constraint = p1 & 0xff == i64::from(rusqlite::ffi::SQLITE_CONSTRAINT);
            if (op == "Halt" && constraint) || op == "HaltIfNull" {
                actions.push(p2);
            }
        }
        actions
    }

    /// The writer's inserts end the whole transaction on any failed constraint (a taken
    /// id, a missing required value), so SQLite keeps no statement journal for them,
    /// where the other path's shape undoes only the statement.
    #[tokio::test]
    async fn the_writers_inserts_undo_the_whole_transaction_on_a_failed_constraint() {
        let dir = tempfile::tempdir().unwrap();
        let (path, store) = store_in(dir.path()).await;
        let c = open(&path, true).unwrap();
        for size in [1, 2, 64] {
            let actions = constraint_actions(&c, batch_insert_or_rollback_sql(size));
            assert!(
                !actions.is_empty(),
                "{size} rows: no constraint check found"
            );
            assert!(actions.iter().all(|a| *a == 1), "{size} rows: {actions:?}");
        }
        // The other path's shape, for contrast: its `NOT NULL` checks abort the
        // statement only.
        let other = constraint_actions(
            &c,
            crate::store::batch_insert_sql(2, Backend::Sqlite, false),
        );
        assert!(other.contains(&2), "{other:?}");
        store.close().await;
    }

    /// A batch whose id is taken is rolled back whole through the cached statements,
    /// and the connection then commits the next batch (no transaction left open).
    #[tokio::test]
    async fn a_conflict_leaves_the_connection_ready_for_the_next_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (path, store) = store_in(dir.path()).await;
        let mut c = open(&path, true).unwrap();
        assert_eq!(write(&mut c, &batch(&["a"])).unwrap(), Outcome::Stored);
        // 65 records: a statement of 64 rows commits nothing when the last one of 1
        // conflicts.
        let mut ids: Vec<String> = (0..64).map(|i| format!("n{i}")).collect();
        ids.push("a".into());
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(write(&mut c, &batch(&refs)).unwrap(), Outcome::Conflict);
        assert!(c.is_autocommit());
        assert_eq!(store.count().await.unwrap(), 1);
        assert_eq!(write(&mut c, &batch(&["b", "c"])).unwrap(), Outcome::Stored);
        assert!(c.is_autocommit());
        assert_eq!(store.count().await.unwrap(), 3);
        store.close().await;
    }

    /// A store at `dir/w.db` and a writer whose checkpoints come every 20 ms (or 1,024
    /// records) and are caught up past `reset_frames` frames.
    async fn quick_checkpoints(
        dir: &tempfile::TempDir,
        reset_frames: i64,
    ) -> (Store, SqliteWriter) {
        let (path, store) = store_in(dir.path()).await;
        let tuning = Tuning {
            every: Duration::from_millis(20),
            records: 1024,
            reset_frames,
        };
        (store, SqliteWriter::start_tuned(path, tuning).unwrap())
    }

    /// Batches committed back to back, the way a busy gateway commits: the WAL's file
    /// size after `batches` batches of 256 records of about 1 KB, with `reset_frames`.
    async fn wal_size_after_writes_without_a_pause(reset_frames: i64, batches: usize) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let (store, w) = quick_checkpoints(&dir, reset_frames).await;
        write_kilobyte_records(&w, 0..batches).await;
        let wal = std::fs::metadata(dir.path().join("w.db-wal"))
            .unwrap()
            .len();
        assert_eq!(store.count().await.unwrap(), 256 * batches as i64);
        w.close().await;
        store.close().await;
        wal
    }

    /// A checkpoint copies the frames there were when it began; a writer that never
    /// pauses has appended more by then, and SQLite starts the WAL over only once every
    /// frame was copied. Without the writer catching the checkpoint up the WAL holds
    /// every byte committed (this test's writes left a 51 MB WAL with catching up turned
    /// off); with it, the WAL stays a fraction of what was committed.
    #[tokio::test]
    async fn a_wal_written_without_a_pause_is_started_over() {
        let batches = 96;
        let committed = 256 * 1000 * batches as u64; // the records' text alone
        let wal = wal_size_after_writes_without_a_pause(256, batches).await;
        assert!(
            wal < committed / 2,
            "a WAL of {wal} bytes after {committed} bytes committed"
        );
    }

    /// A reader that holds an old snapshot (a long console export) keeps the WAL from
    /// being started over while it reads: the writer's catch-ups then copy what they
    /// can and the batches still go in. Once the reader ends, the WAL is started over
    /// again: twice as many batches as were written under the reader do not double it
    /// (they grew it from 17 to 51 MB with catching up turned off; to 18–23 MB with it).
    #[tokio::test]
    async fn a_reader_holding_a_snapshot_delays_but_does_not_stop_the_wal_starting_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let (store, w) = quick_checkpoints(&dir, 256).await;
        let wal_size = || {
            std::fs::metadata(dir.path().join("w.db-wal"))
                .unwrap()
                .len()
        };
        let reader = open_plain(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let seen: i64 = reader
            .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seen, 0);
        write_kilobyte_records(&w, 0..32).await;
        let held = wal_size();
        // Every batch went in while the snapshot was held.
        assert_eq!(store.count().await.unwrap(), 256 * 32);
        reader.execute_batch("COMMIT").unwrap();
        drop(reader);
        write_kilobyte_records(&w, 32..96).await;
        let after = wal_size();
        assert!(
            after < 2 * held,
            "the WAL grew from {held} to {after} bytes after the reader ended"
        );
        assert_eq!(store.count().await.unwrap(), 256 * 96);
        w.close().await;
        store.close().await;
    }

    #[tokio::test]
    async fn a_failed_batch_reopens_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        // No schema yet: the insert fails (no such table) and the connection is dropped;
        // once the store has made the schema, the next batch goes in.
        let w = SqliteWriter::start(path.clone()).unwrap();
        assert!(w.insert(batch(&["a"])).await.is_err());
        let (_, store) = store_in(dir.path()).await;
        assert_eq!(w.insert(batch(&["a"])).await.unwrap(), Outcome::Stored);
        assert_eq!(store.count().await.unwrap(), 1);
        w.close().await;
        store.close().await;
    }
}
