//! The patch cycle: one persisted state machine.
//!
//! What an operator would write down, the state that carries each step, and the file that
//! holds its body ([`machine`] drives them in this order):
//!
//! 1. Outside a maintenance window ([`crate::window`]), a host that is leaving (spot notice,
//!    Auto Scaling), or one beside an updater that reboots by itself starts nothing. Plan
//!    the updates and class them ([`crate::plan`]; a kernel whose fixes the loaded live
//!    patches cover may wait, [`crate::livepatch`]); with none, the cycle is done at once.
//! 2. Download them while the host still serves: [`State::Downloading`], [`download`].
//! 3. Take a slot from the fleet's lease (rolling policy, capacity; its services can move
//!    their tasks), until the window closes: [`State::WaitingForSlot`], [`slot`]. Every
//!    plan takes one, a drain's or not: a bad agent release stops after the first host.
//! 4. If no task depends on what changes (userland, the ECS agent, a kernel live patch,
//!    verified loaded): install in place, no drain ([`State::InstallingInPlace`],
//!    [`install_in_place`]); restart the agent if it
//!    changed and verify the new version connected ([`State::RestartingAgent`],
//!    [`restart_agent`]); then release the slot (step 10), pausing the roll on a failure.
//! 5. Still inside the window, and the pre-drain hooks agreeing: protect the instance from
//!    scale-in, drain it, and wait until every task on it has STOPPED: [`State::Draining`],
//!    [`drain`].
//! 6. Install the updates: [`State::Installing`], [`install`].
//! 7. After a container runtime update, restart it (`packages.runtime`):
//!    [`State::RestartingRuntime`], [`restart_runtime`]. Otherwise hold the lease over the
//!    reboot, run the pre-reboot hooks, reboot if needed (or hand the reboot to SSM); a new
//!    boot id says it happened: [`State::Rebooting`], [`reboot`].
//! 8. After boot: agent running and reconnected (under a new ARN if its state was lost),
//!    updates verified, post-boot hooks passed (if not, the host stays out of service):
//!    [`State::Returning`], [`return_to_service`].
//! 9. Give back the scale-in protection, set the instance ACTIVE again (unless it is being
//!    terminated), deregister a stale record: [`State::Reactivating`], [`reactivate`].
//! 10. Wait until the services it displaced run their desired count again (past
//!     `recovery_timeout`, pause the roll, naming them), pause the roll if the cycle failed,
//!     release the slot: [`State::Releasing`], [`release`].
//! 11. Done, with the outcome: [`State::Done`].
//!
//! Before any of these, the container instance the agent reported is confirmed with ECS
//! to be this EC2 instance's, and a drain this host's own cycle left behind without its
//! journal is taken up again from the instance's mark ([`take_up`]), so it is never left
//! DRAINING for good.
//!
//! What several steps check (agent connected, updates installed, hooks) is in [`checks`].
//! Each step entered, each wait and each event an operator cares about goes to the
//! reporter ([`crate::report`]).
//!
//! Every state is written to the journal before the side effect it announces, every step
//! is safe to run twice, and a failure after the drain always passes through
//! `Reactivating`, so the host is never left drained and forgotten. The slot is held from
//! before the drain (or the in-place install) until after the return, renewed in the background
//! ([`crate::coordination::lease_keeper`]); a host whose lease has lapsed starts no new
//! destructive step.

pub mod machine;
pub mod take_up;

mod id;
mod download;
mod slot;
mod install_in_place;
mod restart_agent;
mod drain;
mod install;
mod restart_runtime;
mod reboot;
mod return_to_service;
mod reactivate;
mod release;
mod checks;
mod messages;

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::coordination::Grant;
use crate::ecs::Capacity;
use crate::error::Kind;
use crate::lifecycle::ScaleIn;
use crate::packages::Releases;
use crate::plan::Plan;

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
        /// Old kernel packages removed after the boot into the new kernel (apt).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removed: Vec<String>,
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
    /// Waiting for a slot: the rolling policy and the capacity guard must allow it.
    WaitingForSlot {
        /// What will be installed.
        plan: Plan,
        /// The container instance to drain.
        arn: String,
        /// What stays on the host through the drain (daemon tasks; for an in-place plan,
        /// everything): peers need no room. Looked at when the host's turn is near (`None`
        /// until then).
        #[serde(default)]
        stays: Option<Capacity>,
        /// The agent version before the update, when an in-place plan updates the agent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_version: Option<String>,
    },
    /// Installing an update no task depends on, without draining, holding a slot.
    #[serde(alias = "updating-agent")]
    InstallingInPlace {
        /// What will be installed.
        plan: Plan,
        /// The agent version before the update, when the agent is updated.
        agent_version: Option<String>,
        /// The slot held (none only in a journal written before in-place updates took one).
        #[serde(default)]
        lease: Option<Grant>,
    },
    /// Restarting the agent and waiting for the new version to connect, holding a slot.
    RestartingAgent {
        /// What was installed.
        plan: Plan,
        /// The agent version before the update.
        agent_version: String,
        /// The slot held (none only in a journal written before in-place updates took one).
        #[serde(default)]
        lease: Option<Grant>,
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
            State::Downloading { plan, .. } if plan.updates.is_empty() => {
                format!("{}: nothing to download", plan.pending_summary())
            }
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
                Outcome::Patched { packages, rebooted, restart_needed, removed } => {
                    let mut line = format!("done: {} package(s) updated", packages.len());
                    if *rebooted {
                        line.push_str(", rebooted");
                    }
                    if !removed.is_empty() {
                        line.push_str(&format!("; old kernel packages removed: {}", removed.join(", ")));
                    }
                    if !restart_needed.is_empty() {
                        line.push_str(&format!("; services to restart: {}", restart_needed.join(", ")));
                    }
                    line
                }
                // Not a failure of this host: it did not start, or waits behind another.
                Outcome::Failed { step, reason, kind } if !kind.halts_roll() => {
                    format!("done: not now ({kind}, at {step}): {reason}")
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
        (Downloading { .. }, WaitingForSlot { .. } | Done { .. })
            | (WaitingForSlot { .. }, InstallingInPlace { .. } | Draining { .. } | Done { .. })
            | (InstallingInPlace { .. }, RestartingAgent { .. } | Releasing { .. } | Done { .. })
            | (RestartingAgent { .. }, Releasing { .. } | Done { .. })
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
            State::InstallingInPlace { lease, .. } | State::RestartingAgent { lease, .. } => lease.as_ref(),
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
    /// Set when the cycle was taken up from the instance's drain mark, its journal lost:
    /// what was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_up: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The journal is input too (a disk, a restore, a hand): any bytes are a cycle or a
        /// clear error naming the file, never a panic.
        #[test]
        fn any_journal_bytes_are_a_cycle_or_a_clear_error(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let path = std::path::Path::new("/state/cycle.json");
            if let Err(e) = crate::journal::parse::<Cycle>(&bytes, path) {
                prop_assert!(e.to_string().contains("/state/cycle.json is corrupt"), "{}", e);
            }
        }
    }
}
