//! Redis key names: a validated prefix plus a hash tag per idempotency key.

use idem_core::{Error, IdempotencyKey, InputField};

/// Default key prefix.
pub(crate) const DEFAULT_KEY_PREFIX: &str = "idem:";
/// Longest accepted key prefix, in bytes.
pub(crate) const MAX_KEY_PREFIX_BYTES: usize = 64;

/// Checks a key prefix: 1 to 64 bytes, no braces (they would start a Redis Cluster hash tag), no
/// whitespace or control characters.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), Error> {
    let reject = |reason: String| Err(Error::invalid(InputField::Setting, reason));
    if prefix.is_empty() {
        return reject(format!(
            "key_prefix is empty; pass 1 to {MAX_KEY_PREFIX_BYTES} bytes such as \"{DEFAULT_KEY_PREFIX}\" or \"myapp:idem:\""
        ));
    }
    if prefix.len() > MAX_KEY_PREFIX_BYTES {
        return reject(format!(
            "key_prefix is {} bytes long, the limit is {MAX_KEY_PREFIX_BYTES} bytes; pass a shorter prefix",
            prefix.len()
        ));
    }
    if let Some(brace) = prefix.chars().find(|ch| matches!(ch, '{' | '}')) {
        return reject(format!(
            "key_prefix {prefix:?} contains {brace:?}, which Redis Cluster reads as part of a hash tag; remove the braces"
        ));
    }
    if let Some(ch) = prefix.chars().find(|ch| ch.is_control() || ch.is_whitespace()) {
        return reject(format!(
            "key_prefix {prefix:?} contains the character U+{:04X}; use printable characters without spaces",
            ch as u32
        ));
    }
    Ok(())
}

/// Returns the name of the Redis hash that stores `key`'s record: `<prefix>{<hex SHA-256 of the storage key>}`.
///
/// Every Redis key of one idempotency key carries the same hash tag, so Redis Cluster keeps them in one slot
/// and a script can touch them together. The tag is a hex digest rather than the scope and key strings, because
/// those may contain braces.
pub(crate) fn record_key(prefix: &str, key: &IdempotencyKey) -> String {
    format!("{prefix}{{{}}}", hex::encode(key.digest()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_tag(redis_key: &str) -> &str {
        let open = redis_key.find('{').expect("an opening brace");
        let close = redis_key[open..].find('}').expect("a closing brace") + open;
        &redis_key[open + 1..close]
    }

    #[test]
    fn record_key_layout() {
        let key = IdempotencyKey::new("acme", "order-7").unwrap();
        let name = record_key("idem:", &key);
        assert!(name.starts_with("idem:{"), "{name}");
        assert!(name.ends_with('}'), "{name}");
        assert_eq!(hash_tag(&name), hex::encode(key.digest()));
        assert_eq!(hash_tag(&name).len(), 64);
    }

    #[test]
    fn braces_in_key_stay_out_of_tag() {
        let key = IdempotencyKey::new("{tenant}", "{a}b}").unwrap();
        let name = record_key("app:", &key);
        let tag = hash_tag(&name);
        assert!(tag.chars().all(|ch| ch.is_ascii_hexdigit()), "{tag}");
        assert_eq!(name.matches('{').count(), 1, "{name}");
        assert_eq!(name.matches('}').count(), 1, "{name}");
    }

    #[test]
    fn keys_differ_by_scope_split() {
        let a = record_key("idem:", &IdempotencyKey::new("ab", "c").unwrap());
        let b = record_key("idem:", &IdempotencyKey::new("a", "bc").unwrap());
        assert_ne!(a, b);
    }

    #[test]
    fn prefixes_separate_applications() {
        let key = IdempotencyKey::unscoped("k").unwrap();
        let one = record_key("one:", &key);
        let two = record_key("two:", &key);
        assert_ne!(one, two);
        assert_eq!(hash_tag(&one), hash_tag(&two));
    }

    #[test]
    fn prefix_validation() {
        for good in ["idem:", "x", "myapp:idem:", &"p".repeat(MAX_KEY_PREFIX_BYTES)] {
            assert!(validate_prefix(good).is_ok(), "{good:?}");
        }
        let bad = [
            ("", "empty"),
            ("a{b", "'{'"),
            ("a}b", "'}'"),
            ("a b", "U+0020"),
            ("a\nb", "U+000A"),
        ];
        for (prefix, named) in bad {
            let error = validate_prefix(prefix).unwrap_err();
            assert!(
                matches!(
                    error,
                    Error::InvalidInput {
                        field: InputField::Setting,
                        ..
                    }
                ),
                "{prefix:?}: {error}"
            );
            assert!(error.to_string().contains(named), "{prefix:?}: {error}");
        }
        let long = "p".repeat(MAX_KEY_PREFIX_BYTES + 1);
        let error = validate_prefix(&long).unwrap_err();
        assert!(error.to_string().contains("65 bytes"), "{error}");
    }
}
