//! The simulator's implementations of the cycle's side effects, over the shared world.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;

use super::clock::SimClock;
use super::store::MemoryStore;
use super::world::{EDGE_PORT, HOST_CAPACITY, InQueue, SimTask, World, WorldState, lease_key};
use crate::agent::{Agent, AgentMetadata, AgentTask};
use crate::clock::Clock;
use crate::coordination::store::items::Control;
use crate::ecs::{ContainerInstance, Ecs, HostPorts, Listed, Service, Task, TaskNeeds};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::lifecycle::{Leaving, Lifecycle, ScaleIn};
use crate::packages::{Cves, PackageManager, PackageUpdate, RebootNeed, RebootProbe, RebootingUpdater, Survey, Target};

/// The simulation's durations.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Downloading the updates.
    pub download: Duration,
    /// Installing them.
    pub install: Duration,
    /// From reboot request to the machine running again.
    pub boot: Duration,
    /// Starting the ECS agent.
    pub agent_start: Duration,
    /// A service task takes this long to leave a DRAINING host.
    pub task_move: Duration,
    /// A stopped service task lingers this long in DEACTIVATING and STOPPING (a target
    /// group's deregistration delay, tuned down from AWS's default of 300 s).
    pub deactivation: Duration,
    /// A crashed daemon is restarted after this long.
    pub restart: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            download: Duration::from_secs(30),
            install: Duration::from_secs(60),
            boot: Duration::from_secs(90),
            agent_start: Duration::from_secs(10),
            task_move: Duration::from_secs(45),
            deactivation: Duration::from_secs(120),
            restart: Duration::from_secs(5),
        }
    }
}

/// ECS as seen by host `host`; counts every call.
pub struct SimEcs {
    /// The world.
    pub world: World,
    /// The host making the calls.
    pub host: usize,
    /// The clock.
    pub clock: std::sync::Arc<SimClock>,
    /// The lease store (to tell whether this host is queued for a slot).
    pub store: std::sync::Arc<MemoryStore>,
}

impl SimEcs {
    /// Where this host stands in the slot queue (read without charge from the store).
    fn in_queue(&self) -> InQueue {
        let prefix = lease_key();
        let id = self.world.lock().expect("world").instances[self.host].id.clone();
        let Some(queued) = self.store.get(&format!("{prefix}/queued/{id}")) else {
            return InQueue::No;
        };
        let ticket = serde_json::from_str::<serde_json::Value>(&queued.body).ok().and_then(|v| v["ticket"].as_u64());
        let served =
            self.store.get(&prefix).and_then(|c| serde_json::from_str::<Control>(&c.body).ok()).map_or(0, |c| c.served);
        match ticket.map(|t| t.saturating_sub(served)) {
            Some(1) => InQueue::Head,
            Some(2) => InQueue::Next,
            _ => InQueue::Behind,
        }
    }

