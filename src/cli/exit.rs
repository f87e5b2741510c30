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

/// What each exit code means, in order: `--help` prints it, and a test holds the README's
/// table to it.
pub(super) const MEANINGS: [(u8, &str); 5] = [
    (0, "done: patched, or nothing to do"),
    (
        FAILED,
        "the cycle failed (the instance was set ACTIVE again if this cycle had drained it), or an error (identity, credentials, journal, lease store) stopped the run; a run stopped mid-cycle is resumed by the next one",
    ),
    (
        TEMPORARY,
        "temporary: no coordination backend is chosen (report-only: updates are reported, nothing is installed), outside the maintenance window, no slot within `coordination.wait_timeout`, a pre-drain hook said no, another cycle is running (`--resume-only`; a plain `run` follows it), the instance is drained by someone else, the instance is leaving (spot notice, Auto Scaling), a service cannot move its tasks, the roll is paused, ECS stayed throttled or unreachable, or a signal stopped the run between two steps; run again later",
    ),
    (
        CONFIG,
        "the configuration is invalid (the message names the file, the key and what is allowed), or the setup it names is: a lease table or cluster that does not exist, a permission the role lacks (the message says how to mend it); the daemon stops on it too, when no cycle is in progress",
    ),
    (
        SSM_REBOOT,
        "`run --ssm`, or `run` under SSM Run Command (`AWS_SSM_INSTANCE_ID` set): reboot the host and run the same command again (the SSM agent's convention); the cycle is at its reboot step. The SSM document passes 194 on and ends 75 as Success",
    ),
];

/// The exit codes as `--help` ends: one line each.
pub(super) fn help() -> String {
    MEANINGS
        .iter()
        .fold(String::from("Exit status:\n"), |text, (code, meaning)| text + &format!("  {code:<4} {meaning}\n"))
}

/// The exit code of an error of `kind` (or of a failed cycle, which is not `temporary`).
pub(super) fn code(kind: Kind, temporary: bool) -> u8 {
    match kind {
        Kind::Config => CONFIG,
        Kind::Busy | Kind::NotOurs | Kind::Paused | Kind::Deferred | Kind::Stopped => TEMPORARY,
        _ if temporary => TEMPORARY,
        _ => FAILED,
    }
}
