//! `check`: what a run would do now, and why, without changing anything.

use std::time::Duration;

use serde::Serialize;
use tracing::warn;

use crate::config::{Backend, DrainPolicy, RebootPolicy, ReleasePolicy, RuntimePolicy, Settings};
use crate::cycle::Cycle;
use crate::cycle::machine::Ports;
use crate::cycle::take_up::{journal_moved_on, own_drain};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::lifecycle;
use crate::packages::{RebootNeed, RebootProbe, RebootingUpdater, Releases};
use crate::plan::{self, Class, Held, Plan};
use crate::window::{Openness, Schedule};

/// The answer of `check`.
#[derive(Debug, Serialize)]
pub struct Preview {
    /// Who this host is.
    pub identity: Identity,
    /// ECS status of the container instance (ACTIVE, DRAINING, ...).
    pub instance_status: Option<String>,
    /// Whether ECS shows the agent connected.
    pub agent_connected: Option<bool>,
    /// Tasks running or pending on the instance.
    pub tasks: Option<i32>,
    /// The cycle that drained it, if ecs-patchd did.
    pub drained_by: Option<String>,
    /// Why the instance is leaving (spot notice, Auto Scaling lifecycle), if it is.
    pub leaving: Option<String>,
    /// `coordination.backend` (`report-only` until one is chosen: nothing is installed).
    pub coordination_backend: Backend,
    /// The package manager in use.
    pub package_manager: String,
    /// What the package settings select.
    pub filters: Filters,
    /// `packages.release` (the releases found are in the plan, on Amazon Linux 2023).
    pub release_policy: ReleasePolicy,
    /// A newer release that is published and not applied: its fixes count as pending.
    pub release_available: Option<String>,
    /// Runtime packages an unattended updater replaced under running tasks since the boot.
    pub runtime_updated_in_place: Vec<String>,
    /// What `run` would install, its class and why.
    pub plan: Plan,
    /// Updates held back by the filters.
    pub held: Vec<Held>,
    /// Updaters that reboot the host by themselves, bypassing the drain.
    pub rebooting_updaters: Vec<RebootingUpdater>,
    /// `packages.reboot`.
    pub reboot_policy: RebootPolicy,
    /// `packages.runtime`.
    pub runtime_policy: RuntimePolicy,
    /// How a reboot need is told on this host.
    pub reboot_probe: RebootProbe,
    /// Whether installed packages already need a reboot (before anything is installed).
    pub reboot_needed_now: Option<RebootNeed>,
    /// The roll's pause, if an operator must resume it.
    pub roll_paused: Option<String>,
    /// Mistakes in the setup found by a cheap read of each resource the configuration names
    /// (the lease store); `run` and the daemon would stop on them.
    pub setup_problems: Vec<String>,
    /// A cycle that `run` would resume.
    pub in_progress: Option<Cycle>,
    /// The maintenance windows now.
    pub window: WindowView,
    /// What `run` would do, in one sentence.
    pub verdict: String,
}

/// The maintenance windows, as `check` shows them.
#[derive(Debug, Serialize)]
pub struct WindowView {
    /// Whether patching may start now.
    pub open: bool,
    /// When the window open now closes (none: no windows configured).
    #[serde(with = "humantime_serde")]
    pub closes_at: Option<std::time::SystemTime>,
    /// When the next window opens, if closed now.
    #[serde(with = "humantime_serde")]
    pub next_opens_at: Option<std::time::SystemTime>,
    /// The same, in the windows' time zone, for people.
    pub describe: String,
}

impl WindowView {
    /// The windows of `schedule` at `now`.
    pub fn new(schedule: &Schedule, now: std::time::SystemTime) -> Self {
        let openness = schedule.at(now);
        let (closes_at, next_opens_at, describe) = match openness {
            Openness::Always => (None, None, "no maintenance window configured: patching may start at any time".into()),
            Openness::OpenUntil(t) => (Some(t), None, format!("open until {}", schedule.local(t))),
            Openness::ClosedUntil(t) => (None, Some(t), format!("closed; the next window opens {}", schedule.local(t))),
        };
        Self { open: openness.is_open(), closes_at, next_opens_at, describe }
    }
}

