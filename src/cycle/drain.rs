//! Step 5, [`State::Draining`]: still inside the window and with the pre-drain hooks
//! agreeing, protects the instance from scale-in, marks it as drained by this cycle, sets it
//! DRAINING, and waits until every task on it has STOPPED.
//!
//! Journal: entered with the slot held, before the mark; the mark (the "drained by"
//! attribute) is written before DRAINING, so that a drain resumed after a crash knows the
//! instance as its own and only waits.
//!
//! Failure: back through [`State::Reactivating`], which sets ACTIVE only what this cycle
//! drained; an instance drained by someone else is not ours, and the slot is given back.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tracing::{info, warn};

use super::checks::poll_delays;
use super::machine::Machine;
use super::messages::{fmt, not_ours};
use super::{Cycle, State};
use crate::config::StandalonePolicy;
use crate::coordination::Grant;
use crate::coordination::placement::{self, Need};
use crate::ecs::{Capacity, HostPorts, Listed, Service, Task, TaskNeeds};
use crate::error::{Error, Result};
use crate::fault;
use crate::hooks::HookPoint;
use crate::lifecycle::{self, ScaleIn};
use crate::plan::Plan;
use crate::report::Event;

/// A services check this recent stands at the drain (it was made while the slot was taken).
const SERVICES_CHECK_STANDS: Duration = Duration::from_secs(120);

/// What a drain moves: the services whose tasks it stops, and what stays on the host.
#[derive(Debug, Default)]
pub(super) struct Moving {
    /// Daemon tasks: they stop last and start again here; no peer needs room for them.
    pub(super) stays: Capacity,
    /// The services with tasks on the host.
    pub(super) services: Vec<String>,
    /// The tasks that need more than CPU and memory of the peer they go to.
    pub(super) needs: Vec<Need>,
    /// The host ports the instance's tasks held at the check, as ECS shows them.
    pub(super) ports: HostPorts,
}

