//! The pause on record, and the operator's two actions, in items a host's role cannot undo.
//!
//! | key                     | written by                        | holds                                  |
//! |-------------------------|-----------------------------------|----------------------------------------|
//! | `…/pause/N`             | any host or operator, created once | the N-th pause of the group            |
//! | `…/operator/resumed`    | operators only                    | [`Resumed`]: `pause/1` to `pause/{through}` are lifted |
//! | `…/operator/released/T` | operators only                    | [`Released`]: the slot of token T was freed by `fleet release` |
//!
//! The roll is paused while `pause/{through + 1}` exists, whatever it holds. The host's IAM
//! policy lets a host create items under `pause/` but never delete one, and write nothing
//! under `operator/`: a compromised host can pause the roll, never resume it. The control
//! item's `paused` is a hint every host may write, read by waiters at no extra cost; the head
//! grants a slot only in a transaction that checks `operator/resumed` is as it read it and
//! `pause/{through + 1}` absent, so a hint cleared by a peer grants nothing, and a hint no
//! pause backs is cleared by the next host that looks.
//!
//! A slot item is every host's to write (any host may take a free slot), so a peer could
//! empty a held one. The holder finds out at its next renewal, in this process or the next
//! one after a restart or the reboot (until when its last renewal holds is kept in the state
//! directory): its slot is gone while its lease was still valid by its own clock, and no
//! operator's mark for its token and id says `fleet release` freed it. It pauses the roll,
//! naming the slot.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::items::{self, Released, Resumed};
use super::{CONFLICT_RETRIES, Consistency, Expect, FUTURE_TOLERANCE, StoreCoordinator, Write, ms};
use crate::coordination::policy::{Holder, Pause};
use crate::error::{Error, Result};

/// Until when this host's last renewal of a lease holds, by its own wall clock (unix ms):
/// kept in the state directory for the host's next process, across a reboot.
#[derive(Debug, Serialize, Deserialize)]
struct HeldUntil {
    token: u64,
    until: u64,
}

/// The pause state as its items say it.
#[derive(Debug, Clone)]
pub(super) struct OnRecord {
    /// Pauses lifted so far.
    through: u64,
    /// The version of `operator/resumed` read (`None`: no pause was ever lifted).
    version: Option<u64>,
    /// The pause in force, if any.
    pub(super) pause: Option<Pause>,
}

impl StoreCoordinator {
    fn pause_key(&self, n: u64) -> String {
        format!("{}/pause/{n}", self.key)
    }

    fn resumed_key(&self) -> String {
        format!("{}/operator/resumed", self.key)
    }

    fn released_key(&self, token: u64) -> String {
        format!("{}/operator/released/{token}", self.key)
    }

    /// The pause in force as its items say it (two strongly consistent reads). A pause item
    /// that cannot be read still pauses: it exists.
    pub(super) async fn pause_on_record(&self) -> Result<OnRecord> {
        let resumed = self.read::<Resumed>(&self.resumed_key(), Consistency::Strong).await?;
        let (through, version) = resumed.map_or((0, None), |(r, v)| (r.through, Some(v)));
        let key = self.pause_key(through + 1);
        let pause = self.store.load(&key, Consistency::Strong).await?.map(|v| {
            self.parse::<Pause>(&key, &v.body)
                .unwrap_or_else(|e| items::pause(&format!("a pause item that cannot be read: {e}"), "unknown", 0))
        });
        Ok(OnRecord { through, version, pause })
    }

    /// What a grant's transaction checks: no pause was lifted or added since `record` was read.
    pub(super) fn unpaused(&self, record: &OnRecord) -> [Write; 2] {
        [
            Self::check(self.resumed_key(), record.version.map_or(Expect::Absent, Expect::Version)),
            Self::check(self.pause_key(record.through + 1), Expect::Absent),
        ]
    }

    /// The pause in force, the control item's hint brought in line with it: a hint no pause
    /// backs (a peer's, or one written after a resume) is cleared, a missing one is set.
    pub(super) async fn confirmed_pause(&self) -> Result<Option<Pause>> {
        let record = self.pause_on_record().await?;
        self.update_control(|c| {
            if c.paused.is_some() == record.pause.is_some() {
                return false;
            }
            c.paused.clone_from(&record.pause);
            true
        })
        .await?;
        Ok(record.pause)
    }

    /// Pauses the roll: the next pause item, then the hint. False when it was paused already.
    pub(super) async fn pause_roll(&self, reason: &str, by: &str) -> Result<bool> {
        let pause = items::pause(reason, by, self.now());
        for _ in 0..CONFLICT_RETRIES {
            let record = self.pause_on_record().await?;
            if record.pause.is_none()
                && !self.store.save(&Self::put(self.pause_key(record.through + 1), &pause, Expect::Absent)).await?
            {
                // Paused by another meanwhile, resumed, or a grant's check on the item: look again.
                self.back_off().await;
                continue;
            }
            let first = record.pause.is_none();
            let in_force = record.pause.unwrap_or_else(|| pause.clone());
            self.update_control(|c| c.paused.replace(in_force.clone()).is_none()).await?;
            return Ok(first);
        }
        Err(Error::Lease(format!("too many concurrent writers on the pause items of {}", self.key)))
    }

