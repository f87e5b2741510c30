//! Step 4, [`State::InstallingInPlace`]: installs an update no task depends on (userland, the
//! ECS agent) while the tasks run, holding a slot but draining nothing.
//!
//! Journal: entered with the plan and the slot (and the agent's version before, when the
//! agent is updated) before the package manager runs; run again, it installs again and the
//! verification decides. An updated agent restarts next ([`State::RestartingAgent`]);
//! otherwise the slot is released ([`State::Releasing`]).
//!
//! Failure: the host still serves; the slot is released and the roll paused (the same
//! update would fail on the peers), through [`State::Releasing`].

use tracing::{info, warn};

use super::machine::Machine;
use super::{Cycle, Outcome, State};
use crate::coordination::{Grant, Halt};
use crate::error::Result;
use crate::plan::Plan;
use crate::report::Event;

impl Machine<'_> {
    /// Installs while tasks run: nothing they use changes. The agent, if updated, restarts
    /// next; otherwise the slot is given back, naming the services still running replaced
    /// code.
    pub(super) async fn install_in_place(
        &self,
        cycle: &Cycle,
        plan: Plan,
        agent_version: Option<String>,
        lease: Option<Grant>,
    ) -> Result<State> {
        self.ensure_lease()?;
        let installed = self.ports.packages.install(&plan.target()).await;
        let verified = match (&installed, &agent_version) {
            (Ok(()), None) => self.verify_installed(&plan).await,
            _ => installed,
        };
        let verified = match verified {
            Ok(()) => self.verify_live_patches(&plan).await,
            failed => failed,
        };
        if let (Err(error), None) = (&verified, &lease) {
            // A journal from before in-place installs took a slot: no release step follows
            // to halt the roll, so halt it here.
            let why = format!("{} failed at {}: {error}", cycle.instance_id, cycle.state.name());
            match self.ports.coordinator.pause(&why, &cycle.instance_id).await {
                Ok(Halt::Paused) => self.ports.reporter.event(cycle, Event::Paused, &why),
                Ok(_) => {}
                Err(e) => warn!("cannot pause the roll: {e}"),
            }
        }
        verified?;
        match agent_version {
            Some(agent_version) => Ok(State::RestartingAgent { plan, agent_version, lease }),
            None => Ok(self.after_in_place(&plan, lease).await),
        }
    }

    /// A live patch installed for the running kernel is loaded (the tool's own command, safe
    /// to run again) and must then be enabled, its transition over, within
    /// `packages.livepatch.load_timeout`: one that fails to load fails the cycle (and pauses
    /// the roll: the same patch would fail on the peers).
    pub(super) async fn verify_live_patches(&self, plan: &Plan) -> Result<()> {
        let Some(patches) = plan.livepatch.as_ref().filter(|l| !l.installing.is_empty()) else { return Ok(()) };
        let limit = self.settings.packages.livepatch.load_timeout;
        self.ports.live.load_installed(limit).await?;
        let state = crate::livepatch::await_loaded(self.ports.live.as_ref(), self.ports.clock.as_ref(), limit).await?;
        info!(
            loaded = %state.loaded.join(", "),
            "live patch(es) {} loaded into the running kernel {}",
            patches.installing.join(", "),
            state.kernel
        );
        Ok(())
    }

    /// Where an in-place cycle goes once it is installed: the slot's release, with the
    /// outcome naming the services still running replaced code.
    pub(super) async fn after_in_place(&self, plan: &Plan, lease: Option<Grant>) -> State {
        let restart_needed = self.ports.packages.services_to_restart().await;
        if !restart_needed.is_empty() {
            warn!(
                "services still run replaced code (restart them at a convenient time): {}",
                restart_needed.join(", ")
            );
        }
        let outcome = Outcome::Patched { packages: plan.names(), rebooted: false, restart_needed, removed: vec![] };
        match lease {
            Some(lease) => State::Releasing { outcome, lease },
            None => State::Done { outcome },
        }
    }
}
