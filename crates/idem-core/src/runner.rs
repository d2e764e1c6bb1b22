//! The runner: runs a closure when its key is new and replays the stored output to every retry.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::codec::{self, FORMAT_RESULT_V1, FORMAT_VALUE_V1};
use crate::error::{Error, InputField, Result};
use crate::fingerprint::Fingerprint;
use crate::keeper::{LeaseGuard, keep_lease_renewed};
use crate::key::IdempotencyKey;
use crate::lease::Lease;
use crate::store::{BeginOutcome, IdempotencyStore};
use crate::ttl::Ttl;

/// Default lease TTL of a [`Runner`]: 30 seconds.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// Default retention TTL of a [`Runner`]: 24 hours.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Default maximum run time of a [`Runner`]: 5 minutes.
pub const DEFAULT_MAX_RUN_TIME: Duration = Duration::from_secs(5 * 60);

/// Shortest lease TTL a [`Runner`] accepts: 100 ms. A shorter lease lapses between renewals on a busy
/// machine, and every lapse lets another caller run the work again.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(100);

const COMPLETE_ATTEMPTS: u32 = 3;
const FIRST_POLL: Duration = Duration::from_millis(20);
const MAX_POLL: Duration = Duration::from_secs(1);

/// Whether the closure ran now or its stored output was replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome<T> {
    /// The closure ran in this call and its output was stored.
    Executed(T),
    /// An earlier call ran the closure; this is its stored output.
    Replayed(T),
}

impl<T> RunOutcome<T> {
    /// Returns the output, whether executed or replayed.
    pub fn into_inner(self) -> T {
        match self {
            RunOutcome::Executed(value) | RunOutcome::Replayed(value) => value,
        }
    }

    /// The output, whether executed or replayed.
    pub fn value(&self) -> &T {
        match self {
            RunOutcome::Executed(value) | RunOutcome::Replayed(value) => value,
        }
    }

    /// Whether the output was replayed from the store.
    pub fn is_replayed(&self) -> bool {
        matches!(self, RunOutcome::Replayed(_))
    }
}

/// Why [`Runner::run`] returned no output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError<T, E> {
    /// The store rejected or could not serve the call before the closure ran: invalid input, a fingerprint
    /// mismatch, a claim held by another caller, a wait that timed out, an unavailable backend or a corrupt
    /// record. The closure did not run.
    #[error(transparent)]
    Store(Error),

    /// The closure returned an error. The key was released, so a retry runs the closure again.
    #[error("the idempotent operation failed, so the key was released and a retry runs it again: {0}")]
    Handler(#[source] E),

    /// The closure ran and returned `output`, but the output could not be recorded (the store failed, the
    /// output is too large, or it cannot be encoded). A retry may run the closure again, so hand `output` to
    /// the client now rather than dropping it.
    #[error("executed but not recorded: {source}")]
    NotRecorded {
        /// The closure's output.
        output: T,
        /// The error that kept the output from being stored.
        #[source]
        source: Error,
    },
}

impl<T, E> RunError<T, E> {
    /// The store error, if this is [`RunError::Store`] or [`RunError::NotRecorded`].
    pub fn store_error(&self) -> Option<&Error> {
        match self {
            RunError::Store(error) | RunError::NotRecorded { source: error, .. } => Some(error),
            RunError::Handler(_) => None,
        }
    }
}

/// The closure's view of its run: the lease, and a signal that fires if the lease is lost.
#[derive(Clone)]
pub struct LeaseContext {
    lease: Lease,
    lost: watch::Receiver<bool>,
}

