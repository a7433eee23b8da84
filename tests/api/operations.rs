//! Health, readiness, request ids, metrics, OpenAPI.

use secrecy::SecretString;

use crate::helpers::{metric, spawn_app, ADMIN_TOKEN};

#[actix_web::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let public = app.public.clone();
    let health = app.raw(&public, "GET", "/healthz", &[], None).await;
    assert_eq!(health.status.as_u16(), 200);
    let ready = app.raw(&public, "GET", "/readyz", &[], None).await;
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.body);
    // HEAD wherever GET is answered (load balancers' health checks use it): the headers
    // of the GET answer, no body.
    let ws = app.create_workspace("Acme").await;
    let auth = format!("Bearer {}", crate::helpers::ADMIN_TOKEN);
    for (base, path) in [
        (&public, "/healthz".to_owned()),
        (&public, "/readyz".to_owned()),
        (&app.admin, format!("/admin/v1/workspaces/{ws}")),
    ] {
        let head = app
            .raw(
                base,
                "HEAD",
                &path,
                &[("Authorization", auth.as_bytes())],
                None,
            )
            .await;
        assert_eq!(head.status.as_u16(), 200, "HEAD {path}");
        assert_eq!(head.body, serde_json::Value::Null, "HEAD {path}");
        assert_eq!(head.header("content-type"), Some("application/json"));
    }
}

