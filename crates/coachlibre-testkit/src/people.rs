//! People for tests and benchmarks that talk to the services directly (no HTTP sign-in).

use coachlibre_core::actor::{Actor, Credential};
use coachlibre_core::ids::{TenantId, UserId};
use coachlibre_core::user::{Email, MfaState, Role, User};

/// A user of `tenant` named after the local part of `email` (no usable password).
///
/// # Panics
/// If `email` is not a valid address (a mistake in the test itself).
pub fn person(tenant: TenantId, email: &str, role: Role) -> User {
    let now = coachlibre_core::now();
    User {
        id: UserId::generate(),
        tenant_id: tenant,
        email: Email::parse(email).expect("a valid test email"),
        display_name: email.split('@').next().unwrap_or(email).into(),
        role,
        password_hash: "$argon2id$placeholder".into(),
        mfa: MfaState::default(),
        failed_logins: 0,
        locked_until: None,
        created_at: now,
        updated_at: now,
    }
}

/// `u` signed in with a session.
pub fn actor(u: &User) -> Actor {
    Actor {
        user_id: u.id,
        tenant_id: u.tenant_id,
        role: u.role,
        credential: Credential::Session,
    }
}
