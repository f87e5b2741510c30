//! The store's items and their formats: the control item, the slots, the tickets, the
//! queue entries and the snapshot's parts; and the conversion of version 1's single item.

use serde::{Deserialize, Serialize};

use super::{CONFLICT_RETRIES, Consistency, Expect, StoreCoordinator};
use crate::coordination::policy::{Holder, InstanceView, Pause};
use crate::ecs::Capacity;
use crate::error::{Error, Result};

/// The format of the items this version writes; version 1 kept everything in one item.
pub const FORMAT: u32 = 2;

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
pub(super) struct Queued {
    pub(super) ticket: u64,
    pub(super) cycle: String,
}

/// The head of the stored snapshot: its parts are valid only with its `taken_at`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct SnapshotHead {
    pub(super) taken_at: u64,
    pub(super) parts: usize,
    pub(super) instances: usize,
    /// A waiter is refreshing it until then (unix ms).
    #[serde(default)]
    pub(super) refreshing_until: u64,
}

/// One instance in a stored snapshot part: id, status, connected, zone, registered
/// (cpu, memory), remaining (cpu, memory).
pub(super) type PackedView = (String, String, bool, Option<String>, [i64; 2], [i64; 2]);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SnapshotPart {
    pub(super) taken_at: u64,
    pub(super) instances: Vec<PackedView>,
}

/// One instance as a snapshot part stores it.
pub(super) fn pack(i: &InstanceView) -> PackedView {
    (
        i.id.clone(),
        i.status.clone(),
        i.connected,
        i.availability_zone.clone(),
        [i.registered.cpu, i.registered.memory],
        [i.remaining.cpu, i.remaining.memory],
    )
}

/// One instance of a snapshot part as the policy reads it.
pub(super) fn unpack((id, status, connected, availability_zone, registered, remaining): PackedView) -> InstanceView {
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

impl StoreCoordinator {
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

    pub(super) async fn control(&self, consistency: Consistency) -> Result<(Control, Option<u64>)> {
        self.ensure_format().await?;
        Ok(match self.read::<Control>(&self.key, consistency).await? {
            Some((control, version)) => (control, Some(version)),
            None => (Control { format: FORMAT, ..Control::default() }, None),
        })
    }

    /// Applies `change` to the control item until the write wins; `change` returns false to
    /// leave it as it is.
    pub(super) async fn update_control(&self, mut change: impl FnMut(&mut Control) -> bool) -> Result<Control> {
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
}
