//! The simulated cluster: instances, tasks, a scheduler that moves service tasks off
//! DRAINING instances, and the measurements the simulation reports.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::ecs::Capacity;

/// Resources of one simulated host.
pub const HOST_CAPACITY: Capacity = Capacity { cpu: 2048, memory: 8192 };
/// A host that never comes back is terminated this long after its drain began.
const TERMINATED_AFTER_MS: u64 = 20 * 60 * 1000;

/// Resources of one simulated service task.
pub const TASK_SIZE: Capacity = Capacity { cpu: 256, memory: 512 };
/// Resources of the daemon task every host runs (a log or metrics agent): a whole task's
/// worth, so that what the capacity guard counts is exactly what the scheduler can place.
pub const DAEMON_SIZE: Capacity = Capacity { cpu: 256, memory: 512 };
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
}

/// A simulated task.
#[derive(Debug, Clone)]
pub struct SimTask {
    /// Its ARN.
    pub arn: String,
    /// Index of the host it runs on.
    pub host: usize,
    /// Started by a service (moved by the scheduler) or standalone.
    pub service: bool,
    /// A daemon-service task: one per instance, never moved, stopped last on a drain.
    pub daemon: bool,
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
    /// Every running task.
    pub tasks: Vec<SimTask>,
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
    /// Installs begun while a task was still on the host (running, deactivating or
    /// stopping): the drain ended too early.
    pub installs_beside_live_tasks: u64,
    /// Per host: (drained at, active again at) in virtual ms.
    pub out_of_service: Vec<Vec<(u64, Option<u64>)>>,
    next_task: u64,
}

/// Where a host stood in the slot queue when it called ECS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InQueue {
    /// Not queued (holding a slot, or not asking for one).
    No,
    /// First in the queue: it keeps the shared cluster snapshot fresh.
    Head,
    /// Behind the head: only waiting.
    Behind,
}

/// The shared world, locked for each operation.
pub type World = Arc<Mutex<WorldState>>;

impl WorldState {
    /// A cluster of `hosts` hosts in `zones` zones, `tasks` service tasks each.
    pub fn new(hosts: usize, tasks: usize, zones: usize) -> Self {
        let instances = (0..hosts)
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
            })
            .collect();
        let mut world = Self {
            instances,
            tasks: Vec::new(),
            reads: Vec::new(),
            writes: vec![0; hosts],
            store_ops: 0,
            peak_out: 0,
            lowest_in_service: hosts,
            most_zones_out: 0,
            unplaceable: 0,
            installs_beside_live_tasks: 0,
            out_of_service: vec![Vec::new(); hosts],
            next_task: 0,
        };
        for host in 0..hosts {
            for _ in 0..tasks {
                world.start_task(host, true);
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
        self.tasks.push(SimTask { arn, host, service, daemon: false, stopping_until: None });
    }

    /// Starts the daemon service's task on `host` unless it runs one (the daemon scheduler
    /// places one on every ACTIVE instance).
    pub fn start_daemon(&mut self, host: usize) {
        if !self.tasks.iter().any(|t| t.host == host && t.daemon && t.stopping_until.is_none()) {
            let arn = self.next_arn();
            self.tasks.push(SimTask { arn, host, service: true, daemon: true, stopping_until: None });
        }
    }

    /// Resources used on `host`, by running tasks and by stopped ones still shutting down.
    pub fn allocated(&self, host: usize) -> Capacity {
        self.tasks.iter().filter(|t| t.host == host).fold(Capacity::default(), |sum, t| sum.plus(t.size()))
    }

    /// Index of the host with EC2 id or ARN `key`.
    pub fn index(&self, key: &str) -> Option<usize> {
        self.instances.iter().position(|i| i.id == key || i.arn == key)
    }

    /// Records a change of availability: updates the peak and the out-of-service periods.
    /// INACTIVE instances (terminated) have left the cluster and do not count.
    pub fn availability_changed(&mut self, now: u64) {
        let out: Vec<&SimInstance> =
            self.instances.iter().filter(|i| i.status != "INACTIVE" && (i.status != "ACTIVE" || !i.agent_up)).collect();
        let mut zones: Vec<&str> = out.iter().map(|i| i.availability_zone.as_str()).collect();
        zones.sort_unstable();
        zones.dedup();
        let in_service = self.instances.iter().filter(|i| i.status == "ACTIVE" && i.agent_up).count();
        self.peak_out = self.peak_out.max(out.len());
        self.most_zones_out = self.most_zones_out.max(zones.len());
        self.lowest_in_service = self.lowest_in_service.min(in_service);
        for (host, instance) in self.instances.iter().enumerate() {
            let periods = &mut self.out_of_service[host];
            let open = periods.last().is_some_and(|p| p.1.is_none());
            let in_service = instance.status == "ACTIVE" && instance.agent_up;
            if !in_service && !open {
                periods.push((now, None));
            } else if in_service && open {
                periods.last_mut().expect("open period").1 = Some(now);
            }
        }
    }

    /// One round of the service scheduler: replica tasks on a DRAINING instance are
    /// replaced `move_after` (times the host's slow factor) after the drain began, on the
    /// first ACTIVE host with room, and the old task lingers `deactivation` (the target
    /// group's deregistration delay) before it is gone; a task with nowhere to go stays and
    /// is counted. Daemon tasks stop last, once nothing else runs on the instance.
    pub fn schedule(&mut self, now: u64, move_after: Duration, deactivation: Duration) {
        let move_ms = u64::try_from(move_after.as_millis()).unwrap_or(u64::MAX);
        let linger_ms = u64::try_from(deactivation.as_millis()).unwrap_or(u64::MAX);
        self.tasks.retain(|t| t.stopping_until.is_none_or(|until| until > now));
        // A host that never came back fails its EC2 status checks; its Auto Scaling group
        // terminates it and ECS marks its container instance INACTIVE.
        let mut terminated = false;
        for i in &mut self.instances {
            if i.dead && i.status != "INACTIVE" && now >= i.draining_since + TERMINATED_AFTER_MS {
                i.status = "INACTIVE".into();
                terminated = true;
            }
        }
        if terminated {
            self.availability_changed(now);
        }
        for t in 0..self.tasks.len() {
            let task = &self.tasks[t];
            let host = task.host;
            let home = &self.instances[host];
            if !task.service || task.daemon || task.stopping_until.is_some() || home.status != "DRAINING" {
                continue;
            }
            if now < home.draining_since + move_ms * u64::from(home.slow_factor) {
                continue;
            }
            let target = (0..self.instances.len()).find(|&h| {
                let i = &self.instances[h];
                h != host
                    && i.status == "ACTIVE"
                    && i.agent_up
                    && HOST_CAPACITY.minus(self.allocated(h)).covers(TASK_SIZE)
            });
            match target {
                Some(h) => {
                    self.tasks[t].stopping_until = Some(now + linger_ms);
                    self.start_task(h, true);
                }
                None => self.unplaceable += 1,
            }
        }
        for host in 0..self.instances.len() {
            let only_daemon_left = self.tasks.iter().filter(|t| t.host == host).all(|t| t.daemon);
            if self.instances[host].status == "DRAINING" && only_daemon_left {
                for t in self.tasks.iter_mut().filter(|t| t.host == host && t.stopping_until.is_none()) {
                    t.stopping_until = Some(now + u64::try_from(STOP_TIMEOUT.as_millis()).unwrap_or(u64::MAX));
                }
            }
        }
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
