//! The database file: reopening, schema versions, corrupt rows, purge, locking and settings.

mod support;

use std::sync::Arc;
use std::time::Duration;

use idem_core::{BeginOutcome, Error, IdempotencyStore, InputField, ManualClock, Record};
use idem_sqlite::{SqliteStore, Synchronous};
use support::{GRACE, START, acquired, fingerprint, key, manual_store, row_count, ttl_ms};

#[tokio::test]
async fn completed_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let lease = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(60_000))
            .await
            .unwrap(),
    );
    store
        .complete(&lease, b"\x00stored\xff", ttl_ms(60_000))
        .await
        .unwrap();
    drop(store);

    let reopened = SqliteStore::open(&path).await.unwrap();
    match reopened
        .begin(&key("k"), &fingerprint(b"f"), ttl_ms(60_000))
        .await
        .unwrap()
    {
        BeginOutcome::Completed(done) => assert_eq!(done.response, b"\x00stored\xff"),
        other => panic!("expected Completed, got {other:?}"),
    }
}

#[tokio::test]
async fn fencing_tokens_increase_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let first = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(60_000))
            .await
            .unwrap(),
    );
    assert!(store.delete(&key("k")).await.unwrap());
    drop(store);

    let reopened = SqliteStore::open(&path).await.unwrap();
    let second = acquired(
        reopened
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(60_000))
            .await
            .unwrap(),
    );
    assert!(second.fencing_token() > first.fencing_token());
}

#[tokio::test]
async fn synchronous_full_opens() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::builder(dir.path().join("idem.db"))
        .synchronous(Synchronous::Full)
        .open()
        .await
        .unwrap();
    let lease = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(60_000))
            .await
            .unwrap(),
    );
    store.complete(&lease, b"r", ttl_ms(60_000)).await.unwrap();
}

#[tokio::test]
async fn newer_schema_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    drop(SqliteStore::open(&path).await.unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();

    let error = SqliteStore::open(&path).await.unwrap_err();
    assert!(
        matches!(error, Error::Unavailable { retryable: false, .. }),
        "{error}"
    );
    let message = format!("{error}");
    assert!(message.contains("schema version 99"), "{message}");
    assert!(message.contains("upgrade idem-sqlite"), "{message}");
}

#[tokio::test]
async fn foreign_file_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(
        &path,
        "this is not a database, just some text that is long enough",
    )
    .unwrap();

    let error = SqliteStore::open(&path).await.unwrap_err();
    assert!(
        matches!(error, Error::Unavailable { retryable: false, .. }),
        "{error}"
    );
    assert!(format!("{error}").contains("notes.txt"), "{error}");
}

#[tokio::test]
async fn missing_directory_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("idem.db");

    let error = SqliteStore::open(&path).await.unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error}");
    assert!(format!("{error}").contains("missing"), "{error}");
}

/// Corrupts the row of `key("k")` with `sql`, then checks that every reading operation reports it.
async fn assert_corrupt(sql: &str, reason_part: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    let (store, _clock) = manual_store(&path).await;
    let lease = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(60_000))
            .await
            .unwrap(),
    );
    if sql.contains("'completed'") || sql.contains("response") {
        store.complete(&lease, b"r", ttl_ms(60_000)).await.unwrap();
    }
    let raw = rusqlite::Connection::open(&path).unwrap();
    let changed = raw.execute(sql, [key("k").storage_key()]).unwrap();
    assert_eq!(changed, 1, "{sql}");

    let begin = store
        .begin(&key("k"), &fingerprint(b"f"), ttl_ms(60_000))
        .await
        .unwrap_err();
    match &begin {
        Error::CorruptRecord { key: label, reason } => {
            assert_eq!(label, &key("k").label(), "{sql}");
            assert!(reason.contains(reason_part), "{sql}: {reason}");
        }
        other => panic!("{sql}: expected CorruptRecord, got {other}"),
    }
    let lookup = store.lookup(&key("k")).await.unwrap_err();
    assert!(matches!(lookup, Error::CorruptRecord { .. }), "{sql}: {lookup}");
    let complete = store.complete(&lease, b"r", ttl_ms(60_000)).await.unwrap_err();
    assert!(
        matches!(complete, Error::CorruptRecord { .. }),
        "{sql}: {complete}"
    );

    // The message names the fix, and delete works on the corrupt row.
    assert!(format!("{begin}").contains("delete the record"), "{begin}");
    assert!(store.delete(&key("k")).await.unwrap(), "{sql}");
    acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(60_000))
            .await
            .unwrap(),
    );
}

