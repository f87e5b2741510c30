//! Slots kept in a key-value store with conditional writes, in small items that do not grow
//! with the fleet: a cluster of 5,000 hosts costs what one of 50 does, per item.
//!
//! The items of one (cluster, group), under the key `CLUSTER/GROUP`:
//!
//! | key                    | holds                                                        |
//! |------------------------|--------------------------------------------------------------|
//! | `CLUSTER/GROUP`        | the [`Control`] item: the pause, the last ticket served, the next fencing token |
//! | `…/tickets`            | a counter, raised atomically by each host that joins the queue |
//! | `…/ticket/T`           | the [`Ticket`] of waiter T: who, which cycle, when it last asked |
//! | `…/queued/ID`          | the ticket host ID waits with, found again after a restart   |
//! | `…/slot/N`             | a [`Slot`]: its holder, and who gave it back recently        |
//! | `…/snapshot/head`, `…/snapshot/P` | the shared cluster snapshot, in parts of [`PART_SIZE`] instances |
//!
//! Hosts are served in ticket order (first come, first served). Only the head of the queue
//! (ticket = served + 1) may take a slot: with strongly consistent reads of the control item
//! and the slots, one transaction advances `served`, issues the fencing token and fills a
//! free slot, so two hosts can never take the same slot or exceed the budget. Hosts behind
//! the head read the control item eventually consistently, less often the further back they
//! are; waiters in front that stopped asking are skipped. The next in line checks its
//! services (ECS) while the head takes its turn; the head decides with the shared snapshot,
//! which a waiter one to three budgets back refreshes before it is too old.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::policy::{self, GroupRecord, Holder, InstanceView, Pause, Policy, Snapshot};
use super::{Coordinator, Decision, Grant, Halt, SlotRequest, millis, snapshot};
use crate::alarms::Alarms;
use crate::clock::Clock;
use crate::ecs::{Capacity, Ecs};
use crate::error::{Error, Result};

/// A stored value and the version it was written as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// Grows by one with every write.
    pub version: u64,
    /// The value (JSON).
    pub body: String,
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Every write acknowledged before the read (DynamoDB: twice the read cost).
    Strong,
    /// Possibly a moment old.
    Eventual,
}

/// What a write expects of the item before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// It does not exist.
    Absent,
    /// It is at this version.
    Version(u64),
    /// Anything: an unconditional write.
    Any,
}

/// One write: `body` as the next version of `key`, or the item deleted (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The item's key.
    pub key: String,
    /// The new value, or `None` to delete the item.
    pub body: Option<String>,
    /// The condition.
    pub expect: Expect,
}

/// A key-value store with conditional writes, transactions and an atomic counter.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync {
    /// The current value of `key`, if any.
    async fn load(&self, key: &str, consistency: Consistency) -> Result<Option<Versioned>>;
    /// The values of `keys`, in their order.
    async fn load_many(&self, keys: &[String], consistency: Consistency) -> Result<Vec<Option<Versioned>>>;
    /// Applies `write` if its condition holds; `Ok(false)` when it does not (another writer
    /// got there first). The next version is the stored one plus one (1 for a new item).
    async fn save(&self, write: &Write) -> Result<bool>;
    /// Applies every write or none: `Ok(false)` when a condition does not hold.
    async fn commit(&self, writes: &[Write]) -> Result<bool>;
    /// Raises the counter `key` by one and answers the new value (1 for the first).
    async fn increment(&self, key: &str) -> Result<u64>;
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

/// The key of the control item of `group` in `cluster` (the prefix of all its items).
pub fn record_key(cluster: &str, group: &str) -> String {
    format!("{cluster}/{group}")
}

/// The format of the items this version writes; version 1 kept everything in one item.
const FORMAT: u32 = 2;
/// Instances per stored snapshot part: about 60 bytes each packed, so a part stays near
/// 12 KB (3 read units), far below DynamoDB's 400 KB item limit, at any cluster size.
pub const PART_SIZE: usize = 200;
/// Recent releases kept per slot: a host given back after the snapshot was taken is in
/// service, though the snapshot shows it DRAINING. Fewer, or shorter, only means a wait for
/// the next snapshot; the head accepts snapshots up to 1,200 s old (5,000 instances).
const RELEASES_KEPT: usize = 8;
/// How long a release is kept (longer than any snapshot the head accepts).
const RELEASES_KEPT_FOR: Duration = Duration::from_secs(3600);
/// How many times a write lost to another writer is retried at once.
const CONFLICT_RETRIES: usize = 8;
/// Tickets at the queue's front a waiter looks at when the queue has not moved.
const SKIP_SCAN: u64 = 100;
/// A queue front unmoved this long is looked at for waiters that stopped asking.
const STUCK_AFTER: Duration = Duration::from_secs(60);
/// The furthest apart a waiter's looks are, in poll intervals.
const SLOWEST_PACE: f64 = 20.0;
/// The least time between two grants. A cycle costs about a dozen ECS reads, five of them
/// right at the grant (the services check, the instance before its drain): one grant every
/// three seconds keeps a fleet's reads under 5 a second, well inside ECS's per-account
/// budget, and still serves a hundred slots of seven minutes each (0.24 grants a second).
pub const GRANT_SPACING: Duration = Duration::from_secs(3);
/// How often the first two of the queue look at the control item (and the head at the
/// slots): about a read unit a second per slot item for the head.
const NEAR_LOOK: Duration = Duration::from_secs(1);

/// The group's control item: small and fixed in size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// The item format ([`FORMAT`]).
    pub format: u32,
    /// Set while the roll is halted.
    pub paused: Option<Pause>,
    /// Every ticket up to this one has been served (granted, withdrawn or skipped).
    pub served: u64,
    /// The next fencing token.
    pub next_token: u64,
    /// Slot items in use: `slot/0` to `slot/{slots - 1}`.
    pub slots: usize,
    /// Registered instances at the last grant, so waiters know the budget without a snapshot.
    pub cluster_size: usize,
    /// Snapshots taken before this (unix ms) no longer count: a slot was reclaimed and the
    /// cluster must be looked at again.
    pub snapshot_not_before: u64,
    /// When the last slot was granted (unix ms).
    #[serde(default)]
    pub last_grant_at: u64,
}

/// One slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Its holder, if any.
    pub holder: Option<Holder>,
    /// Hosts that gave it back recently (id, unix ms), newest last.
    #[serde(default)]
    pub released: Vec<(String, u64)>,
}

