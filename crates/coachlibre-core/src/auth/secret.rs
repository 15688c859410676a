//! Secrets: random tokens, one-way hashes for tokens we only need to recognise, and sealing
//! (authenticated encryption) for secrets we must read back, such as TOTP seeds.
//!
//! One master key (configured, or generated into the data directory) derives a key per
//! purpose, so a leak of one derived key does not expose the others.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Error, Result};

/// `n` random bytes, URL-safe base64 without padding.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 of a token, hex: how refresh tokens, API keys and recovery codes are stored.
/// These tokens carry 128+ bits of entropy, so a fast hash is enough (no dictionary to try).
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Constant-time equality of two strings.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The keys the platform derives from its master secret.
#[derive(Clone)]
pub struct Keys {
    jwt: [u8; 32],
    seal: [u8; 32],
    webhook: [u8; 32],
    csrf: [u8; 32],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(***)")
    }
}

fn derive(master: &[u8], label: &str) -> [u8; 32] {
    // HMAC as a PRF: key = HMAC-SHA256(master, label).
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

impl Keys {
    /// Derive every purpose key from the master secret (at least 32 bytes).
    pub fn from_master(master: &[u8]) -> Result<Self> {
        if master.len() < 32 {
            return Err(Error::invalid(
                "secret_key",
                "must be at least 32 bytes of randomness",
            ));
        }
        Ok(Self {
            jwt: derive(master, "coachlibre/jwt/v1"),
            seal: derive(master, "coachlibre/seal/v1"),
            webhook: derive(master, "coachlibre/webhook/v1"),
            csrf: derive(master, "coachlibre/csrf/v1"),
        })
    }

    /// Key for signing access tokens.
    pub fn jwt_key(&self) -> &[u8; 32] {
        &self.jwt
    }

    /// The secret of a webhook (`scope` names it, e.g. a tenant and a workflow): derived, so
    /// nothing is stored; it changes with `secret_key`.
    pub fn webhook_secret(&self, scope: &str) -> String {
        hex(&derive(&self.webhook, scope))
    }

    /// The anti-forgery token of a browser session (`binding` is the session's cookie
    /// value): derived, so nothing is stored, and useless without the cookie it is bound to.
    pub fn csrf_token(&self, binding: &str) -> String {
        hex(&derive(&self.csrf, binding))
    }

    /// Whether `token` is the anti-forgery token of `binding`.
    pub fn verify_csrf(&self, binding: &str, token: &str) -> bool {
        constant_time_eq(token, &self.csrf_token(binding))
    }

    /// Whether a webhook call proves it knows the secret of `scope`: the secret itself (in
    /// the URL), or `sha256=<hex HMAC-SHA256(secret, body)>` (in a header).
    pub fn verify_webhook(
        &self,
        scope: &str,
        token: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> bool {
        let secret = self.webhook_secret(scope);
        if let Some(t) = token
            && constant_time_eq(t, &secret)
        {
            return true;
        }
        let Some(sig) = signature.and_then(|s| s.strip_prefix("sha256=")) else {
            return false;
        };
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(body);
        constant_time_eq(sig, &hex(&mac.finalize().into_bytes()))
    }

    /// Encrypt and authenticate a small secret; returns base64 of nonce ‖ ciphertext.
    pub fn seal(&self, plaintext: &[u8]) -> Result<String> {
        let cipher = ChaCha20Poly1305::new((&self.seal).into());
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .map_err(|_| Error::Internal("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Reverse [`Keys::seal`]; fails if the value was tampered with or sealed by another key.
    pub fn unseal(&self, sealed: &str) -> Result<Vec<u8>> {
        let raw = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| Error::Internal("sealed value is not base64".into()))?;
        if raw.len() < 12 {
            return Err(Error::Internal("sealed value too short".into()));
        }
        let (nonce, ct) = raw.split_at(12);
        ChaCha20Poly1305::new((&self.seal).into())
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| {
                Error::Internal("sealed value cannot be opened with this secret_key".into())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_secrets_verify_by_token_or_signature() {
        let keys = Keys::from_master(&[7u8; 32]).unwrap();
        let secret = keys.webhook_secret("t1/welcome");
        assert_ne!(secret, keys.webhook_secret("t1/other"));
        assert!(keys.verify_webhook("t1/welcome", Some(&secret), None, b""));
        assert!(!keys.verify_webhook("t1/welcome", Some("guess"), None, b""));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(b"{}");
        let sig = format!("sha256={}", hex(&mac.finalize().into_bytes()));
        assert!(keys.verify_webhook("t1/welcome", None, Some(&sig), b"{}"));
        assert!(!keys.verify_webhook("t1/welcome", None, Some(&sig), b"{ }"));
        assert!(!keys.verify_webhook("t1/welcome", None, None, b"{}"));
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let keys = Keys::from_master(&[7u8; 32]).expect("keys");
        let t = keys.csrf_token("session-a");
        assert!(keys.verify_csrf("session-a", &t));
        assert!(!keys.verify_csrf("session-b", &t));
        assert!(!keys.verify_csrf("session-a", ""));
    }

    #[test]
    fn seal_round_trips_and_detects_tampering() {
        let keys = Keys::from_master(&[7u8; 32]).unwrap();
        let sealed = keys.seal(b"totp seed").unwrap();
        assert_eq!(keys.unseal(&sealed).unwrap(), b"totp seed");
        let other = Keys::from_master(&[8u8; 32]).unwrap();
        assert!(other.unseal(&sealed).is_err());
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(keys.unseal(&URL_SAFE_NO_PAD.encode(bytes)).is_err());
    }

    #[test]
    fn short_master_is_refused() {
        assert!(Keys::from_master(b"short").is_err());
    }

    #[test]
    fn token_hash_is_stable_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(random_token(32), random_token(32));
    }
}
