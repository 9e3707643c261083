//! Errors of the core, by who is at fault.
//!
//! - [`ProtocolError`]: the peer broke RFC 6455 after the handshake. Each maps to the close code
//!   we send ([`ProtocolError::close_code`]), in one place.
//! - [`HandshakeError`]: the opening handshake was refused, by us or by the peer. On the server
//!   side each maps to the HTTP status we answer with ([`HandshakeError::status`]).
//! - [`TimeoutError`]: the peer, or the path to it, stopped responding: a deadline of
//!   [`Config`](crate::Config) passed. Nobody broke the protocol; the connection is lost.
//! - [`ApiMisuse`]: the caller asked for something the protocol does not allow. Never caused by
//!   network input.

use std::fmt;

use crate::frame::CloseCode;

/// The peer broke the protocol; the connection is failed (RFC 6455 §7.1.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame with RSV1, RSV2 or RSV3 set, and no extension that defines it (§5.2).
    ReservedBits,
    /// A frame with a reserved opcode, 0x3–0x7 or 0xB–0xF (§5.2).
    ReservedOpcode(u8),
    /// A server received an unmasked frame (§5.1).
    UnmaskedFrame,
    /// A client received a masked frame (§5.1).
    MaskedFrame,
    /// A 64-bit payload length with its most significant bit set (§5.2).
    InvalidLength,
    /// A control frame with FIN clear (§5.5).
    FragmentedControlFrame,
    /// A control frame with a payload over 125 bytes (§5.5).
    ControlFrameTooLong,
    /// A continuation frame with no message in progress (§5.4).
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is in progress (§5.4).
    ExpectedContinuation,
    /// Text, or a close reason, that is not valid UTF-8 (§8.1).
    InvalidUtf8,
    /// A close frame with a 1-byte payload (§5.5.1).
    InvalidClosePayload,
    /// A close frame with a code that may not be sent on the wire (§7.4).
    InvalidCloseCode(u16),
    /// A frame larger than [`Config::max_frame_size`](crate::Config::max_frame_size) (with its
    /// allowance for the frames of compressed messages).
    FrameTooLarge,
    /// A message larger than [`Config::max_message_size`](crate::Config::max_message_size).
    MessageTooLarge,
    /// The transport ended before the close handshake (RFC 6455 §7.1.5: code 1006).
    UnexpectedEof,
    /// RSV1, the "Per-Message Compressed" bit of permessage-deflate, on a control frame or a
    /// continuation frame (RFC 7692 §6: only the first frame of a data message carries it).
    MisplacedCompressedBit,
    /// A compressed message whose payload is not valid DEFLATE data (RFC 7692 §7.2.2).
    InvalidCompressedData,
}

