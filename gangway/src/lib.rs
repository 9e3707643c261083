//! # gangway
//!
//! WebSocket (RFC 6455) client and server for tokio, built on the sans-IO core
//! [`gangway_proto`]. This crate only moves bytes: it feeds socket reads to the core, writes what
//! the core produces, and bounds the time and memory each connection may take.
//!
//! ```text
//!   ClientBuilder::connect ─┐                       ┌─ ServerBuilder::read_request
//!   (TCP + request/response)│                       │  Incoming::accept (checks, 101)
//!                           ▼                       ▼
//!                 WebSocket<S>: Stream<Item = Result<Message>> + Sink<Message>
//!                           │  socket reads ──► Connection::receive_data
//!                           │  Connection::output() ──► socket writes
//!                           ▼
//!                 gangway_proto::Connection (one state machine: frames, pongs, close)
//! ```
//!
//! - Clients: [`connect`] or [`ClientBuilder`].
//! - Servers: [`accept`] or [`ServerBuilder`]; [`ServerBuilder::read_request`] lets a server
//!   answer plain HTTP requests on the same port.
//! - Inside a hyper 1 or axum server (feature `hyper`): `hyper::upgrade` accepts a request the
//!   HTTP server already parsed, with the same checks.
//! - Bounds: handshakes time out ([`DEFAULT_HANDSHAKE_TIMEOUT`]), request heads are limited, the
//!   close handshake times out ([`DEFAULT_CLOSE_TIMEOUT`]), and sending waits while more than
//!   [`WRITE_BUFFER_HIGH_WATER`] bytes are queued, then fails if the peer reads nothing for the
//!   write timeout ([`Config::write_timeout`], 30 s).
//! - Keepalive, off by default: pings after [`Config::ping_interval`] of silence, and a dead
//!   peer dropped after [`Config::idle_timeout`] ([`Error::Unresponsive`]); set them on the
//!   builders. The core decides; this crate only arms the timer it asks for.
//! - Origin policy: [`ServerBuilder::allowed_origins`], [`ServerBuilder::require_origin`].
//! - TLS (feature `rustls`, on by default): `wss://` URLs in [`ClientBuilder::connect`]; servers
//!   accept on a TLS stream from a [`tls::TlsAcceptor`] (see [`tls`]).
//! - WebSocket over HTTP/2 (RFC 8441, feature `http2`): [`http2`] serves and opens WebSockets as
//!   streams of an HTTP/2 connection, several per connection.
//! - Client proxies: HTTP `CONNECT` and SOCKS5, explicit ([`ClientBuilder::proxy`]) or from
//!   `https_proxy`/`http_proxy`/`all_proxy`/`no_proxy` ([`ClientBuilder::proxy_from_env`]).
//!
//! A clean close is not an error: the stream ends with `None` and
//! [`WebSocket::close_frame`] holds the peer's close frame.

#![forbid(unsafe_code)]

mod client;
mod deadline;
mod error;
mod head;
#[cfg(feature = "http2")]
pub mod http2;
pub mod hub;
#[cfg(feature = "hyper")]
pub mod hyper;
mod message;
mod origin;
mod proxy;
mod server;
mod stream;
#[cfg(feature = "rustls")]
pub mod tls;
mod transport;

use std::time::Duration;

pub use client::{connect, ClientBuilder};
pub use error::{Error, TlsError};
pub use gangway_proto as proto;
#[cfg(feature = "deflate")]
pub use gangway_proto::extensions::permessage_deflate::DeflateConfig;
pub use gangway_proto::{CloseCode, CloseFrame, Config, DataKind, EventRef, Replies, Utf8Bytes};
pub use message::{Fragment, Message};
pub use proxy::ProxyError;
pub use server::{accept, Incoming, ServerBuilder};
pub use stream::{WebSocket, DEFAULT_CLOSE_TIMEOUT, WRITE_BUFFER_HIGH_WATER};
pub use transport::MaybeTlsStream;

/// How long the opening handshake may take by default (client: TCP connect included).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

// Keep the README's examples compiling: rustdoc tests its `rust` code blocks.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
