//! `/v1/me` and `/v1/authz`: the whole error table, scopes, rate limits, revocation.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use statuspulse_auth::domain::api_key::{generate_key, Environment};

use statuspulse_auth::actors::CacheSettings;

use crate::helpers::{metric, spawn_app, spawn_app_with, Backend, ADMIN_TOKEN};

#[actix_web::test]
async fn me_describes_the_key_with_rate_limit_headers() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (id, key) = app
        .create_key(&ws, "ci", "live", &["checks:write", "incidents:read"])
        .await;
    let me = app.me(&key).await;
    assert_eq!(me.status.as_u16(), 200, "{}", me.body);
    assert_eq!(me.body["workspace_id"], ws.as_str());
    assert_eq!(
        me.body["credential"],
        json!({ "type": "api_key", "id": id, "label": "ci", "environment": "live" })
    );
    assert_eq!(me.body["scopes"], json!(["checks:write", "incidents:read"]));
    assert!(me.body["expires_at"].is_string());
    assert_eq!(me.body["rate_limit"]["limit"], 1200);
    assert_eq!(me.body["rate_limit"]["remaining"], 1199);
    assert_eq!(me.header("ratelimit-limit"), Some("1200"));
    assert_eq!(me.header("ratelimit-remaining"), Some("1199"));
    assert!(
        me.header("ratelimit-reset")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            <= 61
    );
    assert!(me.header("x-request-id").is_some());
    let test_key = app
        .create_key(&ws, "sandbox", "test", &["checks:read"])
        .await
        .1;
    let me = app.me(&test_key).await;
    assert_eq!(me.header("ratelimit-limit"), Some("120"));
}

#[actix_web::test]
async fn bad_credentials_are_401_with_a_challenge() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (_, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    let public = app.public.clone();
    let none = app.raw(&public, "GET", "/v1/me", &[], None).await;
    none.assert_error(401, "invalid_credentials");
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"statuspulse\"")
    );
    let mut typo = key.clone().into_bytes();
    typo[12] = if typo[12] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let unknown_but_well_formed = {
        let generated = generate_key(Environment::Live, &mut rand::thread_rng(), |k| {
            app.hasher.hash(k)
        });
        secrecy::ExposeSecret::expose_secret(&generated.secret).to_owned()
    };
    for bad in [
        typo.as_str(),
        "sp_live_short",
        "sk_live_abc",
        &unknown_but_well_formed,
        &format!("{key}x"),
    ] {
        let reply = app.me(bad).await;
        reply.assert_error(401, "invalid_credentials");
        assert!(reply
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token"));
        assert!(
            !reply.body.to_string().contains(bad),
            "errors never echo the credential"
        );
    }
    let basic = app
        .raw(
            &public,
            "GET",
            "/v1/me",
            &[("Authorization", b"Basic dXNlcjpwYXNz")],
            None,
        )
        .await;
    basic.assert_error(401, "invalid_credentials");
    let not_utf8 = app
        .raw(
            &public,
            "GET",
            "/v1/me",
            &[("Authorization", b"Bearer sp_live_\xff\xfe")],
            None,
        )
        .await;
    not_utf8.assert_error(401, "invalid_credentials");
    let long = format!("Bearer {}", "a".repeat(8_000));
    app.raw(
        &public,
        "GET",
        "/v1/me",
        &[("Authorization", long.as_bytes())],
        None,
    )
    .await
    .assert_error(401, "invalid_credentials");
}

#[actix_web::test]
async fn oversized_request_heads_get_json_errors_on_both_listeners() {
    let app = spawn_app().await;
    let (public, admin) = (app.public.clone(), app.admin.clone());
    // Past our limits, far below the HTTP layer's own (128 KiB; see the test below).
    let huge_value = vec![b'a'; 20 * 1024];
    let many_fields: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("x-filler-{i}"), vec![b'b'; 500]))
        .collect();
    let many_fields: Vec<(&str, &[u8])> = many_fields
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_slice()))
        .collect();
    for base in [&public, &admin] {
        app.raw(base, "GET", "/v1/me", &[("x-padding", &huge_value)], None)
            .await
            .assert_error(431, "headers_too_large");
        app.raw(base, "GET", "/v1/me", &many_fields, None)
            .await
            .assert_error(431, "headers_too_large");
        let long_uri = format!("/v1/me?q={}", "c".repeat(9 * 1024));
        app.raw(base, "GET", &long_uri, &[], None)
            .await
            .assert_error(414, "uri_too_long");
    }
    // Just under the limits, a request goes through to the credential check.
    let under = vec![b'a'; 15 * 1024];
    app.raw(&public, "GET", "/v1/me", &[("x-padding", &under)], None)
        .await
        .assert_error(401, "invalid_credentials");
}

