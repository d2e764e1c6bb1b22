//! Atomic claims: among concurrent begins on one key, one acquires.

use std::sync::Arc;

use idem_core::{BeginOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, Lease, Ttl};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Barrier;

use super::env::*;
use crate::{Backend, CaseOutcome};

/// Begins racing on one key in each race.
const TASKS: usize = 64;

/// Starts `TASKS` begins on `key` at once, spread over `stores`, on the runtime's worker threads, and returns
/// the winner's lease after checking that exactly one acquired and every other one saw the winner's claim.
async fn race(
    stores: &[Arc<dyn IdempotencyStore>],
    key: &IdempotencyKey,
    fingerprint: &Fingerprint,
    lease_ttl: Ttl,
) -> Lease {
    assert_eq!(
        Handle::current().runtime_flavor(),
        RuntimeFlavor::MultiThread,
        "the concurrency cases need a multi-threaded Tokio runtime, so that begins really run at once"
    );
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|index| {
            let store = Arc::clone(&stores[index % stores.len()]);
            let barrier = Arc::clone(&barrier);
            let key = key.clone();
            let fingerprint = fingerprint.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store.begin(&key, &fingerprint, lease_ttl).await
            })
        })
        .collect();

    let mut outcomes = Vec::with_capacity(TASKS);
    for task in tasks {
        let outcome = task.await.expect("a racing begin panicked");
        outcomes.push(outcome.unwrap_or_else(|error| panic!("a racing begin failed: {error}")));
    }

    let winners: Vec<Lease> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            BeginOutcome::Acquired(lease) => Some(lease.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {TASKS} concurrent begins must acquire"
    );
    let winner = winners.into_iter().next().expect("one winner");
    for outcome in &outcomes {
        match outcome {
            BeginOutcome::Acquired(_) => {}
            BeginOutcome::InProgress { attempt, .. } => assert_eq!(
                *attempt,
                winner.attempt(),
                "every loser must see the winner's claim"
            ),
            other => panic!("every begin that lost the race must report in progress, got {other:?}"),
        }
    }
    winner
}

pub(crate) async fn concurrent_begin_one_winner(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("race-fresh");
    let winner = race(&[Arc::clone(&env.store)], &key, &fp(1), long()).await;

    assert_eq!(winner.attempt(), 1, "the winner on a fresh key is attempt 1");
    assert_eq!(
        env.claim(&key).await.fencing_token,
        winner.fencing_token(),
        "the claim is the winner's"
    );
    CaseOutcome::Passed
}

pub(crate) async fn concurrent_takeover_one_winner(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("race-lapsed");
    let short = env.short();
    let first = env.acquire(&key, &fp(1), short).await;
    env.pass(short).await;

    let winner = race(&[Arc::clone(&env.store)], &key, &fp(1), long()).await;
    assert_eq!(winner.attempt(), 2, "the one takeover is attempt 2");
    assert_ne!(
        winner.fencing_token(),
        first.fencing_token(),
        "the takeover gets a new token"
    );
    assert_eq!(
        env.claim(&key).await.attempt,
        2,
        "exactly one takeover was counted"
    );
    CaseOutcome::Passed
}

pub(crate) async fn concurrent_reacquire_one_winner(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("race-expired");
    let short = env.short();
    let first = env.finish(&key, &fp(1), b"old", short).await;
    env.pass(short).await;

    let winner = race(&[Arc::clone(&env.store)], &key, &fp(1), long()).await;
    assert_eq!(
        winner.attempt(),
        1,
        "the winner on an expired record starts a new record"
    );
    assert_ne!(
        winner.fencing_token(),
        first.fencing_token(),
        "the winner gets a new token"
    );
    CaseOutcome::Passed
}

pub(crate) async fn concurrent_begin_across_handles(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    if let Some(skip) = skip_unless(
        env.capabilities.shared_across_handles,
        "needs shared_across_handles",
    ) {
        return skip;
    }
    let mut stores = vec![Arc::clone(&env.store)];
    for _ in 0..3 {
        stores.push(env.connect().await);
    }

    let fresh = key("race-handles");
    let winner = race(&stores, &fresh, &fp(1), long()).await;
    for store in &stores {
        assert_eq!(
            claim_on(store, &fresh).await.fencing_token,
            winner.fencing_token(),
            "every handle sees the winner's claim"
        );
    }

    let short = env.short();
    let lapsing = key("race-handles-lapsed");
    acquire_on(&stores[1], &lapsing, &fp(1), short).await;
    env.pass(short).await;
    let winner = race(&stores, &lapsing, &fp(1), long()).await;
    assert_eq!(winner.attempt(), 2, "one takeover across handles");
    CaseOutcome::Passed
}
