//! Whether a pending kernel may wait for its reboot, and until when.
//!
//! kpatch (Amazon Linux): the kernel waits when every CVE its advisories name is named by
//! the advisories of a live patch for the running kernel that is loaded, or installed by
//! the same plan (and verified loaded before the plan is done). AWS: "Kernel live patches
//! are made available as signed RPM packages in the existing Amazon Linux 2 repositories",
//! with advisories listing the CVEs they fix, but "not all important or critical CVEs may
//! be available as live patches for a given kernel version": a kernel that fixes one more
//! is a reboot cycle, as a kernel without advisories is. Canonical Livepatch (Ubuntu): the
//! kernel waits while the client reports the running kernel fully patched.
//!
//! The wait is bounded: `packages.kernel_reboot_within` from when a kernel was first seen
//! pending over the running one (a newer kernel does not restart the count), and for kpatch
//! no later than the end of the running kernel's live patches: "An Amazon Linux 2 kernel
//! receives kernel live patches for a period of three months. After the three month period
//! has lapsed, no new kernel live patches are released for that kernel version."

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::LiveState;
use crate::config::{PackageSettings, first_match};
use crate::journal::{self, Journal};
use crate::packages::PackageUpdate;

/// How long AWS releases live patches for a kernel after its release.
pub const LIVE_PATCH_SUPPORT: Duration = Duration::from_secs(90 * 24 * 3600);
/// The state-directory file holding when a kernel was first seen pending over the running one.
const PENDING_FILE: &str = "kernel-pending.json";
/// The most CVEs a plan records.
const MOST_CVES: usize = 1024;

/// The running kernel's live patches, as a plan records them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivePatches {
    /// The tool (`kpatch`, `canonical-livepatch`).
    pub tool: String,
    /// The running kernel.
    pub kernel: String,
    /// The patches loaded.
    pub loaded: Vec<String>,
    /// The CVEs the loaded patches (and those this plan installs) fix.
    pub cves: Vec<String>,
    /// Live patch packages for the running kernel that this plan installs, verified loaded
    /// after the install.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installing: Vec<String>,
    /// The pending kernel whose reboot waits, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<DeferredKernel>,
    /// Why a pending kernel does not wait, if one is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_now: Option<String>,
}

/// A pending kernel held back because live patches cover its fixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeferredKernel {
    /// Its packages, as `name version`.
    pub packages: Vec<String>,
    /// The CVEs it fixes, every one covered by a live patch.
    pub cves: Vec<String>,
    /// When a kernel was first seen pending over the running one.
    #[serde(with = "humantime_serde")]
    pub since: SystemTime,
    /// When the wait ends: the next window after it drains and reboots.
    #[serde(with = "humantime_serde")]
    pub deadline: SystemTime,
    /// Why it may wait, in the tool's terms.
    #[serde(default)]
    pub why: String,
}

/// What the decision rests on, besides the updates and the settings.
pub struct Evidence<'a> {
    /// The live patch tool's answer.
    pub live: &'a LiveState,
    /// The CVEs the advisories of each pending update name, by package.
    pub pending_cves: &'a BTreeMap<String, BTreeSet<String>>,
    /// The CVEs the advisories of each installed package name (applied), by package.
    pub applied_cves: &'a BTreeMap<String, BTreeSet<String>>,
    /// When the running kernel was built, if known (kpatch: its live patches end
    /// [`LIVE_PATCH_SUPPORT`] later).
    pub kernel_built: Option<SystemTime>,
    /// When a kernel was first seen pending over the running one.
    pub since: SystemTime,
    /// Now.
    pub now: SystemTime,
}

