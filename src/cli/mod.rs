//! Command line: parses arguments, wires the real side effects, prints results.
//! The only place that writes to the terminal.

mod assets;
mod daemon;
mod fleet;
mod logging;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};

use ecs_patchd::agent::{Agent, IntrospectionClient};
use ecs_patchd::clock::{Clock, SystemClock};
use ecs_patchd::config::{self, Settings, Source};
use ecs_patchd::coordination;
use ecs_patchd::cycle::{Cycle, Machine, Outcome, Ports, State};
use ecs_patchd::ecs::{AwsEcs, Ecs};
use ecs_patchd::error::{Error, Kind, Result};
use ecs_patchd::hooks::HookDir;
use ecs_patchd::host::SystemHost;
use ecs_patchd::identity::{self, Identity, InstanceDocument, Lookup};
use ecs_patchd::journal::{self, Journal};
use ecs_patchd::lifecycle::Ec2Lifecycle;
use ecs_patchd::packages;
use ecs_patchd::report::record::{self, Record};
use ecs_patchd::report::ssm::SsmReport;
use ecs_patchd::report::systemd::{DaemonStatus, StatusLine};
use ecs_patchd::report::webhook::Webhook;
use ecs_patchd::report::{Fanout, Reporter, metrics};

/// Exit code: a cycle failed (the host was put back in service if it had been drained).
const EXIT_FAILED: u8 = 1;
/// Exit code: try again later (another cycle running, instance drained by someone else,
/// ECS throttling or unreachable).
const EXIT_TEMPORARY: u8 = 75;
/// Exit code: the configuration is invalid.
const EXIT_CONFIG: u8 = 78;
/// Exit code: reboot the host and run this step again (the SSM agent's convention for a
/// Run Command step on Linux).
const EXIT_SSM_REBOOT: u8 = 194;

