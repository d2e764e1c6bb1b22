//! The bridge from async callers to blocking SQLite calls: a fixed set of connections, each lent to one
//! `spawn_blocking` task at a time.

use std::sync::{Arc, Mutex, MutexGuard};

use idem_core::Error;
use rusqlite::Connection;
use rusqlite::ffi::ErrorCode;
use tokio::sync::Semaphore;

use crate::BACKEND;

/// A failure inside a blocking operation: either from the driver (mapped to [`Error::Unavailable`] with the
/// operation's name) or already a store error such as a lost lease.
#[derive(Debug)]
pub(crate) enum OpError {
    Sqlite(rusqlite::Error),
    Store(Error),
}

impl From<rusqlite::Error> for OpError {
    fn from(error: rusqlite::Error) -> Self {
        OpError::Sqlite(error)
    }
}

impl From<Error> for OpError {
    fn from(error: Error) -> Self {
        OpError::Store(error)
    }
}

impl OpError {
    pub(crate) fn into_store_error(self, operation: &'static str) -> Error {
        match self {
            OpError::Sqlite(error) => driver_error(operation, error),
            OpError::Store(error) => error,
        }
    }
}

/// Maps a driver error to [`Error::Unavailable`]. Busy and locked databases (a lock held longer than the busy
/// timeout) and I/O errors are retryable; everything else is not.
pub(crate) fn driver_error(operation: &'static str, error: rusqlite::Error) -> Error {
    let retryable = matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::SystemIoFailure)
    );
    Error::unavailable(BACKEND, operation, retryable, error)
}

/// Connections lent out one per blocking task. The semaphore holds as many permits as there are connections,
/// so a task that holds a permit always finds a connection in the list.
#[derive(Debug)]
pub(crate) struct Pool {
    connections: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    size: usize,
}

impl Pool {
    pub(crate) fn new(connections: Vec<Connection>) -> Self {
        let size = connections.len();
        Self {
            connections: Mutex::new(connections),
            permits: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// Number of connections the pool was built with.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Connection>> {
        // The list is only pushed to and popped from, so a panic elsewhere cannot leave it inconsistent.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `work` on a connection in a blocking task, so that the async runtime's threads never wait on
    /// SQLite.
    ///
    /// The task owns the connection and the permit, so a caller that drops this future does not lose the
    /// connection: the blocking task finishes (committing or rolling back its transaction) and returns it.
    pub(crate) async fn run<T, F>(pool: &Arc<Self>, operation: &'static str, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, OpError> + Send + 'static,
    {
        let permit = Arc::clone(&pool.permits)
            .acquire_owned()
            .await
            .map_err(|closed| Error::unavailable(BACKEND, operation, false, closed))?;
        let pool = Arc::clone(pool);
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut lent = Lent::take(&pool).ok_or_else(|| {
                OpError::Store(Error::unavailable(
                    BACKEND,
                    operation,
                    false,
                    "no free connection although a permit was held",
                ))
            })?;
            work(lent.connection())
        });
        match task.await {
            Ok(result) => result.map_err(|error| error.into_store_error(operation)),
            Err(join_error) => Err(Error::unavailable(BACKEND, operation, false, join_error)),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the last connection of a WAL database checkpoints it, which is file I/O: do it off the
        // runtime's threads when there is a runtime.
        let connections = std::mem::take(&mut *self.lock());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn_blocking(move || drop(connections));
        }
    }
}

/// A connection taken from the pool; it goes back on drop, also while a panic unwinds.
struct Lent<'a> {
    pool: &'a Pool,
    connection: Option<Connection>,
}

impl<'a> Lent<'a> {
    fn take(pool: &'a Pool) -> Option<Self> {
        let connection = pool.lock().pop()?;
        Some(Self {
            pool,
            connection: Some(connection),
        })
    }

    fn connection(&mut self) -> &mut Connection {
        self.connection
            .as_mut()
            .expect("a lent connection is present until drop")
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool.lock().push(connection);
        }
    }
}