#[actix_web::test]
async fn requests_the_http_parser_refuses_get_json_errors_on_both_listeners() {
    let app = spawn_app().await;
    let fields: String = (0..100).map(|i| format!("x-field-{i}: v\r\n")).collect();
    let too_many_fields = format!("GET /v1/me HTTP/1.1\r\nhost: a\r\n{fields}\r\n");
    for base in [&app.public, &app.admin] {
        app.raw_bytes(base, too_many_fields.as_bytes())
            .await
            .assert_error(431, "headers_too_large");
        for malformed in [
            &b"GET /v1/me HTTP/1.1 junk\r\nhost: a\r\n\r\n"[..],
            b"GET /v1/me HTTP/1.1\r\nhost: a\r\nbad name: v\r\n\r\n",
            b"POST /admin/v1/workspaces HTTP/1.1\r\nhost: a\r\ncontent-length: ten\r\n\r\n",
            b"GET /v1/me HTTP/1.1\r\nhost: a\r\nx-bytes: \xff\x00\r\n\r\n",
        ] {
            app.raw_bytes(base, malformed)
                .await
                .assert_error(400, "malformed_request");
        }
    }
    // A good request and then a bad one on the same connection: the first is answered as
    // usual, the second in our form, and then the connection closes.
    let first = app
        .raw_bytes(
            &app.public,
            b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\nGET /v1/me HTTP/1.1\r\nbad name: v\r\n\r\n",
        )
        .await;
    assert_eq!(first.status.as_u16(), 200);
    let second = first.rest.expect("a second answer");
    assert!(
        second.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{second}"
    );
    assert!(
        second.contains("\"error\":\"malformed_request\""),
        "{second}"
    );
    // The same after an HTTP/1.0 request kept alive, whose version actix-http answers in.
    let first = app
        .raw_bytes(
            &app.public,
            b"GET /healthz HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /v1/me HTTP/1.1\r\nbad name: v\r\n\r\n",
        )
        .await;
    assert_eq!(first.status.as_u16(), 200);
    let second = first.rest.expect("a second answer");
    assert!(
        second.contains("\"error\":\"malformed_request\""),
        "{second}"
    );
    // Counted as responses like any other: 5 on the admin listener.
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("statuspulse_http_responses_total{listener=\"admin\",class=\"4xx\"} 5"),
        "{metrics}"
    );
}

#[actix_web::test]
async fn a_client_that_stalls_mid_head_gets_a_json_408() {
    let app = spawn_app().await;
    // The head never ends: after 5 s the HTTP layer gives up on it.
    app.raw_bytes(&app.public, b"GET /v1/me HTTP/1.1\r\nhost: a\r\n")
        .await
        .assert_error(408, "request_timeout");
}

#[actix_web::test]
async fn a_chunked_body_that_never_ends_does_not_hold_its_connection() {
    let app = spawn_app_with(CacheSettings::default(), |settings| {
        settings.next_answer_within = Duration::from_secs(2);
    })
    .await;
    // After answering, the HTTP layer reads the rest of a body to reuse the connection; a
    // chunked one that never ends would keep it reading forever. `raw_bytes` waits 30 s at
    // most for the connection to close.
    let unfinished = "transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
    let authz = format!(
        "GET /v1/authz HTTP/1.1\r\nhost: a\r\nx-forwarded-method: GET\r\n\
         x-forwarded-uri: /v1/checks\r\n{unfinished}"
    );
    app.raw_bytes(&app.public, authz.as_bytes())
        .await
        .assert_error(401, "invalid_credentials");
    // An admin handler stops waiting for the body after 10 s.
    let create = format!(
        "POST /admin/v1/workspaces HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
         content-type: application/json\r\n{unfinished}"
    );
    let timed_out = app.raw_bytes(&app.admin, create.as_bytes()).await;
    timed_out.assert_error(408, "request_timeout");
    // And says the connection closes: the rest of the body would be read as a request.
    assert_eq!(timed_out.header("connection"), Some("close"));
    // So does a body refused for its size.
    let too_large = format!(
        "POST /admin/v1/workspaces HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n11170\r\n{}",
        "x".repeat(70_000)
    );
    let refused = app.raw_bytes(&app.admin, too_large.as_bytes()).await;
    refused.assert_error(413, "body_too_large");
    assert_eq!(refused.header("connection"), Some("close"));
}

