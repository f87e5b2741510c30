//! The ECS control plane: container-instance state, tasks, and the "drained by" mark.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{
    Attribute, ContainerInstanceField, ContainerInstanceStatus, DesiredStatus, NetworkMode, PlacementConstraintType,
    ResourceType, SchedulingStrategy, TransportProtocol,
};

use crate::error::{Error, Result};

/// Custom attribute that records which cycle drained an instance, so no other actor's
/// DRAINING is ever mistaken for ours (and ours is visible in the console).
pub const DRAINED_BY_ATTRIBUTE: &str = "ecs-patchd.drained-by";

/// `startedBy` prefix the ECS service scheduler puts on the tasks it places.
const SERVICE_STARTED_BY_PREFIX: &str = "ecs-svc/";

/// Task group prefix of a service's tasks (`service:NAME`).
const SERVICE_GROUP_PREFIX: &str = "service:";

/// DescribeServices accepts at most this many services per call.
const DESCRIBE_SERVICES_BATCH: usize = 10;

/// The ECS API accepts at most this many ARNs per Describe call.
const DESCRIBE_BATCH: usize = 100;

/// CPU units and MiB of memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Capacity {
    /// CPU units (1024 per vCPU).
    pub cpu: i64,
    /// Memory in MiB.
    pub memory: i64,
}

impl Capacity {
    /// Element-wise sum.
    pub fn plus(self, other: Capacity) -> Capacity {
        Capacity { cpu: self.cpu + other.cpu, memory: self.memory + other.memory }
    }

    /// Element-wise difference, never below zero.
    pub fn minus(self, other: Capacity) -> Capacity {
        Capacity { cpu: (self.cpu - other.cpu).max(0), memory: (self.memory - other.memory).max(0) }
    }

    /// True when both resources of `self` are at least those of `other`.
    pub fn covers(self, other: Capacity) -> bool {
        self.cpu >= other.cpu && self.memory >= other.memory
    }
}

/// Host ports reserved on an instance, or held by a task: TCP and UDP.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostPorts {
    /// TCP ports.
    pub tcp: BTreeSet<u16>,
    /// UDP ports.
    pub udp: BTreeSet<u16>,
}

impl HostPorts {
    /// True when neither protocol has a port.
    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty()
    }

    /// The first port of `wanted` already in `self`, as `8080/tcp`.
    pub fn clash(&self, wanted: &HostPorts) -> Option<String> {
        let tcp = wanted.tcp.intersection(&self.tcp).next().map(|p| format!("{p}/tcp"));
        tcp.or_else(|| wanted.udp.intersection(&self.udp).next().map(|p| format!("{p}/udp")))
    }

    /// Adds `other`'s ports to `self`.
    pub fn add(&mut self, other: &HostPorts) {
        self.tcp.extend(&other.tcp);
        self.udp.extend(&other.udp);
    }
}

/// GPUs of an instance as ECS reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gpus {
    /// Registered.
    pub registered: u32,
    /// Not assigned to a task.
    pub free: u32,
}

/// What a task needs of the instance it is placed on beyond CPU and memory, from its task
/// definition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskNeeds {
    /// Static host ports (bridge or host network mode).
    pub ports: HostPorts,
    /// Physical GPUs; `u32::MAX` for `ALL`.
    pub gpus: u32,
}

