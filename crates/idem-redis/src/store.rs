//! The store handle and its [`IdempotencyStore`] implementation.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idem_core::{
    BeginOutcome, ClaimRecord, CompletedRecord, Error, Fingerprint, IdempotencyKey, IdempotencyStore, Lease,
    Record, Ttl, async_trait,
};
use redis::{RedisError, RetryMethod, Value};

use crate::BACKEND;
use crate::builder::RedisStoreBuilder;
use crate::connection::Connection;
use crate::keys;
use crate::scripts::{
    BEGIN_SCRIPT, COMPLETE_SCRIPT, DELETE_SCRIPT, LOOKUP_SCRIPT, RELEASE_SCRIPT, RENEW_SCRIPT, Reply,
    UnexpectedReply,
};

/// Validated settings that every call reads.
pub(crate) struct Settings {
    pub(crate) key_prefix: String,
    pub(crate) grace_ms: u64,
    pub(crate) max_response_bytes: usize,
    pub(crate) operation_timeout: Duration,
    /// Replicas and timeout in ms of `WAIT` after writes.
    pub(crate) wait_for_replicas: Option<(u32, u64)>,
}

/// An idempotency-key store on one Redis server or a Redis Cluster.
///
/// Cloning is cheap: clones share one connection. See the [crate docs](crate) for the clock, durability,
/// failover and key layout.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Connection,
    settings: Settings,
    /// The URLs with passwords replaced by `***`; the only form ever shown.
    redacted_urls: Vec<String>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.inner.settings;
        f.debug_struct("RedisStore")
            .field("urls", &self.inner.redacted_urls)
            .field(
                "cluster",
                &matches!(self.inner.connection, Connection::Cluster(_)),
            )
            .field("key_prefix", &settings.key_prefix)
            .field("operation_timeout", &settings.operation_timeout)
            .field("max_response_bytes", &settings.max_response_bytes)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the server at `url` with the default settings of [`RedisStoreBuilder`].
    ///
    /// # Errors
    /// As [`RedisStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::builder(url).connect().await
    }

    /// Starts the settings of a store on one server (or a primary behind a failover proxy). `url` is
    /// `redis://[user:password@]host[:port][/db]`, `rediss://` for TLS, or `redis+unix:///path`.
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder::single(url)
    }

    /// Starts the settings of a store on a Redis Cluster. `urls` are `redis://` or `rediss://` URLs of one or
    /// more nodes; the client discovers the others from them. All must use the same password and TLS mode.
    pub fn cluster_builder<I, S>(urls: I) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisStoreBuilder::cluster(urls.into_iter().map(Into::into).collect())
    }

    pub(crate) fn new(connection: Connection, settings: Settings, redacted_urls: Vec<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                connection,
                settings,
                redacted_urls,
            }),
        }
    }

    /// Returns the name of the Redis hash that stores `key`'s record: the key prefix, then the hex SHA-256
    /// digest of the key in braces (a Redis Cluster hash tag). For operators who inspect records with
    /// `redis-cli`.
    pub fn record_key(&self, key: &IdempotencyKey) -> String {
        keys::record_key(&self.inner.settings.key_prefix, key)
    }

    /// Runs `call` under the operation timeout, turning a driver error into [`Error::Unavailable`].
    async fn run<T, F>(&self, operation: &'static str, call: F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>> + Send,
    {
        let timeout = self.inner.settings.operation_timeout;
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => {
                tracing::debug!(backend = BACKEND, operation, ?timeout, "timed out");
                Err(Error::unavailable(
                    BACKEND,
                    operation,
                    true,
                    format!("no answer from Redis within the operation timeout of {timeout:?}"),
                ))
            }
        }
    }

    async fn invoke(
        &self,
        operation: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<(Reply, String), Error> {
        let value: Value = self
            .inner
            .connection
            .invoke(invocation)
            .await
            .map_err(|error| driver_error(operation, &error))?;
        Reply::new(value).map_err(|error| unexpected(operation, error))
    }

    /// Runs `WAIT` when configured, after a write to `redis_key`. Returns an error naming the shortfall.
    async fn wait_for_replicas(&self, operation: &'static str, redis_key: &str) -> Result<(), Error> {
        let Some((replicas, timeout_ms)) = self.inner.settings.wait_for_replicas else {
            return Ok(());
        };
        let acknowledged = self
            .inner
            .connection
            .wait_for_replicas(redis_key, replicas, timeout_ms)
            .await
            .map_err(|error| driver_error(operation, &error))?;
        if acknowledged >= u64::from(replicas) {
            return Ok(());
        }
        tracing::warn!(
            backend = BACKEND,
            operation,
            acknowledged,
            replicas,
            "too few replicas acknowledged the write"
        );
        Err(Error::unavailable(
            BACKEND,
            operation,
            true,
            format!(
                "{acknowledged} of {replicas} required replicas acknowledged the write within {timeout_ms} ms"
            ),
        ))
    }

    fn corrupt(&self, key: &IdempotencyKey, reply: &mut Reply, operation: &'static str) -> Error {
        let reason = reply
            .text()
            .unwrap_or_else(|_| "the script gave no reason".to_owned());
        let label = key.label();
        tracing::error!(
            backend = BACKEND,
            key = %label,
            redis_key = %self.record_key(key),
            operation,
            %reason,
            "corrupt record"
        );
        Error::CorruptRecord { key: label, reason }
    }

    async fn begin_inner(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease_ttl: Ttl,
    ) -> Result<BeginOutcome, Error> {
        let redis_key = self.record_key(key);
        let nonce = begin_nonce().to_string();
        let mut invocation = BEGIN_SCRIPT.prepare_invoke();
        invocation
            .key(&redis_key)
            .arg(fingerprint.as_bytes())
            .arg(lease_ttl.as_millis())
            .arg(self.inner.settings.grace_ms)
            .arg(&nonce)
            .arg(token_floor());
        let (mut reply, tag) = self.invoke("begin", &invocation).await?;
        let label = key.label();
        let parsed = (|| -> Result<BeginOutcome, UnexpectedReply> {
            Ok(match tag.as_str() {
                "acquired" => {
                    let token = reply.uint()?;
                    LAST_TOKEN.fetch_max(token, Ordering::Relaxed);
                    let attempt = reply.attempt()?;
                    let previous_token = reply.uint()?;
                    let lapsed_for = reply.millis()?;
                    if previous_token > 0 {
                        tracing::warn!(
                            backend = BACKEND,
                            key = %label,
                            attempt,
                            previous_fencing_token = previous_token,
                            fencing_token = token,
                            ?lapsed_for,
                            "begin: took over a lapsed claim; the previous holder's lease is dead"
                        );
                    } else {
                        tracing::debug!(backend = BACKEND, key = %label, fencing_token = token, attempt, "begin: acquired");
                    }
                    BeginOutcome::Acquired(Lease::new(
                        key.clone(),
                        fingerprint.clone(),
                        token,
                        attempt,
                        lease_ttl,
                    ))
                }
                "completed" => {
                    let response = reply.bytes()?;
                    let remaining = reply.millis()?;
                    let age = reply.millis()?;
                    tracing::debug!(
                        backend = BACKEND,
                        key = %label,
                        response_bytes = response.len(),
                        "begin: completed, replaying"
                    );
                    BeginOutcome::Completed(CompletedRecord::new(
                        fingerprint.clone(),
                        response,
                        remaining,
                        age,
                    ))
                }
                "in_progress" => {
                    let retry_after = reply.millis()?;
                    let attempt = reply.attempt()?;
                    tracing::debug!(backend = BACKEND, key = %label, ?retry_after, attempt, "begin: in progress");
                    BeginOutcome::InProgress { retry_after, attempt }
                }
                "mismatch" => {
                    tracing::debug!(backend = BACKEND, key = %label, "begin: fingerprint mismatch");
                    BeginOutcome::FingerprintMismatch
                }
                other => return Err(UnexpectedReply(format!("unknown tag {other:?}"))),
            })
        })();
        if tag == "corrupt" {
            return Err(self.corrupt(key, &mut reply, "begin"));
        }
        let outcome = parsed.map_err(|error| unexpected("begin", error))?;

        if let BeginOutcome::Acquired(lease) = &outcome
            && let Err(error) = self.wait_for_replicas("begin", &redis_key).await
        {
            // The claim may not survive a failover, so the caller must not run the work under it. Releasing
            // lets a retry run at once; if the release fails too, the claim lapses at its deadline.
            if let Err(release_error) = self.release_inner(lease).await {
                tracing::warn!(
                    backend = BACKEND,
                    key = %label,
                    error = %release_error,
                    "begin: releasing the claim that too few replicas acknowledged failed; it lapses at its deadline"
                );
            }
            return Err(error);
        }
        Ok(outcome)
    }

    async fn complete_inner(&self, lease: &Lease, response: &[u8], retention: Ttl) -> Result<(), Error> {
        let redis_key = self.record_key(lease.key());
        let mut invocation = COMPLETE_SCRIPT.prepare_invoke();
        invocation
            .key(&redis_key)
            .arg(lease.fencing_token())
            .arg(response)
            .arg(retention.as_millis());
        let (mut reply, tag) = self.invoke("complete", &invocation).await?;
        let label = lease.key().label();
        match tag.as_str() {
            "stored" => {
                tracing::debug!(
                    backend = BACKEND,
                    key = %label,
                    fencing_token = lease.fencing_token(),
                    response_bytes = response.len(),
                    "complete: stored"
                );
                self.wait_for_replicas("complete", &redis_key).await
            }
            "unchanged" => {
                tracing::debug!(
                    backend = BACKEND,
                    key = %label,
                    fencing_token = lease.fencing_token(),
                    "complete: already stored by this lease, unchanged"
                );
                self.wait_for_replicas("complete", &redis_key).await
            }
            "lost" => Err(lease_lost("complete", lease)),
            "corrupt" => Err(self.corrupt(lease.key(), &mut reply, "complete")),
            other => Err(unexpected(
                "complete",
                UnexpectedReply(format!("unknown tag {other:?}")),
            )),
        }
    }

    async fn release_inner(&self, lease: &Lease) -> Result<(), Error> {
        let redis_key = self.record_key(lease.key());
        let mut invocation = RELEASE_SCRIPT.prepare_invoke();
        invocation.key(&redis_key).arg(lease.fencing_token());
        let (mut reply, tag) = self.invoke("release", &invocation).await?;
        let label = lease.key().label();
        match tag.as_str() {
            "released" => {
                tracing::debug!(
                    backend = BACKEND,
                    key = %label,
                    fencing_token = lease.fencing_token(),
                    "release: claim removed"
                );
                Ok(())
            }
            "gone" => {
                tracing::debug!(backend = BACKEND, key = %label, "release: already gone");
                Ok(())
            }
            "lost" => Err(lease_lost("release", lease)),
            "corrupt" => Err(self.corrupt(lease.key(), &mut reply, "release")),
            other => Err(unexpected(
                "release",
                UnexpectedReply(format!("unknown tag {other:?}")),
            )),
        }
    }

    async fn renew_inner(&self, lease: &Lease, lease_ttl: Ttl) -> Result<Duration, Error> {
        let redis_key = self.record_key(lease.key());
        let mut invocation = RENEW_SCRIPT.prepare_invoke();
        invocation
            .key(&redis_key)
            .arg(lease.fencing_token())
            .arg(lease_ttl.as_millis())
            .arg(self.inner.settings.grace_ms);
        let (mut reply, tag) = self.invoke("renew", &invocation).await?;
        match tag.as_str() {
            "renewed" => {
                let remaining = reply.millis().map_err(|error| unexpected("renew", error))?;
                tracing::debug!(
                    backend = BACKEND,
                    key = %lease.key().label(),
                    fencing_token = lease.fencing_token(),
                    ?remaining,
                    "renew: lease extended"
                );
                Ok(remaining)
            }
            "lost" => Err(lease_lost("renew", lease)),
            "corrupt" => Err(self.corrupt(lease.key(), &mut reply, "renew")),
            other => Err(unexpected(
                "renew",
                UnexpectedReply(format!("unknown tag {other:?}")),
            )),
        }
    }

    async fn lookup_inner(&self, key: &IdempotencyKey) -> Result<Option<Record>, Error> {
        let redis_key = self.record_key(key);
        let mut invocation = LOOKUP_SCRIPT.prepare_invoke();
        invocation.key(&redis_key);
        let (mut reply, tag) = self.invoke("lookup", &invocation).await?;
        if tag == "corrupt" {
            return Err(self.corrupt(key, &mut reply, "lookup"));
        }
        let record = (|| -> Result<Option<Record>, UnexpectedReply> {
            Ok(match tag.as_str() {
                "none" => None,
                "claim" => {
                    let fingerprint = reply.fingerprint()?;
                    let token = reply.uint()?;
                    let attempt = reply.attempt()?;
                    let remaining = reply.millis()?;
                    let age = reply.millis()?;
                    Some(Record::InProgress(ClaimRecord::new(
                        fingerprint,
                        token,
                        attempt,
                        remaining,
                        age,
                    )))
                }
                "completed" => {
                    let fingerprint = reply.fingerprint()?;
                    let response = reply.bytes()?;
                    let remaining = reply.millis()?;
                    let age = reply.millis()?;
                    Some(Record::Completed(CompletedRecord::new(
                        fingerprint,
                        response,
                        remaining,
                        age,
                    )))
                }
                other => return Err(UnexpectedReply(format!("unknown tag {other:?}"))),
            })
        })()
        .map_err(|error| unexpected("lookup", error))?;
        tracing::debug!(
            backend = BACKEND,
            key = %key.label(),
            found = match &record {
                None => "none",
                Some(Record::InProgress(_)) => "in progress",
                Some(_) => "completed",
            },
            "lookup"
        );
        Ok(record)
    }

    async fn delete_inner(&self, key: &IdempotencyKey) -> Result<bool, Error> {
        let redis_key = self.record_key(key);
        let mut invocation = DELETE_SCRIPT.prepare_invoke();
        invocation.key(&redis_key);
        let value: Value = self
            .inner
            .connection
            .invoke(&invocation)
            .await
            .map_err(|error| driver_error("delete", &error))?;
        let existed = match value {
            Value::Array(items) if items.len() == 1 => matches!(items[0], Value::Int(1)),
            other => {
                return Err(unexpected(
                    "delete",
                    UnexpectedReply(format!("expected [0] or [1], got {other:?}")),
                ));
            }
        };
        tracing::debug!(backend = BACKEND, key = %key.label(), existed, "delete");
        Ok(existed)
    }
}

