//! Where log lines go: a bounded queue, written out by a thread of its own. A thread that
//! logs never waits for the log's reader and never sees its errors: a pipe that nobody
//! reads blocked every thread that logged (the admin API and graceful shutdown among them),
//! and a full disk under the log made `tracing` panic in whatever thread was logging (the
//! audit ingestion's queue runner among them). When the queue is full, lines are dropped
//! and counted, as a lossy log must: the requests come first.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting for the writer thread, at most: with lines of a few hundred bytes, a few
/// megabytes.
pub const QUEUED_LINES: usize = 16_384;

/// The writing end, handed to the subscriber: each event is one `write` of a whole line
/// (`tracing_subscriber::fmt` formats it into a buffer first), queued as it is.
#[derive(Clone)]
pub struct QueuedLog {
    queue: SyncSender<Queued>,
    dropped: Arc<AtomicU64>,
}

enum Queued {
    Line(Vec<u8>),
    /// Everything queued before has been written: say so.
    Flushed(SyncSender<()>),
}

/// Starts the thread that writes queued lines to `out`; lines dropped are counted in
/// `dropped` (shown in `/metrics`).
pub fn spawn(out: impl Write + Send + 'static, dropped: Arc<AtomicU64>) -> io::Result<QueuedLog> {
    spawn_with(out, QUEUED_LINES, dropped)
}

fn spawn_with(
    mut out: impl Write + Send + 'static,
    capacity: usize,
    dropped: Arc<AtomicU64>,
) -> io::Result<QueuedLog> {
    let (queue, queued) = mpsc::sync_channel(capacity);
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            for item in queued {
                match item {
                    // A line that cannot be written is lost: there is nowhere else to say
                    // so.
                    Queued::Line(line) => {
                        let _ = out.write_all(&line);
                    }
                    Queued::Flushed(written) => {
                        let _ = out.flush();
                        let _ = written.send(());
                    }
                }
            }
        })?;
    Ok(QueuedLog { queue, dropped })
}

impl QueuedLog {
    /// Lines dropped so far because the queue was full (`/metrics` reads
    /// `dropped_counter`).
    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The count of dropped lines, for `/metrics`.
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dropped)
    }

    /// Waits up to `within` for the lines queued so far to be handed to the output, for the
    /// end of the process: a reader that stopped reading does not hold the exit up longer.
    /// Whether they were (an output that refused them, a full disk, counts as done).
    pub fn flush_within(&self, within: Duration) -> bool {
        let (written, wait) = mpsc::sync_channel(1);
        let deadline = Instant::now() + within;
        let mut marker = Queued::Flushed(written);
        loop {
            match self.queue.try_send(marker) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    marker = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return false,
            }
        }
        wait.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

impl Write for QueuedLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // When the reader is behind (or the writer thread is gone) the line is dropped,
        // and the thread that logged it goes on.
        if self.queue.try_send(Queued::Line(buf.to_vec())).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for QueuedLog {
    type Writer = QueuedLog;

    fn make_writer(&'a self) -> QueuedLog {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An output that takes what it is given, or blocks until told to go on.
    #[derive(Clone, Default)]
    struct Output {
        written: Arc<Mutex<Vec<u8>>>,
        blocked: Arc<Mutex<()>>,
    }

    impl Write for Output {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _wait = self.blocked.lock().unwrap();
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// An output whose every write fails, as on a full disk.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(28))
        }
    }

    #[test]
    fn lines_are_written_in_order_and_flushed() {
        let output = Output::default();
        let mut log = spawn_with(output.clone(), 8, Arc::default()).unwrap();
        log.write_all(b"one\n").unwrap();
        log.write_all(b"two\n").unwrap();
        assert!(log.flush_within(Duration::from_secs(10)));
        assert_eq!(output.written.lock().unwrap().as_slice(), b"one\ntwo\n");
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn a_reader_that_does_not_read_blocks_no_one_and_lines_past_the_queue_are_dropped() {
        let output = Output::default();
        let stuck = output.blocked.lock().unwrap();
        let mut log = spawn_with(output.clone(), 4, Arc::default()).unwrap();
        // The writer thread takes one line and blocks on it; four wait; the rest are dropped.
        for n in 0..100 {
            log.write_all(format!("line {n}\n").as_bytes()).unwrap();
        }
        assert!(log.dropped() >= 95, "{} dropped", log.dropped());
        assert!(
            !log.flush_within(Duration::from_millis(50)),
            "nothing was written"
        );
        drop(stuck);
        assert!(log.flush_within(Duration::from_secs(10)));
        let written = String::from_utf8(output.written.lock().unwrap().clone()).unwrap();
        assert!(written.starts_with("line 0\n"), "{written}");
        assert_eq!(written.lines().count() as u64, 100 - log.dropped());
    }

    #[test]
    fn an_output_that_fails_is_no_error_of_the_thread_that_logs() {
        let mut log = spawn_with(Full, 4, Arc::default()).unwrap();
        for _ in 0..10 {
            log.write_all(b"lost\n").unwrap();
            assert!(log.flush_within(Duration::from_secs(10)));
        }
    }
}
