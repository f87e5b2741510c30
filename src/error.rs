//! The small, fixed set of error kinds the daemon reports.
//!
//! Every failure is one of these kinds; the kind decides the process exit code and is
//! safe to use as a metric or log label. Messages never carry credentials or tokens.

use std::fmt;

/// What went wrong, in a form an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid (names the file, the key and what is allowed), or the
    /// setup it names is (a table or cluster that does not exist, a permission the role
    /// lacks): waiting cannot mend it.
    #[error("{0}")]
    Config(String),
    /// Another cycle holds the state directory lock; try again later.
    #[error("{0}")]
    Busy(String),
    /// The instance's identity (IMDS, ECS agent, cluster) could not be established.
    #[error("{0}")]
    Identity(String),
    /// An ECS API call failed.
    #[error("ECS: {message}")]
    Ecs {
        /// What failed, with the service's error code where there is one.
        message: String,
        /// True when the same call may succeed later (throttling, network, 5xx).
        transient: bool,
    },
    /// The package manager failed: names the command, exit code and last lines of output.
    #[error("{0}")]
    Packages(String),
    /// A host operation (reboot, agent service, boot id) failed.
    #[error("{0}")]
    Host(String),
    /// The cycle journal could not be read or written.
    #[error("{0}")]
    Journal(String),
    /// A step did not finish within its configured time.
    #[error("{0}")]
    Timeout(String),
    /// The container instance is held by someone else (drained by another actor).
    #[error("{0}")]
    NotOurs(String),
    /// The lease store failed, or the slot is no longer ours.
    #[error("{0}")]
    Lease(String),
    /// The group is paused: nothing new starts until an operator resumes it.
    #[error("{0}")]
    Paused(String),
    /// AWS credentials are missing, invalid or expired: names the chain that was tried.
    #[error("{message}")]
    Credentials {
        /// What failed, and where credentials were looked for.
        message: String,
        /// The service said they expired: instance profile credentials rotate, so the step
        /// is tried once more before this counts.
        expired: bool,
    },
    /// Not now, and nothing was changed: the instance is leaving (spot notice, Auto Scaling
    /// lifecycle), or a service on it cannot move its tasks.
    #[error("{0}")]
    Deferred(String),
    /// A signal (SIGTERM, SIGINT) stopped the run between two steps; the next run resumes.
    #[error("{0}")]
    Stopped(String),
    /// The run stopped at the reboot, which its caller makes (SSM Run Command: exit 194);
    /// the run after the boot resumes.
    #[error("{0}")]
    RebootHandedOff(String),
    /// A hook (hooks.d) failed, timed out or was refused.
    #[error("{0}")]
    Hook(String),
}

/// Short, stable label of an error kind (for logs, status and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// See [`Error::Config`].
    Config,
    /// See [`Error::Busy`].
    Busy,
    /// See [`Error::Identity`].
    Identity,
    /// See [`Error::Ecs`].
    Ecs,
    /// See [`Error::Packages`].
    Packages,
    /// See [`Error::Host`].
    Host,
    /// See [`Error::Journal`].
    Journal,
    /// See [`Error::Timeout`].
    Timeout,
    /// See [`Error::NotOurs`].
    NotOurs,
    /// See [`Error::Lease`].
    Lease,
    /// See [`Error::Paused`].
    Paused,
    /// See [`Error::Credentials`].
    Credentials,
    /// See [`Error::Deferred`].
    Deferred,
    /// See [`Error::Stopped`] and [`Error::RebootHandedOff`].
    Stopped,
    /// See [`Error::Hook`].
    Hook,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Config => "config",
            Kind::Busy => "busy",
            Kind::Identity => "identity",
            Kind::Ecs => "ecs",
            Kind::Packages => "packages",
            Kind::Host => "host",
            Kind::Journal => "journal",
            Kind::Timeout => "timeout",
            Kind::NotOurs => "not-ours",
            Kind::Lease => "lease",
            Kind::Paused => "paused",
            Kind::Credentials => "credentials",
            Kind::Deferred => "deferred",
            Kind::Stopped => "stopped",
            Kind::Hook => "hook",
        })
    }
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Config(_) => Kind::Config,
            Error::Busy(_) => Kind::Busy,
            Error::Identity(_) => Kind::Identity,
            Error::Ecs { .. } => Kind::Ecs,
            Error::Packages(_) => Kind::Packages,
            Error::Host(_) => Kind::Host,
            Error::Journal(_) => Kind::Journal,
            Error::Timeout(_) => Kind::Timeout,
            Error::NotOurs(_) => Kind::NotOurs,
            Error::Lease(_) => Kind::Lease,
            Error::Paused(_) => Kind::Paused,
            Error::Credentials { .. } => Kind::Credentials,
            Error::Deferred(_) => Kind::Deferred,
            Error::Stopped(_) | Error::RebootHandedOff(_) => Kind::Stopped,
            Error::Hook(_) => Kind::Hook,
        }
    }

    /// True when running again later may succeed without anyone changing anything.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Error::Busy(_)
                | Error::Deferred(_)
                | Error::Stopped(_)
                | Error::RebootHandedOff(_)
                | Error::Ecs { transient: true, .. }
        )
    }
}

impl Kind {
    /// True when a cycle that ends with this kind must halt the roll: the host failed.
    /// Not for a host that was never ours to drain, one that had to stop for a reason
    /// outside it (leaving, a service that cannot move its tasks, no slot in time), or one
    /// that found the roll paused by another: one failure is reported once, by its host,
    /// and the hosts that wait behind it say that they wait.
    pub fn halts_roll(self) -> bool {
        !matches!(self, Kind::NotOurs | Kind::Deferred | Kind::Paused)
    }
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
