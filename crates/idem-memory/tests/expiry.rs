//! Deadlines on a manual clock: expiry at the exact instant, grace periods, renewals and the largest TTL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use idem_core::{BeginOutcome, Error, IdempotencyStore, ManualClock, Record, Ttl};
use idem_memory::MemoryStore;

#[tokio::test]
async fn lease_lapses_at_deadline() {
    let (store, clock) = manual_store();
    let key = key("lease");
    let fp = fingerprint(b"fp");
    let first = acquire(&store, &key, &fp, ttl_ms(1_000)).await;

    clock.advance(ms(999));
    let before = store.begin(&key, &fp, ttl_ms(1_000)).await.unwrap();
    assert_eq!(
        before,
        BeginOutcome::InProgress {
            retry_after: ms(1),
            attempt: 1
        }
    );
    let Some(Record::InProgress(claim)) = store.lookup(&key).await.unwrap() else {
        panic!("expected a claim before the deadline");
    };
    assert_eq!(claim.lease_remaining, ms(1));
    assert!(claim.is_live());

    clock.advance(ms(1));
    let Some(Record::InProgress(claim)) = store.lookup(&key).await.unwrap() else {
        panic!("expected a lapsed claim at the deadline");
    };
    assert_eq!(claim.lease_remaining, Duration::ZERO);
    assert!(!claim.is_live());

    let second = acquire(&store, &key, &fp, ttl_ms(1_000)).await;
    assert_eq!(second.attempt(), 2);
    assert!(second.fencing_token() > first.fencing_token());
}

#[tokio::test]
async fn retention_ends_at_deadline() {
    let (store, clock) = manual_store();
    let key = key("retention");
    let fp = fingerprint(b"fp");
    let lease = acquire(&store, &key, &fp, ttl_ms(100)).await;
    clock.advance(ms(40));
    store.complete(&lease, b"done", ttl_ms(5_000)).await.unwrap();

    clock.advance(ms(4_999));
    let BeginOutcome::Completed(record) = store.begin(&key, &fp, ttl_ms(100)).await.unwrap() else {
        panic!("expected the completed record 1 ms before the retention deadline");
    };
    assert_eq!(record.response, b"done");
    assert_eq!(record.retention_remaining, ms(1));
    assert_eq!(record.age, ms(4_999));

    clock.advance(ms(1));
    assert_eq!(store.lookup(&key).await.unwrap(), None);
    let again = acquire(&store, &key, &fp, ttl_ms(100)).await;
    assert_eq!(again.attempt(), 1);
    assert!(again.fencing_token() > lease.fencing_token());
}

#[tokio::test]
async fn expired_record_allows_new_fingerprint() {
    let (store, clock) = manual_store();
    let key = key("reuse");
    let lease = acquire(&store, &key, &fingerprint(b"old"), ttl_ms(100)).await;
    store.complete(&lease, b"x", ttl_ms(10)).await.unwrap();

    clock.advance(ms(9));
    let before = store
        .begin(&key, &fingerprint(b"new"), ttl_ms(100))
        .await
        .unwrap();
    assert_eq!(before, BeginOutcome::FingerprintMismatch);

    clock.advance(ms(1));
    acquire(&store, &key, &fingerprint(b"new"), ttl_ms(100)).await;
}

#[tokio::test]
async fn grace_ends_at_deadline() {
    let (builder, clock) = manual_builder();
    let store = builder.lapsed_claim_grace(ms(1_000)).build().unwrap();
    let key = key("grace");
    let fp = fingerprint(b"fp");
    let first = acquire(&store, &key, &fp, ttl_ms(100)).await;

    // Lease deadline at +100 ms, grace end at +1100 ms.
    clock.advance(ms(1_099));
    let Some(Record::InProgress(claim)) = store.lookup(&key).await.unwrap() else {
        panic!("expected the lapsed claim 1 ms before its grace period ends");
    };
    assert_eq!(claim.fencing_token, first.fencing_token());

    clock.advance(ms(1));
    assert_eq!(store.lookup(&key).await.unwrap(), None);
    let err = store.complete(&first, b"late", ttl_ms(1_000)).await.unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err}");

    let fresh = acquire(&store, &key, &fp, ttl_ms(100)).await;
    assert_eq!(fresh.attempt(), 1);
}

