//! The simulator's clock: virtual time on tokio's paused clock, with seeded jitter, shared
//! by every simulated host and the simulated lease store.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::clock::Clock;

/// Virtual time on tokio's paused clock, with seeded jitter.
pub struct SimClock {
    base: SystemTime,
    start: tokio::time::Instant,
    rng: Mutex<StdRng>,
}

impl SimClock {
    /// A clock starting now, jittering from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            base: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            start: tokio::time::Instant::now(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// Virtual milliseconds since the start.
    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[async_trait::async_trait]
impl Clock for SimClock {
    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    fn jitter(&self, base: Duration) -> Duration {
        base.mul_f64(self.rng.lock().expect("rng").random_range(0.5..1.5))
    }
}
