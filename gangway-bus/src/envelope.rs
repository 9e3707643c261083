//! What travels through the engine, and what a client sees of it.
//!
//! # Engine messages
//!
//! One engine message per publish, binary:
//!
//! ```text
//! byte 0        flags: bit 0 = binary message (else text), bit 1 = positioned (history on)
//! bytes 1..9    publisher stream id (u64, big endian): one per publishing node and room
//! bytes 9..17   sequence number in that publisher stream (u64, big endian), from 1; 0 for an
//!               unsequenced message (below)
//! positioned:   "<epoch>:<offset>\n" (ASCII), written by the engine (the Redis script)
//! the rest      the message as the client sent it
//! ```
//!
//! The publisher stream and sequence number let a receiving node drop a message it has seen
//! already and count the messages it missed (a jump in the sequence), without any help from the
//! engine. A message published without history by a node that has no member in its room is a
//! stream of its own: it is sent unsequenced (sequence number 0), and receivers deliver it without
//! keeping anything of it (there is nothing to follow, and a node may send many of them). The
//! position line is added by Redis when history is on, so that the offset comes
//! from the one place that orders the room's messages.
//!
//! # What a client receives
//!
//! Everything after byte 17: the message unchanged when history is off; with history on, the
//! position line and then the message, in a frame of the message's own kind (text stays text;
//! the line is ASCII, so a text message stays valid UTF-8). The client keeps the last position
//! it saw and passes it back when it reconnects (`?epoch=E&offset=N`).
//!
//! Control messages (history on only) are text and start with `!`, which no epoch does:
//! `!position E:N` (where the room is, when no position was asked for), `!recovered E:N` (the
//! missed messages were delivered before it), `!unrecoverable E:N` (the position asked for is
//! gone: a new epoch, or older than the kept history; live messages follow from E:N).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// Length of the fixed head of an engine message.
pub(crate) const HEAD_LEN: usize = 17;

/// The sequence number of an unsequenced message (see the module's documentation).
pub(crate) const UNSEQUENCED: u64 = 0;

const FLAG_BINARY: u8 = 1;
const FLAG_POSITIONED: u8 = 2;

/// The kind of a message: the WebSocket frame it travels in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A text message (valid UTF-8).
    Text,
    /// A binary message.
    Binary,
}

/// Where a message stands in a room's history: the stream's epoch and the message's offset.
///
/// Offsets count from 1 within an epoch; a room's epoch changes when its history is lost (the
/// engine restarted without persistence, or the keys were removed), and offsets start again.
/// Written and parsed as `epoch:offset`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// The history's epoch: an opaque token of letters and digits.
    pub epoch: String,
    /// The offset of the last message delivered (0: none yet in this epoch).
    pub offset: u64,
}

impl Position {
    /// Parse `epoch:offset`.
    ///
    /// # Errors
    ///
    /// [`BadPosition`] when the text is not an epoch of ASCII letters and digits (1 to 64 of
    /// them), a colon and a decimal offset.
    pub fn parse(text: &str) -> Result<Position, BadPosition> {
        let (epoch, offset) = text.split_once(':').ok_or(BadPosition)?;
        Position::from_parts(epoch, offset)
    }

    /// A position from its two parts, as a client passes them in a URL's query
    /// (`?epoch=E&offset=N`).
    ///
    /// # Errors
    ///
    /// [`BadPosition`], as for [`Position::parse`].
    pub fn from_parts(epoch: &str, offset: &str) -> Result<Position, BadPosition> {
        let epoch_ok =
            (1..=64).contains(&epoch.len()) && epoch.bytes().all(|b| b.is_ascii_alphanumeric());
        let offset_ok = !offset.is_empty() && offset.bytes().all(|b| b.is_ascii_digit());
        if !epoch_ok || !offset_ok {
            return Err(BadPosition);
        }
        let offset = offset.parse().map_err(|_| BadPosition)?;
        Ok(Position {
            epoch: epoch.to_owned(),
            offset,
        })
    }

    /// The position a client asked for in a request's query string: its `epoch` and `offset`
    /// parameters. `Ok(None)` when neither is there.
    ///
    /// # Errors
    ///
    /// [`BadPosition`] when only one of them is there, either is repeated, or they do not parse.
    pub fn from_query(query: Option<&str>) -> Result<Option<Position>, BadPosition> {
        let (mut epoch, mut offset) = (None, None);
        for pair in query.unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "epoch" => &mut epoch,
                "offset" => &mut offset,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(BadPosition);
            }
        }
        match (epoch, offset) {
            (None, None) => Ok(None),
            (Some(epoch), Some(offset)) => Position::from_parts(epoch, offset).map(Some),
            _ => Err(BadPosition),
        }
    }

    /// A control message for a client (a text message): `!<what> epoch:offset`.
    pub fn control(&self, what: Control) -> String {
        format!("!{} {self}", what.as_str())
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// A position that does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadPosition;

impl fmt::Display for BadPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a position is an epoch of letters and digits, a colon and an offset (epoch=E&offset=N)")
    }
}

impl std::error::Error for BadPosition {}

