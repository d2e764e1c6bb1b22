//! Operation rules on a real database file with a manual clock.

mod support;

use std::time::Duration;

use idem_core::{BeginOutcome, Error, IdempotencyKey, IdempotencyStore, InputField, Record, Ttl};
use support::{GRACE, acquired, fingerprint, key, manual_store, ttl_ms};

#[tokio::test]
async fn begin_fresh_key_acquires() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _clock) = manual_store(&dir.path().join("idem.db")).await;

    let lease = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );

    assert_eq!(lease.attempt(), 1);
    assert!(lease.fencing_token() > 0);
    assert_eq!(lease.key(), &key("k"));
    assert_eq!(store.backend_name(), "sqlite");
}

#[tokio::test]
async fn live_claim_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = manual_store(&dir.path().join("idem.db")).await;
    acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );

    clock.advance(Duration::from_millis(300));
    let outcome = store
        .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
        .await
        .unwrap();

    assert_eq!(
        outcome,
        BeginOutcome::InProgress {
            retry_after: Duration::from_millis(700),
            attempt: 1
        }
    );
}

#[tokio::test]
async fn lease_lapses_at_deadline_instant() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = manual_store(&dir.path().join("idem.db")).await;
    let first = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );

    clock.advance(Duration::from_millis(999));
    let before = store
        .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
        .await
        .unwrap();
    assert_eq!(
        before,
        BeginOutcome::InProgress {
            retry_after: Duration::from_millis(1),
            attempt: 1
        }
    );

    clock.advance(Duration::from_millis(1));
    let second = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    assert_eq!(second.attempt(), 2);
    assert!(second.fencing_token() > first.fencing_token());

    let stale = store.complete(&first, b"old", ttl_ms(1000)).await.unwrap_err();
    assert!(matches!(stale, Error::LeaseLost { .. }), "{stale}");
    store.complete(&second, b"new", ttl_ms(1000)).await.unwrap();
}

#[tokio::test]
async fn retention_ends_at_deadline_instant() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = manual_store(&dir.path().join("idem.db")).await;
    let lease = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    store.complete(&lease, b"done", ttl_ms(5000)).await.unwrap();

    clock.advance(Duration::from_millis(4999));
    match store
        .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
        .await
        .unwrap()
    {
        BeginOutcome::Completed(done) => {
            assert_eq!(done.response, b"done");
            assert_eq!(done.retention_remaining, Duration::from_millis(1));
            assert_eq!(done.age, Duration::from_millis(4999));
        }
        other => panic!("expected Completed, got {other:?}"),
    }
    assert!(store.lookup(&key("k")).await.unwrap().is_some());

    clock.advance(Duration::from_millis(1));
    assert_eq!(store.lookup(&key("k")).await.unwrap(), None);
    let again = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    assert_eq!(again.attempt(), 1);
    assert!(again.fencing_token() > lease.fencing_token());
}

