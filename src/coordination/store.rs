//! Slots kept in a versioned key-value store with conditional writes (compare-and-set).
//!
//! One item per (cluster, group) holds the [`GroupRecord`]: holders, the first-come queue,
//! the pause. Every change is a conditional write on the version read, with a strongly
//! consistent read before it, so two hosts can never both take the last slot. A second
//! item holds the latest cluster [`Snapshot`], shared so that only the host at the head
//! of the queue, at most once per `snapshot_max_age`, reads ECS; hosts that are only
//! waiting make no ECS call.

use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use super::policy::{self, GroupRecord, Holder, Pause, Policy, Snapshot, Waiter};
use super::{Coordinator, Decision, Grant, Halt, SlotRequest, millis, snapshot};
use crate::clock::Clock;
use crate::ecs::Ecs;
use crate::error::{Error, Result};

/// A stored value and the version it was written as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// Grows by one with every write.
    pub version: u64,
    /// The value (JSON).
    pub body: String,
}

/// A key-value store with compare-and-set writes and strongly consistent reads.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync {
    /// The current value of `key`, if any.
    async fn load(&self, key: &str) -> Result<Option<Versioned>>;
    /// Writes `body` as version `expected + 1` (or 1) if the stored version is still
    /// `expected` (`None`: absent). `Ok(false)` when another writer got there first.
    async fn save(&self, key: &str, body: &str, expected: Option<u64>) -> Result<bool>;
}

/// What to do with a holder whose lease expired without finishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StalePolicy {
    /// Pause the group: an operator looks.
    Pause,
    /// Free the slot if the holder's container instance is gone, INACTIVE or disconnected.
    Reclaim,
}

/// The key of the group record of `group` in `cluster`.
pub fn record_key(cluster: &str, group: &str) -> String {
    format!("{cluster}/{group}")
}

/// How many times a write lost to another writer is retried at once.
const CONFLICT_RETRIES: usize = 50;

/// [`Coordinator`] over a [`LeaseStore`].
pub struct StoreCoordinator {
    store: Arc<dyn LeaseStore>,
    clock: Arc<dyn Clock>,
    group: String,
    key: String,
    policy: Policy,
    ttl: Duration,
    snapshot_max_age: Duration,
    on_stale: StalePolicy,
}

/// Settings of a [`StoreCoordinator`].
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The ECS cluster.
    pub cluster: String,
    /// The group within the cluster.
    pub group: String,
    /// The rolling policy.
    pub policy: Policy,
    /// Lease lifetime without renewal.
    pub ttl: Duration,
    /// Oldest shared snapshot used for the capacity guard.
    pub snapshot_max_age: Duration,
    /// What to do with stale leases.
    pub on_stale: StalePolicy,
}

/// What `fleet status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    /// The record's key.
    pub key: String,
    /// The record (empty when none exists yet).
    pub record: GroupRecord,
    /// The last shared snapshot.
    pub snapshot: Option<Snapshot>,
}

impl StoreCoordinator {
    /// A coordinator for `settings.group` of `settings.cluster` in `store`.
    pub fn new(store: Arc<dyn LeaseStore>, clock: Arc<dyn Clock>, settings: StoreSettings) -> Self {
        Self {
            store,
            clock,
            key: record_key(&settings.cluster, &settings.group),
            group: settings.group,
            policy: settings.policy,
            ttl: settings.ttl,
            snapshot_max_age: settings.snapshot_max_age,
            on_stale: settings.on_stale,
        }
    }

    fn snapshot_key(&self) -> String {
        format!("{}/snapshot", self.key)
    }

    async fn read<T: DeserializeOwned + Default>(&self, key: &str) -> Result<(T, Option<u64>)> {
        match self.store.load(key).await? {
            None => Ok((T::default(), None)),
            Some(v) => serde_json::from_str(&v.body)
                .map(|value| (value, Some(v.version)))
                .map_err(|e| Error::Lease(format!("the lease item {key} is not understood: {e}"))),
        }
    }

    async fn write<T: Serialize>(&self, key: &str, value: &T, expected: Option<u64>) -> Result<bool> {
        let body = serde_json::to_string(value).expect("records serialize");
        self.store.save(key, &body, expected).await
    }

    /// Applies `change` to the record until the write wins; `change` returns false to
    /// leave the record as it is.
    async fn update(&self, mut change: impl FnMut(&mut GroupRecord) -> Result<bool>) -> Result<GroupRecord> {
        for _ in 0..CONFLICT_RETRIES {
            let (mut record, version) = self.read::<GroupRecord>(&self.key).await?;
            if !change(&mut record)? {
                return Ok(record);
            }
            if self.write(&self.key, &record, version).await? {
                return Ok(record);
            }
        }
        Err(Error::Lease(format!("too many concurrent writers on {}", self.key)))
    }

