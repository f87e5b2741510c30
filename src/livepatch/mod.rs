//! Kernel live patches: what the running kernel has loaded, by the host's own tool (kpatch on
//! Amazon Linux, Canonical Livepatch on Ubuntu), and whether a pending kernel may wait for
//! its reboot because the patches loaded cover what it fixes ([`deferral`]).
//!
//! A host without such a tool answers `None`, and nothing changes: every kernel update
//! drains and reboots as before.

pub mod canonical;
pub mod deferral;
pub mod kpatch;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::clock::Clock;
use crate::command;
use crate::error::{Error, Result};

/// What the live patch tool says of the running kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveState {
    /// The tool that answered (`kpatch`, `canonical-livepatch`).
    pub tool: String,
    /// The running kernel's release.
    pub kernel: String,
    /// The patches the running kernel has enabled.
    pub loaded: Vec<String>,
    /// Patches installed for the running kernel that are not enabled, or still in
    /// transition: none of what they fix can be counted on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_loaded: Vec<String>,
    /// The CVEs the tool itself says the loaded patches fix (Canonical Livepatch; for kpatch
    /// the repositories' advisories say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixes: Vec<String>,
    /// Whether the tool reports the running kernel fully patched (Canonical Livepatch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fully_patched: Option<bool>,
    /// Why the tool says no more patches will come for the running kernel, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
}

/// The host's live patch tool, confined to what the cycle asks of it.
#[async_trait::async_trait]
pub trait LivePatching: Send + Sync {
    /// The running kernel's live patches; `None` when this host cannot load any (no tool,
    /// its service not enabled, or a kernel without livepatch support), logged.
    async fn state(&self) -> Option<LiveState>;

    /// Loads the patches installed for the running kernel that are not enabled, within
    /// `limit`, as the tool's boot service would; an error says why one did not load. By
    /// default nothing: a tool that applies its own patches (Canonical Livepatch) needs no
    /// command.
    async fn load_installed(&self, _limit: Duration) -> Result<()> {
        Ok(())
    }
}

/// Longest run of a live patch tool's query (`kpatch list`, `canonical-livepatch status`)
/// or of the service check.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// A live patch tool's standard output when it exits 0; otherwise `None`, the reason logged:
/// a host where the tool is missing or not set up has no live patching.
async fn tool_answer(argv: &[String]) -> Option<String> {
    let run = command::run(argv, &[("LC_ALL", "C")], TOOL_TIMEOUT).await;
    command::answer(argv, run).map_err(|why| debug!("no kernel live patching: {why}")).ok()
}

/// How often [`await_loaded`] looks again.
const LOAD_POLL: Duration = Duration::from_secs(2);

/// Waits, up to `limit`, until every live patch installed for the running kernel is enabled
/// and out of transition; the state then, or an error naming those that are not. The kernel
/// applies a patch to each task as it leaves the patched functions, so a transition may take
/// a while ("transition" stays 1 until every task is patched).
pub async fn await_loaded(live: &dyn LivePatching, clock: &dyn Clock, limit: Duration) -> Result<LiveState> {
    let start = clock.now();
    loop {
        let Some(state) = live.state().await else {
            return Err(Error::Packages(
                "a live patch was installed, but the live patch tool no longer answers: cannot tell whether it loaded"
                    .into(),
            ));
        };
        // Installed for the running kernel, a live patch is listed: none loaded means it was not.
        if state.not_loaded.is_empty() && !state.loaded.is_empty() {
            return Ok(state);
        }
        if clock.now().duration_since(start).unwrap_or_default() >= limit {
            let which = if state.not_loaded.is_empty() { "none listed".into() } else { state.not_loaded.join(", ") };
            return Err(Error::Packages(format!(
                "live patch(es) {which} installed for the running kernel {} but not enabled after {} \
                 (packages.livepatch.load_timeout): see `{} list` and the kernel log",
                state.kernel,
                humantime::format_duration(limit),
                state.tool
            )));
        }
        clock.sleep(LOAD_POLL).await;
    }
}
