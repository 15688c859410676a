//! Probes, metrics, OpenAPI, docs, headers.

use reqwest::StatusCode;

use crate::helpers::TestApp;

#[tokio::test]
async fn probes_metrics_and_docs() {
    for app in TestApp::each().await {
        let r = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers().contains_key("x-request-id"),
            "request id echoed"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.headers()["x-frame-options"], "DENY");

        let r: serde_json::Value = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            r,
            serde_json::json!({"status": "ok"}),
            "names nothing behind it"
        );

        // A request to count, then the metrics show it by route template and status.
        let token = app.admin_token().await;
        let _ = app.get("/api/v1/me", &token).await;
        let text = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains(
                r#"coachlibre_http_requests_total{method="GET",route="/api/v1/me",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("coachlibre_http_request_duration_seconds_bucket"),
            "{text}"
        );

        let spec: serde_json::Value = app
            .client
            .get(app.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for path in [
            "/api/v1/auth/login",
            "/api/v1/me",
            "/api/v1/users/{id}",
            "/api/v1/audit",
            "/healthz",
        ] {
            assert!(spec["paths"][path].is_object(), "{path} documented");
        }
        assert!(spec["components"]["securitySchemes"]["bearer"].is_object());

        let r = app.client.get(app.url("/docs/")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let html = r.text().await.unwrap();
        assert!(html.contains("swagger"), "docs page served from the binary");
        let r = app
            .client
            .get(app.url("/docs/swagger-ui.css"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        app.stop().await;
    }
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    for app in TestApp::each_with(|c| {
        c.rate_limit.enabled = true;
        c.rate_limit.per_ip_burst = 3;
        c.rate_limit.per_ip_per_second = 0.1;
    })
    .await
    {
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let r = app
                .call(reqwest::Method::GET, "/api/v1/me", None, None)
                .await;
            statuses.push(r.status);
            if r.status == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(r.code(), "rate_limited");
                let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=10).contains(&secs), "{secs}");
            }
        }
        assert_eq!(&statuses[..3], &[StatusCode::UNAUTHORIZED; 3]);
        assert_eq!(&statuses[3..], &[StatusCode::TOO_MANY_REQUESTS; 2]);
        // Probes are not rate limited.
        let r = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        app.stop().await;
    }
}

#[tokio::test]
async fn per_user_rate_limit() {
    for app in TestApp::each_with(|c| {
        c.rate_limit.enabled = true;
        c.rate_limit.per_user_burst = 2;
        c.rate_limit.per_user_per_second = 0.1;
    })
    .await
    {
        let token = app.admin_token().await;
        assert_eq!(app.get("/api/v1/me", &token).await.status, StatusCode::OK);
        assert_eq!(app.get("/api/v1/me", &token).await.status, StatusCode::OK);
        let r = app.get("/api/v1/me", &token).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers.contains_key("retry-after"));
        app.stop().await;
    }
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    for app in
        TestApp::each_with(|c| c.http.cors_origins = vec!["https://app.example.org".into()]).await
    {
        let preflight = |origin: &'static str| {
            app.client
                .request(reqwest::Method::OPTIONS, app.url("/api/v1/users"))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type",
                )
                .send()
        };
        let r = preflight("https://app.example.org").await.unwrap();
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://app.example.org"
        );
        let r = preflight("https://evil.example.com").await.unwrap();
        assert!(!r.headers().contains_key("access-control-allow-origin"));
        app.stop().await;
    }
}

/// Private answers are not cached, browsers get the permissions policy, HSTS comes with TLS,
/// and `/metrics` needs its token when one is configured.
#[tokio::test]
async fn transport_headers_and_metrics_access() {
    let tweak = |c: &mut coachlibre_server::config::Config| {
        c.http.trust_forwarded_for = true;
        c.http.metrics_token = Some(coachlibre_server::config::Secret::new("scrape me"));
    };
    for app in TestApp::each_with(tweak).await {
        let r = app.client.get(app.url("/login")).send().await.unwrap();
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert!(
            r.headers()["permissions-policy"]
                .to_str()
                .unwrap()
                .contains("camera=()")
        );
        assert!(r.headers().get("strict-transport-security").is_none());
        let r = app
            .client
            .get(app.url("/login"))
            .header("x-forwarded-proto", "https")
            .send()
            .await
            .unwrap();
        assert!(
            r.headers()["strict-transport-security"]
                .to_str()
                .unwrap()
                .starts_with("max-age=")
        );

        let metrics = |auth: Option<&'static str>| {
            let mut rb = app.client.get(app.url("/metrics"));
            if let Some(a) = auth {
                rb = rb.header("authorization", a);
            }
            async move { rb.send().await.unwrap().status() }
        };
        assert_eq!(metrics(None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            metrics(Some("Bearer wrong")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(metrics(Some("Bearer scrape me")).await, StatusCode::OK);
        app.stop().await;
    }
    // Without a token: this machine only.
    for app in TestApp::each_with(|c| c.http.trust_forwarded_for = true).await {
        let r = app
            .client
            .get(app.url("/metrics"))
            .header("x-forwarded-for", "203.0.113.9")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        app.stop().await;
    }
}
