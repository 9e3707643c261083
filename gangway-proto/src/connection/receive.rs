//! Receiving: input is kept as it arrives and decoded when the application asks for the next
//! event, one frame at a time, by one path for every frame.
//!
//! Each frame's header is decoded by [`FrameHeader::decode`] and checked by
//! [`Connection::check_header`], whatever comes next. Then one decision: a control frame, or a
//! message that is one whole frame, whose payload is all in the input, is taken out of it in one
//! piece ([`Connection::take_payload`]: lent, or copied for input given by
//! [`Connection::receive_data`]); a single-frame binary message that is not all there yet is left
//! in the input as it came, to be taken whole once the rest arrives; anything else (text that
//! must be validated as it arrives, fragmented and compressed messages, messages delivered in
//! pieces) is gathered into the message being reassembled, piece by piece.

use std::ops::ControlFlow;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};

use super::send::SHARED_MIN_LEN;
use super::state::{End, Phase, State};
use super::{Connection, MAX_CLOSE_REASON, MAX_CONTROL_PAYLOAD, RSV1};
use crate::error::{ApiMisuse, ProtocolError};
use crate::frame::mask::apply_mask;
use crate::frame::{CloseCode, CloseFrame, FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::message::{to_u64, DataKind, Event, EventRef, Reassembly};
use crate::role::Role;
use crate::text::Utf8Bytes;

/// A frame left in the input until it is whole is copied into a buffer of its own when it is at
/// most this large (a split header, a control frame, a small message), rather than kept as a
/// slice of the buffer it was read into: a connection that goes quiet in the middle of a frame
/// must not keep a whole read buffer alive for a few bytes. A larger frame, the start of a large
/// message, is kept as it came, and joined with the rest without a copy when the rest is read
/// into the same buffer right after it (see [`Input::fill`]).
const COPY_PARTIAL_UP_TO: usize = 16 << 10;

/// The largest input buffer of [`Connection::receive_data`] kept once everything in it was
/// handed out, for the next call; a larger one (left by a large message) is freed at once.
const MAX_RETAINED_INPUT: usize = 64 << 10;

/// What arrived and was not handed out yet. (Two flags about it, whether it is a copy and
/// whether the transport's read side ended after it, are the connection's `input_copied` and
/// `input_eof`, packed with its other small fields.)
#[derive(Debug, Default)]
pub(super) struct Input {
    /// Bytes received and not handed out, from the start of a frame.
    buf: BytesMut,
    /// Bytes received after `buf` while it held a frame that was not whole: kept apart, so
    /// that only the rest of that frame is joined to it (see [`Input::fill`]).
    next: Option<Box<BytesMut>>,
}

impl Input {
    /// Bytes received and not handed out.
    pub(super) fn len(&self) -> usize {
        self.buf.len() + self.next.as_deref().map_or(0, BytesMut::len)
    }

    /// Append `data`, handed over by the caller. Returns whether the input is all `data`
    /// now (no copy of its own).
    #[inline]
    fn push_lent(&mut self, data: BytesMut) -> bool {
        if self.buf.is_empty() && self.next.is_none() {
            // The usual case: the last read was all handed out.
            self.buf = data;
            return true;
        }
        match self.next.as_deref_mut() {
            Some(next) => next.unsplit(data),
            None => self.next = Some(Box::new(data)),
        }
        false
    }

    /// Append a copy of `data`.
    fn push_copy(&mut self, data: &[u8]) {
        match self.next.as_deref_mut() {
            Some(next) => next.extend_from_slice(data),
            None => self.buf.extend_from_slice(data),
        }
    }

    /// Whether any byte waits (the bytes in `next` taken in once `buf` is used up).
    #[inline]
    fn ready(&mut self) -> bool {
        if self.buf.is_empty() {
            let Some(next) = self.next.take() else {
                return false;
            };
            self.buf = *next;
        }
        true
    }

    /// Make `buf` hold at least `want` bytes if the input has them (moving them from `next`);
    /// returns whether it does. Only the bytes wanted are moved: the frame they complete is
    /// then whole, and what follows it stays where it was read. `BytesMut::unsplit` joins them
    /// without a copy when they were read into the same buffer right after `buf`.
    #[inline(always)]
    fn fill(&mut self, want: usize) -> bool {
        self.buf.len() >= want || self.fill_from_next(want)
    }

    /// [`fill`](Self::fill) when `buf` is short of `want`.
    #[inline(never)]
    fn fill_from_next(&mut self, want: usize) -> bool {
        while self.buf.len() < want {
            let Some(next) = self.next.as_deref_mut() else {
                return false;
            };
            let take = (want - self.buf.len()).min(next.len());
            let piece = next.split_to(take);
            if next.is_empty() {
                self.next = None;
            }
            self.buf.unsplit(piece);
        }
        true
    }

    /// Decode the header at the start of the input, if it is all there.
    #[inline(always)]
    fn header(&mut self) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        loop {
            // One decode site, so that the header stays in registers on the usual path.
            if let Some(found) = FrameHeader::decode(&self.buf)? {
                return Ok(Some(found));
            }
            if !self.more_header_bytes() {
                return Ok(None);
            }
        }
    }

    /// [`header`](Self::header) found no whole one in `buf`: it is used up (`next` is taken
    /// in), or the header is split between reads (at most 14 bytes joined). Returns whether
    /// `buf` got more bytes.
    #[inline(never)]
    fn more_header_bytes(&mut self) -> bool {
        if self.buf.is_empty() {
            return self.ready();
        }
        let (have, available) = (self.buf.len(), self.len());
        if available == have {
            return false;
        }
        self.fill(MAX_HEADER_LEN.min(available));
        true
    }

    /// Move everything in `next` into `buf` (a frame that is not whole yet: all of it is its).
    fn fill_all(&mut self) {
        self.fill(self.len());
    }

    /// `buf` is used up: let go of the buffer it was read into (for a lent one, the caller's
    /// read buffer, which can then be reused in place), and take in `next`. A `copied` one is
    /// kept for the next copy.
    #[inline]
    fn used_up(&mut self, copied: bool) {
        if copied {
            // Our own copy: kept for the next `receive_data` (the space of the bytes handed out
            // taken back first, without allocating), unless it is large.
            self.buf.clear();
            self.buf.reserve(1);
            if self.buf.capacity() > MAX_RETAINED_INPUT {
                self.buf = BytesMut::new();
            }
        } else {
            self.buf = BytesMut::new();
        }
        if let Some(next) = self.next.take() {
            self.buf = *next;
        }
    }

    /// Decoding stopped in the middle of a frame (`buf` holds its start, `total` bytes long when
    /// known): copy a small one into a buffer of its own (see [`COPY_PARTIAL_UP_TO`]).
    fn keep_partial(&mut self, total: Option<usize>) {
        if self.buf.is_empty() {
            return;
        }
        let total = total.unwrap_or(MAX_HEADER_LEN);
        if total > COPY_PARTIAL_UP_TO {
            return;
        }
        let mut own = BytesMut::with_capacity(total.max(self.buf.len()));
        own.extend_from_slice(&self.buf);
        self.buf = own;
    }

    /// Nothing more will be read: drop what is left.
    fn finish(&mut self) {
        *self = Input::default();
    }

    /// Free an empty buffer kept for `receive_data`.
    pub(super) fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.next.is_none() {
            self.buf = BytesMut::new();
        }
    }

    /// Whether [`release_if_empty`](Self::release_if_empty) would free anything.
    pub(super) fn holds_empty_buffer(&self) -> bool {
        self.buf.is_empty() && self.next.is_none() && self.buf.capacity() > 0
    }
}

