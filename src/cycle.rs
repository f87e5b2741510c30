//! The patch cycle: one persisted state machine.
//!
//! What an operator would write down, and the state that carries each step:
//!
//! 1. Outside a maintenance window ([`crate::window`]), a host that is leaving (spot notice,
//!    Auto Scaling), or one beside an updater that reboots by itself starts nothing. Plan
//!    the updates and class them ([`crate::plan`]); with none, the cycle is done at once.
//! 2. Download them while the host still serves; make sure every service
//!    with tasks here can move them.                                [`State::Downloading`]
//! 3. If no task depends on what changes (userland, the ECS agent):
//!    install in place, no drain; restart the agent if it   [`State::InstallingInPlace`]
//!    changed and verify the new version connected.               [`State::RestartingAgent`]
//! 4. Take a slot from the fleet's lease (rolling policy, capacity),
//!    until the window closes.                                      [`State::WaitingForSlot`]
//! 5. Still inside the window, and the pre-drain hooks agreeing:
//!    protect the instance from scale-in, drain it, and wait until
//!    every task on it has STOPPED.                                 [`State::Draining`]
//! 6. Install the updates.                                          [`State::Installing`]
//! 7. After a container runtime update, restart
//!    it (`packages.runtime`).                              [`State::RestartingRuntime`]
//!    Otherwise hold the lease over the reboot, run the pre-reboot
//!    hooks, reboot if needed (or hand the reboot to SSM); a new
//!    boot id says it happened.                                     [`State::Rebooting`]
//! 8. After boot: agent running and reconnected (under a new ARN if
//!    its state was lost), updates verified, post-boot hooks
//!    passed (if not, the host stays out of service).               [`State::Returning`]
//! 9. Give back the scale-in protection, set the instance ACTIVE
//!    again (unless it is being terminated), deregister a stale
//!    record.                                                       [`State::Reactivating`]
//! 10. Wait until the services it displaced run their desired
//!     count again (past `recovery_timeout`, pause the roll, naming
//!     them), pause the roll if the cycle failed, release the slot. [`State::Releasing`]
//! 11. Done, with the outcome.                                      [`State::Done`]
//!
//! Each step entered, each wait and each event an operator cares about goes to the
//! reporter ([`crate::report`]).
//!
//! Every state is written to the journal before the side effect it announces, every step
//! is safe to run twice, and a failure after the drain always passes through
//! `Reactivating`, so the host is never left drained and forgotten. The slot is held from
//! before the drain until after the return, renewed in the background; a host whose lease
//! has lapsed starts no new destructive step.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backon::BackoffBuilder;
use serde::{Deserialize, Serialize};
use tracing::{Instrument, info, warn};

use crate::agent::{Agent, AgentMetadata};
use crate::clock::Clock;
use crate::config::{RebootPolicy, RuntimePolicy, Settings, StandalonePolicy};
use crate::coordination::{Coordinator, Decision, Grant, Halt, SlotRequest};
use crate::ecs::{Capacity, ContainerInstance, Ecs, Listed, Service, Task};
use crate::error::{Error, Kind, Result};
use crate::fault;
use crate::hooks::{HookContext, HookPoint, Hooks};
use crate::host::Host;
use crate::identity::Identity;
use crate::journal::Journal;
use crate::lifecycle::{self, Lifecycle, ScaleIn};
use crate::packages::{self, PackageManager, RebootNeed, RebootProbe, RebootRule, Releases};
use crate::plan::{self, Class, Plan, Planning};
use crate::report::{Event, Reporter};
use crate::shutdown;
use crate::window::{Openness, Schedule};

/// The side effects a cycle performs, each behind its own trait.
pub struct Ports {
    /// The ECS control plane, bound to the host's cluster.
    pub ecs: Box<dyn Ecs>,
    /// The local ECS agent.
    pub agent: Box<dyn Agent>,
    /// The package manager.
    pub packages: Box<dyn PackageManager>,
    /// Reboot, boot id and agent service.
    pub host: Box<dyn Host>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Where slots come from.
    pub coordinator: Arc<dyn Coordinator>,
    /// Spot notices, Auto Scaling lifecycle and scale-in protection.
    pub lifecycle: Box<dyn Lifecycle>,
    /// The operator's hooks (`hooks.d`).
    pub hooks: Box<dyn Hooks>,
    /// Where progress and events are reported.
    pub reporter: Box<dyn Reporter>,
}

/// How a cycle ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Outcome {
    /// No update was pending.
    NothingToDo,
    /// The updates are installed and the host is back in service.
    Patched {
        /// The updated packages.
        packages: Vec<String>,
        /// Whether the host rebooted.
        rebooted: bool,
        /// Services still running replaced code after an in-place install.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        restart_needed: Vec<String>,
    },
    /// The cycle stopped; the host was put back in service if we had drained it.
    Failed {
        /// The step that failed.
        step: String,
        /// The kind of failure.
        kind: Kind,
        /// What went wrong.
        reason: String,
    },
}

/// One step of the cycle, with the data that step needs to run (or run again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum State {
    /// Downloading the updates while the host still serves.
    Downloading {
        /// What will be installed.
        plan: Plan,
        /// The container instance to drain.
        arn: String,
    },
    /// Installing an update no task depends on, without draining.
    #[serde(alias = "updating-agent")]
    InstallingInPlace {
        /// What will be installed.
        plan: Plan,
        /// The agent version before the update, when the agent is updated.
        agent_version: Option<String>,
    },
    /// Restarting the agent and waiting for the new version to connect.
    RestartingAgent {
        /// What was installed.
        plan: Plan,
        /// The agent version before the update.
        agent_version: String,
    },
    /// Waiting for a slot: the rolling policy and the capacity guard must allow it.
    WaitingForSlot {
        /// What will be installed.
        plan: Plan,
        /// The container instance to drain.
        arn: String,
        /// What stays on the host through the drain (daemon tasks): peers need no room.
        /// Looked at when the host's turn is near (`None` until then).
        #[serde(default)]
        stays: Option<Capacity>,
    },
    /// Draining the container instance (marked as drained by this cycle) and waiting.
    Draining {
        /// What will be installed.
        plan: Plan,
        /// The container instance being drained.
        arn: String,
        /// The slot held.
        lease: Grant,
        /// The instance's Auto Scaling group and its protection before the cycle.
        #[serde(default)]
        scale_in: Option<ScaleIn>,
    },
    /// Installing the updates on the drained host.
    Installing {
        /// What is installed.
        plan: Plan,
        /// The drained container instance.
        arn: String,
        /// The slot held.
        lease: Grant,
        /// The instance's Auto Scaling group and its protection before the cycle.
        #[serde(default)]
        scale_in: Option<ScaleIn>,
    },
    /// Restarting the container runtime after its update (`packages.runtime = "restart"`).
    RestartingRuntime {
        /// What was installed.
        plan: Plan,
        /// The drained container instance.
        arn: String,
        /// The slot held.
        lease: Grant,
        /// The instance's Auto Scaling group and its protection before the cycle.
        #[serde(default)]
        scale_in: Option<ScaleIn>,
    },
    /// Rebooting; finished when the boot id differs from `boot_id`.
    Rebooting {
        /// What was installed.
        plan: Plan,
        /// The drained container instance.
        arn: String,
        /// The boot id before the reboot.
        boot_id: String,
        /// Which reboot request this is (1 = first).
        attempt: u32,
        /// The slot held.
        lease: Grant,
        /// The instance's Auto Scaling group and its protection before the cycle.
        #[serde(default)]
        scale_in: Option<ScaleIn>,
    },
    /// Back from install (and reboot): agent running and connected, updates verified.
    Returning {
        /// What was installed.
        plan: Plan,
        /// The container instance this host is now.
        arn: String,
        /// The record we drained, when the agent came back under a new ARN.
        stale_arn: Option<String>,
        /// Whether the host rebooted.
        rebooted: bool,
        /// The slot held.
        lease: Grant,
        /// The instance's Auto Scaling group and its protection before the cycle.
        #[serde(default)]
        scale_in: Option<ScaleIn>,
    },
    /// Setting the instance ACTIVE again and removing a stale registration.
    Reactivating {
        /// The container instance to set ACTIVE.
        arn: String,
        /// A stale registration to deregister.
        stale_arn: Option<String>,
        /// How the cycle will end.
        outcome: Outcome,
        /// The slot held.
        lease: Grant,
        /// The instance's Auto Scaling group and its protection before the cycle.
        #[serde(default)]
        scale_in: Option<ScaleIn>,
    },
    /// Letting the host settle, pausing the roll after a failure, releasing the slot.
    Releasing {
        /// How the cycle will end.
        outcome: Outcome,
        /// The slot to release.
        lease: Grant,
    },
    /// Finished.
    Done {
        /// How it ended.
        outcome: Outcome,
    },
}

