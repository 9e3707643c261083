//! The connection state machine: bytes in, events and bytes out.

#[cfg(feature = "deflate")]
mod deflate;
mod state;
#[cfg(test)]
mod tests;
mod timers;

pub use state::State;

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use crate::config::Config;
use crate::error::{ApiMisuse, ProtocolError};
#[cfg(feature = "deflate")]
use crate::extensions::permessage_deflate::PerMessageDeflate;
use crate::frame::mask::apply_mask;
use crate::frame::{CloseCode, CloseFrame, FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::handshake::Negotiated;
use crate::message::{to_u64, DataKind, Event, Reassembly};
use crate::prepared::{Encoding, Prepared};
use crate::random::{OsRandom, RandomSource};
use crate::role::Role;
use crate::text::Utf8Bytes;
use crate::utf8::Utf8Validator;

/// Largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Largest close reason: the control payload minus the 2-byte code (§5.5.1).
const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// The largest output buffer kept once drained for the next burst (see
/// [`Connection::release_buffers`]); a larger one, left by a large message, is freed at once.
///
/// Large messages are rare on most connections: keeping their buffers until the connection goes
/// quiet would hold, across 10,000 connections that each sent one 64 KiB message, 640 MiB that
/// the allocator then keeps mapped. Freed at once, each is reused by the next large message.
const MAX_RETAINED_OUTPUT: usize = 64 * 1024;

/// The smallest allocation of the output buffer: room for a batch of small frames, so it does
/// not reallocate frame after frame as it fills.
const MIN_OUTPUT_CAPACITY: usize = 512;

/// The smallest payload that [`Connection::send_binary_shared`] queues without copying: below it,
/// a copy into the output buffer costs less than one more part in a vectored write (measured
/// with pipelined 1 KiB echoes: a `writev` of many small parts costs the kernel more than the
/// copy saves).
const SHARED_MIN_LEN: usize = 16 * 1024;

/// The largest event queue (in events) kept once drained; a longer one is freed at once.
const MAX_RETAINED_EVENTS: usize = 64;

/// RSV1 in [`FrameHeader::rsv`]: permessage-deflate's "Per-Message Compressed" bit (RFC 7692 §6).
const RSV1: u8 = 0b100;

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
/// - **time** (only with timers in the [`Config`]): [`set_now`](Self::set_now) before the calls
///   above, [`handle_timeout`](Self::handle_timeout) once [`poll_timeout`](Self::poll_timeout)
///   has passed (keepalive pings, idle and write timeouts; the core itself has no clock).
///
/// Protocol violations by the peer fail the connection: further input is ignored and
/// `receive_data` returns the error. Events decoded before the violation stay available from
/// `poll_event`, and may still be answered; the right close frame is queued once they are handed
/// out (at once if there are none).
///
/// Memory: input is never buffered beyond a partial frame header (at most 14 bytes) and the
/// message being reassembled, which grows as its bytes arrive (with
/// [`receive_buf`](Self::receive_buf), the start of a single-frame message is kept as the slice
/// of input it came in; with
/// [`Config::deliver_fragments`], only the piece of the current `receive_data` call, handed out
/// as [`Event::Fragment`]). While the connection is busy, the output buffer and the event queue
/// keep their (bounded) allocations once drained, so a stream of messages does not allocate
/// for each; [`release_buffers`](Self::release_buffers) frees them, and an idle connection that
/// called it holds no heap buffer.
///
/// Size: the struct itself lives in every connection's task, idle or not, so what only some
/// connections or some moments need is kept out of line (the shared [`Config`], the client's
/// random source, a control frame split across reads, the peer's close frame).
pub struct Connection {
    role: Role,
    /// Shared by every connection built from the same `Arc` (a server's accept loop).
    config: Arc<Config>,
    /// The source of masking keys: only a client draws any (§5.3), so a server keeps none.
    /// Boxed twice for a thin pointer: 8 bytes here instead of 16 for every connection.
    rng: Option<Box<Box<dyn RandomSource>>>,
    /// RSV bits that a negotiated extension gives a meaning to (§5.2): RSV1 with
    /// permessage-deflate, else none.
    allowed_rsv: u8,
    /// permessage-deflate, when negotiated (boxed: a connection without it pays one pointer).
    #[cfg(feature = "deflate")]
    deflate: Option<Box<PerMessageDeflate>>,

    // Input. The general path's state (a split header, a frame or message in progress) is in
    // `spill`: whole single-frame messages, most of the traffic, need none of it.
    events: VecDeque<Event>,

    // Output.
    /// Bytes for the transport; `out[out_pos..]` is not written yet.
    out: Vec<u8>,
    out_pos: usize,
    /// What only some connections need for a while (see [`Spill`]): boxed, and freed once
    /// empty, so an idle connection pays one pointer for it.
    spill: Option<Box<Spill>>,
    /// The kind of the fragmented message we are sending, between `send_fragment` calls.
    sending: Option<DataKind>,
    sending_utf8: Utf8Validator,
    /// The fragmented message we are sending is compressed.
    #[cfg(feature = "deflate")]
    sending_compressed: bool,

    // Life cycle.
    close_sent: bool,
    /// A ping of ours (sent by `send_ping` or the keepalive) has had no pong since.
    awaiting_pong: bool,
    /// The connection failed (protocol violation, or EOF before the close handshake).
    failed: bool,
    eof: bool,

    // Time.
    /// Keepalive and deadlines, on the caller's clock (see `timers.rs`).
    timers: timers::Timers,
}

/// Empty buffers that idle connections handed back, for the next busy one (see
/// [`Connection::release_buffers_into`]). Holds at most one output buffer (of at most 64 KiB) and
/// one event queue (of at most 64 events); `Default` holds none.
#[derive(Debug, Default)]
pub struct SpareBuffers {
    out: Vec<u8>,
    events: VecDeque<Event>,
}

impl SpareBuffers {
    /// Whether it holds no buffer.
    pub fn is_empty(&self) -> bool {
        self.out.capacity() == 0 && self.events.capacity() == 0
    }
}

/// What a connection needs only now and then, kept out of line: a message or frame that is not
/// all in one read (or not a single frame), a control frame or header split across reads, large
/// payloads queued without a copy, the end of the connection. Whole single-frame messages, most of
/// the traffic, need none of it, and every idle connection (whose size counts thousands of times
/// over on a server) is one pointer smaller for each field here.
#[derive(Debug, Default)]
struct Spill {
    /// The start of a single-frame message that [`Connection::receive_buf`] received in part:
    /// the bytes as they came (header included, still masked), a slice of the caller's buffer.
    held: Option<BytesMut>,
    /// Payloads queued without copying ([`Connection::send_binary_shared`]), in order, each with
    /// the position in `out` it goes after (its frame's header ends there).
    shared: VecDeque<(usize, Bytes)>,
    /// The first bytes of a control frame whose payload is split across `receive_data` calls
    /// (§5.5: at most 125 bytes; `control_len` of them). A control frame that arrives whole is
    /// processed from the input and never stored, so this is allocated only for a split one and
    /// freed when it ends.
    control: Option<Box<[u8; MAX_CONTROL_PAYLOAD]>>,
    /// Bytes of that control frame's payload received so far.
    control_len: u8,
    /// A frame header split across `receive_data` calls.
    header: [u8; MAX_HEADER_LEN],
    header_len: u8,
    /// The frame whose payload is arriving, after its header.
    frame: Option<IncomingFrame>,
    /// The data message being reassembled.
    message: Reassembly,
    /// That message is compressed (RSV1 on its first frame, RFC 7692 §6).
    receiving_compressed: bool,
    /// The peer's close frame once received (`Some(None)`: it had no status code).
    peer_close: Option<Option<CloseFrame>>,
    /// The violation that failed the connection while events decoded before it were still
    /// queued: its close frame waits until they are handed out (see `poll_event`).
    deferred_close: Option<ProtocolError>,
}

impl Spill {
    /// Whether the general input path is in the middle of something: a split header, a frame's
    /// payload, a fragmented or gathered message.
    fn input_busy(&self) -> bool {
        self.frame.is_some() || self.header_len != 0 || self.message.in_progress()
    }

    /// Whether it holds nothing any more and can be freed.
    fn is_empty(&self) -> bool {
        !self.input_busy()
            && self.held.is_none()
            && self.shared.is_empty()
            && self.control.is_none()
            && self.peer_close.is_none()
            && self.deferred_close.is_none()
    }
}

/// What [`Connection::short_path_at`] found at the start of the input.
enum Short {
    /// A single-frame message, all here.
    Whole(WholeMessage),
    /// The start of one (header or payload incomplete).
    Partial,
    /// Anything else: the general path.
    No,
}

/// A single-frame message found whole in the input (see [`Connection::short_path_at`]).
struct WholeMessage {
    kind: DataKind,
    header_len: usize,
    /// The payload's length, after the header.
    len: usize,
    mask: Option<[u8; 4]>,
}

/// A frame whose header is decoded and whose payload is still arriving.
#[derive(Clone, Copy, Debug)]
struct IncomingFrame {
    opcode: OpCode,
    fin: bool,
    mask: Option<[u8; 4]>,
    /// Where in the masking key the next payload byte is (0 to 3: a `u8` keeps the frame at
    /// 16 bytes).
    mask_offset: u8,
    /// Payload bytes not received yet.
    remaining: u64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state())
            .field("output", &self.output().len())
            .field("events", &self.events.len())
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
            config,
            rng,
            allowed_rsv: 0,
            #[cfg(feature = "deflate")]
            deflate: None,
            events: VecDeque::new(),
            out: Vec::new(),
            out_pos: 0,
            spill: None,
            sending: None,
            sending_utf8: Utf8Validator::new(),
            #[cfg(feature = "deflate")]
            sending_compressed: false,
            close_sent: false,
            awaiting_pong: false,
            failed: false,
            eof: false,
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
        if self.failed || self.eof || (self.close_sent && self.peer_closed()) {
            State::Closed
        } else if self.close_sent || self.peer_closed() {
            State::Closing
        } else {
            State::Open
        }
    }

    /// Feed bytes received from the transport. Any amount, split anywhere.
    ///
    /// Input after the peer's close frame, after EOF or after a failure is ignored.
    ///
    /// # Errors
    ///
    /// The peer's protocol violation, once: the connection has failed, a close frame with
    /// [`ProtocolError::close_code`] is queued in the output (once the events decoded before the
    /// violation are handed out by [`poll_event`](Self::poll_event)), and later input is ignored.
    pub fn receive_data(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        if !data.is_empty() {
            self.timers.note_received();
        }
        if self.input_finished() {
            return Ok(());
        }
        if let Some(held) = self.take_held() {
            // A message started by `receive_buf` goes on here: its first bytes first.
            self.process(&held).inspect_err(|&err| self.fail(err))?;
        }
        self.process(data).inspect_err(|&err| self.fail(err))
    }

    /// Feed bytes received from the transport, handing over the buffer that holds them: like
    /// [`receive_data`](Self::receive_data), except that a message whose only frame is whole in
    /// `data` (and not compressed) is delivered as a slice of `data`, unmasked in place, with no
    /// copy and no allocation.
    ///
    /// Such a binary message that is not all in `data` is kept as it came, a slice of `data`, until the
    /// rest arrives. When the rest comes in the bytes that follow it in the same buffer (the next
    /// read into a buffer that each read is split off, as a single connection reading a large
    /// message does), the two are joined without a copy and the message is lent as well;
    /// otherwise it is gathered as [`receive_data`](Self::receive_data) gathers it.
    ///
    /// Such an [`Event::Binary`] or [`Event::Text`] shares `data`'s allocation: keeping it keeps
    /// that whole allocation alive (the read buffer it was split from, when the caller reads into
    /// a large buffer and splits each read off, as `BytesMut::split` does). An application that
    /// keeps many small messages for long should copy them (`Bytes::copy_from_slice`,
    /// `String::from`); a caller that cannot know should use
    /// [`receive_data`](Self::receive_data).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use gangway_proto::{Config, Connection, Event, Role};
    ///
    /// let mut server = Connection::new(Role::Server, Config::default());
    /// // A masked binary frame carrying "hi" (key 1, 2, 3, 4), as a client sends it.
    /// let frame = [0x82, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    /// server.receive_buf(BytesMut::from(&frame[..]))?;
    /// assert_eq!(server.poll_event(), Some(Event::Binary("hi".into())));
    /// # Ok::<(), gangway_proto::ProtocolError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`receive_data`](Self::receive_data).
    pub fn receive_buf(&mut self, mut data: BytesMut) -> Result<(), ProtocolError> {
        if !data.is_empty() {
            self.timers.note_received();
        }
        if self.input_finished() {
            return Ok(());
        }
        if let Some(mut held) = self.take_held() {
            if held.as_ptr().wrapping_add(held.len()) == data.as_ptr() {
                // The rest of the message, read into the buffer right after its start (one
                // connection reading a large message): joined again without a copy.
                held.unsplit(data);
                data = held;
            } else {
                // Elsewhere: the start goes the general way, gathered with the rest.
                self.process(&held).inspect_err(|&err| self.fail(err))?;
            }
        }
        self.process_buf(&mut data)
            .inspect_err(|&err| self.fail(err))
    }

    /// The transport's read side ended.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::UnexpectedEof`] if the close handshake had not finished (status 1006).
    pub fn receive_eof(&mut self) -> Result<(), ProtocolError> {
        let clean = self.failed || self.eof || (self.close_sent && self.peer_closed());
        self.eof = true;
        if clean {
            Ok(())
        } else {
            // §7.1.5: closed without a close frame; 1006 is never sent, so nothing is queued.
            self.fail(ProtocolError::UnexpectedEof);
            Err(ProtocolError::UnexpectedEof)
        }
    }

    /// Queue a text message.
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::AlreadyClosing`] after our close frame, [`ApiMisuse::FragmentOrder`] inside a
    /// fragmented message.
    pub fn send_text(&mut self, text: &str) -> Result<(), ApiMisuse> {
        self.check_can_send_message()?;
        self.write_message(OpCode::Text, text.as_bytes(), true);
        Ok(())
    }

    /// Queue a binary message.
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), ApiMisuse> {
        self.check_can_send_message()?;
        self.write_message(OpCode::Binary, data, true);
        Ok(())
    }

    /// Queue a binary message without copying its payload, where it can go out as it is: a
    /// server's frame is not masked, so without permessage-deflate a payload of at least 16 KiB
    /// that is not split into several frames is written to the transport from `data` itself (see
    /// [`output_parts`](Self::output_parts)), and `data` is dropped once written. Anything else is
    /// copied, as [`send_binary`](Self::send_binary) does. An echo server hands back a received
    /// message this way, without a copy either way.
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text).
    pub fn send_binary_shared(&mut self, data: Bytes) -> Result<(), ApiMisuse> {
        self.check_can_send_message()?;
        self.write_message_shared(OpCode::Binary, data);
        Ok(())
    }

    /// [`send_binary_shared`](Self::send_binary_shared) for text.
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text).
    pub fn send_text_shared(&mut self, text: Utf8Bytes) -> Result<(), ApiMisuse> {
        self.check_can_send_message()?;
        self.write_message_shared(OpCode::Text, text.into_bytes());
        Ok(())
    }

    /// Queue messages framed once for many connections (see [`prepared`](crate::prepared)): a
    /// server queues the frames as they are, shared (a reference count, no copy), written with
    /// the rest of the output (see [`output_parts`](Self::output_parts)). A connection that
    /// cannot send them as they are (a client, whose frames are masked; a
    /// [`max_send_frame_size`](Config::max_send_frame_size) below one of the messages) frames
    /// each message again, as [`send_text`](Self::send_text) and
    /// [`send_binary`](Self::send_binary) would.
    ///
    /// With permessage-deflate the messages go out as they were prepared: uncompressed (RSV1
    /// clear, which RFC 7692 §6 lets a sender choose for any message), or compressed for this
    /// connection's [`prepared_encoding`](Self::prepared_encoding).
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text), and [`ApiMisuse::CompressionMismatch`] for messages
    /// compressed for another encoding; nothing is queued then.
    pub fn send_prepared(&mut self, prepared: &Prepared) -> Result<(), ApiMisuse> {
        self.check_can_send_message()?;
        #[cfg(feature = "deflate")]
        if let Some(compression) = prepared.compression() {
            self.check_compression(compression)?;
        }
        if self.rng.is_some() || prepared.max_payload() > self.config.max_send_frame_size {
            for frame in prepared.payloads() {
                if frame.rsv == 0 {
                    self.write_message(frame.opcode, frame.payload, true);
                } else {
                    // Compressed for this connection's parameters already (checked above).
                    self.write_frames(frame.opcode, frame.rsv, frame.payload, true);
                }
            }
        } else if !prepared.is_empty() {
            // As `prepare_output`, without reserving room in `out`: nothing is copied there.
            if self.output_drained() {
                self.timers.note_output_progress();
            }
            self.compact_output();
            let at = self.out.len();
            let frames = prepared.frames().clone();
            let shared = &mut self.spill_mut().shared;
            if shared.capacity() == 0 {
                // One batch per write is the usual: room for one part, not the default four.
                shared.reserve_exact(1);
            }
            shared.push_back((at, frames));
        }
        Ok(())
    }

    /// How this connection sends messages prepared for many: the [`Encoding`] whose frames
    /// [`send_prepared`](Self::send_prepared) queues as they are. [`Encoding::PLAIN`] without
    /// permessage-deflate, and when this connection compresses with context takeover (or not
    /// at all: an 8-bit window); a compressed encoding when it compresses each message on its
    /// own (see [`prepared`](crate::prepared)).
    pub fn prepared_encoding(&self) -> Encoding {
        #[cfg(feature = "deflate")]
        if let Some(deflate) = self.deflate.as_deref() {
            if let Some(compression) = deflate.compressor.stateless() {
                return Encoding::compressed(compression, deflate.threshold());
            }
        }
        Encoding::PLAIN
    }

    /// Queue one fragment of a message: the first call's `kind` starts it, later calls continue
    /// it (their `kind` must match), `fin` ends it. Control frames may be sent between fragments.
    ///
    /// A rejected fragment is not sent and leaves the message in progress as it was.
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
        self.check_can_send_data()?;
        let opcode = match self.sending {
            None => match kind {
                DataKind::Text => OpCode::Text,
                DataKind::Binary => OpCode::Binary,
            },
            Some(current) if current == kind => OpCode::Continuation,
            Some(_) => return Err(ApiMisuse::FragmentOrder),
        };
        if kind == DataKind::Text {
            // §8.1: text is UTF-8 as a whole message; a code point may straddle fragments.
            // Work on a copy so a rejected fragment leaves the state untouched.
            let mut utf8 = if self.sending.is_some() {
                self.sending_utf8.clone()
            } else {
                Utf8Validator::new()
            };
            utf8.feed(data).map_err(|()| ApiMisuse::InvalidUtf8)?;
            if fin {
                utf8.finish().map_err(|()| ApiMisuse::InvalidUtf8)?;
            }
            self.sending_utf8 = utf8;
        }
        self.write_message(opcode, data, fin);
        self.sending = if fin { None } else { Some(kind) };
        Ok(())
    }

    /// Queue a ping.
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::ControlPayloadTooLong`] over 125 bytes, [`ApiMisuse::AlreadyClosing`].
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), ApiMisuse> {
        self.send_control(OpCode::Ping, payload)?;
        self.awaiting_pong = true;
        Ok(())
    }

    /// Whether a ping of ours ([`send_ping`](Self::send_ping) or the keepalive's) has had no
    /// pong since. The peer may still send that pong after its close frame (§5.5.1 forbids only
    /// data frames after a close), so a transport closed without reading on would answer it with
    /// a TCP reset.
    pub fn awaiting_pong(&self) -> bool {
        self.awaiting_pong
    }

    /// Queue an unsolicited pong (pings are answered automatically).
    ///
    /// # Errors
    ///
    /// As [`send_ping`](Self::send_ping).
    pub fn send_pong(&mut self, payload: &[u8]) -> Result<(), ApiMisuse> {
        self.send_control(OpCode::Pong, payload)
    }

    /// Start the close handshake (or answer the peer's close, though that is automatic).
    ///
    /// A fragmented message we were sending is abandoned: nothing may follow the close frame.
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::InvalidCloseCode`] for a code that may not be sent,
    /// [`ApiMisuse::ControlPayloadTooLong`] for a reason over 123 bytes,
    /// [`ApiMisuse::AlreadyClosing`] if our close frame was already sent.
    pub fn send_close(&mut self, code: CloseCode, reason: &str) -> Result<(), ApiMisuse> {
        if self.close_sent || self.failed {
            return Err(ApiMisuse::AlreadyClosing);
        }
        if !code.is_sendable() {
            return Err(ApiMisuse::InvalidCloseCode(code.0));
        }
        if reason.len() > MAX_CLOSE_REASON {
            return Err(ApiMisuse::ControlPayloadTooLong);
        }
        self.write_close(Some((code, reason)));
        Ok(())
    }

    /// The next event from the peer, in order.
    ///
    /// After a protocol violation, the events decoded before it come first; the close frame that
    /// fails the connection is queued by the call that finds none left, so the application can
    /// still answer them (an echo server echoes a message that arrived in the same read as the
    /// violation).
    pub fn poll_event(&mut self) -> Option<Event> {
        let Some(event) = self.events.pop_front() else {
            self.no_event_left();
            return None;
        };
        if let Event::Close(close) = &event {
            self.answer_close(close);
        }
        if self.events.is_empty() && self.events.capacity() > MAX_RETAINED_EVENTS {
            // A burst's long queue is not kept; a short one is, for the next read
            // (`release_buffers` frees it once the connection is idle).
            self.events = VecDeque::new();
        }
        Some(event)
    }

    /// [`poll_event`](Self::poll_event) found the queue empty: a failure's close frame waits no
    /// longer.
    #[cold]
    fn no_event_left(&mut self) {
        if let Some(err) = self
            .spill
            .as_deref_mut()
            .and_then(|spill| spill.deferred_close.take())
        {
            self.tidy_spill();
            self.write_failure_close(err);
        }
    }

    /// The peer's close is handed out: answer it unless we closed or failed first.
    #[cold]
    fn answer_close(&mut self, close: &Option<CloseFrame>) {
        if !self.close_sent && !self.failed {
            // §5.5.1: answer with a close, "typically echoing the status code it received";
            // the reason is echoed too, and a close without a code is answered without one.
            let reply = close.as_ref().map(|c| (c.code, c.reason.as_str()));
            self.write_close(reply);
        }
    }

    /// Free the buffers that a busy connection keeps between messages: the output buffer once
    /// everything in it was consumed, and the event queue once it is empty. Call it when the
    /// connection goes idle, e.g. when the transport has nothing to read and
    /// [`output`](Self::output) is empty, so that idle connections hold no heap buffer.
    ///
    /// Nothing else changes: unconsumed output, undelivered events and a message being
    /// reassembled are kept, and the next message allocates again. Cheap when there is nothing
    /// to free, so it may be called on every idle turn.
    pub fn release_buffers(&mut self) {
        // Handed to a spare set that is dropped at once: freed.
        self.release_buffers_into(&mut SpareBuffers::default());
    }

    /// [`release_buffers`](Self::release_buffers), handing the buffers to `spare` instead of
    /// freeing them, for another connection to [take](Self::reuse_buffers): an event loop that
    /// serves many connections keeps one spare set for all of them, so a connection that goes
    /// idle after each message (request/response traffic) allocates nothing for the next, and
    /// idle connections still hold none. `spare` keeps one buffer of each kind; what it cannot
    /// keep is freed.
    ///
    /// ```
    /// use gangway_proto::{Config, Connection, Role, SpareBuffers};
    ///
    /// let mut spare = SpareBuffers::default();
    /// let (mut a, mut b) = (
    ///     Connection::new(Role::Server, Config::default()),
    ///     Connection::new(Role::Server, Config::default()),
    /// );
    /// a.send_text("hello")?;
    /// a.consume_output(a.output_len());
    /// a.release_buffers_into(&mut spare); // `a` is idle: its output buffer goes to `spare`
    /// assert!(!a.holds_spare_buffers());
    /// b.reuse_buffers(&mut spare); // `b` is about to be busy: it takes it
    /// b.send_text("world")?;
    /// # Ok::<(), gangway_proto::ApiMisuse>(())
    /// ```
    pub fn release_buffers_into(&mut self, spare: &mut SpareBuffers) {
        if self.output_drained() && self.out.capacity() > 0 {
            let mut out = std::mem::take(&mut self.out);
            self.out_pos = 0;
            if spare.out.capacity() == 0 && out.capacity() <= MAX_RETAINED_OUTPUT {
                out.clear();
                spare.out = out;
            }
        }
        if self.events.is_empty() && self.events.capacity() > 0 {
            let events = std::mem::take(&mut self.events);
            if spare.events.capacity() == 0 && events.capacity() <= MAX_RETAINED_EVENTS {
                spare.events = events;
            }
        }
        self.tidy_spill();
    }

    /// Take from `spare` the buffers this connection has none of (see
    /// [`release_buffers_into`](Self::release_buffers_into)); call it before feeding input, e.g.
    /// when the transport is readable.
    #[inline]
    pub fn reuse_buffers(&mut self, spare: &mut SpareBuffers) {
        if self.out.capacity() == 0 && self.out_pos == 0 {
            std::mem::swap(&mut self.out, &mut spare.out);
        }
        if self.events.capacity() == 0 {
            std::mem::swap(&mut self.events, &mut spare.events);
        }
    }

    /// Whether [`release_buffers`](Self::release_buffers) would free anything now.
    pub fn holds_spare_buffers(&self) -> bool {
        (self.output_drained() && self.out.capacity() > 0)
            || (self.events.is_empty() && self.events.capacity() > 0)
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
        if self.spill.is_some() {
            return self.first_part();
        }
        self.out.get(self.out_pos..).unwrap_or_default()
    }

    /// [`output`](Self::output) when payloads may be queued without a copy.
    #[inline(never)]
    fn first_part(&self) -> &[u8] {
        let end = match self.shared_queue().and_then(VecDeque::front) {
            Some((at, data)) if *at == self.out_pos => return data,
            Some(&(at, _)) => at,
            None => self.out.len(),
        };
        self.out.get(self.out_pos..end).unwrap_or_default()
    }

    /// The number of bytes waiting to be written, in every part of the output.
    #[inline]
    pub fn output_len(&self) -> usize {
        if self.spill.is_none() {
            return self.out.len() - self.out_pos;
        }
        let shared = self
            .shared_queue()
            .map_or(0, |queue| queue.iter().map(|(_, data)| data.len()).sum());
        self.out.len() - self.out_pos + shared
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
        let mut filled = 0;
        let mut pos = self.out_pos;
        let mut push = |part: &'a [u8], filled: &mut usize| {
            if part.is_empty() {
                return true;
            }
            match dst.get_mut(*filled) {
                Some(slot) => {
                    *slot = std::io::IoSlice::new(part);
                    *filled += 1;
                    true
                }
                None => false,
            }
        };
        for (at, data) in self.shared_queue().into_iter().flatten() {
            if !push(&self.out[pos..*at], &mut filled) || !push(data, &mut filled) {
                return filled;
            }
            pos = *at;
        }
        push(&self.out[pos..], &mut filled);
        filled
    }

    /// Nothing waits to be written.
    #[inline]
    fn output_drained(&self) -> bool {
        self.out_pos == self.out.len() && (self.spill.is_none() || self.shared_queue().is_none())
    }

    /// The payloads queued without a copy, if any.
    fn shared_queue(&self) -> Option<&VecDeque<(usize, Bytes)>> {
        self.spill
            .as_deref()
            .map(|spill| &spill.shared)
            .filter(|queue| !queue.is_empty())
    }

    /// Take the start of a message kept by [`receive_buf`](Self::receive_buf).
    fn take_held(&mut self) -> Option<BytesMut> {
        let held = self.spill.as_deref_mut()?.held.take();
        self.tidy_spill();
        held
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

    /// The frame whose payload is arriving.
    #[inline]
    fn frame(&self) -> Option<IncomingFrame> {
        self.spill.as_deref().and_then(|spill| spill.frame)
    }

    /// Set (or clear) the frame whose payload is arriving.
    fn set_frame(&mut self, frame: Option<IncomingFrame>) {
        match (frame, self.spill.as_deref_mut()) {
            (Some(frame), _) => self.spill_mut().frame = Some(frame),
            (None, Some(spill)) => spill.frame = None,
            (None, None) => {}
        }
    }

    /// Whether a data message has started and not yet finished.
    fn message_in_progress(&self) -> bool {
        self.spill
            .as_deref()
            .is_some_and(|spill| spill.message.in_progress())
    }

    /// Whether the data message being received is compressed.
    fn receiving_compressed(&self) -> bool {
        self.spill
            .as_deref()
            .is_some_and(|spill| spill.receiving_compressed)
    }

    /// Whether the peer's close frame has arrived.
    #[inline]
    fn peer_closed(&self) -> bool {
        self.spill
            .as_deref()
            .is_some_and(|spill| spill.peer_close.is_some())
    }

    /// Bytes held by the message being reassembled (tests: hostile headers and idle
    /// connections hold none).
    #[cfg(test)]
    fn message_capacity(&self) -> usize {
        self.spill
            .as_deref()
            .map_or(0, |spill| spill.message.capacity())
    }

    /// Bytes of a split control frame's payload received so far (tests).
    #[cfg(test)]
    fn control_len(&self) -> u8 {
        self.spill.as_deref().map_or(0, |spill| spill.control_len)
    }

    /// The violation whose close frame waits for the events before it.
    fn deferred_close(&self) -> Option<ProtocolError> {
        self.spill.as_deref().and_then(|spill| spill.deferred_close)
    }

    /// Mark the first `n` bytes of [`output`](Self::output) as written.
    ///
    /// # Panics
    ///
    /// If `n` is larger than `output().len()`.
    #[inline]
    pub fn consume_output(&mut self, n: usize) {
        if self.spill.is_some() && self.shared_queue().is_some() {
            assert!(
                n <= self.output_len(),
                "consume_output({n}) past the {} bytes of output",
                self.output_len()
            );
            self.consume_parts(n);
        } else {
            assert!(
                n <= self.output().len(),
                "consume_output({n}) past the {} bytes of output",
                self.output().len()
            );
            self.out_pos += n;
        }
        if n > 0 {
            self.timers.note_output_progress();
        }
        if self.output_drained() {
            self.out_pos = 0;
            if self.out.capacity() > MAX_RETAINED_OUTPUT {
                // A large message's buffer is not kept for the small ones that usually follow.
                self.out = Vec::new();
            } else {
                // Kept for the next burst: allocating it again for every batch of messages
                // would cost more than the framing. `release_buffers` frees it when idle.
                self.out.clear();
            }
        }
    }

    /// [`consume_output`](Self::consume_output) across the parts of the output.
    fn consume_parts(&mut self, mut n: usize) {
        while n > 0 {
            let front = self
                .spill
                .as_deref_mut()
                .and_then(|spill| spill.shared.front_mut());
            let Some((at, data)) = front else {
                self.out_pos += n;
                break;
            };
            if self.out_pos < *at {
                let k = n.min(*at - self.out_pos);
                self.out_pos += k;
                n -= k;
            } else {
                let k = n.min(data.len());
                data.advance(k);
                n -= k;
                if data.is_empty() {
                    if let Some(spill) = self.spill.as_deref_mut() {
                        spill.shared.pop_front();
                    }
                }
            }
        }
        self.tidy_spill();
    }

    /// Whether this side should close the transport once [`output`](Self::output) is drained:
    /// the server after the close handshake (RFC 6455 §7.1.1), either side after failing the
    /// connection. A client whose close handshake is done waits for the server's EOF instead
    /// (the adapter bounds that wait with a timeout).
    pub fn should_close_transport(&self) -> bool {
        if self.deferred_close().is_some() {
            // The failure's close frame is not even queued yet.
            return false;
        }
        match self.role {
            Role::Server => self.state() == State::Closed,
            // After EOF there is nothing left to wait for.
            Role::Client => self.failed || self.eof,
        }
    }

    /// The close frame the peer sent, once received (`Some(None)`: it had no status code).
    pub fn peer_close(&self) -> Option<&Option<crate::frame::CloseFrame>> {
        self.spill.as_deref()?.peer_close.as_ref()
    }
}

