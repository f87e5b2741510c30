//! `ecs-patchd daemon`: the service. It resumes a cycle in progress at once, then looks for
//! updates on a jittered interval and starts a cycle inside the maintenance windows. Idle,
//! it sleeps until the next check, the next window, or its next look at the journal (a file
//! read, every few minutes, so that a cycle a `run` left half-done is finished): no AWS call
//! and no AWS client (whose connection pools keep timers) in between. Under systemd's
//! watchdog it also pings every `WatchdogSec`/2. When its own cycle upgraded ecs-patchd, it
//! runs the new binary in its place before going on.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use ecs_patchd::config::{self, Settings, Source};
use ecs_patchd::cycle::Cycle;
use ecs_patchd::error::{Error, Result};
use ecs_patchd::journal::{self, Journal};
use ecs_patchd::report::metrics;
use ecs_patchd::report::systemd::{self, StatusLine};
use ecs_patchd::window::Openness;

use ecs_patchd::wiring::{self, Attempt, Reporting, ThisInstance};

use super::stop::stop_safely;

/// How long the daemon first waits before trying again when it cannot learn who it is (IMDS
/// or credentials not answering yet, right after boot); the wait doubles up to
/// [`IDENTITY_RETRY_MAX`]. Short, because a cycle to resume after a reboot waits on it.
const IDENTITY_RETRY_FIRST: Duration = Duration::from_secs(2);
/// The longest wait between two attempts to learn the instance's identity.
const IDENTITY_RETRY_MAX: Duration = Duration::from_secs(30);
/// The first check comes within this long of the start (spread over the fleet).
const FIRST_CHECK_WITHIN: Duration = Duration::from_secs(10 * 60);
/// A window's opening is spread over at most this long (and a quarter of the window), so
/// that the fleet does not look at once.
const WINDOW_SPREAD: Duration = Duration::from_secs(5 * 60);
/// After a failed attempt (ECS or the lease store unreachable, a failed step that stopped
/// the run mid-cycle), the next one waits this long, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(60);
/// The longest wait between two failed attempts.
const RETRY_MAX: Duration = Duration::from_secs(30 * 60);
/// How often the idle daemon reads the journal, to finish a cycle a `run` left half-done.
/// As long as the watchdog's ping interval (`WatchdogSec=20min` / 2): tokio's timer wheel
/// wakes a few times on the way to a long deadline, so fewer, longer timers wake less.
const JOURNAL_LOOK: Duration = Duration::from_secs(10 * 60);

/// While another process (a `run` by hand or from SSM) holds the journal, the daemon looks
/// again this often.
const BUSY_LOOK: Duration = Duration::from_secs(30);

