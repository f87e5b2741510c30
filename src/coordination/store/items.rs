//! The store's items and their formats: the control item, the slots, the tickets, the
//! queue entries, the snapshot's parts, the pauses and the operator's marks; and the
//! conversion of version 1's single item.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{CONFLICT_RETRIES, Consistency, Expect, PART_SIZE, StoreCoordinator};
use crate::coordination::placement::Need;
use crate::coordination::policy::{Holder, InstanceView, Pause};
use crate::ecs::Capacity;
use crate::error::{Error, Result};
use crate::foreign;

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

/// The operator's record of the pauses resumed: `pause/1` to `pause/{through}` are lifted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    /// The last pause lifted.
    pub through: u64,
    /// Who lifted it.
    pub by: String,
    /// When (unix ms).
    pub at: u64,
}

/// An operator's mark that a host's slot was freed by `fleet release`, not stolen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    /// The host that held it.
    pub id: String,
    /// Who freed it.
    pub by: String,
    /// When (unix ms).
    pub at: u64,
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
        placement: None,
    }
}

/// The most bytes a holder's [`Holder::needs`] take in its slot item: slot items stay far
/// below [`MAX_ITEM_BYTES`] whatever a host runs.
const MAX_NEEDS_BYTES: usize = 16 * 1024;

/// The most needs a holder records, and believed of one.
const MAX_NEEDS: usize = 256;

/// The most host ports of one protocol a need names: "Automatically assigned ports don't
/// count toward the 100 reserved ports limit" (PortMapping), so a task reserves fewer.
const MAX_NEED_PORTS: usize = 100;

/// `needs` as a holder records them, within [`MAX_NEEDS_BYTES`]: the instances a
/// `distinctInstance` task must avoid are the first to go (it still avoids its own
/// siblings' new places), then the needs that do not fit.
pub(super) fn holder_needs(needs: &[Need]) -> Vec<Need> {
    let size = |needs: &[Need]| serde_json::to_string(needs).map_or(usize::MAX, |s| s.len());
    // A need its readers would refuse (a family name at the limit, say) would make the whole
    // slot item unreadable: it is left out.
    let mut kept: Vec<Need> =
        needs.iter().filter(|n| !n.is_plain() && n.check().is_ok()).take(MAX_NEEDS).cloned().collect();
    if size(&kept) > MAX_NEEDS_BYTES {
        for need in &mut kept {
            if let Some(others) = need.distinct_from.as_mut() {
                others.clear();
            }
        }
    }
    while size(&kept) > MAX_NEEDS_BYTES {
        kept.pop();
    }
    kept
}

/// "For tasks that run on Amazon EC2 instances, the maximum number of Amazon EC2 instances
/// that you can register for each cluster is 5,000" (Amazon ECS developer guide, "Handle
/// Amazon ECS service quotas and API throttling limits"): no group has more slots, and no
/// snapshot more instances.
pub const MAX_INSTANCES: usize = 5_000;

/// The largest counter believed (tickets, fencing tokens): 2^53, the largest integer a JSON
/// reader carries exactly, and more grants than a fleet makes in a million years.
const MAX_COUNTER: u64 = 1 << 53;

/// The longest name believed (an instance id, a container-instance ARN, a cycle, a step, a
/// zone: the longest, an ARN, is some 120 characters).
const MAX_NAME: usize = 256;

/// The longest pause reason believed.
const MAX_REASON: usize = 4096;

/// The most releases a slot item holds (a writer keeps [`RELEASES_KEPT`](super::RELEASES_KEPT)).
const MAX_RELEASES: usize = 8 * super::RELEASES_KEPT;

/// The longest hold believed: 30 days, past any reboot timeout and lease TTL.
const MAX_HOLD_MS: u64 = 30 * 24 * 3600 * 1000;

/// The most CPU units or MiB of memory believed of one instance (2^40).
const MAX_RESOURCE: i64 = 1 << 40;

/// The largest item body read. "The maximum item size in DynamoDB is 400 KB, which includes
/// both attribute name binary length (UTF-8 length) and attribute value lengths" (DynamoDB
/// developer guide, "Quotas"); the largest this version writes, a snapshot part of
/// [`PART_SIZE`] instances, is some 30 KB: 64 KiB bounds what a forged group costs to read
/// (at most [`MAX_INSTANCES`] slots of it).
const MAX_ITEM_BYTES: usize = 64 * 1024;

