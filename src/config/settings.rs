//! Every setting of the daemon, section by section, with its default.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::coordination::policy::{Budget, Policy};
use crate::coordination::store::StalePolicy;
use crate::window::ScheduleSettings;

/// The main configuration file read when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/ecs-patchd/config.toml";
/// The directory of fragments read after [`DEFAULT_CONFIG_FILE`].
pub const DEFAULT_FRAGMENT_DIR: &str = "/etc/ecs-patchd/config.d";

/// Every setting of the daemon, with its default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Files and directories the daemon reads or writes.
    pub paths: Paths,
    /// Where the instance learns who it is.
    pub identity: IdentitySettings,
    /// How the container instance is drained.
    pub drain: DrainSettings,
    /// Which package manager runs, and how.
    pub packages: PackageSettings,
    /// Reboot and ECS agent service control.
    pub host: HostSettings,
    /// How hosts of a cluster take turns.
    pub coordination: CoordinationSettings,
    /// When the daemon checks for updates, and the maintenance windows.
    pub schedule: ScheduleSettings,
    /// Executables run before the drain, before the reboot and after the boot.
    pub hooks: HookSettings,
    /// SSM compliance and inventory, Prometheus metrics, the webhook.
    pub report: ReportSettings,
}

/// Files and directories the daemon reads or writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Paths {
    /// Directory of the cycle journal and its lock (created with mode 0700).
    pub state_dir: PathBuf,
    /// The ECS agent's configuration (read for `ECS_CLUSTER` when the agent is down).
    pub ecs_config: PathBuf,
    /// File whose content changes at every boot.
    pub boot_id: PathBuf,
    /// Used to pick the package manager when `packages.manager = "auto"`.
    pub os_release: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            state_dir: "/var/lib/ecs-patchd".into(),
            ecs_config: "/etc/ecs/ecs.config".into(),
            boot_id: "/proc/sys/kernel/random/boot_id".into(),
            os_release: "/etc/os-release".into(),
        }
    }
}

/// Where the instance learns who it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentitySettings {
    /// Base URL of the ECS agent's introspection API.
    pub agent_url: String,
    /// Pins the cluster name; empty means "ask the agent, then ecs.config".
    pub cluster: String,
    /// Time allowed for one call to the agent's introspection API.
    #[serde(with = "humantime_serde")]
    pub agent_timeout: Duration,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            agent_url: "http://127.0.0.1:51678".into(),
            cluster: String::new(),
            agent_timeout: Duration::from_secs(2),
        }
    }
}

/// What to do with tasks that no service will move (started by RunTask/StartTask).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StandalonePolicy {
    /// Wait for them to end on their own, up to `drain.timeout`.
    Wait,
    /// Stop them once `drain.standalone_grace` has passed.
    Stop,
    /// Give up the cycle (and reactivate) once `drain.standalone_grace` has passed.
    Abort,
}

/// How the container instance is drained.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainSettings {
    /// Longest wait for the tasks to leave; then the instance is set ACTIVE again.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// First delay between two polls of the instance's tasks (jittered, then backing off).
    #[serde(with = "humantime_serde")]
    pub poll_initial: Duration,
    /// Longest delay between two polls.
    #[serde(with = "humantime_serde")]
    pub poll_max: Duration,
    /// What to do with standalone (non-service) tasks.
    pub standalone_tasks: StandalonePolicy,
    /// How long standalone tasks are given before `standalone_tasks` applies.
    #[serde(with = "humantime_serde")]
    pub standalone_grace: Duration,
}

impl Default for DrainSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30 * 60),
            poll_initial: Duration::from_secs(15),
            poll_max: Duration::from_secs(60),
            standalone_tasks: StandalonePolicy::Wait,
            standalone_grace: Duration::from_secs(10 * 60),
        }
    }
}

