//! Messages: what a [`Connection`](crate::Connection) delivers and accepts, and reassembly of
//! fragmented messages with size accounting (RFC 6455 §5.4).

use bytes::Bytes;

use crate::frame::CloseFrame;

/// What the connection delivers from the peer, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete text message (validated UTF-8, reassembled if it was fragmented).
    Text(String),
    /// A complete binary message (reassembled if it was fragmented).
    Binary(Bytes),
    /// A ping. The pong is already queued: nothing to do.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer's close frame (`None`: it had no status code, 1005). If we had not sent a close,
    /// the answering close (same code) is already queued.
    Close(Option<CloseFrame>),
}

/// The kind of a data message, for [`Connection::send_fragment`](crate::Connection::send_fragment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    /// UTF-8 text.
    Text,
    /// Arbitrary bytes.
    Binary,
}
