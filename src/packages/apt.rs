//! apt (Debian, Ubuntu).
//!
//! Plans from `apt-get -s` (simulate), whose `Inst NAME [OLD] (NEW ORIGINS [ARCH])` lines
//! are meant for programs, never from `apt list`, which "does not have a stable CLI
//! interface".

use std::time::Duration;

use super::apt_history;
use super::{
    PackageManager, PackageUpdate, RebootNeed, RebootProbe, RebootingUpdater, Survey, Target, expect_success, optional,
    run_until_unlocked,
};
use crate::config::{AptSettings, PackageSettings};
use crate::error::{Error, Result};

/// Environment every apt command runs with: never ask, and keep needrestart's apt hook from
/// restarting services. Since Ubuntu 24.04 needrestart "now behaves the same in both cases
/// by directly restarting the affected services" (interactive or not): from inside
/// ecs-patchd's own apt run it would restart ecs-patchd, which then waits on itself, and
/// restart the container runtime under running tasks. needrestart(1): NEEDRESTART_SUSPEND
/// "If set to a non-empty value the apt-get(8) hook will not run needrestart after
/// installing or updating packages"; NEEDRESTART_MODE "Change the configured restart mode
/// ... (l)ist only" (for a needrestart that runs anyway). The cycle restarts what it must
/// itself (the runtime policy, the agent) and lists the rest (`needrestart -b`).
const NONINTERACTIVE: [(&str, &str); 3] =
    [("DEBIAN_FRONTEND", "noninteractive"), ("NEEDRESTART_SUSPEND", "1"), ("NEEDRESTART_MODE", "l")];
/// What apt prints when another process holds a lock it does not wait for.
const COULD_NOT_LOCK: &str = "Could not get lock";
/// Options every install-like command runs with.
const KEEP_CONFIG: [&str; 4] = ["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"];

/// [`PackageManager`] for apt.
pub struct Apt {
    settings: AptSettings,
    timeout: Duration,
    security_only: bool,
    runtime_globs: Vec<String>,
    running_kernel: std::path::PathBuf,
}

impl Apt {
    /// An apt backend; `settings.args` are added to every `apt-get` command.
    pub fn new(settings: AptSettings, packages: &PackageSettings) -> Self {
        Self {
            settings,
            timeout: packages.command_timeout,
            security_only: packages.security_only,
            runtime_globs: packages.runtime_globs().cloned().collect(),
            running_kernel: packages.running_kernel.clone(),
        }
    }

    /// `apt-get` with the configured arguments; it waits for the dpkg lock (held right
    /// after boot by apt-daily or unattended-upgrades, or by a leftover transaction) for up
    /// to `packages.command_timeout` instead of failing at once.
    fn argv(&self, verb: &[&str], packages: &[String]) -> Vec<String> {
        let lock_wait = format!("DPkg::Lock::Timeout={}", self.timeout.as_secs());
        std::iter::once("apt-get".to_string())
            .chain(self.settings.args.iter().cloned())
            .chain(["-o".to_string(), lock_wait])
            .chain(verb.iter().map(|s| s.to_string()))
            .chain(super::operands(packages))
            .collect()
    }

    /// Runs an apt command, waiting for the locks it does not wait for by itself: `apt-get
    /// update` fails at once on the lists lock ("Could not get lock
    /// /var/lib/apt/lists/lock"), which apt-daily holds right after boot.
    async fn run_checked(&self, argv: Vec<String>) -> Result<String> {
        let locked = |o: &crate::command::Output| {
            o.code != Some(0) && (o.stderr.contains(COULD_NOT_LOCK) || o.stdout.contains(COULD_NOT_LOCK))
        };
        let output = run_until_unlocked(&argv, &NONINTERACTIVE, self.timeout, locked).await?;
        expect_success(&argv, output).map(|o| o.stdout)
    }