/// What the daemon needs to know about one container instance.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerInstance {
    /// Its ARN.
    pub arn: String,
    /// The EC2 instance it runs on.
    pub ec2_instance_id: String,
    /// ACTIVE, DRAINING, REGISTERING, ...
    pub status: String,
    /// Whether the agent is connected to ECS.
    pub agent_connected: bool,
    /// Tasks in RUNNING state.
    pub running_tasks: i32,
    /// Tasks in PENDING state.
    pub pending_tasks: i32,
    /// The cycle id in [`DRAINED_BY_ATTRIBUTE`], if set.
    pub drained_by: Option<String>,
    /// The agent version ECS knows.
    pub agent_version: Option<String>,
    /// When it registered.
    pub registered_at: Option<SystemTime>,
    /// Resources it offers.
    pub registered: Capacity,
    /// Resources not used by its tasks.
    pub remaining: Capacity,
    /// Its availability zone (the `ecs.availability-zone` attribute).
    pub availability_zone: Option<String>,
    /// Host ports reserved on it (by the agent and by its tasks).
    pub reserved_ports: HostPorts,
    /// Host ports its tasks hold: those reserved less those the agent registered.
    pub task_ports: HostPorts,
    /// Its GPUs, where ECS reports a `GPU` resource.
    pub gpus: Option<Gpus>,
}

impl ContainerInstance {
    /// True when the instance is DRAINING because of cycle `cycle_id`.
    pub fn is_drained_by(&self, cycle_id: &str) -> bool {
        self.status == "DRAINING" && self.drained_by.as_deref() == Some(cycle_id)
    }
}

/// A task placed on the instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Its ARN.
    pub arn: String,
    /// Who started it (`ecs-svc/...` for service tasks).
    pub started_by: Option<String>,
    /// Its task group: `service:NAME` for the tasks of service NAME.
    pub group: Option<String>,
    /// Where it is in its lifecycle: PENDING, RUNNING, DEACTIVATING, STOPPING, STOPPED, ...
    pub last_status: String,
    /// Where ECS wants it: RUNNING or STOPPED.
    pub desired_status: String,
    /// The CPU and memory it holds on the instance.
    pub reserved: Capacity,
    /// Its task definition's ARN.
    pub task_definition: String,
    /// The container instance it is placed on.
    pub container_instance: Option<String>,
}

impl Task {
    /// True for tasks a service scheduler will replace elsewhere when the instance drains.
    pub fn is_service_task(&self) -> bool {
        self.started_by.as_deref().is_some_and(|s| s.starts_with(SERVICE_STARTED_BY_PREFIX))
    }

    /// The service the task belongs to, from its group.
    pub fn service(&self) -> Option<&str> {
        self.group.as_deref().and_then(|g| g.strip_prefix(SERVICE_GROUP_PREFIX))
    }
}

/// What the cycle needs to know about one ECS service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// Daemon scheduling: one task per instance, stopped last on a drain, never moved.
    pub daemon: bool,
    /// `deploymentConfiguration.minimumHealthyPercent`.
    pub minimum_healthy_percent: i32,
    /// `deploymentConfiguration.maximumPercent`.
    pub maximum_percent: i32,
    /// `desiredCount`.
    pub desired_count: i32,
    /// `runningCount`.
    pub running_count: i32,
    /// Deployments under way or finished but not yet cleaned up (`deployments`): one when
    /// the service is steady.
    pub deployments: usize,
    /// A `distinctInstance` placement constraint: no two of its tasks on one instance.
    pub distinct_instance: bool,
}

impl Service {
    /// Why the service is not steady yet, if it is not: the AWS CLI's `services-stable`
    /// waiter waits for "length(deployments) == 1 && runningCount == desiredCount".
    pub fn unsteady(&self) -> Option<String> {
        if self.running_count < self.desired_count {
            Some(format!("{} runs {} of {} tasks", self.name, self.running_count, self.desired_count))
        } else if self.deployments > 1 {
            Some(format!("{} has {} deployments in progress", self.name, self.deployments))
        } else {
            None
        }
    }

