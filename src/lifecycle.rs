//! The instance's place in EC2: whether it is leaving (a spot interruption notice, an Auto
//! Scaling lifecycle state other than InService), and its Auto Scaling scale-in protection
//! while a cycle has it out of service.

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::{Error, Result};

/// IMDS: "If Amazon EC2 is not preparing to stop or terminate the instance, or if you
/// terminated the instance yourself, instance-action is not present in the instance
/// metadata and you receive an HTTP 404 error" (Spot Instance interruption notices).
const SPOT_ACTION: &str = "/latest/meta-data/spot/instance-action";
/// IMDS (Auto Scaling user guide): "The Auto Scaling instance lifecycle has two primary
/// steady states—InService and Terminated—and two side steady states—Detached and Standby",
/// plus the Warmed:* states of a warm pool; the item is absent (404) outside any group.
const TARGET_LIFECYCLE_STATE: &str = "/latest/meta-data/autoscaling/target-lifecycle-state";

/// The instance's Auto Scaling group and the scale-in protection it had before the cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleIn {
    /// The Auto Scaling group.
    pub group: String,
    /// Whether the instance was protected from scale-in before the cycle protected it.
    pub was_protected: bool,
}

/// Why the instance is leaving service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaving {
    /// What EC2 or Auto Scaling said.
    pub reason: String,
    /// It will be terminated (spot action `terminate`, target state `Terminated`): there is
    /// no point setting it ACTIVE again. Otherwise (a spot stop or hibernation, Standby,
    /// Detached, a warm pool) it comes back, and must come back ACTIVE.
    pub for_good: bool,
}

/// What EC2 and Auto Scaling say about this instance's future.
#[async_trait::async_trait]
pub trait Lifecycle: Send + Sync {
    /// Whether the instance is leaving service (spot notice, lifecycle state not InService).
    async fn leaving(&self) -> Result<Option<Leaving>>;
    /// The instance's Auto Scaling group and its scale-in protection now; `None` outside
    /// any group.
    async fn scale_in(&self) -> Result<Option<ScaleIn>>;
    /// Sets the instance's scale-in protection in `group`.
    async fn protect(&self, group: &str, protected: bool) -> Result<()>;
}

/// [`Lifecycle`] through IMDSv2 and the Auto Scaling API.
pub struct Ec2Lifecycle {
    imds: aws_config::imds::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    instance_id: String,
}

impl Ec2Lifecycle {
    /// The lifecycle of EC2 instance `instance_id`.
    pub fn new(config: &aws_config::SdkConfig, imds: aws_config::imds::Client, instance_id: &str) -> Self {
        Self { imds, autoscaling: aws_sdk_autoscaling::Client::new(config), instance_id: instance_id.to_string() }
    }

    /// The IMDS path's value; `None` on 404 (nothing to say).
    async fn metadata(&self, path: &str) -> Result<Option<String>> {
        use aws_config::imds::client::error::ImdsError;
        match self.imds.get(path).await {
            Ok(value) => Ok(Some(value.as_ref().trim().to_string())),
            Err(ImdsError::ErrorResponse(e)) if e.response().status().as_u16() == 404 => Ok(None),
            Err(e) => Err(Error::Host(format!("cannot read {path} from IMDSv2: {}", crate::aws::imds_error(&e)))),
        }
    }

    fn autoscaling_error<E>(&self, operation: &str, err: aws_sdk_ecs::error::SdkError<E>) -> Error
    where
        E: aws_sdk_ecs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        crate::aws::error(&format!("Auto Scaling {operation}"), &err, |failure| {
            Error::Host(format!("Auto Scaling {operation} for {} failed: {}", self.instance_id, failure.reason))
        })
    }
}

#[async_trait::async_trait]
impl Lifecycle for Ec2Lifecycle {
    async fn leaving(&self) -> Result<Option<Leaving>> {
        let mut why = Vec::new();
        let mut for_good = false;
        if let Some(notice) = self.metadata(SPOT_ACTION).await? {
            for_good |= notice.contains("\"terminate\"");
            why.push(format!("a spot interruption notice is posted ({notice})"));
        }
        if let Some(state) = self.metadata(TARGET_LIFECYCLE_STATE).await?
            && state != "InService"
        {
            for_good |= state.ends_with("Terminated");
            why.push(format!("its Auto Scaling target lifecycle state is {state}"));
        }
        Ok((!why.is_empty())
            .then(|| Leaving { reason: format!("the instance is leaving: {}", why.join("; ")), for_good }))
    }

    async fn scale_in(&self) -> Result<Option<ScaleIn>> {
        // Outside any group IMDS has no target lifecycle state: no API call (and no IAM
        // permission) is needed.
        if self.metadata(TARGET_LIFECYCLE_STATE).await?.is_none() {
            return Ok(None);
        }
        let out = self
            .autoscaling
            .describe_auto_scaling_instances()
            .instance_ids(&self.instance_id)
            .send()
            .await
            .map_err(|e| self.autoscaling_error("DescribeAutoScalingInstances", e))?;
        Ok(out.auto_scaling_instances().first().map(|i| ScaleIn {
            group: i.auto_scaling_group_name().unwrap_or_default().to_string(),
            was_protected: i.protected_from_scale_in().unwrap_or(false),
        }))
    }

    async fn protect(&self, group: &str, protected: bool) -> Result<()> {
        self.autoscaling
            .set_instance_protection()
            .auto_scaling_group_name(group)
            .instance_ids(&self.instance_id)
            .protected_from_scale_in(protected)
            .send()
            .await
            .map_err(|e| self.autoscaling_error("SetInstanceProtection", e))?;
        Ok(())
    }
}

/// Whether the instance is leaving; an unreadable answer is logged and taken as "not
/// leaving" (the identity was read from the same IMDS moments before, and a host kept in
/// service is the safe side).
pub async fn leaving_or_warn(lifecycle: &dyn Lifecycle) -> Option<Leaving> {
    lifecycle.leaving().await.unwrap_or_else(|e| {
        warn!("cannot tell whether the instance is leaving: {e}");
        None
    })
}

/// The instance's Auto Scaling group, best effort: scale-in protection is a safeguard on
/// top of the drain, so a failure to read it (a missing IAM permission, throttling) is
/// logged, and the cycle goes on without it.
pub async fn scale_in_or_warn(lifecycle: &dyn Lifecycle) -> Option<ScaleIn> {
    lifecycle.scale_in().await.unwrap_or_else(|e| {
        warn!("cannot read the instance's Auto Scaling group (no scale-in protection this cycle): {e}");
        None
    })
}

/// Sets scale-in protection, best effort (see [`scale_in_or_warn`]).
pub async fn protect_or_warn(lifecycle: &dyn Lifecycle, group: &str, protected: bool) {
    match lifecycle.protect(group, protected).await {
        Ok(()) => tracing::info!(group, protected, "scale-in protection set"),
        Err(e) => warn!("cannot set scale-in protection to {protected} in {group}: {e}"),
    }
}
