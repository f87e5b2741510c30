//! Checks several steps share: the instance still registered, the agent connected, the
//! updates installed, the hooks run, a stale record deregistered; and the helpers for their
//! waits and messages.

use std::time::Duration;

use backon::BackoffBuilder;

use super::Cycle;
use super::machine::Machine;
use super::messages::fmt;
use crate::agent::AgentMetadata;
use crate::ecs::ContainerInstance;
use crate::error::{Error, Result};
use crate::hooks::{HookContext, HookPoint};
use crate::identity;
use crate::plan::Plan;
use tracing::info;

impl Machine<'_> {
    /// Deregisters the record the agent left behind when it registered anew (if still there).
    pub(super) async fn deregister_stale(&self, stale_arn: Option<String>) -> Result<()> {
        if let Some(stale) = stale_arn
            && self.ports.ecs.describe(&stale).await?.is_some_and(|i| i.status != "INACTIVE")
        {
            self.ports.ecs.deregister(&stale).await?;
            info!("deregistered the stale record {stale}");
        }
        Ok(())
    }

    /// Runs the hooks of `point` for this cycle.
    pub(super) async fn run_hooks(&self, point: HookPoint, cycle: &Cycle, arn: &str) -> Result<()> {
        let context = HookContext {
            step: cycle.state.name(),
            cycle: &cycle.id,
            instance_id: &cycle.instance_id,
            cluster: &cycle.cluster,
            container_instance_arn: arn,
        };
        self.ports.hooks.run(point, &context).await
    }

    /// The container instance `arn`; an error when it is no longer registered.
    pub(super) async fn registered(&self, arn: &str) -> Result<ContainerInstance> {
        self.ports
            .ecs
            .describe(arn)
            .await?
            .ok_or_else(|| Error::NotOurs(format!("container instance {arn} is no longer registered")))
    }

    /// Waits until the agent answers `accept`-ably and ECS shows its instance connected.
    /// An agent registered in another cluster than the cycle's is an error at once.
    pub(super) async fn await_agent(
        &self,
        cycle: &Cycle,
        accept: impl Fn(&AgentMetadata) -> bool,
    ) -> Result<(AgentMetadata, ContainerInstance)> {
        let limit = self.settings.host.agent_reconnect_timeout;
        let deadline = self.deadline(cycle, limit);
        let mut delays = poll_delays(self.settings.drain.poll_initial, self.settings.drain.poll_max);
        let mut last = String::from("no answer yet");
        loop {
            match self.agent_connected(cycle, &accept).await {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => {}
                Err(e @ (Error::Identity(_) | Error::Credentials { .. })) => return Err(e),
                Err(e) => last = e.to_string(),
            }
            if deadline.passed() {
                return Err(Error::Timeout(format!(
                    "the ECS agent did not reconnect within {} (last: {last})",
                    fmt(limit)
                )));
            }
            let wait = self.ports.clock.jitter(delays.next().unwrap_or(self.settings.drain.poll_max));
            self.ports.clock.sleep(wait.min(deadline.left())).await;
        }
    }

    async fn agent_connected(
        &self,
        cycle: &Cycle,
        accept: &impl Fn(&AgentMetadata) -> bool,
    ) -> Result<Option<(AgentMetadata, ContainerInstance)>> {
        let meta = self.ports.agent.metadata().await?;
        if meta.cluster != cycle.cluster {
            return Err(Error::Identity(format!(
                "the ECS agent came back registered in cluster \"{}\", but this cycle drained the host in \
                 cluster \"{}\": the old container instance is set ACTIVE again, with no agent behind it; fix \
                 ECS_CLUSTER in the agent's configuration (or identity.cluster), or deregister the old record \
                 if the host now belongs to the other cluster",
                meta.cluster, cycle.cluster
            )));
        }
        let Some(arn) = meta.container_instance_arn.clone() else {
            return Ok(None);
        };
        if !accept(&meta) {
            return Ok(None);
        }
        let instance = self.ports.ecs.describe(&arn).await?;
        if let Some(i) = &instance {
            // Confirmed again after each restart of the agent and each reboot: whatever took
            // its port meanwhile is not believed.
            identity::belongs(i, &cycle.instance_id)?;
            *self.seen.lock().expect("seen") = Some((self.ports.clock.now(), i.clone()));
        }
        Ok(instance.filter(|i| i.agent_connected).map(|i| (meta, i)))
    }

    /// Fails if any planned update is still pending at the planned version.
    pub(super) async fn verify_installed(&self, plan: &Plan) -> Result<()> {
        let pending = self.ports.packages.pending(plan.release()).await?;
        let missing: Vec<String> = plan
            .updates
            .iter()
            .filter(|u| pending.iter().any(|p| p.name == u.name && p.available == u.available))
            .map(|u| format!("{} {}", u.name, u.available))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::Packages(format!("updates still pending after the install: {}", missing.join(", "))))
        }
    }
}

/// Delays growing from `initial` to `max` (jittered by the clock), for polls that must stay rare.
pub(super) fn poll_delays(initial: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(initial)
        .with_max_delay(max)
        .with_factor(1.5)
        .without_max_times()
        .build()
}
