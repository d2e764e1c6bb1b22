//! The request fingerprint: method, path, query, chosen headers and body.

use http::HeaderName;
use http::request::Parts;
use idem_core::Fingerprint;
use serde_json::Value;

/// Derives the fingerprint of a buffered request.
///
/// With `canonical_json`, a body that parses as JSON is fingerprinted in a canonical form (object keys
/// sorted, no insignificant whitespace), and any other body by its raw bytes. A tag part keeps the two
/// forms apart, so a raw body never collides with the canonical form of another body.
pub(crate) fn request_fingerprint(
    parts: &Parts,
    body: &[u8],
    canonical_json: bool,
    include_headers: &[HeaderName],
) -> Fingerprint {
    let method = parts.method.as_str().as_bytes();
    let path = parts.uri.path().as_bytes();
    let query = parts.uri.query().unwrap_or("").as_bytes();

    let mut header_parts = Vec::with_capacity(include_headers.len());
    for name in include_headers {
        // Each header is its name, then its values in order, each length-prefixed by from_parts' framing.
        let mut joined = Vec::new();
        for value in parts.headers.get_all(name) {
            joined.extend_from_slice(&(value.len() as u64).to_be_bytes());
            joined.extend_from_slice(value.as_bytes());
        }
        header_parts.push((name.as_str().as_bytes(), joined));
    }

    let canonical = canonical_json.then(|| canonical_json_bytes(body)).flatten();
    let (body_tag, body_bytes): (&[u8], &[u8]) = match &canonical {
        Some(bytes) => (b"json", bytes),
        None => (b"raw", body),
    };

    let mut all: Vec<&[u8]> = vec![b"idem-http.v1", method, path, query];
    for (name, values) in &header_parts {
        all.push(name);
        all.push(values);
    }
    all.push(body_tag);
    all.push(body_bytes);
    Fingerprint::from_parts(&all)
}

/// Returns the canonical form of a JSON body, or `None` when the body is not JSON.
fn canonical_json_bytes(body: &[u8]) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let mut out = Vec::with_capacity(body.len());
    write_canonical(&value, &mut out);
    Some(out)
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            // Sorted here, because serde_json keeps insertion order when its preserve_order feature is on.
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|left, right| left.0.cmp(right.0));
            out.push(b'{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::String(text) => write_string(text, out),
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(
        serde_json::to_string(text)
            .expect("serializing a string to JSON cannot fail")
            .as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str) -> Parts {
        Request::post(uri)
            .header("content-type", "application/json")
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn canonical_ignores_order_and_space() {
        let left = br#"{"a":1,"b":{"y":[1,2],"x":"s"}}"#;
        let right = b"{ \"b\" : {\"x\":\"s\", \"y\":[1, 2]},\n \"a\":1 }";
        let parts = parts("/charges");
        assert_eq!(
            request_fingerprint(&parts, left, true, &[]),
            request_fingerprint(&parts, right, true, &[])
        );
        assert_ne!(
            request_fingerprint(&parts, left, false, &[]),
            request_fingerprint(&parts, right, false, &[])
        );
    }

    #[test]
    fn canonical_keeps_array_order() {
        let parts = parts("/charges");
        assert_ne!(
            request_fingerprint(&parts, b"[1,2]", true, &[]),
            request_fingerprint(&parts, b"[2,1]", true, &[])
        );
    }

    #[test]
    fn non_json_body_falls_back_to_raw() {
        let parts = parts("/charges");
        assert_eq!(
            request_fingerprint(&parts, b"not json", true, &[]),
            request_fingerprint(&parts, b"not json", true, &[])
        );
        assert_ne!(
            request_fingerprint(&parts, b"not json", true, &[]),
            request_fingerprint(&parts, b"not json!", true, &[])
        );
    }

    #[test]
    fn raw_never_equals_canonical() {
        // The raw body `{"a":1}` sent without canonicalization must not match the same text canonicalized.
        let parts = parts("/charges");
        assert_ne!(
            request_fingerprint(&parts, br#"{"a":1}"#, true, &[]),
            request_fingerprint(&parts, br#"{"a":1}"#, false, &[])
        );
    }

    #[test]
    fn path_query_and_headers_count() {
        let body = b"{}";
        let base = request_fingerprint(&parts("/a?x=1"), body, false, &[]);
        assert_ne!(base, request_fingerprint(&parts("/b?x=1"), body, false, &[]));
        assert_ne!(base, request_fingerprint(&parts("/a?x=2"), body, false, &[]));
        let content_type = HeaderName::from_static("content-type");
        let mut other = parts("/a?x=1");
        other
            .headers
            .insert("content-type", "text/plain".parse().unwrap());
        assert_ne!(
            request_fingerprint(&parts("/a?x=1"), body, false, std::slice::from_ref(&content_type)),
            request_fingerprint(&other, body, false, std::slice::from_ref(&content_type))
        );
        assert_eq!(base, request_fingerprint(&other, body, false, &[]));
    }
}