    /// The stored snapshot, if it is younger than `snapshot_max_age` and not older than
    /// `not_before`.
    async fn stored_snapshot(&self, not_before: u64) -> Result<Option<Snapshot>> {
        let (stored, version) = self.read::<Snapshot>(&self.snapshot_key()).await?;
        let max_age = u64::try_from(self.snapshot_max_age.as_millis()).unwrap_or(u64::MAX);
        let young = stored.taken_at.saturating_add(max_age) >= millis(self.clock.now());
        Ok((version.is_some() && young && stored.taken_at >= not_before).then_some(stored))
    }

    /// The shared snapshot, refreshed from ECS when it is too old.
    async fn fresh_snapshot(&self, ecs: &dyn Ecs, not_before: u64) -> Result<Snapshot> {
        if let Some(stored) = self.stored_snapshot(not_before).await? {
            return Ok(stored);
        }
        let key = self.snapshot_key();
        let version = self.store.load(&key).await?.map(|v| v.version);
        let fresh = snapshot(ecs, self.clock.now()).await?;
        // The stored copy is a cache: losing a race, or failing to store it (an item over
        // DynamoDB's 400 KB, about 2,500 instances), only costs other hosts a refresh.
        if let Err(e) = self.write(&key, &fresh, version).await {
            tracing::warn!("cannot store the cluster snapshot: {e}");
        }
        Ok(fresh)
    }

    /// Deals with holders whose lease expired; true when the record changed.
    async fn handle_stale(&self, record: &mut GroupRecord, seen_by: &str, ecs: &dyn Ecs) -> Result<bool> {
        let now = millis(self.clock.now());
        let by = format!("{seen_by}, which found the stale lease");
        let stale: Vec<Holder> = record.holders.iter().filter(|h| h.expires_at < now).cloned().collect();
        if stale.is_empty() {
            return Ok(false);
        }
        for holder in stale {
            let dead = match self.on_stale {
                StalePolicy::Pause => None,
                StalePolicy::Reclaim => Some(match ecs.describe(&holder.arn).await? {
                    None => "no longer registered".to_string(),
                    Some(i) if i.status == "INACTIVE" => "INACTIVE".to_string(),
                    Some(i) if !i.agent_connected => "disconnected".to_string(),
                    Some(_) => {
                        record.paused.get_or_insert(Pause {
                            reason: format!(
                                "{}'s lease expired at step {} but its instance is still connected; check it, then resume",
                                holder.id, holder.step
                            ),
                            by: by.clone(),
                            at: now,
                        });
                        continue;
                    }
                }),
            };
            match dead {
                Some(why) => {
                    tracing::warn!(holder = %holder.id, "reclaiming a stale slot: its instance is {why}");
                    record.holders.retain(|h| h.token != holder.token);
                    record.snapshot_not_before = now;
                }
                None => {
                    record.paused.get_or_insert(Pause {
                        reason: format!(
                            "{}'s lease expired at step {} without finishing (it never came back?)",
                            holder.id, holder.step
                        ),
                        by: by.clone(),
                        at: now,
                    });
                }
            }
        }
        Ok(true)
    }

    /// The record and snapshot, for `fleet status`.
    pub async fn view(&self) -> Result<GroupView> {
        let (record, _) = self.read::<GroupRecord>(&self.key).await?;
        let (snapshot, version) = self.read::<Snapshot>(&self.snapshot_key()).await?;
        Ok(GroupView { key: self.key.clone(), record, snapshot: version.map(|_| snapshot) })
    }

    /// Lifts a pause (`fleet resume`); false when the group was not paused.
    pub async fn resume(&self) -> Result<bool> {
        let mut was = false;
        self.update(|r| {
            was = r.paused.is_some();
            r.paused = None;
            Ok(was)
        })
        .await?;
        Ok(was)
    }

    /// Frees the slot of `id` whatever its token (`fleet release`); false when it held none.
    pub async fn release_holder(&self, id: &str) -> Result<bool> {
        let mut held = false;
        self.update(|r| {
            held = r.holders.iter().any(|h| h.id == id);
            r.holders.retain(|h| h.id != id);
            Ok(held)
        })
        .await?;
        Ok(held)
    }
}

