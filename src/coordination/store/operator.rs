//! What `fleet` serves operators: the group's view, resuming a paused roll, and releasing a
//! host's slot.

use serde::Serialize;

use super::items::{Control, SnapshotHead, Ticket};
use super::{Consistency, StoreCoordinator};
use crate::coordination::policy::Holder;
use crate::error::Result;

/// What `fleet status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    /// The control item's key.
    pub key: String,
    /// The control item (empty when none exists yet).
    pub control: Control,
    /// Hosts holding a slot.
    pub holders: Vec<Holder>,
    /// Tickets taken and not yet served: the hosts waiting, and any that stopped asking and
    /// are not skipped yet.
    pub waiting: u64,
    /// The first of them, in order.
    pub next_in_line: Vec<Ticket>,
    /// When the shared snapshot was taken (unix ms) and how many instances it shows.
    pub snapshot: Option<(u64, usize)>,
}

impl StoreCoordinator {
    /// The control item, the slots and the queue, for `fleet status`.
    pub async fn view(&self) -> Result<GroupView> {
        let (control, _) = self.control(Consistency::Strong).await?;
        let slots = self.slots(control.slots).await?;
        let taken = self.store.load(&self.tickets_key(), Consistency::Strong).await?.map_or(0, |v| v.version);
        let waiting = taken.saturating_sub(control.served);
        let keys: Vec<String> = (1..=waiting.min(10)).map(|d| self.ticket_key(control.served + d)).collect();
        let mut next_in_line = Vec::new();
        for (key, stored) in keys.iter().zip(self.store.load_many(&keys, Consistency::Eventual).await?) {
            if let Some(v) = stored {
                next_in_line.push(self.parse(key, &v.body)?);
            }
        }
        let head = self.read::<SnapshotHead>(&self.snapshot_key(None), Consistency::Eventual).await?;
        Ok(GroupView {
            key: self.key.clone(),
            holders: slots.into_iter().filter_map(|(s, _)| s.holder).collect(),
            control,
            waiting,
            next_in_line,
            snapshot: head.map(|(h, _)| (h.taken_at, h.instances)),
        })
    }

    /// Lifts a pause (`fleet resume`); false when the group was not paused.
    pub async fn resume(&self) -> Result<bool> {
        let mut was = false;
        self.update_control(|c| {
            was = c.paused.take().is_some();
            was
        })
        .await?;
        Ok(was)
    }

    /// Frees the slot of `id` whatever its token (`fleet release`); false when it held none.
    pub async fn release_holder(&self, id: &str) -> Result<bool> {
        let (control, _) = self.control(Consistency::Strong).await?;
        let slots = self.slots(control.slots).await?;
        let mut held = false;
        for n in
            slots.iter().enumerate().filter(|(_, (s, _))| s.holder.as_ref().is_some_and(|h| h.id == id)).map(|(n, _)| n)
        {
            held |= self
                .update_slot(n, |s| {
                    let ours = s.holder.as_ref().is_some_and(|h| h.id == id);
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
