//! The rolling policy, as pure functions over a group record and a cluster snapshot:
//! how many hosts may be out, which host is next, and whether the cluster can absorb it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::placement::{self, Need, Peer, Room};
use crate::ecs::{Capacity, ContainerInstance};

/// The host asking for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRequest {
    /// EC2 instance id.
    pub id: String,
    /// Container-instance ARN.
    pub arn: String,
    /// The cycle asking.
    pub cycle: String,
    /// What stays on the host through a drain (daemon tasks): no peer needs room for it.
    /// `None` until the host's services were checked ([`Decision::Check`]).
    pub stays: Option<Capacity>,
    /// The tasks the drain moves that need more than CPU and memory of a peer (static host
    /// ports, GPUs, `distinctInstance`), found with [`SlotRequest::stays`].
    pub needs: Vec<Need>,
}

/// How many hosts may be out of service at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// At most this many.
    Count(u32),
    /// At most this percentage of the cluster's registered instances (at least one).
    Percent(u32),
}

impl Budget {
    /// The number of hosts allowed out for a cluster of `registered` instances.
    pub fn resolve(self, registered: usize) -> usize {
        match self {
            Budget::Count(n) => n as usize,
            Budget::Percent(p) => (registered * p as usize / 100).max(1),
        }
    }

    /// Parses `"3"`, `3` or `"10%"`.
    pub fn parse(text: &str) -> Option<Budget> {
        let text = text.trim();
        match text.strip_suffix('%') {
            Some(p) => p.trim().parse().ok().filter(|p| (1..=100).contains(p)).map(Budget::Percent),
            None => text.parse().ok().filter(|n| *n >= 1).map(Budget::Count),
        }
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Count(n) => write!(f, "{n}"),
            Budget::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// The rules a slot must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Hosts allowed out of service at once (DRAINING for any reason counts).
    pub max_unavailable: Budget,
    /// Share of registered instances that must stay in service.
    pub min_healthy_percent: u32,
    /// Only hosts of one availability zone out at a time.
    pub one_az_at_a_time: bool,
}

/// A host holding a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// EC2 instance id.
    pub id: String,
    /// Its container-instance ARN.
    pub arn: String,
    /// Fencing token: grows with every grant; renew and release must present it.
    pub token: u64,
    /// The cycle that holds it.
    pub cycle: String,
    /// The cycle's step at the last renewal.
    pub step: String,
    /// Its availability zone.
    pub availability_zone: Option<String>,
    /// Resources its tasks used when it took the slot.
    pub allocated: Capacity,
    /// What stays on it through the drain (daemon tasks): peers need no room for it.
    #[serde(default)]
    pub stays: Capacity,
    /// Unix milliseconds, by the holder's clock.
    pub acquired_at: u64,
    /// Unix milliseconds, by the holder's clock.
    pub renewed_at: u64,
    /// Unix milliseconds, by the holder's clock: shown to operators and kept for hosts of
    /// earlier versions. This version judges a lease by [`Holder::hold`] instead.
    pub expires_at: u64,
    /// How long the lease holds after its last renewal (ms): a duration, which each reader
    /// times on its own clock from when it saw the renewal, so that no host's wrong clock
    /// takes or keeps a slot. Absent from items of earlier versions.
    #[serde(default)]
    pub hold_ms: u64,
    /// Its tasks that need more than CPU and memory of a peer: placed before a new
    /// candidate's while it still runs tasks. Absent from items of earlier versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<Need>,
}

impl Holder {
    /// How long the lease holds after its last renewal.
    pub fn hold(&self) -> Duration {
        let ms = if self.hold_ms > 0 { self.hold_ms } else { self.expires_at.saturating_sub(self.renewed_at) };
        Duration::from_millis(ms)
    }
}

/// Why the group is paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// What happened.
    pub reason: String,
    /// Who paused it (instance id or operator).
    pub by: String,
    /// Unix milliseconds.
    pub at: u64,
}

/// The slots of one (cluster, group) as the policy sees them: who holds one, and who gave
/// one back recently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupRecord {
    /// Hosts holding a slot.
    pub holders: Vec<Holder>,
    /// Hosts that gave their slot back recently (id, unix ms): back in service even where
    /// an older snapshot still shows them DRAINING.
    pub released: Vec<(String, u64)>,
}

