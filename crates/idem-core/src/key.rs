//! Validated idempotency keys and scopes.

use std::fmt;

use crate::error::{Error, InputField, Result};

/// Maximum length of a key string or a scope, in bytes of UTF-8 (not characters).
pub const MAX_KEY_BYTES: usize = 255;

/// A validated idempotency key: a scope (tenant, account or principal; may be empty) plus the client's key string.
///
/// Key strings are UTF-8 of 1 to 255 bytes with no control characters ([`char::is_control`]). Scopes follow
/// the same rules but may be empty. Two different (scope, key) pairs never address the same record: backends
/// store [`IdempotencyKey::storage_key`], which prefixes the scope with its byte length.
///
/// `Debug` and [`IdempotencyKey::label`] show the scope and a short hash, never the key string, so that keys
/// derived from payment ids or similar values stay out of logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    scope: String,
    key: String,
}

impl IdempotencyKey {
    /// Validates a scope and a key string.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the scope or the key when either is too long, the key is empty, or
    /// either contains a control character. Nothing is stored.
    pub fn new(scope: impl Into<String>, key: impl Into<String>) -> Result<Self> {
        let scope = scope.into();
        let key = key.into();
        validate_part(InputField::Scope, &scope, true)?;
        validate_part(InputField::Key, &key, false)?;
        Ok(Self { scope, key })
    }

    /// Validates a key string in the empty scope.
    ///
    /// # Errors
    /// As [`IdempotencyKey::new`].
    pub fn unscoped(key: impl Into<String>) -> Result<Self> {
        Self::new(String::new(), key)
    }

    /// The scope; empty when the key is unscoped.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The client's key string.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Returns the unambiguous string that backends store the record under:
    /// `<scope length in bytes>:<scope><key>`.
    ///
    /// Because the scope's length comes first, scope `"ab"` with key `"c"` (`2:abc`) and scope `"a"` with key
    /// `"bc"` (`1:abc`) stay apart, whatever characters either contains.
    pub fn storage_key(&self) -> String {
        format!("{}:{}{}", self.scope.len(), self.scope, self.key)
    }

    /// Returns the SHA-256 digest of [`IdempotencyKey::storage_key`], for backends that need a fixed-size,
    /// character-safe name (for example a Redis Cluster hash tag).
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(self.storage_key().as_bytes()).into()
    }

    /// Returns the form of this key that is safe to log: its scope and the first 8 hex digits of its digest.
    pub fn label(&self) -> KeyLabel {
        let digest = self.digest();
        KeyLabel {
            scope: self.scope.clone(),
            hash: hex::encode(&digest[..4]),
        }
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({})", self.label())
    }
}

/// The loggable form of a key: its scope and a short hash of the whole key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyLabel {
    scope: String,
    hash: String,
}

impl KeyLabel {
    /// The key's scope.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The first 8 hex digits of the key's SHA-256 digest.
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

impl fmt::Display for KeyLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scope.is_empty() {
            write!(f, "key #{}", self.hash)
        } else {
            write!(f, "key #{} in scope {:?}", self.hash, self.scope)
        }
    }
}

fn validate_part(field: InputField, value: &str, may_be_empty: bool) -> Result<()> {
    if value.is_empty() && !may_be_empty {
        return Err(Error::invalid(field, "it is empty; send 1 to 255 bytes of UTF-8"));
    }
    if value.len() > MAX_KEY_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "it is {} bytes long, the limit is {MAX_KEY_BYTES} bytes of UTF-8; shorten it or derive a key with IdempotencyKey::derive",
                value.len()
            ),
        ));
    }
    if let Some((index, ch)) = value.char_indices().find(|(_, ch)| ch.is_control()) {
        return Err(Error::invalid(
            field,
            format!(
                "it contains the control character U+{:04X} at byte {index}; remove it",
                ch as u32
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_limits_count_bytes() {
        let at_limit = "é".repeat(127) + "a";
        assert_eq!(at_limit.len(), 255);
        assert!(IdempotencyKey::unscoped(at_limit).is_ok());

        let over_limit = "é".repeat(128);
        assert_eq!(over_limit.chars().count(), 128);
        let error = IdempotencyKey::unscoped(over_limit).unwrap_err();
        assert!(
            matches!(
                error,
                Error::InvalidInput {
                    field: InputField::Key,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("256 bytes"), "{error}");
    }

    #[test]
    fn empty_key_rejected_empty_scope_allowed() {
        assert!(IdempotencyKey::new("", "k").is_ok());
        let error = IdempotencyKey::new("acme", "").unwrap_err();
        assert!(matches!(
            error,
            Error::InvalidInput {
                field: InputField::Key,
                ..
            }
        ));
    }

    #[test]
    fn control_characters_rejected() {
        for bad in ["a\nb", "\u{0}", "tab\there", "del\u{7f}", "c1\u{85}"] {
            let error = IdempotencyKey::unscoped(bad).unwrap_err();
            assert!(
                matches!(
                    error,
                    Error::InvalidInput {
                        field: InputField::Key,
                        ..
                    }
                ),
                "{bad:?}"
            );
            let error = IdempotencyKey::new(bad, "k").unwrap_err();
            assert!(
                matches!(
                    error,
                    Error::InvalidInput {
                        field: InputField::Scope,
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn storage_key_is_unambiguous() {
        let a = IdempotencyKey::new("ab", "c").unwrap();
        let b = IdempotencyKey::new("a", "bc").unwrap();
        let c = IdempotencyKey::new("", "abc").unwrap();
        let d = IdempotencyKey::new("1:a", "bc").unwrap();
        let keys = [a.storage_key(), b.storage_key(), c.storage_key(), d.storage_key()];
        for (i, left) in keys.iter().enumerate() {
            for right in &keys[i + 1..] {
                assert_ne!(left, right);
            }
        }
    }

    #[test]
    fn debug_hides_key_string() {
        let key = IdempotencyKey::new("acme", "pay_secret_123").unwrap();
        let shown = format!("{key:?} {}", key.label());
        assert!(!shown.contains("pay_secret_123"), "{shown}");
        assert!(shown.contains("acme"), "{shown}");
    }
}