/// A waiting host's place in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// EC2 instance id.
    pub id: String,
    /// The cycle waiting.
    pub cycle: String,
    /// When it last asked (unix ms): a ticket not refreshed within the lease TTL is skipped.
    pub asked_at: u64,
}

/// Which ticket a host waits with.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Queued {
    ticket: u64,
    cycle: String,
}

/// The head of the stored snapshot: its parts are valid only with its `taken_at`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SnapshotHead {
    taken_at: u64,
    parts: usize,
    instances: usize,
    /// A waiter is refreshing it until then (unix ms).
    #[serde(default)]
    refreshing_until: u64,
}

/// One instance in a stored snapshot part: id, status, connected, zone, registered
/// (cpu, memory), remaining (cpu, memory).
type PackedView = (String, String, bool, Option<String>, [i64; 2], [i64; 2]);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotPart {
    taken_at: u64,
    instances: Vec<PackedView>,
}

fn pack(i: &InstanceView) -> PackedView {
    (
        i.id.clone(),
        i.status.clone(),
        i.connected,
        i.availability_zone.clone(),
        [i.registered.cpu, i.registered.memory],
        [i.remaining.cpu, i.remaining.memory],
    )
}

fn unpack((id, status, connected, availability_zone, registered, remaining): PackedView) -> InstanceView {
    InstanceView {
        id,
        status,
        connected,
        availability_zone,
        registered: Capacity { cpu: registered[0], memory: registered[1] },
        remaining: Capacity { cpu: remaining[0], memory: remaining[1] },
    }
}

/// The single-item record of version 1, read only to convert or refuse it.
#[derive(Deserialize)]
struct LegacyRecord {
    holders: Vec<Holder>,
    queue: Vec<serde_json::Value>,
    paused: Option<Pause>,
    next_token: u64,
}

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
    poll: Duration,
    alarms: Option<Arc<dyn Alarms>>,
    memory: Mutex<Memory>,
}

/// What this process remembers between calls (all of it can be found again in the store).
#[derive(Default)]
struct Memory {
    /// The store's items were checked to be of this format.
    format_checked: bool,
    /// Our ticket by cycle, and when we last refreshed it (unix ms).
    tickets: HashMap<String, (u64, u64)>,
    /// The last snapshot read or taken.
    snapshot: Option<Arc<Snapshot>>,
    /// The queue's front (`served`) as last seen, and since when (unix ms).
    front: Option<(u64, u64)>,
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
    /// How often a waiting host asks, before the pace of the queue.
    pub poll: Duration,
}

/// What `fleet status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    /// The control item's key.
    pub key: String,
    /// The control item (empty when none exists yet).
    pub control: Control,
    /// Hosts holding a slot.
    pub holders: Vec<Holder>,
    /// Tickets taken and not yet served: the hosts waiting, and any that stopped asking and
    /// are not skipped yet.
    pub waiting: u64,
    /// The first of them, in order.
    pub next_in_line: Vec<Ticket>,
    /// When the shared snapshot was taken (unix ms) and how many instances it shows.
    pub snapshot: Option<(u64, usize)>,
}

