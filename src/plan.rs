//! What a cycle installs and what that asks of the host, decided before anything changes:
//! which updates (release, security, exclusions, minimum age), and which class of update
//! it is, which says whether the host must be drained and what follows the install.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::{DrainPolicy, PackageSettings, RebootPolicy, first_match};
use crate::error::Result;
use crate::journal::{self, Journal};
use crate::livepatch::LivePatching;
use crate::livepatch::deferral::{self, Evidence, LivePatches};
use crate::packages::reboot::{self, RebootRule};
use crate::packages::{PackageManager, PackageUpdate, RebootNeed, RebootProbe, RebootingUpdater, Releases, Target};

/// The state-directory file recording when this host first saw each update.
const FIRST_SEEN_FILE: &str = "first-seen.json";
/// The state-directory file holding the boot id ecs-patchd's own last reboot started.
pub const REBOOTED_INTO_FILE: &str = "rebooted-into.json";

/// What an update asks of the host, from the package names alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// A package of `packages.reboot_packages` (kernel, glibc, systemd, ...): drain,
    /// install, reboot.
    Reboot,
    /// What running tasks use from the host (`packages.runtime_packages`: docker,
    /// containerd, runc, CNI, iptables, GPU drivers): drain, install, then
    /// `packages.runtime` (restart the runtime, reboot, or leave it).
    Runtime,
    /// The ECS agent, with at most packages of the in-place kind: install, restart the
    /// agent, no drain.
    Agent,
    /// Nothing a task depends on (containers carry their own userland): install in place.
    InPlace,
}

/// What the cycle will install, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PlanRecord")]
pub struct Plan {
    /// The updates to install.
    pub updates: Vec<PackageUpdate>,
    /// The release the host runs, the newest one, and the one every command of this plan
    /// uses (`--releasever`; none: the locked one), on Amazon Linux 2023.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releases: Option<Releases>,
    /// The class of the update.
    pub class: Class,
    /// Why it is of that class.
    pub why: String,
    /// Whether the host is drained for it.
    pub drain: bool,
    /// How the reboot check is made after the install.
    pub reboot_probe: RebootProbe,
    /// Whether an ECS agent package is among the updates (the agent must restart).
    pub updates_agent: bool,
    /// With no update to install: why a reboot is due all the same (a kernel or library
    /// installed by someone else and not running yet). The cycle drains and reboots for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_due: Option<String>,
    /// The running kernel's live patches, and the pending kernel they let wait for its
    /// reboot, on a host with a live patch tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub livepatch: Option<LivePatches>,
}

/// A plan as journals hold it, including those written before update classes, which had
/// only `agent_only`: an agent-only plan was installed in place, any other one drained.
#[derive(Deserialize)]
struct PlanRecord {
    updates: Vec<PackageUpdate>,
    #[serde(default)]
    releases: Option<Releases>,
    class: Option<Class>,
    #[serde(default)]
    why: String,
    drain: Option<bool>,
    #[serde(default)]
    reboot_probe: RebootProbe,
    updates_agent: Option<bool>,
    #[serde(default)]
    agent_only: bool,
    #[serde(default)]
    reboot_due: Option<String>,
    #[serde(default)]
    livepatch: Option<LivePatches>,
}

impl From<PlanRecord> for Plan {
    fn from(r: PlanRecord) -> Self {
        let legacy_class = if r.agent_only { Class::Agent } else { Class::Reboot };
        Plan {
            updates: r.updates,
            releases: r.releases,
            class: r.class.unwrap_or(legacy_class),
            why: r.why,
            drain: r.drain.unwrap_or(!r.agent_only),
            reboot_probe: r.reboot_probe,
            updates_agent: r.updates_agent.unwrap_or(r.agent_only),
            reboot_due: r.reboot_due,
            livepatch: r.livepatch,
        }
    }
}

/// An update left out of the plan, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    /// The package.
    pub name: String,
    /// The version left out.
    pub available: String,
    /// The setting that holds it back.
    pub why: String,
}

/// Everything found while planning: `check` shows it all, `run` acts on the plan.
#[derive(Debug, Clone, Serialize)]
pub struct Planning {
    /// The plan (no updates: nothing to do).
    pub plan: Plan,
    /// Updates held back by `packages.exclude` or `packages.min_age`.
    pub held: Vec<Held>,
    /// Updaters that reboot the host by themselves.
    pub rebooting_updaters: Vec<RebootingUpdater>,
    /// Runtime packages an unattended updater replaced under running tasks since the boot.
    pub runtime_updated_in_place: Vec<String>,
}

