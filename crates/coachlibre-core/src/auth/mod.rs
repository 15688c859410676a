//! Authentication: password login with lockout and optional TOTP, short-lived access tokens,
//! rotating refresh tokens, API keys.
//!
//! Refresh tokens form a *family* per login. Each refresh marks the presented token used and
//! issues a successor in the same family. Presenting a used token again means it leaked (the
//! legitimate client already moved on), so the whole family is revoked and both parties must
//! sign in again.

pub mod jwt;
pub mod password;
pub mod secret;
pub mod throttle;
pub mod totp;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::actor::{Actor, Credential};
use crate::audit::{AuditEntry, action};
use crate::error::AuthFailure;
use crate::ids::{RefreshTokenId, SessionFamilyId};
use crate::store::{RefreshToken, Store};
use crate::tenant::TenantSlug;
use crate::user::{Email, MfaState, Password, Role, User, UserView};
use crate::{Error, Result};
pub use secret::Keys;

/// Prefix of every API key, so they are recognisable in logs and secret scanners.
pub const API_KEY_PREFIX: &str = "cl_";

/// Tunable authentication rules.
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    /// Lifetime of an access token.
    pub access_ttl: Duration,
    /// Lifetime of a refresh token.
    pub refresh_ttl: Duration,
    /// Failed sign-ins from one client address for one email before that pair waits.
    pub lockout_threshold: i32,
    /// Failed sign-ins for one account, from any address, before the account locks (a
    /// guessing attack spread over many addresses). A locked account still lets in whoever
    /// also passes its second factor; an admin's password reset unlocks it.
    pub account_lockout_threshold: i32,
    /// First wait or lock; doubles with each further failure.
    pub lockout_base: Duration,
    /// Longest wait or lock.
    pub lockout_max: Duration,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        Self {
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            lockout_threshold: 5,
            account_lockout_threshold: 50,
            lockout_base: Duration::from_secs(30),
            lockout_max: Duration::from_secs(3600),
        }
    }
}

impl AuthPolicy {
    /// How long an address waits after `failures` consecutive failures for one email, if at
    /// all.
    pub fn lock_for(&self, failures: i32) -> Option<Duration> {
        self.backoff(failures, self.lockout_threshold)
    }

    /// How long an account locks after `failures` consecutive failures from any address.
    pub fn account_lock_for(&self, failures: i32) -> Option<Duration> {
        self.backoff(failures, self.account_lockout_threshold)
    }

    fn backoff(&self, failures: i32, threshold: i32) -> Option<Duration> {
        let over = failures.checked_sub(threshold)?;
        let factor = 1u32
            .checked_shl(u32::try_from(over).ok()?)
            .unwrap_or(u32::MAX);
        Some(
            self.lockout_base
                .checked_mul(factor)
                .map_or(self.lockout_max, |d| d.min(self.lockout_max)),
        )
    }
}

/// A login attempt.
#[derive(Debug, Clone)]
pub struct LoginAttempt {
    /// Tenant slug; needed only when the email has accounts in several tenants.
    pub tenant: Option<String>,
    pub email: String,
    pub password: String,
    pub totp_code: Option<String>,
    pub recovery_code: Option<String>,
    pub ip: Option<String>,
}

/// Tokens handed to a client that signed in.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Session {
    /// Bearer token for API calls.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Exchange at `/api/v1/auth/refresh` for new tokens; single use.
    pub refresh_token: String,
    pub user: UserView,
}

/// Result of starting TOTP enrolment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MfaEnrollment {
    /// Base32 secret to type into an authenticator app.
    pub secret: String,
    /// `otpauth://` URI to render as a QR code.
    pub otpauth_uri: String,
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The authentication service.
#[derive(Clone)]
pub struct Auth {
    store: Arc<dyn Store>,
    keys: Keys,
    policy: AuthPolicy,
    throttle: Arc<throttle::Throttle>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("policy", &self.policy)
            .finish()
    }
}

impl Auth {
    pub fn new(store: Arc<dyn Store>, keys: Keys, policy: AuthPolicy) -> Self {
        Self {
            store,
            keys,
            policy,
            throttle: Arc::default(),
        }
    }

    /// The keys in use (for sealing elsewhere).
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The rules in force.
    pub fn policy(&self) -> &AuthPolicy {
        &self.policy
    }

    async fn audit(&self, entry: AuditEntry) -> Result<()> {
        self.store.append_audit(&entry).await.map_err(Error::from)
    }

