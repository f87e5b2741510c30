//! dnf (Amazon Linux 2023) and yum (Amazon Linux 2): the same verbs, different spellings.

use std::time::Duration;

use super::{PackageManager, PackageUpdate, RebootNeed, expect_success, run};
use crate::command;
use crate::error::{Error, Result};
use tracing::info;

/// `check-update` exit code meaning "updates are available".
const UPDATES_AVAILABLE: i32 = 100;
/// dnf exit code meaning "another process holds the package lock".
const DNF_LOCKED: i32 = 200;
/// What dnf (and yum: "Another app is currently holding the yum lock; waiting") print
/// while they wait for a lock; dnf's wording.
const WAITED_FOR_LOCK: &str = "Waiting for process with pid";
/// Delay between two tries of a command that found the dnf lock taken.
const LOCK_POLL: Duration = Duration::from_secs(5);

/// Which rpm-family tool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpmTool {
    /// dnf, with `dnf needs-restarting` from dnf-plugins-core.
    Dnf,
    /// yum, with `needs-restarting` from yum-utils.
    Yum,
}

/// [`PackageManager`] for dnf or yum.
pub struct Rpm {
    tool: RpmTool,
    args: Vec<String>,
    timeout: Duration,
}

impl Rpm {
    /// A dnf or yum backend adding `args` to every command.
    pub fn new(tool: RpmTool, args: Vec<String>, timeout: Duration) -> Self {
        Self { tool, args, timeout }
    }

    fn argv(&self, verb: &[&str], packages: &[String]) -> Vec<String> {
        let program = match self.tool {
            RpmTool::Dnf => "dnf",
            RpmTool::Yum => "yum",
        };
        std::iter::once(program.to_string())
            .chain(self.args.iter().cloned())
            .chain(verb.iter().map(|s| s.to_string()))
            .chain(packages.iter().cloned())
            .collect()
    }

    fn upgrade_verb(&self) -> &'static str {
        match self.tool {
            RpmTool::Dnf => "upgrade",
            RpmTool::Yum => "update",
        }
    }

    /// Runs a command that changes or downloads packages. dnf waits for a lock held by a
    /// leftover transaction by itself; with `exit_on_lock` set it exits 200 instead, and
    /// the command is tried again until `packages.command_timeout` has passed.
    async fn run_checked(&self, argv: Vec<String>) -> Result<()> {
        let deadline = std::time::Instant::now() + self.timeout;
        let mut waited_once = false;
        loop {
            let output = run(&argv, &[], self.timeout).await?;
            // dnf resolves the transaction before it waits for the lock: when the holder
            // (a leftover transaction) changed the rpm database meanwhile, the stale
            // transaction fails ("package not installed"). Once, resolve it again.
            let waited = output.stdout.contains(WAITED_FOR_LOCK) || output.stderr.contains(WAITED_FOR_LOCK);
            if output.code != Some(0) && waited && !waited_once {
                waited_once = true;
                info!("the package manager waited for another transaction and then failed; trying again");
                continue;
            }
            if output.code != Some(DNF_LOCKED) || self.tool != RpmTool::Dnf {
                return expect_success(&argv, output).map(drop);
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Packages(format!(
                    "`{}`: another process held the dnf lock (exit code 200) for longer than packages.command_timeout",
                    command::display(&argv)
                )));
            }
            info!("another process holds the dnf lock; waiting for it");
            tokio::time::sleep(LOCK_POLL).await;
        }
    }
}

