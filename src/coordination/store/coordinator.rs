//! The [`Coordinator`] the cycle sees, composed of the queue, the slots and the snapshot.

use std::time::Duration;

use super::items::{self, Queued};
use super::{
    CONFLICT_RETRIES, Consistency, RELEASES_KEPT, RELEASES_KEPT_FOR, SKIP_SCAN, SLOWEST_PACE, StoreCoordinator, ms,
};
use crate::coordination::{Coordinator, Decision, Grant, Halt, SlotRequest};
use crate::ecs::Ecs;
use crate::error::Result;

#[async_trait::async_trait]
impl Coordinator for StoreCoordinator {
    async fn acquire(&self, request: &SlotRequest, ecs: &dyn Ecs) -> Result<Decision> {
        for _ in 0..CONFLICT_RETRIES {
            let known = self.memory().tickets.get(&request.cycle).map(|(t, _)| *t);
            let (control, _) = self.control(Consistency::Eventual).await?;
            if known.is_none_or(|t| t <= control.served) {
                // First ask of this process, or served meanwhile: a grant whose answer was
                // lost (or held before a restart) is still ours, paused or not.
                let (control, _) = self.control(Consistency::Strong).await?;
                if let Some(grant) = self.held_by(&request.id, &request.cycle, &control).await? {
                    self.forget_ticket(&request.cycle);
                    // Nothing is drained yet: while paused, the slot goes back (a slot item
                    // naming this host may also be a peer's forgery, to make it drain).
                    if let Some(pause) = self.pause_on_record().await?.pause {
                        self.release(&grant, &request.id).await?;
                        return Ok(Decision::Paused(items::described(&pause)));
                    }
                    return Ok(Decision::Granted(grant));
                }
                if known.is_none() {
                    self.give_back_leftovers(request, &control, ecs).await?;
                }
                if known.is_some() {
                    // Skipped (we stopped asking for longer than the lease TTL): queue again.
                    self.forget_ticket(&request.cycle);
                    self.store.save(&Self::delete(self.queued_key(&request.id))).await?;
                    continue;
                }
            }
            // No new place in the queue while the roll is paused (the hint, confirmed by the
            // pause items: a peer's hint alone stops nobody).
            if control.paused.is_some()
                && let Some(pause) = self.confirmed_pause().await?
            {
                return Ok(Decision::Paused(items::described(&pause)));
            }
            let ticket = self.ticket(request).await?;
            // A ticket just taken may have been skipped before it was written (its place
            // looked empty to the host behind): look at the queue again before using it.
            let control = if known.is_none() { self.control(Consistency::Eventual).await?.0 } else { control };
            if ticket <= control.served {
                continue;
            }
            self.refresh_ticket(request, ticket).await?;
            let ahead = ticket - control.served - 1;
            // Next in line or at the head: the host checks its services now, while the
            // head (or it) takes its turn, and not before (that costs ECS reads).
            if ahead <= 1 && request.stays.is_none() {
                return Ok(Decision::Check);
            }
            if ahead == 0 {
                match self.take_slot(request, ticket, ecs).await? {
                    None => continue,
                    Some(decision) => return Ok(decision),
                }
            }
            // Right behind the head, or the front not moving for a while: waiters in front
            // that stopped asking are skipped.
            if (ahead == 1 || (ahead <= SKIP_SCAN && self.stuck(control.served)))
                && self.skip_gone(control.served, ticket).await?
            {
                continue;
            }
            let budget = self.policy.max_unavailable.resolve(control.cluster_size.max(1)) as f64;
            // A budget back or more, the host has time to refresh the snapshot before its
            // turn (a budget's worth of grants takes a slot time). In the last budget of the
            // queue nobody refreshes: the head accepts twice the refresh interval, which
            // covers it.
            if ahead >= 2
                && ahead as f64 >= budget
                && (ahead as f64) < 3.0 * budget
                && let Err(e) = self.refresh_ahead(ecs).await
            {
                tracing::warn!("cannot refresh the shared cluster snapshot: {e}");
            }
            // Never so slow that the ticket goes stale (it is refreshed when asking).
            let slowest = SLOWEST_PACE.min(self.ttl.as_secs_f64() / 3.0 / self.poll.as_secs_f64().max(1.0)).max(1.0);
            let pace = if ahead <= 1 {
                self.near_pace()
            } else {
                // A budget's worth of hosts goes per slot time: look again in proportion.
                (ahead as f64 / budget).clamp(0.25, slowest)
            };
            return Ok(Decision::Wait { reason: format!("{ahead} host(s) ahead in the queue"), pace });
        }
        Ok(Decision::Wait { reason: "the queue is busy; looking again".into(), pace: 0.25 })
    }