/// What ended a wait.
enum Woken {
    Due,
    Stop(&'static str),
}

/// What a signal or the clock asked for, during a wait.
enum Wake {
    Due,
    Reload,
    Stop(&'static str),
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(source: Source, settings: Settings) -> Result<ExitCode> {
    let mut daemon = Daemon {
        signals: Signals::new()?,
        status: Arc::new(StatusLine::new(&settings.paths.state_dir)),
        source,
        settings,
    };
    let ended = daemon.serve().await;
    systemd::stopping();
    daemon.status.remove();
    ended
}

struct Daemon {
    signals: Signals,
    status: Arc<StatusLine>,
    source: Source,
    settings: Settings,
}

impl Daemon {
    async fn serve(&mut self) -> Result<ExitCode> {
        let own_binary = OwnBinary::at_start();
        // Who we are, before READY: systemd's "started" then means "knows its instance".
        // The AWS configuration and IMDS client are made afresh for each attempt and dropped
        // after it: their connection pools keep timers running while they live.
        let mut identity_retry = IDENTITY_RETRY_FIRST;
        let instance = loop {
            match ThisInstance::find().await {
                Ok(found) => break found.document,
                Err(e @ Error::Config(_)) => return Err(e),
                Err(e) => {
                    let again = humantime::format_duration(identity_retry);
                    warn!("cannot learn this instance's identity yet (trying again in {again}): {e}");
                    self.status.update(|s| s.activity = format!("waiting for the instance identity: {e}"));
                    if let Woken::Stop(_) = self.wait(identity_retry).await {
                        return Ok(ExitCode::SUCCESS);
                    }
                    identity_retry = (identity_retry * 2).min(IDENTITY_RETRY_MAX);
                }
            }
        };
        let instance_id = instance.instance_id.clone();
        self.status.update(|s| s.activity = format!("instance {instance_id}: starting"));
        systemd::ready(&format!("instance {instance_id}: starting"));
        let backend = self.settings.coordination.backend;
        info!(instance = %instance_id, region = %instance.region, backend = backend.name(), "ecs-patchd daemon started");
        if let Some(line) = backend.announcement() {
            warn!("{line}");
        }
        if let Some(every) = systemd::watchdog_interval() {
            // The ping runs on the runtime that drives the cycle: a dead or wedged runtime
            // stops it. A step stuck in an external command is bounded by its own timeout.
            tokio::spawn(async move {
                loop {
                    systemd::ping();
                    tokio::time::sleep(every).await;
                }
            });
        }
        serve_metrics(&self.settings);
        // A corrupt journal is said at start, not at the first check minutes later (each
        // check says it again, and touches nothing, until it is mended).
        if let Err(e) = journal::read::<Cycle>(&self.settings.paths.state_dir) {
            error!("{e}");
            self.status.update(|s| s.activity = e.to_string());
        }

        let mut next_check = SystemTime::now() + jitter(FIRST_CHECK_WITHIN.min(self.settings.schedule.check_interval));
        let mut retry = RETRY_FIRST;
        // What the last look found holding the journal, said once.
        let mut busy: Option<String> = None;
        // The first check runs window or not: a drain this host's cycle left behind without
        // its journal (a wiped or restored disk, then a boot) is finished at once, not when
        // the next window opens; outside the windows nothing new starts.
        let mut first_check = true;
        loop {
            let schedule = wiring::schedule(&self.settings)?;
            let now = SystemTime::now();
            let window = schedule.at(now);
            // A look at the journal is a file read; its lock is taken only for work, and only
            // when no `run` holds it (that run then finishes its cycle).
            let dir = &self.settings.paths.state_dir;
            let in_progress = journal::read::<Cycle>(dir).ok().flatten().is_some_and(|c| !c.state.is_done());
            let due = now >= next_check && (window.is_open() || first_check);
            let journal = match (in_progress || due).then(|| Journal::open(dir)) {
                Some(Ok(journal)) => {
                    busy = None;
                    Some(journal)
                }
                // Another process drives the cycle: said once, looked at again now and then.
                Some(Err(Error::Busy(why))) => {
                    if busy.as_deref() != Some(why.as_str()) {
                        let every = humantime::format_duration(BUSY_LOOK);
                        info!("{why}: not ours to drive; looking again every {every}");
                        self.status.update(|s| s.activity = format!("{why}: waiting for it to finish"));
                        busy = Some(why);
                    }
                    if let Woken::Stop(signal) = self.wait(BUSY_LOOK).await {
                        info!("stopped by {signal}");
                        return Ok(ExitCode::SUCCESS);
                    }
                    continue;
                }
                Some(Err(e)) => return Err(e),
                None => None,
            };
            if let Some(journal) = journal {
                let reporting = Reporting::new(&self.settings, Some(Arc::clone(&self.status)));
                let this = ThisInstance::again(&instance).await;
                let attempt = Attempt {
                    settings: &self.settings,
                    journal: &journal,
                    instance: &this,
                    schedule: Some(schedule.clone()),
                    hand_off_reboot: false,
                    reporting: &reporting,
                };
                let result = attempt.run(stopped(&mut self.signals.terminate, &mut self.signals.interrupt)).await;
                if let Err(Error::Stopped(why)) = &result {
                    info!("{why}");
                    return Ok(ExitCode::SUCCESS);
                }
                drop(journal);
                if own_binary.replaced() {
                    info!("ecs-patchd was upgraded: running the new binary in this one's place");
                    let e = own_binary.exec();
                    warn!("cannot run the new binary (this one runs on until the next start): {e}");
                }
                next_check = SystemTime::now() + jitter_around(self.settings.schedule.check_interval);
                let in_progress = journal::read::<Cycle>(dir).ok().flatten().is_some_and(|c| !c.state.is_done());
                // A mistake in the setup (configuration, a missing table or permission) does
                // not mend by waiting: with no cycle to finish, the daemon stops (exit 78,
                // which the unit does not restart) once it has reported it.
                if let (Some(why), false) = (wiring::setup_error(&result), in_progress) {
                    error!("the daemon stops on a mistake in the setup: fix it, then start the daemon again");
                    return Err(Error::Config(why));
                }
                match result {
                    // The cycle logged its outcome as it reached it.
                    Ok(_) => {
                        retry = RETRY_FIRST;
                        first_check = false;
                    }
                    // Not now, nothing changed (report-only, leaving, a service that cannot
                    // move its tasks): the next regular check looks again.
                    Err(Error::Deferred(why)) => {
                        first_check = false;
                        info!("{why}");
                        self.status.update(|s| s.activity = why.clone());
                        retry = RETRY_FIRST;
                    }
                    Err(e) => {
                        // A configuration error with a cycle in progress does not stop the
                        // daemon: the cycle must be finished; a fixed configuration is picked
                        // up by SIGHUP.
                        warn!("{e}; trying again in {}", humantime::format_duration(retry));
                        self.status.update(|s| {
                            s.activity = format!(
                                "the last attempt failed ({e}); trying again in {}",
                                humantime::format_duration(retry)
                            );
                        });
                        if let Woken::Stop(signal) = self.wait(retry).await {
                            info!("stopped by {signal}");
                            return Ok(ExitCode::SUCCESS);
                        }
                        retry = (retry * 2).min(RETRY_MAX);
                        // The first check has not answered yet (ECS or the credentials not
                        // ready after a boot): it is tried again now, window or not.
                        if first_check {
                            next_check = SystemTime::now();
                        }
                    }
                }
                continue;
            }
            // Outside the windows, the next check falls inside the next one, whatever the
            // interval says, so that no window is skipped (chosen once: the status stays).
            if let Openness::ClosedUntil(opens) = window
                && !first_check
            {
                let closes = schedule.at(opens).closes_at().unwrap_or(opens);
                if !(opens..closes).contains(&next_check) {
                    next_check =
                        opens + jitter(WINDOW_SPREAD.min(closes.duration_since(opens).unwrap_or_default() / 4));
                }
            }
            let wake = next_check;
            self.status.update(|s| {
                s.next_check = Some(wake);
                s.next_window = match window {
                    Openness::ClosedUntil(opens) => Some(opens),
                    _ => None,
                };
                s.activity = match window {
                    Openness::ClosedUntil(opens) => format!(
                        "idle: outside the maintenance window; next check {}, when the window opens {}",
                        schedule.local(wake),
                        schedule.local(opens)
                    ),
                    _ => format!("idle: next check {}", schedule.local(wake)),
                };
            });
            let sleep = wake.duration_since(SystemTime::now()).unwrap_or_default().min(JOURNAL_LOOK);
            if let Woken::Stop(signal) = self.wait(sleep).await {
                info!("stopped by {signal}");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }

    /// Sleeps for `wait`, or until SIGTERM or SIGINT; a SIGHUP on the way reloads the
    /// configuration (a bad one is logged and the old one kept).
    async fn wait(&mut self, wait: Duration) -> Woken {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let signals = &mut self.signals;
            let wake = tokio::select! {
                _ = tokio::time::sleep_until(until) => Wake::Due,
                _ = signals.hangup.recv() => Wake::Reload,
                signal = stopped(&mut signals.terminate, &mut signals.interrupt) => Wake::Stop(signal),
            };
            match wake {
                Wake::Due => return Woken::Due,
                Wake::Reload => self.reload(),
                Wake::Stop(signal) => return Woken::Stop(signal),
            }
        }
    }

    fn reload(&mut self) {
        match config::load(&self.source) {
            Ok(reloaded) => {
                if reloaded.paths.state_dir != self.settings.paths.state_dir
                    || reloaded.report.metrics_listen != self.settings.report.metrics_listen
                {
                    warn!("paths.state_dir and report.metrics_listen take effect at the next start");
                }
                info!("configuration reloaded");
                self.settings = Settings { paths: self.settings.paths.clone(), ..reloaded };
            }
            Err(e) => warn!("the configuration was not reloaded (the old one stays in force): {e}"),
        }
    }
}

/// SIGHUP, SIGTERM and SIGINT, listened to for the daemon's whole life (a signal between
/// two listeners would be lost).
struct Signals {
    hangup: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        let listen = |kind| signal(kind).map_err(|e| Error::Host(format!("cannot listen for signals: {e}")));
        Ok(Self {
            hangup: listen(SignalKind::hangup())?,
            terminate: listen(SignalKind::terminate())?,
            interrupt: listen(SignalKind::interrupt())?,
        })
    }
}

/// Resolves after SIGTERM or SIGINT, once no package transaction runs.
async fn stopped(
    terminate: &mut tokio::signal::unix::Signal,
    interrupt: &mut tokio::signal::unix::Signal,
) -> &'static str {
    let name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    stop_safely(name).await
}

/// The file the daemon was started from. When a package transaction of the daemon's own
/// cycle replaces it (ecs-patchd upgraded through its own cycle), the package's scripts
/// cannot restart the daemon, which waits for that very transaction: the daemon runs the new
/// binary itself, between two attempts.
struct OwnBinary(Option<PathBuf>);

impl OwnBinary {
    fn at_start() -> Self {
        Self(std::env::current_exe().ok())
    }

