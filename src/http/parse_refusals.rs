//! The API's JSON answer for requests the HTTP layer refuses before the application sees
//! them.
//!
//! actix-http answers a request it cannot parse on its own, before any middleware runs:
//! - a malformed request line, header or body framing gets an empty `400`;
//! - more than 96 header fields, or a head past 128 KiB, gets an empty `431`.
//!
//! Neither answer has a body or an `X-Request-ID`, and the contract wants both on every
//! error. The dispatcher has no hook for these answers, so each connection's stream is
//! wrapped instead. Such an answer has a fixed shape and is always the last thing written
//! before the connection closes. The wrapper recognises it at the end of a write and writes
//! the API's answer in its place. Every other write passes through untouched, at the cost of
//! comparing its last bytes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use actix_web::ResponseError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::{ApiError, ErrorKind};
use super::request_context::{fresh_request_id, headers_too_large};
use super::server::REQUEST_HEAD_TIMEOUT;
use crate::metrics::{Listener, Metrics};

/// Most header fields actix-http parses (its `h1::decoder::MAX_HEADERS`).
pub const MAX_HEADER_FIELDS: usize = 96;

/// What actix-http refused a request for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Malformed,
    HeadTooLarge,
    /// The head did not arrive whole within the request timeout (a slow or stalled client).
    TooSlow,
    /// Framing actix-http could not follow; it logs the cause.
    Internal,
}

impl Refusal {
    fn error(self) -> ApiError {
        match self {
            Refusal::Malformed => ApiError::bad_request(
                "malformed_request",
                "The request is not valid HTTP/1.1: check the request line, the header syntax \
                 and Content-Length or Transfer-Encoding.",
            ),
            Refusal::HeadTooLarge => headers_too_large(),
            Refusal::TooSlow => ErrorKind::RequestTimeout {
                secs: REQUEST_HEAD_TIMEOUT.as_secs(),
            }
            .into(),
            Refusal::Internal => ErrorKind::Internal.into(),
        }
    }
}

/// The status lines of actix-http's own answers (its `h1::dispatcher`) after their
/// version, and what each refuses. Each such answer is the status line, `content-length: 0`,
/// a `connection` field (`close`, none when the connection was closing already, or
/// `keep-alive` on an HTTP/1.0 connection kept alive), and the date.
const CANNED_STATUSES: [(&[u8], Refusal); 4] = [
    (b" 400 Bad Request\r\n", Refusal::Malformed),
    (b" 408 Request Timeout\r\n", Refusal::TooSlow),
    (
        b" 431 Request Header Fields Too Large\r\n",
        Refusal::HeadTooLarge,
    ),
    (b" 500 Internal Server Error\r\n", Refusal::Internal),
];

/// The versions actix-http answers in: that of the connection's last request, so after an
/// HTTP/1.0 request kept alive, its refusals are HTTP/1.0 answers.
const HTTP_VERSIONS: [&[u8]; 2] = [b"HTTP/1.1", b"HTTP/1.0"];

/// An IMF-fixdate ("Mon, 30 Nov 2026 22:55:34 GMT") is always 29 bytes.
const DATE_BYTES: usize = 29;
const HEAD_END: &[u8] = b"\r\n\r\n";

/// A canned answer that ends `written`: where it starts, what it refuses, and its date.
/// Every answer of the application has an `X-Request-ID`, so none has this shape.
fn canned_answer_at_end(written: &[u8]) -> Option<(usize, Refusal, &[u8])> {
    // Most writes fail at the first or second step: bodies do not end in a blank line, and
    // /v1/authz answers (no body) have headers between their length and their date.
    let head = written.strip_suffix(HEAD_END)?;
    let (head, date) = head.split_at(head.len().checked_sub(DATE_BYTES)?);
    let head = head.strip_suffix(b"date: ")?;
    // `close`, unless the connection was closing already; `keep-alive` on an HTTP/1.0 one.
    let head = head
        .strip_suffix(b"connection: close\r\n")
        .or_else(|| head.strip_suffix(b"connection: keep-alive\r\n"))
        .unwrap_or(head);
    let head = head.strip_suffix(b"content-length: 0\r\n")?;
    CANNED_STATUSES.iter().find_map(|(status, refusal)| {
        let before_status = head.strip_suffix(*status)?;
        HTTP_VERSIONS.iter().find_map(|version| {
            before_status
                .ends_with(version)
                .then(|| (before_status.len() - version.len(), *refusal, date))
        })
    })
}

/// The API's answer for a refusal (the JSON error with a fresh request id, and the date
/// actix-http would have sent), and its status.
fn api_answer(refusal: Refusal, date: &[u8]) -> (u16, Vec<u8>) {
    let error = refusal.error();
    let request_id = fresh_request_id();
    let request_id = request_id.to_str().unwrap_or_default();
    let body = error.body(request_id);
    let status = error.status_code();
    if status.is_server_error() {
        // actix-http logs the cause under `actix_http::h1::dispatcher`, which the default
        // filter silences (any client could fill the log with its parse errors).
        tracing::error!(
            request_id,
            "the HTTP layer could not follow a request's framing"
        );
    } else {
        tracing::debug!(
            request_id,
            status = status.as_u16(),
            error = error.code(),
            "request refused by the HTTP parser"
        );
    }
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-error: {}\r\nx-request-id: {request_id}\r\nconnection: close\r\ndate: ",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len(),
        error.code(),
    )
    .into_bytes();
    answer.extend_from_slice(date);
    answer.extend_from_slice(HEAD_END);
    answer.extend_from_slice(body.as_bytes());
    (status.as_u16(), answer)
}

