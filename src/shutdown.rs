//! Stopping on SIGTERM or SIGINT without ever cutting a package transaction short.
//!
//! Package-manager commands run inside a [`transaction`] guard. Once a stop is
//! [`request`]ed, no new transaction starts (the caller waits forever, so the run ends
//! between two steps, with the journal already written), and [`quiet`] resolves as soon as
//! the transaction in flight, if any, has finished. The CLI races the cycle against
//! `quiet()`: the cycle keeps running until then, so the transaction is awaited, not killed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static CHANGED: Notify = Notify::const_new();

/// Asks the process to stop at the next safe point.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
    CHANGED.notify_waiters();
}

/// True once a stop was requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// True while a package transaction runs.
pub fn in_transaction() -> bool {
    RUNNING.load(Ordering::SeqCst) > 0
}

/// Marks a package transaction as running until the guard is dropped. Once a stop has
/// been requested, never returns: the run ends before the transaction would begin.
pub async fn transaction() -> Transaction {
    if REQUESTED.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    RUNNING.fetch_add(1, Ordering::SeqCst);
    Transaction(())
}

/// A package transaction in flight (see [`transaction`]).
#[must_use]
pub struct Transaction(());

impl Drop for Transaction {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        CHANGED.notify_waiters();
    }
}

/// Resolves once a stop was requested and no package transaction runs.
pub async fn quiet() {
    loop {
        let changed = CHANGED.notified();
        if REQUESTED.load(Ordering::SeqCst) && RUNNING.load(Ordering::SeqCst) == 0 {
            return;
        }
        changed.await;
    }
}
