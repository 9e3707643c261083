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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use gangway::hub::{Hub, HubConfig};
use gangway::proto::DataKind;
use gangway::{Message, Utf8Bytes};

use crate::bus::lock;
use crate::{Bus, BusConfig, BusError, Delivery, Engine, Kind, Subscription};

/// Connect a bus to `engine` and make a hub that publishes through it: the hub frames and
/// delivers to this process's members; the bus carries what they publish to the other nodes
/// and delivers theirs with `Hub::publish_local`.
///
/// Without history only: with history every message must come back from the engine with its
/// position before any member gets it, which is not how a hub's `publish` delivers.
///
/// # Drop behavior
///
/// The hub and the bus refer to each other: they live, and the engine connection stays open,
/// as long as the process (this is meant for a server's one hub).
///
/// # Errors
///
/// As [`Bus::connect`]; [`BusError::Config`] when history is on.
pub async fn hub_with_bus(
    engine: Engine,
    config: BusConfig,
    hub_config: HubConfig,
) -> Result<(Hub, Bus), BusError> {
    if config.history.is_some() {
        return Err(BusError::Config(
            "a hub publishes locally first: history needs Bus::publish instead",
        ));
    }
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

/// Another node's message, to this process's members of `room`.
fn deliver(hub: &Hub, room: &str, delivery: Delivery) {
    let message = match delivery.kind {
        Kind::Binary => Message::Binary(delivery.payload),
        Kind::Text => match Utf8Bytes::try_from(delivery.payload) {
            Ok(text) => Message::Text(text),
            Err(_) => {
                tracing::debug!(room, "a text message from the engine is not UTF-8; dropped");
                return;
            }
        },
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

    fn publish(&self, room: &str, kind: DataKind, payload: &[u8]) {
        let kind = match kind {
            DataKind::Text => Kind::Text,
            DataKind::Binary => Kind::Binary,
        };
        // Refusals (too large, queue full) are counted in the bus's stats; the local members
        // have the message already.
        let _ = self
            .bus
            .forward(room, kind, Bytes::copy_from_slice(payload));
    }
}
