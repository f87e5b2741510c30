//! `ecs-patchd fleet ...`: see and steer the roll of a cluster from any host or laptop.

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use serde::Serialize;

use ecs_patchd::check::WindowView;
use ecs_patchd::clock::{Clock, SystemClock};
use ecs_patchd::config::{Backend, Settings};
use ecs_patchd::coordination::fleetlock::FleetLock;
use ecs_patchd::coordination::store::StoreCoordinator;
use ecs_patchd::coordination::store::operator::GroupView;
use ecs_patchd::coordination::{self, Coordinator, Grant};
use ecs_patchd::ecs::{AwsEcs, ContainerInstance, Ecs};
use ecs_patchd::error::{Error, Result};
use ecs_patchd::foreign::shown;
use ecs_patchd::identity;

/// The fleet commands.
#[derive(Subcommand)]
pub enum FleetCommand {
    /// Slot holders (step, age, lease), waiting hosts, the pause, and the cluster's instances.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Halt the roll: no host starts a new cycle until `fleet resume`.
    Pause {
        /// Why (shown to every host and in `fleet status`).
        #[arg(long)]
        reason: String,
    },
    /// Lift a pause.
    Resume,
    /// Free the slot an instance holds (for a host that will not come back).
    Release {
        /// The EC2 instance id holding the slot.
        instance: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs a fleet command for `cluster` (or the one this host belongs to).
pub async fn run(settings: &Settings, cluster: Option<String>, command: &FleetCommand) -> Result<ExitCode> {
    let cluster = match cluster.or_else(|| Some(settings.identity.cluster.clone()).filter(|c| !c.is_empty())) {
        Some(cluster) => cluster,
        None => identity::cluster_from_ecs_config(&settings.paths.ecs_config)
            .map_err(|e| Error::Config(format!("name the cluster with --cluster or identity.cluster ({e})")))?,
    };
    let aws = ecs_patchd::aws::config_loader().load().await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let c = &settings.coordination;
    match c.backend {
        Backend::None | Backend::ReportOnly => Err(Error::Config(format!(
            "coordination.backend is \"{}\": hosts do not share slots, so there is no fleet to show or steer",
            c.backend.name()
        ))),
        Backend::Fleetlock => {
            let local = ecs_patchd::coordination::Local::new(c.policy(), clock, None);
            let lock = FleetLock::new(&c.fleetlock_url, &c.group, local, Duration::from_secs(10))?;
            match command {
                FleetCommand::Release { instance, yes } => {
                    confirm(&format!("Release the FleetLock slot of {instance} in group {}?", c.group), *yes)?;
                    lock.release(&Grant::unfenced(&c.group), instance).await?;
                    println!("released the slot of {instance}");
                    Ok(ExitCode::SUCCESS)
                }
                _ => Err(Error::Config(
                    "the FleetLock protocol has no status or pause; only `fleet release` works with backend \"fleetlock\"".into(),
                )),
            }
        }
        Backend::Dynamodb => {
            let store = coordination::backend::store_coordinator(c, &aws, &cluster, clock);
            let window = WindowView::new(&ecs_patchd::wiring::schedule(settings)?, SystemTime::now());
            store_command(&store, &AwsEcs::new(&aws, &cluster), &window, command).await
        }
    }
}

async fn store_command(
    store: &StoreCoordinator,
    ecs: &dyn Ecs,
    window: &WindowView,
    command: &FleetCommand,
) -> Result<ExitCode> {
    match command {
        FleetCommand::Status { json } => {
            let view = store.view().await?;
            let instances = ecs.cluster_instances(std::time::Duration::ZERO).await?;
            if *json {
                let status =
                    Status { group: &view, window, instances: instances.iter().map(InstanceLine::from).collect() };
                println!("{}", serde_json::to_string_pretty(&status).expect("status serializes"));
            } else {
                print!("{}", status_text(&view, window, &instances, SystemTime::now()));
            }
            if !view.unreadable.is_empty() {
                // Shown with the rest; the exit code says the store needs a look.
                return Ok(ExitCode::FAILURE);
            }
        }
        FleetCommand::Pause { reason } => {
            store.pause(reason, &operator()).await?;
            println!("paused: {reason}");
        }
        FleetCommand::Resume => {
            let was = store.resume(&operator()).await?;
            println!("{}", if was { "resumed" } else { "the roll was not paused" });
        }
        FleetCommand::Release { instance, yes } => {
            let view = store.view().await?;
            let Some(holder) = view.holders.iter().find(|h| &h.id == instance) else {
                if let Some(why) = view.unreadable.first() {
                    // An unreadable item may be the very slot: "holds none" would be a guess.
                    return Err(Error::Config(format!("cannot tell whether {instance} holds a slot: {why}")));
                }
                println!("{instance} holds no slot");
                return Ok(ExitCode::SUCCESS);
            };
            confirm(
                &format!(
                    "{instance} holds a slot at step {} (cycle {}). If it is still running, releasing lets another host \
                     go while it is out of service. Release it?",
                    shown(&holder.step),
                    shown(&holder.cycle)
                ),
                *yes,
            )?;
            store.release_holder(instance, &operator()).await?;
            println!("released the slot of {instance}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Who is steering, for the pause record.
fn operator() -> String {
    let user = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "unknown".into());
    format!("operator {user}")
}

/// Asks on the terminal unless `yes`; refuses without a terminal.
fn confirm(question: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Config(format!("{question} Not confirmed: add --yes when there is no terminal to ask on")));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Error::Config("not confirmed; nothing was changed".into()))
    }
}

#[derive(Serialize)]
struct Status<'a> {
    group: &'a GroupView,
    /// The maintenance windows of this host's configuration (the fleet's, when it is shared).
    window: &'a WindowView,
    instances: Vec<InstanceLine>,
}

#[derive(Serialize)]
struct InstanceLine {
    instance_id: String,
    arn: String,
    status: String,
    agent_connected: bool,
    agent_version: Option<String>,
    tasks: i32,
    drained_by: Option<String>,
}

impl From<&ContainerInstance> for InstanceLine {
    fn from(i: &ContainerInstance) -> Self {
        Self {
            instance_id: i.ec2_instance_id.clone(),
            arn: i.arn.clone(),
            status: i.status.clone(),
            agent_connected: i.agent_connected,
            agent_version: i.agent_version.clone(),
            tasks: i.running_tasks + i.pending_tasks,
            drained_by: i.drained_by.clone(),
        }
    }
}

fn ago(now: SystemTime, unix_ms: u64) -> String {
    let then = SystemTime::UNIX_EPOCH + Duration::from_millis(unix_ms);
    match now.duration_since(then) {
        Ok(d) => format!("{} ago", humantime::format_duration(Duration::from_secs(d.as_secs()))),
        Err(e) => format!("in {}", humantime::format_duration(Duration::from_secs(e.duration().as_secs()))),
    }
}

fn status_text(view: &GroupView, window: &WindowView, instances: &[ContainerInstance], now: SystemTime) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "group      {}", view.key);
    for line in &view.unreadable {
        let _ = writeln!(s, "UNREADABLE {line}");
    }
    let _ = writeln!(s, "window     {} (this host's schedule.windows)", window.describe);
    // The pause items decide; the control item's `paused` is a hint any host may write.
    match (&view.pause, view.control.as_ref().map(|c| &c.paused)) {
        _ if !view.pause_read => {
            let _ = writeln!(s, "paused     unknown (the pause items cannot be read)");
        }
        (Some(p), _) => {
            let _ = writeln!(s, "paused     YES, by {} {}: {}", shown(&p.by), ago(now, p.at), shown(&p.reason));
        }
        (None, None) => {
            let _ = writeln!(s, "paused     unknown (the control item is unreadable)");
        }
        (None, Some(Some(hint))) => {
            let _ = writeln!(
                s,
                "paused     no (the control item says paused by {}, but no pause item backs it: the next host to \
                 look clears it)",
                shown(&hint.by)
            );
        }
        (None, Some(None)) => {
            let _ = writeln!(s, "paused     no");
        }
    }
    let _ = writeln!(s, "holders    {}", view.holders.len());
    for h in &view.holders {
        let _ = writeln!(
            s,
            "  {}  step {:<16} took the slot {}, last renewed {} (by its clock), token {}",
            shown(&h.id),
            shown(&h.step),
            ago(now, h.acquired_at),
            ago(now, h.renewed_at),
            h.token
        );
    }
    match view.blocked_by.as_slice() {
        [] => {
            let _ = writeln!(
                s,
                "blocked by no pause and no full set of slots (capacity, zones and alarms may still hold the first \
                 host waiting: its log says)"
            );
        }
        lines => {
            for line in lines {
                let _ = writeln!(s, "blocked by {line}");
            }
        }
    }
    let _ = writeln!(s, "waiting    {} ticket(s) not yet served", view.waiting);
    for (n, w) in view.next_in_line.iter().enumerate() {
        let _ = writeln!(s, "  {:>3}. {}  last asked {}", n + 1, shown(&w.id), ago(now, w.asked_at));
    }
    if let Some((taken_at, instances)) = view.snapshot {
        let _ = writeln!(s, "snapshot   {instances} instances, taken {}", ago(now, taken_at));
    }
    let _ = writeln!(s, "instances  {}", instances.len());
    for i in instances {
        let _ = writeln!(
            s,
            "  {}  {:<8} agent {} {:<12} tasks {}{}",
            i.ec2_instance_id,
            i.status,
            if i.agent_connected { "connected   " } else { "disconnected" },
            i.agent_version.as_deref().unwrap_or("?"),
            i.running_tasks + i.pending_tasks,
            i.drained_by.as_deref().map(|c| format!("  drained by {c}")).unwrap_or_default()
        );
    }
    s
}
