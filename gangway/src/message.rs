//! Messages as the tokio layer sends and receives them.

use bytes::Bytes;
use gangway_proto::{DataKind, Event, Utf8Bytes};

/// A WebSocket message. Close frames are not messages: the stream ends after the peer's close,
/// and [`WebSocket::close_frame`](crate::WebSocket::close_frame) returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A UTF-8 text message: read it as a `&str` (it dereferences to one).
    ///
    /// A received one that arrived whole in one read shares the read buffer, as
    /// [`Binary`](Message::Binary) does (see there).
    Text(Utf8Bytes),
    /// A binary message.
    ///
    /// A received one that arrived whole in one read is a slice of the thread's read buffer, not
    /// a copy: keeping it keeps that buffer's allocation (up to 256 KiB) alive, and reading goes
    /// on in a new one meanwhile. To keep many small messages for long, store copies
    /// (`Bytes::copy_from_slice(&data)`).
    Binary(Bytes),
    /// A ping (received pings are answered automatically; they are shown for information).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A piece of a message sent or received as a stream (see [`Fragment`]). Received only when
    /// [`Config::deliver_fragments`](crate::Config::deliver_fragments) is on; without it, every
    /// message arrives whole as [`Text`](Message::Text) or [`Binary`](Message::Binary).
    Fragment(Fragment),
}

/// A piece of a message sent or received as a stream of fragments.
///
/// Sending: a run of fragments of one kind, the last with `fin`, makes one message (each
/// fragment goes out as one frame or more). Receiving with
/// [`Config::deliver_fragments`](crate::Config::deliver_fragments): the pieces of each message as
/// they arrived, in order, the last with `fin`. Text pieces are each valid UTF-8.
///
/// See [`WebSocket::recv_fragment`](crate::WebSocket::recv_fragment) and
/// [`WebSocket::send_fragment`](crate::WebSocket::send_fragment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// The kind of the whole message.
    pub kind: DataKind,
    /// The bytes of this piece (for text, valid UTF-8 on their own when received).
    pub data: Bytes,
    /// The message's last piece.
    pub fin: bool,
}

impl Fragment {
    /// The piece as text: `None` for binary (or bytes that are not UTF-8, which a received text
    /// piece never is).
    pub fn text(&self) -> Option<&str> {
        match self.kind {
            DataKind::Text => std::str::from_utf8(&self.data).ok(),
            DataKind::Binary => None,
        }
    }
}

impl Message {
    /// A text message (from a `String` without copying it).
    pub fn text(s: impl Into<Utf8Bytes>) -> Self {
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
            Event::Fragment { kind, data, fin } => {
                Some(Message::Fragment(Fragment { kind, data, fin }))
            }
            Event::Close(_) => None,
        }
    }
}
