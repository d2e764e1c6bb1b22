//! Webhook signatures: GitHub's HMAC-SHA256 scheme and an Ed25519 scheme with a signed timestamp.
//!
//! Both checks run on the raw body bytes before anything parses them. The receiver verifies; the sender
//! signs with the same code, so the demo exercises both sides.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// GitHub's signature header: `sha256=` and the hex HMAC-SHA256 of the body under the shared secret.
pub(crate) const GITHUB_SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The Ed25519 signature header: 128 hex digits, a signature over `<timestamp>.<body>`.
pub(crate) const ED25519_SIGNATURE_HEADER: &str = "x-signature-ed25519";
/// The Ed25519 timestamp header: Unix time in seconds, as the sender signed it.
pub(crate) const ED25519_TIMESTAMP_HEADER: &str = "x-signature-timestamp";

/// How far an Ed25519 timestamp may lie from the receiver's clock, either way, so that a captured delivery
/// cannot be replayed later than this.
pub(crate) const MAX_TIMESTAMP_SKEW: Duration = Duration::from_secs(5 * 60);

/// A shared secret for GitHub's scheme. `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct GithubSecret(Vec<u8>);

impl GithubSecret {
    /// Wraps a secret; rejects an empty one, because an HMAC under an empty key proves nothing.
    pub(crate) fn new(secret: impl Into<Vec<u8>>) -> Result<Self, String> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(
                "the GitHub webhook secret is empty; set the secret configured on the webhook".to_owned(),
            );
        }
        Ok(Self(secret))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }

    /// Returns the `X-Hub-Signature-256` value for `body`.
    pub(crate) fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Checks an `X-Hub-Signature-256` value against `body`, comparing in constant time.
    pub(crate) fn verify(&self, header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing(GITHUB_SIGNATURE_HEADER))?;
        let Some(digits) = header.strip_prefix(b"sha256=") else {
            return Err(SignatureError::Malformed {
                header: GITHUB_SIGNATURE_HEADER,
                reason: "it does not start with sha256=",
            });
        };
        let Ok(tag) = hex::decode(digits) else {
            return Err(SignatureError::Malformed {
                header: GITHUB_SIGNATURE_HEADER,
                reason: "the part after sha256= is not hex",
            });
        };
        let mut mac = self.mac();
        mac.update(body);
        // verify_slice compares in constant time and rejects a tag of the wrong length.
        mac.verify_slice(&tag)
            .map_err(|_| SignatureError::Mismatch(GITHUB_SIGNATURE_HEADER))
    }
}

impl fmt::Debug for GithubSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GithubSecret(<redacted>)")
    }
}

/// The receiver's side of the Ed25519 scheme: the sender's public key.
#[derive(Clone, Debug)]
pub(crate) struct Ed25519Verifier {
    key: VerifyingKey,
}

impl Ed25519Verifier {
    /// Parses a public key of 64 hex digits.
    pub(crate) fn from_hex(public_key: &str) -> Result<Self, String> {
        let bytes: [u8; 32] = decode_hex_array(public_key)
            .map_err(|reason| format!("the Ed25519 public key {public_key:?} is invalid: {reason}"))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|error| {
            format!("the Ed25519 public key {public_key:?} is not a valid curve point: {error}")
        })?;
        Ok(Self { key })
    }

    /// Returns the public key as 64 hex digits.
    pub(crate) fn to_hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// Checks the signature and timestamp headers against `body` at the time `now`.
    ///
    /// The timestamp is checked after the signature, so a forged timestamp is reported as a bad signature.
    pub(crate) fn verify(
        &self,
        signature: Option<&[u8]>,
        timestamp: Option<&[u8]>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let signature = signature.ok_or(SignatureError::Missing(ED25519_SIGNATURE_HEADER))?;
        let timestamp = timestamp.ok_or(SignatureError::Missing(ED25519_TIMESTAMP_HEADER))?;
        let signature_bytes: [u8; 64] = std::str::from_utf8(signature)
            .map_err(|_| "it is not ASCII")
            .and_then(decode_hex_array)
            .map_err(|reason| SignatureError::Malformed {
                header: ED25519_SIGNATURE_HEADER,
                reason,
            })?;
        let seconds: u64 = std::str::from_utf8(timestamp)
            .ok()
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()))
            .and_then(|digits| digits.parse().ok())
            .ok_or(SignatureError::Malformed {
                header: ED25519_TIMESTAMP_HEADER,
                reason: "it is not a Unix time in seconds",
            })?;

        let message = signed_message(timestamp, body);
        self.key
            .verify_strict(&message, &Signature::from_bytes(&signature_bytes))
            .map_err(|_| SignatureError::Mismatch(ED25519_SIGNATURE_HEADER))?;

        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if now.abs_diff(seconds) > MAX_TIMESTAMP_SKEW.as_secs() {
            return Err(SignatureError::StaleTimestamp {
                timestamp: seconds,
                now,
            });
        }
        Ok(())
    }
}