/// Which package manager to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManagerChoice {
    /// Pick from `/etc/os-release` (Amazon Linux 2023: dnf, Amazon Linux 2: yum, Debian/Ubuntu: apt).
    Auto,
    /// dnf (Amazon Linux 2023, Fedora family).
    Dnf,
    /// yum (Amazon Linux 2).
    Yum,
    /// apt (Debian, Ubuntu).
    Apt,
}

/// When to reboot after installing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootPolicy {
    /// Only when the package manager says the update needs one.
    IfNeeded,
    /// After every install.
    Always,
    /// Never (a needed reboot is logged and left to the operator).
    Never,
}

/// Which Amazon Linux 2023 repository release the updates come from (dnf only).
///
/// AWS: "Each new AL2023 AMI is locked to a particular version of AL2023 ... When you run
/// the dnf upgrade command, the system checks for upgrades in the repository that the
/// releasever variable specifies" (Deterministic upgrades through versioned repositories).
/// A host left locked never sees a fix published after its AMI, so the default is
/// `latest`. AWS also warns: "Running dnf --releasever=latest update is not best practice,
/// and is likely to result in an OS update being first tested in production" (Updating
/// AL2023): the roll is the staged deployment that answers it (one host first, a failure
/// halts the rest); pin a tested release for stricter control. Whatever the policy, a
/// newer release not applied is reported as pending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ReleasePolicy {
    /// The release the host is locked to (`/etc/dnf/vars/releasever`, else the installed
    /// `system-release`): dnf's own default; newer releases are reported, never applied.
    Locked,
    /// The default: the newest release, resolved to its version once per cycle so that the plan, the
    /// download, the install and the verification all use the same one.
    Latest,
    /// This release, e.g. `2023.9.20251117` (what AWS recommends: a release you tested).
    Pinned(String),
}

impl TryFrom<String> for ReleasePolicy {
    type Error = String;
    fn try_from(value: String) -> std::result::Result<Self, String> {
        match value.as_str() {
            "locked" => Ok(ReleasePolicy::Locked),
            "latest" => Ok(ReleasePolicy::Latest),
            v if v.starts_with(|c: char| c.is_ascii_digit())
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') =>
            {
                Ok(ReleasePolicy::Pinned(value))
            }
            _ => Err(format!(
                "\"{value}\" is not a release: write \"locked\", \"latest\" or a version such as \"2023.9.20251117\""
            )),
        }
    }
}

impl From<ReleasePolicy> for String {
    fn from(policy: ReleasePolicy) -> String {
        match policy {
            ReleasePolicy::Locked => "locked".into(),
            ReleasePolicy::Latest => "latest".into(),
            ReleasePolicy::Pinned(version) => version,
        }
    }
}

/// Whether an update that needs neither a reboot nor a runtime restart drains the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrainPolicy {
    /// Drain only for updates of `reboot_packages` or `runtime_packages`; install the rest
    /// in place.
    WhenNeeded,
    /// Drain for every update except an ECS-agent-only one.
    Always,
}

/// What a drained host does after an update of its container runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimePolicy {
    /// Run `host.runtime_restart_command` (no task runs on the drained host), then wait for
    /// the agent to reconnect.
    Restart,
    /// Reboot, as for a kernel.
    Reboot,
    /// Leave the old daemon running until the next reboot (logged).
    Leave,
}

