//! Completed records, kept in a moka cache bounded by weight in bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idem_core::{Clock, CompletedRecord, Fingerprint, KeyLabel};
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;

/// A stored response. Times are readings of the store's clock. It has no `Debug`, so that response bytes
/// cannot reach a log by accident.
pub(crate) struct Completed {
    /// The key's loggable form, for the eviction warning.
    pub(crate) label: KeyLabel,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) response: Vec<u8>,
    /// The token of the lease that completed the record, so that a repeated complete is recognised.
    pub(crate) fencing_token: u64,
    pub(crate) completed_at: Duration,
    /// The record is replayed before this instant and absent from it on.
    pub(crate) retention_deadline: Duration,
}

impl Completed {
    pub(crate) fn is_retained(&self, now: Duration) -> bool {
        now < self.retention_deadline
    }

    pub(crate) fn to_record(&self, now: Duration) -> CompletedRecord {
        CompletedRecord::new(
            self.fingerprint.clone(),
            self.response.clone(),
            self.retention_deadline.saturating_sub(now),
            now.saturating_sub(self.completed_at),
        )
    }
}

pub(crate) type CompletedCache = Cache<String, Arc<Completed>>;

/// Builds the cache of completed records.
///
/// The cache uses LRU rather than moka's default TinyLFU. TinyLFU admits a new entry into a full cache only
/// when its key was seen more often than the victim's, but a record that was just completed is the one a
/// late retry most likely requests. Time-based expiry stays off, because moka reads the real clock and not
/// the store's.
pub(crate) fn build_cache(max_bytes: u64, clock: Arc<dyn Clock>, evicted: Arc<AtomicU64>) -> CompletedCache {
    Cache::builder()
        .max_capacity(max_bytes)
        .eviction_policy(EvictionPolicy::lru())
        .weigher(|key: &String, record: &Arc<Completed>| weight(key, record))
        .eviction_listener(move |_key, record: Arc<Completed>, cause| {
            // Replaced and Explicit removals are the store's own doing; Expired cannot happen without a TTL.
            // A record evicted after its retention ended was absent already, so only earlier ones count.
            if cause != RemovalCause::Size || !record.is_retained(clock.now()) {
                return;
            }
            evicted.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                key = %record.label,
                retention_remaining = ?record.retention_deadline.saturating_sub(clock.now()),
                "completed record evicted before its retention ended, because the store reached max_completed_bytes; a retry with this key will run again"
            );
        })
        .build()
}

/// Bytes a completed record weighs: its storage key, fingerprint and response. Saturates at `u32::MAX`,
/// which is moka's largest weight.
fn weight(key: &str, record: &Completed) -> u32 {
    let bytes = key.len() + record.fingerprint.as_bytes().len() + record.response.len();
    u32::try_from(bytes).unwrap_or(u32::MAX)
}
