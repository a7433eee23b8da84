//! The real binary as a child process: killed with SIGKILL right after answering, no
//! answered request's audit event may be lost, nor any count of its rate limit; with its
//! rate journal's directory deleted while it runs, a crash still loses no count; stopped
//! with SIGINT, SIGTERM or any other signal that would end it (SIGHUP unless started under
//! `nohup`), it finishes the requests in flight; under a system clock that
//! steps (libfaketime), its rate limits keep real time; on a disk that fills up, it keeps
//! answering and loses no event. (The API suite runs the server in-process, where neither a
//! crash, nor a signal, nor another clock, nor a disk of its own can be staged.)

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

/// A test that fails must not leave its server running: it would hold its ports, and the
/// output pipe of whatever ran the tests.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

fn start(data_dir: &Path, public: SocketAddr, admin: SocketAddr) -> Server {
    start_with(data_dir, public, admin, &[])
}

fn start_with(
    data_dir: &Path,
    public: SocketAddr,
    admin: SocketAddr,
    extra_env: &[(&str, &str)],
) -> Server {
    let child = server_command(data_dir, public, admin)
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start statuspulse-auth");
    wait_until_up(child, public, admin)
}

/// `serve` with the admin token set, 2 HTTP workers and `RUST_LOG=warn`.
fn server_command(data_dir: &Path, public: SocketAddr, admin: SocketAddr) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_statuspulse-auth"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("STATUSPULSE_DATA_DIR", data_dir)
        .env("STATUSPULSE_PUBLIC_ADDR", public.to_string())
        .env("STATUSPULSE_ADMIN_ADDR", admin.to_string())
        .env("STATUSPULSE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("STATUSPULSE_HTTP_WORKERS", "2")
        .env("RUST_LOG", "warn");
    command
}

fn wait_until_up(child: Child, public: SocketAddr, admin: SocketAddr) -> Server {
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
    call_with_head(addr, method, path, bearer, body).map(|(status, _, json)| (status, json))
}

/// `call`, with the answer's head (status line and header fields, as sent).
fn call_with_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> Option<(u16, String, Value)> {
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
    let (head, body) = text.split_once("\r\n\r\n")?;
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    Some((status, head.to_ascii_lowercase(), json))
}

fn admin(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call(server.admin, method, path, Some(ADMIN_TOKEN), body).expect("admin call")
}

/// A new workspace `name` with one `checks:read` key of `environment`: its id and the key.
fn workspace_with_key(server: &Server, name: &str, environment: &str) -> (String, String) {
    let (status, workspace) = admin(
        server,
        "POST",
        "/admin/v1/workspaces",
        Some(json!({ "name": name })),
    );
    assert_eq!(status, 201, "{workspace}");
    let ws = workspace["id"].as_str().unwrap().to_owned();
    let (status, key) = admin(
        server,
        "POST",
        &format!("/admin/v1/workspaces/{ws}/api-keys"),
        Some(json!({ "label": "ci", "environment": environment, "scopes": ["checks:read"] })),
    );
    assert_eq!(status, 201, "{key}");
    (ws, key["key"].as_str().unwrap().to_owned())
}

