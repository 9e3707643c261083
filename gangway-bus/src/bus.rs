//! The bus: room subscriptions counted per node, the bounded publish queue, and what a node does
//! with each engine message (drop duplicates, count and fill gaps, deliver in order).

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio::task::AbortHandle;

use crate::envelope::{self, Decoded, Kind, Position};
use crate::error::{BusError, PublishError, RecoverError};
use crate::Engine;

/// Settings of a [`Bus`]: start from `BusConfig::default()` and change fields.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// Largest message accepted by [`Bus::publish`], in bytes (default 1 MiB, NATS' default
    /// `max_payload`); a larger one is refused before it reaches the engine.
    pub max_message_size: usize,
    /// Publishes waiting for the engine connection (default 4,096); when full, a publish is
    /// refused ([`PublishError::QueueFull`]) and counted.
    pub queue_capacity: usize,
    /// Keep each room's last N messages and position every message (Redis only): see
    /// [`Bus::recover`]. Off by default.
    pub history: Option<NonZeroUsize>,
    /// Prefix of the engine's channel, subject and key names (default `gangway`), so that
    /// several applications can share one engine.
    pub prefix: String,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            max_message_size: 1 << 20,
            queue_capacity: 4096,
            history: None,
            prefix: "gangway".to_owned(),
        }
    }
}

/// A message for the local members of a room, from this node or another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The frame it goes in.
    pub kind: Kind,
    /// What the members receive: the message as published, or with history on its position
    /// line and then the message (see [`envelope`](crate::envelope)).
    pub payload: Bytes,
    /// With history on: the message's position in the room.
    pub position: Option<Position>,
}

/// Called for every message to deliver to a room's local members: `(room, delivery)`.
///
/// It runs on the engine's task (or, for local delivery by [`Bus::publish`] without history, on
/// the publisher's), and must not block: hand the message to the members' queues and return.
/// Without history no lock of the bus is held while it runs. With history the room's delivery
/// is held (so that [`Subscription::join_at`] sees no message half delivered): the handler must
/// not publish to the bus or drop subscriptions of that room from inside.
pub type Handler = dyn Fn(&str, Delivery) + Send + Sync;

/// Counters of one node's bus (see [`Bus::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages the engine accepted from this node.
    pub published: u64,
    /// Engine messages delivered to local members (with history on, local publishes included).
    pub delivered: u64,
    /// Publishes refused because they were larger than [`BusConfig::max_message_size`].
    pub refused_too_large: u64,
    /// Publishes refused because the engine queue was full.
    pub dropped_queue_full: u64,
    /// Engine messages dropped because they had been delivered already.
    pub duplicates: u64,
    /// Messages this node knows it missed: a jump in a publisher's sequence numbers, or, with
    /// history on, messages no longer in the history when a gap was filled.
    pub lost: u64,
    /// With history on: messages fetched from the history to fill a gap, in order.
    pub recovered: u64,
    /// Times the engine connection was lost (each is a gap in delivery from other nodes).
    pub gaps: u64,
    /// With history on: times a room's history was found under a new epoch (it was lost).
    pub epoch_changes: u64,
    /// Messages on the engine's channels that were not the bus's own, dropped.
    pub foreign: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) refused_too_large: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) recovered: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) epoch_changes: AtomicU64,
    pub(crate) foreign: AtomicU64,
}

/// A publish on its way to the engine.
pub(crate) struct Outgoing {
    pub(crate) room: Arc<str>,
    pub(crate) wire: Bytes,
    /// The publisher stream goes on after this message (a room with local members, or with
    /// history the node's lone stream), so a retry of it must be recognised by the engine, with
    /// history (see the Redis engine). `None` for a stream of one message (no local member, no
    /// history). Read by the Redis engine only (NATS keeps no history).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) stream: Option<StreamRef>,
}

/// A message's place in its publisher stream, for the engine to store each message of a
/// stream once and in order (history on). Read by the Redis engine only.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct StreamRef {
    /// The stream id in the message's envelope.
    pub(crate) id: u64,
    /// The stream's number on this node, never reused while the node lives (the id's low bits
    /// come round again after 2^24 streams): with `id`, the stream's key at the engine.
    pub(crate) key: u64,
    pub(crate) seq: u64,
    /// The last sequence number of the stream the engine took (0: none yet), raised by the
    /// engine task once a batch went through.
    pub(crate) stored: Arc<AtomicU64>,
}

