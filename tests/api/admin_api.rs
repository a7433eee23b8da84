//! The admin API: workspaces, keys, users and members, and what it does with bad input.

use serde_json::json;

use crate::helpers::{spawn_app, ADMIN_TOKEN};

#[actix_web::test]
async fn admin_api_requires_the_admin_token() {
    let app = spawn_app().await;
    let body = br#"{"name":"x"}"#;
    let json = ("Content-Type", b"application/json".as_slice());
    let missing = app
        .raw(
            &app.admin,
            "POST",
            "/admin/v1/workspaces",
            &[json],
            Some(body),
        )
        .await;
    missing.assert_error(401, "invalid_credentials");
    let wrong = app
        .raw(
            &app.admin,
            "POST",
            "/admin/v1/workspaces",
            &[json, ("Authorization", b"Bearer not-the-token")],
            Some(body),
        )
        .await;
    wrong.assert_error(401, "invalid_credentials");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    // The token twice is ambiguous, and refused; a non-UTF-8 one is malformed, not missing.
    let twice = app
        .raw(
            &app.admin,
            "POST",
            "/admin/v1/workspaces",
            &[
                json,
                ("Authorization", auth.as_bytes()),
                ("Authorization", auth.as_bytes()),
            ],
            Some(body),
        )
        .await;
    twice.assert_error(401, "invalid_credentials");
    let not_utf8 = app
        .raw(
            &app.admin,
            "POST",
            "/admin/v1/workspaces",
            &[json, ("Authorization", b"Bearer \xff\xfe")],
            Some(body),
        )
        .await;
    not_utf8.assert_error(401, "invalid_credentials");
    assert_ne!(not_utf8.body["message"], missing.body["message"]);
    // The admin API is not served on the public listener at all.
    let public = app
        .raw(
            &app.public,
            "POST",
            "/admin/v1/workspaces",
            &[json, ("Authorization", auth.as_bytes())],
            Some(body),
        )
        .await;
    public.assert_error(404, "not_found");
}

#[actix_web::test]
async fn workspaces_are_created_and_read() {
    let app = spawn_app().await;
    let reply = app
        .admin_call(
            "POST",
            "/admin/v1/workspaces",
            Some(json!({ "name": "  Acme  " })),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 201);
    let id = reply.body["id"].as_str().unwrap();
    assert!(id.starts_with("ws_"));
    assert_eq!(reply.body["name"], "Acme");
    assert_eq!(
        reply.body["rate_limits"],
        json!({ "live": 1200, "test": 120 })
    );
    let read = app
        .admin_call("GET", &format!("/admin/v1/workspaces/{id}"), None)
        .await;
    assert_eq!(read.status.as_u16(), 200);
    assert_eq!(read.body["id"], id);
    let unknown = app
        .admin_call(
            "GET",
            "/admin/v1/workspaces/ws_0193aaaaaaaa7aaa8aaaaaaaaaaaaaaa",
            None,
        )
        .await;
    unknown.assert_error(404, "workspace_not_found");
    let junk = app
        .admin_call("GET", "/admin/v1/workspaces/..%2F..%2Fetc", None)
        .await;
    junk.assert_error(404, "workspace_not_found");
}