/// What receiving needs only for some messages, kept out of line: a message or frame gathered
/// piece by piece (text not all in one read, fragmented, compressed, or delivered in pieces), and
/// the peer's close frame. Whole single-frame messages, most of the traffic, need none of it, and
/// every idle connection (whose size counts thousands of times over on a server) is one pointer
/// smaller for each field here.
#[derive(Debug, Default)]
pub(super) struct Spill {
    /// The data frame whose payload is being gathered, after its header.
    frame: Option<IncomingFrame>,
    /// The data message being reassembled.
    pub(super) message: Reassembly,
    /// That message is compressed (RSV1 on its first frame, RFC 7692 §6).
    receiving_compressed: bool,
    /// The peer's close frame once received (`Some(None)`: it had no status code).
    pub(super) peer_close: Option<Option<CloseFrame>>,
}

impl Spill {
    /// Whether it holds nothing any more and can be freed.
    pub(super) fn is_empty(&self) -> bool {
        self.frame.is_none() && !self.message.in_progress() && self.peer_close.is_none()
    }
}

/// What the decoding loop found next.
enum Next {
    /// An event made by the loop: a control frame, a message gathered piece by piece, a piece.
    Event(Event),
    /// A message whose only frame is whole in the input, still there, its header decoded and
    /// checked: one split off for [`Connection::poll_event`], lent in place by
    /// [`Connection::for_each_event`].
    Whole(WholeFrame),
}

/// A whole single-frame message at the start of the input (see [`Next::Whole`]).
#[derive(Clone, Copy)]
struct WholeFrame {
    kind: DataKind,
    header_len: usize,
    len: usize,
    mask: Option<[u8; 4]>,
}

/// What [`Connection::for_each_event`]'s callback may do while an event is lent to it: send.
/// (The input the event is lent from is out of the connection meanwhile, so nothing else is
/// offered.)
#[derive(Debug)]
pub struct Replies<'a> {
    conn: &'a mut Connection,
    /// The message lent with it, for [`echo`](Self::echo).
    lent: Lent<'a>,
}

