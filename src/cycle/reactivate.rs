//! Step 9, [`State::Reactivating`]: gives back the scale-in protection, sets the instance
//! ACTIVE again (unless it is being terminated) and deregisters a stale record.
//!
//! Journal: entered with the outcome the cycle will end with, before any change. ACTIVE is
//! set before the mark is removed: a DRAINING instance without the mark would be someone
//! else's. Every failure after the drain passes through here.
//!
//! Failure: the run stops and the next run resumes here (a host is never left drained and
//! forgotten).

use std::time::Duration;

use tracing::{info, warn};

use super::machine::Machine;
use super::messages::drained_by;
use super::{Cycle, Outcome, State};
use crate::coordination::Grant;
use crate::error::Result;
use crate::fault;
use crate::lifecycle::{self, ScaleIn};
use crate::report::Event;

/// A read of the container instance this recent stands for the next step (it saves a read
/// per cycle, which a fleet of thousands feels).
const SEEN_STANDS: Duration = Duration::from_secs(5);

impl Machine<'_> {
    /// Sets the instance this cycle drained ACTIVE again (unless it is leaving), with its
    /// scale-in protection as before.
    pub(super) async fn reactivate(
        &self,
        cycle: &Cycle,
        arn: String,
        stale_arn: Option<String>,
        outcome: Outcome,
        lease: Grant,
        scale_in: Option<ScaleIn>,
    ) -> Result<State> {
        // Before ACTIVE, while no task can be placed on it: the protection it had comes back
        // (with managed termination protection, ECS sets it again as it places tasks).
        if let Some(group) = scale_in.filter(|s| !s.was_protected) {
            lifecycle::protect_or_warn(self.ports.lifecycle.as_ref(), &group.group, false).await;
        }
        let leaving = lifecycle::leaving_or_warn(self.ports.lifecycle.as_ref()).await.filter(|l| l.for_good);
        let seen = self.seen.lock().expect("seen").take();
        let instance = match seen.filter(|(at, i)| i.arn == arn && *at + SEEN_STANDS >= self.ports.clock.now()) {
            Some((_, i)) => Some(i),
            None => self.ports.ecs.describe(&arn).await?,
        };
        match instance.filter(|i| i.status != "INACTIVE") {
            Some(i) if i.drained_by.as_deref() == Some(cycle.id.as_str()) => match &leaving {
                Some(gone) => warn!("{}: {arn} is left as it is and its slot given back", gone.reason),
                None => {
                    // ACTIVE before the mark goes: a DRAINING instance without the mark
                    // would be someone else's, and never set ACTIVE again.
                    if i.status == "DRAINING" {
                        self.ports.ecs.set_active(&arn).await?;
                        fault::point("reactivating:activated");
                        let how = match &outcome {
                            Outcome::Failed { step, .. } => format!("after a failure at {step}"),
                            _ => "patched".to_string(),
                        };
                        self.ports.reporter.event(cycle, Event::BackInService, &how);
                    }
                    self.ports.ecs.unmark(&arn).await?;
                    info!("{arn} is ACTIVE again");
                }
            },
            Some(i) if i.status == "DRAINING" => {
                warn!("{arn} is DRAINING, but not by this cycle ({}): left alone", drained_by(&i));
            }
            Some(_) => {}
            None => warn!("{arn} is no longer registered"),
        }
        self.deregister_stale(stale_arn).await?;
        Ok(State::Releasing { outcome, lease })
    }
}