/// What a node shares between its handles, its subscriptions and its engine tasks.
pub(crate) struct Shared {
    /// Random; its high bits (all but [`STREAM_NUMBER_BITS`]) prefix every publisher stream id
    /// of this node.
    node: u64,
    pub(crate) config: BusConfig,
    rooms: Mutex<HashMap<Arc<str>, Arc<Room>>>,
    queue: mpsc::Sender<Outgoing>,
    /// Raised when the set of subscribed rooms changes; the engine task reconciles.
    pub(crate) changed: Notify,
    handler: Box<Handler>,
    pub(crate) counters: Counters,
    /// Publisher stream ids handed out (the low [`STREAM_NUMBER_BITS`] bits of each).
    streams: AtomicU64,
    /// With history: the publisher stream of this node's publishes to rooms it has no member
    /// in (without history each such publish is a stream of one message).
    lone: Mutex<LoneStream>,
}

/// This node's publisher stream for rooms without a local member (history on): numbered
/// across those rooms, so that the engine stores each of its messages once and in order.
struct LoneStream {
    id: u64,
    key: u64,
    next_seq: u64,
    stored: Arc<AtomicU64>,
}

/// One room this node has local members in.
pub(crate) struct Room {
    pub(crate) name: Arc<str>,
    /// Live [`Subscription`]s. Counted outside `state`, so that subscribing and unsubscribing
    /// never wait for a delivery in progress (a room fan-out may call them with its own lock
    /// held, the lock a delivery takes).
    members: AtomicUsize,
    state: Mutex<RoomState>,
    /// Raised when a history room's position becomes known.
    ready: Notify,
    /// The last sequence number of this node's publisher stream for the room the engine took.
    stored: Arc<AtomicU64>,
}

impl Room {
    /// History on: the position delivered up to, once known.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn position(&self) -> Option<Position> {
        lock(&self.state).position.clone()
    }
}

struct RoomState {
    /// This node's publisher stream for the room (its id and its number, see [`StreamRef`]),
    /// and its next sequence number.
    stream: u64,
    key: u64,
    next_seq: u64,
    /// Last sequence number delivered per publisher stream (bounded, see `SEEN_STREAMS`).
    seen: HashMap<u64, u64>,
    /// History on: the position delivered up to; `None` until the engine told it.
    position: Option<Position>,
    /// The engine subscription is in place (and the position known).
    ready: bool,
}

/// The low bits of a publisher stream id that number the node's streams; the rest is the node's
/// random prefix. A node opens a stream per room it has members in (each time the room gets its
/// first member), so its ids come round again only after 2^24 of those (the previous 16 bits
/// came round after 65,536, which a server whose rooms come and go can reach in a day, and a room
/// that got a used id back could have its first messages taken for duplicates). The 40-bit
/// prefix keeps two nodes from sharing one (and taking each other's messages for their own)
/// however many nodes there are in practice: for 1,000 nodes the odds are about 1 in 2 million.
const STREAM_NUMBER_BITS: u32 = 24;
const STREAM_NUMBER_MASK: u64 = (1 << STREAM_NUMBER_BITS) - 1;

/// Publisher streams remembered per room; past this, the map is cleared (the next message of
/// each stream is then taken as its first: no loss or duplicate is detected across the reset).
const SEEN_STREAMS: usize = 1024;

/// What a node does with an engine message (see [`Shared::receive`]).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Received {
    /// Delivered, or dropped (duplicate, unknown room, not ours).
    Done,
    /// History on: messages are missing before this one; the engine task fetches the offsets
    /// `from..to` (epoch `epoch`) from the history, hands each to `receive`, then this one again.
    Gap {
        epoch: String,
        from: u64,
        to: u64,
        message: Decoded,
    },
}

impl Shared {
    pub(crate) fn history(&self) -> bool {
        self.config.history.is_some()
    }

    /// The rooms with local members now.
    pub(crate) fn wanted(&self) -> Vec<Arc<str>> {
        lock(&self.rooms).keys().cloned().collect()
    }

    pub(crate) fn room(&self, name: &str) -> Option<Arc<Room>> {
        lock(&self.rooms).get(name).cloned()
    }

    /// The engine subscribed `room` (and, with history, read where it stands: `position`).
    pub(crate) fn set_ready(&self, room: &Room, position: Option<Position>) {
        let mut state = lock(&room.state);
        if !state.ready {
            state.ready = true;
            state.position = position;
            room.ready.notify_waiters();
        }
    }

