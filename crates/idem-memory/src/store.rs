//! The store: one mutex over the claim table, and a moka cache of completed records changed only under it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use idem_core::{
    BeginOutcome, ClaimRecord, Clock, Error, Fingerprint, IdempotencyKey, IdempotencyStore, Lease, Record,
    Result, Ttl, async_trait,
};

use crate::builder::MemoryStoreBuilder;
use crate::claims::{Claim, ClaimTable};
use crate::completed::{Completed, CompletedCache, build_cache};

const BACKEND: &str = "memory";

/// Records that purge, or a begin on a full store, removes per lock acquisition, so that other callers
/// wait for at most one batch.
const RECLAIM_BATCH: usize = 1024;

/// Validated settings, built by [`MemoryStoreBuilder`].
pub(crate) struct Settings {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) max_claims: u64,
    pub(crate) max_completed_bytes: u64,
    pub(crate) lapsed_claim_grace: Duration,
    pub(crate) max_response_bytes: usize,
}

/// An in-memory idempotency-key store. See the [crate docs](crate) for its clock, bounds and durability.
///
/// Cloning is cheap, and clones share one state: a record written through one clone is seen by all.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    /// Every state change of a key happens under this lock: claim table changes, and also every insert or
    /// removal in `completed`, so that begin sees claims and completed records of a key as one state.
    /// It is never held across an `.await`.
    state: Mutex<State>,
    /// Completed records by storage key. Only moka's size eviction changes it without holding `state`.
    completed: CompletedCache,
    evicted_completed: Arc<AtomicU64>,
}

struct State {
    claims: ClaimTable,
    /// The last fencing token handed out. One counter serves every key, so tokens increase store-wide.
    last_fencing_token: u64,
}

impl State {
    fn next_fencing_token(&mut self) -> Result<u64> {
        let token = self.last_fencing_token.checked_add(1).ok_or_else(|| {
            Error::unavailable(
                BACKEND,
                "begin",
                false,
                "all 2^64 fencing tokens were handed out; create a new store",
            )
        })?;
        self.last_fencing_token = token;
        Ok(token)
    }
}

/// The decision of a begin, taken under the lock. Responses are copied out of `Completed` after the lock is
/// released.
enum Decision {
    Acquired(Lease),
    TookOver { lease: Lease, previous_token: u64 },
    Completed(Arc<Completed>),
    InProgress { retry_after: Duration, attempt: u32 },
    Mismatch,
}

impl MemoryStore {
    /// Creates a store with the default settings of [`MemoryStoreBuilder`].
    pub fn new() -> Self {
        Self::builder().build().expect("the default settings are valid")
    }

