//! The server's shutdown signal, and the count of open connections it waits for.
//!
//! Every session waits for the signal for its whole life, so the waiting future is part of every
//! idle connection's memory: [`Stopping`] is four words (a general-purpose channel's equivalent
//! is several times larger), and polling it again with the same waker takes no lock.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

/// Raised once, by [`trigger`](Self::trigger); waited for by any number of [`Stopping`]s.
#[derive(Debug, Default)]
pub(crate) struct Shutdown {
    raised: AtomicBool,
    /// The wakers of the futures waiting, in slots that are reused.
    waiters: Mutex<Waiters>,
    /// Connections still open (see [`OpenGuard`]).
    open: AtomicUsize,
    /// Woken when `open` drops to zero.
    all_closed: Notify,
}

#[derive(Debug, Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Shutdown {
    /// Raise the signal: every [`Stopping`] resolves.
    pub(crate) fn trigger(&self) {
        self.raised.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            waiters.slots.iter_mut().filter_map(Option::take).collect()
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// A future that resolves once the signal is raised.
    pub(crate) fn stopping(&self) -> Stopping<'_> {
        Stopping {
            shutdown: self,
            slot: NO_SLOT,
            registered: None,
        }
    }

    /// Count a connection as open until the guard is dropped.
    #[cfg(test)]
    pub(crate) fn open_guard(&self) -> OpenGuard<&Self> {
        OpenGuard::new(self)
    }

    /// How many connections are open.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Wait until no connection is open.
    pub(crate) async fn all_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a close between the two is not missed.
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl AsRef<Shutdown> for Shutdown {
    fn as_ref(&self) -> &Shutdown {
        self
    }
}

/// Counts one open connection of the [`Shutdown`] that `T` leads to, until dropped.
///
/// The guard owns `T` (e.g. the server that holds the `Shutdown`): a connection's task keeps
/// one word for both, where the owner and a guard borrowing from it would take two.
#[derive(Debug)]
pub(crate) struct OpenGuard<T: AsRef<Shutdown>> {
    owner: T,
}

impl<T: AsRef<Shutdown>> OpenGuard<T> {
    /// Count one more open connection.
    pub(crate) fn new(owner: T) -> Self {
        owner.as_ref().open.fetch_add(1, Ordering::SeqCst);
        OpenGuard { owner }
    }

    /// What the guard owns.
    pub(crate) fn owner(&self) -> &T {
        &self.owner
    }
}

impl<T: AsRef<Shutdown>> Drop for OpenGuard<T> {
    fn drop(&mut self) {
        let shutdown = self.owner.as_ref();
        if shutdown.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            shutdown.all_closed.notify_waiters();
        }
    }
}

/// [`Stopping::slot`] before the first poll: no index, since a `Vec` holds at most `isize::MAX`
/// elements.
const NO_SLOT: usize = usize::MAX;

/// Resolves once [`Shutdown::trigger`] was called.
#[derive(Debug)]
pub(crate) struct Stopping<'a> {
    shutdown: &'a Shutdown,
    /// This future's slot in the waiter list once polled, else [`NO_SLOT`] (one word where an
    /// `Option<usize>` takes two).
    slot: usize,
    /// The waker stored in that slot: a poll with the same waker needs no lock.
    registered: Option<Waker>,
}

impl Future for Stopping<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.shutdown.raised.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        if this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        {
            let mut waiters = this
                .shutdown
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let waker = Some(cx.waker().clone());
            match this.slot {
                NO_SLOT => {
                    let slot = match waiters.free.pop() {
                        Some(slot) => {
                            waiters.slots[slot] = waker;
                            slot
                        }
                        None => {
                            waiters.slots.push(waker);
                            waiters.slots.len() - 1
                        }
                    };
                    this.slot = slot;
                }
                slot => waiters.slots[slot] = waker,
            }
        }
        this.registered = Some(cx.waker().clone());
        // Raised between the first check and the registration: `trigger` may have taken the
        // wakers before ours was stored.
        if this.shutdown.raised.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Stopping<'_> {
    fn drop(&mut self) {
        if self.slot != NO_SLOT {
            let slot = self.slot;
            let mut waiters = self
                .shutdown
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            waiters.slots[slot] = None;
            waiters.free.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn every_waiter_resolves_when_triggered() {
        let shutdown = Arc::new(Shutdown::default());
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let s = Arc::clone(&shutdown);
            tasks.push(tokio::spawn(async move { s.stopping().await }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(tasks.iter().all(|t| !t.is_finished()));
        shutdown.trigger();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .expect("waiter not woken")
                .unwrap();
        }
        // Raised for good: a new waiter resolves at once.
        shutdown.stopping().await;
    }

    #[test]
    fn waiting_future_is_four_words() {
        // Held by every idle session for its whole life (see the module's documentation).
        assert!(std::mem::size_of::<Stopping<'_>>() <= 4 * std::mem::size_of::<usize>());
    }

    #[tokio::test]
    async fn dropped_waiters_free_their_slots() {
        let shutdown = Shutdown::default();
        for _ in 0..100 {
            let mut stop = Box::pin(shutdown.stopping());
            let waker = futures_util::task::noop_waker();
            assert!(stop
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
        }
        let waiters = shutdown.waiters.lock().unwrap();
        assert_eq!(waiters.slots.len(), 1);
        assert_eq!(waiters.free, vec![0]);
    }

    #[tokio::test]
    async fn all_closed_waits_for_the_last_guard() {
        let shutdown = Arc::new(Shutdown::default());
        let guard = shutdown.open_guard();
        let s = Arc::clone(&shutdown);
        let waiter = tokio::spawn(async move { s.all_closed().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        assert_eq!(shutdown.open(), 1);
        drop(guard);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("not woken when the last connection closed")
            .unwrap();
        assert_eq!(shutdown.open(), 0);
    }
}
