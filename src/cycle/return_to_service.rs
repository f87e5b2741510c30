//! Step 8, [`State::Returning`]: after the install (and the reboot), the agent is running and
//! connected (under a new ARN if it lost its state), the updates are verified, the post-boot
//! hooks pass, and after a reboot the kernels the package manager no longer needs are
//! removed (apt; run again, the step finds none left to remove).
//!
//! Journal: an agent that registered anew is journalled (the new ARN, the stale one) before
//! anything else is done with it.
//!
//! Failure: through [`State::Reactivating`], except a failed post-boot hook: the host stays
//! out of service (DRAINING, protected) and the roll pauses, for an operator.

use tracing::{info, warn};

use super::machine::Machine;
use super::{Cycle, Outcome, State};
use crate::coordination::Grant;
use crate::error::Result;
use crate::hooks::HookPoint;
use crate::lifecycle::ScaleIn;
use crate::plan::Plan;

impl Machine<'_> {
    /// Verifies the host after the install and reboot; adopts a new ARN the agent registered
    /// under.
    #[allow(clippy::too_many_arguments)] // the state's own fields, as the other steps take them
    pub(super) async fn return_to_service(
        &self,
        cycle: &Cycle,
        plan: Plan,
        arn: String,
        stale_arn: Option<String>,
        rebooted: bool,
        lease: Grant,
        scale_in: Option<ScaleIn>,
    ) -> Result<State> {
        if let Err(e) = self.ports.agent.metadata().await {
            info!("starting the ECS agent ({e})");
            self.ports.host.start_agent().await?;
        }
        let (_, instance) = self.await_agent(cycle, |_| true).await?;
        if instance.arn != arn {
            // The agent lost its saved state and registered anew: the new record is adopted
            // (`await_agent` confirmed with ECS that it is this EC2 instance's); the drained
            // one is now stale.
            warn!(old = %arn, new = %instance.arn, "the ECS agent registered under a new ARN; the old record will be deregistered");
            let stale_arn = stale_arn.or(Some(arn));
            return Ok(State::Returning { plan, arn: instance.arn, stale_arn, rebooted, lease, scale_in });
        }
        self.verify_installed(&plan).await?;
        if let Err(error) = self.run_hooks(HookPoint::PostBoot, cycle, &arn).await {
            // Fail closed: the host stays out of service (DRAINING, protected from scale-in)
            // and the roll is paused, for an operator to look at it. An agent that came back
            // under a new ARN registered it ACTIVE: that record is drained too.
            if self.registered(&arn).await?.status == "ACTIVE" {
                self.ports.ecs.mark(&arn, &cycle.id).await?;
                self.ports.ecs.set_draining(&arn).await?;
            }
            self.deregister_stale(stale_arn).await?;
            warn!(
                "{error}: {arn} stays DRAINING; once it is healthy, set it ACTIVE (aws ecs update-container-instances-state --status ACTIVE) and resume the roll"
            );
            let outcome = Outcome::Failed {
                step: cycle.state.name().into(),
                kind: error.kind(),
                reason: format!("{error}; the instance stays DRAINING"),
            };
            return Ok(State::Releasing { outcome, lease });
        }
        let removed = if rebooted { self.remove_old_kernels().await } else { Vec::new() };
        let outcome = Outcome::Patched { packages: plan.names(), rebooted, restart_needed: vec![], removed };
        Ok(State::Reactivating { arn, stale_arn, outcome, lease, scale_in })
    }

    /// The old kernels removed now that the host runs the new one; a failure is logged and
    /// changes nothing else (the host is patched and healthy, and `/boot` is only fuller).
    async fn remove_old_kernels(&self) -> Vec<String> {
        match self.ports.packages.remove_old_kernels().await {
            Ok(removed) => {
                if !removed.is_empty() {
                    info!(removed = %removed.join(", "), "removed the kernels the package manager no longer needs");
                }
                removed
            }
            Err(e) => {
                warn!("cannot remove the old kernels (they stay installed): {e}");
                Vec::new()
            }
        }
    }
}
