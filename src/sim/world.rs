//! The simulated cluster: instances, tasks, a scheduler that moves service tasks off
//! DRAINING instances, and the measurements the simulation reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::Settings;
use crate::coordination::store::record_key;
use crate::ecs::Capacity;

/// The simulated cluster's name.
pub const CLUSTER: &str = "sim";

/// The key of the simulated group's record in the lease store.
pub fn lease_key() -> String {
    record_key(CLUSTER, &Settings::default().coordination.group)
}

/// Resources of one simulated host.
pub const HOST_CAPACITY: Capacity = Capacity { cpu: 2048, memory: 8192 };
/// A host that never comes back is terminated this long after its drain began.
const TERMINATED_AFTER_MS: u64 = 20 * 60 * 1000;

/// Resources of one simulated service task.
pub const TASK_SIZE: Capacity = Capacity { cpu: 256, memory: 512 };
/// Resources of the daemon task every host runs (a log or metrics agent): a whole task's
/// worth, so that what the capacity guard counts is exactly what the scheduler can place.
pub const DAEMON_SIZE: Capacity = Capacity { cpu: 256, memory: 512 };
/// The static host port of the edge service's tasks (bridge network mode): one per host.
pub const EDGE_PORT: u16 = 80;
/// A stopped task's containers get SIGKILL this long after SIGTERM (ECS's default stop
/// timeout): the longest a task spends in STOPPING; daemon tasks, stopped last, take it.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One simulated host's container instance and machine.
#[derive(Debug, Clone)]
pub struct SimInstance {
    /// EC2 instance id.
    pub id: String,
    /// Container-instance ARN.
    pub arn: String,
    /// Availability zone.
    pub availability_zone: String,
    /// ACTIVE or DRAINING.
    pub status: String,
    /// Whether its agent is running (and so connected).
    pub agent_up: bool,
    /// The `drained-by` attribute.
    pub drained_by: Option<String>,
    /// Agent version.
    pub agent_version: String,
    /// When it was last set DRAINING (virtual ms), for the scheduler.
    pub draining_since: u64,
    /// Tasks take this many times longer to leave it.
    pub slow_factor: u32,
    /// Packages installed at the new version.
    pub patched: bool,
    /// This week's update carries a kernel (else a userland library, installed in place).
    pub kernel_week: bool,
    /// It rebooted and never came back.
    pub dead: bool,
    /// When it comes back, the replica service is slow to recover.
    pub slow_recovery: bool,
    /// A kernel is installed and not running yet (until the next boot).
    pub reboot_pending: bool,
    /// This week's update is an ECS agent release that never connects once started.
    pub bad_agent: bool,
    /// The week of the roll (from 0).
    pub week: usize,
    /// With kernel fixes ([`super::kernels`]): the kernel running, the newest installed, and
    /// the newest fix the running kernel's live patch carries (0: none installed).
    pub running_kernel: usize,
    /// The newest kernel installed.
    pub installed_kernel: usize,
    /// The newest kernel fix the installed live patch carries.
    pub livepatch_version: usize,
}

/// The weekly kernel fixes and their live patches (what they offer: [`super::kernels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFixes {
    /// One week in this many publishes a kernel fix (the first does).
    pub every: usize,
    /// One kernel fix in this many has no live patch.
    pub misses: usize,
}

/// A simulated task.
#[derive(Debug, Clone)]
pub struct SimTask {
    /// Its ARN.
    pub arn: String,
    /// Started by a service (moved by the scheduler) or standalone.
    pub service: bool,
    /// A daemon-service task: one per instance, never moved, stopped last on a drain.
    pub daemon: bool,
    /// A task of the edge service, which reserves [`EDGE_PORT`] on its host.
    pub edge: bool,
    /// Stopped (desired STOPPED) but still on its host, DEACTIVATING then STOPPING, until
    /// this virtual ms; it keeps its resources until then.
    pub stopping_until: Option<u64>,
}

