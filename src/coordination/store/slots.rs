//! The slots: who holds each, the head of the queue taking a free one in one transaction
//! (fencing token, `served`, the slot), and slots whose holder went stale.

use std::time::Duration;

use super::items::{self, Control, Slot, holder_needs};
use super::{
    CONFLICT_RETRIES, Consistency, Expect, GRANT_SPACING, RELEASES_KEPT_FOR, StalePolicy, StoreCoordinator, ms,
};
use crate::coordination::policy::{self, GroupRecord, Holder};
use crate::coordination::{Coordinator, Decision, Grant, SlotRequest};
use crate::ecs::Ecs;
use crate::error::{Error, Result};

impl StoreCoordinator {
    /// Every slot item with its version (`None`: never written).
    pub(super) async fn slots(&self, count: usize) -> Result<Vec<(Slot, Option<u64>)>> {
        let keys: Vec<String> = (0..count).map(|n| self.slot_key(n)).collect();
        let mut slots = Vec::with_capacity(count);
        for (key, stored) in keys.iter().zip(self.store.load_many(&keys, Consistency::Strong).await?) {
            slots.push(match stored {
                None => (Slot::default(), None),
                Some(v) => (self.parse(key, &v.body)?, Some(v.version)),
            });
        }
        Ok(slots)
    }

    /// The policy's view of the slots at `now`. A release stamped by a clock far ahead is
    /// left out: it would count its host back in service against every snapshot for as long
    /// as that clock is ahead.
    pub(super) fn record(&self, slots: &[(Slot, Option<u64>)], now: u64) -> GroupRecord {
        GroupRecord {
            holders: slots.iter().filter_map(|(s, _)| s.holder.clone()).collect(),
            released: slots
                .iter()
                .flat_map(|(s, _)| s.released.iter().cloned())
                .filter(|(_, at)| self.believable(*at, now))
                .collect(),
        }
    }

    /// Changes slot `n` with `change` until the write wins; `change` returns false to leave
    /// it. Answers whether it changed it.
    pub(super) async fn update_slot(&self, n: usize, mut change: impl FnMut(&mut Slot) -> bool) -> Result<bool> {
        let key = self.slot_key(n);
        for _ in 0..CONFLICT_RETRIES {
            let (mut slot, expect) = match self.read::<Slot>(&key, Consistency::Strong).await? {
                Some((slot, version)) => (slot, Expect::Version(version)),
                None => (Slot::default(), Expect::Absent),
            };
            if !change(&mut slot) {
                return Ok(false);
            }
            if self.store.save(&Self::put(key.clone(), &slot, expect)).await? {
                return Ok(true);
            }
            self.back_off().await;
        }
        Err(Error::Lease(format!("too many concurrent writers on {key}")))
    }

    /// The slot a grant fills (looked up by token for grants that did not record it).
    pub(super) async fn slot_of(&self, grant: &Grant) -> Result<Option<usize>> {
        if grant.slot.is_some() {
            return Ok(grant.slot);
        }
        let (control, _) = self.control(Consistency::Strong).await?;
        let slots = self.slots(control.slots).await?;
        Ok(slots.iter().position(|(s, _)| s.holder.as_ref().is_some_and(|h| h.token == grant.token)))
    }

