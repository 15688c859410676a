//! The foundation's "done when": an admin signs in with the bootstrap password, creates a
//! coach and a client; roles limit what each sees and does; the audit log records it.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{ADMIN_EMAIL, TestApp};

#[tokio::test]
async fn admin_creates_coach_and_client_and_roles_are_enforced() {
    for app in TestApp::each().await {
        let admin = app.admin_token().await;
        let me = app.get("/api/v1/me", &admin).await;
        assert_eq!(me.body["email"], ADMIN_EMAIL);
        assert_eq!(
            app.get("/api/v1/tenant", &admin).await.body["slug"],
            "default"
        );

        let coach_id = app.create_user(&admin, "coach@example.org", "coach").await;
        let other_coach_id = app.create_user(&admin, "coach2@example.org", "coach").await;
        let client_id = app
            .create_user(&admin, "client@example.org", "client")
            .await;

        // Without a password, one is generated and shown once.
        let r = app
            .post(
                "/api/v1/users",
                &admin,
                json!({"email": "gen@example.org", "display_name": "Gen", "role": "client"}),
            )
            .await;
        let generated = r.body["initial_password"].as_str().unwrap().to_owned();
        assert_eq!(
            app.login_reply("gen@example.org", &generated).await.status,
            StatusCode::OK
        );
        // Duplicate email.
        let r = app
            .post(
                "/api/v1/users",
                &admin,
                json!({"email": "COACH@example.org", "display_name": "x", "role": "coach"}),
            )
            .await;
        assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "conflict"));

        // Assign the client to the coach.
        let path = format!("/api/v1/users/{client_id}/coaches/{coach_id}");
        assert_eq!(
            app.call(Method::PUT, &path, Some(&admin), None)
                .await
                .status,
            StatusCode::NO_CONTENT
        );
        let coaches = app
            .get(&format!("/api/v1/users/{client_id}/coaches"), &admin)
            .await;
        assert_eq!(coaches.body[0]["id"], coach_id.as_str());
        // Roles are checked on assignment.
        let bad = format!("/api/v1/users/{coach_id}/coaches/{client_id}");
        assert_eq!(
            app.call(Method::PUT, &bad, Some(&admin), None).await.status,
            StatusCode::UNPROCESSABLE_ENTITY
        );

        // The coach sees their client, not the other coach, not other clients.
        let coach = app.login("coach@example.org", "password for tests").await;
        let list = app.get("/api/v1/users", &coach).await;
        let ids: Vec<&str> = list.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![client_id.as_str()]);
        assert_eq!(
            app.get(&format!("/api/v1/users/{client_id}"), &coach)
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            app.get(&format!("/api/v1/users/{other_coach_id}"), &coach)
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        // A coach creates clients (linked to them), not coaches or admins.
        let r = app.post("/api/v1/users", &coach, json!({"email": "c2@example.org", "display_name": "C2", "role": "client", "password": "password for tests"})).await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(
            app.get("/api/v1/users", &coach).await.body["items"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let r = app
            .post(
                "/api/v1/users",
                &coach,
                json!({"email": "c3@example.org", "display_name": "C3", "role": "admin"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        // Admin-only actions.
        let r = app
            .call(
                Method::PUT,
                &format!("/api/v1/users/{client_id}/role"),
                Some(&coach),
                Some(json!({"role": "coach"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(
            app.get("/api/v1/audit", &coach).await.status,
            StatusCode::FORBIDDEN
        );

        // The client sees only themself.
        let client = app.login("client@example.org", "password for tests").await;
        assert_eq!(
            app.get("/api/v1/users", &client).await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            app.get(&format!("/api/v1/users/{client_id}"), &client)
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            app.get(&format!("/api/v1/users/{coach_id}"), &client)
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        let r = app
            .post(
                "/api/v1/users",
                &client,
                json!({"email": "x@example.org", "display_name": "x", "role": "client"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);

        // Role change ends the user's sessions; the last admin is protected.
        let r = app
            .call(
                Method::PUT,
                &format!("/api/v1/users/{coach_id}/role"),
                Some(&admin),
                Some(json!({"role": "admin"})),
            )
            .await;
        assert_eq!(
            (r.status, r.body["role"].as_str()),
            (StatusCode::OK, Some("admin"))
        );
        let admin_id = me.body["id"].as_str().unwrap();
        let r = app
            .call(
                Method::PUT,
                &format!("/api/v1/users/{coach_id}/role"),
                Some(&admin),
                Some(json!({"role": "coach"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = app
            .call(
                Method::PUT,
                &format!("/api/v1/users/{admin_id}/role"),
                Some(&admin),
                Some(json!({"role": "client"})),
            )
            .await;
        assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "conflict"));

        // Password reset by the admin.
        let r = app
            .post(
                &format!("/api/v1/users/{client_id}/password-reset"),
                &admin,
                json!({}),
            )
            .await;
        let fresh = r.body["password"].as_str().unwrap().to_owned();
        assert_eq!(
            app.login_reply("client@example.org", "password for tests")
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.login_reply("client@example.org", &fresh).await.status,
            StatusCode::OK
        );

        // Pagination.
        let page = app.get("/api/v1/users?limit=2", &admin).await;
        assert_eq!(page.body["items"].as_array().unwrap().len(), 2);
        let cursor = page.body["next_cursor"].as_str().unwrap();
        let next = app
            .get(&format!("/api/v1/users?limit=2&cursor={cursor}"), &admin)
            .await;
        assert_eq!(next.status, StatusCode::OK);
        assert_ne!(next.body["items"][0]["id"], page.body["items"][0]["id"]);
        let coaches_only = app.get("/api/v1/users?role=coach", &admin).await;
        assert!(
            coaches_only.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|u| u["role"] == "coach")
        );

        // The audit log recorded logins, creations, role changes.
        let audit = app.get("/api/v1/audit?limit=200", &admin).await;
        assert_eq!(audit.status, StatusCode::OK);
        let actions: Vec<&str> = audit.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        for expected in [
            "auth.login_succeeded",
            "auth.login_failed",
            "user.created",
            "user.role_changed",
            "user.coach_assigned",
            "user.password_reset",
        ] {
            assert!(actions.contains(&expected), "{expected} in {actions:?}");
        }
        app.stop().await;
    }
}
