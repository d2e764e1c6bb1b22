//! Begin precedence, complete, release, delete, purge, shared state and settings.

mod common;

use std::time::Duration;

use common::*;
use idem_core::{BeginOutcome, Error, IdempotencyKey, IdempotencyStore, InputField, Record};
use idem_memory::MemoryStore;

#[tokio::test]
async fn mismatch_beats_every_state() {
    let (store, clock) = manual_store();
    let fp = fingerprint(b"a");
    let other = fingerprint(b"b");

    let live = key("live");
    acquire(&store, &live, &fp, ttl_ms(100)).await;
    let outcome = store.begin(&live, &other, ttl_ms(100)).await.unwrap();
    assert_eq!(outcome, BeginOutcome::FingerprintMismatch);

    let lapsed = key("lapsed");
    let lapsed_lease = acquire(&store, &lapsed, &fp, ttl_ms(100)).await;
    let done = key("done");
    let done_lease = acquire(&store, &done, &fp, ttl_ms(100)).await;
    store.complete(&done_lease, b"r", ttl_ms(10_000)).await.unwrap();
    clock.advance(ms(100));

    let outcome = store.begin(&lapsed, &other, ttl_ms(100)).await.unwrap();
    assert_eq!(outcome, BeginOutcome::FingerprintMismatch);
    let outcome = store.begin(&done, &other, ttl_ms(100)).await.unwrap();
    assert_eq!(outcome, BeginOutcome::FingerprintMismatch);
    let empty = store.begin(&done, &fingerprint(b""), ttl_ms(100)).await.unwrap();
    assert_eq!(empty, BeginOutcome::FingerprintMismatch);

    // A mismatch changes nothing: the lapsed claim is still the original holder's.
    store.complete(&lapsed_lease, b"ok", ttl_ms(1_000)).await.unwrap();
}

#[tokio::test]
async fn replay_is_byte_exact() {
    let (store, _clock) = manual_store();
    let fp = fingerprint(b"fp");
    let large: Vec<u8> = (0..idem_core::DEFAULT_MAX_RESPONSE_BYTES)
        .map(|i| (i % 251) as u8)
        .collect();
    let cases: [(&str, Vec<u8>); 3] = [
        ("empty", Vec::new()),
        ("binary", vec![0x00, 0xFF, 0xC3, 0x28, 0x00]),
        ("large", large),
    ];

    for (name, response) in cases {
        let key = key(name);
        let lease = acquire(&store, &key, &fp, ttl_ms(100)).await;
        store.complete(&lease, &response, ttl_ms(10_000)).await.unwrap();
        let BeginOutcome::Completed(record) = store.begin(&key, &fp, ttl_ms(100)).await.unwrap() else {
            panic!("expected a completed record for {name}");
        };
        assert_eq!(record.response, response, "{name}");
        assert_eq!(record.fingerprint, fp, "{name}");
    }
}

#[tokio::test]
async fn repeated_complete_is_noop() {
    let (store, clock) = manual_store();
    let key = key("repeat");
    let fp = fingerprint(b"fp");
    let lease = acquire(&store, &key, &fp, ttl_ms(100)).await;
    store.complete(&lease, b"first", ttl_ms(1_000)).await.unwrap();

    clock.advance(ms(10));
    store.complete(&lease, b"first", ttl_ms(5_000)).await.unwrap();
    let other = store
        .complete(&lease, b"second", ttl_ms(1_000))
        .await
        .unwrap_err();
    assert!(
        matches!(other, Error::LeaseLost { fencing_token, .. } if fencing_token == lease.fencing_token())
    );

    let Some(Record::Completed(record)) = store.lookup(&key).await.unwrap() else {
        panic!("expected the completed record");
    };
    assert_eq!(record.response, b"first");
    // Retention still counts from the first completion.
    assert_eq!(record.retention_remaining, ms(990));
}

#[tokio::test]
async fn complete_of_other_key_lease_lost() {
    let (store, _clock) = manual_store();
    let fp = fingerprint(b"fp");
    let lease = acquire(&store, &key("one"), &fp, ttl_ms(100)).await;
    store.release(&lease).await.unwrap();

    let err = store.complete(&lease, b"r", ttl_ms(100)).await.unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
    assert_eq!(store.lookup(&key("one")).await.unwrap(), None);
}