impl Plan {
    /// True when there is nothing to do: no update, and no reboot due.
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.reboot_due.is_none()
    }

    /// True when carrying the plan out needs a reboot (a pending update of the reboot
    /// class, or a reboot already due).
    pub fn needs_reboot(&self) -> bool {
        self.class == Class::Reboot && !self.is_empty()
    }

    /// What is pending, in one phrase: the updates, or the reboot due.
    pub fn pending_summary(&self) -> String {
        match &self.reboot_due {
            Some(reason) if self.updates.is_empty() => format!("a reboot is due ({reason})"),
            _ => format!("{} update(s) pending: {}", self.updates.len(), self.names().join(", ")),
        }
    }

    /// The package names, as given to the package manager.
    pub fn names(&self) -> Vec<String> {
        self.updates.iter().map(|u| u.name.clone()).collect()
    }

    /// What the package manager is asked to download or install.
    pub fn target(&self) -> Target {
        Target { release: self.release().map(str::to_string), updates: self.updates.clone() }
    }

    /// The release every command of this plan uses, or none for the locked one.
    pub fn release(&self) -> Option<&str> {
        self.releases.as_ref().and_then(|r| r.target.as_deref())
    }
}

/// Where a plan is made: the host's state directory, the journal (a run, not `check`) and
/// the boot the host runs.
pub struct Place<'a> {
    /// The state directory.
    pub state_dir: &'a std::path::Path,
    /// The journal, locked (a run); `None` for `check`, which writes nothing.
    pub journal: Option<&'a Journal>,
    /// The current boot id, if it could be read.
    pub boot_id: Option<&'a str>,
}

/// Surveys the package manager and makes the plan. With a journal (a run, not `check`),
/// records when each update was first seen, for `packages.min_age` where the package
/// manager gives no build time (apt). A pending kernel whose fixes the loaded live patches
/// cover waits (`packages.kernel_reboot_within`), held back. With no update to install, a
/// reboot already due makes a plan of its own.
pub async fn make(
    packages: &dyn PackageManager,
    live: &dyn LivePatching,
    settings: &PackageSettings,
    now: SystemTime,
    place: Place<'_>,
) -> Result<Planning> {
    let rebooting_updaters = packages.rebooting_updaters().await?;
    let runtime_updated_in_place = packages.runtime_updated_in_place().await;
    for note in &runtime_updated_in_place {
        warn!("{note}");
    }
    let survey = packages.survey().await?;
    crate::packages::check_names(&survey.updates)?;
    let first_seen = first_seen(&survey.updates, now, place.state_dir, place.journal);
    let is_kernel = |u: &PackageUpdate| first_match(&settings.livepatch.kernel_packages, &u.name).is_some();
    // A kernel held back by the filters is still pending over the running one: its wait goes on.
    let kernel_offered = survey.updates.iter().any(is_kernel);
    let (chosen, mut held) = select(survey.updates, settings, now, &first_seen);
    let target = survey.releases.as_ref().and_then(|r| r.target.as_deref());
    let every_chosen = chosen.clone();
    let (mut chosen, mut livepatch) =
        live_patches(packages, live, settings, chosen, (target, kernel_offered), now, &place).await;
    let reboot_probe = packages.reboot_probe().await?;
    let mut reboot_due = match chosen.is_empty() {
        true => reboot_due(packages, settings, reboot_probe, &place).await,
        false => None,
    };
    let mut classed = class_and_drain(&chosen, reboot_due.as_deref(), settings);
    // A kernel waits only beside a plan that leaves the host serving: a drain takes it along.
    let drains = classed.2 && !(chosen.is_empty() && reboot_due.is_none());
    if let Some(live) = livepatch.as_mut().filter(|l| l.deferred.is_some() && drains) {
        live.deferred = None;
        live.reboot_now = Some(format!("the host is drained anyway ({}): the kernel comes along", classed.1));
        chosen = every_chosen;
        reboot_due = None;
        classed = class_and_drain(&chosen, None, settings);
    }
    if let Some(deferred) = livepatch.as_ref().and_then(|l| l.deferred.as_ref()) {
        let why = format!(
            "its reboot waits until {} (packages.kernel_reboot_within): {}",
            humantime::format_rfc3339_seconds(deferred.deadline),
            deferred.why
        );
        held.extend(deferred.packages.iter().map(|p| {
            let (name, available) = p.split_once(' ').unwrap_or((p, ""));
            Held { name: name.into(), available: available.into(), why: why.clone() }
        }));
    }
    let (class, why, drain) = classed;
    let updates_agent = chosen.iter().any(|u| is_agent(settings, &u.name));
    let plan = Plan {
        updates: chosen,
        releases: survey.releases,
        class,
        why,
        drain,
        reboot_probe,
        updates_agent,
        reboot_due,
        livepatch,
    };
    Ok(Planning { plan, held, rebooting_updaters, runtime_updated_in_place })
}

