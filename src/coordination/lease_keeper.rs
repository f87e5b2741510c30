//! Keeps a slot's lease while a cycle holds it: renews it once when the cycle takes it up
//! (after a restart, before anything else happens), then in the background every third of
//! its lifetime, and answers whether it still holds before each destructive step.
//!
//! How long a renewal holds is timed on the monotonic clock from just before it was asked:
//! the store's readers time it from when they see it, which is later, so the holder stops
//! before any reader may take the slot, and a jump of the wall clock changes neither.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::warn;

use super::{Coordinator, Grant};
use crate::clock::{Clock, Deadline};
use crate::error::{Error, Result};

/// How many times the lease is renewed on taking it up before it is taken as lapsed.
const RENEW_ATTEMPTS: u32 = 3;

/// Renews one grant's lease in the background until it is dropped.
pub struct LeaseKeeper {
    token: u64,
    valid_until: Arc<Mutex<Option<Deadline>>>,
    step: Arc<Mutex<&'static str>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    /// Renews `grant` for `holder` at `step` (a few tries: the store may be briefly
    /// unreachable; without an answer the lease counts as lapsed until a renewal answers),
    /// then starts renewing it in the background.
    pub async fn start(
        coordinator: Arc<dyn Coordinator>,
        clock: Arc<dyn Clock>,
        grant: Grant,
        holder: &str,
        step: &'static str,
    ) -> Self {
        let ttl = coordinator.ttl();
        let mut valid = None;
        for attempt in 1..=RENEW_ATTEMPTS {
            let asked = tokio::time::Instant::now();
            match coordinator.renew(&grant, holder, step, ttl).await {
                Ok(true) => {
                    valid = Some(Deadline::since(asked, ttl));
                    break;
                }
                Ok(false) => {
                    warn!("the slot is no longer ours (released or reclaimed)");
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
            clock,
            grant,
            holder.to_string(),
            Arc::clone(&current_step),
            Arc::clone(&valid_until),
        ));
        Self { token, valid_until, step: current_step, task }
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
        if until.is_none_or(|d| d.passed()) {
            return Err(Error::Lease(
                "the slot's lease lapsed (no renewal answered within its lifetime): no new destructive step is started"
                    .into(),
            ));
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
    valid_until: Arc<Mutex<Option<Deadline>>>,
) {
    let ttl = coordinator.ttl();
    let every = (ttl / 3).min(Duration::from_secs(3600));
    loop {
        clock.sleep(every).await;
        let step = *step.lock().expect("step lock");
        let asked = tokio::time::Instant::now();
        let renewed = match coordinator.renew(&grant, &holder, step, ttl).await {
            Ok(true) => Some(Deadline::since(asked, ttl)),
            Ok(false) => {
                warn!("the slot is no longer ours (released or reclaimed): no new destructive step");
                None
            }
            Err(e) => {
                warn!("cannot renew the slot's lease: {e}");
                continue;
            }
        };
        *valid_until.lock().expect("lease lock") = renewed;
    }
}