/// An item's body parsed and [`Checked`]: it is a peer's word, and a peer may be
/// compromised, so a field out of bounds is refused, never used. The error says why, in
/// bounded words.
pub fn parse<T: DeserializeOwned + Checked>(body: &str) -> std::result::Result<T, String> {
    if body.len() > MAX_ITEM_BYTES {
        return Err(format!("it is larger than {MAX_ITEM_BYTES} bytes"));
    }
    let item: T =
        serde_json::from_str(body).map_err(|e| format!("not understood ({})", foreign::shown(&e.to_string())))?;
    item.check()?;
    Ok(item)
}

/// The longest pause reason written: a failure's reason quotes commands and their output,
/// and every host reads it.
const MAX_PAUSE_REASON: usize = 1000;

/// A pause as it is written: its reason bounded and escaped, within what every host reads.
pub(super) fn pause(reason: &str, by: &str, at: u64) -> Pause {
    Pause { reason: foreign::bounded(reason, MAX_PAUSE_REASON), by: foreign::bounded(by, MAX_NAME), at }
}

/// A pause as hosts say it: its reason (escaped: a peer wrote it) and who paused.
pub(super) fn described(pause: &Pause) -> String {
    format!("{} (paused by {})", foreign::bounded(&pause.reason, MAX_PAUSE_REASON), foreign::shown(&pause.by))
}

/// What a peer wrote, checked before any of it is used: each item read from the store is
/// another host's word, and a compromised host may write any item its role allows. Bounds
/// keep a forged number from sizing an allocation or overflowing a sum.
pub trait Checked {
    /// The first field out of bounds, and why.
    fn check(&self) -> std::result::Result<(), String>;
}

fn at_most(field: &str, value: u64, max: u64) -> std::result::Result<(), String> {
    if value > max {
        return Err(format!("field `{field}` is {value}, more than the {max} allowed"));
    }
    Ok(())
}

fn name(field: &str, value: &str, max: usize) -> std::result::Result<(), String> {
    if value.len() > max {
        return Err(format!("field `{field}` is {} bytes long, more than the {max} allowed", value.len()));
    }
    Ok(())
}

fn resources(field: &str, c: &Capacity) -> std::result::Result<(), String> {
    for (unit, value) in [("cpu", c.cpu), ("memory", c.memory)] {
        if !(-MAX_RESOURCE..=MAX_RESOURCE).contains(&value) {
            return Err(format!("field `{field}.{unit}` is {value}, outside ±{MAX_RESOURCE}"));
        }
    }
    Ok(())
}

impl Checked for Control {
    fn check(&self) -> std::result::Result<(), String> {
        at_most("slots", self.slots as u64, MAX_INSTANCES as u64)?;
        at_most("cluster_size", self.cluster_size as u64, MAX_INSTANCES as u64)?;
        at_most("served", self.served, MAX_COUNTER)?;
        at_most("next_token", self.next_token, MAX_COUNTER)?;
        match &self.paused {
            Some(p) => p.check().map_err(|why| format!("in `paused`: {why}")),
            None => Ok(()),
        }
    }
}

impl Checked for Pause {
    fn check(&self) -> std::result::Result<(), String> {
        name("reason", &self.reason, MAX_REASON)?;
        name("by", &self.by, MAX_NAME)
    }
}

impl Checked for Resumed {
    fn check(&self) -> std::result::Result<(), String> {
        at_most("through", self.through, MAX_COUNTER)?;
        name("by", &self.by, MAX_NAME)
    }
}

impl Checked for Released {
    fn check(&self) -> std::result::Result<(), String> {
        name("id", &self.id, MAX_NAME)?;
        name("by", &self.by, MAX_NAME)
    }
}

impl Checked for Holder {
    fn check(&self) -> std::result::Result<(), String> {
        for (field, value) in [("id", &self.id), ("arn", &self.arn), ("cycle", &self.cycle), ("step", &self.step)] {
            name(&format!("holder.{field}"), value, MAX_NAME)?;
        }
        name("holder.availability_zone", self.availability_zone.as_deref().unwrap_or_default(), MAX_NAME)?;
        at_most("holder.token", self.token, MAX_COUNTER)?;
        // Also the hold of an item without `hold_ms` (an earlier version's), read from its times.
        at_most("holder.hold_ms", self.hold().as_millis().try_into().unwrap_or(u64::MAX), MAX_HOLD_MS)?;
        resources("holder.allocated", &self.allocated)?;
        resources("holder.stays", &self.stays)?;
        at_most("holder.needs", self.needs.len() as u64, MAX_NEEDS as u64)?;
        self.needs.iter().try_for_each(Checked::check)
    }
}