    /// Locks the world, counting `calls` reads of `operation`.
    fn read(&self, operation: &'static str, calls: usize) -> std::sync::MutexGuard<'_, WorldState> {
        let queued = self.in_queue();
        let mut w = self.world.lock().expect("world");
        for _ in 0..calls {
            w.reads.push((self.clock.elapsed_ms(), self.host, queued, operation));
        }
        w
    }

    fn view(w: &WorldState, index: usize) -> ContainerInstance {
        let i = &w.instances[index];
        // Counted by desired status, as ECS counts them: a stopping task is not.
        let running = w.tasks[index].iter().filter(|t| t.stopping_until.is_none()).count();
        ContainerInstance {
            arn: i.arn.clone(),
            ec2_instance_id: i.id.clone(),
            status: i.status.clone(),
            agent_connected: i.agent_up && !i.dead,
            running_tasks: i32::try_from(running).unwrap_or(i32::MAX),
            pending_tasks: 0,
            drained_by: i.drained_by.clone(),
            agent_version: Some(i.agent_version.clone()),
            registered_at: None,
            registered: HOST_CAPACITY,
            remaining: HOST_CAPACITY.minus(w.allocated(index)),
            availability_zone: Some(i.availability_zone.clone()),
            // The ports the agent reserves at registration, and those its tasks hold.
            reserved_ports: HostPorts {
                tcp: AGENT_PORTS.iter().copied().chain(Self::task_ports(w, index)).collect(),
                udp: BTreeSet::new(),
            },
            task_ports: HostPorts { tcp: Self::task_ports(w, index).collect(), udp: BTreeSet::new() },
            gpus: None,
        }
    }

    /// The static host ports the tasks on `host` hold (running or still stopping): the edge
    /// service's, and the daemon's (a metrics agent in host network mode), which stays.
    fn task_ports(w: &WorldState, host: usize) -> impl Iterator<Item = u16> {
        let daemon = w.tasks[host].iter().any(|t| t.daemon);
        w.edge_port_taken(host).then_some(EDGE_PORT).into_iter().chain(daemon.then_some(DAEMON_PORT))
    }

    /// A task on `host` as ECS describes it.
    fn task(w: &WorldState, host: usize, t: &SimTask) -> Task {
        let service = service_of(t);
        Task {
            arn: t.arn.clone(),
            started_by: t.service.then(|| "ecs-svc/sim".to_string()),
            group: t.service.then(|| format!("service:{service}")),
            last_status: t.last_status().into(),
            desired_status: if t.stopping_until.is_some() { "STOPPED" } else { "RUNNING" }.into(),
            reserved: t.size(),
            task_definition: format!("arn:aws:ecs:sim:000000000000:task-definition/{service}:1"),
            container_instance: Some(w.instances[host].arn.clone()),
        }
    }

    /// Changes instance `arn` with `change`, counting one ECS write.
    fn write(&self, arn: &str, change: impl FnOnce(&mut WorldState, usize, u64)) -> Result<()> {
        let now = self.clock.elapsed_ms();
        let mut w = self.world.lock().expect("world");
        w.writes[self.host] += 1;
        if now < w.ecs_refused_until {
            return Err(Error::Ecs {
                message: "ThrottlingException: Rate exceeded (simulated)".into(),
                transient: true,
            });
        }
        let index = w.index(arn).ok_or_else(|| missing(arn))?;
        change(&mut w, index, now);
        w.availability_changed(index, now);
        Ok(())
    }
}

/// A service slow to recover runs a task short this long after its host comes back.
const SLOW_RECOVERY_MS: u64 = 20 * 60 * 1000;

/// The operation name of the calls that take a cluster snapshot.
pub const SNAPSHOT_READ: &str = "cluster snapshot (List+Describe)";

/// The replica service whose tasks every simulated host runs.
const SERVICE: &str = "sim";
/// The daemon service: one task on every instance.
const DAEMON_SERVICE: &str = "sim-daemon";
/// The edge service: a task with a static host port on some hosts.
const EDGE_SERVICE: &str = "sim-edge";
/// The static host port of the daemon service's task (host network mode).
const DAEMON_PORT: u16 = 9100;
/// The ports the ECS agent reserves on every instance at registration (its defaults).
const AGENT_PORTS: [u16; 5] = [22, 2375, 2376, 51678, 51679];

/// The service a (service) task belongs to.
fn service_of(t: &SimTask) -> &'static str {
    if t.daemon {
        DAEMON_SERVICE
    } else if t.edge {
        EDGE_SERVICE
    } else {
        SERVICE
    }
}

fn missing(arn: &str) -> Error {
    Error::Ecs { message: format!("no container instance {arn}"), transient: false }
}

#[async_trait::async_trait]
impl Ecs for SimEcs {
    async fn describe(&self, arn: &str) -> Result<Option<ContainerInstance>> {
        let w = self.read("DescribeContainerInstances", 1);
        Ok(w.index(arn).map(|i| Self::view(&w, i)))
    }

    async fn instances_on(&self, ec2_instance_id: &str) -> Result<Vec<ContainerInstance>> {
        let w = self.read("ListContainerInstances+Describe", 2);
        Ok(w.index(ec2_instance_id).map(|i| Self::view(&w, i)).into_iter().collect())
    }

    async fn cluster_instances(&self, spacing: Duration) -> Result<Vec<ContainerInstance>> {
        // One list page and one describe call per 100 instances, as with the real API,
        // `spacing` apart.
        let calls = 2 * self.world.lock().expect("world").instances.len().div_ceil(100);
        for call in 0..calls {
            if call > 0 {
                tokio::time::sleep(spacing).await;
            }
            drop(self.read(SNAPSHOT_READ, 1));
        }
        let w = self.world.lock().expect("world");
        // Like ListContainerInstances without a status filter: ACTIVE and DRAINING only.
        Ok((0..w.instances.len()).filter(|&i| w.instances[i].status != "INACTIVE").map(|i| Self::view(&w, i)).collect())
    }

    async fn mark(&self, arn: &str, cycle_id: &str) -> Result<()> {
        self.write(arn, |w, i, _| w.instances[i].drained_by = Some(cycle_id.to_string()))
    }

    async fn unmark(&self, arn: &str) -> Result<()> {
        self.write(arn, |w, i, _| w.instances[i].drained_by = None)
    }

