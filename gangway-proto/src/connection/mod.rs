//! The connection state machine: bytes in, events and bytes out.
//!
//! - `state`: the life cycle, one phase assigned at each transition ([`State`] and [`End`] are
//!   its public views);
//! - `receive`: input kept until the application asks for the next event, then decoded one
//!   frame at a time, by one path for every frame;
//! - `send`: framing and masking of what the application sends, and of the automatic answers;
//! - `output`: the bytes waiting for the transport, in parts;
//! - `spare`: buffers handed between idle and busy connections ([`SpareBuffers`]);
//! - `timers`: keepalive and deadlines, on the caller's clock;
//! - `deflate`: permessage-deflate (feature `deflate`).
//!
//! Why it is shaped this way: `docs/connection.md` in the repository.

#[cfg(feature = "deflate")]
mod deflate;
mod output;
mod receive;
mod send;
mod spare;
mod state;
#[cfg(test)]
pub(crate) mod tests;
mod timers;

pub use receive::Replies;
pub use spare::SpareBuffers;
pub use state::{End, State};

use std::sync::Arc;

use crate::config::Config;
#[cfg(feature = "deflate")]
use crate::extensions::permessage_deflate::PerMessageDeflate;
use crate::frame::CloseFrame;
use crate::handshake::Negotiated;
use crate::message::DataKind;
use crate::random::{OsRandom, RandomSource};
use crate::role::Role;
use crate::utf8::Utf8Validator;

use self::output::Output;
use self::receive::{Input, Spill};
use self::state::Phase;

/// Largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Largest close reason: the control payload minus the 2-byte code (§5.5.1).
const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// RSV1 in [`FrameHeader::rsv`](crate::frame::FrameHeader::rsv): permessage-deflate's
/// "Per-Message Compressed" bit (RFC 7692 §6).
const RSV1: u8 = 0b100;

/// How many bytes of automatic answers (pongs, close frames) may wait unsent before
/// [`Connection::input_paused`] asks the caller to stop reading.
///
/// Reading must go on while our own messages wait for the transport (the peer may be waiting for
/// us to read before it reads), but each ping read queues a pong: a peer that pings without
/// reading would make the output grow without bound.
const MAX_UNSENT_ANSWERS: u32 = 64 << 10;