/// Whether `name` is a live patch package for `kernel`: the part after its glob's literal
/// prefix (`kernel-livepatch-5.10.102-99.473`, `kpatch-patch-5_14_0-70_13_1`) begins the
/// running kernel's release (`5.10.102-99.473.amzn2.x86_64`).
pub fn live_patch_for(settings: &PackageSettings, name: &str, kernel: &str) -> bool {
    let Some(glob) = first_match(&settings.livepatch.packages, name) else { return false };
    let prefix = glob.split(['*', '?', '[']).next().unwrap_or_default();
    let release = name.get(prefix.len()..).unwrap_or_default().replace('_', ".");
    // `5.10.10` is not a part of `5.10.102-…`: the running release goes on with a separator.
    let rest = kernel.strip_prefix(release.as_str());
    !release.is_empty() && rest.is_some_and(|r| r.is_empty() || r.starts_with(['.', '-', '+', '_']))
}

/// Which pending kernel packages wait and why, or why none does: the updates to install
/// now (without those that wait) and what the plan records.
pub fn decide(
    updates: Vec<PackageUpdate>,
    settings: &PackageSettings,
    ev: &Evidence,
) -> (Vec<PackageUpdate>, LivePatches) {
    let live = ev.live;
    let installing: Vec<String> =
        updates.iter().filter(|u| live_patch_for(settings, &u.name, &live.kernel)).map(|u| u.name.clone()).collect();
    let covered: BTreeSet<String> = match live.fully_patched {
        Some(_) => live.fixes.iter().cloned().collect(),
        // Something installed and not loaded: nothing counts as covered.
        None if !live.not_loaded.is_empty() => BTreeSet::new(),
        None => {
            // What is applied counts only while a patch is loaded: installed packages whose
            // modules nothing loaded fix nothing.
            let applied = ev
                .applied_cves
                .iter()
                .filter(|(name, _)| !live.loaded.is_empty() && live_patch_for(settings, name, &live.kernel));
            applied
                .chain(ev.pending_cves.iter().filter(|(name, _)| installing.contains(name)))
                .flat_map(|(_, cves)| cves.iter().cloned())
                .collect()
        }
    };
    let mut record = LivePatches {
        tool: live.tool.clone(),
        kernel: live.kernel.clone(),
        loaded: live.loaded.clone(),
        cves: covered.iter().take(MOST_CVES).cloned().collect(),
        installing,
        deferred: None,
        reboot_now: None,
    };
    let is_kernel = |u: &PackageUpdate| first_match(&settings.livepatch.kernel_packages, &u.name).is_some();
    let (kernel, rest): (Vec<PackageUpdate>, Vec<PackageUpdate>) = updates.iter().cloned().partition(is_kernel);
    if kernel.is_empty() {
        return (updates, record);
    }
    match wait(&kernel, &rest, &covered, settings, ev) {
        Ok(deferred) => {
            record.deferred = Some(deferred);
            (rest, record)
        }
        Err(why) => {
            record.reboot_now = Some(why);
            (updates, record)
        }
    }
}

