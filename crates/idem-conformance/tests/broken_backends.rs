//! Proof that the suite can fail, and a complete example of running it on your own backend.
//!
//! `ReferenceStore` is a small, correct store: a `HashMap` behind a mutex, reading a `ManualClock`.
//! `ReferenceHarness` is its [`Backend`] harness, as you would write one for your store. The reference
//! passes every case; each fault switch breaks one rule, and the suite must catch each broken variant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem_conformance::{Backend, Capabilities, async_trait, conformance_tests, run_all};
use idem_core::{
    BeginOutcome, BoxError, ClaimRecord, Clock, CompletedRecord, DEFAULT_MAX_RESPONSE_BYTES, Error,
    Fingerprint, IdempotencyKey, IdempotencyStore, Lease, ManualClock, MonotonicClock, Record, Result, Ttl,
};

/// How long a lapsed claim stays completable by its holder before it disappears.
const GRACE: Duration = Duration::from_secs(60 * 60);

/// Switches that each break one rule of the reference store.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    /// Begin checks for a record, yields to the runtime, then inserts: concurrent begins all acquire.
    racy_begin: bool,
    /// Complete, release and renew ignore the fencing token of a claim.
    no_fencing: bool,
    /// Deadlines count as reached one millisecond after the deadline instant.
    late_expiry: bool,
    /// Begin ignores the fingerprint of an existing record.
    ignore_fingerprint: bool,
    /// The store keeps at most this many records, and makes room by dropping the oldest, claims included.
    evict_beyond: Option<usize>,
}

#[derive(Clone, Debug)]
enum Entry {
    Claim {
        fingerprint: Fingerprint,
        token: u64,
        attempt: u32,
        deadline: Duration,
        created: Duration,
    },
    Done {
        fingerprint: Fingerprint,
        response: Vec<u8>,
        token: u64,
        completed: Duration,
        retain_until: Duration,
    },
}

impl Entry {
    fn fingerprint(&self) -> &Fingerprint {
        match self {
            Entry::Claim { fingerprint, .. } | Entry::Done { fingerprint, .. } => fingerprint,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Records by storage key, with the sequence number of their insertion.
    records: HashMap<String, (u64, Entry)>,
    /// The last fencing token issued; tokens come from one counter, so no key ever gets one twice.
    last_token: u64,
    inserted: u64,
}

/// The shared state of one store: what every handle of it sees.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    faults: Faults,
}

/// A correct in-memory store, unless a fault switch is on. Clones share one state.
#[derive(Clone, Debug)]
struct ReferenceStore {
    shared: Arc<Shared>,
}

impl ReferenceStore {
    fn reached(&self, deadline: Duration, now: Duration) -> bool {
        if self.shared.faults.late_expiry {
            now > deadline
        } else {
            now >= deadline
        }
    }

    /// Returns whether `entry` is gone by `now`: a completed record past retention, or a claim past its grace.
    fn expired(&self, entry: &Entry, now: Duration) -> bool {
        match entry {
            Entry::Done { retain_until, .. } => self.reached(*retain_until, now),
            Entry::Claim { deadline, .. } => self.reached(*deadline + GRACE, now),
        }
    }

