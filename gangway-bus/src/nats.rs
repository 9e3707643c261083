//! The NATS engine: core publish/subscribe on subject `P.room.<room>` (prefix `P`; the room's
//! bytes other than letters, digits, `-`, `_` and `/` written as `%XX`, since `.`, `*`, `>`
//! and white space mean something in a subject; the empty room is `%`).
//!
//! The client (async-nats) reconnects and resubscribes by itself; the bus counts and logs each
//! disconnection through the client's events. One subscriber task per room.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{info, warn};

use crate::bus::{Outgoing, Shared};
use crate::error::BusError;
use crate::{backoff, Started};

/// Publishes handed to the client in one go.
const BATCH: usize = 256;

/// The subject of `room`.
fn subject(prefix: &str, room: &str) -> String {
    let mut s = format!("{prefix}.room.");
    if room.is_empty() {
        s.push('%');
    }
    for b in room.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/') {
            s.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(s, "%{b:02X}");
        }
    }
    s
}

pub(crate) async fn start(
    url: &str,
    shared: Arc<Shared>,
    outgoing: mpsc::Receiver<Outgoing>,
) -> Result<Started, BusError> {
    let events: Weak<Shared> = Arc::downgrade(&shared);
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempt| backoff(attempt.min(16) as u32))
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                match event {
                    async_nats::Event::Disconnected => {
                        if let Some(shared) = events.upgrade() {
                            shared.gap("nats", &"disconnected");
                        }
                    }
                    async_nats::Event::Connected => {
                        info!("nats: connected; the client resubscribed every room");
                    }
                    other => warn!("nats: {other}"),
                }
            }
        })
        .connect(url)
        .await
        .map_err(|e| BusError::Engine(Box::new(e)))?;
    let publisher = tokio::spawn(publish_loop(client.clone(), shared.clone(), outgoing));
    let subscriber = tokio::spawn(subscribe_loop(client, shared));
    Ok(Started {
        tasks: vec![publisher.abort_handle(), subscriber.abort_handle()],
        #[cfg(feature = "redis")]
        history: None,
    })
}

/// Hand queued publishes to the client (which buffers them while disconnected, up to its own
/// capacity; beyond that this task waits and the bus queue fills).
async fn publish_loop(
    client: async_nats::Client,
    shared: Arc<Shared>,
    mut outgoing: mpsc::Receiver<Outgoing>,
) {
    let prefix = shared.config.prefix.clone();
    let mut batch = Vec::with_capacity(BATCH);
    while outgoing.recv_many(&mut batch, BATCH).await > 0 {
        for out in batch.drain(..) {
            match client.publish(subject(&prefix, &out.room), out.wire).await {
                Ok(()) => {
                    shared.counters.published.fetch_add(1, Relaxed);
                }
                // Only when the client is closed: nothing more can be published.
                Err(e) => warn!("nats: publish failed: {e}"),
            }
        }
    }
}

/// One subscription (and its task) per room with local members.
async fn subscribe_loop(client: async_nats::Client, shared: Arc<Shared>) {
    let mut rooms = RoomTasks::default();
    let rooms = &mut rooms.0;
    // A private subject to time round trips on (see `confirm`).
    let inbox = client.new_inbox();
    let mut probe = client
        .subscribe(inbox.clone())
        .await
        .ok()
        .map(|sub| (inbox, sub));
    loop {
        shared.changed.notified().await;
        let wanted = shared.wanted();
        rooms.retain(|room, task| {
            let keep = wanted.contains(room);
            if !keep {
                // Dropping the subscriber unsubscribes.
                task.abort();
            }
            keep
        });
        for room in wanted {
            if rooms.contains_key(&room) {
                continue;
            }
            let subscriber = match client
                .subscribe(subject(&shared.config.prefix, &room))
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    // Only when the client is closed.
                    warn!(room = &*room, "nats: cannot subscribe: {e}");
                    continue;
                }
            };
            confirm(&client, &mut probe).await;
            shared.set_ready_by_name(&room);
            let shared = shared.clone();
            let name = room.clone();
            let task = tokio::spawn(async move {
                let mut subscriber = subscriber;
                while let Some(message) = subscriber.next().await {
                    // No history on NATS: nothing to fill.
                    let _ = shared.receive_wire(&name, message.payload);
                }
            });
            rooms.insert(room, task.abort_handle());
        }
    }
}

/// Wait until the server has processed what this connection sent before (a subscription):
/// it handles a connection's commands in order, so a message published now to our own probe
/// subject comes back after them. Bounded: a server that does not answer in 2 s is being
/// reconnected to, and the client resubscribes then.
async fn confirm(
    client: &async_nats::Client,
    probe: &mut Option<(String, async_nats::Subscriber)>,
) {
    let Some((subject, sub)) = probe else { return };
    let round_trip = async {
        client
            .publish(subject.clone(), bytes::Bytes::new())
            .await
            .ok()?;
        sub.next().await
    };
    if tokio::time::timeout(Duration::from_secs(2), round_trip)
        .await
        .is_err()
    {
        warn!("nats: a subscription was not confirmed within 2 s");
    }
}

/// The per-room tasks, stopped when the bus stops (this is dropped with its task).
#[derive(Default)]
struct RoomTasks(HashMap<Arc<str>, AbortHandle>);

impl Drop for RoomTasks {
    fn drop(&mut self) {
        for task in self.0.values() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_become_valid_subjects() {
        assert_eq!(subject("g", "/chat/a-b_c"), "g.room./chat/a-b_c");
        assert_eq!(subject("g", "/a.b *>"), "g.room./a%2Eb%20%2A%3E");
        assert_eq!(subject("g", ""), "g.room.%");
        assert_eq!(subject("g", "/é"), "g.room./%C3%A9");
    }
}
