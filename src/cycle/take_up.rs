//! Step 0: a drain this host's own cycle left behind, its journal lost (a wiped disk, a
//! restored volume, a record an operator moved aside), is taken up again from the mark the
//! drain left on the container instance, so the host is never left DRAINING for good.
//!
//! The mark is the cycle's id, `<instance id>-<UTC time>`: a mark naming this EC2 instance
//! is this host's. The journal's last cycle must have begun before it: a journal that holds
//! that cycle, or a later one, has moved on (a cycle that failed at a post-boot hook left
//! the instance DRAINING on purpose, for an operator; a mark an operator left behind when
//! setting the instance ACTIVE by hand is stale). The cycle goes on under the mark's id, so
//! that only what it drained is set ACTIVE:
//! - its slot still held: wait for the drain to finish (the journal may have been lost
//!   mid-drain), install what is pending (a reboot that is due included), then return, as
//!   the lost cycle would have;
//! - its slot lapsed (released or reclaimed): no new destructive step; verify the host
//!   (agent running and connected) and return it to service; what is pending waits for
//!   the next cycle and its own slot.
//!
//! It is also where a new cycle first asks ECS about its container instance, so the
//! identity the local agent reported is confirmed here ([`identity::confirmed`]) before
//! anything is changed.
//!
//! Journal: the taken-up cycle is journalled, with what was found, before any step runs.

use tracing::warn;

use super::machine::Machine;
use super::{Cycle, Milestone, State, id as cycle_id};
use crate::config::Backend;
use crate::coordination::Grant;
use crate::ecs::ContainerInstance;
use crate::error::Result;
use crate::identity::{self, Identity};
use crate::plan::{self, Plan};

/// Whether the journal's last cycle is cycle `id` or began after it (or `id` tells no
/// time): then a drain under `id` is no lost cycle's.
pub fn journal_moved_on(last: Option<&Cycle>, id: &str) -> bool {
    let Some(began) = cycle_id::began(id) else { return true };
    last.is_some_and(|last| last.id == id || last.started_at >= began)
}

/// The id of the cycle that drained `instance`, when it is DRAINING under a mark that
/// names EC2 instance `instance_id` (this host's own drain).
pub fn own_drain<'a>(instance: &'a ContainerInstance, instance_id: &str) -> Option<&'a str> {
    let cycle = instance.drained_by.as_deref().filter(|_| instance.status == "DRAINING")?;
    cycle_id::is_of(cycle, instance_id).then_some(cycle)
}