impl SimTask {
    /// Resources it holds on its host.
    pub fn size(&self) -> Capacity {
        if self.daemon { DAEMON_SIZE } else { TASK_SIZE }
    }

    /// Its lifecycle state as ECS reports it.
    pub fn last_status(&self) -> &'static str {
        if self.stopping_until.is_some() { "DEACTIVATING" } else { "RUNNING" }
    }
}

/// Everything shared by the simulated hosts.
#[derive(Debug)]
pub struct WorldState {
    /// The hosts' instances, by index.
    pub instances: Vec<SimInstance>,
    /// The tasks on each host (running, or stopped and still shutting down), by host index.
    pub tasks: Vec<Vec<SimTask>>,
    /// ECS reads: (virtual ms, host index, where the host stood in the slot queue, operation).
    pub reads: Vec<(u64, usize, InQueue, &'static str)>,
    /// ECS writes per host.
    pub writes: Vec<u64>,
    /// Lease-store operations.
    pub store_ops: u64,
    /// Most hosts out of service at once.
    pub peak_out: usize,
    /// Fewest hosts in service (ACTIVE, agent connected) at once.
    pub lowest_in_service: usize,
    /// Most availability zones with a host out of service at once.
    pub most_zones_out: usize,
    /// Tasks the scheduler could not place anywhere (the capacity guard failed).
    pub unplaceable: u64,
    /// Tasks the replica service wants (all of them, wherever they run).
    pub service_desired: usize,
    /// Weekly kernel fixes and their live patches, when simulated.
    pub kernel_fixes: Option<KernelFixes>,
    /// Tasks the edge service wants.
    pub edge_desired: usize,
    /// Until then (virtual ms), the replica service runs one task short.
    pub recovering_until: u64,
    /// Until then (virtual ms), ECS throttles every write.
    pub ecs_refused_until: u64,
    /// Installs begun while a task was still on the host (running, deactivating or
    /// stopping): the drain ended too early.
    pub installs_beside_live_tasks: u64,
    /// Per host: (drained at, active again at) in virtual ms.
    pub out_of_service: Vec<Vec<(u64, Option<u64>)>>,
    next_task: u64,
    /// Host index by EC2 id and by ARN.
    by_key: HashMap<String, usize>,
    /// Hosts out of service now (not INACTIVE), and how many per zone.
    out_now: usize,
    zones_out: HashMap<String, usize>,
    /// Hosts in service now.
    in_service_now: usize,
    /// Per host: counted in `out_now`.
    counted_out: Vec<bool>,
    /// Where the scheduler last placed a task (it looks for room from there on).
    placed_at: usize,
}

/// Where a host stood in the slot queue when it called ECS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InQueue {
    /// Not queued (holding a slot, or not asking for one).
    No,
    /// First in the queue: it keeps the shared cluster snapshot fresh.
    Head,
    /// Second: it checks that its services can move their tasks while the head takes its turn.
    Next,
    /// Behind the head: only waiting.
    Behind,
}

/// The shared world, locked for each operation.
pub type World = Arc<Mutex<WorldState>>;

