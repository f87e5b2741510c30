//! Package managers: survey the updates, download, install, and "is a reboot needed".
//!
//! Every backend plans from machine-readable output (`dnf repoquery --qf`, `apt-get -s`),
//! and verifies with the same query it planned with.

pub mod apt;
pub mod apt_history;
pub mod detect;
pub mod reboot;
pub mod rpm;

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::command;
use crate::error::{Error, Result};
use crate::shutdown;
use tracing::error;

/// One package that has a newer version available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageUpdate {
    /// Package name (without architecture).
    pub name: String,
    /// Installed version, when the package manager reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// The version that will be installed.
    pub available: String,
    /// When the new version was built (rpm's build time), for `packages.min_age`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    pub built: Option<SystemTime>,
    /// True when it comes from a security pocket (apt), or when the query was limited to
    /// security advisories (dnf/yum with `packages.security_only`; otherwise unknown: false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub security: bool,
    /// The advisory's severity ("Critical", "Important", ...), where the repository says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

#[cfg(test)]
impl PackageUpdate {
    /// An update of `name` to `available`, nothing else known (for tests).
    pub(crate) fn of(name: &str, available: &str) -> Self {
        Self {
            name: name.into(),
            current: None,
            available: available.into(),
            built: None,
            security: false,
            severity: None,
        }
    }
}

/// `packages` as the operands of a package manager's command: after `--`, so that none is
/// read as an option (nothing when there are none).
fn operands(packages: &[String]) -> impl Iterator<Item = String> + '_ {
    (!packages.is_empty()).then(|| "--".to_string()).into_iter().chain(packages.iter().cloned())
}

/// A word of letters, digits, `._+-` and `extra`, starting with a letter, a digit or `_`,
/// at most 256 bytes long.
fn word(text: &str, extra: &str) -> bool {
    text.len() <= 256
        && text.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c) || extra.contains(c))
}

/// Whether `name` can be a package's name (a Debian multiarch name carries its
/// architecture: `libc6:i386`).
pub fn package_name(name: &str) -> bool {
    word(name, "_:")
}

/// Whether `name` is a CVE id (`CVE-2024-1086`).
pub fn is_cve(name: &str) -> bool {
    let mut parts = name.split('-');
    let digits = |p: Option<&str>, least: usize| {
        p.is_some_and(|p| (least..=12).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    parts.next() == Some("CVE") && digits(parts.next(), 4) && digits(parts.next(), 4) && parts.next().is_none()
}

/// Refuses an update whose name or version is not one a package can have: both come from
/// repository metadata, which a mirror writes, and both reach a command run as root. RPM
/// and Debian names are letters, digits and `._+-` (Debian's lower case, with `:arch` on a
/// multiarch host); versions add `~:^` (epochs, pre-releases).
pub fn check_names(updates: &[PackageUpdate]) -> Result<()> {
    match updates.iter().find(|u| !package_name(&u.name) || !word(&u.available, "_~:^")) {
        None => Ok(()),
        Some(u) => Err(Error::Packages(format!(
            "the repositories offer \"{}\" at version \"{}\", which is not a package name and version: refused, \
             nothing is installed (check the repositories configured on this host)",
            crate::foreign::shown(&u.name),
            crate::foreign::shown(&u.available)
        ))),
    }
}

/// The repository release a host runs and can move to (Amazon Linux 2023's versioned
/// repositories; other systems have none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Releases {
    /// The release the host is locked to now.
    pub running: String,
    /// The newest release published, when it could be found.
    pub newest: Option<String>,
    /// The release this plan installs from (`--releasever`), or none for the locked one.
    pub target: Option<String>,
}

impl Releases {
    /// The newest release, when it is published and this plan does not move to it (locked,
    /// or pinned to another): fixes only it carries are pending all the same.
    pub fn unapplied(&self) -> Option<&str> {
        let applied = self.target.as_ref().unwrap_or(&self.running);
        self.newest.as_deref().filter(|newest| *newest != applied)
    }
}

/// What a survey of the host's packages found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Survey {
    /// The releases, on a system with versioned repositories.
    pub releases: Option<Releases>,
    /// Updates available in the target release (after `security_only`).
    pub updates: Vec<PackageUpdate>,
}

/// What the cycle asks a package manager to download or install.
#[derive(Debug, Clone)]
pub struct Target {
    /// The repository release to use (`--releasever`), or none for the locked one.
    pub release: Option<String>,
    /// The planned updates, each at its planned version.
    pub updates: Vec<PackageUpdate>,
}

impl Target {
    /// The package names.
    pub fn names(&self) -> Vec<String> {
        self.updates.iter().map(|u| u.name.clone()).collect()
    }
}

