//! The store handle and its [`IdempotencyStore`] implementation.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use idem_core::{BeginOutcome, Error, Fingerprint, IdempotencyKey, IdempotencyStore, Lease, Record, Ttl};
use tokio::sync::oneshot;

use crate::BACKEND;
use crate::builder::SqliteStoreBuilder;
use crate::ops::{self, OpSettings};
use crate::pool::Pool;

/// An idempotency-key store in one SQLite file (or a private in-memory database).
///
/// Cloning is cheap: clones share the connections. See the [crate docs](crate) for the clock, durability
/// and multi-process rules.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    pool: Arc<Pool>,
    settings: Arc<OpSettings>,
    max_response_bytes: usize,
    /// Dropped with the last clone of the store, which stops the background purge task.
    _purge_stop: Option<oneshot::Sender<()>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("connections", &self.inner.pool.size())
            .field("max_response_bytes", &self.inner.max_response_bytes)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) the database at `path` with the default settings of [`SqliteStoreBuilder`].
    ///
    /// # Errors
    /// As [`SqliteStoreBuilder::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::builder(path).open().await
    }

    /// Starts the settings of a store on the file at `path`. The path `":memory:"` opens a private in-memory
    /// database, as [`SqliteStore::in_memory`] does. Other paths are file names. A path that starts
    /// with `file:` is rejected at open, because SQLite would read it as a URI such as `file:idem.db?mode=ro`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder::new(path.as_ref())
    }

    /// Starts the settings of a store in a private in-memory database with exactly one connection. Its
    /// records are lost when the last clone of the store is dropped.
    pub fn in_memory() -> SqliteStoreBuilder {
        Self::builder(":memory:")
    }

    pub(crate) fn start(
        path: PathBuf,
        pool: Pool,
        settings: OpSettings,
        max_response_bytes: usize,
        purge_interval: Option<Duration>,
    ) -> Self {
        let (stop, stopped) = match purge_interval {
            Some(_) => {
                let (stop, stopped) = oneshot::channel();
                (Some(stop), Some(stopped))
            }
            None => (None, None),
        };
        let store = Self {
            inner: Arc::new(Inner {
                path,
                pool: Arc::new(pool),
                settings: Arc::new(settings),
                max_response_bytes,
                _purge_stop: stop,
            }),
        };
        if let (Some(interval), Some(stopped)) = (purge_interval, stopped) {
            tokio::spawn(purge_periodically(
                Arc::downgrade(&store.inner),
                interval,
                stopped,
            ));
        }
        store
    }

    #[cfg(test)]
    pub(crate) fn connection_count(&self) -> usize {
        self.inner.pool.size()
    }

    #[cfg(test)]
    pub(crate) async fn with_connection<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        Pool::run(&self.inner.pool, "test", move |connection| Ok(work(connection)?)).await
    }
}

/// Calls purge every `interval` until the store is gone. It holds only a weak reference between runs, so it
/// never keeps the store open by itself.
async fn purge_periodically(store: Weak<Inner>, interval: Duration, mut stopped: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            () = tokio::time::sleep(interval) => {}
        }
        let Some(inner) = store.upgrade() else { break };
        let store = SqliteStore { inner };
        if let Err(error) = store.purge().await {
            tracing::warn!(backend = BACKEND, path = %store.inner.path.display(), %error, "background purge failed");
        }
    }
    tracing::debug!(backend = BACKEND, "background purge stopped");
}

#[idem_core::async_trait]
impl IdempotencyStore for SqliteStore {
    async fn begin(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease_ttl: Ttl,
    ) -> idem_core::Result<BeginOutcome> {
        let settings = Arc::clone(&self.inner.settings);
        let key = key.clone();
        let fingerprint = fingerprint.clone();
        Pool::run(&self.inner.pool, "begin", move |connection| {
            ops::begin(connection, &settings, key, fingerprint, lease_ttl)
        })
        .await
    }

    async fn complete(&self, lease: &Lease, response: &[u8], retention: Ttl) -> idem_core::Result<()> {
        let limit = self.inner.max_response_bytes;
        if response.len() > limit {
            tracing::debug!(
                backend = BACKEND,
                key = %lease.key().label(),
                response_bytes = response.len(),
                limit,
                "complete: response too large, lease still held"
            );
            return Err(Error::ResponseTooLarge {
                size: response.len(),
                limit,
            });
        }
        let settings = Arc::clone(&self.inner.settings);
        let lease = lease.clone();
        let response = response.to_vec();
        Pool::run(&self.inner.pool, "complete", move |connection| {
            ops::complete(connection, &settings, &lease, &response, retention)
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> idem_core::Result<()> {
        let settings = Arc::clone(&self.inner.settings);
        let lease = lease.clone();
        Pool::run(&self.inner.pool, "release", move |connection| {
            ops::release(connection, &settings, &lease)
        })
        .await
    }

    async fn renew(&self, lease: &Lease, lease_ttl: Ttl) -> idem_core::Result<Duration> {
        let settings = Arc::clone(&self.inner.settings);
        let lease = lease.clone();
        Pool::run(&self.inner.pool, "renew", move |connection| {
            ops::renew(connection, &settings, &lease, lease_ttl)
        })
        .await
    }

    async fn lookup(&self, key: &IdempotencyKey) -> idem_core::Result<Option<Record>> {
        let settings = Arc::clone(&self.inner.settings);
        let key = key.clone();
        Pool::run(&self.inner.pool, "lookup", move |connection| {
            ops::lookup(connection, &settings, &key)
        })
        .await
    }

    async fn delete(&self, key: &IdempotencyKey) -> idem_core::Result<bool> {
        let settings = Arc::clone(&self.inner.settings);
        let key = key.clone();
        Pool::run(&self.inner.pool, "delete", move |connection| {
            ops::delete(connection, &settings, &key)
        })
        .await
    }

    async fn purge(&self) -> idem_core::Result<u64> {
        let settings = Arc::clone(&self.inner.settings);
        Pool::run(&self.inner.pool, "purge", move |connection| {
            ops::purge(connection, &settings)
        })
        .await
    }

    fn max_response_bytes(&self) -> usize {
        self.inner.max_response_bytes
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}