    fn install_argv(&self, extra: &[&str], packages: &[String]) -> Vec<String> {
        let mut verb = vec!["-y", "-q"];
        verb.extend_from_slice(&KEEP_CONFIG);
        verb.extend_from_slice(extra);
        verb.extend_from_slice(&["install", "--only-upgrade"]);
        self.argv(&verb, packages)
    }
}

#[async_trait::async_trait]
impl PackageManager for Apt {
    fn name(&self) -> &'static str {
        "apt"
    }

    async fn survey(&self) -> Result<Survey> {
        Ok(Survey { releases: None, updates: self.pending(None).await? })
    }

    /// `apt-get update`, then the simulated upgrade; `--with-new-pkgs` takes in the new
    /// packages an upgrade needs, such as the next kernel's image. With
    /// `packages.security_only`, only what comes from a security pocket.
    async fn pending(&self, _release: Option<&str>) -> Result<Vec<PackageUpdate>> {
        self.run_checked(self.argv(&["-q", "update"], &[])).await?;
        let plan = self.run_checked(self.argv(&["-s", "-q", "upgrade", "--with-new-pkgs"], &[])).await?;
        Ok(parse_simulation(&plan).into_iter().filter(|u| u.security || !self.security_only).collect())
    }

    async fn download(&self, target: &Target) -> Result<()> {
        self.run_checked(self.install_argv(&["--download-only"], &target.names())).await.map(drop)
    }

    /// By name: Debian and Ubuntu archives keep only the newest version, so a version
    /// published after the plan (apt-daily refreshes the lists) replaces the planned one.
    async fn install(&self, target: &Target) -> Result<()> {
        self.run_checked(self.install_argv(&[], &target.names())).await.map(drop)
    }

    /// The reboot-required file means something only where update-notifier-common writes it.
    async fn reboot_probe(&self) -> Result<RebootProbe> {
        Ok(if self.settings.reboot_notifier.exists() { RebootProbe::RebootRequiredFile } else { RebootProbe::Rule })
    }

    async fn reboot_required(&self) -> Result<RebootNeed> {
        let flag = &self.settings.reboot_required_file;
        match flag.try_exists() {
            Ok(false) => Ok(RebootNeed { needed: false, reason: format!("{} is absent", flag.display()) }),
            Ok(true) => {
                let mut list = flag.clone().into_os_string();
                list.push(".pkgs");
                let why = std::fs::read_to_string(&list)
                    .map(|pkgs| pkgs.split_whitespace().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                let reason = if why.is_empty() {
                    format!("{} exists", flag.display())
                } else {
                    format!("{} exists (for {why})", flag.display())
                };
                Ok(RebootNeed { needed: true, reason })
            }
            Err(e) => Err(Error::Packages(format!("cannot check {}: {e}", flag.display()))),
        }
    }

    /// apt keeps every kernel an upgrade brings (each is a new package name, such as
    /// `linux-image-6.8.0-1021-aws`) until `autoremove`; kept, they fill `/boot` and the
    /// next `update-initramfs` fails. apt.conf(5), `NeverAutoRemove::KernelCount`: "Apt will
    /// always keep the running kernel and the latest one. If the latest kernel is the same
    /// as the running kernel, the second latest kernel is kept." Of what `apt-get -s
    /// autoremove` would remove, the kernel packages are removed, nothing else.
    async fn remove_old_kernels(&self) -> Result<Vec<String>> {
        if !self.settings.remove_old_kernels {
            return Ok(Vec::new());
        }
        let plan = self.run_checked(self.argv(&["-s", "-q", "autoremove"], &[])).await?;
        // And never the running one's, whatever apt says.
        let running = std::fs::read_to_string(&self.running_kernel).unwrap_or_default();
        let running = running.trim();
        let kernels: Vec<String> = parse_removals(&plan)
            .into_iter()
            .filter(|n| kernel_package(n) && (running.is_empty() || !n.contains(running)))
            .collect();
        if !kernels.is_empty() {
            self.run_checked(self.argv(&["-y", "-q", "remove"], &kernels)).await?;
        }
        Ok(kernels)
    }

    /// needrestart's batch mode: one `NEEDRESTART-SVC: NAME` line per service.
    async fn runtime_updated_in_place(&self) -> Vec<String> {
        let booted = apt_history::booted_at();
        apt_history::runtime_updated_by_unattended(&self.settings.history_log, &self.runtime_globs, booted)
    }

    async fn services_to_restart(&self) -> Vec<String> {
        let argv: Vec<String> = ["needrestart", "-b", "-r", "l"].map(String::from).to_vec();
        let listed = optional(&argv, self.timeout).await.unwrap_or_default();
        listed.lines().filter_map(|l| l.strip_prefix("NEEDRESTART-SVC:")).map(|s| s.trim().to_string()).collect()
    }

    /// unattended-upgrades reboots by itself when it runs (`APT::Periodic::Unattended-Upgrade`
    /// not "0") with `Unattended-Upgrade::Automatic-Reboot "true"`; read through
    /// `apt-config dump`, which merges every apt.conf.d fragment as apt does.
    async fn rebooting_updaters(&self) -> Result<Vec<RebootingUpdater>> {
        let argv: Vec<String> = std::iter::once("apt-config".to_string())
            .chain(self.settings.args.iter().cloned())
            .chain(["dump".into()])
            .collect();
        let dump = self.run_checked(argv).await?;
        let value = |key: &str| -> Option<String> {
            dump.lines().find_map(|l| {
                Some(l.strip_prefix(key)?.strip_prefix(' ')?.trim_end_matches(';').trim_matches('"').to_string())
            })
        };
        let runs = value("APT::Periodic::Unattended-Upgrade").is_some_and(|v| v != "0");
        let reboots = value("Unattended-Upgrade::Automatic-Reboot").is_some_and(|v| v == "true" || v == "1");
        Ok(if runs && reboots {
            vec![RebootingUpdater {
                name: "unattended-upgrades".into(),
                because: "Unattended-Upgrade::Automatic-Reboot \"true\" (apt-config dump)".into(),
            }]
        } else {
            Vec::new()
        })
    }
}