    async fn renew(&self, grant: &Grant, id: &str, step: &str, hold: Duration) -> Result<bool> {
        let Some(n) = self.slot_of(grant).await? else { return Ok(false) };
        let asked = tokio::time::Instant::now();
        let now = self.now();
        let hold_for = hold;
        let hold = ms(hold);
        let mut held = false;
        self.update_slot(n, |s| {
            held = false;
            if let Some(h) = s.holder.as_mut().filter(|h| h.id == id && h.token == grant.token) {
                // Never shorter than what is left of a longer hold (a renewal before a
                // reboot), and never longer than that hold was: a clock set back between
                // two renewals does not stretch it.
                let prior = h.hold_ms.max(h.expires_at.saturating_sub(h.renewed_at));
                let left = h.expires_at.saturating_sub(now).min(prior);
                h.hold_ms = hold.max(left);
                h.renewed_at = now;
                h.expires_at = now.saturating_add(h.hold_ms);
                h.step = step.to_string();
                held = true;
            }
            held
        })
        .await?;
        if held {
            self.renewed(grant.token, asked, hold_for);
        } else {
            self.lost_slot(n, id, grant.token).await;
        }
        Ok(held)
    }

    async fn release(&self, grant: &Grant, id: &str) -> Result<()> {
        self.forget_lease(grant.token);
        let Some(n) = self.slot_of(grant).await? else { return Ok(()) };
        let now = self.now();
        let keep = ms(RELEASES_KEPT_FOR).max(ms(self.snapshot_max_age).saturating_mul(2));
        self.update_slot(n, |s| {
            if !s.holder.as_ref().is_some_and(|h| h.id == id && h.token == grant.token) {
                return false;
            }
            s.holder = None;
            // Back in service now, even where an older snapshot still shows it DRAINING.
            s.released.retain(|(other, at)| other != id && at.saturating_add(keep) >= now);
            s.released.push((id.to_string(), now));
            let excess = s.released.len().saturating_sub(RELEASES_KEPT);
            s.released.drain(..excess);
            true
        })
        .await
        .map(drop)
    }

    async fn withdraw(&self, request: &SlotRequest) -> Result<()> {
        let remembered = self.memory().tickets.get(&request.cycle).map(|(t, _)| *t);
        let ticket = match remembered {
            Some(t) => Some(t),
            None => self
                .read::<Queued>(&self.queued_key(&request.id), Consistency::Strong)
                .await?
                .filter(|(q, _)| q.cycle == request.cycle)
                .map(|(q, _)| q.ticket),
        };
        let (control, _) = self.control(Consistency::Strong).await?;
        // A grant whose answer was lost is given back.
        if let Some(grant) = self.held_by(&request.id, &request.cycle, &control).await? {
            self.release(&grant, &request.id).await?;
        }
        if let Some(ticket) = ticket {
            self.store
                .commit(&[Self::delete(self.ticket_key(ticket)), Self::delete(self.queued_key(&request.id))])
                .await?;
            // At the head: let the next host go at once.
            self.update_control(|c| {
                let head = c.served + 1 == ticket;
                if head {
                    c.served = ticket;
                }
                head
            })
            .await?;
        }
        self.forget_ticket(&request.cycle);
        Ok(())
    }

    async fn held(&self, id: &str, cycle: &str) -> Result<Option<Grant>> {
        let (control, _) = self.control(Consistency::Strong).await?;
        self.held_by(id, cycle, &control).await
    }

    async fn pause(&self, reason: &str, by: &str) -> Result<Halt> {
        self.pause_roll(reason, by).await.map(|_| Halt::Paused)
    }

    /// Reads only (`check` changes nothing): the pause items decide, the hint is left as it is.
    async fn paused(&self) -> Result<Option<String>> {
        Ok(self.pause_on_record().await?.pause.as_ref().map(items::described))
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}