/// Which package manager runs, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PackageSettings {
    /// `auto`, `dnf`, `yum` or `apt`.
    pub manager: ManagerChoice,
    /// The ECS agent's packages on every family: updated alone, they need no drain, only
    /// an agent restart.
    pub agent_packages: Vec<String>,
    /// When to reboot after installing.
    pub reboot: RebootPolicy,
    /// Amazon Linux 2023 repository release: `locked`, `latest` or a version.
    pub release: ReleasePolicy,
    /// Only updates that fix security issues (dnf/yum `--security`, apt's security pocket).
    pub security_only: bool,
    /// Packages never updated (globs, e.g. `"docker*"`).
    pub exclude: Vec<String>,
    /// Updates built (dnf) or first seen by this host (apt, yum: no build time) less than
    /// this long ago wait.
    #[serde(with = "humantime_serde")]
    pub min_age: Duration,
    /// `when-needed` or `always`.
    pub drain: DrainPolicy,
    /// After a container runtime update: `restart`, `reboot` or `leave`.
    pub runtime: RuntimePolicy,
    /// Packages whose update needs a reboot (globs).
    pub reboot_packages: Vec<String>,
    /// Added to `reboot_packages`: packages whose update needs a reboot on this fleet
    /// (the role `needs-restarting.d` plays for dnf; these also force the reboot).
    pub extra_reboot_packages: Vec<String>,
    /// Packages running containers use from the host: runtime, CNI, firewall, GPU (globs).
    pub runtime_packages: Vec<String>,
    /// Added to `runtime_packages`.
    pub extra_runtime_packages: Vec<String>,
    /// Run cycles even beside an unattended updater that reboots the host by itself.
    pub allow_rebooting_updater: bool,
    /// Where kernels are installed (`vmlinuz-RELEASE`), for the reboot rule.
    pub boot_dir: PathBuf,
    /// The running kernel's release (what `uname -r` prints), for the reboot rule.
    pub running_kernel: PathBuf,
    /// Longest run of one package-manager command; it is killed after that.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// dnf specifics.
    pub dnf: DnfSettings,
    /// yum specifics.
    pub yum: YumSettings,
    /// apt specifics.
    pub apt: AptSettings,
    /// How long a pending kernel whose fixes live patches cover may wait for its reboot,
    /// from when it was first seen pending; unset (the default): no kernel waits.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub kernel_reboot_within: Option<Duration>,
    /// Kernel live patches: the tools, and which packages are live patches and kernels.
    pub livepatch: super::livepatch::LivePatchSettings,
}

impl Default for PackageSettings {
    fn default() -> Self {
        Self {
            manager: ManagerChoice::Auto,
            agent_packages: strings(&["ecs-init", "amazon-ecs-init"]),
            reboot: RebootPolicy::IfNeeded,
            release: ReleasePolicy::Latest,
            security_only: false,
            exclude: Vec::new(),
            min_age: Duration::ZERO,
            drain: DrainPolicy::WhenNeeded,
            runtime: RuntimePolicy::Restart,
            reboot_packages: strings(DEFAULT_REBOOT_PACKAGES),
            extra_reboot_packages: Vec::new(),
            runtime_packages: strings(DEFAULT_RUNTIME_PACKAGES),
            extra_runtime_packages: Vec::new(),
            allow_rebooting_updater: false,
            boot_dir: "/boot".into(),
            running_kernel: "/proc/sys/kernel/osrelease".into(),
            command_timeout: Duration::from_secs(30 * 60),
            dnf: DnfSettings::default(),
            yum: YumSettings::default(),
            apt: AptSettings::default(),
            kernel_reboot_within: None,
            livepatch: super::livepatch::LivePatchSettings::default(),
        }
    }
}

impl PackageSettings {
    /// `reboot_packages` and `extra_reboot_packages`.
    pub fn reboot_globs(&self) -> impl Iterator<Item = &String> {
        self.reboot_packages.iter().chain(&self.extra_reboot_packages)
    }

    /// `runtime_packages` and `extra_runtime_packages`.
    pub fn runtime_globs(&self) -> impl Iterator<Item = &String> {
        self.runtime_packages.iter().chain(&self.extra_runtime_packages)
    }
}

/// The first of `globs` (package-name globs, validated when the settings were loaded) that
/// `name` matches.
pub fn first_match<'a>(globs: impl IntoIterator<Item = &'a String>, name: &str) -> Option<&'a String> {
    globs.into_iter().find(|g| glob::Pattern::new(g).is_ok_and(|p| p.matches(name)))
}