#[derive(Parser)]
#[command(
    name = "ecs-patchd",
    version,
    about = "Patch a self-managed ECS container instance safely: drain, patch, reboot, return to service."
)]
struct Cli {
    /// Read only this configuration file (instead of /etc/ecs-patchd/config.toml and config.d/*.toml).
    #[arg(long, global = true, env = "ECS_PATCHD_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show identity, pending updates, whether a reboot would follow, and what `run` would do. Changes nothing.
    Check {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run one cycle now in the foreground (or resume the one in progress, or follow the
    /// daemon's until it ends).
    Run(RunArgs),
    /// Run as a service: resume a cycle in progress, then check for updates on a jittered
    /// interval and patch inside the maintenance windows (systemd Type=notify).
    Daemon,
    /// Print the effective configuration (defaults merged with every file read), as TOML.
    Config,
    /// Run the real cycle and lease code for many hosts against a simulated cluster on a virtual clock.
    Simulate(SimulateArgs),
    /// See and steer the cluster's roll (backend dynamodb; `release` also for fleetlock).
    Fleet {
        /// The cluster (default: identity.cluster, then ECS_CLUSTER in ecs.config).
        #[arg(long)]
        cluster: Option<String>,
        #[command(subcommand)]
        command: fleet::FleetCommand,
    },
    /// Show the cycle journal: step, since when, last result.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write the man pages and shell completions under DIR (for packaging).
    #[command(hide = true)]
    Assets {
        /// Where to write man/ and completions/.
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Only finish a cycle in progress (after a reboot); with none, exit 0 at once.
    #[arg(long)]
    resume_only: bool,
    /// Start even outside the maintenance windows.
    #[arg(long)]
    now: bool,
    /// Leave the reboot to the SSM agent: exit 194 at the reboot point, and finish the cycle
    /// when run again after the boot. The default when run by SSM Run Command (the agent
    /// sets AWS_SSM_INSTANCE_ID).
    #[arg(long)]
    ssm: bool,
    /// Override packages.reboot for this run: if-needed, always or never.
    #[arg(long, value_name = "POLICY")]
    reboot: Option<String>,
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Hosts in the cluster.
    #[arg(long, default_value_t = 200)]
    hosts: usize,
    /// Service tasks per host (each 256 CPU units, 512 MiB; hosts have 2048 and 8192).
    #[arg(long, default_value_t = 4)]
    tasks: usize,
    /// Availability zones.
    #[arg(long, default_value_t = 3)]
    zones: usize,
    /// Hosts out at once: a count or a percentage ("10%").
    #[arg(long, default_value = "10")]
    max_unavailable: String,
    /// Share of hosts that must stay in service.
    #[arg(long, default_value_t = 0)]
    min_healthy_percent: u32,
    /// Only hosts of one zone out at a time.
    #[arg(long)]
    one_az_at_a_time: bool,
    /// Stale leases: pause or reclaim.
    #[arg(long, default_value = "pause")]
    on_stale_lease: String,
    /// Seed of every random choice (the same seed replays the same run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Hosts start at random within this many seconds (as the timer's random delay spreads them).
    #[arg(long, default_value_t = 600)]
    start_within: u64,
    /// Probability, per host, that the daemon is killed once mid-cycle.
    #[arg(long, default_value_t = 0.0)]
    crash: f64,
    /// Probability, per host, that the install fails.
    #[arg(long, default_value_t = 0.0)]
    failed_install: f64,
    /// Probability, per host, that its tasks take ten times longer to leave.
    #[arg(long, default_value_t = 0.0)]
    slow_drain: f64,
    /// Probability, per host, that it reboots and never comes back.
    #[arg(long, default_value_t = 0.0)]
    never_returns: f64,
    /// Probability that DynamoDB throttles a lease-store request (on top of its per-key limits).
    #[arg(long, default_value_t = 0.0)]
    throttling: f64,
    /// Probability, per host, that its service is slow to recover once it is back (a task
    /// short for 20 minutes, past the 10-minute recovery timeout).
    #[arg(long, default_value_t = 0.0)]
    slow_recovery: f64,
    /// Weekly rolls to run one after the other.
    #[arg(long, default_value_t = 1)]
    weeks: usize,
    /// One week in this many carries a kernel update (drain, reboot); the others a userland
    /// update, installed in place.
    #[arg(long, default_value_t = 1)]
    kernel_every: usize,
    /// A watched CloudWatch alarm fires this many seconds after the start (0: never)...
    #[arg(long, default_value_t = 0)]
    alarm_at: u64,
    /// ...for this many seconds.
    #[arg(long, default_value_t = 600)]
    alarm_for: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Parses arguments, runs the command, and maps the result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = matches!(cli.command, Command::Run(_) | Command::Daemon);
    if let Err(e) = logging::init(verbose) {
        eprintln!("ecs-patchd: cannot set up logging: {e}");
    }
    let result = match &cli.command {
        // The simulator reads no configuration and runs its own virtual-time runtime.
        Command::Simulate(args) => simulate(args),
        Command::Assets { dir } => assets::write(Cli::command(), dir).map(|()| ExitCode::SUCCESS),
        command => on_this_host(command, cli.config.clone()),
    };
    result.unwrap_or_else(|e| fail(&e))
}

/// The commands about this host: configuration first, then the command on a runtime.
fn on_this_host(command: &Command, config: Option<PathBuf>) -> Result<ExitCode> {
    let source = config.map_or_else(Source::default, Source::Explicit);
    let settings = config::load(&source)?;
    // One thread: the work is waiting (on AWS, the agent, the package manager), and an idle
    // daemon then wakes one thread per timer, not a pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Host(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        match command {
            Command::Check { json } => check(&settings, *json).await,
            Command::Run(args) => run(settings, args).await,
            Command::Daemon => daemon::run(source, settings).await,
            Command::Config => show_config(&settings),
            Command::Status { json } => status(&settings, *json),
            Command::Fleet { cluster, command } => fleet::run(&settings, cluster.clone(), command).await,
            Command::Simulate(_) | Command::Assets { .. } => unreachable!("main runs these without a configuration"),
        }
    })
}

fn fail(error: &Error) -> ExitCode {
    eprintln!("ecs-patchd: {error}");
    if let Error::RebootHandedOff(_) = error {
        return ExitCode::from(EXIT_SSM_REBOOT);
    }
    ExitCode::from(exit_code(error.kind(), error.is_temporary()))
}

