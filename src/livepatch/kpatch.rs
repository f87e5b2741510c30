//! kpatch, Amazon Linux's (and Red Hat's) live patch tool: `kpatch list` names the patch
//! modules installed for each kernel, the kernel's livepatch directory says which are
//! enabled, and `kpatch load --all` loads those that are not.
//!
//! Linux (Documentation/ABI/testing/sysfs-kernel-livepatch): `/sys/kernel/livepatch/<patch>/enabled`
//! "An attribute which shows whether the patch is currently enabled"; `transition` "An
//! attribute which shows whether the patch is currently in transition" (the kernel patches
//! each task as it leaves the old functions: until then, the fix is not in force everywhere).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::debug;

use super::{LivePatching, LiveState, tool_answer};
use crate::command;
use crate::config::LivePatchSettings;
use crate::error::{Error, Result};

/// The most patch modules read from the tool or the directory (a host has a handful).
const MOST_PATCHES: usize = 256;

/// [`LivePatching`] by kpatch.
pub struct Kpatch {
    command: Vec<String>,
    service_check: Vec<String>,
    sysfs: PathBuf,
    running_kernel: PathBuf,
}

impl Kpatch {
    /// kpatch as `settings` place it; `running_kernel` holds the release `uname -r` prints.
    pub fn new(settings: &LivePatchSettings, running_kernel: &Path) -> Self {
        Self {
            command: settings.kpatch_command.clone(),
            service_check: settings.service_check.clone(),
            sysfs: settings.sysfs.clone(),
            running_kernel: running_kernel.to_path_buf(),
        }
    }
}

#[async_trait::async_trait]
impl LivePatching for Kpatch {
    async fn state(&self) -> Option<LiveState> {
        let kernel = std::fs::read_to_string(&self.running_kernel)
            .map_err(|e| debug!("no kernel live patching: cannot read {}: {e}", self.running_kernel.display()))
            .ok()?
            .trim()
            .to_string();
        if !self.sysfs.is_dir() {
            debug!("no kernel live patching: the kernel has no {} (CONFIG_LIVEPATCH)", self.sysfs.display());
            return None;
        }
        // The service loads the installed patches at boot: without it, a reboot into the same
        // kernel would run it unpatched.
        tool_answer(&self.service_check).await?;
        let mut list = self.command.clone();
        list.push("list".into());
        let listing = tool_answer(&list).await?;
        let installed = installed_for(&listing, &kernel);
        let (enabled, in_transition) = read_sysfs(&self.sysfs);
        let not_loaded = installed
            .iter()
            .filter(|m| !enabled.contains(&module_key(m)) || in_transition.contains(&module_key(m)))
            .cloned()
            .chain(in_transition.iter().filter(|m| !installed.iter().any(|i| module_key(i) == **m)).cloned())
            .collect();
        let loaded = enabled.into_iter().filter(|m| !in_transition.contains(m)).collect();
        Some(LiveState { tool: "kpatch".into(), kernel, loaded, not_loaded, ..LiveState::default() })
    }

    /// `kpatch load --all`, what kpatch.service runs at boot (its unit's ExecStart): each
    /// module installed for the running kernel is loaded, or re-enabled, and its transition
    /// awaited; one already enabled is left as it is ("module named … already loaded and
    /// enabled", dynup/kpatch's load_module). Whether a live patch package loads its module
    /// when installed is the package's own business: this does not count on it.
    async fn load_installed(&self, limit: Duration) -> Result<()> {
        let mut argv = self.command.clone();
        argv.extend(["load".into(), "--all".into()]);
        let output = command::run(&argv, &[("LC_ALL", "C")], limit)
            .await
            .map_err(|e| Error::Packages(format!("cannot load the installed live patches: {e}")))?;
        if output.code == Some(0) {
            return Ok(());
        }
        Err(Error::Packages(format!(
            "a live patch installed for the running kernel did not load: {}",
            command::failure(&argv, &output)
        )))
    }
}

/// The name a module has in the kernel: kpatch's file names may use `-`, the kernel `_`.
fn module_key(name: &str) -> String {
    name.replace('-', "_")
}

/// The modules `kpatch list` shows installed for `kernel`: the lines after "Installed patch
/// modules:" of the form `NAME (KERNEL)`.
fn installed_for(listing: &str, kernel: &str) -> Vec<String> {
    listing
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Installed patch modules"))
        .skip(1)
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(' ')?;
            let for_kernel = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
            (for_kernel == kernel && crate::packages::package_name(name)).then(|| name.to_string())
        })
        .take(MOST_PATCHES)
        .collect()
}