/// The sender's side of the Ed25519 scheme: the private key. `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct Ed25519Signer {
    key: SigningKey,
}

impl Ed25519Signer {
    /// Parses a private key seed of 64 hex digits.
    pub(crate) fn from_hex(seed: &str) -> Result<Self, String> {
        // The value is a secret, so the message never repeats it.
        let bytes: [u8; 32] = decode_hex_array(seed)
            .map_err(|reason| format!("the Ed25519 private key seed is invalid: {reason}"))?;
        Ok(Self {
            key: SigningKey::from_bytes(&bytes),
        })
    }

    /// Returns the verifier that accepts this signer's signatures.
    pub(crate) fn verifier(&self) -> Ed25519Verifier {
        Ed25519Verifier {
            key: self.key.verifying_key(),
        }
    }

    /// Returns the signature and timestamp header values for `body`, signed for the time `at`.
    pub(crate) fn sign(&self, body: &[u8], at: SystemTime) -> (String, String) {
        let timestamp = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let signature = self.key.sign(&signed_message(timestamp.as_bytes(), body));
        (hex::encode(signature.to_bytes()), timestamp)
    }
}

impl fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ed25519Signer(<redacted>)")
    }
}

/// The reason a delivery's signature was rejected. Every variant becomes a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// The named header is absent.
    Missing(&'static str),
    /// The named header is present but cannot be parsed.
    Malformed {
        header: &'static str,
        reason: &'static str,
    },
    /// The signature in the named header does not match the body.
    Mismatch(&'static str),
    /// The signature is valid but its timestamp lies more than [`MAX_TIMESTAMP_SKEW`] from the clock.
    StaleTimestamp { timestamp: u64, now: u64 },
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(header) => write!(f, "the {header} header is missing; sign the delivery"),
            Self::Malformed { header, reason } => write!(f, "the {header} header is malformed: {reason}"),
            Self::Mismatch(header) => write!(
                f,
                "the {header} signature does not match the body; check that sender and receiver share the same key"
            ),
            Self::StaleTimestamp { timestamp, now } => write!(
                f,
                "the signed timestamp {timestamp} is {} s away from the receiver's clock ({now}); the limit is {} s either way",
                now.abs_diff(*timestamp),
                MAX_TIMESTAMP_SKEW.as_secs()
            ),
        }
    }
}

fn signed_message(timestamp: &[u8], body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(timestamp.len() + 1 + body.len());
    message.extend_from_slice(timestamp);
    message.push(b'.');
    message.extend_from_slice(body);
    message
}

