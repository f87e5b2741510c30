//! Step 7, [`State::Rebooting`]: runs the pre-reboot hooks, holds the lease over the reboot,
//! and reboots (or hands the reboot to SSM); a new boot id says it happened.
//!
//! Journal: entered with the boot id before the reboot and the request's number; each
//! request that did not reboot the host enters the step again with the next number, up to
//! `host.reboot_attempts`. A request rarely returns to be counted here: the shutdown it
//! starts stops this process, and a shutdown cancelled after it stopped the services, or a
//! `host.reboot_command` that reports success without rebooting, leaves the host up; so a
//! run that resumes this step in the boot it began in counts the request it finds
//! unanswered before anything else ([`Machine::unanswered_reboot`]). (A blocking inhibitor
//! lock is another case: systemd as old as Amazon Linux 2023's bypasses it for root, and
//! since logind's "always check for inhibitor locks" (2024) `systemctl reboot` fails, an
//! error this step reports.)
//!
//! Failure: back through [`State::Reactivating`] without a reboot; the roll pauses.

use tracing::{info, warn};

use super::machine::Machine;
use super::messages::fmt;
use super::{Cycle, State};
use crate::coordination::Grant;
use crate::error::{Error, Result};
use crate::hooks::HookPoint;
use crate::lifecycle::ScaleIn;
use crate::plan::{self, Plan};
use crate::report::Event;

impl Machine<'_> {
    /// A cycle resumed at [`State::Rebooting`] in the boot the reboot was asked from: that
    /// request did not reboot the host (or its process died asking). The step is entered
    /// again with the next request's number, so that `host.reboot_attempts` bounds the
    /// requests however often the process is stopped.
    pub(super) fn unanswered_reboot(&self, cycle: &Cycle) -> Result<Option<State>> {
        let State::Rebooting { plan, arn, boot_id, attempt, lease, scale_in } = cycle.state.clone() else {
            return Ok(None);
        };
        // Unreadable, the step itself fails on it (and returns the host to service).
        if self.ports.host.boot_id().map_or(true, |now| now != boot_id) {
            return Ok(None);
        }
        warn!(attempt, "the host did not reboot after reboot request {attempt}: counted");
        Ok(Some(State::Rebooting { plan, arn, boot_id, attempt: attempt + 1, lease, scale_in }))
    }

    /// Reboots the host (this request's number counts toward `host.reboot_attempts`); a new
    /// boot id moves on to the return.
    #[allow(clippy::too_many_arguments)] // the state's own fields, as the other steps take them
    pub(super) async fn reboot(
        &self,
        cycle: &Cycle,
        plan: Plan,
        arn: String,
        boot_id: String,
        attempt: u32,
        lease: Grant,
        scale_in: Option<ScaleIn>,
    ) -> Result<State> {
        let now_booted = self.ports.host.boot_id()?;
        if now_booted != boot_id {
            info!("the host has rebooted");
            // The boot this reboot started: a reboot still due in it is not made again.
            if let Err(e) = self.journal.save_file(plan::REBOOTED_INTO_FILE, &now_booted) {
                warn!("cannot note the boot this reboot started: {e}");
            }
            return Ok(State::Returning { plan, arn, stale_arn: None, rebooted: true, lease, scale_in });
        }
        let attempts = self.settings.host.reboot_attempts;
        if attempt > attempts {
            return Err(Error::Host(format!(
                "the host did not reboot after {attempts} request(s) of `{}`",
                self.settings.host.reboot_command.join(" ")
            )));
        }
        self.ensure_lease()?;
        self.run_hooks(HookPoint::PreReboot, cycle, &arn).await?;
        self.hold_through_reboot(cycle, &lease).await?;
        let why = match &plan.reboot_due {
            Some(reason) if plan.updates.is_empty() => format!("a reboot was due: {reason}"),
            _ => format!("installed {}", plan.names().join(", ")),
        };
        self.ports.reporter.event(cycle, Event::Rebooting, &why);
        self.ports.host.reboot().await?;
        self.ports.clock.sleep(self.settings.host.reboot_timeout).await;
        warn!("still running {} after the reboot request", fmt(self.settings.host.reboot_timeout));
        Ok(State::Rebooting { plan, arn, boot_id, attempt: attempt + 1, lease, scale_in })
    }

    /// Renews the slot's lease, just before the reboot, for the longest the reboot may take
    /// (`host.reboot_timeout`) plus one lease lifetime, so that a slow (bare-metal) boot,
    /// and the resume that follows it, never let the lease lapse and pause the roll.
    async fn hold_through_reboot(&self, cycle: &Cycle, lease: &Grant) -> Result<()> {
        let coordinator = &self.ports.coordinator;
        let hold = self.settings.host.reboot_timeout.saturating_add(coordinator.ttl());
        match coordinator.renew(lease, &cycle.instance_id, cycle.state.name(), hold).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Lease("the slot is no longer ours (released or reclaimed): no reboot".into())),
            Err(e) => {
                warn!("cannot extend the slot's lease over the reboot (the last renewal still holds): {e}");
                Ok(())
            }
        }
    }
}
