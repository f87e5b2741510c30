//! Which package manager this host has: the one `packages.manager` names, or the one
//! `/etc/os-release` implies (dnf on Amazon Linux 2023, yum on Amazon Linux 2, apt on Ubuntu
//! and Debian).

use std::path::Path;

use super::PackageManager;
use super::apt::Apt;
use super::rpm::{Rpm, RpmTool};
use crate::config::{ManagerChoice, PackageSettings, ReleasePolicy};
use crate::error::{Error, Result};

/// Builds the package manager named in `settings`, or the one `/etc/os-release` implies.
pub fn from_settings(settings: &PackageSettings, os_release: &Path) -> Result<Box<dyn PackageManager>> {
    let choice = match settings.manager {
        ManagerChoice::Auto => detect(os_release)?,
        chosen => chosen,
    };
    // Without versioned repositories, `locked` and `latest` (the default) mean the same:
    // whatever the repositories offer. Only a pinned release cannot be had.
    if let (false, ReleasePolicy::Pinned(version)) = (choice == ManagerChoice::Dnf, &settings.release) {
        return Err(Error::Config(format!(
            "packages.release is \"{version}\", but only dnf (Amazon Linux 2023) has versioned repositories; \
             write \"latest\" or \"locked\" with {choice:?}"
        )));
    }
    Ok(match choice {
        ManagerChoice::Dnf => {
            Box::new(Rpm::new(RpmTool::Dnf, &settings.dnf.args, Some(settings.dnf.automatic_config.clone()), settings))
        }
        ManagerChoice::Yum => Box::new(Rpm::new(RpmTool::Yum, &settings.yum.args, None, settings)),
        ManagerChoice::Apt => Box::new(Apt::new(settings.apt.clone(), settings)),
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
