//! Redis backend of idem: an [`IdempotencyStore`](idem_core::IdempotencyStore) on one Redis server or a
//! Redis Cluster, shared by every process and host that connects to it.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use idem_core::{Fingerprint, IdempotencyKey, Runner};
//! use idem_redis::RedisStore;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let store = RedisStore::builder("redis://:password@127.0.0.1:6379/0")
//!         .key_prefix("billing:idem:")
//!         .operation_timeout(Duration::from_secs(1))
//!         .connect()
//!         .await?;
//!     let runner = Runner::new(Arc::new(store));
//!     let key = IdempotencyKey::new("account-42", "order-7-charge")?;
//!     let fingerprint = Fingerprint::from_parts(&[b"POST", b"/charges", br#"{"amount":1200}"#]);
//!
//!     let outcome = runner
//!         .run(&key, &fingerprint, |lease| async move {
//!             Ok::<_, std::io::Error>(format!("charge-{}", lease.fencing_token()))
//!         })
//!         .await?;
//!     println!("{} (replayed: {})", outcome.value(), outcome.is_replayed());
//!     Ok(())
//! }
//! ```
//!
//! A cluster takes the URLs of one or more nodes: `RedisStore::cluster_builder(["redis://10.0.0.1:7000",
//! "redis://10.0.0.2:7000"])`.
//!
//! # Atomic operations
//!
//! Every operation that reads and then writes (begin, complete, release, renew, delete) is one Lua script,
//! and lookup is one too, so Redis runs each atomically: among concurrent begins on one key, from any
//! number of clients, exactly one acquires. Scripts are sent by hash (`EVALSHA`) and loaded again when a
//! server answers `NOSCRIPT`, as it does after a restart or a failover; on a cluster the load goes to
//! every node. The scripts call `TIME` before they write, which Redis 7 allows because it replicates a
//! script's effects; on Redis 5 and 6 they switch effects replication on first.
//!
//! # Clock
//!
//! Every deadline comes from the clock of the Redis server that holds the key: scripts read `TIME` and
//! compare it with the deadlines stored in the record, so hosts with skewed clocks agree. A record is
//! expired at its deadline instant (`now >= deadline`). Redis keeps a key through its expiry millisecond,
//! so the store never relies on key expiry for that decision; `PEXPIREAT` only reclaims the memory
//! afterwards: at the lease deadline plus the lapsed-claim grace for a claim, at the retention deadline
//! for a completed record. On a cluster each primary's clock rules its own keys. A server clock stepped
//! forwards ends leases and retention early, one stepped backwards extends them.
//!
//! # Durability
//!
//! A record lives as long as the server keeps it, so durability is what the server's persistence gives:
//! none with `--save "" --appendonly no` (a restart forgets every record, so retries run again), the
//! writes since the last snapshot lost on a crash with RDB snapshots only, and none lost with
//! `appendonly yes` and `appendfsync always` (one fsync per write). `appendfsync everysec`, Redis's
//! default for AOF, can lose about the last second. A lost completed record means a retry runs the work
//! again; a lost claim means a concurrent retry can run it too.
//!
//! # Failover
//!
//! Redis replicates asynchronously. A primary can acknowledge a claim and fail before any replica has it;
//! the promoted replica then has no claim, and a retry acquires the key while the first caller still
//! works, so the work can run twice. [`RedisStoreBuilder::wait_for_replicas`] narrows that window: after
//! each begin that acquires and each complete that stores, the store runs `WAIT` and fails the call with
//! a retryable [`Error::Unavailable`](idem_core::Error::Unavailable) when too few replicas acknowledged
//! (a begin first releases its claim). It costs one round trip to the replicas per write and blocks the
//! store's shared connection to that primary meanwhile, and it does not make Redis strongly consistent:
//! the failover may still promote a replica that missed the write. Where running twice is unacceptable,
//! fence downstream writes with the lease's fencing token.
//!
//! # Connections and timeouts
//!
//! A store holds one connection, shared by its clones: on a single server a multiplexed connection that
//! reconnects by itself with backoff, on a cluster one multiplexed connection per node, routed by slot.
//! TLS and passwords come from the URL (`rediss://`, `redis://user:password@host`); the store shows URLs
//! only with the password replaced by `***`, in `Debug`, errors and logs. TLS runs on rustls; when the
//! process has no default rustls crypto provider, the first `rediss://` connect installs ring's.
//!
//! | setting | default | meaning |
//! | --- | --- | --- |
//! | [`key_prefix`](RedisStoreBuilder::key_prefix) | `idem:` | prefix of every key, to keep applications apart |
//! | [`connect_timeout`](RedisStoreBuilder::connect_timeout) | 1 s | one connection attempt, and the whole [`connect`](RedisStoreBuilder::connect) call |
//! | [`response_timeout`](RedisStoreBuilder::response_timeout) | 1 s | the reply to one command |
//! | [`operation_timeout`](RedisStoreBuilder::operation_timeout) | 2 s | one store call, including reconnects and the cluster client's retries |
//! | [`lapsed_claim_grace`](RedisStoreBuilder::lapsed_claim_grace) | 1 hour | how long a lapsed claim stays completable |
//! | [`max_response_bytes`](RedisStoreBuilder::max_response_bytes) | 1 MiB | largest response, checked before sending |
//! | [`wait_for_replicas`](RedisStoreBuilder::wait_for_replicas) | off | `WAIT` after begin and complete |
//!
//! (The redis crate's own defaults are 1 s to connect and 500 ms per reply.) A call that fails to get an
//! answer in time, or loses its connection, fails closed with a retryable
//! [`Error::Unavailable`](idem_core::Error::Unavailable), never with *acquired*. A begin that timed out may
//! still have made its claim on the server; that claim then lapses at its lease deadline.
//!
//! The cluster client retries a command after a connection error or a redirection (16 times by default),
//! so a script can run twice. Every script is safe to repeat: a begin sent twice gets its own lease back
//! (the claim carries a nonce of the call), a complete repeated with the same lease and response succeeds,
//! and a release of a claim that is already gone succeeds.
//!
//! # Keys and record layout
//!
//! Each idempotency key is one hash at `<prefix>{<hex SHA-256 of the key>}`
//! ([`RedisStore::record_key`] names it). The braces are a Redis Cluster hash tag, so every Redis key
//! that one idempotency key touches is in one slot, and the tag is a digest because scopes and keys may
//! contain braces. No key is shared between idempotency keys, so nothing crosses slots. The prefix is 1 to
//! 64 printable bytes without spaces or braces.
//!
//! The hash carries a layout version (`v` = 1). A value that the store did not write, such as a string, a
//! hash without a version, a newer version or fields that do not parse, is
//! [`Error::CorruptRecord`](idem_core::Error::CorruptRecord) naming the key, logged at error and left in
//! place; [`delete`](idem_core::IdempotencyStore::delete) removes it.
//!
//! # Fencing tokens
//!
//! A token is the server's `TIME` in milliseconds times 1024, or one more than the key's last token when
//! that is larger, and at least one more than any token this process was granted before. A removed or
//! expired record leaves its token behind (in a small tombstone, or in the record itself, which Redis keeps
//! at least 1 s past the token's millisecond), so a key never sees a token twice, also after release,
//! delete or expiry, as long as the server's clock does not step back by more than 1 s. Tokens of one key
//! increase under the same condition. Tokens of different keys may coincide when different processes
//! acquire them in the same millisecond. They fit in 53 bits until the year 2248.
//!
//! # Purge
//!
//! Redis drops expired records by itself, so [`purge`](idem_core::IdempotencyStore::purge) returns 0
//! without a round trip.
//!
//! # Logs
//!
//! With `tracing`: each operation and its outcome at debug, takeovers and replica shortfalls at warn,
//! corrupt records at error. Keys appear only as their label (scope and short hash), URLs only redacted,
//! response bytes never.

mod builder;
mod connection;
mod keys;
mod scripts;
mod store;
mod url;

pub use builder::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_OPERATION_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, MAX_RESPONSE_LIMIT,
    RedisStoreBuilder,
};
pub use store::RedisStore;

/// The backend name in errors and logs.
pub(crate) const BACKEND: &str = "redis";
