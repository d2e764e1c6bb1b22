//! Release, renew, lookup, delete and purge.

use std::sync::Arc;
use std::time::Duration;

use idem_core::Record;

use super::env::*;
use crate::{Backend, CaseOutcome};

pub(crate) async fn release_lets_begin_acquire(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("release");
    let first = env.acquire(&key, &fp(1), long()).await;

    env.store
        .release(&first)
        .await
        .expect("release of a held claim must succeed");
    env.assert_absent(&key, "release removes the claim").await;

    let second = env.acquire(&key, &fp(2), long()).await;
    assert_eq!(
        second.attempt(),
        1,
        "after a release the key starts a new record at attempt 1"
    );
    assert_ne!(
        second.fencing_token(),
        first.fencing_token(),
        "a new claim after release gets a new token"
    );
    assert_eq!(
        env.claim(&key).await.fingerprint,
        fp(2),
        "the new claim may use another fingerprint"
    );
    CaseOutcome::Passed
}

pub(crate) async fn release_of_gone_record_is_ok(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let gone = key("gone");
    let lease = env.acquire(&gone, &fp(1), long()).await;
    env.store.release(&lease).await.expect("first release");

    env.store
        .release(&lease)
        .await
        .unwrap_or_else(|error| panic!("release of an already released claim must succeed: {error}"));

    let other = key("deleted");
    let lease = env.acquire(&other, &fp(1), long()).await;
    env.store.delete(&other).await.expect("delete");
    env.store
        .release(&lease)
        .await
        .unwrap_or_else(|error| panic!("release after the record was deleted must succeed: {error}"));
    env.assert_absent(&other, "release of a gone record must not create one")
        .await;
    CaseOutcome::Passed
}

pub(crate) async fn release_after_complete_is_lost(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("completed");
    let lease = env.finish(&key, &fp(1), b"kept", retain()).await;

    assert_lease_lost(
        env.store.release(&lease).await,
        &lease,
        "release after the lease completed",
    );
    assert_eq!(
        env.completed(&key).await.response,
        b"kept",
        "the completed record must stay"
    );
    CaseOutcome::Passed
}

pub(crate) async fn renew_extends_lease(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("renew");
    // On a real clock: renew at about 600 ms of a 1 s lease, then check at about 1.2 s.
    let (lease_ttl, step) = if env.exact() {
        (ttl(10_000), Duration::from_secs(8))
    } else {
        (ttl(1_000), Duration::from_millis(600))
    };
    let lease = env.acquire(&key, &fp(1), lease_ttl).await;
    let sleep_or_advance = || async {
        match &env.clock {
            Some(clock) => clock.advance(step),
            None => tokio::time::sleep(step).await,
        }
    };
    sleep_or_advance().await;

    let remaining = env
        .store
        .renew(&lease, lease_ttl)
        .await
        .expect("renew of a held lease must succeed");
    assert!(
        remaining <= lease_ttl.as_duration(),
        "renew cannot return more than the TTL"
    );
    assert!(!remaining.is_zero(), "renew must return the new remaining time");
    if env.exact() {
        assert_eq!(
            remaining,
            lease_ttl.as_duration(),
            "renew moves the deadline to a whole TTL from now"
        );
    }

    sleep_or_advance().await;
    let (retry_after, _) = assert_in_progress(
        env.begin(&key, &fp(1), long()).await,
        "begin past the original deadline of a renewed lease",
    );
    let claim = env.claim(&key).await;
    assert_eq!(
        claim.fencing_token,
        lease.fencing_token(),
        "renew keeps the fencing token"
    );
    assert_eq!(claim.attempt, 1, "renew keeps the attempt");
    if env.exact() {
        assert_eq!(
            retry_after,
            Duration::from_secs(2),
            "the renewed deadline is 10 s after the renewal"
        );
        assert_eq!(
            claim.lease_remaining,
            Duration::from_secs(2),
            "lookup reports the renewed deadline"
        );
    }
    CaseOutcome::Passed
}

