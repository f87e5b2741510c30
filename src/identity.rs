//! Who this host is: EC2 identity from IMDSv2, ECS cluster and container instance from the
//! local agent (or, when it is down, from ecs.config and the ECS API).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::ecs::{ContainerInstance, Ecs};
use crate::error::{Error, Result};
use crate::foreign;

/// The parts of the instance identity document the daemon uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all(deserialize = "camelCase"))]
pub struct InstanceDocument {
    /// e.g. `i-0abc...`.
    pub instance_id: String,
    /// e.g. `us-east-1`.
    pub region: String,
    /// e.g. `us-east-1a`.
    pub availability_zone: String,
    /// The AWS account id.
    pub account_id: String,
}

/// Everything the daemon needs to know about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The EC2 side.
    #[serde(flatten)]
    pub instance: InstanceDocument,
    /// The ECS cluster.
    pub cluster: String,
    /// This host's container-instance ARN.
    pub container_instance_arn: String,
    /// The running agent's version, when it answered.
    pub agent_version: Option<String>,
}

/// Where the IMDS client sends requests (for messages).
pub fn imds_endpoint() -> String {
    std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|_| "http://169.254.169.254".into())
}

/// Reads the instance identity document through IMDSv2 (tokens only, never v1).
pub async fn instance_document(imds: &aws_config::imds::Client) -> Result<InstanceDocument> {
    let problem = |why: String| {
        Error::Identity(format!(
            "cannot read the instance identity from IMDSv2 at {}: {}. ecs-patchd must run on \
             an EC2 instance whose metadata service is enabled (a hop limit of 2 when it runs in \
             a container); AWS_EC2_METADATA_SERVICE_ENDPOINT overrides the address.",
            imds_endpoint(),
            why.trim_end_matches('.')
        ))
    };
    let document = imds
        .get("/latest/dynamic/instance-identity/document")
        .await
        .map_err(|e| problem(crate::aws::imds_error(&e)))?;
    parse_document(document.as_ref()).map_err(problem)
}