    /// Asks for a slot as the head of the queue (ticket `ticket`); `None`: something moved
    /// meanwhile, look again at once.
    pub(super) async fn take_slot(
        &self,
        request: &SlotRequest,
        ticket: u64,
        ecs: &dyn Ecs,
    ) -> Result<Option<Decision>> {
        let (control, version) = self.control(Consistency::Strong).await?;
        let on_record = self.pause_on_record().await?;
        if control.paused.is_some() || on_record.pause.is_some() {
            // The hint and the pause items disagree, or a pause is in force: the items decide.
            return Ok(self.confirmed_pause().await?.map(|p| Decision::Paused(items::described(&p))));
        }
        if control.served + 1 != ticket {
            return Ok(None);
        }
        // At most the spacing, and not for a grant time from a clock far ahead (another
        // host's clock): wait here, read again.
        let now = self.now();
        let last_grant_at = if self.believable(control.last_grant_at, now) { control.last_grant_at } else { 0 };
        let wait = last_grant_at.saturating_add(ms(GRANT_SPACING)).saturating_sub(now);
        if wait > 0 {
            self.clock.sleep(Duration::from_millis(wait.min(ms(GRANT_SPACING)))).await;
            return Ok(None);
        }
        let slots = self.slots(control.slots).await?;
        if self.handle_stale(&slots, &request.id, ecs).await? {
            return Ok(None);
        }
        let record = self.record(&slots, now);
        // Only a host within reach of a free slot looks at the cluster.
        let budget = self.policy.max_unavailable.resolve(control.cluster_size.max(1));
        if record.holders.len() >= budget && control.cluster_size > 0 {
            return Ok(Some(Decision::Wait {
                reason: format!("first in the queue, all {budget} slot(s) held"),
                pace: self.near_pace(),
            }));
        }
        // A host whose tasks need a port, a GPU or an instance of their own decides on a look
        // taken since the last slot was given back: the tasks of that host went somewhere.
        let placement = policy::wants_placement(request);
        let not_before = match record.released.iter().map(|(_, at)| *at).max() {
            Some(released) if placement => control.snapshot_not_before.max(released),
            _ => control.snapshot_not_before,
        };
        let snapshot = self.fresh_snapshot(ecs, not_before, placement).await?;
        if policy::free_slots(&record, &snapshot, &self.policy, &request.id) == 0 {
            return Ok(Some(Decision::Wait {
                reason: "first in the queue, no slot free".into(),
                pace: self.near_pace(),
            }));
        }
        if let Err(reason) = policy::admit(&record, &snapshot, &self.policy, request) {
            return Ok(Some(Decision::Wait { reason, pace: self.near_pace() }));
        }
        let me = snapshot.instances.iter().find(|i| i.id == request.id).expect("admit() found it");
        let budget = self.policy.max_unavailable.resolve(snapshot.instances.len().max(1));
        let Some(n) = slots.iter().position(|(s, _)| s.holder.is_none()).filter(|n| *n < budget).or_else(|| {
            // Every slot item in use is held: a new one, within the budget.
            (control.slots < budget).then_some(control.slots)
        }) else {
            return Ok(Some(Decision::Wait {
                reason: "first in the queue, no slot item free".into(),
                pace: self.near_pace(),
            }));
        };
        // Only the head asks CloudWatch, only when a slot is free, and last, right before
        // the grant.
        if let Some(reason) = crate::alarms::gate(self.alarms.as_deref()).await {
            return Ok(Some(Decision::Wait { reason, pace: self.near_pace() }));
        }
        let now = self.now();
        let token = control.next_token.max(1);
        let (mut slot, slot_version) = slots.get(n).cloned().unwrap_or_default();
        slot.released.retain(|(_, at)| at.saturating_add(ms(RELEASES_KEPT_FOR)) >= now);
        slot.holder = Some(Holder {
            id: request.id.clone(),
            arn: request.arn.clone(),
            token,
            cycle: request.cycle.clone(),
            step: "waiting-for-slot".into(),
            availability_zone: me.availability_zone.clone(),
            allocated: me.registered.minus(me.remaining),
            stays: request.stays.unwrap_or_default(),
            acquired_at: now,
            renewed_at: now,
            expires_at: now.saturating_add(ms(self.ttl)),
            hold_ms: ms(self.ttl),
            needs: holder_needs(&request.needs),
        });
        let next = Control {
            last_grant_at: now,
            served: ticket,
            next_token: token + 1,
            slots: control.slots.max(n + 1),
            cluster_size: snapshot.instances.len(),
            ..control
        };
        let asked = tokio::time::Instant::now();
        // Granted only if no pause was added or lifted since it was read: the control item's
        // hint is every host's to write, the pause items are not.
        let [resumed, next_pause] = self.unpaused(&on_record);
        let granted = self
            .store
            .commit(&[
                Self::put(self.key.clone(), &next, version.map_or(Expect::Absent, Expect::Version)),
                Self::put(self.slot_key(n), &slot, slot_version.map_or(Expect::Absent, Expect::Version)),
                Self::delete(self.ticket_key(ticket)),
                Self::delete(self.queued_key(&request.id)),
                resumed,
                next_pause,
            ])
            .await?;
        if !granted {
            self.back_off().await;
            return Ok(None);
        }
        self.renewed(token, asked, self.ttl);
        self.forget_ticket(&request.cycle);
        Ok(Some(Decision::Granted(Grant {
            group: self.group.clone(),
            token,
            slot: Some(n),
            services: Vec::new(),
            ports: None,
        })))
    }

