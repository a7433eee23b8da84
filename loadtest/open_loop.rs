//! A light open-loop client for `GET /v1/authz`: the latency of a server at a fixed request
//! rate, without the client's own cost in the numbers.
//!
//! k6 spends about 90 µs of CPU per request in its JavaScript runtime; on a 2-core machine
//! its scheduling shows up in the tail of every latency it reports, a bare handler's
//! included. This client costs a few µs per request: raw HTTP/1.1 over keep-alive
//! connections, one single-threaded runtime.
//!
//! Connection `c` of `C` sends its `k`-th request at `start + (c + k·C) / RATE` (the schedule
//! wrk2 uses). A connection still waiting for an answer sends its next request late, and then
//! the latency is measured from the scheduled time, so a server that stalls is charged for
//! every request it delayed (no coordinated omission). Otherwise it is measured from the
//! moment the request is written: the timer's own lateness is the client's, not the server's.
//!
//!     open_loop URL KEYS_FILE RATE SECONDS [CONNECTIONS]
//!
//! Keys are used round-robin, connection `c` starting at key `c · count / C`. Prints one line:
//! `requests=N non200=N errors=N p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=..`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

struct Plan {
    host: String,
    keys: Vec<String>,
    rate: f64,
    duration: Duration,
    connections: usize,
}

#[derive(Default)]
struct Outcome {
    latencies_us: Vec<u64>,
    non_200: u64,
    errors: u64,
}

fn usage() -> ! {
    eprintln!("usage: open_loop URL KEYS_FILE RATE SECONDS [CONNECTIONS]");
    std::process::exit(2);
}

fn plan() -> Plan {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        usage();
    }
    let host = args[0]
        .strip_prefix("http://")
        .unwrap_or_else(|| usage())
        .trim_end_matches('/')
        .to_owned();
    let keys: Vec<String> = std::fs::read_to_string(&args[1])
        .unwrap_or_else(|e| {
            eprintln!("open_loop: cannot read {}: {e}", args[1]);
            std::process::exit(2)
        })
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .collect();
    let rate: f64 = args[2].parse().unwrap_or_else(|_| usage());
    let seconds: f64 = args[3].parse().unwrap_or_else(|_| usage());
    let connections: usize = args
        .get(4)
        .map_or(Ok(50), |c| c.parse())
        .unwrap_or_else(|_| usage());
    if keys.is_empty() || rate <= 0.0 || seconds <= 0.0 || connections == 0 {
        usage();
    }
    Plan {
        host,
        keys,
        rate,
        duration: Duration::from_secs_f64(seconds),
        connections,
    }
}

/// One request and its answer on a keep-alive connection; returns the status code.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buffer: &mut Vec<u8>,
) -> std::io::Result<u16> {
    stream.write_all(request).await?;
    buffer.clear();
    loop {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
        let Some(head_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buffer[..head_end])
            .map_err(|_| std::io::Error::other("response head is not UTF-8"))?;
        let status: u16 = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status line"))?;
        let body_length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        let total = head_end + 4 + body_length;
        while buffer.len() < total {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
        return Ok(status);
    }
}

async fn connection(plan: &Plan, index: usize, start: Instant) -> Outcome {
    let mut outcome = Outcome::default();
    let interval = Duration::from_secs_f64(plan.connections as f64 / plan.rate);
    let mut scheduled = start + Duration::from_secs_f64(index as f64 / plan.rate);
    let end = start + plan.duration;
    let mut key = index * plan.keys.len() / plan.connections;
    let mut stream: Option<TcpStream> = None;
    let mut buffer = Vec::with_capacity(1024);
    while scheduled < end {
        // Late because the previous answer came late: the server's delay, charged from the
        // scheduled time. Otherwise only the timer's own lateness (tokio's timer has
        // millisecond granularity), which is the client's and not counted.
        let server_delayed = Instant::now() > scheduled;
        tokio::time::sleep_until(scheduled).await;
        let measured_from = if server_delayed {
            scheduled
        } else {
            Instant::now()
        };
        let request = format!(
            "GET /v1/authz HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             X-Forwarded-Method: GET\r\nX-Forwarded-Uri: /v1/checks\r\n\r\n",
            plan.host,
            plan.keys[key % plan.keys.len()]
        );
        key += 1;
        if stream.is_none() {
            stream = TcpStream::connect(&plan.host).await.ok();
            if let Some(s) = &stream {
                let _ = s.set_nodelay(true);
            }
        }
        let result = match stream.as_mut() {
            Some(s) => exchange(s, request.as_bytes(), &mut buffer).await,
            None => Err(std::io::ErrorKind::ConnectionRefused.into()),
        };
        match result {
            Ok(status) => {
                outcome
                    .latencies_us
                    .push(measured_from.elapsed().as_micros() as u64);
                if status != 200 {
                    outcome.non_200 += 1;
                }
            }
            Err(_) => {
                outcome.errors += 1;
                stream = None;
            }
        }
        scheduled += interval;
    }
    outcome
}

fn percentile(sorted: &[u64], fraction: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * fraction).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> std::io::Result<()> {
    let plan = plan();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcomes = runtime.block_on(async {
        let local = tokio::task::LocalSet::new();
        let plan = std::rc::Rc::new(plan);
        let start = Instant::now() + Duration::from_millis(100);
        let tasks: Vec<_> = (0..plan.connections)
            .map(|index| {
                let plan = std::rc::Rc::clone(&plan);
                local.spawn_local(async move { connection(&plan, index, start).await })
            })
            .collect();
        local
            .run_until(async {
                let mut outcomes = Vec::new();
                for task in tasks {
                    outcomes.push(task.await.map_err(std::io::Error::other)?);
                }
                Ok::<_, std::io::Error>(outcomes)
            })
            .await
    })?;
    let mut latencies: Vec<u64> = outcomes
        .iter()
        .flat_map(|o| o.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let non_200: u64 = outcomes.iter().map(|o| o.non_200).sum();
    let errors: u64 = outcomes.iter().map(|o| o.errors).sum();
    println!(
        "requests={} non200={} errors={} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        latencies.len(),
        non_200,
        errors,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        latencies.last().copied().unwrap_or(0),
    );
    Ok(())
}
