//! Audit events: one per credentialed request, filterable, paginated, never lost at shutdown.

use serde_json::Value;
use statuspulse_auth::domain::audit::AuditQuery;
use statuspulse_auth::queue::dead_letters::DeadLetters;

use crate::helpers::{metric, spawn_app};

#[actix_web::test]
async fn every_credentialed_request_yields_one_event_with_the_contract_fields() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (key_id, key) = app
        .create_key(&ws, "deploy", "live", &["checks:read"])
        .await;
    let ok = app
        .authz_with(
            &key,
            "GET",
            "/v1/checks/chk_9?page=2",
            &[
                ("X-Request-ID", b"trace-abc-123"),
                ("X-Forwarded-For", b"203.0.113.9, 10.0.0.1"),
            ],
        )
        .await;
    assert_eq!(ok.status.as_u16(), 200);
    assert_eq!(
        ok.header("x-request-id"),
        Some("trace-abc-123"),
        "a sane caller id is kept"
    );
    app.authz(&key, "POST", "/v1/checks")
        .await
        .assert_error(403, "insufficient_scope");
    app.me(&key).await;

    let events = app.wait_for_audit_events(&ws, 3).await;
    assert_eq!(events.len(), 3);
    let first = events
        .iter()
        .find(|e| e["request_id"] == "trace-abc-123")
        .expect("event by request id");
    assert_eq!(first["workspace_id"], ws.as_str());
    assert_eq!(first["credential_type"], "api_key");
    assert_eq!(first["credential_id"], key_id.as_str());
    assert_eq!(first["key_label"], "deploy");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/v1/checks/chk_9");
    assert_eq!(first["scope"], "checks:read");
    assert_eq!(first["status"], 200);
    assert_eq!(first["error_code"], Value::Null);
    assert_eq!(first["client_addr"], "203.0.113.9");
    let id = uuid::Uuid::parse_str(first["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert!(first["occurred_at"].is_string());
    let denied = events.iter().find(|e| e["status"] == 403).unwrap();
    assert_eq!(denied["error_code"], "insufficient_scope");
    assert_eq!(denied["scope"], "checks:write");
    let me = events.iter().find(|e| e["path"] == "/v1/me").unwrap();
    assert_eq!(me["scope"], Value::Null, "/v1/me consumes no scope");
}

#[actix_web::test]
async fn audit_log_filters_and_paginates() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (_, reader) = app
        .create_key(&ws, "reader", "live", &["checks:read"])
        .await;
    let (_, writer) = app
        .create_key(&ws, "writer", "live", &["incidents:write"])
        .await;
    for _ in 0..3 {
        app.authz(&reader, "GET", "/v1/checks").await;
    }
    for _ in 0..2 {
        app.authz(&writer, "POST", "/v1/incidents").await;
        app.authz(&writer, "GET", "/v1/incidents").await;
    }
    app.wait_for_audit_events(&ws, 7).await;

    let by_label = app.audit_log(&ws, "?key_label=reader").await;
    assert_eq!(by_label.body["data"].as_array().unwrap().len(), 3);
    let by_scope = app.audit_log(&ws, "?scope=incidents:read").await;
    assert_eq!(by_scope.body["data"].as_array().unwrap().len(), 2);
    let none = app.audit_log(&ws, "?app=Some%20App").await;
    assert_eq!(none.body["data"].as_array().unwrap().len(), 0);
    let future = app.audit_log(&ws, "?since=2999-01-01T00:00:00Z").await;
    assert_eq!(future.body["data"].as_array().unwrap().len(), 0);
    let past = app.audit_log(&ws, "?until=2000-01-01T00:00:00Z").await;
    assert_eq!(past.body["data"].as_array().unwrap().len(), 0);
    // Times before 1677 or after 2262 (outside nanoseconds in an i64) still compare.
    let long_ago = app.audit_log(&ws, "?since=1600-01-01T00:00:00Z").await;
    assert_eq!(long_ago.body["data"].as_array().unwrap().len(), 7);
    let far_off = app.audit_log(&ws, "?until=3000-01-01T00:00:00Z").await;
    assert_eq!(far_off.body["data"].as_array().unwrap().len(), 7);
    let before_then = app.audit_log(&ws, "?until=1600-01-01T00:00:00Z").await;
    assert_eq!(before_then.body["data"].as_array().unwrap().len(), 0);

    // Pages of 3, newest first, covering every event exactly once.
    let mut seen = Vec::new();
    let mut query = "?limit=3".to_owned();
    loop {
        let page = app.audit_log(&ws, &query).await;
        assert_eq!(page.status.as_u16(), 200, "{}", page.body);
        let data = page.body["data"].as_array().unwrap();
        seen.extend(data.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(page.body["has_more"], true);
                query = format!("?limit=3&cursor={cursor}");
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first, no duplicates");
    sorted.dedup();
    assert_eq!(sorted.len(), 7);

    app.audit_log(&ws, "?since=yesterday")
        .await
        .assert_error(400, "invalid_since");
    app.audit_log(&ws, "?until=1")
        .await
        .assert_error(400, "invalid_until");
    // An empty window is refused; an offset whose `+` was not encoded still reads as one.
    app.audit_log(
        &ws,
        "?since=2026-01-01T00:00:00Z&until=2026-01-01T00:00:00Z",
    )
    .await
    .assert_error(400, "invalid_until");
    let with_offset = app
        .audit_log(
            &ws,
            "?since=1970-01-01T02:00:00+02:00&until=3000-01-01T00:00:00Z",
        )
        .await;
    assert_eq!(with_offset.status.as_u16(), 200, "{}", with_offset.body);
    assert_eq!(with_offset.body["data"].as_array().unwrap().len(), 7);
    app.audit_log(&ws, "?limit=0")
        .await
        .assert_error(400, "invalid_limit");
    app.audit_log(&ws, "?limit=abc")
        .await
        .assert_error(400, "invalid_limit");
    app.audit_log(&ws, "?cursor=zzz")
        .await
        .assert_error(400, "invalid_cursor");
    app.audit_log(&ws, "?scope=root")
        .await
        .assert_error(400, "invalid_scope");
    // A write to /v1/billing requires billing:write, which no key can hold: its events
    // record that scope, and the filter finds them.
    app.authz(&writer, "POST", "/v1/billing").await;
    app.wait_for_audit_events(&ws, 8).await;
    let billing = app.audit_log(&ws, "?scope=billing:write").await;
    let billing = billing.body["data"].as_array().unwrap().clone();
    assert_eq!(billing.len(), 1, "{billing:?}");
    assert_eq!(billing[0]["error_code"], "insufficient_scope");
    // A NUL is refused by PostgreSQL in any text parameter: each filter names its problem on
    // both backends instead.
    for (query, code) in [
        ("?key_label=ci%00", "invalid_key_label"),
        ("?app=Grafana%0A", "invalid_app"),
        ("?request_id=%00", "invalid_request_id"),
    ] {
        app.audit_log(&ws, query).await.assert_error(400, code);
    }
    let long_label = format!("?key_label={}", "l".repeat(201));
    app.audit_log(&ws, &long_label)
        .await
        .assert_error(400, "invalid_key_label");
    app.audit_log("ws_0193aaaaaaaa7aaa8aaaaaaaaaaaaaaa", "")
        .await
        .assert_error(404, "workspace_not_found");
}

#[actix_web::test]
async fn graceful_shutdown_flushes_every_pending_audit_event() {
    let mut app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (_, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    let requests = (0..50).map(|_| app.authz(&key, "GET", "/v1/checks"));
    let replies = futures_util::future::join_all(requests).await;
    assert!(replies.iter().all(|r| r.status.as_u16() == 200));
    // Stop at once: most events are still in the batcher or the queue.
    app.stop().await;
    let query = AuditQuery {
        limit: 1_000,
        ..Default::default()
    };
    let stored = app.store.query_audit_events(&ws, &query).await.unwrap();
    assert_eq!(stored.len(), 50);
}

#[actix_web::test]
async fn a_batch_that_storage_refuses_for_good_is_set_aside_and_retried_at_the_next_start() {
    let mut app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (_, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    // Storage refuses every audit write, as a bug or a bad row would: not an outage.
    app.execute_in_database(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_batches
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
         CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events
           FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit();",
    )
    .await;
    for _ in 0..3 {
        assert_eq!(app.me(&key).await.status.as_u16(), 200);
    }
    let mut dead_lettered = 0.0;
    for _ in 0..200 {
        dead_lettered = metric(
            &app.metrics().await,
            "statuspulse_audit_events_dead_lettered_total",
        );
        if dead_lettered >= 3.0 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(dead_lettered, 3.0);
    let dead_letters = app.data_dir.join("dead-letters");
    // The batcher may have flushed between the requests, so the three events can be in one
    // job or in several: what matters is that the set-aside jobs hold all three.
    let kept = DeadLetters::open(&dead_letters).unwrap().all().unwrap();
    assert!(!kept.is_empty());
    let kept_events: u64 = kept.iter().map(|(_, job)| job.audit_events()).sum();
    assert_eq!(kept_events, 3);
    assert_eq!(
        metric(&app.metrics().await, "statuspulse_audit_events_pending"),
        0.0
    );

    // Once storage takes writes again, the queue is not stuck behind the refused batch...
    app.execute_in_database(
        "DROP TRIGGER refuse_audit;",
        "DROP TRIGGER refuse_audit ON audit_events;",
    )
    .await;
    app.me(&key).await;
    assert_eq!(app.wait_for_audit_events(&ws, 1).await.len(), 1);
    // ...and the next start brings the set-aside events into the audit log.
    app.restart().await;
    let events = app.wait_for_audit_events(&ws, 4).await;
    assert_eq!(events.len(), 4);
    for _ in 0..200 {
        if std::fs::read_dir(&dead_letters).unwrap().count() == 0 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read_dir(&dead_letters).unwrap().count(), 0);
    app.stop().await;
}

#[actix_web::test]
async fn a_credential_sent_to_no_route_or_a_health_probe_still_yields_its_event() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (key_id, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    let auth = format!("Bearer {key}");
    let public = app.public.clone();
    for (method, path, request_id) in [
        ("POST", "/v1/me", "no-route-1"),
        ("GET", "/v1/checks", "no-route-2"),
    ] {
        app.raw(
            &public,
            method,
            path,
            &[
                ("Authorization", auth.as_bytes()),
                ("X-Request-ID", request_id.as_bytes()),
            ],
            None,
        )
        .await
        .assert_error(404, "not_found");
    }
    // Health probes check no credential, but one that is presented is recorded.
    for (path, request_id) in [("/healthz", "probe-1"), ("/readyz", "probe-2")] {
        let reply = app
            .raw(
                &public,
                "GET",
                path,
                &[
                    ("Authorization", auth.as_bytes()),
                    ("X-Request-ID", request_id.as_bytes()),
                ],
                None,
            )
            .await;
        assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    }
    // Without a credential there is nothing to record, and no workspace to record it in.
    app.raw(&public, "GET", "/v1/checks", &[], None)
        .await
        .assert_error(404, "not_found");
    app.raw(&public, "GET", "/healthz", &[], None).await;
    let events = app.wait_for_audit_events(&ws, 4).await;
    assert_eq!(events.len(), 4);
    let probe = events
        .iter()
        .find(|e| e["request_id"] == "probe-2")
        .unwrap();
    assert_eq!(probe["path"], "/readyz");
    assert_eq!(probe["status"], 200);
    assert_eq!(probe["error_code"], Value::Null);
    assert!(events.iter().any(|e| e["request_id"] == "probe-1"));
    let event = events
        .iter()
        .find(|e| e["request_id"] == "no-route-1")
        .unwrap();
    assert_eq!(event["credential_id"], key_id.as_str());
    assert_eq!(event["method"], "POST");
    assert_eq!(event["path"], "/v1/me");
    assert_eq!(event["status"], 404);
    assert_eq!(event["error_code"], "not_found");
    assert_eq!(event["scope"], Value::Null);
}

/// A request refused for the size of its head, before any handler reads it, still yields
/// its event when it presents a key; it is not counted against the limit.
#[actix_web::test]
async fn an_oversized_request_that_presents_a_key_still_yields_its_event() {
    let app = spawn_app().await;
    let ws = app.create_workspace("Acme").await;
    let (key_id, key) = app.create_key(&ws, "ci", "live", &["checks:read"]).await;
    let auth = format!("Bearer {key}");
    let public = app.public.clone();
    let padding = vec![b'a'; 17 * 1024];
    app.raw(
        &public,
        "GET",
        "/v1/authz",
        &[
            ("Authorization", auth.as_bytes()),
            ("X-Request-ID", b"too-large-1"),
            ("X-Padding", &padding),
        ],
        None,
    )
    .await
    .assert_error(431, "headers_too_large");
    let long_uri = format!("/v1/me?q={}", "c".repeat(9 * 1024));
    app.raw(
        &public,
        "GET",
        &long_uri,
        &[
            ("Authorization", auth.as_bytes()),
            ("X-Request-ID", b"too-long-1"),
        ],
        None,
    )
    .await
    .assert_error(414, "uri_too_long");
    let events = app.wait_for_audit_events(&ws, 2).await;
    let event = |request_id: &str| {
        events
            .iter()
            .find(|e| e["request_id"] == request_id)
            .unwrap_or_else(|| panic!("an event for {request_id}: {events:?}"))
            .clone()
    };
    let headers = event("too-large-1");
    assert_eq!(headers["credential_id"], key_id.as_str());
    assert_eq!(headers["path"], "/v1/authz");
    assert_eq!(headers["status"], 431);
    assert_eq!(headers["error_code"], "headers_too_large");
    let uri = event("too-long-1");
    assert_eq!(uri["path"], "/v1/me", "the query is not audited");
    assert_eq!(uri["status"], 414);
    assert_eq!(uri["error_code"], "uri_too_long");
    assert_eq!(
        app.me(&key).await.header("ratelimit-remaining"),
        Some("1199"),
        "neither was counted"
    );
}
