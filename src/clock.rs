//! Time, as a side effect the cycle can be handed (real or simulated).

use std::time::{Duration, SystemTime};

/// Wall-clock time and waiting.
#[async_trait::async_trait]
pub trait Clock: Send + Sync {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
    /// Waits for `duration`.
    async fn sleep(&self, duration: Duration);
    /// `base` spread at random over 0.5 to 1.5 times itself, so that hosts polling the
    /// same service do not move in step.
    fn jitter(&self, base: Duration) -> Duration;
}

/// A step's time limit, counted on the monotonic clock (tokio's: the system's, or the
/// simulator's virtual one), so that a jump of the wall clock (NTP stepping it, an operator
/// setting it) neither ends a step early nor stretches it. A step resumed from the journal
/// counts from the wall-clock time the journal kept, read once when the process takes the
/// step up.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: tokio::time::Instant,
}

impl Deadline {
    /// `limit` after `since`, as far as `clock` tells now: never more than `limit` from now
    /// (a wall clock set back gives the step at most its whole limit again).
    pub fn after(clock: &dyn Clock, since: SystemTime, limit: Duration) -> Self {
        let spent = clock.now().duration_since(since).unwrap_or_default();
        Self::within(limit.saturating_sub(spent))
    }

    /// `limit` from now.
    pub fn within(limit: Duration) -> Self {
        Self::since(tokio::time::Instant::now(), limit)
    }

    /// `limit` after the monotonic instant `start` (a limit beyond any uptime, such as a
    /// lease that never expires, is a century).
    pub fn since(start: tokio::time::Instant, limit: Duration) -> Self {
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        Self { at: start.checked_add(limit).unwrap_or_else(|| start + CENTURY) }
    }

    /// Whether it has passed.
    pub fn passed(&self) -> bool {
        tokio::time::Instant::now() >= self.at
    }

    /// The time left (none once it has passed).
    pub fn left(&self) -> Duration {
        self.at.saturating_duration_since(tokio::time::Instant::now())
    }
}

/// The operating system's clock.
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    fn jitter(&self, base: Duration) -> Duration {
        base.mul_f64(rand::random_range(0.5..1.5))
    }
}
