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

/// Resources of one simulated task.
pub const TASK_SIZE: Capacity = Capacity { cpu: 256, memory: 512 };

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
    /// Tasks the scheduler could not place anywhere (the capacity guard failed).
    pub unplaceable: u64,
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
            unplaceable: 0,
            out_of_service: vec![Vec::new(); hosts],
            next_task: 0,
        };
        for host in 0..hosts {
            for _ in 0..tasks {
                world.start_task(host, true);
            }
        }
        world
    }

    /// Starts a task on `host`.
    pub fn start_task(&mut self, host: usize, service: bool) {
        self.next_task += 1;
        self.tasks.push(SimTask {
            arn: format!("arn:aws:ecs:sim:000000000000:task/sim/{}", self.next_task),
            host,
            service,
        });
    }

    /// Resources used on `host`.
    pub fn allocated(&self, host: usize) -> Capacity {
        self.tasks.iter().filter(|t| t.host == host).fold(Capacity::default(), |sum, _| sum.plus(TASK_SIZE))
    }

    /// Index of the host with EC2 id or ARN `key`.
    pub fn index(&self, key: &str) -> Option<usize> {
        self.instances.iter().position(|i| i.id == key || i.arn == key)
    }

    /// Records a change of availability: updates the peak and the out-of-service periods.
    /// INACTIVE instances (terminated) have left the cluster and do not count.
    pub fn availability_changed(&mut self, now: u64) {
        let out =
            self.instances.iter().filter(|i| i.status != "INACTIVE" && (i.status != "ACTIVE" || !i.agent_up)).count();
        self.peak_out = self.peak_out.max(out);
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

    /// One round of the service scheduler: service tasks on a DRAINING instance leave
    /// `move_after` (times the host's slow factor) after the drain began, to the first
    /// ACTIVE host with room; a task with nowhere to go stays and is counted.
    pub fn schedule(&mut self, now: u64, move_after: Duration) {
        let move_ms = u64::try_from(move_after.as_millis()).unwrap_or(u64::MAX);
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
            let host = self.tasks[t].host;
            let home = &self.instances[host];
            if !self.tasks[t].service || home.status != "DRAINING" {
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
                Some(h) => self.tasks[t].host = h,
                None => self.unplaceable += 1,
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
