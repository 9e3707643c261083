//! # gangway-proto
//!
//! The WebSocket protocol (RFC 6455) with no I/O inside: no sockets, no async runtime, no clock.
//! Bytes go in, events and bytes come out; the caller owns the transport.
//!
//! ```text
//!   transport bytes ──► handshake::server::parse_request / ClientHandshake::parse_response
//!                          │ Negotiated + leftover bytes
//!                          ▼
//!   transport bytes ──► Connection::receive_data ──► poll_event() ──► Text / Binary / Ping / Close
//!   send_text / send_binary / send_close ──► output() ──► transport
//! ```
//!
//! A blocking echo loop, the whole protocol after the handshake:
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use gangway_proto::{Config, Connection, Event, Role};
//!
//! fn echo(mut socket: std::net::TcpStream, leftover: &[u8]) -> std::io::Result<()> {
//!     let mut conn = Connection::new(Role::Server, Config::default());
//!     let _ = conn.receive_data(leftover); // bytes that followed the handshake head
//!     let mut buf = vec![0u8; 16 * 1024];
//!     loop {
//!         while let Some(event) = conn.poll_event() {
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
//!             let _ = conn.receive_eof();
//!             return Ok(());
//!         }
//!         let _ = conn.receive_data(&buf[..n]); // a violation queues the close frame
//!     }
//! }
//! ```

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
pub use connection::{Connection, SpareBuffers, State};
pub use error::{ApiMisuse, HandshakeError, ProtocolError, TimeoutError};
pub use frame::{CloseCode, CloseFrame, OpCode};
pub use message::{DataKind, Event};
pub use random::{OsRandom, RandomSource, SeededRandom};
pub use role::Role;
pub use text::Utf8Bytes;
