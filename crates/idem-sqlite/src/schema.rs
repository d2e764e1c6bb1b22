//! Opening connections: busy timeout, WAL, synchronous mode and schema migrations.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::ffi::ErrorCode;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::Synchronous;

/// The schema version this code writes and reads, kept in `PRAGMA user_version`.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// Version 1: one row per storage key plus a meta table holding the last fencing token handed out.
///
/// `expires_at` is when the row stops counting: the lease deadline plus the grace period for a claim, the
/// retention deadline for a completed record. Purge deletes rows by it, hence the index.
const SCHEMA_V1: &str = "
CREATE TABLE idem_meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) STRICT;
INSERT INTO idem_meta (name, value) VALUES ('last_fencing_token', 0);
CREATE TABLE idem_records (
    storage_key        TEXT PRIMARY KEY NOT NULL,
    state              TEXT NOT NULL,
    fingerprint        BLOB NOT NULL,
    fencing_token      INTEGER NOT NULL,
    attempt            INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    lease_deadline     INTEGER,
    response           BLOB,
    completed_at       INTEGER,
    retention_deadline INTEGER,
    expires_at         INTEGER NOT NULL
) STRICT;
CREATE INDEX idem_records_expires_at ON idem_records (expires_at);
";

/// Path of the database and the settings applied to each connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionSettings<'a> {
    pub(crate) path: &'a Path,
    pub(crate) in_memory: bool,
    pub(crate) busy_timeout: Duration,
    pub(crate) synchronous: Synchronous,
}

/// An error while opening the database; `Schema` is a layout this code cannot read.
#[derive(Debug)]
pub(crate) enum OpenError {
    Sqlite(rusqlite::Error),
    Schema(String),
}

impl From<rusqlite::Error> for OpenError {
    fn from(error: rusqlite::Error) -> Self {
        OpenError::Sqlite(error)
    }
}

/// Opens `count` connections. The first one switches the file to WAL and migrates the schema; the others
/// only get their per-connection settings.
pub(crate) fn open_connections(
    settings: ConnectionSettings<'_>,
    count: usize,
) -> Result<Vec<Connection>, OpenError> {
    let mut connections = Vec::with_capacity(count);
    for index in 0..count {
        let mut connection = open_one(settings)?;
        if index == 0 {
            if !settings.in_memory {
                enable_wal(&connection, settings.busy_timeout)?;
            }
            migrate(&mut connection)?;
        }
        connections.push(connection);
    }
    Ok(connections)
}

fn open_one(settings: ConnectionSettings<'_>) -> Result<Connection, OpenError> {
    // No SQLITE_OPEN_URI. The bundled build still reads names that start with "file:" as URIs, so the
    // builder rejects those paths before they get here.
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(settings.path, flags)?;
    // The busy timeout comes first, so that every later statement, pragmas included, waits for other
    // connections and processes instead of failing at once.
    connection.busy_timeout(settings.busy_timeout)?;
    let synchronous = match settings.synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    connection.pragma_update(None, "synchronous", synchronous)?;
    Ok(connection)
}

/// Switches the file to WAL, which persists in the file.
///
/// SQLite cannot change the journal mode inside a transaction, and the switch needs the file to itself. A
/// process that opens the same new file at that moment can make it fail with `SQLITE_BUSY`, so this retries
/// until the busy timeout has passed.
fn enable_wal(connection: &Connection, busy_timeout: Duration) -> Result<(), OpenError> {
    let deadline = Instant::now() + busy_timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        let attempt = connection
            .pragma_query_value(None, "journal_mode", |row| row.get::<_, String>(0))
            .and_then(|mode| {
                if mode.eq_ignore_ascii_case("wal") {
                    Ok(mode)
                } else {
                    connection
                        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
                }
            });
        match attempt {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(OpenError::Schema(format!(
                    "SQLite kept journal mode {mode:?} instead of WAL; use a file on a local file system that \
                     supports shared-memory locking"
                )));
            }
            Err(error) if is_busy(&error) && Instant::now() < deadline => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(error) => return Err(OpenError::Sqlite(error)),
        }
    }
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Brings the schema to [`SCHEMA_VERSION`] inside one immediate transaction, so that processes opening a
/// new file at once take turns: the first creates the tables, the others see its version and skip.
fn migrate(connection: &mut Connection) -> Result<(), OpenError> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = transaction.pragma_query_value(None, "user_version", |row| row.get(0))?;
    match version {
        0 => {
            transaction.execute_batch(SCHEMA_V1)?;
            transaction.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        SCHEMA_VERSION => {}
        newer if newer > SCHEMA_VERSION => {
            return Err(OpenError::Schema(format!(
                "the database has schema version {newer}, newer than version {SCHEMA_VERSION} that this \
                 idem-sqlite reads; upgrade idem-sqlite or open another file"
            )));
        }
        unknown => {
            return Err(OpenError::Schema(format!(
                "the database has schema version {unknown} (PRAGMA user_version), which idem-sqlite never \
                 writes; open another file"
            )));
        }
    }
    transaction.commit()?;
    Ok(())
}