    /// Why a drain cannot move this service's tasks, if it cannot.
    ///
    /// AWS (Draining Amazon ECS container instances): "If the minimum is 100%, the service
    /// scheduler can't remove existing tasks until the replacement tasks are considered
    /// healthy." and "If the maximum is 100%, then replacement tasks can't start until the
    /// draining tasks have stopped." With both, neither can happen first: the drain never
    /// ends. Daemon services have neither problem (their tasks are not replaced elsewhere).
    pub fn cannot_move(&self) -> Option<String> {
        (!self.daemon && self.minimum_healthy_percent >= 100 && self.maximum_percent <= 100).then(|| {
            format!(
                "service {} has minimumHealthyPercent {} and maximumPercent {}: ECS can neither stop its \
                 tasks before replacing them nor start replacements first, so a drain would never finish",
                self.name, self.minimum_healthy_percent, self.maximum_percent
            )
        })
    }
}

/// The ECS operations the cycle performs on one cluster.
#[async_trait::async_trait]
pub trait Ecs: Send + Sync {
    /// The container instance `arn`; `None` when it is no longer registered.
    async fn describe(&self, arn: &str) -> Result<Option<ContainerInstance>>;
    /// Every container instance registered from EC2 instance `ec2_instance_id`.
    async fn instances_on(&self, ec2_instance_id: &str) -> Result<Vec<ContainerInstance>>;
    /// Every ACTIVE or DRAINING container instance of the cluster, with at least `spacing`
    /// between two calls (a large cluster takes two calls per 100 instances).
    async fn cluster_instances(&self, spacing: Duration) -> Result<Vec<ContainerInstance>>;
    /// Marks the instance as drained by `cycle_id` (before it is set DRAINING).
    async fn mark(&self, arn: &str, cycle_id: &str) -> Result<()>;
    /// Removes the "drained by" mark (once it is ACTIVE again).
    async fn unmark(&self, arn: &str) -> Result<()>;
    /// Sets the instance DRAINING.
    async fn set_draining(&self, arn: &str) -> Result<()>;
    /// Sets the instance ACTIVE.
    async fn set_active(&self, arn: &str) -> Result<()>;
    /// The tasks on the instance that have not yet STOPPED, of either desired status or
    /// only of desired status STOPPED.
    async fn tasks_on(&self, arn: &str, listed: Listed) -> Result<Vec<Task>>;
    /// The tasks named that have not yet STOPPED (one DescribeTasks per 100).
    async fn tasks(&self, task_arns: &[String]) -> Result<Vec<Task>>;
    /// The services named (unknown names are left out).
    async fn services(&self, names: &[String]) -> Result<Vec<Service>>;
    /// What a task of task definition `arn` needs of its instance beyond CPU and memory.
    async fn task_needs(&self, arn: &str) -> Result<TaskNeeds>;
    /// The container instances that run tasks of service `name` desired RUNNING.
    async fn service_instances(&self, name: &str) -> Result<BTreeSet<String>>;
    /// Stops one task, giving `reason`.
    async fn stop_task(&self, task_arn: &str, reason: &str) -> Result<()>;
    /// Deregisters a container instance record (a stale one left by a lost agent state).
    async fn deregister(&self, arn: &str) -> Result<()>;
}

/// Which tasks of an instance [`Ecs::tasks_on`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// Desired RUNNING or STOPPED.
    Every,
    /// Desired STOPPED only (once ECS counts no task desired RUNNING: one ListTasks fewer).
    Stopping,
}

/// [`Ecs`] through the official SDK.
pub struct AwsEcs {
    client: aws_sdk_ecs::Client,
    cluster: String,
}

impl AwsEcs {
    /// An ECS client bound to `cluster`.
    pub fn new(config: &aws_config::SdkConfig, cluster: &str) -> Self {
        Self { client: aws_sdk_ecs::Client::new(config), cluster: cluster.to_string() }
    }

    async fn describe_many(&self, arns: &[String], spacing: Duration) -> Result<Vec<ContainerInstance>> {
        let mut found = Vec::new();
        for (n, batch) in arns.chunks(DESCRIBE_BATCH).enumerate() {
            if n > 0 {
                tokio::time::sleep(spacing).await;
            }
            let out = self
                .client
                .describe_container_instances()
                .cluster(&self.cluster)
                .set_container_instances(Some(batch.to_vec()))
                .include(ContainerInstanceField::ContainerInstanceHealth)
                .send()
                .await
                .map_err(|e| sdk_error("DescribeContainerInstances", e))?;
            found.extend(out.container_instances().iter().map(convert_instance));
        }
        Ok(found)
    }