/// The message lent to [`Connection::for_each_event`]'s callback, as its [`Replies`] keep it.
#[derive(Debug)]
enum Lent<'a> {
    /// Not a message (a control frame, a piece).
    Nothing,
    /// Text, a slice of the input (a message of less than [`SHARED_MIN_LEN`] bytes, or input
    /// given by [`Connection::receive_data`]).
    Text(&'a str),
    /// Binary, a slice of the input (as for `Text`).
    Binary(&'a [u8]),
    /// A message that shares the input's buffer, or has one of its own (gathered piece by piece).
    Shared(&'a Event),
}

impl Replies<'_> {
    /// Send the message lent with these replies back as it is (text as text, binary as binary),
    /// as [`Connection::send_binary_shared`] and [`Connection::send_text_shared`] would: a large
    /// one goes out of the buffer it arrived in, without a copy. Returns whether there was a
    /// message to send (not for control frames and pieces).
    ///
    /// # Errors
    ///
    /// As [`Connection::send_text`].
    #[inline]
    pub fn echo(&mut self) -> Result<bool, ApiMisuse> {
        match self.lent {
            Lent::Nothing => return Ok(false),
            Lent::Text(text) => self.conn.send_text(text)?,
            Lent::Binary(data) => self.conn.send_binary(data)?,
            Lent::Shared(Event::Text(text)) => self.conn.send_text_shared(text.clone())?,
            Lent::Shared(Event::Binary(data)) => self.conn.send_binary_shared(data.clone())?,
            Lent::Shared(_) => return Ok(false),
        }
        Ok(true)
    }

    /// [`Connection::send_text`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_text`].
    #[inline]
    pub fn send_text(&mut self, text: &str) -> Result<(), ApiMisuse> {
        self.conn.send_text(text)
    }

    /// [`Connection::send_binary`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_text`].
    #[inline]
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), ApiMisuse> {
        self.conn.send_binary(data)
    }

    /// [`Connection::send_fragment`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_fragment`].
    pub fn send_fragment(
        &mut self,
        kind: DataKind,
        data: &[u8],
        fin: bool,
    ) -> Result<(), ApiMisuse> {
        self.conn.send_fragment(kind, data, fin)
    }

    /// [`Connection::send_ping`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_ping`].
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), ApiMisuse> {
        self.conn.send_ping(payload)
    }

    /// [`Connection::send_pong`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_pong`].
    pub fn send_pong(&mut self, payload: &[u8]) -> Result<(), ApiMisuse> {
        self.conn.send_pong(payload)
    }

    /// [`Connection::send_close`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_close`].
    pub fn send_close(&mut self, code: CloseCode, reason: &str) -> Result<(), ApiMisuse> {
        self.conn.send_close(code, reason)
    }

    /// [`Connection::state`].
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// [`Connection::output_len`]: what waits to be written, this reply included.
    #[inline]
    pub fn output_len(&self) -> usize {
        self.conn.output_len()
    }
}

/// A data frame whose header is decoded and whose payload is being gathered.
#[derive(Clone, Copy, Debug)]
struct IncomingFrame {
    fin: bool,
    mask: Option<[u8; 4]>,
    /// Where in the masking key the next payload byte is (0 to 3).
    mask_offset: u8,
    /// Payload bytes not received yet.
    remaining: u64,
}

/// Input: feeding it, and handing out what it decodes to.
impl Connection {
    /// Feed bytes received from the transport at `now`. Any amount, split anywhere; nothing is
    /// decoded until [`poll_event`](Self::poll_event) asks for the next event.
    ///
    /// The bytes are copied (what is not handed out yet is kept), and so is every message
    /// decoded from them: each owns its bytes, whatever the caller keeps. See
    /// [`receive_buf`](Self::receive_buf) to hand over the buffer instead.
    ///
    /// Received bytes restart the idle and keepalive clocks; the first call given the time
    /// starts them. Input after the peer's close frame, after EOF or after a failure is ignored.
    pub fn receive_data(&mut self, data: &[u8], now: Instant) {
        self.note_received(now, !data.is_empty());
        if !data.is_empty() && self.phase.receiving() {
            self.input.push_copy(data);
            self.input_copied = true;
        }
    }