    /// Lifts the pause in force and any pauses created right behind it (`fleet resume`, with
    /// the operator's role); false when the group was not paused.
    pub async fn resume(&self, by: &str) -> Result<bool> {
        /// Pauses lifted at once: a host that created pauses ahead of the next is stopped
        /// by an operator who resumes that many times.
        const LIFTED_AT_ONCE: u64 = 64;
        for _ in 0..CONFLICT_RETRIES {
            let record = self.pause_on_record().await?;
            let mut through = record.through;
            if record.pause.is_some() {
                through += 1;
                while through < record.through + LIFTED_AT_ONCE
                    && self.store.load(&self.pause_key(through + 1), Consistency::Strong).await?.is_some()
                {
                    through += 1;
                }
                let resumed = Resumed { through, by: by.to_string(), at: self.now() };
                let expect = record.version.map_or(Expect::Absent, Expect::Version);
                if !self.store.save(&Self::put(self.resumed_key(), &resumed, expect)).await? {
                    self.back_off().await;
                    continue;
                }
            }
            let mut hinted = false;
            self.update_control(|c| {
                hinted = c.paused.take().is_some();
                hinted
            })
            .await?;
            return Ok(record.pause.is_some() || hinted);
        }
        Err(Error::Lease(format!("too many concurrent writers on {}", self.resumed_key())))
    }

    /// Marks `holder`'s slot as freed by an operator (`fleet release`), so that the holder
    /// does not take it for a theft.
    pub(super) async fn mark_released(&self, holder: &Holder, by: &str) -> Result<()> {
        let mark = Released { id: holder.id.clone(), by: by.to_string(), at: self.now() };
        self.store.save(&Self::put(self.released_key(holder.token), &mark, Expect::Any)).await.map(drop)
    }

    /// The file keeping [`HeldUntil`] beside the watch file (none without one: the simulator).
    fn held_until_file(&self) -> Option<PathBuf> {
        self.watch_file.as_ref().map(|w| w.path.with_file_name("lease-held-until.json"))
    }

    /// Notes a renewal of the lease of `token` asked at `asked` for `hold`, in this process
    /// and for the next one (a failure to write is only said: it only loses a later
    /// process the means to tell a theft).
    pub(super) fn renewed(&self, token: u64, asked: Instant, hold: Duration) {
        self.memory().renewed.insert(token, asked + hold);
        if let Some(path) = self.held_until_file() {
            let until = self.now().saturating_sub(ms(asked.elapsed())).saturating_add(ms(hold));
            let bytes = serde_json::to_vec(&HeldUntil { token, until }).expect("serializes");
            if let Err(e) = crate::atomic_file::replace(&path, &bytes, 0o600) {
                tracing::warn!("cannot keep the lease's validity in {}: {e}", path.display());
            }
        }
    }

    /// Forgets the lease of `token` (given back by this host).
    pub(super) fn forget_lease(&self, token: u64) {
        self.memory().renewed.remove(&token);
        if let Some(path) = self.held_until_file() {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Whether this host's last renewal of `token` still holds: by the monotonic clock in
    /// this process, else by the wall clock as an earlier process kept it.
    fn still_held(&self, token: u64) -> bool {
        if let Some(until) = self.memory().renewed.remove(&token) {
            return Instant::now() < until;
        }
        let kept = self.held_until_file().and_then(|path| crate::journal::read_bytes(&path, 4096).ok().flatten());
        kept.and_then(|bytes| serde_json::from_slice::<HeldUntil>(&bytes).ok())
            .is_some_and(|h| h.token == token && self.now().saturating_add(ms(FUTURE_TOLERANCE)) < h.until)
    }

    /// Called when slot `n` no longer names host `id` as the holder of `token`: if the last
    /// renewal still holds and no operator freed it, a peer emptied or took the slot (no step
    /// of ecs-patchd does that to a valid lease), and the roll is paused. Never an error:
    /// the slot is lost either way, and the caller must hear that.
    pub(super) async fn lost_slot(&self, n: usize, id: &str, token: u64) {
        if let Err(e) = self.pause_for_theft(n, id, token).await {
            tracing::error!("cannot tell whether slot {n} was taken from this host, or pause the roll: {e}");
        }
    }

    async fn pause_for_theft(&self, n: usize, id: &str, token: u64) -> Result<()> {
        let valid = self.still_held(token);
        self.forget_lease(token);
        if !valid {
            return Ok(());
        }
        let mark = self.read::<Released>(&self.released_key(token), Consistency::Strong).await;
        if mark.is_ok_and(|m| m.is_some_and(|(m, _)| m.id == id)) {
            return Ok(());
        }
        tracing::error!(slot = n, token, "the slot this host holds was rewritten by another while its lease was valid");
        let reason = format!(
            "slot {n}, held by {id} (token {token}) with a valid lease, was emptied or taken by a write that is \
             neither its holder's release nor an operator's `fleet release`: find who writes the lease items"
        );
        self.pause_roll(&reason, id).await.map(drop)
    }
}