/// The class of `chosen` (a reboot due makes it a reboot), why, and whether it drains.
fn class_and_drain(
    chosen: &[PackageUpdate],
    reboot_due: Option<&str>,
    settings: &PackageSettings,
) -> (Class, String, bool) {
    let (class, why) = match reboot_due {
        Some(reason) => (Class::Reboot, format!("a reboot is due: {reason}")),
        None => classify(chosen, settings),
    };
    let agent_only = !chosen.is_empty() && chosen.iter().all(|u| is_agent(settings, &u.name));
    // `packages.reboot = "always"` reboots every cycle but an agent-only one, so it drains too.
    let drain_anyway = settings.drain == DrainPolicy::Always || settings.reboot == RebootPolicy::Always;
    let drain = match class {
        Class::Reboot | Class::Runtime => true,
        Class::Agent | Class::InPlace => drain_anyway && !agent_only,
    };
    (class, why, drain)
}

/// Whether what is installed needs a reboot now, by the host's probe (or the reboot rule
/// where it has none); `None` when the probe cannot answer (logged).
pub async fn reboot_needed_now(
    packages: &dyn PackageManager,
    settings: &PackageSettings,
    probe: RebootProbe,
) -> Option<RebootNeed> {
    let need = match probe {
        RebootProbe::Rule => reboot::by_rule(&RebootRule::new(settings), &[]),
        _ => packages.reboot_required().await,
    };
    need.map_err(|e| warn!("cannot tell whether a reboot is due: {e}")).ok()
}

/// A reboot due with nothing to install, and why: unattended-upgrades installs kernels and
/// libraries without rebooting (Ubuntu's /var/run/reboot-required), someone ran the package
/// manager by hand, or the newest kernel installed is not the one running. Not acted on
/// under `packages.reboot = "never"`, nor in the boot that ecs-patchd's own last reboot
/// started (that reboot did not clear it, so another would not either: the boot loader's
/// default is not the newest kernel, say); both are logged.
async fn reboot_due(
    packages: &dyn PackageManager,
    settings: &PackageSettings,
    probe: RebootProbe,
    place: &Place<'_>,
) -> Option<String> {
    let need = reboot_needed_now(packages, settings, probe).await.filter(|n| n.needed)?;
    if settings.reboot == RebootPolicy::Never {
        warn!("a reboot is due ({}) but packages.reboot is \"never\"", need.reason);
        return None;
    }
    let ours = journal::read_file::<String>(place.state_dir, REBOOTED_INTO_FILE).ok().flatten();
    if place.boot_id.is_some_and(|b| ours.as_deref() == Some(b)) {
        warn!(
            "a reboot is due ({}) in the boot ecs-patchd's own last reboot started: another would not \
             clear it; check which kernel the boot loader starts",
            need.reason
        );
        return None;
    }
    Some(need.reason)
}

