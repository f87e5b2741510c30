//! Step 3, [`State::InstallingInPlace`]: installs an update no task depends on (userland, the
//! ECS agent) while the tasks run, with no slot and no drain.
//!
//! Journal: entered with the plan (and the agent's version before, when the agent is
//! updated) before the package manager runs; run again, it installs again and the
//! verification decides. An updated agent restarts next ([`State::RestartingAgent`]).
//!
//! Failure: the host still serves; the roll is paused (the same update would fail on the
//! peers) and the cycle ends failed.

use tracing::warn;

use super::machine::Machine;
use super::{Cycle, Outcome, State};
use crate::coordination::Halt;
use crate::error::Result;
use crate::plan::Plan;
use crate::report::Event;

impl Machine<'_> {
    /// Installs while tasks run: nothing they use changes. The agent, if updated, restarts
    /// next; otherwise the cycle ends, naming the services still running replaced code.
    pub(super) async fn install_in_place(
        &self,
        cycle: &Cycle,
        plan: Plan,
        agent_version: Option<String>,
    ) -> Result<State> {
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
    pub(super) async fn patched_in_place(&self, plan: &Plan) -> Outcome {
        let restart_needed = self.ports.packages.services_to_restart().await;
        if !restart_needed.is_empty() {
            warn!(
                "services still run replaced code (restart them at a convenient time): {}",
                restart_needed.join(", ")
            );
        }
        Outcome::Patched { packages: plan.names(), rebooted: false, restart_needed }
    }
}