/// Unix ms of a duration.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
            poll: settings.poll,
            alarms: None,
            memory: Mutex::new(Memory::default()),
        }
    }

    /// The same coordinator, granting no slot while one of `alarms` fires.
    pub fn with_alarms(mut self, alarms: Option<Arc<dyn Alarms>>) -> Self {
        self.alarms = alarms;
        self
    }

    fn now(&self) -> u64 {
        millis(self.clock.now())
    }

    fn tickets_key(&self) -> String {
        format!("{}/tickets", self.key)
    }

    fn ticket_key(&self, ticket: u64) -> String {
        format!("{}/ticket/{ticket}", self.key)
    }

    fn queued_key(&self, id: &str) -> String {
        format!("{}/queued/{id}", self.key)
    }

    fn slot_key(&self, n: usize) -> String {
        format!("{}/slot/{n}", self.key)
    }

    fn snapshot_key(&self, part: Option<usize>) -> String {
        match part {
            None => format!("{}/snapshot/head", self.key),
            Some(p) => format!("{}/snapshot/{p}", self.key),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().expect("coordinator memory")
    }

    fn parse<T: DeserializeOwned>(&self, key: &str, body: &str) -> Result<T> {
        serde_json::from_str(body).map_err(|e| Error::Lease(format!("the lease item {key} is not understood: {e}")))
    }

    async fn read<T: DeserializeOwned>(&self, key: &str, consistency: Consistency) -> Result<Option<(T, u64)>> {
        match self.store.load(key, consistency).await? {
            None => Ok(None),
            Some(v) => Ok(Some((self.parse(key, &v.body)?, v.version))),
        }
    }

    fn put<T: Serialize>(key: String, value: &T, expect: Expect) -> Write {
        Write { key, body: Some(serde_json::to_string(value).expect("lease items serialize")), expect }
    }

    fn delete(key: String) -> Write {
        Write { key, body: None, expect: Expect::Any }
    }

    /// Converts a version-1 record, or refuses it while it has holders; done once per process.
    async fn ensure_format(&self) -> Result<()> {
        if self.memory().format_checked {
            return Ok(());
        }
        for _ in 0..CONFLICT_RETRIES {
            let stored = self.store.load(&self.key, Consistency::Strong).await?;
            let write = match &stored {
                None => Self::put(self.key.clone(), &Control { format: FORMAT, ..Control::default() }, Expect::Absent),
                Some(v) => {
                    let value: serde_json::Value = self.parse(&self.key, &v.body)?;
                    if value.get("format").and_then(serde_json::Value::as_u64) == Some(u64::from(FORMAT)) {
                        self.memory().format_checked = true;
                        return Ok(());
                    }
                    let legacy: LegacyRecord = serde_json::from_value(value).map_err(|e| {
                        Error::Config(format!(
                            "the lease item {} is neither this version's format nor the single-item format of \
                             earlier versions: {e}",
                            self.key
                        ))
                    })?;
                    if !legacy.holders.is_empty() {
                        let ids: Vec<&str> = legacy.holders.iter().map(|h| h.id.as_str()).collect();
                        // Not a passing trouble: waiting would not help, an operator must act.
                        return Err(Error::Config(format!(
                            "the lease item {} is in the single-item format of ecs-patchd before 0.2 and {} host(s) \
                             hold a slot in it ({}); let them finish with the version they run (or free them with \
                             its `ecs-patchd fleet release`), then start this version, which converts the empty \
                             record",
                            self.key,
                            ids.len(),
                            ids.join(", ")
                        )));
                    }
                    tracing::info!(
                        key = %self.key,
                        dropped_waiters = legacy.queue.len(),
                        "converting the lease item from the single-item format; waiting hosts queue again"
                    );
                    let control = Control {
                        format: FORMAT,
                        paused: legacy.paused,
                        next_token: legacy.next_token,
                        ..Control::default()
                    };
                    Self::put(self.key.clone(), &control, Expect::Version(v.version))
                }
            };
            if self.store.save(&write).await? {
                // The version-1 snapshot item is dead weight now.
                self.store.save(&Self::delete(format!("{}/snapshot", self.key))).await?;
                self.memory().format_checked = true;
                return Ok(());
            }
        }
        Err(Error::Lease(format!("too many concurrent writers on {}", self.key)))
    }

    async fn control(&self, consistency: Consistency) -> Result<(Control, Option<u64>)> {
        self.ensure_format().await?;
        Ok(match self.read::<Control>(&self.key, consistency).await? {
            Some((control, version)) => (control, Some(version)),
            None => (Control { format: FORMAT, ..Control::default() }, None),
        })
    }

    /// Applies `change` to the control item until the write wins; `change` returns false to
    /// leave it as it is.
    async fn update_control(&self, mut change: impl FnMut(&mut Control) -> bool) -> Result<Control> {
        for _ in 0..CONFLICT_RETRIES {
            let (mut control, version) = self.control(Consistency::Strong).await?;
            if !change(&mut control) {
                return Ok(control);
            }
            let expect = version.map_or(Expect::Absent, Expect::Version);
            if self.store.save(&Self::put(self.key.clone(), &control, expect)).await? {
                return Ok(control);
            }
            self.back_off().await;
        }
        Err(Error::Lease(format!("too many concurrent writers on {}", self.key)))
    }

    /// A short random pause after losing a conditional write, so that writers who collided
    /// do not collide again.
    async fn back_off(&self) {
        self.clock.sleep(self.clock.jitter(Duration::from_millis(200))).await;
    }

    /// Every slot item with its version (`None`: never written).
    async fn slots(&self, count: usize) -> Result<Vec<(Slot, Option<u64>)>> {
        let keys: Vec<String> = (0..count).map(|n| self.slot_key(n)).collect();
        let mut slots = Vec::with_capacity(count);
        for (key, stored) in keys.iter().zip(self.store.load_many(&keys, Consistency::Strong).await?) {
            slots.push(match stored {
                None => (Slot::default(), None),
                Some(v) => (self.parse(key, &v.body)?, Some(v.version)),
            });
        }
        Ok(slots)
    }

    /// The policy's view of the slots.
    fn record(slots: &[(Slot, Option<u64>)]) -> GroupRecord {
        GroupRecord {
            holders: slots.iter().filter_map(|(s, _)| s.holder.clone()).collect(),
            released: slots.iter().flat_map(|(s, _)| s.released.iter().cloned()).collect(),
        }
    }

    /// Changes slot `n` with `change` until the write wins; `change` returns false to leave
    /// it. Answers whether it changed it.
    async fn update_slot(&self, n: usize, mut change: impl FnMut(&mut Slot) -> bool) -> Result<bool> {
        let key = self.slot_key(n);
        for _ in 0..CONFLICT_RETRIES {
            let (mut slot, expect) = match self.read::<Slot>(&key, Consistency::Strong).await? {
                Some((slot, version)) => (slot, Expect::Version(version)),
                None => (Slot::default(), Expect::Absent),
            };
            if !change(&mut slot) {
                return Ok(false);
            }
            if self.store.save(&Self::put(key.clone(), &slot, expect)).await? {
                return Ok(true);
            }
            self.back_off().await;
        }
        Err(Error::Lease(format!("too many concurrent writers on {key}")))
    }

    /// The slot a grant fills (looked up by token for grants that did not record it).
    async fn slot_of(&self, grant: &Grant) -> Result<Option<usize>> {
        if grant.slot.is_some() {
            return Ok(grant.slot);
        }
        let (control, _) = self.control(Consistency::Strong).await?;
        let slots = self.slots(control.slots).await?;
        Ok(slots.iter().position(|(s, _)| s.holder.as_ref().is_some_and(|h| h.token == grant.token)))
    }

    /// The snapshot to decide with: ours if young enough, else the shared one, else a fresh
    /// look at the cluster (shared for the hosts after us).
    async fn fresh_snapshot(&self, ecs: &dyn Ecs, not_before: u64) -> Result<Arc<Snapshot>> {
        let now = self.now();
        let usable = |s: &Snapshot| {
            s.taken_at >= not_before && s.taken_at.saturating_add(self.max_age(s.instances.len())) >= now
        };
        if let Some(s) = self.memory().snapshot.clone().filter(|s| usable(s)) {
            return Ok(s);
        }
        if let Some(stored) = self.stored_snapshot().await?.filter(|s| usable(s)) {
            let stored = Arc::new(stored);
            self.memory().snapshot = Some(Arc::clone(&stored));
            return Ok(stored);
        }
        let fresh = Arc::new(snapshot(ecs, self.clock.now(), super::SNAPSHOT_CALL_SPACING).await?);
        // The stored copy is a cache: failing to store it only costs the next head a look.
        if let Err(e) = self.store_snapshot(&fresh).await {
            tracing::warn!("cannot store the cluster snapshot: {e}");
        }
        self.memory().snapshot = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// How old a snapshot of `instances` instances may be when the head decides with it
    /// (ms): `snapshot_max_age`, or twice the refresh interval of a large cluster.
    fn max_age(&self, instances: usize) -> u64 {
        ms(self.snapshot_max_age).max(2 * Self::refresh_interval(instances))
    }

    /// How often a snapshot of `instances` instances is refreshed ahead of the head (ms).
    /// A look costs two ECS calls per 100 instances, [`super::SNAPSHOT_CALL_SPACING`] apart:
    /// four spacings per call between looks keep looks to a quarter of the time and a sixth
    /// of a read a second.
    fn refresh_interval(instances: usize) -> u64 {
        2 * instances.div_ceil(100) as u64 * 4 * ms(super::SNAPSHOT_CALL_SPACING)
    }

    /// Refreshes the shared snapshot before it is too old, so that the head of the queue
    /// finds it fresh and never stops to look at a large cluster itself. Done by a waiter
    /// far enough back not to become the head meanwhile; one at a time (a claim on the
    /// snapshot's head item).
    async fn refresh_ahead(&self, ecs: &dyn Ecs) -> Result<()> {
        let key = self.snapshot_key(None);
        let Some((head, version)) = self.read::<SnapshotHead>(&key, Consistency::Eventual).await? else {
            return Ok(());
        };
        let now = self.now();
        let every = Self::refresh_interval(head.instances).max(ms(self.snapshot_max_age) / 2);
        if head.taken_at.saturating_add(every) > now || head.refreshing_until > now {
            return Ok(());
        }
        let claim = SnapshotHead { refreshing_until: now.saturating_add(every), ..head };
        if !self.store.save(&Self::put(key, &claim, Expect::Version(version))).await? {
            return Ok(());
        }
        let fresh = snapshot(ecs, self.clock.now(), super::SNAPSHOT_CALL_SPACING).await?;
        self.store_snapshot(&fresh).await?;
        self.memory().snapshot = Some(Arc::new(fresh));
        Ok(())
    }

    /// The shared snapshot, if every part of it is there.
    async fn stored_snapshot(&self) -> Result<Option<Snapshot>> {
        let Some((head, _)) = self.read::<SnapshotHead>(&self.snapshot_key(None), Consistency::Eventual).await? else {
            return Ok(None);
        };
        let keys: Vec<String> = (0..head.parts).map(|p| self.snapshot_key(Some(p))).collect();
        let mut instances = Vec::with_capacity(head.instances);
        for (key, part) in keys.iter().zip(self.store.load_many(&keys, Consistency::Eventual).await?) {
            // A part missing, or of another look (being rewritten): no shared snapshot now.
            let Some(part) = part else { return Ok(None) };
            let part: SnapshotPart = self.parse(key, &part.body)?;
            if part.taken_at != head.taken_at {
                return Ok(None);
            }
            instances.extend(part.instances.into_iter().map(unpack));
        }
        Ok(Some(Snapshot { taken_at: head.taken_at, instances }))
    }

    /// Stores `snapshot`: the parts first, then the head that makes them valid.
    async fn store_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        let chunks: Vec<&[InstanceView]> = snapshot.instances.chunks(PART_SIZE).collect();
        for (p, chunk) in chunks.iter().enumerate() {
            let part = SnapshotPart { taken_at: snapshot.taken_at, instances: chunk.iter().map(pack).collect() };
            self.store.save(&Self::put(self.snapshot_key(Some(p)), &part, Expect::Any)).await?;
        }
        let head = SnapshotHead {
            taken_at: snapshot.taken_at,
            parts: chunks.len(),
            instances: snapshot.instances.len(),
            refreshing_until: 0,
        };
        self.store.save(&Self::put(self.snapshot_key(None), &head, Expect::Any)).await?;
        Ok(())
    }

    /// Our ticket for `request`'s cycle: remembered, found again, or newly taken.
    async fn ticket(&self, request: &SlotRequest) -> Result<u64> {
        if let Some((ticket, _)) = self.memory().tickets.get(&request.cycle) {
            return Ok(*ticket);
        }
        let queued = self.read::<Queued>(&self.queued_key(&request.id), Consistency::Strong).await?;
        if let Some((q, _)) = queued.filter(|(q, _)| q.cycle == request.cycle) {
            // Asked before a restart: refresh the ticket on this call.
            self.memory().tickets.insert(request.cycle.clone(), (q.ticket, 0));
            return Ok(q.ticket);
        }
        let ticket = self.store.increment(&self.tickets_key()).await?;
        let now = self.now();
        let waiter = Ticket { id: request.id.clone(), cycle: request.cycle.clone(), asked_at: now };
        let queued = Queued { ticket, cycle: request.cycle.clone() };
        // Written together, so that a ticket is either findable by its host or absent
        // (and then skipped at once).
        let written = self
            .store
            .commit(&[
                Self::put(self.ticket_key(ticket), &waiter, Expect::Absent),
                Self::put(self.queued_key(&request.id), &queued, Expect::Any),
            ])
            .await?;
        if !written {
            return Err(Error::Lease(format!("ticket {ticket} of {} was already written", self.key)));
        }
        self.memory().tickets.insert(request.cycle.clone(), (ticket, now));
        Ok(ticket)
    }

    /// Keeps our ticket alive: refreshed at most every third of the lease TTL.
    async fn refresh_ticket(&self, request: &SlotRequest, ticket: u64) -> Result<()> {
        let now = self.now();
        let due =
            self.memory().tickets.get(&request.cycle).is_some_and(|(_, at)| at.saturating_add(ms(self.ttl) / 3) <= now);
        if due {
            let waiter = Ticket { id: request.id.clone(), cycle: request.cycle.clone(), asked_at: now };
            self.store.save(&Self::put(self.ticket_key(ticket), &waiter, Expect::Any)).await?;
            self.memory().tickets.insert(request.cycle.clone(), (ticket, now));
        }
        Ok(())
    }

    /// Forgets our ticket (it was served, skipped or withdrawn).
    fn forget_ticket(&self, cycle: &str) {
        self.memory().tickets.remove(cycle);
    }

    /// Moves the queue past the tickets at its front whose hosts stopped asking (withdrawn,
    /// never written, or not refreshed within the lease TTL), looking at most
    /// [`SKIP_SCAN`] of them before `ticket`: true if it moved. Hosts that leave the queue
    /// out of order (a pause, a window closing) leave such runs behind.
    async fn skip_gone(&self, served: u64, ticket: u64) -> Result<bool> {
        let last = ticket.saturating_sub(1).min(served + SKIP_SCAN);
        let keys: Vec<String> = (served + 1..=last).map(|t| self.ticket_key(t)).collect();
        let now = self.now();
        let mut run = 0;
        for (key, stored) in keys.iter().zip(self.store.load_many(&keys, Consistency::Strong).await?) {
            let gone = match stored {
                None => true,
                Some(v) => self.parse::<Ticket>(key, &v.body)?.asked_at.saturating_add(ms(self.ttl)) < now,
            };
            if !gone {
                break;
            }
            run += 1;
        }
        if run == 0 {
            return Ok(false);
        }
        let mut skipped = false;
        self.update_control(|c| {
            skipped = c.served == served;
            if skipped {
                c.served = served + run;
            }
            skipped
        })
        .await?;
        if skipped {
            tracing::info!(tickets = run, "skipped waiters that stopped asking for a slot");
            for key in &keys[..usize::try_from(run).unwrap_or(usize::MAX)] {
                self.store.save(&Self::delete(key.clone())).await?;
            }
        }
        Ok(skipped)
    }

    /// Whether the queue's front has not moved for [`STUCK_AFTER`], as this host saw it.
    fn stuck(&self, served: u64) -> bool {
        let now = self.now();
        let mut memory = self.memory();
        match memory.front {
            Some((seen, since)) if seen == served => {
                let stuck = since.saturating_add(ms(STUCK_AFTER)) <= now;
                if stuck {
                    memory.front = Some((served, now));
                }
                stuck
            }
            _ => {
                memory.front = Some((served, now));
                false
            }
        }
    }

    /// Deals with holders whose lease expired; true when anything changed.
    async fn handle_stale(&self, slots: &[(Slot, Option<u64>)], seen_by: &str, ecs: &dyn Ecs) -> Result<bool> {
        let now = self.now();
        let by = format!("{seen_by}, which found the stale lease");
        let mut changed = false;
        for (n, (slot, _)) in slots.iter().enumerate() {
            let Some(holder) = slot.holder.as_ref().filter(|h| h.expires_at < now) else { continue };
            let dead = match self.on_stale {
                StalePolicy::Pause => None,
                StalePolicy::Reclaim => match ecs.describe(&holder.arn).await? {
                    None => Some("no longer registered"),
                    Some(i) if i.status == "INACTIVE" => Some("INACTIVE"),
                    Some(i) if !i.agent_connected => Some("disconnected"),
                    Some(_) => None,
                },
            };
            let reason = match (dead, self.on_stale) {
                (Some(why), _) => {
                    tracing::warn!(holder = %holder.id, "reclaiming a stale slot: its instance is {why}");
                    let token = holder.token;
                    self.update_slot(n, |s| {
                        let ours = s.holder.as_ref().is_some_and(|h| h.token == token);
                        if ours {
                            s.holder = None;
                        }
                        ours
                    })
                    .await?;
                    self.update_control(|c| {
                        c.snapshot_not_before = now;
                        true
                    })
                    .await?;
                    changed = true;
                    continue;
                }
                (None, StalePolicy::Reclaim) => format!(
                    "{}'s lease expired at step {} but its instance is still connected; check it, then resume",
                    holder.id, holder.step
                ),
                (None, StalePolicy::Pause) => {
                    format!(
                        "{}'s lease expired at step {} without finishing (it never came back?)",
                        holder.id, holder.step
                    )
                }
            };
            self.update_control(|c| {
                let first = c.paused.is_none();
                c.paused.get_or_insert(Pause { reason: reason.clone(), by: by.clone(), at: now });
                first
            })
            .await?;
            changed = true;
        }
        Ok(changed)
    }

    /// The control item, the slots and the queue, for `fleet status`.
    pub async fn view(&self) -> Result<GroupView> {
        let (control, _) = self.control(Consistency::Strong).await?;
        let slots = self.slots(control.slots).await?;
        let taken = self.store.load(&self.tickets_key(), Consistency::Strong).await?.map_or(0, |v| v.version);
        let waiting = taken.saturating_sub(control.served);
        let keys: Vec<String> = (1..=waiting.min(10)).map(|d| self.ticket_key(control.served + d)).collect();
        let mut next_in_line = Vec::new();
        for (key, stored) in keys.iter().zip(self.store.load_many(&keys, Consistency::Eventual).await?) {
            if let Some(v) = stored {
                next_in_line.push(self.parse(key, &v.body)?);
            }
        }
        let head = self.read::<SnapshotHead>(&self.snapshot_key(None), Consistency::Eventual).await?;
        Ok(GroupView {
            key: self.key.clone(),
            holders: slots.into_iter().filter_map(|(s, _)| s.holder).collect(),
            control,
            waiting,
            next_in_line,
            snapshot: head.map(|(h, _)| (h.taken_at, h.instances)),
        })
    }

    /// Lifts a pause (`fleet resume`); false when the group was not paused.
    pub async fn resume(&self) -> Result<bool> {
        let mut was = false;
        self.update_control(|c| {
            was = c.paused.take().is_some();
            was
        })
        .await?;
        Ok(was)
    }

    /// Frees the slot of `id` whatever its token (`fleet release`); false when it held none.
    pub async fn release_holder(&self, id: &str) -> Result<bool> {
        let (control, _) = self.control(Consistency::Strong).await?;
        let slots = self.slots(control.slots).await?;
        let mut held = false;
        for n in
            slots.iter().enumerate().filter(|(_, (s, _))| s.holder.as_ref().is_some_and(|h| h.id == id)).map(|(n, _)| n)
        {
            held |= self
                .update_slot(n, |s| {
                    let ours = s.holder.as_ref().is_some_and(|h| h.id == id);
                    if ours {
                        s.holder = None;
                    }
                    ours
                })
                .await?;
        }
        Ok(held)
    }

    /// Asks for a slot as the head of the queue (ticket `ticket`); `None`: something moved
    /// meanwhile, look again at once.
    async fn take_slot(&self, request: &SlotRequest, ticket: u64, ecs: &dyn Ecs) -> Result<Option<Decision>> {
        let (control, version) = self.control(Consistency::Strong).await?;
        if let Some(pause) = &control.paused {
            return Ok(Some(Decision::Paused(format!("{} (paused by {})", pause.reason, pause.by))));
        }
        if control.served + 1 != ticket {
            return Ok(None);
        }
        // At most the spacing (another host's clock may run ahead): wait here, read again.
        let wait = control.last_grant_at.saturating_add(ms(GRANT_SPACING)).saturating_sub(self.now());
        if wait > 0 {
            self.clock.sleep(Duration::from_millis(wait.min(ms(GRANT_SPACING)))).await;
            return Ok(None);
        }
        let slots = self.slots(control.slots).await?;
        if self.handle_stale(&slots, &request.id, ecs).await? {
            return Ok(None);
        }
        let record = Self::record(&slots);
        // Only a host within reach of a free slot looks at the cluster.
        let budget = self.policy.max_unavailable.resolve(control.cluster_size.max(1));
        if record.holders.len() >= budget && control.cluster_size > 0 {
            return Ok(Some(Decision::Wait {
                reason: format!("first in the queue, all {budget} slot(s) held"),
                pace: self.near_pace(),
            }));
        }
        let snapshot = self.fresh_snapshot(ecs, control.snapshot_not_before).await?;
        if policy::free_slots(&record, &snapshot, &self.policy, &request.id) == 0 {
            return Ok(Some(Decision::Wait {
                reason: "first in the queue, no slot free".into(),
                pace: self.near_pace(),
            }));
        }
        if let Err(reason) = policy::admit(&record, &snapshot, &self.policy, request) {
            return Ok(Some(Decision::Wait { reason, pace: self.near_pace() }));
        }
        let me = snapshot.instances.iter().find(|i| i.id == request.id).expect("admit() found it");
        let budget = self.policy.max_unavailable.resolve(snapshot.instances.len().max(1));
        let Some(n) = slots.iter().position(|(s, _)| s.holder.is_none()).filter(|n| *n < budget).or_else(|| {
            // Every slot item in use is held: a new one, within the budget.
            (control.slots < budget).then_some(control.slots)
        }) else {
            return Ok(Some(Decision::Wait {
                reason: "first in the queue, no slot item free".into(),
                pace: self.near_pace(),
            }));
        };
        // Only the head asks CloudWatch, only when a slot is free, and last, right before
        // the grant.
        if let Some(reason) = crate::alarms::gate(self.alarms.as_deref()).await {
            return Ok(Some(Decision::Wait { reason, pace: self.near_pace() }));
        }
        let now = self.now();
        let token = control.next_token.max(1);
        let (mut slot, slot_version) = slots.get(n).cloned().unwrap_or_default();
        slot.released.retain(|(_, at)| at.saturating_add(ms(RELEASES_KEPT_FOR)) >= now);
        slot.holder = Some(Holder {
            id: request.id.clone(),
            arn: request.arn.clone(),
            token,
            cycle: request.cycle.clone(),
            step: "waiting-for-slot".into(),
            availability_zone: me.availability_zone.clone(),
            allocated: me.registered.minus(me.remaining),
            stays: request.stays.unwrap_or_default(),
            acquired_at: now,
            renewed_at: now,
            expires_at: now.saturating_add(ms(self.ttl)),
        });
        let next = Control {
            last_grant_at: now,
            served: ticket,
            next_token: token + 1,
            slots: control.slots.max(n + 1),
            cluster_size: snapshot.instances.len(),
            ..control
        };
        let granted = self
            .store
            .commit(&[
                Self::put(self.key.clone(), &next, version.map_or(Expect::Absent, Expect::Version)),
                Self::put(self.slot_key(n), &slot, slot_version.map_or(Expect::Absent, Expect::Version)),
                Self::delete(self.ticket_key(ticket)),
                Self::delete(self.queued_key(&request.id)),
            ])
            .await?;
        if !granted {
            self.back_off().await;
            return Ok(None);
        }
        self.forget_ticket(&request.cycle);
        Ok(Some(Decision::Granted(Grant { group: self.group.clone(), token, slot: Some(n), services: Vec::new() })))
    }

    /// How soon the first two of the queue look again, in poll intervals: every
    /// [`NEAR_LOOK`], so that a slot given back is taken within a second or so and grants
    /// can follow each other every [`GRANT_SPACING`].
    fn near_pace(&self) -> f64 {
        (NEAR_LOOK.as_secs_f64() / self.poll.as_secs_f64().max(0.001)).min(0.25)
    }

    /// A slot held by `request`'s cycle (a grant whose answer was lost).
    async fn held_by(&self, request: &SlotRequest, control: &Control) -> Result<Option<Grant>> {
        let slots = self.slots(control.slots).await?;
        Ok(slots.iter().enumerate().find_map(|(n, (s, _))| {
            s.holder.as_ref().filter(|h| h.id == request.id && h.cycle == request.cycle).map(|h| Grant {
                group: self.group.clone(),
                token: h.token,
                slot: Some(n),
                services: Vec::new(),
            })
        }))
    }
}