/// Packages whose update needs a reboot, on every family: dnf's `needs-restarting` list
/// (kernel, glibc, linux-firmware, systemd, dbus) with each family's names, microcode, and
/// kernel modules built or shipped apart from the kernel (`kmod-*`, DKMS, the NVIDIA
/// driver): a new module is loaded only by a new boot, and a driver whose user-space half is
/// newer than the module loaded fails its containers ("Driver/library version mismatch").
pub const DEFAULT_REBOOT_PACKAGES: &[&str] = &[
    "kernel",
    "kernel[0-9]*",
    "kernel-core",
    "kernel-modules*",
    "kernel-rt*",
    "linux-image-*",
    "linux-modules-*",
    "glibc",
    "libc6",
    "linux-firmware",
    "systemd",
    "systemd-libs",
    "libsystemd0",
    "dbus",
    "dbus-broker",
    "dbus-daemon",
    "microcode_ctl",
    "intel-microcode",
    "amd64-microcode",
    "kmod-*",
    "dkms",
    "*-dkms",
    "*-dkms-*",
    "nvidia-driver*",
    "nvidia-kernel-*",
    "cuda-drivers*",
];

/// Packages that running tasks use from the host: the container runtime, the CNI plugins,
/// the packet filter, and the GPU container toolkit (the driver itself is a reboot).
pub const DEFAULT_RUNTIME_PACKAGES: &[&str] = &[
    "docker",
    "docker-ce",
    "docker-ce-cli",
    "docker.io",
    "moby-*",
    "containerd",
    "containerd.io",
    "runc",
    "containernetworking-plugins",
    "iptables*",
    "nftables",
    "nvidia-*",
    "libnvidia-*",
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Settings of yum.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct YumSettings {
    /// Arguments added to every command, e.g. `["--setopt=timeout=60"]`.
    pub args: Vec<String>,
}

/// Settings of dnf.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnfSettings {
    /// Arguments added to every command, e.g. `["--setopt=timeout=60"]`.
    pub args: Vec<String>,
    /// dnf-automatic's configuration, read to tell whether it reboots by itself.
    pub automatic_config: PathBuf,
}

impl Default for DnfSettings {
    fn default() -> Self {
        Self { args: Vec::new(), automatic_config: "/etc/dnf/automatic.conf".into() }
    }
}

/// Settings of apt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AptSettings {
    /// Arguments added to every `apt-get` command, e.g. `["-c", "/etc/apt/other.conf"]`.
    pub args: Vec<String>,
    /// The file whose presence means a reboot is needed.
    pub reboot_required_file: PathBuf,
    /// The script that writes `reboot_required_file` (update-notifier-common); without it,
    /// the file means nothing and the reboot rule decides.
    pub reboot_notifier: PathBuf,
    /// apt's history log, where unattended-upgrades' runtime updates under running tasks
    /// are found.
    pub history_log: PathBuf,
    /// After a boot into a new kernel, remove the kernel packages `apt-get autoremove`
    /// would remove (every kernel is a new package name: kept, they fill `/boot`).
    pub remove_old_kernels: bool,
}

impl Default for AptSettings {
    fn default() -> Self {
        Self {
            args: Vec::new(),
            reboot_required_file: "/var/run/reboot-required".into(),
            reboot_notifier: "/usr/share/update-notifier/notify-reboot-required".into(),
            history_log: "/var/log/apt/history.log".into(),
            remove_old_kernels: true,
        }
    }
}