    /// Feed bytes received from the transport at `now`, handing over the buffer that holds
    /// them: like [`receive_data`](Self::receive_data), except that a message whose only frame is
    /// whole in the input (and not compressed) is delivered as a slice of it, unmasked in place,
    /// with no copy and no allocation.
    ///
    /// A binary message whose only frame is not all here yet is kept as it came until the rest
    /// arrives; when the rest comes in the bytes that follow it in the same buffer (the next read
    /// into a buffer that each read is split off, as one connection reading a large message
    /// does), the two are joined without a copy (`BytesMut::unsplit`).
    ///
    /// Such an [`Event::Binary`] or [`Event::Text`] shares `data`'s allocation: keeping it keeps
    /// that whole allocation alive (the read buffer it was split from, when the caller reads into
    /// a large buffer and splits each read off, as `BytesMut::split` does). An application that
    /// keeps many small messages for long should copy them (`Bytes::copy_from_slice`,
    /// `String::from`); a caller that cannot know should use
    /// [`receive_data`](Self::receive_data).
    ///
    /// ```
    /// use std::time::Instant;
    /// use bytes::BytesMut;
    /// use gangway_proto::{Config, Connection, Event, Role};
    ///
    /// let mut server = Connection::new(Role::Server, Config::default());
    /// // A masked binary frame carrying "hi" (key 1, 2, 3, 4), as a client sends it.
    /// let frame = [0x82, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    /// server.receive_buf(BytesMut::from(&frame[..]), Instant::now());
    /// assert_eq!(server.poll_event()?, Some(Event::Binary("hi".into())));
    /// assert_eq!(server.poll_event()?, None);
    /// # Ok::<(), gangway_proto::ProtocolError>(())
    /// ```
    #[inline]
    pub fn receive_buf(&mut self, data: BytesMut, now: Instant) {
        self.note_received(now, !data.is_empty());
        if !data.is_empty() && self.phase.receiving() && self.input.push_lent(data) {
            self.input_copied = false;
        }
    }

    /// The transport's read side ended. If the close handshake had not finished, the events
    /// before the end are still handed out, then [`poll_event`](Self::poll_event) fails with
    /// [`ProtocolError::UnexpectedEof`] (status 1006, which is never sent).
    pub fn receive_eof(&mut self) {
        match self.phase {
            // The server closed the transport after the close handshake (§7.1.1).
            Phase::AwaitingEof => self.enter(Phase::Ended(End::Clean)),
            Phase::Open | Phase::CloseSent => self.input_eof = true,
            Phase::Ended(_) => {}
        }
    }

    /// Decode and hand out the next event from the peer, in order: `Ok(None)` when the input
    /// holds no whole event (feed more, then call again).
    ///
    /// Answers go out as events are handed out: a ping's pong is queued with the ping, and the
    /// peer's close frame is answered (same code and reason) when it is handed out, unless we
    /// closed first; replies to the messages before it, queued by the application meanwhile, go
    /// out first.
    ///
    /// # Errors
    ///
    /// The peer's protocol violation (or [`ProtocolError::UnexpectedEof`] after
    /// [`receive_eof`](Self::receive_eof) before the close handshake finished), once, when it is
    /// reached: every event before it was handed out by earlier calls. The connection has failed:
    /// a close frame with [`ProtocolError::close_code`] is queued in the output (unless ours was
    /// already sent, or the code is 1006), later input is ignored and later calls return
    /// `Ok(None)`.
    #[inline]
    pub fn poll_event(&mut self) -> Result<Option<Event>, ProtocolError> {
        if !self.phase.receiving() {
            return Ok(None);
        }
        let next = match self.next_frame() {
            Ok(Some(Next::Event(event))) => return Ok(Some(event)),
            Ok(Some(Next::Whole(whole))) => {
                let payload = self.take_frame(whole.header_len, whole.len, whole.mask);
                Event::from_whole(whole.kind, payload)
            }
            Ok(None) => return self.input_exhausted(),
            Err(err) => Err(err),
        };
        next.map(Some).inspect_err(|&err| self.fail(err))
    }