impl ProtocolError {
    /// The close code sent to the peer when failing the connection for this error.
    ///
    /// 1007 for bad UTF-8 and for compressed data that does not inflate (the payload is not
    /// what its frame says it is), 1009 for oversize (inflated size included), 1006 (never sent)
    /// for a lost transport, 1002 for everything else.
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::FrameTooLarge | ProtocolError::MessageTooLarge => CloseCode::TOO_BIG,
            ProtocolError::UnexpectedEof => CloseCode::ABNORMAL,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedBits => {
                f.write_str("reserved bits set without a negotiated extension")
            }
            ProtocolError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::UnmaskedFrame => f.write_str("unmasked frame from client"),
            ProtocolError::MaskedFrame => f.write_str("masked frame from server"),
            ProtocolError::InvalidLength => {
                f.write_str("payload length has its most significant bit set")
            }
            ProtocolError::FragmentedControlFrame => f.write_str("fragmented control frame"),
            ProtocolError::ControlFrameTooLong => {
                f.write_str("control frame payload over 125 bytes")
            }
            ProtocolError::UnexpectedContinuation => {
                f.write_str("continuation frame without a message in progress")
            }
            ProtocolError::ExpectedContinuation => {
                f.write_str("new data frame inside a fragmented message")
            }
            ProtocolError::InvalidUtf8 => f.write_str("invalid utf-8"),
            ProtocolError::InvalidClosePayload => f.write_str("close frame payload of one byte"),
            ProtocolError::InvalidCloseCode(c) => write!(f, "invalid close code {c}"),
            ProtocolError::FrameTooLarge => f.write_str("frame exceeds the size limit"),
            ProtocolError::MessageTooLarge => f.write_str("message exceeds the size limit"),
            ProtocolError::UnexpectedEof => f.write_str("connection closed without a close frame"),
            ProtocolError::MisplacedCompressedBit => {
                f.write_str("rsv1 set on a control or continuation frame")
            }
            ProtocolError::InvalidCompressedData => f.write_str("invalid compressed data"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// The peer, or the path to it, stopped responding: a deadline passed
/// ([`Connection::handle_timeout`](crate::Connection::handle_timeout)).
///
/// The connection is closed abnormally. No close frame is sent: RFC 6455 §7.1.7 lets an endpoint
/// omit it when the other side is unlikely to receive and process it, which is exactly what the
/// timeout found out, and waiting for its answer would only hold the connection longer. Unsent
/// output is dropped and the transport is to be closed at once (§7.1.1: "via any means
/// available when necessary"). The close code is 1006 (§7.1.5: closed without a close frame),
/// which is reported locally and never sent (§7.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutError {
    /// Nothing arrived for [`Config::idle_timeout`](crate::Config::idle_timeout), not even a
    /// pong to our keepalive pings (which a live peer must answer, §5.5.2).
    Idle,
    /// Output waited for [`Config::write_timeout`](crate::Config::write_timeout) and the
    /// transport took none of it: the peer stopped reading.
    Write,
    /// The close handshake did not finish within
    /// [`Config::close_timeout`](crate::Config::close_timeout): the peer's close frame did not
    /// come, or ours could not be written.
    Close,
}

impl TimeoutError {
    /// The close code of a connection lost this way: always 1006 (never sent, §7.4.1).
    pub fn close_code(self) -> CloseCode {
        CloseCode::ABNORMAL
    }
}

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeoutError::Idle => f.write_str("peer idle timeout"),
            TimeoutError::Write => f.write_str("write timeout, the peer is not reading"),
            TimeoutError::Close => f.write_str("close handshake timeout"),
        }
    }
}

impl std::error::Error for TimeoutError {}

