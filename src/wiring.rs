//! The one place that assembles the system: from the settings it builds the real side
//! effects ([`Ports`]), the reporters and the [`Machine`], and runs one attempt at a cycle
//! for `run` (with or without `--resume-only`) and for the daemon, or a preview for `check`.
//! The command line parses arguments and prints; it assembles nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use crate::agent::{Agent, IntrospectionClient};
use crate::check::{self, Preview};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::coordination;
use crate::coordination::store::watch::WatchFile;
use crate::cycle::machine::{Machine, Ports};
use crate::cycle::{Cycle, Outcome, State};
use crate::ecs::{AwsEcs, Ecs};
use crate::error::{Error, Kind, Result};
use crate::hooks::HookDir;
use crate::host::{Host, SystemHost};
use crate::identity::{self, Identity, InstanceDocument, Lookup};
use crate::journal::{self, Journal};
use crate::lifecycle::Ec2Lifecycle;
use crate::packages;
use crate::report::keeper;
use crate::report::record::Record;
use crate::report::ssm::SsmReport;
use crate::report::systemd::StatusLine;
use crate::report::webhook::Webhook;
use crate::report::{Fanout, Reporter, metrics};
use crate::window::Schedule;

/// This EC2 instance as IMDS describes it, and the AWS configuration for its region.
pub struct ThisInstance {
    /// The IMDSv2 client (Auto Scaling lifecycle and spot notices are read through it).
    pub imds: aws_config::imds::Client,
    /// The instance identity document.
    pub document: InstanceDocument,
    /// The AWS configuration for the instance's region.
    pub aws: aws_config::SdkConfig,
}

impl ThisInstance {
    /// Reads the identity document from IMDS and checks the credentials once, before any step.
    pub async fn find() -> Result<Self> {
        let imds = crate::aws::imds();
        let document = identity::instance_document(&imds).await?;
        let aws = Self::aws_config(&document.region).await;
        crate::aws::check_credentials(&aws).await?;
        Ok(Self { imds, document, aws })
    }

    /// A fresh IMDS client and AWS configuration for an instance already found (the
    /// daemon's: their connection pools keep timers, so it makes them for each attempt).
    pub async fn again(document: &InstanceDocument) -> Self {
        let aws = Self::aws_config(&document.region).await;
        Self { imds: crate::aws::imds(), document: document.clone(), aws }
    }

    async fn aws_config(region: &str) -> aws_config::SdkConfig {
        crate::aws::config_loader().region(aws_config::Region::new(region.to_string())).load().await
    }

    /// The host's identity: cluster and container instance, from the agent and ECS.
    async fn resolve(&self, settings: &Settings, agent: &dyn Agent) -> Result<Identity> {
        let lookup =
            Lookup { agent, pinned_cluster: &settings.identity.cluster, ecs_config: &settings.paths.ecs_config };
        let aws = &self.aws;
        identity::resolve(self.document.clone(), lookup, |cluster| Box::new(AwsEcs::new(aws, cluster)) as Box<dyn Ecs>)
            .await
    }
}

/// The reporters a command wires into the cycle, and what it reports once it is done.
pub struct Reporting {
    webhook: Option<Arc<Webhook>>,
    status: Option<Arc<StatusLine>>,
}

impl Reporting {
    /// The reporters `settings` ask for; `status` is the daemon's status line.
    pub fn new(settings: &Settings, status: Option<Arc<StatusLine>>) -> Self {
        let r = &settings.report;
        let webhook = match Webhook::new(&r.webhook_url, r.webhook_timeout) {
            _ if r.webhook_url.is_empty() => None,
            Ok(webhook) => Some(Arc::new(webhook)),
            Err(e) => {
                tracing::warn!("{e}: no notification will be sent");
                None
            }
        };
        Self { webhook, status }
    }

    /// A reporter for one cycle.
    fn reporter(&self, settings: &Settings) -> Box<dyn Reporter> {
        let textfile = Some(settings.report.metrics_textfile.clone()).filter(|p| !p.as_os_str().is_empty());
        let mut all: Vec<Box<dyn Reporter>> = vec![Box::new(keeper::Keeper::new(&settings.paths.state_dir, textfile))];
        if let Some(webhook) = &self.webhook {
            all.push(Box::new(Arc::clone(webhook)));
        }
        if let Some(status) = &self.status {
            all.push(Box::new(Arc::clone(status)));
        }
        Box::new(Fanout(all))
    }

