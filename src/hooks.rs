//! Hooks: executables an operator drops into `hooks.d/{pre-drain,pre-reboot,post-boot}/`.
//!
//! They run in lexical order (as run-parts does, skipping hidden files, `*~` and package
//! manager leftovers such as `*.rpmnew` or `*.dpkg-old`), one at a time, each with a time
//! limit, with the step, cycle, instance and cluster in their environment. They fail
//! closed: a hook that exits non-zero, times out, or is not owned by root (or may be
//! written by others) stops the cycle at that point. What that means is the cycle's to say
//! ([`crate::cycle`]): no drain, no reboot, or no return to service.

use std::path::{Path, PathBuf};

use crate::command;
use crate::config::HookSettings;
use crate::error::{Error, Result};
use crate::trust;

/// Where in the cycle hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    /// Right before the instance is set DRAINING (the slot is held).
    PreDrain,
    /// Right before the reboot request (the instance is drained).
    PreReboot,
    /// After the update (and the boot), agent reconnected, before the instance is set ACTIVE.
    PostBoot,
}

impl HookPoint {
    /// The directory name under `hooks.dir`.
    pub fn dir_name(self) -> &'static str {
        match self {
            HookPoint::PreDrain => "pre-drain",
            HookPoint::PreReboot => "pre-reboot",
            HookPoint::PostBoot => "post-boot",
        }
    }
}

/// What a hook is told of the cycle, through its environment.
#[derive(Debug, Clone)]
pub struct HookContext<'a> {
    /// The cycle's step (`draining`, `rebooting`, `returning`).
    pub step: &'a str,
    /// The cycle id.
    pub cycle: &'a str,
    /// The EC2 instance id.
    pub instance_id: &'a str,
    /// The ECS cluster.
    pub cluster: &'a str,
    /// The container instance ARN.
    pub container_instance_arn: &'a str,
}

/// Runs the hooks of one point; an error when one failed.
#[async_trait::async_trait]
pub trait Hooks: Send + Sync {
    /// Runs every hook of `point` in order, stopping at the first that fails.
    async fn run(&self, point: HookPoint, context: &HookContext<'_>) -> Result<()>;
}

/// [`Hooks`] from the directory `hooks.dir`.
pub struct HookDir {
    settings: HookSettings,
}

impl HookDir {
    /// Hooks under `settings.dir`.
    pub fn new(settings: HookSettings) -> Self {
        Self { settings }
    }

    /// The hooks of `point`, in the order they run; refused ones are an error.
    pub fn list(&self, point: HookPoint) -> Result<Vec<PathBuf>> {
        let dir = self.settings.dir.join(point.dir_name());
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::Hook(format!("cannot read the hook directory {}: {e}", dir.display()))),
        };
        trust::path_checked(&dir, "the hooks in it run as root").map_err(Error::Hook)?;
        let mut hooks: Vec<PathBuf> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| !skipped(p)).collect();
        hooks.sort();
        for hook in &hooks {
            runnable(hook)?;
        }
        Ok(hooks)
    }
}

/// The file `hook` runs, checked with every directory above it: an executable regular file
/// that root owns and no one else can change or swap. Checked again right before it runs.
fn runnable(hook: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let (canonical, meta) = trust::path_checked(hook, "it runs as root").map_err(Error::Hook)?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(Error::Hook(format!(
            "{} is not an executable file (chmod +x it, or move it out of {})",
            hook.display(),
            hook.parent().unwrap_or(hook).display()
        )));
    }
    Ok(canonical)
}

#[async_trait::async_trait]
impl Hooks for HookDir {
    async fn run(&self, point: HookPoint, context: &HookContext<'_>) -> Result<()> {
        for hook in self.list(point)? {
            // Checked again at once, and run by the path checked: the earlier hooks took time.
            let argv = vec![runnable(&hook)?.to_string_lossy().into_owned()];
            let env = [
                ("ECS_PATCHD_HOOK", point.dir_name()),
                ("ECS_PATCHD_STEP", context.step),
                ("ECS_PATCHD_CYCLE", context.cycle),
                ("ECS_PATCHD_INSTANCE_ID", context.instance_id),
                ("ECS_PATCHD_CLUSTER", context.cluster),
                ("ECS_PATCHD_CONTAINER_INSTANCE_ARN", context.container_instance_arn),
            ];
            let output = command::run(&argv, &env, self.settings.timeout)
                .await
                .map_err(|e| Error::Hook(format!("{} hook: {e}", point.dir_name())))?;
            if output.code != Some(0) {
                return Err(Error::Hook(format!("{} hook: {}", point.dir_name(), command::failure(&argv, &output))));
            }
            tracing::info!(hook = %hook.display(), "{} hook succeeded", point.dir_name());
        }
        Ok(())
    }
}

