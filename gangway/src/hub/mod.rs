//! Rooms and broadcast: one message to every connection in a room, framed once.
//!
//! A [`Hub`] holds named rooms. A connection becomes a [`Member`] of the hub ([`Hub::member`]),
//! joins and leaves rooms, and publishes to them; every member of a room receives what is
//! published to it, in order.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use gangway::hub::{Hub, HubConfig};
//!
//! # async fn run(listener: tokio::net::TcpListener) -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::new(HubConfig::default());
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     let hub = hub.clone();
//!     tokio::spawn(async move {
//!         let Ok(ws) = gangway::accept(tcp).await else { return };
//!         let mut member = hub.member(ws);
//!         member.join("lobby");
//!         // Reading the stream also delivers what the room receives: keep polling it.
//!         while let Some(Ok(message)) = member.next().await {
//!             let _ = member.publish("lobby", &message); // to everyone, this member included
//!         }
//!     });
//! }
//! # }
//! ```
//!
//! # How a message travels
//!
//! A server's frames are not masked (RFC 6455 §5.1), so one encoding of a message serves every
//! member. Publishing frames the message once into the room's open batch (a copy of the payload
//! and a header) and wakes the members waiting for more; that is all it does, whatever the number
//! of members. A member delivers when its connection's task runs: the first one seals the open
//! batch, and each queues the sealed batch on its connection as it is (a reference count, no
//! copy: [`Connection::send_prepared`](gangway_proto::Connection::send_prepared)) and writes it
//! with whatever else is queued, in one system call. Messages published in one turn of the event
//! loop thus reach each member in one write, as uWebSockets' corking does, without a copy per
//! member.
//!
//! # permessage-deflate
//!
//! A member whose connection compresses each message on its own (no context takeover, RFC 7692
//! §7.1.1: what `gangway` servers do by default) receives compressed messages, compressed once
//! for all the members that negotiated the same parameters: the room keeps one log per
//! [`Encoding`] among its members, and publishing compresses
//! the message once per distinct compression among them (outside the room's lock), then frames
//! it into each log. Messages under a member's compression threshold, and those that do not
//! shrink, go uncompressed. A member whose connection compresses with context takeover, or does
//! not compress, takes the plain log: its messages go uncompressed (RSV1 clear; RFC 7692 §6 lets
//! a sender leave any message uncompressed), since compressing for it would mean compressing
//! each message again for each such member. [`HubStats::compressed`] counts the compressions.
//!
//! # Slow members
//!
//! A room keeps one log of what was published for all its members, and each member's place in
//! it. A member that does not keep up falls behind in the log, up to the limits of
//! [`HubConfig`] (bytes and messages not yet written to its connection). Past them,
//! [`HubConfig::when_full`] decides: drop its oldest messages and count them
//! ([`WhenFull::Drop`], [`Member::dropped`], [`HubStats::dropped`]), or close its connection
//! ([`WhenFull::Close`], with 1008 or 1013). The others never wait for it: publishing never
//! waits, and the room's memory is bounded by the limits whatever its members do.
//!
//! # Threads
//!
//! A hub is shared by cloning it (an `Arc`), across the threads of a multi-thread runtime:
//! rooms span them. Each room's log is behind a mutex held for a few instructions and never
//! across an await; members that leave (dropped, closed, failed) are removed at once.
//!
//! # Across processes
//!
//! [`Hub::publish`] delivers to this process's members and hands the message to the hub's
//! [`Bus`], if any, for the other processes; a bus delivers what they publish with
//! [`Hub::publish_local`], which reaches this process's members only. An
//! [ordered](Bus::ordered) bus (one that gives each room's messages a single order across the
//! processes, e.g. with a position per message) takes this process's messages too and delivers
//! them back in that order: the hub then leaves local delivery to it.

mod member;
mod room;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use gangway_proto::prepared::Encoding;
use gangway_proto::{CloseCode, DataKind};

use crate::Message;
pub use member::Member;
use room::{Copies, Payload, Room};

/// How much a member may have waiting, and what happens past it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// The most bytes of frames published to a member's rooms and not yet written to its
    /// connection (default 1 MiB). A message larger than this cannot be queued for anyone:
    /// publishing it fails ([`PublishError::TooLarge`]).
    pub max_queued_bytes: usize,
    /// The most messages published to a member's rooms and not yet written to its connection
    /// (default 4,096).
    pub max_queued_messages: usize,
    /// What happens to a member that has more waiting than that (default
    /// [`WhenFull::Drop`]).
    pub when_full: WhenFull,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_queued_bytes: 1 << 20,
            max_queued_messages: 4096,
            when_full: WhenFull::Drop,
        }
    }
}

