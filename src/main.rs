//! `statuspulse-auth`: parses the command line and configuration, then hands over to
//! [`statuspulse_auth::startup`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use statuspulse_auth::config::Settings;
use statuspulse_auth::error_chain::error_chain;
use statuspulse_auth::log_writer;
use statuspulse_auth::startup::{open_store, Application, ApplicationHandle};
use statuspulse_auth::stop_signals::StopSignals;

/// mimalloc instead of glibc's malloc: requests allocate on HTTP worker threads and their
/// audit events are freed on the batcher's, a pattern glibc handles with arena locks and
/// consolidation (a quarter of the hot path's time in `perf`); measured in the criterion
/// bench, the whole verification went from ≈2.4 µs to ≈2.0 µs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "statuspulse-auth",
    version,
    about = "Authentication engine for the StatusPulse API"
)]
struct Cli {
    /// A TOML file of settings (same names as the STATUSPULSE_* variables, lower-case,
    /// without the prefix); the environment overrides it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the public and admin listeners (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            report(&error.to_string());
            return ExitCode::from(2);
        }
    };
    let filter = match statuspulse_auth::telemetry::filter_from_env() {
        Ok(filter) => filter,
        Err(error) => {
            report(&error.to_string());
            return ExitCode::from(2);
        }
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let log = match log_writer::spawn(std::io::stdout(), Arc::default()) {
        Ok(log) => log,
        Err(error) => {
            report(&format!("cannot start the log's writer thread: {error}"));
            return ExitCode::FAILURE;
        }
    };
    statuspulse_auth::telemetry::init(settings.log_format, ansi, filter, log.clone());
    let runtime = match statuspulse_auth::startup::main_runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            report(&format!("cannot start the async runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    let serving_log = log.clone();
    let result = actix_web::rt::System::with_tokio_rt(move || runtime).block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(settings, serving_log).await,
            Command::Migrate => migrate(settings).await,
        }
    });
    log.flush_within(LOG_FLUSH_AT_EXIT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            report(&message);
            ExitCode::FAILURE
        }
    }
}

/// How long the exit waits for the log's last lines to be written: a reader that stopped
/// reading must not keep a stopped server from exiting.
const LOG_FLUSH_AT_EXIT: Duration = Duration::from_secs(2);
/// The same after a second signal, which asks to exit at once.
const LOG_FLUSH_AT_FORCED_EXIT: Duration = Duration::from_millis(200);

/// A line on stderr for whoever started the program. Nothing is left to tell when stderr
/// itself cannot be written (a full disk, a closed pipe): the exit status says it failed.
fn report(message: &str) {
    let _ = writeln!(std::io::stderr(), "statuspulse-auth: {message}");
}

async fn serve(settings: Settings, log: log_writer::QueuedLog) -> Result<(), String> {
    let backend = settings.store_kind().name();
    let data_dir = settings.data_dir.clone();
    raise_open_file_limit();
    // Before anything is served: from here on no stop signal ends the process abruptly.
    let mut signals = StopSignals::listen();
    let app = tokio::select! {
        built = Application::build(settings.clone(), log.dropped_counter()) => {
            built.map_err(|e| e.to_string())?
        }
        // Nothing served yet, nothing to finish: exits at once, as the signal's default
        // action did (a start waiting for an unreachable database, say).
        signal = signals.next() => {
            tracing::info!(signal, "stopped while starting");
            log.flush_within(LOG_FLUSH_AT_FORCED_EXIT);
            std::process::exit(130);
        }
    };
    if let Some(token) = &app.generated_admin_token {
        // Printed once, never through the log, and on stderr: stdout carries the log, which
        // in JSON form must hold only JSON lines. Only its hash is kept, and not even that
        // when no one could be shown the token: the next start makes another.
        let shown = writeln!(
            std::io::stderr(),
            "\nAdmin token (shown once; only its hash is stored in {}):\n\n    {token}\n",
            data_dir.display()
        );
        if let Err(error) = shown {
            let _ = statuspulse_auth::secrets::forget_admin_token_hash(&data_dir);
            app.keep_rate_counts_for_next_start();
            return Err(format!(
                "cannot show the generated admin token on stderr ({error}); it was not kept"
            ));
        }
    }
    tracing::info!(
        public = %format!("http://{}:{}", settings.public_addr.ip(), app.public_port()),
        admin = %format!("http://{}:{}", settings.admin_addr.ip(), app.admin_port()),
        storage = backend,
        queue = "in-process",
        "statuspulse-auth listening"
    );
    actix_web::rt::spawn(stop_on_signal(signals, app.handle(), log));
    app.run_until_stopped()
        .await
        .map_err(|e| format!("server error: {e}"))
}

/// Raises the soft limit of open files to the hard one. Every connection is a file, and the
/// usual soft limit (1,024) refuses connections long before memory or CPU run out; Go's
/// runtime raises it the same way for every Go server.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    /// When the hard limit is "unlimited", which the kernel refuses as a soft limit.
    const CEILING: u64 = 1 << 20;
    let limit = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let target = limit.maximum.unwrap_or(CEILING).min(CEILING);
    if limit.current.is_none_or(|current| current >= target) {
        return;
    }
    let raised = Rlimit {
        current: Some(target),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(open_files = target, "open-file limit raised"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

/// On the first stop signal (SIGINT from Ctrl-C, SIGTERM, and the others of
/// [`StopSignals`]), stops gracefully: the listeners stop accepting, requests in flight finish (for up to 30 s), then `run_until_stopped` stores
/// the pending audit events. A second signal exits at once; audit events not yet stored are
/// still in the spool, and the next start stores them.
async fn stop_on_signal(
    mut signals: StopSignals,
    handle: ApplicationHandle,
    log: log_writer::QueuedLog,
) {
    if !signals.left_ignored.is_empty() {
        tracing::info!(
            signals = %signals.left_ignored.join(" "),
            "ignored when the program started (as under nohup): left ignored"
        );
    }
    let signal = signals.next().await;
    tracing::info!(
        signal,
        "stopping: finishing requests in flight, then storing audit events (send the signal again to exit at once)"
    );
    actix_web::rt::spawn(async move { handle.stop(true).await });
    let signal = signals.next().await;
    tracing::warn!(signal, "second signal: exiting now");
    log.flush_within(LOG_FLUSH_AT_FORCED_EXIT);
    std::process::exit(130);
}

async fn migrate(settings: Settings) -> Result<(), String> {
    let store = open_store(&settings).await.map_err(|e| e.to_string())?;
    store
        .migrate()
        .await
        .map_err(|e| format!("migrations failed: {}", error_chain(&e)))?;
    tracing::info!("migrations applied");
    Ok(())
}
