//! Where the tasks a drain moves can go when CPU and memory are not all they need: a task
//! with a static host port, a GPU, or a service with a `distinctInstance` constraint can only
//! go to a peer that has that port free, a free GPU, or none of the service's tasks.
//!
//! AWS (Amazon ECS task placement): the scheduler will "Identify the container instances
//! that satisfy the CPU, GPU, memory, and port requirements in the task definition", then
//! those that satisfy the placement constraints. A drain whose tasks no peer can take never
//! ends: such a drain is not started.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ecs::{Capacity, Gpus, HostPorts};

/// A task a drain moves that needs more than CPU and memory of its next instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Need {
    /// The task, as `family:revision`.
    pub task: String,
    /// Its service.
    pub service: String,
    /// CPU and memory.
    pub size: Capacity,
    /// Static host ports.
    #[serde(default, skip_serializing_if = "HostPorts::is_empty")]
    pub ports: HostPorts,
    /// Physical GPUs (`u32::MAX` for all of an instance's).
    #[serde(default)]
    pub gpus: u32,
    /// The service has `distinctInstance`: the container instances that already run one of
    /// its tasks, where it may not go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct_from: Option<BTreeSet<String>>,
}

impl Need {
    /// True when the task needs nothing but CPU and memory (the aggregate check covers it).
    pub fn is_plain(&self) -> bool {
        self.ports.is_empty() && self.gpus == 0 && self.distinct_from.is_none()
    }
}

/// What a peer offers beyond CPU and memory, as read from ECS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// Its container-instance ARN.
    pub arn: String,
    /// Host ports reserved on it.
    pub ports: HostPorts,
    /// Its GPUs, where ECS reports them.
    pub gpus: Option<Gpus>,
}

/// An in-service peer the tasks may go to.
#[derive(Debug, Clone)]
pub struct Peer {
    /// CPU and memory free.
    pub free: Capacity,
    /// Ports, GPUs, and its ARN.
    pub room: Room,
}

/// `peers` with each one's room less its share of `others` (the tasks moving now that need
/// only CPU and memory), in proportion to its room among `total`, rounded up: ECS places
/// them in no order we know, and a peer that takes a task needing a port must keep room for
/// it after they have found their places.
pub fn after_share(mut peers: Vec<Peer>, total: Capacity, others: Capacity) -> Vec<Peer> {
    let share = |free: i64, total: i64, others: i64| -> i64 {
        if total <= 0 || free <= 0 || others <= 0 {
            return 0;
        }
        let (free, total, others) = (i128::from(free), i128::from(total), i128::from(others));
        i64::try_from((others * free + total - 1) / total).unwrap_or(i64::MAX)
    };
    for peer in &mut peers {
        let taken = Capacity {
            cpu: share(peer.free.cpu, total.cpu, others.cpu),
            memory: share(peer.free.memory, total.memory, others.memory),
        };
        peer.free = peer.free.minus(taken);
    }
    peers
}

/// Why a peer cannot take a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Refusal {
    Port,
    Gpu,
    Distinct,
    Size,
}

