//! The connection's life cycle (RFC 6455 §5.5.1, §7): one phase, assigned at each transition.
//!
//! ```text
//!            send_close                 the peer's close        (client) EOF, or the close
//!   Open ───────────────► CloseSent ─────────────────────► AwaitingEof ──────────────────┐
//!    │  the peer's close: answered at once                     ▲ (client)                │
//!    ├────────────────────────────────────────────────────────┘                         ▼
//!    │                                                   (server) ────────────► Ended(Clean)
//!    └─ violation, EOF before the close handshake ────────────────────────────► Ended(Failed)
//!       a deadline (idle, write, close handshake) from any phase ─────────────► Ended(TimedOut)
//! ```
//!
//! The peer's close frame is answered by the call that decodes it, so no phase waits for the
//! answer; a server closes the transport once the close handshake is complete, a client waits for
//! the server to close it first (§7.1.1).

use crate::error::{ProtocolError, TimeoutError};

/// Where a [`Connection`](crate::Connection) is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// A close frame was sent or received, and the close handshake is not complete.
    Closing,
    /// The close handshake is complete, or the connection failed: close the transport once the
    /// output is drained (a client first waits for the server to close it, RFC 6455 §7.1.1).
    Closed,
}

/// How a connection ended (see [`Connection::ended`](crate::Connection::ended)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The close handshake completed: both close frames went (RFC 6455 §7.1.2).
    Clean,
    /// The peer broke the protocol, or the transport ended before the close handshake
    /// ([`ProtocolError::UnexpectedEof`]); the matching close frame, if any, is queued.
    Failed(ProtocolError),
    /// A deadline passed (see [`TimeoutError`]); the output was dropped.
    TimedOut(TimeoutError),
}

/// The phase, set by the transition that enters it and read everywhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Messages flow both ways.
    Open,
    /// Our close frame is queued: nothing more is sent (§5.5.1); the peer's data still arrives
    /// until its close frame.
    CloseSent,
    /// A client whose close handshake is complete waits for the server to close the TCP
    /// connection (§7.1.1), bounded by the close timeout.
    AwaitingEof,
    /// Over: nothing more is read or sent; close the transport once the output is drained.
    Ended(End),
}

impl Phase {
    /// The public view of the phase.
    pub(super) fn state(self) -> State {
        match self {
            Phase::Open => State::Open,
            Phase::CloseSent => State::Closing,
            Phase::AwaitingEof | Phase::Ended(_) => State::Closed,
        }
    }

    /// Whether input from the peer still means something: until its close frame (§5.5.1), a
    /// failure or the end of the transport.
    #[inline(always)]
    pub(super) fn receiving(self) -> bool {
        matches!(self, Phase::Open | Phase::CloseSent)
    }

    /// Whether messages flow both ways (a discriminant test, where `==` on the enum would
    /// compare the payload of `Ended` too).
    #[inline(always)]
    pub(super) fn is_open(self) -> bool {
        matches!(self, Phase::Open)
    }
}
