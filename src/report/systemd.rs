//! systemd's view of the daemon: readiness, the status line (`systemctl status`), the
//! watchdog, and the same status in the state directory (`daemon.json`) for
//! `ecs-patchd status`. Outside systemd (no `NOTIFY_SOCKET`) the notifications do nothing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sd_notify::NotifyState;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::atomic_file;
use crate::cycle::Cycle;
use crate::journal;

/// The daemon's status file in the state directory.
pub const STATUS_FILE: &str = "daemon.json";

/// What the daemon is doing, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DaemonStatus {
    /// The daemon's process id.
    pub pid: u32,
    /// When it started.
    #[serde(with = "humantime_serde")]
    pub since: Option<SystemTime>,
    /// What it does now, or what it waits for.
    pub activity: String,
    /// When it next looks for updates.
    #[serde(with = "humantime_serde")]
    pub next_check: Option<SystemTime>,
    /// When the next maintenance window opens (`None`: open now, or no windows).
    #[serde(with = "humantime_serde")]
    pub next_window: Option<SystemTime>,
}

impl DaemonStatus {
    /// The status file of `state_dir`, if a daemon wrote one and still runs.
    pub fn read(state_dir: &Path) -> Option<Self> {
        let status: Self = journal::read_file(state_dir, STATUS_FILE).ok().flatten()?;
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(status.pid as i32), None).is_ok();
        alive.then_some(status)
    }
}

/// Keeps the status line in systemd and in the state directory.
pub struct StatusLine {
    state_dir: PathBuf,
    /// The status, and whether it was published yet.
    status: Mutex<(DaemonStatus, bool)>,
}

impl StatusLine {
    /// A status line for the daemon whose state directory is `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        let status =
            DaemonStatus { pid: std::process::id(), since: Some(SystemTime::now()), ..DaemonStatus::default() };
        Self { state_dir: state_dir.to_path_buf(), status: Mutex::new((status, false)) }
    }

    /// Changes the status with `change`, then publishes it (if it changed: an idle daemon
    /// looking at its journal every few minutes writes nothing).
    pub fn update(&self, change: impl FnOnce(&mut DaemonStatus)) {
        let mut guard = self.status.lock().expect("status lock");
        let (status, published) = &mut *guard;
        let before = status.clone();
        change(status);
        if *published && *status == before {
            return;
        }
        *published = true;
        notify(&[NotifyState::Status(&status.activity)]);
        let bytes = serde_json::to_vec_pretty(&*status).expect("the status serializes");
        // The daemon says it started before its first cycle creates the state directory.
        let written = atomic_file::create_private_dir(&self.state_dir)
            .and_then(|()| atomic_file::replace(&self.state_dir.join(STATUS_FILE), &bytes, 0o644));
        if let Err(e) = written {
            warn!("cannot write the daemon status in {}: {e}", self.state_dir.display());
        }
    }
}

impl StatusLine {
    /// Removes the status file (the daemon is stopping).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(self.state_dir.join(STATUS_FILE));
    }
}

impl super::Reporter for StatusLine {
    fn entered(&self, cycle: &Cycle) {
        let activity = format!("cycle {}: {}", cycle.id, cycle.state.summary());
        self.update(|s| s.activity = activity);
    }

    fn waiting(&self, cycle: &Cycle, reason: &str) {
        let activity = format!("cycle {}: {}: {reason}", cycle.id, cycle.state.name());
        self.update(|s| s.activity = activity);
    }
}

/// Tells systemd the daemon is ready (`Type=notify`), with a first status line.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// How often to ping the watchdog: half its timeout (`WatchdogSec=`), when it is on.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec) / 2)
}

/// Tells the watchdog the daemon is alive.
pub fn ping() {
    notify(&[NotifyState::Watchdog]);
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        warn!("cannot notify systemd: {e}");
    }
}