/// Input: frame parsing, reassembly and the peer's control frames.
impl Connection {
    fn input_finished(&self) -> bool {
        // §5.5.1: after the peer's close, nothing it sends is meaningful; after a failure or
        // EOF there is no connection left to feed.
        self.failed || self.eof || self.peer_closed()
    }

    fn process(&mut self, mut data: &[u8]) -> Result<(), ProtocolError> {
        while !data.is_empty() && !self.peer_closed() {
            let used = match self.frame() {
                None => self.read_header(data)?,
                Some(frame) => self.read_payload(frame, data)?,
            };
            data = data.get(used..).unwrap_or_default();
        }
        self.tidy_spill();
        Ok(())
    }

    /// [`process`](Self::process) on an owned buffer: a message that arrives whole, in one frame,
    /// is split off `data` and lent out instead of copied.
    fn process_buf(&mut self, data: &mut BytesMut) -> Result<(), ProtocolError> {
        // Bytes of `data` already consumed: the buffer itself is cut only to lend a payload.
        let mut pos = 0;
        while pos < data.len() && !self.peer_closed() {
            match self.short_path_at(&data[pos..]) {
                Short::Whole(_) => {
                    self.lend_whole_messages(data, pos)?;
                    pos = 0;
                    continue;
                }
                // Binary only: text is validated as it arrives (§8.1: invalid text fails the
                // connection at once, not when the rest of the message comes).
                Short::Partial if data[pos] == 0x82 => {
                    // Kept as it came: when the rest is read into the same buffer right after
                    // it, the two are joined without a copy (see `receive_buf`).
                    data.advance(pos);
                    self.spill.get_or_insert_with(Box::default).held = Some(std::mem::take(data));
                    return Ok(());
                }
                Short::Partial | Short::No => {}
            }
            let rest = data.len() - pos;
            pos += match self.frame() {
                None => self.read_header(&data[pos..])?,
                Some(frame) => match self.lendable(frame, rest) {
                    Some((kind, len)) => {
                        data.advance(pos);
                        pos = 0;
                        let mut payload = data.split_to(len);
                        if let Some(key) = frame.mask {
                            apply_mask(&mut payload, key, usize::from(frame.mask_offset));
                        }
                        let spill = self.spill_mut();
                        spill.message.finish_lent();
                        spill.frame = None;
                        let payload = payload.freeze();
                        let event = match kind {
                            DataKind::Binary => Event::Binary(payload),
                            // Validated once, whole, at SIMD speed.
                            DataKind::Text => Event::Text(Utf8Bytes::validated(payload)?),
                        };
                        self.events.push_back(event);
                        continue;
                    }
                    None => self.read_payload(frame, &data[pos..])?,
                },
            };
        }
        self.tidy_spill();
        Ok(())
    }

