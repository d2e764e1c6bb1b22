//! Core of idem: keys, fingerprints, leases, records, errors, the clock seam, the store trait and the runner.
//!
//! A client sends a unique key with each logical write (an `Idempotency-Key` header, or a key derived from
//! the event that triggered the write). The first request with a key runs; every retry with that key gets
//! the stored result of the first run, until the retention period ends; after that the key is new again.
//! This crate holds no backend: pick `idem-memory`, `idem-sqlite` or another crate that implements
//! [`IdempotencyStore`], or implement it yourself and prove it with `idem-conformance`.
//!
//! ```
//! use std::sync::Arc;
//! use idem_core::{Fingerprint, IdempotencyKey, IdempotencyStore, RunOutcome, Runner};
//!
//! async fn charge(store: Arc<dyn IdempotencyStore>) -> Result<(), Box<dyn std::error::Error>> {
//!     let runner = Runner::new(store);
//!     let key = IdempotencyKey::new("account-42", "order-7-charge")?;
//!     let fingerprint = Fingerprint::from_parts(&[b"POST", b"/charges", br#"{"amount":1200}"#]);
//!
//!     let outcome = runner
//!         .run(&key, &fingerprint, |lease| async move {
//!             // Runs at most once per key and lease generation; pass the fencing token downstream.
//!             Ok::<_, std::io::Error>(format!("charge-{}", lease.fencing_token()))
//!         })
//!         .await?;
//!     println!("{} (replayed: {})", outcome.value(), outcome.is_replayed());
//!     Ok(())
//! }
//! ```
//!
//! # Terms
//!
//! - A **key** ([`IdempotencyKey`]) is a scope (tenant, account or principal, possibly empty) plus the
//!   client's key string: UTF-8, 1 to 255 bytes (bytes, not characters), no control characters. Scopes follow
//!   the same rules but may be empty. No two different (scope, key) pairs ever address the same record.
//! - A **fingerprint** ([`Fingerprint`]) is at most 64 opaque bytes that identify the request payload. The
//!   store compares fingerprints and never computes them. The empty fingerprint matches only itself.
//! - A **lease** ([`Lease`]) is the right to run the work for a key, held by the one caller whose begin
//!   acquired it. It carries a fencing token, never reused for the same key (also after release, delete or
//!   expiry), and an attempt number.
//! - A **record** ([`Record`]) is in progress (a claim), completed (a stored response), or absent. A claim
//!   before its lease deadline is **live**; at or after it, it is **lapsed**. A lapsed claim stays for a grace
//!   period that each store sets, so that its holder can still complete it, and then disappears.
//! - The **lease TTL** is how long a claim protects in-flight work; the **retention TTL** is how long a
//!   completed response is replayed. Both are [`Ttl`]s. Deadlines reach callers as remaining durations on the
//!   backend's clock, so they mean the same for a monotonic, a wall or a server clock.
//!
//! # Operations
//!
//! [`IdempotencyStore::begin`] returns exactly one [`BeginOutcome`], checked in this order:
//! 1. *fingerprint mismatch* when any record (live or lapsed claim, or completed record within retention) has
//!    another fingerprint. It changes nothing.
//! 2. *completed* with the response, byte for byte, when a completed record within retention exists.
//! 3. *in progress* with the time until the lease ends, when a live claim exists.
//! 4. *acquired* otherwise: no record, a completed record past retention, or a lapsed claim (a **takeover**:
//!    attempt + 1, a new fencing token, and the old lease is dead from then on).
//!
//! [`IdempotencyStore::complete`] stores the response while the record is in progress under the lease's
//! fencing token, including a lapsed claim that nobody took over. Repeating a successful complete with the
//! same lease and response succeeds and changes nothing, so a client library's retry is harmless. Any other
//! case is [`Error::LeaseLost`] and changes nothing. [`IdempotencyStore::release`] removes the lease's claim so
//! a retry runs at once (success when the record is already gone; lease lost when another lease or a completed
//! record holds the key). [`IdempotencyStore::renew`] moves a held lease's deadline under the same fencing
//! rule. [`IdempotencyStore::lookup`] never returns a completed record past retention.
//! [`IdempotencyStore::delete`] removes any record; [`IdempotencyStore::purge`] reclaims expired records in
//! bounded batches.
//!
//! # Rules every backend keeps
//!
//! 1. **Atomic claim.** Among concurrent begins on one key (tasks, threads, processes, hosts for shared
//!    backends) at most one acquires per lease generation: on a fresh key, a lapsed claim, or an expired
//!    completed record. Backends whose server can lose acknowledged writes document that limit.
//! 2. **Fail closed.** When the store cannot answer, the caller gets an error, never *acquired*. A record
//!    that does not decode is [`Error::CorruptRecord`] naming the key; never a panic or a replay of garbage.
//! 3. **Byte-exact replay.** Responses are opaque bytes; empty, binary and large ones (1 MiB by default,
//!    [`DEFAULT_MAX_RESPONSE_BYTES`]) come back identical. A larger one is rejected at complete with
//!    [`Error::ResponseTooLarge`] and the lease stays held.
//! 4. **Time.** A zero TTL is invalid, never "forever"; TTLs above [`Ttl::MAX`] are rejected. A record is
//!    expired at its deadline instant, not one tick later. Each backend reads one [`Clock`] for all its
//!    deadlines and documents which.
//! 5. **Capacity never breaks exactly-once silently.** No bound, eviction or sweep drops a live or lapsed
//!    claim. A bounded backend that evicts completed records early says so, counts and logs each eviction.
//! 6. **Durability is stated** by each backend.
//! 7. **Isolation.** Scopes never see each other's records; several handles on one backend share one state.
//! 8. **Versioned storage.** Each backend versions its layout; the runner puts a format byte in front of
//!    what it encodes.
//!
//! # The runner
//!
//! [`Runner::run`] begins on the key and runs the closure only when it acquires, handing it a
//! [`LeaseContext`] (fencing token, attempt, and a signal that fires if the lease is lost). It renews the
//! lease every third of the lease TTL up to a maximum run time. The output is encoded with postcard behind a
//! format byte, decoded once as a check, and stored; the result is [`RunOutcome::Executed`] or
//! [`RunOutcome::Replayed`]. If storing fails after the work ran, [`RunError::NotRecorded`] carries the
//! output. A closure error releases the key ([`Runner::run_storing_errors`] stores it instead); a panic
//! releases the key and resumes the panic; a dropped run releases the key from a spawned task, and if that
//! cannot run, the claim lapses at its deadline. A key in progress elsewhere is [`Error::InProgress`] with
//! the remaining lease time, or, with [`RunnerBuilder::wait_for_result`], a wait for the other caller's result.
//!
//! postcard is not self-describing, so the stored output type must stay compatible across deploys that
//! share a store; see [`codec`].
//!
//! # Logs
//!
//! With `tracing`: operations and outcomes at debug, takeovers at warn, corrupt records at error. Keys are
//! logged only as their scope and a short hash ([`KeyLabel`]); response bytes are never logged.

mod clock;
pub mod codec;
mod derive;
mod error;
mod fingerprint;
mod keeper;
mod key;
mod lease;
mod record;
mod runner;
mod store;
mod ttl;

pub use clock::{Clock, ManualClock, MonotonicClock, SystemClock};
pub use error::{BoxError, Error, InputField, Result};
pub use fingerprint::{Fingerprint, MAX_FINGERPRINT_BYTES};
pub use keeper::{LeaseGuard, keep_lease_renewed};
pub use key::{IdempotencyKey, KeyLabel, MAX_KEY_BYTES};
pub use lease::Lease;
pub use record::{ClaimRecord, CompletedRecord, Record};
pub use runner::{
    DEFAULT_LEASE_TTL, DEFAULT_MAX_RUN_TIME, DEFAULT_RETENTION, LeaseContext, MIN_LEASE_TTL, RunError,
    RunOutcome, Runner, RunnerBuilder,
};
pub use store::{BeginOutcome, DEFAULT_LAPSED_CLAIM_GRACE, DEFAULT_MAX_RESPONSE_BYTES, IdempotencyStore};
pub use ttl::Ttl;

/// Re-exported so that backends implement [`IdempotencyStore`] with the same macro version.
pub use async_trait::async_trait;
