//! apt (Debian, Ubuntu).

use std::time::Duration;

use super::{PackageManager, PackageUpdate, RebootNeed, expect_success, run};
use crate::config::AptSettings;
use crate::error::{Error, Result};

/// Environment every apt command runs with: never ask, keep local config files.
const NONINTERACTIVE: [(&str, &str); 1] = [("DEBIAN_FRONTEND", "noninteractive")];
/// Options every install-like command runs with.
const KEEP_CONFIG: [&str; 4] = ["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"];

/// [`PackageManager`] for apt.
pub struct Apt {
    settings: AptSettings,
    timeout: Duration,
}

impl Apt {
    /// An apt backend; `settings.args` are added to every `apt-get` command.
    pub fn new(settings: AptSettings, timeout: Duration) -> Self {
        Self { settings, timeout }
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
            .chain(packages.iter().cloned())
            .collect()
    }

    async fn run_checked(&self, argv: Vec<String>) -> Result<String> {
        let output = run(&argv, &NONINTERACTIVE, self.timeout).await?;
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

    async fn pending_updates(&self) -> Result<Vec<PackageUpdate>> {
        self.run_checked(self.argv(&["-q", "update"], &[])).await?;
        let plan = self.run_checked(self.argv(&["-s", "-q", "upgrade", "--with-new-pkgs"], &[])).await?;
        Ok(parse_simulation(&plan))
    }

    async fn download(&self, packages: &[String]) -> Result<()> {
        self.run_checked(self.install_argv(&["--download-only"], packages)).await.map(drop)
    }

    async fn install(&self, packages: &[String]) -> Result<()> {
        self.run_checked(self.install_argv(&[], packages)).await.map(drop)
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
}

/// Parses `apt-get -s upgrade`: one `Inst NAME [OLD] (NEW REPO [ARCH])` line per change.
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
            let available = rest.strip_prefix('(')?.split_whitespace().next()?.to_string();
            Some(PackageUpdate { name: name.to_string(), current, available })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(updates[1].current, None);
    }

    #[tokio::test]
    async fn reboot_flag_and_its_package_list() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("reboot-required");
        let apt = Apt::new(AptSettings { args: vec![], reboot_required_file: flag.clone() }, Duration::from_secs(5));
        assert!(!apt.reboot_required().await.unwrap().needed);
        std::fs::write(&flag, "*** System restart required ***\n").unwrap();
        std::fs::write(dir.path().join("reboot-required.pkgs"), "linux-base\nlibc6\n").unwrap();
        let need = apt.reboot_required().await.unwrap();
        assert!(need.needed);
        assert!(need.reason.contains("linux-base, libc6"), "{}", need.reason);
    }
}
