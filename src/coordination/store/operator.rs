//! What `fleet` serves operators: the group's view and releasing a host's slot (resuming a
//! paused roll is in `pauses.rs`).

use std::time::Duration;

use serde::Serialize;

use super::items::{Control, Slot, SnapshotHead, Ticket};
use super::{Consistency, FUTURE_TOLERANCE, StoreCoordinator, ms};
use crate::coordination::policy::{Holder, Pause};
use crate::error::{Error, Result};
use crate::foreign;

/// What `fleet status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    /// The control item's key.
    pub key: String,
    /// The control item (empty when none exists yet; `None` when it is unreadable).
    pub control: Option<Control>,
    /// Hosts holding a slot.
    pub holders: Vec<Holder>,
    /// Tickets taken and not yet served: the hosts waiting, and any that stopped asking and
    /// are not skipped yet.
    pub waiting: u64,
    /// The first of them, in order.
    pub next_in_line: Vec<Ticket>,
    /// Items that were refused or could not be read, one line each: the rest is shown.
    pub unreadable: Vec<String>,
    /// The pause in force as the pause items say it (the control item's `paused` is a
    /// hint any host may write).
    pub pause: Option<Pause>,
    /// Whether the pause items could be read: when not, `pause` says nothing (see
    /// `unreadable`).
    pub pause_read: bool,
    /// When the shared snapshot was taken (unix ms) and how many instances it shows.
    pub snapshot: Option<(u64, usize)>,
    /// What keeps the next host in the queue from taking a slot, and why, one line each
    /// (empty: nothing; the head takes a slot at its next look).
    pub blocked_by: Vec<String>,
}

impl StoreCoordinator {
    /// The control item, the slots and the queue, for `fleet status`.
    /// An item that cannot be read (forged, corrupt, or the store refusing) is one line of
    /// [`GroupView::unreadable`], and the rest is still shown.
    pub async fn view(&self) -> Result<GroupView> {
        let mut unreadable = Vec::new();
        let control = aside(self.control(Consistency::Strong).await, &mut unreadable)?.map(|(c, _)| c);
        let on_record = aside(self.pause_on_record().await, &mut unreadable)?;
        let pause_read = on_record.is_some();
        let pause = on_record.and_then(|r| r.pause);
        let mut holders = Vec::new();
        if let Some(control) = &control {
            let keys: Vec<String> = (0..control.slots).map(|n| self.slot_key(n)).collect();
            for (key, stored) in keys.iter().zip(self.store.load_many(&keys, Consistency::Strong).await?) {
                let slot = stored.map(|v| self.parse::<Slot>(key, &v.body)).transpose();
                holders.extend(aside(slot, &mut unreadable)?.flatten().and_then(|s| s.holder));
            }
        }
        // Without the control item, where the queue starts is unknown: no queue is shown.
        let served = control.as_ref().map(|c| c.served);
        let taken = self.store.load(&self.tickets_key(), Consistency::Strong).await?.map_or(0, |v| v.version);
        let waiting = served.map_or(0, |served| taken.saturating_sub(served));
        let first = served.unwrap_or_default();
        let keys: Vec<String> = (1..=waiting.min(10)).map(|d| self.ticket_key(first + d)).collect();
        let mut next_in_line = Vec::new();
        for (key, stored) in keys.iter().zip(self.store.load_many(&keys, Consistency::Eventual).await?) {
            if let Some(v) = stored {
                next_in_line.extend(aside(self.parse::<Ticket>(key, &v.body), &mut unreadable)?);
            }
        }
        let head = self.read::<SnapshotHead>(&self.snapshot_key(None), Consistency::Eventual).await;
        let head = aside(head, &mut unreadable)?.flatten();
        Ok(GroupView {
            key: self.key.clone(),
            blocked_by: control.as_ref().map(|c| self.blockers(c, pause.as_ref(), &holders)).unwrap_or_default(),
            pause,
            pause_read,
            holders,
            control,
            waiting,
            next_in_line,
            unreadable,
            snapshot: head.map(|(h, _)| (h.taken_at, h.instances)),
        })
    }

    /// Who keeps the queue waiting and why: the pause, and the holders when every slot is
    /// held, each with what its own clock says of its lease next to this host's clock.
    fn blockers(&self, control: &Control, pause: Option<&Pause>, holders: &[Holder]) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(p) = pause {
            lines.push(format!("the roll is paused by {}: {}", foreign::shown(&p.by), foreign::shown(&p.reason)));
        }
        let budget = self.policy.max_unavailable.resolve(control.cluster_size.max(1));
        if holders.len() < budget {
            return lines;
        }
        let now = self.now();
        for h in holders {
            let hold = whole_seconds(h.hold());
            let clock = if h.renewed_at > now.saturating_add(ms(FUTURE_TOLERANCE)) {
                format!(
                    "; its clock runs at least {} ahead of this host's",
                    whole_seconds(Duration::from_millis(h.renewed_at - now))
                )
            } else if now.saturating_sub(h.renewed_at) > ms(h.hold()).saturating_add(ms(FUTURE_TOLERANCE)) {
                format!(
                    "; its last renewal is {} old by its clock, longer than its hold: it stopped, or its clock runs behind",
                    whole_seconds(Duration::from_millis(now - h.renewed_at))
                )
            } else {
                String::new()
            };
            lines.push(format!(
                "{} holds one of the {budget} slot(s) at step {} (token {}); its lease lapses once no renewal is seen for \
                 {hold}, timed by the waiting hosts' own clocks{clock}",
                foreign::shown(&h.id),
                foreign::shown(&h.step),
                h.token
            ));
        }
        lines
    }

    /// Frees the slot of `id` whatever its token (`fleet release`, with the operator's role,
    /// `by`); false when it held none. The mark goes first, so that the holder never takes
    /// the freed slot for a theft.
    pub async fn release_holder(&self, id: &str, by: &str) -> Result<bool> {
        let (control, _) = self.control(Consistency::Strong).await?;
        let slots = self.slots(control.slots).await?;
        let mut held = false;
        for (n, holder) in
            slots.iter().enumerate().filter_map(|(n, (s, _))| s.holder.as_ref().filter(|h| h.id == id).map(|h| (n, h)))
        {
            self.mark_released(holder, by).await?;
            held |= self
                .update_slot(n, |s| {
                    // Only the grant marked: one given meanwhile is not this release's.
                    let ours = s.holder.as_ref().is_some_and(|h| h.id == id && h.token == holder.token);
                    if ours {
                        s.holder = None;
                    }
                    ours
                })
                .await?;
        }
        Ok(held)
    }
}

/// `result`'s value, or `None` with the refusal or the store's error noted in `unreadable`
/// (any other error is passed on).
fn aside<T>(result: Result<T>, unreadable: &mut Vec<String>) -> Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(Error::Config(why) | Error::Lease(why)) => {
            unreadable.push(why);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `d` to the second, for people.
fn whole_seconds(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}