/// What the policy needs of one container instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    /// EC2 instance id.
    pub id: String,
    /// ACTIVE, DRAINING, ...
    pub status: String,
    /// Agent connected.
    pub connected: bool,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// Resources offered.
    pub registered: Capacity,
    /// Resources free.
    pub remaining: Capacity,
    /// Host ports, GPUs and its ARN: known from a look at the cluster, not from a stored
    /// snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Room>,
}

impl From<&ContainerInstance> for InstanceView {
    fn from(i: &ContainerInstance) -> Self {
        Self {
            id: i.ec2_instance_id.clone(),
            status: i.status.clone(),
            connected: i.agent_connected,
            availability_zone: i.availability_zone.clone(),
            registered: i.registered,
            remaining: i.remaining,
            placement: Some(Room { arn: i.arn.clone(), ports: i.reserved_ports.clone(), gpus: i.gpus }),
        }
    }
}

impl InstanceView {
    fn in_service(&self) -> bool {
        self.status == "ACTIVE" && self.connected
    }

    /// Taken out of service by someone: DRAINING (or leaving) for any reason. An ACTIVE
    /// instance whose agent is disconnected (a stopped EC2 instance, a crashed agent) is not
    /// in service either, but no drain took it out and nothing brings it back on a known
    /// schedule: counting it against `max_unavailable` would stall the roll for as long as
    /// it stays stopped. It still counts against `min_healthy_percent` and offers no room
    /// to the capacity guard.
    fn taken_out(&self) -> bool {
        self.status != "ACTIVE"
    }
}

/// The cluster as seen at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Unix milliseconds.
    pub taken_at: u64,
    /// Every registered instance.
    pub instances: Vec<InstanceView>,
}

/// Hosts out of service or about to be: slot holders, and any instance not ACTIVE
/// (DRAINING for any reason, including scale-in) other than `candidate`.
pub fn unavailable(record: &GroupRecord, snapshot: &Snapshot, candidate: &str) -> usize {
    let mut out: HashSet<&str> = record.holders.iter().map(|h| h.id.as_str()).collect();
    let back_since_snapshot: HashSet<&str> =
        record.released.iter().filter(|(_, at)| *at >= snapshot.taken_at).map(|(id, _)| id.as_str()).collect();
    for i in &snapshot.instances {
        if i.taken_out() && i.id != candidate && !back_since_snapshot.contains(i.id.as_str()) {
            out.insert(&i.id);
        }
    }
    out.len()
}

/// Free slots: the budget less what is out.
pub fn free_slots(record: &GroupRecord, snapshot: &Snapshot, policy: &Policy, candidate: &str) -> usize {
    let budget = policy.max_unavailable.resolve(snapshot.instances.len().max(1));
    budget.saturating_sub(unavailable(record, snapshot, candidate))
}

