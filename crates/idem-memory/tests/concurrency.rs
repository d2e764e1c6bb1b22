//! Concurrent begins on one key from many tasks of a multi-threaded runtime.

mod common;

use std::sync::Arc;

use common::*;
use idem_core::{BeginOutcome, IdempotencyKey, IdempotencyStore, Lease};
use idem_memory::MemoryStore;
use tokio::sync::Barrier;

const TASKS: usize = 64;

/// Starts `TASKS` begins on `key` at once, each through its own clone of `store`, and returns their outcomes.
async fn begin_at_once(store: &MemoryStore, key: &IdempotencyKey) -> Vec<BeginOutcome> {
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::with_capacity(TASKS);
    for _ in 0..TASKS {
        let store = store.clone();
        let key = key.clone();
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .begin(&key, &fingerprint(b"fp"), ttl_ms(60_000))
                .await
                .unwrap()
        }));
    }

    let mut outcomes = Vec::with_capacity(TASKS);
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    outcomes
}

fn acquired(outcomes: &[BeginOutcome]) -> Vec<&Lease> {
    outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            BeginOutcome::Acquired(lease) => Some(lease),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn fresh_key_one_winner() {
    let store = MemoryStore::new();
    for round in 0..20 {
        let key = key(&format!("fresh-{round}"));
        let outcomes = begin_at_once(&store, &key).await;

        assert_eq!(acquired(&outcomes).len(), 1, "round {round}");
        let in_progress = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, BeginOutcome::InProgress { attempt: 1, .. }))
            .count();
        assert_eq!(in_progress, TASKS - 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn lapsed_claim_one_taker() {
    let (store, clock) = manual_store();
    let key = key("lapsed");
    let first = acquire(&store, &key, &fingerprint(b"fp"), ttl_ms(100)).await;
    clock.advance(ms(100));

    let outcomes = begin_at_once(&store, &key).await;

    let winners = acquired(&outcomes);
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].attempt(), 2);
    assert!(winners[0].fencing_token() > first.fencing_token());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn expired_record_one_winner() {
    let (store, clock) = manual_store();
    let key = key("expired");
    let first = acquire(&store, &key, &fingerprint(b"fp"), ttl_ms(100)).await;
    store.complete(&first, b"old", ttl_ms(50)).await.unwrap();
    clock.advance(ms(50));

    let outcomes = begin_at_once(&store, &key).await;

    let winners = acquired(&outcomes);
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].attempt(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn racing_lifecycles_stay_consistent() {
    // Each task runs begin, then complete or release, on a few shared keys. Every completed key must
    // replay the response of the one lease that completed it.
    let store = MemoryStore::new();
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::with_capacity(TASKS);
    for task in 0..TASKS {
        let store = store.clone();
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut completed = Vec::new();
            for round in 0..50 {
                let key = key(&format!("shared-{}", round % 4));
                let outcome = store
                    .begin(&key, &fingerprint(b"fp"), ttl_ms(60_000))
                    .await
                    .unwrap();
                let BeginOutcome::Acquired(lease) = outcome else {
                    continue;
                };
                if (task + round) % 3 == 0 {
                    store.release(&lease).await.unwrap();
                } else {
                    let response = lease.fencing_token().to_be_bytes();
                    store.complete(&lease, &response, ttl_ms(60_000)).await.unwrap();
                    completed.push((round % 4, lease.fencing_token()));
                }
            }
            completed
        }));
    }

    let mut completions = Vec::new();
    for task in tasks {
        completions.extend(task.await.unwrap());
    }

    // Once completed, a key replays for the whole retention, so each key completes at most once.
    for slot in 0..4 {
        let winners: Vec<u64> = completions
            .iter()
            .filter(|(done, _)| *done == slot)
            .map(|(_, token)| *token)
            .collect();
        assert!(
            winners.len() <= 1,
            "shared-{slot} completed {} times",
            winners.len()
        );
        if let [token] = winners[..] {
            let BeginOutcome::Completed(record) = store
                .begin(
                    &key(&format!("shared-{slot}")),
                    &fingerprint(b"fp"),
                    ttl_ms(60_000),
                )
                .await
                .unwrap()
            else {
                panic!("shared-{slot} lost its completed record");
            };
            assert_eq!(record.response, token.to_be_bytes());
        }
    }
    assert_eq!(store.claim_count(), 0);
}
