//! What drives a cycle: starts one (plans the updates and journals the first step), resumes
//! one from the journal, and takes it step by step to its end. Each step is journalled
//! before its side effect ([`Machine::enter`] refuses a transition the cycle does not allow);
//! a failed step leads back to service through [`Machine::after_failure`]. The steps' bodies
//! live in the files named for them, beside this one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing::{Instrument, info, warn};

use super::messages::{fmt, round};
use super::{Cycle, Milestone, Outcome, State, allowed};
use crate::agent::Agent;
use crate::clock::{Clock, Deadline};
use crate::config::{Backend, Settings};
use crate::coordination::Coordinator;
use crate::coordination::lease_keeper::LeaseKeeper;
use crate::ecs::{ContainerInstance, Ecs};
use crate::error::{Error, Kind, Result};
use crate::fault;
use crate::hooks::Hooks;
use crate::host::Host;
use crate::identity::Identity;
use crate::journal::Journal;
use crate::lifecycle::{self, Lifecycle};
use crate::livepatch::LivePatching;
use crate::packages::{PackageManager, Releases};
use crate::plan::{self, Planning};
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
    /// The kernel's live patch tool.
    pub live: Box<dyn LivePatching>,
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

/// How many times a step that failed on a transient ECS error is tried again.
pub(super) const TRANSIENT_RETRIES: u32 = 6;

/// How long a step that met expired credentials waits before its one more try.
const EXPIRED_CREDENTIALS_PAUSE: Duration = Duration::from_secs(5);

/// Runs cycles against `ports`, recording each step in `journal`.
pub struct Machine<'a> {
    pub(super) ports: &'a Ports,
    pub(super) settings: &'a Settings,
    pub(super) journal: &'a Journal,
    /// Renews the slot held by the current step, if it holds one.
    lease: Mutex<Option<LeaseKeeper>>,
    /// The maintenance windows; `None`: patching may start at any time.
    schedule: Option<Schedule>,
    /// When this process last found that the host's services can move their tasks.
    pub(super) services_checked: Mutex<Option<SystemTime>>,
    /// The container instance as this process last read it from ECS, and when.
    pub(super) seen: Mutex<Option<(SystemTime, ContainerInstance)>>,
    /// When this process entered the current step, on the monotonic clock; `None` for a
    /// step resumed from the journal.
    entered: Mutex<Option<tokio::time::Instant>>,
}

impl<'a> Machine<'a> {
    /// A machine over the given side effects, settings and (locked) journal.
    pub fn new(ports: &'a Ports, settings: &'a Settings, journal: &'a Journal) -> Self {
        Self {
            ports,
            settings,
            journal,
            lease: Mutex::new(None),
            schedule: None,
            services_checked: Mutex::new(None),
            seen: Mutex::new(None),
            entered: Mutex::new(None),
        }
    }

    /// The same machine, starting nothing new (no cycle, no drain, no in-place install)
    /// outside the windows of `schedule`. A cycle past its drain always finishes.
    pub fn within(mut self, schedule: Schedule) -> Self {
        self.schedule = Some(schedule);
        self
    }

    /// The current step's limit of `limit`: from when this process entered the step, on the
    /// monotonic clock, or for a step resumed from the journal, from the time it keeps.
    pub(super) fn deadline(&self, cycle: &Cycle, limit: Duration) -> Deadline {
        match *self.entered.lock().expect("entered lock") {
            Some(at) => Deadline::since(at, limit),
            None => Deadline::after(self.ports.clock.as_ref(), cycle.entered_at, limit),
        }
    }

    /// How long to wait before try `tries` + 1 of something ECS refused for a moment: 10 s,
    /// doubling to 80 s, jittered.
    pub(super) fn transient_wait(&self, tries: u32) -> Duration {
        self.ports.clock.jitter(Duration::from_secs(5 << tries.min(4)))
    }

    /// Notes that this process enters a step now (or starts what the step's limits count).
    pub(super) fn note_entered(&self) {
        *self.entered.lock().expect("entered lock") = Some(tokio::time::Instant::now());
    }

