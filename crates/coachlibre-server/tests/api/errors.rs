//! Bad input of every kind gets a clear 4xx with the standard JSON body, never a 500.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn malformed_requests_get_clear_4xx() {
    for app in TestApp::each_with(|c| c.http.body_limit_bytes = 2048).await {
        let token = app.admin_token().await;
        let raw = |body: &'static str, ct: &'static str| {
            app.client
                .post(app.url("/api/v1/users"))
                .bearer_auth(&token)
                .header("content-type", ct)
                .body(body)
        };
        let check = |status: StatusCode, code: &str, r: (StatusCode, serde_json::Value)| {
            assert_eq!(r.0, status, "{}", r.1);
            assert_eq!(r.1["error"]["code"], code, "{}", r.1);
            assert!(
                r.1["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        };
        async fn send(rb: reqwest::RequestBuilder) -> (StatusCode, serde_json::Value) {
            let r = rb.send().await.unwrap();
            let s = r.status();
            (s, r.json().await.unwrap_or(serde_json::Value::Null))
        }
        check(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            send(raw("{not json", "application/json")).await,
        );
        check(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            send(raw(
                r#"{"email": 42, "display_name": "x", "role": "coach"}"#,
                "application/json",
            ))
            .await,
        );
        check(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            send(raw(
                r#"{"display_name": "x", "role": "coach"}"#,
                "application/json",
            ))
            .await,
        );
        check(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            send(raw(
                r#"{"email": "a@b.org", "display_name": "x", "role": "wizard"}"#,
                "application/json",
            ))
            .await,
        );
        check(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            send(raw("{}", "text/plain")).await,
        );
        let big = format!(
            r#"{{"email": "a@b.org", "display_name": "{}", "role": "coach"}}"#,
            "x".repeat(4096)
        );
        let r = send(
            app.client
                .post(app.url("/api/v1/users"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(big),
        )
        .await;
        check(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", r);

        // Domain validation.
        let r = app
            .post(
                "/api/v1/users",
                &token,
                json!({"email": "not-an-email", "display_name": "x", "role": "coach"}),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
        );
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("email")
        );
        let r = app.post("/api/v1/users", &token, json!({"email": "a@b.org", "display_name": "x", "role": "coach", "password": "short"})).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
        );

        // Unknown ids, malformed ids, unknown routes, wrong methods.
        let r = app
            .get(&format!("/api/v1/users/{}", uuid::Uuid::now_v7()), &token)
            .await;
        assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
        let r = app.get("/api/v1/users/not-a-uuid", &token).await;
        assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
        let r = app.get("/api/v1/nothing-here", &token).await;
        assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
        let r = app
            .call(Method::DELETE, "/api/v1/me", Some(&token), None)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        );
        let r = app.get("/api/v1/users?limit=0", &token).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
        );
        let r = app.get("/api/v1/users?limit=abc", &token).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
        );
        let r = app.get("/api/v1/users?cursor=zzz", &token).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
        );

        // Credentials.
        let r = app.call(Method::GET, "/api/v1/me", None, None).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "missing_credentials")
        );
        assert_eq!(r.headers["www-authenticate"], "Bearer");
        let r = app.get("/api/v1/me", "garbage").await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "invalid_token")
        );
        let r = app.get("/api/v1/me", "cl_aaaaaaaaaaaa_bbbb").await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNAUTHORIZED, "invalid_token")
        );
        app.stop().await;
    }
}

/// NUL and other control characters are refused with 422 naming the field, on both engines
/// alike (PostgreSQL answered 500, SQLite stored them); tabs and line breaks are text.
#[tokio::test]
async fn control_characters_are_refused_naming_the_field() {
    for app in TestApp::each().await {
        let token = app.admin_token().await;
        let refused = |r: crate::helpers::Reply, field: &str, char: &str| {
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
                "{}: {}",
                app.backend,
                r.body
            );
            let m = r.body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                m.starts_with(&format!("{field}:")) && m.contains(char),
                "{}: {m}",
                app.backend
            );
        };
        let r = app
            .post("/api/v1/agents", &token, json!({"name": "a\u{0}b"}))
            .await;
        refused(r, "name", "U+0000 (NUL)");
        let r = app
            .post(
                "/api/v1/agents",
                &token,
                json!({"name": "Coach", "persona": "Be kind.\u{1b}[31m"}),
            )
            .await;
        refused(r, "persona", "U+001B (ESC)");
        let r = app
            .post(
                "/api/v1/collections",
                &token,
                json!({"name": "Guides", "description": "raw C1 \u{85} here"}),
            )
            .await;
        refused(r, "description", "U+0085");
        let r = app
            .post(
                "/api/v1/jobs",
                &token,
                json!({"kind": "system.probe", "payload": {"notes": ["ok", "a\u{0}b"]}}),
            )
            .await;
        refused(r, "payload.notes[1]", "NUL");
        let r = app
            .post(
                "/api/v1/jobs",
                &token,
                json!({"kind": "system.probe", "idempotency_key": "k\u{0}"}),
            )
            .await;
        refused(r, "idempotency_key", "NUL");
        let r = app.get("/api/v1/users?cursor=a%00b", &token).await;
        refused(r, "cursor", "NUL");
        let r = app
            .call(
                Method::DELETE,
                "/api/v1/sms/numbers/%2B33%00",
                Some(&token),
                None,
            )
            .await;
        refused(r, "the path", "NUL");

        // Escaped backslashes are not escapes; tabs and line breaks are text.
        let r = app
            .post(
                "/api/v1/agents",
                &token,
                json!({"name": "C:\\u0000 coach", "persona": "Line one.\nLine two:\tdone.\r\n"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}: {}", app.backend, r.body);
        assert_eq!(r.body["name"], "C:\\u0000 coach");
    }
}
