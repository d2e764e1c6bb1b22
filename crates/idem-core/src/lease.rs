//! Leases: the right to run the work for a key, guarded by a fencing token.

use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;
use crate::ttl::Ttl;

/// The right to run the work for a key, returned by a begin that acquired it.
///
/// The fencing token is never reused for the same key, also after release, delete or expiry, so a stale
/// lease (one whose claim lapsed and was taken over) can never complete, release or renew the new claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    key: IdempotencyKey,
    fingerprint: Fingerprint,
    fencing_token: u64,
    attempt: u32,
    ttl: Ttl,
}

impl Lease {
    /// Builds a lease. Backends call this from `begin`.
    pub fn new(
        key: IdempotencyKey,
        fingerprint: Fingerprint,
        fencing_token: u64,
        attempt: u32,
        ttl: Ttl,
    ) -> Self {
        Self {
            key,
            fingerprint,
            fencing_token,
            attempt,
            ttl,
        }
    }

    /// The key this lease holds.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    /// The fingerprint the claim was made with.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The fencing token. Pass it to downstream systems that can reject writes from stale holders.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// 1 for the first lease on a record, plus one per takeover of a lapsed claim.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The lease TTL the claim was acquired with.
    pub fn ttl(&self) -> Ttl {
        self.ttl
    }
}
