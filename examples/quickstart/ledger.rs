//! The ledger: an append-only table in its own SQLite file, where the handler records each side effect.
//!
//! It is the system that the webhook handler writes to (a database, a payment API). The exactly-once checks
//! read it, so they count what ran, whatever outcome the runner returned.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};

/// One side effect: which delivery ran which body, under which fencing token.
pub(crate) struct LedgerRow {
    pub(crate) row: i64,
    pub(crate) delivery_id: String,
    pub(crate) body_sha256: String,
}

/// A side effect as the handler appends it.
pub(crate) struct SideEffect<'a> {
    pub(crate) delivery_id: &'a str,
    pub(crate) event_type: &'a str,
    pub(crate) body_sha256: &'a str,
    /// `None` when the log runs without idem.
    pub(crate) fencing_token: Option<u64>,
    pub(crate) summary: String,
}

/// A handle on the ledger file. Clones share one connection.
#[derive(Clone)]
pub(crate) struct Ledger {
    connection: Arc<Mutex<Connection>>,
}

impl Ledger {
    /// Creates the ledger file and its table.
    pub(crate) fn create(path: &Path) -> Result<Self, String> {
        let failed = |error: rusqlite::Error| format!("cannot create the ledger {}: {error}", path.display());
        let connection = Connection::open(path).map_err(failed)?;
        // WAL without a sync per commit, because the ledger only lives as long as the run.
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 CREATE TABLE side_effects (
                     row INTEGER PRIMARY KEY,
                     delivery_id TEXT NOT NULL,
                     event_type TEXT NOT NULL,
                     body_sha256 TEXT NOT NULL,
                     fencing_token INTEGER,
                     summary TEXT NOT NULL
                 );",
            )
            .map_err(failed)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Appends a side effect and returns its row number. The insert runs on Tokio's blocking pool, because
    /// SQLite blocks the thread.
    pub(crate) async fn append(&self, effect: SideEffect<'_>) -> Result<i64, String> {
        let connection = Arc::clone(&self.connection);
        let delivery_id = effect.delivery_id.to_owned();
        let event_type = effect.event_type.to_owned();
        let body_sha256 = effect.body_sha256.to_owned();
        // SQLite stores signed 64-bit integers; a fencing token above i64::MAX would need a TEXT column.
        let fencing_token = effect.fencing_token.map(|token| token as i64);
        let summary = effect.summary;

        tokio::task::spawn_blocking(move || {
            let connection = connection
                .lock()
                .map_err(|_| "the ledger lock is poisoned".to_owned())?;
            connection
                .execute(
                    "INSERT INTO side_effects (delivery_id, event_type, body_sha256, fencing_token, summary)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![delivery_id, event_type, body_sha256, fencing_token, summary],
                )
                .map_err(|error| format!("ledger insert failed: {error}"))?;
            Ok(connection.last_insert_rowid())
        })
        .await
        .map_err(|error| format!("ledger insert task failed: {error}"))?
    }

    /// Reads every row, in the order they were appended.
    pub(crate) async fn rows(&self) -> Result<Vec<LedgerRow>, String> {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            let connection = connection
                .lock()
                .map_err(|_| "the ledger lock is poisoned".to_owned())?;
            let read = |error: rusqlite::Error| format!("cannot read the ledger: {error}");
            let mut statement = connection
                .prepare("SELECT row, delivery_id, body_sha256 FROM side_effects ORDER BY row")
                .map_err(read)?;
            let rows = statement
                .query_map([], |row| {
                    Ok(LedgerRow {
                        row: row.get(0)?,
                        delivery_id: row.get(1)?,
                        body_sha256: row.get(2)?,
                    })
                })
                .map_err(read)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(read)
        })
        .await
        .map_err(|error| format!("ledger read task failed: {error}"))?
    }
}
