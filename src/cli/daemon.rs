//! `ecs-patchd daemon`: the service. It resumes a cycle in progress at once, then looks for
//! updates on a jittered interval and starts a cycle inside the maintenance windows. Idle,
//! it sleeps until the next check or window (and the watchdog ping, when systemd asks for
//! one): no AWS call, no wake-up in between.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use ecs_patchd::config::{self, Settings, Source};
use ecs_patchd::cycle::{Cycle, Machine};
use ecs_patchd::error::{Error, Kind, Result};
use ecs_patchd::journal::{self, Journal};
use ecs_patchd::lifecycle::Ec2Lifecycle;
use ecs_patchd::report::metrics;
use ecs_patchd::report::systemd::{self, StatusLine};
use ecs_patchd::window::Openness;

use super::{Next, Reporting, agent, drive, ports, resolve, schedule, this_instance};

/// How long the daemon waits before trying again when it cannot learn who it is (IMDS,
/// credentials or the agent not answering yet, right after boot).
const IDENTITY_RETRY: Duration = Duration::from_secs(30);
/// The first check comes within this long of the start (spread over the fleet).
const FIRST_CHECK_WITHIN: Duration = Duration::from_secs(10 * 60);
/// A window's opening is spread over this long, so the fleet does not look at once.
const WINDOW_SPREAD: Duration = Duration::from_secs(5 * 60);
/// How long the daemon waits before resuming a cycle whose run stopped on an error (the
/// journal busy with a `run` by hand, ECS or the lease store unreachable).
const RESUME_RETRY: Duration = Duration::from_secs(60);

/// What ended a wait.
enum Woken {
    Due,
    Reload,
    Stop(&'static str),
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(source: Source, mut settings: Settings) -> Result<ExitCode> {
    let status = Arc::new(StatusLine::new(&settings.paths.state_dir));
    let mut signals = Signals::new()?;
    // Who we are, before READY: systemd's "started" then means "knows its instance".
    let (imds, instance, aws) = loop {
        match this_instance().await {
            Ok(found) => break found,
            Err(e @ Error::Config(_)) => return Err(e),
            Err(e) => {
                warn!("cannot learn this instance's identity yet (will try again): {e}");
                status.update(|s| s.activity = format!("waiting for the instance identity: {e}"));
                if let Woken::Stop(_) = signals.wait(IDENTITY_RETRY).await {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    };
    let instance_id = instance.instance_id.clone();
    systemd::ready(&format!("instance {instance_id}: starting"));
    info!(instance = %instance_id, region = %instance.region, "ecs-patchd daemon started");
    if let Some(every) = systemd::watchdog_interval() {
        tokio::spawn(async move {
            loop {
                systemd::ping();
                tokio::time::sleep(every).await;
            }
        });
    }
    serve_metrics(&settings);

    let mut next_check = SystemTime::now() + jitter(FIRST_CHECK_WITHIN.min(settings.schedule.check_interval));
    loop {
        let dir = settings.paths.state_dir.clone();
        let in_progress = journal::read::<Cycle>(&dir).ok().flatten().is_some_and(|c| !c.state.is_done());
        let now = SystemTime::now();
        let schedule = schedule(&settings)?;
        let window = schedule.at(now);
        if in_progress || (now >= next_check && window.is_open()) {
            let reporting = Reporting::new(&settings, Some(Arc::clone(&status)));
            let cycle = async {
                let journal = Journal::open(&dir)?;
                let next = match journal.load::<Cycle>()?.filter(|c| !c.state.is_done()) {
                    Some(cycle) => Next::Resume(Box::new(cycle)),
                    None => {
                        let agent = agent(&settings)?;
                        Next::Start(resolve(&settings, &aws, instance.clone(), agent.as_ref()).await?)
                    }
                };
                let cluster = match &next {
                    Next::Resume(cycle) => cycle.cluster.clone(),
                    Next::Start(identity) => identity.cluster.clone(),
                };
                let lifecycle = Ec2Lifecycle::new(&aws, imds.clone(), &instance_id);
                let ports = ports(&settings, &aws, &cluster, agent(&settings)?, lifecycle, &reporting, false)?;
                let machine = Machine::new(&ports, &settings, &journal).within(schedule.clone());
                let result = drive(&machine, next).await;
                reporting.after(&settings, &aws, &instance_id, &ports).await;
                result
            };
            let failed = tokio::select! {
                result = cycle => match result {
                    Ok(cycle) => {
                        info!(cycle = %cycle.id, "{}", cycle.state.summary());
                        false
                    }
                    Err(e) if e.kind() == Kind::Config => return Err(e),
                    Err(e) => {
                        warn!("{e}");
                        true
                    }
                },
                signal = super::stop_requested() => {
                    info!("stopped by {signal} between two steps; the journal keeps the step, and the next start resumes");
                    break;
                }
            };
            next_check = SystemTime::now() + jitter_around(settings.schedule.check_interval);
            if failed {
                status.update(|s| {
                    s.activity =
                        format!("the last attempt failed; trying again in {}", humantime::format_duration(RESUME_RETRY))
                });
                if let Woken::Stop(signal) = signals.wait(RESUME_RETRY).await {
                    info!("stopped by {signal}");
                    break;
                }
            }
            continue;
        }
        // Idle until the next check, or the window's opening if that is later.
        let wake = match window {
            Openness::ClosedUntil(opens) => next_check.max(opens + jitter(WINDOW_SPREAD)),
            _ => next_check,
        };
        status.update(|s| {
            s.next_check = Some(wake);
            s.next_window = match window {
                Openness::ClosedUntil(opens) => Some(opens),
                _ => None,
            };
            s.activity = format!(
                "idle: next check {}{}",
                schedule.local(wake),
                match window {
                    Openness::ClosedUntil(opens) => format!(", after the window opens {}", schedule.local(opens)),
                    _ => String::new(),
                }
            );
        });
        match signals.wait(wake.duration_since(SystemTime::now()).unwrap_or_default()).await {
            Woken::Due => {}
            Woken::Reload => match config::load(&source) {
                Ok(reloaded) => {
                    info!("configuration reloaded");
                    settings = reloaded;
                }
                Err(e) => warn!("the configuration was not reloaded (the old one stays in force): {e}"),
            },
            Woken::Stop(signal) => {
                info!("stopped by {signal}");
                break;
            }
        }
    }
    systemd::stopping();
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP, SIGTERM and SIGINT, listened to for the daemon's whole life.
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

    /// Sleeps for `wait`, or until a signal.
    async fn wait(&mut self, wait: Duration) -> Woken {
        tokio::select! {
            _ = tokio::time::sleep(wait) => Woken::Due,
            _ = self.hangup.recv() => Woken::Reload,
            _ = self.terminate.recv() => Woken::Stop("SIGTERM"),
            _ = self.interrupt.recv() => Woken::Stop("SIGINT"),
        }
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
