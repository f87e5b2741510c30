//! Step 6, [`State::Installing`]: installs the updates on the drained host, verifies them,
//! and decides what loads them: a runtime restart, a reboot, an agent restart, or nothing.
//!
//! Journal: entered with the slot held, before the package manager runs; run again after a
//! restart, it installs again (the package manager finishes a leftover transaction) and the
//! verification decides. The boot id is journalled with [`State::Rebooting`] before any
//! reboot is asked for.
//!
//! Failure: back through [`State::Reactivating`]: the host returns to service unpatched and
//! the roll pauses.

use tracing::{info, warn};

use super::State;
use super::machine::Machine;
use crate::config::{RebootPolicy, RuntimePolicy};
use crate::coordination::Grant;
use crate::error::Result;
use crate::lifecycle::ScaleIn;
use crate::packages::reboot::{self, RebootRule};
use crate::packages::{RebootNeed, RebootProbe};
use crate::plan::{Class, Plan};

impl Machine<'_> {
    /// Installs the plan. Run again after a restart, it installs again: the package
    /// manager waits for a leftover transaction's lock, finishes what is missing, and the
    /// verification below decides.
    pub(super) async fn install(
        &self,
        plan: Plan,
        arn: String,
        lease: Grant,
        scale_in: Option<ScaleIn>,
    ) -> Result<State> {
        self.ensure_lease()?;
        // A plan for a reboot that is due installs nothing (and a package manager given no
        // package name would install every update): the reboot check below answers.
        if !plan.updates.is_empty() {
            self.ports.packages.install(&plan.target()).await?;
        }
        // A package manager may skip an update it cannot install and still succeed (dnf
        // with best=False): find out now, before a reboot for nothing.
        self.verify_installed(&plan).await?;
        let runtime = self.settings.packages.runtime;
        if plan.class == Class::Runtime && self.settings.packages.reboot != RebootPolicy::Always {
            match runtime {
                RuntimePolicy::Restart => {
                    // No reboot follows: a live patch installed beside the runtime must load.
                    self.verify_live_patches(&plan).await?;
                    return Ok(State::RestartingRuntime { plan, arn, lease, scale_in });
                }
                RuntimePolicy::Reboot => {
                    let boot_id = self.ports.host.boot_id()?;
                    return Ok(State::Rebooting { plan, arn, boot_id, attempt: 1, lease, scale_in });
                }
                RuntimePolicy::Leave => {
                    warn!(
                        "the container runtime was updated but keeps running its old version until the next reboot (packages.runtime = \"leave\")"
                    );
                }
            }
        } else if self.reboot_wanted(&plan).await? {
            let boot_id = self.ports.host.boot_id()?;
            return Ok(State::Rebooting { plan, arn, boot_id, attempt: 1, lease, scale_in });
        }
        self.verify_live_patches(&plan).await?;
        if plan.updates_agent {
            // No reboot loads the new agent: restart it (run twice, it restarts twice).
            self.ports.host.restart_agent().await?;
        }
        Ok(State::Returning { plan, arn, stale_arn: None, rebooted: false, lease, scale_in })
    }

    /// An updated package of `packages.reboot_packages` needs a reboot, whatever the probe
    /// knows of it (the class promised one); otherwise the probe chosen before the drain
    /// answers, or the reboot rule where the host has none.
    async fn reboot_required(&self, plan: &Plan) -> Result<RebootNeed> {
        let rule = RebootRule::new(&self.settings.packages);
        if let Some(need) = reboot::by_package(&rule, &plan.names()) {
            return Ok(need);
        }
        match plan.reboot_probe {
            RebootProbe::Rule => reboot::by_rule(&rule, &plan.names()),
            _ => self.ports.packages.reboot_required().await,
        }
    }

    async fn reboot_wanted(&self, plan: &Plan) -> Result<bool> {
        match self.settings.packages.reboot {
            RebootPolicy::Always => Ok(true),
            RebootPolicy::IfNeeded => {
                let need = self.reboot_required(plan).await?;
                info!(needed = need.needed, "reboot check: {}", need.reason);
                Ok(need.needed)
            }
            RebootPolicy::Never => {
                match self.reboot_required(plan).await {
                    Ok(need) if need.needed => {
                        warn!("a reboot is needed ({}) but packages.reboot is \"never\"", need.reason)
                    }
                    Ok(_) => {}
                    Err(e) => warn!("cannot tell whether a reboot is needed: {e}"),
                }
                Ok(false)
            }
        }
    }
}