/// What happens to a member whose queue is full (see [`HubConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Its oldest messages are dropped, a batch at a time (what was published in one turn of
    /// the event loop), until what is left fits; they are counted ([`Member::dropped`],
    /// [`HubStats::dropped`]). It then goes on receiving.
    Drop,
    /// Its connection is closed with this code: 1008 (policy violation) or 1013 (try again
    /// later, RFC 6455 §7.4.1 and the IANA registry); a code that may not be sent is replaced by
    /// 1008. It receives nothing more, and the close handshake is bounded by the close timeout
    /// as usual (a peer that reads nothing never gets the close frame). Counted in
    /// [`HubStats::closed`].
    Close(CloseCode),
}

/// Why a message was not published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// Only text and binary messages are published (not pings, pongs or fragments).
    NotData,
    /// The message's frame is larger than [`HubConfig::max_queued_bytes`]: no member could have
    /// it queued.
    TooLarge {
        /// The frame's size in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The hub's [ordered](Bus::ordered) bus refused the message (its queue toward the other
    /// processes is full, or the message is larger than it carries): nobody receives it.
    Refused,
    /// [`Member::publish_to_others`] on a hub whose bus is [ordered](Bus::ordered): every
    /// member receives its own messages back from the bus, in the room's order.
    OthersOnlyUnordered,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::NotData => f.write_str("only text and binary messages are published"),
            PublishError::TooLarge { len, max } => write!(
                f,
                "message of {len} bytes is larger than the {max} bytes a member may have queued"
            ),
            PublishError::Refused => f.write_str("the bus to the other processes refused the message"),
            PublishError::OthersOnlyUnordered => f.write_str(
                "an ordered bus delivers every message to every member: the publisher cannot be left out",
            ),
        }
    }
}

impl std::error::Error for PublishError {}

/// Counters of a hub (see [`Hub::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Rooms with at least one member.
    pub rooms: usize,
    /// Memberships (a connection in two rooms counts twice).
    pub members: usize,
    /// Messages published to a room with members (each counted once, however many receive it).
    pub published: u64,
    /// Messages dropped for members that were too slow ([`WhenFull::Drop`]).
    pub dropped: u64,
    /// Members closed for being too slow ([`WhenFull::Close`]).
    pub closed: u64,
    /// Compressions made for publishing: one per message and distinct compression among the
    /// members it was for (see the [module](self) docs, "permessage-deflate").
    pub compressed: u64,
}

/// What a room holds for its slowest members: the bytes and messages published and not yet
/// taken by every member (see [`Hub::queued`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queued {
    /// Bytes of frames, of every encoding together (members that compress differently each
    /// have their own frames of the same messages).
    pub bytes: usize,
    /// Messages (of the encoding that holds the most).
    pub messages: usize,
}

/// The link between a hub and the hubs of other processes (a message bus such as Redis or NATS
/// pub/sub): what this process publishes goes out through it, and what the others publish comes
/// in through [`Hub::publish_local`].
///
/// The hub calls it with its lock on the rooms held, so that the calls for one room come in the
/// order of the rooms' life: each method must return at once (hand the work to a task, e.g.
/// over a channel) and must not call the hub back.
///
/// Two kinds of bus:
/// - **Unordered** (the default): the hub delivers what this process publishes to its own
///   members at once, and the bus carries it to the others. Each process sees its own messages
///   first; messages of different processes may interleave differently in each.
/// - **Ordered** ([`Bus::ordered`] is true): the bus gives each room's messages one order for
///   every process (e.g. a position from a shared log) and delivers this process's messages
///   back with [`Hub::publish_local`] in that order, so every member sees the same sequence.
///   The hub then does not deliver them itself: local delivery waits for the bus.
pub trait Bus: Send + Sync + 'static {
    /// The first member joined `room` in this process: start receiving what other processes
    /// publish to it, and deliver it with [`Hub::publish_local`].
    fn subscribe(&self, room: &str);
    /// The last member left `room` in this process: stop receiving it.
    fn unsubscribe(&self, room: &str);
    /// A message published in this process, for the other processes (and, when the bus is
    /// [ordered](Bus::ordered), for this one too).
    ///
    /// # Errors
    ///
    /// [`BusRefused`] when the bus cannot take the message. An unordered bus has let the hub
    /// deliver it to this process's members all the same (only the other processes miss it;
    /// the bus counts it); with an ordered one nobody receives it and the hub's publish fails
    /// with [`PublishError::Refused`].
    fn publish(&self, room: &str, kind: DataKind, payload: &[u8]) -> Result<(), BusRefused>;
    /// Whether the bus delivers this process's messages back, in one order for every process
    /// (see the trait docs). Asked once, when the hub is made. False by default.
    fn ordered(&self) -> bool {
        false
    }
}

/// A message a [`Bus`] could not take (see [`Bus::publish`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusRefused;

