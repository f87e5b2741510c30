//! Step 3, continued, [`State::RestartingAgent`]: restarts the ECS agent after its in-place
//! update and waits for the new version to connect.
//!
//! Journal: entered with the agent's version before the update, before the restart; run
//! again, it restarts only an agent still at the old version.
//!
//! Failure: the agent did not reconnect in `host.agent_reconnect_timeout`, or the update is
//! not verified: the cycle ends failed.

use tracing::{info, warn};

use super::machine::Machine;
use super::{Cycle, State};
use crate::error::Result;
use crate::plan::Plan;

impl Machine<'_> {
    /// Restarts the agent (unless the new version already runs) and waits for it to connect;
    /// then the cycle ends.
    pub(super) async fn restart_agent(&self, cycle: &Cycle, plan: Plan, old_version: String) -> Result<State> {
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
}