#[async_trait]
impl IdempotencyStore for RedisStore {
    async fn begin(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease_ttl: Ttl,
    ) -> Result<BeginOutcome, Error> {
        self.run("begin", self.begin_inner(key, fingerprint, lease_ttl))
            .await
    }

    async fn complete(&self, lease: &Lease, response: &[u8], retention: Ttl) -> Result<(), Error> {
        let limit = self.inner.settings.max_response_bytes;
        if response.len() > limit {
            // Checked before sending, so the claim stays as it is and the caller can still release it.
            return Err(Error::ResponseTooLarge {
                size: response.len(),
                limit,
            });
        }
        self.run("complete", self.complete_inner(lease, response, retention))
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        self.run("release", self.release_inner(lease)).await
    }

    async fn renew(&self, lease: &Lease, lease_ttl: Ttl) -> Result<Duration, Error> {
        self.run("renew", self.renew_inner(lease, lease_ttl)).await
    }

    async fn lookup(&self, key: &IdempotencyKey) -> Result<Option<Record>, Error> {
        self.run("lookup", self.lookup_inner(key)).await
    }

    async fn delete(&self, key: &IdempotencyKey) -> Result<bool, Error> {
        self.run("delete", self.delete_inner(key)).await
    }

    /// Returns 0 at once: Redis drops each record at its expiry by itself.
    async fn purge(&self) -> Result<u64, Error> {
        Ok(0)
    }

