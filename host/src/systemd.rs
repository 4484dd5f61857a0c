//! systemd integration for `Type=notify` units: READY=1 once players can
//! connect, STOPPING=1 on shutdown, and WATCHDOG=1 every half of
//! `WATCHDOG_USEC` from a task on the async runtime, so a wedged runtime
//! stops the pings and systemd restarts the host. Without `NOTIFY_SOCKET`
//! all of this does nothing.

use sd_notify::NotifyState;
use std::time::Duration;

/// Players can connect.
pub fn ready() {
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// Shutdown began.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// The watchdog period systemd asked for, as sd_watchdog_enabled(3)
/// reads it: `WATCHDOG_USEC`, for this process if `WATCHDOG_PID` names one.
fn watchdog_usec() -> Option<u64> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?.parse().ok().filter(|u| *u > 0)?;
    match std::env::var("WATCHDOG_PID") {
        Ok(pid) if pid.parse() != Ok(std::process::id()) => None,
        _ => Some(usec),
    }
}

/// Starts the watchdog pings if systemd asked for them.
pub fn spawn_watchdog() {
    let Some(usec) = watchdog_usec() else {
        return;
    };
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(1));
    tracing::info!(every_ms = every.as_millis() as u64, "systemd watchdog on");
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        loop {
            interval.tick().await;
            notify(&[NotifyState::Watchdog]);
        }
    });
}