#[test]
fn sigkill_right_after_answering_loses_no_audit_event() {
    let data_dir = std::env::temp_dir().join(format!("statuspulse-crash-{}", uuid::Uuid::now_v7()));
    let (public, admin_addr) = (free_port(), free_port());
    let mut server = start(&data_dir, public, admin_addr);

    let (ws, key) = workspace_with_key(&server, "Crash", "live");

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
fn rate_limit_counts_survive_a_crash_after_their_directory_was_deleted() {
    let data_dir =
        std::env::temp_dir().join(format!("statuspulse-rates-gone-{}", uuid::Uuid::now_v7()));
    let (public, admin_addr) = (free_port(), free_port());
    let mut server = start(&data_dir, public, admin_addr);
    let (_, key) = workspace_with_key(&server, "Deleted", "test");
    let me = |server: &Server| call(server.public, "GET", "/v1/me", Some(&key), None).unwrap();
    for _ in 0..10 {
        assert_eq!(me(&server).0, 200);
    }
    let journal_dir = data_dir.join("rate-limits");
    // The server's check may make a file in it while it is being removed: again, then.
    let removing = Instant::now() + Duration::from_secs(10);
    while let Err(error) = std::fs::remove_dir_all(&journal_dir) {
        assert!(Instant::now() < removing, "cannot remove it: {error}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_dir(&journal_dir).is_ok_and(|mut files| {
        files.any(|f| f.is_ok_and(|f| f.path().extension().is_some_and(|e| e == "rates")))
    }) {
        assert!(
            Instant::now() < deadline,
            "the rate-limit journal was not made again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..5 {
        assert_eq!(me(&server).0, 200);
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    let mut server = start(&data_dir, public, admin_addr);
    let (status, body) = me(&server);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data_dir);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rate_limit"]["remaining"],
        json!(120 - 16),
        "the counts from before and after the deletion survive the crash"
    );
}

/// The stop signals (`src/stop_signals.rs`): each one stops the server gracefully.
const STOP_SIGNALS: [&str; 7] = ["INT", "TERM", "HUP", "QUIT", "USR1", "USR2", "ALRM"];

/// `serve` started through `env` with the given signal dispositions (`--default-signal=…`,
/// `--ignore-signal=…`), so that what the test runner inherited does not decide them.
fn start_with_signal_dispositions(
    data_dir: &Path,
    public: SocketAddr,
    admin: SocketAddr,
    dispositions: &str,
) -> Server {
    let server = server_command(data_dir, public, admin);
    let mut command = Command::new("env");
    command
        .arg(dispositions)
        .arg(server.get_program())
        .args(server.get_args())
        .env_clear()
        .envs(
            server
                .get_envs()
                .filter_map(|(name, value)| value.map(|value| (name, value))),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = command.spawn().expect("start statuspulse-auth through env");
    wait_until_up(child, public, admin)
}

#[test]
fn every_stop_signal_finishes_requests_in_flight_and_stops_accepting() {
    for signal in STOP_SIGNALS {
        let data_dir =
            std::env::temp_dir().join(format!("statuspulse-signal-{}", uuid::Uuid::now_v7()));
        let (public, admin_addr) = (free_port(), free_port());
        let mut server = start_with_signal_dispositions(
            &data_dir,
            public,
            admin_addr,
            &format!("--default-signal={}", STOP_SIGNALS.join(",")),
        );

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

        let exit = wait_for_exit(&mut server, signal, Duration::from_secs(40));
        let _ = std::fs::remove_dir_all(&data_dir);
        assert!(exit.success(), "SIG{signal}: exit {exit}");
    }
}

/// A program started with SIGHUP ignored (by `nohup`) keeps ignoring it: the server goes on
/// answering after a SIGHUP, and SIGTERM still stops it.
#[test]
fn a_signal_ignored_at_start_stays_ignored() {
    let data_dir = std::env::temp_dir().join(format!("statuspulse-nohup-{}", uuid::Uuid::now_v7()));
    let (public, admin_addr) = (free_port(), free_port());
    let mut server =
        start_with_signal_dispositions(&data_dir, public, admin_addr, "--ignore-signal=HUP");
    let sent = Command::new("kill")
        .args(["-s", "HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        server.child.try_wait().unwrap(),
        None,
        "the server ended on a SIGHUP it was started ignoring"
    );
    assert_eq!(
        call(public, "GET", "/healthz", None, None).map(|(status, _)| status),
        Some(200),
        "the public listener stopped after a SIGHUP it was started ignoring"
    );
    let exit = stop(&mut server, "TERM", Duration::from_secs(40));
    let _ = std::fs::remove_dir_all(&data_dir);
    assert!(
        exit.success(),
        "SIGTERM after an ignored SIGHUP: exit {exit}"
    );
}

/// libfaketime's library (Debian's `faketime` package): it moves the wall clock of the
/// process it is preloaded into, as an NTP step or `date -s` would, and here leaves its
/// monotonic clock alone.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Over any 60 real seconds a workspace gets its limit, whatever the system clock does:
/// stepped forward a minute, it must not hand out a fresh minute at once; stepped back, it
/// must not refuse, nor forget, what was counted.
#[test]
#[ignore = "needs libfaketime: apt-get install faketime, then pass --include-ignored (.ci/run does)"]
fn a_stepped_system_clock_neither_renews_nor_forgets_the_rate_limit() {
    assert!(
        Path::new(FAKETIME).exists(),
        "{FAKETIME} is missing: apt-get install faketime"
    );
    let data_dir = std::env::temp_dir().join(format!("statuspulse-clock-{}", uuid::Uuid::now_v7()));
    let offset = data_dir.with_extension("faketime");
    std::fs::write(&offset, "+0").unwrap();
    let offset_path = offset.to_str().unwrap().to_owned();
    let (public, admin_addr) = (free_port(), free_port());
    let faked = [
        ("LD_PRELOAD", FAKETIME),
        ("FAKETIME_TIMESTAMP_FILE", offset_path.as_str()),
        ("FAKETIME_NO_CACHE", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let server = start_with(&data_dir, public, admin_addr, &faked);
    let test_key = |name: &str| workspace_with_key(&server, name, "test").1;
    let me = |key: &str| call(public, "GET", "/v1/me", Some(key), None).unwrap();
    let (used_up, some_used) = (test_key("Forward"), test_key("Back"));
    for _ in 0..120 {
        assert_eq!(me(&used_up).0, 200);
    }
    assert_eq!(me(&used_up).0, 429);
    for _ in 0..10 {
        assert_eq!(me(&some_used).0, 200);
    }

    std::fs::write(&offset, "+65").unwrap();
    let (status, body) = me(&used_up);
    assert_eq!(
        status, 429,
        "a clock stepped a minute ahead renewed the limit: {body}"
    );

    // Back 30 s from the real time: the used-up limit frees up 60 real seconds after its
    // requests, not 90.
    std::fs::write(&offset, "-30").unwrap();
    let (status, head, _) = call_with_head(public, "GET", "/v1/me", Some(&used_up), None).unwrap();
    assert_eq!(status, 429);
    let retry_after: u64 = head
        .lines()
        .find_map(|line| line.strip_prefix("retry-after: "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap();
    assert!(
        retry_after <= 61,
        "Retry-After {retry_after}: a clock stepped back stretched the window"
    );
    let (status, body) = me(&some_used);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rate_limit"]["remaining"],
        json!(120 - 11),
        "a clock stepped back forgot what was counted"
    );

    // Stopped, and started again after a step ahead (95 s past the last): the next run's
    // limiters count from the same origin, the machine's boot, not from the wall clock.
    let mut server = server;
    let sent = Command::new("kill")
        .args(["-s", "TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    assert!(server.child.wait().unwrap().success());
    std::fs::write(&offset, "+65").unwrap();
    let server = start_with(&data_dir, public, admin_addr, &faked);
    let me = |key: &str| call(server.public, "GET", "/v1/me", Some(key), None).unwrap();
    let (status, body) = me(&used_up);
    assert_eq!(
        status, 429,
        "a restart after a step ahead renewed the limit: {body}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_file(&offset);
}

/// A tmpfs of its own, unmounted when dropped (a failed test included).
struct SmallDisk {
    mount_point: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> SmallDisk {
        let mount_point =
            std::env::temp_dir().join(format!("statuspulse-small-disk-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&mount_point).unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={megabytes}m,mode=0700"),
                "tmpfs",
            ])
            .arg(&mount_point)
            .status()
            .unwrap();
        assert!(
            mounted.success(),
            "cannot mount a tmpfs: run as root, with --include-ignored (.ci/run does)"
        );
        SmallDisk { mount_point }
    }

    /// Writes a file until the disk has no byte left.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.mount_point.join("filler")).unwrap();
        for chunk in [1024 * 1024, 4096, 1] {
            let bytes = vec![1u8; chunk];
            while filler.write_all(&bytes).is_ok() {}
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.mount_point.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount_point).status();
        let _ = std::fs::remove_dir(&self.mount_point);
    }
}

/// How many audit events `ws` has, through every page of its audit log.
fn audit_event_count(server: &Server, ws: &str) -> usize {
    let mut count = 0;
    let mut cursor = String::new();
    loop {
        let (status, page) = admin(
            server,
            "GET",
            &format!("/admin/v1/workspaces/{ws}/audit-log?limit=1000{cursor}"),
            None,
        );
        assert_eq!(status, 200, "{page}");
        count += page["data"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(next) if page["has_more"] == json!(true) => cursor = format!("&cursor={next}"),
            _ => return count,
        }
    }
}

/// How many audit events `ws` has once it has `expected`, or when `within` has passed.
fn audit_events_once_stored(server: &Server, ws: &str, expected: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let stored = audit_event_count(server, ws);
        if stored >= expected || Instant::now() > deadline {
            return stored;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The audit spool and the rate journal are written through memory mappings, where a page
/// that needs a disk block the full disk does not have is SIGBUS: the server died at the
/// first request. With their files allocated ahead, it keeps answering, and the events of
/// what it answered reach the audit log once there is space again.
#[test]
#[ignore = "mounts a tmpfs: needs root; pass --include-ignored (.ci/run does)"]
fn a_full_disk_neither_kills_the_server_nor_loses_an_answered_request_event() {
    let disk = SmallDisk::mount(64);
    let data_dir = disk.mount_point.join("data");
    let (public, admin_addr) = (free_port(), free_port());
    let mut server = start(&data_dir, public, admin_addr);
    let (ws, key) = workspace_with_key(&server, "Full disk", "live");

    disk.fill();
    // Storage that cannot write is an outage to retry after, and nothing is half-done.
    let (status, refused) = admin(
        &server,
        "POST",
        "/admin/v1/workspaces",
        Some(json!({ "name": "No room" })),
    );
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"], "unavailable");
    // Past the live limit: refused requests are audited too.
    const REQUESTS: usize = 3_000;
    let mut answered = 0;
    for request in 0..REQUESTS {
        let Some((status, body)) = call(public, "GET", "/v1/me", Some(&key), None) else {
            panic!(
                "request {request} got no answer; the server {}",
                match server.child.try_wait().unwrap() {
                    Some(exit) => format!("died: {exit}"),
                    None => "still runs".to_owned(),
                }
            );
        };
        assert!(status == 200 || status == 429, "{status}: {body}");
        answered += 1;
    }

    disk.free();
    let stored = audit_events_once_stored(&server, &ws, answered, Duration::from_secs(60));
    assert_eq!(
        stored, answered,
        "every answered request's event is in the audit log"
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// Sends `signal` and waits up to `within` for the server to exit; its exit status.
fn stop(server: &mut Server, signal: &str, within: Duration) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .args(["-s", signal, &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    wait_for_exit(server, signal, within)
}

/// Waits up to `within` for the server, sent SIG`signal`, to exit; its exit status.
fn wait_for_exit(server: &mut Server, signal: &str, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "SIG{signal}: the server did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A log pipe that nobody reads filled up and blocked every thread that logged: the admin
/// API stopped answering, and neither SIGTERM nor SIGINT could stop the server.
#[test]
fn a_log_pipe_that_nobody_reads_blocks_neither_requests_nor_the_stop() {
    let data_dir = std::env::temp_dir().join(format!("statuspulse-pipe-{}", uuid::Uuid::now_v7()));
    let (public, admin_addr) = (free_port(), free_port());
    let child = server_command(&data_dir, public, admin_addr)
        // Many lines per request, to fill the pipe (64 KiB) within a few requests.
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = wait_until_up(child, public, admin_addr);
    // Held, never read.
    let _unread = server.child.stdout.take();
    let (ws, key) = workspace_with_key(&server, "Unread log", "live");
    // Some 40 trace lines a request: far more than the pipe and the log's queue hold.
    for _ in 0..600 {
        let (status, body) = admin(&server, "GET", &format!("/admin/v1/workspaces/{ws}"), None);
        assert_eq!(status, 200, "{body}");
        let (status, body) = call(public, "GET", "/v1/me", Some(&key), None).unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let dropped = metric(&server, "statuspulse_log_lines_dropped_total");
    let exit = stop(&mut server, "TERM", Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&data_dir);
    assert!(dropped > 0, "the lines past the queue are counted");
    assert!(exit.success(), "{exit}");
}

/// The value of `name` in the admin listener's `/metrics`.
fn metric(server: &Server, name: &str) -> u64 {
    let mut stream = TcpStream::connect(server.admin).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Connection: close\r\n\r\n",
        server.admin
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics: {text}"))
}

/// A full disk under the log made the logging library panic (it reports a line it cannot
/// write on stderr, and panics when that fails too): in the audit ingestion's runner, for
/// good. And a first start that could not show its generated admin token kept its hash.
#[test]
fn logs_that_cannot_be_written_cost_nothing_but_the_lines() {
    let data_dir =
        std::env::temp_dir().join(format!("statuspulse-devfull-{}", uuid::Uuid::now_v7()));
    let (public, admin_addr) = (free_port(), free_port());
    let full = || {
        std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };

    // A generated token that cannot be shown is not kept: a clear failure, not a panic.
    let mut first = server_command(&data_dir, public, admin_addr);
    first
        .env_remove("STATUSPULSE_ADMIN_TOKEN")
        .stdout(full())
        .stderr(full());
    let exit = first.status().unwrap();
    assert_eq!(exit.code(), Some(1), "{exit}");
    assert!(
        !data_dir.join("admin_token.blake3").exists(),
        "the hash of a token no one saw was kept"
    );

    let child = server_command(&data_dir, public, admin_addr)
        .env("RUST_LOG", "debug")
        .stdout(full())
        .stderr(full())
        .spawn()
        .unwrap();
    let mut server = wait_until_up(child, public, admin_addr);
    let (ws, key) = workspace_with_key(&server, "Full log", "test");
    const REQUESTS: usize = 130;
    for _ in 0..REQUESTS {
        let (status, body) = call(public, "GET", "/v1/me", Some(&key), None).unwrap();
        assert!(status == 200 || status == 429, "{status}: {body}");
    }
    let stored = audit_events_once_stored(&server, &ws, REQUESTS, Duration::from_secs(30));
    let exit = stop(&mut server, "TERM", Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&data_dir);
    assert_eq!(stored, REQUESTS, "audit ingestion goes on");
    assert!(exit.success(), "{exit}");
}
