//! Step 7, when the container runtime was updated and `packages.runtime = "restart"`,
//! [`State::RestartingRuntime`]: restarts the runtime (and with it the agent) on the drained
//! host instead of rebooting it.
//!
//! Journal: entered with the slot held, before the restart; run again, it restarts again
//! (harmless on a drained host).
//!
//! Failure: back through [`State::Reactivating`]; the roll pauses.

use super::State;
use super::machine::Machine;
use crate::coordination::Grant;
use crate::error::Result;
use crate::lifecycle::ScaleIn;
use crate::plan::Plan;

impl Machine<'_> {
    /// Restarts the container runtime, then the agent if it was updated too.
    pub(super) async fn restart_runtime(
        &self,
        plan: Plan,
        arn: String,
        lease: Grant,
        scale_in: Option<ScaleIn>,
    ) -> Result<State> {
        self.ensure_lease()?;
        self.ports.host.restart_runtime().await?;
        if plan.updates_agent {
            // ecs-init's unit is `PartOf=docker.service`, so a docker restart restarts
            // the agent with it; restarting it once more is harmless and covers a
            // runtime command that leaves docker running (containerd alone).
            self.ports.host.restart_agent().await?;
        }
        Ok(State::Returning { plan, arn, stale_arn: None, rebooted: false, lease, scale_in })
    }
}