    /// Whether the windows allow starting something new now.
    pub(super) fn window(&self) -> Openness {
        self.schedule.as_ref().map_or(Openness::Always, |s| s.at(self.ports.clock.now()))
    }

    /// An error (deferred: nothing was changed) when the windows are closed now.
    pub(super) fn inside_window(&self, what: &str) -> Result<()> {
        match (self.window(), &self.schedule) {
            (Openness::ClosedUntil(opens), Some(schedule)) => Err(Error::Deferred(format!(
                "outside the maintenance window: {what} (the next window opens {})",
                schedule.local(opens)
            ))),
            _ => Ok(()),
        }
    }

    /// Checks for updates and, if there are any, runs a new cycle to its end. A drain this
    /// host's own cycle left behind without its journal is finished first, window or not.
    pub async fn start(&self, identity: &Identity) -> Result<Cycle> {
        if let Some(cycle) = self.take_up(identity).await? {
            self.journal.save(&cycle)?;
            self.note_entered();
            self.ports.reporter.entered(&cycle);
            return self.resume(cycle).await;
        }
        self.inside_window("no cycle is started")?;
        if let Some(leaving) = lifecycle::leaving_or_warn(self.ports.lifecycle.as_ref()).await {
            return Err(Error::Deferred(format!("{}: no cycle is started", leaving.reason)));
        }
        let now = self.ports.clock.now();
        let boot_id = self.ports.host.boot_id();
        let place = plan::Place {
            state_dir: &self.settings.paths.state_dir,
            journal: Some(self.journal),
            boot_id: boot_id.as_deref().ok(),
        };
        let planning =
            plan::make(self.ports.packages.as_ref(), self.ports.live.as_ref(), &self.settings.packages, now, place)
                .await?;
        // The boot id is what proves a reboot happened: unreadable, no drain starts (rather
        // than a host drained and installed that cannot tell whether it rebooted).
        if planning.plan.drain
            && let Err(e) = &boot_id
        {
            return Err(Error::Config(format!(
                "key `paths.boot_id`: {e}; without the boot id a reboot cannot be confirmed, so nothing is drained"
            )));
        }
        refuse_beside_rebooting_updaters(&planning, self.settings)?;
        for held in &planning.held {
            info!(package = %held.name, version = %held.available, "held back: {}", held.why);
        }
        let plan = planning.plan;
        if let Some(newer) = plan.releases.as_ref().and_then(Releases::unapplied) {
            warn!(release = newer, "a newer release is published and not applied (packages.release)");
        }
        if !plan.is_empty() && self.settings.coordination.backend == Backend::ReportOnly {
            self.ports.reporter.looked(&plan, now);
            return Err(Error::Deferred(format!(
                "{}; nothing is installed until coordination.backend is chosen (report-only)",
                plan.pending_summary()
            )));
        }
        let releases = plan.releases.clone();
        let state = if plan.is_empty() {
            // What the record keeps of a plan with nothing to install: a kernel that waits.
            self.ports.reporter.looked(&plan, now);
            State::Done { outcome: Outcome::NothingToDo }
        } else {
            info!(class = ?plan.class, drain = plan.drain, "{}", plan.why);
            State::Downloading { plan, arn: identity.container_instance_arn.clone() }
        };
        let cycle = Cycle {
            id: super::id::new(now, &identity.instance.instance_id),
            instance_id: identity.instance.instance_id.clone(),
            cluster: identity.cluster.clone(),
            started_at: now,
            entered_at: now,
            history: vec![Milestone { step: state.name().into(), at: now }],
            state,
            releases,
            taken_up: None,
        };
        self.journal.save(&cycle)?;
        self.note_entered();
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
        self.lease.lock().expect("lease lock").take();
        result
    }

