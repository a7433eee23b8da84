//! `spawn_app()` and a `TestApp` with one method per endpoint.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix_web::rt::task::JoinHandle;
use awc::http::StatusCode;
use secrecy::SecretString;
use serde_json::{json, Value};
use statuspulse_auth::actors::CacheSettings;
use statuspulse_auth::config::{ConfigError, LogFormat, Settings};
use statuspulse_auth::domain::hashing::KeyHasher;
use statuspulse_auth::startup::{Application, ApplicationHandle};
use statuspulse_auth::store::SharedStore;
use tracing_subscriber::EnvFilter;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// A fixed hashing key, so tests can compute key hashes to seed storage directly.
pub const HASHING_KEY_HEX: &str =
    "8f3c1d2e4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// Every log line any test server writes, to check that no secret reaches the logs.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufferWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let buffer = log_buffer().clone();
        // Debug level, so that the no-secrets check covers more than the default output.
        statuspulse_auth::telemetry::init(
            LogFormat::Text,
            false,
            EnvFilter::new("debug,actix_server=warn,actix_http=info,tokio_postgres=info"),
            move || BufferWriter(buffer.clone()),
        );
    });
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub public: String,
    pub admin: String,
    pub backend: Backend,
    pub store: SharedStore,
    pub data_dir: PathBuf,
    /// The PostgreSQL database of this test, when on PostgreSQL.
    pub database_name: Option<String>,
    pub hasher: KeyHasher,
    client: awc::Client,
    handle: ApplicationHandle,
    server: Option<JoinHandle<std::io::Result<()>>>,
    /// What the app was built with, to build it again on the same storage (`restart`).
    settings: Settings,
    cache: CacheSettings,
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HashMap<String, String>,
    pub body: Value,
    /// What followed the response on the connection (`raw_bytes` only).
    pub rest: Option<String>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn error_code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("<no error code>")
    }

    /// Checks the contract's error shape: JSON code, message, the request id, `X-Error`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.error_code(), code, "body: {}", self.body);
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        assert_eq!(
            self.body["request_id"].as_str(),
            self.header("x-request-id"),
            "{}",
            self.body
        );
        assert_eq!(self.header("x-error"), Some(code));
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with_cache(CacheSettings::default()).await
}

pub async fn spawn_app_with_cache(cache: CacheSettings) -> TestApp {
    spawn_app_with(cache, |_| {}).await
}

/// An app whose settings `adjust` changed from the tests' own.
pub async fn spawn_app_with(cache: CacheSettings, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    init_logs();
    let data_dir = std::env::temp_dir().join(format!("statuspulse-test-{}", uuid::Uuid::now_v7()));
    let mut settings = Settings::for_tests(data_dir.clone(), ADMIN_TOKEN);
    settings.hashing_key = Some(SecretString::from(HASHING_KEY_HEX.to_owned()));
    adjust(&mut settings);
    let mut database_name = None;
    let backend = match std::env::var("STATUSPULSE_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let name = format!("statuspulse_test_{}", uuid::Uuid::now_v7().simple());
            create_database(&url, &name).await;
            settings.database_url = Some(SecretString::from(with_database(&url, &name)));
            database_name = Some(name);
            Backend::Postgres
        }
        _ => Backend::Sqlite,
    };
    let running = Running::start(settings.clone(), cache.clone()).await;
    let hasher = KeyHasher::new(statuspulse_auth::config::decode_hex_32(HASHING_KEY_HEX).unwrap());
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    TestApp {
        public: running.public,
        admin: running.admin,
        backend,
        store: running.store,
        data_dir,
        database_name,
        hasher,
        client,
        handle: running.handle,
        server: Some(running.server),
        settings,
        cache,
    }
}

/// An app built and serving.
struct Running {
    public: String,
    admin: String,
    store: SharedStore,
    handle: ApplicationHandle,
    server: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(settings: Settings, cache: CacheSettings) -> Running {
        let app = Application::build_with_cache(settings, cache)
            .await
            .expect("the app builds");
        Running {
            public: format!("http://127.0.0.1:{}", app.public_port()),
            admin: format!("http://127.0.0.1:{}", app.admin_port()),
            handle: app.handle(),
            store: app.store.clone(),
            server: actix_web::rt::spawn(app.run_until_stopped()),
        }
    }
}