impl fmt::Debug for LeaseContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseContext")
            .field("lease", &self.lease)
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl LeaseContext {
    /// The lease this run holds.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The fencing token; pass it to downstream systems that can reject writes from stale holders.
    pub fn fencing_token(&self) -> u64 {
        self.lease.fencing_token()
    }

    /// 1 for the first attempt on the key, plus one per takeover of a lapsed claim.
    pub fn attempt(&self) -> u32 {
        self.lease.attempt()
    }

    /// Whether the lease is lost: a renewal reported it taken over, or its deadline passed without a
    /// successful renewal (after the maximum run time, or while the store was unreachable).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Waits until the lease is lost, as [`LeaseContext::is_lost`] defines it. Select on this to stop work
    /// that another caller may now run.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // An error means the runner dropped its sender, so the run is over and the lease no longer protects.
        let _ = lost.wait_for(|lost| *lost).await;
    }
}

/// Builder for [`Runner`], with the defaults written on each setter.
#[derive(Debug)]
pub struct RunnerBuilder {
    store: Arc<dyn IdempotencyStore>,
    lease_ttl: Duration,
    retention: Duration,
    max_run_time: Duration,
    wait: Option<Duration>,
}

impl RunnerBuilder {
    /// Sets the lease TTL: how long a claim protects a run that stopped renewing (a crash). Default 30 s,
    /// at least [`MIN_LEASE_TTL`]. The runner renews the lease every third of it while the closure runs, so
    /// pick several times the store's worst latency.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Sets how long a completed output is replayed. Default 24 h.
    pub fn retention(mut self, ttl: Duration) -> Self {
        self.retention = ttl;
        self
    }

    /// Sets the longest time the runner keeps renewing the lease of one run. Default 5 min. After it the
    /// lease lapses at its deadline and another caller may take over.
    pub fn max_run_time(mut self, limit: Duration) -> Self {
        self.max_run_time = limit;
        self
    }

    /// Waits up to `limit` for another caller's result when the key is in progress, and replays it, instead
    /// of returning [`Error::InProgress`] at once. Default: no wait. The limit must be above zero.
    pub fn wait_for_result(mut self, limit: Duration) -> Self {
        self.wait = Some(limit);
        self
    }

    /// Validates the settings and builds the runner.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a TTL is zero or too large, the lease TTL is below [`MIN_LEASE_TTL`], or
    /// the maximum run time or the wait limit is zero.
    pub fn build(self) -> Result<Runner> {
        if self.lease_ttl < MIN_LEASE_TTL {
            return Err(Error::invalid(
                InputField::Setting,
                format!(
                    "lease_ttl of {:?} is below the minimum of {MIN_LEASE_TTL:?}; pass several times the store's worst latency, such as 30 s",
                    self.lease_ttl
                ),
            ));
        }
        if self.wait.is_some_and(|limit| limit.is_zero()) {
            return Err(Error::invalid(
                InputField::Setting,
                "wait_for_result limit is zero; pass how long to wait for another caller's result, or do not call wait_for_result",
            ));
        }
        if self.max_run_time.is_zero() {
            return Err(Error::invalid(
                InputField::Setting,
                "max_run_time is zero; pass the longest time one run may take",
            ));
        }
        Ok(Runner {
            store: self.store,
            lease_ttl: Ttl::new(self.lease_ttl)?,
            retention: Ttl::new(self.retention)?,
            max_run_time: self.max_run_time,
            wait: self.wait,
        })
    }
}

/// Runs a closure once per key on top of a store, and replays its output to retries. The closure runs again
/// only after its key was released (an error, panic or drop) or its lease lapsed and another caller took over.
///
/// Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct Runner {
    store: Arc<dyn IdempotencyStore>,
    lease_ttl: Ttl,
    retention: Ttl,
    max_run_time: Duration,
    wait: Option<Duration>,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("store", &self.store.backend_name())
            .field("lease_ttl", &self.lease_ttl)
            .field("retention", &self.retention)
            .field("max_run_time", &self.max_run_time)
            .field("wait", &self.wait)
            .finish()
    }
}

impl Runner {
    /// Starts a builder on `store` with the default settings.
    pub fn builder(store: Arc<dyn IdempotencyStore>) -> RunnerBuilder {
        RunnerBuilder {
            store,
            lease_ttl: DEFAULT_LEASE_TTL,
            retention: DEFAULT_RETENTION,
            max_run_time: DEFAULT_MAX_RUN_TIME,
            wait: None,
        }
    }