impl State {
    /// The step's name, as written in the journal and logs.
    pub fn name(&self) -> &'static str {
        match self {
            State::Downloading { .. } => "downloading",
            State::InstallingInPlace { .. } => "installing-in-place",
            State::RestartingAgent { .. } => "restarting-agent",
            State::WaitingForSlot { .. } => "waiting-for-slot",
            State::Draining { .. } => "draining",
            State::Installing { .. } => "installing",
            State::RestartingRuntime { .. } => "restarting-runtime",
            State::Rebooting { .. } => "rebooting",
            State::Returning { .. } => "returning",
            State::Reactivating { .. } => "reactivating",
            State::Releasing { .. } => "releasing",
            State::Done { .. } => "done",
        }
    }

    /// True once the cycle has ended.
    pub fn is_done(&self) -> bool {
        matches!(self, State::Done { .. })
    }

    /// One human line about the step.
    pub fn summary(&self) -> String {
        match self {
            State::Downloading { plan, .. } => {
                format!("downloading {} update(s): {}", plan.updates.len(), plan.names().join(", "))
            }
            State::InstallingInPlace { plan, .. } => {
                format!("installing {} update(s) in place, no drain needed: {}", plan.updates.len(), plan.why)
            }
            State::RestartingAgent { .. } => {
                "restarting the ECS agent and waiting for the new version to connect".into()
            }
            State::Draining { arn, .. } => {
                format!("draining {arn} and waiting for its tasks to move")
            }
            State::Installing { plan, .. } => {
                format!("installing {} update(s)", plan.updates.len())
            }
            State::RestartingRuntime { .. } => "restarting the container runtime on the drained host".into(),
            State::Rebooting { attempt, .. } => format!("rebooting (request {attempt})"),
            State::Returning { arn, .. } => {
                format!("waiting for the ECS agent to reconnect as {arn}, then verifying")
            }
            State::Reactivating { arn, .. } => format!("setting {arn} ACTIVE"),
            State::Releasing { .. } => "settling, then releasing the slot".into(),
            State::WaitingForSlot { .. } => "waiting for a slot (rolling policy, capacity)".into(),
            State::Done { outcome } => match outcome {
                Outcome::NothingToDo => "done: nothing to do".into(),
                Outcome::Patched { packages, rebooted, restart_needed } => {
                    let mut line = format!("done: {} package(s) updated", packages.len());
                    if *rebooted {
                        line.push_str(", rebooted");
                    }
                    if !restart_needed.is_empty() {
                        line.push_str(&format!("; services to restart: {}", restart_needed.join(", ")));
                    }
                    line
                }
                Outcome::Failed { step, reason, .. } => format!("failed at {step}: {reason}"),
            },
        }
    }
}

/// Whether the machine may go from `from` to `to`.
fn allowed(from: &State, to: &State) -> bool {
    use State::*;
    matches!(
        (from, to),
        (Downloading { .. }, InstallingInPlace { .. } | WaitingForSlot { .. } | Done { .. })
            | (InstallingInPlace { .. }, RestartingAgent { .. } | Done { .. })
            | (RestartingAgent { .. }, Done { .. })
            | (WaitingForSlot { .. }, Draining { .. } | Done { .. })
            | (Draining { .. }, Installing { .. } | Reactivating { .. } | Releasing { .. })
            | (Installing { .. }, RestartingRuntime { .. } | Rebooting { .. } | Returning { .. } | Reactivating { .. })
            | (RestartingRuntime { .. }, Returning { .. } | Reactivating { .. })
            | (Rebooting { .. }, Rebooting { .. } | Returning { .. } | Reactivating { .. })
            | (Returning { .. }, Returning { .. } | Reactivating { .. } | Releasing { .. })
            | (Reactivating { .. }, Releasing { .. })
            | (Releasing { .. }, Done { .. })
    )
}

impl State {
    /// The plan this step carries out, if it has one.
    pub fn plan(&self) -> Option<&Plan> {
        match self {
            State::Downloading { plan, .. }
            | State::InstallingInPlace { plan, .. }
            | State::RestartingAgent { plan, .. }
            | State::WaitingForSlot { plan, .. }
            | State::Draining { plan, .. }
            | State::Installing { plan, .. }
            | State::RestartingRuntime { plan, .. }
            | State::Rebooting { plan, .. }
            | State::Returning { plan, .. } => Some(plan),
            State::Reactivating { .. } | State::Releasing { .. } | State::Done { .. } => None,
        }
    }

    /// The slot this step holds, if any.
    pub fn lease(&self) -> Option<&Grant> {
        match self {
            State::Draining { lease, .. }
            | State::Installing { lease, .. }
            | State::RestartingRuntime { lease, .. }
            | State::Rebooting { lease, .. }
            | State::Returning { lease, .. }
            | State::Reactivating { lease, .. }
            | State::Releasing { lease, .. } => Some(lease),
            _ => None,
        }
    }
}

/// When a step began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Milestone {
    /// The step's name.
    pub step: String,
    /// When it began.
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
}

/// One patch cycle, exactly as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cycle {
    /// Unique id; also the value of the "drained by" attribute.
    pub id: String,
    /// The EC2 instance.
    pub instance_id: String,
    /// The ECS cluster.
    pub cluster: String,
    /// When the cycle began.
    #[serde(with = "humantime_serde")]
    pub started_at: SystemTime,
    /// When the current step began (timeouts count from here, across restarts).
    #[serde(with = "humantime_serde")]
    pub entered_at: SystemTime,
    /// The current step and its data.
    pub state: State,
    /// Every step taken, in order.
    pub history: Vec<Milestone>,
    /// The release the host ran and the newest one, when the cycle began (Amazon Linux 2023).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releases: Option<Releases>,
}

impl Cycle {
    /// Time from the start of the drain until the cycle ended (or now, if it has not).
    pub fn out_of_service(&self, now: SystemTime) -> Option<Duration> {
        let drained = self.history.iter().find(|m| m.step == "draining")?.at;
        let back = self.history.iter().find(|m| m.step == "done").map_or(now, |m| m.at);
        back.duration_since(drained).ok()
    }

    /// Time from the start of the cycle until it ended (or now).
    pub fn duration(&self, now: SystemTime) -> Duration {
        let end = self.history.iter().find(|m| m.step == "done").map_or(now, |m| m.at);
        end.duration_since(self.started_at).unwrap_or_default()
    }
}

/// How many times a step that failed on a transient ECS error is tried again.
const TRANSIENT_RETRIES: u32 = 6;
/// How many times a host that gives up waiting tries to leave the queue.
const WITHDRAW_ATTEMPTS: u32 = 3;

/// How many times the lease is renewed on resuming before it is taken as lapsed.
const RENEW_ATTEMPTS: u32 = 3;

/// Runs cycles against `ports`, recording each step in `journal`.
pub struct Machine<'a> {
    ports: &'a Ports,
    settings: &'a Settings,
    journal: &'a Journal,
    heartbeat: Mutex<Option<Heartbeat>>,
    /// The maintenance windows; `None`: patching may start at any time.
    schedule: Option<Schedule>,
    /// When this process last found that the host's services can move their tasks.
    services_checked: Mutex<Option<SystemTime>>,
    /// The container instance as this process last read it from ECS, and when.
    seen: Mutex<Option<(SystemTime, ContainerInstance)>>,
}

/// A read of the container instance this recent stands for the next step (it saves a read
/// per cycle, which a fleet of thousands feels).
const SEEN_STANDS: Duration = Duration::from_secs(5);

/// What a drain moves: the services whose tasks it stops, and what stays on the host.
#[derive(Debug, Default)]
struct Moving {
    /// Daemon tasks: they stop last and start again here; no peer needs room for them.
    stays: Capacity,
    /// The services with tasks on the host.
    services: Vec<String>,
}

/// A services check this recent stands at the drain (it was made while the slot was taken).
const SERVICES_CHECK_STANDS: Duration = Duration::from_secs(120);

/// Renews the slot's lease in the background while the cycle holds it.
struct Heartbeat {
    token: u64,
    valid_until: Arc<Mutex<SystemTime>>,
    step: Arc<Mutex<&'static str>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<'a> Machine<'a> {
    /// A machine over the given side effects, settings and (locked) journal.
    pub fn new(ports: &'a Ports, settings: &'a Settings, journal: &'a Journal) -> Self {
        Self {
            ports,
            settings,
            journal,
            heartbeat: Mutex::new(None),
            schedule: None,
            services_checked: Mutex::new(None),
            seen: Mutex::new(None),
        }
    }

