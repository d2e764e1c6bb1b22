//! Stable derivations of keys and fingerprints from request parts.
//!
//! Both use SHA-256 over length-prefixed parts, so that `["ab", "c"]` and `["a", "bc"]` differ:
//!
//! ```text
//! digest = SHA-256( u64_be(len(domain)) || domain || for each part: u64_be(len(part)) || part )
//! ```
//!
//! with the domain `idem.key.v1` for keys and `idem.fingerprint.v1` for fingerprints. The derivation is part
//! of the stored format: records written by one version are found by the next, so it never changes. Tests
//! pin fixed outputs.

use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;

const KEY_DOMAIN: &[u8] = b"idem.key.v1";
const FINGERPRINT_DOMAIN: &[u8] = b"idem.fingerprint.v1";

fn digest_parts(domain: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((domain.len() as u64).to_be_bytes());
    hasher.update(domain);
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

impl IdempotencyKey {
    /// Derives a key from the parts of the event that triggered a write, such as a provider name and a
    /// payment id, for callers that receive no `Idempotency-Key`.
    ///
    /// The key string is the 64 lowercase hex digits of SHA-256 over the domain `idem.key.v1` and the parts,
    /// each preceded by its length as a big-endian `u64`. The derivation never changes, so keys stay stable
    /// across versions.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when the scope is invalid.
    pub fn derive(scope: impl Into<String>, parts: &[&[u8]]) -> Result<Self> {
        Self::new(scope, hex::encode(digest_parts(KEY_DOMAIN, parts)))
    }
}

impl Fingerprint {
    /// Derives a 32-byte fingerprint from request parts, such as method, path and body.
    ///
    /// Pass the parts that make two requests "the same request"; the order matters. The bytes are SHA-256
    /// over the domain `idem.fingerprint.v1` and the parts, each preceded by its length as a big-endian `u64`.
    pub fn from_parts(parts: &[&[u8]]) -> Self {
        Self::new(digest_parts(FINGERPRINT_DOMAIN, parts).to_vec())
            .expect("a SHA-256 digest is 32 bytes, within the fingerprint limit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The expected values were computed with Python's hashlib from the formula in the module docs.
    #[test]
    fn key_derivation_is_pinned() {
        let key = IdempotencyKey::derive("", &[b"stripe", b"pi_3MtwBwLkdIwHu7ix28a3tqPa"]).unwrap();
        assert_eq!(
            key.key(),
            "5e1d5425ec68e3dfa5b563f62f319d7b6df193af5dd472037e3f4eab16b0b8ad"
        );

        let empty = IdempotencyKey::derive("acme", &[]).unwrap();
        assert_eq!(
            empty.key(),
            "cc59cb59abf85b9dae21364687747817f4ab4424b8527e2e77c16e41ab13fdc3"
        );
        assert_eq!(empty.scope(), "acme");
    }

    #[test]
    fn fingerprint_derivation_is_pinned() {
        let fingerprint = Fingerprint::from_parts(&[b"POST", b"/v1/charges", b"{\"amount\":100}"]);
        assert_eq!(
            hex::encode(fingerprint.as_bytes()),
            "f0485f7ab9845dbb01a97e275f62c1fb961b4f981426f37f3b6328096e1a6d4c"
        );

        let empty = Fingerprint::from_parts(&[]);
        assert_eq!(
            hex::encode(empty.as_bytes()),
            "6704ec1918f68fc223c1358a1723847c514b6a5962b6c0a97630973ff6839fda"
        );
    }

    #[test]
    fn part_boundaries_matter() {
        assert_ne!(
            Fingerprint::from_parts(&[b"ab", b"c"]),
            Fingerprint::from_parts(&[b"a", b"bc"])
        );
        assert_ne!(
            Fingerprint::from_parts(&[b"abc"]),
            Fingerprint::from_parts(&[b"abc", b""])
        );
        let key = IdempotencyKey::derive("", &[b"x"]).unwrap();
        let fingerprint = Fingerprint::from_parts(&[b"x"]);
        assert_ne!(
            key.key().as_bytes(),
            hex::encode(fingerprint.as_bytes()).as_bytes(),
            "domains must separate"
        );
    }
}