/// The packages of a kernel: its image, its modules, its headers.
const KERNEL_PACKAGES: [&str; 3] = ["linux-image-*", "linux-modules-*", "linux-headers-*"];

fn kernel_package(name: &str) -> bool {
    KERNEL_PACKAGES.iter().any(|g| glob::Pattern::new(g).is_ok_and(|p| p.matches(name)))
}

/// Parses `apt-get -s autoremove`: one `Remv NAME [VERSION]` line per package it would
/// remove; a name that is no package's is left out.
fn parse_removals(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("Remv ")?.split(' ').next())
        .filter(|name| super::package_name(name))
        .map(str::to_string)
        .collect()
}

/// Parses `apt-get -s upgrade`: one `Inst NAME [OLD] (NEW ORIGINS [ARCH])` line per change,
/// where ORIGINS lists `Origin:Version/Archive` of each source, comma-separated; an
/// update is a security one when an archive is a security pocket (`bookworm-security`,
/// `noble-security`).
fn parse_simulation(stdout: &str) -> Vec<PackageUpdate> {
    stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            let (current, rest) = match rest.strip_prefix('[') {
                Some(r) => {
                    let (old, r) = r.split_once(']')?;
                    (Some(old.to_string()), r.trim_start())
                }
                None => (None, rest),
            };
            let inside = rest.strip_prefix('(')?;
            let (available, origins) = inside.split_once(' ').unwrap_or((inside, ""));
            let available = available.trim_end_matches(')');
            // A line without a name or a version is no package's (noise, not a plan).
            if name.is_empty() || available.is_empty() {
                return None;
            }
            let origins = origins.trim_end_matches(')');
            let origins = origins.rsplit_once(" [").map_or(origins, |(o, _)| o);
            // `Origin:Version/Archive`, or the bare archive for a repository without an origin.
            let security = origins
                .split(", ")
                .any(|o| o.rsplit_once('/').map_or(o, |(_, archive)| archive).ends_with("-security"));
            Some(PackageUpdate {
                name: name.to_string(),
                current,
                available: available.to_string(),
                built: None,
                security,
                severity: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// apt's simulation is a repository's word: any `Inst` lines are read without a
        /// panic, and what is read names a package.
        #[test]
        fn any_simulation_is_read_without_a_panic(lines in proptest::collection::vec("(Inst )?[^\n]{0,80}", 0..20)) {
            for update in parse_simulation(&lines.join("\n")) {
                prop_assert!(!update.name.is_empty() && !update.available.is_empty());
            }
        }
    }

    #[test]
    fn autoremove_s_kernels_are_read_and_nothing_else_is_taken_for_one() {
        // The format of apt's own test (test/integration/test-apt-get-autoremove).
        let out = "0 upgraded, 0 newly installed, 4 to remove and 0 not upgraded.\n\
Remv linux-image-6.8.0-1019-aws [6.8.0-1019.21]\n\
Remv linux-modules-6.8.0-1019-aws [6.8.0-1019.21]\n\
Remv po-debconf [1.0.16]\n\
Remv $(reboot) [1]\n";
        let removals = parse_removals(out);
        assert_eq!(removals, ["linux-image-6.8.0-1019-aws", "linux-modules-6.8.0-1019-aws", "po-debconf"]);
        let kernels: Vec<_> = removals.iter().filter(|n| kernel_package(n)).collect();
        assert_eq!(kernels, ["linux-image-6.8.0-1019-aws", "linux-modules-6.8.0-1019-aws"]);
    }

    #[test]
    fn an_inst_line_without_a_name_or_a_version_is_no_update() {
        assert!(parse_simulation("Inst  (1.0 Ubuntu:22.04/jammy [amd64])\nInst demo-app ()\n").is_empty());
    }

    #[test]
    fn parses_inst_lines_only() {
        let out = "Reading package lists...\n\
The following packages will be upgraded:\n  demo-app libc6\n\
Inst libc6 [2.36-9+deb12u7] (2.36-9+deb12u8 Debian-Security:12/stable-security [amd64])\n\
Inst linux-image-6.1.0-27-amd64 (6.1.115-1 Debian:12.8/stable [amd64])\n\
Conf libc6 (2.36-9+deb12u8 Debian-Security:12/stable-security [amd64])\n";
        let updates = parse_simulation(out);
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[0].name, "libc6");
        assert_eq!(updates[0].current.as_deref(), Some("2.36-9+deb12u7"));
        assert_eq!(updates[0].available, "2.36-9+deb12u8");
        assert!(updates[0].security, "from Debian-Security:12/stable-security");
        assert_eq!(updates[1].current, None);
        assert!(!updates[1].security);
    }

    #[tokio::test]
    async fn reboot_flag_and_its_package_list() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("reboot-required");
        let notifier = dir.path().join("notify-reboot-required");
        std::fs::write(&notifier, "#!/bin/sh\n").unwrap();
        let settings =
            AptSettings { reboot_required_file: flag.clone(), reboot_notifier: notifier, ..AptSettings::default() };
        let apt = Apt::new(settings, &PackageSettings::default());
        assert_eq!(apt.reboot_probe().await.unwrap(), RebootProbe::RebootRequiredFile);
        assert!(!apt.reboot_required().await.unwrap().needed);
        std::fs::write(&flag, "*** System restart required ***\n").unwrap();
        std::fs::write(dir.path().join("reboot-required.pkgs"), "linux-base\nlibc6\n").unwrap();
        let need = apt.reboot_required().await.unwrap();
        assert!(need.needed);
        assert!(need.reason.contains("linux-base, libc6"), "{}", need.reason);
    }
}