/// The admin URL of a PostgreSQL server with another database name.
fn with_database(url: &str, database: &str) -> String {
    let (base, _) = url
        .rsplit_once('/')
        .expect("a postgres URL with a database path");
    format!("{base}/{database}")
}

async fn create_database(url: &str, name: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL reachable");
    actix_web::rt::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
}

/// Runs SQL as the PostgreSQL superuser (to stage outages).
pub async fn postgres_admin(sql: &str) {
    postgres_admin_client()
        .await
        .batch_execute(sql)
        .await
        .expect("admin SQL");
}

/// The first column of the first row a query gives as the PostgreSQL superuser, as text;
/// empty when there is no row.
pub async fn postgres_admin_query(sql: &str) -> String {
    let messages = postgres_admin_client()
        .await
        .simple_query(sql)
        .await
        .expect("admin SQL");
    messages
        .iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or_default()),
            _ => None,
        })
        .unwrap_or_default()
        .to_owned()
}

async fn postgres_admin_client() -> tokio_postgres::Client {
    let url =
        std::env::var("STATUSPULSE_TEST_DATABASE_URL").expect("STATUSPULSE_TEST_DATABASE_URL");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL reachable");
    actix_web::rt::spawn(connection);
    client
}

impl TestApp {
    async fn read(
        mut response: awc::ClientResponse<
            impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>
                + Unpin,
        >,
    ) -> Reply {
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let bytes = response
            .body()
            .limit(16 * 1024 * 1024)
            .await
            .expect("read body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            body,
            rest: None,
        }
    }