    /// Hand out the run of [whole messages](Self::short_path_at) that starts at `pos` in
    /// `data` (at least one), a batch at a time: each is unmasked in place, then the batch is
    /// split off `data` once and each message is a slice of it, which costs a reference count
    /// per message and no copy.
    fn lend_whole_messages(
        &mut self,
        data: &mut BytesMut,
        pos: usize,
    ) -> Result<(), ProtocolError> {
        /// Messages found before the batch is split off and handed out.
        const BATCH: usize = 32;
        let mut found = [(0usize, 0usize, DataKind::Binary); BATCH];
        let mut count = 0;
        let mut end = pos;
        while count < BATCH {
            let Short::Whole(whole) = self.short_path_at(&data[end..]) else {
                break;
            };
            let start = end + whole.header_len;
            end = start + whole.len;
            if let Some(key) = whole.mask {
                apply_mask(&mut data[start..end], key, 0);
            }
            found[count] = (start, whole.len, whole.kind);
            count += 1;
        }
        let batch = data.split_to(end).freeze();
        // One allocation for the batch rather than a queue grown 4, 8, 16 at a time.
        self.events.reserve(count);
        for &(start, len, kind) in &found[..count] {
            let payload = batch.slice(start..start + len);
            let event = match kind {
                DataKind::Binary => Event::Binary(payload),
                // Validated once, whole, at SIMD speed.
                DataKind::Text => Event::Text(Utf8Bytes::validated(payload)?),
            };
            self.events.push_back(event);
        }
        Ok(())
    }