    async fn set_draining(&self, arn: &str) -> Result<()> {
        self.write(arn, |w, i, now| {
            w.instances[i].status = "DRAINING".into();
            w.instances[i].draining_since = now;
        })
    }

    async fn set_active(&self, arn: &str) -> Result<()> {
        self.write(arn, |w, i, now| {
            w.instances[i].status = "ACTIVE".into();
            w.start_daemon(i);
            if w.instances[i].slow_recovery {
                w.recovering_until = now + SLOW_RECOVERY_MS;
            }
        })
    }

    async fn tasks_on(&self, arn: &str, listed: Listed) -> Result<Vec<Task>> {
        let tasks: Vec<Task> = {
            let w = self.world.lock().expect("world");
            let index = w.index(arn).ok_or_else(|| missing(arn))?;
            let shown = |t: &&super::world::SimTask| listed == Listed::Every || t.stopping_until.is_some();
            w.tasks[index].iter().filter(shown).map(|t| Self::task(&w, index, t)).collect()
        };
        // A ListTasks call per desired status, and a DescribeTasks when there are tasks.
        let lists = if listed == Listed::Every { 2 } else { 1 };
        drop(self.read("ListTasks+DescribeTasks", lists + usize::from(!tasks.is_empty())));
        Ok(tasks)
    }

    async fn tasks(&self, task_arns: &[String]) -> Result<Vec<Task>> {
        let tasks = {
            let w = self.world.lock().expect("world");
            w.tasks[self.host]
                .iter()
                .filter(|t| task_arns.contains(&t.arn))
                .map(|t| Self::task(&w, self.host, t))
                .collect()
        };
        drop(self.read("DescribeTasks", task_arns.len().div_ceil(100)));
        Ok(tasks)
    }

    async fn services(&self, names: &[String]) -> Result<Vec<Service>> {
        let now = self.clock.elapsed_ms();
        let w = self.read("DescribeServices", names.len().div_ceil(10));
        let running = |daemon: bool, edge: bool| {
            w.tasks
                .iter()
                .flatten()
                .filter(|t| t.service && t.daemon == daemon && t.edge == edge && t.stopping_until.is_none())
                .count()
        };
        // Replicas: a service slow to recover runs one task short for a while after a host
        // comes back. Daemon: one task wanted on every ACTIVE instance.
        let short = usize::from(w.recovering_until > now);
        let counts = |name: &str| match name {
            DAEMON_SERVICE => (
                w.instances.iter().filter(|i| i.status == "ACTIVE" && i.agent_up && !i.dead).count(),
                running(true, false),
            ),
            EDGE_SERVICE => (w.edge_desired, running(false, true)),
            _ => (w.service_desired, running(false, false).saturating_sub(short)),
        };
        Ok(names
            .iter()
            .filter(|n| *n == SERVICE || *n == DAEMON_SERVICE || (*n == EDGE_SERVICE && w.edge_desired > 0))
            .map(|n| {
                let daemon = n == DAEMON_SERVICE;
                let (desired, running) = counts(n);
                Service {
                    name: n.clone(),
                    daemon,
                    minimum_healthy_percent: if daemon { 0 } else { 50 },
                    maximum_percent: if daemon { 100 } else { 200 },
                    desired_count: i32::try_from(desired).unwrap_or(i32::MAX),
                    running_count: i32::try_from(running).unwrap_or(i32::MAX),
                    deployments: 1,
                    distinct_instance: false,
                }
            })
            .collect())
    }

    async fn task_needs(&self, arn: &str) -> Result<TaskNeeds> {
        drop(self.read("DescribeTaskDefinition", 1));
        let port = match arn.rsplit('/').next() {
            Some(definition) if definition == format!("{EDGE_SERVICE}:1") => Some(EDGE_PORT),
            Some(definition) if definition == format!("{DAEMON_SERVICE}:1") => Some(DAEMON_PORT),
            _ => None,
        };
        Ok(TaskNeeds { ports: HostPorts { tcp: port.into_iter().collect(), udp: BTreeSet::new() }, gpus: 0 })
    }

    async fn service_instances(&self, name: &str) -> Result<BTreeSet<String>> {
        let w = self.read("ListTasks+DescribeTasks", 2);
        Ok((0..w.instances.len())
            .filter(|&h| w.tasks[h].iter().any(|t| t.service && t.stopping_until.is_none() && service_of(t) == name))
            .map(|h| w.instances[h].arn.clone())
            .collect())
    }

    async fn stop_task(&self, task_arn: &str, _: &str) -> Result<()> {
        let now = self.clock.elapsed_ms();
        let mut w = self.world.lock().expect("world");
        w.writes[self.host] += 1;
        for t in w.tasks.iter_mut().flatten().filter(|t| t.arn == task_arn) {
            t.stopping_until.get_or_insert(now);
        }
        Ok(())
    }

