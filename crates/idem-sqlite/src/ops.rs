//! The store operations as blocking functions, each one short SQLite transaction on a lent connection.
//!
//! Every write runs in `BEGIN IMMEDIATE`, which takes SQLite's single write lock before the first read, so
//! the read-decide-write sequence of each operation is atomic across connections and processes. The clock
//! is read after the lock is held, so time spent waiting for the lock never makes a deadline stale.

use std::sync::Arc;
use std::time::Duration;

use idem_core::{
    BeginOutcome, ClaimRecord, Clock, CompletedRecord, Error, Fingerprint, IdempotencyKey, InputField, Lease,
    Record, Ttl,
};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::BACKEND;
use crate::pool::OpError;
use crate::row::{self, STATE_COMPLETED, STATE_IN_PROGRESS, StoredClaim, StoredRecord};

/// The settings the operations need, shared by all connections of one store.
#[derive(Debug)]
pub(crate) struct OpSettings {
    pub(crate) clock: Arc<dyn Clock>,
    /// Grace period of a lapsed claim in milliseconds; at most `Ttl::MAX`, so sums stay far from overflow.
    pub(crate) grace_ms: i64,
    pub(crate) purge_batch_size: i64,
}

impl OpSettings {
    /// Reads the clock as whole milliseconds.
    fn now(&self, operation: &'static str) -> Result<i64, Error> {
        let now = self.clock.now();
        i64::try_from(now.as_millis()).map_err(|_| {
            Error::unavailable(
                BACKEND,
                operation,
                false,
                format!("the clock reads {now:?}, beyond the i64 milliseconds SQLite stores"),
            )
        })
    }
}

