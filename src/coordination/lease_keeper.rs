//! Keeps a slot's lease while a cycle holds it: renews it once when the cycle takes it up
//! (after a restart, before anything else happens), then in the background every third of
//! its lifetime, and answers whether it still holds before each destructive step.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing::warn;

use super::{Coordinator, Grant};
use crate::clock::Clock;
use crate::error::{Error, Result};

/// How many times the lease is renewed on taking it up before it is taken as lapsed.
const RENEW_ATTEMPTS: u32 = 3;

/// Renews one grant's lease in the background until it is dropped.
pub struct LeaseKeeper {
    token: u64,
    clock: Arc<dyn Clock>,
    valid_until: Arc<Mutex<SystemTime>>,
    step: Arc<Mutex<&'static str>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    /// Renews `grant` for `holder` at `step` (a few tries: the store may be briefly
    /// unreachable; without an answer the lease counts as valid only until `valid_before`),
    /// then starts renewing it in the background.
    pub async fn start(
        coordinator: Arc<dyn Coordinator>,
        clock: Arc<dyn Clock>,
        grant: Grant,
        holder: &str,
        step: &'static str,
        valid_before: SystemTime,
    ) -> Self {
        let ttl = coordinator.ttl();
        let now = clock.now();
        let mut valid = valid_before;
        for attempt in 1..=RENEW_ATTEMPTS {
            match coordinator.renew(&grant, holder, step, ttl).await {
                Ok(true) => {
                    valid = now.checked_add(ttl).unwrap_or(far_future());
                    break;
                }
                Ok(false) => {
                    warn!("the slot is no longer ours (released or reclaimed)");
                    valid = SystemTime::UNIX_EPOCH;
                    break;
                }
                Err(e) if attempt < RENEW_ATTEMPTS => {
                    warn!("cannot renew the slot's lease (will try again): {e}");
                    clock.sleep(clock.jitter(Duration::from_secs(2))).await;
                }
                Err(e) => warn!("cannot renew the slot's lease: {e}"),
            }
        }
        let token = grant.token;
        let valid_until = Arc::new(Mutex::new(valid));
        let current_step = Arc::new(Mutex::new(step));
        let task = tokio::spawn(heartbeat(
            coordinator,
            Arc::clone(&clock),
            grant,
            holder.to_string(),
            Arc::clone(&current_step),
            Arc::clone(&valid_until),
        ));
        Self { token, clock, valid_until, step: current_step, task }
    }

    /// The fencing token of the grant kept.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The step the next renewals name.
    pub fn set_step(&self, step: &'static str) {
        *self.step.lock().expect("step lock") = step;
    }

    /// Refuses a destructive step once the lease has lapsed.
    pub fn ensure(&self) -> Result<()> {
        let until = *self.valid_until.lock().expect("lease lock");
        if self.clock.now() > until {
            return Err(Error::Lease(format!(
                "the slot's lease lapsed at {}: no new destructive step is started",
                humantime::format_rfc3339_seconds(until)
            )));
        }
        Ok(())
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Renews the lease every third of its lifetime (at most hourly), recording how long it holds.
async fn heartbeat(
    coordinator: Arc<dyn Coordinator>,
    clock: Arc<dyn Clock>,
    grant: Grant,
    holder: String,
    step: Arc<Mutex<&'static str>>,
    valid_until: Arc<Mutex<SystemTime>>,
) {
    let ttl = coordinator.ttl();
    let every = (ttl / 3).min(Duration::from_secs(3600));
    loop {
        clock.sleep(every).await;
        let step = *step.lock().expect("step lock");
        let renewed = match coordinator.renew(&grant, &holder, step, ttl).await {
            Ok(true) => clock.now().checked_add(ttl).unwrap_or(far_future()),
            Ok(false) => {
                warn!("the slot is no longer ours (released or reclaimed): no new destructive step");
                SystemTime::UNIX_EPOCH
            }
            Err(e) => {
                warn!("cannot renew the slot's lease: {e}");
                continue;
            }
        };
        *valid_until.lock().expect("lease lock") = renewed;
    }
}

/// A time no lease reaches (for backends without expiry).
fn far_future() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40)
}