/// The instance identity document, parsed and checked: an instance id, a region, a zone and
/// an account as EC2 writes them (they name files, ARNs and log lines).
pub fn parse_document(text: &str) -> std::result::Result<InstanceDocument, String> {
    let document: InstanceDocument = serde_json::from_str(text)
        .map_err(|e| format!("the identity document is not understood ({})", foreign::shown(&e.to_string())))?;
    let word = |s: &str| (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let account = &document.account_id;
    let fields = [
        ("instanceId", &document.instance_id, document.instance_id.starts_with("i-") && word(&document.instance_id)),
        ("region", &document.region, word(&document.region)),
        ("availabilityZone", &document.availability_zone, word(&document.availability_zone)),
        ("accountId", account, account.len() == 12 && account.chars().all(|c| c.is_ascii_digit())),
    ];
    match fields.iter().find(|(_, _, ok)| !ok) {
        None => Ok(document),
        Some((field, value, _)) => {
            Err(format!("the identity document's {field} \"{}\" is not one EC2 writes", foreign::shown(value)))
        }
    }
}

/// The cluster named by `ECS_CLUSTER` in ecs.config (`default` when absent).
pub fn cluster_from_ecs_config(path: &Path) -> Result<String> {
    let cannot = |why: String| Error::Identity(format!("cannot read {}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| cannot(e.to_string()))?;
    let bytes = crate::trust::read_bounded(file, 1 << 20, path).map_err(cannot)?;
    let cluster = String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ECS_CLUSTER="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next_back()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "default".into());
    // "Up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are
    // allowed" (CreateCluster's clusterName); an ARN names a cluster too.
    if cluster.len() > 2048 || !cluster.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(cannot(format!("ECS_CLUSTER \"{}\" is not a cluster name", foreign::shown(&cluster))));
    }
    Ok(cluster)
}

/// How to find the cluster and container instance.
pub struct Lookup<'a> {
    /// The running agent.
    pub agent: &'a dyn Agent,
    /// The cluster pinned in config (empty: not pinned).
    pub pinned_cluster: &'a str,
    /// The agent's config file.
    pub ecs_config: &'a Path,
}

/// Resolves cluster and container-instance ARN; `ecs_for` gives an ECS client for a cluster.
///
/// Asks the agent first; when it does not answer, takes the cluster from config or
/// ecs.config and finds the container instance by EC2 instance id. When nothing works the
/// error says what was tried and what to fix.
pub async fn resolve<F>(instance: InstanceDocument, lookup: Lookup<'_>, ecs_for: F) -> Result<Identity>
where
    F: Fn(&str) -> Box<dyn Ecs>,
{
    let pinned = (!lookup.pinned_cluster.is_empty()).then(|| lookup.pinned_cluster.to_string());
    let mut tried = Vec::new();
    match lookup.agent.metadata().await {
        Ok(meta) => {
            if let Some(pin) = &pinned
                && *pin != meta.cluster
            {
                return Err(Error::Identity(format!(
                    "identity.cluster is \"{pin}\" but the ECS agent is registered in cluster \
                     \"{}\": fix identity.cluster or ECS_CLUSTER in the agent's configuration",
                    meta.cluster
                )));
            }
            if let Some(arn) = meta.container_instance_arn {
                // Believed only once ECS confirms it ([`confirmed`]), before the cycle's first step.
                return Ok(Identity {
                    instance,
                    cluster: meta.cluster,
                    container_instance_arn: arn,
                    agent_version: Some(meta.version),
                });
            }
            tried.push(format!("the ECS agent answered but has not registered yet (cluster {})", meta.cluster));
        }
        Err(e) => tried.push(e.to_string()),
    }
    let cluster = match pinned {
        Some(pin) => pin,
        None => match cluster_from_ecs_config(lookup.ecs_config) {
            Ok(cluster) => cluster,
            Err(e) => {
                tried.push(e.to_string());
                return Err(not_found(&instance, &tried));
            }
        },
    };
    let found = ecs_for(&cluster).instances_on(&instance.instance_id).await;
    match found {
        Ok(mut records) if !records.is_empty() => {
            // Prefer a connected, then the newest, registration.
            records.sort_by_key(|r| (r.agent_connected, r.registered_at));
            let best = records.pop().expect("not empty");
            tracing::warn!("{}; container instance {} found through ECS instead", tried.join("; "), best.arn);
            Ok(Identity { instance, cluster, container_instance_arn: best.arn, agent_version: best.agent_version })
        }
        Ok(_) => {
            tried.push(format!("ECS lists no container instance for {} in cluster {cluster}", instance.instance_id));
            Err(not_found(&instance, &tried))
        }
        Err(e) => {
            tried.push(format!("cannot list the container instances of cluster {cluster}: {e}"));
            Err(not_found(&instance, &tried))
        }
    }
}

/// The container instance `arn` as ECS describes it (`record`, from DescribeContainerInstances
/// in `cluster`), confirmed to be EC2 instance `instance_id`'s. The local agent's word is
/// believed by nothing else: a process that took the agent's port while the agent was down
/// could name another host's instance, which this host would then drain.
pub fn confirmed(
    record: Option<ContainerInstance>,
    arn: &str,
    instance_id: &str,
    cluster: &str,
) -> Result<ContainerInstance> {
    // An instance not registered in `cluster` comes back as a failure, not an error: AWS,
    // "API failure reasons": DescribeContainerInstances `MISSING`, "The specified container
    // instance wasn't found. Verify that you specified the cluster the container instance is
    // registered to" (`AwsEcs::describe` reads it as none).
    let record = record.ok_or_else(|| {
        Error::Identity(format!(
            "the ECS agent reports container instance {}, which ECS does not list in cluster {}: refused, \
             nothing is drained or changed (is something other than the agent answering on its port?)",
            foreign::shown(arn),
            foreign::shown(cluster)
        ))
    })?;
    belongs(&record, instance_id)?;
    Ok(record)
}

/// An error naming both instances unless `record` runs on EC2 instance `instance_id`.
pub fn belongs(record: &ContainerInstance, instance_id: &str) -> Result<()> {
    if record.ec2_instance_id == instance_id {
        return Ok(());
    }
    Err(Error::Identity(format!(
        "the ECS agent reports container instance {}, which ECS says runs on EC2 instance {}, not on this host \
         ({instance_id}): refused, nothing of it is drained or changed (is something other than the agent \
         answering on its port?)",
        foreign::shown(&record.arn),
        foreign::shown(&record.ec2_instance_id)
    )))
}

fn not_found(instance: &InstanceDocument, tried: &[String]) -> Error {
    Error::Identity(format!(
        "cannot tell which ECS container instance EC2 instance {} ({}) is. Tried: {}. Start the \
         ECS agent (systemctl start ecs) and check that it registered, or set identity.cluster \
         (or ECS_CLUSTER in ecs.config) to the cluster this host belongs to.",
        instance.instance_id,
        instance.region,
        tried.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn any_identity_document_is_read_or_refused_in_bounded_words(text in ".{0,600}") {
            if let Err(why) = parse_document(&text) {
                prop_assert!(why.chars().count() < 400, "{}", why);
            }
        }
    }

    #[test]
    fn an_identity_document_is_read_and_a_strange_one_refused() {
        let real = r#"{"instanceId":"i-0abc1234def567890","region":"us-east-1","availabilityZone":"us-east-1a",
                       "accountId":"123456789012","imageId":"ami-1"}"#;
        assert_eq!(parse_document(real).unwrap().instance_id, "i-0abc1234def567890");
        let odd = real.replace("i-0abc1234def567890", "i-../../etc");
        assert!(parse_document(&odd).unwrap_err().contains("instanceId"));
    }

    #[test]
    fn ecs_config_cluster_or_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ecs.config");
        std::fs::write(&path, "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true\nECS_CLUSTER=prod-web\n").unwrap();
        assert_eq!(cluster_from_ecs_config(&path).unwrap(), "prod-web");
        std::fs::write(&path, "ECS_LOGLEVEL=info\n").unwrap();
        assert_eq!(cluster_from_ecs_config(&path).unwrap(), "default");
        assert!(cluster_from_ecs_config(&dir.path().join("missing")).is_err());
    }
}
