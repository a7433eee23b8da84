//! Logging through tracing: `RUST_LOG` filters (default `info`), text or JSON lines, and the
//! id of the request being served in every line written while serving it.
//!
//! The request id comes from `request_scope`, read only when a line is written; it is not a
//! tracing span, which would cost every request, logged or not (see `request_scope`).

use std::fmt;

use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::request_scope;

/// The filter when `RUST_LOG` is unset or empty.
const DEFAULT_FILTER: &str = "info";

/// actix-http logs every request it cannot parse at `ERROR` ("stream error: request parse
/// error"), without the request id its answer carries: any client could fill the error log
/// with its own mistakes, and page whoever watches it. The client gets its 400 either way,
/// and the engine logs the refusal at `debug` with the request id
/// (`http::parse_refusals`). So the dispatcher's lines are off unless `RUST_LOG` names
/// actix-http itself or asks for everything at `debug` or `trace` (a bare `debug`).
const PARSE_ERRORS_TARGET: &str = "actix_http::h1::dispatcher";

/// Libraries' targets whose debug and trace lines quote what passes through them: the
/// parameters of every PostgreSQL statement (a key sent as an audit-log filter, a user's
/// password hash) and the raw values of malformed request headers (a key among them). They
/// stay at `info` whatever `RUST_LOG` says: no key, token or password is ever logged. Each
/// replaces a directive of `RUST_LOG` for the same target.
const PAYLOAD_TARGETS: [&str; 5] = [
    "tokio_postgres",
    "tokio_postgres::query",
    "tokio_postgres::prepare",
    "tokio_postgres::connection",
    "actix_http::h1::decoder",
];

/// The filter of `RUST_LOG` (`DEFAULT_FILTER` when unset or empty). A value that does not
/// parse is an error naming the variable: a typo must not silently log at another level.
pub fn filter_from_env() -> Result<EnvFilter, String> {
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Err(std::env::VarError::NotPresent) => filter_from(""),
        Err(std::env::VarError::NotUnicode(_)) => Err("RUST_LOG: not UTF-8".to_owned()),
        Ok(value) => filter_from(&value),
    }
}

fn filter_from(value: &str) -> Result<EnvFilter, String> {
    let value = if value.trim().is_empty() {
        DEFAULT_FILTER
    } else {
        value
    };
    let mut filter = EnvFilter::builder().parse(value).map_err(|error| {
        format!("RUST_LOG: {error} (for example RUST_LOG=info or RUST_LOG=statuspulse_auth=debug)")
    })?;
    let everything_in_detail = value.split(',').map(str::trim).any(|directive| {
        ["debug", "trace"]
            .iter()
            .any(|level| directive.eq_ignore_ascii_case(level))
    });
    if !value.contains("actix_http") && !everything_in_detail {
        let directive = format!("{PARSE_ERRORS_TARGET}=off")
            .parse()
            .map_err(|error| format!("RUST_LOG: {error}"))?;
        filter = filter.add_directive(directive);
    }
    for target in PAYLOAD_TARGETS {
        let directive = format!("{target}=info")
            .parse()
            .map_err(|error| format!("RUST_LOG: {error}"))?;
        filter = filter.add_directive(directive);
    }
    Ok(filter)
}

/// Installs the process's subscriber. Call once, from `main` (or a test harness); a second
/// call keeps the first subscriber.
pub fn init<W>(format: LogFormat, ansi: bool, filter: EnvFilter, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let _ = dispatch(format, ansi, filter, writer).try_init();
}

/// The subscriber, not installed.
///
/// `ansi`: colour codes, for a terminal only. In a file or a log pipeline they are noise.
pub fn dispatch<W>(format: LogFormat, ansi: bool, filter: EnvFilter, writer: W) -> Dispatch
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer)
        // Otherwise a line that cannot be written is reported with `eprintln!`, which
        // panics in the thread that logged when stderr cannot be written either.
        .log_internal_errors(false);
    match format {
        LogFormat::Json => Dispatch::new(
            builder
                .json()
                .event_format(JsonWithRequestId(
                    Format::default().json().flatten_event(true),
                ))
                .finish(),
        ),
        LogFormat::Text => Dispatch::new(
            builder
                .fmt_fields(TextFieldsWithRequestId(DefaultFields::new()))
                .finish(),
        ),
    }
}

/// Text lines: the fields as `DefaultFields` writes them, then ` request_id=<id>` inside a
/// request. (Fields of spans made inside a request get the id too; the engine makes none.)
struct TextFieldsWithRequestId(DefaultFields);

impl<'writer> FormatFields<'writer> for TextFieldsWithRequestId {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        self.0.format_fields(writer.by_ref(), fields)?;
        request_scope::with_id(|id| write!(writer, " request_id={id}")).unwrap_or(Ok(()))
    }
}

/// JSON lines: `{"request_id":"<id>", …}` inside a request, then what tracing's JSON format
/// writes. That format has no hook for extra fields, so its object is written to a buffer
/// and the id spliced in after the opening brace (lines are rare; requests are not).
struct JsonWithRequestId(Format<Json>);