    /// Returns the key's live entry, dropping an expired one first.
    fn current<'a>(&self, state: &'a mut State, storage_key: &str, now: Duration) -> Option<&'a mut Entry> {
        let expired = state
            .records
            .get(storage_key)
            .is_some_and(|(_, entry)| self.expired(entry, now));
        if expired {
            state.records.remove(storage_key);
        }
        state.records.get_mut(storage_key).map(|(_, entry)| entry)
    }

    fn insert(&self, state: &mut State, storage_key: String, entry: Entry) {
        state.inserted += 1;
        let sequence = state.inserted;
        state.records.insert(storage_key, (sequence, entry));
        if let Some(limit) = self.shared.faults.evict_beyond {
            while state.records.len() > limit {
                let oldest = state
                    .records
                    .iter()
                    .min_by_key(|(_, (sequence, _))| *sequence)
                    .map(|(key, _)| key.clone())
                    .expect("the map is not empty");
                state.records.remove(&oldest);
            }
        }
    }

    fn new_claim(
        state: &mut State,
        fingerprint: &Fingerprint,
        attempt: u32,
        deadline: Duration,
        created: Duration,
    ) -> Entry {
        state.last_token += 1;
        Entry::Claim {
            fingerprint: fingerprint.clone(),
            token: state.last_token,
            attempt,
            deadline,
            created,
        }
    }

    fn lost(lease: &Lease) -> Error {
        Error::LeaseLost {
            key: lease.key().label(),
            fencing_token: lease.fencing_token(),
        }
    }

    fn holds(&self, lease: &Lease, token: u64) -> bool {
        self.shared.faults.no_fencing || token == lease.fencing_token()
    }
}

#[async_trait]
impl IdempotencyStore for ReferenceStore {
    async fn begin(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease_ttl: Ttl,
    ) -> Result<BeginOutcome> {
        let storage_key = key.storage_key();
        let faults = self.shared.faults;

        if faults.racy_begin {
            let now = self.shared.clock.now();
            let absent = {
                let mut state = self.shared.state.lock().unwrap();
                self.current(&mut state, &storage_key, now).is_none()
            };
            if absent {
                // The gap between the check and the insert is what makes this begin not atomic.
                tokio::time::sleep(Duration::from_millis(1)).await;
                let mut state = self.shared.state.lock().unwrap();
                let claim = Self::new_claim(&mut state, fingerprint, 1, now + lease_ttl.as_duration(), now);
                let Entry::Claim { token, .. } = claim else {
                    unreachable!()
                };
                self.insert(&mut state, storage_key, claim);
                return Ok(BeginOutcome::Acquired(Lease::new(
                    key.clone(),
                    fingerprint.clone(),
                    token,
                    1,
                    lease_ttl,
                )));
            }
        }

        let now = self.shared.clock.now();
        let mut state = self.shared.state.lock().unwrap();
        let deadline = now + lease_ttl.as_duration();
        let (attempt, created) = match self.current(&mut state, &storage_key, now) {
            None => (1, now),
            Some(entry) if entry.fingerprint() != fingerprint && !faults.ignore_fingerprint => {
                return Ok(BeginOutcome::FingerprintMismatch);
            }
            Some(Entry::Done {
                fingerprint,
                response,
                completed,
                retain_until,
                ..
            }) => {
                return Ok(BeginOutcome::Completed(CompletedRecord::new(
                    fingerprint.clone(),
                    response.clone(),
                    *retain_until - now,
                    now - *completed,
                )));
            }
            Some(Entry::Claim {
                deadline: held_until,
                attempt,
                created,
                ..
            }) => {
                if !self.reached(*held_until, now) {
                    return Ok(BeginOutcome::InProgress {
                        retry_after: held_until.saturating_sub(now),
                        attempt: *attempt,
                    });
                }
                (*attempt + 1, *created)
            }
        };

        let claim = Self::new_claim(&mut state, fingerprint, attempt, deadline, created);
        let Entry::Claim { token, .. } = claim else {
            unreachable!()
        };
        self.insert(&mut state, storage_key, claim);
        Ok(BeginOutcome::Acquired(Lease::new(
            key.clone(),
            fingerprint.clone(),
            token,
            attempt,
            lease_ttl,
        )))
    }

