//! Keys exist only in the creation answer: not in storage, not in logs, not in errors.

use crate::helpers::{captured_logs, spawn_app, Backend, ADMIN_TOKEN};

#[actix_web::test]
async fn created_keys_never_reach_storage_or_logs() {
    let mut app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (id, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    app.me(&key).await;
    app.authz(&key, "POST", "/v1/checks").await;
    let rotated = app.rotate_key(&ws, &id, None).await;
    let rotated_key = rotated.body["key"].as_str().unwrap().to_owned();
    app.me(&key).await;
    app.me(&rotated_key).await;
    app.stop().await;

    let random_part = |k: &str| k["sp_live_".len()..].to_owned();
    let secrets = [
        key.clone(),
        rotated_key.clone(),
        random_part(&key),
        random_part(&rotated_key),
    ];
    let logs = captured_logs();
    let created = logs
        .lines()
        .find(|line| line.contains("api key created"))
        .expect("the log capture works");
    // Every log line of a request carries its id.
    assert!(
        created.contains(" request_id="),
        "no request id in: {created}"
    );
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a key reached the logs");
    }
    match app.backend {
        Backend::Sqlite => {
            // Every file under the data dir: the database, its WAL, the secrets, and what is
            // left in the audit spool. The database's files are the owner's alone.
            let mut bytes = Vec::new();
            let mut dirs = vec![app.data_dir.clone()];
            while let Some(dir) = dirs.pop() {
                for entry in std::fs::read_dir(&dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else {
                        let name = path.file_name().unwrap().to_string_lossy().into_owned();
                        if name.starts_with("statuspulse.db") {
                            use std::os::unix::fs::PermissionsExt;
                            let mode = path.metadata().unwrap().permissions().mode();
                            assert_eq!(mode & 0o777, 0o600, "{name} is readable by others");
                        }
                        bytes.extend(std::fs::read(path).unwrap());
                    }
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.contains(&id), "the database files were read");
            for secret in &secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "a key reached the data directory"
                );
            }
        }
        Backend::Postgres => {
            let url = std::env::var("STATUSPULSE_TEST_DATABASE_URL").unwrap();
            let (base, _) = url.rsplit_once('/').unwrap();
            let (client, connection) = tokio_postgres::connect(
                &format!("{base}/{}", app.database_name.as_ref().unwrap()),
                tokio_postgres::NoTls,
            )
            .await
            .unwrap();
            actix_web::rt::spawn(connection);
            let mut dump = String::new();
            for table in [
                "workspaces",
                "api_keys",
                "users",
                "workspace_members",
                "audit_events",
            ] {
                for row in client
                    .query(&format!("SELECT row_to_json(t)::text FROM {table} t"), &[])
                    .await
                    .unwrap()
                {
                    dump.push_str(row.get::<_, &str>(0));
                }
            }
            assert!(dump.contains(&id), "the tables were read");
            for secret in &secrets {
                assert!(
                    !dump.contains(secret.as_str()),
                    "a key reached the database"
                );
            }
        }
    }
}

#[actix_web::test]
async fn a_key_sent_in_the_wrong_place_is_not_quoted_back() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (_, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    let as_scope = app
        .create_key_raw(&ws, serde_json::json!({ "label": "x", "scopes": [key] }))
        .await;
    as_scope.assert_error(422, "invalid_scopes");
    let as_field = app
        .create_key_raw(
            &ws,
            serde_json::json!({ "label": "x", "scopes": ["checks:read"], key.clone(): 1 }),
        )
        .await;
    as_field.assert_error(400, "invalid_body");
    let as_parameter = app.audit_log(&ws, &format!("?{key}=1")).await;
    as_parameter.assert_error(400, "invalid_query");
    for reply in [as_scope, as_field, as_parameter] {
        let message = reply.body["message"].as_str().unwrap();
        assert!(message.contains("sp_live_…"), "{message}");
        assert!(!message.contains(&key["sp_live_".len()..]), "{message}");
    }
    // Without its prefix, and the operator's admin token, which has no shape of its own.
    let body_as_scope = app
        .create_key_raw(
            &ws,
            serde_json::json!({ "label": "x", "scopes": [&key["sp_live_".len()..]] }),
        )
        .await;
    body_as_scope.assert_error(422, "invalid_scopes");
    let token_as_scope = app
        .create_key_raw(
            &ws,
            serde_json::json!({ "label": "x", "scopes": [ADMIN_TOKEN] }),
        )
        .await;
    token_as_scope.assert_error(422, "invalid_scopes");
    let token_as_field = app
        .admin_call(
            "POST",
            "/admin/v1/workspaces",
            Some(serde_json::json!({ "name": "x", ADMIN_TOKEN: 1 })),
        )
        .await;
    token_as_field.assert_error(400, "invalid_body");
    for reply in [body_as_scope, token_as_scope, token_as_field] {
        let message = reply.body["message"].as_str().unwrap();
        assert!(message.contains('…'), "{message}");
        assert!(!message.contains(&key["sp_live_".len()..]), "{message}");
        assert!(!message.contains(ADMIN_TOKEN), "{message}");
    }
}