    /// Sign in with email and password (and second factor when enrolled).
    ///
    /// Unknown emails, wrong passwords and locked accounts get the same answer after the same
    /// work, so answers do not reveal accounts. Failures are counted per client address and
    /// email (that pair then waits, `too_many_attempts`, whether the account exists or not) and
    /// per account (past [`AuthPolicy::account_lockout_threshold`] the account locks; only
    /// whoever gives the right password learns it, and passing the second factor opens it).
    pub async fn login(&self, attempt: LoginAttempt) -> Result<Session> {
        let email = Email::parse(&attempt.email)?;
        let ip = attempt.ip.as_deref();
        let now = crate::now();
        if let Some(wait) = self.throttle.blocked(ip, email.as_str(), now) {
            return Err(Error::TooManyAttempts {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        let mut candidates = self.store.find_users_by_email(&email).await?;
        if let Some(slug) = attempt.tenant.as_deref().filter(|s| !s.is_empty()) {
            let slug = TenantSlug::parse(slug)?;
            let tenant = self.store.get_tenant_by_slug(slug.as_str()).await?;
            candidates.retain(|u| Some(u.tenant_id) == tenant.as_ref().map(|t| t.id));
        }
        let user = match candidates.len() {
            0 => {
                // Same work as a wrong password, so timing does not reveal accounts.
                password::verify_async(attempt.password, password::dummy_hash().to_owned()).await?;
                let (failures, wait) = self.count_failure(ip, email.as_str());
                self.audit(
                    AuditEntry::new(None, None, action::LOGIN_FAILED)
                        .target(email.as_str())
                        .ip(ip)
                        .detail(serde_json::json!({
                            "reason": "unknown_account",
                            "failures_from_address": failures,
                            "address_waits_secs": wait.map(|d| d.as_secs()),
                        })),
                )
                .await?;
                return Err(Error::Unauthenticated(AuthFailure::InvalidCredentials));
            }
            1 => candidates.remove(0),
            _ => {
                return Err(Error::invalid(
                    "tenant",
                    "this email has accounts in several organisations: give the tenant slug",
                ));
            }
        };
        // The password is checked even when the account is locked: same time, same answer.
        let ok = password::verify_async(attempt.password, user.password_hash.clone()).await?;
        if !ok {
            return Err(self.fail_login(&user, ip, "wrong_password").await);
        }
        let locked = user.locked_until.filter(|u| *u > now);
        if user.mfa.enabled() {
            // Passing the second factor also opens a locked account.
            self.check_second_factor(&user, attempt.totp_code, attempt.recovery_code, ip)
                .await?;
        } else if let Some(until) = locked {
            self.audit(
                AuditEntry::new(Some(user.tenant_id), Some(user.id), action::LOGIN_LOCKED)
                    .target(user.id)
                    .ip(ip),
            )
            .await?;
            let secs = (until - now).num_seconds().max(1);
            return Err(Error::Locked {
                retry_after_secs: u64::try_from(secs).unwrap_or(1),
            });
        }
        self.throttle.clear(ip, email.as_str());
        self.store
            .clear_login_failures(user.tenant_id, user.id)
            .await?;
        self.audit(
            AuditEntry::new(Some(user.tenant_id), Some(user.id), action::LOGIN_SUCCEEDED)
                .target(user.id)
                .ip(ip)
                .detail(serde_json::json!({"unlocked": locked.is_some()})),
        )
        .await?;
        self.issue_session(&user, SessionFamilyId::generate()).await
    }

    /// Count a failure of the address for this email; the failures and the wait begun.
    fn count_failure(&self, ip: Option<&str>, email: &str) -> (i32, Option<Duration>) {
        self.throttle
            .fail(ip, email, crate::now(), |n| self.policy.lock_for(n))
    }

    /// Count a failure (for the address and for the account), lock the account if over its
    /// threshold, audit; returns the error to give.
    async fn fail_login(&self, user: &User, ip: Option<&str>, reason: &str) -> Error {
        let (from_address, wait) = self.count_failure(ip, user.email.as_str());
        let result: Result<()> = async {
            let failures = self
                .store
                .record_login_failure(user.tenant_id, user.id)
                .await?;
            let lock = self.policy.account_lock_for(failures);
            if let Some(d) = lock {
                self.store
                    .lock_user(user.tenant_id, user.id, crate::now() + to_chrono(d))
                    .await?;
            }
            self.audit(
                AuditEntry::new(Some(user.tenant_id), Some(user.id), action::LOGIN_FAILED)
                    .target(user.id)
                    .ip(ip)
                    .detail(serde_json::json!({
                        "reason": reason,
                        "failures": failures,
                        "locked_for_secs": lock.map(|d| d.as_secs()),
                        "failures_from_address": from_address,
                        "address_waits_secs": wait.map(|d| d.as_secs()),
                    })),
            )
            .await
        }
        .await;
        match result {
            Ok(()) if reason == "wrong_mfa_code" => {
                Error::Unauthenticated(AuthFailure::InvalidMfaCode)
            }
            Ok(()) => Error::Unauthenticated(AuthFailure::InvalidCredentials),
            Err(e) => e,
        }
    }

    async fn check_second_factor(
        &self,
        user: &User,
        totp_code: Option<String>,
        recovery_code: Option<String>,
        ip: Option<&str>,
    ) -> Result<()> {
        let (Some(sealed), code, recovery) = (&user.mfa.secret, totp_code, recovery_code) else {
            return Ok(());
        };
        if let Some(code) = code.filter(|c| !c.trim().is_empty()) {
            let secret = self.keys.unseal(sealed)?;
            let step = totp::matching_step(&secret, &code, crate::now().timestamp());
            if let Some(step) = step
                && self
                    .store
                    .advance_totp_step(user.tenant_id, user.id, step)
                    .await?
            {
                return Ok(());
            }
            return Err(self.fail_login(user, ip, "wrong_mfa_code").await);
        }
        if let Some(code) = recovery.filter(|c| !c.trim().is_empty()) {
            let hash = secret::hash_token(&totp::normalise_recovery_code(&code));
            if self
                .store
                .consume_recovery_code(user.tenant_id, user.id, &hash)
                .await?
            {
                self.audit(
                    AuditEntry::new(
                        Some(user.tenant_id),
                        Some(user.id),
                        action::RECOVERY_CODE_USED,
                    )
                    .target(user.id)
                    .ip(ip),
                )
                .await?;
                return Ok(());
            }
            return Err(self.fail_login(user, ip, "wrong_mfa_code").await);
        }
        Err(Error::Unauthenticated(AuthFailure::MfaRequired))
    }

    /// Issue an access token and a new refresh token in `family`.
    async fn issue_session(&self, user: &User, family: SessionFamilyId) -> Result<Session> {
        let now = crate::now();
        let refresh = secret::random_token(32);
        self.store
            .insert_refresh_token(&RefreshToken {
                id: RefreshTokenId::generate(),
                tenant_id: user.tenant_id,
                user_id: user.id,
                family_id: family,
                token_hash: secret::hash_token(&refresh),
                created_at: now,
                expires_at: now + to_chrono(self.policy.refresh_ttl),
                used_at: None,
                revoked_at: None,
            })
            .await?;
        let claims = jwt::Claims {
            sub: user.id.to_string(),
            tid: user.tenant_id.to_string(),
            role: user.role.as_str().to_owned(),
            iat: now.timestamp(),
            exp: (now + to_chrono(self.policy.access_ttl)).timestamp(),
        };
        Ok(Session {
            access_token: jwt::encode(&claims, self.keys.jwt_key())?,
            token_type: "Bearer",
            expires_in: self.policy.access_ttl.as_secs(),
            refresh_token: refresh,
            user: UserView::from(user),
        })
    }

    /// Exchange a refresh token for a new session (rotation with reuse detection).
    pub async fn refresh(&self, refresh_token: &str, ip: Option<&str>) -> Result<Session> {
        let invalid = || Error::Unauthenticated(AuthFailure::InvalidToken);
        let hash = secret::hash_token(refresh_token);
        let token = self
            .store
            .find_refresh_token(&hash)
            .await?
            .ok_or_else(invalid)?;
        if token.revoked_at.is_some() {
            return Err(invalid());
        }
        let now = crate::now();
        let reused =
            token.used_at.is_some() || !self.store.mark_refresh_token_used(token.id, now).await?;
        if reused {
            self.store.revoke_family(token.family_id, now).await?;
            self.audit(
                AuditEntry::new(
                    Some(token.tenant_id),
                    Some(token.user_id),
                    action::REFRESH_REUSED,
                )
                .target(token.user_id)
                .ip(ip)
                .detail(serde_json::json!({"family": token.family_id})),
            )
            .await?;
            return Err(Error::Unauthenticated(AuthFailure::TokenReused));
        }
        if token.expires_at <= now {
            return Err(Error::Unauthenticated(AuthFailure::TokenExpired));
        }
        let user = self
            .store
            .get_user(token.tenant_id, token.user_id)
            .await?
            .ok_or_else(invalid)?;
        self.issue_session(&user, token.family_id).await
    }

    /// End sessions: the family of `refresh_token` if given, else every session of the actor.
    pub async fn logout(
        &self,
        actor: &Actor,
        refresh_token: Option<&str>,
        ip: Option<&str>,
    ) -> Result<()> {
        let now = crate::now();
        match refresh_token {
            Some(t) => {
                let found = self
                    .store
                    .find_refresh_token(&secret::hash_token(t))
                    .await?
                    .filter(|r| r.user_id == actor.user_id && r.tenant_id == actor.tenant_id);
                if let Some(r) = found {
                    self.store.revoke_family(r.family_id, now).await?;
                }
            }
            None => {
                self.store
                    .revoke_user_sessions(actor.tenant_id, actor.user_id, now)
                    .await?;
            }
        }
        self.audit(
            AuditEntry::new(Some(actor.tenant_id), Some(actor.user_id), action::LOGOUT)
                .target(actor.user_id)
                .ip(ip)
                .detail(serde_json::json!({"all_sessions": refresh_token.is_none()})),
        )
        .await
    }

    /// Resolve a bearer credential (access token or API key) to an actor.
    pub async fn authenticate(&self, bearer: &str) -> Result<Actor> {
        if bearer.starts_with(API_KEY_PREFIX) {
            return self.authenticate_api_key(bearer).await;
        }
        let claims = jwt::decode(bearer, self.keys.jwt_key(), crate::now().timestamp())?;
        let invalid = || Error::Unauthenticated(AuthFailure::InvalidToken);
        Ok(Actor {
            user_id: claims.sub.parse().map_err(|_| invalid())?,
            tenant_id: claims.tid.parse().map_err(|_| invalid())?,
            role: claims.role.parse::<Role>().map_err(|_| invalid())?,
            credential: Credential::Session,
        })
    }

    /// Resolve a browser session (the refresh token a web sign-in keeps in its cookie) to an
    /// actor. The token is not rotated: a browser sends it with every request, in parallel,
    /// and rotation would race. It dies with sign-out, a password change or its expiry.
    pub async fn authenticate_session(&self, token: &str) -> Result<(Actor, UserView)> {
        let invalid = || Error::Unauthenticated(AuthFailure::InvalidToken);
        let found = self
            .store
            .find_refresh_token(&secret::hash_token(token))
            .await?
            .ok_or_else(invalid)?;
        let now = crate::now();
        if found.revoked_at.is_some() || found.used_at.is_some() {
            return Err(invalid());
        }
        if found.expires_at <= now {
            return Err(Error::Unauthenticated(AuthFailure::TokenExpired));
        }
        let user = self
            .store
            .get_user(found.tenant_id, found.user_id)
            .await?
            .ok_or_else(invalid)?;
        let actor = Actor {
            user_id: user.id,
            tenant_id: user.tenant_id,
            role: user.role,
            credential: Credential::Session,
        };
        Ok((actor, UserView::from(&user)))
    }

    async fn authenticate_api_key(&self, key: &str) -> Result<Actor> {
        let invalid = || Error::Unauthenticated(AuthFailure::InvalidToken);
        let prefix = api_key_prefix(key).ok_or_else(invalid)?;
        let stored = self
            .store
            .find_api_key_by_prefix(prefix)
            .await?
            .ok_or_else(invalid)?;
        if stored.revoked_at.is_some()
            || !secret::constant_time_eq(&secret::hash_token(key), &stored.key_hash)
        {
            return Err(invalid());
        }
        let user = self
            .store
            .get_user(stored.tenant_id, stored.user_id)
            .await?
            .ok_or_else(invalid)?;
        // Record use at most once a minute: keeps the hot path free of writes.
        let now = crate::now();
        if stored
            .last_used_at
            .is_none_or(|t| now - t > chrono::Duration::seconds(60))
        {
            self.store.touch_api_key(stored.id, now).await?;
        }
        Ok(Actor {
            user_id: user.id,
            tenant_id: user.tenant_id,
            role: user.role,
            credential: Credential::ApiKey {
                id: stored.id,
                scopes: stored.scopes,
            },
        })
    }

    async fn own_user(&self, actor: &Actor) -> Result<User> {
        self.store
            .get_user(actor.tenant_id, actor.user_id)
            .await?
            .ok_or_else(|| Error::not_found("user"))
    }

    /// Start TOTP enrolment: a new secret, pending until confirmed by [`Auth::mfa_activate`].
    pub async fn mfa_enroll(&self, actor: &Actor) -> Result<MfaEnrollment> {
        let user = self.own_user(actor).await?;
        if user.mfa.enabled() {
            return Err(Error::Conflict(
                "two-factor authentication is already enabled; disable it first".into(),
            ));
        }
        let raw = totp::generate_secret();
        let mfa = MfaState {
            pending_secret: Some(self.keys.seal(&raw)?),
            ..user.mfa.clone()
        };
        self.store.set_mfa(user.tenant_id, user.id, &mfa).await?;
        Ok(MfaEnrollment {
            secret: totp::base32(&raw),
            otpauth_uri: totp::otpauth_uri(&raw, "CoachLibre", user.email.as_str()),
        })
    }

    /// Finish enrolment with a first valid code; returns the recovery codes (shown once).
    pub async fn mfa_activate(&self, actor: &Actor, code: &str) -> Result<Vec<String>> {
        let user = self.own_user(actor).await?;
        let sealed = user.mfa.pending_secret.clone().ok_or_else(|| {
            Error::Conflict("no enrolment in progress: call /auth/mfa/enroll first".into())
        })?;
        let raw = self.keys.unseal(&sealed)?;
        let step = totp::matching_step(&raw, code, crate::now().timestamp())
            .ok_or(Error::Unauthenticated(AuthFailure::InvalidMfaCode))?;
        let mfa = MfaState {
            pending_secret: None,
            secret: Some(sealed),
            last_step: user.mfa.last_step,
        };
        self.store.set_mfa(user.tenant_id, user.id, &mfa).await?;
        self.store
            .advance_totp_step(user.tenant_id, user.id, step)
            .await?;
        let codes = totp::generate_recovery_codes();
        let hashes: Vec<String> = codes.iter().map(|c| secret::hash_token(c)).collect();
        self.store
            .replace_recovery_codes(user.tenant_id, user.id, &hashes)
            .await?;
        self.audit(
            AuditEntry::new(Some(user.tenant_id), Some(user.id), action::MFA_ENABLED)
                .target(user.id),
        )
        .await?;
        Ok(codes)
    }

    /// Turn the second factor off; requires the current password.
    pub async fn mfa_disable(&self, actor: &Actor, current_password: &str) -> Result<()> {
        let user = self.own_user(actor).await?;
        if !password::verify_async(current_password.to_owned(), user.password_hash.clone()).await? {
            return Err(Error::Unauthenticated(AuthFailure::InvalidCredentials));
        }
        self.store
            .set_mfa(user.tenant_id, user.id, &MfaState::default())
            .await?;
        self.store
            .replace_recovery_codes(user.tenant_id, user.id, &[])
            .await?;
        self.audit(
            AuditEntry::new(Some(user.tenant_id), Some(user.id), action::MFA_DISABLED)
                .target(user.id),
        )
        .await
    }

    /// Change one's own password; ends every other session.
    pub async fn change_password(&self, actor: &Actor, current: &str, new: &str) -> Result<()> {
        let new = Password::parse(new)?;
        let user = self.own_user(actor).await?;
        if !password::verify_async(current.to_owned(), user.password_hash.clone()).await? {
            return Err(Error::Unauthenticated(AuthFailure::InvalidCredentials));
        }
        let hash = password::hash_async(new).await?;
        self.store
            .set_password_hash(user.tenant_id, user.id, &hash)
            .await?;
        self.store
            .revoke_user_sessions(user.tenant_id, user.id, crate::now())
            .await?;
        self.audit(
            AuditEntry::new(
                Some(user.tenant_id),
                Some(user.id),
                action::PASSWORD_CHANGED,
            )
            .target(user.id),
        )
        .await
    }
}

/// The lookup prefix of an API key `cl_<prefix>_<secret>`.
pub fn api_key_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let (prefix, secret) = rest.split_once('_')?;
    (prefix.len() == 12 && !secret.is_empty()).then_some(prefix)
}

/// A new API key: (full key shown once, lookup prefix, hash to store).
pub fn generate_api_key() -> (String, String, String) {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    let prefix: String = raw
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    let key = format!("{API_KEY_PREFIX}{prefix}_{}", secret::random_token(32));
    let hash = secret::hash_token(&key);
    (key, prefix, hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_backoff_doubles_and_caps() {
        let p = AuthPolicy::default();
        assert_eq!(p.lock_for(4), None);
        assert_eq!(p.lock_for(5), Some(Duration::from_secs(30)));
        assert_eq!(p.lock_for(6), Some(Duration::from_secs(60)));
        assert_eq!(p.lock_for(12), Some(Duration::from_secs(3600)));
        assert_eq!(p.lock_for(1000), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn api_key_format() {
        let (key, prefix, hash) = generate_api_key();
        assert_eq!(api_key_prefix(&key), Some(prefix.as_str()));
        assert_eq!(hash, secret::hash_token(&key));
        assert_eq!(api_key_prefix("cl_short_x"), None);
        assert_eq!(api_key_prefix("eyJhbGciOi"), None);
    }
}
