//! The report record: what the last check found and how the last cycles ended, kept in the
//! state directory (`report.json`) so that metrics, SSM compliance and inventory say the
//! same thing whichever command ran last.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::atomic_file;
use crate::cycle::{Cycle, Outcome, State};
use crate::error::Kind;
use crate::journal;
use crate::livepatch::deferral::LivePatches;
use crate::packages::{PackageUpdate, Releases};
use crate::plan::Plan;

/// The record's file name in the state directory.
pub const RECORD_FILE: &str = "report.json";

/// What the host knows of its updates and its cycles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    /// When updates were last looked for.
    #[serde(with = "humantime_serde")]
    pub checked_at: Option<SystemTime>,
    /// The updates pending then (none once a cycle installed them).
    pub pending: Vec<PackageUpdate>,
    /// Whether installing them needs a reboot (or a reboot is due already).
    pub reboot_needed: bool,
    /// Why a reboot is due with no update pending, when one is.
    pub reboot_due: Option<String>,
    /// The OS release the host runs (Amazon Linux 2023), when known.
    pub release: Option<String>,
    /// A newer release that is published and not applied (`packages.release` locked or
    /// pinned): its fixes are pending.
    pub release_available: Option<String>,
    /// The ECS agent's version, when known.
    pub agent_version: Option<String>,
    /// How the last cycle that did something (installed, or failed) ended.
    pub last_cycle: Option<CycleSummary>,
    /// When a cycle last ended well (patched, or nothing to do).
    #[serde(with = "humantime_serde")]
    pub last_success: Option<SystemTime>,
    /// When a cycle last installed updates.
    #[serde(with = "humantime_serde")]
    pub last_patched: Option<SystemTime>,
    /// Failed cycles by error kind, since the record began.
    pub failures: BTreeMap<String, u64>,
    /// The mistake in the setup (a missing table or permission) that stopped the last
    /// check or attempt, if one did.
    pub setup_error: Option<String>,
    /// Why the fleet's roll was paused, when this host's last attempt found it paused.
    pub roll_paused: Option<String>,
    /// The running kernel's live patches and the kernel that waits, at the last check (on
    /// a host with a live patch tool).
    pub livepatch: Option<LivePatches>,
}

/// A finished cycle, in short.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleSummary {
    /// The cycle id.
    pub id: String,
    /// When it ended.
    #[serde(with = "humantime_serde")]
    pub ended_at: SystemTime,
    /// How it ended.
    pub outcome: Outcome,
    /// How long the drain took, when there was one.
    pub drain_seconds: Option<f64>,
    /// How long the host was out of service, when it was drained.
    pub out_of_service_seconds: Option<f64>,
}

impl Record {
    /// The record of `state_dir`; an empty one when there is none or it cannot be read
    /// (a report must never stop a command: the problem is logged).
    pub fn load(state_dir: &Path) -> Self {
        journal::read_file(state_dir, RECORD_FILE)
            .unwrap_or_else(|e| {
                warn!("the report record cannot be read, starting a new one: {e}");
                None
            })
            .unwrap_or_default()
    }

    /// Writes the record to `state_dir` (atomically); a failure is logged.
    pub fn save(&self, state_dir: &Path) {
        let bytes = serde_json::to_vec_pretty(self).expect("the record serializes");
        let written = atomic_file::create_private_dir(state_dir)
            .and_then(|()| atomic_file::replace(&state_dir.join(RECORD_FILE), &bytes, 0o600));
        if let Err(e) = written {
            warn!("cannot write the report record in {}: {e}", state_dir.display());
        }
    }

    /// Notes what a look for updates found at `at`: the plan.
    pub fn looked(&mut self, at: SystemTime, plan: &Plan) {
        self.checked(at, plan.updates.clone(), plan.needs_reboot());
        self.reboot_due = plan.reboot_due.clone();
        self.livepatch = plan.livepatch.clone();
        self.releases(plan.releases.as_ref());
    }

    fn checked(&mut self, at: SystemTime, pending: Vec<PackageUpdate>, reboot_needed: bool) {
        self.checked_at = Some(at);
        self.pending = pending;
        self.reboot_needed = reboot_needed;
        self.reboot_due = None;
    }

    fn releases(&mut self, releases: Option<&Releases>) {
        if let Some(releases) = releases {
            self.release = Some(releases.running.clone());
            self.release_available = releases.unapplied().map(str::to_string);
        }
    }

    /// Notes how `cycle` (done) ended.
    pub fn ended(&mut self, cycle: &Cycle) {
        let State::Done { outcome } = &cycle.state else { return };
        let ended_at = cycle.entered_at;
        self.roll_paused = match outcome {
            Outcome::Failed { kind: Kind::Paused, reason, .. } => Some(reason.clone()),
            _ => None,
        };
        match outcome {
            // Not a failure of the host: deferred (not now), or never ours to drain.
            Outcome::Failed { kind, .. } if !kind.halts_roll() => {}
            Outcome::Failed { kind, .. } => {
                *self.failures.entry(kind.to_string()).or_default() += 1;
                // What the plan counted on (a live patch it installs) is not known to hold.
                self.livepatch = None;
            }
            Outcome::Patched { .. } => {
                self.last_success = Some(ended_at);
                self.last_patched = Some(ended_at);
                self.pending.clear();
                self.reboot_needed = false;
                self.reboot_due = None;
            }
            Outcome::NothingToDo => {
                self.last_success = Some(ended_at);
                self.checked(ended_at, Vec::new(), false);
            }
        }
        self.releases(cycle.releases.as_ref());
        if *outcome == Outcome::NothingToDo {
            return; // the last patch's figures stay what the metrics and inventory show
        }
        self.last_cycle = Some(CycleSummary {
            id: cycle.id.clone(),
            ended_at,
            outcome: outcome.clone(),
            drain_seconds: step_duration(cycle, "draining").map(|d| d.as_secs_f64()),
            out_of_service_seconds: cycle.out_of_service(ended_at).map(|d| d.as_secs_f64()),
        });
    }
}

/// How long `step` lasted in `cycle` (from its first entry to the next step).
fn step_duration(cycle: &Cycle, step: &str) -> Option<Duration> {
    let at = cycle.history.iter().position(|m| m.step == step)?;
    let next = cycle.history.get(at + 1)?;
    next.at.duration_since(cycle.history[at].at).ok()
}
