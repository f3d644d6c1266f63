//! The shutdown signal of the real process: the first SIGTERM or SIGINT. Tests pass their own
//! future to [`crate::ingress::server::run`] instead. SIGHUP never stops fanout.

use tokio::signal::unix::{signal, SignalKind};

/// Completes on the first SIGTERM or SIGINT.
pub async fn signal_received() {
    let mut term = signal(SignalKind::terminate())
        .expect("installing a SIGTERM handler works in a tokio runtime");
    let mut int = signal(SignalKind::interrupt())
        .expect("installing a SIGINT handler works in a tokio runtime");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        signal = name,
        "shutting down: no new connections, draining lanes"
    );
}

/// Logs and ignores every SIGHUP (a process with no TLS certificate to reload).
pub fn ignore_hangup() {
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: nothing to reload (no TLS listener); ignored");
        }
    });
}
