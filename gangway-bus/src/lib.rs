//! # gangway-bus
//!
//! Rooms across processes: a [`Bus`] carries what one node publishes to a room to the members
//! of that room on every node, through an engine that already knows how to do it: Redis
//! (feature `redis`: pub/sub, and Streams for history) or NATS (feature `nats`: core pub/sub).
//! [`MemoryEngine`] does the same inside one process, for tests.
//!
//! ```text
//!   node A                               engine                          node B
//!   publish(room, msg) ─► queue (bounded) ─► PUBLISH / EVALSHA ─► channel ─► subscriber task
//!     └─ no history: handler(room) at once                                 └─ handler(room)
//!   subscribe(room): counted; the node's one engine subscription per room lives while
//!   at least one local member does
//! ```
//!
//! With feature `hub`, [`hub_with_bus`] makes a `gangway::hub::Hub` whose rooms span processes;
//! `gangway serve --broadcast --redis URL` (or `--nats URL`) is that.
//!
//! The bus itself knows nothing of WebSockets: the `handler` given to [`Bus::connect`] receives every
//! [`Delivery`] for a room (typically it hands the bytes to the room's local fan-out, which frames
//! them once for all members), and the application calls [`Bus::publish`] for what its members
//! send.
//!
//! # Delivery
//!
//! - **Without history, at most once.** A message reaches the nodes subscribed to its room when
//!   it is published; a node that is disconnected from the engine at that moment misses it
//!   (Redis pub/sub and NATS core keep nothing). Local members never wait for the engine: a
//!   node delivers its own publishes itself, also while the engine is down. A node counts what
//!   it knows it missed ([`Stats::lost`]): every message carries its publisher's stream and
//!   sequence number, so a jump is seen when the next message of that publisher arrives.
//!   Duplicates (a publish retried after a lost answer) are dropped.
//! - **With history (Redis), in order and without loss within the history.** Each room's last N
//!   messages are kept in a Redis Stream; a Lua script gives every message the room's next
//!   offset, stores it, and publishes it, in one step. Every node, the publisher's included,
//!   delivers from the engine in offset order; a node that sees an offset jump (it was
//!   disconnected) fetches the missing ones from the stream before going on. A client that
//!   reconnects with its last position gets what it missed ([`Bus::recover`],
//!   [`Subscription::join_at`]) or is told it cannot. While the engine is down, local delivery
//!   waits for it (offsets come from one place); publishes wait in the bounded queue.
//!
//! The room's history has an **epoch**: a token stored beside it. When the engine loses the
//! history (a restart without persistence), the next publish finds no epoch and writes a new
//! one, and offsets start again from 1: positions of the old epoch cannot be recovered, and the
//! client is told so rather than given a wrong continuation. See [`envelope`] for what clients
//! receive and how they pass a position back.
//!
//! # Faults
//!
//! A lost engine connection is reconnected with backoff (50 ms doubling to 1 s) and every room
//! resubscribed, without anyone asking; each loss is counted ([`Stats::gaps`]) and logged.
//! Nothing from the network can make the bus panic: engine messages that are not its own are
//! dropped and counted ([`Stats::foreign`]).
//!
//! # Limits
//!
//! [`BusConfig::max_message_size`] refuses larger publishes before they are queued;
//! [`BusConfig::queue_capacity`] bounds the publishes waiting for the engine connection.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use gangway_bus::{Bus, BusConfig, Engine, Kind, MemoryEngine};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::Memory(MemoryEngine::default());
//! let bus = Bus::connect(engine, BusConfig::default(), |room, delivery| {
//!     // Hand `delivery.payload` to the room's local members.
//!     println!("{room}: {:?}", delivery.payload);
//! })
//! .await?;
//! let member = bus.subscribe("/chat");
//! bus.publish("/chat", Kind::Text, Bytes::from_static(b"hello"))?;
//! drop(member); // the last local member: the node unsubscribes
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod bus;
pub mod envelope;
mod error;
#[cfg(feature = "hub")]
mod hub;
mod memory;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "redis")]
mod redis;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

pub use bus::{Bus, BusConfig, Delivery, Handler, Stats, Subscription};
pub use envelope::{BadPosition, Control, Kind, Position};
pub use error::{BusError, PublishError, RecoverError};
#[cfg(feature = "hub")]
pub use hub::{hub_with_bus, join_with_history, JoinError, Joined};
pub use memory::MemoryEngine;

/// Where the rooms meet.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Engine {
    /// Inside this process (no history).
    Memory(MemoryEngine),
    /// A Redis server, by URL (`redis://127.0.0.1:6379`, `redis://:password@host/0`): pub/sub,
    /// and with history a Stream per room.
    #[cfg(feature = "redis")]
    Redis(String),
    /// A NATS server, by URL (`nats://127.0.0.1:4222`): core pub/sub, no history.
    #[cfg(feature = "nats")]
    Nats(String),
}

impl Engine {
    fn has_history(&self) -> bool {
        match self {
            Engine::Memory(_) => false,
            #[cfg(feature = "redis")]
            Engine::Redis(_) => true,
            #[cfg(feature = "nats")]
            Engine::Nats(_) => false,
        }
    }

    async fn start(
        self,
        shared: Arc<bus::Shared>,
        outgoing: mpsc::Receiver<bus::Outgoing>,
    ) -> Result<Started, BusError> {
        match self {
            Engine::Memory(engine) => Ok(engine.start(shared, outgoing)),
            #[cfg(feature = "redis")]
            Engine::Redis(url) => redis::start(&url, shared, outgoing).await,
            #[cfg(feature = "nats")]
            Engine::Nats(url) => nats::start(&url, shared, outgoing).await,
        }
    }
}

/// An engine's running tasks.
struct Started {
    tasks: Vec<AbortHandle>,
    #[cfg(feature = "redis")]
    history: Option<redis::History>,
}

/// Reconnection delays: 50 ms, doubling, at most 1 s.
#[cfg(any(feature = "redis", feature = "nats"))]
fn backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(50u64 << attempt.min(4)).min(std::time::Duration::from_secs(1))
}
