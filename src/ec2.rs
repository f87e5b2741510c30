//! EC2: whether the instances behind container-instance records still exist.
//!
//! AWS (DeregisterContainerInstance): "If you terminate a running container instance, Amazon
//! ECS automatically deregisters the instance from your cluster (stopped container instances
//! or instances with disconnected agents aren't automatically deregistered when
//! terminated)." A host terminated while drained or rebooting leaves a DRAINING,
//! disconnected record behind, forever; the capacity budget must not count it.

use std::collections::HashSet;

use aws_sdk_ec2::types::{Filter, InstanceStateName};

use crate::error::{Error, Result};

/// Instance ids asked about in one DescribeInstances filter.
const IDS_PER_CALL: usize = 100;

/// The account's EC2 instances, as far as the capacity budget needs them.
#[async_trait::async_trait]
pub trait Instances: Send + Sync {
    /// Those of `ids` that are gone: terminated, shutting down, or not found at all.
    async fn gone(&self, ids: &[String]) -> Result<Vec<String>>;
}

/// [`Instances`] read with EC2's DescribeInstances.
pub struct Ec2Instances {
    client: aws_sdk_ec2::Client,
}

impl Ec2Instances {
    /// Reads the instances of the account and region of `config`.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self { client: aws_sdk_ec2::Client::new(config) }
    }
}

#[async_trait::async_trait]
impl Instances for Ec2Instances {
    /// DescribeInstances: "If you specify an instance ID that is not valid, an error is
    /// returned" (for the whole call), so the ids go in an `instance-id` filter, which
    /// answers with those that exist; and "Recently terminated instances might appear in the
    /// returned results. This interval is usually less than one hour": in state `terminated`.
    async fn gone(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut alive = HashSet::new();
        for chunk in ids.chunks(IDS_PER_CALL) {
            let filter = Filter::builder().name("instance-id").set_values(Some(chunk.to_vec())).build();
            let mut pages = self.client.describe_instances().filters(filter).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| {
                    crate::aws::error("EC2 DescribeInstances", &e, |failure| Error::Ecs {
                        message: format!("EC2 DescribeInstances failed: {}", failure.reason),
                        transient: failure.transient,
                    })
                })?;
                for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                    let state = instance.state().and_then(|s| s.name());
                    let ended = matches!(state, Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown));
                    if let (Some(id), false) = (instance.instance_id(), ended) {
                        alive.insert(id.to_string());
                    }
                }
            }
        }
        Ok(ids.iter().filter(|id| !alive.contains(id.as_str())).cloned().collect())
    }
}