impl fmt::Display for BusRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the bus refused the message")
    }
}

impl std::error::Error for BusRefused {}

/// Named rooms of connections, and what is published to them (see the [module](self) docs).
///
/// Cloning is cheap (an `Arc`); clones share the rooms.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

/// What every clone of a hub and every member share.
struct Shared {
    config: HubConfig,
    rooms: Mutex<HashMap<Box<str>, Arc<Room>>>,
    bus: Option<Arc<dyn Bus>>,
    /// The bus is [ordered](Bus::ordered): it delivers this process's messages too.
    ordered: bool,
    members: AtomicU64,
    published: AtomicU64,
    dropped: AtomicU64,
    closed: AtomicU64,
    compressed: AtomicU64,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .field("bus", &self.shared.bus.is_some())
            .finish()
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(HubConfig::default())
    }
}

impl Hub {
    /// A hub with no rooms yet.
    pub fn new(config: HubConfig) -> Hub {
        Hub::build(config, None)
    }

    /// A hub whose rooms span processes through `bus` (see [`Bus`]).
    pub fn with_bus(config: HubConfig, bus: Arc<dyn Bus>) -> Hub {
        Hub::build(config, Some(bus))
    }

    fn build(mut config: HubConfig, bus: Option<Arc<dyn Bus>>) -> Hub {
        if let WhenFull::Close(code) = config.when_full {
            if !code.is_sendable() {
                config.when_full = WhenFull::Close(CloseCode::POLICY_VIOLATION);
            }
        }
        let ordered = bus.as_ref().is_some_and(|bus| bus.ordered());
        Hub {
            shared: Arc::new(Shared {
                config,
                rooms: Mutex::new(HashMap::new()),
                bus,
                ordered,
                members: AtomicU64::new(0),
                published: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                closed: AtomicU64::new(0),
                compressed: AtomicU64::new(0),
            }),
        }
    }

    /// The hub's configuration.
    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    /// Make `ws` a member of this hub, in no room yet (see [`Member`]).
    pub fn member<S>(&self, ws: crate::WebSocket<S>) -> Member<S> {
        Member::new(self.clone(), ws)
    }

    /// Publish `message` to every member of `room` (in this process, and through the [`Bus`]
    /// in the others); returns how many members in this process it is for (0 if the room has
    /// none). It is framed once (and compressed once per distinct compression among the
    /// members) and queued for each; publishing never waits. With an [ordered](Bus::ordered)
    /// bus, this process's members receive it when the bus delivers it back.
    ///
    /// # Errors
    ///
    /// [`PublishError::NotData`] for a ping, pong or fragment; [`PublishError::TooLarge`] for a
    /// message larger than [`HubConfig::max_queued_bytes`]; [`PublishError::Refused`] when an
    /// ordered bus refuses it. Nothing is published then.
    pub fn publish(&self, room: &str, message: &Message) -> Result<usize, PublishError> {
        let payload = self.check(message)?;
        self.to_bus(room, payload)?;
        if self.shared.ordered {
            return Ok(self.members(room));
        }
        Ok(self.publish_payload(room, payload))
    }

    /// Publish `message` to the members of `room` in this process only (what a [`Bus`] delivers
    /// from the other processes).
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub fn publish_local(&self, room: &str, message: &Message) -> Result<usize, PublishError> {
        let payload = self.check(message)?;
        Ok(self.publish_payload(room, payload))
    }

    /// How many members `room` has (in this process).
    pub fn members(&self, room: &str) -> usize {
        self.room(room).map_or(0, |r| r.members())
    }

    /// What `room` holds for its slowest member (`None` if it has no member).
    pub fn queued(&self, room: &str) -> Option<Queued> {
        self.room(room).map(|r| {
            let (bytes, messages) = r.queued();
            Queued { bytes, messages }
        })
    }

    /// The hub's counters.
    pub fn stats(&self) -> HubStats {
        HubStats {
            // Members first: a count of no member comes with every room they left removed.
            members: self.shared.members.load(Ordering::Acquire) as usize,
            rooms: self.shared.rooms().len(),
            published: self.shared.published.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            closed: self.shared.closed.load(Ordering::Relaxed),
            compressed: self.shared.compressed.load(Ordering::Relaxed),
        }
    }

