//! The store trait that every backend implements.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;
use crate::lease::Lease;
use crate::record::{CompletedRecord, Record};
use crate::ttl::Ttl;

/// Default limit on a stored response, in bytes: 1 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Default grace period of a lapsed claim: 1 hour. Until it ends, the holder of a lapsed lease can still
/// complete its work if no other caller took the claim over. After it the claim disappears.
pub const DEFAULT_LAPSED_CLAIM_GRACE: Duration = Duration::from_secs(60 * 60);

/// The result of [`IdempotencyStore::begin`]: exactly one of four answers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BeginOutcome {
    /// The caller holds the lease and runs the work: there was no record, the completed record was past its
    /// retention deadline, or a lapsed claim with the same fingerprint was taken over.
    Acquired(Lease),
    /// A completed record with the same fingerprint is within retention; replay its response.
    Completed(CompletedRecord),
    /// A live claim with the same fingerprint is held by another caller.
    InProgress {
        /// Time until that claim's lease deadline, on the backend's clock.
        retry_after: Duration,
        /// The attempt number of that claim.
        attempt: u32,
    },
    /// A record (claim or completed) exists with another fingerprint. Nothing was changed.
    FingerprintMismatch,
}

/// An idempotency-key store. See the [crate docs](crate) for the rules every implementation meets.
///
/// The trait is dyn-compatible: share one store as `Arc<dyn IdempotencyStore>`. Implementations must be
/// safe to call from many tasks at once and must not block the async runtime's threads (our SQLite store
/// runs its calls on Tokio's blocking pool for that reason).
#[async_trait]
pub trait IdempotencyStore: Send + Sync + Debug {
    /// Claims `key` for `fingerprint`, or reports why it cannot.
    ///
    /// Precedence: a record with another fingerprint gives [`BeginOutcome::FingerprintMismatch`] whatever its
    /// state; then a completed record within retention gives [`BeginOutcome::Completed`]; then a live claim
    /// gives [`BeginOutcome::InProgress`]; otherwise the caller acquires (a takeover when a lapsed claim
    /// existed: attempt + 1 and a new fencing token).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] or [`crate::Error::CorruptRecord`] when the store cannot answer (never
    /// acquired in that case), [`crate::Error::StoreFull`] when a bounded store holds its maximum of claims.
    async fn begin(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease_ttl: Ttl,
    ) -> Result<BeginOutcome>;

    /// Stores `response` for the lease's key and keeps it for `retention`.
    ///
    /// Succeeds while the record is in progress under this lease's fencing token, including a lapsed claim
    /// that nobody took over. Repeating a successful call with the same lease and response succeeds again and
    /// changes nothing.
    ///
    /// # Errors
    /// [`crate::Error::LeaseLost`] when the claim was taken over, released, completed with another response or
    /// is gone; [`crate::Error::ResponseTooLarge`] when `response` exceeds
    /// [`IdempotencyStore::max_response_bytes`] (the lease stays held).
    async fn complete(&self, lease: &Lease, response: &[u8], retention: Ttl) -> Result<()>;

    /// Removes the claim held under this lease, so that a retry runs at once. Succeeds when the record is
    /// already gone.
    ///
    /// # Errors
    /// [`crate::Error::LeaseLost`] when another lease or a completed record now holds the key.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// Moves the lease deadline to `lease_ttl` from now and returns the new remaining time.
    ///
    /// # Errors
    /// [`crate::Error::LeaseLost`] under the same rule as [`IdempotencyStore::complete`].
    async fn renew(&self, lease: &Lease, lease_ttl: Ttl) -> Result<Duration>;

    /// Returns the key's record, or `None`. Never returns a completed record past its retention deadline.
    async fn lookup(&self, key: &IdempotencyKey) -> Result<Option<Record>>;

    /// Removes any record of `key` (an operator's action) and returns whether one existed.
    async fn delete(&self, key: &IdempotencyKey) -> Result<bool>;

    /// Reclaims expired records (completed past retention, claims past their grace period) in bounded batches
    /// and returns how many were removed. Backends that expire records by themselves return 0.
    async fn purge(&self) -> Result<u64>;

    /// The largest response [`IdempotencyStore::complete`] accepts, in bytes.
    fn max_response_bytes(&self) -> usize {
        DEFAULT_MAX_RESPONSE_BYTES
    }

    /// A short name for logs and errors, such as `sqlite`.
    fn backend_name(&self) -> &'static str;
}