    /// The same machine, starting nothing new (no cycle, no drain, no in-place install)
    /// outside the windows of `schedule`. A cycle past its drain always finishes.
    pub fn within(mut self, schedule: Schedule) -> Self {
        self.schedule = Some(schedule);
        self
    }

    /// Whether the windows allow starting something new now.
    fn window(&self) -> Openness {
        self.schedule.as_ref().map_or(Openness::Always, |s| s.at(self.ports.clock.now()))
    }

    /// An error (deferred: nothing was changed) when the windows are closed now.
    fn inside_window(&self, what: &str) -> Result<()> {
        match (self.window(), &self.schedule) {
            (Openness::ClosedUntil(opens), Some(schedule)) => Err(Error::Deferred(format!(
                "outside the maintenance window: {what} (the next window opens {})",
                schedule.local(opens)
            ))),
            _ => Ok(()),
        }
    }

    /// Checks for updates and, if there are any, runs a new cycle to its end.
    pub async fn start(&self, identity: &Identity) -> Result<Cycle> {
        self.inside_window("no cycle is started")?;
        if let Some(leaving) = lifecycle::leaving_or_warn(self.ports.lifecycle.as_ref()).await {
            return Err(Error::Deferred(format!("{}: no cycle is started", leaving.reason)));
        }
        let now = self.ports.clock.now();
        let planning = plan::make(
            self.ports.packages.as_ref(),
            &self.settings.packages,
            now,
            &self.settings.paths.state_dir,
            Some(self.journal),
        )
        .await?;
        refuse_beside_rebooting_updaters(&planning, self.settings)?;
        for held in &planning.held {
            info!(package = %held.name, version = %held.available, "held back: {}", held.why);
        }
        let plan = planning.plan;
        let releases = plan.releases.clone();
        let state = if plan.updates.is_empty() {
            State::Done { outcome: Outcome::NothingToDo }
        } else {
            info!(class = ?plan.class, drain = plan.drain, "{}", plan.why);
            State::Downloading { plan, arn: identity.container_instance_arn.clone() }
        };
        let cycle = Cycle {
            id: cycle_id(now, &identity.instance.instance_id),
            instance_id: identity.instance.instance_id.clone(),
            cluster: identity.cluster.clone(),
            started_at: now,
            entered_at: now,
            history: vec![Milestone { step: state.name().into(), at: now }],
            state,
            releases,
        };
        self.journal.save(&cycle)?;
        info!(cycle = %cycle.id, step = cycle.state.name(), "{}", cycle.state.summary());
        self.ports.reporter.entered(&cycle);
        fault::point(&format!("{}:persisted", cycle.state.name()));
        self.resume(cycle).await
    }

    /// Runs the cycle from its current step to its end.
    pub async fn resume(&self, cycle: Cycle) -> Result<Cycle> {
        let span =
            tracing::info_span!("cycle", cycle = %cycle.id, cluster = %cycle.cluster, instance_id = %cycle.instance_id);
        let result = self.drive(cycle).instrument(span).await;
        self.heartbeat.lock().expect("heartbeat lock").take();
        result
    }

    async fn drive(&self, mut cycle: Cycle) -> Result<Cycle> {
        let mut retries = 0;
        while !cycle.state.is_done() {
            if shutdown::requested() {
                return Err(Error::Stopped(format!(
                    "stopped by a signal before step {} (the journal is at that step); the next run resumes",
                    cycle.state.name()
                )));
            }
            self.keep_lease(&cycle).await;
            let step = cycle.state.name();
            let next = match self.step(&cycle).await {
                Ok(next) => next,
                // Every step is safe to run again: ride out throttling and brief outages
                // before calling the step failed.
                Err(error @ Error::Ecs { transient: true, .. }) if retries < TRANSIENT_RETRIES => {
                    retries += 1;
                    let wait = self.ports.clock.jitter(Duration::from_secs(5 << retries.min(4)));
                    warn!(step, "{error}; trying again in {}", fmt(wait));
                    self.ports.clock.sleep(wait).await;
                    continue;
                }
                Err(Error::RebootHandedOff(why)) => {
                    // The caller reboots (SSM: exit 194) and runs us again after the boot.
                    // Count the request, as a reboot made here would be counted.
                    if let State::Rebooting { plan, arn, boot_id, attempt, lease, scale_in } = cycle.state.clone() {
                        let next = State::Rebooting { plan, arn, boot_id, attempt: attempt + 1, lease, scale_in };
                        self.enter(&mut cycle, next)?;
                    }
                    return Err(Error::RebootHandedOff(why));
                }
                Err(error) => self.after_failure(&cycle, error)?,
            };
            retries = 0;
            fault::point(&format!("{step}:done"));
            self.enter(&mut cycle, next)?;
            fault::point(&format!("{}:persisted", cycle.state.name()));
        }
        Ok(cycle)
    }

    /// Starts (or stops) the heartbeat that renews the slot held by the current step.
    /// On the first step after a restart, renews once before anything else happens.
    async fn keep_lease(&self, cycle: &Cycle) {
        let grant = cycle.state.lease().cloned();
        let running = self.heartbeat.lock().expect("heartbeat lock").as_ref().map(|h| h.token);
        match (grant, running) {
            (None, _) => {
                self.heartbeat.lock().expect("heartbeat lock").take();
            }
            (Some(grant), Some(token)) if grant.token == token => {}
            (Some(grant), _) => {
                let coordinator = Arc::clone(&self.ports.coordinator);
                let clock = Arc::clone(&self.ports.clock);
                let ttl = coordinator.ttl();
                let now = clock.now();
                // After a restart: renew before anything else. The store may be briefly
                // unreachable; without an answer the lease is taken as lapsed.
                let mut valid = cycle.entered_at;
                for attempt in 1..=RENEW_ATTEMPTS {
                    match coordinator.renew(&grant, &cycle.instance_id, cycle.state.name(), ttl).await {
                        Ok(true) => {
                            valid = now.checked_add(ttl).unwrap_or(far_future());
                            break;
                        }
                        Ok(false) => {
                            warn!("the slot is no longer ours (released or reclaimed)");
                            valid = SystemTime::UNIX_EPOCH;
                            break;
                        }
                        Err(e) if attempt < RENEW_ATTEMPTS => {
                            warn!("cannot renew the slot's lease (will try again): {e}");
                            clock.sleep(clock.jitter(Duration::from_secs(2))).await;
                        }
                        Err(e) => warn!("cannot renew the slot's lease: {e}"),
                    }
                }
                let valid_until = Arc::new(Mutex::new(valid));
                let step = Arc::new(Mutex::new(cycle.state.name()));
                let (until, current, id, token) =
                    (Arc::clone(&valid_until), Arc::clone(&step), cycle.instance_id.clone(), grant.token);
                let every = (ttl / 3).min(Duration::from_secs(3600));
                let task = tokio::spawn(async move {
                    loop {
                        clock.sleep(every).await;
                        let step = *current.lock().expect("step lock");
                        let renewed = match coordinator.renew(&grant, &id, step, ttl).await {
                            Ok(true) => clock.now().checked_add(ttl).unwrap_or(far_future()),
                            Ok(false) => {
                                warn!("the slot is no longer ours (released or reclaimed): no new destructive step");
                                SystemTime::UNIX_EPOCH
                            }
                            Err(e) => {
                                warn!("cannot renew the slot's lease: {e}");
                                continue;
                            }
                        };
                        *until.lock().expect("lease lock") = renewed;
                    }
                });
                *self.heartbeat.lock().expect("heartbeat lock") = Some(Heartbeat { token, valid_until, step, task });
            }
        }
        if let Some(h) = self.heartbeat.lock().expect("heartbeat lock").as_ref() {
            *h.step.lock().expect("step lock") = cycle.state.name();
        }
    }

    /// Refuses a destructive step once the slot's lease has lapsed.
    fn ensure_lease(&self) -> Result<()> {
        let guard = self.heartbeat.lock().expect("heartbeat lock");
        let Some(h) = guard.as_ref() else {
            return Ok(());
        };
        let until = *h.valid_until.lock().expect("lease lock");
        if self.ports.clock.now() > until {
            return Err(Error::Lease(format!(
                "the slot's lease lapsed at {}: no new destructive step is started",
                humantime::format_rfc3339_seconds(until)
            )));
        }
        Ok(())
    }

