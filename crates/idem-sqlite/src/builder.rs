//! Store settings and opening.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use idem_core::{
    Clock, DEFAULT_LAPSED_CLAIM_GRACE, DEFAULT_MAX_RESPONSE_BYTES, Error, InputField, SystemClock, Ttl,
};

use crate::BACKEND;
use crate::ops::OpSettings;
use crate::pool::{Pool, driver_error};
use crate::schema::{self, ConnectionSettings, OpenError};
use crate::store::SqliteStore;

/// Default number of connections of a file-backed store.
const DEFAULT_CONNECTIONS: usize = 4;
/// Upper bound on connections. SQLite runs one writer at a time, so beyond a few connections only lookups
/// gain, while each connection holds file handles and a page cache.
const MAX_CONNECTIONS: usize = 64;
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_PURGE_BATCH_SIZE: usize = 1000;
/// Largest accepted response limit. SQLite's `SQLITE_MAX_LENGTH` (1,000,000,000 bytes, kept by the bundled
/// build) bounds a whole row, so this leaves 1 MB for the key, the fingerprint and the other columns.
const MAX_RESPONSE_LIMIT: usize = 999_000_000;

/// How often SQLite syncs the file to stable storage. Both modes run the database in WAL mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// `PRAGMA synchronous = NORMAL`: the WAL is synced at checkpoints, not at every commit. A committed record
    /// survives a crash of the process, but the last commits can be lost when the OS crashes or power fails.
    #[default]
    Normal,
    /// `PRAGMA synchronous = FULL`: the WAL is synced at every commit, so a committed record also survives an
    /// OS crash or power loss, at the cost of one fsync per write.
    Full,
}

/// Settings of a [`SqliteStore`]; every setter takes and returns the builder, and
/// [`SqliteStoreBuilder::open`] validates them all.
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    connections: usize,
    busy_timeout: Duration,
    synchronous: Synchronous,
    lapsed_claim_grace: Duration,
    max_response_bytes: usize,
    purge_batch_size: usize,
    purge_interval: Option<Duration>,
}