#[tokio::test]
async fn oversized_response_keeps_lease() {
    let (builder, _clock) = manual_builder();
    let store = builder.max_response_bytes(16).build().unwrap();
    let key = key("large");
    let fp = fingerprint(b"fp");
    let lease = acquire(&store, &key, &fp, ttl_ms(100)).await;

    let err = store.complete(&lease, &[7; 17], ttl_ms(1_000)).await.unwrap_err();
    assert!(
        matches!(err, Error::ResponseTooLarge { size: 17, limit: 16 }),
        "{err}"
    );
    let Some(Record::InProgress(claim)) = store.lookup(&key).await.unwrap() else {
        panic!("expected the claim to stay held");
    };
    assert_eq!(claim.fencing_token, lease.fencing_token());

    store.complete(&lease, &[7; 16], ttl_ms(1_000)).await.unwrap();
    assert_eq!(store.max_response_bytes(), 16);
}

#[tokio::test]
async fn release_frees_key() {
    let (store, _clock) = manual_store();
    let key = key("release");
    let fp = fingerprint(b"fp");
    let lease = acquire(&store, &key, &fp, ttl_ms(100)).await;

    store.release(&lease).await.unwrap();
    assert_eq!(store.lookup(&key).await.unwrap(), None);
    store.release(&lease).await.unwrap();

    let next = acquire(&store, &key, &fp, ttl_ms(100)).await;
    assert_eq!(next.attempt(), 1);
    assert!(next.fencing_token() > lease.fencing_token());
    let stale = store.release(&lease).await.unwrap_err();
    assert!(matches!(stale, Error::LeaseLost { .. }), "{stale}");

    store.complete(&next, b"r", ttl_ms(1_000)).await.unwrap();
    let completed = store.release(&next).await.unwrap_err();
    assert!(matches!(completed, Error::LeaseLost { .. }), "{completed}");
    assert!(matches!(
        store.lookup(&key).await.unwrap(),
        Some(Record::Completed(_))
    ));
}

#[tokio::test]
async fn delete_reports_existence() {
    let (store, clock) = manual_store();
    let fp = fingerprint(b"fp");
    let claimed = key("claimed");
    let done = key("done");
    let first = acquire(&store, &claimed, &fp, ttl_ms(100)).await;
    let lease = acquire(&store, &done, &fp, ttl_ms(100)).await;
    store.complete(&lease, b"r", ttl_ms(50)).await.unwrap();

    assert!(store.delete(&claimed).await.unwrap());
    assert!(!store.delete(&claimed).await.unwrap());
    assert!(!store.delete(&key("never")).await.unwrap());
    let err = store.complete(&first, b"r", ttl_ms(100)).await.unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err}");

    clock.advance(ms(50));
    assert!(
        !store.delete(&done).await.unwrap(),
        "an expired record counts as absent"
    );

    let after = acquire(&store, &claimed, &fp, ttl_ms(100)).await;
    assert!(after.fencing_token() > lease.fencing_token());
}

#[tokio::test]
async fn purge_counts_expired() {
    let (builder, clock) = manual_builder();
    let store = builder.lapsed_claim_grace(ms(500)).build().unwrap();
    let fp = fingerprint(b"fp");

    for name in ["done-1", "done-2", "done-3"] {
        let lease = acquire(&store, &key(name), &fp, ttl_ms(100)).await;
        store.complete(&lease, b"r", ttl_ms(100)).await.unwrap();
    }
    for name in ["stuck-1", "stuck-2"] {
        acquire(&store, &key(name), &fp, ttl_ms(100)).await;
    }
    let kept = acquire(&store, &key("kept"), &fp, ttl_ms(100)).await;
    store.complete(&kept, b"kept", ttl_ms(10_000)).await.unwrap();

    // The stuck claims' grace periods end at +600 ms; this one lapses at +700 ms and stays until +1200 ms.
    clock.advance(ms(100));
    acquire(&store, &key("live"), &fp, ttl_ms(600)).await;
    clock.advance(ms(500));
    assert_eq!(store.claim_count(), 3);

    assert_eq!(store.purge().await.unwrap(), 5);
    assert_eq!(store.purge().await.unwrap(), 0);
    assert_eq!(store.claim_count(), 1);
    assert!(matches!(
        store.lookup(&key("live")).await.unwrap(),
        Some(Record::InProgress(_))
    ));
    assert!(matches!(
        store.lookup(&key("kept")).await.unwrap(),
        Some(Record::Completed(_))
    ));
}

