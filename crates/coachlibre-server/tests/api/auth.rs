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

/// Failed sign-ins make one address wait for one email, the same for unknown emails (no
/// account is revealed), while the owner signs in from elsewhere; guesses from many addresses
/// lock the account, which only the right password learns, and the second factor opens.
#[tokio::test]
async fn failed_sign_ins_neither_reveal_accounts_nor_lock_the_owner_out() {
    let tweak = |c: &mut coachlibre_server::config::Config| {
        c.auth.lockout_threshold = 3;
        c.auth.account_lockout_threshold = 5;
        c.http.trust_forwarded_for = true;
    };
    for app in TestApp::each_with(tweak).await {
        let from = |ip: &str, email: &str, extra: serde_json::Value| {
            let mut body = json!({"email": email});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let ip = ip.to_owned();
            let client = app.client.clone();
            let url = app.url("/api/v1/auth/login");
            async move {
                let r = client
                    .post(url)
                    .header("x-forwarded-for", ip)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let retry = r.headers().get("retry-after").cloned();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                (status, body, retry)
            }
        };
        let wrong = json!({"password": "wrong password!"});
        let right = json!({"password": ADMIN_PASSWORD});
        let code = |r: &(StatusCode, serde_json::Value, _)| {
            (r.0, r.1["error"]["code"].as_str().unwrap_or("").to_owned())
        };
        let unauthorized = (StatusCode::UNAUTHORIZED, "invalid_credentials".to_owned());
        let waits = (
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts".to_owned(),
        );

        // Enrol a second factor first, keeping its recovery codes.
        let token = app.admin_token().await;
        let r = app.post("/api/v1/auth/mfa/enroll", &token, json!({})).await;
        let secret = decode_base32(r.body["secret"].as_str().unwrap());
        let now = chrono::Utc::now().timestamp();
        let first = totp::code_at(&secret, totp::step_of(now));
        let r = app
            .post("/api/v1/auth/mfa/verify", &token, json!({"code": first}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let recovery: Vec<String> =
            serde_json::from_value(r.body["recovery_codes"].clone()).unwrap();

        // One address guessing: after 3 failures it waits, for a real account and an unknown
        // one alike, even with the right password.
        for email in [ADMIN_EMAIL, "nobody@example.org"] {
            for _ in 0..3 {
                let r = from("203.0.113.7", email, wrong.clone()).await;
                assert_eq!(code(&r), unauthorized, "{}: {email}", app.backend);
            }
            let r = from("203.0.113.7", email, right.clone()).await;
            assert_eq!(code(&r), waits, "{}: {email} {}", app.backend, r.1);
            let secs: u64 = r.2.unwrap().to_str().unwrap().parse().unwrap();
            assert!((1..=30).contains(&secs), "{secs}");
        }
        // The owner, elsewhere, is not affected.
        let mfa = json!({"password": ADMIN_PASSWORD, "recovery_code": recovery[0]});
        let r = from("198.51.100.1", ADMIN_EMAIL, mfa).await;
        assert_eq!(r.0, StatusCode::OK, "{}: {}", app.backend, r.1);

        // Guesses spread over five addresses lock the account: a wrong password still gets
        // the answer an unknown email gets; the right one learns of the lock.
        for i in 1..=5 {
            let r = from(&format!("192.0.2.{i}"), ADMIN_EMAIL, wrong.clone()).await;
            assert_eq!(code(&r), unauthorized, "{}", app.backend);
        }
        let r = from("192.0.2.99", ADMIN_EMAIL, wrong.clone()).await;
        assert_eq!(code(&r), unauthorized, "{}", app.backend);
        let r = from("198.51.100.1", ADMIN_EMAIL, right.clone()).await;
        assert_eq!(
            code(&r),
            (StatusCode::UNAUTHORIZED, "mfa_required".to_owned()),
            "{}: the password alone never opens a two-factor account",
            app.backend
        );
        // The second factor opens the locked account and clears the lock.
        let mfa = json!({"password": ADMIN_PASSWORD, "recovery_code": recovery[1]});
        let r = from("198.51.100.1", ADMIN_EMAIL, mfa).await;
        assert_eq!(r.0, StatusCode::OK, "{}: {}", app.backend, r.1);
        app.stop().await;
    }
}

/// Without a second factor, a locked account answers the right password with
/// `account_locked` (and only it), until an admin resets the password.
#[tokio::test]
async fn a_locked_account_without_second_factor_is_opened_by_a_reset() {
    for app in TestApp::each_with(|c| c.auth.account_lockout_threshold = 3).await {
        let admin = app.admin_token().await;
        let coach = app.create_user(&admin, "coach@example.org", "coach").await;
        let password = "password for tests";
        for _ in 0..3 {
            let r = app
                .login_reply("coach@example.org", "wrong password!")
                .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        }
        let r = app.login_reply("coach@example.org", password).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::TOO_MANY_REQUESTS, "account_locked"),
            "{}: {}",
            app.backend,
            r.body
        );
        let r = app
            .post(
                &format!("/api/v1/users/{coach}/password-reset"),
                &admin,
                json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}: {}", app.backend, r.body);
        let new_password = r.body["password"].as_str().unwrap().to_owned();
        let r = app.login_reply("coach@example.org", &new_password).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {}", app.backend, r.body);
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
