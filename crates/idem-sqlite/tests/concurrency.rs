//! Concurrent begins from many tasks on a multi-threaded runtime.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use idem_core::{BeginOutcome, IdempotencyStore, Lease};
use idem_sqlite::SqliteStore;
use support::{acquired, fingerprint, key, manual_store, ttl_ms};
use tokio::sync::Barrier;

const TASKS: usize = 64;

/// Starts `TASKS` begins on `name` at once, spread over `stores`, and returns every outcome.
async fn race(stores: &[SqliteStore], name: &str) -> Vec<BeginOutcome> {
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let store = stores[i % stores.len()].clone();
        let barrier = Arc::clone(&barrier);
        let name = name.to_owned();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.begin(&key(&name), &fingerprint(b"f"), ttl_ms(60_000)).await
        }));
    }
    let mut outcomes = Vec::with_capacity(TASKS);
    for task in tasks {
        outcomes.push(task.await.unwrap().unwrap());
    }
    outcomes
}

fn winners(outcomes: &[BeginOutcome]) -> Vec<Lease> {
    outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            BeginOutcome::Acquired(lease) => Some(lease.clone()),
            _ => None,
        })
        .collect()
}

fn in_progress(outcomes: &[BeginOutcome]) -> usize {
    outcomes
        .iter()
        .filter(|outcome| matches!(outcome, BeginOutcome::InProgress { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fresh_key_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("idem.db")).await.unwrap();

    let outcomes = race(std::slice::from_ref(&store), "fresh").await;

    assert_eq!(winners(&outcomes).len(), 1);
    assert_eq!(in_progress(&outcomes), TASKS - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_handles_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(SqliteStore::open(&path).await.unwrap());
    }

    let outcomes = race(&stores, "shared").await;

    assert_eq!(winners(&outcomes).len(), 1);
    assert_eq!(in_progress(&outcomes), TASKS - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lapsed_claim_one_taker() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = manual_store(&dir.path().join("idem.db")).await;
    let first = acquired(
        store
            .begin(&key("lapsed"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    clock.advance(Duration::from_millis(1000));

    let outcomes = race(std::slice::from_ref(&store), "lapsed").await;

    let winners = winners(&outcomes);
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].attempt(), 2);
    assert!(winners[0].fencing_token() > first.fencing_token());
    assert_eq!(in_progress(&outcomes), TASKS - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_completed_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = manual_store(&dir.path().join("idem.db")).await;
    let first = acquired(
        store
            .begin(&key("expired"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    store.complete(&first, b"r", ttl_ms(1000)).await.unwrap();
    clock.advance(Duration::from_millis(1000));

    let outcomes = race(std::slice::from_ref(&store), "expired").await;

    let winners = winners(&outcomes);
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].attempt(), 1);
    assert_eq!(in_progress(&outcomes), TASKS - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_one_winner() {
    let store = SqliteStore::in_memory().open().await.unwrap();

    let outcomes = race(std::slice::from_ref(&store), "memory").await;

    assert_eq!(winners(&outcomes).len(), 1);
    assert_eq!(in_progress(&outcomes), TASKS - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_calls_keep_connection() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::builder(dir.path().join("idem.db"))
        .connections(1)
        .open()
        .await
        .unwrap();

    // Poll each begin once and drop it: depending on whether the connection is free, it is dropped while
    // waiting for the connection or while its blocking task runs.
    let mut cancelled = 0;
    for i in 0..50 {
        let name = key(&format!("k{i}"));
        let payload = fingerprint(b"f");
        let mut call = Box::pin(store.begin(&name, &payload, ttl_ms(60_000)));
        let first_poll = std::future::poll_fn(|context| Poll::Ready(call.as_mut().poll(context))).await;
        if first_poll.is_pending() {
            cancelled += 1;
        }
        drop(call);
    }

    let after = tokio::time::timeout(
        Duration::from_secs(10),
        store.begin(&key("after"), &fingerprint(b"f"), ttl_ms(60_000)),
    )
    .await
    .expect("the only connection was lost")
    .unwrap();
    assert!(matches!(after, BeginOutcome::Acquired(_)), "{after:?}");
    assert!(
        cancelled > 0,
        "every begin finished on its first poll, so none was cancelled"
    );
}
