//! The runner against real stores: execution, replay, release on error, panic and drop, encoding checks,
//! the in-progress answer and the wait, renewal and the lost-lease signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use idem::memory::MemoryStore;
use idem::sqlite::SqliteStore;
use idem::{
    Error, Fingerprint, IdempotencyKey, IdempotencyStore, ManualClock, Record, RunError, RunOutcome, Runner,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Barrier, oneshot};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Contact {
    id: u64,
    email: String,
}

fn key(name: &str) -> IdempotencyKey {
    IdempotencyKey::new("tenant-1", name).unwrap()
}

fn fingerprint(body: &str) -> Fingerprint {
    Fingerprint::from_parts(&[b"POST", b"/contacts", body.as_bytes()])
}

fn memory() -> Arc<dyn IdempotencyStore> {
    Arc::new(MemoryStore::new())
}

async fn create_contact(calls: &AtomicU32, id: u64) -> Result<Contact, std::io::Error> {
    calls.fetch_add(1, Ordering::SeqCst);
    Ok(Contact {
        id,
        email: format!("user{id}@example.com"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_executes_once_then_replays() {
    let runner = Runner::new(memory());
    let calls = AtomicU32::new(0);
    let key = key("create-contact-1");
    let fingerprint = fingerprint("{\"email\":\"a\"}");

    let first = runner
        .run(&key, &fingerprint, |_| create_contact(&calls, 1))
        .await
        .unwrap();
    let second = runner
        .run(&key, &fingerprint, |_| create_contact(&calls, 2))
        .await
        .unwrap();

    assert!(matches!(first, RunOutcome::Executed(_)));
    assert!(matches!(second, RunOutcome::Replayed(_)));
    assert_eq!(first.value(), second.value());
    assert_eq!(second.into_inner().id, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_releases_key_on_error() {
    let store = memory();
    let runner = Runner::new(Arc::clone(&store));
    let calls = AtomicU32::new(0);
    let key = key("fails-first");
    let fingerprint = fingerprint("{}");

    let failed = runner
        .run(&key, &fingerprint, |_| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<Contact, _>(std::io::Error::other("downstream timed out"))
        })
        .await;
    assert!(matches!(failed, Err(RunError::Handler(_))), "{failed:?}");
    assert_eq!(store.lookup(&key).await.unwrap(), None);

    let retried = runner
        .run(&key, &fingerprint, |_| create_contact(&calls, 7))
        .await
        .unwrap();
    assert!(matches!(retried, RunOutcome::Executed(Contact { id: 7, .. })));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_releases_key_on_panic() {
    let store = memory();
    let runner = Runner::new(Arc::clone(&store));
    let key = key("panics");

    let task = {
        let runner = runner.clone();
        let key = key.clone();
        tokio::spawn(async move {
            runner
                .run(&key, &fingerprint("{}"), |_| async {
                    if key.key() == "panics" {
                        panic!("handler bug");
                    }
                    Ok::<u32, std::io::Error>(1)
                })
                .await
        })
    };
    let joined = task.await;
    assert!(
        joined.as_ref().is_err_and(|error| error.is_panic()),
        "the panic must be resumed"
    );
    assert_eq!(
        store.lookup(&key).await.unwrap(),
        None,
        "a panic releases the key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_releases_key_when_dropped() {
    let store = memory();
    let runner = Runner::new(Arc::clone(&store));
    let key = key("dropped");
    let (started_sender, started_receiver) = oneshot::channel();

    let task = {
        let runner = runner.clone();
        let key = key.clone();
        tokio::spawn(async move {
            runner
                .run(&key, &fingerprint("{}"), |_| async move {
                    let _ = started_sender.send(());
                    std::future::pending::<()>().await;
                    Ok::<u32, std::io::Error>(1)
                })
                .await
        })
    };
    started_receiver.await.unwrap();
    assert!(matches!(
        store.lookup(&key).await.unwrap(),
        Some(Record::InProgress(_))
    ));

    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());

    // The release runs in a spawned task; give it up to 5 s of real time.
    let mut released = false;
    for _ in 0..500 {
        if store.lookup(&key).await.unwrap().is_none() {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(released, "a dropped run releases its key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_rejects_output_postcard_cannot_decode() {
    let store = memory();
    let runner = Runner::new(Arc::clone(&store));
    let key = key("json-value");

    let result = runner
        .run(&key, &fingerprint("{}"), |_| async {
            Ok::<_, std::io::Error>(serde_json::json!({ "id": 1, "tags": ["a"] }))
        })
        .await;

    let Err(RunError::NotRecorded { output, source }) = result else {
        panic!("expected NotRecorded, got {result:?}");
    };
    assert_eq!(output["id"], 1, "the output is handed back");
    assert!(matches!(source, Error::Encoding { .. }), "{source}");
    assert_eq!(
        store.lookup(&key).await.unwrap(),
        None,
        "nothing stored and the key released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_hands_back_output_too_large() {
    let store: Arc<dyn IdempotencyStore> =
        Arc::new(MemoryStore::builder().max_response_bytes(64).build().unwrap());
    let runner = Runner::new(Arc::clone(&store));
    let key = key("large");

    let result = runner
        .run(&key, &fingerprint("{}"), |_| async {
            Ok::<_, std::io::Error>(vec![7u8; 1000])
        })
        .await;

    let Err(RunError::NotRecorded { output, source }) = result else {
        panic!("expected NotRecorded, got {result:?}");
    };
    assert_eq!(output.len(), 1000);
    assert!(
        matches!(source, Error::ResponseTooLarge { limit: 64, .. }),
        "{source}"
    );
    assert_eq!(store.lookup(&key).await.unwrap(), None, "the key is released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_reports_in_progress_and_mismatch() {
    let runner = Runner::new(memory());
    let key = key("busy");
    let (started_sender, started_receiver) = oneshot::channel();
    let (finish_sender, finish_receiver) = oneshot::channel::<()>();

    let first = {
        let runner = runner.clone();
        let key = key.clone();
        tokio::spawn(async move {
            runner
                .run(&key, &fingerprint("{}"), |_| async move {
                    let _ = started_sender.send(());
                    finish_receiver.await.unwrap();
                    Ok::<u32, std::io::Error>(5)
                })
                .await
        })
    };
    started_receiver.await.unwrap();

    let busy = runner
        .run(&key, &fingerprint("{}"), |_| async {
            Ok::<u32, std::io::Error>(6)
        })
        .await;
    let Err(RunError::Store(Error::InProgress { retry_after, .. })) = busy else {
        panic!("expected InProgress, got {busy:?}");
    };
    assert!(
        retry_after > Duration::ZERO && retry_after <= idem::DEFAULT_LEASE_TTL,
        "{retry_after:?}"
    );

    let other_payload = runner
        .run(&key, &fingerprint("{\"x\":1}"), |_| async {
            Ok::<u32, std::io::Error>(6)
        })
        .await;
    assert!(
        matches!(
            other_payload,
            Err(RunError::Store(Error::FingerprintMismatch { .. }))
        ),
        "{other_payload:?}"
    );

    finish_sender.send(()).unwrap();
    assert!(matches!(first.await.unwrap(), Ok(RunOutcome::Executed(5))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_waits_for_result_or_times_out() {
    let store = memory();
    let runner = Runner::new(Arc::clone(&store));
    let patient = Runner::builder(Arc::clone(&store))
        .wait_for_result(Duration::from_secs(30))
        .build()
        .unwrap();
    let impatient = Runner::builder(Arc::clone(&store))
        .wait_for_result(Duration::from_millis(100))
        .build()
        .unwrap();
    let key = key("wait");
    let (started_sender, started_receiver) = oneshot::channel();
    let (finish_sender, finish_receiver) = oneshot::channel::<()>();

    let first = {
        let key = key.clone();
        tokio::spawn(async move {
            runner
                .run(&key, &fingerprint("{}"), |_| async move {
                    let _ = started_sender.send(());
                    finish_receiver.await.unwrap();
                    Ok::<String, std::io::Error>("first".into())
                })
                .await
        })
    };
    started_receiver.await.unwrap();

    let timed_out = impatient
        .run(&key, &fingerprint("{}"), |_| async {
            Ok::<String, std::io::Error>("no".into())
        })
        .await;
    assert!(
        matches!(timed_out, Err(RunError::Store(Error::WaitTimedOut { .. }))),
        "{timed_out:?}"
    );

    let waiter = {
        let key = key.clone();
        tokio::spawn(async move {
            patient
                .run(&key, &fingerprint("{}"), |_| async {
                    Ok::<String, std::io::Error>("second".into())
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    finish_sender.send(()).unwrap();

    assert!(matches!(first.await.unwrap(), Ok(RunOutcome::Executed(ref value)) if value == "first"));
    let waited = waiter.await.unwrap().unwrap();
    assert_eq!(waited, RunOutcome::Replayed("first".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_renews_lease_past_ttl() {
    let store = memory();
    let runner = Runner::builder(Arc::clone(&store))
        .lease_ttl(Duration::from_millis(1500))
        .build()
        .unwrap();
    let key = key("long-work");
    let (started_sender, started_receiver) = oneshot::channel();
    let (finish_sender, finish_receiver) = oneshot::channel::<()>();

    let long = {
        let runner = runner.clone();
        let key = key.clone();
        tokio::spawn(async move {
            runner
                .run(&key, &fingerprint("{}"), |lease| async move {
                    let _ = started_sender.send(());
                    finish_receiver.await.unwrap();
                    Ok::<bool, std::io::Error>(lease.is_lost())
                })
                .await
        })
    };
    started_receiver.await.unwrap();

    // Three lease TTLs later the claim must still be live, because the runner renews it.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let busy = runner
        .run(&key, &fingerprint("{}"), |_| async {
            Ok::<bool, std::io::Error>(true)
        })
        .await;
    assert!(
        matches!(busy, Err(RunError::Store(Error::InProgress { .. }))),
        "{busy:?}"
    );

    finish_sender.send(()).unwrap();
    let finished = long.await.unwrap().unwrap();
    assert_eq!(finished, RunOutcome::Executed(false), "the lease was never lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_signals_lost_lease_after_takeover() {
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let store: Arc<dyn IdempotencyStore> = Arc::new(
        MemoryStore::builder()
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap(),
    );
    let runner = Runner::builder(Arc::clone(&store))
        .lease_ttl(Duration::from_millis(300))
        .build()
        .unwrap();
    let key = key("taken-over");
    let (started_sender, started_receiver) = oneshot::channel();

    let stale = {
        let runner = runner.clone();
        let key = key.clone();
        tokio::spawn(async move {
            runner
                .run(&key, &fingerprint("{}"), |lease| async move {
                    let _ = started_sender.send(lease.fencing_token());
                    tokio::time::timeout(Duration::from_secs(10), lease.lost())
                        .await
                        .is_ok()
                        .then(|| "stale".to_string())
                        .ok_or_else(|| std::io::Error::other("lost signal never fired"))
                })
                .await
        })
    };
    let stale_token = started_receiver.await.unwrap();

    clock.advance(Duration::from_secs(5));
    let body = fingerprint("{}");
    let fresh = runner.run(&key, &body, |lease| async move {
        assert_eq!(lease.attempt(), 2, "a takeover");
        assert_ne!(lease.fencing_token(), stale_token);
        Ok::<_, std::io::Error>("fresh".to_string())
    });
    assert_eq!(fresh.await.unwrap(), RunOutcome::Executed("fresh".to_string()));

    let result = stale.await.unwrap();
    let Err(RunError::NotRecorded { output, source }) = result else {
        panic!("expected NotRecorded for the stale run, got {result:?}");
    };
    assert_eq!(output, "stale");
    assert!(matches!(source, Error::LeaseLost { .. }), "{source}");

    let replay = runner
        .run(&key, &fingerprint("{}"), |_| async {
            Ok::<_, std::io::Error>("third".to_string())
        })
        .await;
    assert_eq!(
        replay.unwrap(),
        RunOutcome::Replayed("fresh".to_string()),
        "the stale output never replaced the new one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_signals_lost_after_max_run_time() {
    let store = memory();
    let runner = Runner::builder(Arc::clone(&store))
        .lease_ttl(Duration::from_millis(200))
        .max_run_time(Duration::from_millis(300))
        .build()
        .unwrap();
    let key = key("overrun");

    let result = runner
        .run(&key, &fingerprint("{}"), |lease| async move {
            let fired = tokio::time::timeout(Duration::from_secs(10), lease.lost())
                .await
                .is_ok();
            Ok::<bool, std::io::Error>(fired)
        })
        .await;

    assert_eq!(
        result.unwrap(),
        RunOutcome::Executed(true),
        "completion still succeeds without a takeover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_stores_errors_when_asked() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum ChargeError {
        Declined { code: String },
    }

    let runner = Runner::new(memory());
    let calls = AtomicU32::new(0);
    let key = key("declined");
    let declined = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Err::<u64, _>(ChargeError::Declined {
            code: "insufficient_funds".into(),
        })
    };

    let first = runner
        .run_storing_errors(&key, &fingerprint("{}"), |_| declined())
        .await
        .unwrap();
    let second = runner
        .run_storing_errors(&key, &fingerprint("{}"), |_| declined())
        .await
        .unwrap();

    assert!(matches!(
        first,
        RunOutcome::Executed(Err(ChargeError::Declined { .. }))
    ));
    assert!(
        matches!(second, RunOutcome::Replayed(Err(ChargeError::Declined { ref code })) if code == "insufficient_funds")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let plain = runner
        .run(&key, &fingerprint("{}"), |_| async {
            Ok::<u64, std::io::Error>(1)
        })
        .await;
    assert!(
        matches!(plain, Err(RunError::Store(Error::CorruptRecord { .. }))),
        "{plain:?}"
    );
}

async fn run_concurrently(store: Arc<dyn IdempotencyStore>, tasks: usize) {
    let runner = Runner::builder(store)
        .wait_for_result(Duration::from_secs(30))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let barrier = Arc::new(Barrier::new(tasks));
    let key = key("concurrent");

    let mut handles = Vec::new();
    for task in 0..tasks {
        let runner = runner.clone();
        let calls = Arc::clone(&calls);
        let barrier = Arc::clone(&barrier);
        let key = key.clone();
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            runner
                .run(&key, &fingerprint("{}"), |_| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<usize, std::io::Error>(task)
                })
                .await
        }));
    }

    let mut executed = Vec::new();
    let mut values = Vec::new();
    for handle in handles {
        let outcome = handle.await.unwrap().unwrap();
        if !outcome.is_replayed() {
            executed.push(*outcome.value());
        }
        values.push(outcome.into_inner());
    }
    assert_eq!(executed.len(), 1, "exactly one task executes");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        values.iter().all(|value| *value == executed[0]),
        "every task gets the first run's output"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runner_concurrent_memory_runs_once() {
    run_concurrently(memory(), 48).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runner_concurrent_sqlite_runs_once() {
    let directory = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(directory.path().join("idem.db")).await.unwrap();
    run_concurrently(Arc::new(store), 48).await;
}

#[test]
fn runner_builder_rejects_bad_settings() {
    let store = memory();
    let cases = [
        (
            "lease_ttl",
            Runner::builder(Arc::clone(&store))
                .lease_ttl(Duration::from_millis(99))
                .build(),
        ),
        (
            "lease_ttl",
            Runner::builder(Arc::clone(&store))
                .lease_ttl(Duration::ZERO)
                .build(),
        ),
        (
            "TTL",
            Runner::builder(Arc::clone(&store))
                .retention(Duration::ZERO)
                .build(),
        ),
        (
            "TTL",
            Runner::builder(Arc::clone(&store))
                .retention(Duration::MAX)
                .build(),
        ),
        (
            "max_run_time",
            Runner::builder(Arc::clone(&store))
                .max_run_time(Duration::ZERO)
                .build(),
        ),
        (
            "wait_for_result",
            Runner::builder(Arc::clone(&store))
                .wait_for_result(Duration::ZERO)
                .build(),
        ),
    ];

    for (named, result) in cases {
        let error = result.unwrap_err();
        assert!(matches!(error, Error::InvalidInput { .. }), "{named}: {error}");
        assert!(error.to_string().contains(named), "{named}: {error}");
    }
    assert!(
        Runner::builder(store)
            .lease_ttl(idem::MIN_LEASE_TTL)
            .build()
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_handler_error_message_names_cause() {
    let runner = Runner::new(memory());
    let result = runner
        .run(&key("declined"), &fingerprint("{}"), |_| async {
            Err::<u32, _>(std::io::Error::other("card declined: insufficient funds"))
        })
        .await;

    let error = result.unwrap_err();
    assert!(
        error.to_string().contains("card declined: insufficient funds"),
        "{error}"
    );
}
