//! TLS to PostgreSQL as the URL's `sslmode` and `sslrootcert` ask, seen from the server's
//! side (`pg_stat_ssl`). Needs a server with `ssl = on` and a certificate for `localhost`,
//! as Debian's PostgreSQL has out of the box (its "snakeoil" certificate).

use statuspulse_auth::error_chain::error_chain;
use statuspulse_auth::store::deadline::Deadlines;
use statuspulse_auth::store::postgres::PostgresStore;
use statuspulse_auth::store::Store;

use crate::helpers::postgres_admin_query;

/// The test server's user, password, port and database, at another host and with a query.
pub fn server_url(host: &str, query: &str) -> String {
    let url =
        std::env::var("STATUSPULSE_TEST_DATABASE_URL").expect("STATUSPULSE_TEST_DATABASE_URL");
    let config: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    let user = config.get_user().expect("a user in the URL");
    let password = config
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}{password}@{host}:{port}/{database}?{query}")
}

/// The server's own certificate file, after checking that it speaks TLS at all.
async fn server_certificate() -> String {
    let ssl = postgres_admin_query("SHOW ssl").await;
    assert_eq!(
        ssl, "on",
        "these tests need a PostgreSQL server with ssl = on (Debian's default)"
    );
    postgres_admin_query("SHOW ssl_cert_file").await
}

/// Opens a store on `url` (tagged with a fresh application name) and reports whether the
/// server sees its connection encrypted, or why it could not connect.
async fn connect(host: &str, query: &str) -> Result<bool, String> {
    let tag = format!("statuspulse-tls-{}", uuid::Uuid::now_v7().simple());
    let url = server_url(host, &format!("application_name={tag}&{query}"));
    let store =
        PostgresStore::connect(&url, 1, Deadlines::default()).map_err(|e| error_chain(&e))?;
    store.ping().await.map_err(|e| error_chain(&e))?;
    // The pool keeps the connection open, so the server still lists it.
    let encrypted = postgres_admin_query(&format!(
        "SELECT s.ssl::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.application_name = '{tag}'"
    ))
    .await;
    Ok(encrypted == "true")
}

#[actix_web::test]
#[ignore = "needs PostgreSQL: set STATUSPULSE_TEST_DATABASE_URL and pass --include-ignored (.ci/run does)"]
async fn sslmode_decides_whether_the_connection_is_encrypted() {
    server_certificate().await;
    assert_eq!(connect("127.0.0.1", "sslmode=disable").await, Ok(false));
    assert_eq!(connect("127.0.0.1", "sslmode=require").await, Ok(true));
    // libpq's default: encrypted when the server offers it, as this one does.
    assert_eq!(connect("127.0.0.1", "").await, Ok(true));
}

#[actix_web::test]
#[ignore = "needs PostgreSQL: set STATUSPULSE_TEST_DATABASE_URL and pass --include-ignored (.ci/run does)"]
async fn verify_full_checks_the_chain_and_the_name_verify_ca_only_the_chain() {
    let certificate = server_certificate().await;
    let root = format!("sslrootcert={certificate}");
    // The certificate names localhost, not the address.
    assert_eq!(
        connect("localhost", &format!("sslmode=verify-full&{root}")).await,
        Ok(true)
    );
    assert_eq!(
        connect("127.0.0.1", &format!("sslmode=verify-ca&{root}")).await,
        Ok(true)
    );
    let wrong_name = connect("127.0.0.1", &format!("sslmode=verify-full&{root}"))
        .await
        .unwrap_err();
    assert!(
        wrong_name.contains("certificate not valid for name"),
        "{wrong_name}"
    );
}

#[actix_web::test]
#[ignore = "needs PostgreSQL: set STATUSPULSE_TEST_DATABASE_URL and pass --include-ignored (.ci/run does)"]
async fn a_certificate_from_an_untrusted_root_is_refused() {
    server_certificate().await;
    // A root that did not sign the server's certificate.
    let dir = std::env::temp_dir().join(format!("statuspulse-tls-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let other = dir.join("other-root.pem");
    std::fs::write(&other, OTHER_ROOT).unwrap();
    for mode in ["verify-ca", "require"] {
        let refused = connect(
            "localhost",
            &format!("sslmode={mode}&sslrootcert={}", other.display()),
        )
        .await
        .unwrap_err();
        assert!(
            refused.contains("invalid peer certificate"),
            "{mode}: {refused}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A self-signed certificate made for this test alone (`openssl req -x509 -newkey ec
/// -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=statuspulse-test-root -days 36500`),
/// whose key was thrown away: it can sign nothing the server shows.
const OTHER_ROOT: &str = "-----BEGIN CERTIFICATE-----
MIIBlzCCAT2gAwIBAgIUZr23llLkgaG4E9XCDicfWRK7jRUwCgYIKoZIzj0EAwIw
IDEeMBwGA1UEAwwVc3RhdHVzcHVsc2UtdGVzdC1yb290MCAXDTI2MTIwMTA0MDU0
NFoYDzIxMjYxMTA3MDQwNTQ0WjAgMR4wHAYDVQQDDBVzdGF0dXNwdWxzZS10ZXN0
LXJvb3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASawtZt+kIRZcOb3qJ9vKr3
fVw7/Kbzcl9iuLzx4ptGkkO3eyKO7eEXasNA3FmigwPmbtb46UTPlWHb9V6EXo38
o1MwUTAdBgNVHQ4EFgQUxqm4M4uJW3aTkj7PcX3CByQBu1IwHwYDVR0jBBgwFoAU
xqm4M4uJW3aTkj7PcX3CByQBu1IwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQD
AgNIADBFAiAMYjRqvSrn/wNkfLD+dfLnq3BPVHNX6cZPlfd4GXl4+gIhAPa8Z+9I
o9CDs1FjRQeYQ8hZLQ/4/FjqTV80sVBlF9df
-----END CERTIFICATE-----
";