    /// Whether the frame at the start of `data` is what most messages are: a single frame (FIN),
    /// text or binary, no RSV bit, masked as the role requires, within the limits, arriving
    /// between messages, and to be delivered whole. Such a frame passes every check of
    /// [`start_frame`](Self::start_frame) by construction, so it is lent out without that
    /// bookkeeping once it is all here ([`Short::Whole`]); until then ([`Short::Partial`]) its
    /// bytes are kept as they came. Anything else ([`Short::No`]) takes the general path, which
    /// gives the same events and errors at the same time: every check the general path makes on
    /// a partial header (the opcode, the top bit of a 64-bit length) is made here as early.
    #[inline]
    fn short_path_at(&self, data: &[u8]) -> Short {
        let Some(&b0) = data.first() else {
            return Short::No;
        };
        let kind = match b0 {
            0x81 => DataKind::Text,
            0x82 => DataKind::Binary,
            _ => return Short::No,
        };
        if self.spill.as_deref().is_some_and(Spill::input_busy) || self.config.deliver_fragments {
            return Short::No;
        }
        let Some(&b1) = data.get(1) else {
            return Short::Partial;
        };
        let masked = b1 & 0x80 != 0;
        if masked != (self.role == Role::Server) {
            return Short::No;
        }
        let (len, mut header_len) = match b1 & 0x7F {
            126 => {
                let Some(&[a, b]) = data.get(2..4) else {
                    return Short::Partial;
                };
                (u64::from(u16::from_be_bytes([a, b])), 4)
            }
            127 => {
                // §5.2: the top bit MUST be 0; the general path fails on its first byte.
                if data.get(2).is_some_and(|&b| b & 0x80 != 0) {
                    return Short::No;
                }
                let Some(ext) = data.get(2..10) else {
                    return Short::Partial;
                };
                let mut be = [0u8; 8];
                be.copy_from_slice(ext);
                (u64::from_be_bytes(be), 10)
            }
            short => (u64::from(short), 2),
        };
        let Ok(len) = usize::try_from(len) else {
            return Short::No;
        };
        if len > self.config.max_frame_size || len > self.config.max_message_size {
            return Short::No;
        }
        let mask = if masked {
            let Some(&[k0, k1, k2, k3]) = data.get(header_len..header_len + 4) else {
                return Short::Partial;
            };
            header_len += 4;
            Some([k0, k1, k2, k3])
        } else {
            None
        };
        if data.len() - header_len < len {
            return Short::Partial;
        }
        Short::Whole(WholeMessage {
            kind,
            header_len,
            len,
            mask,
        })
    }

