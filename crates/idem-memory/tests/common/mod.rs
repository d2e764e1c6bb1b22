//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use idem_core::{BeginOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, Lease, ManualClock, Ttl};
use idem_memory::{MemoryStore, MemoryStoreBuilder};

/// Start of the manual clock in every test, far from zero so that subtractions would show up.
pub const START: Duration = Duration::from_secs(1_000);

pub fn key(name: &str) -> IdempotencyKey {
    IdempotencyKey::new("tenant-a", name).unwrap()
}

pub fn fingerprint(bytes: &[u8]) -> Fingerprint {
    Fingerprint::new(bytes.to_vec()).unwrap()
}

pub fn ttl_ms(millis: u64) -> Ttl {
    Ttl::from_millis(millis).unwrap()
}

pub fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Returns a builder whose clock is a manual clock at [`START`].
pub fn manual_builder() -> (MemoryStoreBuilder, ManualClock) {
    let clock = ManualClock::new(START);
    let builder = MemoryStore::builder().clock(Arc::new(clock.clone()));
    (builder, clock)
}

pub fn manual_store() -> (MemoryStore, ManualClock) {
    let (builder, clock) = manual_builder();
    (builder.build().unwrap(), clock)
}

/// Begins on `key` and returns the lease, failing the test on any other outcome.
pub async fn acquire(
    store: &MemoryStore,
    key: &IdempotencyKey,
    fingerprint: &Fingerprint,
    ttl: Ttl,
) -> Lease {
    match store.begin(key, fingerprint, ttl).await.unwrap() {
        BeginOutcome::Acquired(lease) => lease,
        other => panic!("expected Acquired, got {other:?}"),
    }
}