fn decode_hex_array<const N: usize>(digits: &str) -> Result<[u8; N], &'static str> {
    let bytes = hex::decode(digits.trim()).map_err(|_| "it is not hex")?;
    bytes.try_into().map_err(|_| match N {
        32 => "it is not 64 hex digits (32 bytes)",
        64 => "it is not 128 hex digits (64 bytes)",
        _ => "it has the wrong length",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    const SEED: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    fn secret() -> GithubSecret {
        GithubSecret::new("It's a Secret to Everybody").unwrap()
    }

    #[test]
    fn github_known_vector() {
        // The example from GitHub's documentation on validating webhook deliveries.
        let signature = secret().sign(b"Hello, World!");
        assert_eq!(
            signature,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn github_accepts_own_signature() {
        let signature = secret().sign(BODY);
        assert_eq!(secret().verify(Some(signature.as_bytes()), BODY), Ok(()));
    }

    #[test]
    fn github_rejects_bad_input() {
        let good = secret().sign(BODY);
        let other_secret = GithubSecret::new("another secret").unwrap().sign(BODY);
        let truncated = &good[..good.len() - 2];
        // (signature header, body, expected error)
        type Case<'a> = (Option<&'a [u8]>, &'a [u8], SignatureError);
        let cases: [Case; 6] = [
            (None, BODY, SignatureError::Missing(GITHUB_SIGNATURE_HEADER)),
            (
                Some(good.as_bytes()),
                b"{}",
                SignatureError::Mismatch(GITHUB_SIGNATURE_HEADER),
            ),
            (
                Some(other_secret.as_bytes()),
                BODY,
                SignatureError::Mismatch(GITHUB_SIGNATURE_HEADER),
            ),
            (
                Some(truncated.as_bytes()),
                BODY,
                SignatureError::Mismatch(GITHUB_SIGNATURE_HEADER),
            ),
            (
                Some(&good.as_bytes()[7..]),
                BODY,
                SignatureError::Malformed {
                    header: GITHUB_SIGNATURE_HEADER,
                    reason: "it does not start with sha256=",
                },
            ),
            (
                Some(b"sha256=zz"),
                BODY,
                SignatureError::Malformed {
                    header: GITHUB_SIGNATURE_HEADER,
                    reason: "the part after sha256= is not hex",
                },
            ),
        ];
        for (header, body, expected) in cases {
            assert_eq!(secret().verify(header, body), Err(expected));
        }
    }

    #[test]
    fn github_rejects_empty_secret() {
        assert!(GithubSecret::new("").is_err());
    }

    #[test]
    fn secrets_hidden_from_debug() {
        let shown = format!("{:?} {:?}", secret(), Ed25519Signer::from_hex(SEED).unwrap());
        assert!(!shown.contains("Secret to Everybody"), "{shown}");
        assert!(!shown.contains("0101"), "{shown}");
    }

    #[test]
    fn ed25519_accepts_own_signature() {
        let signer = Ed25519Signer::from_hex(SEED).unwrap();
        let now = SystemTime::now();
        let (signature, timestamp) = signer.sign(BODY, now);
        let verifier = Ed25519Verifier::from_hex(&signer.verifier().to_hex()).unwrap();
        let result = verifier.verify(Some(signature.as_bytes()), Some(timestamp.as_bytes()), BODY, now);
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn ed25519_rejects_changed_body_or_timestamp() {
        let signer = Ed25519Signer::from_hex(SEED).unwrap();
        let verifier = signer.verifier();
        let now = SystemTime::now();
        let (signature, timestamp) = signer.sign(BODY, now);
        let later = (timestamp.parse::<u64>().unwrap() + 1).to_string();

        let changed_body =
            verifier.verify(Some(signature.as_bytes()), Some(timestamp.as_bytes()), b"{}", now);
        assert_eq!(
            changed_body,
            Err(SignatureError::Mismatch(ED25519_SIGNATURE_HEADER))
        );

        let changed_timestamp =
            verifier.verify(Some(signature.as_bytes()), Some(later.as_bytes()), BODY, now);
        assert_eq!(
            changed_timestamp,
            Err(SignatureError::Mismatch(ED25519_SIGNATURE_HEADER))
        );

        let other_key = Ed25519Signer::from_hex(&"02".repeat(32)).unwrap().verifier();
        let wrong_key = other_key.verify(Some(signature.as_bytes()), Some(timestamp.as_bytes()), BODY, now);
        assert_eq!(wrong_key, Err(SignatureError::Mismatch(ED25519_SIGNATURE_HEADER)));
    }

    #[test]
    fn ed25519_rejects_old_and_future_timestamps() {
        let signer = Ed25519Signer::from_hex(SEED).unwrap();
        let verifier = signer.verifier();
        let now = SystemTime::now();
        let limit = MAX_TIMESTAMP_SKEW;
        let second = Duration::from_secs(1);

        for (at, accepted) in [
            (now - limit + second, true),
            (now + limit - second, true),
            (now - limit - second * 2, false),
            (now + limit + second * 2, false),
        ] {
            let (signature, timestamp) = signer.sign(BODY, at);
            let result = verifier.verify(Some(signature.as_bytes()), Some(timestamp.as_bytes()), BODY, now);
            assert_eq!(result.is_ok(), accepted, "signed at {timestamp}: {result:?}");
            if !accepted {
                assert!(
                    matches!(result, Err(SignatureError::StaleTimestamp { .. })),
                    "{result:?}"
                );
            }
        }
    }

    #[test]
    fn ed25519_rejects_missing_and_malformed_headers() {
        let signer = Ed25519Signer::from_hex(SEED).unwrap();
        let verifier = signer.verifier();
        let now = SystemTime::now();
        let (signature, timestamp) = signer.sign(BODY, now);

        let missing_signature = verifier.verify(None, Some(timestamp.as_bytes()), BODY, now);
        assert_eq!(
            missing_signature,
            Err(SignatureError::Missing(ED25519_SIGNATURE_HEADER))
        );

        let missing_timestamp = verifier.verify(Some(signature.as_bytes()), None, BODY, now);
        assert_eq!(
            missing_timestamp,
            Err(SignatureError::Missing(ED25519_TIMESTAMP_HEADER))
        );

        let short = verifier.verify(
            Some(&signature.as_bytes()[..64]),
            Some(timestamp.as_bytes()),
            BODY,
            now,
        );
        assert!(
            matches!(short, Err(SignatureError::Malformed { .. })),
            "{short:?}"
        );

        for bad_timestamp in ["", "-5", "12.5", "+100", "soon"] {
            let result = verifier.verify(
                Some(signature.as_bytes()),
                Some(bad_timestamp.as_bytes()),
                BODY,
                now,
            );
            assert!(
                matches!(
                    result,
                    Err(SignatureError::Malformed {
                        header: ED25519_TIMESTAMP_HEADER,
                        ..
                    })
                ),
                "{bad_timestamp:?}: {result:?}"
            );
        }
    }

    #[test]
    fn ed25519_key_parsing_errors() {
        assert!(Ed25519Verifier::from_hex("abcd").is_err());
        assert!(Ed25519Verifier::from_hex(&"zz".repeat(32)).is_err());
        assert!(Ed25519Signer::from_hex("abcd").is_err());
        let error = Ed25519Signer::from_hex(&"zz".repeat(32)).unwrap_err();
        assert!(!error.contains("zz"), "the message repeats the secret: {error}");
    }
}