fn exit_code(kind: Kind, temporary: bool) -> u8 {
    match kind {
        Kind::Config => EXIT_CONFIG,
        Kind::Busy | Kind::NotOurs | Kind::Paused | Kind::Deferred | Kind::Stopped => EXIT_TEMPORARY,
        _ if temporary => EXIT_TEMPORARY,
        _ => EXIT_FAILED,
    }
}

/// What `run` does: finish the cycle the journal holds, or start one for this host.
enum Next {
    Resume(Box<Cycle>),
    Start(Identity),
}

/// How long `run` waits between two looks at a cycle it follows (a small file read).
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// How following another process's cycle ended.
enum Followed {
    /// The cycle seen in progress ended.
    Ended(Box<Cycle>),
    /// The holder let the journal go without ending a cycle we saw (it stopped mid-way, or
    /// was still planning): it is ours now.
    Released(Journal),
}

async fn run(mut settings: Settings, args: &RunArgs) -> Result<ExitCode> {
    if let Some(policy) = &args.reboot {
        settings.packages.reboot = serde_json::from_value(serde_json::Value::String(policy.clone()))
            .map_err(|_| Error::Config(format!("--reboot {policy}: must be if-needed, always or never")))?;
    }
    let settings = &settings;
    let began = std::time::SystemTime::now();
    let journal = match open_journal(settings) {
        Ok(journal) => journal,
        Err(Error::Busy(message)) if !args.resume_only => {
            if args.now || args.reboot.is_some() || args.ssm {
                tracing::warn!("--now, --reboot and --ssm apply to a cycle this run starts, not to the one it follows");
            }
            let followed = tokio::select! {
                followed = follow(settings, &message) => followed?,
                signal = stop_requested() => return Err(Error::Stopped(format!("stopped by {signal} while following {message}"))),
            };
            match followed {
                // The cycle we followed has ended: its outcome is ours.
                Followed::Ended(done) => {
                    println!("{}", output::run_summary(&done, std::time::SystemTime::now()));
                    return Ok(outcome_code(&done));
                }
                // Its owner stopped mid-way: resume it here (or start one, if it had none).
                Followed::Released(journal) => journal,
            }
        }
        Err(e) => return Err(e),
    };
    let in_progress = journal.load::<Cycle>()?.filter(|c| !c.state.is_done());
    if args.resume_only && in_progress.is_none() {
        tracing::info!("no cycle in progress: nothing to resume");
        return Ok(ExitCode::SUCCESS);
    }
    let schedule = schedule(settings)?;
    if in_progress.is_none()
        && !args.now
        && let ecs_patchd::window::Openness::ClosedUntil(opens) = schedule.at(began)
    {
        return Err(Error::Deferred(format!(
            "outside the maintenance window: no cycle is started (the next window opens {}; --now starts one anyway)",
            schedule.local(opens)
        )));
    }
    let (imds, instance, aws) = this_instance().await?;
    let agent = agent(settings)?;
    let next = match in_progress {
        Some(cycle) => Next::Resume(Box::new(cycle)),
        None => Next::Start(resolve(settings, &aws, instance, agent.as_ref()).await?),
    };
    let (cluster, instance_id) = match &next {
        Next::Resume(cycle) => (cycle.cluster.clone(), cycle.instance_id.clone()),
        Next::Start(identity) => (identity.cluster.clone(), identity.instance.instance_id.clone()),
    };
    let hand_off_reboot = args.ssm || std::env::var_os("AWS_SSM_INSTANCE_ID").is_some();
    let reporting = Reporting::new(settings, None);
    let lifecycle = Ec2Lifecycle::new(&aws, imds, &instance_id);
    let ports = ports(settings, &aws, &cluster, agent, lifecycle, &reporting, hand_off_reboot)?;
    let machine = Machine::new(&ports, settings, &journal);
    let machine = if args.now { machine } else { machine.within(schedule) };
    let result = tokio::select! {
        cycle = drive(&machine, next) => cycle,
        signal = stop_requested() => {
            let step = journal.load::<Cycle>()?.map_or_else(|| "none".to_string(), |c| c.state.name().to_string());
            Err(Error::Stopped(format!(
                "stopped by {signal} between two steps (the journal is at step {step}); the next run resumes"
            )))
        }
    };
    reporting.after(settings, &aws, &instance_id, &ports).await;
    let cycle = result?;
    println!("{}", output::run_summary(&cycle, std::time::SystemTime::now()));
    Ok(outcome_code(&cycle))
}