#[actix_web::test]
async fn forwarded_requests_that_could_be_read_two_ways_are_refused() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (_, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    // Upstreams that strip `;` parameters or decode twice would serve /v1/billing.
    // A raw `#` passed on by a gateway: to an upstream it is a character of the path, so
    // `/v1/checks#/../billing` is no `checks` route.
    for uri in [
        "/v1/checks/..;/billing",
        "/v1/checks/%252e%252e/billing",
        "/v1/checks#/../billing",
    ] {
        let refused = app.authz(&key, "GET", uri).await;
        refused.assert_error(400, "invalid_forwarded_uri");
    }
    // A second header of either kind: a proxy could act on the other one.
    let auth = format!("Bearer {key}");
    let twice = |name: &'static str, first: &'static str, second: &'static str| {
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("Authorization", auth.as_bytes()),
            ("X-Forwarded-Method", b"GET"),
            ("X-Forwarded-Uri", b"/v1/checks"),
        ];
        headers.retain(|(header, _)| *header != name);
        headers.push((name, first.as_bytes()));
        headers.push((name, second.as_bytes()));
        headers
    };
    let public = app.public.clone();
    let headers = twice("X-Forwarded-Uri", "/v1/checks", "/v1/billing");
    app.raw(&public, "GET", "/v1/authz", &headers, None)
        .await
        .assert_error(400, "invalid_forwarded_uri");
    let headers = twice("X-Forwarded-Method", "GET", "DELETE");
    app.raw(&public, "GET", "/v1/authz", &headers, None)
        .await
        .assert_error(400, "invalid_forwarded_method");
    // billing:write is required of writes but can be granted to no one: the challenge
    // names no scope to ask for.
    let refused = app.authz(&key, "POST", "/v1/billing").await;
    refused.assert_error(403, "insufficient_scope");
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer realm=\"statuspulse\", error=\"insufficient_scope\"")
    );
}

#[actix_web::test]
async fn a_forwarded_client_address_is_recorded_only_when_it_is_one() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (_, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    let long = "a".repeat(5_000);
    for (request_id, forwarded_for) in [
        ("addr-v6", "2001:db8::7, 10.0.0.1"),
        ("addr-garbage", "<script>alert(1)</script>"),
        ("addr-long", long.as_str()),
    ] {
        let more: [(&str, &[u8]); 2] = [
            ("X-Request-ID", request_id.as_bytes()),
            ("X-Forwarded-For", forwarded_for.as_bytes()),
        ];
        let reply = app.authz_with(&key, "GET", "/v1/checks", &more).await;
        assert_eq!(reply.status.as_u16(), 200);
    }
    let events = app.wait_for_audit_events(&ws, 3).await;
    let client_of = |request_id: &str| {
        events
            .iter()
            .find(|e| e["request_id"] == request_id)
            .map(|e| e["client_addr"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(client_of("addr-v6").as_deref(), Some("2001:db8::7"));
    // Not an address: the peer's is recorded instead.
    assert_eq!(client_of("addr-garbage").as_deref(), Some("127.0.0.1"));
    assert_eq!(client_of("addr-long").as_deref(), Some("127.0.0.1"));
}

#[actix_web::test]
async fn unknown_keys_are_remembered_so_a_flood_spares_storage() {
    let app = spawn_app().await;
    let generated = generate_key(Environment::Live, &mut rand::thread_rng(), |k| {
        app.hasher.hash(k)
    });
    let key = secrecy::ExposeSecret::expose_secret(&generated.secret).to_owned();
    for _ in 0..5 {
        app.me(&key).await.assert_error(401, "invalid_credentials");
    }
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "statuspulse_key_cache_misses_total"), 1.0);
    assert_eq!(
        metric(&metrics, "statuspulse_negative_cache_hits_total"),
        4.0
    );
}

#[actix_web::test]
async fn authz_applies_the_route_to_scope_rule() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (key_id, key) = app
        .create_key(&ws, "ci", "live", &["checks:write", "status_pages:read"])
        .await;
    let allowed = app.authz(&key, "GET", "/v1/checks/chk_1?expand=true").await;
    assert_eq!(allowed.status.as_u16(), 200, "{}", allowed.body);
    assert_eq!(allowed.header("x-statuspulse-workspace"), Some(ws.as_str()));
    assert_eq!(
        allowed.header("x-statuspulse-scopes"),
        Some("checks:read checks:write status_pages:read"),
        "X:write implies X:read"
    );
    assert_eq!(
        allowed.header("x-statuspulse-credential"),
        Some(format!("api_key:{key_id}").as_str())
    );
    assert!(allowed.header("ratelimit-remaining").is_some());
    assert_eq!(
        app.authz(&key, "DELETE", "/v1/checks/chk_1")
            .await
            .status
            .as_u16(),
        200
    );
    assert_eq!(
        app.authz(&key, "HEAD", "/v1/status-pages/p")
            .await
            .status
            .as_u16(),
        200
    );
    assert_eq!(app.authz(&key, "GET", "/v1/me").await.status.as_u16(), 200);

    let denied = app.authz(&key, "POST", "/v1/status-pages").await;
    denied.assert_error(403, "insufficient_scope");
    // Methods are case-sensitive: `get` is no `GET`, so it needs the write scope.
    app.authz(&key, "get", "/v1/status-pages")
        .await
        .assert_error(403, "insufficient_scope");
    assert_eq!(
        denied.header("www-authenticate"),
        Some("Bearer realm=\"statuspulse\", error=\"insufficient_scope\", scope=\"status_pages:write\"")
    );
    app.authz(&key, "GET", "/v1/billing")
        .await
        .assert_error(403, "insufficient_scope");
    app.authz(&key, "GET", "/v1/secrets")
        .await
        .assert_error(403, "insufficient_scope");
    app.authz(&key, "GET", "/v1/checks/../billing")
        .await
        .assert_error(400, "invalid_forwarded_uri");
    app.authz(&key, "GET", "/v1/checks%2F..%2Fbilling")
        .await
        .assert_error(400, "invalid_forwarded_uri");
    app.authz(&key, "GET", "/healthz")
        .await
        .assert_error(400, "invalid_forwarded_uri");
    app.authz(&key, "G T", "/v1/checks")
        .await
        .assert_error(400, "invalid_forwarded_method");
    let auth = format!("Bearer {key}");
    let public = app.public.clone();
    app.raw(
        &public,
        "GET",
        "/v1/authz",
        &[
            ("Authorization", auth.as_bytes()),
            ("X-Forwarded-Uri", b"/v1/checks"),
        ],
        None,
    )
    .await
    .assert_error(400, "invalid_forwarded_method");
    let not_ascii = app
        .raw(
            &public,
            "GET",
            "/v1/authz",
            &[
                ("Authorization", auth.as_bytes()),
                ("X-Forwarded-Method", b"GET"),
                ("X-Forwarded-Uri", b"/v1/\xffchecks"),
            ],
            None,
        )
        .await;
    not_ascii.assert_error(400, "invalid_forwarded_uri");
    let message = not_ascii.body["message"].as_str().unwrap();
    assert!(message.contains("not visible ASCII"), "{message}");
    // Two Authorization headers are ambiguous: refused even when the first is valid.
    app.raw(
        &public,
        "GET",
        "/v1/authz",
        &[
            ("Authorization", auth.as_bytes()),
            ("Authorization", b"Bearer sp_live_other"),
            ("X-Forwarded-Method", b"GET"),
            ("X-Forwarded-Uri", b"/v1/checks"),
        ],
        None,
    )
    .await
    .assert_error(401, "invalid_credentials");
    // A bad credential is reported as such, whatever the route.
    app.authz("sp_live_nope", "GET", "/v1/checks")
        .await
        .assert_error(401, "invalid_credentials");
}