/// The live patch rules applied to the chosen updates, on a host with a live patch tool:
/// the updates to install now (a kernel that waits left out) and what the plan records.
/// An advisory query that fails counts as no advisory: the kernel does not wait.
async fn live_patches(
    packages: &dyn PackageManager,
    live: &dyn LivePatching,
    settings: &PackageSettings,
    chosen: Vec<PackageUpdate>,
    (release, kernel_offered): (Option<&str>, bool),
    now: SystemTime,
    place: &Place<'_>,
) -> (Vec<PackageUpdate>, Option<LivePatches>) {
    let Some(state) = live.state().await else { return (chosen, None) };
    let is_kernel = |u: &PackageUpdate| first_match(&settings.livepatch.kernel_packages, &u.name).is_some();
    let kernel_pending = chosen.iter().any(is_kernel);
    let since = deferral::pending_since(place.state_dir, place.journal, &state.kernel, kernel_offered, now);
    let patches_pending = chosen.iter().any(|u| deferral::live_patch_for(settings, &u.name, &state.kernel));
    let mut evidence = (Default::default(), Default::default(), None);
    if state.fully_patched.is_none() && (kernel_pending || patches_pending) {
        let cves = |found: Result<crate::packages::Cves>| {
            found.unwrap_or_else(|e| {
                warn!("no CVEs from the advisories: {e}");
                Default::default()
            })
        };
        evidence = (
            cves(packages.advisory_cves(release, false).await),
            cves(packages.advisory_cves(release, true).await),
            packages.kernel_built(&state.kernel).await,
        );
    }
    let (pending_cves, applied_cves, kernel_built) = evidence;
    let ev =
        Evidence { live: &state, pending_cves: &pending_cves, applied_cves: &applied_cves, kernel_built, since, now };
    let (chosen, record) = deferral::decide(chosen, settings, &ev);
    if let (Some(why), Some(_)) = (&record.reboot_now, settings.kernel_reboot_within) {
        info!("the pending kernel does not wait for its reboot: {why}");
    }
    (chosen, Some(record))
}

fn is_agent(settings: &PackageSettings, name: &str) -> bool {
    first_match(&settings.agent_packages, name).is_some()
}

/// Splits the updates into those to install and those held back (`packages.exclude`,
/// `packages.min_age`, counted from the build time or, without one, from `first_seen`).
fn select(
    updates: Vec<PackageUpdate>,
    settings: &PackageSettings,
    now: SystemTime,
    first_seen: &BTreeMap<String, SystemTime>,
) -> (Vec<PackageUpdate>, Vec<Held>) {
    let mut chosen = Vec::new();
    let mut held = Vec::new();
    for update in updates {
        let why = if let Some(glob) = first_match(&settings.exclude, &update.name) {
            Some(format!("packages.exclude \"{glob}\""))
        } else if settings.min_age > Duration::ZERO {
            let (since, what) = match update.built {
                Some(built) => (Some(built), "built"),
                None => (first_seen.get(&seen_key(&update)).copied(), "first seen"),
            };
            let age = since.map_or(Duration::ZERO, |t| now.duration_since(t).unwrap_or_default());
            (age < settings.min_age).then(|| {
                format!(
                    "{what} {} ago, packages.min_age is {}",
                    humantime::format_duration(Duration::from_secs(age.as_secs() / 3600 * 3600)),
                    humantime::format_duration(settings.min_age)
                )
            })
        } else {
            None
        };
        match why {
            Some(why) => held.push(Held { name: update.name, available: update.available, why }),
            None => chosen.push(update),
        }
    }
    (chosen, held)
}

/// The class of `updates` and why: a reboot package wins over a runtime one, which wins
/// over the agent.
fn classify(updates: &[PackageUpdate], settings: &PackageSettings) -> (Class, String) {
    let first = |globs: Vec<&String>| {
        updates.iter().find_map(|u| first_match(globs.iter().copied(), &u.name).map(|g| (&u.name, g.clone())))
    };
    if let Some((name, glob)) = first(settings.reboot_globs().collect()) {
        (Class::Reboot, format!("{name} matches packages.reboot_packages \"{glob}\""))
    } else if let Some((name, glob)) = first(settings.runtime_globs().collect()) {
        (Class::Runtime, format!("{name} matches packages.runtime_packages \"{glob}\""))
    } else if let Some(agent) = updates.iter().find(|u| is_agent(settings, &u.name)) {
        (Class::Agent, format!("{} is the ECS agent; nothing else needs more than an in-place install", agent.name))
    } else if let Some(patch) = updates.iter().find(|u| first_match(&settings.livepatch.packages, &u.name).is_some()) {
        (Class::InPlace, format!("{} is a kernel live patch: installed while the tasks run", patch.name))
    } else {
        (Class::InPlace, "no update touches the kernel, core libraries, the container runtime or the agent".into())
    }
}

fn seen_key(update: &PackageUpdate) -> String {
    format!("{} {}", update.name, update.available)
}