    /// The message's kind and the payload length of `frame` if it can be lent out of the input
    /// (see [`receive_buf`](Self::receive_buf)): the whole of a message, uncompressed, all of it
    /// among the `available` bytes, delivered whole (not as fragments).
    fn lendable(&self, frame: IncomingFrame, available: usize) -> Option<(DataKind, usize)> {
        if !frame.fin || frame.opcode.is_control() {
            return None;
        }
        let spill = self.spill.as_deref()?;
        let kind = spill.message.empty_kind()?;
        let len = usize::try_from(frame.remaining).ok()?;
        let whole =
            len <= available && !spill.receiving_compressed && !self.config.deliver_fragments;
        whole.then_some((kind, len))
    }

    /// Consume header bytes from the start of `data`; returns how many were used.
    fn read_header(&mut self, data: &[u8]) -> Result<usize, ProtocolError> {
        if !self
            .spill
            .as_deref()
            .is_some_and(|spill| spill.header_len != 0)
        {
            // The common case: the whole header is in `data`, decode it in place.
            if let Some((header, len)) = FrameHeader::decode(data)? {
                self.start_frame(header)?;
                return Ok(len);
            }
        }
        // A header split across reads: gather it, 14 bytes at most.
        let spill = self.spill_mut();
        let have = usize::from(spill.header_len);
        let take = (MAX_HEADER_LEN - have).min(data.len());
        spill.header[have..have + take].copy_from_slice(&data[..take]);
        match FrameHeader::decode(&spill.header[..have + take])? {
            Some((header, len)) => {
                spill.header_len = 0;
                self.start_frame(header)?;
                // `have` bytes were a proper prefix, so the header ends inside this piece.
                Ok(len.saturating_sub(have))
            }
            None => {
                // Cannot truncate: at most MAX_HEADER_LEN.
                spill.header_len = (have + take) as u8;
                Ok(take)
            }
        }
    }