#[actix_web::test]
async fn revocation_takes_effect_on_the_very_next_request() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (id, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    assert_eq!(
        app.authz(&key, "GET", "/v1/checks").await.status.as_u16(),
        200,
        "the key is now cached"
    );
    let revoked = app.revoke_key(&ws, &id).await;
    assert_eq!(revoked.status.as_u16(), 200);
    assert_eq!(revoked.body["status"], "revoked");
    app.authz(&key, "GET", "/v1/checks")
        .await
        .assert_error(403, "key_revoked");
    app.me(&key).await.assert_error(403, "key_revoked");
    // Revoking again is harmless and keeps the first revocation time.
    let again = app.revoke_key(&ws, &id).await;
    assert_eq!(again.body["revoked_at"], revoked.body["revoked_at"]);
}

#[actix_web::test]
async fn rotation_replaces_a_key_with_an_optional_grace_period() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (old_id, old_key) = app
        .create_key(&ws, "deploy", "live", &["checks:read", "webhooks:write"])
        .await;
    assert_eq!(app.me(&old_key).await.status.as_u16(), 200);
    let rotated = app
        .rotate_key(&ws, &old_id, Some(json!({ "grace_seconds": 3600 })))
        .await;
    assert_eq!(rotated.status.as_u16(), 201, "{}", rotated.body);
    let new_key = rotated.body["key"].as_str().unwrap().to_owned();
    assert_eq!(rotated.body["label"], "deploy");
    assert_eq!(
        rotated.body["scopes"],
        json!(["checks:read", "webhooks:write"])
    );
    assert_eq!(rotated.body["replaces"]["id"], old_id.as_str());
    assert_eq!(rotated.body["replaces"]["status"], "active");
    let old_me = app.me(&old_key).await;
    assert_eq!(
        old_me.status.as_u16(),
        200,
        "old key works during the grace period"
    );
    assert_eq!(
        old_me.body["expires_at"], rotated.body["replaces"]["revoked_at"],
        "/v1/me tells when the old key stops working: the grace period's end"
    );
    let new_me = app.me(&new_key).await;
    assert_eq!(new_me.status.as_u16(), 200);
    assert_eq!(new_me.body["expires_at"], rotated.body["expires_at"]);

    let new_id = rotated.body["id"].as_str().unwrap().to_owned();
    let immediate = app.rotate_key(&ws, &new_id, None).await;
    assert_eq!(immediate.status.as_u16(), 201, "{}", immediate.body);
    app.me(&new_key).await.assert_error(403, "key_revoked");
    app.rotate_key(&ws, &new_id, None)
        .await
        .assert_error(409, "key_not_active");
    app.rotate_key(&ws, &old_id, Some(json!({ "grace_seconds": -1 })))
        .await
        .assert_error(422, "invalid_grace_seconds");
    app.rotate_key(&ws, &old_id, Some(json!({ "grace": 5 })))
        .await
        .assert_error(400, "invalid_body");
    let fraction = app
        .rotate_key(&ws, &old_id, Some(json!({ "grace_seconds": 1.5 })))
        .await;
    fraction.assert_error(400, "invalid_body");
    assert!(
        fraction.body["message"]
            .as_str()
            .unwrap()
            .contains("whole number of seconds"),
        "{}",
        fraction.body
    );
    // A zero fraction is still a whole number (JSON Schema's `integer`).
    let (other_id, _) = app.create_key(&ws, "other", "live", &["teams:read"]).await;
    let whole = app
        .rotate_key(&ws, &other_id, Some(json!({ "grace_seconds": 60.0 })))
        .await;
    assert_eq!(whole.status.as_u16(), 201, "{}", whole.body);
}

