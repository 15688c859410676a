//! Sign-in, refresh rotation, sign-out, lockout, two-factor, API keys.

use coachlibre_core::auth::totp;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};

#[tokio::test]
async fn login_refresh_rotation_and_reuse_detection() {
    for app in TestApp::each().await {
        let r = app.login_reply(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["token_type"], "Bearer");
        assert_eq!(r.body["user"]["role"], "admin");
        assert!(r.body["user"].get("password_hash").is_none());
        let first = r.body["refresh_token"].as_str().unwrap().to_owned();

        let refresh = |t: String| {
            app.call(
                Method::POST,
                "/api/v1/auth/refresh",
                None,
                Some(json!({"refresh_token": t})),
            )
        };
        let r = refresh(first.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let second = r.body["refresh_token"].as_str().unwrap().to_owned();
        let access = r.body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(app.get("/api/v1/me", &access).await.status, StatusCode::OK);

        // Reusing the rotated token revokes the family: the successor dies too.
        let r = refresh(first).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "token_reused")
        );
        let r = refresh(second).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "invalid_token")
        );
        let r = refresh("made-up".into()).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "invalid_token")
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn logout_revokes_the_session() {
    for app in TestApp::each().await {
        let r = app.login_reply(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let access = r.body["access_token"].as_str().unwrap().to_owned();
        let refresh = r.body["refresh_token"].as_str().unwrap().to_owned();
        let r = app
            .post(
                "/api/v1/auth/logout",
                &access,
                json!({"refresh_token": refresh}),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let r = app
            .call(
                Method::POST,
                "/api/v1/auth/refresh",
                None,
                Some(json!({"refresh_token": refresh})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        app.stop().await;
    }
}

#[tokio::test]
async fn wrong_passwords_lock_the_account_with_backoff() {
    for app in TestApp::each_with(|c| c.auth.lockout_threshold = 3).await {
        for _ in 0..3 {
            let r = app.login_reply(ADMIN_EMAIL, "wrong password!").await;
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::UNAUTHORIZED, "invalid_credentials")
            );
        }
        // Locked now, even with the right password.
        let r = app.login_reply(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::TOO_MANY_REQUESTS, "account_locked"),
            "{}",
            r.body
        );
        let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=30).contains(&secs), "{secs}");
        // Unknown accounts look the same as wrong passwords.
        let r = app
            .login_reply("nobody@example.org", "whatever password")
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "invalid_credentials")
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn totp_enrolment_and_sign_in_with_second_factor() {
    for app in TestApp::each().await {
        let token = app.admin_token().await;
        let r = app.post("/api/v1/auth/mfa/enroll", &token, json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(
            r.body["otpauth_uri"]
                .as_str()
                .unwrap()
                .starts_with("otpauth://totp/")
        );
        let secret = decode_base32(r.body["secret"].as_str().unwrap());
        let now = chrono::Utc::now().timestamp();

        let code = totp::code_at(&secret, totp::step_of(now));
        let window: Vec<String> = (-2..=2)
            .map(|d| totp::code_at(&secret, totp::step_of(now) + d))
            .collect();
        let wrong = ["000000", "111111", "222222", "333333", "444444", "555555"]
            .into_iter()
            .find(|c| !window.iter().any(|w| w == c))
            .unwrap();
        let r = app
            .post("/api/v1/auth/mfa/verify", &token, json!({"code": wrong}))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "invalid_mfa_code")
        );
        let r = app
            .post("/api/v1/auth/mfa/verify", &token, json!({"code": code}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let recovery: Vec<String> =
            serde_json::from_value(r.body["recovery_codes"].clone()).unwrap();
        assert_eq!(recovery.len(), 10);

        // Password alone is no longer enough.
        let r = app.login_reply(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "mfa_required")
        );
        // The code used for activation cannot be replayed; the next step's code works.
        let login = |extra: serde_json::Value| {
            let mut body = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            app.call(Method::POST, "/api/v1/auth/login", None, Some(body))
        };
        let r = login(json!({"totp_code": code})).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "invalid_mfa_code")
        );
        let next = totp::code_at(&secret, totp::step_of(now) + 1);
        let r = login(json!({"totp_code": next})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["user"]["mfa_enabled"], true);
        // A recovery code works once.
        let r = login(json!({"recovery_code": recovery[0].to_uppercase()})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = login(json!({"recovery_code": recovery[0]})).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "invalid_mfa_code")
        );

        // Disable with the password.
        let r = app
            .post(
                "/api/v1/auth/mfa/disable",
                &token,
                json!({"password": "wrong one!!"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = app
            .post(
                "/api/v1/auth/mfa/disable",
                &token,
                json!({"password": ADMIN_PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(
            app.login_reply(ADMIN_EMAIL, ADMIN_PASSWORD).await.status,
            StatusCode::OK
        );
        app.stop().await;
    }
}

fn decode_base32(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buf, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in s.bytes() {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .expect("base32 alphabet") as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

#[tokio::test]
async fn api_keys_are_scoped_and_revocable() {
    for app in TestApp::each().await {
        let admin = app.admin_token().await;
        let r = app
            .post(
                "/api/v1/api-keys",
                &admin,
                json!({"name": "reporting", "scopes": ["read"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let key = r.body["secret"].as_str().unwrap().to_owned();
        let key_id = r.body["id"].as_str().unwrap().to_owned();
        assert!(key.starts_with("cl_"));

        // The key reads...
        let r = app.get("/api/v1/me", &key).await;
        assert_eq!(
            (r.status, r.body["email"].as_str()),
            (StatusCode::OK, Some(ADMIN_EMAIL))
        );
        // ...but does not write, nor administer.
        let r = app
            .post(
                "/api/v1/users",
                &key,
                json!({"email": "x@y.org", "display_name": "x", "role": "coach"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        let r = app.get("/api/v1/audit", &key).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        // The key is never listed in clear.
        let r = app.get("/api/v1/api-keys", &admin).await;
        assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
        assert!(!r.body.to_string().contains(&key));

        // Non-admins cannot mint admin keys.
        let coach_id = app.create_user(&admin, "coach@example.org", "coach").await;
        let coach = app.login("coach@example.org", "password for tests").await;
        let r = app
            .post(
                "/api/v1/api-keys",
                &coach,
                json!({"name": "x", "scopes": ["admin"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        let r = app
            .post(
                "/api/v1/api-keys",
                &coach,
                json!({"name": "x", "scopes": ["read"], "user_id": coach_id}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        // A coach does not see or revoke the admin's key.
        assert_eq!(
            app.get("/api/v1/api-keys", &coach).await.body["items"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let r = app
            .call(
                Method::DELETE,
                &format!("/api/v1/api-keys/{key_id}"),
                Some(&coach),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);

        let r = app
            .call(
                Method::DELETE,
                &format!("/api/v1/api-keys/{key_id}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let r = app.get("/api/v1/me", &key).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "invalid_token")
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn password_change_ends_sessions() {
    for app in TestApp::each().await {
        let r = app.login_reply(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let access = r.body["access_token"].as_str().unwrap().to_owned();
        let refresh = r.body["refresh_token"].as_str().unwrap().to_owned();
        let r = app.post("/api/v1/me/password", &access, json!({"current_password": "nope nope nope", "new_password": "a brand new password"})).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = app
            .post(
                "/api/v1/me/password",
                &access,
                json!({"current_password": ADMIN_PASSWORD, "new_password": "a brand new password"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        let r = app
            .call(
                Method::POST,
                "/api/v1/auth/refresh",
                None,
                Some(json!({"refresh_token": refresh})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            app.login_reply(ADMIN_EMAIL, ADMIN_PASSWORD).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.login_reply(ADMIN_EMAIL, "a brand new password")
                .await
                .status,
            StatusCode::OK
        );
        app.stop().await;
    }
}