    async fn deregister(&self, _: &str) -> Result<()> {
        self.world.lock().expect("world").writes[self.host] += 1;
        Ok(())
    }
}

/// The ECS agent of host `host`.
pub struct SimAgent {
    /// The world.
    pub world: World,
    /// The host.
    pub host: usize,
}

#[async_trait::async_trait]
impl Agent for SimAgent {
    async fn tasks(&self) -> Result<Vec<AgentTask>> {
        let w = self.world.lock().expect("world");
        if !w.instances[self.host].agent_up {
            return Err(Error::Host("the simulated ECS agent is not running".into()));
        }
        // Removed from the world once STOPPED: every task still there has live containers.
        Ok(w.tasks[self.host]
            .iter()
            .map(|t| AgentTask { arn: t.arn.clone(), known_status: "RUNNING".into() })
            .collect())
    }

    async fn metadata(&self) -> Result<AgentMetadata> {
        let w = self.world.lock().expect("world");
        let i = &w.instances[self.host];
        if !i.agent_up {
            return Err(Error::Host("the simulated ECS agent is not running".into()));
        }
        Ok(AgentMetadata {
            cluster: "sim".into(),
            container_instance_arn: Some(i.arn.clone()),
            version: i.agent_version.clone(),
        })
    }
}

/// A watched CloudWatch alarm that fires from `from` to `to` (virtual time since the start).
pub struct SimAlarms {
    /// The clock.
    pub clock: std::sync::Arc<SimClock>,
    /// When it starts firing.
    pub from: Duration,
    /// When it stops.
    pub to: Duration,
}

#[async_trait::async_trait]
impl crate::alarms::Alarms for SimAlarms {
    async fn firing(&self) -> Result<Vec<String>> {
        let now = Duration::from_millis(self.clock.elapsed_ms());
        Ok(if (self.from..self.to).contains(&now) { vec!["sim-5xx-rate".into()] } else { Vec::new() })
    }
}

/// Simulated hosts have no hooks: every point passes.
pub struct SimHooks;

#[async_trait::async_trait]
impl crate::hooks::Hooks for SimHooks {
    async fn run(&self, _: crate::hooks::HookPoint, _: &crate::hooks::HookContext<'_>) -> Result<()> {
        Ok(())
    }
}

/// Simulated hosts are not in an Auto Scaling group and never leave.
pub struct SimLifecycle;

#[async_trait::async_trait]
impl Lifecycle for SimLifecycle {
    async fn leaving(&self) -> Result<Option<Leaving>> {
        Ok(None)
    }

    async fn scale_in(&self) -> Result<Option<ScaleIn>> {
        Ok(None)
    }

    async fn protect(&self, _: &str, _: bool) -> Result<()> {
        Ok(())
    }
}

/// What happens to a simulated machine from outside the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// The daemon asked for a reboot.
    Reboot,
    /// The daemon crashed (kill -9).
    Crash,
}

/// The machine of host `host`.
pub struct SimHost {
    /// The world.
    pub world: World,
    /// The host.
    pub host: usize,
    /// Its boot id.
    pub boot_id: std::sync::Arc<Mutex<String>>,
    /// Tells the host's runner to take the daemon down.
    pub power: mpsc::UnboundedSender<Power>,
    /// Durations.
    pub timings: Timings,
    /// The clock.
    pub clock: std::sync::Arc<SimClock>,
}

impl SimHost {
    async fn agent_comes_up(&self) {
        self.clock.sleep(self.timings.agent_start).await;
        let now = self.clock.elapsed_ms();
        let mut w = self.world.lock().expect("world");
        let instance = &mut w.instances[self.host];
        // The bad release installed: its agent never connects.
        if instance.patched && instance.bad_agent {
            return;
        }
        instance.agent_up = true;
        if instance.patched {
            instance.agent_version = "1.1.0".into();
        }
        w.availability_changed(self.host, now);
    }
}

#[async_trait::async_trait]
impl Host for SimHost {
    fn boot_id(&self) -> Result<String> {
        Ok(self.boot_id.lock().expect("boot id").clone())
    }

    async fn reboot(&self) -> Result<()> {
        let now = self.clock.elapsed_ms();
        {
            let mut w = self.world.lock().expect("world");
            w.instances[self.host].agent_up = false;
            w.instances[self.host].reboot_pending = false;
            super::kernels::rebooted(&mut w.instances[self.host]);
            w.availability_changed(self.host, now);
        }
        let _ = self.power.send(Power::Reboot);
        Ok(())
    }

