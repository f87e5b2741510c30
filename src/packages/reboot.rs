//! The reboot rule, for hosts without a reboot probe (minimal images lack
//! `needs-restarting` and update-notifier-common): a reboot is needed when the newest
//! kernel installed is not the one running, or when an updated package is one of
//! `packages.reboot_packages`.

use std::path::{Path, PathBuf};

use super::RebootNeed;
use crate::config::{PackageSettings, first_match};
use crate::error::{Error, Result};

/// What the rule looks at.
#[derive(Debug, Clone)]
pub struct RebootRule {
    /// Where kernels are installed, as `vmlinuz-RELEASE`.
    pub boot_dir: PathBuf,
    /// The file holding the running kernel's release (`uname -r`).
    pub running_kernel: PathBuf,
    /// Globs of packages whose update needs a reboot.
    pub reboot_packages: Vec<String>,
}

impl RebootRule {
    /// The rule `settings` describe (globs were validated when the settings were loaded).
    pub fn new(settings: &PackageSettings) -> Self {
        Self {
            boot_dir: settings.boot_dir.clone(),
            running_kernel: settings.running_kernel.clone(),
            reboot_packages: settings.reboot_globs().cloned().collect(),
        }
    }

    /// The first glob `name` matches, if any.
    pub fn matching(&self, name: &str) -> Option<&String> {
        first_match(&self.reboot_packages, name)
    }
}

/// A reboot is needed when one of `updated` matches `packages.reboot_packages` (or its
/// extras); `None` when none does.
pub fn by_package(rule: &RebootRule, updated: &[String]) -> Option<RebootNeed> {
    let (name, glob) = updated.iter().find_map(|n| rule.matching(n).map(|g| (n, g)))?;
    Some(RebootNeed {
        needed: true,
        reason: format!("{name} was updated and matches the reboot packages (\"{glob}\")"),
    })
}

/// Applies the rule to a host where `updated` packages were just installed.
pub fn by_rule(rule: &RebootRule, updated: &[String]) -> Result<RebootNeed> {
    if let Some(need) = by_package(rule, updated) {
        return Ok(need);
    }
    let running = std::fs::read_to_string(&rule.running_kernel)
        .map_err(|e| {
            Error::Packages(format!("cannot read the running kernel from {}: {e}", rule.running_kernel.display()))
        })?
        .trim()
        .to_string();
    Ok(match newest_kernel(&rule.boot_dir)? {
        Some(newest) if newest != running => RebootNeed {
            needed: true,
            reason: format!("the newest kernel installed is {newest}, the running one {running} (reboot rule)"),
        },
        Some(_) => RebootNeed { needed: false, reason: format!("the newest kernel ({running}) runs (reboot rule)") },
        None => RebootNeed {
            needed: false,
            reason: format!("no vmlinuz-* in {}; no reboot package updated (reboot rule)", rule.boot_dir.display()),
        },
    })
}

/// The release of the most recently installed `vmlinuz-RELEASE` in `dir`, by the time
/// the file was written (its ctime: rpm and dpkg set a file's mtime to the build time);
/// RHEL-family rescue images (`vmlinuz-0-rescue-*`) are not kernels one boots into.
fn newest_kernel(dir: &Path) -> Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Packages(format!("cannot list {}: {e}", dir.display()))),
    };
    let mut newest: Option<((i64, i64), String)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(release) = name.strip_prefix("vmlinuz-").filter(|r| !r.contains("-rescue-")) else { continue };
        // symlink_metadata: a `vmlinuz` link's time says nothing about the kernel.
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        let written = (meta.ctime(), meta.ctime_nsec());
        if newest.as_ref().is_none_or(|(t, _)| written > *t) {
            newest = Some((written, release.to_string()));
        }
    }
    Ok(newest.map(|(_, release)| release))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn rule(dir: &Path) -> RebootRule {
        RebootRule {
            boot_dir: dir.join("boot"),
            running_kernel: dir.join("osrelease"),
            reboot_packages: vec!["kernel*".into(), "glibc".into()],
        }
    }

    #[test]
    fn a_reboot_package_or_a_newer_kernel_needs_a_reboot() {
        let dir = tempfile::tempdir().unwrap();
        let rule = rule(dir.path());
        std::fs::write(dir.path().join("osrelease"), "6.1.100-1.amzn2023.x86_64\n").unwrap();
        assert!(!by_rule(&rule, &["curl".into()]).unwrap().needed, "no kernel at all");
        let need = by_rule(&rule, &["curl".into(), "glibc".into()]).unwrap();
        assert!(need.needed && need.reason.contains("glibc"), "{need:?}");

        std::fs::create_dir(dir.path().join("boot")).unwrap();
        let old = dir.path().join("boot/vmlinuz-6.1.100-1.amzn2023.x86_64");
        std::fs::write(&old, "").unwrap();
        assert!(!by_rule(&rule, &["curl".into()]).unwrap().needed, "the newest kernel runs");

        let new = dir.path().join("boot/vmlinuz-6.1.112-2.amzn2023.x86_64");
        std::fs::write(&new, "").unwrap();
        let later = SystemTime::now() + Duration::from_secs(60);
        std::fs::File::options().write(true).open(&new).unwrap().set_modified(later).unwrap();
        let need = by_rule(&rule, &["curl".into()]).unwrap();
        assert!(need.needed && need.reason.contains("6.1.112-2"), "{need:?}");
    }
}