pub(crate) async fn renew_revives_own_lapsed_claim(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("renew-lapsed");
    let short = env.short();
    let lease = env.acquire(&key, &fp(1), short).await;
    env.pass(short).await;

    env.store.renew(&lease, long()).await.unwrap_or_else(|error| {
        panic!("renew of an own lapsed claim that nobody took over must succeed: {error}")
    });
    let claim = env.claim(&key).await;
    assert!(claim.is_live(), "the renewed claim is live again");
    assert_eq!(
        claim.fencing_token,
        lease.fencing_token(),
        "renew keeps the token"
    );
    assert_in_progress(env.begin(&key, &fp(1), long()).await, "begin after the renewal");
    CaseOutcome::Passed
}

pub(crate) async fn renew_after_complete_is_lost(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("renew-done");
    let lease = env.finish(&key, &fp(1), b"done", retain()).await;

    assert_lease_lost(
        env.store.renew(&lease, long()).await,
        &lease,
        "renew after the lease completed",
    );
    assert_eq!(
        env.completed(&key).await.response,
        b"done",
        "the completed record must stay"
    );
    CaseOutcome::Passed
}

pub(crate) async fn lookup_live_claim(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("lookup-live");
    let lease = env.acquire(&key, &fp(3), long()).await;
    env.advance(Duration::from_secs(3));

    let claim = env.claim(&key).await;
    assert_eq!(claim.fingerprint, fp(3), "lookup reports the claim's fingerprint");
    assert_eq!(
        claim.fencing_token,
        lease.fencing_token(),
        "lookup reports the fencing token"
    );
    assert_eq!(claim.attempt, 1, "lookup reports the attempt");
    assert!(claim.is_live(), "the claim is live before its deadline");
    if env.exact() {
        assert_eq!(
            claim.lease_remaining,
            long().as_duration() - Duration::from_secs(3),
            "remaining lease time"
        );
        assert_eq!(claim.age, Duration::from_secs(3), "age of the claim");
    }
    CaseOutcome::Passed
}

pub(crate) async fn lookup_lapsed_claim(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("lookup-lapsed");
    let short = env.short();
    let lease = env.acquire(&key, &fp(1), short).await;
    env.pass(short).await;

    let claim = env.claim(&key).await;
    assert_eq!(
        claim.lease_remaining,
        Duration::ZERO,
        "a lapsed claim reports zero remaining lease time"
    );
    assert!(!claim.is_live(), "a claim at its deadline has lapsed");
    assert_eq!(
        claim.fencing_token,
        lease.fencing_token(),
        "lookup of a lapsed claim keeps its token"
    );
    CaseOutcome::Passed
}

pub(crate) async fn lookup_completed(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("lookup-done");
    env.finish(&key, &fp(4), b"stored", ttl(60_000)).await;
    env.advance(Duration::from_secs(20));

    let record = env.completed(&key).await;
    assert_eq!(record.fingerprint, fp(4), "lookup reports the fingerprint");
    assert_eq!(record.response, b"stored", "lookup reports the response");
    assert!(
        !record.retention_remaining.is_zero(),
        "a returned record is within retention"
    );
    if env.exact() {
        assert_eq!(
            record.retention_remaining,
            Duration::from_secs(40),
            "remaining retention"
        );
        assert_eq!(record.age, Duration::from_secs(20), "age since completion");
    }
    CaseOutcome::Passed
}

pub(crate) async fn lookup_absent_key(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    env.assert_absent(&key("never-used"), "a key never begun").await;
    CaseOutcome::Passed
}

pub(crate) async fn retention_expiry_frees_key(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("expiring");
    let short = env.short();
    let first = env.finish(&key, &fp(1), b"old", short).await;
    env.pass(short).await;

    env.assert_absent(&key, "a completed record past retention").await;
    let second = env.acquire(&key, &fp(2), long()).await;
    assert_eq!(second.attempt(), 1, "the key starts a new record at attempt 1");
    assert_ne!(
        second.fencing_token(),
        first.fencing_token(),
        "the new record gets a token never used for the key"
    );
    assert_lease_lost(
        env.store.complete(&first, b"old", retain()).await,
        &first,
        "the expired record's lease after the key was acquired again",
    );
    env.complete(&second, b"new", retain()).await;
    assert_replays(
        env.begin(&key, &fp(2), long()).await,
        b"new",
        "begin on the reused key",
    );
    CaseOutcome::Passed
}