#[tokio::test]
async fn lapsed_claim_completes() {
    let (builder, clock) = manual_builder();
    let store = builder.lapsed_claim_grace(ms(1_000)).build().unwrap();
    let key = key("lapsed-complete");
    let fp = fingerprint(b"fp");
    let lease = acquire(&store, &key, &fp, ttl_ms(100)).await;

    clock.advance(ms(1_099));
    store
        .complete(&lease, b"late but fine", ttl_ms(1_000))
        .await
        .unwrap();

    let BeginOutcome::Completed(record) = store.begin(&key, &fp, ttl_ms(100)).await.unwrap() else {
        panic!("expected the completed record");
    };
    assert_eq!(record.response, b"late but fine");
}

#[tokio::test]
async fn renew_moves_deadline() {
    let (store, clock) = manual_store();
    let key = key("renew");
    let fp = fingerprint(b"fp");
    let lease = acquire(&store, &key, &fp, ttl_ms(100)).await;

    clock.advance(ms(90));
    assert_eq!(store.renew(&lease, ttl_ms(500)).await.unwrap(), ms(500));

    clock.advance(ms(499));
    let outcome = store.begin(&key, &fp, ttl_ms(100)).await.unwrap();
    assert_eq!(
        outcome,
        BeginOutcome::InProgress {
            retry_after: ms(1),
            attempt: 1
        }
    );
}

#[tokio::test]
async fn renew_revives_lapsed_claim() {
    let (store, clock) = manual_store();
    let key = key("renew-lapsed");
    let fp = fingerprint(b"fp");
    let lease = acquire(&store, &key, &fp, ttl_ms(100)).await;

    clock.advance(ms(150));
    assert_eq!(store.renew(&lease, ttl_ms(200)).await.unwrap(), ms(200));
    let outcome = store.begin(&key, &fp, ttl_ms(100)).await.unwrap();
    assert_eq!(
        outcome,
        BeginOutcome::InProgress {
            retry_after: ms(200),
            attempt: 1
        }
    );
}

#[tokio::test]
async fn takeover_kills_old_lease() {
    let (store, clock) = manual_store();
    let key = key("takeover");
    let fp = fingerprint(b"fp");
    let old = acquire(&store, &key, &fp, ttl_ms(100)).await;
    clock.advance(ms(100));
    let new = acquire(&store, &key, &fp, ttl_ms(100)).await;

    let renew = store.renew(&old, ttl_ms(100)).await.unwrap_err();
    assert!(matches!(renew, Error::LeaseLost { fencing_token, .. } if fencing_token == old.fencing_token()));
    let complete = store.complete(&old, b"stale", ttl_ms(1_000)).await.unwrap_err();
    assert!(matches!(complete, Error::LeaseLost { .. }), "{complete}");
    let release = store.release(&old).await.unwrap_err();
    assert!(matches!(release, Error::LeaseLost { .. }), "{release}");

    let Some(Record::InProgress(claim)) = store.lookup(&key).await.unwrap() else {
        panic!("expected the new claim to stay");
    };
    assert_eq!(claim.fencing_token, new.fencing_token());
    assert_eq!(claim.attempt, 2);
    assert_eq!(claim.age, ms(100));
    store.complete(&new, b"fresh", ttl_ms(1_000)).await.unwrap();
}

#[tokio::test]
async fn max_ttl_does_not_overflow() {
    // Start the clock at half of what a ManualClock can count, so that any u64 overflow would show.
    let clock = ManualClock::new(Duration::from_millis(u64::MAX / 2));
    let store = MemoryStore::builder()
        .clock(Arc::new(clock.clone()))
        .lapsed_claim_grace(Ttl::MAX.as_duration())
        .build()
        .unwrap();
    let key = key("max-ttl");
    let fp = fingerprint(b"fp");
    let lease = acquire(&store, &key, &fp, Ttl::MAX).await;

    let outcome = store.begin(&key, &fp, Ttl::MAX).await.unwrap();
    assert_eq!(
        outcome,
        BeginOutcome::InProgress {
            retry_after: Ttl::MAX.as_duration(),
            attempt: 1
        }
    );
    assert_eq!(
        store.renew(&lease, Ttl::MAX).await.unwrap(),
        Ttl::MAX.as_duration()
    );

    store.complete(&lease, b"kept", Ttl::MAX).await.unwrap();
    clock.advance(Ttl::MAX.as_duration() - ms(1));
    let Some(Record::Completed(record)) = store.lookup(&key).await.unwrap() else {
        panic!("expected the record 1 ms before a 100-year retention ends");
    };
    assert_eq!(record.retention_remaining, ms(1));

    clock.advance(ms(1));
    assert_eq!(store.lookup(&key).await.unwrap(), None);
}
