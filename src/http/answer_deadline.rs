//! Closes a connection that is still sending long after its last answer.
//!
//! After answering a request whose body has not all arrived (`/v1/authz` never reads a
//! body; an admin handler gives up on a slow one with a 408), actix-http reads the rest of
//! the body so that the connection can serve another request. For a chunked body it does
//! so with no time limit, and its keep-alive timer does not run meanwhile: a client that
//! never ends its body would hold the connection, and its buffers, forever.
//!
//! No honest client needs long between two answers on one connection: an idle one is
//! closed after the keep-alive timeout (5 s), a request's head has 5 s, an admin body 10 s.
//! So each connection's stream is wrapped, and a read still waiting a fixed time after the
//! last answer ends the connection with an error. Before the first answer the HTTP layer's
//! own head timeout applies. The HTTP layer reads while a handler runs too (for the next
//! pipelined request), so a handler still running at the deadline would lose its
//! connection: the deadline is longer than the slowest handler may take.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep_until, Instant, Sleep};

/// How long after its last answer a connection may go on being read: longer than the
/// slowest handler, an audit-log query on PostgreSQL (2 s for a connection, 5 s to find the
/// workspace, 30 s for the query: 37 s), which at 30 s lost its connection before it could
/// answer (found by a code review, 2 December).
pub const NEXT_ANSWER_WITHIN: Duration = Duration::from_secs(45);

/// A connection's stream whose reads fail once a whole `limit` has passed without a write:
/// between `limit` and twice `limit` after the last answer.
pub struct AnswerDeadline<T> {
    io: T,
    limit: Duration,
    /// Whether bytes of an answer were written since the timer was last set.
    answered: bool,
    /// Fires `limit` after it is set: at the first answer, and again each time it fires
    /// after an answer. So a connection costs one timer, and an answer a flag, not a clock
    /// read; the price is a deadline known to within one `limit`.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> AnswerDeadline<T> {
    pub fn new(io: T, limit: Duration) -> AnswerDeadline<T> {
        AnswerDeadline {
            io,
            limit,
            answered: false,
            timer: None,
        }
    }

    /// Notes an answer. After answering, the HTTP layer may not read again until woken (it
    /// waits on the client's next bytes), so the timer must be set to wake this task; a
    /// read then reports the deadline.
    fn note_answer(&mut self, cx: &mut Context<'_>) {
        self.answered = true;
        match &self.timer {
            Some(timer) if !timer.is_elapsed() => return,
            // Fired unseen (no read since): the poll below sets it again.
            Some(_) => {}
            // The first answer: the timer counts from it.
            None => {
                self.answered = false;
                self.timer = Some(Box::pin(sleep_until(Instant::now() + self.limit)));
            }
        }
        // Polling the timer sets it to wake this task.
        if self.poll_deadline(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
    }

    /// Ready with an error once a whole `limit` passed without an answer; otherwise
    /// pending, with the timer set to wake this task.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(timer) = self.timer.as_mut() else {
            return Poll::Pending;
        };
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if !std::mem::take(&mut self.answered) {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer for too long: the client is still sending",
                ));
            }
            timer.as_mut().reset(Instant::now() + self.limit);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for AnswerDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            // The timer, once set, stays set for this task until it fires: only then is
            // there anything to check. A client that trickles bytes is caught at the next
            // wait: its reads are never all ready.
            Poll::Pending if this.timer.as_ref().is_some_and(|timer| timer.is_elapsed()) => {
                this.poll_deadline(cx).map(Err)
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for AnswerDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            if n > 0 {
                this.note_answer(cx);
            }
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_millis(200);
    /// Long enough that a connection still open then would be open for good.
    const FOREVER: Duration = Duration::from_secs(20);
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";

    #[tokio::test]
    async fn before_the_first_answer_reads_wait_as_long_as_the_client_takes() {
        let (mut client, server) = duplex(1024);
        let mut server = AnswerDeadline::new(server, LIMIT);
        let mut buf = [0u8; 16];
        let sends_late = async {
            tokio::time::sleep(LIMIT * 3).await;
            client.write_all(b"GET").await.unwrap();
        };
        let (read, ()) = tokio::join!(server.read(&mut buf), sends_late);
        assert_eq!(read.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_client_still_silent_at_the_deadline_after_an_answer_is_cut_off() {
        let (_client, server) = duplex(1024);
        let mut server = AnswerDeadline::new(server, LIMIT);
        server.write_all(ANSWER).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(FOREVER, server.read(&mut buf));
        let error = read.await.expect("cut off").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= LIMIT, "cut off early");
    }

    #[tokio::test]
    async fn an_answer_alone_wakes_the_connection_at_the_deadline() {
        let (_client, server) = duplex(1024);
        let mut server = AnswerDeadline::new(server, LIMIT);
        let mut buf = [0u8; 16];
        let mut answered = false;
        // As the HTTP layer does: a read that waits, then the answer, then nothing until
        // something wakes the connection. A task of its own, so that only its own wakers
        // poll it.
        let cut_off = tokio::spawn(poll_fn(move |cx| {
            let mut read_buf = ReadBuf::new(&mut buf);
            if let Poll::Ready(result) = Pin::new(&mut server).poll_read(cx, &mut read_buf) {
                return Poll::Ready(result.expect_err("nothing was sent").kind());
            }
            if !answered {
                answered = true;
                let written = Pin::new(&mut server).poll_write(cx, ANSWER);
                assert!(matches!(written, Poll::Ready(Ok(n)) if n == ANSWER.len()));
            }
            Poll::Pending
        }));
        let error = tokio::time::timeout(FOREVER, cut_off)
            .await
            .expect("woken at the deadline")
            .unwrap();
        assert_eq!(error, io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_client_that_trickles_bytes_after_an_answer_is_cut_off() {
        let (mut client, server) = duplex(1024);
        let mut server = AnswerDeadline::new(server, LIMIT);
        server.write_all(ANSWER).await.unwrap();
        let trickle = async move {
            loop {
                tokio::time::sleep(LIMIT / 10).await;
                if client.write_all(b"1\r\nx\r\n").await.is_err() {
                    return;
                }
            }
        };
        let drain = async {
            let mut buf = [0u8; 64];
            loop {
                if let Err(error) = server.read(&mut buf).await {
                    return error;
                }
            }
        };
        let error = tokio::select! {
            error = drain => error,
            () = trickle => panic!("the client stopped first"),
            () = tokio::time::sleep(FOREVER) => panic!("still reading"),
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn each_answer_moves_the_deadline() {
        let (mut client, server) = duplex(1024);
        let mut server = AnswerDeadline::new(server, LIMIT);
        let mut buf = [0u8; 16];
        for _ in 0..4 {
            server.write_all(ANSWER).await.unwrap();
            // Each read waits past the first answer's deadline, never past its own answer's.
            let sends_soon = async {
                tokio::time::sleep(LIMIT / 2).await;
                client.write_all(b"GET").await.unwrap();
            };
            let (read, ()) = tokio::join!(server.read(&mut buf), sends_soon);
            assert_eq!(read.unwrap(), 3);
        }
    }
}