/// Of two changes to one key, the one that storage applies second is dated no earlier
/// than the first, whatever time its request read before it reached storage's lock. Two
/// requests at once: the one that read the earlier time can take the lock second.
#[actix_web::test]
async fn a_change_applied_after_another_is_never_dated_before_it() {
    use statuspulse_auth::store::{Conflict, StoreError};
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let read_before_the_lock = Utc::now();
    let (rotated_id, _) = app
        .create_key(&ws, "deploy", "live", &["checks:read"])
        .await;
    let (revoked_id, _) = app.create_key(&ws, "ci", "live", &["teams:read"]).await;
    // Past the millisecond that the stale time reads.
    tokio::time::sleep(Duration::from_millis(20)).await;

    let first = app.rotate_key(&ws, &rotated_id, None).await;
    assert_eq!(first.status.as_u16(), 201, "{}", first.body);
    assert_eq!(
        first.body["replaces"]["status"], "revoked",
        "{}",
        first.body
    );
    let (replacement, _) = app.unstored_key(&ws, "deploy", read_before_the_lock);
    let second = app
        .store
        .rotate_api_key(
            &ws,
            &rotated_id,
            &replacement,
            chrono::Duration::zero(),
            2,
            read_before_the_lock,
        )
        .await;
    assert!(
        matches!(second, Err(StoreError::Conflict(Conflict::KeyNotActive))),
        "a second replacement of a key the first rotation ended: {second:?}"
    );

    let revoked = app.revoke_key(&ws, &revoked_id).await;
    assert_eq!(revoked.status.as_u16(), 200, "{}", revoked.body);
    assert_eq!(revoked.body["status"], "revoked", "{}", revoked.body);
    let again = app
        .store
        .revoke_api_key(&ws, &revoked_id, read_before_the_lock)
        .await
        .unwrap();
    let stored = app
        .admin_call(
            "GET",
            &format!("/admin/v1/workspaces/{ws}/api-keys/{revoked_id}"),
            None,
        )
        .await;
    assert_eq!(stored.body["revoked_at"], revoked.body["revoked_at"]);
    assert_eq!(
        again.revoked_at.map(|at| at.timestamp_millis()),
        chrono::DateTime::parse_from_rfc3339(revoked.body["revoked_at"].as_str().unwrap())
            .ok()
            .map(|at| at.timestamp_millis()),
        "a revocation applied second moved the first one's time"
    );
}

/// A grace period keeps the old key active, so it counts toward the two active keys; and
/// rotating a key again never moves its end later.
#[actix_web::test]
async fn grace_periods_count_toward_the_limit_and_are_never_extended() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (old_id, old_key) = app
        .create_key(&ws, "deploy", "live", &["checks:read"])
        .await;
    let first = app
        .rotate_key(&ws, &old_id, Some(json!({ "grace_seconds": 3600 })))
        .await;
    assert_eq!(first.status.as_u16(), 201, "{}", first.body);
    let ends = first.body["replaces"]["revoked_at"].clone();
    assert!(ends.is_string(), "{}", first.body);

    // The old key (in its grace period) and its replacement are the two active keys.
    app.rotate_key(&ws, &old_id, Some(json!({ "grace_seconds": 604800 })))
        .await
        .assert_error(409, "too_many_active_keys");
    let second_id = first.body["id"].as_str().unwrap().to_owned();
    app.rotate_key(&ws, &second_id, Some(json!({ "grace_seconds": 60 })))
        .await
        .assert_error(409, "too_many_active_keys");
    let listed = app
        .admin_call("GET", &format!("/admin/v1/workspaces/{ws}/api-keys"), None)
        .await;
    let active = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["status"] == "active")
        .count();
    assert_eq!(active, 2);

    // With room (the replacement revoked), rotating again keeps the earlier end.
    app.revoke_key(&ws, &second_id).await;
    let longer = app
        .rotate_key(&ws, &old_id, Some(json!({ "grace_seconds": 604800 })))
        .await;
    assert_eq!(longer.status.as_u16(), 201, "{}", longer.body);
    assert_eq!(longer.body["replaces"]["revoked_at"], ends, "not extended");

    // Ending it now is allowed, replacement or not.
    let now = app.rotate_key(&ws, &old_id, None).await;
    assert_eq!(now.status.as_u16(), 201, "{}", now.body);
    app.me(&old_key).await.assert_error(403, "key_revoked");
}