/// Reboot and ECS agent service control.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSettings {
    /// Command that reboots the host.
    pub reboot_command: Vec<String>,
    /// How long to wait for the reboot to take the process down before trying again.
    #[serde(with = "humantime_serde")]
    pub reboot_timeout: Duration,
    /// Reboot attempts before the cycle gives up and reactivates the instance.
    pub reboot_attempts: u32,
    /// Command that starts the ECS agent if it is not running.
    pub agent_start_command: Vec<String>,
    /// Command that restarts the ECS agent (loads a newly installed agent).
    pub agent_restart_command: Vec<String>,
    /// Command that restarts the container runtime after its update (`packages.runtime`).
    pub runtime_restart_command: Vec<String>,
    /// Longest wait for the agent to answer and ECS to show it connected.
    #[serde(with = "humantime_serde")]
    pub agent_reconnect_timeout: Duration,
}

impl Default for HostSettings {
    fn default() -> Self {
        Self {
            reboot_command: vec!["systemctl".into(), "reboot".into()],
            reboot_timeout: Duration::from_secs(10 * 60),
            reboot_attempts: 3,
            agent_start_command: vec!["systemctl".into(), "start".into(), "ecs".into()],
            agent_restart_command: vec!["systemctl".into(), "restart".into(), "ecs".into()],
            runtime_restart_command: strings(&["systemctl", "restart", "containerd", "docker"]),
            agent_reconnect_timeout: Duration::from_secs(10 * 60),
        }
    }
}

/// Executables run at fixed points of the cycle (see [`crate::hooks`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookSettings {
    /// Directory holding `pre-drain/`, `pre-reboot/` and `post-boot/`.
    pub dir: PathBuf,
    /// Longest time one hook may run; it is killed and counts as failed after that.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for HookSettings {
    fn default() -> Self {
        Self { dir: "/etc/ecs-patchd/hooks.d".into(), timeout: Duration::from_secs(5 * 60) }
    }
}

/// Where the daemon reports what it does. A reporting failure is logged and never fails or
/// delays a cycle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportSettings {
    /// Send SSM compliance (`Custom:EcsPatchd`) and inventory (`Custom:EcsPatchd`) after
    /// every check and cycle.
    pub ssm: bool,
    /// Local address the daemon serves Prometheus metrics on (`/metrics`), e.g.
    /// "127.0.0.1:9733"; empty: not served.
    pub metrics_listen: String,
    /// node_exporter textfile every command rewrites (atomically), e.g.
    /// "/var/lib/node_exporter/textfile_collector/ecs_patchd.prom"; empty: none.
    pub metrics_textfile: PathBuf,
    /// Slack-compatible webhook URL for drain, reboot, return, failure and pause; empty: none.
    pub webhook_url: String,
    /// Longest time one notification may take.
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self {
            ssm: true,
            metrics_listen: String::new(),
            metrics_textfile: PathBuf::new(),
            webhook_url: String::new(),
            webhook_timeout: Duration::from_secs(5),
        }
    }
}

/// Where slots come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The default until an operator chooses: updates are looked for and reported (`check`,
    /// metrics, SSM compliance), and nothing is downloaded, installed, drained or rebooted.
    /// No store means no lock: hosts baked from one image would drain together.
    ReportOnly,
    /// No peer coordination: for a single host, or hosts the operator schedules one at a
    /// time. Two hosts that look at the cluster at once may both drain.
    None,
    /// A DynamoDB table with conditional writes.
    Dynamodb,
    /// A FleetLock server (airlock on etcd).
    Fleetlock,
}

impl Backend {
    /// The name the configuration gives it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::ReportOnly => "report-only",
            Backend::None => "none",
            Backend::Dynamodb => "dynamodb",
            Backend::Fleetlock => "fleetlock",
        }
    }

    /// What it means for this host, in one sentence, said when a command starts.
    pub fn announcement(self) -> Option<&'static str> {
        match self {
            Backend::ReportOnly => Some(
                "coordination.backend is not chosen (report-only): updates are looked for and reported, \
                 nothing is installed, drained or rebooted; choose \"dynamodb\" or \"fleetlock\" for a \
                 fleet, or \"none\" for a single host (operator guide, \"First install\")",
            ),
            Backend::None => Some(
                "coordination.backend is \"none\": no lock is shared with other hosts, so this is only safe \
                 for a single host or for hosts the operator schedules one at a time",
            ),
            Backend::Dynamodb | Backend::Fleetlock => None,
        }
    }
}

