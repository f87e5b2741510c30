//! The local ECS agent's introspection API (`GET /v1/metadata`).

use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::foreign;

/// What the agent says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgentMetadata {
    /// The cluster it registered into.
    #[serde(rename = "Cluster")]
    pub cluster: String,
    /// Its container-instance ARN; `None` before registration.
    #[serde(rename = "ContainerInstanceArn")]
    pub container_instance_arn: Option<String>,
    /// e.g. "Amazon ECS Agent - v1.89.2 (a1b2c3d)".
    #[serde(rename = "Version", default)]
    pub version: String,
}

/// The largest answer read from the agent (its metadata is a few hundred bytes; the tasks
/// of a full host some tens of kilobytes).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The longest cluster name or ARN the agent may report (an ARN is at most 1,600 or so).
const MAX_NAME_CHARS: usize = 2048;

/// The most tasks believed of one host.
const MAX_TASKS: usize = 10_000;

/// A name, ARN or status as ECS writes them: printable ASCII without spaces, not too long.
fn plain(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_CHARS && s.bytes().all(|b| b.is_ascii_graphic())
}

impl AgentMetadata {
    /// The metadata, if each field is of a believable size and shape (its ARN is confirmed
    /// with ECS before use).
    fn checked(mut self) -> std::result::Result<Self, String> {
        if !plain(&self.cluster) {
            return Err(format!("the cluster \"{}\" is not a cluster name", foreign::shown(&self.cluster)));
        }
        if let Some(arn) = &self.container_instance_arn
            && !(plain(arn) && arn.starts_with("arn:"))
        {
            return Err(format!("\"{}\" is not a container-instance ARN", foreign::shown(arn)));
        }
        self.version = foreign::bounded(&self.version, 256);
        Ok(self)
    }
}

/// One task as the agent knows it (`GET /v1/tasks`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgentTask {
    /// The task's ARN.
    #[serde(rename = "Arn")]
    pub arn: String,
    /// What the agent last saw of its containers: RUNNING, STOPPED, ...
    #[serde(rename = "KnownStatus")]
    pub known_status: String,
}

impl AgentTask {
    /// True once the agent has seen the task's containers stop.
    pub fn is_stopped(&self) -> bool {
        self.known_status == "STOPPED"
    }
}

#[derive(Deserialize)]
struct AgentTasks {
    #[serde(rename = "Tasks", default)]
    tasks: Vec<AgentTask>,
}

/// Asks the running agent who it is and what it runs.
#[async_trait::async_trait]
pub trait Agent: Send + Sync {
    /// The agent's metadata; an error when it does not answer.
    async fn metadata(&self) -> Result<AgentMetadata>;
    /// The tasks the agent manages on this host, with the state of their containers.
    async fn tasks(&self) -> Result<Vec<AgentTask>>;
}

/// [`Agent`] over HTTP.
pub struct IntrospectionClient {
    base_url: String,
    http: reqwest::Client,
}

impl IntrospectionClient {
    /// A client for the agent at `base_url` (e.g. `http://127.0.0.1:51678`).
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self> {
        let http = crate::http::client_builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Host(format!("cannot build the ECS agent client: {e}")))?;
        Ok(Self { base_url: base_url.trim_end_matches('/').to_string(), http })
    }

    /// GETs `path` and reads it with `parse`; any failure says which URL and why.
    async fn get<T>(&self, path: &str, parse: fn(&[u8]) -> std::result::Result<T, String>) -> Result<T> {
        let url = format!("{}{path}", self.base_url);
        let unreachable = |why: String| Error::Host(format!("the ECS agent at {url} {why}"));
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unreachable(format!("did not answer ({})", root_cause(&e))))?;
        if !response.status().is_success() {
            return Err(unreachable(format!("answered HTTP {}", response.status())));
        }
        let body = crate::http::body_bounded(response, MAX_BODY_BYTES).await.map_err(unreachable)?;
        parse(&body).map_err(|why| unreachable(format!("sent an answer that is refused: {why}")))
    }
}

#[async_trait::async_trait]
impl Agent for IntrospectionClient {
    async fn metadata(&self) -> Result<AgentMetadata> {
        self.get("/v1/metadata", parse_metadata).await
    }

    async fn tasks(&self) -> Result<Vec<AgentTask>> {
        self.get("/v1/tasks", parse_tasks).await
    }
}

/// The agent's `/v1/metadata` answer, parsed and checked (whatever answers on the agent's
/// port is input, not truth).
pub fn parse_metadata(body: &[u8]) -> std::result::Result<AgentMetadata, String> {
    let meta: AgentMetadata = serde_json::from_slice(body).map_err(not_understood)?;
    meta.checked()
}

/// The agent's `/v1/tasks` answer, parsed and checked.
pub fn parse_tasks(body: &[u8]) -> std::result::Result<Vec<AgentTask>, String> {
    let tasks = serde_json::from_slice::<AgentTasks>(body).map_err(not_understood)?.tasks;
    if tasks.len() > MAX_TASKS {
        return Err(format!("it lists {} tasks, more than the {MAX_TASKS} believed", tasks.len()));
    }
    match tasks.iter().find(|t| !plain(&t.arn) || !plain(&t.known_status)) {
        Some(t) => Err(format!(
            "\"{}\" is not a task ARN and status",
            foreign::shown(&format!("{} {}", t.arn, t.known_status))
        )),
        None => Ok(tasks),
    }
}

fn not_understood(e: serde_json::Error) -> String {
    format!("not understood ({})", foreign::shown(&e.to_string()))
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn arbitrary_answers_are_read_or_refused_in_bounded_words(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            for result in [parse_metadata(&bytes).map(drop), parse_tasks(&bytes).map(drop)] {
                if let Err(why) = result {
                    prop_assert!(!why.is_empty() && why.chars().count() < 300, "{}", why);
                }
            }
        }

        #[test]
        fn metadata_with_any_strings_is_checked(cluster in ".{0,40}", arn in ".{0,80}", version in ".{0,400}") {
            let body = serde_json::json!({"Cluster": cluster, "ContainerInstanceArn": arn, "Version": version});
            if let Ok(meta) = parse_metadata(body.to_string().as_bytes()) {
                prop_assert!(!meta.cluster.is_empty() && !meta.cluster.chars().any(char::is_whitespace));
                prop_assert!(meta.container_instance_arn.is_some_and(|a| a.starts_with("arn:")));
                prop_assert!(meta.version.chars().count() <= 256);
            }
        }
    }

    #[test]
    fn a_real_answer_is_read_and_a_forged_one_refused() {
        let real = br#"{"Cluster":"prod","ContainerInstanceArn":"arn:aws:ecs:us-east-1:123456789012:container-instance/prod/0abc","Version":"Amazon ECS Agent - v1.89.2 (a1b2c3d)"}"#;
        assert_eq!(parse_metadata(real).unwrap().cluster, "prod");
        let forged = br#"{"Cluster":"prod\nFAKE LOG LINE","ContainerInstanceArn":null}"#;
        let why = parse_metadata(forged).unwrap_err();
        assert!(why.contains("is not a cluster name") && !why.contains('\n'), "{why}");
    }
}