#[async_trait::async_trait]
impl PackageManager for Rpm {
    fn name(&self) -> &'static str {
        match self.tool {
            RpmTool::Dnf => "dnf",
            RpmTool::Yum => "yum",
        }
    }

    async fn pending_updates(&self) -> Result<Vec<PackageUpdate>> {
        let argv = self.argv(&["-q", "check-update"], &[]);
        let output = run(&argv, &[], self.timeout).await?;
        match output.code {
            Some(0) => Ok(Vec::new()),
            Some(UPDATES_AVAILABLE) => Ok(parse_check_update(&output.stdout)),
            _ => Err(Error::Packages(command::failure(&argv, &output))),
        }
    }

    async fn download(&self, packages: &[String]) -> Result<()> {
        self.run_checked(self.argv(&["-y", self.upgrade_verb(), "--downloadonly"], packages)).await
    }

    async fn install(&self, packages: &[String]) -> Result<()> {
        self.run_checked(self.argv(&["-y", self.upgrade_verb()], packages)).await
    }

    async fn reboot_required(&self) -> Result<RebootNeed> {
        let argv = match self.tool {
            RpmTool::Dnf => self.argv(&["needs-restarting", "-r"], &[]),
            RpmTool::Yum => vec!["needs-restarting".into(), "-r".into()],
        };
        let output = run(&argv, &[], self.timeout).await?;
        read_needs_restarting(&argv, &output)
    }
}

/// Reads `needs-restarting -r`: exit 1 alone is not enough (any error exits 1 too), so the
/// output must say which case it is; anything else is an error, never "reboot needed".
fn read_needs_restarting(argv: &[String], output: &command::Output) -> Result<RebootNeed> {
    let text = format!("{}{}", output.stdout, output.stderr);
    let said = |phrase: &str| text.contains(phrase);
    match output.code {
        Some(1) if said("Reboot is required") => Ok(RebootNeed { needed: true, reason: summary(&text) }),
        Some(0)
            if said("No core libraries or services have been updated") || said("Reboot is probably not necessary") =>
        {
            Ok(RebootNeed { needed: false, reason: summary(&text) })
        }
        _ => {
            Err(Error::Packages(format!("cannot tell whether a reboot is needed: {}", command::failure(argv, output))))
        }
    }
}

fn summary(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Parses `check-update` output: `name.arch  version-release  repo` per line.
fn parse_check_update(stdout: &str) -> Vec<PackageUpdate> {
    let mut updates: Vec<PackageUpdate> = Vec::new();
    for line in stdout.lines() {
        if line.starts_with("Obsoleting") {
            break;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name_arch, version, _repo] = fields[..] else {
            continue;
        };
        let Some((name, _arch)) = name_arch.rsplit_once('.') else {
            continue;
        };
        if !version.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            continue;
        }
        if !updates.iter().any(|u| u.name == name) {
            updates.push(PackageUpdate { name: name.to_string(), current: None, available: version.to_string() });
        }
    }
    updates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_check_update_and_skips_noise_and_obsoletes() {
        let out = "\n\
Last metadata expiration check: 0:00:01 ago on Fri Nov 27 13:00:00 2026.\n\
kernel.x86_64                 6.1.112-122.189.amzn2023   amazonlinux\n\
ecs-init.x86_64               1.89.2-1.amzn2023          amazonlinux\n\
ecs-init.i686                 1.89.2-1.amzn2023          amazonlinux\n\
Security: kernel-6.1.112 is an installed security update\n\
Obsoleting Packages\n\
grub2-tools.x86_64            1:2.06-61.amzn2023         amazonlinux\n";
        let updates = parse_check_update(out);
        let names: Vec<&str> = updates.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["kernel", "ecs-init"]);
        assert_eq!(updates[0].available, "6.1.112-122.189.amzn2023");
    }

    fn output(code: i32, stdout: &str) -> command::Output {
        command::Output { code: Some(code), stdout: stdout.into(), stderr: String::new() }
    }

    #[test]
    fn needs_restarting_reads_output_as_well_as_exit_code() {
        let argv = vec!["dnf".to_string(), "needs-restarting".into(), "-r".into()];
        let yes = output(
            1,
            "Core libraries or services have been updated since boot-up:\n  * kernel\n\nReboot is required to fully utilize these updates.\n",
        );
        assert!(read_needs_restarting(&argv, &yes).unwrap().needed);
        let no = output(
            0,
            "No core libraries or services have been updated since boot-up.\nReboot should not be necessary.\n",
        );
        assert!(!read_needs_restarting(&argv, &no).unwrap().needed);
        let broken = output(1, "No such command: needs-restarting.\n");
        assert!(read_needs_restarting(&argv, &broken).is_err());
    }
}