#[async_trait::async_trait]
impl Coordinator for StoreCoordinator {
    async fn acquire(&self, request: &SlotRequest, ecs: &dyn Ecs) -> Result<Decision> {
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        for _ in 0..CONFLICT_RETRIES {
            let (mut record, version) = self.read::<GroupRecord>(&self.key).await?;
            let now = millis(self.clock.now());
            // A grant whose answer was lost is still ours, paused or not.
            if let Some(h) = record.holders.iter().find(|h| h.id == request.id && h.cycle == request.cycle) {
                return Ok(Decision::Granted(Grant { group: self.group.clone(), token: h.token }));
            }
            if let Some(pause) = &record.paused {
                return Ok(Decision::Paused(format!("{} (paused by {})", pause.reason, pause.by)));
            }
            let mut changed = self.handle_stale(&mut record, &request.id, ecs).await?;
            // Waiters that stopped asking (terminated while queued) lose their place.
            let before = record.queue.len();
            record.queue.retain(|w| w.id == request.id || w.since.saturating_add(ttl) >= now);
            changed |= record.queue.len() != before;
            let position = match record.queue.iter().position(|w| w.id == request.id) {
                Some(p) if record.queue[p].since.saturating_add(ttl / 3) < now => {
                    record.queue[p].since = now;
                    changed = true;
                    p
                }
                Some(p) => p,
                None => {
                    record.queue.push(Waiter { id: request.id.clone(), since: now });
                    changed = true;
                    record.queue.len() - 1
                }
            };
            if changed {
                self.write(&self.key, &record, version).await?;
                continue;
            }
            // Only a host within reach of a free slot looks at the cluster; the others know
            // the budget from the record alone, and only the head of the queue refreshes the
            // shared snapshot, so waiting hosts make no ECS call.
            let budget = self.policy.max_unavailable.resolve(record.cluster_size.max(1));
            let reachable = budget.saturating_sub(record.holders.len());
            if position >= reachable {
                return Ok(Decision::Wait {
                    reason: format!(
                        "position {} in the queue, {} of {budget} slot(s) held",
                        position + 1,
                        record.holders.len()
                    ),
                    soon: position < budget,
                });
            }
            let snapshot = if position == 0 {
                self.fresh_snapshot(ecs, record.snapshot_not_before).await?
            } else {
                // Behind the head, only a snapshot the head keeps fresh will do.
                match self.stored_snapshot(record.snapshot_not_before).await? {
                    Some(snapshot) => snapshot,
                    None => {
                        return Ok(Decision::Wait {
                            reason: "waiting for the head of the queue to look at the cluster".into(),
                            soon: true,
                        });
                    }
                }
            };
            if position >= policy::free_slots(&record, &snapshot, &self.policy, &request.id) {
                return Ok(Decision::Wait {
                    reason: format!("position {} in the queue, no slot free", position + 1),
                    soon: true,
                });
            }
            if let Err(reason) = policy::admit(&record, &snapshot, &self.policy, request) {
                return Ok(Decision::Wait { reason, soon: true });
            }
            let me = snapshot.instances.iter().find(|i| i.id == request.id).expect("admit() found it").clone();
            record.cluster_size = snapshot.instances.len();
            let token = record.next_token.max(1);
            record.next_token = token + 1;
            record.queue.remove(position);
            record.holders.push(Holder {
                id: request.id.clone(),
                arn: request.arn.clone(),
                token,
                cycle: request.cycle.clone(),
                step: "waiting-for-slot".into(),
                availability_zone: me.availability_zone.clone(),
                allocated: me.registered.minus(me.remaining),
                stays: request.stays,
                acquired_at: now,
                renewed_at: now,
                expires_at: now.saturating_add(ttl),
            });
            if self.write(&self.key, &record, version).await? {
                return Ok(Decision::Granted(Grant { group: self.group.clone(), token }));
            }
        }
        Err(Error::Lease(format!("too many concurrent writers on {}", self.key)))
    }

    async fn renew(&self, grant: &Grant, id: &str, step: &str, hold: Duration) -> Result<bool> {
        let now = millis(self.clock.now());
        let hold = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
        let mut held = false;
        self.update(|r| {
            held = false;
            if let Some(h) = r.holders.iter_mut().find(|h| h.id == id && h.token == grant.token) {
                h.renewed_at = now;
                // Never shorter: a renewal before a reboot may have held it for longer.
                h.expires_at = h.expires_at.max(now.saturating_add(hold));
                h.step = step.to_string();
                held = true;
            }
            Ok(held)
        })
        .await?;
        Ok(held)
    }

