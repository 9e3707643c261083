//! An engine inside the process: several buses on one [`MemoryEngine`] behave as nodes on one
//! Redis or NATS, without history. For tests, and for rooms that never leave one process.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::bus::{lock, Outgoing, Shared};
use crate::Started;

/// An in-process engine: several buses on one `MemoryEngine` behave as nodes on one Redis or
/// NATS, without history. Clones are the same engine.
#[derive(Clone, Default)]
pub struct MemoryEngine {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for MemoryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEngine").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    /// Per room, the inboxes of the nodes subscribed to it (by node number).
    rooms: HashMap<Arc<str>, HashMap<usize, Inbox>>,
    nodes: usize,
    published: u64,
}

type Inbox = mpsc::UnboundedSender<(Arc<str>, Bytes)>;

impl MemoryEngine {
    /// How many nodes are subscribed to `room`.
    pub fn subscriptions(&self, room: &str) -> usize {
        lock(&self.inner).rooms.get(room).map_or(0, HashMap::len)
    }

    /// How many messages were published through the engine.
    pub fn published(&self) -> u64 {
        lock(&self.inner).published
    }

    /// Put raw bytes on a room's channel, as another program sharing the engine would.
    pub fn inject(&self, room: &str, wire: Bytes) {
        let inner = lock(&self.inner);
        for inbox in inner.rooms.get(room).into_iter().flat_map(HashMap::values) {
            let _ = inbox.send((Arc::from(room), wire.clone()));
        }
    }

    pub(crate) fn start(
        &self,
        shared: Arc<Shared>,
        mut outgoing: mpsc::Receiver<Outgoing>,
    ) -> Started {
        let engine = self.clone();
        let counters = shared.clone();
        let publisher = tokio::spawn(async move {
            while let Some(out) = outgoing.recv().await {
                let mut inner = lock(&engine.inner);
                inner.published += 1;
                counters.counters.published.fetch_add(1, Relaxed);
                for inbox in inner
                    .rooms
                    .get(&out.room)
                    .into_iter()
                    .flat_map(HashMap::values)
                {
                    let _ = inbox.send((out.room.clone(), out.wire.clone()));
                }
            }
        });
        let engine = self.clone();
        let subscriber = tokio::spawn(async move {
            let (tx, mut inbox) = mpsc::unbounded_channel();
            let id = {
                let mut inner = lock(&engine.inner);
                inner.nodes += 1;
                inner.nodes
            };
            let mut subscribed: Vec<Arc<str>> = Vec::new();
            loop {
                tokio::select! {
                    () = shared.changed.notified() => {
                        let wanted = shared.wanted();
                        let mut inner = lock(&engine.inner);
                        for room in subscribed.iter().filter(|r| !wanted.contains(r)) {
                            if let Some(nodes) = inner.rooms.get_mut(room) {
                                nodes.remove(&id);
                                if nodes.is_empty() {
                                    inner.rooms.remove(room);
                                }
                            }
                        }
                        for room in wanted.iter().filter(|r| !subscribed.contains(r)) {
                            inner.rooms.entry(room.clone()).or_default().insert(id, tx.clone());
                            shared.set_ready_by_name(room);
                        }
                        subscribed = wanted;
                    }
                    Some((room, wire)) = inbox.recv() => {
                        // No history here: nothing to fill.
                        let _ = shared.receive_wire(&room, wire);
                    }
                }
            }
        });
        Started {
            tasks: vec![publisher.abort_handle(), subscriber.abort_handle()],
            #[cfg(feature = "redis")]
            history: None,
        }
    }
}