    /// Builds a runner on `store` with the default settings.
    pub fn new(store: Arc<dyn IdempotencyStore>) -> Self {
        Self::builder(store)
            .build()
            .expect("the default settings are valid")
    }

    /// The store this runner uses.
    pub fn store(&self) -> &Arc<dyn IdempotencyStore> {
        &self.store
    }

    /// Runs `work` if `key` is new, or replays the output stored by the run that came first.
    ///
    /// While `work` runs, the runner renews its lease. When `work` returns `Ok`, the output is encoded,
    /// decoded once as a check, and stored for the retention period. When it returns `Err`, panics, or its
    /// future is dropped, the key is released so that a retry runs `work` again. On a drop the release runs
    /// in a spawned task. Outside a Tokio runtime it cannot run, and the claim lapses at its lease deadline.
    ///
    /// # Errors
    /// [`RunError::Store`] when `work` did not run, [`RunError::Handler`] with `work`'s error, and
    /// [`RunError::NotRecorded`] with the output when `work` succeeded but storing failed.
    pub async fn run<T, E, F, Fut>(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        work: F,
    ) -> Result<RunOutcome<T>, RunError<T, E>>
    where
        T: Serialize + DeserializeOwned + Send,
        E: Send,
        F: FnOnce(LeaseContext) -> Fut + Send,
        Fut: Future<Output = std::result::Result<T, E>> + Send,
    {
        self.run_with_format(FORMAT_VALUE_V1, key, fingerprint, work)
            .await
    }

    /// Like [`Runner::run`], but stores `work`'s error too, so a retry replays `Err` instead of running again.
    /// Use it for errors that are final, such as a declined card.
    ///
    /// The stored form differs from [`Runner::run`]'s, so use one method per key.
    ///
    /// # Errors
    /// As [`Runner::run`]; `work`'s own error comes back inside the outcome.
    pub async fn run_storing_errors<T, E, F, Fut>(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        work: F,
    ) -> Result<RunOutcome<std::result::Result<T, E>>, RunError<std::result::Result<T, E>, Infallible>>
    where
        T: Serialize + DeserializeOwned + Send,
        E: Serialize + DeserializeOwned + Send,
        F: FnOnce(LeaseContext) -> Fut + Send,
        Fut: Future<Output = std::result::Result<T, E>> + Send,
    {
        let work = |context| async move { Ok::<_, Infallible>(work(context).await) };
        self.run_with_format(FORMAT_RESULT_V1, key, fingerprint, work)
            .await
    }

