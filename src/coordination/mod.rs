//! Fleet coordination: a slot from a lease held in a distributed store, so a cluster
//! follows its rolling policy (at most N or N % out, capacity kept, halt on failure).
//!
//! [`Coordinator`] is what the cycle sees. [`store::StoreCoordinator`] implements it over
//! any [`store::LeaseStore`] with conditional writes (DynamoDB, or the simulator's);
//! [`fleetlock::FleetLock`] speaks the FleetLock protocol; [`Local`] coordinates with no
//! one but still applies the capacity guard. [`backend`] builds the one the settings choose. [`lease_keeper::LeaseKeeper`] renews a grant while
//! a cycle holds it.

pub mod backend;
pub mod dynamodb;
pub mod fleetlock;
pub mod lease_keeper;
pub mod placement;
pub mod policy;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::alarms::Alarms;
use crate::clock::Clock;
use crate::ec2::Instances;
use crate::ecs::{ContainerInstance, Ecs, HostPorts};
use crate::error::Result;
pub use policy::SlotRequest;
use policy::{GroupRecord, Policy, Snapshot};

/// Proof of a slot, kept in the journal across reboots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The group the slot belongs to.
    pub group: String,
    /// The fencing token of this grant.
    pub token: u64,
    /// The slot item it fills, where the store has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<usize>,
    /// The ECS services whose tasks the drain moves: the slot is given back once they
    /// have recovered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// The host ports the instance's tasks held when its turn was checked, before the grant;
    /// `None` where unknown (a grant found again, or journalled by an earlier version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<HostPorts>,
}

impl Grant {
    /// A grant without a fencing token or a slot item, as backends that have none give
    /// (no coordination, FleetLock); token 0, which a store never issues, so in a store it
    /// holds nothing.
    pub fn unfenced(group: &str) -> Self {
        Self { group: group.to_string(), token: 0, slot: None, services: Vec::new(), ports: None }
    }
}

/// The answer to a slot request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The slot is ours.
    Granted(Grant),
    /// Not yet: why, and when to ask again.
    Wait {
        /// Why not yet.
        reason: String,
        /// Ask again after this many poll intervals (`coordination.poll`): little for the
        /// first in line (a slot may free up at any moment), more the further back it is.
        pace: f64,
    },
    /// The group is paused: why. Nothing new starts until an operator resumes.
    Paused(String),
    /// The host's turn is near: check that its services can move their tasks (and what
    /// stays on it), then ask again at once with the answer in [`SlotRequest::stays`].
    Check,
}

/// How a backend halts the roll after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// The group is paused in the store.
    Paused,
    /// The backend cannot pause: the failed host keeps its slot, which halts the roll once
    /// every slot is held.
    KeepSlot,
    /// No peers to halt (backend `none`).
    Alone,
}

/// A source of slots.
#[async_trait::async_trait]
pub trait Coordinator: Send + Sync {
    /// Asks for a slot (idempotent: a host that holds one gets it back).
    async fn acquire(&self, request: &SlotRequest, ecs: &dyn Ecs) -> Result<Decision>;
    /// Extends the slot's lease to at least `hold` from now (never shortens it); `Ok(false)`
    /// when the slot is no longer ours (released by an operator or reclaimed), an error when
    /// the store could not be asked.
    async fn renew(&self, grant: &Grant, id: &str, step: &str, hold: Duration) -> Result<bool>;
    /// Gives the slot back (a no-op when it is not held).
    async fn release(&self, grant: &Grant, id: &str) -> Result<()>;
    /// Leaves the queue (and drops a grant whose answer was lost) when a host stops waiting.
    async fn withdraw(&self, request: &SlotRequest) -> Result<()>;
    /// The slot host `id` holds for cycle `cycle`, if it still holds one: a cycle taken up
    /// from its drain mark, its journal lost, finds its grant again.
    async fn held(&self, id: &str, cycle: &str) -> Result<Option<Grant>>;
    /// Halts the roll after a failure, so no host starts a new cycle until an operator
    /// resumes; says how.
    async fn pause(&self, reason: &str, by: &str) -> Result<Halt>;
    /// Why the group's roll is paused, if it is: an update installed in place takes no
    /// slot, but stops for a pause all the same. `None` where the backend has no pause.
    async fn paused(&self) -> Result<Option<String>>;
    /// How long a lease lasts without renewal.
    fn ttl(&self) -> Duration;
}

