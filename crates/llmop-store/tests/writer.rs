//! The record writer: group commit under load, strict acknowledgements, back-pressure,
//! and no loss when the store fails (retry, spill at the shutdown deadline, replay).

use llmop_store::{Record, RecordWriter, Store, WriterConfig};
use sqlx::Connection;
use std::time::Duration;

fn rec(i: usize) -> Record {
    let mut r = Record::new(
        format!("w-{i:05}"),
        1_700_000_000_000 + i as i64,
        "/v1/chat/completions",
    );
    r.status = 200;
    r.output_text = Some(format!("answer {i}"));
    r
}

async fn sqlite(dir: &tempfile::TempDir) -> (Store, String) {
    let url = format!("sqlite://{}", dir.path().join("records.db").display());
    (Store::open(&url).await.unwrap(), url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_everything_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sqlite(&dir).await;
    let w = std::sync::Arc::new(
        RecordWriter::<Record>::start(store.clone(), WriterConfig::default())
            .await
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for t in 0..8 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                w.submit(rec(t * 1000 + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let w = std::sync::Arc::try_unwrap(w).ok().unwrap();
    let stats = w.stats().clone();
    w.shutdown(Duration::from_secs(10)).await;
    assert_eq!(store.count().await.unwrap(), 2000);
    let s = stats.snapshot();
    assert_eq!((s.queued, s.written, s.spilled), (2000, 2000, 0));
}

#[tokio::test]
async fn strict_submit_returns_after_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sqlite(&dir).await;
    let w = RecordWriter::<Record>::start(store.clone(), WriterConfig::default())
        .await
        .unwrap();
    for i in 0..20 {
        w.submit_strict(rec(i)).await.unwrap();
        // Visible the moment the submit returns.
        assert!(store.get(&format!("w-{i:05}")).await.unwrap().is_some());
    }
    w.shutdown(Duration::from_secs(5)).await;
}

/// The tap (the telemetry exporter's hook) sees each record once, after its commit.
#[tokio::test(flavor = "current_thread")]
async fn the_tap_sees_every_committed_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sqlite(&dir).await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s2 = seen.clone();
    let w = RecordWriter::<Record>::start(
        store.clone(),
        WriterConfig {
            max_batch: 7,
            tap: Some(std::sync::Arc::new(move |rs: &[Record]| {
                let mut v = s2.lock().unwrap();
                v.extend(rs.iter().map(|r| r.request_id.clone()));
            })),
            ..WriterConfig::default()
        },
    )
    .await
    .unwrap();
    for i in 0..30 {
        w.submit(rec(i)).await.unwrap();
    }
    w.submit_strict(rec(30)).await.unwrap();
    w.shutdown(Duration::from_secs(5)).await;
    let mut v = seen.lock().unwrap().clone();
    v.sort();
    let want: Vec<String> = (0..31).map(|i| format!("w-{i:05}")).collect();
    assert_eq!(v, want);
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_delays_instead_of_dropping() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sqlite(&dir).await;
    let w = RecordWriter::<Record>::start(
        store.clone(),
        WriterConfig {
            capacity: 2,
            max_batch: 4,
            spill_path: None,
            linger: Duration::from_millis(2),
            ..WriterConfig::default()
        },
    )
    .await
    .unwrap();
    for i in 0..200 {
        w.submit(rec(i)).await.unwrap();
    }
    let s = w.stats().snapshot();
    assert!(s.delayed > 0, "{s:?}");
    w.shutdown(Duration::from_secs(10)).await;
    assert_eq!(store.count().await.unwrap(), 200);
}

/// A slow writer (each batch takes 20 ms more, in the tap) under four eager submitters:
/// returns the furthest a record's commit came after its submit returned, and how many
/// submits were held.
async fn lagging_writer(max_lag: Duration) -> (Duration, u64) {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sqlite(&dir).await;
    let committed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = committed.clone();
    let w = Arc::new(
        RecordWriter::<Record>::start(
            store.clone(),
            WriterConfig {
                max_batch: 8,
                max_lag,
                tap: Some(Arc::new(move |rs: &[Record]| {
                    let now = Instant::now();
                    let mut m = seen.lock().unwrap();
                    for r in rs {
                        m.insert(r.request_id.clone(), now);
                    }
                    drop(m);
                    // A slow disk, as the submitters see it.
                    std::thread::sleep(Duration::from_millis(20));
                })),
                ..WriterConfig::default()
            },
        )
        .await
        .unwrap(),
    );
    let mut tasks = Vec::new();
    for t in 0..4 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let mut returned = Vec::new();
            for i in 0..100 {
                let r = rec(t * 1000 + i);
                let id = r.request_id.clone();
                w.submit(r).await.unwrap();
                returned.push((id, Instant::now()));
            }
            returned
        }));
    }
    let mut returned = Vec::new();
    for t in tasks {
        returned.extend(t.await.unwrap());
    }
    let w = Arc::try_unwrap(w).ok().unwrap();
    let held = w.stats().snapshot().held;
    w.shutdown(Duration::from_secs(30)).await;
    assert_eq!(store.count().await.unwrap(), 400);
    let committed = committed.lock().unwrap();
    let worst = returned
        .iter()
        .map(|(id, at)| committed[id].saturating_duration_since(*at))
        .max()
        .unwrap();
    (worst, held)
}

