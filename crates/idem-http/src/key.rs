//! Reading the key string out of the `Idempotency-Key` header value.

/// Why a header value holds no usable key string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MalformedKey(pub(crate) String);

/// Parses a header value as a Structured Field string (`"abc"`, with the escapes `\"` and `\\`) or, when it
/// does not start with a double quote, as a bare token (`abc`) the way Stripe's SDKs send it.
///
/// Parameters after a Structured Field string (`"abc";p=1`) are ignored, as RFC 8941 lets a recipient do
/// with parameters it does not know. The caller validates the result with `IdempotencyKey` rules.
pub(crate) fn parse_key_value(value: &[u8]) -> Result<String, MalformedKey> {
    let value = trim_ows(value);
    if value.first() == Some(&b'"') {
        return parse_sf_string(value);
    }
    String::from_utf8(value.to_vec()).map_err(|_| {
        MalformedKey("the header value is not valid UTF-8; send the key as printable text".into())
    })
}

fn parse_sf_string(value: &[u8]) -> Result<String, MalformedKey> {
    let mut out = String::new();
    let mut index = 1;
    loop {
        let Some(&byte) = value.get(index) else {
            return Err(MalformedKey(
                "the quoted key has no closing double quote; send \"key\" or a bare key".into(),
            ));
        };
        index += 1;
        match byte {
            b'"' => break,
            b'\\' => match value.get(index) {
                Some(&escaped @ (b'"' | b'\\')) => {
                    out.push(char::from(escaped));
                    index += 1;
                }
                _ => {
                    return Err(MalformedKey(
                        "the quoted key has a backslash that is not followed by \" or \\; only those two escapes are allowed".into(),
                    ));
                }
            },
            0x20..=0x7e => out.push(char::from(byte)),
            _ => {
                return Err(MalformedKey(format!(
                    "the quoted key contains the byte {byte:#04x}; a Structured Field string allows only printable ASCII"
                )));
            }
        }
    }

    let rest = trim_ows(&value[index..]);
    if !rest.is_empty() && rest[0] != b';' {
        return Err(MalformedKey(
            "the header value has text after the quoted key; send exactly one quoted or bare key".into(),
        ));
    }
    Ok(out)
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_and_bare_agree() {
        assert_eq!(parse_key_value(b"\"abc\"").unwrap(), "abc");
        assert_eq!(parse_key_value(b"abc").unwrap(), "abc");
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(parse_key_value(br#""a\"b\\c""#).unwrap(), r#"a"b\c"#);
    }

    #[test]
    fn parameters_are_ignored() {
        assert_eq!(parse_key_value(b"\"abc\";v=1").unwrap(), "abc");
    }

    #[test]
    fn malformed_quoted_keys_fail() {
        for bad in [&b"\"abc"[..], b"\"a\\nb\"", b"\"abc\" x", b"\"a\xc3\xa9\""] {
            assert!(parse_key_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn empty_quoted_key_parses_empty() {
        // The caller rejects the empty string with the IdempotencyKey rules.
        assert_eq!(parse_key_value(b"\"\"").unwrap(), "");
    }

    #[test]
    fn bare_key_keeps_utf8() {
        assert_eq!(parse_key_value("clé".as_bytes()).unwrap(), "clé");
        assert!(parse_key_value(b"\xff").is_err());
    }
}
