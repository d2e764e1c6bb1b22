//! What a store keeps per key, as `lookup` reports it.

use std::fmt;
use std::time::Duration;

use crate::fingerprint::Fingerprint;

/// A record as [`crate::IdempotencyStore::lookup`] reports it. Times are durations on the backend's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Record {
    /// A claim: some caller holds, or held, the lease to run the work.
    InProgress(ClaimRecord),
    /// A stored response that retries replay.
    Completed(CompletedRecord),
}

/// An in-progress record: a live claim before its lease deadline, or a lapsed claim at or after it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimRecord {
    /// The fingerprint of the request that made the claim.
    pub fingerprint: Fingerprint,
    /// The fencing token of the current lease.
    pub fencing_token: u64,
    /// 1 for the first lease, plus one per takeover of a lapsed claim.
    pub attempt: u32,
    /// Time until the lease deadline; zero when the claim has lapsed.
    pub lease_remaining: Duration,
    /// Time since the first attempt created the record.
    pub age: Duration,
}

impl ClaimRecord {
    /// Builds a claim record. Backends call this; callers read the fields.
    pub fn new(
        fingerprint: Fingerprint,
        fencing_token: u64,
        attempt: u32,
        lease_remaining: Duration,
        age: Duration,
    ) -> Self {
        Self {
            fingerprint,
            fencing_token,
            attempt,
            lease_remaining,
            age,
        }
    }

    /// Whether the lease deadline is still ahead, so that a begin with the same fingerprint is in progress
    /// rather than a takeover.
    pub fn is_live(&self) -> bool {
        !self.lease_remaining.is_zero()
    }
}

/// A completed record within its retention period.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompletedRecord {
    /// The fingerprint of the request that ran.
    pub fingerprint: Fingerprint,
    /// The stored response, byte for byte.
    pub response: Vec<u8>,
    /// Time until the retention deadline; always above zero, because expired records are never returned.
    pub retention_remaining: Duration,
    /// Time since the work was completed.
    pub age: Duration,
}

impl CompletedRecord {
    /// Builds a completed record. Backends call this; callers read the fields.
    pub fn new(
        fingerprint: Fingerprint,
        response: Vec<u8>,
        retention_remaining: Duration,
        age: Duration,
    ) -> Self {
        Self {
            fingerprint,
            response,
            retention_remaining,
            age,
        }
    }
}

// Responses can be large and can hold personal data, so Debug shows only their size.
impl fmt::Debug for CompletedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletedRecord")
            .field("fingerprint", &self.fingerprint)
            .field("response_bytes", &self.response.len())
            .field("retention_remaining", &self.retention_remaining)
            .field("age", &self.age)
            .finish()
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::InProgress(claim) if claim.is_live() => {
                write!(f, "live claim (attempt {})", claim.attempt)
            }
            Record::InProgress(claim) => write!(f, "lapsed claim (attempt {})", claim.attempt),
            Record::Completed(done) => write!(f, "completed record ({} response bytes)", done.response.len()),
        }
    }
}
