//! Messages as the tokio layer sends and receives them.

use bytes::Bytes;
use gangway_proto::Event;

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

impl Message {
    /// The message for a core event; `None` for the peer's close, which is not a message.
    pub(crate) fn from_event(event: Event) -> Option<Message> {
        match event {
            Event::Text(text) => Some(Message::Text(text)),
            Event::Binary(data) => Some(Message::Binary(data)),
            Event::Ping(payload) => Some(Message::Ping(payload)),
            Event::Pong(payload) => Some(Message::Pong(payload)),
            Event::Close(_) => None,
        }
    }
}