    /// Deals with holders whose lease expired; true when anything changed.
    ///
    /// A lease expires when this process has seen its slot item unchanged (no renewal) for
    /// longer than the holder's hold, timed on this process's monotonic clock
    /// ([`super::watch`]). The holder's own timestamps are never compared with this host's
    /// clock: a holder whose clock runs 20 minutes slow would lose its slot as it takes it,
    /// one whose clock runs 30 days fast would keep it 30 days after it died.
    async fn handle_stale(&self, slots: &[(Slot, Option<u64>)], seen_by: &str, ecs: &dyn Ecs) -> Result<bool> {
        let now = self.now();
        let by = format!("{seen_by}, which found the stale lease");
        let mut changed = false;
        let mut seen_anew = false;
        for (n, (slot, version)) in slots.iter().enumerate() {
            let Some(holder) = slot.holder.as_ref() else { continue };
            let unchanged = self.memory().slots.unchanged_for(n as u64, version.unwrap_or_default());
            seen_anew |= unchanged.is_zero();
            if unchanged <= holder.hold() {
                continue;
            }
            let silent = humantime::format_duration(Duration::from_secs(unchanged.as_secs()));
            let dead = match self.on_stale {
                StalePolicy::Pause => None,
                StalePolicy::Reclaim => match ecs.describe(&holder.arn).await? {
                    None => Some("no longer registered"),
                    Some(i) if i.status == "INACTIVE" => Some("INACTIVE"),
                    Some(i) if !i.agent_connected => Some("disconnected"),
                    Some(_) => None,
                },
            };
            let reason = match (dead, self.on_stale) {
                (Some(why), _) => {
                    tracing::warn!(holder = %holder.id, "reclaiming a stale slot: its instance is {why}");
                    // Only the version judged stale: a renewal that lands meanwhile wins.
                    let freed = Slot { holder: None, ..slot.clone() };
                    let expect = version.map_or(Expect::Absent, Expect::Version);
                    if self.store.save(&Self::put(self.slot_key(n), &freed, expect)).await? {
                        self.update_control(|c| {
                            c.snapshot_not_before = now;
                            true
                        })
                        .await?;
                    }
                    changed = true;
                    continue;
                }
                (None, StalePolicy::Reclaim) => format!(
                    "{}'s lease expired at step {} (not renewed for {silent}) but its instance is still connected; \
                     check it, then resume",
                    holder.id, holder.step
                ),
                (None, StalePolicy::Pause) => {
                    format!(
                        "{}'s lease expired at step {} without finishing (not renewed for {silent}; it never came back?)",
                        holder.id, holder.step
                    )
                }
            };
            self.pause_roll(&reason, &by).await?;
            changed = true;
        }
        if seen_anew && let Some(file) = &self.watch_file {
            file.save(&self.memory().slots);
        }
        Ok(changed)
    }

    /// Gives back the slots `request`'s host holds for a cycle other than `request`'s: one
    /// host runs one cycle at a time (its journal's lock), so such a slot was taken by a
    /// cycle whose journal was lost before it marked its drain (a wiped or restored disk).
    /// Kept, it would count against the budget, and this host would wait behind itself.
    /// A slot whose cycle still drains the instance (its mark is on it: a drain left on
    /// purpose, or one the next run takes up) is kept, and nothing starts.
    pub(super) async fn give_back_leftovers(
        &self,
        request: &SlotRequest,
        control: &Control,
        ecs: &dyn Ecs,
    ) -> Result<()> {
        let slots = self.slots(control.slots).await?;
        for (n, (slot, _)) in slots.iter().enumerate() {
            let Some(h) = slot.holder.as_ref().filter(|h| h.id == request.id && h.cycle != request.cycle) else {
                continue;
            };
            if ecs.describe(&h.arn).await?.is_some_and(|i| i.is_drained_by(&h.cycle)) {
                return Err(Error::Deferred(format!(
                    "this host holds a slot for cycle {}, which still drains it: nothing new starts beside it",
                    h.cycle
                )));
            }
            tracing::warn!(
                "giving back the slot this host took for cycle {}, which its journal no longer knows",
                h.cycle
            );
            let grant =
                Grant { group: self.group.clone(), token: h.token, slot: Some(n), services: Vec::new(), ports: None };
            self.release(&grant, &request.id).await?;
        }
        Ok(())
    }

    /// The slot host `id` holds for cycle `cycle` (a grant whose answer was lost).
    pub(super) async fn held_by(&self, id: &str, cycle: &str, control: &Control) -> Result<Option<Grant>> {
        let slots = self.slots(control.slots).await?;
        Ok(slots.iter().enumerate().find_map(|(n, (s, _))| {
            s.holder.as_ref().filter(|h| h.id == id && h.cycle == cycle).map(|h| Grant {
                group: self.group.clone(),
                token: h.token,
                slot: Some(n),
                services: Vec::new(),
                ports: None,
            })
        }))
    }
}
