//! Webhook signatures: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>`.
//!
//! Several secrets may be configured at once, so a secret can be rotated without dropping
//! deliveries: the new one is added, GitHub is switched to it, the old one is removed. The
//! comparison is the MAC's own constant-time check, never a string comparison.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// A webhook secret. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> WebhookSecret {
        WebhookSecret(secret.into())
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// Reads `CONVERGE_GITHUB_WEBHOOK_SECRET`: one secret, or several separated by commas while
/// one is being rotated. Blank entries are dropped.
pub fn parse_secrets(value: &str) -> Vec<WebhookSecret> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(WebhookSecret::new)
        .collect()
}

/// Why a signature was refused. The messages name the problem, never a secret or a MAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    /// The header is not `sha256=` followed by 64 hex digits.
    #[error("malformed X-Hub-Signature-256 header (expected sha256= and 64 hex digits)")]
    Malformed,
    /// No configured secret produces this signature.
    #[error("signature does not match")]
    Mismatch,
}

/// Checks `header` against `body` with each secret; `Ok` if one matches.
pub fn verify(
    secrets: &[WebhookSecret],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = decode_hex(hex).ok_or(SignatureError::Malformed)?;
    for secret in secrets {
        // HMAC takes keys of any length; this cannot fail.
        let Ok(mut mac) = HmacSha256::new_from_slice(secret.0.as_bytes()) else {
            continue;
        };
        mac.update(body);
        if mac.verify_slice(&expected).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// `sha256=<hex>` for `body` under `secret` (what GitHub sends; used by tests and the fake).
pub fn sign(secret: &WebhookSecret, body: &[u8]) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret.0.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", to_hex(&mac.finalize().into_bytes()))
}

/// SHA-256 of a body, hex (the delivery's fingerprint for dedupe).
pub fn body_sha256(body: &[u8]) -> String {
    to_hex(&Sha256::digest(body))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        let value = digit(pair[0])? * 16 + digit(pair[1])?;
        out[i] = u8::try_from(value).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
    const GITHUB_EXAMPLE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn signs_like_github_documents() {
        let secret = WebhookSecret::new("It's a Secret to Everybody");
        assert_eq!(sign(&secret, b"Hello, World!"), GITHUB_EXAMPLE);
        assert_eq!(
            verify(&[secret], b"Hello, World!", Some(GITHUB_EXAMPLE)),
            Ok(())
        );
    }

    #[test]
    fn refuses_every_kind_of_bad_signature() {
        let secret = WebhookSecret::new("It's a Secret to Everybody");
        let secrets = [secret.clone()];
        let body = b"Hello, World!";
        assert_eq!(verify(&secrets, body, None), Err(SignatureError::Missing));
        let truncated = &GITHUB_EXAMPLE[..GITHUB_EXAMPLE.len() - 2];
        assert_eq!(
            verify(&secrets, body, Some(truncated)),
            Err(SignatureError::Malformed)
        );
        let sha1 = "sha1=0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            verify(&secrets, body, Some(sha1)),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(&secrets, b"Hello, World?", Some(GITHUB_EXAMPLE)),
            Err(SignatureError::Mismatch)
        );
        let other = [WebhookSecret::new("another")];
        assert_eq!(
            verify(&other, body, Some(GITHUB_EXAMPLE)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&[], body, Some(GITHUB_EXAMPLE)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_configured_secret_verifies_during_a_rotation() {
        let secrets = parse_secrets(" new-secret , It's a Secret to Everybody ,");
        assert_eq!(secrets.len(), 2);
        assert_eq!(
            verify(&secrets, b"Hello, World!", Some(GITHUB_EXAMPLE)),
            Ok(())
        );
        assert!(!format!("{secrets:?}").contains("new-secret"));
    }
}
