//! Access tokens: compact JWTs signed with HMAC-SHA256.
//!
//! Only HS256 is produced and only HS256 is accepted: the header is compared byte for byte
//! with the one we emit, which closes the classic `alg: none` and algorithm-confusion holes
//! without a general-purpose JOSE library.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::AuthFailure;
use crate::{Error, Result};

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// What an access token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The tenant id.
    pub tid: String,
    /// The role at issue time.
    pub role: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

/// Sign claims into a token.
pub fn encode(claims: &Claims, key: &[u8]) -> Result<String> {
    let payload =
        serde_json::to_vec(claims).map_err(|e| Error::Internal(format!("jwt encode: {e}")))?;
    let mut token = URL_SAFE_NO_PAD.encode(HEADER);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let mut m = mac(key);
    m.update(token.as_bytes());
    let sig = m.finalize().into_bytes();
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(sig));
    Ok(token)
}

/// Verify signature and expiry (`now` in Unix seconds) and return the claims.
pub fn decode(token: &str, key: &[u8], now: i64) -> Result<Claims> {
    let invalid = || Error::Unauthenticated(AuthFailure::InvalidToken);
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let header = URL_SAFE_NO_PAD.decode(h).map_err(|_| invalid())?;
    if header != HEADER.as_bytes() {
        return Err(invalid());
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| invalid())?;
    let mut m = mac(key);
    m.update(&token.as_bytes()[..h.len() + 1 + p.len()]);
    m.verify_slice(&sig).map_err(|_| invalid())?;
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| invalid())?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| invalid())?;
    if claims.exp <= now {
        return Err(Error::Unauthenticated(AuthFailure::TokenExpired));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "u".into(),
            tid: "t".into(),
            role: "admin".into(),
            iat: 0,
            exp,
        }
    }

    #[test]
    fn round_trip() {
        let t = encode(&claims(100), b"k").unwrap();
        assert_eq!(decode(&t, b"k", 50).unwrap(), claims(100));
    }

    #[test]
    fn rejects_wrong_key_expiry_and_tampering() {
        let t = encode(&claims(100), b"k").unwrap();
        assert_eq!(
            decode(&t, b"other", 50).unwrap_err().code(),
            "invalid_token"
        );
        assert_eq!(decode(&t, b"k", 100).unwrap_err().code(), "token_expired");
        let forged_payload =
            URL_SAFE_NO_PAD.encode(br#"{"sub":"x","tid":"t","role":"admin","iat":0,"exp":9999}"#);
        let mut parts: Vec<&str> = t.split('.').collect();
        parts[1] = &forged_payload;
        assert!(decode(&parts.join("."), b"k", 50).is_err());
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let mut parts: Vec<&str> = t.split('.').collect();
        parts[0] = &none_header;
        assert!(decode(&parts.join("."), b"k", 50).is_err());
        for junk in ["", "a.b", "a.b.c.d", "...", "ü.ü.ü"] {
            assert!(decode(junk, b"k", 50).is_err());
        }
    }
}
