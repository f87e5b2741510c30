//! `check`: what a run would do now, and why, without changing anything.

use serde::Serialize;

use crate::config::{RebootPolicy, Settings};
use crate::cycle::{Cycle, Plan, Ports};
use crate::error::Result;
use crate::identity::Identity;
use crate::lifecycle;
use crate::packages::{PackageUpdate, RebootNeed};

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
    /// The package manager in use.
    pub package_manager: String,
    /// Updates available now.
    pub pending: Vec<PackageUpdate>,
    /// True when only the ECS agent would be updated.
    pub agent_only: bool,
    /// `packages.reboot`.
    pub reboot_policy: RebootPolicy,
    /// Whether installed packages already need a reboot (before anything is installed).
    pub reboot_needed_now: Option<RebootNeed>,
    /// A cycle that `run` would resume.
    pub in_progress: Option<Cycle>,
    /// What `run` would do, in one sentence.
    pub verdict: String,
}

/// Looks at the host, ECS and the package manager, and says what `run` would do.
pub async fn preview(
    ports: &Ports,
    settings: &Settings,
    identity: Identity,
    in_progress: Option<Cycle>,
) -> Result<Preview> {
    let instance = ports.ecs.describe(&identity.container_instance_arn).await?;
    let pending = ports.packages.pending_updates().await?;
    let plan = Plan::new(pending, &settings.packages.agent_packages);
    let reboot_needed_now = ports.packages.reboot_required().await.ok();
    let drained_by_other = instance.as_ref().is_some_and(|i| i.status == "DRAINING");
    let leaving = lifecycle::leaving_or_warn(ports.lifecycle.as_ref()).await.map(|l| l.reason);
    let tasks = instance.as_ref().map(|i| i.running_tasks + i.pending_tasks);
    let verdict = if let Some(cycle) = &in_progress {
        format!("resume cycle {} at step {}", cycle.id, cycle.state.name())
    } else if let Some(why) = &leaving {
        format!("nothing: {why}")
    } else if plan.updates.is_empty() {
        "nothing: no update is pending".to_string()
    } else if plan.agent_only {
        "update the ECS agent in place (install, restart the agent, verify), without draining".to_string()
    } else if drained_by_other {
        "nothing: the instance is DRAINING but not by ecs-patchd, so it is left alone".to_string()
    } else {
        let reboot = match settings.packages.reboot {
            RebootPolicy::Always => "reboot",
            RebootPolicy::IfNeeded => "reboot if the updates need it",
            RebootPolicy::Never => "not reboot (packages.reboot = \"never\")",
        };
        format!(
            "download {} update(s), drain the instance ({} task(s) to move), install, {reboot}, \
             wait for the agent to reconnect, set the instance ACTIVE",
            plan.updates.len(),
            tasks.unwrap_or(0)
        )
    };
    Ok(Preview {
        identity,
        instance_status: instance.as_ref().map(|i| i.status.clone()),
        agent_connected: instance.as_ref().map(|i| i.agent_connected),
        tasks,
        drained_by: instance.and_then(|i| i.drained_by),
        leaving,
        package_manager: ports.packages.name().to_string(),
        agent_only: plan.agent_only,
        pending: plan.updates,
        reboot_policy: settings.packages.reboot,
        reboot_needed_now,
        in_progress,
        verdict,
    })
}