/// Files run-parts would skip: hidden, editor backups, package manager leftovers.
fn skipped(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.starts_with('.')
        || name.ends_with('~')
        || [".rpmnew", ".rpmsave", ".rpmorig", ".dpkg-old", ".dpkg-new", ".dpkg-dist", ".dpkg-tmp"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn hook(dir: &Path, point: HookPoint, name: &str, body: &str, mode: u32) -> PathBuf {
        let sub = dir.join(point.dir_name());
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = sub.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn context() -> HookContext<'static> {
        HookContext {
            step: "draining",
            cycle: "c1",
            instance_id: "i-1",
            cluster: "demo",
            container_instance_arn: "arn",
        }
    }

    fn hooks(dir: &Path) -> HookDir {
        HookDir::new(HookSettings { dir: dir.to_path_buf(), timeout: std::time::Duration::from_secs(5) })
    }

    #[tokio::test]
    async fn hooks_run_in_lexical_order_with_the_cycle_in_their_environment() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let line = format!(
            "echo \"$0 $ECS_PATCHD_HOOK $ECS_PATCHD_STEP $ECS_PATCHD_CYCLE $ECS_PATCHD_INSTANCE_ID $ECS_PATCHD_CLUSTER\" >> {}",
            log.display()
        );
        hook(dir.path(), HookPoint::PreDrain, "20-second", &line, 0o755);
        hook(dir.path(), HookPoint::PreDrain, "10-first", &line, 0o755);
        hook(dir.path(), HookPoint::PreDrain, "10-first.rpmnew", "exit 1", 0o755);
        hook(dir.path(), HookPoint::PreDrain, ".hidden", "exit 1", 0o755);
        hooks(dir.path()).run(HookPoint::PreDrain, &context()).await.unwrap();
        let ran = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = ran.lines().map(|l| l.rsplit('/').next().unwrap()).collect();
        assert_eq!(lines, ["10-first pre-drain draining c1 i-1 demo", "20-second pre-drain draining c1 i-1 demo"]);
        // Another point's directory is not there: nothing to run.
        hooks(dir.path()).run(HookPoint::PostBoot, &context()).await.unwrap();
    }

    #[tokio::test]
    async fn a_failing_hook_stops_the_ones_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        hook(dir.path(), HookPoint::PostBoot, "10-check", "echo unhealthy; exit 3", 0o755);
        hook(dir.path(), HookPoint::PostBoot, "20-after", &format!("touch {}", marker.display()), 0o755);
        let err = hooks(dir.path()).run(HookPoint::PostBoot, &context()).await.unwrap_err();
        assert!(matches!(err, Error::Hook(_)), "{err}");
        assert!(err.to_string().contains("exit code 3") && err.to_string().contains("unhealthy"), "{err}");
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn writable_or_non_executable_hooks_are_refused_and_slow_ones_killed() {
        let dir = tempfile::tempdir().unwrap();
        let writable = hook(dir.path(), HookPoint::PreReboot, "10-open", "exit 0", 0o757);
        let err = hooks(dir.path()).run(HookPoint::PreReboot, &context()).await.unwrap_err();
        assert!(err.to_string().contains("writable by everyone") && err.to_string().contains("10-open"), "{err}");
        std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = hooks(dir.path()).run(HookPoint::PreReboot, &context()).await.unwrap_err();
        assert!(err.to_string().contains("not an executable file"), "{err}");
        std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o755)).unwrap();
        hook(dir.path(), HookPoint::PreReboot, "20-slow", "sleep 30", 0o755);
        let quick = HookDir::new(HookSettings {
            dir: dir.path().to_path_buf(),
            timeout: std::time::Duration::from_millis(300),
        });
        let err = quick.run(HookPoint::PreReboot, &context()).await.unwrap_err();
        assert!(err.to_string().contains("did not finish within"), "{err}");
    }
}