    /// Decode and hand out, lent, every event the input holds, to `f`, in order, until the
    /// input holds no whole event or `f` returns [`ControlFlow::Break`]; meanwhile `f` may send
    /// through the [`Replies`] it is given. Returns `Break` when `f` stopped it, `Continue` when
    /// the input is used up (feed more, then call again).
    ///
    /// This is [`poll_event`](Self::poll_event) without handing anything over: the same decoding,
    /// the same checks, the same automatic answers, but a message whose only frame is whole in
    /// the input is unmasked in place and lent to `f` as a slice of the input, so that nothing is
    /// split off, counted or allocated for it. (Events made otherwise, such as control frames and
    /// messages gathered piece by piece, are lent from the [`Event`] made for them.) For
    /// applications that answer each message at once, such as an echo or a router; one that
    /// keeps a message copies it (`to_vec`, `to_owned`).
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// use std::time::Instant;
    /// use bytes::BytesMut;
    /// use gangway_proto::{Config, Connection, EventRef, Role};
    ///
    /// let mut server = Connection::new(Role::Server, Config::default());
    /// // Two masked binary frames, "hi" and "yo" (key 1, 2, 3, 4), as a client sends them.
    /// let frames = [
    ///     0x82, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2,
    ///     0x82, 0x82, 1, 2, 3, 4, b'y' ^ 1, b'o' ^ 2,
    /// ];
    /// server.receive_buf(BytesMut::from(&frames[..]), Instant::now());
    /// let flow = server.for_each_event(|event, replies| {
    ///     if let EventRef::Binary(data) = event {
    ///         replies.send_binary(data).unwrap(); // echo
    ///     }
    ///     ControlFlow::Continue(())
    /// })?;
    /// assert!(flow.is_continue());
    /// assert_eq!(server.output(), [0x82, 2, b'h', b'i', 0x82, 2, b'y', b'o']);
    /// # Ok::<(), gangway_proto::ProtocolError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`poll_event`](Self::poll_event): the peer's violation, once, when it is reached, after
    /// every event before it was handed to `f`.
    pub fn for_each_event<F>(&mut self, mut f: F) -> Result<ControlFlow<()>, ProtocolError>
    where
        F: FnMut(EventRef<'_>, &mut Replies<'_>) -> ControlFlow<()>,
    {
        while self.phase.receiving() {
            let flow = match self.next_frame() {
                Ok(Some(Next::Whole(whole))) => self.lend_frame(whole, &mut f)?,
                Ok(Some(Next::Event(event))) => {
                    let lent = match &event {
                        Event::Text(_) | Event::Binary(_) => Lent::Shared(&event),
                        _ => Lent::Nothing,
                    };
                    f(event.lend(), &mut Replies { conn: self, lent })
                }
                Ok(None) => {
                    self.input_exhausted()?;
                    break;
                }
                Err(err) => {
                    self.fail(err);
                    return Err(err);
                }
            };
            if flow.is_break() {
                return Ok(flow);
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Lend the message `whole` to `f`, as a slice of the input, then drop it from the input.
    /// The input's buffer is out of the connection while `f` runs (`f` can only send, which
    /// never touches it), so the slice and the [`Replies`] borrow apart.
    #[inline(always)]
    fn lend_frame<F>(
        &mut self,
        whole: WholeFrame,
        f: &mut F,
    ) -> Result<ControlFlow<()>, ProtocolError>
    where
        F: FnMut(EventRef<'_>, &mut Replies<'_>) -> ControlFlow<()>,
    {
        if whole.len >= SHARED_MIN_LEN && !self.input_copied {
            // Large: split off (one reference count for many bytes), so that an echo of it goes
            // out of the read buffer without a copy.
            let payload = self.take_frame(whole.header_len, whole.len, whole.mask);
            let message =
                Event::from_whole(whole.kind, payload).inspect_err(|&err| self.fail(err))?;
            let lent = Lent::Shared(&message);
            return Ok(f(message.lend(), &mut Replies { conn: self, lent }));
        }
        let total = whole.header_len + whole.len;
        self.input.fill(total);
        let mut buf = std::mem::take(&mut self.input.buf);
        let payload = &mut buf[whole.header_len..total];
        if let Some(key) = whole.mask {
            apply_mask(payload, key, 0);
        }
        let payload = &buf[whole.header_len..total];
        let event = match whole.kind {
            DataKind::Binary => Ok(EventRef::Binary(payload)),
            DataKind::Text => crate::text::validate(payload).map(EventRef::Text),
        };
        let flow = event.map(|event| {
            let lent = match event {
                EventRef::Text(text) => Lent::Text(text),
                _ => Lent::Binary(payload),
            };
            f(event, &mut Replies { conn: self, lent })
        });
        // The empty buffer put in its place while `f` ran holds no allocation: forgotten rather
        // than dropped (which would look at it again).
        let placeholder = std::mem::replace(&mut self.input.buf, buf);
        debug_assert_eq!(placeholder.capacity(), 0, "sending touched the input");
        std::mem::forget(placeholder);
        self.input.buf.advance(total);
        if self.input.buf.is_empty() {
            self.input.used_up(self.input_copied);
        }
        flow.inspect_err(|&err| self.fail(err))
    }

    /// [`poll_event`](Self::poll_event) found no whole event in the input (once per read: out of
    /// line, so the per-message path stays small).
    #[inline(never)]
    fn input_exhausted(&mut self) -> Result<Option<Event>, ProtocolError> {
        if self.input_eof {
            // §7.1.5: closed without a close frame (in the middle of a frame, or between).
            self.fail(ProtocolError::UnexpectedEof);
            return Err(ProtocolError::UnexpectedEof);
        }
        if self.gathering().is_none() {
            let total = match FrameHeader::decode(&self.input.buf) {
                Ok(Some((header, len))) => usize::try_from(header.payload_len)
                    .ok()
                    .and_then(|payload| payload.checked_add(len)),
                _ => None,
            };
            if !self.input_copied {
                self.input.keep_partial(total);
            }
        }
        self.tidy_spill();
        Ok(None)
    }

    /// The one decoding loop: the next event, or a message whose only frame is whole in the
    /// input, left there for the caller to take out ([`poll_event`](Self::poll_event)) or lend
    /// ([`for_each_event`](Self::for_each_event)); `None` when the input holds none whole.
    #[inline(always)]
    fn next_frame(&mut self) -> Result<Option<Next>, ProtocolError> {
        loop {
            if let Some(frame) = self.gathering() {
                if !self.input.ready() {
                    return Ok(None);
                }
                match self.gather(frame)? {
                    Some(event) => return Ok(Some(Next::Event(event))),
                    None => continue,
                }
            }
            // Matched, not taken apart with `?`: through `?`, the optimizer stored the header's
            // length in pieces and loaded it back whole, a load that waits for the stores to
            // retire, on every frame (the hottest instruction of a small echo in a profile).
            let (header, header_len) = match self.input.header() {
                Ok(Some(found)) => found,
                Ok(None) => return Ok(None),
                Err(err) => return Err(err),
            };
            let compressed = self.check_header(header)?;
            // At most the frame size limit (checked), which is a `usize`.
            let len = usize::try_from(header.payload_len).unwrap_or(usize::MAX);
            let total = header_len.saturating_add(len);
            // Usually all in `buf`; else perhaps with what was read after it.
            let whole = total <= self.input.buf.len() || total <= self.input.len();
            if header.opcode.is_control() {
                if !whole {
                    // At most 139 bytes: kept until it is whole.
                    self.input.fill_all();
                    return Ok(None);
                }
                let payload = self.take_frame(header_len, len, header.mask);
                return self
                    .control(header.opcode, payload)
                    .map(|e| Some(Next::Event(e)));
            }
            if let Some(kind) = self.single_frame_message(header, compressed) {
                if whole {
                    if header.opcode == OpCode::Continuation {
                        // The end of a message whose earlier frames were empty.
                        if let Some(spill) = self.spill.as_deref_mut() {
                            spill.message.finish_lent();
                        }
                    }
                    return Ok(Some(Next::Whole(WholeFrame {
                        kind,
                        header_len,
                        len,
                        mask: header.mask,
                    })));
                }
                if kind == DataKind::Binary {
                    // Kept as it came, to be taken whole; what arrived after it is all its own.
                    // (Text is gathered instead: §8.1 wants invalid text to fail the connection
                    // at once, not when the rest arrives.)
                    self.input.fill_all();
                    return Ok(None);
                }
            }
            self.input.buf.advance(header_len);
            if let Some(event) = self.start_frame(&header, compressed)? {
                return Ok(Some(Next::Event(event)));
            }
        }
    }

    /// The checks every header passes before anything is done with its frame: against the
    /// role, the state, the extensions and the limits (§10.4: decided from the announced length,
    /// before anything is stored). Returns whether the frame belongs to a compressed message.
    #[inline(always)]
    fn check_header(&self, header: FrameHeader) -> Result<bool, ProtocolError> {
        // §5.2: "MUST be 0 unless an extension is negotiated that defines meanings".
        if header.rsv & !self.allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        // RFC 7692 §6: the "Per-Message Compressed" bit is for the first frame of a data
        // message only; "an endpoint receiving such a frame MUST _Fail the WebSocket
        // Connection_". (Allowed only with permessage-deflate, so never set here without it.)
        let rsv1 = header.rsv & RSV1 != 0;
        if rsv1 && !matches!(header.opcode, OpCode::Text | OpCode::Binary) {
            return Err(ProtocolError::MisplacedCompressedBit);
        }
        // §5.1: a server MUST close on an unmasked frame, a client on a masked one.
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        let spill = self.spill.as_deref();
        let in_progress = spill.is_some_and(|spill| spill.message.in_progress());
        if header.opcode.is_control() {
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
            match (header.opcode, in_progress) {
                (OpCode::Continuation, false) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Text | OpCode::Binary, true) => {
                    return Err(ProtocolError::ExpectedContinuation)
                }
                _ => {}
            }
        }
        let compressed = match header.opcode {
            OpCode::Continuation => spill.is_some_and(|spill| spill.receiving_compressed),
            _ => rsv1,
        };
        let max_frame = if compressed {
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
        // A compressed message's limit is on its inflated size, checked as it inflates; its
        // frames are bounded by the frame limit above.
        if !header.opcode.is_control() && !compressed {
            let max_message_size = self.config.max_message_size;
            match spill.filter(|_| in_progress) {
                Some(spill) => spill
                    .message
                    .check_frame(header.payload_len, max_message_size)?,
                None if header.payload_len > to_u64(max_message_size) => {
                    return Err(ProtocolError::MessageTooLarge)
                }
                None => {}
            }
        }
        Ok(compressed)
    }

    /// The kind of the message whose only remaining frame `header` is, if it can be taken out
    /// of the input in one piece: its final frame, uncompressed, nothing of it received yet (a
    /// new message, or one whose earlier frames were empty), delivered whole.
    #[inline]
    fn single_frame_message(&self, header: FrameHeader, compressed: bool) -> Option<DataKind> {
        if !header.fin || compressed || self.config.deliver_fragments {
            return None;
        }
        match header.opcode {
            OpCode::Text => Some(DataKind::Text),
            OpCode::Binary => Some(DataKind::Binary),
            OpCode::Continuation => self.spill.as_deref()?.message.empty_kind(),
            OpCode::Close | OpCode::Ping | OpCode::Pong => None,
        }
    }

    /// Take the next frame out of the input, whole (the input holds it): its header of
    /// `header_len` bytes is dropped, its `len` bytes of payload are unmasked and handed back, a
    /// slice of the input (one split per frame, the header cut off the slice: no copy), or a copy
    /// of its own for input given by `receive_data`.
    #[inline(always)]
    fn take_frame(&mut self, header_len: usize, len: usize, mask: Option<[u8; 4]>) -> Bytes {
        let total = header_len + len;
        let input = &mut self.input;
        input.fill(total);
        if let Some(key) = mask {
            apply_mask(&mut input.buf[header_len..total], key, 0);
        }
        let copied = self.input_copied;
        let payload = if copied || len == 0 {
            let copy = Bytes::copy_from_slice(&input.buf[header_len..total]);
            input.buf.advance(total);
            copy
        } else {
            let mut frame = input.buf.split_to(total).freeze();
            frame.advance(header_len);
            frame
        };
        if input.buf.is_empty() {
            input.used_up(copied);
        }
        payload
    }

    /// The data frame whose payload is being gathered.
    #[inline]
    fn gathering(&self) -> Option<IncomingFrame> {
        self.spill.as_deref()?.frame
    }

    /// Start gathering the data frame `header` (its header consumed); an empty one ends at
    /// once, which may end its message.
    #[inline(never)]
    fn start_frame(
        &mut self,
        header: &FrameHeader,
        compressed: bool,
    ) -> Result<Option<Event>, ProtocolError> {
        let spill = self.spill_mut();
        spill.receiving_compressed = compressed;
        match header.opcode {
            OpCode::Text => spill.message.start(DataKind::Text),
            OpCode::Binary => spill.message.start(DataKind::Binary),
            _ => {}
        }
        let frame = IncomingFrame {
            fin: header.fin,
            mask: header.mask,
            mask_offset: 0,
            remaining: header.payload_len,
        };
        if frame.remaining == 0 {
            return self.end_frame(frame);
        }
        spill.frame = Some(frame);
        Ok(None)
    }

    /// Gather the next piece of `frame`'s payload from the input (which holds some). Returns
    /// the event it completes, if any: the message, or a piece of it when delivering fragments.
    #[inline(never)]
    fn gather(&mut self, mut frame: IncomingFrame) -> Result<Option<Event>, ProtocolError> {
        let take = usize::try_from(frame.remaining)
            .map_or(self.input.buf.len(), |r| r.min(self.input.buf.len()));
        let piece = self.input.buf.split_to(take);
        if self.input.buf.is_empty() {
            self.input.used_up(self.input_copied);
        }
        let mut mask_offset = usize::from(frame.mask_offset);
        let deliver_fragments = self.config.deliver_fragments;
        let compressed = self
            .spill
            .as_deref()
            .is_some_and(|s| s.receiving_compressed);
        if compressed {
            self.inflate_piece(&piece, frame.mask, &mut mask_offset)?;
        } else {
            let final_remaining = frame.fin.then_some(frame.remaining);
            self.spill_mut()
                .message
                .push(&piece, final_remaining, frame.mask, &mut mask_offset)?;
        }
        // A position in the 4-byte key: cannot truncate.
        frame.mask_offset = (mask_offset % 4) as u8;
        frame.remaining -= to_u64(take);
        if frame.remaining > 0 {
            self.spill_mut().frame = Some(frame);
            if deliver_fragments {
                // The piece goes out as it arrived.
                return self.spill_mut().message.take_fragment(false);
            }
            return Ok(None);
        }
        self.spill_mut().frame = None;
        if deliver_fragments && !frame.fin {
            return self.spill_mut().message.take_fragment(false);
        }
        self.end_frame(frame)
    }

    /// The whole payload of the data frame `frame` has arrived: a final frame ends its message
    /// (inflating the compressed tail first).
    fn end_frame(&mut self, frame: IncomingFrame) -> Result<Option<Event>, ProtocolError> {
        if !frame.fin {
            return Ok(None);
        }
        if self
            .spill
            .as_deref()
            .is_some_and(|s| s.receiving_compressed)
        {
            self.finish_inflating()?;
        }
        let deliver_fragments = self.config.deliver_fragments;
        let message = &mut self.spill_mut().message;
        if deliver_fragments {
            message.take_fragment(true)
        } else {
            message.finish().map(Some)
        }
    }

    /// The whole `payload` of a control frame has arrived.
    #[inline(never)]
    fn control(&mut self, opcode: OpCode, payload: Bytes) -> Result<Event, ProtocolError> {
        match opcode {
            OpCode::Ping => {
                // §5.5.2: answer with a pong carrying the same payload, unless our close is
                // already sent (§5.5.1: nothing follows it).
                if self.phase.is_open() {
                    self.answer(|conn| conn.write_frame(true, OpCode::Pong, &payload));
                }
                Ok(Event::Ping(payload))
            }
            OpCode::Close => self.receive_close(&payload),
            // A pong (the caller decoded a control frame: ping, pong or close). §5.5.3: an
            // unsolicited pong needs no answer.
            _ => {
                self.awaiting_pong = false;
                Ok(Event::Pong(payload))
            }
        }
    }

    /// The peer's close frame: answer it (unless we closed first), and stop reading (§5.5.1:
    /// nothing it sends after it is meaningful). A message cut short by it is never delivered.
    fn receive_close(&mut self, payload: &[u8]) -> Result<Event, ProtocolError> {
        let close = CloseFrame::parse(payload)?;
        if self.phase.is_open() {
            // §5.5.1: answer with a close, "typically echoing the status code it received";
            // the reason is echoed too, and a close without a code is answered without one.
            let reply = close.as_ref().map(|c| (c.code, c.reason.as_str()));
            self.answer(|conn| conn.write_close(reply));
        }
        let eof = self.input_eof;
        self.input.finish();
        let spill = self.spill_mut();
        spill.frame = None;
        spill.message.clear();
        spill.peer_close = Some(close.clone());
        // The close handshake is complete (§7.1.1): the server closes the transport; the client
        // waits for it to, unless it already did.
        self.enter(match self.role {
            Role::Client if !eof => Phase::AwaitingEof,
            _ => Phase::Ended(End::Clean),
        });
        Ok(Event::Close(close))
    }

    /// Fail the connection (§7.1.7): stop reading, and queue the close frame for `err` unless
    /// ours was already sent.
    #[cold]
    #[inline(never)]
    fn fail(&mut self, err: ProtocolError) {
        let close_sent = self.phase == Phase::CloseSent;
        self.stop_receiving();
        self.enter(Phase::Ended(End::Failed(err)));
        self.sending = None;
        let code = err.close_code();
        // 1006 (the transport ended) is never sent on the wire (§7.4.1).
        if !close_sent && code.is_sendable() {
            let reason = err.to_string();
            let reason = super::truncate_at_char(&reason, MAX_CLOSE_REASON);
            self.answer(|conn| conn.write_close(Some((code, reason))));
        }
    }

    /// Input is over: drop it, and whatever was being gathered.
    pub(super) fn stop_receiving(&mut self) {
        self.input.finish();
        if let Some(spill) = self.spill.as_deref_mut() {
            spill.frame = None;
            spill.message.clear();
        }
        // Nothing more is inflated: free the state now rather than when the connection goes.
        #[cfg(feature = "deflate")]
        if let Some(deflate) = &mut self.deflate {
            deflate.decompressor.release();
        }
        self.tidy_spill();
    }

    /// Bytes held by the message being reassembled (tests: hostile headers and idle
    /// connections hold none).
    #[cfg(test)]
    pub(super) fn message_capacity(&self) -> usize {
        self.spill
            .as_deref()
            .map_or(0, |spill| spill.message.capacity())
    }

    /// Bytes of heap the input buffer holds (tests).
    #[cfg(test)]
    pub(super) fn input_capacity(&self) -> usize {
        self.input.buf.capacity() + self.input.next.as_deref().map_or(0, BytesMut::capacity)
    }

    /// Where the input buffer is (tests: the same allocation is reused).
    #[cfg(test)]
    pub(super) fn input_ptr(&self) -> *const u8 {
        self.input.buf.as_ptr()
    }
}

impl Event {
    /// The event for a whole message of `kind`: text is validated once, whole, at SIMD speed.
    #[inline(always)]
    fn from_whole(kind: DataKind, payload: Bytes) -> Result<Event, ProtocolError> {
        Ok(match kind {
            DataKind::Binary => Event::Binary(payload),
            DataKind::Text => Event::Text(Utf8Bytes::validated(payload)?),
        })
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
