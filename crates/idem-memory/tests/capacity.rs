//! Capacity bounds: claims are never dropped, completed records are evicted by weight and counted.

mod common;

use common::*;
use idem_core::{BeginOutcome, Error, IdempotencyStore, Record};

#[tokio::test]
async fn max_claims_gives_store_full() {
    let (builder, _clock) = manual_builder();
    let store = builder.max_claims(100).build().unwrap();
    let fp = fingerprint(b"fp");
    let mut leases = Vec::new();
    for i in 0..100 {
        leases.push(acquire(&store, &key(&format!("k{i}")), &fp, ttl_ms(1_000)).await);
    }

    let err = store
        .begin(&key("one-more"), &fp, ttl_ms(1_000))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::StoreFull {
                claims: 100,
                limit: 100
            }
        ),
        "{err}"
    );
    assert!(err.is_retryable());
    assert_eq!(store.lookup(&key("one-more")).await.unwrap(), None);

    // A full store still serves begins that need no new claim.
    let held = store.begin(&key("k0"), &fp, ttl_ms(1_000)).await.unwrap();
    assert!(matches!(held, BeginOutcome::InProgress { .. }), "{held:?}");
    for (i, lease) in leases.iter().enumerate() {
        let Some(Record::InProgress(claim)) = store.lookup(&key(&format!("k{i}"))).await.unwrap() else {
            panic!("claim k{i} was dropped");
        };
        assert_eq!(claim.fencing_token, lease.fencing_token());
    }

    store.complete(&leases[0], b"r", ttl_ms(1_000)).await.unwrap();
    acquire(&store, &key("one-more"), &fp, ttl_ms(1_000)).await;
    assert_eq!(store.claim_count(), 100);
}

#[tokio::test]
async fn full_store_reclaims_expired_claims() {
    let (builder, clock) = manual_builder();
    let store = builder.max_claims(10).lapsed_claim_grace(ms(50)).build().unwrap();
    let fp = fingerprint(b"fp");
    for i in 0..10 {
        acquire(&store, &key(&format!("k{i}")), &fp, ttl_ms(100)).await;
    }

    clock.advance(ms(149));
    let err = store.begin(&key("new"), &fp, ttl_ms(100)).await.unwrap_err();
    assert!(matches!(err, Error::StoreFull { .. }), "{err}");

    clock.advance(ms(1));
    acquire(&store, &key("new"), &fp, ttl_ms(100)).await;
    assert_eq!(store.claim_count(), 1);
}

#[tokio::test]
async fn claims_survive_tiny_cache() {
    let (builder, _clock) = manual_builder();
    let store = builder.max_completed_bytes(1).build().unwrap();
    let fp = fingerprint(b"fingerprint");
    let mut leases = Vec::new();
    for i in 0..5_000 {
        leases.push(acquire(&store, &key(&format!("claim-{i}")), &fp, ttl_ms(60_000)).await);
    }

    // Every completed record outweighs the 1-byte limit, so each one is evicted.
    for (i, lease) in leases.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        store
            .complete(lease, format!("response {i}").as_bytes(), ttl_ms(60_000))
            .await
            .unwrap();
    }

    assert_eq!(store.evicted_completed(), 2_500);
    assert_eq!(store.claim_count(), 2_500);
    for (i, lease) in leases.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
        let Some(Record::InProgress(claim)) = store.lookup(&key(&format!("claim-{i}"))).await.unwrap() else {
            panic!("claim-{i} was dropped");
        };
        assert_eq!(claim.fencing_token, lease.fencing_token());
    }
}

#[tokio::test]
async fn eviction_is_counted() {
    let (builder, _clock) = manual_builder();
    let store = builder.max_completed_bytes(200).build().unwrap();
    let fp = fingerprint(b"fp");
    let total = 20;
    for i in 0..total {
        let key = key(&format!("k{i:02}"));
        let lease = acquire(&store, &key, &fp, ttl_ms(1_000)).await;
        store
            .complete(&lease, &[i as u8; 40], ttl_ms(60_000))
            .await
            .unwrap();
    }

    let evicted = store.evicted_completed();
    let mut retained = 0;
    for i in 0..total {
        if let Some(Record::Completed(_)) = store.lookup(&key(&format!("k{i:02}"))).await.unwrap() {
            retained += 1;
        }
    }
    // Each record weighs 13 bytes of storage key ("8:tenant-ak00"), 2 of fingerprint and 40 of response,
    // 55 in all, so 3 fit in 200.
    assert_eq!(retained, 3);
    assert_eq!(evicted, total - retained);

    // An evicted key runs again: a retry acquires instead of replaying.
    let retry = store.begin(&key("k00"), &fp, ttl_ms(1_000)).await.unwrap();
    assert!(matches!(retry, BeginOutcome::Acquired(_)), "{retry:?}");
}

#[tokio::test]
async fn expired_eviction_not_counted() {
    let (builder, clock) = manual_builder();
    let store = builder.max_completed_bytes(200).build().unwrap();
    let fp = fingerprint(b"fp");
    for i in 0..3 {
        let lease = acquire(&store, &key(&format!("old-{i}")), &fp, ttl_ms(1_000)).await;
        store.complete(&lease, &[0; 40], ttl_ms(10)).await.unwrap();
    }
    assert_eq!(store.evicted_completed(), 0);

    clock.advance(ms(10));
    for i in 0..3 {
        let lease = acquire(&store, &key(&format!("new-{i}")), &fp, ttl_ms(1_000)).await;
        store.complete(&lease, &[0; 40], ttl_ms(60_000)).await.unwrap();
    }

    assert_eq!(store.evicted_completed(), 0);
    for i in 0..3 {
        let record = store.lookup(&key(&format!("new-{i}"))).await.unwrap();
        assert!(matches!(record, Some(Record::Completed(_))), "new-{i}");
    }
}
