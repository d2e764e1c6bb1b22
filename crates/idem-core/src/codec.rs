//! How the runner turns outputs into stored bytes: one format byte, then postcard.
//!
//! postcard is compact and fast, but not self-describing: the bytes carry no field names or types. A record
//! written by one deploy decodes in the next only while the output type stays compatible in postcard's
//! terms (same fields in the same order, enum variants only appended). When a type must change
//! incompatibly, change the keys' scope or wait out the retention period. Types that postcard cannot
//! round-trip (those that deserialize with `deserialize_any`, such as `serde_json::Value` or untagged enums)
//! are caught by decoding every output once before it is stored.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::key::IdempotencyKey;

/// Format byte of a stored output: postcard encoding of the closure's `Ok` value.
pub const FORMAT_VALUE_V1: u8 = 1;
/// Format byte of a stored output: postcard encoding of the closure's whole `Result`, written when the
/// runner stores errors too.
pub const FORMAT_RESULT_V1: u8 = 2;

/// Encodes `value` behind `format`, and checks that the bytes decode again as `T`.
pub(crate) fn encode_checked<T: Serialize + DeserializeOwned>(format: u8, value: &T) -> Result<Vec<u8>> {
    let mut bytes = vec![format];
    bytes = postcard::to_extend(value, bytes).map_err(|error| Error::Encoding {
        reason: error.to_string(),
    })?;

    postcard::from_bytes::<T>(&bytes[1..]).map_err(|error| Error::Encoding {
        reason: format!("postcard cannot decode the encoded value again ({error}); use a type without deserialize_any, such as a struct instead of serde_json::Value"),
    })?;
    Ok(bytes)
}

/// Decodes a stored response written with `format`.
pub(crate) fn decode<T: DeserializeOwned>(format: u8, key: &IdempotencyKey, bytes: &[u8]) -> Result<T> {
    let corrupt = |reason: String| {
        tracing::error!(key = %key.label(), %reason, "corrupt idempotency record");
        Error::CorruptRecord {
            key: key.label(),
            reason,
        }
    };

    let Some((&found, payload)) = bytes.split_first() else {
        return Err(corrupt(
            "the stored response is empty, so it was not written by the runner".into(),
        ));
    };
    if found != format {
        let writer = match found {
            FORMAT_VALUE_V1 => {
                "Runner::run, but was read by Runner::run_storing_errors; use one method per key".into()
            }
            FORMAT_RESULT_V1 => {
                "Runner::run_storing_errors, but was read by Runner::run; use one method per key".into()
            }
            _ => format!(
                "another idem version or another program (format byte {found:#04x}, expected {format:#04x})"
            ),
        };
        return Err(corrupt(format!("the stored output was written by {writer}")));
    }

    // postcard ignores bytes left over after a value, so a leftover means the stored value is of another type.
    let (value, rest) = postcard::take_from_bytes(payload).map_err(|error| {
        corrupt(format!(
            "the stored output does not decode as the expected type ({error}); the type changed incompatibly"
        ))
    })?;
    if !rest.is_empty() {
        return Err(corrupt(format!(
            "the stored output decodes as the expected type with {} bytes left over, so it was written as another type",
            rest.len()
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Charge {
        id: String,
        amount: u64,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Untagged {
        Number(u64),
        Text(String),
    }

    #[test]
    fn round_trip_keeps_value() {
        let key = IdempotencyKey::unscoped("k").unwrap();
        let charge = Charge {
            id: "ch_1".into(),
            amount: 4200,
        };
        let bytes = encode_checked(FORMAT_VALUE_V1, &charge).unwrap();
        assert_eq!(bytes[0], FORMAT_VALUE_V1);
        assert_eq!(decode::<Charge>(FORMAT_VALUE_V1, &key, &bytes).unwrap(), charge);
    }

    #[test]
    fn untagged_enum_fails_before_storing() {
        let error = encode_checked(FORMAT_VALUE_V1, &Untagged::Text("x".into())).unwrap_err();
        assert!(matches!(error, Error::Encoding { .. }), "{error}");
        let _ = Untagged::Number(1);
    }

    #[test]
    fn leftover_bytes_are_corrupt() {
        let key = IdempotencyKey::unscoped("k").unwrap();
        let bytes = encode_checked(FORMAT_VALUE_V1, &"contact-1".to_string()).unwrap();
        let error = decode::<u64>(FORMAT_VALUE_V1, &key, &bytes).unwrap_err();
        assert!(matches!(error, Error::CorruptRecord { .. }), "{error}");
        assert!(error.to_string().contains("left over"), "{error}");
    }

    #[test]
    fn other_runner_method_is_named() {
        let key = IdempotencyKey::unscoped("k").unwrap();
        let bytes = encode_checked(FORMAT_RESULT_V1, &Ok::<u32, String>(7)).unwrap();
        let error = decode::<u32>(FORMAT_VALUE_V1, &key, &bytes).unwrap_err();
        assert!(error.to_string().contains("run_storing_errors"), "{error}");
    }

    #[test]
    fn wrong_format_byte_is_corrupt() {
        let key = IdempotencyKey::unscoped("k").unwrap();
        let bytes = encode_checked(FORMAT_RESULT_V1, &7u32).unwrap();
        let error = decode::<u32>(FORMAT_VALUE_V1, &key, &bytes).unwrap_err();
        assert!(matches!(error, Error::CorruptRecord { .. }), "{error}");
        let error = decode::<u32>(FORMAT_VALUE_V1, &key, &[]).unwrap_err();
        assert!(matches!(error, Error::CorruptRecord { .. }), "{error}");
        let error = decode::<Charge>(FORMAT_VALUE_V1, &key, &[FORMAT_VALUE_V1, 0xFF]).unwrap_err();
        assert!(error.to_string().contains(&key.label().to_string()), "{error}");
    }
}