    /// After a check or a cycle: notes the agent's version and the mistake in the setup that
    /// stopped it (none: cleared), rewrites the metrics textfile,
    /// sends SSM compliance and inventory, and waits for the webhook's posts. Failures are
    /// logged; none changes the command's result.
    async fn after(
        &self,
        settings: &Settings,
        aws: &aws_config::SdkConfig,
        instance_id: &str,
        ports: &Ports,
        setup_error: Option<&str>,
    ) {
        let dir = &settings.paths.state_dir;
        let mut record = Record::load(dir);
        record.setup_error = setup_error.map(str::to_string);
        if let Ok(agent) = ports.agent.metadata().await {
            record.agent_version = Some(agent.version);
        }
        record.save(dir);
        if !settings.report.metrics_textfile.as_os_str().is_empty() {
            let cycle = journal::read::<Cycle>(dir).ok().flatten();
            metrics::write_textfile(&settings.report.metrics_textfile, &record, cycle.as_ref());
        }
        if settings.report.ssm {
            match SsmReport::new(aws, instance_id).publish(&record).await {
                Ok(()) => tracing::debug!("SSM compliance and inventory sent"),
                Err(e) => tracing::warn!("cannot report to Systems Manager (report.ssm = false turns this off): {e}"),
            }
        }
        self.flush().await;
    }

    /// Waits for the webhook's posts still in flight.
    async fn flush(&self) {
        if let Some(webhook) = &self.webhook {
            webhook.flush().await;
        }
    }
}

/// One attempt at a cycle: the one the journal holds, resumed, or else a new one for this
/// host. `run` (with or without `--resume-only`) and the daemon both go through it.
pub struct Attempt<'a> {
    /// The settings in force.
    pub settings: &'a Settings,
    /// The journal, locked.
    pub journal: &'a Journal,
    /// This instance.
    pub instance: &'a ThisInstance,
    /// The maintenance windows a new step must fall in; `None`: now, whatever they say.
    pub schedule: Option<Schedule>,
    /// Leave the reboot to the caller (SSM Run Command: exit 194).
    pub hand_off_reboot: bool,
    /// The reporters.
    pub reporting: &'a Reporting,
}

impl Attempt<'_> {
    /// Runs the attempt until its cycle ends, or until `stop` resolves (with the signal's
    /// name) between two steps; reports afterwards either way.
    pub async fn run(self, stop: impl Future<Output = &'static str>) -> Result<Cycle> {
        let settings = self.settings;
        let agent = agent(settings)?;
        let next = match in_progress(self.journal, &self.instance.document)? {
            Some(cycle) => Next::Resume(Box::new(cycle)),
            None => {
                if let Some(line) = settings.coordination.backend.announcement() {
                    tracing::warn!("{line}");
                }
                Next::Start(self.instance.resolve(settings, agent.as_ref()).await?)
            }
        };
        let (cluster, instance_id) = match &next {
            Next::Resume(cycle) => (cycle.cluster.clone(), cycle.instance_id.clone()),
            Next::Start(identity) => (identity.cluster.clone(), identity.instance.instance_id.clone()),
        };
        let aws = &self.instance.aws;
        let lifecycle = Ec2Lifecycle::new(aws, self.instance.imds.clone(), &instance_id);
        let ports = ports(settings, aws, &cluster, agent, lifecycle, self.reporting, self.hand_off_reboot)?;
        let machine = Machine::new(&ports, settings, self.journal);
        let machine = match self.schedule {
            Some(schedule) => machine.within(schedule),
            None => machine,
        };
        let result = tokio::select! {
            cycle = next.drive(&machine) => cycle,
            signal = stop => {
                let step = self.journal.load::<Cycle>()?.map_or_else(|| "none".to_string(), |c| c.state.name().to_string());
                Err(Error::Stopped(format!(
                    "stopped by {signal} between two steps (the journal is at step {step}); the next run resumes"
                )))
            }
        };
        self.reporting.after(settings, aws, &instance_id, &ports, setup_error(&result).as_deref()).await;
        result
    }
}

/// The cycle the journal holds in progress, if it is this EC2 instance's. A journal written
/// on another instance (a state directory baked into an image mid-cycle, a cloned volume)
/// is never resumed: its boot id, its container instance and its slot are another host's.
/// It is moved aside for an operator, and said so.
pub fn in_progress(journal: &Journal, this: &InstanceDocument) -> Result<Option<Cycle>> {
    let Some(cycle) = journal.load::<Cycle>()?.filter(|c| !c.state.is_done()) else { return Ok(None) };
    if cycle.instance_id == this.instance_id {
        return Ok(Some(cycle));
    }
    let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    let aside = journal.set_aside(&format!("from-another-instance-{stamp}"))?;
    tracing::warn!(
        "the journal holds cycle {} of another EC2 instance, not {} (a state directory copied from it?): \
         never resumed here; moved aside to {}",
        cycle.id,
        this.instance_id,
        aside.display()
    );
    Ok(None)
}