#[tokio::test]
async fn lapsed_claim_completes_for_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = manual_store(&dir.path().join("idem.db")).await;
    let lease = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );

    clock.advance(Duration::from_millis(5000));
    match store.lookup(&key("k")).await.unwrap() {
        Some(Record::InProgress(claim)) => {
            assert!(!claim.is_live());
            assert_eq!(claim.lease_remaining, Duration::ZERO);
            assert_eq!(claim.age, Duration::from_millis(5000));
        }
        other => panic!("expected a lapsed claim, got {other:?}"),
    }
    store.complete(&lease, b"late", ttl_ms(1000)).await.unwrap();

    let outcome = store
        .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
        .await
        .unwrap();
    assert!(
        matches!(outcome, BeginOutcome::Completed(ref done) if done.response == b"late"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn claim_past_grace_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = manual_store(&dir.path().join("idem.db")).await;
    let lease = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );

    clock.advance(Duration::from_millis(1000) + GRACE - Duration::from_millis(1));
    assert!(store.lookup(&key("k")).await.unwrap().is_some());

    clock.advance(Duration::from_millis(1));
    assert_eq!(store.lookup(&key("k")).await.unwrap(), None);
    let late = store.complete(&lease, b"late", ttl_ms(1000)).await.unwrap_err();
    assert!(matches!(late, Error::LeaseLost { .. }), "{late}");
    let renewed = store.renew(&lease, ttl_ms(1000)).await.unwrap_err();
    assert!(matches!(renewed, Error::LeaseLost { .. }), "{renewed}");

    // Another fingerprint is no mismatch: the claim is gone.
    let fresh = acquired(
        store
            .begin(&key("k"), &fingerprint(b"other"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    assert_eq!(fresh.attempt(), 1);
    assert!(fresh.fencing_token() > lease.fencing_token());
}

#[tokio::test]
async fn mismatch_takes_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = manual_store(&dir.path().join("idem.db")).await;
    let live = acquired(
        store
            .begin(&key("live"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    let lapsed = acquired(
        store
            .begin(&key("lapsed"), &fingerprint(b"f"), ttl_ms(10))
            .await
            .unwrap(),
    );
    let done = acquired(
        store
            .begin(&key("done"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    store.complete(&done, b"r", ttl_ms(60_000)).await.unwrap();
    clock.advance(Duration::from_millis(10));

    for name in ["live", "lapsed", "done"] {
        let outcome = store
            .begin(&key(name), &fingerprint(b"g"), ttl_ms(1000))
            .await
            .unwrap();
        assert_eq!(outcome, BeginOutcome::FingerprintMismatch, "{name}");
    }

    // Nothing changed: the original leases still hold their keys.
    store.renew(&live, ttl_ms(1000)).await.unwrap();
    store.complete(&lapsed, b"r", ttl_ms(1000)).await.unwrap();
}

#[tokio::test]
async fn empty_fingerprint_matches_only_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _clock) = manual_store(&dir.path().join("idem.db")).await;
    let empty = idem_core::Fingerprint::empty();
    let lease = acquired(store.begin(&key("k"), &empty, ttl_ms(1000)).await.unwrap());
    store.complete(&lease, b"", ttl_ms(1000)).await.unwrap();

    let same = store.begin(&key("k"), &empty, ttl_ms(1000)).await.unwrap();
    assert!(
        matches!(same, BeginOutcome::Completed(ref done) if done.response.is_empty()),
        "{same:?}"
    );
    let other = store
        .begin(&key("k"), &fingerprint(b"x"), ttl_ms(1000))
        .await
        .unwrap();
    assert_eq!(other, BeginOutcome::FingerprintMismatch);
}

#[tokio::test]
async fn complete_repeat_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = manual_store(&dir.path().join("idem.db")).await;
    let lease = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    store.complete(&lease, b"first", ttl_ms(10_000)).await.unwrap();
    clock.advance(Duration::from_millis(100));

    store.complete(&lease, b"first", ttl_ms(50_000)).await.unwrap();
    let other = store
        .complete(&lease, b"second", ttl_ms(10_000))
        .await
        .unwrap_err();
    assert!(matches!(other, Error::LeaseLost { .. }), "{other}");

    match store.lookup(&key("k")).await.unwrap() {
        Some(Record::Completed(done)) => {
            assert_eq!(done.response, b"first");
            // The repeat did not move the retention deadline.
            assert_eq!(done.retention_remaining, Duration::from_millis(9_900));
        }
        other => panic!("expected a completed record, got {other:?}"),
    }
}

#[tokio::test]
async fn release_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = manual_store(&dir.path().join("idem.db")).await;

    let lease = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    store.release(&lease).await.unwrap();
    assert_eq!(store.lookup(&key("k")).await.unwrap(), None);
    store.release(&lease).await.unwrap();
    let gone = store.complete(&lease, b"r", ttl_ms(1000)).await.unwrap_err();
    assert!(matches!(gone, Error::LeaseLost { .. }), "{gone}");

    let old = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    clock.advance(Duration::from_millis(1000));
    let new = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    let taken = store.release(&old).await.unwrap_err();
    assert!(matches!(taken, Error::LeaseLost { .. }), "{taken}");
    assert!(store.lookup(&key("k")).await.unwrap().is_some());

    store.complete(&new, b"r", ttl_ms(1000)).await.unwrap();
    let completed = store.release(&new).await.unwrap_err();
    assert!(matches!(completed, Error::LeaseLost { .. }), "{completed}");
    assert!(matches!(
        store.lookup(&key("k")).await.unwrap(),
        Some(Record::Completed(_))
    ));
}

#[tokio::test]
async fn renew_moves_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = manual_store(&dir.path().join("idem.db")).await;
    let lease = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );

    clock.advance(Duration::from_millis(900));
    let remaining = store.renew(&lease, ttl_ms(2000)).await.unwrap();
    assert_eq!(remaining, Duration::from_millis(2000));

    clock.advance(Duration::from_millis(1500));
    let outcome = store
        .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        BeginOutcome::InProgress {
            retry_after: Duration::from_millis(500),
            attempt: 1
        }
    );

    clock.advance(Duration::from_millis(500));
    let taker = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    let stale = store.renew(&lease, ttl_ms(1000)).await.unwrap_err();
    assert!(
        matches!(stale, Error::LeaseLost { fencing_token, .. } if fencing_token == lease.fencing_token())
    );
    store.renew(&taker, ttl_ms(1000)).await.unwrap();
}

#[tokio::test]
async fn response_too_large_keeps_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = idem_sqlite::SqliteStore::builder(dir.path().join("idem.db"))
        .max_response_bytes(16)
        .open()
        .await
        .unwrap();
    assert_eq!(store.max_response_bytes(), 16);
    let lease = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(60_000))
            .await
            .unwrap(),
    );

    let error = store.complete(&lease, &[7; 17], ttl_ms(1000)).await.unwrap_err();
    assert!(
        matches!(error, Error::ResponseTooLarge { size: 17, limit: 16 }),
        "{error}"
    );
    assert!(matches!(
        store.lookup(&key("k")).await.unwrap(),
        Some(Record::InProgress(_))
    ));

    store.complete(&lease, &[7; 16], ttl_ms(1000)).await.unwrap();
}

