//! Step 4, continued, [`State::RestartingAgent`]: restarts the ECS agent after its in-place
//! update and waits for the new version to connect, holding the slot.
//!
//! Journal: entered with the agent's version before the update, before the restart; run
//! again, it restarts only an agent still at the old version.
//!
//! Failure: the agent did not reconnect in `host.agent_reconnect_timeout`, or the update is
//! not verified: the slot is released and the roll paused ([`State::Releasing`]), so a bad
//! agent release stops after the first host.

use tracing::{info, warn};

use super::machine::Machine;
use super::{Cycle, State};
use crate::coordination::Grant;
use crate::error::Result;
use crate::plan::Plan;

impl Machine<'_> {
    /// Restarts the agent (unless the new version already runs) and waits for it to connect;
    /// then the cycle ends.
    pub(super) async fn restart_agent(
        &self,
        cycle: &Cycle,
        plan: Plan,
        old_version: String,
        lease: Option<Grant>,
    ) -> Result<State> {
        let running = self.ports.agent.metadata().await.ok().map(|m| m.version);
        if running.is_none_or(|v| v == old_version) {
            self.ensure_lease()?;
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
        Ok(self.after_in_place(&plan, lease).await)
    }
}
