//! The ticket queue: hosts are served in ticket order; a waiter refreshes its ticket as it
//! asks, and waiters in front that stopped asking are skipped.

use tokio::time::Instant;

use super::items::{Queued, Ticket};
use super::{Consistency, Expect, NEAR_LOOK, SKIP_SCAN, STUCK_AFTER, StoreCoordinator};
use crate::coordination::SlotRequest;
use crate::error::{Error, Result};

impl StoreCoordinator {
    /// Our ticket for `request`'s cycle: remembered, found again, or newly taken.
    pub(super) async fn ticket(&self, request: &SlotRequest) -> Result<u64> {
        if let Some((ticket, _)) = self.memory().tickets.get(&request.cycle) {
            return Ok(*ticket);
        }
        let queued = self.read::<Queued>(&self.queued_key(&request.id), Consistency::Strong).await?;
        if let Some((q, _)) = queued.filter(|(q, _)| q.cycle == request.cycle) {
            // Asked before a restart: refresh the ticket on this call.
            self.memory().tickets.insert(request.cycle.clone(), (q.ticket, None));
            return Ok(q.ticket);
        }
        let ticket = self.store.increment(&self.tickets_key()).await?;
        let now = self.now();
        let waiter = Ticket { id: request.id.clone(), cycle: request.cycle.clone(), asked_at: now };
        let queued = Queued { ticket, cycle: request.cycle.clone() };
        // Written together, so that a ticket is either findable by its host or absent
        // (and then skipped at once).
        let written = self
            .store
            .commit(&[
                Self::put(self.ticket_key(ticket), &waiter, Expect::Absent),
                Self::put(self.queued_key(&request.id), &queued, Expect::Any),
            ])
            .await?;
        if !written {
            return Err(Error::Lease(format!("ticket {ticket} of {} was already written", self.key)));
        }
        self.memory().tickets.insert(request.cycle.clone(), (ticket, Some(Instant::now())));
        Ok(ticket)
    }

    /// Keeps our ticket alive: written again (which raises its version, what the hosts
    /// behind watch) every third of the lease TTL, timed on this process's monotonic clock.
    pub(super) async fn refresh_ticket(&self, request: &SlotRequest, ticket: u64) -> Result<()> {
        let due = self
            .memory()
            .tickets
            .get(&request.cycle)
            .is_some_and(|(_, at)| at.is_none_or(|at| at.elapsed() >= self.ttl / 3));
        if due {
            let waiter = Ticket { id: request.id.clone(), cycle: request.cycle.clone(), asked_at: self.now() };
            self.store.save(&Self::put(self.ticket_key(ticket), &waiter, Expect::Any)).await?;
            self.memory().tickets.insert(request.cycle.clone(), (ticket, Some(Instant::now())));
        }
        Ok(())
    }

    /// Forgets our ticket (it was served, skipped or withdrawn).
    pub(super) fn forget_ticket(&self, cycle: &str) {
        self.memory().tickets.remove(cycle);
    }

    /// Moves the queue past the tickets at its front whose hosts stopped asking (withdrawn,
    /// never written, or not written again within the lease TTL as this process watched
    /// it), looking at most [`SKIP_SCAN`] of them before `ticket`: true if it moved. Hosts
    /// that leave the queue out of order (a pause, a window closing) leave such runs behind.
    /// A waiter's own `asked_at` is not compared with this host's clock: a waiter whose
    /// clock runs behind would be skipped while it asks, one whose clock runs ahead never.
    pub(super) async fn skip_gone(&self, served: u64, ticket: u64) -> Result<bool> {
        let last = ticket.saturating_sub(1).min(served + SKIP_SCAN);
        let keys: Vec<String> = (served + 1..=last).map(|t| self.ticket_key(t)).collect();
        let stored = self.store.load_many(&keys, Consistency::Strong).await?;
        let mut run = 0;
        {
            let mut memory = self.memory();
            let waiters = &mut memory.waiters;
            waiters.forget_below(served + 1);
            for (t, stored) in (served + 1..).zip(stored) {
                let gone = stored.is_none_or(|v| waiters.unchanged_for(t, v.version) > self.ttl);
                if !gone {
                    break;
                }
                run += 1;
            }
        }
        if run == 0 {
            return Ok(false);
        }
        let mut skipped = false;
        self.update_control(|c| {
            skipped = c.served == served;
            if skipped {
                c.served = served + run;
            }
            skipped
        })
        .await?;
        if skipped {
            tracing::info!(tickets = run, "skipped waiters that stopped asking for a slot");
            for key in &keys[..usize::try_from(run).unwrap_or(usize::MAX)] {
                self.store.save(&Self::delete(key.clone())).await?;
            }
        }
        Ok(skipped)
    }

    /// Whether the queue's front has not moved for [`STUCK_AFTER`], as this host saw it.
    pub(super) fn stuck(&self, served: u64) -> bool {
        let now = Instant::now();
        let mut memory = self.memory();
        match memory.front {
            Some((seen, since)) if seen == served => {
                let stuck = now.saturating_duration_since(since) >= STUCK_AFTER;
                if stuck {
                    memory.front = Some((served, now));
                }
                stuck
            }
            _ => {
                memory.front = Some((served, now));
                false
            }
        }
    }

    /// How soon the first two of the queue look again, in poll intervals: every
    /// [`NEAR_LOOK`], so that a slot given back is taken within a second or so and grants
    /// can follow each other every [`GRANT_SPACING`].
    pub(super) fn near_pace(&self) -> f64 {
        (NEAR_LOOK.as_secs_f64() / self.poll.as_secs_f64().max(0.001)).min(0.25)
    }
}
