//! Step 10, [`State::Releasing`]: lets the host settle, waits until the services it displaced
//! run their desired count again, pauses the roll after a failure, and releases the slot.
//!
//! Journal: entered with the outcome and the slot; run again, it pauses and releases again
//! (both are idempotent).
//!
//! Failure: the run stops and the next run resumes here.

use tracing::warn;

use super::checks::poll_delays;
use super::machine::Machine;
use super::messages::fmt;
use super::{Cycle, Outcome, State};
use crate::clock::Deadline;
use crate::coordination::{Grant, Halt};
use crate::ecs::Service;
use crate::error::{Error, Kind, Result};
use crate::report::Event;

impl Machine<'_> {
    /// Settles, pauses the roll after a failure (or services that did not recover), and
    /// releases the slot.
    pub(super) async fn release(&self, cycle: &Cycle, outcome: Outcome, lease: Grant) -> Result<State> {
        // The host settles only when it went back into service; a deferred one (leaving, or
        // never drained) gives its slot back at once.
        let deferred = matches!(&outcome, Outcome::Failed { kind: Kind::Deferred, .. });
        if !deferred {
            let settled = self.deadline(cycle, self.settings.coordination.settle);
            self.ports.clock.sleep(settled.left()).await;
        }
        let coordinator = &self.ports.coordinator;
        let mut halt = match &outcome {
            Outcome::Failed { step, kind, reason } if kind.halts_roll() => {
                Some(format!("{} failed at {step}: {reason}", cycle.instance_id))
            }
            _ => None,
        };
        // Paced by the services' health, not a fixed wait: the next host may go once the
        // services this drain displaced run their desired count again.
        let recovery = !self.settings.coordination.recovery_timeout.is_zero();
        if matches!(outcome, Outcome::Patched { .. }) && recovery && !lease.services.is_empty() {
            halt = self
                .await_recovery(cycle, &lease.services)
                .await?
                .map(|why| format!("{} was patched, but {why}", cycle.instance_id));
        }
        if let Some(why) = halt {
            match coordinator.pause(&why, &cycle.instance_id).await? {
                Halt::Paused => {
                    warn!("the roll is paused until an operator resumes it");
                    self.ports.reporter.event(cycle, Event::Paused, &why);
                }
                Halt::KeepSlot => {
                    warn!("the slot is kept so the roll halts; `ecs-patchd fleet release` frees it");
                    return Ok(State::Done { outcome });
                }
                Halt::Alone => {}
            }
        }
        coordinator.release(&lease, &cycle.instance_id).await?;
        Ok(State::Done { outcome })
    }

    /// Waits until every service in `names` runs its desired count with one deployment, for
    /// at most `coordination.recovery_timeout`; answers which have not, if any.
    async fn await_recovery(&self, cycle: &Cycle, names: &[String]) -> Result<Option<String>> {
        let timeout = self.settings.coordination.recovery_timeout;
        let deadline = Deadline::within(timeout);
        let mut delays = poll_delays(self.settings.drain.poll_initial, self.settings.drain.poll_max);
        let mut said = String::new();
        loop {
            let lagging = match self.ports.ecs.services(names).await {
                // A service deleted meanwhile has nothing left to recover.
                Ok(services) => services.iter().filter_map(Service::unsteady).collect::<Vec<_>>().join("; "),
                Err(e @ Error::Credentials { .. }) => return Err(e),
                Err(e) => format!("cannot read the services ({e})"),
            };
            if lagging.is_empty() {
                return Ok(None);
            }
            if lagging != said {
                self.ports.reporter.waiting(cycle, &format!("waiting for the services to recover: {lagging}"));
                said = lagging;
            }
            if deadline.passed() {
                return Ok(Some(format!("the services did not recover within {}: {said}", fmt(timeout))));
            }
            let wait = self.ports.clock.jitter(delays.next().unwrap_or(self.settings.drain.poll_max));
            self.ports.clock.sleep(wait.min(deadline.left())).await;
        }
    }
}