/// The opening handshake failed.
///
/// On the server side, [`HandshakeError::status`] is the HTTP status to answer with and
/// [`crate::handshake::server::reject`] builds that answer. On the client side it says what was
/// wrong with the server's response.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The HTTP head could not be parsed.
    MalformedHttp(&'static str),
    /// The HTTP head is larger than the configured limit (server answers 431).
    HeadTooLarge,
    /// The request method is not GET (server answers 405).
    MethodNotAllowed,
    /// The HTTP version is older than 1.1.
    UnsupportedHttpVersion,
    /// A required header is absent.
    MissingHeader(&'static str),
    /// A header that must appear once appears more than once.
    DuplicateHeader(&'static str),
    /// A header has a value that the RFC does not allow; the name and a short reason.
    InvalidHeader(&'static str, &'static str),
    /// `Sec-WebSocket-Version` is not 13 (server answers 426 with `Sec-WebSocket-Version: 13`).
    UnsupportedVersion,
    /// The request's `Origin` was refused by the server's policy (server answers 403).
    OriginRefused,
    /// Client side: the response status is not 101.
    UnexpectedStatus(u16),
    /// Client side: `Sec-WebSocket-Accept` does not match the key we sent.
    AcceptMismatch,
    /// Client side: the server selected a subprotocol we did not offer.
    UnofferedSubprotocol(String),
    /// Client side: the server accepted an extension we did not offer.
    UnofferedExtension(String),
}

impl HandshakeError {
    /// The HTTP status a server answers with for this error.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::HeadTooLarge => 431,
            HandshakeError::MethodNotAllowed => 405,
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::OriginRefused => 403,
            _ => 400,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::MalformedHttp(why) => write!(f, "malformed http: {why}"),
            HandshakeError::HeadTooLarge => f.write_str("http head too large"),
            HandshakeError::MethodNotAllowed => f.write_str("method not allowed, expected GET"),
            HandshakeError::UnsupportedHttpVersion => f.write_str("http version older than 1.1"),
            HandshakeError::MissingHeader(h) => write!(f, "missing {h} header"),
            HandshakeError::DuplicateHeader(h) => write!(f, "duplicate {h} header"),
            HandshakeError::InvalidHeader(h, why) => write!(f, "invalid {h} header: {why}"),
            HandshakeError::UnsupportedVersion => {
                f.write_str("unsupported Sec-WebSocket-Version, expected 13")
            }
            HandshakeError::OriginRefused => f.write_str("origin not allowed"),
            HandshakeError::UnexpectedStatus(s) => write!(f, "unexpected status {s}"),
            HandshakeError::AcceptMismatch => f.write_str("Sec-WebSocket-Accept mismatch"),
            HandshakeError::UnofferedSubprotocol(p) => {
                write!(f, "server selected subprotocol {p:?} that was not offered")
            }
            HandshakeError::UnofferedExtension(e) => {
                write!(f, "server accepted extension {e:?} that was not offered")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// The caller asked for something the protocol does not allow. Never caused by network input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiMisuse {
    /// A control frame payload (ping, pong, close code + reason) over 125 bytes.
    ControlPayloadTooLong,
    /// A close code that may not be sent (1005, 1006, 1015, or outside the ranges of §7.4).
    InvalidCloseCode(u16),
    /// Data or a close after our close frame was sent.
    AlreadyClosing,
    /// A fragment continues no message, or a new message starts before the last fragment.
    FragmentOrder,
    /// A text fragment sequence that is not valid UTF-8 when finished.
    InvalidUtf8,
    /// A URL that is not `ws://` or `wss://` with a host; the reason.
    InvalidUrl(&'static str),
    /// A URL whose port is not a number from 1 to 65535; the port as written.
    InvalidPort(Box<str>),
    /// A header the opening handshake cannot send: its name, and why.
    InvalidHeader {
        /// The header's name as given (`Sec-WebSocket-Protocol` for a subprotocol,
        /// `Sec-WebSocket-Extensions` for an extension offer).
        name: Box<str>,
        /// Why it cannot be sent.
        reason: &'static str,
    },
    /// A message compressed with other parameters than the connection's (or for a connection
    /// that compresses with context takeover, or not at all): see
    /// [`Connection::send_compressed`](crate::Connection::send_compressed).
    CompressionMismatch,
}

impl ApiMisuse {
    /// [`ApiMisuse::InvalidHeader`] for the header `name`.
    pub(crate) fn invalid_header(name: &str, reason: &'static str) -> Self {
        ApiMisuse::InvalidHeader {
            name: name.into(),
            reason,
        }
    }
}

impl fmt::Display for ApiMisuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiMisuse::ControlPayloadTooLong => f.write_str("control frame payload over 125 bytes"),
            ApiMisuse::InvalidCloseCode(c) => write!(f, "close code {c} may not be sent"),
            ApiMisuse::AlreadyClosing => f.write_str("close frame already sent"),
            ApiMisuse::FragmentOrder => f.write_str("fragment out of order"),
            ApiMisuse::InvalidUtf8 => f.write_str("text fragments are not valid utf-8"),
            ApiMisuse::InvalidUrl(why) => write!(f, "invalid websocket url: {why}"),
            ApiMisuse::InvalidPort(port) => {
                write!(
                    f,
                    "invalid websocket url: invalid port {port} (ports are 1 to 65535)"
                )
            }
            ApiMisuse::CompressionMismatch => {
                f.write_str("message compressed with other parameters than the connection's")
            }
            ApiMisuse::InvalidHeader { name, reason } => {
                write!(f, "cannot send header {name:?}: {reason}")
            }
        }
    }
}

impl std::error::Error for ApiMisuse {}