#[async_trait::async_trait]
impl Coordinator for StoreCoordinator {
    async fn acquire(&self, request: &SlotRequest, ecs: &dyn Ecs) -> Result<Decision> {
        for _ in 0..CONFLICT_RETRIES {
            let known = self.memory().tickets.get(&request.cycle).map(|(t, _)| *t);
            let (control, _) = self.control(Consistency::Eventual).await?;
            if known.is_none_or(|t| t <= control.served) {
                // First ask of this process, or served meanwhile: a grant whose answer was
                // lost (or held before a restart) is still ours, paused or not.
                let (control, _) = self.control(Consistency::Strong).await?;
                if let Some(grant) = self.held_by(request, &control).await? {
                    self.forget_ticket(&request.cycle);
                    return Ok(Decision::Granted(grant));
                }
                if known.is_some() {
                    // Skipped (we stopped asking for longer than the lease TTL): queue again.
                    self.forget_ticket(&request.cycle);
                    self.store.save(&Self::delete(self.queued_key(&request.id))).await?;
                    continue;
                }
            }
            // No new place in the queue while the roll is paused.
            if let Some(pause) = &control.paused {
                return Ok(Decision::Paused(format!("{} (paused by {})", pause.reason, pause.by)));
            }
            let ticket = self.ticket(request).await?;
            // A ticket just taken may have been skipped before it was written (its place
            // looked empty to the host behind): look at the queue again before using it.
            let control = if known.is_none() { self.control(Consistency::Eventual).await?.0 } else { control };
            if ticket <= control.served {
                continue;
            }
            self.refresh_ticket(request, ticket).await?;
            let ahead = ticket - control.served - 1;
            // Next in line or at the head: the host checks its services now, while the
            // head (or it) takes its turn, and not before (that costs ECS reads).
            if ahead <= 1 && request.stays.is_none() {
                return Ok(Decision::Check);
            }
            if ahead == 0 {
                match self.take_slot(request, ticket, ecs).await? {
                    None => continue,
                    Some(decision) => return Ok(decision),
                }
            }
            // Right behind the head, or the front not moving for a while: waiters in front
            // that stopped asking are skipped.
            if (ahead == 1 || (ahead <= SKIP_SCAN && self.stuck(control.served)))
                && self.skip_gone(control.served, ticket).await?
            {
                continue;
            }
            let budget = self.policy.max_unavailable.resolve(control.cluster_size.max(1)) as f64;
            // A budget back or more, the host has time to refresh the snapshot before its
            // turn (a budget's worth of grants takes a slot time). In the last budget of the
            // queue nobody refreshes: the head accepts twice the refresh interval, which
            // covers it.
            if ahead >= 2
                && ahead as f64 >= budget
                && (ahead as f64) < 3.0 * budget
                && let Err(e) = self.refresh_ahead(ecs).await
            {
                tracing::warn!("cannot refresh the shared cluster snapshot: {e}");
            }
            // Never so slow that the ticket goes stale (it is refreshed when asking).
            let slowest = SLOWEST_PACE.min(self.ttl.as_secs_f64() / 3.0 / self.poll.as_secs_f64().max(1.0)).max(1.0);
            let pace = if ahead <= 1 {
                self.near_pace()
            } else {
                // A budget's worth of hosts goes per slot time: look again in proportion.
                (ahead as f64 / budget).clamp(0.25, slowest)
            };
            return Ok(Decision::Wait { reason: format!("{ahead} host(s) ahead in the queue"), pace });
        }
        Ok(Decision::Wait { reason: "the queue is busy; looking again".into(), pace: 0.25 })
    }