/// The mistake in the setup (a configuration error, a missing table or permission) that
/// stopped an attempt, whether before its cycle began or at one of its steps.
pub fn setup_error(result: &Result<Cycle>) -> Option<String> {
    match result {
        Err(e @ Error::Config(_)) => Some(e.to_string()),
        Ok(Cycle { state: State::Done { outcome: Outcome::Failed { kind: Kind::Config, reason, .. } }, .. }) => {
            Some(reason.clone())
        }
        _ => None,
    }
}

/// What an attempt does: finish the cycle the journal holds, or start one for this host.
enum Next {
    Resume(Box<Cycle>),
    Start(Identity),
}

impl Next {
    /// Runs the cycle to its end.
    async fn drive(self, machine: &Machine<'_>) -> Result<Cycle> {
        match self {
            Next::Resume(cycle) => {
                tracing::info!(cycle = %cycle.id, step = cycle.state.name(), "resuming the cycle in progress");
                machine.resume(*cycle).await
            }
            Next::Start(identity) => machine.start(&identity).await,
        }
    }
}

/// What `check` shows: identity, pending updates, whether a reboot would follow and what
/// `run` would do. Notes what it found in the record and reports it; changes nothing else.
pub async fn preview(settings: &Settings, schedule: &Schedule) -> Result<Preview> {
    let last = journal::read::<Cycle>(&settings.paths.state_dir)?;
    let this = ThisInstance::find().await?;
    let agent = agent(settings)?;
    let identity = this.resolve(settings, agent.as_ref()).await?;
    let instance_id = identity.instance.instance_id.clone();
    // What the agent said is shown only once ECS confirms it (a cycle confirms it at its start).
    let arn = &identity.container_instance_arn;
    let record = AwsEcs::new(&this.aws, &identity.cluster).describe(arn).await?;
    identity::confirmed(record, arn, &instance_id, &identity.cluster)?;
    let lifecycle = Ec2Lifecycle::new(&this.aws, this.imds.clone(), &instance_id);
    let reporting = Reporting::new(settings, None);
    let ports = ports(settings, &this.aws, &identity.cluster.clone(), agent, lifecycle, &reporting, false)?;
    let preview = check::preview(&ports, settings, identity, last, schedule).await?;
    let mut record = Record::load(&settings.paths.state_dir);
    record.looked(SystemTime::now(), &preview.plan);
    record.save(&settings.paths.state_dir);
    let setup_error = preview.setup_problems.first().map(String::as_str);
    reporting.after(settings, &this.aws, &instance_id, &ports, setup_error).await;
    Ok(preview)
}

/// The maintenance windows of `settings` (validated when the configuration was loaded).
pub fn schedule(settings: &Settings) -> Result<Schedule> {
    Schedule::from_settings(&settings.schedule).map_err(|(key, why)| Error::Config(format!("key `{key}`: {why}")))
}

/// The local ECS agent's introspection client.
fn agent(settings: &Settings) -> Result<Box<dyn Agent>> {
    Ok(Box::new(IntrospectionClient::new(&settings.identity.agent_url, settings.identity.agent_timeout)?))
}

/// The file in the state directory that keeps what this host watched of the lease.
const WATCH_FILE: &str = "lease-watch.json";

/// The real side effects, bound to `cluster`.
fn ports(
    settings: &Settings,
    aws: &aws_config::SdkConfig,
    cluster: &str,
    agent: Box<dyn Agent>,
    lifecycle: Ec2Lifecycle,
    reporting: &Reporting,
    hand_off_reboot: bool,
) -> Result<Ports> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let host = SystemHost::new(settings.host.clone(), settings.paths.boot_id.clone());
    // What this host watched of the lease, kept for its next process in the same boot.
    let watch =
        host.boot_id().ok().map(|boot_id| WatchFile { path: settings.paths.state_dir.join(WATCH_FILE), boot_id });
    let host = if hand_off_reboot { host.handing_off_reboot() } else { host };
    let packages = packages::detect::from_settings(&settings.packages, &settings.paths.os_release)?;
    // The live patch tool beside the package manager: Canonical Livepatch with apt, kpatch
    // with dnf and yum.
    let live: Box<dyn crate::livepatch::LivePatching> = match packages.name() {
        "apt" => Box::new(crate::livepatch::canonical::Canonical::new(&settings.packages.livepatch)),
        _ => Box::new(crate::livepatch::kpatch::Kpatch::new(
            &settings.packages.livepatch,
            &settings.packages.running_kernel,
        )),
    };
    Ok(Ports {
        coordinator: coordination::backend::from_settings(
            &settings.coordination,
            aws,
            cluster,
            Arc::clone(&clock),
            watch,
        )?,
        ecs: Box::new(AwsEcs::new(aws, cluster)),
        agent,
        packages,
        live,
        host: Box::new(host),
        lifecycle: Box::new(lifecycle),
        clock,
        hooks: Box::new(HookDir::new(settings.hooks.clone())),
        reporter: reporting.reporter(settings),
    })
}
