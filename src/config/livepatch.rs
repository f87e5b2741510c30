//! `[packages.livepatch]`: the live patch tools, and which packages are live patches and
//! which are the kernel they stand in for.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the live patch tools are, and which packages they concern.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LivePatchSettings {
    /// Live patch packages (globs): installed in place, then verified loaded.
    pub packages: Vec<String>,
    /// The kernel's packages (globs): what a kernel deferral holds back.
    pub kernel_packages: Vec<String>,
    /// kpatch (Amazon Linux): the tool; `list`, or `load --all` after a live patch install, is added.
    pub kpatch_command: Vec<String>,
    /// Succeeds when the service that loads live patches at boot is enabled.
    pub service_check: Vec<String>,
    /// The kernel's livepatch directory: `<patch>/enabled` and `<patch>/transition`.
    pub sysfs: PathBuf,
    /// Canonical Livepatch (Ubuntu): the client; `status --format json` is added.
    pub canonical_command: Vec<String>,
    /// Longest run of `kpatch load --all` after a live patch install, and then, again, longest
    /// wait for every installed live patch to be enabled and its transition to end.
    #[serde(with = "humantime_serde")]
    pub load_timeout: Duration,
}

/// Amazon Linux's live patches (`kernel-livepatch-<kernel>`) and Red Hat's
/// (`kpatch-patch-<kernel>`).
pub const DEFAULT_LIVEPATCH_PACKAGES: &[&str] = &["kernel-livepatch-*", "kpatch-patch-*"];

/// The kernel image and modules on each family, with Ubuntu's kernel metapackages.
pub const DEFAULT_KERNEL_PACKAGES: &[&str] = &[
    "kernel",
    "kernel[0-9]*",
    "kernel-core",
    "kernel-modules*",
    "linux-image-*",
    "linux-modules-*",
    "linux-aws",
    "linux-generic",
    "linux-virtual",
];

impl Default for LivePatchSettings {
    fn default() -> Self {
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        Self {
            packages: strings(DEFAULT_LIVEPATCH_PACKAGES),
            kernel_packages: strings(DEFAULT_KERNEL_PACKAGES),
            kpatch_command: strings(&["kpatch"]),
            service_check: strings(&["systemctl", "is-enabled", "--quiet", "kpatch.service"]),
            sysfs: "/sys/kernel/livepatch".into(),
            canonical_command: strings(&["canonical-livepatch"]),
            load_timeout: Duration::from_secs(120),
        }
    }
}