    /// Persists `next` as the current state, refusing transitions the machine does not allow.
    fn enter(&self, cycle: &mut Cycle, next: State) -> Result<()> {
        if !allowed(&cycle.state, &next) {
            debug_assert!(false, "transition {} -> {}", cycle.state.name(), next.name());
            return Err(Error::Journal(format!(
                "internal error: refusing the transition {} -> {}",
                cycle.state.name(),
                next.name()
            )));
        }
        let now = self.ports.clock.now();
        let took = now.duration_since(cycle.entered_at).unwrap_or_default();
        if next.name() != cycle.state.name() {
            cycle.entered_at = now;
            cycle.history.push(Milestone { step: next.name().into(), at: now });
        }
        let finished = cycle.state.name();
        cycle.state = next;
        self.journal.save(cycle)?;
        info!(step = cycle.state.name(), previous = finished, took = %humantime::format_duration(round(took)), "{}", cycle.state.summary());
        self.ports.reporter.entered(cycle);
        // A deferred cycle (not now) is no failure of the host.
        if let State::Done { outcome: Outcome::Failed { step, reason, kind } } = &cycle.state
            && kind.halts_roll()
        {
            self.ports.reporter.event(cycle, Event::Failed, &format!("failed at {step}: {reason}"));
        }
        Ok(())
    }

    async fn step(&self, cycle: &Cycle) -> Result<State> {
        match cycle.state.clone() {
            State::Downloading { plan, arn } => self.download(plan, arn).await,
            State::InstallingInPlace { plan, agent_version } => self.install_in_place(cycle, plan, agent_version).await,
            State::RestartingAgent { plan, agent_version } => self.restart_agent(cycle, plan, agent_version).await,
            State::WaitingForSlot { plan, arn, stays } => self.wait_for_slot(cycle, plan, arn, stays).await,
            State::Draining { plan, arn, lease, scale_in } => self.drain(cycle, plan, arn, lease, scale_in).await,
            State::Installing { plan, arn, lease, scale_in } => self.install(plan, arn, lease, scale_in).await,
            State::RestartingRuntime { plan, arn, lease, scale_in } => {
                self.ensure_lease()?;
                self.ports.host.restart_runtime().await?;
                if plan.updates_agent {
                    // ecs-init's unit is `PartOf=docker.service`, so a docker restart restarts
                    // the agent with it; restarting it once more is harmless and covers a
                    // runtime command that leaves docker running (containerd alone).
                    self.ports.host.restart_agent().await?;
                }
                Ok(State::Returning { plan, arn, stale_arn: None, rebooted: false, lease, scale_in })
            }
            State::Rebooting { plan, arn, boot_id, attempt, lease, scale_in } => {
                self.reboot(cycle, plan, arn, boot_id, attempt, lease, scale_in).await
            }
            State::Returning { plan, arn, stale_arn, rebooted, lease, scale_in } => {
                self.return_to_service(cycle, plan, arn, stale_arn, rebooted, lease, scale_in).await
            }
            State::Reactivating { arn, stale_arn, outcome, lease, scale_in } => {
                self.reactivate(cycle, arn, stale_arn, outcome, lease, scale_in).await
            }
            State::Releasing { outcome, lease } => self.release(cycle, outcome, lease).await,
            State::Done { .. } => unreachable!("drive() stops at Done"),
        }
    }

    /// Where a failed step leads: back to service if we drained, then through `Releasing`
    /// while a slot is held, else straight to the end. A failure to reactivate or release,
    /// or of the journal itself, stops the run; the next run resumes.
    fn after_failure(&self, cycle: &Cycle, error: Error) -> Result<State> {
        if matches!(error, Error::Journal(_)) {
            return Err(error);
        }
        warn!(step = cycle.state.name(), kind = %error.kind(), "step failed: {error}");
        let outcome =
            Outcome::Failed { step: cycle.state.name().into(), kind: error.kind(), reason: error.to_string() };
        Ok(match cycle.state.clone() {
            State::Reactivating { .. } | State::Releasing { .. } => return Err(error),
            State::Draining { lease, .. } if error.kind() == Kind::NotOurs => State::Releasing { outcome, lease },
            // Back through Reactivating, which sets ACTIVE only what this cycle drained and
            // leaves an instance that is leaving as it is.
            State::Draining { arn, lease, scale_in, .. }
            | State::Installing { arn, lease, scale_in, .. }
            | State::RestartingRuntime { arn, lease, scale_in, .. }
            | State::Rebooting { arn, lease, scale_in, .. } => {
                State::Reactivating { arn, stale_arn: None, outcome, lease, scale_in }
            }
            State::Returning { arn, stale_arn, lease, scale_in, .. } => {
                State::Reactivating { arn, stale_arn, outcome, lease, scale_in }
            }
            _ => State::Done { outcome },
        })
    }

    // ---- 2. download ----------------------------------------------------------------

    async fn download(&self, plan: Plan, arn: String) -> Result<State> {
        self.ports.packages.download(&plan.target()).await?;
        if !plan.drain {
            self.inside_window("the in-place install does not start")?;
            // No slot is taken for it, but a paused roll stops it too: the pause may be
            // for the very update this host is about to install.
            if let Some(why) = self.ports.coordinator.paused().await? {
                return Err(Error::Paused(format!("the roll is paused: {why}")));
            }
            let agent_version = if plan.updates_agent {
                let agent =
                    self.ports.agent.metadata().await.map_err(|e| {
                        Error::Host(format!("the ECS agent must be running to update it in place: {e}"))
                    })?;
                Some(agent.version)
            } else {
                None
            };
            return Ok(State::InstallingInPlace { plan, agent_version });
        }
        // Whether someone else drained the instance is checked right before the drain;
        // whether its services can move their tasks, when its turn is near (a fleet that
        // starts together would otherwise read every host's tasks from ECS at once).
        Ok(State::WaitingForSlot { plan, arn, stays: None })
    }

    // ---- 3. in-place update -----------------------------------------------------------

    /// Installs while tasks run: nothing they use changes. The agent, if updated, restarts
    /// next; otherwise the cycle ends, naming the services still running replaced code.
    async fn install_in_place(&self, cycle: &Cycle, plan: Plan, agent_version: Option<String>) -> Result<State> {
        let installed = self.ports.packages.install(&plan.target()).await;
        let verified = match (&installed, &agent_version) {
            (Ok(()), None) => self.verify_installed(&plan).await,
            _ => installed,
        };
        if let Err(error) = verified {
            // The host still serves, but an update that fails here would fail on its peers
            // too: halt the roll (in-place installs take no slot, so nothing else would).
            let why = format!("{} failed at {}: {error}", cycle.instance_id, cycle.state.name());
            match self.ports.coordinator.pause(&why, &cycle.instance_id).await {
                Ok(Halt::Paused) => self.ports.reporter.event(cycle, Event::Paused, &why),
                Ok(_) => {}
                Err(e) => warn!("cannot pause the roll: {e}"),
            }
            return Err(error);
        }
        match agent_version {
            Some(agent_version) => Ok(State::RestartingAgent { plan, agent_version }),
            None => Ok(State::Done { outcome: self.patched_in_place(&plan).await }),
        }
    }

    /// The outcome of an update installed while tasks ran, naming the services still
    /// running replaced code.
    async fn patched_in_place(&self, plan: &Plan) -> Outcome {
        let restart_needed = self.ports.packages.services_to_restart().await;
        if !restart_needed.is_empty() {
            warn!(
                "services still run replaced code (restart them at a convenient time): {}",
                restart_needed.join(", ")
            );
        }
        Outcome::Patched { packages: plan.names(), rebooted: false, restart_needed }
    }

    async fn restart_agent(&self, cycle: &Cycle, plan: Plan, old_version: String) -> Result<State> {
        let running = self.ports.agent.metadata().await.ok().map(|m| m.version);
        if running.is_none_or(|v| v == old_version) {
            self.ports.host.restart_agent().await?;
        }
        let (meta, _) = self.await_agent(cycle, |_| true).await?;
        if meta.version == old_version {
            // A packaging-only release (ecs-init -1 to -2) keeps the agent's version string.
            warn!(version = %meta.version, "the restarted ECS agent reports the same version");
        } else {
            info!(old = %old_version, new = %meta.version, "the new ECS agent is connected");
        }
        self.verify_installed(&plan).await?;
        Ok(State::Done { outcome: self.patched_in_place(&plan).await })
    }

    // ---- 4. slot ------------------------------------------------------------------------

