//! `ecs-patchd run`: one cycle in the foreground. It takes the journal's lock and runs one
//! attempt ([`Attempt`]): the cycle in progress, resumed, or a new one. When the daemon holds
//! the lock, it follows the daemon's cycle to its end (or takes it over if the daemon lets
//! it go); `--resume-only` finishes a cycle in progress and starts none.

use std::process::ExitCode;

use ecs_patchd::config::Settings;
use ecs_patchd::cycle::{Cycle, Outcome, State};
use ecs_patchd::error::{Error, Result};
use ecs_patchd::journal::{self, Journal};
use ecs_patchd::wiring::{self, Attempt, Reporting, ThisInstance};

use super::stop::stop_requested;
use super::{exit, output};

#[derive(clap::Args)]
pub(super) struct RunArgs {
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

pub(super) async fn run(mut settings: Settings, args: &RunArgs) -> Result<ExitCode> {
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
    let schedule = wiring::schedule(settings)?;
    if in_progress.is_none()
        && !args.now
        && let ecs_patchd::window::Openness::ClosedUntil(opens) = schedule.at(began)
    {
        return Err(Error::Deferred(format!(
            "outside the maintenance window: no cycle is started (the next window opens {}; --now starts one anyway)",
            schedule.local(opens)
        )));
    }
    let instance = ThisInstance::find().await?;
    if args.resume_only && wiring::in_progress(&journal, &instance.document)?.is_none() {
        tracing::info!("no cycle of this instance's in progress: nothing to resume");
        return Ok(ExitCode::SUCCESS);
    }
    let reporting = Reporting::new(settings, None);
    let attempt = Attempt {
        settings,
        journal: &journal,
        instance: &instance,
        schedule: (!args.now).then_some(schedule),
        hand_off_reboot: args.ssm || std::env::var_os("AWS_SSM_INSTANCE_ID").is_some(),
        reporting: &reporting,
    };
    let cycle = attempt.run(stop_requested()).await?;
    println!("{}", output::run_summary(&cycle, std::time::SystemTime::now()));
    Ok(outcome_code(&cycle))
}

/// The exit code of a finished cycle.
fn outcome_code(cycle: &Cycle) -> ExitCode {
    ExitCode::from(match &cycle.state {
        State::Done { outcome: Outcome::Failed { kind, .. } } => exit::code(*kind, false),
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