#[tokio::test]
async fn corrupt_state_reported() {
    assert_corrupt(
        "UPDATE idem_records SET state = 'bogus' WHERE storage_key = ?1",
        "unknown state",
    )
    .await;
}

#[tokio::test]
async fn corrupt_fingerprint_reported() {
    assert_corrupt(
        "UPDATE idem_records SET fingerprint = zeroblob(65) WHERE storage_key = ?1",
        "65 bytes",
    )
    .await;
}

#[tokio::test]
async fn corrupt_null_deadline_reported() {
    assert_corrupt(
        "UPDATE idem_records SET lease_deadline = NULL WHERE storage_key = ?1",
        "lease_deadline holds NULL",
    )
    .await;
}

#[tokio::test]
async fn corrupt_null_response_reported() {
    assert_corrupt(
        "UPDATE idem_records SET response = NULL WHERE storage_key = ?1",
        "response holds NULL",
    )
    .await;
}

#[tokio::test]
async fn corrupt_token_reported() {
    assert_corrupt(
        "UPDATE idem_records SET fencing_token = -5 WHERE storage_key = ?1",
        "fencing_token -5",
    )
    .await;
}

#[tokio::test]
async fn purge_deletes_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    let clock = ManualClock::new(START);
    let store = SqliteStore::builder(&path)
        .clock(Arc::new(clock.clone()))
        .lapsed_claim_grace(GRACE)
        .purge_batch_size(10)
        .open()
        .await
        .unwrap();

    // 35 completed records with 1 s retention and 3 claims whose grace ends after 1 s: all expire.
    for i in 0..35 {
        let lease = acquired(
            store
                .begin(&key(&format!("done-{i}")), &fingerprint(b"f"), ttl_ms(1000))
                .await
                .unwrap(),
        );
        store.complete(&lease, b"r", ttl_ms(1000)).await.unwrap();
    }
    let short_grace = SqliteStore::builder(&path)
        .clock(Arc::new(clock.clone()))
        .lapsed_claim_grace(Duration::from_millis(500))
        .open()
        .await
        .unwrap();
    for i in 0..3 {
        acquired(
            short_grace
                .begin(&key(&format!("gone-{i}")), &fingerprint(b"f"), ttl_ms(500))
                .await
                .unwrap(),
        );
    }
    // Kept: completed records with 1 h retention, a live claim, and a lapsed claim within its grace.
    for i in 0..4 {
        let lease = acquired(
            store
                .begin(&key(&format!("kept-{i}")), &fingerprint(b"f"), ttl_ms(1000))
                .await
                .unwrap(),
        );
        store.complete(&lease, b"r", ttl_ms(3_600_000)).await.unwrap();
    }
    acquired(
        store
            .begin(&key("live"), &fingerprint(b"f"), ttl_ms(60_000))
            .await
            .unwrap(),
    );
    let lapsed = acquired(
        store
            .begin(&key("lapsed"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
    assert_eq!(row_count(&path), 44);

    clock.advance(Duration::from_millis(1000));
    assert_eq!(store.purge().await.unwrap(), 38);
    assert_eq!(row_count(&path), 6);
    assert_eq!(store.purge().await.unwrap(), 0);

    assert!(matches!(
        store.lookup(&key("kept-3")).await.unwrap(),
        Some(Record::Completed(_))
    ));
    assert!(matches!(
        store.lookup(&key("live")).await.unwrap(),
        Some(Record::InProgress(_))
    ));
    store.complete(&lapsed, b"late", ttl_ms(1000)).await.unwrap();
}

#[tokio::test]
async fn purge_exact_batch_multiple() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    let clock = ManualClock::new(START);
    let store = SqliteStore::builder(&path)
        .clock(Arc::new(clock.clone()))
        .purge_batch_size(5)
        .open()
        .await
        .unwrap();
    for i in 0..20 {
        let lease = acquired(
            store
                .begin(&key(&format!("k{i}")), &fingerprint(b"f"), ttl_ms(1000))
                .await
                .unwrap(),
        );
        store.complete(&lease, b"r", ttl_ms(1000)).await.unwrap();
    }

    clock.advance(Duration::from_millis(1000));
    assert_eq!(store.purge().await.unwrap(), 20);
    assert_eq!(row_count(&path), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_purge_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    let clock = ManualClock::new(START);
    let store = SqliteStore::builder(&path)
        .clock(Arc::new(clock.clone()))
        .purge_interval(Duration::from_millis(20))
        .open()
        .await
        .unwrap();
    for i in 0..5 {
        let lease = acquired(
            store
                .begin(&key(&format!("k{i}")), &fingerprint(b"f"), ttl_ms(1000))
                .await
                .unwrap(),
        );
        store.complete(&lease, b"r", ttl_ms(1000)).await.unwrap();
    }
    clock.advance(Duration::from_millis(1000));

    let mut rows = row_count(&path);
    for _ in 0..250 {
        if rows == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        rows = row_count(&path);
    }
    assert_eq!(rows, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_purge_stops_with_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    let store = SqliteStore::builder(&path)
        .purge_interval(Duration::from_millis(10))
        .open()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(store);

    // Leaving WAL needs the file to itself, so it succeeds only once the task no longer keeps the store's
    // connections open.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.busy_timeout(Duration::ZERO).unwrap();
    let mut mode = String::new();
    for _ in 0..250 {
        mode = raw
            .pragma_update_and_check(None, "journal_mode", "DELETE", |row| row.get::<_, String>(0))
            .unwrap_or_default();
        if mode == "delete" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mode, "delete");
}

#[tokio::test]
async fn lock_beyond_busy_timeout_is_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    let store = SqliteStore::builder(&path)
        .busy_timeout(Duration::from_millis(100))
        .open()
        .await
        .unwrap();
    let mut holder = rusqlite::Connection::open(&path).unwrap();
    let transaction = holder
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();

    let error = store
        .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Unavailable { retryable: true, .. }),
        "{error}"
    );
    assert!(error.is_retryable());

    transaction.rollback().unwrap();
    acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(1000))
            .await
            .unwrap(),
    );
}