    /// Check a complete header against the role, the state and the limits, before any of its
    /// payload is read or stored.
    fn start_frame(&mut self, header: FrameHeader) -> Result<(), ProtocolError> {
        // §5.2: "MUST be 0 unless an extension is negotiated that defines meanings".
        if header.rsv & !self.allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        // RFC 7692 §6: the "Per-Message Compressed" bit is for the first frame of a data
        // message only; "an endpoint receiving such a frame MUST _Fail the WebSocket
        // Connection_". (Allowed only with permessage-deflate, so never set here without it.)
        let compressed = header.rsv & RSV1 != 0;
        if compressed && !matches!(header.opcode, OpCode::Text | OpCode::Binary) {
            return Err(ProtocolError::MisplacedCompressedBit);
        }
        // §5.1: a server MUST close on an unmasked frame, a client on a masked one.
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        let is_control = header.opcode.is_control();
        if is_control {
            // §5.5: control frames MUST have a payload of 125 bytes or less and MUST NOT be
            // fragmented.
            if !header.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if header.payload_len > to_u64(MAX_CONTROL_PAYLOAD) {
                return Err(ProtocolError::ControlFrameTooLong);
            }
        } else {
            // §5.4: continuation frames continue a message; a new message waits for the end of
            // the previous one.
            match (header.opcode, self.message_in_progress()) {
                (OpCode::Continuation, false) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Text | OpCode::Binary, true) => {
                    return Err(ProtocolError::ExpectedContinuation)
                }
                _ => {}
            }
        }
        let compressed_message = match header.opcode {
            OpCode::Continuation => self.receiving_compressed(),
            _ => compressed,
        };
        // §10.4: limits are decided from the announced length, before allocating anything.
        let max_frame = if compressed_message {
            // A compressed frame is inflated as it arrives, never stored, and may be a little
            // larger than the data it carries: deflate's worst case is 9 bits per byte (fixed
            // Huffman codes) plus block headers. Allow for that, so that a message at the size
            // limit is not refused for its compressed frame.
            let max = self.config.max_frame_size;
            max.saturating_add(max / 8 + 64)
        } else {
            self.config.max_frame_size
        };
        if header.payload_len > to_u64(max_frame) {
            return Err(ProtocolError::FrameTooLarge);
        }
        if is_control {
            if let Some(spill) = self.spill.as_deref_mut() {
                spill.control_len = 0;
            }
        } else {
            let max_message_size = self.config.max_message_size;
            let spill = self.spill_mut();
            spill.receiving_compressed = compressed_message;
            // A compressed message's limit is on its inflated size, checked as it inflates;
            // its frames are bounded by the frame limit above.
            if !compressed_message {
                spill
                    .message
                    .check_frame(header.payload_len, max_message_size)?;
            }
            match header.opcode {
                OpCode::Text => spill.message.start(DataKind::Text),
                OpCode::Binary => spill.message.start(DataKind::Binary),
                _ => {}
            }
        }
        let frame = IncomingFrame {
            opcode: header.opcode,
            fin: header.fin,
            mask: header.mask,
            mask_offset: 0,
            remaining: header.payload_len,
        };
        if frame.remaining == 0 {
            self.end_frame(frame)
        } else {
            self.set_frame(Some(frame));
            Ok(())
        }
    }

    /// Consume payload bytes of `frame` from the start of `data`; returns how many were used.
    fn read_payload(
        &mut self,
        mut frame: IncomingFrame,
        data: &[u8],
    ) -> Result<usize, ProtocolError> {
        let take = usize::try_from(frame.remaining).map_or(data.len(), |r| r.min(data.len()));
        let piece = &data[..take];
        if frame.opcode.is_control() {
            return self.read_control_payload(frame, piece);
        }
        let mut mask_offset = usize::from(frame.mask_offset);
        let deliver_fragments = self.config.deliver_fragments;
        // A data frame's `start_frame` made the spill.
        let spill = self.spill.get_or_insert_with(Box::default);
        if spill.receiving_compressed {
            self.inflate_piece(piece, frame.mask, &mut mask_offset)?;
        } else if frame.fin
            && frame.remaining == to_u64(take)
            && !deliver_fragments
            && spill.message.is_empty()
        {
            // A whole message in one frame, in one read, that did not take the short path
            // (`receive_data`). It goes out in one step (one copy, text validated once),
            // without the piece-by-piece bookkeeping.
            let event = spill.message.finish_whole(piece, frame.mask, mask_offset)?;
            spill.frame = None;
            self.events.push_back(event);
            return Ok(take);
        } else {
            let final_remaining = frame.fin.then_some(frame.remaining);
            spill
                .message
                .push(piece, final_remaining, frame.mask, &mut mask_offset)?;
        }
        // A position in the 4-byte key: cannot truncate.
        frame.mask_offset = (mask_offset % 4) as u8;
        let message_ends = frame.fin && frame.remaining == to_u64(take);
        if deliver_fragments && !message_ends {
            // The piece goes out as it arrived; the last one waits for `end_frame`, which
            // finishes the message (inflating the compressed tail first).
            if let Some(event) = self.spill_mut().message.take_fragment(false)? {
                self.events.push_back(event);
            }
        }
        frame.remaining -= to_u64(take);
        if frame.remaining == 0 {
            self.set_frame(None);
            self.end_frame(frame)?;
        } else {
            self.set_frame(Some(frame));
        }
        Ok(take)
    }

    /// Consume `piece`, the next payload bytes of the control frame `frame`; returns how many
    /// were used (all of them: the caller cut `piece` at the frame's end).
    ///
    /// The payload is gathered and unmasked in a stack buffer (at most 125 bytes, §5.5). Only
    /// when it is split across `receive_data` calls is the part that arrived kept on the heap
    /// until the rest comes.
    fn read_control_payload(
        &mut self,
        mut frame: IncomingFrame,
        piece: &[u8],
    ) -> Result<usize, ProtocolError> {
        let have = self
            .spill
            .as_deref()
            .map_or(0, |spill| usize::from(spill.control_len));
        let total = have + piece.len();
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        // The header check bounds the whole payload by MAX_CONTROL_PAYLOAD.
        let Some(dest) = payload.get_mut(have..total) else {
            return Err(ProtocolError::ControlFrameTooLong);
        };
        dest.copy_from_slice(piece);
        if let Some(key) = frame.mask {
            // A position in the 4-byte key: cannot truncate.
            frame.mask_offset = apply_mask(dest, key, usize::from(frame.mask_offset)) as u8;
        }
        if let Some(stored) = self
            .spill
            .as_deref()
            .and_then(|spill| spill.control.as_ref())
        {
            payload[..have].copy_from_slice(&stored[..have]);
        }
        frame.remaining -= to_u64(piece.len());
        if frame.remaining == 0 {
            if let Some(spill) = self.spill.as_deref_mut() {
                spill.frame = None;
                spill.control = None;
                spill.control_len = 0;
            }
            self.end_control(frame.opcode, &payload[..total])?;
        } else {
            let spill = self.spill_mut();
            let stored = spill
                .control
                .get_or_insert_with(|| Box::new([0; MAX_CONTROL_PAYLOAD]));
            stored[have..total].copy_from_slice(&payload[have..total]);
            // Cannot truncate: at most MAX_CONTROL_PAYLOAD.
            spill.control_len = total as u8;
            spill.frame = Some(frame);
        }
        Ok(piece.len())
    }

    /// The whole payload of `frame` has arrived.
    fn end_frame(&mut self, frame: IncomingFrame) -> Result<(), ProtocolError> {
        self.set_frame(None);
        if frame.opcode.is_control() {
            // Only an empty control frame ends here (`read_control_payload` ends the others).
            return self.end_control(frame.opcode, &[]);
        }
        if frame.fin {
            if self.receiving_compressed() {
                self.finish_inflating()?;
            }
            let deliver_fragments = self.config.deliver_fragments;
            // A data frame's `start_frame` made the spill.
            let message = &mut self.spill.get_or_insert_with(Box::default).message;
            if deliver_fragments {
                if let Some(event) = message.take_fragment(true)? {
                    self.events.push_back(event);
                }
            } else {
                let event = message.finish()?;
                self.events.push_back(event);
            }
        }
        Ok(())
    }

    /// The whole `payload` of a control frame has arrived.
    fn end_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), ProtocolError> {
        match opcode {
            OpCode::Ping => {
                // §5.5.2: answer with a pong carrying the same payload, unless our close is
                // already sent (§5.5.1: nothing follows it).
                if !self.close_sent {
                    self.write_frame(true, OpCode::Pong, payload);
                }
                self.events
                    .push_back(Event::Ping(Bytes::copy_from_slice(payload)));
            }
            // §5.5.3: an unsolicited pong needs no answer.
            OpCode::Pong => {
                self.awaiting_pong = false;
                self.events
                    .push_back(Event::Pong(Bytes::copy_from_slice(payload)));
            }
            OpCode::Close => self.receive_close(payload)?,
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {}
        }
        Ok(())
    }

    fn receive_close(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        let close = CloseFrame::parse(payload)?;
        // The answering close is queued when `poll_event` hands this event out, not here:
        // messages that arrived before the close are delivered first, and replies to them
        // (an echo) must still go out before our close frame (§5.5.1: "as soon as practical").
        // A message cut short by the close is never delivered.
        let spill = self.spill_mut();
        spill.message.clear();
        spill.peer_close = Some(close.clone());
        self.events.push_back(Event::Close(close));
        Ok(())
    }

    /// Fail the connection (§7.1.7): stop reading, and queue the close frame for `err` unless
    /// ours was already sent. While events decoded before the violation wait to be handed out,
    /// the close frame waits for them (`poll_event`): the answers to them still go first.
    fn fail(&mut self, err: ProtocolError) {
        self.failed = true;
        // Input is over; queued output stays.
        if let Some(spill) = self.spill.as_deref_mut() {
            spill.held = None;
            spill.control = None;
            spill.control_len = 0;
            spill.frame = None;
            spill.header_len = 0;
            spill.message.clear();
        }
        // Nothing more is inflated: free the state now rather than when the connection goes.
        #[cfg(feature = "deflate")]
        if let Some(deflate) = &mut self.deflate {
            deflate.decompressor.release();
        }
        if self.events.is_empty() {
            self.tidy_spill();
            self.write_failure_close(err);
        } else {
            self.spill_mut().deferred_close = Some(err);
        }
    }

    /// The close frame that fails the connection for `err`.
    fn write_failure_close(&mut self, err: ProtocolError) {
        let code = err.close_code();
        // 1006 (the transport ended) is never sent on the wire (§7.4.1).
        if !self.close_sent && code.is_sendable() {
            let reason = err.to_string();
            self.write_close(Some((code, truncate_at_char(&reason, MAX_CLOSE_REASON))));
        }
    }
}

