//! Redis URLs: parsing with errors that never echo a password, and the redacted form for logs and `Debug`.

use idem_core::{Error, InputField};
use redis::{ConnectionInfo, IntoConnectionInfo};

/// Query parameters of a Redis URL that carry a password (`redis+unix:///path?pass=...`).
const SECRET_QUERY_KEYS: [&str; 2] = ["pass", "password"];

/// Returns `url` with its password replaced by `***`: the part after `user:` in the authority, the whole
/// user part when it has no colon (some clients read `redis://secret@host` as a password), and the values
/// of `pass` and `password` query parameters. A string without `://` is not shown at all, because it
/// may be a password pasted in the wrong place.
pub(crate) fn redact(url: &str) -> String {
    let Some(at) = url.find("://") else {
        return format!("<{} bytes without a scheme>", url.len());
    };
    let (scheme, rest) = url.split_at(at + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{host}", &userinfo[..colon]),
                None => format!("***{host}"),
            }
        }
        None => authority.to_owned(),
    };
    format!("{scheme}{authority}{}", redact_query(tail))
}

fn redact_query(tail: &str) -> String {
    let Some(question) = tail.find('?') else {
        return tail.to_owned();
    };
    let (path, query) = tail.split_at(question + 1);
    let (query, fragment) = match query.find('#') {
        Some(hash) => query.split_at(hash),
        None => (query, ""),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SECRET_QUERY_KEYS.contains(&name.to_ascii_lowercase().as_str()) => {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}{}{fragment}", pairs.join("&"))
}

/// Parses a Redis URL. The error names the redacted URL and the accepted forms, never the password.
pub(crate) fn parse(url: &str) -> Result<ConnectionInfo, Error> {
    url.into_connection_info().map_err(|error| {
        Error::invalid(
            InputField::Setting,
            format!(
                "Redis URL {} is invalid ({}); use redis://[user:password@]host[:port][/db], rediss:// for TLS, \
                 or redis+unix:///path/to/socket",
                redact(url),
                error.category()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password() {
        assert_eq!(redact("redis://:s3cret@host:6379/0"), "redis://:***@host:6379/0");
        assert_eq!(
            redact("rediss://app:s3cret@host:6380"),
            "rediss://app:***@host:6380"
        );
        assert_eq!(redact("redis://s3cret@host"), "redis://***@host");
        assert_eq!(redact("redis://:p@ss@host"), "redis://:***@host");
    }

    #[test]
    fn keeps_urls_without_secret() {
        for url in ["redis://127.0.0.1:6379", "redis://host/2", "rediss://host:6380/"] {
            assert_eq!(redact(url), url);
        }
    }

    #[test]
    fn hides_string_without_scheme() {
        assert_eq!(redact("s3cret"), "<6 bytes without a scheme>");
    }

    #[test]
    fn redacts_query_password() {
        assert_eq!(
            redact("redis+unix:///tmp/redis.sock?db=1&pass=s3cret"),
            "redis+unix:///tmp/redis.sock?db=1&pass=***"
        );
        assert_eq!(
            redact("unix:///s.sock?PASSWORD=x#frag"),
            "unix:///s.sock?PASSWORD=***#frag"
        );
    }

    #[test]
    fn invalid_url_error_hides_password() {
        for url in ["http://:s3cret@host", "redis://:s3cret@", "s3cret"] {
            let error = parse(url).unwrap_err();
            let shown = error.to_string();
            assert!(
                matches!(
                    error,
                    Error::InvalidInput {
                        field: InputField::Setting,
                        ..
                    }
                ),
                "{shown}"
            );
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("redis://["), "{shown}");
        }
    }

    #[test]
    fn valid_urls_parse() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://:pw@127.0.0.1:1/3",
            "rediss://localhost:6380",
        ] {
            assert!(parse(url).is_ok(), "{url}");
        }
    }
}
