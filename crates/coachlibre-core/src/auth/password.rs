//! Password hashing with argon2id (the OWASP-recommended parameters of the `argon2` crate's
//! defaults: 19 MiB, 2 passes). Hashing is CPU-bound for tens of milliseconds, so the async
//! functions run it on the blocking pool instead of stalling the request executor.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::rngs::OsRng;

use crate::user::Password;
use crate::{Error, Result};

/// Hash a password (PHC string format).
pub fn hash(password: &Password) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))
}

/// Check a password against a stored hash. A malformed stored hash counts as a mismatch.
pub fn verify(candidate: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|h| {
            Argon2::default()
                .verify_password(candidate.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("hashing task failed: {e}")))
}

/// [`hash`] off the async executor.
pub async fn hash_async(password: Password) -> Result<String> {
    blocking(move || hash(&password)).await?
}

/// [`verify`] off the async executor.
pub async fn verify_async(candidate: String, stored: String) -> Result<bool> {
    blocking(move || verify(&candidate, &stored)).await
}

/// A valid hash of a random password, verified against when the account does not exist so
/// that a failed login takes as long for an unknown email as for a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash(&Password::generate()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let p = Password::parse("a long enough secret").unwrap();
        let h = hash(&p).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("a long enough secret", &h));
        assert!(!verify("another secret here", &h));
        assert!(!verify("anything", "not a phc string"));
    }
}
