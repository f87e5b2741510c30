//! Step 2, [`State::Downloading`]: downloads the updates while the host still serves.
//!
//! Journal: entered with the plan and the container instance to drain; the download itself
//! changes nothing the cycle must undo. A drain plan goes on to wait for a slot; an in-place
//! plan (nothing a task depends on changes) first checks the window and that the roll is not
//! paused, and notes the agent's version when the agent is updated.
//!
//! Failure: nothing was changed; the cycle ends failed (a paused roll or a closed window
//! defers it).

use super::State;
use super::machine::Machine;
use crate::error::{Error, Result};
use crate::plan::Plan;

impl Machine<'_> {
    /// Downloads the plan; an in-place plan goes on to install (window open, roll not paused),
    /// a drain plan to wait for a slot.
    pub(super) async fn download(&self, plan: Plan, arn: String) -> Result<State> {
        // A plan for a reboot that is due has nothing to download (and a package manager
        // given no package name would take every update).
        if !plan.updates.is_empty() {
            self.ports.packages.download(&plan.target()).await?;
        }
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
}