    /// The payload of a message that can be published.
    fn check<'m>(&self, message: &'m Message) -> Result<Payload<'m>, PublishError> {
        let payload = match message {
            Message::Text(text) => Payload::Text(text),
            Message::Binary(data) => Payload::Binary(data),
            Message::Ping(_) | Message::Pong(_) | Message::Fragment(_) => {
                return Err(PublishError::NotData)
            }
        };
        // The frame: the payload and a header of at most 10 bytes (unmasked).
        let len = payload.len().saturating_add(10);
        let max = self.shared.config.max_queued_bytes;
        if len > max {
            return Err(PublishError::TooLarge { len, max });
        }
        Ok(payload)
    }

    /// Hand a message published here to the bus, if any. `Err` only when an ordered bus
    /// refuses it (an unordered bus's refusal leaves local delivery to go on).
    fn to_bus(&self, room: &str, payload: Payload<'_>) -> Result<(), PublishError> {
        let Some(bus) = &self.shared.bus else {
            return Ok(());
        };
        let taken = match payload {
            Payload::Text(text) => bus.publish(room, DataKind::Text, text.as_bytes()),
            Payload::Binary(data) => bus.publish(room, DataKind::Binary, data),
        };
        match taken {
            Err(BusRefused) if self.shared.ordered => Err(PublishError::Refused),
            _ => Ok(()),
        }
    }

    /// Publish to the members of `room` in this process.
    fn publish_payload(&self, room: &str, payload: Payload<'_>) -> usize {
        match self.room(room) {
            Some(room) => self.shared.publish_to(&room, payload, None).0,
            None => 0,
        }
    }

    fn room(&self, name: &str) -> Option<Arc<Room>> {
        self.shared.rooms().get(name).cloned()
    }
}

thread_local! {
    /// An empty list with room for the wakers of a room's waiting members, swapped with the
    /// room's list when publishing (see `Room::publish`): waking thousands of members then
    /// allocates nothing.
    static WOKEN: std::cell::RefCell<Vec<std::task::Waker>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Shared {
    fn rooms(&self) -> MutexGuard<'_, HashMap<Box<str>, Arc<Room>>> {
        // Changes to the map are single calls: a panic elsewhere cannot leave it half-changed.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Frame `payload` for `room`'s members (compressed once per distinct compression among
    /// them) and wake those waiting; returns how many members it is for and, for a `publisher`
    /// of that encoding in the room, where its frame is in the publisher's log.
    fn publish_to(
        &self,
        room: &Room,
        payload: Payload<'_>,
        publisher: Option<Encoding>,
    ) -> room::Published {
        let mut copies = Copies::default();
        let published = loop {
            let attempt = WOKEN.with(|woken| match woken.try_borrow_mut() {
                Ok(mut woken) => {
                    let published = room.publish(payload, &copies, publisher, &mut woken);
                    room::wake(&mut woken);
                    published
                }
                // Only if a waker publishes in turn (a custom waker): a list of its own.
                Err(_) => {
                    let mut woken = Vec::new();
                    let published = room.publish(payload, &copies, publisher, &mut woken);
                    room::wake(&mut woken);
                    published
                }
            });
            match attempt {
                Ok(published) => break published,
                // A compression the members need: made without the room's lock, once; the
                // publish is tried again (a member joining meanwhile may need another).
                Err(missing) => {
                    copies.make(missing, payload);
                    self.compressed.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        match published {
            Some((members, at)) => {
                self.published.fetch_add(1, Ordering::Relaxed);
                (members, at)
            }
            None => (0, None),
        }
    }

    /// Join `name` (made if it does not exist) as a member whose connection takes `encoding`:
    /// the room and the member's cursor in it.
    fn join(&self, name: &str, encoding: Encoding) -> (Arc<Room>, room::Position) {
        let mut rooms = self.rooms();
        let room = match rooms.get(name) {
            Some(room) => Arc::clone(room),
            None => {
                let room = Arc::new(Room::new(
                    name,
                    self.config.max_queued_bytes,
                    self.config.max_queued_messages,
                ));
                rooms.insert(name.into(), Arc::clone(&room));
                if let Some(bus) = &self.bus {
                    bus.subscribe(name);
                }
                room
            }
        };
        // Under the map's lock: a member leaving at the same time cannot remove the room
        // between its lookup and this join.
        let cursor = room.join(encoding);
        drop(rooms);
        self.members.fetch_add(1, Ordering::Relaxed);
        (room, cursor)
    }

    /// A member of `encoding` at `cursor` leaves `room`; the room goes once it has no member.
    fn leave(&self, room: &Arc<Room>, encoding: Encoding, cursor: room::Position) {
        if room.leave(encoding, cursor) == 0 {
            let mut rooms = self.rooms();
            // Someone may have joined since: only an empty room that is still this one goes.
            let current = rooms.get(room.name()).is_some_and(|r| Arc::ptr_eq(r, room));
            if current && room.members() == 0 {
                rooms.remove(room.name());
                if let Some(bus) = &self.bus {
                    bus.unsubscribe(room.name());
                }
            }
        }
        // Counted last (and released): whoever reads no member left also finds every room
        // its last member left removed.
        self.members.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests;