/// Places every need on a peer, first fit, the hardest first (GPUs, then ports), each peer's
/// room shrinking with what it took; `Err` names the first task that fits nowhere and why
/// each peer refused it. Not complete (a cleverer packing might place what first fit does
/// not: the host then waits), and sound only as far as ECS places the host's other tasks no
/// worse than in proportion to room ([`after_share`]): a binpack strategy may still fill the
/// one peer a port task needs, and that drain times out as before.
///
/// GPUs are checked only where `gpus_reported`: some instance of the cluster shows a `GPU`
/// resource (then one that shows none has none). The API reference documents no such
/// resource on container instances (the agent registers GPUs as `platformDevices`); where
/// ECS shows none anywhere, GPUs cannot be counted and are not.
pub fn place(needs: &[&Need], mut peers: Vec<Peer>, gpus_reported: bool) -> Result<(), String> {
    let mut order: Vec<&Need> = needs.iter().copied().filter(|n| !n.is_plain()).collect();
    order.sort_by_key(|n| std::cmp::Reverse((n.gpus, n.ports.tcp.len() + n.ports.udp.len(), n.size.cpu)));
    // The services each peer takes a distinct task of, in this placement.
    let mut taken: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); peers.len()];
    for need in order {
        let refusal = |k: usize, p: &Peer| -> Option<(Refusal, String)> {
            if let Some(port) = p.room.ports.clash(&need.ports) {
                return Some((Refusal::Port, format!("host port {port} taken")));
            }
            if need.gpus > 0 && gpus_reported {
                let free = p.room.gpus.map_or(0, |g| g.free);
                let enough = if need.gpus == u32::MAX {
                    p.room.gpus.is_some_and(|g| g.registered > 0 && g.free == g.registered)
                } else {
                    free >= need.gpus
                };
                if !enough {
                    return Some((Refusal::Gpu, "too few free GPUs".into()));
                }
            }
            if let Some(others) = &need.distinct_from
                && (others.contains(&p.room.arn) || taken[k].contains(need.service.as_str()))
            {
                return Some((Refusal::Distinct, format!("runs a task of {} (distinctInstance)", need.service)));
            }
            if !p.free.covers(need.size) {
                return Some((Refusal::Size, "too little CPU or memory".into()));
            }
            None
        };
        let mut refused: BTreeMap<(Refusal, String), usize> = BTreeMap::new();
        let mut home = None;
        for (k, peer) in peers.iter().enumerate() {
            match refusal(k, peer) {
                None => {
                    home = Some(k);
                    break;
                }
                Some(why) => *refused.entry(why).or_default() += 1,
            }
        }
        let Some(k) = home else {
            let why: Vec<String> = refused.into_iter().map(|((_, what), n)| format!("{what} on {n}")).collect();
            return Err(format!(
                "placement: task {} of service {} fits on none of the {} in-service peers{}{}",
                need.task,
                need.service,
                peers.len(),
                if why.is_empty() { "" } else { ": " },
                why.join(", ")
            ));
        };
        let peer = &mut peers[k];
        peer.free = peer.free.minus(need.size);
        peer.room.ports.add(&need.ports);
        if let Some(gpus) = peer.room.gpus.as_mut() {
            gpus.free = if need.gpus == u32::MAX { 0 } else { gpus.free.saturating_sub(need.gpus) };
        }
        if need.distinct_from.is_some() {
            taken[k].insert(need.service.as_str());
        }
    }
    Ok(())
}

