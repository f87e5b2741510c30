//! The shared cluster snapshot the capacity guard decides with: stored in parts, refreshed
//! ahead of need by a waiter one to three budgets back, and cached by each process.

use std::sync::Arc;

use super::items::{SnapshotHead, SnapshotPart, pack, unpack};
use super::{Consistency, Expect, FUTURE_TOLERANCE, PART_SIZE, StoreCoordinator, ms};
use crate::coordination::policy::{InstanceView, Snapshot};
use crate::coordination::{SNAPSHOT_CALL_SPACING, snapshot};
use crate::ecs::Ecs;
use crate::error::Result;

impl StoreCoordinator {
    /// The snapshot to decide with: ours if young enough, else the shared one, else a fresh
    /// look at the cluster (shared for the hosts after us). Times are other hosts' clocks:
    /// a snapshot from the future is taken as old, a `not_before` from the future as none.
    /// With `placement`, only a snapshot that shows the peers' ports and GPUs will do: the
    /// shared one does not (it keeps CPU and memory), so that is our own look.
    pub(super) async fn fresh_snapshot(
        &self,
        ecs: &dyn Ecs,
        not_before: u64,
        placement: bool,
    ) -> Result<Arc<Snapshot>> {
        let now = self.now();
        let not_before = if self.believable(not_before, now) { not_before } else { 0 };
        let usable = |s: &Snapshot| {
            self.believable(s.taken_at, now)
                && s.taken_at >= not_before
                && s.taken_at.saturating_add(self.max_age(s.instances.len())) >= now
                && (!placement || s.instances.iter().all(|i| i.placement.is_some()))
        };
        if let Some(s) = self.memory().snapshot.clone().filter(|s| usable(s)) {
            return Ok(s);
        }
        if let Some(stored) = self.stored_snapshot().await?.filter(|s| usable(s)) {
            let stored = Arc::new(stored);
            self.memory().snapshot = Some(Arc::clone(&stored));
            return Ok(stored);
        }
        let fresh = Arc::new(snapshot(ecs, self.ec2.as_deref(), self.clock.now(), SNAPSHOT_CALL_SPACING).await?);
        // The stored copy is a cache: failing to store it only costs the next head a look.
        if let Err(e) = self.store_snapshot(&fresh).await {
            tracing::warn!("cannot store the cluster snapshot: {e}");
        }
        self.memory().snapshot = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// Whether `at`, another host's unix ms, is no further ahead of `now` (ours) than clocks
    /// kept by NTP can be.
    pub(super) fn believable(&self, at: u64, now: u64) -> bool {
        at <= now.saturating_add(ms(FUTURE_TOLERANCE))
    }

    /// How old a snapshot of `instances` instances may be when the head decides with it
    /// (ms): `snapshot_max_age`, or twice the refresh interval of a large cluster.
    fn max_age(&self, instances: usize) -> u64 {
        ms(self.snapshot_max_age).max(2 * Self::refresh_interval(instances))
    }

    /// How often a snapshot of `instances` instances is refreshed ahead of the head (ms).
    /// A look costs two ECS calls per 100 instances, [`SNAPSHOT_CALL_SPACING`] apart:
    /// four spacings per call between looks keep looks to a quarter of the time and a sixth
    /// of a read a second.
    fn refresh_interval(instances: usize) -> u64 {
        2 * instances.div_ceil(100) as u64 * 4 * ms(SNAPSHOT_CALL_SPACING)
    }

    /// Refreshes the shared snapshot before it is too old, so that the head of the queue
    /// finds it fresh and never stops to look at a large cluster itself. Done by a waiter
    /// far enough back not to become the head meanwhile; one at a time (a claim on the
    /// snapshot's head item).
    pub(super) async fn refresh_ahead(&self, ecs: &dyn Ecs) -> Result<()> {
        let key = self.snapshot_key(None);
        let Some((head, version)) = self.read::<SnapshotHead>(&key, Consistency::Eventual).await? else {
            return Ok(());
        };
        let now = self.now();
        let every = Self::refresh_interval(head.instances).max(ms(self.snapshot_max_age) / 2);
        // A claim or a snapshot from a clock far ahead would keep everyone from refreshing.
        let young = self.believable(head.taken_at, now) && head.taken_at.saturating_add(every) > now;
        let claimed = head.refreshing_until > now && self.believable(head.refreshing_until, now.saturating_add(every));
        if young || claimed {
            return Ok(());
        }
        let claim = SnapshotHead { refreshing_until: now.saturating_add(every), ..head };
        if !self.store.save(&Self::put(key, &claim, Expect::Version(version))).await? {
            return Ok(());
        }
        let fresh = snapshot(ecs, self.ec2.as_deref(), self.clock.now(), SNAPSHOT_CALL_SPACING).await?;
        self.store_snapshot(&fresh).await?;
        self.memory().snapshot = Some(Arc::new(fresh));
        Ok(())
    }

    /// The shared snapshot, if every part of it is there.
    async fn stored_snapshot(&self) -> Result<Option<Snapshot>> {
        let Some((head, _)) = self.read::<SnapshotHead>(&self.snapshot_key(None), Consistency::Eventual).await? else {
            return Ok(None);
        };
        let keys: Vec<String> = (0..head.parts).map(|p| self.snapshot_key(Some(p))).collect();
        let mut instances = Vec::with_capacity(head.instances);
        for (key, part) in keys.iter().zip(self.store.load_many(&keys, Consistency::Eventual).await?) {
            // A part missing, or of another look (being rewritten): no shared snapshot now.
            let Some(part) = part else { return Ok(None) };
            let part: SnapshotPart = self.parse(key, &part.body)?;
            if part.taken_at != head.taken_at {
                return Ok(None);
            }
            instances.extend(part.instances.into_iter().map(unpack));
        }
        // Parts that do not add up to the head's count are of no look (a forged or torn set).
        Ok((instances.len() == head.instances).then_some(Snapshot { taken_at: head.taken_at, instances }))
    }

    /// Stores `snapshot`: the parts first, then the head that makes them valid.
    async fn store_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        let chunks: Vec<&[InstanceView]> = snapshot.instances.chunks(PART_SIZE).collect();
        for (p, chunk) in chunks.iter().enumerate() {
            let part = SnapshotPart { taken_at: snapshot.taken_at, instances: chunk.iter().map(pack).collect() };
            self.store.save(&Self::put(self.snapshot_key(Some(p)), &part, Expect::Any)).await?;
        }
        let head = SnapshotHead {
            taken_at: snapshot.taken_at,
            parts: chunks.len(),
            instances: snapshot.instances.len(),
            refreshing_until: 0,
        };
        self.store.save(&Self::put(self.snapshot_key(None), &head, Expect::Any)).await?;
        Ok(())
    }
}