    async fn list(&self, filter: Option<String>, spacing: Duration) -> Result<Vec<String>> {
        let mut arns = Vec::new();
        let mut pages =
            self.client.list_container_instances().cluster(&self.cluster).set_filter(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("ListContainerInstances", e))?;
            arns.extend(page.container_instance_arns().iter().cloned());
            if page.next_token().is_some() {
                tokio::time::sleep(spacing).await;
            }
        }
        Ok(arns)
    }

    async fn set_status(&self, arn: &str, status: ContainerInstanceStatus) -> Result<()> {
        let out = self
            .client
            .update_container_instances_state()
            .cluster(&self.cluster)
            .container_instances(arn)
            .status(status.clone())
            .send()
            .await
            .map_err(|e| sdk_error("UpdateContainerInstancesState", e))?;
        if let Some(failure) = out.failures().first() {
            return Err(Error::Ecs {
                message: format!(
                    "UpdateContainerInstancesState to {status} refused for {arn}: {}",
                    failure.reason().unwrap_or("no reason given")
                ),
                transient: false,
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Ecs for AwsEcs {
    async fn describe(&self, arn: &str) -> Result<Option<ContainerInstance>> {
        Ok(self.describe_many(&[arn.to_string()], Duration::ZERO).await?.into_iter().find(|i| i.arn == arn))
    }

    async fn instances_on(&self, ec2_instance_id: &str) -> Result<Vec<ContainerInstance>> {
        let arns = self.list(Some(format!("ec2InstanceId == {ec2_instance_id}")), Duration::ZERO).await?;
        // The filter is applied here as well: not every endpoint honours it.
        Ok(self
            .describe_many(&arns, Duration::ZERO)
            .await?
            .into_iter()
            .filter(|i| i.ec2_instance_id == ec2_instance_id)
            .collect())
    }

    async fn cluster_instances(&self, spacing: Duration) -> Result<Vec<ContainerInstance>> {
        let arns = self.list(None, spacing).await?;
        tokio::time::sleep(spacing).await;
        self.describe_many(&arns, spacing).await
    }

    async fn mark(&self, arn: &str, cycle_id: &str) -> Result<()> {
        let mark = Attribute::builder()
            .name(DRAINED_BY_ATTRIBUTE)
            .value(cycle_id)
            .target_id(arn)
            .build()
            .expect("name is set");
        self.client
            .put_attributes()
            .cluster(&self.cluster)
            .attributes(mark)
            .send()
            .await
            .map_err(|e| sdk_error("PutAttributes", e))?;
        Ok(())
    }

    async fn unmark(&self, arn: &str) -> Result<()> {
        // AWS: "For custom attributes, specify the attribute name and target ID, but don't
        // specify the value."
        let mark = Attribute::builder().name(DRAINED_BY_ATTRIBUTE).target_id(arn).build().expect("name is set");
        self.client
            .delete_attributes()
            .cluster(&self.cluster)
            .attributes(mark)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteAttributes", e))?;
        Ok(())
    }

    async fn set_draining(&self, arn: &str) -> Result<()> {
        self.set_status(arn, ContainerInstanceStatus::Draining).await
    }

    async fn set_active(&self, arn: &str) -> Result<()> {
        self.set_status(arn, ContainerInstanceStatus::Active).await
    }

    async fn tasks_on(&self, arn: &str, listed: Listed) -> Result<Vec<Task>> {
        // AWS: "runningTasksCount: The number of tasks on the container instance that have a
        // desired status (desiredStatus) of RUNNING", and ListTasks filters by desired status
        // too. A task being stopped leaves both at once, while it still spends the load
        // balancer's deregistration delay in DEACTIVATING and up to its stop timeout in
        // STOPPING, serving. So both desired statuses are listed and each task's lastStatus
        // decides: draining is complete when every task on the instance is STOPPED.
        let desired_statuses = match listed {
            Listed::Every => &[DesiredStatus::Running, DesiredStatus::Stopped][..],
            Listed::Stopping => &[DesiredStatus::Stopped][..],
        };
        let mut task_arns = Vec::new();
        for desired in desired_statuses.iter().cloned() {
            let mut pages = self
                .client
                .list_tasks()
                .cluster(&self.cluster)
                .container_instance(arn)
                .desired_status(desired)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| sdk_error("ListTasks", e))?;
                task_arns.extend(page.task_arns().iter().cloned());
            }
        }
        self.tasks(&task_arns).await
    }

    async fn tasks(&self, task_arns: &[String]) -> Result<Vec<Task>> {
        let mut tasks = Vec::new();
        for batch in task_arns.chunks(DESCRIBE_BATCH) {
            let out = self
                .client
                .describe_tasks()
                .cluster(&self.cluster)
                .set_tasks(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| sdk_error("DescribeTasks", e))?;
            tasks.extend(out.tasks().iter().map(convert_task).filter(|t| t.last_status != "STOPPED"));
        }
        Ok(tasks)
    }

    async fn services(&self, names: &[String]) -> Result<Vec<Service>> {
        let mut found = Vec::new();
        for batch in names.chunks(DESCRIBE_SERVICES_BATCH) {
            let out = self
                .client
                .describe_services()
                .cluster(&self.cluster)
                .set_services(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| sdk_error("DescribeServices", e))?;
            found.extend(out.services().iter().map(|s| {
                let deployment = s.deployment_configuration();
                Service {
                    name: s.service_name().unwrap_or_default().to_string(),
                    daemon: s.scheduling_strategy() == Some(&SchedulingStrategy::Daemon),
                    // The API's defaults when a service sets none: 100 and 200.
                    minimum_healthy_percent: deployment.and_then(|d| d.minimum_healthy_percent()).unwrap_or(100),
                    maximum_percent: deployment.and_then(|d| d.maximum_percent()).unwrap_or(200),
                    desired_count: s.desired_count(),
                    running_count: s.running_count(),
                    deployments: s.deployments().len(),
                    // AWS (PlacementConstraint): "Use distinctInstance to ensure that each
                    // task in a particular group is running on a different container instance."
                    distinct_instance: s
                        .placement_constraints()
                        .iter()
                        .any(|c| c.r#type() == Some(&PlacementConstraintType::DistinctInstance)),
                }
            }));
        }
        Ok(found)
    }

    async fn task_needs(&self, arn: &str) -> Result<TaskNeeds> {
        let out = self
            .client
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeTaskDefinition", e))?;
        Ok(out.task_definition().map(needs_of).unwrap_or_default())
    }

    async fn service_instances(&self, name: &str) -> Result<BTreeSet<String>> {
        // AWS (ListTasks): "Specifying a serviceName limits the results to tasks that belong
        // to that service." Placement constraints: "Amazon ECS looks at the desired status of
        // the tasks", so tasks desired RUNNING count, wherever their lifecycle is.
        let mut task_arns = Vec::new();
        let mut pages = self
            .client
            .list_tasks()
            .cluster(&self.cluster)
            .service_name(name)
            .desired_status(DesiredStatus::Running)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            task_arns.extend(page.map_err(|e| sdk_error("ListTasks", e))?.task_arns().iter().cloned());
        }
        let group = format!("{SERVICE_GROUP_PREFIX}{name}");
        Ok(self
            .tasks(&task_arns)
            .await?
            .into_iter()
            // The filter is applied here as well: not every endpoint honours it.
            .filter(|t| t.group.as_deref() == Some(group.as_str()))
            .filter_map(|t| t.container_instance)
            .collect())
    }

    async fn stop_task(&self, task_arn: &str, reason: &str) -> Result<()> {
        self.client
            .stop_task()
            .cluster(&self.cluster)
            .task(task_arn)
            .reason(reason)
            .send()
            .await
            .map_err(|e| sdk_error("StopTask", e))?;
        Ok(())
    }

    async fn deregister(&self, arn: &str) -> Result<()> {
        self.client
            .deregister_container_instance()
            .cluster(&self.cluster)
            .container_instance(arn)
            // AWS: "If you have tasks running on the container instance when you deregister it
            // with the force option, these tasks remain running until you terminate the
            // instance or the tasks stop through some other means". The record is stale (the
            // agent registered anew after losing its state): ECS may still count tasks on it.
            .force(true)
            .send()
            .await
            .map_err(|e| sdk_error("DeregisterContainerInstance", e))?;
        Ok(())
    }
}

fn convert_instance(ci: &aws_sdk_ecs::types::ContainerInstance) -> ContainerInstance {
    ContainerInstance {
        arn: ci.container_instance_arn().unwrap_or_default().to_string(),
        ec2_instance_id: ci.ec2_instance_id().unwrap_or_default().to_string(),
        status: ci.status().unwrap_or_default().to_string(),
        agent_connected: ci.agent_connected(),
        running_tasks: ci.running_tasks_count(),
        pending_tasks: ci.pending_tasks_count(),
        drained_by: ci
            .attributes()
            .iter()
            .find(|a| a.name() == DRAINED_BY_ATTRIBUTE)
            .and_then(|a| a.value().map(str::to_string)),
        agent_version: ci.version_info().and_then(|v| v.agent_version().map(str::to_string)),
        registered_at: ci
            .registered_at()
            .and_then(|t| u64::try_from(t.secs()).ok().map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))),
        registered: capacity(ci.registered_resources()),
        remaining: capacity(ci.remaining_resources()),
        availability_zone: ci
            .attributes()
            .iter()
            .find(|a| a.name() == "ecs.availability-zone")
            .and_then(|a| a.value().map(str::to_string)),
        reserved_ports: reserved_ports(ci.remaining_resources()),
        task_ports: {
            let (reserved, agent) =
                (reserved_ports(ci.remaining_resources()), reserved_ports(ci.registered_resources()));
            HostPorts {
                tcp: reserved.tcp.difference(&agent.tcp).copied().collect(),
                udp: reserved.udp.difference(&agent.udp).copied().collect(),
            }
        },
        gpus: gpus(ci.registered_resources())
            .zip(gpus(ci.remaining_resources()))
            .map(|(registered, free)| Gpus { registered, free: free.min(registered) }),
    }
}