    /// An admin call with the admin token.
    pub async fn admin_call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let request = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.admin))
            .insert_header(("Authorization", format!("Bearer {ADMIN_TOKEN}")));
        let response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        };
        Self::read(response.expect("admin request")).await
    }

    /// A raw request to either listener.
    pub async fn raw(
        &self,
        base: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: Option<&[u8]>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{base}{path}"));
        // Appended, so that a test can send a header twice.
        for (name, value) in headers {
            request = request.append_header((
                *name,
                awc::http::header::HeaderValue::from_bytes(value).unwrap(),
            ));
        }
        let response = match body {
            Some(body) => request.send_body(body.to_vec()).await,
            None => request.send().await,
        };
        Self::read(response.expect("request")).await
    }

    /// Bytes written straight to a listener's socket, for requests no HTTP client would
    /// send. The answer is read until the server closes the connection; the first response
    /// is parsed, and whatever follows it is kept as text in `rest`.
    pub async fn raw_bytes(&self, base: &str, request: &[u8]) -> Reply {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        tokio::time::timeout(std::time::Duration::from_secs(30), read)
            .await
            .expect("the server closes the connection")
            .expect("read");
        let answer = String::from_utf8(answer).expect("UTF-8 answer");
        let (head, after_head) = answer.split_once("\r\n\r\n").expect("a whole head");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .unwrap();
        let headers = lines
            .filter_map(|line| line.split_once(": "))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
            .collect::<HashMap<_, _>>();
        let length: usize = headers["content-length"].parse().unwrap();
        let (body, rest) = after_head.split_at(length);
        Reply {
            status: StatusCode::from_bytes(status.as_bytes()).unwrap(),
            headers,
            body: serde_json::from_str(body).unwrap_or(Value::Null),
            rest: (!rest.is_empty()).then(|| rest.to_owned()),
        }
    }

    pub async fn create_workspace(&self, name: &str) -> String {
        let reply = self
            .admin_call(
                "POST",
                "/admin/v1/workspaces",
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(reply.status.as_u16(), 201, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    pub async fn create_key_raw(&self, workspace: &str, body: Value) -> Reply {
        self.admin_call(
            "POST",
            &format!("/admin/v1/workspaces/{workspace}/api-keys"),
            Some(body),
        )
        .await
    }

    /// Puts a live `checks:read` key created at `created_at` straight into storage (the API
    /// creates keys only now) and returns (key id, full key).
    pub async fn insert_key_created_at(
        &self,
        workspace: &str,
        label: &str,
        created_at: chrono::DateTime<chrono::Utc>,
    ) -> (String, String) {
        let (key, secret) = self.unstored_key(workspace, label, created_at);
        self.store
            .insert_api_key(&key, 2, chrono::Utc::now())
            .await
            .unwrap();
        (key.id, secret)
    }

    /// A live `checks:read` key created at `created_at`, for storage's own calls, and the
    /// full key.
    pub fn unstored_key(
        &self,
        workspace: &str,
        label: &str,
        created_at: chrono::DateTime<chrono::Utc>,
    ) -> (statuspulse_auth::store::NewApiKey, String) {
        use statuspulse_auth::domain::api_key::{generate_key, Environment};
        let generated = generate_key(Environment::Live, &mut rand::thread_rng(), |k| {
            self.hasher.hash(k)
        });
        let key = statuspulse_auth::store::NewApiKey {
            id: statuspulse_auth::domain::ids::new_id("key"),
            workspace_id: workspace.to_owned(),
            key_hash: generated.hash,
            key_hint: generated.hint.clone(),
            label: label.into(),
            environment: Environment::Live,
            scopes: statuspulse_auth::domain::scope::ScopeSet::parse(["checks:read"]).unwrap(),
            created_at,
            expires_at: statuspulse_auth::domain::key_record::expiry_for(created_at),
        };
        let secret = secrecy::ExposeSecret::expose_secret(&generated.secret).to_owned();
        (key, secret)
    }

    /// Creates a key and returns (key id, full key).
    pub async fn create_key(
        &self,
        workspace: &str,
        label: &str,
        environment: &str,
        scopes: &[&str],
    ) -> (String, String) {
        let reply = self
            .create_key_raw(
                workspace,
                json!({ "label": label, "environment": environment, "scopes": scopes }),
            )
            .await;
        assert_eq!(reply.status.as_u16(), 201, "{}", reply.body);
        (
            reply.body["id"].as_str().unwrap().to_owned(),
            reply.body["key"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn revoke_key(&self, workspace: &str, key_id: &str) -> Reply {
        self.admin_call(
            "DELETE",
            &format!("/admin/v1/workspaces/{workspace}/api-keys/{key_id}"),
            None,
        )
        .await
    }

    pub async fn rotate_key(&self, workspace: &str, key_id: &str, body: Option<Value>) -> Reply {
        self.admin_call(
            "POST",
            &format!("/admin/v1/workspaces/{workspace}/api-keys/{key_id}/rotate"),
            body,
        )
        .await
    }

    pub async fn me(&self, key: &str) -> Reply {
        let auth = format!("Bearer {key}");
        self.raw(
            &self.public.clone(),
            "GET",
            "/v1/me",
            &[("Authorization", auth.as_bytes())],
            None,
        )
        .await
    }

    pub async fn authz(&self, key: &str, method: &str, uri: &str) -> Reply {
        self.authz_with(key, method, uri, &[]).await
    }

    /// `/v1/authz` with more headers after the credential and the forwarded ones.
    pub async fn authz_with(
        &self,
        key: &str,
        method: &str,
        uri: &str,
        more: &[(&str, &[u8])],
    ) -> Reply {
        let auth = format!("Bearer {key}");
        let mut headers: Vec<(&str, &[u8])> = vec![
            ("Authorization", auth.as_bytes()),
            ("X-Forwarded-Method", method.as_bytes()),
            ("X-Forwarded-Uri", uri.as_bytes()),
        ];
        headers.extend_from_slice(more);
        self.raw(&self.public.clone(), "GET", "/v1/authz", &headers, None)
            .await
    }

    pub async fn audit_log(&self, workspace: &str, query: &str) -> Reply {
        self.admin_call(
            "GET",
            &format!("/admin/v1/workspaces/{workspace}/audit-log{query}"),
            None,
        )
        .await
    }

    /// Waits (bounded) until the workspace's audit log holds at least `count` events, and
    /// returns them newest first. Events are batched, so they appear shortly after requests.
    pub async fn wait_for_audit_events(&self, workspace: &str, count: usize) -> Vec<Value> {
        for _ in 0..200 {
            let reply = self.audit_log(workspace, "?limit=1000").await;
            assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
            let events = reply.body["data"].as_array().unwrap().clone();
            if events.len() >= count {
                return events;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {count} audit events arrived");
    }

    pub async fn metrics(&self) -> String {
        let reply = self
            .raw(&self.admin.clone(), "GET", "/metrics", &[], None)
            .await;
        assert_eq!(reply.status.as_u16(), 200);
        reply.body.as_str().unwrap_or_default().to_owned()
    }

    /// Runs SQL directly in this app's own database, beside the server (to stage a
    /// failure): `sqlite` on the embedded store, `postgres` on PostgreSQL.
    pub async fn execute_in_database(&self, sqlite: &str, postgres: &str) {
        match self.backend {
            Backend::Sqlite => {
                let conn =
                    rusqlite::Connection::open(self.data_dir.join("statuspulse.db")).unwrap();
                conn.execute_batch(sqlite).expect("SQLite SQL");
            }
            Backend::Postgres => self
                .postgres_session()
                .await
                .batch_execute(postgres)
                .await
                .expect("PostgreSQL SQL"),
        }
    }

    /// A connection of its own to this app's PostgreSQL database, beside the server's.
    pub async fn postgres_session(&self) -> tokio_postgres::Client {
        let url = std::env::var("STATUSPULSE_TEST_DATABASE_URL").unwrap();
        let database = self.database_name.as_ref().expect("a PostgreSQL app");
        let (client, connection) =
            tokio_postgres::connect(&with_database(&url, database), tokio_postgres::NoTls)
                .await
                .expect("PostgreSQL reachable");
        actix_web::rt::spawn(connection);
        client
    }

    /// Stages a storage outage: the test's PostgreSQL database refuses new connections and
    /// its open ones are killed. Only PostgreSQL can stage one: on SQLite the test fails.
    pub async fn cut_off_database(&self) {
        let database = self.outage_database();
        postgres_admin(&format!(
            "ALTER DATABASE {database} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}';"
        ))
        .await;
    }

    /// Ends an outage staged by `cut_off_database`.
    pub async fn restore_database(&self) {
        let database = self.outage_database();
        postgres_admin(&format!(
            "ALTER DATABASE {database} ALLOW_CONNECTIONS true;"
        ))
        .await;
    }

    fn outage_database(&self) -> &str {
        assert_eq!(
            self.backend,
            Backend::Postgres,
            "this test stages a PostgreSQL outage"
        );
        self.database_name
            .as_deref()
            .expect("a PostgreSQL test database")
    }

    /// Stops the server gracefully and waits until it has flushed everything.
    pub async fn stop(&mut self) {
        self.handle.stop(true).await;
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server result");
        }
    }

    /// Builds another server on the same storage with `adjust`ed settings, as a second
    /// instance or a misconfigured deploy would, and gives back why it would not start.
    pub async fn build_another_with(
        &self,
        adjust: impl FnOnce(&mut Settings),
    ) -> Result<(), ConfigError> {
        let mut settings = self.settings.clone();
        adjust(&mut settings);
        Application::build_with_cache(settings, self.cache.clone())
            .await
            .map(drop)
    }

    /// Stops the server gracefully, then starts a new one on the same storage (on new
    /// ports), as a deploy would.
    pub async fn restart(&mut self) {
        self.stop().await;
        let running = Running::start(self.settings.clone(), self.cache.clone()).await;
        self.public = running.public;
        self.admin = running.admin;
        self.store = running.store;
        self.handle = running.handle;
        self.server = Some(running.server);
    }
}

/// The value of a metric line, e.g. `statuspulse_workspace_actors`.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}