impl WorldState {
    /// A cluster of `hosts` hosts in `zones` zones, `tasks` service tasks each, and a task
    /// of the edge service on each of the first `edge_hosts`.
    pub fn new(hosts: usize, tasks: usize, zones: usize, edge_hosts: usize) -> Self {
        let instances: Vec<SimInstance> = (0..hosts)
            .map(|i| SimInstance {
                id: format!("i-{i:05}"),
                arn: format!("arn:aws:ecs:sim:000000000000:container-instance/sim/{i:05}"),
                availability_zone: format!("sim-{}", (b'a' + (i % zones.max(1)) as u8) as char),
                status: "ACTIVE".into(),
                agent_up: true,
                drained_by: None,
                agent_version: "1.0.0".into(),
                draining_since: 0,
                slow_factor: 1,
                patched: false,
                kernel_week: true,
                dead: false,
                slow_recovery: false,
                reboot_pending: false,
                bad_agent: false,
                week: 0,
                running_kernel: 0,
                installed_kernel: 0,
                livepatch_version: 0,
            })
            .collect();
        let by_key = instances.iter().enumerate().flat_map(|(n, i)| [(i.id.clone(), n), (i.arn.clone(), n)]).collect();
        let mut world = Self {
            instances,
            tasks: vec![Vec::new(); hosts],
            reads: Vec::new(),
            writes: vec![0; hosts],
            store_ops: 0,
            peak_out: 0,
            lowest_in_service: hosts,
            most_zones_out: 0,
            unplaceable: 0,
            service_desired: hosts * tasks,
            kernel_fixes: None,
            edge_desired: edge_hosts.min(hosts),
            recovering_until: 0,
            ecs_refused_until: 0,
            installs_beside_live_tasks: 0,
            out_of_service: vec![Vec::new(); hosts],
            next_task: 0,
            by_key,
            out_now: 0,
            zones_out: HashMap::new(),
            in_service_now: hosts,
            counted_out: vec![false; hosts],
            placed_at: 0,
        };
        for host in 0..hosts {
            for _ in 0..tasks {
                world.start_task(host, true);
            }
            if host < edge_hosts {
                world.start_edge(host);
            }
            world.start_daemon(host);
        }
        world
    }

    fn next_arn(&mut self) -> String {
        self.next_task += 1;
        format!("arn:aws:ecs:sim:000000000000:task/sim/{}", self.next_task)
    }

    /// Starts a task on `host`.
    pub fn start_task(&mut self, host: usize, service: bool) {
        let arn = self.next_arn();
        self.tasks[host].push(SimTask { arn, service, daemon: false, edge: false, stopping_until: None });
    }

    /// Starts a task of the edge service on `host`.
    pub fn start_edge(&mut self, host: usize) {
        let arn = self.next_arn();
        self.tasks[host].push(SimTask { arn, service: true, daemon: false, edge: true, stopping_until: None });
    }

    /// Whether [`EDGE_PORT`] is reserved on `host` (by a task running or still stopping).
    pub fn edge_port_taken(&self, host: usize) -> bool {
        self.tasks[host].iter().any(|t| t.edge)
    }

    /// Starts the daemon service's task on `host` unless it runs one (the daemon scheduler
    /// places one on every ACTIVE instance).
    pub fn start_daemon(&mut self, host: usize) {
        if !self.tasks[host].iter().any(|t| t.daemon && t.stopping_until.is_none()) {
            let arn = self.next_arn();
            self.tasks[host].push(SimTask { arn, service: true, daemon: true, edge: false, stopping_until: None });
        }
    }

    /// Resources used on `host`, by running tasks and by stopped ones still shutting down.
    pub fn allocated(&self, host: usize) -> Capacity {
        self.tasks[host].iter().fold(Capacity::default(), |sum, t| sum.plus(t.size()))
    }

    /// Index of the host with EC2 id or ARN `key`.
    pub fn index(&self, key: &str) -> Option<usize> {
        self.by_key.get(key).copied()
    }

    /// Records a change of availability of `host`: updates the peaks and its out-of-service
    /// periods. INACTIVE instances (terminated) have left the cluster and do not count.
    pub fn availability_changed(&mut self, host: usize, now: u64) {
        let instance = &self.instances[host];
        let in_service = instance.status == "ACTIVE" && instance.agent_up;
        let out = instance.status != "INACTIVE" && !in_service;
        if out != self.counted_out[host] {
            self.counted_out[host] = out;
            let zone = self.zones_out.entry(instance.availability_zone.clone()).or_default();
            if out {
                self.out_now += 1;
                *zone += 1;
            } else {
                self.out_now -= 1;
                *zone -= 1;
            }
        }
        let periods = &mut self.out_of_service[host];
        let open = periods.last().is_some_and(|p| p.1.is_none());
        if !in_service && !open {
            periods.push((now, None));
            self.in_service_now -= 1;
        } else if in_service && open {
            periods.last_mut().expect("open period").1 = Some(now);
            self.in_service_now += 1;
        }
        self.peak_out = self.peak_out.max(self.out_now);
        self.most_zones_out = self.most_zones_out.max(self.zones_out.values().filter(|n| **n > 0).count());
        self.lowest_in_service = self.lowest_in_service.min(self.in_service_now);
    }