    /// Looks once at the host's Auto Scaling group, then asks the coordinator until it
    /// grants a slot, making no ECS call of its own meanwhile but the check of its services
    /// when its turn is near.
    async fn wait_for_slot(&self, cycle: &Cycle, plan: Plan, arn: String, stays: Option<Capacity>) -> Result<State> {
        // Read before the slot is taken: a grant must never be followed by a failure that
        // forgets it. Group membership does not change while the host waits.
        let scale_in = lifecycle::scale_in_or_warn(self.ports.lifecycle.as_ref()).await;
        let mut request =
            SlotRequest { id: cycle.instance_id.clone(), arn: arn.clone(), cycle: cycle.id.clone(), stays };
        // Resumed outside the window: no slot is taken (a peer's turn would be held for nothing).
        self.inside_window("no slot is asked for")?;
        let coordination = &self.settings.coordination;
        let timeout = cycle.entered_at + coordination.wait_timeout;
        // No new drain starts once the window closes: the wait ends there.
        let closes = match self.window() {
            Openness::ClosedUntil(_) => self.ports.clock.now(),
            window => window.closes_at().unwrap_or(timeout),
        };
        let deadline = timeout.min(closes);
        let mut said = String::new();
        let mut pace = 1.0;
        let mut services = Vec::new();
        loop {
            match self.ports.coordinator.acquire(&request, self.ports.ecs.as_ref()).await {
                Ok(Decision::Granted(mut lease)) => {
                    info!(token = lease.token, "slot granted");
                    lease.services = services;
                    return Ok(State::Draining { plan, arn, lease, scale_in });
                }
                Ok(Decision::Paused(why)) => {
                    self.withdraw(&request).await;
                    return Err(Error::Paused(format!("the roll is paused: {why}")));
                }
                Ok(Decision::Check) => match self.services_can_move(&arn).await {
                    Ok(moving) => {
                        request.stays = Some(moving.stays);
                        services = moving.services;
                        continue;
                    }
                    Err(e @ (Error::Deferred(_) | Error::Credentials(_))) => {
                        self.withdraw(&request).await;
                        return Err(e);
                    }
                    Err(e) => warn!("cannot check the host's services (will try again): {e}"),
                },
                Ok(Decision::Wait { reason, pace: advised }) => {
                    if reason != said {
                        info!("waiting for a slot: {reason}");
                        self.ports.reporter.waiting(cycle, &reason);
                        said = reason;
                    }
                    pace = advised;
                }
                // Waiting cannot mend credentials or a lease table in a format this version
                // refuses (then no place was taken in the queue).
                Err(e @ (Error::Credentials(_) | Error::Config(_))) => return Err(e),
                Err(e) => warn!("cannot ask for a slot (will try again): {e}"),
            }
            let now = self.ports.clock.now();
            if now >= deadline {
                self.withdraw(&request).await;
                if deadline < timeout {
                    return Err(Error::Deferred(format!(
                        "the maintenance window closed while waiting for a slot ({said}); nothing was changed"
                    )));
                }
                return Err(Error::Timeout(format!(
                    "no slot within {} ({said}); nothing was changed",
                    fmt(coordination.wait_timeout)
                )));
            }
            // As often as the coordinator advises: the first in line every second or so, the
            // back of a long queue seldom.
            let wait = self.ports.clock.jitter(coordination.poll.mul_f64(pace));
            self.ports.clock.sleep(wait.min(deadline.duration_since(now).unwrap_or_default())).await;
        }
    }

    /// Leaves the queue after giving up, trying a few times (a place left behind holds the
    /// hosts after it until it expires, a lease TTL after its last ask).
    async fn withdraw(&self, request: &SlotRequest) {
        for attempt in 1..=WITHDRAW_ATTEMPTS {
            match self.ports.coordinator.withdraw(request).await {
                Ok(()) => return,
                Err(e) if attempt < WITHDRAW_ATTEMPTS => {
                    warn!("cannot leave the slot queue (will try again): {e}");
                    self.ports.clock.sleep(self.ports.clock.jitter(Duration::from_secs(2))).await;
                }
                Err(e) => warn!("cannot leave the slot queue (the place expires a lease TTL after its last ask): {e}"),
            }
        }
    }

    // ---- 5. drain ---------------------------------------------------------------------

    async fn drain(
        &self,
        cycle: &Cycle,
        plan: Plan,
        arn: String,
        mut lease: Grant,
        scale_in: Option<ScaleIn>,
    ) -> Result<State> {
        let instance = self.registered(&arn).await?;
        if instance.is_drained_by(&cycle.id) {
            info!("the instance is already DRAINING for this cycle; waiting");
        } else if instance.status == "ACTIVE" {
            if let Some(leaving) = lifecycle::leaving_or_warn(self.ports.lifecycle.as_ref()).await {
                return Err(Error::Deferred(format!("{}: the instance is not drained", leaving.reason)));
            }
            let checked = *self.services_checked.lock().expect("services check");
            let stands = checked.is_some_and(|at| at + SERVICES_CHECK_STANDS >= self.ports.clock.now());
            if !stands {
                lease.services = self.services_can_move(&arn).await?.services;
            }
            self.inside_window("the drain does not start")?;
            // A hook that says no (or fails) stops the cycle before anything changed.
            self.run_hooks(HookPoint::PreDrain, cycle, &arn)
                .await
                .map_err(|e| Error::Deferred(format!("the instance is not drained: {e}")))?;
            // A drained, task-less instance is the first one Auto Scaling would pick to scale
            // in: protect it until it is set ACTIVE again (Reactivating restores what was there).
            if let Some(group) = scale_in.as_ref().filter(|s| !s.was_protected) {
                lifecycle::protect_or_warn(self.ports.lifecycle.as_ref(), &group.group, true).await;
            }
            self.ensure_lease()?;
            // The mark first: an instance DRAINING without it would be someone else's.
            self.ports.ecs.mark(&arn, &cycle.id).await?;
            fault::point("draining:marked");
            self.ports.ecs.set_draining(&arn).await?;
            self.ports.reporter.event(cycle, Event::DrainStarted, &plan.why);
        } else {
            return Err(not_ours(&instance));
        }
        self.wait_until_drained(cycle, &arn).await?;
        Ok(State::Installing { plan, arn, lease, scale_in })
    }

