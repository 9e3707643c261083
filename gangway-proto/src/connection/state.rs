//! The connection's life cycle (RFC 6455 §4–§7).

/// Where a [`Connection`](crate::Connection) is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// A close frame was sent or received, and the close handshake is not complete.
    Closing,
    /// The close handshake is complete, or the connection failed: close the transport once the
    /// output is drained.
    Closed,
}