    async fn complete(&self, lease: &Lease, response: &[u8], retention: Ttl) -> Result<()> {
        if response.len() > self.max_response_bytes() {
            return Err(Error::ResponseTooLarge {
                size: response.len(),
                limit: self.max_response_bytes(),
            });
        }
        let now = self.shared.clock.now();
        let mut state = self.shared.state.lock().unwrap();
        let entry = self.current(&mut state, &lease.key().storage_key(), now);
        match entry {
            Some(entry @ Entry::Claim { .. }) => {
                let Entry::Claim {
                    fingerprint, token, ..
                } = entry.clone()
                else {
                    unreachable!()
                };
                if !self.holds(lease, token) {
                    return Err(Self::lost(lease));
                }
                *entry = Entry::Done {
                    fingerprint,
                    response: response.to_vec(),
                    token: lease.fencing_token(),
                    completed: now,
                    retain_until: now + retention.as_duration(),
                };
                Ok(())
            }
            Some(Entry::Done {
                token,
                response: stored,
                ..
            }) if *token == lease.fencing_token() && stored.as_slice() == response => Ok(()),
            _ => Err(Self::lost(lease)),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let now = self.shared.clock.now();
        let storage_key = lease.key().storage_key();
        let mut state = self.shared.state.lock().unwrap();
        match self.current(&mut state, &storage_key, now) {
            None => Ok(()),
            Some(Entry::Claim { token, .. }) if self.holds(lease, *token) => {
                state.records.remove(&storage_key);
                Ok(())
            }
            Some(_) => Err(Self::lost(lease)),
        }
    }

    async fn renew(&self, lease: &Lease, lease_ttl: Ttl) -> Result<Duration> {
        let now = self.shared.clock.now();
        let mut state = self.shared.state.lock().unwrap();
        match self.current(&mut state, &lease.key().storage_key(), now) {
            Some(Entry::Claim { token, deadline, .. }) if self.holds(lease, *token) => {
                *deadline = now + lease_ttl.as_duration();
                Ok(lease_ttl.as_duration())
            }
            _ => Err(Self::lost(lease)),
        }
    }

    async fn lookup(&self, key: &IdempotencyKey) -> Result<Option<Record>> {
        let now = self.shared.clock.now();
        let mut state = self.shared.state.lock().unwrap();
        let record = match self.current(&mut state, &key.storage_key(), now) {
            None => None,
            Some(Entry::Claim {
                fingerprint,
                token,
                attempt,
                deadline,
                created,
            }) => {
                let remaining = if self.reached(*deadline, now) {
                    Duration::ZERO
                } else {
                    *deadline - now
                };
                Some(Record::InProgress(ClaimRecord::new(
                    fingerprint.clone(),
                    *token,
                    *attempt,
                    remaining,
                    now - *created,
                )))
            }
            Some(Entry::Done {
                fingerprint,
                response,
                completed,
                retain_until,
                ..
            }) => Some(Record::Completed(CompletedRecord::new(
                fingerprint.clone(),
                response.clone(),
                retain_until.saturating_sub(now),
                now - *completed,
            ))),
        };
        Ok(record)
    }

    async fn delete(&self, key: &IdempotencyKey) -> Result<bool> {
        let mut state = self.shared.state.lock().unwrap();
        Ok(state.records.remove(&key.storage_key()).is_some())
    }

    async fn purge(&self) -> Result<u64> {
        let now = self.shared.clock.now();
        let mut state = self.shared.state.lock().unwrap();
        let before = state.records.len();
        state.records.retain(|_, (_, entry)| !self.expired(entry, now));
        Ok((before - state.records.len()) as u64)
    }

    fn max_response_bytes(&self) -> usize {
        DEFAULT_MAX_RESPONSE_BYTES
    }

    fn backend_name(&self) -> &'static str {
        "reference"
    }
}

/// The harness: a fresh state per `open`, on one manual clock. The harness keeps the latest state itself, so
/// `connect` serves both as a second handle and as a reopening that finds the same records.
struct ReferenceHarness {
    faults: Faults,
    /// The injected clock; `None` runs the stores on the process's monotonic clock.
    clock: Option<ManualClock>,
    latest: Mutex<Option<Arc<Shared>>>,
}

