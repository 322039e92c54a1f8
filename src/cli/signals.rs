//! The stop and reload signals of the long-running commands (run, demo, sandbox).

use tokio_util::sync::CancellationToken;

/// Resolves when SIGINT or SIGTERM arrives.
pub(crate) async fn shutdown_signal() {
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
pub(crate) fn spawn_signal_handler(shutdown: CancellationToken, hard_stop: CancellationToken) {
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