#[actix_web::test]
async fn every_answer_carries_a_request_id_and_insane_ones_are_replaced() {
    let app = spawn_app().await;
    let public = app.public.clone();
    let generated = app.raw(&public, "GET", "/healthz", &[], None).await;
    assert!(uuid::Uuid::parse_str(generated.header("x-request-id").unwrap()).is_ok());
    let kept = app
        .raw(
            &public,
            "GET",
            "/nowhere",
            &[("X-Request-ID", b"abc-123")],
            None,
        )
        .await;
    kept.assert_error(404, "not_found");
    assert_eq!(kept.header("x-request-id"), Some("abc-123"));
    let long = "x".repeat(500);
    for bad in [
        long.as_bytes(),
        b"has space".as_slice(),
        b"\xff\xfe".as_slice(),
        // A key pasted here would go into every log line and the audit log.
        b"sp_live_4Fh8kQz0Rj2mXc9vB1nT7yLpW3sD6gHq5aE0uK".as_slice(),
    ] {
        let replaced = app
            .raw(&public, "GET", "/healthz", &[("X-Request-ID", bad)], None)
            .await;
        let id = replaced.header("x-request-id").unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
    // A key's secret part without its prefix, and, on the admin listener, the operator's
    // admin token (which has no shape of its own), are replaced too.
    let (_, key) = app
        .create_key(
            &app.create_workspace("Acme").await,
            "ci",
            "live",
            &["checks:read"],
        )
        .await;
    let admin = app.admin.clone();
    let admin_token_copy = format!("copy-{ADMIN_TOKEN}");
    for (base, bad) in [
        (&public, &key["sp_live_".len()..]),
        (&admin, admin_token_copy.as_str()),
    ] {
        let replaced = app
            .raw(
                base,
                "GET",
                "/healthz",
                &[("X-Request-ID", bad.as_bytes())],
                None,
            )
            .await;
        let id = replaced.header("x-request-id").unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
}

#[actix_web::test]
async fn metrics_count_verifications_and_cache_use() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (_, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    for _ in 0..3 {
        app.authz(&key, "GET", "/v1/checks").await;
    }
    app.authz("sp_live_bad", "GET", "/v1/checks").await;
    let text = app.metrics().await;
    assert!(
        text.contains("statuspulse_verifications_total{route=\"authz\",outcome=\"ok\"} 3"),
        "{text}"
    );
    assert!(text.contains(
        "statuspulse_verifications_total{route=\"authz\",outcome=\"invalid_credentials\"} 1"
    ));
    assert_eq!(metric(&text, "statuspulse_key_cache_misses_total"), 1.0);
    assert_eq!(metric(&text, "statuspulse_key_cache_hits_total"), 2.0);
    assert_eq!(metric(&text, "statuspulse_workspace_actors"), 1.0);
    assert_eq!(
        metric(&text, "statuspulse_verification_duration_seconds_count"),
        4.0
    );
}

/// The admin listener's answers are counted by path (its pattern) and status class.
#[actix_web::test]
async fn metrics_count_admin_answers_by_route_and_class() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (key_id, _) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    app.revoke_key(&ws, &key_id).await;
    app.revoke_key(&ws, "key_nope").await;
    app.admin_call("GET", "/admin/v1/workspaces/ws_nope", None)
        .await;
    app.admin_call("GET", "/admin/v1/nowhere", None).await;
    let text = app.metrics().await;
    let count = |route: &str, class: &str| {
        metric(
            &text,
            &format!("statuspulse_admin_responses_total{{route=\"{route}\",class=\"{class}\"}}"),
        )
    };
    assert_eq!(count("/admin/v1/workspaces", "2xx"), 1.0);
    assert_eq!(count("/admin/v1/workspaces/{ws}/api-keys", "2xx"), 1.0);
    assert_eq!(count("/admin/v1/workspaces/{ws}/api-keys/{id}", "2xx"), 1.0);
    assert_eq!(count("/admin/v1/workspaces/{ws}/api-keys/{id}", "4xx"), 1.0);
    assert_eq!(count("/admin/v1/workspaces/{ws}", "4xx"), 1.0);
    assert_eq!(count("other", "4xx"), 1.0);
    assert_eq!(count("/admin/v1/users", "2xx"), 0.0);
}

#[actix_web::test]
async fn openapi_document_describes_both_apis() {
    let app = spawn_app().await;
    let reply = app
        .raw(&app.admin.clone(), "GET", "/openapi.json", &[], None)
        .await;
    assert_eq!(reply.status.as_u16(), 200);
    assert!(reply.body["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(reply.body["paths"]["/v1/authz"].is_object());
    assert!(reply.body["paths"]["/admin/v1/workspaces/{ws}/api-keys"]["post"].is_object());
    // Client generators and validators need every operation id once.
    let mut ids: Vec<&str> = reply.body["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|methods| methods.as_object().unwrap().values())
        .filter_map(|operation| operation["operationId"].as_str())
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "operation ids repeat: {ids:?}");
    assert!(count >= 12, "{ids:?}");
}

/// Servers that share a database must share the hashing key: one started with another key
/// would answer every key 401, so it refuses to start, naming the setting.
#[actix_web::test]
async fn a_server_with_another_hashing_key_refuses_to_start_on_the_same_database() {
    let mut app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (_, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    // The data dir is the first server's while it runs.
    app.stop().await;

    let refused = app
        .build_another_with(|settings| {
            settings.hashing_key = Some(SecretString::from("ab".repeat(32)));
            settings.admin_token = None;
        })
        .await
        .expect_err("another hashing key is refused");
    // The refused start generated an admin token it never printed: it kept no hash of it,
    // so the next start generates (and prints) one.
    let token_hash_file = app.data_dir.join("admin_token.blake3");
    assert!(
        !token_hash_file.exists(),
        "an unprinted token's hash was kept"
    );
    assert_eq!(refused.variable, "STATUSPULSE_HASHING_KEY");
    assert!(
        refused.problem.contains("every server sharing a database"),
        "{}",
        refused.problem
    );
    assert!(
        !refused.problem.contains(&"ab".repeat(32)),
        "{}",
        refused.problem
    );

    // The right key still starts, and the key still verifies.
    app.restart().await;
    assert_eq!(app.me(&key).await.status.as_u16(), 200);
}

/// A data dir belongs to one running server: a second one would delete the first's audit
/// spool and rate journal at its own stop. It is refused, naming the variable, and the dir
/// is free again once the first stops.
#[actix_web::test]
async fn a_second_server_on_a_data_dir_in_use_refuses_to_start() {
    let mut app = spawn_app().await;
    let refused = app
        .build_another_with(|_| {})
        .await
        .expect_err("a data dir in use is refused");
    assert_eq!(refused.variable, "STATUSPULSE_DATA_DIR");
    assert!(
        refused
            .problem
            .contains("is in use by another running server"),
        "{}",
        refused.problem
    );
    app.stop().await;
    app.build_another_with(|_| {})
        .await
        .expect("the data dir is free once its server stopped");
}