/// The package filters in force.
#[derive(Debug, Serialize)]
pub struct Filters {
    /// `packages.security_only`.
    pub security_only: bool,
    /// `packages.exclude`.
    pub exclude: Vec<String>,
    /// `packages.min_age`.
    #[serde(with = "humantime_serde")]
    pub min_age: Duration,
    /// `packages.drain`.
    pub drain: DrainPolicy,
}

/// Looks at the host, ECS and the package manager, and says what `run` would do, given
/// the journal's `last` cycle.
pub async fn preview(
    ports: &Ports,
    settings: &Settings,
    identity: Identity,
    last: Option<Cycle>,
    schedule: &Schedule,
) -> Result<Preview> {
    // Another instance's journal is never resumed (`wiring::in_progress`).
    let in_progress = last.clone().filter(|c| !c.state.is_done() && c.instance_id == identity.instance.instance_id);
    let instance = ports.ecs.describe(&identity.container_instance_arn).await?;
    let now = ports.clock.now();
    let packages = &settings.packages;
    let boot_id = ports.host.boot_id().ok();
    let place = plan::Place { state_dir: &settings.paths.state_dir, journal: None, boot_id: boot_id.as_deref() };
    let planning = plan::make(ports.packages.as_ref(), ports.live.as_ref(), packages, now, place).await?;
    let reboot_probe = planning.plan.reboot_probe;
    let reboot_needed_now = match &planning.plan.reboot_due {
        Some(reason) => Some(RebootNeed { needed: true, reason: reason.clone() }),
        None => plan::reboot_needed_now(ports.packages.as_ref(), packages, reboot_probe).await,
    };
    let backend = settings.coordination.backend;
    // One cheap read of the lease store (the control item, or the FleetLock server).
    let mut setup_problems = Vec::new();
    let roll_paused = match ports.coordinator.paused().await {
        Ok(paused) => paused,
        Err(e @ Error::Config(_)) => {
            setup_problems.push(e.to_string());
            None
        }
        Err(e) => {
            warn!("cannot read the lease store: {e}");
            None
        }
    };
    // DRAINING under this host's own mark: a cycle the journal does not know is taken up
    // by the next run; one it knows ended with the instance left out of service.
    let own = instance.as_ref().and_then(|i| own_drain(i, &identity.instance.instance_id)).map(str::to_string);
    let take_up = own.clone().filter(|id| in_progress.is_none() && !journal_moved_on(last.as_ref(), id));
    let left_drained = instance.as_ref().is_some_and(|i| i.status == "DRAINING") && take_up.is_none();
    let leaving = lifecycle::leaving_or_warn(ports.lifecycle.as_ref()).await.map(|l| l.reason);
    let tasks = instance.as_ref().map(|i| i.running_tasks + i.pending_tasks);
    let runtime_updated_in_place = planning.runtime_updated_in_place;
    let plan = planning.plan;
    let release_available = plan.releases.as_ref().and_then(Releases::unapplied).map(str::to_string);
    let window = WindowView::new(schedule, now);
    let deferred = plan.livepatch.as_ref().and_then(|l| l.deferred.as_ref());
    let verdict = if let Some(cycle) = &in_progress {
        format!("resume cycle {} at step {}", cycle.id, cycle.state.name())
    } else if let Some(id) = &take_up {
        format!(
            "take up cycle {id}: it drained this instance and the journal does not know it (lost or moved \
             aside); verify the host, install what is pending if its slot is still held, and return it to service"
        )
    } else if !setup_problems.is_empty() {
        format!("nothing until the setup is fixed: {}", setup_problems.join("; "))
    } else if !window.open && !plan.is_empty() {
        format!("nothing yet: {}, but the maintenance window is {}", plan.pending_summary(), window.describe)
    } else if let Some(why) = &leaving {
        format!("nothing: {why}")
    } else if let (Some(updater), false) = (planning.rebooting_updaters.first(), packages.allow_rebooting_updater) {
        format!(
            "nothing: {} reboots the host by itself ({}), bypassing the drain; disable it or set \
             packages.allow_rebooting_updater = true",
            updater.name, updater.because
        )
    } else if let (true, Some(deferred)) = (plan.is_empty(), deferred) {
        format!(
            "nothing now: the pending kernel ({}) waits for its reboot until {}, because {} \
             (packages.kernel_reboot_within); it is not up to date",
            deferred.packages.join(", "),
            humantime::format_rfc3339_seconds(deferred.deadline),
            deferred.why
        )
    } else if plan.is_empty() {
        match &release_available {
            Some(newer) => format!(
                "nothing: no update is pending in the release the host runs, but release {newer} is published and \
                 not applied (packages.release = \"{}\")",
                String::from(packages.release.clone())
            ),
            None => "nothing: no update is pending".to_string(),
        }
    } else if backend == Backend::ReportOnly {
        format!(
            "nothing: {}, but coordination.backend is not chosen (report-only): choose \"dynamodb\" or \
             \"fleetlock\" for a fleet, or \"none\" for a single host (operator guide, \"First install\")",
            plan.pending_summary()
        )
    } else if !plan.drain {
        let agent = if plan.updates_agent { ", restart the ECS agent and verify it reconnects" } else { "" };
        let kernel = deferred.map_or(String::new(), |d| {
            format!("; the pending kernel waits until {}", humantime::format_rfc3339_seconds(d.deadline))
        });
        format!("install {} update(s) in place without draining ({}){agent}{kernel}", plan.updates.len(), plan.why)
    } else if let (true, Some(id)) = (left_drained, &own) {
        format!(
            "nothing: cycle {id} ended and left the instance DRAINING (see `status`); set it ACTIVE once it is healthy"
        )
    } else if left_drained {
        "nothing: the instance is DRAINING but not by ecs-patchd, so it is left alone".to_string()
    } else if let (Some(reason), true) = (&plan.reboot_due, plan.updates.is_empty()) {
        format!(
            "drain the instance ({} task(s) to move) because a reboot is due ({reason}), reboot, wait for the \
             agent to reconnect, set the instance ACTIVE",
            tasks.unwrap_or(0)
        )
    } else {
        let after = match (plan.class, packages.reboot, packages.runtime) {
            (_, RebootPolicy::Always, _) => "reboot",
            (Class::Runtime, _, RuntimePolicy::Restart) => "restart the container runtime",
            (Class::Runtime, _, RuntimePolicy::Reboot) => "reboot",
            (Class::Runtime, _, RuntimePolicy::Leave) => "leave the old runtime running (packages.runtime = \"leave\")",
            (_, RebootPolicy::IfNeeded, _) => "reboot if the updates need it",
            (_, RebootPolicy::Never, _) => "not reboot (packages.reboot = \"never\")",
        };
        format!(
            "download {} update(s), drain the instance ({} task(s) to move) because {}, install, {after}, \
             wait for the agent to reconnect, set the instance ACTIVE",
            plan.updates.len(),
            tasks.unwrap_or(0),
            plan.why
        )
    };
    Ok(Preview {
        identity,
        instance_status: instance.as_ref().map(|i| i.status.clone()),
        agent_connected: instance.as_ref().map(|i| i.agent_connected),
        tasks,
        drained_by: instance.and_then(|i| i.drained_by),
        leaving,
        coordination_backend: backend,
        package_manager: ports.packages.name().to_string(),
        filters: Filters {
            security_only: packages.security_only,
            exclude: packages.exclude.clone(),
            min_age: packages.min_age,
            drain: packages.drain,
        },
        release_policy: packages.release.clone(),
        release_available,
        runtime_updated_in_place,
        plan,
        held: planning.held,
        rebooting_updaters: planning.rebooting_updaters,
        reboot_policy: packages.reboot,
        runtime_policy: packages.runtime,
        reboot_probe,
        reboot_needed_now,
        roll_paused,
        setup_problems,
        in_progress,
        window,
        verdict,
    })
}