    /// [`Shared::set_ready`] by name.
    pub(crate) fn set_ready_by_name(&self, room: &str) {
        if let Some(room) = self.room(room) {
            self.set_ready(&room, None);
        }
    }

    /// An engine message for `room`, as its bytes.
    pub(crate) fn receive_wire(&self, room: &str, wire: Bytes) -> Received {
        match envelope::decode(wire) {
            Some(message) => self.receive(room, message),
            None => {
                self.counters.foreign.fetch_add(1, Relaxed);
                Received::Done
            }
        }
    }

    /// An engine message for `room`: deliver it to the local members once, in order.
    pub(crate) fn receive(&self, room: &str, message: Decoded) -> Received {
        let Some(room) = self.room(room) else {
            // Unsubscribed meanwhile.
            return Received::Done;
        };
        let mut state = lock(&room.state);
        let history = self.history();
        if !history && message.stream & !STREAM_NUMBER_MASK == self.node & !STREAM_NUMBER_MASK {
            // Our own: delivered locally when it was published.
            return Received::Done;
        }
        match message.position {
            Some(_) if !history => {
                // Positioned messages belong to a history bus sharing the prefix.
                self.counters.foreign.fetch_add(1, Relaxed);
                return Received::Done;
            }
            None if history => {
                self.counters.foreign.fetch_add(1, Relaxed);
                return Received::Done;
            }
            _ => {}
        }
        if let Some(at) = &message.position {
            let Some(current) = &mut state.position else {
                // Not ready: the position read after subscribing covers this message.
                return Received::Done;
            };
            if at.epoch != current.epoch {
                self.counters.epoch_changes.fetch_add(1, Relaxed);
                tracing::warn!(
                    room = &*room.name,
                    old = %current,
                    new = %at,
                    "the room's history has a new epoch (the engine lost it); following the new one"
                );
                *current = Position {
                    epoch: at.epoch.clone(),
                    offset: 0,
                };
                state.seen.clear();
            }
            let current = state.position.as_ref().expect("set above");
            if at.offset <= current.offset {
                self.counters.duplicates.fetch_add(1, Relaxed);
                return Received::Done;
            }
            if at.offset > current.offset + 1 {
                return Received::Gap {
                    epoch: current.epoch.clone(),
                    from: current.offset + 1,
                    to: at.offset,
                    message,
                };
            }
        }
        // A publisher's sequence: a duplicate (a retried publish) is dropped, a jump counted.
        // A stream of one message (see `envelope`) has none: nothing to follow or remember.
        if message.seq != envelope::UNSEQUENCED {
            let last = state.seen.get(&message.stream).copied();
            match last {
                Some(last) if message.seq <= last => {
                    self.counters.duplicates.fetch_add(1, Relaxed);
                    if let Some(at) = message.position {
                        // Its offset is taken all the same: the next message follows it.
                        state.position = Some(at);
                    }
                    return Received::Done;
                }
                Some(last) if message.seq > last + 1 && !history => {
                    let missed = message.seq - last - 1;
                    self.counters.lost.fetch_add(missed, Relaxed);
                    tracing::warn!(
                        room = &*room.name,
                        missed,
                        "messages from another node were lost (at-most-once delivery)"
                    );
                }
                _ => {}
            }
            if state.seen.len() >= SEEN_STREAMS && last.is_none() {
                state.seen.clear();
            }
            state.seen.insert(message.stream, message.seq);
        }
        if let Some(at) = &message.position {
            state.position = Some(at.clone());
        }
        self.counters.delivered.fetch_add(1, Relaxed);
        let delivery = Delivery {
            kind: message.kind,
            payload: message.client,
            position: message.position,
        };
        if !history {
            // Messages of a room are received one after another (one engine task per room at
            // most), so the order holds without the lock; and the handler may then call into
            // a fan-out that calls this bus back with its own lock held.
            drop(state);
        }
        (self.handler)(&room.name, delivery);
        Received::Done
    }

