//! Canonical Livepatch (Ubuntu): `canonical-livepatch status --verbose --format json`.
//!
//! The running kernel counts as fully patched on the same test the Ubuntu Pro client makes
//! (`u.pro.security.status.reboot_required.v1`: livepatch state "applied" or
//! "nothing-to-apply", and `Supported` "supported"), whose answer Canonical documents as
//! "There are Livepatch patches applied to the current kernel, but a reboot is required
//! for an update to take place. This reboot can wait until the next maintenance window."
//! `Supported` is otherwise "kernel-upgrade-required", "kernel-end-of-life", "unsupported"
//! or "unknown": no more patches come for this kernel.

use serde::Deserialize;
use tracing::warn;

use super::{LivePatching, LiveState, tool_answer};
use crate::command;
use crate::config::LivePatchSettings;

/// The most output read (a status is a few kilobytes).
const MOST_BYTES: usize = 1 << 20;
/// The most fixes kept.
const MOST_FIXES: usize = 1024;

/// [`LivePatching`] by the Canonical Livepatch client.
pub struct Canonical {
    command: Vec<String>,
}

impl Canonical {
    /// The client as `settings` place it.
    pub fn new(settings: &LivePatchSettings) -> Self {
        Self { command: settings.canonical_command.clone() }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Status {
    #[serde(default)]
    status: Vec<KernelStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KernelStatus {
    #[serde(default)]
    kernel: String,
    #[serde(default)]
    running: bool,
    #[serde(default)]
    livepatch: Option<Livepatch>,
    #[serde(default)]
    supported: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Livepatch {
    #[serde(default)]
    check_state: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    fixes: Option<Fixes>,
}

/// A list of fixes, or, from older clients, a text of `* CVE-…` lines.
#[derive(Deserialize)]
#[serde(untagged)]
enum Fixes {
    List(Vec<Fix>),
    Text(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Fix {
    #[serde(default)]
    name: String,
    #[serde(default)]
    patched: bool,
}

#[async_trait::async_trait]
impl LivePatching for Canonical {
    async fn state(&self) -> Option<LiveState> {
        let mut argv = self.command.clone();
        argv.extend(["status", "--verbose", "--format", "json"].map(String::from));
        let stdout = tool_answer(&argv).await?;
        read_status(&stdout)
            .map_err(|why| warn!("no kernel live patching: `{}` answered {why}", command::display(&argv)))
            .ok()
    }
}

/// The running kernel's entry of a status, as a [`LiveState`].
fn read_status(text: &str) -> Result<LiveState, String> {
    if text.len() > MOST_BYTES {
        return Err(format!("more than {MOST_BYTES} bytes"));
    }
    let status: Status = serde_json::from_str(text).map_err(|e| format!("no status this reads: {e}"))?;
    let running = status.status.into_iter().find(|s| s.running).ok_or("no entry for the running kernel")?;
    let kernel = crate::foreign::shown(&running.kernel);
    let Some(patch) = running.livepatch else {
        return Ok(LiveState {
            tool: "canonical-livepatch".into(),
            kernel,
            fully_patched: Some(false),
            unsupported: unsupported(&running.supported),
            ..LiveState::default()
        });
    };
    let version = format!("livepatch {}", crate::foreign::shown(&patch.version));
    let (loaded, not_loaded) = match patch.state.as_str() {
        "applied" => (vec![version], Vec::new()),
        "nothing-to-apply" => (Vec::new(), Vec::new()),
        other => (Vec::new(), vec![format!("{version} ({})", crate::foreign::shown(other))]),
    };
    let fully_patched = patch.check_state == "checked"
        && matches!(patch.state.as_str(), "applied" | "nothing-to-apply")
        && running.supported == "supported";
    Ok(LiveState {
        tool: "canonical-livepatch".into(),
        kernel,
        loaded,
        not_loaded,
        fixes: fixes(patch.fixes),
        fully_patched: Some(fully_patched),
        unsupported: unsupported(&running.supported),
    })
}

fn unsupported(supported: &str) -> Option<String> {
    (supported != "supported")
        .then(|| format!("Canonical Livepatch reports the running kernel \"{}\"", crate::foreign::shown(supported)))
}

/// The CVEs fixed, upper case (the client writes `cve-2024-1086`).
fn fixes(fixes: Option<Fixes>) -> Vec<String> {
    let names: Vec<String> = match fixes {
        None => Vec::new(),
        Some(Fixes::List(list)) => list.into_iter().filter(|f| f.patched).map(|f| f.name).collect(),
        Some(Fixes::Text(text)) => text.lines().map(|l| l.trim().trim_start_matches('*').trim().to_string()).collect(),
    };
    let mut cves: Vec<String> = names
        .into_iter()
        .map(|n| n.to_ascii_uppercase())
        .filter(|n| crate::packages::is_cve(n))
        .take(MOST_FIXES)
        .collect();
    cves.sort();
    cves.dedup();
    cves
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Landscape API documentation's example (client 10.8.3), trimmed.
    const APPLIED: &str = r#"{"Client-Version": "10.8.3", "Status": [{"Kernel": "5.15.0-100.110-generic",
        "Livepatch": {"CheckState": "checked", "Fixes": [
            {"Bug": "", "Description": "", "Name": "cve-2023-6270", "Patched": true},
            {"Bug": "", "Description": "", "Name": "cve-2024-1086", "Patched": true},
            {"Bug": "", "Description": "", "Name": "cve-2024-9999", "Patched": false}],
          "State": "applied", "Version": "104.1"},
        "Running": true, "Supported": "supported", "UpgradeRequiredDate": "2025-03-07"}], "tier": "updates"}"#;

    #[test]
    fn an_applied_supported_patch_is_fully_patched_with_its_fixes() {
        let state = read_status(APPLIED).unwrap();
        assert_eq!(state.kernel, "5.15.0-100.110-generic");
        assert_eq!(state.loaded, ["livepatch 104.1"]);
        assert_eq!(state.fixes, ["CVE-2023-6270", "CVE-2024-1086"]);
        assert_eq!((state.fully_patched, state.unsupported), (Some(true), None));
    }

    #[test]
    fn a_failed_or_unsupported_patch_is_not_fully_patched() {
        let failed = APPLIED.replace("\"applied\"", "\"apply-failed\"");
        let state = read_status(&failed).unwrap();
        assert_eq!((state.fully_patched, state.not_loaded.len()), (Some(false), 1));
        let old = APPLIED.replace("\"supported\"", "\"kernel-upgrade-required\"");
        let state = read_status(&old).unwrap();
        assert_eq!(state.fully_patched, Some(false));
        assert!(state.unsupported.unwrap().contains("kernel-upgrade-required"));
        let text = APPLIED.replace(
            r#"[
            {"Bug": "", "Description": "", "Name": "cve-2023-6270", "Patched": true},
            {"Bug": "", "Description": "", "Name": "cve-2024-1086", "Patched": true},
            {"Bug": "", "Description": "", "Name": "cve-2024-9999", "Patched": false}]"#,
            r#""* cve-2026-1111\n* CVE-2026-2222\n* not a cve""#,
        );
        assert_eq!(read_status(&text).unwrap().fixes, ["CVE-2026-1111", "CVE-2026-2222"], "older clients' text");
        assert!(read_status("{\"Status\": []}").is_err());
        assert!(read_status("not json").is_err());
    }
}