    /// One round of the service scheduler: replica tasks on a DRAINING instance are
    /// replaced `move_after` (times the host's slow factor) after the drain began, on an
    /// ACTIVE host with room (looking on from the last placement), and the old task lingers
    /// `deactivation` (the target group's deregistration delay) before it is gone; a task
    /// with nowhere to go stays and is counted. Daemon tasks stop last, once nothing else
    /// runs on the instance.
    pub fn schedule(&mut self, now: u64, move_after: Duration, deactivation: Duration) {
        let move_ms = u64::try_from(move_after.as_millis()).unwrap_or(u64::MAX);
        let linger_ms = u64::try_from(deactivation.as_millis()).unwrap_or(u64::MAX);
        let hosts = self.instances.len();
        for tasks in &mut self.tasks {
            tasks.retain(|t| t.stopping_until.is_none_or(|until| until > now));
        }
        // A host that never came back fails its EC2 status checks; its Auto Scaling group
        // terminates it and ECS marks its container instance INACTIVE.
        for host in 0..hosts {
            let i = &self.instances[host];
            if i.dead && i.status != "INACTIVE" && now >= i.draining_since + TERMINATED_AFTER_MS {
                self.terminate(host, now);
            }
        }
        for host in 0..hosts {
            let home = &self.instances[host];
            if home.status != "DRAINING" || now < home.draining_since + move_ms * u64::from(home.slow_factor) {
                continue;
            }
            for t in 0..self.tasks[host].len() {
                let task = &self.tasks[host][t];
                if !task.service || task.daemon || task.stopping_until.is_some() {
                    continue;
                }
                let edge = task.edge;
                // ECS places a task where its CPU, memory and host port are free.
                let has_room = |w: &Self, h: usize| {
                    let i = &w.instances[h];
                    h != host
                        && i.status == "ACTIVE"
                        && i.agent_up
                        && HOST_CAPACITY.minus(w.allocated(h)).covers(TASK_SIZE)
                        && !(edge && w.edge_port_taken(h))
                };
                match (0..hosts).map(|k| (self.placed_at + k) % hosts).find(|&h| has_room(self, h)) {
                    Some(h) => {
                        self.tasks[host][t].stopping_until = Some(now + linger_ms);
                        if edge {
                            self.start_edge(h);
                        } else {
                            self.start_task(h, true);
                        }
                        self.placed_at = h;
                    }
                    None => self.unplaceable += 1,
                }
            }
            if self.tasks[host].iter().all(|t| t.daemon) {
                for t in self.tasks[host].iter_mut().filter(|t| t.stopping_until.is_none()) {
                    t.stopping_until = Some(now + u64::try_from(STOP_TIMEOUT.as_millis()).unwrap_or(u64::MAX));
                }
            }
        }
    }

    /// Marks `host` INACTIVE (terminated): it leaves the count of hosts out.
    fn terminate(&mut self, host: usize, now: u64) {
        self.instances[host].status = "INACTIVE".into();
        self.availability_changed(host, now);
    }
}

/// The random choices of one simulation, from its seed.
pub struct Dice {
    rng: StdRng,
}

impl Dice {
    /// Dice for `seed`.
    pub fn new(seed: u64) -> Self {
        Self { rng: StdRng::seed_from_u64(seed) }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    /// A number in `0.0..1.0`.
    pub fn unit(&mut self) -> f64 {
        self.rng.random()
    }

    /// A seed for another generator.
    pub fn seed(&mut self) -> u64 {
        self.rng.random()
    }
}