    /// History on: offsets `from..to` are gone from the history; the next message is delivered
    /// after them.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn skip_lost(&self, room: &str, epoch: &str, from: u64, to: u64) {
        let Some(room) = self.room(room) else { return };
        let mut state = lock(&room.state);
        if let Some(current) = &mut state.position {
            if current.epoch == epoch && current.offset < to - 1 && current.offset + 1 >= from {
                let missed = to - 1 - current.offset;
                self.counters.lost.fetch_add(missed, Relaxed);
                tracing::warn!(
                    room = &*room.name,
                    missed,
                    "messages missing from the history (older than it keeps) were lost"
                );
                current.offset = to - 1;
            }
        }
    }

    /// Count an engine connection lost, with its log line.
    #[cfg_attr(not(any(feature = "redis", feature = "nats")), allow(dead_code))]
    pub(crate) fn gap(&self, engine: &str, error: &dyn fmt::Display) {
        self.counters.gaps.fetch_add(1, Relaxed);
        if self.history() {
            tracing::warn!(
                "lost the {engine} connection ({error}); reconnecting; local delivery waits and what was published meanwhile is fetched from the history"
            );
        } else {
            tracing::warn!(
                "lost the {engine} connection ({error}); reconnecting; local delivery goes on, messages published meanwhile on other nodes are lost"
            );
        }
    }
}

