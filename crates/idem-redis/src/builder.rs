//! Store settings, their validation, and connecting.

use std::fmt;
use std::time::Duration;

use idem_core::{DEFAULT_LAPSED_CLAIM_GRACE, DEFAULT_MAX_RESPONSE_BYTES, Error, InputField, Ttl};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;

use crate::BACKEND;
use crate::connection::Connection;
use crate::keys::{self, DEFAULT_KEY_PREFIX};
use crate::store::{RedisStore, Settings};
use crate::url;

/// Default time to open a TCP (and TLS) connection to a server.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default time to wait for the reply to one command.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default overall deadline of one store call, reconnects and client retries included.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest accepted response limit: 512 MiB, Redis's default `proto-max-bulk-len`.
pub const MAX_RESPONSE_LIMIT: usize = 512 * 1024 * 1024;

/// Where the store connects.
#[derive(Clone)]
enum Target {
    Single(String),
    Cluster(Vec<String>),
}

/// Settings of a [`RedisStore`]. Every setter takes and returns the builder; [`RedisStoreBuilder::connect`]
/// validates them all.
#[derive(Clone)]
pub struct RedisStoreBuilder {
    target: Target,
    key_prefix: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    operation_timeout: Duration,
    lapsed_claim_grace: Duration,
    max_response_bytes: usize,
    wait_for_replicas: Option<(u32, Duration)>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("urls", &self.redacted_urls())
            .field("cluster", &matches!(self.target, Target::Cluster(_)))
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("lapsed_claim_grace", &self.lapsed_claim_grace)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("wait_for_replicas", &self.wait_for_replicas)
            .finish()
    }
}

impl RedisStoreBuilder {
    pub(crate) fn single(url: &str) -> Self {
        Self::new(Target::Single(url.to_owned()))
    }

    pub(crate) fn cluster(urls: Vec<String>) -> Self {
        Self::new(Target::Cluster(urls))
    }

    fn new(target: Target) -> Self {
        Self {
            target,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            lapsed_claim_grace: DEFAULT_LAPSED_CLAIM_GRACE,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            wait_for_replicas: None,
        }
    }

    /// Sets the prefix of every Redis key the store writes, so that applications on one server stay apart.
    /// Default: `idem:`. 1 to 64 bytes of printable characters, without spaces or braces.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets how long one attempt to open a connection (TCP, TLS and `AUTH`) may take, and the deadline of
    /// the whole [`RedisStoreBuilder::connect`] call. Default: 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how long the client waits for the reply to one command. Default: 1 s. With
    /// [`RedisStoreBuilder::wait_for_replicas`] it must be longer than the replica timeout.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets the overall deadline of one store call, including reconnects and the cluster client's retries.
    /// A call past it fails with a retryable [`Error::Unavailable`]. Default: 2 s.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Sets how long a lapsed claim is kept after its lease deadline, so that its holder can still complete
    /// it when nobody took it over. After that it counts as absent and Redis drops it. Default:
    /// [`DEFAULT_LAPSED_CLAIM_GRACE`] (1 hour); at least 1 ms, at most [`Ttl::MAX`].
    pub fn lapsed_claim_grace(mut self, grace: Duration) -> Self {
        self.lapsed_claim_grace = grace;
        self
    }