    fn max_response_bytes(&self) -> usize {
        self.inner.settings.max_response_bytes
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}

/// The largest fencing token this process was granted, on any key and any store.
static LAST_TOKEN: AtomicU64 = AtomicU64::new(0);

/// Returns the lowest token the next begin of this process may grant. The record alone keeps tokens unique
/// per key. This floor also keeps apart the leases that one process acquires on different keys in the same
/// millisecond.
fn token_floor() -> u64 {
    LAST_TOKEN.load(Ordering::Relaxed).saturating_add(1)
}

/// Returns a value that distinguishes one begin call from every other, so that a begin the client sent twice
/// (a retry after a lost reply) gets its own lease back instead of "in progress".
fn begin_nonce() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    RandomState::new().hash_one((count, nanos, std::process::id()))
}

fn lease_lost(operation: &str, lease: &Lease) -> Error {
    let label = lease.key().label();
    tracing::debug!(
        backend = BACKEND,
        key = %label,
        fencing_token = lease.fencing_token(),
        "{operation}: lease lost"
    );
    Error::LeaseLost {
        key: label,
        fencing_token: lease.fencing_token(),
    }
}

/// Returns whether repeating a call that failed with `error` can succeed: connection and timeout failures, a
/// cluster in reconfiguration, a server loading its data or busy with a script.
pub(crate) fn is_retryable(error: &RedisError) -> bool {
    if matches!(error.code(), Some("BUSY" | "LOADING" | "OOM")) {
        return true;
    }
    // A rejected password or user stays rejected until the configuration changes.
    if matches!(error.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
        || error.kind() == redis::ErrorKind::AuthenticationFailed
        || error.to_string().contains("without any password configured")
    {
        return false;
    }
    !matches!(error.retry_method(), RetryMethod::NoRetry)
}

fn driver_error(operation: &'static str, error: &RedisError) -> Error {
    let retryable = is_retryable(error);
    tracing::debug!(backend = BACKEND, operation, retryable, %error, "Redis call failed");
    Error::unavailable(BACKEND, operation, retryable, error.clone())
}

fn unexpected(operation: &'static str, error: UnexpectedReply) -> Error {
    tracing::error!(backend = BACKEND, operation, %error, "unexpected script reply");
    Error::unavailable(BACKEND, operation, false, error)
}