impl Machine<'_> {
    /// Marks and drains the instance (or, resumed, finds it drained by this cycle) and waits
    /// until its tasks have stopped.
    pub(super) async fn drain(
        &self,
        cycle: &Cycle,
        plan: Plan,
        arn: String,
        mut lease: Grant,
        scale_in: Option<ScaleIn>,
    ) -> Result<State> {
        let instance = self.registered(&arn).await?;
        if instance.is_drained_by(&cycle.id) {
            info!("the instance is already DRAINING for this cycle; waiting");
        } else if instance.status == "ACTIVE" {
            // A task that came here since the slot was granted (a holder's, moved here)
            // may hold a host port no peer has free: its drain would never end.
            if let Some(port) =
                lease.ports.as_ref().and_then(|seen| placement::unforeseen_port(seen, &instance.task_ports))
            {
                return Err(Error::Deferred(format!(
                    "a task that came to this host after its turn was checked holds host port {port}: the \
                     instance is not drained, and the next run checks where its tasks can go"
                )));
            }
            if let Some(leaving) = lifecycle::leaving_or_warn(self.ports.lifecycle.as_ref()).await {
                return Err(Error::Deferred(format!("{}: the instance is not drained", leaving.reason)));
            }
            let checked = *self.services_checked.lock().expect("services check");
            let stands = checked.is_some_and(|at| at + SERVICES_CHECK_STANDS >= self.ports.clock.now());
            if !stands {
                lease.services = self.services_can_move(&arn).await?.services;
            }
            self.inside_window("the drain does not start")?;
            // A hook that says no (or fails) stops the cycle before anything changed.
            self.run_hooks(HookPoint::PreDrain, cycle, &arn)
                .await
                .map_err(|e| Error::Deferred(format!("the instance is not drained: {e}")))?;
            // A drained, task-less instance is the first one Auto Scaling would pick to scale
            // in: protect it until it is set ACTIVE again (Reactivating restores what was there).
            if let Some(group) = scale_in.as_ref().filter(|s| !s.was_protected) {
                lifecycle::protect_or_warn(self.ports.lifecycle.as_ref(), &group.group, true).await;
            }
            self.ensure_lease()?;
            // The mark first: an instance DRAINING without it would be someone else's.
            self.ports.ecs.mark(&arn, &cycle.id).await?;
            fault::point("draining:marked");
            self.ports.ecs.set_draining(&arn).await?;
            // The drain's limits count from when ECS took the drain, not from the step's
            // entry: tries it refused before (throttled) spent none of the tasks' time.
            self.note_entered();
            self.ports.reporter.event(cycle, Event::DrainStarted, &plan.why);
        } else {
            return Err(not_ours(&instance));
        }
        self.wait_until_drained(cycle, &arn).await?;
        Ok(State::Installing { plan, arn, lease, scale_in })
    }

    /// Fails (deferred: nothing is changed) when a service with tasks on this host cannot
    /// move them; otherwise answers what stays on the host through a drain (daemon tasks),
    /// which peers need no room for, and the services whose tasks the drain stops.
    ///
    /// The tasks are those the host's agent runs, described by ECS (one call; their service
    /// is their group); without the agent, ECS lists them (three calls). A task placed a
    /// moment ago and not yet known to the agent is not checked here: if its service cannot
    /// move it, the drain times out and the roll pauses.
    pub(super) async fn services_can_move(&self, arn: &str) -> Result<Moving> {
        let tasks = match self.running_locally().await {
            Ok(local) if local.is_empty() => Vec::new(),
            Ok(local) => self.ports.ecs.tasks(&local).await?,
            Err(e) => {
                info!("listing the host's tasks from ECS: the agent cannot ({e})");
                self.ports.ecs.tasks_on(arn, Listed::Every).await?
            }
        };
        // The ports the instance's tasks hold now, as ECS shows them, compared at the drain
        // with the same reading: one that appears meanwhile is a task that came since.
        let ports = self.ports.ecs.describe(arn).await?.map(|i| i.task_ports).unwrap_or_default();
        let definitions = self.definitions(&tasks).await?;
        let mut names: Vec<String> = tasks.iter().filter_map(|t| t.service().map(str::to_string)).collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Ok(Moving { ports, ..Moving::default() });
        }
        let services = self.ports.ecs.services(&names).await?;
        if let Some(why) = services.iter().find_map(|s| s.cannot_move()) {
            return Err(Error::Deferred(why));
        }
        *self.services_checked.lock().expect("services check") = Some(self.ports.clock.now());
        let daemon = |t: &&Task| t.service().is_some_and(|name| services.iter().any(|s| s.name == name && s.daemon));
        let moved: Vec<&Task> = tasks.iter().filter(|t| !daemon(t) && t.desired_status == "RUNNING").collect();
        Ok(Moving {
            stays: tasks.iter().filter(daemon).fold(Capacity::default(), |sum, t| sum.plus(t.reserved)),
            services: names,
            needs: self.needs(&moved, &services, &definitions).await?,
            ports,
        })
    }

    /// What each task definition of `tasks` needs of an instance beyond CPU and memory (one
    /// DescribeTaskDefinition each). One ECS will not describe (a policy without
    /// `ecs:DescribeTaskDefinition`) is counted by CPU and memory alone.
    async fn definitions<'t>(&self, tasks: &'t [Task]) -> Result<HashMap<&'t str, TaskNeeds>> {
        let mut definitions = HashMap::new();
        for task in tasks {
            if definitions.contains_key(task.task_definition.as_str()) {
                continue;
            }
            let found = match self.ports.ecs.task_needs(&task.task_definition).await {
                Ok(found) => found,
                Err(e @ (Error::Credentials { .. } | Error::Ecs { transient: true, .. })) => return Err(e),
                Err(e) => {
                    warn!("host ports and GPUs of {} are not checked: {e}", task.task_definition);
                    TaskNeeds::default()
                }
            };
            definitions.insert(task.task_definition.as_str(), found);
        }
        Ok(definitions)
    }

    /// What the service tasks in `moved` need of a peer beyond CPU and memory: static host
    /// ports and GPUs from their `definitions`, and the instances that already run a task of
    /// a `distinctInstance` service (a ListTasks and a DescribeTasks per 100 of its tasks).
    async fn needs(
        &self,
        moved: &[&Task],
        services: &[Service],
        definitions: &HashMap<&str, TaskNeeds>,
    ) -> Result<Vec<Need>> {
        let mut distinct: HashMap<&str, BTreeSet<String>> = HashMap::new();
        let mut needs = Vec::new();
        for task in moved {
            let Some(service) = task.service().and_then(|name| services.iter().find(|s| s.name == name)) else {
                continue;
            };
            if service.distinct_instance && !distinct.contains_key(service.name.as_str()) {
                distinct.insert(&service.name, self.ports.ecs.service_instances(&service.name).await?);
            }
            let definition = &definitions[task.task_definition.as_str()];
            let need = Need {
                task: task.task_definition.rsplit('/').next().unwrap_or_default().to_string(),
                service: service.name.clone(),
                size: task.reserved,
                ports: definition.ports.clone(),
                gpus: definition.gpus,
                distinct_from: distinct.get(service.name.as_str()).cloned(),
            };
            if !need.is_plain() {
                needs.push(need);
            }
        }
        Ok(needs)
    }

    /// Polls until nothing runs on `arn`, within `drain.timeout`, treating standalone tasks as
    /// `drain.standalone_tasks` says.
    async fn wait_until_drained(&self, cycle: &Cycle, arn: &str) -> Result<()> {
        let drain = &self.settings.drain;
        let mut said = String::new();
        let deadline = self.deadline(cycle, drain.timeout);
        let grace = self.deadline(cycle, drain.standalone_grace);
        let mut delays = poll_delays(drain.poll_initial, drain.poll_max);
        let mut stopped = BTreeSet::new();
        loop {
            let classify = grace.passed() && drain.standalone_tasks != StandalonePolicy::Wait;
            // A spot notice gives two minutes: a host that is leaving stops draining at once
            // and gives its slot back (Reactivating leaves it as it is).
            if let Some(leaving) = lifecycle::leaving_or_warn(self.ports.lifecycle.as_ref()).await {
                return Err(Error::Deferred(format!("{}: the drain is abandoned", leaving.reason)));
            }
            let left = match self.tasks_left(arn, classify).await {
                Ok(left) if left.is_empty() => return Ok(()),
                Ok(left) => left,
                Err(e @ Error::Credentials { .. }) => return Err(e),
                Err(e) if !deadline.passed() => {
                    warn!("cannot read the drain's progress (will try again): {e}");
                    TasksLeft::default()
                }
                Err(e) => {
                    return Err(Error::Timeout(format!("the drain did not finish within {}: {e}", fmt(drain.timeout))));
                }
            };
            let standalone: Vec<&Task> =
                left.tasks.iter().filter(|t| !t.is_service_task() && t.desired_status == "RUNNING").collect();
            if !standalone.is_empty() {
                match drain.standalone_tasks {
                    StandalonePolicy::Wait => {}
                    StandalonePolicy::Stop => {
                        for task in &standalone {
                            if stopped.insert(task.arn.clone()) {
                                info!(task = %task.arn, "stopping a standalone task after the grace period");
                                self.ports.ecs.stop_task(&task.arn, "ecs-patchd: host is being patched").await?;
                            }
                        }
                    }
                    StandalonePolicy::Abort => {
                        return Err(Error::Timeout(format!(
                            "{} standalone task(s) still run after {} and drain.standalone_tasks is \"abort\": {}",
                            standalone.len(),
                            fmt(drain.standalone_grace),
                            standalone.iter().map(|t| t.arn.as_str()).collect::<Vec<_>>().join(", ")
                        )));
                    }
                }
            }
            let progress = left.describe();
            if progress != said {
                self.ports.reporter.waiting(cycle, &progress);
                said = progress;
            }
            if deadline.passed() {
                return Err(Error::Timeout(format!(
                    "the drain did not finish within {}: {}",
                    fmt(drain.timeout),
                    left.describe()
                )));
            }
            let wait = self.ports.clock.jitter(delays.next().unwrap_or(drain.poll_max));
            self.ports.clock.sleep(wait.min(deadline.left())).await;
        }
    }

    /// What still runs on `arn`. While the host's own agent still runs a task, the drain is
    /// not over and ECS is not asked (no API call: a fleet draining a hundred hosts at once
    /// would otherwise read ECS a few times a second), unless standalone tasks must be told
    /// apart. Once the agent runs none: while ECS counts tasks whose desired status is
    /// RUNNING, one describe per poll (tasks placed but not yet started by the agent). Once
    /// it counts none, the agent is asked again, then ECS confirms that every task on the
    /// instance is STOPPED.
    ///
    /// AWS: "A container instance has completed draining when all tasks running on the
    /// instance transition to a STOPPED state" (Draining Amazon ECS container instances);
    /// "runningTasksCount: The number of tasks on the container instance that have a desired
    /// status (desiredStatus) of RUNNING" (ContainerInstance). A task in DEACTIVATING (load
    /// balancer deregistration) or STOPPING still serves. Both views are needed: ECS covers
    /// tasks placed but not yet started by the agent; the agent's `KnownStatus` is the
    /// host's own truth about its containers, which ECS learns a moment later.
    async fn tasks_left(&self, arn: &str, classify: bool) -> Result<TasksLeft> {
        // The agent unreachable here is no answer: ECS is asked as before.
        if !classify
            && let Ok(local) = self.running_locally().await
            && !local.is_empty()
        {
            return Ok(TasksLeft { local, ..TasksLeft::default() });
        }
        let instance = self.registered(arn).await?;
        let counted = instance.running_tasks + instance.pending_tasks;
        if counted > 0 && !classify {
            return Ok(TasksLeft { counted, ..TasksLeft::default() });
        }
        if counted == 0 {
            let local = self.running_locally().await.map_err(|e| {
                Error::Host(format!("the ECS agent cannot say whether every task on the host has stopped: {e}"))
            })?;
            if !local.is_empty() {
                return Ok(TasksLeft { local, ..TasksLeft::default() });
            }
        }
        // With none desired RUNNING (counted), only the stopped ones can still be shutting down.
        let listed = if counted == 0 { Listed::Stopping } else { Listed::Every };
        let tasks = self.ports.ecs.tasks_on(arn, listed).await?;
        Ok(TasksLeft { tasks, counted, ..TasksLeft::default() })
    }

    /// The tasks the host's agent has not seen stop.
    async fn running_locally(&self) -> Result<Vec<String>> {
        let on_host = self.ports.agent.tasks().await?;
        Ok(on_host.into_iter().filter(|t| !t.is_stopped()).map(|t| t.arn).collect())
    }
}

