//! The start of every case: a fresh store, its clock, and checked shorthands for the store calls.

use std::sync::Arc;
use std::time::Duration;

use idem_core::{
    BeginOutcome, ClaimRecord, CompletedRecord, Error, Fingerprint, IdempotencyKey, IdempotencyStore, Lease,
    ManualClock, Record, Ttl,
};

use crate::backend::{Backend, Capabilities};

/// Lease TTL of claims that must stay live through a case: long enough for any slow backend.
pub(crate) const LONG_MS: u64 = 10 * 60 * 1000;
/// Retention of records that must stay through a case.
pub(crate) const RETAIN_MS: u64 = 24 * 60 * 60 * 1000;
/// Short TTL of expiry cases on an injected clock, which moves exactly to the deadline.
const SHORT_CLOCK_MS: u64 = 2_000;
/// Short TTL of expiry cases on a real clock (a server's, for example), and how far past it they sleep.
const SHORT_REAL_MS: u64 = 300;
const REAL_MARGIN_MS: u64 = 200;

/// The scope of every key the cases make, unless a case is about scopes.
pub(crate) const SCOPE: &str = "conformance";

pub(crate) fn ttl(millis: u64) -> Ttl {
    Ttl::from_millis(millis).expect("the suite's TTLs are valid")
}

pub(crate) fn long() -> Ttl {
    ttl(LONG_MS)
}

pub(crate) fn retain() -> Ttl {
    ttl(RETAIN_MS)
}

/// Returns a 32-byte fingerprint filled with `byte`.
pub(crate) fn fp(byte: u8) -> Fingerprint {
    Fingerprint::new(vec![byte; 32]).expect("32 bytes is within the fingerprint limit")
}

pub(crate) fn key(name: &str) -> IdempotencyKey {
    IdempotencyKey::new(SCOPE, name).expect("the suite's keys are valid")
}

/// Asserts that `result` is a lease-lost error for `lease`.
#[track_caller]
pub(crate) fn assert_lease_lost<T: std::fmt::Debug>(result: Result<T, Error>, lease: &Lease, what: &str) {
    match result {
        Err(Error::LeaseLost { fencing_token, .. }) => assert_eq!(
            fencing_token,
            lease.fencing_token(),
            "{what}: the lease-lost error must carry the fencing token of the lost lease"
        ),
        other => panic!("{what}: expected Error::LeaseLost, got {other:?}"),
    }
}

pub(crate) struct Env {
    backend: Arc<dyn Backend>,
    pub(crate) store: Arc<dyn IdempotencyStore>,
    pub(crate) clock: Option<ManualClock>,
    pub(crate) capabilities: Capabilities,
}

impl Env {
    /// Opens a fresh store, and checks that the declared capabilities and the clock agree.
    pub(crate) async fn open(backend: &Arc<dyn Backend>) -> Env {
        let capabilities = backend.capabilities();
        let clock = backend.clock();
        assert_eq!(
            capabilities.injectable_clock,
            clock.is_some(),
            "Backend::clock must return a clock exactly when the capabilities declare injectable_clock"
        );

        let store = backend
            .open()
            .await
            .unwrap_or_else(|error| panic!("Backend::open failed: {error}"));
        Env {
            backend: Arc::clone(backend),
            store,
            clock,
            capabilities,
        }
    }

    /// Opens another handle on the same state.
    pub(crate) async fn connect(&self) -> Arc<dyn IdempotencyStore> {
        self.backend
            .connect()
            .await
            .unwrap_or_else(|error| panic!("Backend::connect failed: {error}"))
    }

    /// Drops every handle this case holds and connects again, as a restarted process would.
    pub(crate) async fn reopen(self) -> Env {
        let Env {
            backend,
            store,
            clock,
            capabilities,
        } = self;
        drop(store);
        let store = backend
            .connect()
            .await
            .unwrap_or_else(|error| panic!("Backend::connect after dropping every handle failed: {error}"));
        Env {
            backend,
            store,
            clock,
            capabilities,
        }
    }

    pub(crate) fn grace(&self) -> Option<Duration> {
        self.backend.lapsed_claim_grace()
    }

    /// Returns a lease TTL that expiry cases let pass with [`Env::pass`].
    pub(crate) fn short(&self) -> Ttl {
        ttl(if self.clock.is_some() {
            SHORT_CLOCK_MS
        } else {
            SHORT_REAL_MS
        })
    }

    /// Lets `span` pass. An injected clock moves exactly `span`, so a deadline `span` from now is reached.
    /// On a real clock the case sleeps a margin past it.
    pub(crate) async fn pass(&self, span: Ttl) {
        match &self.clock {
            Some(clock) => clock.advance(span.as_duration()),
            None => tokio::time::sleep(span.as_duration() + Duration::from_millis(REAL_MARGIN_MS)).await,
        }
    }

    /// Moves the injected clock by `step`; does nothing on a real clock.
    pub(crate) fn advance(&self, step: Duration) {
        if let Some(clock) = &self.clock {
            clock.advance(step);
        }
    }

