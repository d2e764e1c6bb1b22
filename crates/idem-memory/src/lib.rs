//! In-memory idempotency-key store for idem: one process, no persistence, bounded memory.
//!
//! [`MemoryStore`] implements [`idem_core::IdempotencyStore`] for a single process. It suits tests, and
//! services that run as one process and accept that a restart loses every key.
//!
//! ```
//! use std::sync::Arc;
//! use idem_core::{Fingerprint, IdempotencyKey, Runner};
//! use idem_memory::MemoryStore;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let store = MemoryStore::builder().max_claims(10_000).build()?;
//!     let runner = Runner::new(Arc::new(store.clone()));
//!     let key = IdempotencyKey::new("account-42", "order-7-charge")?;
//!     let fingerprint = Fingerprint::from_parts(&[b"POST", b"/charges", br#"{"amount":1200}"#]);
//!
//!     let first = runner
//!         .run(&key, &fingerprint, |lease| async move {
//!             Ok::<_, std::io::Error>(format!("charge-{}", lease.fencing_token()))
//!         })
//!         .await?;
//!     let retry = runner
//!         .run(&key, &fingerprint, |_lease| async move {
//!             Ok::<_, std::io::Error>("runs again".to_string())
//!         })
//!         .await?;
//!
//!     assert!(!first.is_replayed());
//!     assert!(retry.is_replayed());
//!     assert_eq!(retry.value(), first.value());
//!     assert_eq!(store.claim_count(), 0);
//!     Ok(())
//! }
//! ```
//!
//! # Durability
//!
//! None. Every claim and every completed record lives in the process's memory and is lost when the process
//! exits or crashes. After a restart, a retry of a request that already ran runs again. Use a durable
//! backend, such as `idem-sqlite`, when that is not acceptable.
//!
//! # Clock
//!
//! Every deadline (lease, grace period, retention) is read from one [`idem_core::Clock`]. By default it is
//! the process's monotonic clock ([`idem_core::MonotonicClock`]), so steps of the wall clock do not move any
//! deadline. [`MemoryStoreBuilder::clock`] injects another clock, such as a [`idem_core::ManualClock`] in
//! tests. A record is expired at its deadline instant: a claim is lapsed when `now >= lease deadline`, and
//! a completed record is gone when `now >= retention deadline`.
//!
//! Expiry is checked on every read. Expired records are not removed in the background:
//! [`idem_core::IdempotencyStore::purge`] reclaims their memory, so call it periodically (for example every
//! minute from a `tokio::time::interval` task).
//!
//! # Capacity
//!
//! - **Claims** (live and lapsed) are kept in a map of their own and are never evicted, because dropping a
//!   claim would let a second caller run the same work. At most [`MemoryStoreBuilder::max_claims`] are
//!   held (default 1 000 000). A begin that needs a new claim beyond it fails with
//!   [`idem_core::Error::StoreFull`] after reclaiming claims past their grace period. A begin that finds a
//!   completed record, a live claim or a lapsed claim to take over does not need a new claim.
//! - **Completed records** live in a [moka](https://docs.rs/moka) cache bounded by
//!   [`MemoryStoreBuilder::max_completed_bytes`] (default 256 MiB), where each record weighs its storage
//!   key, fingerprint and response in bytes. When the total is over the limit, moka evicts the least
//!   recently used records, also before their retention ends; a record heavier than the whole limit is
//!   evicted right after it is stored. A retry with an evicted key runs its work again. Each such
//!   early eviction is counted by [`MemoryStore::evicted_completed`] and logged at warn level with the key's
//!   label. Size the limit so that it stays at zero.
//! - **Responses** over [`MemoryStoreBuilder::max_response_bytes`] (default 1 MiB) are rejected at
//!   complete with [`idem_core::Error::ResponseTooLarge`], and the lease stays held.
//!
//! # Leases
//!
//! Fencing tokens come from one counter for the whole store, starting at 1, so they increase with every
//! acquired lease on any key and are never reused, also after release, delete or expiry.
//!
//! A lapsed claim stays for [`MemoryStoreBuilder::lapsed_claim_grace`] after its lease deadline (default
//! [`idem_core::DEFAULT_LAPSED_CLAIM_GRACE`], 1 hour). Until then its holder can complete, renew or release
//! it if nobody took it over, and a begin takes it over with the next attempt number. From the end of the
//! grace period on the claim counts as absent: a begin acquires attempt 1, and the old lease is lost.
//!
//! # Concurrency
//!
//! One mutex guards every state change. Operations hold it for a few map operations and never across an
//! `.await`, so the async methods never block the runtime for long. Among concurrent begins on one key, at
//! most one acquires per lease generation.
//!
//! # Logs
//!
//! With `tracing`: each operation's outcome at debug level, takeovers of lapsed claims and early evictions
//! of completed records at warn level. Keys appear only as their label (scope and a short hash); response
//! bytes never appear.

mod builder;
mod claims;
mod completed;
mod store;

pub use builder::{DEFAULT_MAX_CLAIMS, DEFAULT_MAX_COMPLETED_BYTES, MemoryStoreBuilder};
pub use store::MemoryStore;