/// The first host port in `held` (the ports the host's tasks hold now) not in `seen` (those
/// they held when its turn was checked): a task that came to the host since (a holder's,
/// moved here), for which no peer was looked for.
pub fn unforeseen_port(seen: &HostPorts, held: &HostPorts) -> Option<String> {
    let tcp = held.tcp.difference(&seen.tcp).next().map(|p| format!("{p}/tcp"));
    tcp.or_else(|| held.udp.difference(&seen.udp).next().map(|p| format!("{p}/udp")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, free: i64, tcp: &[u16], gpus: Option<(u32, u32)>) -> Peer {
        Peer {
            free: Capacity { cpu: free, memory: free },
            room: Room {
                arn: format!("arn/{id}"),
                ports: HostPorts { tcp: tcp.iter().copied().collect(), udp: BTreeSet::new() },
                gpus: gpus.map(|(registered, free)| Gpus { registered, free }),
            },
        }
    }

    fn task(service: &str) -> Need {
        Need {
            task: format!("{service}:1"),
            service: service.into(),
            size: Capacity { cpu: 100, memory: 100 },
            ..Default::default()
        }
    }

    fn port(service: &str, port: u16) -> Need {
        Need { ports: HostPorts { tcp: [port].into(), udp: BTreeSet::new() }, ..task(service) }
    }

    #[test]
    fn a_static_port_goes_only_where_it_is_free_and_takes_it_there() {
        let edge = port("edge", 8080);
        let err = place(&[&edge], vec![peer("b", 1000, &[22, 8080], None)], true).unwrap_err();
        assert!(err.contains("task edge:1 of service edge") && err.contains("host port 8080/tcp taken on 1"), "{err}");
        assert!(place(&[&edge], vec![peer("b", 1000, &[22, 8080], None), peer("c", 1000, &[22], None)], true).is_ok());
        // Two tasks with the same port need two peers.
        let err = place(&[&edge, &edge], vec![peer("c", 1000, &[22], None)], true).unwrap_err();
        assert!(err.contains("8080/tcp taken on 1"), "{err}");
        // The same port over UDP does not clash with TCP.
        let dns = Need { ports: HostPorts { tcp: BTreeSet::new(), udp: [8080].into() }, ..task("dns") };
        assert!(place(&[&dns], vec![peer("b", 1000, &[8080], None)], true).is_ok());
        // A free port on a full peer is no room either.
        let err = place(&[&edge], vec![peer("c", 50, &[], None)], true).unwrap_err();
        assert!(err.contains("too little CPU or memory on 1"), "{err}");
    }

    #[test]
    fn a_gpu_task_needs_a_peer_with_a_free_gpu_where_ecs_reports_gpus() {
        let train = Need { gpus: 1, ..task("train") };
        let err =
            place(&[&train], vec![peer("b", 1000, &[], Some((4, 0))), peer("c", 1000, &[], None)], true).unwrap_err();
        assert!(err.contains("too few free GPUs on 2"), "{err}");
        assert!(place(&[&train], vec![peer("b", 1000, &[], Some((4, 1)))], true).is_ok());
        assert!(
            place(&[&train, &train], vec![peer("b", 1000, &[], Some((4, 1)))], true).is_err(),
            "one GPU, two tasks"
        );
        let all = Need { gpus: u32::MAX, ..task("train") };
        assert!(place(&[&all], vec![peer("b", 1000, &[], Some((4, 3)))], true).is_err(), "ALL wants every GPU free");
        assert!(place(&[&all], vec![peer("b", 1000, &[], Some((4, 4)))], true).is_ok());
        // ECS shows GPUs nowhere: they are not checked.
        assert!(place(&[&train], vec![peer("b", 1000, &[], None)], false).is_ok());
    }

    #[test]
    fn a_distinct_instance_task_avoids_peers_with_its_siblings_and_its_own_placements() {
        let others: BTreeSet<String> = ["arn/b".to_string()].into();
        let db = Need { distinct_from: Some(others), ..task("db") };
        let err = place(&[&db], vec![peer("b", 1000, &[], None)], true).unwrap_err();
        assert!(err.contains("runs a task of db (distinctInstance) on 1"), "{err}");
        assert!(place(&[&db], vec![peer("b", 1000, &[], None), peer("c", 1000, &[], None)], true).is_ok());
        assert!(place(&[&db, &db], vec![peer("b", 1000, &[], None), peer("c", 1000, &[], None)], true).is_err());
        // A service without the constraint may stack.
        let web = task("web");
        assert!(place(&[&web, &web], vec![peer("c", 1000, &[], None)], true).is_ok());
    }

    #[test]
    fn a_port_held_by_a_task_that_came_after_the_grant_is_unforeseen() {
        let held = HostPorts { tcp: [80, 8080].into(), udp: BTreeSet::new() };
        let seen = |tcp: &[u16]| HostPorts { tcp: tcp.iter().copied().collect(), udp: BTreeSet::new() };
        assert_eq!(unforeseen_port(&seen(&[8080]), &held).as_deref(), Some("80/tcp"));
        assert_eq!(unforeseen_port(&seen(&[80, 8080, 9100]), &held), None, "a task that left is no matter");
        assert_eq!(unforeseen_port(&seen(&[]), &HostPorts::default()), None);
    }

    #[test]
    fn a_peer_keeps_room_for_a_port_task_only_after_its_share_of_the_plain_tasks() {
        // Two peers with 300 and 100 free; 200 units of plain tasks move too: the first keeps
        // 150, the second 50.
        let total = Capacity { cpu: 400, memory: 400 };
        let others = Capacity { cpu: 200, memory: 200 };
        let peers = after_share(vec![peer("b", 300, &[], None), peer("c", 100, &[], None)], total, others);
        assert_eq!(peers.iter().map(|p| p.free.cpu).collect::<Vec<_>>(), [150, 50]);
        let big = Need { size: Capacity { cpu: 160, memory: 160 }, ..port("edge", 80) };
        assert!(place(&[&big], peers, true).unwrap_err().contains("too little CPU or memory on 2"));
        let none = after_share(vec![peer("b", 300, &[], None)], total, Capacity::default());
        assert_eq!(none[0].free.cpu, 300);
    }

    #[test]
    fn the_hardest_task_is_placed_first() {
        // c is the only peer with the GPU; a port task that first fit would put there first
        // must leave it to the GPU task.
        let train = Need { gpus: 1, ..task("train") };
        let edge = port("edge", 80);
        let peers = vec![peer("c", 150, &[], Some((1, 1))), peer("d", 1000, &[], Some((0, 0)))];
        assert!(place(&[&edge, &train], peers, true).is_ok());
    }
}