/// A node's connection to the engine: publish to a room on every node, deliver what every node
/// publishes to this node's members. Clones share the connection; the engine tasks stop when the
/// last clone is dropped.
///
/// See the [crate docs](crate) for the model, delivery guarantees and an example.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tasks: Vec<AbortHandle>,
    #[cfg(feature = "redis")]
    redis: Option<crate::redis::History>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("node", &format_args!("{:016x}", self.inner.shared.node))
            .field("config", &self.inner.shared.config)
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// Connect to `engine`; every message for this node's members goes to `handler`.
    ///
    /// The first connection must succeed (a wrong address is an error at once, not a silent
    /// retry); later losses are repaired by the bus itself.
    ///
    /// Must be called inside a tokio runtime (the engine's tasks are spawned on it).
    ///
    /// # Errors
    ///
    /// [`BusError::Config`] for history on an engine without it, or a zero queue capacity;
    /// [`BusError::Engine`] when the engine cannot be reached or refuses the connection.
    pub async fn connect(
        engine: Engine,
        config: BusConfig,
        handler: impl Fn(&str, Delivery) + Send + Sync + 'static,
    ) -> Result<Bus, BusError> {
        if config.queue_capacity == 0 {
            return Err(BusError::Config(
                "the engine queue capacity must not be zero",
            ));
        }
        if config.history.is_some() && !engine.has_history() {
            return Err(BusError::Config("history needs the Redis engine"));
        }
        let (queue, outgoing) = mpsc::channel(config.queue_capacity);
        let mut node = [0; 8];
        getrandom::fill(&mut node).map_err(|_| BusError::Config("no random numbers"))?;
        let node = u64::from_ne_bytes(node);
        let shared = Arc::new(Shared {
            node,
            config,
            rooms: Mutex::default(),
            queue,
            changed: Notify::new(),
            handler: Box::new(handler),
            counters: Counters::default(),
            // Number 0 is the lone stream's.
            streams: AtomicU64::new(1),
            lone: Mutex::new(LoneStream {
                id: node & !STREAM_NUMBER_MASK,
                key: 0,
                next_seq: 1,
                stored: Arc::default(),
            }),
        });
        let started = engine.start(shared.clone(), outgoing).await?;
        Ok(Bus {
            inner: Arc::new(Inner {
                shared,
                tasks: started.tasks,
                #[cfg(feature = "redis")]
                redis: started.history,
            }),
        })
    }

    /// Count one local member of `room`. The first one subscribes this node to the room at the
    /// engine; when the last [`Subscription`] is dropped the node unsubscribes.
    pub fn subscribe(&self, room: &str) -> Subscription {
        let shared = &self.inner.shared;
        let mut rooms = lock(&shared.rooms);
        let room = match rooms.get(room) {
            Some(r) => r.clone(),
            None => {
                let name: Arc<str> = Arc::from(room);
                let (stream, key) = shared.next_stream();
                let r = Arc::new(Room {
                    name: name.clone(),
                    members: AtomicUsize::new(0),
                    state: Mutex::new(RoomState {
                        stream,
                        key,
                        next_seq: 1,
                        seen: HashMap::new(),
                        position: None,
                        ready: false,
                    }),
                    ready: Notify::new(),
                    stored: Arc::default(),
                });
                rooms.insert(name, r.clone());
                shared.changed.notify_one();
                r
            }
        };
        room.members.fetch_add(1, Relaxed);
        drop(rooms);
        Subscription {
            shared: Arc::downgrade(shared),
            room,
        }
    }

    /// Publish a message to `room` on every node.
    ///
    /// Without history, the local members get it at once (through the handler, before this
    /// returns) and the other nodes through the engine. With history, every node, this one
    /// included, gets it back from the engine with its position, so that all members see one
    /// order.
    ///
    /// Never waits: the message is queued for the engine connection.
    ///
    /// # Errors
    ///
    /// - [`PublishError::TooLarge`]: larger than [`BusConfig::max_message_size`]; nobody gets it.
    /// - [`PublishError::QueueFull`]: the engine queue is full (the engine is slow or
    ///   unreachable); without history the local members got it, the other nodes do not; with
    ///   history nobody does.
    /// - [`PublishError::Closed`]: the engine tasks are gone (the bus is shutting down).
    pub fn publish(&self, room: &str, kind: Kind, payload: Bytes) -> Result<(), PublishError> {
        self.send(room, kind, payload, true)
    }

    /// Publish a message to `room` on the other nodes only: the caller delivered it to this
    /// node's members itself (a room fan-out that hands what it publishes to the bus, such as
    /// gangway's `Hub`). With history on this is [`Bus::publish`]: the message gets its
    /// position from the engine, and every node, this one included, delivers it from there,
    /// so the caller must not deliver it itself.
    ///
    /// # Errors
    ///
    /// As [`Bus::publish`].
    pub fn forward(&self, room: &str, kind: Kind, payload: Bytes) -> Result<(), PublishError> {
        self.send(room, kind, payload, false)
    }

    fn send(
        &self,
        room: &str,
        kind: Kind,
        payload: Bytes,
        deliver_here: bool,
    ) -> Result<(), PublishError> {
        let shared = &self.inner.shared;
        let max = shared.config.max_message_size;
        if payload.len() > max {
            shared.counters.refused_too_large.fetch_add(1, Relaxed);
            return Err(PublishError::TooLarge {
                size: payload.len(),
                max,
            });
        }
        let history = shared.history();
        let queued = match shared.room(room) {
            Some(r) => {
                // Under the room's lock: sequence numbers, queue order and local delivery agree.
                let mut state = lock(&r.state);
                let seq = state.next_seq;
                let queued = shared.queue.try_send(Outgoing {
                    room: r.name.clone(),
                    wire: envelope::encode(kind, history, state.stream, seq, &payload),
                    stream: Some(StreamRef {
                        id: state.stream,
                        key: state.key,
                        seq,
                        stored: r.stored.clone(),
                    }),
                });
                // Without history a refused publish keeps its number: the other nodes see the
                // jump and count the message lost. With history the engine stores a stream's
                // messages only in order, one number after another.
                if queued.is_ok() || !history {
                    state.next_seq += 1;
                }
                if !history && deliver_here {
                    (shared.handler)(
                        &r.name,
                        Delivery {
                            kind,
                            payload: payload.clone(),
                            position: None,
                        },
                    );
                }
                queued
            }
            // No local member, history on: the node's lone stream, numbered as a room's.
            None if history => {
                let mut lone = lock(&shared.lone);
                let seq = lone.next_seq;
                let queued = shared.queue.try_send(Outgoing {
                    room: Arc::from(room),
                    wire: envelope::encode(kind, history, lone.id, seq, &payload),
                    stream: Some(StreamRef {
                        id: lone.id,
                        key: lone.key,
                        seq,
                        stored: lone.stored.clone(),
                    }),
                });
                if queued.is_ok() {
                    lone.next_seq += 1;
                }
                queued
            }
            // No local member: a stream of one message, unsequenced (see `envelope`), under
            // the node's own id (number 0, which no stream of a room gets).
            None => shared.queue.try_send(Outgoing {
                room: Arc::from(room),
                wire: envelope::encode(
                    kind,
                    history,
                    shared.node & !STREAM_NUMBER_MASK,
                    envelope::UNSEQUENCED,
                    &payload,
                ),
                stream: None,
            }),
        };
        queued.map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                shared.counters.dropped_queue_full.fetch_add(1, Relaxed);
                PublishError::QueueFull
            }
            mpsc::error::TrySendError::Closed(_) => PublishError::Closed,
        })
    }

    /// History on: the messages of `room` after `since` up to `upto` (an offset of the same
    /// epoch, usually from [`Subscription::ready`]), in order, as the members receive them.
    ///
    /// # Errors
    ///
    /// [`RecoverError::Unrecoverable`] when the epoch is not the room's, `since` is ahead of
    /// `upto`, or some of the messages are no longer kept; [`RecoverError::NoHistory`] without
    /// history; [`RecoverError::Engine`] when the engine cannot be asked.
    pub async fn recover(
        &self,
        room: &str,
        since: &Position,
        upto: &Position,
    ) -> Result<Vec<Delivery>, RecoverError> {
        if since.epoch != upto.epoch || since.offset > upto.offset {
            return Err(RecoverError::Unrecoverable);
        }
        if since.offset == upto.offset {
            return Ok(Vec::new());
        }
        #[cfg(feature = "redis")]
        if let Some(history) = &self.inner.redis {
            let entries = history
                .range(room, since.offset + 1, upto.offset + 1)
                .await
                .map_err(|e| RecoverError::Engine(Box::new(e)))?;
            let mut out = Vec::with_capacity(entries.len());
            for (i, message) in entries.into_iter().enumerate() {
                let at = message
                    .position
                    .as_ref()
                    .ok_or(RecoverError::Unrecoverable)?;
                if at.epoch != since.epoch || at.offset != since.offset + 1 + i as u64 {
                    return Err(RecoverError::Unrecoverable);
                }
                out.push(Delivery {
                    kind: message.kind,
                    payload: message.client,
                    position: message.position,
                });
            }
            if out.len() as u64 != upto.offset - since.offset {
                return Err(RecoverError::Unrecoverable);
            }
            return Ok(out);
        }
        let _ = room;
        Err(RecoverError::NoHistory)
    }

    /// This node's counters.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.shared.counters;
        Stats {
            published: c.published.load(Relaxed),
            delivered: c.delivered.load(Relaxed),
            refused_too_large: c.refused_too_large.load(Relaxed),
            dropped_queue_full: c.dropped_queue_full.load(Relaxed),
            duplicates: c.duplicates.load(Relaxed),
            lost: c.lost.load(Relaxed),
            recovered: c.recovered.load(Relaxed),
            gaps: c.gaps.load(Relaxed),
            epoch_changes: c.epoch_changes.load(Relaxed),
            foreign: c.foreign.load(Relaxed),
        }
    }

    /// Publishes waiting in the engine queue (at most [`BusConfig::queue_capacity`]): a
    /// publisher that would rather wait than have a publish refused watches this.
    pub fn queued(&self) -> usize {
        let shared = &self.inner.shared;
        shared.queue.max_capacity() - shared.queue.capacity()
    }

    /// Whether history is on (positions, [`Bus::recover`]).
    pub fn history(&self) -> bool {
        self.inner.shared.history()
    }

    /// The settings the bus runs with.
    pub fn config(&self) -> &BusConfig {
        &self.inner.shared.config
    }
}

