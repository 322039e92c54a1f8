//! The stop and reload signals of the long-running commands (run, demo, sandbox).

use std::sync::{Mutex, OnceLock};

use tokio_util::sync::CancellationToken;

/// How many SIGUSR1 have arrived, counted from the moment `main` installed the handler until
/// `run` takes the receiver.
static PAUSE_SIGNAL: OnceLock<Mutex<Option<tokio::sync::watch::Receiver<u64>>>> = OnceLock::new();

/// Installs the SIGUSR1 handler ("pause, hold everything"): call it before anything else, on the
/// runtime, since SIGUSR1's default action kills the process. A task counts every SIGUSR1 from
/// then on, so that one arriving while the daemon starts is seen before its first cycle (a
/// `Signal` polled only then might not have been told of it yet).
pub fn install_pause_signal() {
    let kept = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
        Ok(mut signal) => {
            let (count, seen) = tokio::sync::watch::channel(0u64);
            tokio::spawn(async move {
                while signal.recv().await.is_some() {
                    count.send_modify(|n| *n += 1);
                }
            });
            Some(seen)
        }
        Err(e) => {
            eprintln!("warning: cannot handle SIGUSR1 ({e}); pause through the operator API");
            None
        }
    };
    let _ = PAUSE_SIGNAL.set(Mutex::new(kept));
}

/// The count of SIGUSR1 [`install_pause_signal`] keeps, for the daemon (once).
pub(crate) fn take_pause_signal() -> Option<tokio::sync::watch::Receiver<u64>> {
    PAUSE_SIGNAL
        .get()?
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Cancels `shutdown` on the first SIGTERM/SIGINT and `hard_stop` on the second.
pub fn spawn_signal_handler(shutdown: CancellationToken, hard_stop: CancellationToken) {
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stop signal received; a second one exits at once");
        shutdown.cancel();
        shutdown_signal().await;
        hard_stop.cancel();
    });
}

/// Notifies `reload` on every SIGHUP.
pub(crate) fn spawn_reload_handler(reload: std::sync::Arc<tokio::sync::Notify>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!(
                "cannot listen for SIGHUP; reload the policy and the API keys through the operator API"
            );
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the policy and the operator API keys");
            reload.notify_one();
        }
    });
}