impl Checked for Need {
    fn check(&self) -> std::result::Result<(), String> {
        name("need.task", &self.task, MAX_NAME)?;
        name("need.service", &self.service, MAX_NAME)?;
        resources("need.size", &self.size)?;
        at_most("need.ports.tcp", self.ports.tcp.len() as u64, MAX_NEED_PORTS as u64)?;
        at_most("need.ports.udp", self.ports.udp.len() as u64, MAX_NEED_PORTS as u64)?;
        let others = self.distinct_from.iter().flatten();
        at_most("need.distinct_from", others.clone().count() as u64, MAX_INSTANCES as u64)?;
        others.clone().try_for_each(|arn| name("need.distinct_from", arn, MAX_NAME))
    }
}

impl Checked for Slot {
    fn check(&self) -> std::result::Result<(), String> {
        if let Some(holder) = &self.holder {
            holder.check()?;
        }
        at_most("released", self.released.len() as u64, MAX_RELEASES as u64)?;
        self.released.iter().try_for_each(|(id, _)| name("released", id, MAX_NAME))
    }
}

impl Checked for Ticket {
    fn check(&self) -> std::result::Result<(), String> {
        name("id", &self.id, MAX_NAME)?;
        name("cycle", &self.cycle, MAX_NAME)
    }
}

impl Checked for Queued {
    fn check(&self) -> std::result::Result<(), String> {
        at_most("ticket", self.ticket, MAX_COUNTER)?;
        name("cycle", &self.cycle, MAX_NAME)
    }
}

impl Checked for SnapshotHead {
    fn check(&self) -> std::result::Result<(), String> {
        at_most("instances", self.instances as u64, MAX_INSTANCES as u64)?;
        let parts = self.instances.div_ceil(PART_SIZE);
        if self.parts != parts {
            return Err(format!("field `parts` is {}, where {} instances take {parts}", self.parts, self.instances));
        }
        Ok(())
    }
}

impl Checked for SnapshotPart {
    fn check(&self) -> std::result::Result<(), String> {
        at_most("instances", self.instances.len() as u64, PART_SIZE as u64)?;
        for (id, status, _, zone, registered, remaining) in &self.instances {
            name("instances.id", id, MAX_NAME)?;
            name("instances.status", status, MAX_NAME)?;
            name("instances.zone", zone.as_deref().unwrap_or_default(), MAX_NAME)?;
            for (field, [cpu, memory]) in [("registered", registered), ("remaining", remaining)] {
                resources(&format!("instances.{field}"), &Capacity { cpu: *cpu, memory: *memory })?;
            }
        }
        Ok(())
    }
}

