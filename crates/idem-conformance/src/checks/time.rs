//! Deadlines: the exact instant of expiry, and the bounds of a TTL.

use std::sync::Arc;
use std::time::Duration;

use idem_core::{BeginOutcome, Error, InputField, Record, Ttl};

use super::env::*;
use crate::{Backend, CaseOutcome};

const NEEDS_CLOCK: &str = "needs an injectable clock to stand one millisecond before a deadline";

pub(crate) async fn lease_expires_at_deadline(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let Some(clock) = env.clock.clone() else {
        return CaseOutcome::Skipped(NEEDS_CLOCK);
    };
    let key = key("lease-deadline");
    let first = env.acquire(&key, &fp(1), ttl(5_000)).await;
    clock.advance(Duration::from_millis(4_999));

    let (retry_after, _) = assert_in_progress(
        env.begin(&key, &fp(1), long()).await,
        "begin 1 ms before the deadline",
    );
    assert_eq!(
        retry_after,
        Duration::from_millis(1),
        "1 ms before the deadline, 1 ms remains"
    );
    let claim = env.claim(&key).await;
    assert_eq!(
        claim.lease_remaining,
        Duration::from_millis(1),
        "lookup 1 ms before the deadline"
    );
    assert!(claim.is_live(), "the claim is live 1 ms before its deadline");

    clock.advance(Duration::from_millis(1));
    let claim = env.claim(&key).await;
    assert_eq!(
        claim.lease_remaining,
        Duration::ZERO,
        "at the deadline instant no lease time remains"
    );
    match env.begin(&key, &fp(1), long()).await {
        BeginOutcome::Acquired(lease) => {
            assert_eq!(
                lease.attempt(),
                2,
                "the claim is taken over at its deadline instant"
            );
            assert_ne!(
                lease.fencing_token(),
                first.fencing_token(),
                "the takeover gets a new token"
            );
        }
        other => panic!("begin at the deadline instant must take the lapsed claim over, got {other:?}"),
    }
    CaseOutcome::Passed
}

pub(crate) async fn retention_expires_at_deadline(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let Some(clock) = env.clock.clone() else {
        return CaseOutcome::Skipped(NEEDS_CLOCK);
    };
    let key = key("retention-deadline");
    env.finish(&key, &fp(1), b"r", ttl(5_000)).await;
    clock.advance(Duration::from_millis(4_999));

    let record = env.completed(&key).await;
    assert_eq!(
        record.retention_remaining,
        Duration::from_millis(1),
        "1 ms before the deadline, 1 ms remains"
    );
    assert_replays(
        env.begin(&key, &fp(1), long()).await,
        b"r",
        "begin 1 ms before the retention deadline",
    );

    clock.advance(Duration::from_millis(1));
    env.assert_absent(&key, "a completed record at its retention deadline instant")
        .await;
    let lease = env.acquire(&key, &fp(1), long()).await;
    assert_eq!(lease.attempt(), 1, "the expired key starts a new record");
    CaseOutcome::Passed
}

pub(crate) async fn zero_ttl_rejected(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let attempts = [
        Ttl::new(Duration::ZERO),
        Ttl::from_millis(0),
        Ttl::from_secs(0),
        Ttl::try_from(Duration::ZERO),
    ];
    for (index, result) in attempts.into_iter().enumerate() {
        match result {
            Err(Error::InvalidInput {
                field: InputField::Ttl,
                ..
            }) => {}
            other => panic!("zero TTL (form {index}) must be invalid input on the TTL, got {other:?}"),
        }
    }
    let over = Ttl::new(Ttl::MAX.as_duration() + Duration::from_millis(1));
    assert!(
        matches!(
            over,
            Err(Error::InvalidInput {
                field: InputField::Ttl,
                ..
            })
        ),
        "a TTL above Ttl::MAX must be invalid input, got {over:?}"
    );
    assert!(
        Ttl::new(Duration::MAX).is_err(),
        "Duration::MAX must be rejected, not overflow"
    );
    assert_eq!(ttl(1).as_millis(), 1, "1 ms is the shortest TTL");
    assert_eq!(
        env.store.purge().await.expect("purge"),
        0,
        "rejected TTLs store nothing"
    );
    CaseOutcome::Passed
}

pub(crate) async fn max_ttl_works(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("max-ttl");
    let max = Ttl::MAX.as_duration();
    let lease = env.acquire(&key, &fp(1), Ttl::MAX).await;

    let claim = env.claim(&key).await;
    assert!(claim.is_live(), "a claim with Ttl::MAX is live");
    assert!(
        claim.lease_remaining <= max,
        "remaining lease time cannot exceed Ttl::MAX"
    );
    assert!(
        claim.lease_remaining > max - Duration::from_secs(60),
        "remaining lease time of Ttl::MAX must not wrap"
    );
    let (retry_after, _) =
        assert_in_progress(env.begin(&key, &fp(1), long()).await, "begin on a Ttl::MAX claim");
    assert!(
        retry_after > max - Duration::from_secs(60),
        "retry-after of Ttl::MAX must not wrap"
    );

    env.advance(Duration::from_secs(50 * 365 * 24 * 60 * 60));
    let remaining = env
        .store
        .renew(&lease, Ttl::MAX)
        .await
        .expect("renew with Ttl::MAX");
    assert!(
        remaining > max - Duration::from_secs(60),
        "renew with Ttl::MAX must not wrap"
    );

    env.complete(&lease, b"forever", Ttl::MAX).await;
    let record = env.completed(&key).await;
    assert!(
        record.retention_remaining <= max,
        "remaining retention cannot exceed Ttl::MAX"
    );
    assert!(
        record.retention_remaining > max - Duration::from_secs(60),
        "retention of Ttl::MAX must not wrap"
    );
    env.advance(Duration::from_secs(99 * 365 * 24 * 60 * 60));
    assert_replays(
        env.begin(&key, &fp(1), long()).await,
        b"forever",
        "begin 99 years into a Ttl::MAX retention",
    );
    assert!(
        matches!(env.lookup(&key).await, Some(Record::Completed(_))),
        "the record stays"
    );
    CaseOutcome::Passed
}