/// `coordination.max_unavailable`: a count (`2`) or a percentage (`"10%"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MaxUnavailable {
    /// A number of hosts.
    Count(u32),
    /// `"N"` or `"N%"`.
    Text(String),
}

impl MaxUnavailable {
    /// The budget it denotes, if valid.
    pub fn budget(&self) -> Option<Budget> {
        match self {
            MaxUnavailable::Count(n) => Budget::parse(&n.to_string()),
            MaxUnavailable::Text(t) => Budget::parse(t),
        }
    }
}

/// How hosts of a cluster take turns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinationSettings {
    /// `report-only` (the default), `none`, `dynamodb` or `fleetlock`.
    pub backend: Backend,
    /// Hosts of one group share the budget (letters, digits, `.` and `-`).
    pub group: String,
    /// Hosts allowed out of service at once: a count or a percentage of registered instances.
    pub max_unavailable: MaxUnavailable,
    /// Share of registered instances that must stay ACTIVE and connected.
    pub min_healthy_percent: u32,
    /// Only hosts of one availability zone out at a time.
    pub one_az_at_a_time: bool,
    /// A slot's lease lasts this long without renewal (renewed every third of it).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// After the host is ACTIVE and its agent reconnected, the slot is kept at least this
    /// long (the services' recovery, below, is what paces the roll; this adds a fixed wait).
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// After the host is back, the slot is kept until every service that had tasks on it
    /// runs its desired count with one deployment; past this, the roll pauses, naming the
    /// services (`0s`: not waited for).
    #[serde(with = "humantime_serde")]
    pub recovery_timeout: Duration,
    /// CloudWatch alarms (names, at most 100): no slot is granted while any is in ALARM.
    pub alarms: Vec<String>,
    /// Typical delay between two looks at the lease store while waiting (jittered).
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// Longest wait for a slot before the run gives up (nothing was changed).
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
    /// A holder whose lease expired without finishing: `pause` the group, or `reclaim` the
    /// slot once its container instance is gone, INACTIVE or disconnected.
    pub on_stale_lease: StalePolicy,
    /// Oldest cluster snapshot the capacity guard may use (shared through the store).
    #[serde(with = "humantime_serde")]
    pub snapshot_max_age: Duration,
    /// The DynamoDB table (backend `dynamodb`).
    pub dynamodb_table: String,
    /// The FleetLock server's base URL (backend `fleetlock`).
    pub fleetlock_url: String,
}

impl Default for CoordinationSettings {
    fn default() -> Self {
        Self {
            backend: Backend::ReportOnly,
            group: "default".into(),
            max_unavailable: MaxUnavailable::Count(1),
            min_healthy_percent: 0,
            one_az_at_a_time: false,
            lease_ttl: Duration::from_secs(15 * 60),
            settle: Duration::ZERO,
            recovery_timeout: Duration::from_secs(15 * 60),
            alarms: Vec::new(),
            poll: Duration::from_secs(30),
            wait_timeout: Duration::from_secs(6 * 3600),
            on_stale_lease: StalePolicy::Pause,
            snapshot_max_age: Duration::from_secs(60),
            dynamodb_table: "ecs-patchd-leases".into(),
            fleetlock_url: String::new(),
        }
    }
}

impl CoordinationSettings {
    /// The rolling policy these settings describe (valid once loaded).
    pub fn policy(&self) -> Policy {
        Policy {
            max_unavailable: self.max_unavailable.budget().unwrap_or(Budget::Count(1)),
            min_healthy_percent: self.min_healthy_percent,
            one_az_at_a_time: self.one_az_at_a_time,
        }
    }
}