    /// Fails (deferred: nothing is changed) when a service with tasks on this host cannot
    /// move them; otherwise answers what stays on the host through a drain (daemon tasks),
    /// which peers need no room for, and the services whose tasks the drain stops.
    ///
    /// The tasks are those the host's agent runs, described by ECS (one call; their service
    /// is their group); without the agent, ECS lists them (three calls). A task placed a
    /// moment ago and not yet known to the agent is not checked here: if its service cannot
    /// move it, the drain times out and the roll pauses.
    async fn services_can_move(&self, arn: &str) -> Result<Moving> {
        let tasks = match self.running_locally().await {
            Ok(local) if local.is_empty() => Vec::new(),
            Ok(local) => self.ports.ecs.tasks(&local).await?,
            Err(e) => {
                info!("listing the host's tasks from ECS: the agent cannot ({e})");
                self.ports.ecs.tasks_on(arn, Listed::Every).await?
            }
        };
        let mut names: Vec<String> = tasks.iter().filter_map(|t| t.service().map(str::to_string)).collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Ok(Moving::default());
        }
        let services = self.ports.ecs.services(&names).await?;
        if let Some(why) = services.iter().find_map(|s| s.cannot_move()) {
            return Err(Error::Deferred(why));
        }
        *self.services_checked.lock().expect("services check") = Some(self.ports.clock.now());
        let daemon = |t: &&Task| t.service().is_some_and(|name| services.iter().any(|s| s.name == name && s.daemon));
        Ok(Moving {
            stays: tasks.iter().filter(daemon).fold(Capacity::default(), |sum, t| sum.plus(t.reserved)),
            services: names,
        })
    }

    /// Waits until every service in `names` runs its desired count with one deployment, for
    /// at most `coordination.recovery_timeout`; answers which have not, if any.
    async fn await_recovery(&self, cycle: &Cycle, names: &[String]) -> Result<Option<String>> {
        let timeout = self.settings.coordination.recovery_timeout;
        let deadline = self.ports.clock.now() + timeout;
        let mut delays = poll_delays(self.settings.drain.poll_initial, self.settings.drain.poll_max);
        let mut said = String::new();
        loop {
            let lagging = match self.ports.ecs.services(names).await {
                // A service deleted meanwhile has nothing left to recover.
                Ok(services) => services.iter().filter_map(Service::unsteady).collect::<Vec<_>>().join("; "),
                Err(e @ Error::Credentials(_)) => return Err(e),
                Err(e) => format!("cannot read the services ({e})"),
            };
            if lagging.is_empty() {
                return Ok(None);
            }
            if lagging != said {
                self.ports.reporter.waiting(cycle, &format!("waiting for the services to recover: {lagging}"));
                said = lagging;
            }
            let now = self.ports.clock.now();
            if now >= deadline {
                return Ok(Some(format!("the services did not recover within {}: {said}", fmt(timeout))));
            }
            let wait = self.ports.clock.jitter(delays.next().unwrap_or(self.settings.drain.poll_max));
            self.ports.clock.sleep(wait.min(deadline.duration_since(now).unwrap_or_default())).await;
        }
    }

    async fn wait_until_drained(&self, cycle: &Cycle, arn: &str) -> Result<()> {
        let since = cycle.entered_at;
        let drain = &self.settings.drain;
        let mut said = String::new();
        let deadline = since + drain.timeout;
        let grace_ends = since + drain.standalone_grace;
        let mut delays = poll_delays(drain.poll_initial, drain.poll_max);
        let mut stopped = BTreeSet::new();
        loop {
            let now = self.ports.clock.now();
            let classify = now >= grace_ends && drain.standalone_tasks != StandalonePolicy::Wait;
            // A spot notice gives two minutes: a host that is leaving stops draining at once
            // and gives its slot back (Reactivating leaves it as it is).
            if let Some(leaving) = lifecycle::leaving_or_warn(self.ports.lifecycle.as_ref()).await {
                return Err(Error::Deferred(format!("{}: the drain is abandoned", leaving.reason)));
            }
            let left = match self.tasks_left(arn, classify).await {
                Ok(left) if left.is_empty() => return Ok(()),
                Ok(left) => left,
                Err(e @ Error::Credentials(_)) => return Err(e),
                Err(e) if now < deadline => {
                    warn!("cannot read the drain's progress (will try again): {e}");
                    TasksLeft::default()
                }
                Err(e) => {
                    return Err(Error::Timeout(format!("the drain did not finish within {}: {e}", fmt(drain.timeout))));
                }
            };
            let standalone: Vec<&Task> =
                left.tasks.iter().filter(|t| !t.is_service_task() && t.desired_status == "RUNNING").collect();
            if !standalone.is_empty() {
                match drain.standalone_tasks {
                    StandalonePolicy::Wait => {}
                    StandalonePolicy::Stop => {
                        for task in &standalone {
                            if stopped.insert(task.arn.clone()) {
                                info!(task = %task.arn, "stopping a standalone task after the grace period");
                                self.ports.ecs.stop_task(&task.arn, "ecs-patchd: host is being patched").await?;
                            }
                        }
                    }
                    StandalonePolicy::Abort => {
                        return Err(Error::Timeout(format!(
                            "{} standalone task(s) still run after {} and drain.standalone_tasks is \"abort\": {}",
                            standalone.len(),
                            fmt(drain.standalone_grace),
                            standalone.iter().map(|t| t.arn.as_str()).collect::<Vec<_>>().join(", ")
                        )));
                    }
                }
            }
            let progress = left.describe();
            if progress != said {
                self.ports.reporter.waiting(cycle, &progress);
                said = progress;
            }
            if now >= deadline {
                return Err(Error::Timeout(format!(
                    "the drain did not finish within {}: {}",
                    fmt(drain.timeout),
                    left.describe()
                )));
            }
            let wait = self.ports.clock.jitter(delays.next().unwrap_or(drain.poll_max));
            let until_deadline = deadline.duration_since(now).unwrap_or_default();
            self.ports.clock.sleep(wait.min(until_deadline)).await;
        }
    }

    /// What still runs on `arn`. While the host's own agent still runs a task, the drain is
    /// not over and ECS is not asked (no API call: a fleet draining a hundred hosts at once
    /// would otherwise read ECS a few times a second), unless standalone tasks must be told
    /// apart. Once the agent runs none: while ECS counts tasks whose desired status is
    /// RUNNING, one describe per poll (tasks placed but not yet started by the agent). Once
    /// it counts none, the agent is asked again, then ECS confirms that every task on the
    /// instance is STOPPED.
    ///
    /// AWS: "A container instance has completed draining when all tasks running on the
    /// instance transition to a STOPPED state" (Draining Amazon ECS container instances);
    /// "runningTasksCount: The number of tasks on the container instance that have a desired
    /// status (desiredStatus) of RUNNING" (ContainerInstance). A task in DEACTIVATING (load
    /// balancer deregistration) or STOPPING still serves. Both views are needed: ECS covers
    /// tasks placed but not yet started by the agent; the agent's `KnownStatus` is the
    /// host's own truth about its containers, which ECS learns a moment later.
    async fn tasks_left(&self, arn: &str, classify: bool) -> Result<TasksLeft> {
        // The agent unreachable here is no answer: ECS is asked as before.
        if !classify
            && let Ok(local) = self.running_locally().await
            && !local.is_empty()
        {
            return Ok(TasksLeft { local, ..TasksLeft::default() });
        }
        let instance = self.registered(arn).await?;
        let counted = instance.running_tasks + instance.pending_tasks;
        if counted > 0 && !classify {
            return Ok(TasksLeft { counted, ..TasksLeft::default() });
        }
        if counted == 0 {
            let local = self.running_locally().await.map_err(|e| {
                Error::Host(format!("the ECS agent cannot say whether every task on the host has stopped: {e}"))
            })?;
            if !local.is_empty() {
                return Ok(TasksLeft { local, ..TasksLeft::default() });
            }
        }
        // With none desired RUNNING (counted), only the stopped ones can still be shutting down.
        let listed = if counted == 0 { Listed::Stopping } else { Listed::Every };
        let tasks = self.ports.ecs.tasks_on(arn, listed).await?;
        Ok(TasksLeft { tasks, counted, ..TasksLeft::default() })
    }

    /// The tasks the host's agent has not seen stop.
    async fn running_locally(&self) -> Result<Vec<String>> {
        let on_host = self.ports.agent.tasks().await?;
        Ok(on_host.into_iter().filter(|t| !t.is_stopped()).map(|t| t.arn).collect())
    }

    // ---- 6. install -------------------------------------------------------------------

    /// Installs the plan. Run again after a restart, it installs again: the package
    /// manager waits for a leftover transaction's lock, finishes what is missing, and the
    /// verification below decides.
    async fn install(&self, plan: Plan, arn: String, lease: Grant, scale_in: Option<ScaleIn>) -> Result<State> {
        self.ensure_lease()?;
        self.ports.packages.install(&plan.target()).await?;
        // A package manager may skip an update it cannot install and still succeed (dnf
        // with best=False): find out now, before a reboot for nothing.
        self.verify_installed(&plan).await?;
        let runtime = self.settings.packages.runtime;
        if plan.class == Class::Runtime && self.settings.packages.reboot != RebootPolicy::Always {
            match runtime {
                RuntimePolicy::Restart => return Ok(State::RestartingRuntime { plan, arn, lease, scale_in }),
                RuntimePolicy::Reboot => {
                    let boot_id = self.ports.host.boot_id()?;
                    return Ok(State::Rebooting { plan, arn, boot_id, attempt: 1, lease, scale_in });
                }
                RuntimePolicy::Leave => {
                    warn!(
                        "the container runtime was updated but keeps running its old version until the next reboot (packages.runtime = \"leave\")"
                    );
                }
            }
        } else if self.reboot_wanted(&plan).await? {
            let boot_id = self.ports.host.boot_id()?;
            return Ok(State::Rebooting { plan, arn, boot_id, attempt: 1, lease, scale_in });
        }
        if plan.updates_agent {
            // No reboot loads the new agent: restart it (run twice, it restarts twice).
            self.ports.host.restart_agent().await?;
        }
        Ok(State::Returning { plan, arn, stale_arn: None, rebooted: false, lease, scale_in })
    }

    /// An updated package of `packages.reboot_packages` needs a reboot, whatever the probe
    /// knows of it (the class promised one); otherwise the probe chosen before the drain
    /// answers, or the reboot rule where the host has none.
    async fn reboot_required(&self, plan: &Plan) -> Result<RebootNeed> {
        let rule = RebootRule::new(&self.settings.packages);
        if let Some(need) = packages::by_package(&rule, &plan.names()) {
            return Ok(need);
        }
        match plan.reboot_probe {
            RebootProbe::Rule => packages::by_rule(&rule, &plan.names()),
            _ => self.ports.packages.reboot_required().await,
        }
    }

    async fn reboot_wanted(&self, plan: &Plan) -> Result<bool> {
        match self.settings.packages.reboot {
            RebootPolicy::Always => Ok(true),
            RebootPolicy::IfNeeded => {
                let need = self.reboot_required(plan).await?;
                info!(needed = need.needed, "reboot check: {}", need.reason);
                Ok(need.needed)
            }
            RebootPolicy::Never => {
                match self.reboot_required(plan).await {
                    Ok(need) if need.needed => {
                        warn!("a reboot is needed ({}) but packages.reboot is \"never\"", need.reason)
                    }
                    Ok(_) => {}
                    Err(e) => warn!("cannot tell whether a reboot is needed: {e}"),
                }
                Ok(false)
            }
        }
    }

    // ---- 7. reboot --------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)] // the state's own fields, as the other steps take them
    async fn reboot(
        &self,
        cycle: &Cycle,
        plan: Plan,
        arn: String,
        boot_id: String,
        attempt: u32,
        lease: Grant,
        scale_in: Option<ScaleIn>,
    ) -> Result<State> {
        if self.ports.host.boot_id()? != boot_id {
            info!("the host has rebooted");
            return Ok(State::Returning { plan, arn, stale_arn: None, rebooted: true, lease, scale_in });
        }
        let attempts = self.settings.host.reboot_attempts;
        if attempt > attempts {
            return Err(Error::Host(format!(
                "the host did not reboot after {attempts} request(s) of `{}`",
                self.settings.host.reboot_command.join(" ")
            )));
        }
        self.ensure_lease()?;
        self.run_hooks(HookPoint::PreReboot, cycle, &arn).await?;
        self.hold_through_reboot(cycle, &lease).await?;
        self.ports.reporter.event(cycle, Event::Rebooting, &format!("installed {}", plan.names().join(", ")));
        self.ports.host.reboot().await?;
        self.ports.clock.sleep(self.settings.host.reboot_timeout).await;
        warn!("still running {} after the reboot request", fmt(self.settings.host.reboot_timeout));
        Ok(State::Rebooting { plan, arn, boot_id, attempt: attempt + 1, lease, scale_in })
    }

    /// Renews the slot's lease, just before the reboot, for the longest the reboot may take
    /// (`host.reboot_timeout`) plus one lease lifetime, so that a slow (bare-metal) boot,
    /// and the resume that follows it, never let the lease lapse and pause the roll.
    async fn hold_through_reboot(&self, cycle: &Cycle, lease: &Grant) -> Result<()> {
        let coordinator = &self.ports.coordinator;
        let hold = self.settings.host.reboot_timeout.saturating_add(coordinator.ttl());
        match coordinator.renew(lease, &cycle.instance_id, cycle.state.name(), hold).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Lease("the slot is no longer ours (released or reclaimed): no reboot".into())),
            Err(e) => {
                warn!("cannot extend the slot's lease over the reboot (the last renewal still holds): {e}");
                Ok(())
            }
        }
    }

    // ---- 8. return ----------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)] // the state's own fields, as the other steps take them
    async fn return_to_service(
        &self,
        cycle: &Cycle,
        plan: Plan,
        arn: String,
        stale_arn: Option<String>,
        rebooted: bool,
        lease: Grant,
        scale_in: Option<ScaleIn>,
    ) -> Result<State> {
        if let Err(e) = self.ports.agent.metadata().await {
            info!("starting the ECS agent ({e})");
            self.ports.host.start_agent().await?;
        }
        let (_, instance) = self.await_agent(cycle, |_| true).await?;
        if instance.arn != arn {
            // The agent lost its saved state and registered anew: adopt the new record once
            // ECS confirms it belongs to this EC2 instance; the drained one is now stale.
            let ours = self.ports.ecs.instances_on(&cycle.instance_id).await?;
            if !ours.iter().any(|r| r.arn == instance.arn) {
                return Err(Error::Identity(format!(
                    "the ECS agent reports {}, which ECS does not list for {}",
                    instance.arn, cycle.instance_id
                )));
            }
            warn!(old = %arn, new = %instance.arn, "the ECS agent registered under a new ARN; the old record will be deregistered");
            let stale_arn = stale_arn.or(Some(arn));
            return Ok(State::Returning { plan, arn: instance.arn, stale_arn, rebooted, lease, scale_in });
        }
        self.verify_installed(&plan).await?;
        if let Err(error) = self.run_hooks(HookPoint::PostBoot, cycle, &arn).await {
            // Fail closed: the host stays out of service (DRAINING, protected from scale-in)
            // and the roll is paused, for an operator to look at it. An agent that came back
            // under a new ARN registered it ACTIVE: that record is drained too.
            if self.registered(&arn).await?.status == "ACTIVE" {
                self.ports.ecs.mark(&arn, &cycle.id).await?;
                self.ports.ecs.set_draining(&arn).await?;
            }
            self.deregister_stale(stale_arn).await?;
            warn!(
                "{error}: {arn} stays DRAINING; once it is healthy, set it ACTIVE (aws ecs update-container-instances-state --status ACTIVE) and resume the roll"
            );
            let outcome = Outcome::Failed {
                step: cycle.state.name().into(),
                kind: error.kind(),
                reason: format!("{error}; the instance stays DRAINING"),
            };
            return Ok(State::Releasing { outcome, lease });
        }
        let outcome = Outcome::Patched { packages: plan.names(), rebooted, restart_needed: vec![] };
        Ok(State::Reactivating { arn, stale_arn, outcome, lease, scale_in })
    }

    // ---- 9. reactivate ----------------------------------------------------------------

    async fn reactivate(
        &self,
        cycle: &Cycle,
        arn: String,
        stale_arn: Option<String>,
        outcome: Outcome,
        lease: Grant,
        scale_in: Option<ScaleIn>,
    ) -> Result<State> {
        // Before ACTIVE, while no task can be placed on it: the protection it had comes back
        // (with managed termination protection, ECS sets it again as it places tasks).
        if let Some(group) = scale_in.filter(|s| !s.was_protected) {
            lifecycle::protect_or_warn(self.ports.lifecycle.as_ref(), &group.group, false).await;
        }
        let leaving = lifecycle::leaving_or_warn(self.ports.lifecycle.as_ref()).await.filter(|l| l.for_good);
        let seen = self.seen.lock().expect("seen").take();
        let instance = match seen.filter(|(at, i)| i.arn == arn && *at + SEEN_STANDS >= self.ports.clock.now()) {
            Some((_, i)) => Some(i),
            None => self.ports.ecs.describe(&arn).await?,
        };
        match instance.filter(|i| i.status != "INACTIVE") {
            Some(i) if i.drained_by.as_deref() == Some(cycle.id.as_str()) => match &leaving {
                Some(gone) => warn!("{}: {arn} is left as it is and its slot given back", gone.reason),
                None => {
                    // ACTIVE before the mark goes: a DRAINING instance without the mark
                    // would be someone else's, and never set ACTIVE again.
                    if i.status == "DRAINING" {
                        self.ports.ecs.set_active(&arn).await?;
                        fault::point("reactivating:activated");
                        let how = match &outcome {
                            Outcome::Failed { step, .. } => format!("after a failure at {step}"),
                            _ => "patched".to_string(),
                        };
                        self.ports.reporter.event(cycle, Event::BackInService, &how);
                    }
                    self.ports.ecs.unmark(&arn).await?;
                    info!("{arn} is ACTIVE again");
                }
            },
            Some(i) if i.status == "DRAINING" => {
                warn!("{arn} is DRAINING, but not by this cycle ({}): left alone", drained_by(&i));
            }
            Some(_) => {}
            None => warn!("{arn} is no longer registered"),
        }
        self.deregister_stale(stale_arn).await?;
        Ok(State::Releasing { outcome, lease })
    }

    // ---- 10. release -------------------------------------------------------------------

    async fn release(&self, cycle: &Cycle, outcome: Outcome, lease: Grant) -> Result<State> {
        // The host settles only when it went back into service; a deferred one (leaving, or
        // never drained) gives its slot back at once.
        let deferred = matches!(&outcome, Outcome::Failed { kind: Kind::Deferred, .. });
        let settle_until = cycle.entered_at + self.settings.coordination.settle;
        if let Ok(left) = settle_until.duration_since(self.ports.clock.now())
            && !deferred
        {
            self.ports.clock.sleep(left).await;
        }
        let coordinator = &self.ports.coordinator;
        let mut halt = match &outcome {
            Outcome::Failed { step, kind, reason } if kind.halts_roll() => {
                Some(format!("{} failed at {step}: {reason}", cycle.instance_id))
            }
            _ => None,
        };
        // Paced by the services' health, not a fixed wait: the next host may go once the
        // services this drain displaced run their desired count again.
        let recovery = !self.settings.coordination.recovery_timeout.is_zero();
        if matches!(outcome, Outcome::Patched { .. }) && recovery && !lease.services.is_empty() {
            halt = self
                .await_recovery(cycle, &lease.services)
                .await?
                .map(|why| format!("{} was patched, but {why}", cycle.instance_id));
        }
        if let Some(why) = halt {
            match coordinator.pause(&why, &cycle.instance_id).await? {
                Halt::Paused => {
                    warn!("the roll is paused until an operator resumes it");
                    self.ports.reporter.event(cycle, Event::Paused, &why);
                }
                Halt::KeepSlot => {
                    warn!("the slot is kept so the roll halts; `ecs-patchd fleet release` frees it");
                    return Ok(State::Done { outcome });
                }
                Halt::Alone => {}
            }
        }
        coordinator.release(&lease, &cycle.instance_id).await?;
        Ok(State::Done { outcome })
    }

    // ---- shared checks ------------------------------------------------------------------

    /// Deregisters the record the agent left behind when it registered anew (if still there).
    async fn deregister_stale(&self, stale_arn: Option<String>) -> Result<()> {
        if let Some(stale) = stale_arn
            && self.ports.ecs.describe(&stale).await?.is_some_and(|i| i.status != "INACTIVE")
        {
            self.ports.ecs.deregister(&stale).await?;
            info!("deregistered the stale record {stale}");
        }
        Ok(())
    }

    /// Runs the hooks of `point` for this cycle.
    async fn run_hooks(&self, point: HookPoint, cycle: &Cycle, arn: &str) -> Result<()> {
        let context = HookContext {
            step: cycle.state.name(),
            cycle: &cycle.id,
            instance_id: &cycle.instance_id,
            cluster: &cycle.cluster,
            container_instance_arn: arn,
        };
        self.ports.hooks.run(point, &context).await
    }

    /// The container instance `arn`; an error when it is no longer registered.
    async fn registered(&self, arn: &str) -> Result<ContainerInstance> {
        self.ports
            .ecs
            .describe(arn)
            .await?
            .ok_or_else(|| Error::NotOurs(format!("container instance {arn} is no longer registered")))
    }

    /// Waits until the agent answers `accept`-ably and ECS shows its instance connected.
    /// An agent registered in another cluster than the cycle's is an error at once.
    async fn await_agent(
        &self,
        cycle: &Cycle,
        accept: impl Fn(&AgentMetadata) -> bool,
    ) -> Result<(AgentMetadata, ContainerInstance)> {
        let limit = self.settings.host.agent_reconnect_timeout;
        let deadline = cycle.entered_at + limit;
        let mut delays = poll_delays(self.settings.drain.poll_initial, self.settings.drain.poll_max);
        let mut last = String::from("no answer yet");
        loop {
            match self.agent_connected(cycle, &accept).await {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => {}
                Err(e @ (Error::Identity(_) | Error::Credentials(_))) => return Err(e),
                Err(e) => last = e.to_string(),
            }
            let now = self.ports.clock.now();
            if now >= deadline {
                return Err(Error::Timeout(format!(
                    "the ECS agent did not reconnect within {} (last: {last})",
                    fmt(limit)
                )));
            }
            let wait = self.ports.clock.jitter(delays.next().unwrap_or(self.settings.drain.poll_max));
            self.ports.clock.sleep(wait.min(deadline.duration_since(now).unwrap_or_default())).await;
        }
    }

    async fn agent_connected(
        &self,
        cycle: &Cycle,
        accept: &impl Fn(&AgentMetadata) -> bool,
    ) -> Result<Option<(AgentMetadata, ContainerInstance)>> {
        let meta = self.ports.agent.metadata().await?;
        if meta.cluster != cycle.cluster {
            return Err(Error::Identity(format!(
                "the ECS agent came back registered in cluster \"{}\", but this cycle drained the host in \
                 cluster \"{}\": the old container instance is set ACTIVE again, with no agent behind it; fix \
                 ECS_CLUSTER in the agent's configuration (or identity.cluster), or deregister the old record \
                 if the host now belongs to the other cluster",
                meta.cluster, cycle.cluster
            )));
        }
        let Some(arn) = meta.container_instance_arn.clone() else {
            return Ok(None);
        };
        if !accept(&meta) {
            return Ok(None);
        }
        let instance = self.ports.ecs.describe(&arn).await?;
        if let Some(i) = &instance {
            *self.seen.lock().expect("seen") = Some((self.ports.clock.now(), i.clone()));
        }
        Ok(instance.filter(|i| i.agent_connected).map(|i| (meta, i)))
    }

    /// Fails if any planned update is still pending at the planned version.
    async fn verify_installed(&self, plan: &Plan) -> Result<()> {
        let pending = self.ports.packages.pending(plan.release()).await?;
        let missing: Vec<String> = plan
            .updates
            .iter()
            .filter(|u| pending.iter().any(|p| p.name == u.name && p.available == u.available))
            .map(|u| format!("{} {}", u.name, u.available))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::Packages(format!("updates still pending after the install: {}", missing.join(", "))))
        }
    }
}

