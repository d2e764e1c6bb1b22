//! SQLite backend of idem: an [`IdempotencyStore`](idem_core::IdempotencyStore) in one database file that
//! several connections and processes share.
//!
//! ```
//! use std::sync::Arc;
//!
//! use idem_core::{Fingerprint, IdempotencyKey, RunOutcome, Runner};
//! use idem_sqlite::SqliteStore;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let dir = tempfile::tempdir()?;
//!     let store = SqliteStore::open(dir.path().join("idem.db")).await?;
//!     let runner = Runner::new(Arc::new(store));
//!     let key = IdempotencyKey::new("account-42", "order-7-charge")?;
//!     let fingerprint = Fingerprint::from_parts(&[b"POST", b"/charges", br#"{"amount":1200}"#]);
//!
//!     let charge = |lease: idem_core::LeaseContext| async move {
//!         Ok::<_, std::io::Error>(format!("charge-{}", lease.fencing_token()))
//!     };
//!     let first = runner.run(&key, &fingerprint, charge).await?;
//!     let retry = runner.run(&key, &fingerprint, charge).await?;
//!
//!     assert!(matches!(first, RunOutcome::Executed(_)));
//!     assert!(matches!(retry, RunOutcome::Replayed(_)));
//!     assert_eq!(first.value(), retry.value());
//!     Ok(())
//! }
//! ```
//!
//! # Clock
//!
//! Every deadline is an integer count of milliseconds on the store's [`Clock`](idem_core::Clock), written
//! into the row by the process that writes it. The default, [`SystemClock`](idem_core::SystemClock), is the
//! wall clock since the Unix epoch, so that processes on one host agree. Because it is a wall clock, a step
//! moves every deadline. A clock stepped forwards ends leases and retention early: a claim can then be taken
//! over while its holder still works, and only the fencing token stops the old holder downstream. A clock
//! stepped backwards extends leases and retention. Keep the host's clock disciplined so that it slews rather
//! than steps. A record expires
//! at its deadline instant: at `now >= deadline`, not one millisecond later. Tests inject a
//! [`ManualClock`](idem_core::ManualClock) with [`SqliteStoreBuilder::clock`].
//!
//! # Durability
//!
//! The database runs in WAL mode. With the default [`Synchronous::Normal`], a completed record survives a
//! crash or kill of the process, but the last commits can be lost when the OS crashes or power fails,
//! because the WAL is synced only at checkpoints (SQLite documentation of `PRAGMA synchronous`). [`Synchronous::Full`] syncs at every commit and survives
//! both, at one fsync per write. A lost commit means a retry runs the work again, so pick `Full` where that
//! costs more than an fsync.
//!
//! # Several connections and processes
//!
//! Any number of stores, in one process or many, can open the same file; they see one state. Each
//! operation is one short `BEGIN IMMEDIATE` transaction, which takes SQLite's single write lock before it
//! reads, so a begin's read and write are atomic against every other connection: among concurrent begins on
//! one key exactly one acquires. No transaction stays open while the caller's work runs. A writer that finds
//! the lock taken waits up to the busy timeout ([`SqliteStoreBuilder::busy_timeout`], default 5 s) and then
//! fails with a retryable [`Error::Unavailable`](idem_core::Error::Unavailable), never with *acquired*.
//!
//! WAL needs shared memory between the processes, so the file must be on a local file system, not on a
//! network share. Processes that open a new file at the same moment are safe: the switch to WAL retries
//! until the busy timeout, and the schema is created inside an immediate transaction.
//!
//! SQLite calls block, so the store runs them on tokio's blocking thread pool, each on one of a fixed set
//! of connections ([`SqliteStoreBuilder::connections`], default 4); async callers wait for a free connection
//! without blocking the runtime. A `":memory:"` database belongs to the one connection that opened it, so
//! [`SqliteStore::in_memory`] (or the path `":memory:"`) always uses exactly one connection, and its records
//! are gone when the store is dropped.
//!
//! # Lapsed claims and fencing tokens
//!
//! A claim whose lease deadline has passed is lapsed: a begin with the same fingerprint takes it over
//! (attempt + 1, new fencing token). Until then, and for a grace period after the deadline
//! ([`SqliteStoreBuilder::lapsed_claim_grace`], default 1 hour), the holder can still complete, renew or
//! release it. After the grace period the claim counts as absent, so a begin acquires it as attempt 1. The
//! grace period is written into the row when the claim is made or renewed, so processes with different
//! settings agree on each row.
//!
//! Fencing tokens come from one counter per file, incremented in the same transaction that grants the lease.
//! They increase strictly in the order leases are granted, across all keys, and a key never sees a token
//! twice, also after release, delete, expiry or purge.
//!
//! # Schema versions
//!
//! The schema version is kept in `PRAGMA user_version` (currently 1). Opening a file with version 0 creates
//! the tables; a version newer than this code knows fails to open with a message naming both versions,
//! rather than misreading the rows. A row that does not decode (unknown state, a fingerprint over 64 bytes,
//! a NULL or wrongly typed column) is [`Error::CorruptRecord`](idem_core::Error::CorruptRecord) naming the
//! key, logged at error; [`delete`](idem_core::IdempotencyStore::delete) still removes it.
//!
//! # Purge
//!
//! SQLite does not expire rows by itself. Expired rows count as absent at once, but they stay in the file
//! until [`purge`](idem_core::IdempotencyStore::purge) deletes them: completed records past retention and
//! claims past their grace period, never a live or lapsed claim within its grace. Purge deletes at most
//! [`SqliteStoreBuilder::purge_batch_size`] rows (default 1000) per transaction, so other writers get the
//! lock between batches, and repeats until none are left. [`SqliteStoreBuilder::purge_interval`] runs it
//! from a background task.
//!
//! # Logs
//!
//! With `tracing`: each operation and its outcome at debug, takeovers at warn, corrupt rows at error, failed
//! background purges at warn. Keys appear only as their label (scope and short hash); response bytes never.

mod builder;
mod ops;
mod pool;
mod row;
mod schema;
mod store;

pub use builder::{SqliteStoreBuilder, Synchronous};
pub use store::SqliteStore;

/// The backend name in errors and logs.
pub(crate) const BACKEND: &str = "sqlite";

#[cfg(test)]
mod tests;