#[tokio::test]
async fn purge_spans_batches() {
    let (builder, clock) = manual_builder();
    let store = builder.lapsed_claim_grace(ms(1)).build().unwrap();
    let fp = fingerprint(b"fp");
    for i in 0..2_500 {
        acquire(&store, &key(&format!("claim-{i}")), &fp, ttl_ms(10)).await;
        let lease = acquire(&store, &key(&format!("done-{i}")), &fp, ttl_ms(10)).await;
        store.complete(&lease, b"r", ttl_ms(10)).await.unwrap();
    }

    clock.advance(ms(11));
    assert_eq!(store.purge().await.unwrap(), 5_000);
    assert_eq!(store.claim_count(), 0);
}

#[tokio::test]
async fn clones_share_state() {
    let store = MemoryStore::new();
    let clone = store.clone();
    let key = key("shared");
    let fp = fingerprint(b"fp");

    let lease = acquire(&store, &key, &fp, ttl_ms(60_000)).await;
    let outcome = clone.begin(&key, &fp, ttl_ms(60_000)).await.unwrap();
    assert!(
        matches!(outcome, BeginOutcome::InProgress { attempt: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(clone.claim_count(), 1);

    clone
        .complete(&lease, b"from clone", ttl_ms(60_000))
        .await
        .unwrap();
    let BeginOutcome::Completed(record) = store.begin(&key, &fp, ttl_ms(60_000)).await.unwrap() else {
        panic!("expected the record completed through the clone");
    };
    assert_eq!(record.response, b"from clone");
}

#[tokio::test]
async fn scopes_are_isolated() {
    let (store, _clock) = manual_store();
    let fp = fingerprint(b"fp");
    let left = IdempotencyKey::new("ab", "c").unwrap();
    let right = IdempotencyKey::new("a", "bc").unwrap();

    let lease = acquire(&store, &left, &fp, ttl_ms(100)).await;
    store.complete(&lease, b"left", ttl_ms(1_000)).await.unwrap();

    assert_eq!(store.lookup(&right).await.unwrap(), None);
    acquire(&store, &right, &fingerprint(b"other"), ttl_ms(100)).await;
}

#[tokio::test]
async fn tokens_increase_across_keys() {
    let (store, _clock) = manual_store();
    let fp = fingerprint(b"fp");
    let mut last = 0;
    for i in 0..20 {
        let key = key(&format!("k{}", i % 3));
        let lease = acquire(&store, &key, &fp, ttl_ms(100)).await;
        assert!(lease.fencing_token() > last);
        last = lease.fencing_token();
        store.release(&lease).await.unwrap();
    }
}

#[test]
fn builder_rejects_zero_settings() {
    let cases = [
        ("max_claims", MemoryStore::builder().max_claims(0).build()),
        (
            "max_completed_bytes",
            MemoryStore::builder().max_completed_bytes(0).build(),
        ),
        (
            "lapsed_claim_grace",
            MemoryStore::builder().lapsed_claim_grace(Duration::ZERO).build(),
        ),
        (
            "max_response_bytes",
            MemoryStore::builder().max_response_bytes(0).build(),
        ),
        (
            "lapsed_claim_grace",
            MemoryStore::builder().lapsed_claim_grace(Duration::MAX).build(),
        ),
    ];

    for (name, result) in cases {
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidInput {
                    field: InputField::Setting,
                    ..
                }
            ),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{name}: {err}");
    }
}

#[test]
fn defaults_are_documented_values() {
    let store = MemoryStore::default();
    assert_eq!(store.backend_name(), "memory");
    assert_eq!(store.max_response_bytes(), idem_core::DEFAULT_MAX_RESPONSE_BYTES);
    assert_eq!(store.claim_count(), 0);
    assert_eq!(store.evicted_completed(), 0);
    let shown = format!("{store:?}");
    assert!(shown.contains("max_claims: 1000000"), "{shown}");
}