/// The control messages a client receives when history is on (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// `!position E:N`: where the room stands; nothing was asked to be recovered.
    Position,
    /// `!recovered E:N`: every message after the asked position, up to E:N, was delivered.
    Recovered,
    /// `!unrecoverable E:N`: the asked position cannot be recovered; live delivery starts
    /// after E:N.
    Unrecoverable,
}

impl Control {
    fn as_str(self) -> &'static str {
        match self {
            Control::Position => "position",
            Control::Recovered => "recovered",
            Control::Unrecoverable => "unrecoverable",
        }
    }
}

/// An engine message, as built by the publishing node (no position: the engine adds it).
pub(crate) fn encode(kind: Kind, positioned: bool, stream: u64, seq: u64, payload: &[u8]) -> Bytes {
    let mut flags = 0;
    if kind == Kind::Binary {
        flags |= FLAG_BINARY;
    }
    if positioned {
        flags |= FLAG_POSITIONED;
    }
    let mut out = BytesMut::with_capacity(HEAD_LEN + payload.len());
    out.put_u8(flags);
    out.put_u64(stream);
    out.put_u64(seq);
    out.put_slice(payload);
    out.freeze()
}

/// An engine message, decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub(crate) kind: Kind,
    pub(crate) stream: u64,
    pub(crate) seq: u64,
    /// Set when the message carries a position line.
    pub(crate) position: Option<Position>,
    /// What clients receive: the position line (if any) and the message.
    pub(crate) client: Bytes,
}

/// Decode an engine message. `None` for anything that is not one (another program publishing
/// on the same channel): such messages are dropped and counted, never delivered.
pub(crate) fn decode(wire: Bytes) -> Option<Decoded> {
    if wire.len() < HEAD_LEN || wire[0] & !(FLAG_BINARY | FLAG_POSITIONED) != 0 {
        return None;
    }
    let flags = wire[0];
    let stream = u64::from_be_bytes(wire[1..9].try_into().ok()?);
    let seq = u64::from_be_bytes(wire[9..17].try_into().ok()?);
    let client = wire.slice(HEAD_LEN..);
    let position = if flags & FLAG_POSITIONED != 0 {
        let end = client.iter().take(100).position(|&b| b == b'\n')?;
        let line = std::str::from_utf8(&client[..end]).ok()?;
        Some(Position::parse(line).ok()?)
    } else {
        None
    };
    let kind = if flags & FLAG_BINARY != 0 {
        Kind::Binary
    } else {
        Kind::Text
    };
    Some(Decoded {
        kind,
        stream,
        seq,
        position,
        client,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_message_reaches_clients_unchanged() {
        let wire = encode(Kind::Text, false, 7, 3, b"hello");
        let d = decode(wire).unwrap();
        assert_eq!((d.kind, d.stream, d.seq), (Kind::Text, 7, 3));
        assert_eq!(d.position, None);
        assert_eq!(&d.client[..], b"hello");
    }

    #[test]
    fn positioned_message_carries_its_line() {
        let wire = encode(Kind::Binary, true, 1, 2, b"");
        // What the Redis script does: the head, the position line, the payload.
        let mut with_line = wire[..HEAD_LEN].to_vec();
        with_line.extend_from_slice(b"a1b2:42\n\x00\xff");
        let d = decode(Bytes::from(with_line)).unwrap();
        assert_eq!(d.kind, Kind::Binary);
        assert_eq!(d.position, Some(Position::parse("a1b2:42").unwrap()));
        assert_eq!(&d.client[..], b"a1b2:42\n\x00\xff");
    }

    #[test]
    fn foreign_messages_are_not_decoded() {
        assert_eq!(decode(Bytes::from_static(b"hello")), None);
        let mut bad_flags = encode(Kind::Text, false, 1, 1, b"x").to_vec();
        bad_flags[0] = 0x80;
        assert_eq!(decode(Bytes::from(bad_flags)), None);
        // Positioned, but no line.
        let no_line = encode(Kind::Text, true, 1, 1, b"no newline here");
        assert_eq!(decode(no_line), None);
    }

    #[test]
    fn positions_parse_from_queries() {
        let p = Position::from_query(Some("x=1&epoch=ab12&offset=7")).unwrap();
        assert_eq!(p, Some(Position::parse("ab12:7").unwrap()));
        assert_eq!(Position::from_query(None), Ok(None));
        assert_eq!(Position::from_query(Some("x=1")), Ok(None));
        for bad in [
            "epoch=ab",
            "offset=1",
            "epoch=a-b&offset=1",
            "epoch=ab&offset=-1",
            "epoch=ab&offset=1&offset=2",
            "epoch=&offset=1",
            "epoch=ab&offset=99999999999999999999999",
        ] {
            assert_eq!(Position::from_query(Some(bad)), Err(BadPosition), "{bad}");
        }
        assert_eq!(Position::parse("ab:3").unwrap().to_string(), "ab:3");
        let p = Position::parse("ab:3").unwrap();
        assert_eq!(p.control(Control::Recovered), "!recovered ab:3");
    }
}
