//! The harness a backend's test implements, and the capabilities it declares.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use idem_core::{BoxError, IdempotencyStore, ManualClock};

/// The optional abilities of a backend, beyond the rules every backend keeps. Cases that need a capability the harness
/// does not declare are skipped, so declare everything the backend offers.
///
/// Build one with [`Capabilities::new`] (everything off) and the setters:
///
/// ```
/// use idem_conformance::Capabilities;
///
/// let capabilities = Capabilities::new()
///     .durable(true)
///     .shared_across_handles(true)
///     .injectable_clock(true);
/// assert!(capabilities.durable);
/// assert!(!capabilities.self_expiring);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Completed records survive dropping every handle and connecting again ([`Backend::connect`] after all
    /// handles are gone). Enables the reopening cases.
    pub durable: bool,
    /// Several handles from [`Backend::connect`] see one state: a record made through one is seen, completed,
    /// released and deleted through another. Enables the multi-handle cases.
    pub shared_across_handles: bool,
    /// Every store from [`Backend::open`] reads its deadlines from [`Backend::clock`], so the suite steps time
    /// exactly. Enables the cases that check the exact deadline instant; without it, expiry cases sleep past
    /// short real TTLs.
    pub injectable_clock: bool,
    /// The backend removes expired records by itself (as a Redis key expiry does), so
    /// [`IdempotencyStore::purge`] may return 0 for records that expired. Without it, purge must return the
    /// exact number of expired records it removed.
    pub self_expiring: bool,
}

impl Capabilities {
    /// Returns capabilities with everything off: the cases that need one are skipped.
    pub const fn new() -> Self {
        Self {
            durable: false,
            shared_across_handles: false,
            injectable_clock: false,
            self_expiring: false,
        }
    }

    /// Sets [`Capabilities::durable`].
    pub const fn durable(mut self, yes: bool) -> Self {
        self.durable = yes;
        self
    }

    /// Sets [`Capabilities::shared_across_handles`].
    pub const fn shared_across_handles(mut self, yes: bool) -> Self {
        self.shared_across_handles = yes;
        self
    }

    /// Sets [`Capabilities::injectable_clock`].
    pub const fn injectable_clock(mut self, yes: bool) -> Self {
        self.injectable_clock = yes;
        self
    }

    /// Sets [`Capabilities::self_expiring`].
    pub const fn self_expiring(mut self, yes: bool) -> Self {
        self.self_expiring = yes;
        self
    }
}

/// A test harness for one backend: it opens fresh stores for the cases and declares what the backend can do.
///
/// Each case calls [`Backend::open`] once, for a store no other case sees, and may then call
/// [`Backend::connect`] for more handles on that same store. [`crate::run_all`] runs the cases one after
/// another on one harness; [`crate::conformance_tests!`] builds one harness per case. So a harness only
/// remembers the store of its latest `open`, and cases never run concurrently on one harness.
///
/// A harness for a file-backed store keeps a temporary directory, creates a new file in `open`, and opens
/// that file again in `connect`. A harness for a server keeps a client and a key prefix that is new in each
/// `open`. [`crate`] shows a whole harness, and `tests/broken_backends.rs` in this crate has one for a small
/// store written in the test.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Returns what the backend can do. Cases that need a capability declared `false` are skipped.
    fn capabilities(&self) -> Capabilities;

    /// Returns the clock that every store from [`Backend::open`] and [`Backend::connect`] reads, when the
    /// harness injects one. Required when [`Capabilities::injectable_clock`] is declared.
    ///
    /// The suite moves it forward only, to put records exactly at or one millisecond before their deadlines.
    fn clock(&self) -> Option<ManualClock> {
        None
    }

    /// Returns the grace period after which the stores drop a lapsed claim, when the harness knows it. With
    /// an injectable clock, the suite then checks that such claims disappear and that purge removes them.
    ///
    /// The suite assumes a grace period of at least 10 seconds: until then, the holder of a lapsed claim must
    /// still be able to complete it.
    fn lapsed_claim_grace(&self) -> Option<Duration> {
        None
    }

    /// Opens a fresh, empty store that no other case sees: a new file, a new database, a new key prefix.
    ///
    /// The harness remembers it, so that [`Backend::connect`] opens more handles on the same state.
    async fn open(&self) -> Result<Arc<dyn IdempotencyStore>, BoxError>;

    /// Opens another handle on the state of the latest [`Backend::open`]: a clone, a second connection on the
    /// same file, or a second client with the same key prefix.
    ///
    /// The suite calls it for [`Capabilities::shared_across_handles`], and, after dropping every handle it
    /// holds, to reopen the store for [`Capabilities::durable`]. So that reopening is real, a durable
    /// backend's harness keeps no handle of its own open. The default returns an error, which fails the
    /// cases that need either capability.
    async fn connect(&self) -> Result<Arc<dyn IdempotencyStore>, BoxError> {
        Err("this harness does not implement Backend::connect; implement it or declare neither shared_across_handles nor durable".into())
    }
}
