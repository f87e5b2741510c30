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
