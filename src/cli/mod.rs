//! Command line: parses arguments, runs the command, prints results and maps them to an exit
//! code. The only place that writes to the terminal; the system is assembled by
//! [`ecs_patchd::wiring`].

mod assets;
mod daemon;
mod exit;
mod fleet;
mod logging;
mod output;
mod run;
mod stop;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use ecs_patchd::config::{self, Settings, Source};
use ecs_patchd::cycle::Cycle;
use ecs_patchd::error::{Error, Result};
use ecs_patchd::journal;
use ecs_patchd::report::systemd::DaemonStatus;
use ecs_patchd::wiring;

#[derive(Parser)]
#[command(
    name = "ecs-patchd",
    version,
    about = "Patch a self-managed ECS container instance safely: drain, patch, reboot, return to service.",
    after_long_help = exit::help()
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
    Run(run::RunArgs),
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
struct SimulateArgs {
    /// Hosts in the cluster.
    #[arg(long, default_value_t = 200)]
    hosts: usize,
    /// Service tasks per host (each 256 CPU units, 512 MiB; hosts have 2048 and 8192).
    #[arg(long, default_value_t = 4)]
    tasks: usize,
    /// Hosts (the first ones) that also run a task with a static host port (80/tcp): such a
    /// task can only move to a host where that port is free.
    #[arg(long, default_value_t = 0)]
    edge_hosts: usize,
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
    /// Seconds from the start during which ECS throttles every write of every host (a
    /// sustained throttle: the steps that meet it stop their run, which is tried again).
    #[arg(long, default_value_t = 0)]
    ecs_outage: u64,
    /// Probability, per host, that its service is slow to recover once it is back (a task
    /// short for 20 minutes, past the 10-minute recovery timeout).
    #[arg(long, default_value_t = 0.0)]
    slow_recovery: f64,
    /// Every week's update is an ECS agent release alone, installed in place, whose agent
    /// never connects once restarted.
    #[arg(long)]
    bad_agent_release: bool,
    /// Weekly rolls to run one after the other.
    #[arg(long, default_value_t = 1)]
    weeks: usize,
    /// One week in this many carries a kernel update (drain, reboot); the others a userland
    /// update, installed in place.
    #[arg(long, default_value_t = 1)]
    kernel_every: usize,
    /// Kernel fixes stay offered from week to week, and all but one in N come as a live patch
    /// too: the report compares the same roll with live patching and without (0: off).
    #[arg(long, default_value_t = 0)]
    livepatch_misses: usize,
    /// With --livepatch-misses: how long a kernel whose fixes live patches cover waits for its
    /// reboot (packages.kernel_reboot_within).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    kernel_reboot_within: std::time::Duration,
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
            Command::Run(args) => run::run(settings, args).await,
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
        return ExitCode::from(exit::SSM_REBOOT);
    }
    ExitCode::from(exit::code(error.kind(), error.is_temporary()))
}

async fn check(settings: &Settings, json: bool) -> Result<ExitCode> {
    let preview = wiring::preview(settings, &wiring::schedule(settings)?).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&preview).expect("preview serializes"));
    } else {
        print!("{}", output::preview(&preview));
    }
    // A mistake in the setup is shown with the rest, and the exit code says it too.
    Ok(if preview.setup_problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(exit::CONFIG) })
}

fn simulate(args: &SimulateArgs) -> Result<ExitCode> {
    use ecs_patchd::coordination::policy::Budget;
    use ecs_patchd::coordination::store::StalePolicy;
    use ecs_patchd::sim::kernels::LivePatchRun;
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
        edge_hosts: args.edge_hosts,
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
            ecs_outage: std::time::Duration::from_secs(args.ecs_outage),
            slow_recovery: args.slow_recovery,
            bad_agent_release: args.bad_agent_release,
        },
        weeks: args.weeks,
        kernel_every: args.kernel_every,
        alarm: (args.alarm_at > 0).then(|| {
            let from = std::time::Duration::from_secs(args.alarm_at);
            (from, from + std::time::Duration::from_secs(args.alarm_for))
        }),
        livepatch: None,
    };
    let live = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !args.json;
    let started = std::time::Instant::now();
    let simulate = |options: &Options| {
        let report = ecs_patchd::sim::simulate(options, &mut |p| {
            if live {
                eprint!("\r{}", output::sim_progress(p));
            }
        });
        if live {
            eprintln!();
        }
        report
    };
    if args.livepatch_misses > 0 {
        // The same roll twice: kernels reboot every time, then live patches let them wait.
        let without = LivePatchRun { misses: 0, reboot_within: None };
        let with = LivePatchRun { misses: args.livepatch_misses, reboot_within: Some(args.kernel_reboot_within) };
        let plain = simulate(&Options { livepatch: Some(without), ..options.clone() })?;
        let patched = simulate(&Options { livepatch: Some(with), ..options })?;
        if args.json {
            let both = serde_json::json!({ "without_live_patching": plain, "with_live_patching": patched });
            println!("{}", serde_json::to_string_pretty(&both).expect("report serializes"));
        } else {
            print!("{}", output::sim_report(&patched, started.elapsed()));
            print!("{}", output::live_patch_comparison(&plain, &patched));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = simulate(&options)?;
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
    let live = ecs_patchd::report::record::Record::load(&settings.paths.state_dir).livepatch;
    let now = std::time::SystemTime::now();
    if json {
        println!("{}", output::status_json(cycle.as_ref(), daemon.as_ref(), live.as_ref(), now));
    } else {
        print!("{}", output::status(cycle.as_ref(), daemon.as_ref(), live.as_ref(), now));
    }
    Ok(ExitCode::SUCCESS)
}