/// One WebSocket connection after the opening handshake, with no I/O inside.
///
/// Three groups of calls, in any order:
///
/// - **feed input**: [`receive_data`](Self::receive_data) (or
///   [`receive_buf`](Self::receive_buf)) with whatever bytes arrived and the time they arrived,
///   [`receive_eof`](Self::receive_eof) when the transport's read side ends;
/// - **issue commands**: [`send_text`](Self::send_text), [`send_binary`](Self::send_binary),
///   their `_shared` forms, [`send_fragment`](Self::send_fragment),
///   [`send_ping`](Self::send_ping), [`send_pong`](Self::send_pong),
///   [`send_close`](Self::send_close);
/// - **drain output**: [`poll_event`](Self::poll_event) until `Ok(None)` (each call decodes the
///   next event from the input); write [`output`](Self::output) to the transport and
///   [`consume_output`](Self::consume_output) what was written; once [`output`](Self::output) is
///   empty and [`should_close_transport`](Self::should_close_transport) is true, close the
///   transport.
/// - **time** (only with timers in the [`Config`]): arm one timer for
///   [`poll_timeout`](Self::poll_timeout) after the calls above, and call
///   [`handle_timeout`](Self::handle_timeout) when it fires (keepalive pings, idle, write and
///   close-handshake timeouts). The core has no clock: time comes in as the `now` argument of
///   these calls and of the input calls.
///
/// Input is decoded when the application asks for it: [`poll_event`](Self::poll_event) decodes
/// the next frame of what was received, hands out the event, and answers it when the protocol
/// says so (a ping's pong, the peer's close). A protocol violation is found by the call that
/// reaches it: every event before it was handed out, and could be answered, before the close
/// frame that fails the connection is queued; that call returns the error, once.
///
/// Memory: input is kept until it is handed out (with [`receive_buf`](Self::receive_buf),
/// messages are lent out of the buffer it was read into); a message that is not all there is kept
/// as it came while it is a single binary frame, and gathered into a buffer of its own otherwise
/// (text, to be validated as it arrives; fragmented and compressed messages; with
/// [`Config::deliver_fragments`], only the pieces not handed out yet). While the connection is
/// busy the output buffer keeps its (bounded) allocation once drained, so a stream of messages
/// does not allocate for each; [`release_buffers`](Self::release_buffers) frees it, and an idle
/// connection that called it holds no heap buffer.
///
/// Size: the struct itself lives in every connection's task, idle or not, so what only some
/// connections or some moments need is kept out of line (the shared [`Config`], the client's
/// random source, a message in progress, the peer's close frame, payloads queued without a copy).
pub struct Connection {
    role: Role,
    phase: Phase,
    /// RSV bits that a negotiated extension gives a meaning to (§5.2): RSV1 with
    /// permessage-deflate, else none.
    allowed_rsv: u8,
    /// A ping of ours (sent by `send_ping` or the keepalive) has had no pong since.
    awaiting_pong: bool,
    /// The kind of the fragmented message we are sending, between `send_fragment` calls.
    sending: Option<DataKind>,
    /// The fragmented message we are sending is compressed.
    #[cfg(feature = "deflate")]
    sending_compressed: bool,
    sending_utf8: Utf8Validator,
    /// Bytes of automatic answers queued since the output was last drained (saturating; only
    /// compared with [`MAX_UNSENT_ANSWERS`]).
    unsent_answers: u32,
    /// The close handshake's bound in milliseconds, rounded up (`u32::MAX`: none): 4 bytes
    /// here, packed with the small fields, rather than an `Option<Duration>`'s 16 (see
    /// `timers.rs`).
    close_timeout_ms: u32,
    /// The input holds bytes given by [`receive_data`](Self::receive_data), which promises
    /// messages of their own: payloads are copied out of it rather than lent.
    input_copied: bool,
    /// The transport's read side ended after the input.
    input_eof: bool,
    /// Shared by every connection built from the same `Arc` (a server's accept loop).
    config: Arc<Config>,
    /// The source of masking keys: only a client draws any (§5.3), so a server keeps none.
    /// Boxed twice for a thin pointer: 8 bytes here instead of 16 for every connection.
    rng: Option<Box<Box<dyn RandomSource>>>,
    /// permessage-deflate, when negotiated (boxed: a connection without it pays one pointer).
    #[cfg(feature = "deflate")]
    deflate: Option<Box<PerMessageDeflate>>,
    /// What arrived and was not handed out yet.
    input: Input,
    /// What receiving needs only for some messages (see [`Spill`]): boxed, and freed once empty,
    /// so an idle connection pays one pointer for it.
    spill: Option<Box<Spill>>,
    /// Bytes for the transport.
    output: Output,
    /// Keepalive and deadlines, on the caller's clock (see `timers.rs`).
    timers: timers::Timers,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("phase", &self.phase)
            .field("input", &self.input.len())
            .field("output", &self.output.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection in `role` with the OS random source for masking keys, and no extension.
    ///
    /// `config` is a [`Config`] or an `Arc<Config>`: connections built from clones of one `Arc`
    /// share it instead of holding a copy each.
    pub fn new(role: Role, config: impl Into<Arc<Config>>) -> Self {
        Self::build(role, config.into(), None)
    }

    /// A connection in `role` that uses what the opening handshake `negotiated`: the extensions
    /// in it that this crate implements (permessage-deflate, feature `deflate`, with the
    /// agreed parameters and the rest of its settings from [`Config`]'s `deflate`). Others are
    /// ignored: frames that use them fail the connection like any frame with reserved bits set
    /// (1002).
    pub fn from_negotiated(
        role: Role,
        config: impl Into<Arc<Config>>,
        negotiated: &Negotiated,
    ) -> Self {
        Self::build(role, config.into(), None).use_negotiated(negotiated)
    }

    /// [`from_negotiated`](Self::from_negotiated) with an injected random source.
    pub fn from_negotiated_with_random(
        role: Role,
        config: impl Into<Arc<Config>>,
        negotiated: &Negotiated,
        rng: Box<dyn RandomSource>,
    ) -> Self {
        Self::build(role, config.into(), Some(rng)).use_negotiated(negotiated)
    }

    /// A connection with an injected random source (deterministic tests, fuzzing).
    ///
    /// A server never masks, so it drops `rng` (it would never be read).
    pub fn with_random(
        role: Role,
        config: impl Into<Arc<Config>>,
        rng: Box<dyn RandomSource>,
    ) -> Self {
        Self::build(role, config.into(), Some(rng))
    }

    /// The constructors' common body, not generic over the config's type. `rng: None`: the OS
    /// random source, created only for a role that masks.
    fn build(role: Role, config: Arc<Config>, rng: Option<Box<dyn RandomSource>>) -> Self {
        let rng = role.masks_outgoing().then(|| {
            Box::new(rng.unwrap_or_else(|| Box::new(OsRandom::new()) as Box<dyn RandomSource>))
        });
        Connection {
            role,
            phase: Phase::Open,
            allowed_rsv: 0,
            awaiting_pong: false,
            sending: None,
            #[cfg(feature = "deflate")]
            sending_compressed: false,
            sending_utf8: Utf8Validator::new(),
            unsent_answers: 0,
            close_timeout_ms: timers::millis_up(config.close_timeout),
            input_copied: false,
            input_eof: false,
            config,
            rng,
            #[cfg(feature = "deflate")]
            deflate: None,
            input: Input::default(),
            spill: None,
            output: Output::default(),
            timers: timers::Timers::default(),
        }
    }

    /// Use what the opening handshake negotiated (see [`from_negotiated`](Self::from_negotiated)).
    #[cfg_attr(not(feature = "deflate"), allow(unused_mut))]
    fn use_negotiated(mut self, negotiated: &Negotiated) -> Self {
        #[cfg(feature = "deflate")]
        if let Some(params) = &negotiated.permessage_deflate {
            self.enable_deflate(params);
        }
        #[cfg(not(feature = "deflate"))]
        let _ = negotiated;
        self
    }

    /// The role this connection was built with.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Where the connection is in its life cycle.
    pub fn state(&self) -> State {
        self.phase.state()
    }

    /// How the connection ended, once it has: the close handshake completed
    /// ([`End::Clean`], also while a client still waits for the server to close the transport),
    /// the peer broke the protocol or the transport ended early ([`End::Failed`]), or a deadline
    /// passed ([`End::TimedOut`]). `None` while open or closing.
    pub fn ended(&self) -> Option<End> {
        match self.phase {
            Phase::Ended(end) => Some(end),
            Phase::AwaitingEof => Some(End::Clean),
            Phase::Open | Phase::CloseSent => None,
        }
    }

    /// Whether this side should close the transport once [`output`](Self::output) is drained:
    /// the server after the close handshake (RFC 6455 §7.1.1), either side after failing the
    /// connection or giving up on it. A client whose close handshake is done waits for the
    /// server's EOF instead, at most the close timeout.
    pub fn should_close_transport(&self) -> bool {
        matches!(self.phase, Phase::Ended(_))
    }

    /// The close frame the peer sent, once received (`Some(None)`: it had no status code).
    pub fn peer_close(&self) -> Option<&Option<CloseFrame>> {
        self.spill.as_deref()?.peer_close.as_ref()
    }

    /// Whether a ping of ours ([`send_ping`](Self::send_ping) or the keepalive's) has had no
    /// pong since. The peer may still send that pong after its close frame (§5.5.1 forbids only
    /// data frames after a close), so a transport closed without reading on would answer it with
    /// a TCP reset.
    pub fn awaiting_pong(&self) -> bool {
        self.awaiting_pong
    }

    /// Whether the caller should stop reading from the transport until the output drains: more
    /// than 64 KiB of automatic answers (pongs, close frames) wait unsent, so a peer that pings
    /// without reading cannot make the output grow without bound.
    pub fn input_paused(&self) -> bool {
        self.unsent_answers > MAX_UNSENT_ANSWERS
    }

    /// The next bytes to write to the transport: empty when nothing waits.
    ///
    /// This is all of the output, except after [`send_binary_shared`](Self::send_binary_shared)
    /// or [`send_text_shared`](Self::send_text_shared) queued a payload without copying it: the
    /// output is then in several parts, and this is the first. Write it,
    /// [`consume_output`](Self::consume_output) what was written, and call again until it is
    /// empty; or write every part at once with [`output_parts`](Self::output_parts).
    #[inline]
    pub fn output(&self) -> &[u8] {
        self.output.first()
    }

    /// The number of bytes waiting to be written, in every part of the output.
    #[inline]
    pub fn output_len(&self) -> usize {
        self.output.len()
    }

    /// The parts of the output, in order, as many as `dst` holds, for one vectored write
    /// (`writev`); returns how many were filled. Their lengths add up to at most
    /// [`output_len`](Self::output_len); [`consume_output`](Self::consume_output) takes what was
    /// written of all of them.
    ///
    /// ```
    /// use std::io::IoSlice;
    /// use bytes::Bytes;
    /// use gangway_proto::{Config, Connection, Role};
    ///
    /// let mut server = Connection::new(Role::Server, Config::default());
    /// server.send_binary_shared(Bytes::from(vec![7u8; 20_000]))?;
    /// server.send_text("after it")?;
    /// let mut parts = [IoSlice::new(&[]); 8];
    /// let n = server.output_parts(&mut parts);
    /// // The header, the payload (not copied), then the next frame.
    /// assert_eq!(n, 3);
    /// assert_eq!(parts[1].len(), 20_000);
    /// let written: usize = parts[..n].iter().map(|p| p.len()).sum();
    /// server.consume_output(written);
    /// assert!(server.output().is_empty());
    /// # Ok::<(), gangway_proto::ApiMisuse>(())
    /// ```
    pub fn output_parts<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        self.output.parts(dst)
    }

    /// Mark the first `n` bytes of the output as written (across its parts). Progress of the
    /// output restarts the write timeout, from the next time given (see
    /// [`poll_timeout`](Self::poll_timeout)).
    ///
    /// # Panics
    ///
    /// If `n` is larger than [`output_len`](Self::output_len).
    #[inline]
    pub fn consume_output(&mut self, n: usize) {
        if n > 0 {
            self.timers.output_progressed();
        }
        if self.output.consume(n) {
            self.unsent_answers = 0;
        }
    }

    /// Free the [`Spill`] once it holds nothing.
    fn tidy_spill(&mut self) {
        if self.spill.as_deref().is_some_and(Spill::is_empty) {
            self.spill = None;
        }
    }

    /// The [`Spill`], allocated if there is none.
    fn spill_mut(&mut self) -> &mut Spill {
        self.spill.get_or_insert_with(Box::default)
    }

    /// Enter `phase`. Leaving `Open` starts the close handshake's deadline.
    fn enter(&mut self, phase: Phase) {
        if self.phase.is_open() && phase != Phase::Open {
            self.timers.start_closing();
        }
        self.phase = phase;
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_at_char(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}
