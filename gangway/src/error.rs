//! The adapter's error: the core's errors plus I/O and timeouts.

use std::fmt;

use gangway_proto::{ApiMisuse, HandshakeError, ProtocolError, TimeoutError};

/// Anything that can go wrong on a gangway connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    Io(std::io::Error),
    /// The opening handshake failed (refused by us, or by the peer).
    Handshake(HandshakeError),
    /// The peer broke the protocol; the matching close frame was sent.
    Protocol(ProtocolError),
    /// The call is not allowed in the connection's state, or its arguments are not.
    Api(ApiMisuse),
    /// The opening handshake, or the close handshake, took longer than allowed.
    Timeout,
    /// The peer stopped responding: nothing received for the idle timeout, or output not taken
    /// for the write timeout ([`Config`](gangway_proto::Config)). The connection was dropped
    /// without a close frame (close code 1006, RFC 6455 §7.1.5).
    Unresponsive(TimeoutError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(_) => f.write_str("i/o error"),
            Error::Handshake(_) => f.write_str("websocket handshake failed"),
            Error::Protocol(_) => f.write_str("websocket protocol error"),
            Error::Api(_) => f.write_str("invalid use of the websocket"),
            Error::Timeout => f.write_str("timed out"),
            Error::Unresponsive(_) => f.write_str("connection lost"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Handshake(e) => Some(e),
            Error::Protocol(e) => Some(e),
            Error::Api(e) => Some(e),
            Error::Timeout => None,
            Error::Unresponsive(e) => Some(e),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        Error::Handshake(e)
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
    }
}

impl From<TimeoutError> for Error {
    fn from(e: TimeoutError) -> Self {
        Error::Unresponsive(e)
    }
}

impl From<ApiMisuse> for Error {
    fn from(e: ApiMisuse) -> Self {
        Error::Api(e)
    }
}