/// Whether host `candidate` may take a slot now; `Err` says why it must wait. Its zone and
/// its tasks are read from the snapshot, like everyone else's.
pub fn admit(record: &GroupRecord, snapshot: &Snapshot, policy: &Policy, request: &SlotRequest) -> Result<(), String> {
    let candidate = request.id.as_str();
    let Some(me) = snapshot.instances.iter().find(|i| i.id == candidate) else {
        return Err(format!("{candidate} is not in the cluster snapshot yet"));
    };
    let registered = snapshot.instances.len().max(1);
    let budget = policy.max_unavailable.resolve(registered);
    let out = unavailable(record, snapshot, candidate);
    if out >= budget {
        return Err(format!("{out} host(s) out of service, max_unavailable allows {budget}"));
    }
    let holders: HashSet<&str> = record.holders.iter().map(|h| h.id.as_str()).collect();
    let holding = |id: &str| holders.contains(id);
    let healthy_after =
        snapshot.instances.iter().filter(|i| i.in_service() && i.id != candidate && !holding(&i.id)).count();
    if healthy_after * 100 < policy.min_healthy_percent as usize * registered {
        return Err(format!(
            "only {healthy_after} of {registered} instances would stay in service, min_healthy_percent is {}",
            policy.min_healthy_percent
        ));
    }
    if policy.one_az_at_a_time
        && let Some(other) = record.holders.iter().find(|h| h.availability_zone != me.availability_zone)
    {
        return Err(format!(
            "{} is out in {}, and one_az_at_a_time is set",
            other.id,
            other.availability_zone.as_deref().unwrap_or("an unknown zone")
        ));
    }
    // Room on the in-service peers for this host's tasks and for the tasks the holders
    // still have to move, all read from the one snapshot so the books balance: since it was
    // taken, tasks have only moved from holders to in-service hosts. A host the snapshot
    // does not show counts with what it declared.
    let free = snapshot
        .instances
        .iter()
        .filter(|i| i.in_service() && i.id != candidate && !holding(&i.id))
        .fold(Capacity::default(), |sum, i| sum.plus(i.remaining));
    // Daemon tasks are never moved (one per instance): what stays is nobody's to absorb
    // (and once they have stopped too, nothing is left to subtract).
    let seen: HashMap<&str, &InstanceView> =
        snapshot.instances.iter().filter(|i| holders.contains(i.id.as_str())).map(|i| (i.id.as_str(), i)).collect();
    let load = |id: &str, declared: Capacity, stays: Capacity| match seen.get(id) {
        Some(seen) => seen.registered.minus(seen.remaining).minus(stays),
        None => declared.minus(stays),
    };
    let still_to_move =
        record.holders.iter().fold(Capacity::default(), |sum, h| sum.plus(load(&h.id, h.allocated, h.stays)));
    let need = me.registered.minus(me.remaining).minus(request.stays.unwrap_or_default()).plus(still_to_move);
    if !free.covers(need) {
        return Err(format!(
            "capacity: the in-service peers have {} CPU units and {} MiB free, {} and {} are needed",
            free.cpu, free.memory, need.cpu, need.memory
        ));
    }
    // Tasks that need a port, a GPU or an instance of their own go to one peer each, which
    // must still have room once the other tasks moving now have found theirs: ECS places
    // them in no order we know. So such tasks move while no other host's tasks do, and the
    // peer each goes to keeps room for it after its share of this host's other tasks.
    let still_moving = |h: &Holder| load(&h.id, h.allocated, h.stays) != Capacity::default();
    let constrained = |needs: &[Need]| needs.iter().any(|n| !n.is_plain());
    // A host that moves nothing (an update installed in place) takes no peer's room.
    let moves = me.registered.minus(me.remaining).minus(request.stays.unwrap_or_default()) != Capacity::default();
    if !moves {
        return Ok(());
    }
    if let Some(holder) = record.holders.iter().find(|h| constrained(&h.needs) && still_moving(h)) {
        return Err(format!(
            "placement: {}'s tasks that need a host port, a GPU or an instance of their own are still moving",
            holder.id
        ));
    }
    if !wants_placement(request) {
        return Ok(());
    }
    if let Some(holder) = record.holders.iter().find(|h| still_moving(h)) {
        return Err(format!(
            "placement: this host's tasks need a host port, a GPU or an instance of their own, and {}'s \
             tasks are still moving",
            holder.id
        ));
    }
    let peers: Option<Vec<Peer>> = snapshot
        .instances
        .iter()
        .filter(|i| i.in_service() && i.id != candidate && !holding(&i.id))
        .map(|i| i.placement.clone().map(|room| Peer { free: i.remaining, room }))
        .collect();
    let Some(peers) = peers else {
        return Err("placement: this snapshot does not show the peers' host ports and GPUs".into());
    };
    let constrained_load =
        request.needs.iter().filter(|n| !n.is_plain()).fold(Capacity::default(), |sum, n| sum.plus(n.size));
    let others = need.minus(constrained_load);
    let gpus_reported = snapshot.instances.iter().any(|i| i.placement.as_ref().is_some_and(|r| r.gpus.is_some()));
    let needs: Vec<&Need> = request.needs.iter().collect();
    placement::place(&needs, placement::after_share(peers, free, others), gpus_reported)
}