#[tokio::test]
async fn responses_replay_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _clock) = manual_store(&dir.path().join("idem.db")).await;
    let large: Vec<u8> = (0..idem_core::DEFAULT_MAX_RESPONSE_BYTES)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let cases: [(&str, Vec<u8>); 4] = [
        ("empty", Vec::new()),
        ("binary", vec![0x00, 0xFF, 0xC3, 0x28, 0x00]),
        ("utf8", "héllo".as_bytes().to_vec()),
        ("large", large),
    ];

    for (name, response) in &cases {
        let lease = acquired(
            store
                .begin(&key(name), &fingerprint(b"f"), ttl_ms(1000))
                .await
                .unwrap(),
        );
        store.complete(&lease, response, ttl_ms(60_000)).await.unwrap();
    }
    for (name, response) in &cases {
        match store
            .begin(&key(name), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap()
        {
            BeginOutcome::Completed(done) => assert!(done.response == *response, "{name}"),
            other => panic!("{name}: expected Completed, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn ttl_max_works() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _clock) = manual_store(&dir.path().join("idem.db")).await;
    let lease = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), Ttl::MAX)
            .await
            .unwrap(),
    );
    assert_eq!(
        store.renew(&lease, Ttl::MAX).await.unwrap(),
        Ttl::MAX.as_duration()
    );

    store.complete(&lease, b"r", Ttl::MAX).await.unwrap();
    match store.lookup(&key("k")).await.unwrap() {
        Some(Record::Completed(done)) => assert_eq!(done.retention_remaining, Ttl::MAX.as_duration()),
        other => panic!("expected a completed record, got {other:?}"),
    }
}

#[tokio::test]
async fn deadline_overflow_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = manual_store(&dir.path().join("idem.db")).await;
    clock.set(Duration::from_millis(i64::MAX as u64 - 10));

    let error = store
        .begin(&key("k"), &fingerprint(b"f"), ttl_ms(11))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidInput {
                field: InputField::Ttl,
                ..
            }
        ),
        "{error}"
    );
    clock.set(Duration::from_millis(1_000));
    assert_eq!(store.lookup(&key("k")).await.unwrap(), None);
}

#[tokio::test]
async fn clock_beyond_range_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = manual_store(&dir.path().join("idem.db")).await;
    clock.set(Duration::from_millis(u64::MAX));

    let error = store
        .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Unavailable { retryable: false, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn delete_reports_existence() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = manual_store(&dir.path().join("idem.db")).await;
    let lease = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );

    assert!(store.delete(&key("k")).await.unwrap());
    assert!(!store.delete(&key("k")).await.unwrap());
    let gone = store.complete(&lease, b"r", ttl_ms(1000)).await.unwrap_err();
    assert!(matches!(gone, Error::LeaseLost { .. }), "{gone}");

    let again = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    assert!(again.fencing_token() > lease.fencing_token());
    store.complete(&again, b"r", ttl_ms(1000)).await.unwrap();
    clock.advance(Duration::from_millis(1000));
    // The expired row is removed, but it no longer counted as a record.
    assert!(!store.delete(&key("k")).await.unwrap());
}

#[tokio::test]
async fn scopes_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _clock) = manual_store(&dir.path().join("idem.db")).await;
    let a = IdempotencyKey::new("ab", "c").unwrap();
    let b = IdempotencyKey::new("a", "bc").unwrap();
    let unscoped = IdempotencyKey::unscoped("abc").unwrap();

    let lease = acquired(store.begin(&a, &fingerprint(b"f"), ttl_ms(1000)).await.unwrap());
    store.complete(&lease, b"a", ttl_ms(1000)).await.unwrap();

    acquired(store.begin(&b, &fingerprint(b"g"), ttl_ms(1000)).await.unwrap());
    acquired(
        store
            .begin(&unscoped, &fingerprint(b"h"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    assert!(store.delete(&b).await.unwrap());
    assert!(matches!(
        store.lookup(&a).await.unwrap(),
        Some(Record::Completed(_))
    ));
}

#[tokio::test]
async fn handles_share_one_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    let (first, _clock) = manual_store(&path).await;
    let (second, _other_clock) = manual_store(&path).await;

    let lease = acquired(
        first
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    let seen = second
        .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
        .await
        .unwrap();
    assert!(matches!(seen, BeginOutcome::InProgress { .. }), "{seen:?}");

    second.complete(&lease, b"r", ttl_ms(1000)).await.unwrap();
    assert!(matches!(
        first.lookup(&key("k")).await.unwrap(),
        Some(Record::Completed(_))
    ));
}