    /// Starts a builder with the default settings.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder::new()
    }

    pub(crate) fn from_settings(settings: Settings) -> Self {
        let evicted_completed = Arc::new(AtomicU64::new(0));
        let completed = build_cache(
            settings.max_completed_bytes,
            Arc::clone(&settings.clock),
            Arc::clone(&evicted_completed),
        );
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    claims: ClaimTable::new(settings.lapsed_claim_grace),
                    last_fencing_token: 0,
                }),
                settings,
                completed,
                evicted_completed,
            }),
        }
    }

    /// Returns how many completed records were evicted before their retention ended, because their total
    /// weight reached `max_completed_bytes`. A retry with such a key runs its work again.
    ///
    /// It first runs moka's pending maintenance, so evictions of records inserted before the call are counted.
    pub fn evicted_completed(&self) -> u64 {
        self.inner.completed.run_pending_tasks();
        self.inner.evicted_completed.load(Ordering::Relaxed)
    }

    /// Returns how many claims the store contains now, live or lapsed. Claims past their grace period count
    /// until purge, or a begin on a full store, reclaims them.
    pub fn claim_count(&self) -> u64 {
        let state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.claims.len() as u64
    }

    fn lock(&self, operation: &'static str) -> Result<MutexGuard<'_, State>> {
        // A poisoned lock means a thread panicked in the middle of a state change. Fail closed rather than
        // return results from a state that may be half changed.
        self.inner.state.lock().map_err(|_| {
            Error::unavailable(
                BACKEND,
                operation,
                false,
                "a thread panicked while changing the store's state; restart the process",
            )
        })
    }

    fn now(&self) -> Duration {
        self.inner.settings.clock.now()
    }

    /// Returns the completed record of `storage_key` if it is within retention at `now`, and removes it if
    /// its retention has ended. Call it under the lock.
    fn retained_completed(&self, storage_key: &str, now: Duration) -> Option<Arc<Completed>> {
        let record = self.inner.completed.get(storage_key)?;
        if record.is_retained(now) {
            return Some(record);
        }
        self.inner.completed.invalidate(storage_key);
        None
    }

    fn begin_locked(
        &self,
        state: &mut State,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease_ttl: Ttl,
        now: Duration,
    ) -> Result<Decision> {
        let storage_key = key.storage_key();

        if let Some(claim) = state.claims.visible(&storage_key, now).cloned() {
            if claim.fingerprint != *fingerprint {
                return Ok(Decision::Mismatch);
            }
            if now < claim.lease_deadline {
                return Ok(Decision::InProgress {
                    retry_after: claim.lease_deadline - now,
                    attempt: claim.attempt,
                });
            }

            // The claim lapsed: take it over. Its old token stops matching, so the old lease is dead.
            let token = state.next_fencing_token()?;
            let attempt = claim.attempt.saturating_add(1);
            state.claims.insert(
                storage_key,
                Claim {
                    fingerprint: claim.fingerprint,
                    fencing_token: token,
                    attempt,
                    created_at: claim.created_at,
                    lease_deadline: deadline(now, lease_ttl),
                },
            );
            return Ok(Decision::TookOver {
                lease: Lease::new(key.clone(), fingerprint.clone(), token, attempt, lease_ttl),
                previous_token: claim.fencing_token,
            });
        }

        if let Some(record) = self.retained_completed(&storage_key, now) {
            if record.fingerprint != *fingerprint {
                return Ok(Decision::Mismatch);
            }
            return Ok(Decision::Completed(record));
        }

        let limit = self.inner.settings.max_claims;
        if state.claims.len() as u64 >= limit {
            state.claims.reclaim_expired(now, RECLAIM_BATCH);
            let claims = state.claims.len() as u64;
            if claims >= limit {
                return Err(Error::StoreFull { claims, limit });
            }
        }

        let token = state.next_fencing_token()?;
        state.claims.insert(
            storage_key,
            Claim {
                fingerprint: fingerprint.clone(),
                fencing_token: token,
                attempt: 1,
                created_at: now,
                lease_deadline: deadline(now, lease_ttl),
            },
        );
        Ok(Decision::Acquired(Lease::new(
            key.clone(),
            fingerprint.clone(),
            token,
            1,
            lease_ttl,
        )))
    }

    /// Removes up to one batch of claims past their grace period, and returns how many it removed.
    fn purge_claim_batch(&self) -> Result<usize> {
        let mut state = self.lock("purge")?;
        let now = self.now();
        Ok(state.claims.reclaim_expired(now, RECLAIM_BATCH))
    }

    /// Removes the completed records among `keys` whose retention has ended, and returns how many it removed.
    fn purge_completed_batch(&self, keys: &[Arc<String>]) -> Result<u64> {
        let _state = self.lock("purge")?;
        let now = self.now();
        let mut removed = 0;
        for key in keys {
            let expired = self
                .inner
                .completed
                .get(key.as_str())
                .is_some_and(|record| !record.is_retained(now));
            if expired && self.inner.completed.remove(key.as_str()).is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Returns the instant `ttl` after `now`. A sum beyond `Duration::MAX` cannot come from a [`Ttl`] (at most
/// 100 years) on a clock that counts from its creation, but would read as never rather than overflow.
fn deadline(now: Duration, ttl: Ttl) -> Duration {
    now.checked_add(ttl.as_duration()).unwrap_or(Duration::MAX)
}

fn lease_lost(lease: &Lease) -> Error {
    Error::LeaseLost {
        key: lease.key().label(),
        fencing_token: lease.fencing_token(),
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

// Shows settings and counters only: a derived Debug would walk the cache and print stored responses.
impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.inner.settings;
        f.debug_struct("MemoryStore")
            .field("clock", &settings.clock)
            .field("max_claims", &settings.max_claims)
            .field("max_completed_bytes", &settings.max_completed_bytes)
            .field("lapsed_claim_grace", &settings.lapsed_claim_grace)
            .field("max_response_bytes", &settings.max_response_bytes)
            .field(
                "evicted_completed",
                &self.inner.evicted_completed.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn begin(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease_ttl: Ttl,
    ) -> Result<BeginOutcome> {
        let (result, now) = {
            let mut state = self.lock("begin")?;
            let now = self.now();
            (
                self.begin_locked(&mut state, key, fingerprint, lease_ttl, now),
                now,
            )
        };

        let decision = match result {
            Ok(decision) => decision,
            Err(error) => {
                tracing::debug!(key = %key.label(), %error, "begin failed");
                return Err(error);
            }
        };
        Ok(match decision {
            Decision::Acquired(lease) => {
                tracing::debug!(key = %key.label(), fencing_token = lease.fencing_token(), "begin acquired");
                BeginOutcome::Acquired(lease)
            }
            Decision::TookOver {
                lease,
                previous_token,
            } => {
                tracing::warn!(
                    key = %key.label(),
                    attempt = lease.attempt(),
                    fencing_token = lease.fencing_token(),
                    previous_fencing_token = previous_token,
                    "took over a lapsed claim; the previous lease is lost"
                );
                BeginOutcome::Acquired(lease)
            }
            Decision::Completed(record) => {
                tracing::debug!(key = %key.label(), "begin found a completed record");
                BeginOutcome::Completed(record.to_record(now))
            }
            Decision::InProgress { retry_after, attempt } => {
                tracing::debug!(key = %key.label(), ?retry_after, attempt, "begin found a live claim");
                BeginOutcome::InProgress { retry_after, attempt }
            }
            Decision::Mismatch => {
                tracing::debug!(key = %key.label(), "begin found a record with another fingerprint");
                BeginOutcome::FingerprintMismatch
            }
        })
    }

    async fn complete(&self, lease: &Lease, response: &[u8], retention: Ttl) -> Result<()> {
        let limit = self.inner.settings.max_response_bytes;
        if response.len() > limit {
            tracing::debug!(key = %lease.key().label(), size = response.len(), limit, "complete rejected an oversized response");
            return Err(Error::ResponseTooLarge {
                size: response.len(),
                limit,
            });
        }

        let storage_key = lease.key().storage_key();
        let token = lease.fencing_token();
        // Copy the response and hash the key before taking the lock, to keep the critical section short.
        let response = response.to_vec();
        let label = lease.key().label();

        let mut state = self.lock("complete")?;
        let now = self.now();

        if let Some(claim) = state.claims.take_held(&storage_key, token, now) {
            let record = Completed {
                label,
                fingerprint: claim.fingerprint,
                response,
                fencing_token: token,
                completed_at: now,
                retention_deadline: deadline(now, retention),
            };
            self.inner.completed.insert(storage_key, Arc::new(record));
            drop(state);
            tracing::debug!(key = %lease.key().label(), fencing_token = token, "completed");
            return Ok(());
        }

        // A client library may retry a complete that succeeded: the same lease and response succeed again.
        let repeated = self
            .retained_completed(&storage_key, now)
            .is_some_and(|record| record.fencing_token == token && record.response == response);
        drop(state);
        if repeated {
            tracing::debug!(key = %lease.key().label(), fencing_token = token, "complete repeated with the same response");
            return Ok(());
        }
        tracing::debug!(key = %lease.key().label(), fencing_token = token, "complete found the lease lost");
        Err(lease_lost(lease))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let storage_key = lease.key().storage_key();
        let token = lease.fencing_token();

        let mut state = self.lock("release")?;
        let now = self.now();
        let holder = state
            .claims
            .visible(&storage_key, now)
            .map(|claim| claim.fencing_token);
        let result = match holder {
            Some(holder) if holder == token => {
                state.claims.remove(&storage_key);
                Ok("released")
            }
            Some(_) => Err(lease_lost(lease)),
            None if self.retained_completed(&storage_key, now).is_some() => Err(lease_lost(lease)),
            None => Ok("nothing to release"),
        };
        drop(state);

        match &result {
            Ok(outcome) => {
                tracing::debug!(key = %lease.key().label(), fencing_token = token, "release: {outcome}")
            }
            Err(_) => {
                tracing::debug!(key = %lease.key().label(), fencing_token = token, "release found the lease lost")
            }
        }
        result.map(|_| ())
    }

    async fn renew(&self, lease: &Lease, lease_ttl: Ttl) -> Result<Duration> {
        let storage_key = lease.key().storage_key();
        let token = lease.fencing_token();

        let mut state = self.lock("renew")?;
        let now = self.now();
        let Some(mut claim) = state.claims.take_held(&storage_key, token, now) else {
            drop(state);
            tracing::debug!(key = %lease.key().label(), fencing_token = token, "renew found the lease lost");
            return Err(lease_lost(lease));
        };
        claim.lease_deadline = deadline(now, lease_ttl);
        let remaining = claim.lease_deadline.saturating_sub(now);
        state.claims.insert(storage_key, claim);
        drop(state);

        tracing::debug!(key = %lease.key().label(), fencing_token = token, ?remaining, "renewed");
        Ok(remaining)
    }

    async fn lookup(&self, key: &IdempotencyKey) -> Result<Option<Record>> {
        let storage_key = key.storage_key();

        let mut state = self.lock("lookup")?;
        let now = self.now();
        let claim = state.claims.visible(&storage_key, now).cloned();
        let completed = match claim {
            Some(_) => None,
            None => self.retained_completed(&storage_key, now),
        };
        drop(state);

        let record = match (claim, completed) {
            (Some(claim), _) => Some(Record::InProgress(ClaimRecord::new(
                claim.fingerprint,
                claim.fencing_token,
                claim.attempt,
                claim.lease_deadline.saturating_sub(now),
                now.saturating_sub(claim.created_at),
            ))),
            (None, Some(completed)) => Some(Record::Completed(completed.to_record(now))),
            (None, None) => None,
        };
        tracing::debug!(key = %key.label(), found = record.is_some(), "lookup");
        Ok(record)
    }

    async fn delete(&self, key: &IdempotencyKey) -> Result<bool> {
        let storage_key = key.storage_key();

        let mut state = self.lock("delete")?;
        let now = self.now();
        // Records that already count as absent are removed too, but do not make the return value true.
        let claim_existed = state.claims.visible(&storage_key, now).is_some();
        state.claims.remove(&storage_key);
        let completed_existed = self
            .inner
            .completed
            .remove(storage_key.as_str())
            .is_some_and(|record| record.is_retained(now));
        drop(state);

        let existed = claim_existed || completed_existed;
        tracing::debug!(key = %key.label(), existed, "delete");
        Ok(existed)
    }

    async fn purge(&self) -> Result<u64> {
        let mut removed = 0u64;

        loop {
            let batch = self.purge_claim_batch()?;
            removed += batch as u64;
            if batch < RECLAIM_BATCH {
                break;
            }
        }

        // Collect candidates without the lock; each batch is checked again under it.
        let now = self.now();
        let mut candidates = Vec::with_capacity(RECLAIM_BATCH);
        for (key, record) in self.inner.completed.iter() {
            if record.is_retained(now) {
                continue;
            }
            candidates.push(key);
            if candidates.len() == RECLAIM_BATCH {
                removed += self.purge_completed_batch(&candidates)?;
                candidates.clear();
            }
        }
        if !candidates.is_empty() {
            removed += self.purge_completed_batch(&candidates)?;
        }

        tracing::debug!(removed, "purge");
        Ok(removed)
    }

    fn max_response_bytes(&self) -> usize {
        self.inner.settings.max_response_bytes
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}
