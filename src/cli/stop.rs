//! Stopping on a signal, shared by `run` and the daemon: the cycle is asked to stop at its
//! next safe point, and a package transaction in flight is awaited, never killed.

/// Waits for SIGTERM (systemd stopping the unit) or SIGINT (Ctrl-C), asks the cycle to
/// stop at the next safe point, and resolves once no package transaction runs: a
/// transaction in flight is awaited (up to `packages.command_timeout`), never killed.
pub(super) async fn stop_requested() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::warn!("cannot listen for SIGTERM and SIGINT: a stop will not wait for a package transaction");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    stop_safely(name).await
}

/// Asks the cycle to stop at the next safe point (after `signal`), and resolves once no
/// package transaction runs.
pub(super) async fn stop_safely(name: &'static str) -> &'static str {
    ecs_patchd::shutdown::request();
    if ecs_patchd::shutdown::in_transaction() {
        tracing::warn!("{name}: letting the package transaction in progress finish before stopping");
    }
    ecs_patchd::shutdown::quiet().await;
    name
}
