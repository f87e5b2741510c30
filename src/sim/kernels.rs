//! Kernel fixes week after week, most of them covered by a live patch for the running
//! kernel (`simulate --livepatch-misses N`): what the simulated hosts' package manager, its
//! advisories and kpatch answer.
//!
//! Kernel `k` (`6.1.k`) is published in the `k`-th kernel week and fixes `CVE-2026-k`, its
//! advisory naming the CVEs of every kernel after the one installed, as dnf's does. Unless `k`
//! is one in `N`, the live patch for the running kernel (`kernel-livepatch-6.1.<running>`,
//! version `1.k`) fixes it too. A reboot runs the newest kernel installed, for which no live
//! patch is installed yet.

use super::world::{KernelFixes, SimInstance, World};
use crate::livepatch::{LivePatching, LiveState};
use crate::packages::{Cves, PackageUpdate};

/// Kernel fixes carried from week to week (`simulate --livepatch-misses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LivePatchRun {
    /// One kernel fix in this many has no live patch (0: none has one, as without live
    /// patching).
    pub misses: usize,
    /// `packages.kernel_reboot_within` (none: every kernel drains and reboots).
    #[serde(with = "humantime_serde")]
    pub reboot_within: Option<std::time::Duration>,
}

impl KernelFixes {
    /// The newest kernel published in `week` (kernel 0 is the image's).
    pub fn newest(&self, week: usize) -> usize {
        week / self.every.max(1) + 1
    }

    /// Whether kernel `k`'s fix comes as a live patch too.
    pub fn live_patched(&self, k: usize) -> bool {
        self.misses > 0 && !k.is_multiple_of(self.misses)
    }

    /// The fixes of kernels `from..=to` that have a live patch.
    fn patched_between(&self, from: usize, to: usize) -> impl Iterator<Item = usize> + '_ {
        (from..=to).filter(|k| self.live_patched(*k))
    }

    /// The kernel and live patch updates `instance` is offered.
    pub fn pending(&self, instance: &SimInstance) -> Vec<PackageUpdate> {
        let newest = self.newest(instance.week);
        let mut updates = Vec::new();
        if instance.installed_kernel < newest {
            updates.push(update("kernel", release(instance.installed_kernel), release(newest)));
        }
        let after = instance.running_kernel.max(instance.livepatch_version) + 1;
        if let Some(top) = self.patched_between(after, newest).last() {
            let name = live_patch(instance.running_kernel);
            updates.push(update(&name, format!("1.{}", instance.livepatch_version), format!("1.{top}")));
        }
        updates
    }

    /// The CVEs the advisories name: of the updates offered, or (`applied`) of the live
    /// patch installed.
    pub fn advisories(&self, instance: &SimInstance, applied: bool) -> Cves {
        let newest = self.newest(instance.week);
        let running = instance.running_kernel;
        let mut cves = Cves::new();
        let patch = live_patch(running);
        if applied {
            cves.insert(patch, self.patched_between(running + 1, instance.livepatch_version).map(cve).collect());
        } else {
            cves.insert("kernel".into(), (instance.installed_kernel + 1..=newest).map(cve).collect());
            let after = running.max(instance.livepatch_version) + 1;
            cves.insert(patch, self.patched_between(after, newest).map(cve).collect());
        }
        cves.retain(|_, found| !found.is_empty());
        cves
    }

    /// When the running kernel was built, at `now`: kernel `k` in the week it was published,
    /// the image's a week before the first.
    pub fn built(&self, instance: &SimInstance, now: std::time::SystemTime) -> std::time::SystemTime {
        const WEEK: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
        let published = instance.running_kernel.saturating_sub(1) * self.every.max(1);
        let weeks = instance.week.saturating_sub(published) + usize::from(instance.running_kernel == 0);
        now - WEEK * u32::try_from(weeks).unwrap_or(u32::MAX)
    }

    /// Installs what `names` names of what `instance` is offered.
    pub fn install(&self, instance: &mut SimInstance, names: &[String]) {
        let newest = self.newest(instance.week);
        if names.iter().any(|n| n == "kernel") {
            instance.installed_kernel = newest;
        }
        if names.contains(&live_patch(instance.running_kernel)) {
            let after = instance.running_kernel.max(instance.livepatch_version) + 1;
            instance.livepatch_version =
                self.patched_between(after, newest).last().unwrap_or(instance.livepatch_version);
        }
    }
}

/// What a reboot changes: the newest kernel installed runs, with no live patch.
pub fn rebooted(instance: &mut SimInstance) {
    instance.running_kernel = instance.installed_kernel;
    instance.livepatch_version = 0;
}

fn release(k: usize) -> String {
    format!("6.1.{k}")
}

fn cve(k: usize) -> String {
    format!("CVE-2026-{k:04}")
}

fn live_patch(running: usize) -> String {
    format!("kernel-livepatch-{}", release(running))
}

fn update(name: &str, current: impl Into<String>, available: impl Into<String>) -> PackageUpdate {
    PackageUpdate {
        name: name.into(),
        current: Some(current.into()),
        available: available.into(),
        built: None,
        security: true,
        severity: Some("Important".into()),
    }
}

/// kpatch on a simulated host: the live patch installed for the running kernel is loaded.
pub struct SimLivePatching {
    /// The world.
    pub world: World,
    /// The host.
    pub host: usize,
}

#[async_trait::async_trait]
impl LivePatching for SimLivePatching {
    async fn state(&self) -> Option<LiveState> {
        let w = self.world.lock().expect("world");
        w.kernel_fixes?;
        let i = &w.instances[self.host];
        let loaded = (i.livepatch_version > 0)
            .then(|| format!("livepatch_6_1_{}_{}", i.running_kernel, i.livepatch_version))
            .into_iter()
            .collect();
        Some(LiveState { tool: "kpatch".into(), kernel: release(i.running_kernel), loaded, ..LiveState::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_patches_cover_three_kernel_fixes_in_four_until_a_reboot() {
        let fixes = KernelFixes { every: 1, misses: 4 };
        let mut host = super::super::world::WorldState::new(1, 1, 1, 0).instances.remove(0);
        host.week = 1; // kernels 1 and 2 published
        let names =
            |u: Vec<PackageUpdate>| u.into_iter().map(|u| format!("{} {}", u.name, u.available)).collect::<Vec<_>>();
        assert_eq!(names(fixes.pending(&host)), ["kernel 6.1.2", "kernel-livepatch-6.1.0 1.2"]);
        let offered = fixes.advisories(&host, false);
        assert_eq!(offered["kernel"].len(), 2);
        assert_eq!(offered["kernel-livepatch-6.1.0"], offered["kernel"], "both fixes live patched");
        fixes.install(&mut host, &["kernel-livepatch-6.1.0".into()]);
        assert_eq!(names(fixes.pending(&host)), ["kernel 6.1.2"]);
        assert_eq!(fixes.advisories(&host, true)["kernel-livepatch-6.1.0"].len(), 2);
        host.week = 3; // kernel 4 has no live patch
        assert_eq!(names(fixes.pending(&host)), ["kernel 6.1.4", "kernel-livepatch-6.1.0 1.3"]);
        assert!(!fixes.advisories(&host, false)["kernel-livepatch-6.1.0"].contains("CVE-2026-0004"));
        fixes.install(&mut host, &["kernel".into()]);
        rebooted(&mut host);
        assert_eq!((host.running_kernel, host.livepatch_version), (4, 0));
        assert!(fixes.pending(&host).is_empty());
    }
}