/// How this host tells whether a reboot is needed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootProbe {
    /// `dnf needs-restarting -r` (dnf-plugins-core) or `needs-restarting -r` (yum-utils).
    #[default]
    NeedsRestarting,
    /// `/var/run/reboot-required`, written by update-notifier-common.
    RebootRequiredFile,
    /// Neither is installed: [`by_rule`] decides (newest kernel vs the running one, and
    /// the updated packages against `packages.reboot_packages`).
    Rule,
}

/// Whether the host must reboot for installed updates to take effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebootNeed {
    /// True when a reboot is needed.
    pub needed: bool,
    /// What the package manager (or the rule) said.
    pub reason: String,
}

/// An updater on the host that installs updates and reboots by itself, bypassing the drain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebootingUpdater {
    /// Its name (unattended-upgrades, dnf-automatic).
    pub name: String,
    /// The setting that makes it reboot, and where.
    pub because: String,
}

/// A package manager, confined to what the cycle needs.
#[async_trait::async_trait]
pub trait PackageManager: Send + Sync {
    /// Its name, for messages ("dnf", "yum", "apt").
    fn name(&self) -> &'static str;
    /// Refreshes the metadata and lists the updates of the release `packages.release`
    /// names (resolved to a version once, here).
    async fn survey(&self) -> Result<Survey>;
    /// Updates still available in `release`, by the survey's own query (the verification).
    async fn pending(&self, release: Option<&str>) -> Result<Vec<PackageUpdate>>;
    /// Downloads the updates of the target without changing the system.
    async fn download(&self, target: &Target) -> Result<()>;
    /// Installs the updates of the target (a no-op for those already up to date).
    async fn install(&self, target: &Target) -> Result<()>;
    /// Which reboot check this host has (asked before any drain).
    async fn reboot_probe(&self) -> Result<RebootProbe>;
    /// Whether what is installed needs a reboot, by this backend's own probe (the one
    /// [`PackageManager::reboot_probe`] names when it is not [`RebootProbe::Rule`]).
    async fn reboot_required(&self) -> Result<RebootNeed>;
    /// Updaters configured to install and reboot on their own.
    async fn rebooting_updaters(&self) -> Result<Vec<RebootingUpdater>>;
    /// Runtime packages an unattended updater replaced under running tasks since the boot,
    /// one sentence each; empty where the backend keeps no such history.
    async fn runtime_updated_in_place(&self) -> Vec<String> {
        Vec::new()
    }
    /// Services still running code that an update replaced (`needs-restarting -s`,
    /// `needrestart -b`), best effort: empty where no such tool answers.
    async fn services_to_restart(&self) -> Vec<String>;
    /// After a boot into a new kernel: removes the kernels the package manager's own policy
    /// no longer needs, and answers their packages. dnf and yum need nothing here: they
    /// keep `installonly_limit` kernels and remove the oldest as they install a new one.
    async fn remove_old_kernels(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// The CVEs the repositories' advisories name, by package: those of the pending updates
    /// of `release`, or (`applied`) those of what is installed. Empty where the repositories
    /// carry no advisories (apt).
    async fn advisory_cves(&self, release: Option<&str>, applied: bool) -> Result<Cves> {
        let _ = (release, applied);
        Ok(Cves::new())
    }
    /// When the package that installed the running kernel's image (`/boot/vmlinuz-<kernel>`)
    /// was built, where the package manager can tell.
    async fn kernel_built(&self, kernel: &str) -> Option<SystemTime> {
        let _ = kernel;
        None
    }
}

/// CVE ids by package name.
pub type Cves = std::collections::BTreeMap<String, std::collections::BTreeSet<String>>;

/// Runs one package-manager command in the C locale and UTC, as a transaction that a stop request
/// waits for ([`shutdown::transaction`]); a failed start or a timeout is an error.
async fn run(argv: &[String], env: &[(&str, &str)], limit: Duration) -> Result<command::Output> {
    let mut full_env = vec![("LC_ALL", "C"), ("TZ", "UTC")];
    full_env.extend_from_slice(env);
    let _transaction = shutdown::transaction().await;
    command::run(argv, &full_env, limit).await.map_err(|e| {
        if let command::RunError::TimedOut { command, limit } = &e {
            // The one case where a transaction is cut short: say so where nobody can miss it.
            error!(
                "killed `{command}` (SIGKILL) after packages.command_timeout ({}): the package \
                 database may need repair (`dnf history`, `dpkg --configure -a`) before the next run",
                humantime::format_duration(*limit)
            );
        }
        Error::Packages(e.to_string())
    })
}

/// Delay between two tries of a command that found the package manager's lock taken.
const LOCK_POLL: Duration = Duration::from_secs(5);

/// Runs `argv` again while it fails because another process holds a lock (`locked` tells),
/// up to `limit` in all: right after boot, apt-daily, unattended-upgrades or a leftover
/// transaction hold the locks, and a patch run must wait for them rather than fail.
async fn run_until_unlocked(
    argv: &[String],
    env: &[(&str, &str)],
    limit: Duration,
    locked: impl Fn(&command::Output) -> bool,
) -> Result<command::Output> {
    let deadline = std::time::Instant::now() + limit;
    let mut said = false;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_secs(1));
        let output = run(argv, env, left).await?;
        if !locked(&output) {
            return Ok(output);
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Packages(format!(
                "another process held the package manager's lock for longer than packages.command_timeout ({}): {}",
                lock_holder(&output),
                command::failure(argv, &output)
            )));
        }
        if !said {
            tracing::info!(
                "another process holds the package manager's lock ({}); waiting for it, up to packages.command_timeout",
                lock_holder(&output)
            );
            said = true;
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

/// The package manager's own words on who holds its lock, bounded: dnf with exit_on_lock,
/// "Existing lock /var/cache/dnf/metadata_lock.pid: another copy is running as pid 1234";
/// apt, "Could not get lock /var/lib/apt/lists/lock. It is held by process 1234 (apt-get)".
fn lock_holder(output: &command::Output) -> String {
    const MOST: usize = 200;
    let line = [&output.stderr, &output.stdout]
        .into_iter()
        .flat_map(|text| text.lines())
        .find(|l| l.contains("lock") && (l.contains("pid") || l.contains("process")))
        .map_or("the package manager does not say which process", str::trim);
    line.chars().take(MOST).collect()
}

/// Runs a tool that may be missing (a probe); its standard output when it exited 0.
async fn optional(argv: &[String], limit: Duration) -> Option<String> {
    command::answer(argv, run(argv, &[], limit).await).map_err(|why| tracing::info!("{why}")).ok()
}

/// Fails with the command, exit code and last output lines unless it exited 0.
fn expect_success(argv: &[String], output: command::Output) -> Result<command::Output> {
    if output.code == Some(0) { Ok(output) } else { Err(Error::Packages(command::failure(argv, &output))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(stdout: &str, stderr: &str) -> command::Output {
        command::Output { code: Some(200), stdout: stdout.into(), stderr: stderr.into() }
    }

    #[test]
    fn the_lock_holder_is_named_in_the_package_manager_s_words() {
        let dnf =
            output("", "Error: Existing lock /var/cache/dnf/metadata_lock.pid: another copy is running as pid 1234.\n");
        assert_eq!(
            lock_holder(&dnf),
            "Error: Existing lock /var/cache/dnf/metadata_lock.pid: another copy is running as pid 1234."
        );
        let apt = output(
            "Reading package lists...\n",
            "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 42 (apt-get)\n",
        );
        assert!(lock_holder(&apt).ends_with("held by process 42 (apt-get)"));
        assert_eq!(lock_holder(&output("", "")), "the package manager does not say which process");
        let long = format!("lock held by pid {}", "9".repeat(1000));
        assert_eq!(lock_holder(&output(&long, "")).chars().count(), 200);
    }

    fn update(name: &str, available: &str) -> PackageUpdate {
        PackageUpdate::of(name, available)
    }

    #[test]
    fn names_that_are_no_package_are_refused_and_operands_follow_a_double_dash() {
        let good = [
            update("glibc", "2.34-100.amzn2023.0.1"),
            update("libstdc++", "1:2.0~rc1+dfsg-1ubuntu0.1"),
            update("libsss_idmap", "2.9.4-1.amzn2023_x"),
            update("libc6:i386", "2.35-0ubuntu3.8"),
        ];
        assert!(check_names(&good).is_ok());
        for (name, version) in
            [("--config=/tmp/evil", "1.0"), ("kernel", "-1"), ("two words", "1.0"), ("ok", "1.0;reboot"), ("", "1")]
        {
            let err = check_names(&[update(name, version)]).unwrap_err();
            assert!(err.to_string().contains("not a package name"), "{name} {version}: {err}");
        }
        assert_eq!(operands(&["a-1".into()]).collect::<Vec<_>>(), ["--", "a-1"]);
        assert_eq!(operands(&[]).count(), 0);
    }

    #[test]
    fn cve_ids_are_recognised() {
        assert!(is_cve("CVE-2024-1086") && is_cve("CVE-2024-123456"));
        for not in ["cve-2024-1086", "CVE-24-1", "CVE-2024-1086-x", "ALAS-2024-1", "CVE-2024-"] {
            assert!(!is_cve(not), "{not}");
        }
    }
}
