//! Fencing: a lease that no longer holds its claim changes nothing.

use std::sync::Arc;
use std::time::Duration;

use idem_core::{IdempotencyKey, Lease};

use super::env::*;
use crate::{Backend, CaseOutcome};

/// Makes a claim lapse and takes it over; returns the stale lease and the new one.
async fn taken_over(env: &Env, key: &IdempotencyKey) -> (Lease, Lease) {
    let short = env.short();
    let stale = env.acquire(key, &fp(1), short).await;
    env.pass(short).await;
    let current = env.acquire(key, &fp(1), long()).await;
    (stale, current)
}

pub(crate) async fn stale_lease_cannot_complete(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("stale-complete");
    let (stale, current) = taken_over(&env, &key).await;

    assert_lease_lost(
        env.store.complete(&stale, b"stale", retain()).await,
        &stale,
        "complete with a lease that was taken over",
    );
    let claim = env.claim(&key).await;
    assert_eq!(
        claim.fencing_token,
        current.fencing_token(),
        "the stale complete must not change the claim"
    );
    assert_eq!(claim.attempt, 2, "the stale complete must not change the attempt");

    env.complete(&current, b"current", retain()).await;
    assert_replays(
        env.begin(&key, &fp(1), long()).await,
        b"current",
        "begin after the current lease completed",
    );
    assert_lease_lost(
        env.store.complete(&stale, b"current", retain()).await,
        &stale,
        "complete with the stale lease after the current one completed, even with the same response",
    );
    CaseOutcome::Passed
}

pub(crate) async fn stale_lease_cannot_release(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("stale-release");
    let (stale, current) = taken_over(&env, &key).await;

    assert_lease_lost(
        env.store.release(&stale).await,
        &stale,
        "release with a lease that was taken over",
    );
    let claim = env.claim(&key).await;
    assert_eq!(
        claim.fencing_token,
        current.fencing_token(),
        "the stale release must leave the claim in place"
    );
    assert!(claim.is_live(), "the current claim must stay live");
    CaseOutcome::Passed
}

pub(crate) async fn stale_lease_cannot_renew(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("stale-renew");
    let (stale, current) = taken_over(&env, &key).await;
    let before = env.claim(&key).await;

    assert_lease_lost(
        env.store.renew(&stale, long()).await,
        &stale,
        "renew with a lease that was taken over",
    );
    let after = env.claim(&key).await;
    assert_eq!(
        after.fencing_token,
        current.fencing_token(),
        "the stale renew must not change the token"
    );
    assert_eq!(
        after.attempt, before.attempt,
        "the stale renew must not change the attempt"
    );
    if env.exact() {
        assert_eq!(
            after.lease_remaining, before.lease_remaining,
            "the stale renew must not move the current lease's deadline"
        );
    }

    // The current lease took over with a long TTL; a stale renew with a short one must not shorten it either.
    assert_lease_lost(
        env.store.renew(&stale, ttl(1)).await,
        &stale,
        "renew with the stale lease and 1 ms",
    );
    env.advance(Duration::from_millis(5));
    assert!(
        env.claim(&key).await.is_live(),
        "the current claim must stay live after the stale renew"
    );
    CaseOutcome::Passed
}

pub(crate) async fn unknown_token_is_lease_lost(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let claimed = key("forged");
    let real = env.acquire(&claimed, &fp(1), long()).await;
    let forged = Lease::new(
        claimed.clone(),
        fp(1),
        real.fencing_token().wrapping_add(1_000_003),
        real.attempt(),
        long(),
    );

    assert_lease_lost(
        env.store.complete(&forged, b"forged", retain()).await,
        &forged,
        "complete with a token never issued",
    );
    assert_lease_lost(
        env.store.renew(&forged, long()).await,
        &forged,
        "renew with a token never issued",
    );
    assert_lease_lost(
        env.store.release(&forged).await,
        &forged,
        "release with a token never issued",
    );
    let claim = env.claim(&claimed).await;
    assert_eq!(
        claim.fencing_token,
        real.fencing_token(),
        "a foreign token must change nothing"
    );

    let absent = key("never-begun");
    let orphan = Lease::new(absent.clone(), fp(1), 1, 1, long());
    assert_lease_lost(
        env.store.complete(&orphan, b"orphan", retain()).await,
        &orphan,
        "complete on a key that has no record",
    );
    assert_lease_lost(
        env.store.renew(&orphan, long()).await,
        &orphan,
        "renew on a key that has no record",
    );
    env.assert_absent(&absent, "complete and renew must never create a record")
        .await;
    CaseOutcome::Passed
}

