//! The conformance suite of idem's store backends: every rule that an
//! [`IdempotencyStore`](idem_core::IdempotencyStore) must keep, as cases that run against a real backend.
//!
//! The memory and SQLite backends run it, and so should any store you write yourself. Each case opens a
//! fresh store through a [`Backend`] harness that you write for your store, drives it through the public
//! trait only, and panics with the broken rule when a check fails. [`CASES`] lists the cases with their
//! rules; [`cases`] has one documented function per case.
//!
//! # Running the suite on your own backend
//!
//! Write a harness that opens a fresh, empty store per case and declares what your backend can do, then
//! generate one test per case with [`conformance_tests!`]:
//!
//! ```no_run
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! use idem_conformance::{Backend, Capabilities, async_trait};
//! use idem_core::{BoxError, IdempotencyStore, ManualClock};
//! # #[derive(Debug, Clone)]
//! # struct MyStore;
//! # impl MyStore {
//! #     async fn open(_path: &std::path::Path, _clock: ManualClock) -> Result<Self, idem_core::Error> { todo!() }
//! # }
//! # #[async_trait]
//! # impl IdempotencyStore for MyStore {
//! #     async fn begin(&self, _: &idem_core::IdempotencyKey, _: &idem_core::Fingerprint, _: idem_core::Ttl) -> idem_core::Result<idem_core::BeginOutcome> { todo!() }
//! #     async fn complete(&self, _: &idem_core::Lease, _: &[u8], _: idem_core::Ttl) -> idem_core::Result<()> { todo!() }
//! #     async fn release(&self, _: &idem_core::Lease) -> idem_core::Result<()> { todo!() }
//! #     async fn renew(&self, _: &idem_core::Lease, _: idem_core::Ttl) -> idem_core::Result<Duration> { todo!() }
//! #     async fn lookup(&self, _: &idem_core::IdempotencyKey) -> idem_core::Result<Option<idem_core::Record>> { todo!() }
//! #     async fn delete(&self, _: &idem_core::IdempotencyKey) -> idem_core::Result<bool> { todo!() }
//! #     async fn purge(&self) -> idem_core::Result<u64> { todo!() }
//! #     fn backend_name(&self) -> &'static str { "mine" }
//! # }
//!
//! /// Opens each case's store in a new file of one temporary directory, on one manual clock.
//! struct MyHarness {
//!     dir: std::path::PathBuf,
//!     clock: ManualClock,
//!     opened: Mutex<u32>,
//! }
//!
//! impl MyHarness {
//!     fn new() -> Self {
//!         let dir = std::env::temp_dir().join(format!("my-store-{}", std::process::id()));
//!         std::fs::create_dir_all(&dir).unwrap();
//!         let clock = ManualClock::new(Duration::from_secs(1_700_000_000));
//!         MyHarness { dir, clock, opened: Mutex::new(0) }
//!     }
//!
//!     fn current_path(&self) -> std::path::PathBuf {
//!         self.dir.join(format!("case-{}.db", self.opened.lock().unwrap()))
//!     }
//! }
//!
//! #[async_trait]
//! impl Backend for MyHarness {
//!     fn capabilities(&self) -> Capabilities {
//!         Capabilities::new().durable(true).shared_across_handles(true).injectable_clock(true)
//!     }
//!
//!     fn clock(&self) -> Option<ManualClock> {
//!         Some(self.clock.clone())
//!     }
//!
//!     async fn open(&self) -> Result<Arc<dyn IdempotencyStore>, BoxError> {
//!         *self.opened.lock().unwrap() += 1;
//!         self.connect().await
//!     }
//!
//!     async fn connect(&self) -> Result<Arc<dyn IdempotencyStore>, BoxError> {
//!         Ok(Arc::new(MyStore::open(&self.current_path(), self.clock.clone()).await?))
//!     }
//! }
//!
//! // One test per case, named like `my_store::begin_acquires_fresh_key`.
//! idem_conformance::conformance_tests!(my_store, || async { MyHarness::new() });
//!
//! // Or all cases in one test, with a report of every failure.
//! #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! async fn whole_suite() {
//!     idem_conformance::run_all(Arc::new(MyHarness::new())).await.assert_success();
//! }
//! # fn main() {}
//! ```
//!
//! `tests/broken_backends.rs` in this crate is a complete, runnable example: a small store written in the
//! test, its harness, and the suite catching five broken variants of it.
//!
//! # Capabilities
//!
//! Some rules only apply to some backends, so the harness declares [`Capabilities`]:
//!
//! - `durable`: completed records survive dropping every handle and connecting again.
//! - `shared_across_handles`: several handles from [`Backend::connect`] see one state.
//! - `injectable_clock`: the stores read [`Backend::clock`], a [`idem_core::ManualClock`] that the suite
//!   steps, so it can check the exact deadline instant. Without one, expiry cases use short real TTLs
//!   (300 ms) and sleep past them, which also works for a store that reads a server's clock.
//! - `self_expiring`: the backend removes expired records by itself, so purge may return 0.
//!
//! Declaring less skips cases: a skipped case passes and prints why, and [`Report`] lists it. So declare
//! everything your backend offers, and assert the declaration in your tests, as idem's own backends do.
//!
//! # Time and speed
//!
//! Claims that must stay held use 10-minute lease TTLs, so a slow backend never loses them by accident; only
//! expiry cases use short ones. On a manual clock the whole suite takes a few seconds; on a real clock the
//! expiry cases add about half a second each.

mod backend;
mod checks;
mod macros;
mod registry;

pub use async_trait::async_trait;
pub use backend::{Backend, Capabilities};
#[doc(hidden)]
pub use registry::run_test as __run_test;
pub use registry::{CASE_TIMEOUT, Case, CaseFuture, CaseOutcome, CaseResult, Report, Status, case, run_all};

crate::__idem_conformance_cases! { registry () }

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn suite_has_enough_cases() {
        assert!(CASES.len() >= 30, "only {} cases", CASES.len());
    }

    #[test]
    fn case_names_are_unique() {
        let names: HashSet<&str> = CASES.iter().map(Case::name).collect();
        assert_eq!(names.len(), CASES.len());
    }

    #[test]
    fn every_case_states_its_rule() {
        for case in CASES {
            assert!(case.rule().len() > 20, "{} has no rule text", case.name());
            assert!(
                !case.rule().starts_with(' '),
                "{} rule is not trimmed",
                case.name()
            );
        }
    }

    #[test]
    fn case_lookup_by_name() {
        let found = case("begin_acquires_fresh_key").expect("the case exists");
        assert_eq!(found.name(), "begin_acquires_fresh_key");
        assert!(case("no_such_case").is_none());
    }
}