impl Shared {
    /// A new publisher stream: its id (this node's prefix, then [`STREAM_NUMBER_BITS`] of its
    /// number) and its number. Number 0 (the lone stream's, and the unsequenced messages') is
    /// never handed out.
    fn next_stream(&self) -> (u64, u64) {
        loop {
            let n = self.streams.fetch_add(1, Relaxed);
            if n & STREAM_NUMBER_MASK != 0 {
                return (
                    (self.node & !STREAM_NUMBER_MASK) | (n & STREAM_NUMBER_MASK),
                    n,
                );
            }
        }
    }
}

/// One local member of a room (from [`Bus::subscribe`]). Dropping the last one of a room
/// unsubscribes the node from it.
pub struct Subscription {
    shared: Weak<Shared>,
    room: Arc<Room>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("room", &self.room.name)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The room's name.
    pub fn room(&self) -> &str {
        &self.room.name
    }

    /// Wait until the node's engine subscription to the room is in place: from then on, what
    /// any node publishes reaches this node. With history, returns the position delivered up
    /// to (also known then); without, `None`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn ready(&self) -> Option<Position> {
        loop {
            let notified = self.room.ready.notified();
            {
                let state = lock(&self.room.state);
                if state.ready {
                    return state.position.clone();
                }
            }
            if self.shared.strong_count() == 0 {
                return None;
            }
            notified.await;
        }
    }

    /// History on: run `join` (typically: add the member to the room's local fan-out) only if
    /// nothing was delivered to the room after `at`, with delivery held meanwhile, so that the
    /// member misses nothing and gets nothing twice. `Err` with the room's position when it has
    /// moved on: deliver the messages up to it from [`Bus::recover`], then try again.
    ///
    /// # Errors
    ///
    /// The room's current position, when it is not `at`.
    pub fn join_at<T>(&self, at: &Position, join: impl FnOnce() -> T) -> Result<T, Position> {
        let state = lock(&self.room.state);
        match &state.position {
            Some(p) if p == at => Ok(join()),
            Some(p) => Err(p.clone()),
            None => Err(at.clone()),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut rooms = lock(&shared.rooms);
        // Under the map's lock: a concurrent `subscribe` of the room either came first (and
        // the count is not zero) or finds it gone and makes a new one.
        if self.room.members.fetch_sub(1, Relaxed) == 1 {
            rooms.remove(&self.room.name);
            shared.changed.notify_one();
        }
    }
}