#[actix_web::test]
async fn malformed_and_hostile_bodies_get_clear_4xx_errors() {
    let app = spawn_app().await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let headers = [
        ("Authorization", auth.as_bytes()),
        ("Content-Type", b"application/json".as_slice()),
    ];
    let post = |body: &'static [u8]| {
        app.raw(
            &app.admin,
            "POST",
            "/admin/v1/workspaces",
            &headers,
            Some(body),
        )
    };
    post(b"{\"name\":").await.assert_error(400, "invalid_body");
    post(b"[]").await.assert_error(400, "invalid_body");
    // Only an object: no fields by position, and no field twice.
    post(br#"["Acme"]"#).await.assert_error(400, "invalid_body");
    let twice = post(br#"{"name":"a","name":"b"}"#).await;
    twice.assert_error(400, "invalid_body");
    assert!(twice.body["message"]
        .as_str()
        .unwrap()
        .contains("duplicate field `name`"));
    let unknown_field = post(br#"{"name":"a","plan":"gold"}"#).await;
    unknown_field.assert_error(400, "invalid_body");
    assert!(unknown_field.body["message"]
        .as_str()
        .unwrap()
        .contains("plan"));
    let missing = post(b"{}").await;
    missing.assert_error(400, "invalid_body");
    assert!(missing.body["message"].as_str().unwrap().contains("name"));
    let wrong_type = post(br#"{"name":12345}"#).await;
    wrong_type.assert_error(400, "invalid_body");
    let message = wrong_type.body["message"].as_str().unwrap();
    assert!(
        message.contains("`name`: invalid type: integer"),
        "{message}"
    );
    assert!(!message.contains("12345"), "the value is echoed: {message}");
    post(br#"{"name":""}"#)
        .await
        .assert_error(422, "invalid_name");
    post(br#"{"name":"a\u0000b"}"#)
        .await
        .assert_error(422, "invalid_name");
    // Nothing visible, or text that reads in another order than it is stored.
    post(br#"{"name":"\u200b \ufeff"}"#)
        .await
        .assert_error(422, "invalid_name");
    post(br#"{"name":"\u3164\u034f\ufe0f"}"#)
        .await
        .assert_error(422, "invalid_name");
    post(br#"{"name":"admin\u202egnp.exe"}"#)
        .await
        .assert_error(422, "invalid_name");
    let long = format!(r#"{{"name":"{}"}}"#, "x".repeat(101))
        .into_bytes()
        .leak();
    post(long).await.assert_error(422, "invalid_name");
    let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(100_000))
        .into_bytes()
        .leak();
    post(huge).await.assert_error(413, "body_too_large");
    let not_json = app
        .raw(
            &app.admin,
            "POST",
            "/admin/v1/workspaces",
            &[
                ("Authorization", auth.as_bytes()),
                ("Content-Type", b"text/plain"),
            ],
            Some(b"name=x"),
        )
        .await;
    not_json.assert_error(415, "unsupported_media_type");
    // Bodies are never decompressed: an encoded one is refused, naming its encoding, and
    // one that only claims an encoding is not read as if it had none.
    let post_encoded = |encoding: &'static str, body: &'static [u8]| {
        let app = &app;
        let headers = [
            headers[0],
            headers[1],
            ("Content-Encoding", encoding.as_bytes()),
        ];
        async move {
            app.raw(
                &app.admin,
                "POST",
                "/admin/v1/workspaces",
                &headers,
                Some(body),
            )
            .await
        }
    };
    for (encoding, body) in [
        ("gzip", b"\x1f\x8b\x08\x00".as_slice()),
        ("br", br#"{"name":"br"}"#),
    ] {
        let encoded = post_encoded(encoding, body).await;
        encoded.assert_error(415, "unsupported_media_type");
        let message = encoded.body["message"].as_str().unwrap();
        assert!(message.contains(encoding), "{message}");
    }
    let identity = post_encoded("identity", br#"{"name":"plain"}"#).await;
    assert_eq!(identity.status.as_u16(), 201, "{}", identity.body);
    let wrong_method = app
        .raw(
            &app.admin,
            "PUT",
            "/admin/v1/workspaces",
            &[("Authorization", auth.as_bytes())],
            None,
        )
        .await;
    assert!(wrong_method.status.is_client_error());
    assert!(wrong_method.body["error"].is_string());
}

#[actix_web::test]
async fn keys_are_shown_once_and_listed_by_hint() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let created = app
        .create_key_raw(&ws, json!({ "label": "deploy-pipeline-prod", "scopes": ["checks:write", "checks:read", "checks:write"] }))
        .await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.body);
    let key = created.body["key"].as_str().unwrap();
    assert!(
        key.starts_with("sp_live_"),
        "live is the default environment"
    );
    assert_eq!(created.body["environment"], "live");
    assert_eq!(
        created.body["scopes"],
        json!(["checks:read", "checks:write"])
    );
    assert_eq!(created.body["status"], "active");
    let hint = created.body["key_hint"].as_str().unwrap();
    assert_eq!(hint, format!("sp_live_...{}", &key[key.len() - 4..]));
    let created_at =
        chrono::DateTime::parse_from_rfc3339(created.body["created_at"].as_str().unwrap()).unwrap();
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(created.body["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires_at - created_at).num_days(), 365);

    let id = created.body["id"].as_str().unwrap();
    let listed = app
        .admin_call("GET", &format!("/admin/v1/workspaces/{ws}/api-keys"), None)
        .await;
    assert_eq!(listed.status.as_u16(), 200);
    assert_eq!(listed.body["data"][0]["id"], id);
    assert_eq!(listed.body["data"][0]["key_hint"], hint);
    assert!(
        !listed.body.to_string().contains(key),
        "a listing never shows the key"
    );
    let one = app
        .admin_call(
            "GET",
            &format!("/admin/v1/workspaces/{ws}/api-keys/{id}"),
            None,
        )
        .await;
    assert_eq!(one.status.as_u16(), 200);
    assert!(one.body.get("key").is_none());
    let test_key = app
        .create_key(&ws, "sandbox", "test", &["checks:read"])
        .await
        .1;
    assert!(test_key.starts_with("sp_test_"));
}

#[actix_web::test]
async fn key_creation_validates_every_field() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let bad = |body| app.create_key_raw(&ws, body);
    let unknown_scope =
        bad(json!({ "label": "a", "scopes": ["checks:read", "billing:write"] })).await;
    unknown_scope.assert_error(422, "invalid_scopes");
    assert!(unknown_scope.body["message"]
        .as_str()
        .unwrap()
        .contains("billing:write"));
    bad(json!({ "label": "a", "scopes": [] }))
        .await
        .assert_error(422, "invalid_scopes");
    bad(json!({ "label": "a", "scopes": "checks:read" }))
        .await
        .assert_error(400, "invalid_body");
    bad(json!({ "label": "", "scopes": ["checks:read"] }))
        .await
        .assert_error(422, "invalid_label");
    bad(json!({ "label": "   ", "scopes": ["checks:read"] }))
        .await
        .assert_error(422, "invalid_label");
    bad(json!({ "label": "x".repeat(101), "scopes": ["checks:read"] }))
        .await
        .assert_error(422, "invalid_label");
    bad(json!({ "label": "a", "environment": "prod", "scopes": ["checks:read"] }))
        .await
        .assert_error(422, "invalid_environment");
    bad(json!({ "scopes": ["checks:read"] }))
        .await
        .assert_error(400, "invalid_body");
    let unknown_ws = app
        .create_key_raw(
            "ws_0193aaaaaaaa7aaa8aaaaaaaaaaaaaaa",
            json!({ "label": "a", "scopes": ["checks:read"] }),
        )
        .await;
    unknown_ws.assert_error(404, "workspace_not_found");
    let missing_key = app
        .admin_call(
            "GET",
            &format!("/admin/v1/workspaces/{ws}/api-keys/key_nope"),
            None,
        )
        .await;
    missing_key.assert_error(404, "api_key_not_found");
}

#[actix_web::test]
async fn key_listings_come_a_page_at_a_time() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let mut ids = Vec::new();
    for scope in ["checks:read", "incidents:read", "teams:read"] {
        ids.push(app.create_key(&ws, scope, "live", &[scope]).await.0);
    }
    let list = |query: String| {
        let path = format!("/admin/v1/workspaces/{ws}/api-keys{query}");
        let app = &app;
        async move { app.admin_call("GET", &path, None).await }
    };
    let first = list("?limit=2".into()).await;
    assert_eq!(first.status.as_u16(), 200, "{}", first.body);
    let page_ids = |reply: &crate::helpers::Reply| -> Vec<String> {
        reply.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(page_ids(&first), ids[..2]);
    assert_eq!(first.body["has_more"], true);
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = list(format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(page_ids(&second), ids[2..]);
    assert_eq!(second.body["has_more"], false);
    assert!(second.body["next_cursor"].is_null());
    // Without parameters: every key (up to 100), oldest first.
    assert_eq!(page_ids(&list(String::new()).await), ids);
    list("?limit=0".into())
        .await
        .assert_error(400, "invalid_limit");
    list("?limit=101".into())
        .await
        .assert_error(400, "invalid_limit");
    list("?cursor=key_nope".into())
        .await
        .assert_error(400, "invalid_cursor");
    list("?page=2".into())
        .await
        .assert_error(400, "invalid_query");
}

#[actix_web::test]
async fn at_most_two_active_keys_per_environment_and_scope_set() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (first, _) = app
        .create_key(&ws, "a", "live", &["checks:read", "incidents:read"])
        .await;
    app.create_key(&ws, "b", "live", &["incidents:read", "checks:read"])
        .await;
    let third = app
        .create_key_raw(
            &ws,
            json!({ "label": "c", "scopes": ["checks:read", "incidents:read"] }),
        )
        .await;
    third.assert_error(409, "too_many_active_keys");
    // Scope sets are compared by what they grant: naming a write scope's implied read
    // scope, or leaving one out, is the same set.
    app.create_key(&ws, "w1", "live", &["checks:write"]).await;
    app.create_key(&ws, "w2", "live", &["checks:read", "checks:write"])
        .await;
    app.create_key_raw(&ws, json!({ "label": "w3", "scopes": ["checks:write"] }))
        .await
        .assert_error(409, "too_many_active_keys");
    // Another scope set or environment is another group.
    app.create_key(&ws, "c", "live", &["checks:read"]).await;
    app.create_key(&ws, "c", "test", &["checks:read", "incidents:read"])
        .await;
    // Revoking one frees its place.
    assert_eq!(app.revoke_key(&ws, &first).await.status.as_u16(), 200);
    app.create_key(&ws, "d", "live", &["checks:read", "incidents:read"])
        .await;
}

#[actix_web::test]
async fn concurrent_creations_cannot_exceed_two_active_keys() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let attempts = (0..6).map(|i| {
        app.create_key_raw(
            &ws,
            json!({ "label": format!("k{i}"), "scopes": ["webhooks:read"] }),
        )
    });
    let replies = futures_util::future::join_all(attempts).await;
    let created = replies.iter().filter(|r| r.status.as_u16() == 201).count();
    let refused = replies.iter().filter(|r| r.status.as_u16() == 409).count();
    assert_eq!((created, refused), (2, 4));
}

#[actix_web::test]
async fn users_and_members_with_roles() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let create_user = |email: &str, password: &str, name: &str| {
        app.admin_call(
            "POST",
            "/admin/v1/users",
            Some(json!({ "email": email, "password": password, "name": name })),
        )
    };
    let user = create_user("ada@example.com", "correct horse battery", "Ada").await;
    assert_eq!(user.status.as_u16(), 201, "{}", user.body);
    assert!(user.body.get("password").is_none() && user.body.get("password_hash").is_none());
    let user_id = user.body["id"].as_str().unwrap();
    let duplicate = create_user("ADA@example.com", "another password", "Ada").await;
    duplicate.assert_error(409, "email_taken");
    // Case beyond ASCII, the same on both stores: the Kelvin sign is a K, Ä an ä.
    let umlaut = create_user("Ärger@BÜRO.de", "correct horse battery", "Ä").await;
    assert_eq!(umlaut.status.as_u16(), 201, "{}", umlaut.body);
    assert_eq!(
        umlaut.body["email"], "ärger@büro.de",
        "stored in lower case"
    );
    create_user("ärger@büro.de", "another password", "Ä")
        .await
        .assert_error(409, "email_taken");
    let kelvin = create_user("\u{212A}im@example.com", "correct horse battery", "Kim").await;
    assert_eq!(kelvin.status.as_u16(), 201, "{}", kelvin.body);
    create_user("kim@example.com", "another password", "Kim")
        .await
        .assert_error(409, "email_taken");
    // A word-final capital sigma is a σ like any other, as Go's (and Kratos's) lower case.
    let sigma = create_user("ΣΑΣ@example.gr", "correct horse battery", "Σ").await;
    assert_eq!(sigma.status.as_u16(), 201, "{}", sigma.body);
    assert_eq!(sigma.body["email"], "σασ@example.gr");
    create_user("σασ@example.gr", "another password", "Σ")
        .await
        .assert_error(409, "email_taken");
    let short = create_user("bob@example.com", "short", "Bob").await;
    short.assert_error(422, "invalid_password");
    for password in ["pass\u{0}word12", "          "] {
        let refused = create_user("bob@example.com", password, "Bob").await;
        refused.assert_error(422, "invalid_password");
    }
    let spaced = create_user("cy@example.com", " two words ", "Cy").await;
    assert_eq!(spaced.status.as_u16(), 201, "{}", spaced.body);
    let (_, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    let key_as_email = create_user(&format!("{key}@example.com"), "long enough pw", "Bob").await;
    key_as_email.assert_error(422, "invalid_email");
    assert!(!key_as_email
        .body
        .to_string()
        .contains(&key["sp_live_".len()..]));
    let message = key_as_email.body["message"].as_str().unwrap();
    assert!(message.contains("must not hold an API key"), "{message}");
    let bad_email = create_user("bob", "long enough pw", "Bob").await;
    bad_email.assert_error(422, "invalid_email");

    let members = format!("/admin/v1/workspaces/{ws}/members");
    let member = app
        .admin_call(
            "POST",
            &members,
            Some(json!({ "user_id": user_id, "role": "viewer" })),
        )
        .await;
    assert_eq!(member.status.as_u16(), 201, "{}", member.body);
    assert_eq!(member.body["role"], "viewer");
    let scopes = member.body["scopes"].as_array().unwrap();
    assert!(!scopes.contains(&json!("billing:read")) && scopes.contains(&json!("checks:read")));
    app.admin_call(
        "POST",
        &members,
        Some(json!({ "user_id": user_id, "role": "admin" })),
    )
    .await
    .assert_error(409, "already_member");
    app.admin_call(
        "POST",
        &members,
        Some(json!({ "user_id": user_id, "role": "superuser" })),
    )
    .await
    .assert_error(422, "invalid_role");
    app.admin_call(
        "POST",
        &members,
        Some(json!({ "user_id": "usr_0193aaaaaaaa7aaa8aaaaaaaaaaaaaaa", "role": "owner" })),
    )
    .await
    .assert_error(404, "user_not_found");
}

/// The optional rotate body follows the rules of every JSON body; a mistyped audit-log filter
/// is an error, not a silently ignored parameter.
#[actix_web::test]
async fn optional_bodies_and_query_filters_are_checked_like_the_rest() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (id, _) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let rotate = format!("/admin/v1/workspaces/{ws}/api-keys/{id}/rotate");
    let admin = app.admin.clone();
    let post = |content_type: &'static [u8], body: Vec<u8>| {
        let (app, admin, rotate, auth) = (&app, &admin, &rotate, &auth);
        async move {
            app.raw(
                admin,
                "POST",
                rotate,
                &[
                    ("Authorization", auth.as_bytes()),
                    ("Content-Type", content_type),
                ],
                Some(body.leak()),
            )
            .await
        }
    };
    post(b"text/plain", br#"{"grace_seconds":5}"#.to_vec())
        .await
        .assert_error(415, "unsupported_media_type");
    let huge = format!(r#"{{"grace_seconds":5{}}}"#, " ".repeat(100_000)).into_bytes();
    post(b"application/json", huge)
        .await
        .assert_error(413, "body_too_large");
    app.audit_log(&ws, "?key_lable=ci")
        .await
        .assert_error(400, "invalid_query");
}

#[actix_web::test]
async fn a_body_that_stops_arriving_gets_a_json_408() {
    let app = spawn_app().await;
    // Declares 100 bytes and sends 12, and then nothing: after 10 s the server gives up.
    let request = format!(
        "POST /admin/v1/workspaces HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\":\"x\"}}"
    );
    app.raw_bytes(&app.admin, request.as_bytes())
        .await
        .assert_error(408, "request_timeout");
}

#[actix_web::test]
async fn times_have_three_decimals_even_on_a_whole_second() {
    use chrono::{DurationRound, TimeDelta, Utc};

    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    // A fraction of zero, which chrono's own form leaves out.
    let created_at = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let (id, secret) = app.insert_key_created_at(&ws, "whole", created_at).await;
    let listed = app
        .admin_call(
            "GET",
            &format!("/admin/v1/workspaces/{ws}/api-keys/{id}"),
            None,
        )
        .await;
    let me = app.me(&secret).await;
    for time in [
        &listed.body["created_at"],
        &listed.body["expires_at"],
        &me.body["expires_at"],
    ] {
        let time = time.as_str().unwrap();
        assert!(
            time.ends_with(":00.000Z") || time.ends_with(".000Z"),
            "{time}"
        );
        assert_eq!(time.len(), "2026-12-01T01:32:52.000Z".len(), "{time}");
    }
}

#[actix_web::test]
async fn a_method_an_admin_path_does_not_answer_gets_405_with_allow() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let keys = format!("/admin/v1/workspaces/{ws}/api-keys");
    for (method, path, allow) in [
        ("GET", "/admin/v1/workspaces".to_owned(), "POST"),
        ("PUT", format!("/admin/v1/workspaces/{ws}"), "GET, HEAD"),
        ("PATCH", keys.clone(), "GET, HEAD, POST"),
        ("POST", format!("{keys}/key_1"), "GET, HEAD, DELETE"),
        ("GET", format!("{keys}/key_1/rotate"), "POST"),
        (
            "DELETE",
            format!("/admin/v1/workspaces/{ws}/audit-log"),
            "GET, HEAD",
        ),
        ("POST", "/metrics".to_owned(), "GET, HEAD"),
    ] {
        let reply = app.admin_call(method, &path, None).await;
        reply.assert_error(405, "method_not_allowed");
        assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
    }
    // The admin token is checked first: without it, nothing says which methods exist.
    let admin = app.admin.clone();
    app.raw(&admin, "GET", "/admin/v1/workspaces", &[], None)
        .await
        .assert_error(401, "invalid_credentials");
}

/// An operation that takes no query parameters refuses them rather than ignoring them (a
/// `?dry_run=1` must not create, a `?force=1` must not revoke), and does nothing.
#[actix_web::test]
async fn operations_without_query_parameters_refuse_them_and_change_nothing() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (key_id, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    let keys = format!("/admin/v1/workspaces/{ws}/api-keys");
    let one_key = format!("{keys}/{key_id}");
    let dry_user =
        json!({ "email": "dry@example.com", "password": "correct horse battery", "name": "Dry" });
    let calls = [
        (
            "POST",
            "/admin/v1/workspaces".to_owned(),
            Some(json!({ "name": "Dry" })),
        ),
        ("GET", format!("/admin/v1/workspaces/{ws}"), None),
        (
            "POST",
            keys.clone(),
            Some(json!({ "label": "dry", "scopes": ["checks:read"] })),
        ),
        ("GET", one_key.clone(), None),
        ("DELETE", one_key.clone(), None),
        ("POST", format!("{one_key}/rotate"), None),
        ("POST", "/admin/v1/users".to_owned(), Some(dry_user.clone())),
    ];
    for (method, path, body) in calls {
        let reply = app
            .admin_call(method, &format!("{path}?dry_run=1"), body)
            .await;
        reply.assert_error(400, "invalid_query");
        let message = reply.body["message"].as_str().unwrap();
        assert!(!message.contains("dry_run"), "{method} {path}: {message}");
    }
    // Nothing was made or changed: one workspace's one key, still active and answering.
    let listed = app.admin_call("GET", &keys, None).await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["data"][0]["status"], "active");
    assert_eq!(app.me(&key).await.status.as_u16(), 200);
    let user = app
        .admin_call("POST", "/admin/v1/users", Some(dry_user))
        .await;
    assert_eq!(user.status.as_u16(), 201, "the refused call made the user");
    let member = app
        .admin_call(
            "POST",
            &format!("/admin/v1/workspaces/{ws}/members?role=owner"),
            Some(json!({ "user_id": user.body["id"], "role": "admin" })),
        )
        .await;
    member.assert_error(400, "invalid_query");
    // An empty query string is no parameter at all.
    let plain = app.admin_call("GET", &format!("{one_key}?"), None).await;
    assert_eq!(plain.status.as_u16(), 200, "{}", plain.body);
}
