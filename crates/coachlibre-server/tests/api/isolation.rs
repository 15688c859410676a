//! Tenant isolation: an admin of tenant A tries every id of tenant B on every route that takes
//! an id, and gets 404 each time; lists never show B's records.

use coachlibre_core::accounts::{Accounts, By, NewUser};
use coachlibre_core::actor::Scope;
use coachlibre_core::user::Role;
use coachlibre_store::{ConnectOptions, SqlStore};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn tenant_a_never_reaches_tenant_b() {
    for app in TestApp::each().await {
        // Tenant B, created by the operator through the same services the CLI uses.
        let store = std::sync::Arc::new(
            SqlStore::connect(&app.db.url, &ConnectOptions::default())
                .await
                .unwrap(),
        );
        let accounts = Accounts::new(store.clone());
        let b = accounts.create_tenant("tenant-b", "B").await.unwrap();
        let new = |email: &str, role| NewUser {
            email: email.into(),
            display_name: email.into(),
            role,
            password: Some("password of tenant b".into()),
        };
        let b_admin = accounts
            .create_user(By::Operator(b.id), new("admin@b.org", Role::Admin))
            .await
            .unwrap()
            .user;
        let b_coach = accounts
            .create_user(By::Operator(b.id), new("coach@b.org", Role::Coach))
            .await
            .unwrap()
            .user;
        let b_client = accounts
            .create_user(By::Operator(b.id), new("client@b.org", Role::Client))
            .await
            .unwrap()
            .user;
        let b_key = accounts
            .create_api_key(
                By::Operator(b.id),
                Some(b_admin.id),
                "b key",
                &[Scope::Read],
            )
            .await
            .unwrap();
        store.close().await;

        // Tenant A's admin and one of A's clients.
        let a = app.admin_token().await;
        let a_client = app.create_user(&a, "client@a.org", "client").await;

        let b_users = [
            b_admin.id.to_string(),
            b_coach.id.to_string(),
            b_client.id.to_string(),
        ];
        let mut tried = 0;
        for id in &b_users {
            let attempts: Vec<(Method, String, Option<serde_json::Value>)> = vec![
                (Method::GET, format!("/api/v1/users/{id}"), None),
                (
                    Method::PUT,
                    format!("/api/v1/users/{id}/role"),
                    Some(json!({"role": "client"})),
                ),
                (
                    Method::POST,
                    format!("/api/v1/users/{id}/password-reset"),
                    Some(json!({})),
                ),
                (Method::GET, format!("/api/v1/users/{id}/coaches"), None),
                (
                    Method::PUT,
                    format!("/api/v1/users/{id}/coaches/{}", b_coach.id),
                    None,
                ),
                (
                    Method::DELETE,
                    format!("/api/v1/users/{id}/coaches/{}", b_coach.id),
                    None,
                ),
                (
                    Method::PUT,
                    format!("/api/v1/users/{a_client}/coaches/{id}"),
                    None,
                ),
                (
                    Method::POST,
                    "/api/v1/api-keys".into(),
                    Some(json!({"name": "x", "scopes": ["read"], "user_id": id})),
                ),
                (Method::GET, format!("/api/v1/clients/{id}/profile"), None),
                (
                    Method::PUT,
                    format!("/api/v1/clients/{id}/profile"),
                    Some(json!({"name": "Mallory"})),
                ),
                (Method::GET, format!("/api/v1/clients/{id}/memories"), None),
            ];
            for (method, path, body) in attempts {
                let r = app.call(method.clone(), &path, Some(&a), body).await;
                assert_eq!(
                    r.status,
                    StatusCode::NOT_FOUND,
                    "{method} {path} ({}): {}",
                    app.backend,
                    r.body
                );
                tried += 1;
            }
        }
        let r = app
            .call(
                Method::DELETE,
                &format!("/api/v1/api-keys/{}", b_key.key.id),
                Some(&a),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(tried >= 33);
        // An unknown id is no different.
        let nobody = uuid::Uuid::now_v7();
        let r = app
            .get(&format!("/api/v1/clients/{nobody}/profile"), &a)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

        // A workflow naming B's client (or an agent id A does not have) is refused at save.
        for (agent, client) in [
            ("{{input.agent}}".to_owned(), b_client.id.to_string()),
            (nobody.to_string(), "{{input.client}}".to_owned()),
        ] {
            let r = app
                .post(
                    "/api/v1/workflows",
                    &a,
                    json!({"definition": {"name": "cross", "steps": [{"id": "s",
                        "kind": "agent", "agent": agent, "client": client, "message": "hi"}]}}),
                )
                .await;
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
                "{}: {}",
                app.backend,
                r.body
            );
            assert!(r.body.to_string().contains("there is no"), "{}", r.body);
        }

        // Lists show nothing of B.
        for path in [
            "/api/v1/users?limit=200",
            "/api/v1/api-keys?limit=200",
            "/api/v1/audit?limit=200",
        ] {
            let body = app.get(path, &a).await.body.to_string();
            for id in b_users
                .iter()
                .chain(std::iter::once(&b_key.key.id.to_string()))
            {
                assert!(!body.contains(id.as_str()), "{path} leaks {id}");
            }
        }

        // B's admin signs in and sees only B; B's key still works for B.
        let b_token = app.login("admin@b.org", "password of tenant b").await;
        let r = app
            .get(&format!("/api/v1/users/{a_client}"), &b_token)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(
            app.get("/api/v1/tenant", &b_token).await.body["slug"],
            "tenant-b"
        );
        assert_eq!(
            app.get("/api/v1/me", &b_key.secret).await.body["email"],
            "admin@b.org"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn same_email_in_two_tenants_needs_the_tenant_slug() {
    for app in TestApp::each().await {
        let store = std::sync::Arc::new(
            SqlStore::connect(&app.db.url, &ConnectOptions::default())
                .await
                .unwrap(),
        );
        let accounts = Accounts::new(store.clone());
        let b = accounts.create_tenant("second", "Second").await.unwrap();
        let a = app.admin_token().await;
        app.create_user(&a, "twin@example.org", "coach").await;
        accounts
            .create_user(
                By::Operator(b.id),
                NewUser {
                    email: "twin@example.org".into(),
                    display_name: "Twin".into(),
                    role: Role::Client,
                    password: Some("password for tests".into()),
                },
            )
            .await
            .unwrap();
        store.close().await;
        let r = app
            .login_reply("twin@example.org", "password for tests")
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
        );
        let r = app
            .call(Method::POST, "/api/v1/auth/login", None, Some(json!({"email": "twin@example.org", "password": "password for tests", "tenant": "second"})))
            .await;
        assert_eq!(
            (r.status, r.body["user"]["role"].as_str()),
            (StatusCode::OK, Some("client"))
        );
        app.stop().await;
    }
}
