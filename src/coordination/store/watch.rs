//! How long this process has seen another host's item unchanged, timed on its own monotonic
//! clock: the one age of a lease or a ticket that does not depend on the writer's clock.
//!
//! A holder renews its slot (and a waiter its ticket) by writing the item again, which
//! raises the item's version: a counter every host reads alike. A reader that sees the same
//! version for longer than the holder's hold has seen no renewal for that long, whatever
//! either clock says. A reader that starts watching (a restart, a new head of the queue)
//! waits one whole hold before it judges: a lease is never taken early.

use std::collections::BTreeMap;
use std::time::Duration;

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
}
