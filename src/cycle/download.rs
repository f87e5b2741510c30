//! Step 2, [`State::Downloading`]: downloads the updates while the host still serves.
//!
//! Journal: entered with the plan and the container instance to drain; the download itself
//! changes nothing the cycle must undo. Every plan goes on to wait for a slot; an in-place
//! plan that updates the agent first notes the agent's version.
//!
//! Failure: nothing was changed; the cycle ends failed (a closed window defers it).

use super::State;
use super::machine::Machine;
use crate::error::{Error, Result};
use crate::plan::Plan;

impl Machine<'_> {
    /// Downloads the plan, and goes on to wait for a slot.
    pub(super) async fn download(&self, plan: Plan, arn: String) -> Result<State> {
        // A plan for a reboot that is due has nothing to download (and a package manager
        // given no package name would take every update).
        if !plan.updates.is_empty() {
            self.ports.packages.download(&plan.target()).await?;
        }
        let agent_version =
            if !plan.drain && plan.updates_agent {
                let agent =
                    self.ports.agent.metadata().await.map_err(|e| {
                        Error::Host(format!("the ECS agent must be running to update it in place: {e}"))
                    })?;
                Some(agent.version)
            } else {
                None
            };
        // Whether someone else drained the instance is checked right before the drain;
        // whether its services can move their tasks, when its turn is near (a fleet that
        // starts together would otherwise read every host's tasks from ECS at once).
        Ok(State::WaitingForSlot { plan, arn, stays: None, agent_version })
    }
}