/// Runs `next` to its end.
async fn drive(machine: &Machine<'_>, next: Next) -> Result<Cycle> {
    match next {
        Next::Resume(cycle) => {
            tracing::info!(cycle = %cycle.id, step = cycle.state.name(), "resuming the cycle in progress");
            machine.resume(*cycle).await
        }
        Next::Start(identity) => machine.start(&identity).await,
    }
}

/// The exit code of a finished cycle.
fn outcome_code(cycle: &Cycle) -> ExitCode {
    ExitCode::from(match &cycle.state {
        State::Done { outcome: Outcome::Failed { kind, .. } } => exit_code(*kind, false),
        _ => 0,
    })
}

/// Follows the cycle of the process holding the journal (the daemon) until that cycle
/// ends, or until the holder lets the journal go. The holder may still be planning when
/// the wait begins: the cycle followed is the first seen in progress.
async fn follow(settings: &Settings, holder: &str) -> Result<Followed> {
    tracing::info!("{holder}; following it until it ends");
    let dir = &settings.paths.state_dir;
    let mut followed: Option<String> = None;
    let mut said = String::new();
    loop {
        if let Ok(Some(cycle)) = journal::read::<Cycle>(dir) {
            match &followed {
                Some(id) if *id == cycle.id && cycle.state.is_done() => return Ok(Followed::Ended(Box::new(cycle))),
                None if !cycle.state.is_done() => followed = Some(cycle.id.clone()),
                _ => {}
            }
            let step = format!("cycle {} is at step {}", cycle.id, cycle.state.name());
            if followed.is_some() && step != said {
                tracing::info!("{step}");
                said = step;
            }
        }
        match Journal::open(dir) {
            // Read once more under the lock: the cycle may have ended since the last look.
            Ok(journal) => {
                return Ok(match journal.load::<Cycle>()? {
                    Some(done) if done.state.is_done() && followed.as_deref() == Some(done.id.as_str()) => {
                        Followed::Ended(Box::new(done))
                    }
                    _ => Followed::Released(journal),
                });
            }
            Err(Error::Busy(_)) => {}
            Err(e) => return Err(e),
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// The maintenance windows of `settings` (validated when the configuration was loaded).
fn schedule(settings: &Settings) -> Result<ecs_patchd::window::Schedule> {
    ecs_patchd::window::Schedule::from_settings(&settings.schedule)
        .map_err(|(key, why)| Error::Config(format!("key `{key}`: {why}")))
}

/// The reporters a command wires into the cycle, and what it reports once it is done.
pub(crate) struct Reporting {
    webhook: Option<Arc<Webhook>>,
    status: Option<Arc<StatusLine>>,
}

impl Reporting {
    /// The reporters `settings` ask for; `status` is the daemon's status line.
    fn new(settings: &Settings, status: Option<Arc<StatusLine>>) -> Self {
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
        let mut all: Vec<Box<dyn Reporter>> = vec![Box::new(record::Keeper::new(&settings.paths.state_dir, textfile))];
        if let Some(webhook) = &self.webhook {
            all.push(Box::new(Arc::clone(webhook)));
        }
        if let Some(status) = &self.status {
            all.push(Box::new(Arc::clone(status)));
        }
        Box::new(Fanout(all))
    }

    /// After a check or a cycle: notes the agent's version, rewrites the metrics textfile,
    /// sends SSM compliance and inventory, and waits for the webhook's posts. Failures are
    /// logged; none changes the command's result.
    async fn after(&self, settings: &Settings, aws: &aws_config::SdkConfig, instance_id: &str, ports: &Ports) {
        let dir = &settings.paths.state_dir;
        let mut record = Record::load(dir);
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

async fn check(settings: &Settings, json: bool) -> Result<ExitCode> {
    let in_progress = journal::read::<Cycle>(&settings.paths.state_dir)?.filter(|c| !c.state.is_done());
    let (imds, instance, aws) = this_instance().await?;
    let agent = agent(settings)?;
    let identity = resolve(settings, &aws, instance, agent.as_ref()).await?;
    let instance_id = identity.instance.instance_id.clone();
    let lifecycle = Ec2Lifecycle::new(&aws, imds, &instance_id);
    let reporting = Reporting::new(settings, None);
    let ports = ports(settings, &aws, &identity.cluster.clone(), agent, lifecycle, &reporting, false)?;
    let preview = ecs_patchd::check::preview(&ports, settings, identity, in_progress, &schedule(settings)?).await?;
    let mut record = Record::load(&settings.paths.state_dir);
    record.checked(std::time::SystemTime::now(), preview.plan.updates.clone(), preview.plan.needs_reboot());
    record.release = preview.plan.releases.as_ref().map(|r| r.running.clone()).or(record.release);
    record.save(&settings.paths.state_dir);
    reporting.after(settings, &aws, &instance_id, &ports).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&preview).expect("preview serializes"));
    } else {
        print!("{}", output::preview(&preview));
    }
    Ok(ExitCode::SUCCESS)
}

fn simulate(args: &SimulateArgs) -> Result<ExitCode> {
    use ecs_patchd::coordination::policy::Budget;
    use ecs_patchd::coordination::store::StalePolicy;
    use ecs_patchd::sim::{Faults, Options};
    let bad = |what: &str| Error::Config(format!("simulate: {what}"));
    let max_unavailable = Budget::parse(&args.max_unavailable)
        .ok_or_else(|| bad("--max-unavailable takes a count such as 10 or a percentage such as 5%"))?;
    let on_stale_lease = match args.on_stale_lease.as_str() {
        "pause" => StalePolicy::Pause,
        "reclaim" => StalePolicy::Reclaim,
        _ => return Err(bad("--on-stale-lease is pause or reclaim")),
    };
    let rates =
        [args.crash, args.failed_install, args.slow_drain, args.never_returns, args.throttling, args.slow_recovery];
    if rates.iter().any(|r| !(0.0..=1.0).contains(r)) {
        return Err(bad("fault rates are probabilities between 0 and 1"));
    }
    if args.hosts == 0 {
        return Err(bad("--hosts must be at least 1"));
    }
    if args.weeks == 0 || args.kernel_every == 0 {
        return Err(bad("--weeks and --kernel-every must be at least 1"));
    }
    let options = Options {
        hosts: args.hosts,
        tasks_per_host: args.tasks,
        zones: args.zones.max(1),
        max_unavailable,
        min_healthy_percent: args.min_healthy_percent,
        one_az_at_a_time: args.one_az_at_a_time,
        on_stale_lease,
        seed: args.seed,
        start_within: std::time::Duration::from_secs(args.start_within),
        faults: Faults {
            crash: args.crash,
            failed_install: args.failed_install,
            slow_drain: args.slow_drain,
            never_returns: args.never_returns,
            throttling: args.throttling,
            slow_recovery: args.slow_recovery,
        },
        weeks: args.weeks,
        kernel_every: args.kernel_every,
        alarm: (args.alarm_at > 0).then(|| {
            let from = std::time::Duration::from_secs(args.alarm_at);
            (from, from + std::time::Duration::from_secs(args.alarm_for))
        }),
    };
    let live = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !args.json;
    let started = std::time::Instant::now();
    let report = ecs_patchd::sim::simulate(&options, &mut |p| {
        if live {
            eprint!("\r{}", output::sim_progress(p));
        }
    })?;
    if live {
        eprintln!();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
    } else {
        print!("{}", output::sim_report(&report, started.elapsed()));
    }
    Ok(ExitCode::SUCCESS)
}

fn show_config(settings: &Settings) -> Result<ExitCode> {
    let mut shown = settings.clone();
    shown.coordination.fleetlock_url = config::redact_url(&shown.coordination.fleetlock_url);
    shown.report.webhook_url = config::redact_path(&shown.report.webhook_url);
    let text = toml::to_string(&shown).map_err(|e| Error::Config(format!("cannot print the configuration: {e}")))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn status(settings: &Settings, json: bool) -> Result<ExitCode> {
    let cycle = journal::read::<Cycle>(&settings.paths.state_dir)?;
    let daemon = DaemonStatus::read(&settings.paths.state_dir);
    let now = std::time::SystemTime::now();
    if json {
        println!("{}", output::status_json(cycle.as_ref(), daemon.as_ref(), now));
    } else {
        print!("{}", output::status(cycle.as_ref(), daemon.as_ref(), now));
    }
    Ok(ExitCode::SUCCESS)
}

/// Takes the state directory's lock; when busy, says which cycle holds it.
fn open_journal(settings: &Settings) -> Result<Journal> {
    let dir = &settings.paths.state_dir;
    Journal::open(dir).map_err(|e| match e {
        Error::Busy(message) => match journal::read::<Cycle>(dir) {
            Ok(Some(cycle)) => Error::Busy(format!(
                "{message}: cycle {} is at step {} since {}",
                cycle.id,
                cycle.state.name(),
                humantime::format_rfc3339_seconds(cycle.entered_at)
            )),
            _ => Error::Busy(message),
        },
        other => other,
    })
}

/// Waits for SIGTERM (systemd stopping the unit) or SIGINT (Ctrl-C), asks the cycle to
/// stop at the next safe point, and resolves once no package transaction runs: a
/// transaction in flight is awaited (up to `packages.command_timeout`), never killed.
async fn stop_requested() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::warn!("cannot listen for SIGTERM and SIGINT: a stop will not wait for a package transaction");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    stop_safely(name).await
}

/// Asks the cycle to stop at the next safe point (after `signal`), and resolves once no
/// package transaction runs.
async fn stop_safely(name: &'static str) -> &'static str {
    ecs_patchd::shutdown::request();
    if ecs_patchd::shutdown::in_transaction() {
        tracing::warn!("{name}: letting the package transaction in progress finish before stopping");
    }
    ecs_patchd::shutdown::quiet().await;
    name
}

/// IMDS, this instance's identity document, and the AWS configuration for its region, whose
/// credentials are checked once, before any step.
async fn this_instance() -> Result<(aws_config::imds::Client, InstanceDocument, aws_config::SdkConfig)> {
    let imds = ecs_patchd::aws::imds();
    let instance = identity::instance_document(&imds).await?;
    let aws = aws_config(&instance.region).await;
    ecs_patchd::aws::check_credentials(&aws).await?;
    Ok((imds, instance, aws))
}

async fn aws_config(region: &str) -> aws_config::SdkConfig {
    ecs_patchd::aws::config_loader().region(aws_config::Region::new(region.to_string())).load().await
}

fn agent(settings: &Settings) -> Result<Box<dyn Agent>> {
    Ok(Box::new(IntrospectionClient::new(&settings.identity.agent_url, settings.identity.agent_timeout)?))
}

async fn resolve(
    settings: &Settings,
    aws: &aws_config::SdkConfig,
    instance: InstanceDocument,
    agent: &dyn Agent,
) -> Result<Identity> {
    let lookup = Lookup { agent, pinned_cluster: &settings.identity.cluster, ecs_config: &settings.paths.ecs_config };
    identity::resolve(instance, lookup, |cluster| Box::new(AwsEcs::new(aws, cluster)) as Box<dyn Ecs>).await
}

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
    let host = if hand_off_reboot { host.handing_off_reboot() } else { host };
    Ok(Ports {
        coordinator: coordination::from_settings(&settings.coordination, aws, cluster, Arc::clone(&clock))?,
        ecs: Box::new(AwsEcs::new(aws, cluster)),
        agent,
        packages: packages::from_settings(&settings.packages, &settings.paths.os_release)?,
        host: Box::new(host),
        lifecycle: Box::new(lifecycle),
        clock,
        hooks: Box::new(HookDir::new(settings.hooks.clone())),
        reporter: reporting.reporter(settings),
    })
}