    /// Sets the largest response that complete accepts, in bytes, checked before anything is sent. Default:
    /// [`DEFAULT_MAX_RESPONSE_BYTES`] (1 MiB); at most [`MAX_RESPONSE_LIMIT`] (512 MiB, Redis's default
    /// `proto-max-bulk-len`).
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Runs `WAIT replicas timeout` after each begin that acquires and each complete that stores, and fails
    /// the call with a retryable [`Error::Unavailable`] when fewer replicas acknowledged the write in time.
    /// A begin that fails this way releases its claim first. Default: off; `replicas` 0 turns it off.
    ///
    /// It costs a round trip to the replicas per write, and while `WAIT` blocks, the store's shared
    /// connection to that primary waits behind it. It narrows the window in which a failover loses an
    /// acknowledged claim, but does not close it: Redis replication stays asynchronous, and a replica that
    /// acknowledged can still lose the write or not be the one promoted.
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait_for_replicas = (replicas > 0).then_some((replicas, timeout));
        self
    }

    fn uses_tls(&self) -> bool {
        match &self.target {
            Target::Single(url) => url.starts_with("rediss://"),
            Target::Cluster(urls) => urls.iter().any(|url| url.starts_with("rediss://")),
        }
    }

    fn redacted_urls(&self) -> Vec<String> {
        match &self.target {
            Target::Single(url) => vec![url::redact(url)],
            Target::Cluster(urls) => urls.iter().map(|url| url::redact(url)).collect(),
        }
    }

    /// Validates the settings and connects. On a single server this opens one multiplexed connection
    /// that reconnects by itself; on a cluster it reads the slot map from the first node that answers.
    /// Call it inside a tokio runtime.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the setting when a URL or a setting is invalid (a URL is shown with
    /// its password replaced by `***`); a retryable [`Error::Unavailable`] when no server answers within
    /// the connect timeout.
    pub async fn connect(self) -> Result<RedisStore, Error> {
        let settings = self.validate()?;
        if self.uses_tls() {
            install_crypto_provider();
        }
        let redacted = self.redacted_urls();
        let attempt = async {
            let connection = match &self.target {
                Target::Single(url) => self.connect_single(url).await?,
                Target::Cluster(urls) => self.connect_cluster(urls).await?,
            };
            connection.ping().await?;
            Ok::<_, redis::RedisError>(connection)
        };
        // The client retries a refused connection with backoff, so the whole connect gets one deadline.
        let connection = match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                let retryable = crate::store::is_retryable(&error);
                return Err(Error::unavailable(
                    BACKEND,
                    "connect",
                    retryable,
                    format!("connecting to {} failed: {error}", redacted.join(", ")),
                ));
            }
            Err(_) => {
                return Err(Error::unavailable(
                    BACKEND,
                    "connect",
                    true,
                    format!(
                        "no answer from {} within the connect timeout of {:?}",
                        redacted.join(", "),
                        self.connect_timeout
                    ),
                ));
            }
        };
        tracing::debug!(
            backend = BACKEND,
            urls = ?redacted,
            key_prefix = %self.key_prefix,
            "connected"
        );
        Ok(RedisStore::new(connection, settings, redacted))
    }

    async fn connect_single(&self, url: &str) -> redis::RedisResult<Connection> {
        let client = redis::Client::open(url::parse(url).map_err(invalid_config)?)?;

        // The connection manager retries a failed handshake until the connect timeout, which would turn a
        // rejected password into a timeout. One direct handshake first reports it at once.
        let probe_config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout));
        let mut probe = client
            .get_multiplexed_async_connection_with_config(&probe_config)
            .await?;
        redis::cmd("PING").query_async::<()>(&mut probe).await?;
        drop(probe);

        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_max_delay(Duration::from_secs(1));
        let manager = ConnectionManager::new_with_config(client, config).await?;
        Ok(Connection::Single(manager))
    }

    async fn connect_cluster(&self, urls: &[String]) -> redis::RedisResult<Connection> {
        let mut nodes = Vec::with_capacity(urls.len());
        for url in urls {
            nodes.push(url::parse(url).map_err(invalid_config)?);
        }
        let client = ClusterClientBuilder::new(nodes)
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.response_timeout)
            .overall_response_timeout(Some(self.operation_timeout))
            .build()?;
        Ok(Connection::Cluster(client.get_async_connection().await?))
    }

    fn validate(&self) -> Result<Settings, Error> {
        match &self.target {
            Target::Single(url) => {
                url::parse(url)?;
            }
            Target::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(setting(
                        "the cluster node list is empty; pass at least one redis:// URL of a cluster node",
                    ));
                }
                for url in urls {
                    url::parse(url)?;
                }
            }
        }
        keys::validate_prefix(&self.key_prefix)?;
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
            ("operation_timeout", self.operation_timeout),
        ] {
            if value.is_zero() {
                return Err(setting(format!(
                    "{name} is zero; pass a positive duration such as 1 s"
                )));
            }
        }
        if self.lapsed_claim_grace.is_zero() {
            return Err(setting(
                "lapsed_claim_grace is zero, so the holder of a lapsed claim could never complete it; pass at least 1 ms",
            ));
        }
        let grace_ms = u64::try_from(self.lapsed_claim_grace.as_millis())
            .ok()
            .filter(|grace| *grace <= Ttl::MAX.as_millis())
            .ok_or_else(|| {
                setting(format!(
                    "lapsed_claim_grace of {:?} is longer than the maximum TTL of 100 years; pass a shorter duration",
                    self.lapsed_claim_grace
                ))
            })?;
        if self.max_response_bytes == 0 {
            return Err(setting(
                "max_response_bytes is zero, so no response could be stored and every retry would run again; \
                 pass the largest response to store in bytes, such as 1048576 (1 MiB)",
            ));
        }
        if self.max_response_bytes > MAX_RESPONSE_LIMIT {
            return Err(setting(format!(
                "max_response_bytes is {}, above the maximum of {MAX_RESPONSE_LIMIT} (Redis's default \
                 proto-max-bulk-len); pass a smaller limit",
                self.max_response_bytes
            )));
        }
        let wait = match self.wait_for_replicas {
            None => None,
            Some((_, timeout)) if timeout.is_zero() => {
                return Err(setting(
                    "the wait_for_replicas timeout is zero, which makes Redis WAIT block forever; pass a \
                     positive duration such as 100 ms",
                ));
            }
            Some((_, timeout)) if timeout >= self.response_timeout => {
                return Err(setting(format!(
                    "the wait_for_replicas timeout of {timeout:?} is not shorter than the response_timeout of \
                     {:?}, so the client would give up on WAIT first; shorten it or raise response_timeout",
                    self.response_timeout
                )));
            }
            Some((replicas, timeout)) => {
                Some((replicas, u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)))
            }
        };
        Ok(Settings {
            key_prefix: self.key_prefix.clone(),
            grace_ms,
            max_response_bytes: self.max_response_bytes,
            operation_timeout: self.operation_timeout,
            wait_for_replicas: wait,
        })
    }
}

