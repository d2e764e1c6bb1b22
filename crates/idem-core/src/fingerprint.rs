//! Request fingerprints: opaque bytes that identify a request's payload.

use std::fmt;

use crate::error::{Error, InputField, Result};

/// Maximum length of a fingerprint in bytes.
pub const MAX_FINGERPRINT_BYTES: usize = 64;

/// Opaque bytes, at most 64, that identify a request's payload.
///
/// A retry must carry the same fingerprint as the first request; a key reused with another fingerprint is a
/// mismatch. The store only compares fingerprints. [`Fingerprint::from_parts`] derives one from request parts;
/// the empty fingerprint is allowed and matches only another empty one.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Fingerprint(Vec<u8>);

impl Fingerprint {
    /// Validates raw fingerprint bytes.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `bytes` is longer than [`MAX_FINGERPRINT_BYTES`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        let bytes = bytes.into();
        if bytes.len() > MAX_FINGERPRINT_BYTES {
            return Err(Error::invalid(
                InputField::Fingerprint,
                format!(
                    "it is {} bytes long, the limit is {MAX_FINGERPRINT_BYTES}; pass a digest such as Fingerprint::from_parts",
                    bytes.len()
                ),
            ));
        }
        Ok(Self(bytes))
    }

    /// Returns the empty fingerprint, for callers that do not compare payloads.
    pub fn empty() -> Self {
        Self(Vec::new())
    }

    /// The fingerprint's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", hex::encode(&self.0))
    }
}

impl AsRef<[u8]> for Fingerprint {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
