//! The PostgreSQL pool's connections, seen from the server's side (`pg_stat_activity`).

use std::sync::Arc;
use std::time::Duration;

use statuspulse_auth::store::deadline::Deadlines;
use statuspulse_auth::store::postgres::PostgresStore;
use statuspulse_auth::store::Store;

use crate::helpers::postgres_admin_query;
use crate::postgres_tls::server_url;

/// How many connections the server has with `application_name`.
async fn connections_tagged(tag: &str) -> String {
    postgres_admin_query(&format!(
        "SELECT count(*)::text FROM pg_stat_activity WHERE application_name = '{tag}'"
    ))
    .await
}

/// A connection first asked for on an HTTP worker's runtime outlives that runtime, which
/// ends when the server stops: the stop's last writes (the rate-limit counts, the audit
/// events still pending) run after it on the main runtime, over the same pool.
#[actix_web::test]
#[ignore = "needs PostgreSQL: set STATUSPULSE_TEST_DATABASE_URL and pass --include-ignored (.ci/run does)"]
async fn a_connection_outlives_the_runtime_that_asked_for_it() {
    let tag = format!("statuspulse-pool-{}", uuid::Uuid::now_v7().simple());
    let url = server_url(
        "127.0.0.1",
        &format!("application_name={tag}&sslmode=disable"),
    );
    let store = Arc::new(PostgresStore::connect(&url, 1, Deadlines::default()).unwrap());
    // A worker: a thread with a runtime of its own, which makes the pool's first (and only)
    // connection and then ends. Off this runtime's thread, which must stay free to run.
    let worker_store = Arc::clone(&store);
    tokio::task::spawn_blocking(move || {
        let worker = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        worker.block_on(worker_store.ping()).unwrap();
    })
    .await
    .unwrap();
    // A connection driven by the worker's runtime is closed by now, and the server sees its
    // socket close at once; give it time all the same.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        connections_tagged(&tag).await,
        "1",
        "the connection ended with the runtime that asked for it"
    );
    store.ping().await.unwrap();
    assert_eq!(connections_tagged(&tag).await, "1", "the same connection");
}
