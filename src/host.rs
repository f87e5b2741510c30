//! The host itself: boot identity, reboot, and the ECS agent's service.

use std::path::PathBuf;
use std::time::Duration;

use crate::command;
use crate::config::HostSettings;
use crate::error::{Error, Result};

/// Operations on the machine the daemon runs on.
#[async_trait::async_trait]
pub trait Host: Send + Sync {
    /// An id that changes at every boot.
    fn boot_id(&self) -> Result<String>;
    /// Asks the machine to reboot; returns once the request is made. Fails with
    /// [`Error::RebootHandedOff`] when the caller reboots instead (SSM Run Command).
    async fn reboot(&self) -> Result<()>;
    /// Starts the ECS agent if it is not running (a no-op when it is).
    async fn start_agent(&self) -> Result<()>;
    /// Restarts the ECS agent so a newly installed version runs.
    async fn restart_agent(&self) -> Result<()>;
    /// Restarts the container runtime (docker, containerd) so a newly installed version runs.
    async fn restart_runtime(&self) -> Result<()>;
}

/// [`Host`] through configured commands (systemctl by default).
pub struct SystemHost {
    settings: HostSettings,
    boot_id_path: PathBuf,
    hand_off_reboot: bool,
}

/// Time allowed for a service command (start, restart, reboot request) to return.
const SERVICE_COMMAND_LIMIT: Duration = Duration::from_secs(120);

impl SystemHost {
    /// A host controlled by the commands in `settings`, reading its boot id from `boot_id_path`.
    pub fn new(settings: HostSettings, boot_id_path: PathBuf) -> Self {
        Self { settings, boot_id_path, hand_off_reboot: false }
    }

    /// The same host, leaving the reboot to the process that ran ecs-patchd. AWS ("Handling
    /// reboots when running commands"): "For Linux and macOS managed nodes, you specify exit
    /// 194. The exit code instructs AWS Systems Manager Agent (SSM Agent) to reboot the
    /// managed node, and then restart the script after the reboot completed"; "make scripts
    /// idempotent": the re-run resumes the cycle from its journal.
    pub fn handing_off_reboot(mut self) -> Self {
        self.hand_off_reboot = true;
        self
    }

    async fn run(&self, what: &str, argv: &[String]) -> Result<()> {
        let output = command::run(argv, &[], SERVICE_COMMAND_LIMIT)
            .await
            .map_err(|e| Error::Host(format!("cannot {what}: {e}")))?;
        if output.code == Some(0) {
            Ok(())
        } else {
            Err(Error::Host(format!("cannot {what}: {}", command::failure(argv, &output))))
        }
    }
}

#[async_trait::async_trait]
impl Host for SystemHost {
    fn boot_id(&self) -> Result<String> {
        std::fs::read_to_string(&self.boot_id_path)
            .map(|id| id.trim().to_string())
            .map_err(|e| Error::Host(format!("cannot read the boot id from {}: {e}", self.boot_id_path.display())))
    }

    async fn reboot(&self) -> Result<()> {
        if self.hand_off_reboot {
            return Err(Error::RebootHandedOff(
                "the reboot is handed to the SSM agent (exit 194): it reboots the host and runs this step again, \
                 which finishes the cycle"
                    .into(),
            ));
        }
        self.run("reboot", &self.settings.reboot_command).await
    }

    async fn start_agent(&self) -> Result<()> {
        self.run("start the ECS agent", &self.settings.agent_start_command).await
    }

    async fn restart_agent(&self) -> Result<()> {
        self.run("restart the ECS agent", &self.settings.agent_restart_command).await
    }

    async fn restart_runtime(&self) -> Result<()> {
        self.run("restart the container runtime", &self.settings.runtime_restart_command).await
    }
}