/// True when a decision for `request` needs a snapshot with the peers' ports and GPUs (one
/// read from the store has none).
pub fn wants_placement(request: &SlotRequest) -> bool {
    request.needs.iter().any(|n| !n.is_plain())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, status: &str, free: i64) -> InstanceView {
        InstanceView {
            id: id.into(),
            status: status.into(),
            connected: true,
            availability_zone: Some("a".into()),
            registered: Capacity { cpu: 1024, memory: 1024 },
            remaining: Capacity { cpu: free, memory: free },
            placement: None,
        }
    }

    /// A snapshot taken at `taken_at` of (id, status, free units) instances.
    fn snap(taken_at: u64, instances: &[(&str, &str, i64)]) -> Snapshot {
        Snapshot {
            taken_at,
            instances: instances.iter().map(|(id, status, free)| instance(id, status, *free)).collect(),
        }
    }

    fn holder(id: &str, allocated: i64, acquired_at: u64) -> Holder {
        Holder {
            id: id.into(),
            arn: format!("arn/{id}"),
            token: 1,
            cycle: "c".into(),
            step: "draining".into(),
            availability_zone: Some("a".into()),
            allocated: Capacity { cpu: allocated, memory: allocated },
            stays: Capacity::default(),
            acquired_at,
            renewed_at: acquired_at,
            expires_at: acquired_at + 1000,
            hold_ms: 1000,
            needs: Vec::new(),
        }
    }

    fn ask(id: &str) -> SlotRequest {
        SlotRequest {
            id: id.into(),
            arn: format!("arn/{id}"),
            cycle: "c".into(),
            stays: Some(Capacity::default()),
            needs: Vec::new(),
        }
    }

    fn policy(budget: Budget) -> Policy {
        Policy { max_unavailable: budget, min_healthy_percent: 0, one_az_at_a_time: false }
    }

    /// `instance` with the placement a look at the cluster gives: `tcp` ports reserved.
    fn placed(id: &str, status: &str, free: i64, tcp: &[u16]) -> InstanceView {
        let ports = crate::ecs::HostPorts { tcp: tcp.iter().copied().collect(), udp: Default::default() };
        InstanceView {
            placement: Some(Room { arn: format!("arn/{id}"), ports, gpus: None }),
            ..instance(id, status, free)
        }
    }

    fn port_task(port: u16) -> Need {
        Need {
            task: "edge:1".into(),
            service: "edge".into(),
            size: Capacity { cpu: 100, memory: 100 },
            ports: crate::ecs::HostPorts { tcp: [port].into(), udp: Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn a_task_with_a_static_port_moves_alone_to_a_peer_where_the_port_is_free() {
        // a runs an edge task on port 80; only c has port 80 free.
        let snapshot = Snapshot {
            taken_at: 0,
            instances: vec![
                placed("a", "ACTIVE", 500, &[80]),
                placed("h", "ACTIVE", 900, &[80]),
                placed("c", "ACTIVE", 1024, &[]),
            ],
        };
        let asking = SlotRequest { needs: vec![port_task(80)], ..ask("a") };
        assert!(wants_placement(&asking) && !wants_placement(&ask("a")));
        assert!(admit(&GroupRecord::default(), &snapshot, &policy(Budget::Count(2)), &asking).is_ok());
        // h holds a slot and still has tasks to move: they may take c's room first.
        let moving = GroupRecord { holders: vec![holder("h", 124, 0)], ..Default::default() };
        let err = admit(&moving, &snapshot, &policy(Budget::Count(2)), &asking).unwrap_err();
        assert!(err.contains("h's tasks are still moving"), "{err}");
        assert!(admit(&moving, &snapshot, &policy(Budget::Count(2)), &ask("a")).is_ok(), "plain tasks go on");
        // While h's own port task is still moving, no one starts.
        let mut h = holder("h", 124, 0);
        h.needs = vec![port_task(80)];
        let constrained = GroupRecord { holders: vec![h], ..Default::default() };
        let err = admit(&constrained, &snapshot, &policy(Budget::Count(2)), &ask("a")).unwrap_err();
        assert!(err.contains("h's tasks that need a host port"), "{err}");
        // A host that installs in place moves nothing, and waits for no one's tasks.
        let in_place = SlotRequest { stays: Some(Capacity { cpu: 524, memory: 524 }), ..ask("a") };
        assert!(admit(&constrained, &snapshot, &policy(Budget::Count(2)), &in_place).is_ok());
        // Once h runs nothing, its task has found its place (on c), and a's has none.
        let moved = Snapshot {
            taken_at: 0,
            instances: vec![
                placed("a", "ACTIVE", 500, &[80]),
                placed("h", "DRAINING", 1024, &[]),
                placed("c", "ACTIVE", 900, &[80]),
            ],
        };
        let err = admit(&constrained, &moved, &policy(Budget::Count(2)), &asking).unwrap_err();
        assert!(err.contains("host port 80/tcp taken on 1"), "{err}");
        // A snapshot read from the store shows no ports: no decision is made on it.
        let stored = snap(0, &[("a", "ACTIVE", 500), ("c", "ACTIVE", 1024)]);
        let err = admit(&GroupRecord::default(), &stored, &policy(Budget::Count(2)), &asking).unwrap_err();
        assert!(err.contains("does not show the peers' host ports"), "{err}");
        assert!(admit(&GroupRecord::default(), &stored, &policy(Budget::Count(2)), &ask("a")).is_ok());
    }

    #[test]
    fn budgets_parse_and_resolve() {
        assert_eq!(Budget::parse("3"), Some(Budget::Count(3)));
        assert_eq!(Budget::parse("10%"), Some(Budget::Percent(10)));
        assert_eq!(Budget::parse("0"), None);
        assert_eq!(Budget::parse("150%"), None);
        assert_eq!(Budget::Percent(10).resolve(1000), 100);
        assert_eq!(Budget::Percent(10).resolve(5), 1, "never less than one");
        // Rounded down: a percentage never lets more out than it says.
        assert_eq!(Budget::Percent(15).resolve(10), 1, "1.5 hosts is 1");
        assert_eq!(Budget::Percent(33).resolve(10), 3, "3.3 hosts is 3");
        assert_eq!(Budget::Percent(50).resolve(7), 3, "3.5 hosts is 3");
        assert_eq!(Budget::Percent(99).resolve(100), 99);
    }

    #[test]
    fn draining_for_any_reason_counts_against_the_budget() {
        let snapshot = snap(0, &[("a", "ACTIVE", 1024), ("b", "DRAINING", 1024), ("c", "ACTIVE", 1024)]);
        let record = GroupRecord::default();
        let err = admit(&record, &snapshot, &policy(Budget::Count(1)), &ask("a")).unwrap_err();
        assert!(err.contains("1 host(s) out of service"), "{err}");
        assert!(admit(&record, &snapshot, &policy(Budget::Count(2)), &ask("a")).is_ok());
        assert!(
            admit(&record, &snapshot, &policy(Budget::Count(2)), &ask("new"))
                .unwrap_err()
                .contains("not in the cluster snapshot")
        );
    }

    #[test]
    fn capacity_guard_counts_what_holders_still_have_to_move() {
        // a runs 500 units of tasks; b holds a slot and still runs 1024; c has 600 free.
        let snapshot = snap(100, &[("a", "ACTIVE", 524), ("b", "ACTIVE", 0), ("c", "ACTIVE", 600)]);
        let record = GroupRecord { holders: vec![holder("b", 1024, 50)], ..Default::default() };
        let err = admit(&record, &snapshot, &policy(Budget::Count(3)), &ask("a")).unwrap_err();
        assert!(err.starts_with("capacity"), "{err}");
        // A later snapshot in which b runs nothing and c has 1000 free: a's 500 fit.
        let moved = snap(200, &[("a", "ACTIVE", 524), ("b", "DRAINING", 1024), ("c", "ACTIVE", 1000)]);
        assert!(admit(&record, &moved, &policy(Budget::Count(3)), &ask("a")).is_ok());
        // A holder the snapshot does not show counts with what it declared.
        let unseen = GroupRecord { holders: vec![holder("x", 1024, 300)], ..Default::default() };
        assert!(admit(&unseen, &moved, &policy(Budget::Count(3)), &ask("a")).is_err());
        // The candidate counts with what the snapshot shows on it.
        let fuller = snap(200, &[("a", "ACTIVE", 0), ("b", "DRAINING", 1024), ("c", "ACTIVE", 1000)]);
        assert!(admit(&record, &fuller, &policy(Budget::Count(3)), &ask("a")).unwrap_err().starts_with("capacity"));
    }

    #[test]
    fn min_healthy_and_one_zone_at_a_time() {
        let snapshot =
            snap(0, &[("a", "ACTIVE", 1024), ("b", "ACTIVE", 1024), ("c", "ACTIVE", 1024), ("d", "ACTIVE", 1024)]);
        let record = GroupRecord { holders: vec![holder("b", 0, 0)], ..Default::default() };
        let strict = Policy { max_unavailable: Budget::Count(4), min_healthy_percent: 75, one_az_at_a_time: false };
        assert!(admit(&record, &snapshot, &strict, &ask("a")).unwrap_err().contains("min_healthy_percent"));
        let zoned = Policy { max_unavailable: Budget::Count(4), min_healthy_percent: 0, one_az_at_a_time: true };
        assert!(admit(&record, &snapshot, &zoned, &ask("a")).is_ok());
        let mut elsewhere = snapshot;
        elsewhere.instances[0].availability_zone = Some("z".into());
        assert!(admit(&record, &elsewhere, &zoned, &ask("a")).unwrap_err().contains("one_az_at_a_time"));
    }

    #[test]
    fn a_disconnected_active_instance_does_not_take_the_budget_but_counts_as_unhealthy() {
        let mut snapshot = snap(0, &[("a", "ACTIVE", 1024), ("b", "ACTIVE", 1024), ("c", "ACTIVE", 1024)]);
        snapshot.instances[1].connected = false; // b: its EC2 instance is stopped
        let record = GroupRecord::default();
        assert!(admit(&record, &snapshot, &policy(Budget::Count(1)), &ask("a")).is_ok(), "b must not stall the roll");
        let healthy = Policy { max_unavailable: Budget::Count(1), min_healthy_percent: 50, one_az_at_a_time: false };
        let err = admit(&record, &snapshot, &healthy, &ask("a")).unwrap_err();
        assert!(err.contains("only 1 of 3"), "b is not in service: {err}");
        // b offers no room: with only b free, a's tasks have nowhere to go.
        let mut full = snap(0, &[("a", "ACTIVE", 0), ("b", "ACTIVE", 1024), ("c", "ACTIVE", 0)]);
        full.instances[1].connected = false;
        assert!(admit(&record, &full, &policy(Budget::Count(1)), &ask("a")).unwrap_err().starts_with("capacity"));
    }

    #[test]
    fn daemon_tasks_stay_and_need_no_room_on_peers() {
        // a uses 600 units, 400 of them a daemon task; b has 300 free.
        let snapshot = snap(0, &[("a", "ACTIVE", 424), ("b", "ACTIVE", 300)]);
        let record = GroupRecord::default();
        assert!(admit(&record, &snapshot, &policy(Budget::Count(1)), &ask("a")).unwrap_err().starts_with("capacity"));
        let daemon = SlotRequest { stays: Some(Capacity { cpu: 400, memory: 400 }), ..ask("a") };
        assert!(admit(&record, &snapshot, &policy(Budget::Count(1)), &daemon).is_ok(), "only 200 units move");
        // The same for a holder: what stays on it is not still to move.
        let both = snap(0, &[("a", "ACTIVE", 824), ("h", "ACTIVE", 624), ("b", "ACTIVE", 300)]);
        let mut holding = holder("h", 400, 0);
        let blocked = GroupRecord { holders: vec![holding.clone()], ..Default::default() };
        assert!(admit(&blocked, &both, &policy(Budget::Count(2)), &ask("a")).unwrap_err().starts_with("capacity"));
        holding.stays = Capacity { cpu: 400, memory: 400 };
        let record = GroupRecord { holders: vec![holding.clone()], ..Default::default() };
        assert!(admit(&record, &both, &policy(Budget::Count(2)), &ask("a")).is_ok());
        // A holder whose daemon task has stopped as well frees nothing more: what stays is
        // subtracted from what it still runs, never below zero.
        let emptied = snap(0, &[("a", "ACTIVE", 424), ("h", "DRAINING", 1024), ("b", "ACTIVE", 300)]);
        let record = GroupRecord { holders: vec![holding], ..Default::default() };
        let err = admit(&record, &emptied, &policy(Budget::Count(2)), &ask("a")).unwrap_err();
        assert!(err.contains("600 are needed") || err.contains("600 and 600"), "{err}");
    }
}