/// A connection's stream that writes the API's answer in place of actix-http's own.
pub struct ParseRefusals<T> {
    io: T,
    /// The API's answer and how much of it is written, until all of it is.
    pending: Option<(Vec<u8>, usize)>,
    /// Set once a refusal is answered: the connection closes after it, and anything the
    /// HTTP layer writes from then on (its canned answer again, if it writes it anew) is
    /// taken as written and dropped.
    refused: bool,
    metrics: Arc<Metrics>,
    listener: Listener,
}

impl<T> ParseRefusals<T> {
    pub fn new(io: T, metrics: Arc<Metrics>, listener: Listener) -> ParseRefusals<T> {
        ParseRefusals {
            io,
            pending: None,
            refused: false,
            metrics,
            listener,
        }
    }
}

impl<T: AsyncWrite + Unpin> ParseRefusals<T> {
    /// Writes what is left of a pending answer; ready when none is left.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, written)) = self.pending.as_mut() {
            if *written == answer.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ParseRefusals<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ParseRefusals<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if this.refused {
            return Poll::Ready(Ok(buf.len()));
        }
        match canned_answer_at_end(buf) {
            None => Pin::new(&mut this.io).poll_write(cx, buf),
            // Answers to earlier pipelined requests go out first, as they are.
            Some((start, _, _)) if start > 0 => {
                Pin::new(&mut this.io).poll_write(cx, &buf[..start])
            }
            Some((_, refusal, date)) => {
                let (status, answer) = api_answer(refusal, date);
                this.metrics.record_response(this.listener, None, status);
                this.pending = Some((answer, 0));
                this.refused = true;
                // The canned answer counts as written only once ours is: after a refusal
                // the HTTP layer closes the connection as soon as its buffer is empty,
                // without waiting for a flush, so an answer still pending (a full send
                // buffer) would be cut short. Until then it writes the same bytes again.
                ready!(this.poll_pending(cx))?;
                Poll::Ready(Ok(buf.len()))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Mon, 30 Nov 2026 22:55:34 GMT";

    fn canned(status_line: &[u8], connection: &[u8]) -> Vec<u8> {
        [
            status_line,
            b"content-length: 0\r\n",
            connection,
            b"date: ",
            DATE.as_bytes(),
            HEAD_END,
        ]
        .concat()
    }

    #[test]
    fn every_canned_answer_is_recognised_after_earlier_answers() {
        let earlier = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-request-id: 1\r\ndate: {DATE}\r\n\r\n"
        );
        // HTTP/1.0 too: actix-http answers in the version of the connection's last request.
        let status_lines = HTTP_VERSIONS.iter().flat_map(|version| {
            CANNED_STATUSES
                .iter()
                .map(move |(status, refusal)| ([*version, *status].concat(), *refusal))
        });
        for (status_line, refusal) in status_lines {
            let connections: [&[u8]; 3] =
                [b"connection: close\r\n", b"", b"connection: keep-alive\r\n"];
            for connection in connections {
                let answer = canned(&status_line, connection);
                assert_eq!(
                    canned_answer_at_end(&answer),
                    Some((0, refusal, DATE.as_bytes()))
                );
                let both = [earlier.as_bytes(), &answer].concat();
                assert_eq!(
                    canned_answer_at_end(&both),
                    Some((earlier.len(), refusal, DATE.as_bytes()))
                );
            }
        }
    }

    #[test]
    fn the_applications_own_answers_pass_through() {
        for answer in [
            format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-request-id: 1\r\ndate: {DATE}\r\n\r\n"),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\nx-error: x\r\ndate: {DATE}\r\n\r\n{{}}"),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-request-id: 1\r\ndate: {DATE}\r\n\r\n"),
            // A canned head cut short is not one.
            format!("Request\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"),
            format!(" 400 Bad Request\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"),
            format!("HTTP/2.0 400 Bad Request\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"),
            String::new(),
        ] {
            assert_eq!(canned_answer_at_end(answer.as_bytes()), None, "{answer}");
        }
    }

    /// With a send buffer smaller than the answer, the canned bytes are reported written
    /// only once the whole JSON answer is: the HTTP layer drops the connection as soon as
    /// they are.
    #[tokio::test]
    async fn the_canned_answer_counts_as_written_once_the_whole_answer_is() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server_side, mut client_side) = tokio::io::duplex(16);
        let mut stream =
            ParseRefusals::new(server_side, Arc::new(Metrics::default()), Listener::Public);
        let canned = canned(b"HTTP/1.1 400 Bad Request\r\n", b"connection: close\r\n");
        let reader = tokio::spawn(async move {
            let mut answer = Vec::new();
            client_side.read_to_end(&mut answer).await.unwrap();
            answer
        });
        let written = stream.write(&canned).await.unwrap();
        assert_eq!(written, canned.len());
        // The HTTP layer's buffer is empty: it closes the connection without a flush.
        drop(stream);
        let answer = String::from_utf8(reader.await.unwrap()).unwrap();
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        let body: serde_json::Value = serde_json::from_str(body).expect("a whole JSON body");
        assert_eq!(body["error"], "malformed_request");
    }

    #[test]
    fn the_api_answer_is_a_complete_json_error() {
        let (status, answer) = api_answer(Refusal::HeadTooLarge, DATE.as_bytes());
        assert_eq!(status, 431);
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(head.contains("x-error: headers_too_large\r\n"));
        assert!(head.ends_with(&format!("date: {DATE}")));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"], "headers_too_large");
        let id = body["request_id"].as_str().unwrap();
        assert!(head.contains(&format!("x-request-id: {id}\r\n")));
    }
}