    async fn renew(&self, grant: &Grant, id: &str, step: &str, hold: Duration) -> Result<bool> {
        let Some(n) = self.slot_of(grant).await? else { return Ok(false) };
        let now = self.now();
        let hold = ms(hold);
        let mut held = false;
        self.update_slot(n, |s| {
            held = false;
            if let Some(h) = s.holder.as_mut().filter(|h| h.id == id && h.token == grant.token) {
                h.renewed_at = now;
                // Never shorter: a renewal before a reboot may have held it for longer.
                h.expires_at = h.expires_at.max(now.saturating_add(hold));
                h.step = step.to_string();
                held = true;
            }
            held
        })
        .await?;
        Ok(held)
    }

    async fn release(&self, grant: &Grant, id: &str) -> Result<()> {
        let Some(n) = self.slot_of(grant).await? else { return Ok(()) };
        let now = self.now();
        let keep = ms(RELEASES_KEPT_FOR).max(ms(self.snapshot_max_age).saturating_mul(2));
        self.update_slot(n, |s| {
            if !s.holder.as_ref().is_some_and(|h| h.id == id && h.token == grant.token) {
                return false;
            }
            s.holder = None;
            // Back in service now, even where an older snapshot still shows it DRAINING.
            s.released.retain(|(other, at)| other != id && at.saturating_add(keep) >= now);
            s.released.push((id.to_string(), now));
            let excess = s.released.len().saturating_sub(RELEASES_KEPT);
            s.released.drain(..excess);
            true
        })
        .await
        .map(drop)
    }