    /// Whether the file now holds another binary than the one this process runs.
    fn replaced(&self) -> bool {
        self.0.as_deref().is_some_and(|path| other_file(path, Path::new("/proc/self/exe")))
    }

    /// Replaces this process with the file's binary, with the same arguments and environment
    /// (NOTIFY_SOCKET, WATCHDOG_USEC): the pid stays, so systemd sees no stop. The journal's
    /// lock and every other descriptor close on exec. Returns only on failure.
    fn exec(&self) -> Error {
        let cstring = |bytes: &[u8]| CString::new(bytes).map_err(|e| Error::Host(format!("{e}")));
        // sd_watchdog_enabled(3): the manager expects keep-alives from this process "if the
        // $WATCHDOG_USEC environment variable is set, and the $WATCHDOG_PID variable is unset
        // or set to the PID of the current process": exec keeps both the pid and the variables.
        let run = || -> Result<std::convert::Infallible> {
            let path = self.0.as_deref().ok_or_else(|| Error::Host("the daemon's own path is unknown".into()))?;
            let args = std::env::args_os().map(|a| cstring(a.as_bytes())).collect::<Result<Vec<_>>>()?;
            nix::unistd::execv(&cstring(path.as_os_str().as_bytes())?, &args)
                .map_err(|e| Error::Host(format!("cannot execute {}: {e}", path.display())))
        };
        let Err(e) = run();
        e
    }
}

/// Whether `a` and `b` are different files (device and inode); false when either cannot be read.
fn other_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) != (b.dev(), b.ino()),
        _ => false,
    }
}

