//! The signals that stop the server. Besides SIGINT and SIGTERM, the other signals that
//! people and programs send to servers, and whose default action would end the process at
//! once, cutting off requests in flight (SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM), stop
//! it gracefully instead, so that `kill -HUP`, `kill -QUIT` or a stray `kill -USR1` costs
//! no answer. A signal that was
//! already ignored when the program started stays ignored: `nohup` starts a program with
//! SIGHUP ignored, and a handler would undo it. SIGINT and SIGTERM, the documented ways to
//! stop, are always handled.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// The signals handled, by name; the first two whatever their disposition at start.
const ALWAYS_HANDLED: [(&str, SignalKind); 2] = [
    ("SIGINT", SignalKind::interrupt()),
    ("SIGTERM", SignalKind::terminate()),
];
const HANDLED_UNLESS_IGNORED: [(&str, SignalKind); 5] = [
    ("SIGHUP", SignalKind::hangup()),
    ("SIGQUIT", SignalKind::quit()),
    ("SIGUSR1", SignalKind::user_defined1()),
    ("SIGUSR2", SignalKind::user_defined2()),
    ("SIGALRM", SignalKind::alarm()),
];

/// The stop signals as they arrive. Must be made inside a Tokio runtime, which then keeps
/// listening for them.
pub struct StopSignals {
    arrived: mpsc::UnboundedReceiver<&'static str>,
    /// Signals left alone because they were ignored at start, by name.
    pub left_ignored: Vec<&'static str>,
}

impl StopSignals {
    /// Starts listening. A signal that cannot be listened for is logged and left as it was:
    /// the others still stop the server.
    pub fn listen() -> StopSignals {
        let (sender, arrived) = mpsc::unbounded_channel();
        let mut left_ignored = Vec::new();
        let mut handled = ALWAYS_HANDLED.to_vec();
        for (name, kind) in HANDLED_UNLESS_IGNORED {
            if ignored_at_start(kind) {
                left_ignored.push(name);
            } else {
                handled.push((name, kind));
            }
        }
        for (name, kind) in handled {
            let mut stream = match signal(kind) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::error!(%error, signal = name, "cannot listen for a stop signal");
                    continue;
                }
            };
            let sender = sender.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if sender.send(name).is_err() {
                        return;
                    }
                }
            });
        }
        StopSignals {
            arrived,
            left_ignored,
        }
    }

    /// The next stop signal, by name.
    pub async fn next(&mut self) -> &'static str {
        match self.arrived.recv().await {
            Some(name) => name,
            // Every forwarding task holds a sender until its runtime ends, and this is
            // awaited on that runtime: never reached while anything awaits it.
            None => std::future::pending().await,
        }
    }
}

/// Whether the signal's disposition is "ignore": inherited through `exec` from whatever
/// started the program (`nohup`, a shell's background job), since nothing in this program
/// sets it.
#[allow(unsafe_code)]
fn ignored_at_start(kind: SignalKind) -> bool {
    let mut current = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: with a null new action, sigaction only reads the disposition into `current`,
    // which is valid for writes; it changes nothing.
    let queried =
        unsafe { libc::sigaction(kind.as_raw_value(), std::ptr::null(), current.as_mut_ptr()) };
    if queried != 0 {
        return false;
    }
    // SAFETY: sigaction succeeded, so it filled `current` (and zeroed memory is a valid
    // `sigaction` besides).
    let current = unsafe { current.assume_init() };
    current.sa_sigaction == libc::SIG_IGN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_seen_as_ignored_only_when_it_is() {
        // SIGWINCH is not among the stop signals: setting its disposition here disturbs
        // nothing else in the test process.
        let kind = SignalKind::window_change();
        assert!(
            !ignored_at_start(kind),
            "SIGWINCH's default is not 'ignore'"
        );
        set_disposition(kind, libc::SIG_IGN);
        let seen = ignored_at_start(kind);
        set_disposition(kind, libc::SIG_DFL);
        assert!(seen, "an ignored SIGWINCH is seen as ignored");
    }

    #[allow(unsafe_code)]
    fn set_disposition(kind: SignalKind, handler: libc::sighandler_t) {
        let mut action = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: a zeroed sigaction with SIG_IGN or SIG_DFL as its handler and an empty
        // mask is a valid action; no handler function is installed.
        let changed = unsafe {
            let action = action.as_mut_ptr();
            (*action).sa_sigaction = handler;
            libc::sigemptyset(&mut (*action).sa_mask);
            libc::sigaction(kind.as_raw_value(), action, std::ptr::null_mut())
        };
        assert_eq!(changed, 0);
    }
}
