//! The real binary as a child process: killed with SIGKILL right after answering, no
//! answered request's audit event may be lost, nor any count of its rate limit; stopped with SIGINT or SIGTERM, it finishes
//! the requests in flight. (The API suite runs the server in-process, where neither a crash
//! nor a signal can be staged.)

// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "crash-test-admin-token-0123456789abcdef";

struct Server {
    child: Child,
    public: SocketAddr,
    admin: SocketAddr,
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

fn start(data_dir: &Path, public: SocketAddr, admin: SocketAddr) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_statuspulse-auth"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("STATUSPULSE_DATA_DIR", data_dir)
        .env("STATUSPULSE_PUBLIC_ADDR", public.to_string())
        .env("STATUSPULSE_ADMIN_ADDR", admin.to_string())
        .env("STATUSPULSE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("STATUSPULSE_HTTP_WORKERS", "2")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start statuspulse-auth");
    let server = Server {
        child,
        public,
        admin,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(server.admin, "GET", "/healthz", None, None).map(|(s, _)| s) != Some(200) {
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// One HTTP/1.1 request on its own connection; `None` if the server cannot be reached.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = bearer
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let status = text.get(9..12)?.parse().ok()?;
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    Some((status, json))
}

fn admin(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call(server.admin, method, path, Some(ADMIN_TOKEN), body).expect("admin call")
}

#[test]
fn sigkill_right_after_answering_loses_no_audit_event() {
    let data_dir = std::env::temp_dir().join(format!("statuspulse-crash-{}", uuid::Uuid::now_v7()));
    let (public, admin_addr) = (free_port(), free_port());
    let mut server = start(&data_dir, public, admin_addr);

    let (status, workspace) = admin(
        &server,
        "POST",
        "/admin/v1/workspaces",
        Some(json!({ "name": "Crash" })),
    );
    assert_eq!(status, 201, "{workspace}");
    let ws = workspace["id"].as_str().unwrap().to_owned();
    let (status, key) = admin(
        &server,
        "POST",
        &format!("/admin/v1/workspaces/{ws}/api-keys"),
        Some(json!({ "label": "ci", "environment": "live", "scopes": ["checks:read"] })),
    );
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_owned();

    // Answered requests, then SIGKILL at once: the batcher (50 ms) has not run for the last
    // of them, so without the spool their events would be gone.
    const REQUESTS: usize = 150;
    for _ in 0..REQUESTS {
        let (status, _) = call(server.public, "GET", "/v1/me", Some(&key), None).unwrap();
        assert_eq!(status, 200);
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    let mut server = start(&data_dir, public, admin_addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    let stored = loop {
        let (status, page) = admin(
            &server,
            "GET",
            &format!("/admin/v1/workspaces/{ws}/audit-log?limit=1000"),
            None,
        );
        assert_eq!(status, 200, "{page}");
        let stored = page["data"].as_array().unwrap().len();
        if stored >= REQUESTS || Instant::now() > deadline {
            break stored;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // A second crash, before any request of that workspace: its counts, read back at this
    // start, must be in the journal again.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let mut server = start(&data_dir, public, admin_addr);
    // The rate limit counted those requests, and the crashes did not reset it: the
    // workspace has 1,200 - 150 left, and this request takes one more.
    let (status, me) = call(server.public, "GET", "/v1/me", Some(&key), None).unwrap();
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);
    assert_eq!(
        stored, REQUESTS,
        "every answered request's event survives the crash"
    );
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        me["rate_limit"]["remaining"],
        json!(1_200 - REQUESTS - 1),
        "the rate-limit counts survive the crash"
    );
}

#[test]
fn sigint_and_sigterm_finish_requests_in_flight_and_stop_accepting() {
    for signal in ["INT", "TERM"] {
        let data_dir =
            std::env::temp_dir().join(format!("statuspulse-signal-{}", uuid::Uuid::now_v7()));
        let (public, admin_addr) = (free_port(), free_port());
        let mut server = start(&data_dir, public, admin_addr);

        // A request in flight: its head and half its body sent, the rest after the signal.
        let body = json!({ "name": "Signalled" }).to_string();
        let (first, rest) = body.split_at(body.len() / 2);
        let mut in_flight = TcpStream::connect(admin_addr).unwrap();
        in_flight
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            in_flight,
            "POST /admin/v1/workspaces HTTP/1.1\r\nHost: {admin_addr}\r\n\
             Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{first}",
            body.len()
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));

        let sent = Command::new("kill")
            .args(["-s", signal, &server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        // Past the moment the framework's own signal handling stopped the runtime (300 ms
        // after the first listener was done).
        std::thread::sleep(Duration::from_millis(800));
        assert!(
            TcpStream::connect(public).is_err(),
            "SIG{signal}: the public listener still accepts"
        );

        in_flight.write_all(rest.as_bytes()).unwrap();
        let mut response = Vec::new();
        let _ = in_flight.read_to_end(&mut response);
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with("HTTP/1.1 201"),
            "SIG{signal}: the request in flight got {response:?}"
        );

        let deadline = Instant::now() + Duration::from_secs(40);
        let exit = loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "SIG{signal}: the server did not exit"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = std::fs::remove_dir_all(&data_dir);
        assert!(exit.success(), "SIG{signal}: exit {exit}");
    }
}
