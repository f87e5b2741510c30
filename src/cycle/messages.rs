//! Words the steps share in their messages: durations for people, and whose drain an
//! instance is in.

use std::time::Duration;

use crate::ecs::ContainerInstance;
use crate::error::Error;

/// The error for an instance this cycle did not drain.
pub(super) fn not_ours(instance: &ContainerInstance) -> Error {
    Error::NotOurs(format!(
        "container instance {} is {} ({}): this cycle did not drain it, so ecs-patchd leaves it alone",
        instance.arn,
        instance.status,
        drained_by(instance)
    ))
}

/// Who drained `instance`, for a message.
pub(super) fn drained_by(instance: &ContainerInstance) -> String {
    match &instance.drained_by {
        Some(cycle) => format!("drained by ecs-patchd cycle {cycle}"),
        None => "not drained by ecs-patchd".into(),
    }
}

/// A duration for people, to the millisecond.
pub(super) fn fmt(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(round(d))
}

/// Drops sub-millisecond noise from a duration shown to people.
pub(super) fn round(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