fn immediate(connection: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    connection.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// Returns `now + ttl`, or an error naming the TTL when the sum does not fit.
fn deadline_after(now: i64, ttl: Ttl) -> Result<i64, Error> {
    i64::try_from(ttl.as_millis())
        .ok()
        .and_then(|ttl| now.checked_add(ttl))
        .ok_or_else(|| {
            Error::invalid(
                InputField::Ttl,
                format!(
                    "{:?} from the clock reading of {now} ms does not fit in SQLite's 64-bit milliseconds; pass a \
                     shorter TTL",
                    ttl.as_duration()
                ),
            )
        })
}

/// Time from `now` until `deadline`, zero when it has passed.
fn remaining(deadline: i64, now: i64) -> Duration {
    Duration::from_millis(u64::try_from(deadline.saturating_sub(now)).unwrap_or(0))
}

/// Time from `since` until `now`, zero when a clock step put `since` in the future.
fn elapsed(since: i64, now: i64) -> Duration {
    remaining(now, since)
}

/// Hands out the next fencing token. One counter serves every key of the file, so tokens increase strictly
/// in the order leases are granted, and a key never sees a token twice, also after release, delete,
/// expiry or purge.
fn next_fencing_token(transaction: &Transaction<'_>) -> Result<u64, OpError> {
    let mut statement = transaction.prepare_cached(
        "UPDATE idem_meta SET value = value + 1 WHERE name = 'last_fencing_token' RETURNING value",
    )?;
    let token: Option<i64> = statement.query_row([], |row| row.get(0)).optional()?;
    token
        .and_then(|token| u64::try_from(token).ok())
        .filter(|token| *token > 0)
        .ok_or_else(|| {
            OpError::Store(Error::unavailable(
                BACKEND,
                "begin",
                false,
                "the fencing-token counter in table idem_meta is missing or negative; the database was edited \
                 by hand",
            ))
        })
}

pub(crate) fn begin(
    connection: &mut Connection,
    settings: &OpSettings,
    key: IdempotencyKey,
    fingerprint: Fingerprint,
    lease_ttl: Ttl,
) -> Result<BeginOutcome, OpError> {
    let transaction = immediate(connection)?;
    let now = settings.now("begin")?;
    let existing = row::read(&transaction, &key)?.filter(|record| !record.is_expired(now));

    let outcome = match existing {
        Some(StoredRecord::Claim(claim)) if claim.fingerprint != fingerprint => {
            BeginOutcome::FingerprintMismatch
        }
        Some(StoredRecord::Completed(done)) if done.fingerprint != fingerprint => {
            BeginOutcome::FingerprintMismatch
        }
        Some(StoredRecord::Completed(done)) => BeginOutcome::Completed(CompletedRecord::new(
            fingerprint,
            done.response,
            remaining(done.retention_deadline, now),
            elapsed(done.completed_at, now),
        )),
        Some(StoredRecord::Claim(claim)) if now < claim.lease_deadline => BeginOutcome::InProgress {
            retry_after: remaining(claim.lease_deadline, now),
            attempt: claim.attempt,
        },
        Some(StoredRecord::Claim(lapsed)) => {
            let lease = take_over(&transaction, settings, now, &key, fingerprint, lease_ttl, &lapsed)?;
            transaction.commit()?;
            return Ok(BeginOutcome::Acquired(lease));
        }
        None => {
            let lease = claim_fresh(&transaction, settings, now, key, fingerprint, lease_ttl)?;
            transaction.commit()?;
            tracing::debug!(
                backend = BACKEND,
                key = %lease.key().label(),
                fencing_token = lease.fencing_token(),
                "begin: acquired"
            );
            return Ok(BeginOutcome::Acquired(lease));
        }
    };
    // Nothing was written; ending the transaction releases the write lock.
    transaction.commit()?;
    log_unchanged_begin(&key, &outcome);
    Ok(outcome)
}

fn log_unchanged_begin(key: &IdempotencyKey, outcome: &BeginOutcome) {
    let label = key.label();
    match outcome {
        BeginOutcome::FingerprintMismatch => {
            tracing::debug!(backend = BACKEND, key = %label, "begin: fingerprint mismatch");
        }
        BeginOutcome::Completed(done) => {
            tracing::debug!(
                backend = BACKEND,
                key = %label,
                response_bytes = done.response.len(),
                "begin: completed, replaying"
            );
        }
        BeginOutcome::InProgress { retry_after, attempt } => {
            tracing::debug!(backend = BACKEND, key = %label, ?retry_after, attempt, "begin: in progress");
        }
        _ => {}
    }
}

/// Writes a new claim with attempt 1, replacing an expired row of the key if there is one.
fn claim_fresh(
    transaction: &Transaction<'_>,
    settings: &OpSettings,
    now: i64,
    key: IdempotencyKey,
    fingerprint: Fingerprint,
    lease_ttl: Ttl,
) -> Result<Lease, OpError> {
    let lease_deadline = deadline_after(now, lease_ttl)?;
    let expires_at = lease_deadline.saturating_add(settings.grace_ms);
    let fencing_token = next_fencing_token(transaction)?;
    let mut statement = transaction.prepare_cached(
        "INSERT OR REPLACE INTO idem_records (storage_key, state, fingerprint, fencing_token, attempt, created_at, \
         lease_deadline, response, completed_at, retention_deadline, expires_at) \
         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, NULL, NULL, NULL, ?7)",
    )?;
    statement.execute(params![
        key.storage_key(),
        STATE_IN_PROGRESS,
        fingerprint.as_bytes(),
        token_to_sql(fencing_token),
        now,
        lease_deadline,
        expires_at,
    ])?;
    Ok(Lease::new(key, fingerprint, fencing_token, 1, lease_ttl))
}

/// Takes over a lapsed claim: attempt + 1 and a new fencing token, so the old lease is dead from now on.
fn take_over(
    transaction: &Transaction<'_>,
    settings: &OpSettings,
    now: i64,
    key: &IdempotencyKey,
    fingerprint: Fingerprint,
    lease_ttl: Ttl,
    lapsed: &StoredClaim,
) -> Result<Lease, OpError> {
    let lease_deadline = deadline_after(now, lease_ttl)?;
    let expires_at = lease_deadline.saturating_add(settings.grace_ms);
    let fencing_token = next_fencing_token(transaction)?;
    // The attempt number only informs; after 4 billion takeovers it stays at the maximum.
    let attempt = lapsed.attempt.saturating_add(1);
    let mut statement = transaction.prepare_cached(
        "UPDATE idem_records SET fencing_token = ?2, attempt = ?3, lease_deadline = ?4, expires_at = ?5 \
         WHERE storage_key = ?1",
    )?;
    statement.execute(params![
        key.storage_key(),
        token_to_sql(fencing_token),
        attempt,
        lease_deadline,
        expires_at,
    ])?;
    tracing::warn!(
        backend = BACKEND,
        key = %key.label(),
        attempt,
        previous_fencing_token = lapsed.fencing_token,
        fencing_token,
        lapsed_for = ?elapsed(lapsed.lease_deadline, now),
        "begin: took over a lapsed claim; the previous holder's lease is dead"
    );
    Ok(Lease::new(
        key.clone(),
        fingerprint,
        fencing_token,
        attempt,
        lease_ttl,
    ))
}

/// Converts a fencing token for SQLite. Tokens come from an i64 counter that `next_fencing_token` checks to be
/// positive, so they always fit.
fn token_to_sql(token: u64) -> i64 {
    i64::try_from(token).unwrap_or(i64::MAX)
}

fn lease_lost(operation: &str, lease: &Lease) -> OpError {
    let label = lease.key().label();
    tracing::debug!(
        backend = BACKEND,
        key = %label,
        fencing_token = lease.fencing_token(),
        "{operation}: lease lost"
    );
    OpError::Store(Error::LeaseLost {
        key: label,
        fencing_token: lease.fencing_token(),
    })
}

pub(crate) fn complete(
    connection: &mut Connection,
    settings: &OpSettings,
    lease: &Lease,
    response: &[u8],
    retention: Ttl,
) -> Result<(), OpError> {
    let transaction = immediate(connection)?;
    let now = settings.now("complete")?;
    let existing = row::read(&transaction, lease.key())?.filter(|record| !record.is_expired(now));

    match existing {
        Some(StoredRecord::Claim(claim)) if claim.fencing_token == lease.fencing_token() => {
            let retention_deadline = deadline_after(now, retention)?;
            let mut statement = transaction.prepare_cached(
                "UPDATE idem_records SET state = ?2, response = ?3, completed_at = ?4, retention_deadline = ?5, \
                 expires_at = ?5, lease_deadline = NULL WHERE storage_key = ?1",
            )?;
            statement.execute(params![
                lease.key().storage_key(),
                STATE_COMPLETED,
                response,
                now,
                retention_deadline,
            ])?;
            drop(statement);
            transaction.commit()?;
            tracing::debug!(
                backend = BACKEND,
                key = %lease.key().label(),
                fencing_token = lease.fencing_token(),
                response_bytes = response.len(),
                "complete: stored"
            );
            Ok(())
        }
        // A repeated complete of the same lease with the same response, e.g. a client library's retry.
        Some(StoredRecord::Completed(done))
            if done.fencing_token == lease.fencing_token() && done.response == response =>
        {
            tracing::debug!(
                backend = BACKEND,
                key = %lease.key().label(),
                fencing_token = lease.fencing_token(),
                "complete: already stored by this lease, unchanged"
            );
            Ok(())
        }
        _ => Err(lease_lost("complete", lease)),
    }
}

pub(crate) fn release(
    connection: &mut Connection,
    settings: &OpSettings,
    lease: &Lease,
) -> Result<(), OpError> {
    let transaction = immediate(connection)?;
    let now = settings.now("release")?;
    let existing = row::read(&transaction, lease.key())?.filter(|record| !record.is_expired(now));

    match existing {
        None => {
            tracing::debug!(backend = BACKEND, key = %lease.key().label(), "release: already gone");
            Ok(())
        }
        Some(StoredRecord::Claim(claim)) if claim.fencing_token == lease.fencing_token() => {
            let mut statement =
                transaction.prepare_cached("DELETE FROM idem_records WHERE storage_key = ?1")?;
            statement.execute([lease.key().storage_key()])?;
            drop(statement);
            transaction.commit()?;
            tracing::debug!(
                backend = BACKEND,
                key = %lease.key().label(),
                fencing_token = lease.fencing_token(),
                "release: claim removed"
            );
            Ok(())
        }
        Some(_) => Err(lease_lost("release", lease)),
    }
}

pub(crate) fn renew(
    connection: &mut Connection,
    settings: &OpSettings,
    lease: &Lease,
    lease_ttl: Ttl,
) -> Result<Duration, OpError> {
    let transaction = immediate(connection)?;
    let now = settings.now("renew")?;
    let existing = row::read(&transaction, lease.key())?.filter(|record| !record.is_expired(now));

    match existing {
        Some(StoredRecord::Claim(claim)) if claim.fencing_token == lease.fencing_token() => {
            let lease_deadline = deadline_after(now, lease_ttl)?;
            let expires_at = lease_deadline.saturating_add(settings.grace_ms);
            let mut statement = transaction.prepare_cached(
                "UPDATE idem_records SET lease_deadline = ?2, expires_at = ?3 WHERE storage_key = ?1",
            )?;
            statement.execute(params![lease.key().storage_key(), lease_deadline, expires_at])?;
            drop(statement);
            transaction.commit()?;
            tracing::debug!(
                backend = BACKEND,
                key = %lease.key().label(),
                fencing_token = lease.fencing_token(),
                lease_ttl = ?lease_ttl.as_duration(),
                "renew: lease extended"
            );
            Ok(remaining(lease_deadline, now))
        }
        _ => Err(lease_lost("renew", lease)),
    }
}

pub(crate) fn lookup(
    connection: &mut Connection,
    settings: &OpSettings,
    key: &IdempotencyKey,
) -> Result<Option<Record>, OpError> {
    // A read needs no write lock: a deferred transaction reads one consistent WAL snapshot.
    let transaction = connection.transaction()?;
    let now = settings.now("lookup")?;
    let existing = row::read(&transaction, key)?.filter(|record| !record.is_expired(now));
    transaction.commit()?;

    let record = existing.map(|record| match record {
        StoredRecord::Claim(claim) => Record::InProgress(ClaimRecord::new(
            claim.fingerprint,
            claim.fencing_token,
            claim.attempt,
            remaining(claim.lease_deadline, now),
            elapsed(claim.created_at, now),
        )),
        StoredRecord::Completed(done) => Record::Completed(CompletedRecord::new(
            done.fingerprint,
            done.response,
            remaining(done.retention_deadline, now),
            elapsed(done.completed_at, now),
        )),
    });
    tracing::debug!(
        backend = BACKEND,
        key = %key.label(),
        found = record.as_ref().map_or("none", |record| match record {
            Record::InProgress(_) => "in progress",
            _ => "completed",
        }),
        "lookup"
    );
    Ok(record)
}

pub(crate) fn delete(
    connection: &mut Connection,
    settings: &OpSettings,
    key: &IdempotencyKey,
) -> Result<bool, OpError> {
    let transaction = immediate(connection)?;
    let now = settings.now("delete")?;
    // The row is not decoded, so that an operator can delete a corrupt record.
    let mut statement =
        transaction.prepare_cached("DELETE FROM idem_records WHERE storage_key = ?1 RETURNING expires_at")?;
    let removed = statement
        .query_row([key.storage_key()], |row| {
            Ok(match row.get_ref(0)? {
                // An expired row was already absent for every other operation.
                ValueRef::Integer(expires_at) => now < expires_at,
                _ => true,
            })
        })
        .optional()?;
    drop(statement);
    transaction.commit()?;
    let existed = removed.unwrap_or(false);
    tracing::debug!(backend = BACKEND, key = %key.label(), existed, "delete");
    Ok(existed)
}

/// Deletes expired rows, at most one batch per transaction so that other writers get the lock between
/// batches, until a batch comes back short. Rows that expire while it runs are left for the next purge.
pub(crate) fn purge(connection: &mut Connection, settings: &OpSettings) -> Result<u64, OpError> {
    let now = settings.now("purge")?;
    let mut total: u64 = 0;
    let mut batches: u64 = 0;
    loop {
        let transaction = immediate(connection)?;
        // The bundled SQLite is built without DELETE ... LIMIT, so the batch is chosen by rowid.
        let mut statement = transaction.prepare_cached(
            "DELETE FROM idem_records WHERE rowid IN \
             (SELECT rowid FROM idem_records WHERE expires_at <= ?1 LIMIT ?2)",
        )?;
        let deleted = statement.execute(params![now, settings.purge_batch_size])?;
        drop(statement);
        transaction.commit()?;
        batches += 1;
        total = total.saturating_add(deleted as u64);
        if (deleted as i64) < settings.purge_batch_size {
            break;
        }
    }
    tracing::debug!(backend = BACKEND, removed = total, batches, "purge");
    Ok(total)
}
