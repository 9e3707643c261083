//! # gangway
//!
//! WebSocket (RFC 6455) client and server for tokio, built on the sans-IO core
//! [`gangway_proto`]. This crate only moves bytes: it feeds socket reads to the core, writes what
//! the core produces, and bounds the time and memory each connection may take.

mod client;
mod error;
mod message;
mod server;
mod stream;

pub use client::{connect, ClientBuilder};
pub use error::Error;
pub use gangway_proto as proto;
pub use gangway_proto::{CloseCode, CloseFrame, Config};
pub use message::Message;
pub use server::{accept, Incoming, ServerBuilder};
pub use stream::WebSocket;