pub(crate) async fn complete_own_lapsed_claim(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("own-lapsed");
    let short = env.short();
    let lease = env.acquire(&key, &fp(1), short).await;
    env.pass(short).await;
    assert!(!env.claim(&key).await.is_live(), "the claim must have lapsed");

    env.complete(&lease, b"late but first", retain()).await;
    assert_replays(
        env.begin(&key, &fp(1), long()).await,
        b"late but first",
        "begin after the holder of a lapsed claim completed it",
    );
    CaseOutcome::Passed
}

pub(crate) async fn complete_repeat_same_response(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("repeat");
    let lease = env.acquire(&key, &fp(1), long()).await;
    env.complete(&lease, b"once", ttl(60_000)).await;
    let first = env.completed(&key).await;
    env.advance(Duration::from_secs(10));

    env.store
        .complete(&lease, b"once", ttl(60_000))
        .await
        .unwrap_or_else(|error| {
            panic!("repeating a successful complete with the same response must succeed: {error}")
        });
    let second = env.completed(&key).await;
    assert_eq!(second.response, b"once", "the repeat must keep the response");
    assert_eq!(
        second.fingerprint, first.fingerprint,
        "the repeat must keep the fingerprint"
    );
    if env.exact() {
        assert_eq!(
            second.retention_remaining,
            first.retention_remaining - Duration::from_secs(10),
            "the repeat must not move the retention deadline"
        );
        assert_eq!(
            second.age,
            Duration::from_secs(10),
            "the repeat must not reset the completion time"
        );
    }
    CaseOutcome::Passed
}

pub(crate) async fn complete_repeat_other_response(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("repeat-other");
    let lease = env.acquire(&key, &fp(1), long()).await;
    env.complete(&lease, b"first", retain()).await;

    assert_lease_lost(
        env.store.complete(&lease, b"second", retain()).await,
        &lease,
        "complete again with the same lease and another response",
    );
    assert_eq!(
        env.completed(&key).await.response,
        b"first",
        "the stored response must stay the first one"
    );
    CaseOutcome::Passed
}

pub(crate) async fn complete_after_release_is_lost(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("released");
    let lease = env.acquire(&key, &fp(1), long()).await;
    env.store.release(&lease).await.expect("release of a held claim");

    assert_lease_lost(
        env.store.complete(&lease, b"late", retain()).await,
        &lease,
        "complete after release",
    );
    env.assert_absent(&key, "complete after release must not create a record")
        .await;
    assert_lease_lost(
        env.store.renew(&lease, long()).await,
        &lease,
        "renew after release",
    );
    env.assert_absent(&key, "renew after release must not create a record")
        .await;
    CaseOutcome::Passed
}

pub(crate) async fn complete_after_delete_is_lost(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("deleted");
    let lease = env.acquire(&key, &fp(1), long()).await;
    assert!(
        env.store.delete(&key).await.expect("delete"),
        "delete of a claim must report it existed"
    );

    assert_lease_lost(
        env.store.complete(&lease, b"late", retain()).await,
        &lease,
        "complete after delete",
    );
    env.assert_absent(&key, "complete after delete must not create a record")
        .await;

    let next = env.acquire(&key, &fp(1), long()).await;
    assert_lease_lost(
        env.store.complete(&lease, b"late", retain()).await,
        &lease,
        "complete with the deleted lease after the key was acquired again",
    );
    assert_eq!(
        env.claim(&key).await.fencing_token,
        next.fencing_token(),
        "the new claim must stay"
    );
    CaseOutcome::Passed
}