    async fn withdraw(&self, request: &SlotRequest) -> Result<()> {
        let remembered = self.memory().tickets.get(&request.cycle).map(|(t, _)| *t);
        let ticket = match remembered {
            Some(t) => Some(t),
            None => self
                .read::<Queued>(&self.queued_key(&request.id), Consistency::Strong)
                .await?
                .filter(|(q, _)| q.cycle == request.cycle)
                .map(|(q, _)| q.ticket),
        };
        let (control, _) = self.control(Consistency::Strong).await?;
        // A grant whose answer was lost is given back.
        if let Some(grant) = self.held_by(request, &control).await? {
            self.release(&grant, &request.id).await?;
        }
        if let Some(ticket) = ticket {
            self.store
                .commit(&[Self::delete(self.ticket_key(ticket)), Self::delete(self.queued_key(&request.id))])
                .await?;
            // At the head: let the next host go at once.
            self.update_control(|c| {
                let head = c.served + 1 == ticket;
                if head {
                    c.served = ticket;
                }
                head
            })
            .await?;
        }
        self.forget_ticket(&request.cycle);
        Ok(())
    }

    async fn pause(&self, reason: &str, by: &str) -> Result<Halt> {
        let at = self.now();
        self.update_control(|c| {
            if c.paused.is_some() {
                return false;
            }
            c.paused = Some(Pause { reason: reason.to_string(), by: by.to_string(), at });
            true
        })
        .await
        .map(|_| Halt::Paused)
    }