/// The kernel's wait, or why it does not wait.
fn wait(
    kernel: &[PackageUpdate],
    rest: &[PackageUpdate],
    covered: &BTreeSet<String>,
    settings: &PackageSettings,
    ev: &Evidence,
) -> Result<DeferredKernel, String> {
    let live = ev.live;
    let Some(within) = settings.kernel_reboot_within else {
        return Err("packages.kernel_reboot_within is not set: every kernel drains and reboots".into());
    };
    if let Some(other) = rest.iter().find(|u| first_match(settings.reboot_globs(), &u.name).is_some()) {
        return Err(format!("{} needs a reboot too", other.name));
    }
    if !live.not_loaded.is_empty() {
        return Err(format!("live patch(es) {} are not loaded", live.not_loaded.join(", ")));
    }
    let mut deadline = ev.since.checked_add(within).unwrap_or(ev.now);
    let (cves, why) = match live.fully_patched {
        Some(fully) => {
            if let Some(why) = &live.unsupported {
                return Err(format!("{why}: no more live patches will come for it"));
            }
            if !fully {
                return Err(format!("{} does not report the running kernel fully patched", live.tool));
            }
            (live.fixes.clone(), "Canonical Livepatch reports the running kernel fully patched".to_string())
        }
        None => {
            // Unknown, the end of the running kernel's live patches is unknown: no wait.
            let Some(built) = ev.kernel_built else {
                return Err(format!(
                    "the running kernel's build time is unknown, so when its live patches end is too (the \
                     package manager cannot tell which package installed /boot/vmlinuz-{})",
                    live.kernel
                ));
            };
            let end = built.checked_add(LIVE_PATCH_SUPPORT).unwrap_or(built);
            if end <= ev.now {
                return Err(format!(
                    "the running kernel {} was released more than three months ago ({}): no more live patches \
                     come for it",
                    live.kernel,
                    humantime::format_rfc3339_seconds(built)
                ));
            }
            deadline = deadline.min(end);
            let mut fixes = BTreeSet::new();
            for update in kernel {
                match ev.pending_cves.get(&update.name).filter(|c| !c.is_empty()) {
                    Some(cves) => fixes.extend(cves.iter().cloned()),
                    None => {
                        return Err(format!("no advisory names the CVEs {} {} fixes", update.name, update.available));
                    }
                }
            }
            let uncovered: Vec<&String> = fixes.difference(covered).collect();
            if !uncovered.is_empty() {
                let names: Vec<&str> = uncovered.iter().take(10).map(|s| s.as_str()).collect();
                return Err(format!(
                    "the pending kernel fixes {} that no live patch loaded covers{}",
                    names.join(", "),
                    if uncovered.len() > 10 { format!(" (and {} more)", uncovered.len() - 10) } else { String::new() }
                ));
            }
            let why = format!("live patches cover the {} CVE(s) it fixes", fixes.len());
            (fixes.into_iter().take(MOST_CVES).collect(), why)
        }
    };
    if deadline <= ev.now {
        return Err(format!(
            "a kernel has been pending since {}: packages.kernel_reboot_within ({}) has passed",
            humantime::format_rfc3339_seconds(ev.since),
            humantime::format_duration(within)
        ));
    }
    Ok(DeferredKernel {
        packages: kernel.iter().map(|u| format!("{} {}", u.name, u.available)).collect(),
        cves,
        since: ev.since,
        deadline,
        why,
    })
}