#[tokio::test]
async fn memory_store_works() {
    let store = SqliteStore::in_memory().connections(4).open().await.unwrap();
    let other = SqliteStore::in_memory().open().await.unwrap();

    let lease = acquired(
        store
            .begin(&key("k"), &fingerprint(b"f"), ttl_ms(60_000))
            .await
            .unwrap(),
    );
    store.complete(&lease, b"r", ttl_ms(60_000)).await.unwrap();
    let replay = store
        .begin(&key("k"), &fingerprint(b"f"), ttl_ms(60_000))
        .await
        .unwrap();
    assert!(matches!(replay, BeginOutcome::Completed(_)), "{replay:?}");

    // Each in-memory store is private.
    assert_eq!(other.lookup(&key("k")).await.unwrap(), None);
}

#[tokio::test]
async fn invalid_settings_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    let cases = [
        ("empty path", SqliteStore::builder(""), "path is empty"),
        (
            "no connections",
            SqliteStore::builder(&path).connections(0),
            "connections is 0",
        ),
        (
            "too many connections",
            SqliteStore::builder(&path).connections(65),
            "connections is 65",
        ),
        (
            "busy timeout",
            SqliteStore::builder(&path).busy_timeout(Duration::from_secs(3_000_000)),
            "busy_timeout",
        ),
        (
            "grace",
            SqliteStore::builder(&path).lapsed_claim_grace(Duration::MAX),
            "lapsed_claim_grace",
        ),
        (
            "response limit",
            SqliteStore::builder(&path).max_response_bytes(2_000_000_000),
            "max_response_bytes",
        ),
        (
            "zero grace",
            SqliteStore::builder(&path).lapsed_claim_grace(Duration::ZERO),
            "lapsed_claim_grace is zero",
        ),
        (
            "zero response limit",
            SqliteStore::builder(&path).max_response_bytes(0),
            "max_response_bytes is zero",
        ),
        (
            "URI path",
            SqliteStore::builder("file:idem.db?mode=memory"),
            "reads as a URI",
        ),
        (
            "batch size",
            SqliteStore::builder(&path).purge_batch_size(0),
            "purge_batch_size is 0",
        ),
        (
            "interval",
            SqliteStore::builder(&path).purge_interval(Duration::ZERO),
            "purge_interval is zero",
        ),
    ];

    for (name, builder, expected) in cases {
        let error = builder.open().await.unwrap_err();
        match &error {
            Error::InvalidInput {
                field: InputField::Setting,
                reason,
            } => assert!(reason.contains(expected), "{name}: {reason}"),
            other => panic!("{name}: expected InvalidInput, got {other}"),
        }
    }
    // Nothing was created for the rejected settings.
    assert!(!path.exists());
}