impl<S, N> FormatEvent<S, N> for JsonWithRequestId
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    Format<Json>: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let spliced = request_scope::with_id(|id| {
            let mut line = String::new();
            self.0.format_event(ctx, Writer::new(&mut line), event)?;
            let Some(rest) = line.strip_prefix('{') else {
                return writer.write_str(&line);
            };
            let id = serde_json::to_string(id).map_err(|_| fmt::Error)?;
            write!(writer, "{{\"request_id\":{id},{rest}")
        });
        match spliced {
            Some(result) => result,
            None => self.0.format_event(ctx, writer, event),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_log_filter_that_does_not_parse_is_refused() {
        assert!(filter_from("info").is_ok());
        assert!(filter_from("statuspulse_auth=debug,actix_web=warn").is_ok());
        assert!(filter_from("").is_ok());
        for bad in ["[[[bad", "foo=notalevel"] {
            let error = filter_from(bad).unwrap_err();
            assert!(error.starts_with("RUST_LOG: "), "{error}");
        }
    }

    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The lines `log` writes through a subscriber of `format`.
    fn lines(format: LogFormat, log: impl FnOnce()) -> Vec<String> {
        lines_with(format, EnvFilter::new("info"), log)
    }

    fn lines_with(format: LogFormat, filter: EnvFilter, log: impl FnOnce()) -> Vec<String> {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let dispatch = dispatch(format, false, filter, move || writer.clone());
        tracing::dispatcher::with_default(&dispatch, log);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    /// Found by a black-box pass: with `RUST_LOG=info` set, each malformed request logged an
    /// `ERROR` line without a request id.
    #[test]
    fn parse_errors_of_clients_are_off_unless_rust_log_asks_for_them() {
        for (rust_log, kept) in [
            ("", false),
            ("info", false),
            ("warn,statuspulse_auth=trace", false),
            ("debug", true),
            ("TRACE,tokio=info", true),
            ("info,actix_http=error", true),
            ("info,actix_http::h1::dispatcher=error", true),
        ] {
            let lines = lines_with(LogFormat::Text, filter_from(rust_log).unwrap(), || {
                tracing::error!(target: "actix_http::h1::dispatcher", "stream error: request parse error");
                tracing::error!(target: "statuspulse_auth::startup", "ours");
            });
            let parse_error = lines.iter().any(|line| line.contains("stream error"));
            assert_eq!(parse_error, kept, "RUST_LOG={rust_log:?}: {lines:?}");
            assert!(lines.iter().any(|line| line.contains("ours")), "{lines:?}");
        }
    }

    #[test]
    fn libraries_that_quote_payloads_stay_at_info_whatever_rust_log_says() {
        for rust_log in [
            "trace",
            "debug,tokio_postgres=trace",
            "debug,tokio_postgres::query=debug,actix_http::h1::decoder=trace",
        ] {
            let lines = lines_with(LogFormat::Text, filter_from(rust_log).unwrap(), || {
                tracing::debug!(target: "tokio_postgres::query", "parameters: [\"sp_live_x\"]");
                tracing::trace!(target: "tokio_postgres", "sp_live_y");
                tracing::debug!(target: "actix_http::h1::decoder", "illegal Content-Length: \"sp_live_z\"");
                tracing::info!(target: "tokio_postgres::connection", "kept");
                tracing::debug!(target: "statuspulse_auth::verify", "ours");
            });
            assert_eq!(lines.len(), 2, "{rust_log}: {lines:?}");
            assert!(lines[0].contains("kept"), "{lines:?}");
            assert!(lines[1].contains("ours"), "{lines:?}");
        }
    }

    fn log_in_and_out_of_a_request() {
        request_scope::run_sync("req-7".into(), || {
            tracing::info!(key_id = "key_1", "inside");
        });
        tracing::info!("outside");
    }

    #[test]
    fn text_lines_of_a_request_end_with_its_id() {
        let lines = lines(LogFormat::Text, log_in_and_out_of_a_request);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].ends_with("inside key_id=\"key_1\" request_id=req-7"),
            "{}",
            lines[0]
        );
        assert!(lines[1].ends_with("outside"), "{}", lines[1]);
    }

    #[test]
    fn json_lines_of_a_request_carry_its_id() {
        let lines = lines(LogFormat::Json, log_in_and_out_of_a_request);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let inside: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(inside["request_id"], "req-7");
        assert_eq!(inside["message"], "inside");
        assert_eq!(inside["key_id"], "key_1");
        assert_eq!(inside["level"], "INFO");
        let outside: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(outside["message"], "outside");
        assert!(outside.get("request_id").is_none(), "{outside}");
    }

    #[actix_web::test]
    async fn the_id_follows_the_request_across_awaits() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let dispatch = dispatch(LogFormat::Text, false, EnvFilter::new("info"), move || {
            writer.clone()
        });
        let _guard = tracing::dispatcher::set_default(&dispatch);
        let request = |id: &str| {
            request_scope::run(id.into(), async {
                tokio::task::yield_now().await;
                tracing::info!("after a yield");
            })
        };
        futures_util::future::join(request("a-1"), request("b-2")).await;
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("after a yield request_id=a-1"), "{text}");
        assert!(text.contains("after a yield request_id=b-2"), "{text}");
    }
}