/// What still runs on an instance being drained.
#[derive(Debug, Default)]
struct TasksLeft {
    /// Tasks ECS shows not yet STOPPED.
    tasks: Vec<Task>,
    /// Tasks ECS counts with a desired status of RUNNING (or PENDING).
    counted: i32,
    /// Tasks whose containers the agent has not yet seen stop.
    local: Vec<String>,
}

impl TasksLeft {
    fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.counted == 0 && self.local.is_empty()
    }

    /// One line for a message: how many tasks, and in which states.
    fn describe(&self) -> String {
        if !self.local.is_empty() {
            let first: Vec<String> = self.local.iter().take(3).map(|t| crate::foreign::shown(t)).collect();
            let more = if self.local.len() > 3 { ", …" } else { "" };
            return format!("the ECS agent still runs {} task(s): {}{more}", self.local.len(), first.join(", "));
        }
        let mut states: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for t in &self.tasks {
            *states.entry(t.last_status.as_str()).or_default() += 1;
        }
        let count = self.tasks.len().max(usize::try_from(self.counted).unwrap_or(0));
        let detail: Vec<String> = states.iter().map(|(state, n)| format!("{n} {state}")).collect();
        if detail.is_empty() {
            format!("{count} task(s) still running or pending")
        } else {
            format!("{count} task(s) not yet stopped ({})", detail.join(", "))
        }
    }
}
