//! The connection state machine: bytes in, events and bytes out.

mod state;

pub use state::State;

use crate::config::Config;
use crate::error::{ApiMisuse, ProtocolError};
use crate::frame::CloseCode;
use crate::message::{DataKind, Event};
use crate::random::{OsRandom, RandomSource};
use crate::role::Role;

/// One WebSocket connection after the opening handshake, with no I/O inside.
///
/// Three groups of calls, in any order:
///
/// - **feed input**: [`receive_data`](Self::receive_data) with whatever bytes arrived,
///   [`receive_eof`](Self::receive_eof) when the transport's read side ends;
/// - **issue commands**: [`send_text`](Self::send_text), [`send_binary`](Self::send_binary),
///   [`send_fragment`](Self::send_fragment), [`send_ping`](Self::send_ping),
///   [`send_pong`](Self::send_pong), [`send_close`](Self::send_close);
/// - **drain output**: [`poll_event`](Self::poll_event) until `None`; write
///   [`output`](Self::output) to the transport and [`consume_output`](Self::consume_output) what was
///   written; once [`output`](Self::output) is empty and
///   [`should_close_transport`](Self::should_close_transport) is true, close the transport.
///
/// Protocol violations by the peer fail the connection: the right close frame is queued, further
/// input is ignored, and `receive_data` returns the error. Events decoded before the violation stay
/// available from `poll_event`.
pub struct Connection {
    _role: Role,
    _config: Config,
    _rng: Box<dyn RandomSource>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self._role)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection in `role` with the OS random source for masking keys.
    pub fn new(role: Role, config: Config) -> Self {
        Self::with_random(role, config, Box::new(OsRandom::new()))
    }

    /// A connection with an injected random source (deterministic tests, fuzzing).
    pub fn with_random(role: Role, config: Config, rng: Box<dyn RandomSource>) -> Self {
        Connection {
            _role: role,
            _config: config,
            _rng: rng,
        }
    }

    /// The role this connection was built with.
    pub fn role(&self) -> Role {
        self._role
    }

    /// Where the connection is in its life cycle.
    pub fn state(&self) -> State {
        todo!()
    }

    /// Feed bytes received from the transport. Any amount, split anywhere.
    ///
    /// # Errors
    ///
    /// The peer's protocol violation, once: the connection has failed, a close frame with
    /// [`ProtocolError::close_code`] is queued in the output, and later input is ignored.
    pub fn receive_data(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        let _ = data;
        todo!()
    }

    /// The transport's read side ended.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::UnexpectedEof`] if the close handshake had not finished (status 1006).
    pub fn receive_eof(&mut self) -> Result<(), ProtocolError> {
        todo!()
    }

    /// Queue a text message.
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::AlreadyClosing`] after our close frame, [`ApiMisuse::FragmentOrder`] inside a
    /// fragmented message.
    pub fn send_text(&mut self, text: &str) -> Result<(), ApiMisuse> {
        let _ = text;
        todo!()
    }

    /// Queue a binary message.
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), ApiMisuse> {
        let _ = data;
        todo!()
    }

    /// Queue one fragment of a message: the first call's `kind` starts it, later calls continue
    /// it (their `kind` must match), `fin` ends it. Control frames may be sent between fragments.
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::FragmentOrder`] for a kind that differs from the message in progress,
    /// [`ApiMisuse::InvalidUtf8`] when text fragments stop being UTF-8,
    /// [`ApiMisuse::AlreadyClosing`] after our close frame.
    pub fn send_fragment(
        &mut self,
        kind: DataKind,
        data: &[u8],
        fin: bool,
    ) -> Result<(), ApiMisuse> {
        let _ = (kind, data, fin);
        todo!()
    }

    /// Queue a ping.
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::ControlPayloadTooLong`] over 125 bytes, [`ApiMisuse::AlreadyClosing`].
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), ApiMisuse> {
        let _ = payload;
        todo!()
    }

    /// Queue an unsolicited pong (pings are answered automatically).
    ///
    /// # Errors
    ///
    /// As [`send_ping`](Self::send_ping).
    pub fn send_pong(&mut self, payload: &[u8]) -> Result<(), ApiMisuse> {
        let _ = payload;
        todo!()
    }

    /// Start the close handshake (or answer the peer's close, though that is automatic).
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::InvalidCloseCode`] for a code that may not be sent,
    /// [`ApiMisuse::ControlPayloadTooLong`] for a reason over 123 bytes,
    /// [`ApiMisuse::AlreadyClosing`] if our close frame was already sent.
    pub fn send_close(&mut self, code: CloseCode, reason: &str) -> Result<(), ApiMisuse> {
        let _ = (code, reason);
        todo!()
    }

    /// The next event from the peer, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        todo!()
    }

    /// Bytes waiting to be written to the transport.
    pub fn output(&self) -> &[u8] {
        todo!()
    }

    /// Mark the first `n` bytes of [`output`](Self::output) as written.
    ///
    /// # Panics
    ///
    /// If `n` is larger than `output().len()`.
    pub fn consume_output(&mut self, n: usize) {
        let _ = n;
        todo!()
    }

    /// Whether this side should close the transport once [`output`](Self::output) is drained:
    /// the server after the close handshake (RFC 6455 §7.1.1), either side after failing the
    /// connection. A client whose close handshake is done waits for the server's EOF instead
    /// (the adapter bounds that wait with a timeout).
    pub fn should_close_transport(&self) -> bool {
        todo!()
    }

    /// The close frame the peer sent, once received (`Some(None)`: it had no status code).
    pub fn peer_close(&self) -> Option<&Option<crate::frame::CloseFrame>> {
        todo!()
    }
}