/// Refuses a cycle beside an updater that reboots the host by itself, unless the operator
/// allowed it: such a reboot skips the drain, and tasks die with the host.
fn refuse_beside_rebooting_updaters(planning: &Planning, settings: &Settings) -> Result<()> {
    let Some(updater) = planning.rebooting_updaters.first() else {
        return Ok(());
    };
    if settings.packages.allow_rebooting_updater {
        warn!(
            "{} reboots the host by itself ({}); allowed by packages.allow_rebooting_updater",
            updater.name, updater.because
        );
        return Ok(());
    }
    Err(Error::Config(format!(
        "{} reboots the host by itself ({}), bypassing the drain: disable it, or set \
         packages.allow_rebooting_updater = true to run beside it",
        updater.name, updater.because
    )))
}

/// What still runs on an instance being drained.
#[derive(Debug, Default)]
struct TasksLeft {
    /// Tasks ECS shows not yet STOPPED.
    tasks: Vec<Task>,
    /// Tasks ECS counts with a desired status of RUNNING (or PENDING).
    counted: i32,
    /// Tasks whose containers the agent has not yet seen stop.
    local: Vec<String>,
}

impl TasksLeft {
    fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.counted == 0 && self.local.is_empty()
    }

    /// One line for a message: how many tasks, and in which states.
    fn describe(&self) -> String {
        if !self.local.is_empty() {
            return format!("the ECS agent still runs {} task(s): {}", self.local.len(), self.local.join(", "));
        }
        let mut states: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for t in &self.tasks {
            *states.entry(t.last_status.as_str()).or_default() += 1;
        }
        let count = self.tasks.len().max(usize::try_from(self.counted).unwrap_or(0));
        let detail: Vec<String> = states.iter().map(|(state, n)| format!("{n} {state}")).collect();
        if detail.is_empty() {
            format!("{count} task(s) still running or pending")
        } else {
            format!("{count} task(s) not yet stopped ({})", detail.join(", "))
        }
    }
}

/// Delays growing from `initial` to `max` (jittered by the clock), for polls that must stay rare.
fn poll_delays(initial: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(initial)
        .with_max_delay(max)
        .with_factor(1.5)
        .without_max_times()
        .build()
}

fn not_ours(instance: &ContainerInstance) -> Error {
    Error::NotOurs(format!(
        "container instance {} is {} ({}): this cycle did not drain it, so ecs-patchd leaves it alone",
        instance.arn,
        instance.status,
        drained_by(instance)
    ))
}

fn drained_by(instance: &ContainerInstance) -> String {
    match &instance.drained_by {
        Some(cycle) => format!("drained by ecs-patchd cycle {cycle}"),
        None => "not drained by ecs-patchd".into(),
    }
}

/// A unique, readable cycle id: UTC time and instance.
fn cycle_id(now: SystemTime, instance_id: &str) -> String {
    let stamp = humantime::format_rfc3339_seconds(now).to_string().replace([':', '-'], "");
    format!("{instance_id}-{stamp}")
}

fn fmt(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(round(d))
}

/// A time no lease reaches (for backends without expiry).
fn far_future() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40)
}

/// Drops sub-millisecond noise from a duration shown to people.
fn round(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