/// Installs ring as the process's rustls crypto provider unless one is installed, because rustls panics at
/// the first TLS connection when it cannot tell which provider to use.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one first, and then that one stays, which is as good.
        // Newer rustls 0.23 releases deprecate this constructor in favour of a constant. The call still
        // works there, and the workspace lock pins a release without the deprecation.
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let _ = provider.install_default();
    }
}

fn setting(reason: impl Into<String>) -> Error {
    Error::invalid(InputField::Setting, reason)
}

/// Carries a URL error, already redacted, through the driver's error type.
fn invalid_config(error: Error) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "invalid URL",
        error.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_rejected() {
        let url = "redis://127.0.0.1:1/";
        let cases = [
            (
                "lapsed_claim_grace",
                RedisStore::builder(url).lapsed_claim_grace(Duration::ZERO),
            ),
            (
                "lapsed_claim_grace",
                RedisStore::builder(url).lapsed_claim_grace(Duration::MAX),
            ),
            (
                "max_response_bytes",
                RedisStore::builder(url).max_response_bytes(0),
            ),
            (
                "operation_timeout",
                RedisStore::builder(url).operation_timeout(Duration::ZERO),
            ),
        ];

        for (named, builder) in cases {
            let Err(error) = builder.validate() else {
                panic!("{named}: the setting was accepted");
            };
            assert!(matches!(error, Error::InvalidInput { .. }), "{named}: {error}");
            assert!(error.to_string().contains(named), "{named}: {error}");
        }
    }
}
