//! The one error type of idem, with kinds a caller can act on.

use std::fmt;
use std::time::Duration;

use crate::key::KeyLabel;

/// A boxed error from a backend's driver, kept as the source of [`Error::Unavailable`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The value that failed validation in [`Error::InvalidInput`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputField {
    /// The client's key string.
    Key,
    /// The scope (tenant, account or principal) of a key.
    Scope,
    /// The request fingerprint.
    Fingerprint,
    /// A lease or retention TTL.
    Ttl,
    /// A store or runner setting.
    Setting,
}

impl fmt::Display for InputField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputField::Key => "idempotency key",
            InputField::Scope => "scope",
            InputField::Fingerprint => "fingerprint",
            InputField::Ttl => "TTL",
            InputField::Setting => "setting",
        })
    }
}

/// Errors returned by stores and by the runner.
///
/// Every variant is something a caller can act on: fix the input, retry later, answer the client with a
/// conflict, or page an operator. [`Error::is_retryable`] says whether repeating the same call can help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument was rejected before anything was stored.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The kind of value that was rejected.
        field: InputField,
        /// Why, and what a valid value looks like. Key strings are not echoed, only their length.
        reason: String,
    },

    /// The lease no longer holds the key: it was taken over after lapsing, released, completed with
    /// another response, or the record is gone. Nothing was changed.
    #[error(
        "lease lost on {key} (fencing token {fencing_token}): another attempt now owns the key or the record is gone"
    )]
    LeaseLost {
        /// The key the lease was for.
        key: KeyLabel,
        /// The fencing token of the lost lease.
        fencing_token: u64,
    },

    /// A record exists for the key with another fingerprint: the key was reused for a different request.
    #[error(
        "fingerprint mismatch on {key}: the key was already used with a different request payload; use a new key for a new request"
    )]
    FingerprintMismatch {
        /// The reused key.
        key: KeyLabel,
    },

    /// Another caller holds a live claim on the key.
    #[error("request with {key} is still in progress; retry after {retry_after:?}")]
    InProgress {
        /// The key that is claimed.
        key: KeyLabel,
        /// Time until the other caller's lease ends, on the backend's clock.
        retry_after: Duration,
    },

    /// The runner waited for another caller's result and gave up at its configured limit.
    #[error("timed out after {waited:?} waiting for the in-progress request with {key}")]
    WaitTimedOut {
        /// The key that stayed claimed.
        key: KeyLabel,
        /// How long the runner waited.
        waited: Duration,
    },

    /// The response is larger than the store accepts. The lease is still held, so the caller can release it.
    #[error(
        "response of {size} bytes exceeds the store's limit of {limit} bytes; raise the limit or store less"
    )]
    ResponseTooLarge {
        /// Size of the rejected response in bytes.
        size: usize,
        /// The store's limit in bytes.
        limit: usize,
    },

    /// A bounded store cannot take another claim, because claims are never evicted.
    #[error("store is full: {claims} claims are held, the limit is {limit}; raise the limit or retry later")]
    StoreFull {
        /// Claims held when the begin was rejected.
        claims: u64,
        /// The configured limit.
        limit: u64,
    },

    /// The backend could not answer (connection lost, timeout, busy database). The store fails closed:
    /// this is never turned into an acquired lease.
    #[error("{backend} backend unavailable during {operation}{}: {source}", if *.retryable { " (retryable)" } else { "" })]
    Unavailable {
        /// The backend's name, such as `sqlite`.
        backend: &'static str,
        /// The store operation that failed, such as `begin`.
        operation: &'static str,
        /// Whether repeating the call later can succeed.
        retryable: bool,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// A stored record could not be decoded. The record is left in place for an operator to inspect or delete.
    #[error("corrupt record for {key}: {reason}; delete the record to reuse the key")]
    CorruptRecord {
        /// The key whose record is corrupt.
        key: KeyLabel,
        /// The decoding problem found in the record.
        reason: String,
    },

    /// The runner could not encode the closure's output, or the encoding did not decode back to an equal
    /// shape. Nothing was stored.
    #[error("output cannot be stored: {reason}")]
    Encoding {
        /// The serializer's message.
        reason: String,
    },
}

impl Error {
    /// Returns whether repeating the same call later can succeed.
    ///
    /// True for retryable backend failures, a claim held by another caller, a wait that timed out and a
    /// full store; false for invalid input, mismatches, lost leases, oversized responses and corrupt records.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { retryable, .. } => *retryable,
            Error::InProgress { .. } | Error::WaitTimedOut { .. } | Error::StoreFull { .. } => true,
            _ => false,
        }
    }

    /// Builds an [`Error::InvalidInput`].
    pub fn invalid(field: InputField, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Unavailable`] from a driver error.
    pub fn unavailable(
        backend: &'static str,
        operation: &'static str,
        retryable: bool,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Unavailable {
            backend,
            operation,
            retryable,
            source: source.into(),
        }
    }
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