    pub(crate) fn exact(&self) -> bool {
        self.clock.is_some()
    }

    pub(crate) async fn begin(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease_ttl: Ttl,
    ) -> BeginOutcome {
        begin_on(&self.store, key, fingerprint, lease_ttl).await
    }

    /// Begins and asserts that the begin acquired.
    pub(crate) async fn acquire(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease_ttl: Ttl,
    ) -> Lease {
        acquire_on(&self.store, key, fingerprint, lease_ttl).await
    }

    /// Completes and asserts success.
    pub(crate) async fn complete(&self, lease: &Lease, response: &[u8], retention: Ttl) {
        self.store
            .complete(lease, response, retention)
            .await
            .unwrap_or_else(|error| {
                panic!("complete with the lease that holds the claim must succeed: {error}")
            });
    }

    /// Acquires and completes `key` with `response`, returning the lease it ran under.
    pub(crate) async fn finish(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        response: &[u8],
        retention: Ttl,
    ) -> Lease {
        let lease = self.acquire(key, fingerprint, long()).await;
        self.complete(&lease, response, retention).await;
        lease
    }

    pub(crate) async fn lookup(&self, key: &IdempotencyKey) -> Option<Record> {
        lookup_on(&self.store, key).await
    }

    /// Looks up `key` and asserts that it holds a claim.
    pub(crate) async fn claim(&self, key: &IdempotencyKey) -> ClaimRecord {
        claim_on(&self.store, key).await
    }

    /// Looks up `key` and asserts that it holds a completed record.
    pub(crate) async fn completed(&self, key: &IdempotencyKey) -> CompletedRecord {
        completed_on(&self.store, key).await
    }

    /// Looks up `key` and asserts that it holds nothing.
    pub(crate) async fn assert_absent(&self, key: &IdempotencyKey, why: &str) {
        let record = self.lookup(key).await;
        assert!(record.is_none(), "{why}: lookup must return None, got {record:?}");
    }
}

pub(crate) async fn begin_on(
    store: &Arc<dyn IdempotencyStore>,
    key: &IdempotencyKey,
    fingerprint: &Fingerprint,
    lease_ttl: Ttl,
) -> BeginOutcome {
    store
        .begin(key, fingerprint, lease_ttl)
        .await
        .unwrap_or_else(|error| panic!("begin failed: {error}"))
}

pub(crate) async fn acquire_on(
    store: &Arc<dyn IdempotencyStore>,
    key: &IdempotencyKey,
    fingerprint: &Fingerprint,
    lease_ttl: Ttl,
) -> Lease {
    match begin_on(store, key, fingerprint, lease_ttl).await {
        BeginOutcome::Acquired(lease) => lease,
        other => panic!("begin must acquire here, got {other:?}"),
    }
}

pub(crate) async fn lookup_on(store: &Arc<dyn IdempotencyStore>, key: &IdempotencyKey) -> Option<Record> {
    store
        .lookup(key)
        .await
        .unwrap_or_else(|error| panic!("lookup failed: {error}"))
}

pub(crate) async fn claim_on(store: &Arc<dyn IdempotencyStore>, key: &IdempotencyKey) -> ClaimRecord {
    match lookup_on(store, key).await {
        Some(Record::InProgress(claim)) => claim,
        other => panic!("lookup must return a claim here, got {other:?}"),
    }
}

pub(crate) async fn completed_on(store: &Arc<dyn IdempotencyStore>, key: &IdempotencyKey) -> CompletedRecord {
    match lookup_on(store, key).await {
        Some(Record::Completed(record)) => record,
        other => panic!("lookup must return a completed record here, got {other:?}"),
    }
}

/// Asserts that a begin replays `response`.
#[track_caller]
pub(crate) fn assert_replays(outcome: BeginOutcome, response: &[u8], what: &str) {
    match outcome {
        BeginOutcome::Completed(record) => assert!(
            record.response == response,
            "{what}: the replayed response must equal the stored one byte for byte ({} bytes stored, {} replayed)",
            response.len(),
            record.response.len()
        ),
        other => panic!("{what}: begin must replay the completed record, got {other:?}"),
    }
}

/// Asserts that a begin reports a live claim, and returns its retry-after and attempt.
#[track_caller]
pub(crate) fn assert_in_progress(outcome: BeginOutcome, what: &str) -> (Duration, u32) {
    match outcome {
        BeginOutcome::InProgress { retry_after, attempt } => (retry_after, attempt),
        other => panic!("{what}: begin must report the live claim as in progress, got {other:?}"),
    }
}

#[track_caller]
pub(crate) fn assert_mismatch(outcome: BeginOutcome, what: &str) {
    assert!(
        outcome == BeginOutcome::FingerprintMismatch,
        "{what}: begin must report a fingerprint mismatch, got {outcome:?}"
    );
}

pub(crate) fn skip_unless(yes: bool, reason: &'static str) -> Option<crate::CaseOutcome> {
    (!yes).then_some(crate::CaseOutcome::Skipped(reason))
}
