//! How long this process has seen another host's item unchanged, timed on its own monotonic
//! clock: the one age of a lease or a ticket that does not depend on the writer's clock.
//!
//! A holder renews its slot (and a waiter its ticket) by writing the item again, which
//! raises the item's version: a counter every host reads alike. A reader that sees the same
//! version for longer than the holder's hold has seen no renewal for that long, whatever
//! either clock says. A reader that starts watching (a restart, a new head of the queue)
//! waits one whole hold before it judges: a lease is never taken early.
//!
//! What a process watched is kept in a [`WatchFile`] for the host's next process in the same
//! boot (the monotonic clock is the kernel's, counted from the boot): a daemon restarted, or
//! a run after a window closed, goes on watching instead of starting over.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Items of one kind (slots, tickets), by number: the version last seen, and since when.
#[derive(Debug, Default)]
pub(super) struct Watch {
    seen: BTreeMap<u64, (u64, Instant)>,
}

impl Watch {
    /// How long item `n` has been at `version`, as far as this process has seen (zero the
    /// first time it sees that version).
    pub(super) fn unchanged_for(&mut self, n: u64, version: u64) -> Duration {
        let now = Instant::now();
        match self.seen.get(&n) {
            Some((seen, since)) if *seen == version => now.saturating_duration_since(*since),
            _ => {
                self.seen.insert(n, (version, now));
                Duration::ZERO
            }
        }
    }

    /// Forgets the items numbered below `n` (tickets already served).
    pub(super) fn forget_below(&mut self, n: u64) {
        self.seen = self.seen.split_off(&n);
    }

    /// The items as kept on disk: number, version, and when first seen (ms of the kernel's
    /// monotonic clock, `now` being its reading at this instant).
    fn saved(&self, now: u64) -> Vec<(u64, u64, u64)> {
        self.seen
            .iter()
            .map(|(n, (version, since))| {
                let age = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
                (*n, *version, now.saturating_sub(age))
            })
            .collect()
    }

    /// The items kept on disk (see [`Watch::saved`]), at most [`KEPT`] of them.
    fn restored(saved: &[(u64, u64, u64)], now: u64) -> Self {
        let at = Instant::now();
        let seen = saved
            .iter()
            .take(KEPT)
            .filter_map(|(n, version, first)| {
                let age = Duration::from_millis(now.checked_sub(*first)?);
                Some((*n, (*version, at.checked_sub(age)?)))
            })
            .collect();
        Self { seen }
    }
}

/// The most items a watch file holds (slots of one group: a budget's worth).
const KEPT: usize = 10_000;

/// Where this host keeps what it watched, with the boot it was watched in.
#[derive(Debug, Clone)]
pub struct WatchFile {
    /// The file (in the state directory).
    pub path: PathBuf,
    /// The boot id: a file from another boot is not read (the monotonic clock restarted).
    pub boot_id: String,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    boot_id: String,
    slots: Vec<(u64, u64, u64)>,
}

impl WatchFile {
    /// The slots watched in this boot by an earlier process (none if unreadable or from
    /// another boot: the watch starts over, which only delays a judgement).
    pub(super) fn load(&self) -> Watch {
        let saved = crate::journal::read_bytes(&self.path, 1 << 20)
            .ok()
            .flatten()
            .and_then(|bytes| serde_json::from_slice::<Saved>(&bytes).ok())
            .filter(|s| s.boot_id == self.boot_id);
        saved.map_or_else(Watch::default, |s| Watch::restored(&s.slots, monotonic_ms()))
    }

    /// Keeps `slots` for the next process (a cache: failing to write it is only said).
    pub(super) fn save(&self, slots: &Watch) {
        let saved = Saved { boot_id: self.boot_id.clone(), slots: slots.saved(monotonic_ms()) };
        let bytes = serde_json::to_vec(&saved).expect("the watch serializes");
        if let Err(e) = crate::atomic_file::replace(&self.path, &bytes, 0o600) {
            tracing::warn!("cannot keep the lease watch in {}: {e}", self.path.display());
        }
    }
}

/// The kernel's monotonic clock (the one `Instant` reads), in ms since the boot.
fn monotonic_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0).saturating_mul(1000)
            + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000_000
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn an_item_ages_only_while_its_version_stays() {
        let mut watch = Watch::default();
        assert_eq!(watch.unchanged_for(1, 7), Duration::ZERO, "first seen");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(watch.unchanged_for(1, 7), Duration::from_secs(5));
        assert_eq!(watch.unchanged_for(1, 8), Duration::ZERO, "renewed: watched afresh");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(watch.unchanged_for(1, 8), Duration::from_secs(2));
        watch.unchanged_for(3, 1);
        watch.forget_below(2);
        assert_eq!(watch.seen.keys().copied().collect::<Vec<_>>(), vec![3], "served tickets forgotten");
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_watch_is_kept_for_the_next_process_of_the_same_boot_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = |boot: &str| WatchFile { path: dir.path().join("watched.json"), boot_id: boot.into() };
        let mut watch = Watch::default();
        watch.unchanged_for(0, 4);
        tokio::time::advance(Duration::from_secs(40)).await;
        file("boot-1").save(&watch);
        tokio::time::advance(Duration::from_secs(5)).await;
        let mut again = file("boot-1").load();
        // 40 s before the save; the 5 s after it are the process's own (virtual here).
        let seen = again.unchanged_for(0, 4);
        assert!((Duration::from_secs(40)..Duration::from_secs(41)).contains(&seen), "{seen:?}");
        assert_eq!(file("boot-2").load().unchanged_for(0, 4), Duration::ZERO, "another boot starts over");
        std::fs::write(dir.path().join("watched.json"), b"\x00not json").unwrap();
        assert_eq!(file("boot-1").load().unchanged_for(0, 4), Duration::ZERO, "an unreadable file starts over");
    }
}
