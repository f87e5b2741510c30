//! Step 3, [`State::WaitingForSlot`]: takes a slot from the fleet's lease (rolling policy,
//! capacity guard) until the wait times out or the window closes. Every plan takes one: an
//! in-place install or an agent restart follows the roll as a drain does, so a bad release
//! stops after the first host (its tasks stay, so peers need no room for them).
//!
//! Journal: entered with the plan and the container instance before the first ask; the
//! grant is journalled by entering [`State::Draining`] (or [`State::InstallingInPlace`])
//! with it. The host's Auto Scaling group
//! is read before any slot is taken, so that a grant is never followed by a failure that
//! forgets it.
//!
//! Failure: nothing was changed; the host leaves the queue (a few tries) and the cycle ends
//! failed or deferred (window closed, roll paused, services that cannot move their tasks).

use std::time::Duration;

use tracing::{info, warn};

use super::machine::Machine;
use super::messages::fmt;
use super::{Cycle, State};
use crate::coordination::{Decision, SlotRequest};
use crate::ecs::{Capacity, HostPorts};
use crate::error::{Error, Result};
use crate::lifecycle;
use crate::plan::Plan;
use crate::window::Openness;

/// How many times a host that gives up waiting tries to leave the queue.
const WITHDRAW_ATTEMPTS: u32 = 3;

impl Machine<'_> {
    /// Looks once at the host's Auto Scaling group, then asks the coordinator until it
    /// grants a slot, making no ECS call of its own meanwhile but the check of its services
    /// when its turn is near.
    pub(super) async fn wait_for_slot(
        &self,
        cycle: &Cycle,
        plan: Plan,
        arn: String,
        stays: Option<Capacity>,
        agent_version: Option<String>,
    ) -> Result<State> {
        // Read before the slot is taken: a grant must never be followed by a failure that
        // forgets it. Group membership does not change while the host waits.
        let scale_in = lifecycle::scale_in_or_warn(self.ports.lifecycle.as_ref()).await;
        let mut request = SlotRequest {
            id: cycle.instance_id.clone(),
            arn: arn.clone(),
            cycle: cycle.id.clone(),
            stays,
            needs: Vec::new(),
        };
        // Resumed outside the window: no slot is taken (a peer's turn would be held for nothing).
        self.inside_window("no slot is asked for")?;
        let coordination = &self.settings.coordination;
        let timeout = self.deadline(cycle, coordination.wait_timeout);
        // No new drain starts once the window closes (a wall-clock time, as windows are):
        // the wait ends there.
        let closes = match self.window() {
            Openness::ClosedUntil(_) => Some(self.ports.clock.now()),
            window => window.closes_at(),
        };
        let mut said = String::new();
        let mut pace = 1.0;
        let mut services = Vec::new();
        let mut ports: Option<HostPorts> = None;
        loop {
            match self.ports.coordinator.acquire(&request, self.ports.ecs.as_ref()).await {
                Ok(Decision::Granted(mut lease)) => {
                    info!(token = lease.token, "slot granted");
                    lease.services = services;
                    // A grant found again (no check this run) compares no ports at the drain.
                    lease.ports = ports;
                    if !plan.drain {
                        return Ok(State::InstallingInPlace { plan, agent_version, lease: Some(lease) });
                    }
                    return Ok(State::Draining { plan, arn, lease, scale_in });
                }
                Ok(Decision::Paused(why)) => {
                    self.withdraw(&request).await;
                    return Err(Error::Paused(format!("the roll is paused: {why}")));
                }
                Ok(Decision::Check) if !plan.drain => match self.ports.ecs.describe(&arn).await {
                    // Nothing moves: everything on the host stays, and peers need no room.
                    Ok(found) => {
                        request.stays = Some(found.map(|i| i.registered.minus(i.remaining)).unwrap_or_default());
                        continue;
                    }
                    Err(e @ Error::Credentials { .. }) => {
                        self.withdraw(&request).await;
                        return Err(e);
                    }
                    Err(e) => warn!("cannot read the host's load (will try again): {e}"),
                },
                Ok(Decision::Check) => match self.services_can_move(&arn).await {
                    Ok(moving) => {
                        request.stays = Some(moving.stays);
                        request.needs = moving.needs;
                        ports = Some(moving.ports);
                        services = moving.services;
                        continue;
                    }
                    // A permission the role lacks (ListTasks by service, say) is not mended by
                    // asking again.
                    Err(e @ (Error::Deferred(_) | Error::Credentials { .. } | Error::Config(_))) => {
                        self.withdraw(&request).await;
                        return Err(e);
                    }
                    Err(e) => warn!("cannot check the host's services (will try again): {e}"),
                },
                Ok(Decision::Wait { reason, pace: advised }) => {
                    if reason != said {
                        info!("waiting for a slot: {reason}");
                        self.ports.reporter.waiting(cycle, &reason);
                        said = reason;
                    }
                    pace = advised;
                }
                // Waiting cannot mend credentials or a lease table in a format this version
                // refuses (then no place was taken in the queue), nor a drain of this host's
                // own that an earlier cycle still holds a slot for (deferred: the next run).
                Err(e @ (Error::Credentials { .. } | Error::Config(_) | Error::Deferred(_))) => return Err(e),
                Err(e) => warn!("cannot ask for a slot (will try again): {e}"),
            }
            let now = self.ports.clock.now();
            let window_closed = closes.is_some_and(|closes| now >= closes);
            if window_closed || timeout.passed() {
                self.withdraw(&request).await;
                if window_closed {
                    return Err(Error::Deferred(format!(
                        "the maintenance window closed while waiting for a slot ({said}); nothing was changed"
                    )));
                }
                // Waiting is no failure of this host (whatever holds the roll is reported by
                // its own host): nothing was changed, and the next check asks again.
                return Err(Error::Deferred(format!(
                    "no slot within {} ({said}); nothing was changed, the next check asks again",
                    fmt(coordination.wait_timeout)
                )));
            }
            // As often as the coordinator advises: the first in line every second or so, the
            // back of a long queue seldom.
            let wait = self.ports.clock.jitter(coordination.poll.mul_f64(pace));
            let until_closed = closes.map_or(Duration::MAX, |closes| closes.duration_since(now).unwrap_or_default());
            self.ports.clock.sleep(wait.min(timeout.left()).min(until_closed)).await;
        }
    }

    /// Leaves the queue after giving up, trying a few times (a place left behind holds the
    /// hosts after it until it expires, a lease TTL after its last ask).
    async fn withdraw(&self, request: &SlotRequest) {
        for attempt in 1..=WITHDRAW_ATTEMPTS {
            match self.ports.coordinator.withdraw(request).await {
                Ok(()) => return,
                Err(e) if attempt < WITHDRAW_ATTEMPTS => {
                    warn!("cannot leave the slot queue (will try again): {e}");
                    self.ports.clock.sleep(self.ports.clock.jitter(Duration::from_secs(2))).await;
                }
                Err(e) => warn!("cannot leave the slot queue (the place expires a lease TTL after its last ask): {e}"),
            }
        }
    }
}