    async fn paused(&self) -> Result<Option<String>> {
        let (control, _) = self.control(Consistency::Strong).await?;
        Ok(control.paused.map(|p| format!("{} (paused by {})", p.reason, p.by)))
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordination::policy::Budget;
    use crate::sim::ports::{SimClock, SimEcs};
    use crate::sim::store::MemoryStore;
    use crate::sim::world::WorldState;

    /// A store whose reads yield, so that hosts' read-modify-write cycles interleave.
    struct Interleaving(Arc<MemoryStore>);

    #[async_trait::async_trait]
    impl LeaseStore for Interleaving {
        async fn load(&self, key: &str, consistency: Consistency) -> Result<Option<Versioned>> {
            let value = self.0.load(key, consistency).await;
            tokio::task::yield_now().await;
            value
        }

        async fn load_many(&self, keys: &[String], consistency: Consistency) -> Result<Vec<Option<Versioned>>> {
            let value = self.0.load_many(keys, consistency).await;
            tokio::task::yield_now().await;
            value
        }

        async fn save(&self, write: &Write) -> Result<bool> {
            self.0.save(write).await
        }

        async fn commit(&self, writes: &[Write]) -> Result<bool> {
            self.0.commit(writes).await
        }

        async fn increment(&self, key: &str) -> Result<u64> {
            self.0.increment(key).await
        }
    }

    struct Bench {
        world: crate::sim::world::World,
        clock: Arc<SimClock>,
        memory: Arc<MemoryStore>,
    }

    impl Bench {
        fn new(hosts: usize) -> Self {
            let world = Arc::new(Mutex::new(WorldState::new(hosts, 1, 1)));
            let clock = Arc::new(SimClock::new(1));
            let memory = Arc::new(MemoryStore::new(Arc::clone(&world), Arc::clone(&clock), Default::default()));
            Self { world, clock, memory }
        }

        fn coordinator(&self, budget: u32) -> StoreCoordinator {
            let settings = StoreSettings {
                cluster: "sim".into(),
                group: "default".into(),
                policy: Policy {
                    max_unavailable: Budget::Count(budget),
                    min_healthy_percent: 0,
                    one_az_at_a_time: false,
                },
                ttl: Duration::from_secs(60),
                snapshot_max_age: Duration::from_secs(60),
                on_stale: StalePolicy::Pause,
                poll: Duration::from_secs(10),
            };
            let store: Arc<dyn LeaseStore> = Arc::new(Interleaving(Arc::clone(&self.memory)));
            StoreCoordinator::new(store, self.clock.clone(), settings)
        }

        fn ecs(&self, host: usize) -> SimEcs {
            SimEcs {
                world: Arc::clone(&self.world),
                host,
                clock: Arc::clone(&self.clock),
                store: Arc::clone(&self.memory),
            }
        }

        /// `n` hosts, each its own process (its own coordinator's memory): their coordinators,
        /// requests and views of ECS.
        fn hosts(&self, n: usize, budget: u32) -> (Vec<StoreCoordinator>, Vec<SlotRequest>, Vec<SimEcs>) {
            (
                (0..n).map(|_| self.coordinator(budget)).collect(),
                (0..n).map(|h| self.request(h)).collect(),
                (0..n).map(|h| self.ecs(h)).collect(),
            )
        }

        fn request(&self, host: usize) -> SlotRequest {
            let w = self.world.lock().unwrap();
            SlotRequest {
                id: w.instances[host].id.clone(),
                arn: w.instances[host].arn.clone(),
                cycle: format!("c{host}"),
                stays: Some(Default::default()),
            }
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn hosts_can_never_take_more_slots_than_the_budget() {
        let bench = Bench::new(6);
        // Each host its own process, all asking at once, many times over.
        let (coordinators, requests, ecs) = bench.hosts(4, 2);
        let mut granted = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let ask = |h: usize| coordinators[h].acquire(&requests[h], &ecs[h]);
            let (a, b, c, d) = tokio::join!(ask(0), ask(1), ask(2), ask(3));
            for (h, decision) in [a, b, c, d].into_iter().enumerate() {
                if let Decision::Granted(g) = decision.unwrap() {
                    granted.insert((h, g.token));
                }
            }
            let view = coordinators[0].view().await.unwrap();
            assert!(view.holders.len() <= 2, "{view:?}");
        }
        let view = coordinators[0].view().await.unwrap();
        assert_eq!(view.holders.len(), 2, "two of them got one: {view:?}");
        let hosts: std::collections::BTreeSet<usize> = granted.iter().map(|(h, _)| *h).collect();
        assert_eq!(hosts.len(), 2, "{granted:?}");
        assert_eq!(granted.len(), 2, "a holder asking again gets its own grant back: {granted:?}");
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_version_1_record_is_converted_when_empty_and_refused_while_held() {
        let bench = Bench::new(2);
        let legacy = |holders: &str| {
            format!(r#"{{"holders":{holders},"queue":[{{"id":"i-1","since":1}}],"paused":null,"next_token":7}}"#)
        };
        let write = |body: String| Write { key: "sim/default".into(), body: Some(body), expect: Expect::Any };
        let holder = r#"[{"id":"i-00001","arn":"a","token":6,"cycle":"c","step":"draining","availability_zone":null,
            "allocated":{"cpu":0,"memory":0},"acquired_at":0,"renewed_at":0,"expires_at":0}]"#;
        assert!(bench.memory.save(&write(legacy(holder))).await.unwrap());
        let coordinator = bench.coordinator(1);
        let err = coordinator.acquire(&bench.request(0), &bench.ecs(0)).await.unwrap_err().to_string();
        assert!(err.contains("single-item format") && err.contains("i-00001"), "{err}");
        assert!(bench.memory.save(&write(legacy("[]"))).await.unwrap());
        let decision = coordinator.acquire(&bench.request(0), &bench.ecs(0)).await.unwrap();
        assert!(
            matches!(decision, Decision::Granted(Grant { token: 7, .. })),
            "the token sequence goes on: {decision:?}"
        );
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_head_that_stopped_asking_is_skipped() {
        let bench = Bench::new(3);
        let coordinator = bench.coordinator(1);
        let [a, b, c] = [0, 1, 2].map(|h| bench.request(h));
        assert!(matches!(coordinator.acquire(&a, &bench.ecs(0)).await.unwrap(), Decision::Granted(_)));
        // b queues, then goes silent; c queues behind it.
        assert!(matches!(coordinator.acquire(&b, &bench.ecs(1)).await.unwrap(), Decision::Wait { .. }));
        assert!(matches!(coordinator.acquire(&c, &bench.ecs(2)).await.unwrap(), Decision::Wait { .. }));
        tokio::time::advance(Duration::from_secs(61)).await;
        coordinator.release_holder(&a.id).await.unwrap();
        let decision = coordinator.acquire(&c, &bench.ecs(2)).await.unwrap();
        assert!(matches!(decision, Decision::Granted(_)), "b was skipped: {decision:?}");
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn waiters_that_left_out_of_order_do_not_stall_the_queue() {
        let bench = Bench::new(5);
        let (coordinators, requests, ecs) = bench.hosts(5, 1);
        let ask = |h: usize| coordinators[h].acquire(&requests[h], &ecs[h]);
        assert!(matches!(ask(0).await.unwrap(), Decision::Granted(_)));
        for h in 1..5 {
            assert!(matches!(ask(h).await.unwrap(), Decision::Wait { .. }));
        }
        // Hosts 2 and 3 give up, then host 1 at the head: two gone tickets at the front,
        // and host 4 two places back, where no host is right behind the head.
        for h in [2, 3, 1] {
            coordinators[h].withdraw(&requests[h]).await.unwrap();
        }
        coordinators[0].release_holder(&requests[0].id).await.unwrap();
        let mut granted = false;
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(31)).await;
            if matches!(ask(4).await.unwrap(), Decision::Granted(_)) {
                granted = true;
                break;
            }
        }
        assert!(granted, "the queue moved past the tickets left behind: {:?}", coordinators[0].view().await.unwrap());
    }
}
