//! Messages as the tokio layer sends and receives them.

use bytes::Bytes;

/// A WebSocket message. Close frames are not messages: the stream ends after the peer's close,
/// and [`WebSocket::close_frame`](crate::WebSocket::close_frame) returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A UTF-8 text message.
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// A ping (received pings are answered automatically; they are shown for information).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(s: impl Into<String>) -> Self {
        Message::Text(s.into())
    }

    /// A binary message.
    pub fn binary(b: impl Into<Bytes>) -> Self {
        Message::Binary(b.into())
    }
}