/// Default durability's window holds when the writer cannot keep up: past `max_lag`,
/// submits wait for their commits, so no record is committed long after its submit
/// returned. Without the bound the same load runs seconds ahead of the commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_writer_holds_submits_within_max_lag() {
    let (worst, held) = lagging_writer(Duration::from_millis(10)).await;
    assert!(held > 0);
    // 10 ms of lag or four batches waiting, then the batch in hand (20 ms each, plus
    // the commits): well under 400 ms even on a slow machine.
    assert!(
        worst < Duration::from_millis(400),
        "{worst:?} ({held} held)"
    );

    println!("max_lag 10 ms: worst {worst:?}, {held} of 400 held");
    let (unbounded, held) = lagging_writer(Duration::ZERO).await;
    println!("no bound: worst {unbounded:?}");
    assert_eq!(held, 0);
    // 50 batches of 20 ms queued at once.
    assert!(unbounded > Duration::from_millis(700), "{unbounded:?}");
}

/// While commits fail the lag bound is lifted: a store that is down makes the writer
/// fall behind, but calls go on (their records queue, up to the queue's capacity) rather
/// than wait for commits that cannot happen; once the store is back, all are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_lifts_the_lag_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = sqlite(&dir).await;
    let mut admin = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("ALTER TABLE records RENAME TO records_away")
        .execute(&mut admin)
        .await
        .unwrap();
    let w = RecordWriter::<Record>::start(
        store.clone(),
        WriterConfig {
            max_lag: Duration::from_millis(5),
            ..WriterConfig::default()
        },
    )
    .await
    .unwrap();
    w.submit(rec(0)).await.unwrap();
    // The first commit fails; the writer is now behind by more than `max_lag`.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(w.stats().snapshot().failed_commits >= 1);
    for i in 1..50 {
        tokio::time::timeout(Duration::from_secs(2), w.submit(rec(i)))
            .await
            .expect("a submit waited for a commit while the store was down")
            .unwrap();
    }
    assert_eq!(w.stats().snapshot().held, 0);
    sqlx::query("ALTER TABLE records_away RENAME TO records")
        .execute(&mut admin)
        .await
        .unwrap();
    w.shutdown(Duration::from_secs(20)).await;
    assert_eq!(store.count().await.unwrap(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = sqlite(&dir).await;
    let spill = dir.path().join("records.spill");
    // The store breaks: its table disappears from under the writer.
    let mut admin = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("ALTER TABLE records RENAME TO records_away")
        .execute(&mut admin)
        .await
        .unwrap();

    let cfg = WriterConfig {
        capacity: 100,
        max_batch: 16,
        spill_path: Some(spill.clone()),
        linger: Duration::ZERO,
        ..WriterConfig::default()
    };
    let w = RecordWriter::<Record>::start(store.clone(), cfg.clone())
        .await
        .unwrap();
    for i in 0..50 {
        w.submit(rec(i)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = w.stats().clone();
    assert!(stats.snapshot().failed_commits >= 1);
    // Shutdown cannot commit: past the deadline the records go to the spill file.
    w.shutdown(Duration::from_millis(200)).await;
    let s = stats.snapshot();
    assert_eq!((s.written, s.spilled), (0, 50), "{s:?}");
    assert_eq!(std::fs::read_to_string(&spill).unwrap().lines().count(), 50);

    // The store recovers; the next start replays the spill file, then removes it.
    sqlx::query("ALTER TABLE records_away RENAME TO records")
        .execute(&mut admin)
        .await
        .unwrap();
    let w = RecordWriter::<Record>::start(store.clone(), cfg)
        .await
        .unwrap();
    assert_eq!(w.stats().snapshot().replayed, 50);
    assert!(!spill.exists());
    assert_eq!(store.count().await.unwrap(), 50);
    assert_eq!(
        store
            .get("w-00007")
            .await
            .unwrap()
            .unwrap()
            .output_text
            .as_deref(),
        Some("answer 7")
    );
    w.shutdown(Duration::from_secs(5)).await;
}

/// A record that takes 500 µs of a thread to make, counting how many were made.
struct Slow(Record, std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl llmop_store::IntoRecord for Slow {
    fn into_record(self) -> Record {
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_micros(500) {
            std::hint::spin_loop();
        }
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0
    }
}

/// On one thread (a gateway pinned to one core runs its calls and the writer's task on
/// one), a batch is made into records off that thread: a call that is ready runs while
/// the batch is made, not after it. Before, the task made all 40 records (20 ms here) on
/// the runtime's thread in one go, and another task saw 0 made, then 40.
#[tokio::test]
async fn a_batch_is_made_off_the_runtime_thread() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sqlite(&dir).await;
    let w = RecordWriter::<Slow>::start(store.clone(), WriterConfig::default())
        .await
        .unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    // Queued at once: the writer's task has not run yet, so they make one batch.
    for i in 0..40 {
        w.submit(Slow(rec(i), made.clone())).await.unwrap();
    }
    let watched = made.clone();
    let seen = tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        loop {
            let n = watched.load(Ordering::SeqCst);
            seen.insert(n);
            if n == 40 {
                return seen;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert!(
        seen.iter().any(|n| (1..40).contains(n)),
        "the other task ran only at {seen:?} records made"
    );
    let stats = w.stats().clone();
    w.shutdown(Duration::from_secs(10)).await;
    assert_eq!(stats.snapshot().written, 40);
    assert_eq!(store.count().await.unwrap(), 40);
}

/// Polls the writer's committed count until it reaches `n` or `within` passes; the time
/// it took, or `None`.
async fn committed_within(w: &RecordWriter<Record>, n: u64, within: Duration) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if w.stats().snapshot().written >= n {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// The linger waits for company, not for the clock: a lone record waits the whole
/// linger, but once half a batch is in hand (or an answer waits for its commit) the
/// batch is committed at once. With a linger of a minute, both of the latter commit
/// long before it ends; a fixed sleep (the writer before) held them the whole minute.
#[tokio::test(flavor = "current_thread")]
async fn the_linger_ends_with_half_a_batch_or_a_waiting_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = sqlite(&dir).await;
    let w = RecordWriter::<Record>::start(
        store.clone(),
        WriterConfig {
            max_batch: 8,
            linger: Duration::from_secs(60),
            ..WriterConfig::default()
        },
    )
    .await
    .unwrap();
    // Three records: still lingering a moment later.
    for i in 0..3 {
        w.submit(rec(i)).await.unwrap();
    }
    assert_eq!(
        committed_within(&w, 1, Duration::from_millis(100)).await,
        None
    );
    // The fourth makes half of 8: committed without waiting out the minute.
    w.submit(rec(3)).await.unwrap();
    assert!(committed_within(&w, 4, Duration::from_secs(10))
        .await
        .is_some());
    // A lone record, then one whose answer waits for its commit: both committed.
    w.submit(rec(4)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), w.submit_strict(rec(5)))
        .await
        .expect("a strict submit ends the linger")
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 6);
    w.shutdown(Duration::from_secs(5)).await;
}
