//! RFC 9457 problem details: the answers the layer gives instead of running the handler.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::body::ResponseBody;

/// Media type of every answer the layer writes itself.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// Builds an `application/problem+json` response with `type` `about:blank`, the status's reason phrase as
/// `title`, and `detail`.
pub(crate) fn problem(status: StatusCode, detail: &str) -> Response<ResponseBody> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = Response::new(ResponseBody::full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

/// Builds a problem response with a `Retry-After` of `after` in whole seconds, rounded up, at least 1.
pub(crate) fn problem_retry_after(
    status: StatusCode,
    detail: &str,
    after: Duration,
) -> Response<ResponseBody> {
    let mut response = problem(status, detail);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(after)));
    response
}

/// Rounds `after` up to whole seconds, at least 1, for a `Retry-After` header.
pub(crate) fn retry_after_secs(after: Duration) -> u64 {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
    }
}
