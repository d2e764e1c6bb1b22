//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use idem_core::{BeginOutcome, Fingerprint, IdempotencyKey, Lease, ManualClock, Ttl};
use idem_sqlite::SqliteStore;

/// Start of the manual clock: an arbitrary wall-clock-like reading in milliseconds.
pub const START: Duration = Duration::from_millis(1_700_000_000_000);
/// Grace period of the stores built by [`manual_store`].
pub const GRACE: Duration = Duration::from_secs(10);

pub fn key(name: &str) -> IdempotencyKey {
    IdempotencyKey::new("tenant-a", name).unwrap()
}

pub fn fingerprint(bytes: &[u8]) -> Fingerprint {
    Fingerprint::new(bytes.to_vec()).unwrap()
}

pub fn ttl_ms(millis: u64) -> Ttl {
    Ttl::from_millis(millis).unwrap()
}

/// Opens a store on `path` whose clock only moves when the test moves it.
pub async fn manual_store(path: &Path) -> (SqliteStore, ManualClock) {
    let clock = ManualClock::new(START);
    let store = SqliteStore::builder(path)
        .clock(Arc::new(clock.clone()))
        .lapsed_claim_grace(GRACE)
        .open()
        .await
        .unwrap();
    (store, clock)
}

/// Returns the lease of an acquired outcome and fails the test otherwise.
pub fn acquired(outcome: BeginOutcome) -> Lease {
    match outcome {
        BeginOutcome::Acquired(lease) => lease,
        other => panic!("expected Acquired, got {other:?}"),
    }
}

/// Counts the rows of the records table through a separate raw connection.
pub fn row_count(path: &Path) -> i64 {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection
        .query_row("SELECT count(*) FROM idem_records", [], |row| row.get(0))
        .unwrap()
}