/// The ports of `resources` (registered: the agent's own; remaining: also its tasks').
///
/// AWS (ContainerInstance, remainingResources): "For port resource types, this parameter
/// describes the ports that were reserved by the Amazon ECS container agent (at instance
/// registration time) and any task containers that have reserved port mappings on the host
/// (with the host or bridge network mode). Any port that's not specified here is available
/// for new tasks." The agent registers them as `PORTS` and `PORTS_UDP`.
fn reserved_ports(resources: &[aws_sdk_ecs::types::Resource]) -> HostPorts {
    let set = |name: &str| -> BTreeSet<u16> {
        resources
            .iter()
            .filter(|r| r.name() == Some(name))
            .flat_map(|r| r.string_set_value())
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    };
    HostPorts { tcp: set("PORTS"), udp: set("PORTS_UDP") }
}

/// The instance's GPUs in `resources`, where ECS lists a `GPU` resource: a set of GPU ids
/// (as the agent keeps them) or a count.
fn gpus(resources: &[aws_sdk_ecs::types::Resource]) -> Option<u32> {
    let gpu = resources.iter().find(|r| r.name() == Some("GPU"))?;
    let count = if gpu.string_set_value().is_empty() {
        u32::try_from(gpu.integer_value()).unwrap_or(0)
    } else {
        u32::try_from(gpu.string_set_value().len()).unwrap_or(u32::MAX)
    };
    Some(count)
}

