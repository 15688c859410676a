//! Time-based one-time passwords (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps), the
//! scheme every authenticator app speaks, and recovery codes for a lost phone.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;

/// Seconds per step.
pub const STEP_SECS: i64 = 30;
/// Steps of clock drift tolerated either way.
pub const SKEW: i64 = 1;

/// A fresh 160-bit secret.
pub fn generate_secret() -> Vec<u8> {
    let mut s = vec![0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

/// The code for one time step.
pub fn code_at(secret: &[u8], step: i64) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h[19] & 0x0f);
    let bin = (u32::from(h[offset]) & 0x7f) << 24
        | u32::from(h[offset + 1]) << 16
        | u32::from(h[offset + 2]) << 8
        | u32::from(h[offset + 3]);
    format!("{:06}", bin % 1_000_000)
}

/// The step a Unix time falls in.
pub fn step_of(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(STEP_SECS)
}

/// The step whose code matches `code` within the tolerated skew, if any.
pub fn matching_step(secret: &[u8], code: &str, unix_secs: i64) -> Option<i64> {
    let code = code.trim().replace(' ', "");
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_of(unix_secs);
    (now - SKEW..=now + SKEW).find(|&s| super::secret::constant_time_eq(&code_at(secret, s), &code))
}

/// RFC 4648 base32 without padding, as authenticator apps expect.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buf >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

/// `otpauth://` URI for QR codes.
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    fn esc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'@' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits=6&period={STEP_SECS}",
        esc(issuer),
        esc(account),
        base32(secret),
        esc(issuer)
    )
}

/// Ten recovery codes like `k7fq-2m9x-p4`: 50 bits each, easy to type.
pub fn generate_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    (0..10)
        .map(|_| {
            let mut raw = [0u8; 10];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            let chars: String = raw
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
                .collect();
            format!("{}-{}-{}", &chars[..4], &chars[4..8], &chars[8..])
        })
        .collect()
}

/// Normalise a typed recovery code before hashing (case, spaces).
pub fn normalise_recovery_code(code: &str) -> String {
    code.trim().to_ascii_lowercase().replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_vectors() {
        // RFC 6238 appendix B, SHA1 secret "12345678901234567890", last 6 digits.
        let secret = b"12345678901234567890";
        assert_eq!(code_at(secret, step_of(59)), "287082");
        assert_eq!(code_at(secret, step_of(1_111_111_109)), "081804");
        assert_eq!(code_at(secret, step_of(2_000_000_000)), "279037");
    }

    #[test]
    fn skew_window() {
        let secret = b"12345678901234567890";
        let code = code_at(secret, step_of(1000));
        assert_eq!(matching_step(secret, &code, 1000), Some(step_of(1000)));
        assert!(matching_step(secret, &code, 1000 + 30).is_some());
        assert!(matching_step(secret, &code, 1000 + 90).is_none());
        assert!(matching_step(secret, "12345", 1000).is_none());
        assert!(matching_step(secret, "abcdef", 1000).is_none());
    }

    #[test]
    fn base32_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    #[test]
    fn recovery_codes_are_distinct() {
        let codes = generate_recovery_codes();
        assert_eq!(codes.len(), 10);
        let set: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(set.len(), 10);
        assert_eq!(normalise_recovery_code(" AbCd-efgh-jk "), "abcd-efgh-jk");
    }
}