/// When this host first saw each of `updates` (now, for those new); with a journal, the
/// record is kept in its directory for the next run, pruned to the updates still offered
/// (without one, `state_dir`'s record is only read).
fn first_seen(
    updates: &[PackageUpdate],
    now: SystemTime,
    state_dir: &std::path::Path,
    journal: Option<&Journal>,
) -> BTreeMap<String, SystemTime> {
    let dir = journal.map_or(state_dir, Journal::dir);
    let known: BTreeMap<String, SystemTime> =
        match journal::read_file::<BTreeMap<String, humantime_serde::Serde<SystemTime>>>(dir, FIRST_SEEN_FILE) {
            Ok(known) => known.unwrap_or_default().into_iter().map(|(k, t)| (k, *t)).collect(),
            Err(e) => {
                warn!("{e}; the first-seen times start afresh");
                BTreeMap::new()
            }
        };
    let seen: BTreeMap<String, SystemTime> = updates
        .iter()
        .filter(|u| u.built.is_none())
        .map(|u| {
            let key = seen_key(u);
            let at = known.get(&key).copied().unwrap_or(now);
            (key, at)
        })
        .collect();
    if let Some(journal) = journal
        && seen != known
        && let Err(e) = journal.save_file(
            FIRST_SEEN_FILE,
            &seen.iter().map(|(k, t)| (k, humantime_serde::Serde::from(*t))).collect::<BTreeMap<_, _>>(),
        )
    {
        warn!("cannot record when updates were first seen: {e}");
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(name: &str) -> PackageUpdate {
        PackageUpdate::of(name, "2")
    }

    fn class_of(names: &[&str]) -> Class {
        let updates: Vec<PackageUpdate> = names.iter().map(|n| update(n)).collect();
        classify(&updates, &PackageSettings::default()).0
    }

    #[test]
    fn classes_follow_the_most_demanding_package() {
        assert_eq!(class_of(&["curl", "kernel6.12", "docker"]), Class::Reboot);
        assert_eq!(class_of(&["linux-image-6.1.0-28-amd64"]), Class::Reboot);
        assert_eq!(class_of(&["curl", "containerd"]), Class::Runtime);
        assert_eq!(class_of(&["libnvidia-container1"]), Class::Runtime);
        assert_eq!(class_of(&["curl", "ecs-init"]), Class::Agent);
        assert_eq!(class_of(&["amazon-ecs-init"]), Class::Agent);
        assert_eq!(class_of(&["curl", "openssl-libs"]), Class::InPlace);
    }

    #[test]
    fn journals_from_before_classes_keep_their_meaning() {
        let agent: Plan = serde_json::from_str(r#"{"updates": [], "agent_only": true}"#).unwrap();
        assert_eq!((agent.class, agent.drain, agent.updates_agent), (Class::Agent, false, true));
        let drained: Plan = serde_json::from_str(r#"{"updates": [], "agent_only": false}"#).unwrap();
        assert_eq!((drained.class, drained.drain, drained.updates_agent), (Class::Reboot, true, false));
        let now: Plan = serde_json::from_str(&serde_json::to_string(&agent).unwrap()).unwrap();
        assert_eq!(now, agent, "a plan reads back as written");
    }

    #[test]
    fn exclusions_and_young_updates_are_held() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * 86400);
        let settings = PackageSettings {
            exclude: vec!["docker*".into()],
            min_age: Duration::from_secs(7 * 86400),
            ..PackageSettings::default()
        };
        let mut old = update("curl");
        old.built = Some(now - Duration::from_secs(8 * 86400));
        let mut young = update("openssl");
        young.built = Some(now - Duration::from_secs(2 * 86400));
        let seen_long_ago = update("libc-bin");
        let first_seen = BTreeMap::from([(seen_key(&seen_long_ago), now - Duration::from_secs(30 * 86400))]);
        let (chosen, held) =
            select(vec![old, young, update("docker"), seen_long_ago, update("tzdata")], &settings, now, &first_seen);
        let names: Vec<&str> = chosen.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["curl", "libc-bin"]);
        let why: Vec<(&str, &str)> = held.iter().map(|h| (h.name.as_str(), h.why.as_str())).collect();
        assert_eq!(why[0], ("openssl", "built 2days ago, packages.min_age is 7days"));
        assert_eq!(why[1], ("docker", "packages.exclude \"docker*\""));
        assert_eq!(why[2].0, "tzdata", "never seen before: age 0");
    }
}