/// Starts the metrics server when `report.metrics_listen` is set. It is bound once, at
/// start: a reload does not move it.
fn serve_metrics(settings: &Settings) {
    let Ok(address) = settings.report.metrics_listen.parse() else {
        return;
    };
    let dir = settings.paths.state_dir.clone();
    tokio::spawn(async move {
        if let Err(e) = metrics::serve(address, dir).await {
            warn!("cannot serve metrics on {address}: {e}");
        }
    });
}

/// A random wait between zero and `up_to`.
fn jitter(up_to: Duration) -> Duration {
    up_to.mul_f64(rand::rng().random_range(0.0..1.0))
}

/// `every`, give or take a tenth, so that a fleet started together drifts apart.
fn jitter_around(every: Duration) -> Duration {
    every.mul_f64(rand::rng().random_range(0.9..1.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_replaced_as_packages_replace_files_is_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let installed = dir.path().join("ecs-patchd");
        let running = dir.path().join("running"); // as /proc/self/exe: the inode that runs
        std::fs::write(&installed, "old").unwrap();
        std::fs::hard_link(&installed, &running).unwrap();
        assert!(!other_file(&installed, &running));
        // dpkg and rpm write the new file beside the old one and rename it over.
        std::fs::write(dir.path().join("ecs-patchd.new"), "new").unwrap();
        std::fs::rename(dir.path().join("ecs-patchd.new"), &installed).unwrap();
        assert!(other_file(&installed, &running));
        assert!(!other_file(&dir.path().join("gone"), &running), "an unreadable file is no upgrade");
    }

    #[test]
    fn the_running_binary_is_not_replaced() {
        assert!(!OwnBinary::at_start().replaced());
    }
}
