//! WebSocket extensions (RFC 6455 §9).
//!
//! Each extension keeps its negotiation (what goes in `Sec-WebSocket-Extensions`, decided once
//! during the opening handshake) apart from what it does to messages afterwards: negotiation
//! yields plain parameters, and the [`Connection`](crate::Connection) is built from them.
//!
//! - `permessage_deflate` (feature `deflate`): RFC 7692 compression.

#[cfg(feature = "deflate")]
pub mod permessage_deflate;