#[actix_web::test]
async fn keys_stop_working_365_days_after_creation() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let created_at = Utc::now() - chrono::Duration::days(365) - chrono::Duration::seconds(5);
    let (_, key) = app.insert_key_created_at(&ws, "ancient", created_at).await;
    app.me(&key).await.assert_error(403, "key_expired");
    app.authz(&key, "GET", "/v1/checks")
        .await
        .assert_error(403, "key_expired");
    // An expired key does not count toward the two active keys.
    app.create_key(&ws, "a", "live", &["checks:read"]).await;
    app.create_key(&ws, "b", "live", &["checks:read"]).await;
}

#[actix_web::test]
async fn a_workspace_over_its_limit_gets_429_with_retry_after() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (_, test_key) = app
        .create_key(&ws, "sandbox", "test", &["checks:read"])
        .await;
    let (_, second_test_key) = app
        .create_key(&ws, "sandbox-2", "test", &["incidents:read"])
        .await;
    let (_, live_key) = app.create_key(&ws, "prod", "live", &["checks:read"]).await;
    for i in 0..120 {
        let reply = app.authz(&test_key, "GET", "/v1/checks").await;
        assert_eq!(reply.status.as_u16(), 200, "request {i}: {}", reply.body);
    }
    let limited = app.authz(&test_key, "GET", "/v1/checks").await;
    limited.assert_error(429, "rate_limited");
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=61).contains(&retry_after));
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
    // The limit is the workspace's, across its keys of the environment...
    app.me(&second_test_key)
        .await
        .assert_error(429, "rate_limited");
    // ...and live traffic has its own budget.
    assert_eq!(
        app.authz(&live_key, "GET", "/v1/checks")
            .await
            .status
            .as_u16(),
        200
    );
}