    async fn drive(&self, mut cycle: Cycle) -> Result<Cycle> {
        if let Some(next) = self.unanswered_reboot(&cycle)? {
            self.enter(&mut cycle, next)?;
        }
        let mut retries = 0;
        // Whether this step has met expired credentials once already.
        let mut expired_once = false;
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
                    let wait = self.transient_wait(retries);
                    warn!(step, "{error}; trying again in {}", fmt(wait));
                    self.ports.clock.sleep(wait).await;
                    continue;
                }
                // Instance profile credentials rotate: one "expired" answer is taken for a
                // rotation the SDK's cache had not caught up with yet; a second is final.
                Err(error @ Error::Credentials { expired: true, .. }) if !expired_once => {
                    expired_once = true;
                    let wait = self.ports.clock.jitter(EXPIRED_CREDENTIALS_PAUSE);
                    warn!(step, "{error}; the credentials may have just rotated: trying again in {}", fmt(wait));
                    self.ports.clock.sleep(wait).await;
                    continue;
                }
                // Still throttled or failing after minutes of tries: not the host's
                // failure, and no reason to pause the fleet. The run stops at this step
                // (exit 75) and the next run tries it again.
                Err(error @ Error::Ecs { transient: true, .. }) => {
                    warn!(
                        step,
                        "{error}; still failing after {TRANSIENT_RETRIES} tries: the next run tries this step again"
                    );
                    return Err(error);
                }
                // The caller reboots (SSM: exit 194) and runs us again after the boot; a
                // run in the same boot counts the request as unanswered.
                Err(error @ Error::RebootHandedOff(_)) => return Err(error),
                Err(error) => self.after_failure(&cycle, error)?,
            };
            retries = 0;
            expired_once = false;
            fault::point(&format!("{step}:done"));
            self.enter(&mut cycle, next)?;
            fault::point(&format!("{}:persisted", cycle.state.name()));
        }
        Ok(cycle)
    }

    /// Starts (or stops) the lease keeper of the slot held by the current step. On the
    /// first step after a restart, it renews once before anything else happens.
    async fn keep_lease(&self, cycle: &Cycle) {
        let Some(grant) = cycle.state.lease().cloned() else {
            self.lease.lock().expect("lease lock").take();
            return;
        };
        let kept = self.lease.lock().expect("lease lock").as_ref().map(LeaseKeeper::token);
        if kept != Some(grant.token) {
            let keeper = LeaseKeeper::start(
                Arc::clone(&self.ports.coordinator),
                Arc::clone(&self.ports.clock),
                grant,
                &cycle.instance_id,
                cycle.state.name(),
            )
            .await;
            *self.lease.lock().expect("lease lock") = Some(keeper);
        }
        if let Some(keeper) = self.lease.lock().expect("lease lock").as_ref() {
            keeper.set_step(cycle.state.name());
        }
    }

    /// Refuses a destructive step once the slot's lease has lapsed.
    pub(super) fn ensure_lease(&self) -> Result<()> {
        self.lease.lock().expect("lease lock").as_ref().map_or(Ok(()), LeaseKeeper::ensure)
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
            self.note_entered();
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
            State::WaitingForSlot { plan, arn, stays, agent_version } => {
                self.wait_for_slot(cycle, plan, arn, stays, agent_version).await
            }
            State::InstallingInPlace { plan, agent_version, lease } => {
                self.install_in_place(cycle, plan, agent_version, lease).await
            }
            State::RestartingAgent { plan, agent_version, lease } => {
                self.restart_agent(cycle, plan, agent_version, lease).await
            }
            State::Draining { plan, arn, lease, scale_in } => self.drain(cycle, plan, arn, lease, scale_in).await,
            State::Installing { plan, arn, lease, scale_in } => self.install(plan, arn, lease, scale_in).await,
            State::RestartingRuntime { plan, arn, lease, scale_in } => {
                self.restart_runtime(plan, arn, lease, scale_in).await
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
            // The host still serves: give the slot back, pausing the roll (the same update
            // would fail on its peers).
            State::InstallingInPlace { lease: Some(lease), .. } | State::RestartingAgent { lease: Some(lease), .. } => {
                State::Releasing { outcome, lease }
            }
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
