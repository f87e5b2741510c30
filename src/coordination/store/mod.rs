//! Slots kept in a key-value store with conditional writes, in small items that do not grow
//! with the fleet: a cluster of 5,000 hosts costs what one of 50 does, per item.
//!
//! The items of one (cluster, group), under the key `CLUSTER/GROUP`:
//!
//! | key                    | holds                                                        |
//! |------------------------|--------------------------------------------------------------|
//! | `CLUSTER/GROUP`        | the [`items::Control`] item: the pause, the last ticket served, the next fencing token |
//! | `…/tickets`            | a counter, raised atomically by each host that joins the queue |
//! | `…/ticket/T`           | the [`items::Ticket`] of waiter T: who, which cycle, when it last asked |
//! | `…/queued/ID`          | the ticket host ID waits with, found again after a restart   |
//! | `…/slot/N`             | an [`items::Slot`]: its holder, and who gave it back recently        |
//! | `…/snapshot/head`, `…/snapshot/P` | the shared cluster snapshot, in parts of [`PART_SIZE`] instances |
//! | `…/pause/N`, `…/operator/…` | the pauses, and what only operators write (`pauses.rs`) |
//!
//! Hosts are served in ticket order (first come, first served). Only the head of the queue
//! (ticket = served + 1) may take a slot: with strongly consistent reads of the control item
//! and the slots, one transaction advances `served`, issues the fencing token and fills a
//! free slot, so two hosts can never take the same slot or exceed the budget. Hosts behind
//! the head read the control item eventually consistently, less often the further back they
//! are; waiters in front that stopped asking are skipped. The next in line checks its
//! services (ECS) while the head takes its turn; the head decides with the shared snapshot,
//! which a waiter one to three budgets back refreshes before it is too old.
//!
//! The items and their formats are in [`items`], the ticket queue in `queue.rs`, the slots in
//! `slots.rs`, the shared snapshot in `snapshot.rs`; `coordinator.rs` composes them into the
//! [`Coordinator`](super::Coordinator) the cycle sees, and [`operator`] serves `fleet`.

pub mod items;
mod queue;
mod slots;
mod snapshot;
pub mod watch;
mod coordinator;
pub mod operator;
mod pauses;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::millis;
use super::policy::{Policy, Snapshot};
use crate::alarms::Alarms;
use crate::clock::Clock;
use crate::ec2::Instances;
use crate::error::Result;
use watch::{Watch, WatchFile};

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

/// What a [`Write`] does to its item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Writes this value (JSON) as the next version.
    Put(String),
    /// Deletes the item.
    Delete,
    /// Changes nothing: only the condition must hold (in a transaction, DynamoDB's
    /// `ConditionCheck`).
    Check,
}

/// One write to `key`, made only if `expect` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The item's key.
    pub key: String,
    /// What is done to it.
    pub change: Change,
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
    /// What the store is, for messages (a DynamoDB table's name).
    fn name(&self) -> String {
        "the lease store".into()
    }
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
/// How far ahead of this host's clock another host's timestamp may be and still be
/// believed. Hosts kept by NTP (chrony on Amazon Linux, the Amazon Time Sync Service) agree
/// within milliseconds; a time further ahead comes from a clock that is wrong, and would make
/// an old snapshot look young, or keep others from refreshing it, for as long as it is ahead.
const FUTURE_TOLERANCE: Duration = Duration::from_secs(5);
/// The least time between two grants. A cycle costs about a dozen ECS reads, five of them
/// right at the grant (the services check, the instance before its drain): one grant every
/// three seconds keeps a fleet's reads under 5 a second, well inside ECS's per-account
/// budget, and still serves a hundred slots of seven minutes each (0.24 grants a second).
pub const GRANT_SPACING: Duration = Duration::from_secs(3);
/// How often the first two of the queue look at the control item (and the head at the
/// slots): about a read unit a second per slot item for the head.
const NEAR_LOOK: Duration = Duration::from_secs(1);

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
    ec2: Option<Arc<dyn Instances>>,
    watch_file: Option<WatchFile>,
    memory: Mutex<Memory>,
}

/// What this process remembers between calls (all of it can be found again in the store).
#[derive(Default)]
struct Memory {
    /// The store's items were checked to be of this format.
    format_checked: bool,
    /// Our ticket by cycle, and when we last refreshed it (`None`: not yet by this process).
    tickets: HashMap<String, (u64, Option<Instant>)>,
    /// The last snapshot read or taken.
    snapshot: Option<Arc<Snapshot>>,
    /// The queue's front (`served`) as last seen, and since when.
    front: Option<(u64, Instant)>,
    /// The slot items' versions as seen, to judge their holders' leases.
    slots: Watch,
    /// The tickets' versions as seen, to judge whether their waiters still ask.
    waiters: Watch,
    /// Until when each lease this process renewed holds by its own clock, by token.
    renewed: HashMap<u64, Instant>,
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
            ec2: None,
            watch_file: None,
            memory: Mutex::new(Memory::default()),
        }
    }

    /// The same coordinator, granting no slot while one of `alarms` fires.
    pub fn with_alarms(mut self, alarms: Option<Arc<dyn Alarms>>) -> Self {
        self.alarms = alarms;
        self
    }

    /// The same coordinator, going on from (and keeping) what this host's earlier processes
    /// of the same boot watched of the slots in `file`.
    pub fn with_watch_file(mut self, file: Option<WatchFile>) -> Self {
        if let Some(file) = &file {
            self.memory().slots = file.load();
        }
        self.watch_file = file;
        self
    }

    /// The same coordinator, leaving the records of terminated instances out of its count.
    pub fn with_ec2(mut self, ec2: Arc<dyn Instances>) -> Self {
        self.ec2 = Some(ec2);
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

    fn put<T: Serialize>(key: String, value: &T, expect: Expect) -> Write {
        Write { key, change: Change::Put(serde_json::to_string(value).expect("lease items serialize")), expect }
    }

    fn delete(key: String) -> Write {
        Write { key, change: Change::Delete, expect: Expect::Any }
    }

    /// A transaction's check that `key` is as `expect` says, changing nothing.
    fn check(key: String, expect: Expect) -> Write {
        Write { key, change: Change::Check, expect }
    }

    /// A short random pause after losing a conditional write, so that writers who collided
    /// do not collide again.
    async fn back_off(&self) {
        self.clock.sleep(self.clock.jitter(Duration::from_millis(200))).await;
    }
}
