//! The ECS control plane: container-instance state, tasks, and the "drained by" mark.

use std::time::{Duration, SystemTime};

use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{Attribute, ContainerInstanceField, ContainerInstanceStatus, DesiredStatus};

use crate::error::{Error, Result};

/// Custom attribute that records which cycle drained an instance, so no other actor's
/// DRAINING is ever mistaken for ours (and ours is visible in the console).
pub const DRAINED_BY_ATTRIBUTE: &str = "ecs-patchd.drained-by";

/// `startedBy` prefix the ECS service scheduler puts on the tasks it places.
const SERVICE_STARTED_BY_PREFIX: &str = "ecs-svc/";

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

    /// Element-wise difference.
    pub fn minus(self, other: Capacity) -> Capacity {
        Capacity { cpu: self.cpu - other.cpu, memory: self.memory - other.memory }
    }

    /// True when both resources of `self` are at least those of `other`.
    pub fn covers(self, other: Capacity) -> bool {
        self.cpu >= other.cpu && self.memory >= other.memory
    }
}

/// What the daemon needs to know about one container instance.
#[derive(Debug, Clone, PartialEq)]
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
}

impl Task {
    /// True for tasks a service scheduler will replace elsewhere when the instance drains.
    pub fn is_service_task(&self) -> bool {
        self.started_by.as_deref().is_some_and(|s| s.starts_with(SERVICE_STARTED_BY_PREFIX))
    }
}

/// The ECS operations the cycle performs on one cluster.
#[async_trait::async_trait]
pub trait Ecs: Send + Sync {
    /// The container instance `arn`; `None` when it is no longer registered.
    async fn describe(&self, arn: &str) -> Result<Option<ContainerInstance>>;
    /// Every container instance registered from EC2 instance `ec2_instance_id`.
    async fn instances_on(&self, ec2_instance_id: &str) -> Result<Vec<ContainerInstance>>;
    /// Every ACTIVE or DRAINING container instance of the cluster.
    async fn cluster_instances(&self) -> Result<Vec<ContainerInstance>>;
    /// Marks the instance as drained by `cycle_id`, then sets it DRAINING.
    async fn drain(&self, arn: &str, cycle_id: &str) -> Result<()>;
    /// Sets the instance ACTIVE and removes the mark of `cycle_id`.
    async fn activate(&self, arn: &str, cycle_id: &str) -> Result<()>;
    /// Tasks on the instance whose desired status is RUNNING.
    async fn running_tasks(&self, arn: &str) -> Result<Vec<Task>>;
    /// Stops one task, giving `reason`.
    async fn stop_task(&self, task_arn: &str, reason: &str) -> Result<()>;
    /// Deregisters a container instance record (a stale one left by a lost agent state).
    async fn deregister(&self, arn: &str) -> Result<()>;
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

    async fn describe_many(&self, arns: &[String]) -> Result<Vec<ContainerInstance>> {
        let mut found = Vec::new();
        for batch in arns.chunks(DESCRIBE_BATCH) {
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

    async fn list(&self, filter: Option<String>) -> Result<Vec<String>> {
        let mut arns = Vec::new();
        let mut pages =
            self.client.list_container_instances().cluster(&self.cluster).set_filter(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("ListContainerInstances", e))?;
            arns.extend(page.container_instance_arns().iter().cloned());
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

    fn mark(&self, arn: &str, cycle_id: &str) -> Attribute {
        Attribute::builder().name(DRAINED_BY_ATTRIBUTE).value(cycle_id).target_id(arn).build().expect("name is set")
    }
}

#[async_trait::async_trait]
impl Ecs for AwsEcs {
    async fn describe(&self, arn: &str) -> Result<Option<ContainerInstance>> {
        Ok(self.describe_many(&[arn.to_string()]).await?.into_iter().find(|i| i.arn == arn))
    }

    async fn instances_on(&self, ec2_instance_id: &str) -> Result<Vec<ContainerInstance>> {
        let arns = self.list(Some(format!("ec2InstanceId == {ec2_instance_id}"))).await?;
        // The filter is applied here as well: not every endpoint honours it.
        Ok(self.describe_many(&arns).await?.into_iter().filter(|i| i.ec2_instance_id == ec2_instance_id).collect())
    }

    async fn cluster_instances(&self) -> Result<Vec<ContainerInstance>> {
        let arns = self.list(None).await?;
        self.describe_many(&arns).await
    }

    async fn drain(&self, arn: &str, cycle_id: &str) -> Result<()> {
        self.client
            .put_attributes()
            .cluster(&self.cluster)
            .attributes(self.mark(arn, cycle_id))
            .send()
            .await
            .map_err(|e| sdk_error("PutAttributes", e))?;
        self.set_status(arn, ContainerInstanceStatus::Draining).await
    }

    async fn activate(&self, arn: &str, cycle_id: &str) -> Result<()> {
        self.set_status(arn, ContainerInstanceStatus::Active).await?;
        self.client
            .delete_attributes()
            .cluster(&self.cluster)
            .attributes(self.mark(arn, cycle_id))
            .send()
            .await
            .map_err(|e| sdk_error("DeleteAttributes", e))?;
        Ok(())
    }

    async fn running_tasks(&self, arn: &str) -> Result<Vec<Task>> {
        let mut task_arns = Vec::new();
        let mut pages = self
            .client
            .list_tasks()
            .cluster(&self.cluster)
            .container_instance(arn)
            .desired_status(DesiredStatus::Running)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("ListTasks", e))?;
            task_arns.extend(page.task_arns().iter().cloned());
        }
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
            tasks.extend(out.tasks().iter().map(|t| Task {
                arn: t.task_arn().unwrap_or_default().to_string(),
                started_by: t.started_by().map(str::to_string),
            }));
        }
        Ok(tasks)
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
            .force(false)
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
    }
}

fn capacity(resources: &[aws_sdk_ecs::types::Resource]) -> Capacity {
    let amount =
        |name: &str| resources.iter().find(|r| r.name() == Some(name)).map_or(0, |r| i64::from(r.integer_value()));
    Capacity { cpu: amount("CPU"), memory: amount("MEMORY") }
}

/// Turns an SDK failure into an [`Error::Ecs`] that says which call failed and why.
fn sdk_error<E, R>(operation: &str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (transient, reason) = match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("unknown error");
            let transient = matches!(code, "ThrottlingException" | "ServerException" | "ServiceUnavailableException");
            (transient, format!("{code}: {}", e.message().unwrap_or("no message")))
        }
        SdkError::TimeoutError(_) => (true, "timed out".to_string()),
        SdkError::DispatchFailure(d) => (true, format!("could not reach ECS ({d:?})")),
        SdkError::ResponseError(_) => (true, "unreadable response".to_string()),
        other => (false, aws_sdk_ecs::error::DisplayErrorContext(other).to_string()),
    };
    Error::Ecs { message: format!("{operation} failed: {reason}"), transient }
}