#[actix_web::test]
async fn idle_actors_stop_and_come_back_on_demand() {
    let cache = statuspulse_auth::actors::CacheSettings {
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let app = crate::helpers::spawn_app_with_cache(cache).await;
    let ws = app.create_workspace("Acme").await;
    let (_, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    assert_eq!(app.me(&key).await.status.as_u16(), 200);
    assert_eq!(
        metric(&app.metrics().await, "statuspulse_workspace_actors"),
        1.0
    );
    let mut stopped = false;
    for _ in 0..100 {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        if metric(&app.metrics().await, "statuspulse_workspace_actors") == 0.0 {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "the idle actor stopped");
    assert_eq!(app.me(&key).await.status.as_u16(), 200);
    assert_eq!(
        metric(&app.metrics().await, "statuspulse_workspace_actors"),
        1.0
    );
}

/// An outage must not look like a bad key: cached keys keep working, uncached ones get 503.
/// Staged on PostgreSQL by refusing new connections and killing the open ones.
#[actix_web::test]
#[ignore = "needs PostgreSQL: set STATUSPULSE_TEST_DATABASE_URL and pass --include-ignored (.ci/run does)"]
async fn storage_outage_keeps_cached_keys_working_and_answers_503_otherwise() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (_, cached) = app
        .create_key(&ws, "cached", "live", &["checks:read"])
        .await;
    let (_, uncached) = app
        .create_key(&ws, "uncached", "live", &["incidents:read"])
        .await;
    assert_eq!(app.me(&cached).await.status.as_u16(), 200);

    app.cut_off_database().await;
    assert_eq!(
        app.me(&cached).await.status.as_u16(),
        200,
        "cached keys keep verifying"
    );
    app.me(&uncached).await.assert_error(503, "unavailable");
    let ready = app
        .raw(&app.public.clone(), "GET", "/readyz", &[], None)
        .await;
    ready.assert_error(503, "unavailable");

    app.restore_database().await;
    assert_eq!(
        app.me(&uncached).await.status.as_u16(),
        200,
        "service resumes when storage returns"
    );
}

/// An operation abandoned past its deadline takes its connection out of the pool:
/// PostgreSQL may still be running what was sent (here an audit batch's inserts, 20 ms
/// each, about 4 s in all), and the next operation handed that connection would wait
/// behind it, past its own deadline (a ping has 2 s).
#[actix_web::test]
#[ignore = "needs PostgreSQL: set STATUSPULSE_TEST_DATABASE_URL and pass --include-ignored (.ci/run does)"]
async fn a_connection_abandoned_past_its_deadline_is_not_handed_out_again() {
    use statuspulse_auth::domain::audit::{AuditEvent, CredentialType};
    use statuspulse_auth::domain::audit_codec::EncodedEvents;
    let app = spawn_app_with(CacheSettings::default(), |settings| {
        settings.database_max_connections = 1;
        settings.database_deadlines.bulk = Duration::from_millis(300);
    })
    .await;
    assert_eq!(app.backend, Backend::Postgres, "this test slows PostgreSQL");
    let ws = app.create_workspace("Acme").await;
    app.execute_in_database(
        "",
        "CREATE FUNCTION slow_audit() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END $$;
         CREATE TRIGGER slow_audit BEFORE INSERT ON audit_events
           FOR EACH ROW EXECUTE FUNCTION slow_audit();",
    )
    .await;
    let events: Vec<AuditEvent> = (0..200)
        .map(|i| AuditEvent {
            id: uuid::Uuid::now_v7(),
            occurred_at: Utc::now(),
            workspace_id: ws.as_str().into(),
            credential_type: CredentialType::ApiKey,
            credential_id: "key_1".into(),
            key_label: None,
            app_name: None,
            method: "GET".into(),
            path: "/v1/checks".into(),
            scope: None,
            status: 200,
            error_code: None,
            request_id: format!("r{i}"),
            client_addr: None,
        })
        .collect();
    let batch = std::sync::Arc::new(EncodedEvents::from_events(&events));
    let slow = app.store.insert_audit_events(batch).await;
    assert!(
        slow.as_ref().is_err_and(|error| error.is_past_deadline()),
        "{slow:?}"
    );
    // The only connection of the pool is still busy with those inserts: a new one serves.
    app.store
        .ping()
        .await
        .expect("a connection that is not busy");
}

/// A database that keeps its connections open but stops answering must not hold requests
/// for as long as it lasts: past the deadline they answer 503, like an outage. Staged with a
/// lock on the keys table, held by another session (as a stuck migration would).
#[actix_web::test]
#[ignore = "needs PostgreSQL: set STATUSPULSE_TEST_DATABASE_URL and pass --include-ignored (.ci/run does)"]
async fn a_database_that_stops_answering_gets_503_not_a_hung_request() {
    let app = spawn_app_with(CacheSettings::default(), |settings| {
        settings.database_deadlines.request = Duration::from_millis(500);
    })
    .await;
    assert_eq!(
        app.backend,
        Backend::Postgres,
        "this test locks a PostgreSQL table"
    );
    let ws = app.create_workspace("Acme").await;
    let (cached_id, cached) = app
        .create_key(&ws, "cached", "live", &["checks:read"])
        .await;
    let (uncached_id, uncached) = app
        .create_key(&ws, "uncached", "live", &["incidents:read"])
        .await;
    assert_eq!(app.me(&cached).await.status.as_u16(), 200);

    let mut locker = app.postgres_session().await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // The test client gives up after 30 s: without a deadline these would hang until then.
    app.me(&uncached).await.assert_error(503, "unavailable");
    let path = format!("/admin/v1/workspaces/{ws}/api-keys/{uncached_id}");
    app.admin_call("GET", &path, None)
        .await
        .assert_error(503, "unavailable");
    assert_eq!(
        app.me(&cached).await.status.as_u16(),
        200,
        "cached keys need no storage"
    );

    lock.rollback().await.unwrap();
    assert_eq!(
        app.me(&uncached).await.status.as_u16(),
        200,
        "service resumes when the database answers again"
    );

    // A write held up on the server is ended there before the caller's deadline passes, so
    // a revocation answered 503 was not made, and never lands later behind the cache's back.
    let lock = locker.transaction().await.unwrap();
    // A row lock: reads go on, and the revocation's UPDATE waits for the row once it runs (a
    // table lock would hold it up earlier, in parsing, before it was ever sent to run).
    lock.batch_execute(&format!(
        "SELECT 1 FROM api_keys WHERE id = '{cached_id}' FOR UPDATE"
    ))
    .await
    .unwrap();
    app.revoke_key(&ws, &cached_id)
        .await
        .assert_error(503, "unavailable");
    assert_eq!(
        app.me(&cached).await.status.as_u16(),
        200,
        "read again from storage, where the key is still active"
    );
    lock.rollback().await.unwrap();
    // Time for a write the server had kept waiting to land, had it kept one.
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    let stored = app
        .admin_call(
            "GET",
            &format!("/admin/v1/workspaces/{ws}/api-keys/{cached_id}"),
            None,
        )
        .await;
    assert_eq!(
        stored.body["status"], "active",
        "the refused revocation was not made"
    );
    assert_eq!(app.me(&cached).await.status.as_u16(), 200);
}

/// An idle workspace keeps its actor, and so its cached keys, while storage does not answer:
/// they are all that serves it until storage is back. Then the actor stops as usual.
#[actix_web::test]
#[ignore = "needs PostgreSQL: set STATUSPULSE_TEST_DATABASE_URL and pass --include-ignored (.ci/run does)"]
async fn an_idle_workspace_keeps_its_cached_keys_through_an_outage() {
    let cache = statuspulse_auth::actors::CacheSettings {
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let app = crate::helpers::spawn_app_with_cache(cache).await;
    let ws = app.create_workspace("Acme").await;
    let (_, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    assert_eq!(app.me(&key).await.status.as_u16(), 200);
    let actors = || async { metric(&app.metrics().await, "statuspulse_workspace_actors") };

    app.cut_off_database().await;
    // Ten idle timeouts, each checked four times.
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        actors().await,
        1.0,
        "the idle actor stays while storage is down"
    );
    assert_eq!(
        app.me(&key).await.status.as_u16(),
        200,
        "its key still verifies"
    );

    app.restore_database().await;
    let mut stopped = false;
    for _ in 0..200 {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        if actors().await == 0.0 {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "the idle actor stops once storage answers");
}

/// An admin call refused during an outage logs why storage is unavailable, not only that
/// a connection could not be made.
#[actix_web::test]
#[ignore = "needs PostgreSQL: set STATUSPULSE_TEST_DATABASE_URL and pass --include-ignored (.ci/run does)"]
async fn an_outage_is_logged_with_its_cause() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    app.cut_off_database().await;
    let reply = app
        .admin_call("GET", &format!("/admin/v1/workspaces/{ws}"), None)
        .await;
    reply.assert_error(503, "unavailable");
    app.restore_database().await;
    // PostgreSQL's own words, which name the test's database.
    let cause = format!(
        "database \"{}\" is not currently accepting connections",
        app.database_name.as_deref().unwrap()
    );
    let logs = crate::helpers::captured_logs();
    assert!(
        logs.lines()
            .any(|line| line.contains("storage unavailable") && line.contains(&cause)),
        "no line says {cause:?}"
    );
}

/// Refusals that come before the limit is checked still report it, without counting.
#[actix_web::test]
async fn refusals_before_the_rate_check_carry_the_rate_limit_headers() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (id, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    let bad_route = app.authz(&key, "GET", "/v2/checks").await;
    assert_eq!(bad_route.status.as_u16(), 400, "{}", bad_route.body);
    assert_eq!(bad_route.header("ratelimit-limit"), Some("1200"));
    assert_eq!(
        bad_route.header("ratelimit-remaining"),
        Some("1200"),
        "not counted"
    );
    app.revoke_key(&ws, &id).await;
    let revoked = app.me(&key).await;
    revoked.assert_error(403, "key_revoked");
    assert_eq!(revoked.header("ratelimit-limit"), Some("1200"));
}

/// A graceful stop that cannot save the counts (storage down) leaves them in the rate
/// journal for the next start, as a crash does.
#[actix_web::test]
#[ignore = "needs PostgreSQL: set STATUSPULSE_TEST_DATABASE_URL and pass --include-ignored (.ci/run does)"]
async fn a_stop_during_an_outage_gives_no_workspace_a_fresh_minute() {
    let mut app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (_, key) = app.create_key(&ws, "ci", "test", &["checks:read"]).await;
    for _ in 0..50 {
        let reply = app.me(&key).await;
        assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    }
    app.cut_off_database().await;
    app.stop().await;
    app.restore_database().await;
    app.restart().await;
    // The test limit is 120 a minute: 70 left after the 50, and this one.
    let reply = app.me(&key).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    assert_eq!(reply.header("ratelimit-remaining"), Some("69"));
    app.stop().await;
}

#[actix_web::test]
async fn a_restart_gives_no_workspace_a_fresh_minute() {
    let mut app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (_, key) = app.create_key(&ws, "ci", "test", &["checks:read"]).await;
    for _ in 0..100 {
        let reply = app.authz(&key, "GET", "/v1/checks").await;
        assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    }
    app.restart().await;
    // A second restart with no request in between: the counts no actor has taken yet are
    // saved again.
    app.restart().await;
    // A start that fails (a port taken) leaves them for the next one.
    app.stop().await;
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = blocker.local_addr().unwrap();
    let failed = app.build_another_with(|s| s.public_addr = taken).await;
    assert!(failed.is_err());
    let failed = app.build_another_with(|s| s.admin_addr = taken).await;
    assert!(failed.is_err());
    app.restart().await;
    // The test limit is 120 a minute: 20 left, whatever the restarts.
    let first = app.authz(&key, "GET", "/v1/checks").await;
    assert_eq!(first.header("ratelimit-remaining"), Some("19"));
    for _ in 0..19 {
        let reply = app.authz(&key, "GET", "/v1/checks").await;
        assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    }
    app.authz(&key, "GET", "/v1/checks")
        .await
        .assert_error(429, "rate_limited");
    // Taken once: a second restart carries over what this run counted, not the first
    // run's counts again.
    app.restart().await;
    app.authz(&key, "GET", "/v1/checks")
        .await
        .assert_error(429, "rate_limited");
    app.stop().await;
}