/// What a task of `definition` needs of its instance beyond CPU and memory.
///
/// AWS (PortMapping): "you can omit the hostPort (or set it to 0) while specifying a
/// containerPort and your container automatically receives a port in the ephemeral port
/// range" (no reservation to clash with); with the host network mode "host ports must either
/// be undefined or match the container port"; awsvpc tasks map ports to their own network
/// interface, not to the host. ResourceRequirement: "When the type is GPU, the value is the
/// number of physical GPUs the Amazon ECS container agent reserves for the container. [...]
/// You can also specify ALL".
fn needs_of(definition: &aws_sdk_ecs::types::TaskDefinition) -> TaskNeeds {
    let mode = definition.network_mode().cloned().unwrap_or(NetworkMode::Bridge);
    let mut needs = TaskNeeds::default();
    for container in definition.container_definitions() {
        for mapping in container.port_mappings() {
            let port = match mode {
                NetworkMode::Host => mapping.host_port().filter(|p| *p > 0).or(mapping.container_port()),
                NetworkMode::Bridge => mapping.host_port().filter(|p| *p > 0),
                _ => None,
            };
            let Some(port) = port.and_then(|p| u16::try_from(p).ok()) else { continue };
            match mapping.protocol() {
                Some(TransportProtocol::Udp) => needs.ports.udp.insert(port),
                _ => needs.ports.tcp.insert(port),
            };
        }
        for requirement in container.resource_requirements() {
            if requirement.r#type() == &ResourceType::Gpu {
                let value = requirement.value().trim();
                let count = if value.eq_ignore_ascii_case("ALL") { u32::MAX } else { value.parse().unwrap_or(0) };
                needs.gpus = needs.gpus.saturating_add(count);
            }
        }
    }
    needs
}