/// Labels and names are stored and listed as written: a key pasted into one is refused, so
/// that it never sits at rest in plain text. A name that only starts like a key is a name.
#[actix_web::test]
async fn a_key_pasted_as_a_label_or_a_name_is_refused() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (_, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    let keys = format!("/admin/v1/workspaces/{ws}/api-keys");
    let as_label = app
        .create_key_raw(
            &ws,
            serde_json::json!({ "label": format!("ci {key}"), "scopes": ["checks:read"] }),
        )
        .await;
    as_label.assert_error(422, "invalid_label");
    let as_workspace = app
        .admin_call(
            "POST",
            "/admin/v1/workspaces",
            Some(serde_json::json!({ "name": key })),
        )
        .await;
    as_workspace.assert_error(422, "invalid_name");
    let as_user = app
        .admin_call(
            "POST",
            "/admin/v1/users",
            Some(serde_json::json!({
                "email": "ada@example.com", "password": "correct horse battery", "name": key
            })),
        )
        .await;
    as_user.assert_error(422, "invalid_name");
    // An admin token as `serve` generates them: the prefix and 60 hex digits.
    let admin_token = format!("sp_admin_{}", "0f".repeat(30));
    let as_name = app
        .admin_call(
            "POST",
            "/admin/v1/workspaces",
            Some(serde_json::json!({ "name": format!("ops {admin_token} copy") })),
        )
        .await;
    as_name.assert_error(422, "invalid_name");
    // This server's own admin token, set by the operator in any shape: found by its hash.
    let holds_this_admin_token = app
        .create_key_raw(
            &ws,
            serde_json::json!({
                "label": format!("token={ADMIN_TOKEN};"), "scopes": ["checks:read"]
            }),
        )
        .await;
    holds_this_admin_token.assert_error(422, "invalid_label");
    // The secret part alone is the key too: anyone can put the prefix back.
    let body_only = app
        .create_key_raw(
            &ws,
            serde_json::json!({ "label": &key["sp_live_".len()..], "scopes": ["checks:read"] }),
        )
        .await;
    body_only.assert_error(422, "invalid_label");
    for reply in [
        &as_label,
        &as_workspace,
        &as_user,
        &as_name,
        &holds_this_admin_token,
    ] {
        let message = reply.body["message"].as_str().unwrap();
        assert!(message.contains("must not hold an API key"), "{message}");
        assert!(!message.contains(&key["sp_live_".len()..]), "{message}");
        assert!(!message.contains(ADMIN_TOKEN), "{message}");
    }
    let listed = app.admin_call("GET", &keys, None).await;
    assert_eq!(
        listed.body["data"].as_array().unwrap().len(),
        1,
        "{}",
        listed.body
    );

    let named_like_a_key = app
        .create_key_raw(
            &ws,
            serde_json::json!({ "label": "sp_live_deploy", "scopes": ["checks:read"] }),
        )
        .await;
    assert_eq!(
        named_like_a_key.status.as_u16(),
        201,
        "{}",
        named_like_a_key.body
    );
}
