//! Package managers: list pending updates, download, install, and "is a reboot needed".

mod apt;
mod rpm;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::command;
use crate::config::{ManagerChoice, PackageSettings};
use crate::error::{Error, Result};
use crate::shutdown;
use tracing::error;

pub use apt::Apt;
pub use rpm::{Rpm, RpmTool};

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
}

/// Whether the host must reboot for installed updates to take effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebootNeed {
    /// True when a reboot is needed.
    pub needed: bool,
    /// What the package manager said.
    pub reason: String,
}

/// A package manager, confined to what the cycle needs.
#[async_trait::async_trait]
pub trait PackageManager: Send + Sync {
    /// Its name, for messages ("dnf", "yum", "apt").
    fn name(&self) -> &'static str;
    /// Updates available now (refreshes the metadata first).
    async fn pending_updates(&self) -> Result<Vec<PackageUpdate>>;
    /// Downloads the updates of `packages` without changing the system.
    async fn download(&self, packages: &[String]) -> Result<()>;
    /// Installs the updates of `packages` (a no-op for those already up to date).
    async fn install(&self, packages: &[String]) -> Result<()>;
    /// Whether what is installed needs a reboot to take effect.
    async fn reboot_required(&self) -> Result<RebootNeed>;
}

/// Builds the package manager named in `settings`, or the one `/etc/os-release` implies.
pub fn from_settings(settings: &PackageSettings, os_release: &Path) -> Result<Box<dyn PackageManager>> {
    let choice = match settings.manager {
        ManagerChoice::Auto => detect(os_release)?,
        chosen => chosen,
    };
    let timeout = settings.command_timeout;
    Ok(match choice {
        ManagerChoice::Dnf => Box::new(Rpm::new(RpmTool::Dnf, settings.dnf.args.clone(), timeout)),
        ManagerChoice::Yum => Box::new(Rpm::new(RpmTool::Yum, settings.yum.args.clone(), timeout)),
        ManagerChoice::Apt => Box::new(Apt::new(settings.apt.clone(), timeout)),
        ManagerChoice::Auto => unreachable!("detect() never answers auto"),
    })
}

/// Picks the package manager from the `ID`, `ID_LIKE` and `VERSION_ID` of os-release.
fn detect(os_release: &Path) -> Result<ManagerChoice> {
    let text = std::fs::read_to_string(os_release).map_err(|e| {
        Error::Config(format!(
            "packages.manager is \"auto\" but {} cannot be read ({e}); set packages.manager to dnf, yum or apt",
            os_release.display()
        ))
    })?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let (id, like, version) = (field("ID"), field("ID_LIKE"), field("VERSION_ID"));
    let family = format!("{id} {like}");
    if id == "amzn" && version == "2" {
        Ok(ManagerChoice::Yum)
    } else if family.contains("debian") || family.contains("ubuntu") {
        Ok(ManagerChoice::Apt)
    } else if id == "amzn" || family.contains("fedora") || family.contains("rhel") {
        Ok(ManagerChoice::Dnf)
    } else {
        Err(Error::Config(format!(
            "packages.manager is \"auto\" but {} names an unsupported system (ID={id}); set packages.manager to dnf, yum or apt",
            os_release.display()
        )))
    }
}

/// Runs one package-manager command in the C locale, as a transaction that a stop request
/// waits for ([`shutdown::transaction`]); a failed start or a timeout is an error.
async fn run(argv: &[String], env: &[(&str, &str)], limit: Duration) -> Result<command::Output> {
    let mut full_env = vec![("LC_ALL", "C")];
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

/// Fails with the command, exit code and last output lines unless it exited 0.
fn expect_success(argv: &[String], output: command::Output) -> Result<command::Output> {
    if output.code == Some(0) { Ok(output) } else { Err(Error::Packages(command::failure(argv, &output))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect_from(text: &str) -> Result<ManagerChoice> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("os-release");
        std::fs::write(&path, text).unwrap();
        detect(&path)
    }

    #[test]
    fn detects_each_supported_system() {
        assert_eq!(detect_from("ID=\"amzn\"\nVERSION_ID=\"2023\"\n").unwrap(), ManagerChoice::Dnf);
        assert_eq!(
            detect_from("ID=\"amzn\"\nVERSION_ID=\"2\"\nID_LIKE=\"centos rhel fedora\"\n").unwrap(),
            ManagerChoice::Yum
        );
        assert_eq!(detect_from("ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\n").unwrap(), ManagerChoice::Apt);
        assert_eq!(detect_from("ID=debian\nVERSION_ID=\"12\"\n").unwrap(), ManagerChoice::Apt);
    }

    #[test]
    fn unsupported_system_says_what_to_set() {
        let err = detect_from("ID=alpine\n").unwrap_err().to_string();
        assert!(err.contains("ID=alpine") && err.contains("packages.manager"), "{err}");
    }
}
