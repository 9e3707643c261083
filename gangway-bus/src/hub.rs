//! A [`gangway::hub::Hub`] whose rooms span processes (feature `hub`): the hub frames and
//! delivers to this process's members; the bus carries what they publish to the other nodes
//! and delivers theirs with [`Hub::publish_local`].
//!
//! ```no_run
//! use gangway::hub::HubConfig;
//! use gangway_bus::{hub_with_bus, BusConfig, Engine};
//!
//! # async fn run() -> Result<(), gangway_bus::BusError> {
//! let engine = Engine::Redis("redis://127.0.0.1:6379".to_owned());
//! let (hub, _bus) = hub_with_bus(engine, BusConfig::default(), HubConfig::default()).await?;
//! // Members of `hub` in any process connected to this Redis share their rooms.
//! # let _ = hub;
//! # Ok(())
//! # }
//! ```
//!
//! With history ([`BusConfig::history`]), the hub's bus is *ordered*
//! ([`gangway::hub::Bus::ordered`]): what a member publishes goes to the engine first, and every
//! node, this one included, delivers it from there with its position line, so every member of a
//! room sees one sequence. Members then join with [`join_with_history`], which delivers what a reconnecting
//! client missed before the live messages.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures_util::SinkExt;
use gangway::hub::{BusRefused, Hub, HubConfig, Member};
use gangway::proto::DataKind;
use gangway::{Message, Utf8Bytes};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::bus::lock;
use crate::envelope::{Control, Position};
use crate::{Bus, BusConfig, BusError, Delivery, Engine, Kind, RecoverError, Subscription};

/// Connect a bus to `engine` and make a hub that publishes through it: the hub frames and
/// delivers to this process's members; the bus carries what they publish to the other nodes
/// and delivers theirs with `Hub::publish_local`.
///
/// Without history, a member's message reaches the members of this process at once and the
/// other processes through the engine (at most once). With history the bus is ordered: every
/// message, this process's too, is delivered from the engine with its position, in the room's
/// one order; local delivery then waits for the engine (while it is down, publishes wait in the
/// bus's bounded queue). Members of such a hub join rooms with [`join_with_history`].
///
/// # Drop behavior
///
/// The hub and the bus refer to each other: they live, and the engine connection stays open,
/// as long as the process (this is meant for a server's one hub).
///
/// # Errors
///
/// As [`Bus::connect`].
pub async fn hub_with_bus(
    engine: Engine,
    config: BusConfig,
    hub_config: HubConfig,
) -> Result<(Hub, Bus), BusError> {
    let slot: Arc<OnceLock<Hub>> = Arc::default();
    let target = slot.clone();
    let bus = Bus::connect(engine, config, move |room, delivery| {
        if let Some(hub) = target.get() {
            deliver(hub, room, delivery);
        }
    })
    .await?;
    let link = Link {
        bus: bus.clone(),
        rooms: Mutex::default(),
    };
    let hub = Hub::with_bus(hub_config, Arc::new(link));
    // Set once, here: nothing was delivered before (no room had members).
    let _ = slot.set(hub.clone());
    Ok((hub, bus))
}

/// A delivery as the message a member receives; `None` for text that is not UTF-8 (nothing the
/// bus publishes: another program's bytes on the channel).
fn message(room: &str, delivery: Delivery) -> Option<Message> {
    match delivery.kind {
        Kind::Binary => Some(Message::Binary(delivery.payload)),
        Kind::Text => match Utf8Bytes::try_from(delivery.payload) {
            Ok(text) => Some(Message::Text(text)),
            Err(_) => {
                tracing::debug!(room, "a text message from the engine is not UTF-8; dropped");
                None
            }
        },
    }
}

/// A message from the engine (another node's, or with history any node's), to this process's
/// members of `room`.
fn deliver(hub: &Hub, room: &str, delivery: Delivery) {
    let Some(message) = message(room, delivery) else {
        return;
    };
    // Refused only when larger than a member's queue can hold; the hub counts nothing then,
    // and neither can the members: say so.
    if let Err(e) = hub.publish_local(room, &message) {
        tracing::warn!(room, "a message from another node was not delivered: {e}");
    }
}

/// The hub's side of the bus: one [`Subscription`] per room with members in this process.
struct Link {
    bus: Bus,
    rooms: Mutex<HashMap<Box<str>, Subscription>>,
}

impl gangway::hub::Bus for Link {
    fn subscribe(&self, room: &str) {
        let subscription = self.bus.subscribe(room);
        lock(&self.rooms).insert(room.into(), subscription);
    }

    fn unsubscribe(&self, room: &str) {
        let subscription = lock(&self.rooms).remove(room);
        drop(subscription);
    }

