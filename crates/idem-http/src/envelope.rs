//! The stored form of a response: one format byte, then postcard of [`StoredResponse`].

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

/// Format byte of a response stored by this crate, version 1.
pub(crate) const FORMAT_HTTP_V1: u8 = 0x48;

/// A response as the store keeps it. Header values are bytes because HTTP allows non-UTF-8 values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Vec<u8>,
}

/// A stored response that is checked and ready to send.
#[derive(Debug)]
pub(crate) struct DecodedResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl StoredResponse {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let bytes = vec![FORMAT_HTTP_V1];
        postcard::to_extend(self, bytes)
            .expect("postcard encodes integers, strings and byte vectors into a Vec")
    }
}

/// Decodes and checks a stored response. The error says what is wrong, for the log.
pub(crate) fn decode(bytes: &[u8]) -> Result<DecodedResponse, String> {
    let Some((&format, payload)) = bytes.split_first() else {
        return Err("the stored response is empty, so it was not written by idem-http".into());
    };
    if format != FORMAT_HTTP_V1 {
        return Err(format!(
            "the stored response has format byte {format:#04x}, expected {FORMAT_HTTP_V1:#04x}; it was written by another idem version or by code other than idem-http on the same keys"
        ));
    }
    let (stored, rest): (StoredResponse, _) = postcard::take_from_bytes(payload)
        .map_err(|error| format!("the stored response does not decode ({error})"))?;
    if !rest.is_empty() {
        return Err(format!(
            "the stored response has {} bytes left over after decoding",
            rest.len()
        ));
    }

    let status = StatusCode::from_u16(stored.status)
        .map_err(|_| format!("the stored status {} is not a valid HTTP status", stored.status))?;
    let mut headers = HeaderMap::with_capacity(stored.headers.len());
    for (name, value) in stored.headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("the stored header name {name:?} is not valid"))?;
        let header_value = HeaderValue::from_bytes(&value)
            .map_err(|_| format!("the stored value of header {name:?} is not valid"))?;
        headers.append(header_name, header_value);
    }
    Ok(DecodedResponse {
        status,
        headers,
        body: stored.body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![
                ("content-type".into(), b"application/octet-stream".to_vec()),
                ("x-multi".into(), b"a".to_vec()),
                ("x-multi".into(), b"b".to_vec()),
            ],
            body: vec![0, 159, 146, 150, 255],
        }
    }

    #[test]
    fn round_trip_keeps_everything() {
        let decoded = decode(&sample().encode()).unwrap();
        assert_eq!(decoded.status, StatusCode::CREATED);
        assert_eq!(decoded.body, vec![0, 159, 146, 150, 255]);
        let multi: Vec<_> = decoded.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[0x01, 0x02]).is_err());
        assert!(decode(&[FORMAT_HTTP_V1, 0xff, 0xff]).is_err());
        let mut trailing = sample().encode();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
    }

    #[test]
    fn invalid_status_is_rejected() {
        let mut stored = sample();
        stored.status = 1000;
        assert!(decode(&stored.encode()).is_err());
    }
}