/// Read only to find its format; what is used of it is checked as [`LegacyRecord`].
impl Checked for serde_json::Value {
    fn check(&self) -> std::result::Result<(), String> {
        Ok(())
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
    /// The item `key`, parsed and checked ([`parse`]). A refused item is a setup error (as
    /// an item of a format this version does not read): waiting does not mend it, an
    /// operator must.
    pub(super) fn parse<T: DeserializeOwned + Checked>(&self, key: &str, body: &str) -> Result<T> {
        parse(body).map_err(|why| {
            Error::Config(format!(
                "the lease item {} in {} is refused: {why}; ecs-patchd did not write it so (a host or a person \
                 did): fix or delete the item (`fleet status` shows the rest of the group)",
                foreign::shown(key),
                self.store.name()
            ))
        })
    }

    /// The item `key` with its version, parsed and checked; `None` when there is none.
    pub(super) async fn read<T: DeserializeOwned + Checked>(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<(T, u64)>> {
        match self.store.load(key, consistency).await? {
            None => Ok(None),
            Some(v) => Ok(Some((self.parse(key, &v.body)?, v.version))),
        }
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
                             earlier versions: {}",
                            self.key,
                            foreign::shown(&e.to_string())
                        ))
                    })?;
                    if !legacy.holders.is_empty() {
                        let ids: Vec<String> = legacy.holders.iter().take(10).map(|h| foreign::shown(&h.id)).collect();
                        // Not a passing trouble: waiting would not help, an operator must act.
                        return Err(Error::Config(format!(
                            "the lease item {} is in the single-item format of ecs-patchd before 0.2 and {} host(s) \
                             hold a slot in it ({}); let them finish with the version they run (or free them with \
                             its `ecs-patchd fleet release`), then start this version, which converts the empty \
                             record",
                            self.key,
                            legacy.holders.len(),
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
                    control.check().map_err(|why| {
                        Error::Config(format!("the lease item {} of an earlier version is refused: {why}", self.key))
                    })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Parses `body` as every item type: each answer is an item or a reason, never a panic.
    fn every_item(body: &str) {
        fn one<T: DeserializeOwned + Checked>(body: &str) {
            if let Err(why) = parse::<T>(body) {
                assert!(!why.is_empty() && why.chars().count() < 400, "{why}");
            }
        }
        one::<Control>(body);
        one::<Slot>(body);
        one::<Ticket>(body);
        one::<Queued>(body);
        one::<SnapshotHead>(body);
        one::<SnapshotPart>(body);
        one::<Pause>(body);
        one::<Resumed>(body);
        one::<Released>(body);
    }

    #[test]
    fn a_holders_needs_stay_small_and_are_checked() {
        use crate::ecs::HostPorts;
        // A distinctInstance service on every instance of a full cluster: its instances are
        // the first to go, the need itself stays.
        let everywhere: std::collections::BTreeSet<String> = (0..MAX_INSTANCES)
            .map(|n| format!("arn:aws:ecs:us-east-1:123456789012:container-instance/c/{n:032}"))
            .collect();
        let db =
            Need { task: "db:1".into(), service: "db".into(), distinct_from: Some(everywhere), ..Default::default() };
        let kept = holder_needs(&[db]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].distinct_from, Some(Default::default()));
        // Many tasks with many ports: as many as fit.
        let edge = Need {
            task: "edge:1".into(),
            service: "edge".into(),
            ports: HostPorts { tcp: (1000..1100).collect(), udp: Default::default() },
            ..Default::default()
        };
        let kept = holder_needs(&vec![edge; MAX_NEEDS]);
        assert!(!kept.is_empty() && serde_json::to_string(&kept).unwrap().len() <= MAX_NEEDS_BYTES);
        // A slot item of an earlier version has none; one with a need out of bounds is refused.
        let holder = r#"{"id":"i-1","arn":"a","token":1,"cycle":"c","step":"s","availability_zone":null,
            "allocated":{"cpu":1,"memory":1},"acquired_at":1,"renewed_at":1,"expires_at":2}"#;
        let slot: Slot = parse(&format!(r#"{{"holder":{holder},"released":[]}}"#)).unwrap();
        assert!(slot.holder.unwrap().needs.is_empty());
        let ports: Vec<u16> = (1..=200).collect();
        let bad = holder.replace(
            r#""expires_at":2"#,
            &format!(r#""expires_at":2,"needs":[{{"task":"t","service":"s","size":{{"cpu":1,"memory":1}},"ports":{{"tcp":{ports:?},"udp":[]}}}}]"#),
        );
        let err = parse::<Slot>(&format!(r#"{{"holder":{bad},"released":[]}}"#)).unwrap_err();
        assert!(err.contains("need.ports.tcp"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn arbitrary_bytes_are_an_item_or_a_reason(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            every_item(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn a_control_item_with_any_numbers_is_within_bounds_or_refused(
            slots in any::<u64>(), size in any::<u64>(), served in any::<u64>(), token in any::<u64>(),
        ) {
            let body = format!(
                r#"{{"format":2,"paused":null,"served":{served},"next_token":{token},"slots":{slots},
                   "cluster_size":{size},"snapshot_not_before":0}}"#
            );
            every_item(&body);
            if let Ok(control) = parse::<Control>(&body) {
                prop_assert!(control.slots <= MAX_INSTANCES && control.cluster_size <= MAX_INSTANCES);
                prop_assert!(control.served <= MAX_COUNTER && control.next_token <= MAX_COUNTER);
            }
        }

        #[test]
        fn a_snapshot_head_never_promises_more_parts_than_its_instances_need(
            parts in any::<u64>(), instances in any::<u64>(),
        ) {
            let body = format!(r#"{{"taken_at":1,"parts":{parts},"instances":{instances}}}"#);
            if let Ok(head) = parse::<SnapshotHead>(&body) {
                prop_assert!(head.instances <= MAX_INSTANCES);
                prop_assert!(head.parts <= head.instances.div_ceil(PART_SIZE));
            }
        }
    }

    #[test]
    fn the_forged_numbers_of_the_review_are_refused_by_field() {
        let forged = r#"{"format":2,"paused":null,"served":0,"next_token":1,"slots":18446744073709551615,
                         "cluster_size":3,"snapshot_not_before":0}"#;
        let why = parse::<Control>(forged).unwrap_err();
        assert!(why.contains("field `slots` is 18446744073709551615"), "{why}");
        let big = format!(r#"{{"id":"{}","cycle":"c"}}"#, "i".repeat(MAX_ITEM_BYTES));
        assert!(parse::<Ticket>(&big).unwrap_err().contains("larger than"));
    }
}