/// When a kernel was first seen pending over the running `kernel` (`now` the first time),
/// kept in `dir` by a run (`journal`), forgotten once none is pending or the host runs
/// another kernel.
pub fn pending_since(
    dir: &Path,
    journal: Option<&Journal>,
    kernel: &str,
    pending: bool,
    now: SystemTime,
) -> SystemTime {
    #[derive(Serialize, Deserialize, PartialEq)]
    struct Pending {
        kernel: String,
        #[serde(with = "humantime_serde")]
        since: SystemTime,
    }
    let known = journal::read_file::<Pending>(journal.map_or(dir, Journal::dir), PENDING_FILE).unwrap_or_else(|e| {
        warn!("{e}; the kernel's pending time starts afresh");
        None
    });
    let since = match known {
        Some(p) if p.kernel == kernel && p.since <= now => p.since,
        _ => now,
    };
    if let Some(journal) = journal {
        let written = match pending {
            true => journal.save_file(PENDING_FILE, &Pending { kernel: kernel.to_string(), since }),
            false => std::fs::remove_file(journal.dir().join(PENDING_FILE))
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(()),
                    _ => Err(e),
                })
                .map_err(|e| crate::error::Error::Host(format!("cannot remove {PENDING_FILE}: {e}"))),
        };
        if let Err(e) = written {
            warn!("cannot record when the kernel was first seen pending: {e}");
        }
    }
    since
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86400);

    fn update(name: &str) -> PackageUpdate {
        PackageUpdate { security: true, ..PackageUpdate::of(name, "2") }
    }

    fn cves(pairs: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        pairs.iter().map(|(n, c)| (n.to_string(), c.iter().map(|s| s.to_string()).collect())).collect()
    }

    fn settings() -> PackageSettings {
        PackageSettings { kernel_reboot_within: Some(30 * DAY), ..PackageSettings::default() }
    }

    fn kpatch() -> LiveState {
        LiveState {
            tool: "kpatch".into(),
            kernel: "6.1.1-1.amzn2023.x86_64".into(),
            loaded: vec!["livepatch_a".into()],
            ..LiveState::default()
        }
    }

    #[test]
    fn a_kernel_whose_cves_live_patches_cover_waits_until_its_deadline() {
        let now = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let live = kpatch();
        let applied =
            cves(&[("kernel-livepatch-6.1.1-1", &["CVE-2026-0001"]), ("kernel-livepatch-6.0.9-1", &["CVE-2026-0003"])]);
        let pending =
            cves(&[("kernel", &["CVE-2026-0001", "CVE-2026-0002"]), ("kernel-livepatch-6.1.1-1", &["CVE-2026-0002"])]);
        let ev = Evidence {
            live: &live,
            pending_cves: &pending,
            applied_cves: &applied,
            kernel_built: Some(now - 10 * DAY),
            since: now - 2 * DAY,
            now,
        };
        let updates = vec![update("kernel"), update("kernel-livepatch-6.1.1-1"), update("curl")];
        let (now_installed, record) = decide(updates.clone(), &settings(), &ev);
        let names: Vec<&str> = now_installed.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["kernel-livepatch-6.1.1-1", "curl"]);
        assert_eq!(record.installing, ["kernel-livepatch-6.1.1-1"]);
        assert_eq!(record.cves, ["CVE-2026-0001", "CVE-2026-0002"], "applied, and installed now; not another kernel's");
        let deferred = record.deferred.expect("the kernel waits");
        assert_eq!((deferred.packages, deferred.deadline), (vec!["kernel 2".to_string()], now + 28 * DAY));

        // Without the live patch in the plan, CVE-2026-0002 is uncovered.
        let (all, record) = decide(vec![update("kernel"), update("curl")], &settings(), &ev);
        assert_eq!(all.len(), 2);
        assert!(record.reboot_now.unwrap().contains("CVE-2026-0002"));
        // Past the deadline, or near the end of the kernel's live patches.
        let late = Evidence { since: now - 31 * DAY, ..ev };
        assert!(decide(updates.clone(), &settings(), &late).1.reboot_now.unwrap().contains("has passed"));
        let old = Evidence { kernel_built: Some(now - 91 * DAY), since: now, ..late };
        assert!(decide(updates.clone(), &settings(), &old).1.reboot_now.unwrap().contains("three months"));
        let ending = Evidence { kernel_built: Some(now - 85 * DAY), ..old };
        assert_eq!(decide(updates.clone(), &settings(), &ending).1.deferred.unwrap().deadline, now + 5 * DAY);
        // No build time: when the kernel's live patches end is unknown. Nothing loaded: what
        // is applied counts for nothing.
        let unknown = Evidence { kernel_built: None, ..ending };
        assert!(decide(updates.clone(), &settings(), &unknown).1.reboot_now.unwrap().contains("build time is unknown"));
        let nothing = LiveState { loaded: vec![], ..kpatch() };
        let (_, record) = decide(updates.clone(), &settings(), &Evidence { live: &nothing, ..ending });
        assert_eq!(record.cves, ["CVE-2026-0002"], "only the patch installed now");
        // Off unless chosen; another reboot package; a patch not loaded; no advisory.
        let off = PackageSettings::default();
        assert!(decide(updates.clone(), &off, &ending).1.reboot_now.unwrap().contains("not set"));
        let (_, record) = decide(vec![update("kernel"), update("glibc")], &settings(), &ending);
        assert_eq!(record.reboot_now.unwrap(), "glibc needs a reboot too");
        let broken = LiveState { not_loaded: vec!["livepatch_b".into()], ..kpatch() };
        let ev = Evidence { live: &broken, ..ending };
        let (_, record) = decide(updates.clone(), &settings(), &ev);
        assert!(record.cves.is_empty() && record.reboot_now.unwrap().contains("livepatch_b"));
        let none = cves(&[]);
        let ev = Evidence { live: &live, pending_cves: &none, ..ev };
        assert!(decide(updates, &settings(), &ev).1.reboot_now.unwrap().contains("no advisory"));
    }

    #[test]
    fn canonical_livepatch_lets_a_kernel_wait_only_while_fully_patched_and_supported() {
        let now = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let live = LiveState {
            tool: "canonical-livepatch".into(),
            kernel: "5.15.0-100.110-generic".into(),
            loaded: vec!["livepatch 104.1".into()],
            fixes: vec!["CVE-2024-1086".into()],
            fully_patched: Some(true),
            ..LiveState::default()
        };
        let none = cves(&[]);
        let ev =
            Evidence { live: &live, pending_cves: &none, applied_cves: &none, kernel_built: None, since: now, now };
        let updates = vec![update("linux-image-aws"), update("linux-aws")];
        let (left, record) = decide(updates.clone(), &settings(), &ev);
        assert!(left.is_empty());
        assert_eq!(record.deferred.unwrap().cves, ["CVE-2024-1086"]);
        let partly = LiveState { fully_patched: Some(false), ..live.clone() };
        assert!(decide(updates.clone(), &settings(), &Evidence { live: &partly, ..ev }).1.reboot_now.is_some());
        let eol = LiveState { unsupported: Some("it is \"kernel-end-of-life\"".into()), ..live.clone() };
        assert!(decide(updates, &settings(), &Evidence { live: &eol, ..ev }).1.reboot_now.unwrap().contains("no more"));
    }

    #[test]
    fn live_patches_are_matched_to_the_running_kernel_and_cves_are_checked() {
        let s = PackageSettings::default();
        assert!(live_patch_for(&s, "kernel-livepatch-5.10.102-99.473", "5.10.102-99.473.amzn2.x86_64"));
        assert!(live_patch_for(&s, "kpatch-patch-5_14_0-70_13_1", "5.14.0-70.13.1.el9_0.x86_64"));
        assert!(!live_patch_for(&s, "kernel-livepatch-5.10.99-1", "5.10.102-99.473.amzn2.x86_64"));
        assert!(!live_patch_for(&s, "kernel-livepatch-", "5.10"));
        assert!(!live_patch_for(&s, "kernel-livepatch-5.10.10", "5.10.102-99.473.amzn2.x86_64"));
        assert!(live_patch_for(&s, "kernel-livepatch-6.1.3", "6.1.3"));
        assert!(!live_patch_for(&s, "kernel", "5.10"));
    }

    #[test]
    fn the_pending_time_survives_a_newer_kernel_and_ends_with_a_new_boot() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        let journal = Journal::open(&state).unwrap();
        let dir = state.as_path();
        let t0 = SystemTime::UNIX_EPOCH + 1000 * DAY;
        assert_eq!(pending_since(dir, Some(&journal), "6.1.1", true, t0), t0);
        assert_eq!(pending_since(dir, Some(&journal), "6.1.1", true, t0 + 7 * DAY), t0, "a newer kernel");
        assert_eq!(pending_since(dir, None, "6.1.1", true, t0 + 8 * DAY), t0, "check reads it");
        assert_eq!(pending_since(dir, Some(&journal), "6.1.2", true, t0 + 9 * DAY), t0 + 9 * DAY, "rebooted");
        pending_since(dir, Some(&journal), "6.1.2", false, t0 + 10 * DAY);
        assert_eq!(pending_since(dir, None, "6.1.2", true, t0 + 11 * DAY), t0 + 11 * DAY, "forgotten");
    }
}