    async fn run_with_format<T, E, F, Fut>(
        &self,
        format: u8,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        work: F,
    ) -> Result<RunOutcome<T>, RunError<T, E>>
    where
        T: Serialize + DeserializeOwned + Send,
        E: Send,
        F: FnOnce(LeaseContext) -> Fut + Send,
        Fut: Future<Output = std::result::Result<T, E>> + Send,
    {
        // NOTE: a run dropped while begin is in flight cannot release a claim that begin made but never
        // reported. That claim lapses at its lease deadline.
        let lease = match self.acquire(key, fingerprint).await.map_err(RunError::Store)? {
            Acquired::Lease(lease) => lease,
            Acquired::Replay(response) => {
                let value = codec::decode(format, key, &response).map_err(RunError::Store)?;
                tracing::debug!(key = %key.label(), "replayed stored output");
                return Ok(RunOutcome::Replayed(value));
            }
        };

        let mut guard = LeaseGuard::new(Arc::clone(&self.store), lease.clone());
        let (lost_sender, lost_receiver) = watch::channel(false);
        let context = LeaseContext {
            lease: lease.clone(),
            lost: lost_receiver,
        };

        let work = AssertUnwindSafe(work(context)).catch_unwind();
        let renewal = keep_lease_renewed(
            self.store.as_ref(),
            &lease,
            self.lease_ttl,
            self.max_run_time,
            &lost_sender,
        );
        tokio::pin!(work, renewal);
        let finished = tokio::select! {
            biased;
            finished = &mut work => finished,
            never = &mut renewal => match never {},
        };

        let value = match finished {
            Err(panic) => {
                guard.release("the operation panicked").await;
                std::panic::resume_unwind(panic);
            }
            Ok(Err(error)) => {
                guard.release("the operation returned an error").await;
                return Err(RunError::Handler(error));
            }
            Ok(Ok(value)) => value,
        };

        let response = match codec::encode_checked(format, &value) {
            Ok(response) => response,
            Err(error) => {
                guard.release("its output cannot be encoded").await;
                return Err(RunError::NotRecorded {
                    output: value,
                    source: error,
                });
            }
        };

        match self.complete(&lease, &response).await {
            Ok(()) => {
                guard.disarm();
                tracing::debug!(key = %key.label(), bytes = response.len(), "executed and stored output");
                Ok(RunOutcome::Executed(value))
            }
            Err(error @ Error::LeaseLost { .. }) => {
                guard.disarm();
                tracing::warn!(key = %key.label(), %error, "output not recorded: the lease was lost while the operation ran");
                Err(RunError::NotRecorded {
                    output: value,
                    source: error,
                })
            }
            Err(error) => {
                tracing::warn!(key = %key.label(), %error, "output not recorded");
                guard.release("its output could not be stored").await;
                Err(RunError::NotRecorded {
                    output: value,
                    source: error,
                })
            }
        }
    }

    /// Begins on the key, waiting for another caller's result when configured.
    async fn acquire(&self, key: &IdempotencyKey, fingerprint: &Fingerprint) -> Result<Acquired> {
        let started = Instant::now();
        let mut poll = FIRST_POLL;

        loop {
            match self.store.begin(key, fingerprint, self.lease_ttl).await? {
                BeginOutcome::Acquired(lease) => {
                    if lease.attempt() > 1 {
                        tracing::warn!(key = %key.label(), attempt = lease.attempt(), "took over a lapsed claim; an earlier run stopped without finishing");
                    }
                    return Ok(Acquired::Lease(lease));
                }
                BeginOutcome::Completed(record) => return Ok(Acquired::Replay(record.response)),
                BeginOutcome::FingerprintMismatch => {
                    tracing::debug!(key = %key.label(), "fingerprint mismatch");
                    return Err(Error::FingerprintMismatch { key: key.label() });
                }
                BeginOutcome::InProgress { retry_after, .. } => {
                    let Some(limit) = self.wait else {
                        tracing::debug!(key = %key.label(), ?retry_after, "in progress elsewhere");
                        return Err(Error::InProgress {
                            key: key.label(),
                            retry_after,
                        });
                    };
                    let waited = started.elapsed();
                    if waited >= limit {
                        return Err(Error::WaitTimedOut {
                            key: key.label(),
                            waited,
                        });
                    }
                    // Polls back off up to a second, and never sleep past the wait limit.
                    tokio::time::sleep(poll.min(limit - waited)).await;
                    poll = (poll * 2).min(MAX_POLL);
                }
            }
        }
    }

    /// Completes the lease, repeating the call on retryable failures. Repeating is safe because complete with
    /// the same lease and response succeeds again once it has succeeded.
    async fn complete(&self, lease: &Lease, response: &[u8]) -> Result<()> {
        let mut attempt = 1;
        loop {
            match self.store.complete(lease, response, self.retention).await {
                Err(error) if error.is_retryable() && attempt < COMPLETE_ATTEMPTS => {
                    tracing::debug!(key = %lease.key().label(), %error, attempt, "complete failed, retrying");
                    tokio::time::sleep(Duration::from_millis(50) * 4u32.pow(attempt - 1)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }
}

enum Acquired {
    Lease(Lease),
    Replay(Vec<u8>),
}