/// Output: framing, masking and the output buffer.
impl Connection {
    /// A whole message may be sent now: not after our close, not inside a fragmented one.
    fn check_can_send_message(&self) -> Result<(), ApiMisuse> {
        self.check_can_send_data()?;
        if self.sending.is_some() {
            return Err(ApiMisuse::FragmentOrder);
        }
        Ok(())
    }

    fn check_can_send_data(&self) -> Result<(), ApiMisuse> {
        // §5.5.1: nothing is sent after our close frame. A failure whose close frame waits for
        // the events before it still lets the application answer those.
        if self.close_sent || (self.failed && self.deferred_close().is_none()) {
            Err(ApiMisuse::AlreadyClosing)
        } else {
            Ok(())
        }
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), ApiMisuse> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(ApiMisuse::ControlPayloadTooLong);
        }
        self.check_can_send_data()?;
        self.write_frame(true, opcode, payload);
        Ok(())
    }

    /// Queue our close frame (`None`: without a status code) and stop sending.
    fn write_close(&mut self, close: Option<(CloseCode, &str)>) {
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        let len = match close {
            None => 0,
            Some((code, reason)) => {
                let reason = truncate_at_char(reason, MAX_CLOSE_REASON);
                payload[..2].copy_from_slice(&code.0.to_be_bytes());
                payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
                2 + reason.len()
            }
        };
        self.write_frame(true, OpCode::Close, &payload[..len]);
        self.close_sent = true;
        self.sending = None;
    }

    /// Queue a data message or fragment (compressed when permessage-deflate is in use and the
    /// message qualifies), split into frames of at most `max_send_frame_size`.
    #[inline]
    fn write_message(&mut self, opcode: OpCode, data: &[u8], fin: bool) {
        #[cfg(feature = "deflate")]
        if self.deflate.is_some() {
            if let Some((compressed, rsv)) = self.compress_outgoing(opcode, data, fin) {
                self.write_frames(opcode, rsv, &compressed, fin);
                return;
            }
        }
        if data.len() <= self.config.max_send_frame_size {
            // The usual message: one frame.
            self.write_frame_rsv(fin, 0, opcode, data);
        } else {
            self.write_frames(opcode, 0, data, fin);
        }
    }

    /// [`write_message`](Self::write_message) for a payload that may be queued without a copy
    /// (see [`send_binary_shared`](Self::send_binary_shared)). With permessage-deflate every
    /// message takes the copying path, which decides whether to compress it.
    #[inline]
    fn write_message_shared(&mut self, opcode: OpCode, data: Bytes) {
        #[cfg(feature = "deflate")]
        if self.deflate.is_some() {
            // The copying path decides whether to compress.
            self.write_message(opcode, &data, true);
            return;
        }
        self.write_whole_shared(opcode, 0, data);
    }

    /// Queue a whole message's payload as it is, `rsv` on its first frame: without a copy where
    /// it can go out from `data` itself (see [`send_binary_shared`](Self::send_binary_shared)).
    fn write_whole_shared(&mut self, opcode: OpCode, rsv: u8, data: Bytes) {
        if data.len() > self.config.max_send_frame_size {
            // Split into frames.
            self.write_frames(opcode, rsv, &data, true);
            return;
        }
        if data.len() < SHARED_MIN_LEN || self.rng.is_some() {
            // Copied: small, or to be masked (a client's).
            self.write_frame_rsv(true, rsv, opcode, &data);
            return;
        }
        self.prepare_output(0);
        self.write_header(true, rsv, opcode, None, data.len());
        let at = self.out.len();
        self.spill
            .get_or_insert_with(Box::default)
            .shared
            .push_back((at, data));
    }

    /// Queue `data` as frames of at most `max_send_frame_size`, `rsv` on the first only.
    fn write_frames(&mut self, opcode: OpCode, rsv: u8, data: &[u8], fin: bool) {
        let max = self.config.max_send_frame_size.max(1);
        let mut opcode = opcode;
        let mut rsv = rsv;
        let mut rest = data;
        loop {
            let (chunk, tail) = rest.split_at(rest.len().min(max));
            self.write_frame_rsv(fin && tail.is_empty(), rsv, opcode, chunk);
            rsv = 0;
            if tail.is_empty() {
                return;
            }
            opcode = OpCode::Continuation;
            rest = tail;
        }
    }

    /// Queue one frame without RSV bits (control frames, and data without an extension).
    fn write_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        self.write_frame_rsv(fin, 0, opcode, payload);
    }

    /// Queue one frame: header, then the payload copied once and masked in place.
    fn write_frame_rsv(&mut self, fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) {
        self.prepare_output(payload.len());
        // §5.3: a client masks every frame with a fresh, unpredictable key; a server never masks.
        let Some(rng) = self.rng.as_mut() else {
            if let Ok(short @ 0..=125) = u8::try_from(payload.len()) {
                // A server's small frame, the most common: its two header bytes, written
                // directly.
                let b0 = u8::from(fin) << 7 | (rsv & 0b111) << 4 | opcode.as_u8();
                self.out.extend_from_slice(&[b0, short]);
                self.out.extend_from_slice(payload);
                return;
            }
            self.write_header(fin, rsv, opcode, None, payload.len());
            self.out.extend_from_slice(payload);
            return;
        };
        let mut key = [0u8; 4];
        rng.fill(&mut key);
        let start = self.write_header(fin, rsv, opcode, Some(key), payload.len());
        self.out.extend_from_slice(payload);
        apply_mask(&mut self.out[start..], key, 0);
    }

    /// Before a frame is appended to the output: start the write timeout if output starts
    /// waiting, drop what was written, and reserve room for a header and `payload_len` bytes.
    #[inline(always)]
    fn prepare_output(&mut self, payload_len: usize) {
        if self.output_drained() {
            // The write timeout counts from when output starts waiting.
            self.timers.note_output_progress();
        }
        self.compact_output();
        // Room for the longest header, so it can be copied whole (see `write_header`).
        let needed = MAX_HEADER_LEN + payload_len;
        if self.out.capacity() - self.out.len() < needed {
            // Reserve once per frame; the first allocation leaves room for more small frames.
            let wanted = (self.out.len() + needed).max(MIN_OUTPUT_CAPACITY);
            self.out.reserve(wanted - self.out.len());
        }
    }

    /// Append a frame header (room for [`MAX_HEADER_LEN`] bytes is reserved); returns where the
    /// payload starts.
    fn write_header(
        &mut self,
        fin: bool,
        rsv: u8,
        opcode: OpCode,
        mask: Option<[u8; 4]>,
        payload_len: usize,
    ) -> usize {
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: to_u64(payload_len),
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        // A fixed-size copy is a couple of moves where a copy of `head_len` bytes is a call to
        // `memcpy`; the bytes past the header are cut off again before the payload.
        let start = self.out.len() + head_len;
        self.out.extend_from_slice(&head);
        self.out.truncate(start);
        start
    }

    /// Drop written bytes from the front once they outweigh the unwritten ones, so a transport
    /// that writes a little at a time does not make the buffer grow without bound.
    #[inline]
    fn compact_output(&mut self) {
        if self.out_pos > 0 && self.out_pos >= self.out.len() - self.out_pos {
            self.out.drain(..self.out_pos);
            // Queued payloads go after the same bytes as before, now earlier in `out`.
            let queued = self.spill.as_deref_mut().map(|spill| &mut spill.shared);
            for (at, _) in queued.into_iter().flatten() {
                *at -= self.out_pos;
            }
            self.out_pos = 0;
        }
    }
}

/// Without permessage-deflate no message is compressed: RSV1 is refused with the other reserved
/// bits, so these are never reached.
#[cfg(not(feature = "deflate"))]
impl Connection {
    fn inflate_piece(
        &mut self,
        _piece: &[u8],
        _mask: Option<[u8; 4]>,
        _mask_offset: &mut usize,
    ) -> Result<(), ProtocolError> {
        Err(ProtocolError::ReservedBits)
    }

    fn finish_inflating(&mut self) -> Result<(), ProtocolError> {
        Err(ProtocolError::ReservedBits)
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