fn capacity(resources: &[aws_sdk_ecs::types::Resource]) -> Capacity {
    let amount =
        |name: &str| resources.iter().find(|r| r.name() == Some(name)).map_or(0, |r| i64::from(r.integer_value()));
    Capacity { cpu: amount("CPU"), memory: amount("MEMORY") }
}

fn convert_task(t: &aws_sdk_ecs::types::Task) -> Task {
    let number = |v: Option<&str>| v.and_then(|v| v.trim().parse::<i64>().ok());
    // The task-level size where the task definition sets one, else its containers' sizes
    // (memory: the hard limit, or the soft reservation when only that is set).
    let containers = t.containers();
    let cpu = number(t.cpu()).unwrap_or_else(|| containers.iter().filter_map(|c| number(c.cpu())).sum());
    let memory = number(t.memory()).unwrap_or_else(|| {
        containers.iter().filter_map(|c| number(c.memory()).or_else(|| number(c.memory_reservation()))).sum()
    });
    Task {
        arn: t.task_arn().unwrap_or_default().to_string(),
        started_by: t.started_by().map(str::to_string),
        group: t.group().map(str::to_string),
        last_status: t.last_status().unwrap_or_default().to_string(),
        desired_status: t.desired_status().unwrap_or_default().to_string(),
        reserved: Capacity { cpu, memory },
        task_definition: t.task_definition_arn().unwrap_or_default().to_string(),
        container_instance: t.container_instance_arn().map(str::to_string),
    }
}

/// Turns an SDK failure into an [`Error::Ecs`] that says which call failed and why (or an
/// [`Error::Credentials`] when the credentials are the problem).
fn sdk_error<E>(operation: &str, err: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    crate::aws::error(&format!("ECS {operation}"), &err, |failure| Error::Ecs {
        message: format!("{operation} failed: {}", failure.reason),
        transient: failure.transient,
    })
}