impl ReferenceHarness {
    fn new(faults: Faults) -> Self {
        Self {
            faults,
            clock: Some(ManualClock::new(Duration::from_secs(1_000_000))),
            latest: Mutex::new(None),
        }
    }

    /// A correct store on a real clock, as a backend with a server clock is tested.
    fn on_real_clock() -> Self {
        Self {
            faults: Faults::default(),
            clock: None,
            latest: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Backend for ReferenceHarness {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .durable(true)
            .shared_across_handles(true)
            .injectable_clock(self.clock.is_some())
    }

    fn clock(&self) -> Option<ManualClock> {
        self.clock.clone()
    }

    fn lapsed_claim_grace(&self) -> Option<Duration> {
        Some(GRACE)
    }

    async fn open(&self) -> std::result::Result<Arc<dyn IdempotencyStore>, BoxError> {
        let clock: Arc<dyn Clock> = match &self.clock {
            Some(clock) => Arc::new(clock.clone()),
            None => Arc::new(MonotonicClock::new()),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            clock,
            faults: self.faults,
        });
        *self.latest.lock().unwrap() = Some(Arc::clone(&shared));
        Ok(Arc::new(ReferenceStore { shared }))
    }

    async fn connect(&self) -> std::result::Result<Arc<dyn IdempotencyStore>, BoxError> {
        let shared = self.latest.lock().unwrap().clone().ok_or("connect before open")?;
        Ok(Arc::new(ReferenceStore { shared }))
    }
}

// The reference store passes every case, each as its own test: `reference::begin_acquires_fresh_key`, ...
conformance_tests!(reference, || async { ReferenceHarness::new(Faults::default()) });

/// Runs the whole suite on a broken variant and asserts that each of `expected` is among the failed cases.
async fn assert_caught(faults: Faults, expected: &[&str]) {
    let report = run_all(Arc::new(ReferenceHarness::new(faults))).await;
    let failed = report.failed_names();
    println!("{faults:?} failed {} cases: {failed:?}", failed.len());
    for name in expected {
        assert!(
            failed.contains(name),
            "{faults:?} must fail {name}; failed: {failed:?}"
        );
    }
    assert!(
        report.skipped_names().is_empty(),
        "no case may be skipped: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reference_passes_whole_suite() {
    let report = run_all(Arc::new(ReferenceHarness::new(Faults::default()))).await;
    report.assert_success();
    assert!(
        report.skipped_names().is_empty(),
        "no case may be skipped: {report}"
    );
}

/// Without an injected clock the expiry cases sleep past short real TTLs, and only the cases that need to
/// stand 1 ms before a deadline are skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reference_passes_on_real_clock() {
    let report = run_all(Arc::new(ReferenceHarness::on_real_clock())).await;
    report.assert_success();
    assert_eq!(
        report.skipped_names(),
        [
            "lease_expires_at_deadline",
            "retention_expires_at_deadline",
            "lapsed_claim_disappears_after_grace"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racy_begin_caught() {
    let faults = Faults {
        racy_begin: true,
        ..Faults::default()
    };
    assert_caught(faults, &["concurrent_begin_one_winner"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_fencing_caught() {
    let faults = Faults {
        no_fencing: true,
        ..Faults::default()
    };
    let expected = [
        "stale_lease_cannot_complete",
        "stale_lease_cannot_release",
        "stale_lease_cannot_renew",
    ];
    assert_caught(faults, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_expiry_caught() {
    let faults = Faults {
        late_expiry: true,
        ..Faults::default()
    };
    assert_caught(
        faults,
        &["lease_expires_at_deadline", "retention_expires_at_deadline"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ignored_fingerprint_caught() {
    let faults = Faults {
        ignore_fingerprint: true,
        ..Faults::default()
    };
    assert_caught(faults, &["begin_mismatch_on_live_claim"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_eviction_caught() {
    let faults = Faults {
        evict_beyond: Some(64),
        ..Faults::default()
    };
    assert_caught(faults, &["claims_survive_many_records"]).await;
}
