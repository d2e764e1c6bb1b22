//! Reading and checking stored rows. A row that does not decode is reported, never guessed at.

use idem_core::{Error, Fingerprint, IdempotencyKey, MAX_FINGERPRINT_BYTES};
use rusqlite::types::ValueRef;
use rusqlite::{OptionalExtension, Row, Transaction};

pub(crate) const STATE_IN_PROGRESS: &str = "in_progress";
pub(crate) const STATE_COMPLETED: &str = "completed";

const SELECT_RECORD: &str = "SELECT state, fingerprint, fencing_token, attempt, created_at, lease_deadline, \
     response, completed_at, retention_deadline, expires_at FROM idem_records WHERE storage_key = ?1";

/// A decoded row. Times are milliseconds on the store's clock.
#[derive(Debug)]
pub(crate) enum StoredRecord {
    Claim(StoredClaim),
    Completed(StoredCompleted),
}

#[derive(Debug)]
pub(crate) struct StoredClaim {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) fencing_token: u64,
    pub(crate) attempt: u32,
    pub(crate) created_at: i64,
    pub(crate) lease_deadline: i64,
    /// Lease deadline plus the grace period of the store that wrote the claim; from then on it counts as absent.
    pub(crate) expires_at: i64,
}

#[derive(Debug)]
pub(crate) struct StoredCompleted {
    pub(crate) fingerprint: Fingerprint,
    /// The token of the lease that completed the record, so that the same lease can repeat its complete.
    pub(crate) fencing_token: u64,
    pub(crate) response: Vec<u8>,
    pub(crate) completed_at: i64,
    pub(crate) retention_deadline: i64,
}

impl StoredRecord {
    /// Returns whether the record counts as absent at `now`: a claim past its grace period or a completed record
    /// at or past its retention deadline.
    pub(crate) fn is_expired(&self, now: i64) -> bool {
        match self {
            StoredRecord::Claim(claim) => now >= claim.expires_at,
            StoredRecord::Completed(done) => now >= done.retention_deadline,
        }
    }
}

/// Reads the row of `key`, or `None` when there is none. Expired rows are returned too; callers decide.
///
/// # Errors
/// The driver's error, or [`Error::CorruptRecord`] naming the key when the row does not decode.
pub(crate) fn read(
    transaction: &Transaction<'_>,
    key: &IdempotencyKey,
) -> Result<Option<StoredRecord>, crate::pool::OpError> {
    let mut statement = transaction.prepare_cached(SELECT_RECORD)?;
    let decoded = statement
        .query_row([key.storage_key()], |row| Ok(decode(row)))
        .optional()?;
    match decoded {
        None => Ok(None),
        Some(Ok(record)) => Ok(Some(record)),
        Some(Err(reason)) => {
            let label = key.label();
            tracing::error!(backend = crate::BACKEND, key = %label, %reason, "corrupt idempotency record");
            Err(Error::CorruptRecord { key: label, reason }.into())
        }
    }
}

fn decode(row: &Row<'_>) -> Result<StoredRecord, String> {
    let state = text(row, 0, "state")?;
    let fingerprint = blob(row, 1, "fingerprint")?;
    let fingerprint_len = fingerprint.len();
    let fingerprint = Fingerprint::new(fingerprint).map_err(|_| {
        format!("fingerprint is {fingerprint_len} bytes long, the limit is {MAX_FINGERPRINT_BYTES}")
    })?;
    let token = integer(row, 2, "fencing_token")?;
    let fencing_token = u64::try_from(token)
        .ok()
        .filter(|token| *token > 0)
        .ok_or_else(|| format!("fencing_token {token} is not a positive integer"))?;
    let attempt = integer(row, 3, "attempt")?;
    let attempt = u32::try_from(attempt)
        .ok()
        .filter(|attempt| *attempt > 0)
        .ok_or_else(|| format!("attempt {attempt} is not between 1 and {}", u32::MAX))?;
    let created_at = integer(row, 4, "created_at")?;
    let expires_at = integer(row, 9, "expires_at")?;

    match state.as_str() {
        STATE_IN_PROGRESS => Ok(StoredRecord::Claim(StoredClaim {
            fingerprint,
            fencing_token,
            attempt,
            created_at,
            lease_deadline: integer(row, 5, "lease_deadline")?,
            expires_at,
        })),
        STATE_COMPLETED => Ok(StoredRecord::Completed(StoredCompleted {
            fingerprint,
            fencing_token,
            response: blob(row, 6, "response")?,
            completed_at: integer(row, 7, "completed_at")?,
            retention_deadline: integer(row, 8, "retention_deadline")?,
        })),
        other => Err(format!(
            "unknown state {other:?}, expected {STATE_IN_PROGRESS:?} or {STATE_COMPLETED:?}"
        )),
    }
}

fn value<'row>(row: &'row Row<'_>, index: usize, name: &str) -> Result<ValueRef<'row>, String> {
    row.get_ref(index)
        .map_err(|error| format!("column {name} cannot be read: {error}"))
}

fn integer(row: &Row<'_>, index: usize, name: &str) -> Result<i64, String> {
    match value(row, index, name)? {
        ValueRef::Integer(number) => Ok(number),
        other => Err(format!(
            "column {name} holds {}, expected an integer",
            kind(other)
        )),
    }
}

fn blob(row: &Row<'_>, index: usize, name: &str) -> Result<Vec<u8>, String> {
    match value(row, index, name)? {
        ValueRef::Blob(bytes) => Ok(bytes.to_vec()),
        other => Err(format!("column {name} holds {}, expected a blob", kind(other))),
    }
}

fn text(row: &Row<'_>, index: usize, name: &str) -> Result<String, String> {
    match value(row, index, name)? {
        ValueRef::Text(bytes) => String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("column {name} holds text that is not UTF-8")),
        other => Err(format!("column {name} holds {}, expected text", kind(other))),
    }
}

fn kind(value: ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real number",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    }
}