/// Unix milliseconds of `t`.
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Between two ECS calls of a cluster snapshot: a cluster of 5,000 instances takes 100
/// calls, which must not crowd out the fleet's other reads (two thirds of a read a second).
pub const SNAPSHOT_CALL_SPACING: Duration = Duration::from_millis(1500);

/// Reads the whole cluster into a [`Snapshot`] (one list and one describe per 100 instances,
/// `spacing` apart), as of `now`. A record whose agent is disconnected and whose EC2
/// instance is gone (asked of `ec2`, when given) is left out: it would count against the
/// budget forever.
pub async fn snapshot(
    ecs: &dyn Ecs,
    ec2: Option<&dyn Instances>,
    now: SystemTime,
    spacing: Duration,
) -> Result<Snapshot> {
    let mut instances = ecs.cluster_instances(spacing).await?;
    if let Some(ec2) = ec2 {
        leave_out_terminated(ec2, &mut instances).await;
    }
    Ok(Snapshot { taken_at: millis(now), instances: instances.iter().map(Into::into).collect() })
}

/// Drops the records of `instances` whose agent is disconnected and whose EC2 instance is
/// gone. ECS: "stopped container instances or instances with disconnected agents aren't
/// automatically deregistered when terminated". When EC2 cannot answer, they stay (and
/// count): a host that may be rebooting is never left out.
async fn leave_out_terminated(ec2: &dyn Instances, instances: &mut Vec<ContainerInstance>) {
    let disconnected: Vec<String> = instances
        .iter()
        .filter(|i| !i.agent_connected && !i.ec2_instance_id.is_empty())
        .map(|i| i.ec2_instance_id.clone())
        .collect();
    if disconnected.is_empty() {
        return;
    }
    match ec2.gone(&disconnected).await {
        Ok(gone) => {
            for id in &gone {
                tracing::info!(instance = %id, "the EC2 instance is gone: its container-instance record does not count");
            }
            instances.retain(|i| !gone.contains(&i.ec2_instance_id));
        }
        Err(e) => tracing::warn!("cannot tell whether disconnected instances still exist (they count): {e}"),
    }
}

/// No coordination with peers (single host, manual use): the capacity guard, the budget
/// against DRAINING instances and min-healthy still apply, from a fresh look at the cluster.
pub struct Local {
    policy: Policy,
    clock: Arc<dyn Clock>,
    alarms: Option<Arc<dyn Alarms>>,
    ec2: Option<Arc<dyn Instances>>,
}

impl Local {
    /// A local coordinator applying `policy`, and no slot while one of `alarms` fires.
    pub fn new(policy: Policy, clock: Arc<dyn Clock>, alarms: Option<Arc<dyn Alarms>>) -> Self {
        Self { policy, clock, alarms, ec2: None }
    }

    /// The same coordinator, leaving the records of terminated instances out of its count.
    pub fn with_ec2(mut self, ec2: Arc<dyn Instances>) -> Self {
        self.ec2 = Some(ec2);
        self
    }
}

#[async_trait::async_trait]
impl Coordinator for Local {
    async fn acquire(&self, request: &SlotRequest, ecs: &dyn Ecs) -> Result<Decision> {
        if request.stays.is_none() {
            return Ok(Decision::Check);
        }
        if let Some(reason) = crate::alarms::gate(self.alarms.as_deref()).await {
            return Ok(Decision::Wait { reason, pace: 1.0 });
        }
        let snapshot = snapshot(ecs, self.ec2.as_deref(), self.clock.now(), Duration::ZERO).await?;
        Ok(match policy::admit(&GroupRecord::default(), &snapshot, &self.policy, request) {
            Ok(()) => Decision::Granted(Grant::unfenced("local")),
            Err(reason) => Decision::Wait { reason, pace: 1.0 },
        })
    }

    async fn renew(&self, _: &Grant, _: &str, _: &str, _: Duration) -> Result<bool> {
        Ok(true)
    }

    async fn release(&self, _: &Grant, _: &str) -> Result<()> {
        Ok(())
    }

    async fn withdraw(&self, _: &SlotRequest) -> Result<()> {
        Ok(())
    }

    async fn held(&self, _: &str, _: &str) -> Result<Option<Grant>> {
        Ok(Some(Grant::unfenced("local")))
    }

    async fn pause(&self, _: &str, _: &str) -> Result<Halt> {
        Ok(Halt::Alone)
    }

    async fn paused(&self) -> Result<Option<String>> {
        Ok(None)
    }

    fn ttl(&self) -> Duration {
        Duration::MAX
    }
}