/// A poisoned lock means a handler panicked while delivering; the state itself stays
/// consistent (every update is a single assignment), so carry on.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryEngine;
    use std::time::Duration;

    type Seen = Arc<Mutex<Vec<(String, Bytes)>>>;

    async fn node(engine: &MemoryEngine, config: BusConfig) -> (Bus, Seen) {
        let seen = Seen::default();
        let log = seen.clone();
        let bus = Bus::connect(Engine::Memory(engine.clone()), config, move |room, d| {
            lock(&log).push((room.to_owned(), d.payload));
        })
        .await
        .unwrap();
        (bus, seen)
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn publish_reaches_members_on_every_node_once() {
        let engine = MemoryEngine::default();
        let (a, seen_a) = node(&engine, BusConfig::default()).await;
        let (b, seen_b) = node(&engine, BusConfig::default()).await;
        let _sa = a.subscribe("/r");
        let _sb = b.subscribe("/r");
        let _other = b.subscribe("/other");
        settle().await;
        a.publish("/r", Kind::Text, Bytes::from_static(b"one"))
            .unwrap();
        b.publish("/r", Kind::Text, Bytes::from_static(b"two"))
            .unwrap();
        settle().await;
        let names = |s: &Seen| {
            let mut v: Vec<_> = lock(s).iter().map(|(r, p)| format!("{r} {p:?}")).collect();
            v.sort();
            v
        };
        assert_eq!(names(&seen_a), ["/r b\"one\"", "/r b\"two\""]);
        assert_eq!(names(&seen_b), ["/r b\"one\"", "/r b\"two\""]);
        assert_eq!(a.stats().published, 1);
        assert_eq!(a.stats().delivered, 1);
    }

    #[tokio::test]
    async fn forward_skips_the_local_members() {
        let engine = MemoryEngine::default();
        let (a, seen_a) = node(&engine, BusConfig::default()).await;
        let (b, seen_b) = node(&engine, BusConfig::default()).await;
        let (_sa, _sb) = (a.subscribe("/r"), b.subscribe("/r"));
        settle().await;
        a.forward("/r", Kind::Text, Bytes::from_static(b"x"))
            .unwrap();
        settle().await;
        assert!(lock(&seen_a).is_empty());
        assert_eq!(lock(&seen_b).len(), 1);
    }

    #[tokio::test]
    async fn one_engine_subscription_per_room_while_it_has_members() {
        let engine = MemoryEngine::default();
        let (a, _) = node(&engine, BusConfig::default()).await;
        let s1 = a.subscribe("/r");
        let s2 = a.subscribe("/r");
        settle().await;
        assert_eq!(engine.subscriptions("/r"), 1);
        drop(s1);
        settle().await;
        assert_eq!(engine.subscriptions("/r"), 1);
        drop(s2);
        settle().await;
        assert_eq!(engine.subscriptions("/r"), 0);
    }

    #[tokio::test]
    async fn oversized_publish_is_refused_before_the_engine() {
        let engine = MemoryEngine::default();
        let config = BusConfig {
            max_message_size: 4,
            ..BusConfig::default()
        };
        let (a, seen) = node(&engine, config).await;
        let _s = a.subscribe("/r");
        let err = a
            .publish("/r", Kind::Binary, Bytes::from_static(b"12345"))
            .unwrap_err();
        assert_eq!(err, PublishError::TooLarge { size: 5, max: 4 });
        settle().await;
        assert!(lock(&seen).is_empty());
        assert_eq!(engine.published(), 0);
        assert_eq!(a.stats().refused_too_large, 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn full_queue_refuses_and_counts() {
        let engine = MemoryEngine::default();
        let config = BusConfig {
            queue_capacity: 2,
            ..BusConfig::default()
        };
        let (a, seen) = node(&engine, config).await;
        let _s = a.subscribe("/r");
        // The engine task does not run between these (one thread, no await).
        let results: Vec<_> = (0..4)
            .map(|i| a.publish("/r", Kind::Text, Bytes::from(format!("{i}"))))
            .collect();
        assert_eq!(
            results,
            [
                Ok(()),
                Ok(()),
                Err(PublishError::QueueFull),
                Err(PublishError::QueueFull)
            ]
        );
        // Local members got all four: only the other nodes miss the refused ones.
        assert_eq!(lock(&seen).len(), 4);
        assert_eq!(a.stats().dropped_queue_full, 2);
    }

    #[tokio::test]
    async fn sequence_jumps_count_as_lost_and_repeats_as_duplicates() {
        let engine = MemoryEngine::default();
        let (b, seen) = node(&engine, BusConfig::default()).await;
        let _s = b.subscribe("/r");
        settle().await;
        // Another node's publisher stream, by hand: 1, 2, 2 again, then 5.
        for seq in [1, 2, 2, 5] {
            engine.inject("/r", envelope::encode(Kind::Text, false, 42, seq, b"m"));
        }
        engine.inject("/r", Bytes::from_static(b"not ours"));
        settle().await;
        assert_eq!(lock(&seen).len(), 3);
        let stats = b.stats();
        assert_eq!((stats.duplicates, stats.lost, stats.foreign), (1, 2, 1));
    }

    #[tokio::test]
    async fn publishes_from_a_node_without_members_are_never_taken_for_duplicates() {
        let engine = MemoryEngine::default();
        let (a, _) = node(&engine, BusConfig::default()).await;
        let (b, seen) = node(&engine, BusConfig::default()).await;
        let _s = b.subscribe("/r");
        settle().await;
        // A has no member in /r: each publish is a stream of one message. Each such stream
        // used to take a new id, whose 16 low bits came round again after 65,536 of them, and
        // B took the repeat for a duplicate and dropped it. The counter is moved on here to
        // where the next id would have been the first's again.
        a.publish("/r", Kind::Text, Bytes::from_static(b"one"))
            .unwrap();
        a.inner.shared.streams.fetch_add(0xffff, Relaxed);
        a.publish("/r", Kind::Text, Bytes::from_static(b"two"))
            .unwrap();
        settle().await;
        // And by hand: two unsequenced messages of one stream id, after a sequenced one.
        for seq in [1, envelope::UNSEQUENCED, envelope::UNSEQUENCED] {
            engine.inject("/r", envelope::encode(Kind::Text, false, 42, seq, b"m"));
        }
        settle().await;
        let payloads: Vec<_> = lock(&seen).iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(payloads, ["one", "two", "m", "m", "m"]);
        let stats = b.stats();
        assert_eq!((stats.duplicates, stats.lost, stats.delivered), (0, 0, 5));
        // An unsequenced message leaves nothing behind: the stream 42 still expects 2.
        engine.inject("/r", envelope::encode(Kind::Text, false, 42, 1, b"again"));
        settle().await;
        assert_eq!(b.stats().duplicates, 1);
    }

    #[tokio::test]
    async fn stream_ids_of_a_node_do_not_come_round_for_millions_of_rooms() {
        let (a, _) = node(&MemoryEngine::default(), BusConfig::default()).await;
        let shared = &a.inner.shared;
        let (first, _) = shared.next_stream();
        assert_eq!(
            first & !STREAM_NUMBER_MASK,
            shared.node & !STREAM_NUMBER_MASK
        );
        // Past the 65,536 streams after which the 16-bit numbers came round.
        for _ in 0..0x1_0001 {
            let (id, n) = shared.next_stream();
            assert_ne!(id, first, "stream {n}");
            assert_ne!(id & STREAM_NUMBER_MASK, 0, "number 0 is never handed out");
        }
    }

    #[tokio::test]
    async fn history_needs_redis() {
        let config = BusConfig {
            history: NonZeroUsize::new(10),
            ..BusConfig::default()
        };
        let err = Bus::connect(Engine::Memory(MemoryEngine::default()), config, |_, _| {})
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::Config(_)), "{err}");
    }
}