    async fn release(&self, grant: &Grant, id: &str) -> Result<()> {
        let now = millis(self.clock.now());
        let keep = u64::try_from(self.snapshot_max_age.as_millis()).unwrap_or(u64::MAX).saturating_mul(2);
        self.update(|r| {
            let before = r.holders.len() + r.queue.len();
            r.holders.retain(|h| !(h.id == id && h.token == grant.token));
            r.queue.retain(|w| w.id != id);
            if r.holders.len() + r.queue.len() == before {
                return Ok(false);
            }
            // Back in service now, even where an older snapshot still shows it DRAINING.
            r.released.retain(|(other, at)| other != id && at.saturating_add(keep) >= now);
            r.released.push((id.to_string(), now));
            Ok(true)
        })
        .await
        .map(drop)
    }

    async fn withdraw(&self, request: &SlotRequest) -> Result<()> {
        self.update(|r| {
            let before = r.holders.len() + r.queue.len();
            r.holders.retain(|h| !(h.id == request.id && h.cycle == request.cycle));
            r.queue.retain(|w| w.id != request.id);
            Ok(r.holders.len() + r.queue.len() != before)
        })
        .await
        .map(drop)
    }

    async fn pause(&self, reason: &str, by: &str) -> Result<Halt> {
        let at = millis(self.clock.now());
        self.update(|r| {
            if r.paused.is_some() {
                return Ok(false);
            }
            r.paused = Some(Pause { reason: reason.to_string(), by: by.to_string(), at });
            Ok(true)
        })
        .await
        .map(|_| Halt::Paused)
    }

    async fn paused(&self) -> Result<Option<String>> {
        let (record, _) = self.read::<GroupRecord>(&self.key).await?;
        Ok(record.paused.map(|p| format!("{} (paused by {})", p.reason, p.by)))
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordination::policy::Budget;
    use crate::sim::ports::{MemoryStore, SimClock, SimEcs};
    use crate::sim::world::WorldState;
    use std::sync::Mutex;

    /// A store whose reads yield, so that two hosts' read-modify-write cycles interleave.
    struct Interleaving(MemoryStore);

    #[async_trait::async_trait]
    impl LeaseStore for Interleaving {
        async fn load(&self, key: &str) -> Result<Option<Versioned>> {
            let value = self.0.load(key).await;
            tokio::task::yield_now().await;
            value
        }

        async fn save(&self, key: &str, body: &str, expected: Option<u64>) -> Result<bool> {
            self.0.save(key, body, expected).await
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn two_hosts_can_never_both_take_the_last_slot() {
        let world = Arc::new(Mutex::new(WorldState::new(4, 1, 1)));
        let clock = Arc::new(SimClock::new(1));
        let memory = Arc::new(MemoryStore::new(Arc::clone(&world)));
        let store: Arc<dyn LeaseStore> = Arc::new(Interleaving(MemoryStore::new(Arc::clone(&world))));
        let settings = StoreSettings {
            cluster: "sim".into(),
            group: "default".into(),
            policy: Policy { max_unavailable: Budget::Count(1), min_healthy_percent: 0, one_az_at_a_time: false },
            ttl: Duration::from_secs(60),
            snapshot_max_age: Duration::from_secs(60),
            on_stale: StalePolicy::Pause,
        };
        let coordinator = StoreCoordinator::new(store, clock.clone(), settings);
        let ecs = |host: usize| SimEcs {
            world: Arc::clone(&world),
            host,
            clock: Arc::clone(&clock),
            store: Arc::clone(&memory),
        };
        let (ecs0, ecs1) = (ecs(0), ecs(1));
        let request = |host: usize| {
            let w = world.lock().unwrap();
            SlotRequest {
                id: w.instances[host].id.clone(),
                arn: w.instances[host].arn.clone(),
                cycle: format!("c{host}"),
                stays: Default::default(),
            }
        };
        let (r0, r1) = (request(0), request(1));
        // Both queue, then both ask at once, many times over: never two grants.
        for _ in 0..20 {
            let (a, b) = tokio::join!(coordinator.acquire(&r0, &ecs0), coordinator.acquire(&r1, &ecs1));
            let granted = [a.unwrap(), b.unwrap()].iter().filter(|d| matches!(d, Decision::Granted(_))).count();
            let (record, _) = coordinator.read::<GroupRecord>(&coordinator.key).await.unwrap();
            assert!(record.holders.len() <= 1, "{record:?}");
            assert!(granted <= 1);
        }
        let (record, _) = coordinator.read::<GroupRecord>(&coordinator.key).await.unwrap();
        assert_eq!(record.holders.len(), 1, "one of them got it: {record:?}");
    }
}