    async fn start_agent(&self) -> Result<()> {
        self.agent_comes_up().await;
        Ok(())
    }

    async fn restart_agent(&self) -> Result<()> {
        self.world.lock().expect("world").instances[self.host].agent_up = false;
        self.agent_comes_up().await;
        Ok(())
    }

    async fn restart_runtime(&self) -> Result<()> {
        self.agent_comes_up().await;
        Ok(())
    }
}

/// The package manager of host `host`.
pub struct SimPackages {
    /// The world.
    pub world: World,
    /// The host.
    pub host: usize,
    /// Its install fails.
    pub fails: bool,
    /// Durations.
    pub timings: Timings,
    /// The clock.
    pub clock: std::sync::Arc<SimClock>,
}

impl SimPackages {
    fn update(name: &str, current: &str, available: &str) -> PackageUpdate {
        PackageUpdate {
            name: name.into(),
            current: Some(current.into()),
            available: available.into(),
            built: None,
            security: false,
            severity: None,
        }
    }
}

#[async_trait::async_trait]
impl PackageManager for SimPackages {
    fn name(&self) -> &'static str {
        "simulated"
    }

    async fn survey(&self) -> Result<Survey> {
        Ok(Survey { releases: None, updates: self.pending(None).await? })
    }

    /// This week's update: a kernel and the agent on kernel weeks, a userland library
    /// (installed in place) on the others.
    async fn pending(&self, _: Option<&str>) -> Result<Vec<PackageUpdate>> {
        let w = self.world.lock().expect("world");
        let instance = &w.instances[self.host];
        if let Some(fixes) = w.kernel_fixes {
            // The kernel and its live patches stay offered until installed, week after week.
            let weekly = match instance.kernel_week {
                true => Self::update("ecs-init", "1.0.0", "1.1.0"),
                false => Self::update("openssl-libs", "3.0.8-1", "3.0.8-2"),
            };
            return Ok(fixes.pending(instance).into_iter().chain((!instance.patched).then_some(weekly)).collect());
        }
        if instance.patched {
            return Ok(Vec::new());
        }
        Ok(if instance.bad_agent {
            vec![Self::update("ecs-init", "1.0.0", "1.1.0")]
        } else if instance.kernel_week {
            vec![Self::update("kernel", "6.1.1", "6.1.2"), Self::update("ecs-init", "1.0.0", "1.1.0")]
        } else {
            vec![Self::update("openssl-libs", "3.0.8-1", "3.0.8-2")]
        })
    }

    async fn kernel_built(&self, _: &str) -> Option<std::time::SystemTime> {
        let w = self.world.lock().expect("world");
        w.kernel_fixes.map(|f| f.built(&w.instances[self.host], self.clock.now()))
    }

    async fn advisory_cves(&self, _: Option<&str>, applied: bool) -> Result<Cves> {
        let w = self.world.lock().expect("world");
        Ok(w.kernel_fixes.map(|f| f.advisories(&w.instances[self.host], applied)).unwrap_or_default())
    }

    async fn download(&self, _: &Target) -> Result<()> {
        self.clock.sleep(self.timings.download).await;
        Ok(())
    }

    async fn install(&self, target: &Target) -> Result<()> {
        let in_place = !target.updates.iter().any(|u| u.name == "kernel");
        {
            let mut w = self.world.lock().expect("world");
            if !in_place && !w.tasks[self.host].is_empty() {
                w.installs_beside_live_tasks += 1;
            }
        }
        self.clock.sleep(self.timings.install).await;
        if self.fails {
            return Err(Error::Packages("`dnf -y upgrade` failed with exit code 1 (simulated)".into()));
        }
        let mut w = self.world.lock().expect("world");
        if let Some(fixes) = w.kernel_fixes {
            fixes.install(&mut w.instances[self.host], &target.names());
        }
        w.instances[self.host].patched = true;
        w.instances[self.host].reboot_pending |= !in_place;
        Ok(())
    }

    async fn reboot_probe(&self) -> Result<RebootProbe> {
        Ok(RebootProbe::NeedsRestarting)
    }

    async fn reboot_required(&self) -> Result<RebootNeed> {
        let needed = self.world.lock().expect("world").instances[self.host].reboot_pending;
        let reason = if needed { "kernel updated (simulated)" } else { "the newest kernel runs (simulated)" };
        Ok(RebootNeed { needed, reason: reason.into() })
    }

    async fn rebooting_updaters(&self) -> Result<Vec<RebootingUpdater>> {
        Ok(Vec::new())
    }

    async fn services_to_restart(&self) -> Vec<String> {
        Vec::new()
    }
}