/// The patches `dir` shows enabled, and those in transition (kernel names), bounded.
fn read_sysfs(dir: &Path) -> (Vec<String>, Vec<String>) {
    let read = |path: PathBuf| std::fs::read_to_string(path).map(|t| t.trim() == "1").unwrap_or(false);
    let mut patches: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| crate::packages::package_name(name))
                .take(MOST_PATCHES)
                .collect()
        })
        .unwrap_or_default();
    patches.sort();
    let enabled = patches.iter().filter(|p| read(dir.join(p).join("enabled"))).cloned().collect();
    let in_transition = patches.iter().filter(|p| read(dir.join(p).join("transition"))).cloned().collect();
    (enabled, in_transition)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_modules_are_those_of_the_running_kernel() {
        let listing = "Loaded patch modules:\nlivepatch_a [enabled]\n\nInstalled patch modules:\n\
                       livepatch_a (6.1.1-1.amzn2023.x86_64)\nlivepatch-b (6.1.1-1.amzn2023.x86_64)\n\
                       livepatch_old (6.1.0-1.amzn2023.x86_64)\n$(evil) (6.1.1-1.amzn2023.x86_64)\n";
        assert_eq!(installed_for(listing, "6.1.1-1.amzn2023.x86_64"), ["livepatch_a", "livepatch-b"]);
        assert!(installed_for("Loaded patch modules:\n", "6.1.1").is_empty());
    }

    #[tokio::test]
    async fn a_patch_installed_but_not_enabled_or_in_transition_is_not_loaded() {
        let root = tempfile::tempdir().unwrap();
        let sysfs = root.path().join("livepatch");
        for (name, enabled, transition) in
            [("livepatch_a", "1", "0"), ("livepatch_b", "0", "0"), ("livepatch_c", "1", "1")]
        {
            std::fs::create_dir_all(sysfs.join(name)).unwrap();
            std::fs::write(sysfs.join(name).join("enabled"), enabled).unwrap();
            std::fs::write(sysfs.join(name).join("transition"), transition).unwrap();
        }
        let kernel = root.path().join("osrelease");
        std::fs::write(&kernel, "6.1.1\n").unwrap();
        let listing = "Installed patch modules:\nlivepatch_a (6.1.1)\nlivepatch-b (6.1.1)\nlivepatch_d (6.1.1)\n";
        let settings = LivePatchSettings {
            kpatch_command: vec!["printf".into(), listing.replace('%', "%%")],
            service_check: vec!["true".into()],
            sysfs: sysfs.clone(),
            ..LivePatchSettings::default()
        };
        let state = Kpatch::new(&settings, &kernel).state().await.expect("kpatch answers");
        assert_eq!(state.kernel, "6.1.1");
        assert_eq!(state.loaded, ["livepatch_a"]);
        assert_eq!(state.not_loaded, ["livepatch-b", "livepatch_d", "livepatch_c"]);

        let disabled = LivePatchSettings { service_check: vec!["false".into()], ..settings.clone() };
        assert!(Kpatch::new(&disabled, &kernel).state().await.is_none(), "kpatch.service not enabled");
        let no_kernel_support = LivePatchSettings { sysfs: root.path().join("none"), ..settings };
        assert!(Kpatch::new(&no_kernel_support, &kernel).state().await.is_none());
    }

    #[tokio::test]
    async fn loading_runs_kpatch_load_all_and_a_failure_says_what_the_tool_said() {
        let kernel = Path::new("/nonexistent");
        let limit = Duration::from_secs(10);
        let tool = |script: &str| LivePatchSettings {
            kpatch_command: vec!["sh".into(), "-c".into(), script.into(), "kpatch".into()],
            ..LivePatchSettings::default()
        };
        let loads = tool(r#"[ "$*" = "load --all" ]"#);
        Kpatch::new(&loads, kernel).load_installed(limit).await.expect("`kpatch load --all` ran");
        let fails = tool("echo 'insmod: ERROR: could not insert module' >&2; exit 1");
        let error = Kpatch::new(&fails, kernel).load_installed(limit).await.unwrap_err().to_string();
        assert!(error.contains("did not load") && error.contains("insmod: ERROR"), "{error}");
    }
}