impl SqliteStoreBuilder {
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            clock: Arc::new(SystemClock),
            connections: DEFAULT_CONNECTIONS,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            synchronous: Synchronous::default(),
            lapsed_claim_grace: DEFAULT_LAPSED_CLAIM_GRACE,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            purge_batch_size: DEFAULT_PURGE_BATCH_SIZE,
            purge_interval: None,
        }
    }

    /// Sets the clock of every deadline. Default: [`SystemClock`], milliseconds since the Unix epoch, so
    /// that all processes on the file agree. Inject a [`idem_core::ManualClock`] in tests.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets how many connections the store opens (1 to 64). Default: 4. A `:memory:` store always has 1,
    /// because an in-memory database is private to its connection.
    pub fn connections(mut self, connections: usize) -> Self {
        self.connections = connections;
        self
    }

    /// Sets how long a statement waits for a lock held by another connection or process before it fails
    /// with a retryable [`Error::Unavailable`]. Default: 5 s; at most `i32::MAX` milliseconds.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Sets the durability of commits. Default: [`Synchronous::Normal`].
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Sets how long a lapsed claim is kept, counted from its lease deadline, so that its holder can still
    /// complete it when nobody took it over. After that it counts as absent. Default:
    /// [`DEFAULT_LAPSED_CLAIM_GRACE`] (1 hour); at least 1 ms, at most [`Ttl::MAX`].
    pub fn lapsed_claim_grace(mut self, grace: Duration) -> Self {
        self.lapsed_claim_grace = grace;
        self
    }

    /// Sets the largest response that complete accepts, in bytes. Default: [`DEFAULT_MAX_RESPONSE_BYTES`]
    /// (1 MiB); at most 999,000,000, because SQLite limits a row to 1,000,000,000 bytes.
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Sets how many expired rows purge deletes per transaction. Default: 1000; at least 1.
    pub fn purge_batch_size(mut self, rows: usize) -> Self {
        self.purge_batch_size = rows;
        self
    }

    /// Starts a background task on the tokio runtime that calls purge every `interval`. Default: no task.
    /// The task stops when the last clone of the store is dropped and logs failed purges at warn.
    pub fn purge_interval(mut self, interval: Duration) -> Self {
        self.purge_interval = Some(interval);
        self
    }

    /// Opens the database: creates the file if needed, switches it to WAL, migrates the schema and opens the
    /// connections. Call it inside a tokio runtime; the file work runs on the blocking thread pool.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the setting when one is out of range; [`Error::Unavailable`] when the
    /// file cannot be opened or locked within the busy timeout (retryable), or holds a schema version this
    /// code does not know (not retryable).
    pub async fn open(self) -> Result<SqliteStore, Error> {
        let in_memory = self.path.as_os_str() == ":memory:";
        let connections = if in_memory { 1 } else { self.connections };
        let settings = self.validate(connections)?;

        let path = self.path.clone();
        let busy_timeout = self.busy_timeout;
        let synchronous = self.synchronous;
        let opened = tokio::task::spawn_blocking(move || {
            let settings = ConnectionSettings {
                path: &path,
                in_memory,
                busy_timeout,
                synchronous,
            };
            schema::open_connections(settings, connections)
        })
        .await
        .map_err(|join_error| Error::unavailable(BACKEND, "open", false, join_error))?;

        let connections = opened.map_err(|error| self.open_error(error))?;
        tracing::debug!(
            backend = BACKEND,
            path = %self.path.display(),
            connections = connections.len(),
            synchronous = ?self.synchronous,
            "opened"
        );
        Ok(SqliteStore::start(
            self.path,
            Pool::new(connections),
            settings,
            self.max_response_bytes,
            self.purge_interval,
        ))
    }

    fn open_error(&self, error: OpenError) -> Error {
        let path = self.path.display();
        match error {
            OpenError::Sqlite(error) => match driver_error("open", error) {
                Error::Unavailable {
                    retryable, source, ..
                } => Error::unavailable(BACKEND, "open", retryable, format!("database {path}: {source}")),
                other => other,
            },
            OpenError::Schema(reason) => {
                Error::unavailable(BACKEND, "open", false, format!("database {path}: {reason}"))
            }
        }
    }

    fn validate(&self, connections: usize) -> Result<OpSettings, Error> {
        if self.path.as_os_str().is_empty() {
            return Err(setting(
                "the database path is empty; pass a file path, or \":memory:\" for a private in-memory store",
            ));
        }

        // The bundled SQLite is built with SQLITE_USE_URI, so it reads any name that starts with "file:" as a
        // URI whatever the open flags are. A "?mode=ro" or "?mode=memory" would then change what the store is.
        if self.path.to_string_lossy().starts_with("file:") {
            return Err(setting(format!(
                "the database path {:?} starts with \"file:\", which SQLite reads as a URI; pass a plain file path \
                 (prefix it with \"./\" if the file name really starts with \"file:\")",
                self.path
            )));
        }

        if connections == 0 || connections > MAX_CONNECTIONS {
            return Err(setting(format!(
                "connections is {connections}; pass 1 to {MAX_CONNECTIONS}"
            )));
        }

        if self.busy_timeout.as_millis() > i32::MAX as u128 {
            return Err(setting(format!(
                "busy_timeout of {:?} is longer than SQLite accepts ({} ms); pass a shorter duration",
                self.busy_timeout,
                i32::MAX
            )));
        }

        if self.lapsed_claim_grace.is_zero() {
            return Err(setting(
                "lapsed_claim_grace is zero, so the holder of a lapsed claim could never complete it; pass at least 1 ms",
            ));
        }

        let grace_ms = i64::try_from(self.lapsed_claim_grace.as_millis())
            .ok()
            .filter(|grace| (*grace as u64) <= Ttl::MAX.as_millis())
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
                "max_response_bytes is {}, above the maximum of {MAX_RESPONSE_LIMIT} that a SQLite row can hold; \
                 pass a smaller limit",
                self.max_response_bytes
            )));
        }

        let purge_batch_size = i64::try_from(self.purge_batch_size)
            .ok()
            .filter(|rows| *rows > 0)
            .ok_or_else(|| {
                setting(format!(
                    "purge_batch_size is {}; pass at least 1 row (the default is {DEFAULT_PURGE_BATCH_SIZE})",
                    self.purge_batch_size
                ))
            })?;
        if self.purge_interval.is_some_and(|interval| interval.is_zero()) {
            return Err(setting(
                "purge_interval is zero; pass a positive interval, or leave it unset for no background purge",
            ));
        }

        Ok(OpSettings {
            clock: Arc::clone(&self.clock),
            grace_ms,
            purge_batch_size,
        })
    }
}

fn setting(reason: impl Into<String>) -> Error {
    Error::invalid(InputField::Setting, reason)
}
