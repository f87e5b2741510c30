//! Command line: parses arguments, wires the real side effects, prints results.
//! The only place that writes to the terminal.

mod logging;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use aws_config::BehaviorVersion;
use clap::{Parser, Subcommand};

use ecs_patchd::agent::{Agent, IntrospectionClient};
use ecs_patchd::clock::{Clock, SystemClock};
use ecs_patchd::config::{self, Settings, Source};
use ecs_patchd::coordination;
use ecs_patchd::cycle::{Cycle, Machine, Outcome, Ports, State};
use ecs_patchd::ecs::{AwsEcs, Ecs};
use ecs_patchd::error::{Error, Kind, Result};
use ecs_patchd::host::SystemHost;
use ecs_patchd::identity::{self, Identity, InstanceDocument, Lookup};
use ecs_patchd::journal::{self, Journal};
use ecs_patchd::packages;

/// Exit code: a cycle failed (the host was put back in service if it had been drained).
const EXIT_FAILED: u8 = 1;
/// Exit code: try again later (another cycle running, instance drained by someone else,
/// ECS throttling or unreachable).
const EXIT_TEMPORARY: u8 = 75;
/// Exit code: the configuration is invalid.
const EXIT_CONFIG: u8 = 78;

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
    /// Run one cycle now in the foreground (or resume the one in progress).
    Run,
    /// Print the effective configuration (defaults merged with every file read), as TOML.
    Config,
    /// Show the cycle journal: step, since when, last result.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Parses arguments, runs the command, and maps the result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = matches!(cli.command, Command::Run);
    if let Err(e) = logging::init(verbose) {
        eprintln!("ecs-patchd: cannot set up logging: {e}");
    }
    let source = cli
        .config
        .clone()
        .map_or_else(Source::default, Source::Explicit);
    let settings = match config::load(&source) {
        Ok(settings) => settings,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&Error::Host(format!("cannot start the async runtime: {e}"))),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Check { json } => check(&settings, json).await,
            Command::Run => run(&settings).await,
            Command::Config => show_config(&settings),
            Command::Status { json } => status(&settings, json),
        }
    });
    result.unwrap_or_else(|e| fail(&e))
}

fn fail(error: &Error) -> ExitCode {
    eprintln!("ecs-patchd: {error}");
    ExitCode::from(exit_code(error.kind(), error.is_temporary()))
}

fn exit_code(kind: Kind, temporary: bool) -> u8 {
    match kind {
        Kind::Config => EXIT_CONFIG,
        Kind::Busy | Kind::NotOurs | Kind::Paused => EXIT_TEMPORARY,
        _ if temporary => EXIT_TEMPORARY,
        _ => EXIT_FAILED,
    }
}

async fn run(settings: &Settings) -> Result<ExitCode> {
    let journal = open_journal(settings)?;
    let in_progress = journal.load::<Cycle>()?.filter(|c| !c.state.is_done());
    let instance = instance_document().await?;
    let aws = aws_config(&instance.region).await;
    let agent = agent(settings)?;
    let (cluster, identity) = match &in_progress {
        Some(cycle) => (cycle.cluster.clone(), None),
        None => {
            let identity = resolve(settings, &aws, instance, agent.as_ref()).await?;
            (identity.cluster.clone(), Some(identity))
        }
    };
    let ports = ports(settings, &aws, &cluster, agent)?;
    let machine = Machine::new(&ports, settings, &journal);
    let cycle = match (in_progress, identity) {
        (Some(cycle), _) => {
            tracing::info!(cycle = %cycle.id, step = cycle.state.name(), "resuming the cycle in progress");
            machine.resume(cycle).await?
        }
        (None, Some(identity)) => machine.start(&identity).await?,
        (None, None) => unreachable!("an identity is resolved whenever no cycle is in progress"),
    };
    println!(
        "{}",
        output::run_summary(&cycle, std::time::SystemTime::now())
    );
    Ok(ExitCode::from(match &cycle.state {
        State::Done {
            outcome: Outcome::Failed { kind, .. },
        } => exit_code(*kind, false),
        _ => 0,
    }))
}

async fn check(settings: &Settings, json: bool) -> Result<ExitCode> {
    let in_progress =
        journal::read::<Cycle>(&settings.paths.state_dir)?.filter(|c| !c.state.is_done());
    let instance = instance_document().await?;
    let aws = aws_config(&instance.region).await;
    let agent = agent(settings)?;
    let identity = resolve(settings, &aws, instance, agent.as_ref()).await?;
    let ports = ports(settings, &aws, &identity.cluster.clone(), agent)?;
    let preview = ecs_patchd::check::preview(&ports, settings, identity, in_progress).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&preview).expect("preview serializes")
        );
    } else {
        print!("{}", output::preview(&preview));
    }
    Ok(ExitCode::SUCCESS)
}

fn show_config(settings: &Settings) -> Result<ExitCode> {
    let text = toml::to_string(settings)
        .map_err(|e| Error::Config(format!("cannot print the configuration: {e}")))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn status(settings: &Settings, json: bool) -> Result<ExitCode> {
    let cycle = journal::read::<Cycle>(&settings.paths.state_dir)?;
    let now = std::time::SystemTime::now();
    if json {
        println!("{}", output::status_json(cycle.as_ref(), now));
    } else {
        print!("{}", output::status(cycle.as_ref(), now));
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

async fn instance_document() -> Result<InstanceDocument> {
    identity::instance_document(&aws_config::imds::Client::builder().build()).await
}

async fn aws_config(region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .load()
        .await
}

fn agent(settings: &Settings) -> Result<Box<dyn Agent>> {
    Ok(Box::new(IntrospectionClient::new(
        &settings.identity.agent_url,
        settings.identity.agent_timeout,
    )?))
}

async fn resolve(
    settings: &Settings,
    aws: &aws_config::SdkConfig,
    instance: InstanceDocument,
    agent: &dyn Agent,
) -> Result<Identity> {
    let lookup = Lookup {
        agent,
        pinned_cluster: &settings.identity.cluster,
        ecs_config: &settings.paths.ecs_config,
    };
    identity::resolve(instance, lookup, |cluster| {
        Box::new(AwsEcs::new(aws, cluster)) as Box<dyn Ecs>
    })
    .await
}

fn ports(
    settings: &Settings,
    aws: &aws_config::SdkConfig,
    cluster: &str,
    agent: Box<dyn Agent>,
) -> Result<Ports> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Ok(Ports {
        coordinator: coordination::from_settings(
            &settings.coordination,
            aws,
            cluster,
            Arc::clone(&clock),
        )?,
        ecs: Box::new(AwsEcs::new(aws, cluster)),
        agent,
        packages: packages::from_settings(&settings.packages, &settings.paths.os_release)?,
        host: Box::new(SystemHost::new(
            settings.host.clone(),
            settings.paths.boot_id.clone(),
        )),
        clock,
    })
}
