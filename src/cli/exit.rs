//! The exit codes of `ecs-patchd`, and which errors map to which.

use ecs_patchd::error::Kind;

/// Exit code: a cycle failed (the host was put back in service if it had been drained).
pub(super) const FAILED: u8 = 1;
/// Exit code: try again later (another cycle running, instance drained by someone else,
/// ECS throttling or unreachable).
pub(super) const TEMPORARY: u8 = 75;
/// Exit code: the configuration is invalid.
pub(super) const CONFIG: u8 = 78;
/// Exit code: reboot the host and run this step again (the SSM agent's convention for a
/// Run Command step on Linux).
pub(super) const SSM_REBOOT: u8 = 194;

/// The exit code of an error of `kind` (or of a failed cycle, which is not `temporary`).
pub(super) fn code(kind: Kind, temporary: bool) -> u8 {
    match kind {
        Kind::Config => CONFIG,
        Kind::Busy | Kind::NotOurs | Kind::Paused | Kind::Deferred | Kind::Stopped => TEMPORARY,
        _ if temporary => TEMPORARY,
        _ => FAILED,
    }
}
