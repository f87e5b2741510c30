//! Test-only fault injection: kill the process at a named step boundary.
//!
//! When `ECS_PATCHD_FAULT_KILL` equals a point's name (for example `draining:persisted`, right
//! after the journal says "draining" and before the drain call, or `installing:done`, right
//! after the install and before the next state is written), the process sends itself
//! SIGKILL. Integration tests use it to prove every boundary resumes correctly. Unset, it
//! does nothing.

/// The environment variable that names the point to die at.
pub const KILL_AT: &str = "ECS_PATCHD_FAULT_KILL";

/// Dies with SIGKILL if `point` is the one named in [`KILL_AT`].
pub fn point(point: &str) {
    if std::env::var(KILL_AT).is_ok_and(|wanted| wanted == point) {
        tracing::warn!(point, "fault injection: killing the process");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