impl Machine<'_> {
    /// The cycle to take up when this host's container instance is DRAINING under its own
    /// mark and the journal does not know that cycle; `None` otherwise.
    pub(super) async fn take_up(&self, identity: &Identity) -> Result<Option<Cycle>> {
        let instance_id = &identity.instance.instance_id;
        let arn = &identity.container_instance_arn;
        // ECS throttles or fails for a moment: tried again as a step would be; still failing,
        // nothing starts (the run exits 75, the daemon tries again), so a drain of ours is
        // never passed over.
        let mut tries = 0;
        let instance = loop {
            match self.ports.ecs.describe(arn).await {
                // The identity is confirmed here, before anything is changed.
                Ok(record) => break identity::confirmed(record, arn, instance_id, &identity.cluster)?,
                Err(e) if e.is_temporary() && tries < super::machine::TRANSIENT_RETRIES => {
                    tries += 1;
                    let wait = self.transient_wait(tries);
                    warn!(
                        "cannot tell yet whether a drain of this host's was left behind ({e}); trying again in {}",
                        super::messages::fmt(wait)
                    );
                    self.ports.clock.sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        };
        let Some(id) = own_drain(&instance, instance_id) else { return Ok(None) };
        if journal_moved_on(self.journal.load::<Cycle>()?.as_ref(), id) {
            return Ok(None);
        }
        let now = self.ports.clock.now();
        let boot_id = self.ports.host.boot_id()?;
        let place = plan::Place {
            state_dir: &self.settings.paths.state_dir,
            journal: Some(self.journal),
            boot_id: Some(&boot_id),
        };
        let plan =
            plan::make(self.ports.packages.as_ref(), self.ports.live.as_ref(), &self.settings.packages, now, place)
                .await?
                .plan;
        // Report-only installs nothing, whatever coordinator stands behind it.
        let held = match self.settings.coordination.backend {
            Backend::ReportOnly => None,
            _ => self.ports.coordinator.held(instance_id, id).await?,
        };
        let (state, found) = match held {
            Some(lease) if !plan.is_empty() => {
                let found = format!("its slot is still held: {} once the drain is over", plan.pending_summary());
                (State::Draining { plan, arn: arn.clone(), lease, scale_in: None }, found)
            }
            Some(lease) => {
                let found = "its slot is still held and nothing is pending".to_string();
                (
                    State::Returning {
                        plan,
                        arn: arn.clone(),
                        stale_arn: None,
                        rebooted: false,
                        lease,
                        scale_in: None,
                    },
                    found,
                )
            }
            None => {
                let found = if plan.is_empty() {
                    "its slot was released or reclaimed and nothing is pending".to_string()
                } else {
                    format!("its slot was released or reclaimed: {} waits for the next cycle", plan.pending_summary())
                };
                // Nothing is installed without a slot: the return verifies no update.
                let verify_nothing = Plan { updates: Vec::new(), reboot_due: None, ..plan };
                // A grant for no slot: its renewal answers "no longer ours" (no destructive
                // step) and its release is a no-op.
                let none = Grant::unfenced("");
                let state = State::Returning {
                    plan: verify_nothing,
                    arn: arn.clone(),
                    stale_arn: None,
                    rebooted: false,
                    lease: none,
                    scale_in: None,
                };
                (state, found)
            }
        };
        let taken_up = format!(
            "{arn} was DRAINING under this host's mark (cycle {id}) and the journal did not know that cycle \
             (lost, restored or moved aside): taken up again; {found}"
        );
        warn!("{taken_up}");
        Ok(Some(Cycle {
            id: id.to_string(),
            instance_id: instance_id.clone(),
            cluster: identity.cluster.clone(),
            started_at: now,
            entered_at: now,
            history: vec![Milestone { step: state.name().into(), at: now }],
            releases: state.plan().and_then(|p| p.releases.clone()),
            state,
            taken_up: Some(taken_up),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn instance(status: &str, mark: Option<&str>) -> ContainerInstance {
        ContainerInstance {
            status: status.into(),
            drained_by: mark.map(str::to_string),
            ..ContainerInstance::default()
        }
    }

    #[test]
    fn a_journal_that_holds_the_cycle_or_a_later_one_has_moved_on() {
        let id = "i-0abc-20261206T081500Z";
        let began = humantime::parse_rfc3339("2026-12-06T08:15:00Z").unwrap();
        let cycle = |id: &str, started_at: SystemTime| Cycle {
            id: id.into(),
            instance_id: "i-0abc".into(),
            cluster: "demo".into(),
            started_at,
            entered_at: started_at,
            state: State::Done { outcome: super::super::Outcome::NothingToDo },
            history: Vec::new(),
            releases: None,
            taken_up: None,
        };
        let minute = std::time::Duration::from_secs(60);
        assert!(!journal_moved_on(None, id), "lost: take it up");
        assert!(!journal_moved_on(Some(&cycle("i-0abc-20261201T000000Z", began - minute)), id), "restored, older");
        assert!(journal_moved_on(Some(&cycle(id, began)), id), "the cycle itself, ended");
        assert!(journal_moved_on(Some(&cycle("i-0abc-20261206T090000Z", began + minute)), id), "a later cycle");
        assert!(journal_moved_on(None, "i-0abc-garbage"), "no time: never taken up");
    }

    #[test]
    fn the_marks_this_host_writes_name_it() {
        let id = cycle_id::new(SystemTime::now(), "i-0abc");
        assert_eq!(own_drain(&instance("DRAINING", Some(&id)), "i-0abc"), Some(id.as_str()));
    }

    #[test]
    fn a_mark_naming_this_instance_is_its_own_drain() {
        let mark = "i-0abc-20261206T081500Z";
        assert_eq!(own_drain(&instance("DRAINING", Some(mark)), "i-0abc"), Some(mark));
    }

    #[test]
    fn another_instance_s_mark_or_an_active_instance_is_not() {
        let mark = "i-0abc-20261206T081500Z";
        assert_eq!(own_drain(&instance("DRAINING", Some(mark)), "i-0ab"), None);
        assert_eq!(own_drain(&instance("DRAINING", Some(mark)), "i-0abcd"), None);
        assert_eq!(own_drain(&instance("ACTIVE", Some(mark)), "i-0abc"), None);
        assert_eq!(own_drain(&instance("DRAINING", None), "i-0abc"), None);
        assert_eq!(own_drain(&instance("DRAINING", Some("i-0abc-")), "i-0abc"), None);
        assert_eq!(own_drain(&instance("DRAINING", Some("-x")), ""), None);
    }
}