    fn publish(&self, room: &str, kind: DataKind, payload: &[u8]) -> Result<(), BusRefused> {
        let kind = match kind {
            DataKind::Text => Kind::Text,
            DataKind::Binary => Kind::Binary,
        };
        // Refusals (too large, queue full) are counted in the bus's stats. Without history the
        // local members have the message already; with history nobody gets it, and the hub
        // says so to the publisher.
        self.bus
            .forward(room, kind, Bytes::copy_from_slice(payload))
            .map_err(|_| BusRefused)
    }

    fn ordered(&self) -> bool {
        self.bus.history()
    }
}

/// How a member joined a room with history (see [`join_with_history`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Joined {
    /// What the client was told after the missed messages: [`Control::Recovered`],
    /// [`Control::Unrecoverable`], or [`Control::Position`] when it asked for nothing.
    pub control: Control,
    /// The room's position when the member joined: live messages follow it.
    pub at: Position,
    /// Messages delivered from the history before the live ones.
    pub recovered: usize,
}

/// Why [`join_with_history`] did not make the connection a member.
#[derive(Debug)]
#[non_exhaustive]
pub enum JoinError {
    /// The bus keeps no history: join with `Member::join`.
    NoHistory,
    /// The bus is shutting down.
    Closed,
    /// The history could not be read (the engine's error is the source).
    Engine(RecoverError),
    /// Sending the missed messages or the control line to the client failed.
    Send(gangway::Error),
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::NoHistory => f.write_str("the bus keeps no history"),
            JoinError::Closed => f.write_str("the bus is closed"),
            JoinError::Engine(_) => f.write_str("cannot read the room's history"),
            JoinError::Send(_) => f.write_str("cannot send the missed messages"),
        }
    }
}

impl std::error::Error for JoinError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JoinError::Engine(e) => Some(e),
            JoinError::Send(e) => Some(e),
            _ => None,
        }
    }
}

/// History on: make `member` a member of `room` so that its client misses nothing and gets
/// nothing twice. `since` is the last position the client saw (from its URL's query, see
/// [`Position::from_query`]), or `None` for a client that starts afresh.
///
/// In order, on the member's connection: the messages after `since` (from the room's history),
/// then one control line, [`Control::Recovered`] (all of them were delivered),
/// [`Control::Unrecoverable`] (`since` is of another epoch, ahead of the room, or older than
/// the history keeps: the client starts over) or [`Control::Position`] (nothing was asked),
/// each with the position the live messages follow; then, as the member's stream is polled,
/// the live messages.
///
/// Waits for the node's engine subscription to the room (while the engine is unreachable, as
/// long as that lasts: bound it with a timeout) and for the history reads.
///
/// # Errors
///
/// See [`JoinError`]. The member is in no room then.
///
/// # Cancel safety
///
/// Not cancel safe: cancelled after it sent some missed messages, the client got part of them
/// and no control line; close the connection then (the client reconnects with the position of
/// the last message it got).
pub async fn join_with_history<S: AsyncRead + AsyncWrite + Unpin>(
    bus: &Bus,
    member: &mut Member<S>,
    room: &str,
    since: Option<&Position>,
) -> Result<Joined, JoinError> {
    if !bus.history() {
        return Err(JoinError::NoHistory);
    }
    // The room's engine subscription (the hub's own comes with its first member) and where
    // this node has delivered the room up to.
    let subscription = bus.subscribe(room);
    let mut at = subscription.ready().await.ok_or(JoinError::Closed)?;
    let (mut control, mut from) = match since {
        None => (Control::Position, None),
        Some(since) => (Control::Recovered, Some(since.clone())),
    };
    let mut recovered = 0;
    loop {
        if let Some(since) = from.take() {
            match bus.recover(room, &since, &at).await {
                Ok(missed) => {
                    for delivery in missed {
                        if let Some(message) = message(room, delivery) {
                            member.feed(message).await.map_err(JoinError::Send)?;
                            recovered += 1;
                        }
                    }
                }
                Err(RecoverError::Unrecoverable) => control = Control::Unrecoverable,
                Err(e) => return Err(JoinError::Engine(e)),
            }
        }
        // Delivery to the room is held while the member joins: nothing after `at` is missed
        // or received twice. If the room moved on while the history was read, deliver the
        // difference and try again.
        match subscription.join_at(&at, || member.join(room)) {
            Ok(_) => break,
            Err(now) => {
                if control == Control::Recovered {
                    from = Some(at);
                }
                at = now;
            }
        }
    }
    // Before any live message: the member's stream delivers only when polled.
    member
        .send(Message::text(at.control(control)))
        .await
        .map_err(JoinError::Send)?;
    Ok(Joined {
        control,
        at,
        recovered,
    })
}
