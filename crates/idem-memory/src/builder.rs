//! Settings of a [`MemoryStore`], with their defaults.

use std::sync::Arc;
use std::time::Duration;

use idem_core::{
    Clock, DEFAULT_LAPSED_CLAIM_GRACE, DEFAULT_MAX_RESPONSE_BYTES, Error, InputField, MonotonicClock, Result,
};

use crate::store::{MemoryStore, Settings};

/// Default limit on claims held at once: 1 000 000.
pub const DEFAULT_MAX_CLAIMS: u64 = 1_000_000;

/// Default limit on the weight of completed records: 256 MiB.
pub const DEFAULT_MAX_COMPLETED_BYTES: u64 = 256 * 1024 * 1024;

/// Builder for [`MemoryStore`]. Each setter states its default; [`MemoryStoreBuilder::build`] validates.
#[derive(Debug)]
pub struct MemoryStoreBuilder {
    clock: Arc<dyn Clock>,
    max_claims: u64,
    max_completed_bytes: u64,
    lapsed_claim_grace: Duration,
    max_response_bytes: usize,
}

impl MemoryStoreBuilder {
    pub(crate) fn new() -> Self {
        Self {
            clock: Arc::new(MonotonicClock::new()),
            max_claims: DEFAULT_MAX_CLAIMS,
            max_completed_bytes: DEFAULT_MAX_COMPLETED_BYTES,
            lapsed_claim_grace: DEFAULT_LAPSED_CLAIM_GRACE,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// Sets the clock that every deadline of the store reads. Default: a [`MonotonicClock`] started when the
    /// builder was created. Tests pass a [`idem_core::ManualClock`] to step time exactly.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets how many claims (live or lapsed) the store contains at once. Default [`DEFAULT_MAX_CLAIMS`].
    /// Claims are never evicted, so a begin that needs a new claim beyond this limit fails with
    /// [`Error::StoreFull`].
    pub fn max_claims(mut self, limit: u64) -> Self {
        self.max_claims = limit;
        self
    }

    /// Sets the total weight of completed records, in bytes of storage key, fingerprint and response.
    /// Default [`DEFAULT_MAX_COMPLETED_BYTES`]. Beyond it the least recently used completed records are
    /// evicted, also before their retention ends; see [`MemoryStore::evicted_completed`].
    pub fn max_completed_bytes(mut self, limit: u64) -> Self {
        self.max_completed_bytes = limit;
        self
    }

    /// Sets how long a lapsed claim stays after its lease deadline. Default
    /// [`idem_core::DEFAULT_LAPSED_CLAIM_GRACE`]. Until the period ends, the holder can still complete the
    /// claim if nobody took it over, and a begin takes it over with the next attempt number. After it, the
    /// claim counts as absent.
    pub fn lapsed_claim_grace(mut self, grace: Duration) -> Self {
        self.lapsed_claim_grace = grace;
        self
    }

    /// Sets the largest response that complete accepts, in bytes. Default
    /// [`idem_core::DEFAULT_MAX_RESPONSE_BYTES`] (1 MiB).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Validates the settings and builds the store.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the setting when a limit or the grace period is zero.
    pub fn build(self) -> Result<MemoryStore> {
        if self.max_claims == 0 {
            return Err(zero_setting(
                "max_claims",
                "pass the largest number of claims to hold at once, such as 1000000",
            ));
        }
        if self.max_completed_bytes == 0 {
            return Err(zero_setting(
                "max_completed_bytes",
                "pass the memory budget for completed responses in bytes, such as 268435456 (256 MiB)",
            ));
        }
        if self.lapsed_claim_grace.is_zero() {
            return Err(zero_setting(
                "lapsed_claim_grace",
                "pass at least 1 ms so that the holder of a lapsed claim can still complete it",
            ));
        }
        if self.lapsed_claim_grace > idem_core::Ttl::MAX.as_duration() {
            return Err(Error::invalid(
                InputField::Setting,
                format!(
                    "lapsed_claim_grace of {:?} is longer than the maximum TTL of 100 years; pass a shorter duration",
                    self.lapsed_claim_grace
                ),
            ));
        }
        if self.max_response_bytes == 0 {
            return Err(zero_setting(
                "max_response_bytes",
                "pass the largest response to store in bytes, such as 1048576 (1 MiB)",
            ));
        }

        Ok(MemoryStore::from_settings(Settings {
            clock: self.clock,
            max_claims: self.max_claims,
            max_completed_bytes: self.max_completed_bytes,
            lapsed_claim_grace: self.lapsed_claim_grace,
            max_response_bytes: self.max_response_bytes,
        }))
    }
}

fn zero_setting(name: &str, fix: &str) -> Error {
    Error::invalid(InputField::Setting, format!("{name} is zero; {fix}"))
}

impl Default for MemoryStoreBuilder {
    fn default() -> Self {
        Self::new()
    }
}
