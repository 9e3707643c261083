//! # gangway-proto
//!
//! The WebSocket protocol (RFC 6455) with no I/O inside: no sockets, no async runtime, no clock.
//! Bytes go in, events and bytes come out; the caller owns the transport and the time.
//!
//! ```text
//!   transport bytes ──► handshake::server::parse_request / ClientHandshake::parse_response
//!                          │ Negotiated + leftover bytes
//!                          ▼
//!   transport bytes ──► Connection::receive_data(bytes, now)
//!                          │ kept until asked for
//!                          ▼
//!                       Connection::poll_event() ──► Text / Binary / Ping / Pong / Close
//!                          │ (decodes the next frame; answers pings and the peer's close)
//!   send_text / send_binary / send_close ──► Connection::output() ──► transport
//!   poll_timeout(now) ──► one timer ──► handle_timeout(now)
//! ```
//!
//! A blocking echo loop, the whole protocol after the handshake:
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::time::Instant;
//! use gangway_proto::{Config, Connection, Event, Role};
//!
//! fn echo(mut socket: std::net::TcpStream, leftover: &[u8]) -> std::io::Result<()> {
//!     let mut conn = Connection::new(Role::Server, Config::default());
//!     conn.receive_data(leftover, Instant::now()); // bytes that followed the handshake head
//!     let mut buf = vec![0u8; 16 * 1024];
//!     loop {
//!         // Until the input holds no whole event (`Ok(None)`), or the peer broke the protocol
//!         // (`Err`: the close frame that fails the connection is queued).
//!         while let Ok(Some(event)) = conn.poll_event() {
//!             match event {
//!                 Event::Text(t) => { let _ = conn.send_text(&t); }
//!                 Event::Binary(b) => { let _ = conn.send_binary(&b); }
//!                 _ => {} // pings are answered, closes echoed, by the core
//!             }
//!         }
//!         socket.write_all(conn.output())?;
//!         let n = conn.output().len();
//!         conn.consume_output(n);
//!         if conn.should_close_transport() {
//!             return Ok(());
//!         }
//!         let n = socket.read(&mut buf)?;
//!         if n == 0 {
//!             conn.receive_eof();
//!             let _ = conn.poll_event(); // hands out what is left, then the end
//!             return Ok(());
//!         }
//!         conn.receive_data(&buf[..n], Instant::now());
//!     }
//! }
//! ```
//!
//! Design notes (the life cycle, the decode path, output and time): the [`connection`] module.

pub mod config;
pub mod connection;
pub mod error;
pub mod extensions;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod prepared;
pub mod random;
pub mod role;
pub mod text;
pub mod utf8;

pub use config::Config;
pub use connection::{Connection, End, Replies, SpareBuffers, State};
pub use error::{ApiMisuse, HandshakeError, ProtocolError, TimeoutError};
pub use frame::{CloseCode, CloseFrame, OpCode};
pub use message::{DataKind, Event, EventRef};
pub use random::{OsRandom, RandomSource, SeededRandom};
pub use role::Role;
pub use text::Utf8Bytes;