pub(crate) async fn delete_removes_any_record(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let claimed = key("delete-claim");
    let done = key("delete-done");
    let lease = env.acquire(&claimed, &fp(1), long()).await;
    env.finish(&done, &fp(1), b"x", retain()).await;

    assert!(
        env.store.delete(&claimed).await.expect("delete"),
        "delete of a claim returns true"
    );
    env.assert_absent(&claimed, "a deleted claim").await;
    assert!(
        env.store.delete(&done).await.expect("delete"),
        "delete of a completed record returns true"
    );
    env.assert_absent(&done, "a deleted completed record").await;
    assert!(
        !env.store.delete(&done).await.expect("delete"),
        "delete of an absent key returns false"
    );
    assert!(
        !env.store.delete(&key("never-used")).await.expect("delete"),
        "delete of a key never used returns false"
    );

    let again = env.acquire(&claimed, &fp(1), long()).await;
    assert_ne!(
        again.fencing_token(),
        lease.fencing_token(),
        "a claim after delete gets a new token"
    );
    CaseOutcome::Passed
}

pub(crate) async fn purge_counts_expired(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let short = env.short();
    let expired = [key("purge-1"), key("purge-2"), key("purge-3")];
    for (index, key) in expired.iter().enumerate() {
        env.finish(key, &fp(1), &[index as u8], short).await;
    }
    let kept_done = key("kept-done");
    let kept_live = key("kept-live");
    let kept_lapsed = key("kept-lapsed");
    env.finish(&kept_done, &fp(1), b"kept", retain()).await;
    let lapsed = env.acquire(&kept_lapsed, &fp(1), short).await;
    env.acquire(&kept_live, &fp(1), long()).await;
    env.pass(short).await;

    // Nothing touches the expired keys before purge, so that a backend that drops expired records on read
    // still has them to purge.
    let purged = env.store.purge().await.expect("purge");
    if env.capabilities.self_expiring {
        assert!(
            purged == 0 || purged == 3,
            "purge returns 0 or the 3 expired records, got {purged}"
        );
    } else {
        assert_eq!(
            purged, 3,
            "purge returns the number of expired completed records it removed"
        );
    }
    for key in &expired {
        env.assert_absent(key, "a purged record").await;
    }
    assert_eq!(
        env.completed(&kept_done).await.response,
        b"kept",
        "purge keeps records within retention"
    );
    assert!(env.claim(&kept_live).await.is_live(), "purge keeps live claims");
    assert!(
        !env.claim(&kept_lapsed).await.is_live(),
        "purge keeps lapsed claims within their grace period"
    );
    env.complete(&lapsed, b"late", retain()).await;
    assert_eq!(
        env.store.purge().await.expect("purge"),
        0,
        "a second purge finds nothing"
    );
    CaseOutcome::Passed
}

pub(crate) async fn lapsed_claim_disappears_after_grace(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let (Some(clock), Some(grace)) = (env.clock.clone(), env.grace()) else {
        return CaseOutcome::Skipped("needs an injectable clock and a known lapsed-claim grace period");
    };
    let short = env.short();
    let purged_key = key("grace-purged");
    let begun_key = key("grace-begun");
    let purged_lease = env.acquire(&purged_key, &fp(1), short).await;
    let begun_lease = env.acquire(&begun_key, &fp(1), short).await;
    clock.advance(short.as_duration() + grace - Duration::from_millis(1));

    assert!(
        matches!(env.lookup(&purged_key).await, Some(Record::InProgress(_))),
        "a lapsed claim stays through its grace period"
    );
    clock.advance(Duration::from_millis(1));

    let purged = env.store.purge().await.expect("purge");
    if env.capabilities.self_expiring {
        assert!(
            purged <= 2,
            "purge removes at most the 2 claims past their grace period, got {purged}"
        );
    } else {
        assert_eq!(purged, 2, "purge removes claims past their grace period");
    }
    env.assert_absent(&purged_key, "a claim past its grace period")
        .await;
    env.assert_absent(&begun_key, "a claim past its grace period")
        .await;
    assert_lease_lost(
        env.store.complete(&purged_lease, b"too late", retain()).await,
        &purged_lease,
        "complete of a claim past its grace period",
    );
    let next = env.acquire(&begun_key, &fp(2), long()).await;
    assert_eq!(
        next.attempt(),
        1,
        "a key whose claim disappeared starts a new record"
    );
    assert_ne!(
        next.fencing_token(),
        begun_lease.fencing_token(),
        "the new record gets a new token"
    );
    CaseOutcome::Passed
}
