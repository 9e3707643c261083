//! Messages: what a [`Connection`](crate::Connection) delivers and accepts, and reassembly of
//! fragmented messages with size accounting (RFC 6455 §5.4).

use bytes::Bytes;

use crate::error::ProtocolError;
#[cfg(feature = "deflate")]
use crate::extensions::permessage_deflate::{Decompressor, InflateError};
use crate::frame::mask::apply_mask;
use crate::frame::CloseFrame;
use crate::text::Utf8Bytes;
use crate::utf8::Utf8Validator;

/// What the connection delivers from the peer, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete text message (validated UTF-8, reassembled if it was fragmented). With
    /// [`Connection::receive_buf`](crate::Connection::receive_buf), a message that arrived whole
    /// shares the input's buffer.
    Text(Utf8Bytes),
    /// A complete binary message (reassembled if it was fragmented). With
    /// [`Connection::receive_buf`](crate::Connection::receive_buf), a message that arrived whole
    /// shares the input's buffer.
    Binary(Bytes),
    /// A ping. The pong is already queued: nothing to do.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A piece of a data message, as it arrived, when
    /// [`Config::deliver_fragments`](crate::Config::deliver_fragments) is on (instead of
    /// [`Text`](Event::Text) and [`Binary`](Event::Binary)).
    ///
    /// A message is a run of these, in order, with `fin` on its last piece and nothing but
    /// control events (pings, pongs) between them. Pieces follow the network, not the peer's
    /// frames: one frame may come as several pieces, and pieces may be empty only when `fin` is
    /// set. A text piece is always valid UTF-8 on its own: a code point split by the network is
    /// held back (at most 3 bytes) and begins the next piece.
    Fragment {
        /// The kind of the whole message.
        kind: DataKind,
        /// The piece's bytes (for text, valid UTF-8).
        data: Bytes,
        /// This is the message's last piece.
        fin: bool,
    },
    /// The peer's close frame (`None`: it had no status code, 1005). If we had not sent a close,
    /// handing out this event queues the answering close (same code and reason), so replies to the
    /// messages before it still go out first. Nothing can be sent after it.
    Close(Option<CloseFrame>),
}

/// An [`Event`] lent rather than handed over, by
/// [`Connection::for_each_event`](crate::Connection::for_each_event): valid while the callback
/// it is given to runs. A message that arrived whole is a slice of the input, unmasked in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventRef<'a> {
    /// A complete text message (validated UTF-8).
    Text(&'a str),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A ping. The pong is already queued: nothing to do.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A piece of a data message (see [`Event::Fragment`]).
    Fragment {
        /// The kind of the whole message.
        kind: DataKind,
        /// The piece's bytes (for text, valid UTF-8).
        data: &'a [u8],
        /// This is the message's last piece.
        fin: bool,
    },
    /// The peer's close frame (see [`Event::Close`]).
    Close(Option<&'a CloseFrame>),
}

impl Event {
    /// This event, lent.
    ///
    /// ```
    /// use gangway_proto::{Event, EventRef};
    ///
    /// let event = Event::Binary("hi".into());
    /// assert_eq!(event.lend(), EventRef::Binary(b"hi"));
    /// ```
    pub fn lend(&self) -> EventRef<'_> {
        match self {
            Event::Text(text) => EventRef::Text(text),
            Event::Binary(data) => EventRef::Binary(data),
            Event::Ping(data) => EventRef::Ping(data),
            Event::Pong(data) => EventRef::Pong(data),
            Event::Fragment { kind, data, fin } => EventRef::Fragment {
                kind: *kind,
                data,
                fin: *fin,
            },
            Event::Close(close) => EventRef::Close(close.as_ref()),
        }
    }
}

/// The kind of a data message, for [`Connection::send_fragment`](crate::Connection::send_fragment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    /// UTF-8 text.
    Text,
    /// Arbitrary bytes.
    Binary,
}

/// A data message being received: its kind, the bytes so far, and the UTF-8 state of text.
///
/// The buffer grows only as payload bytes arrive, never by what a header announces, so a hostile
/// length costs nothing until the bytes are actually sent; the size limits are checked from each
/// header by [`Reassembly::check_frame`] before any of its payload is stored.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    kind: Option<DataKind>,
    buf: Vec<u8>,
    utf8: Utf8Validator,
    /// Bytes of the message already handed out as fragments (only when delivering fragments;
    /// `buf` then holds only what arrived since, plus a split code point of text).
    taken: u64,
}

impl Reassembly {
    /// Whether a message has started and not yet finished.
    pub(crate) fn in_progress(&self) -> bool {
        self.kind.is_some()
    }

    /// Check a data frame's announced payload against the limits, before anything is stored.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::MessageTooLarge`] if the bytes already received plus `payload_len`
    /// exceed `max_message_size`.
    pub(crate) fn check_frame(
        &self,
        payload_len: u64,
        max_message_size: usize,
    ) -> Result<(), ProtocolError> {
        let so_far = self.taken.saturating_add(to_u64(self.buf.len()));
        match so_far.checked_add(payload_len) {
            Some(total) if total <= to_u64(max_message_size) => Ok(()),
            _ => Err(ProtocolError::MessageTooLarge),
        }
    }

    /// Start a new message of `kind`.
    pub(crate) fn start(&mut self, kind: DataKind) {
        self.kind = Some(kind);
        self.buf.clear();
        self.utf8.reset();
        self.taken = 0;
    }

    /// Append a piece of payload as it arrives: copy it once, unmask it in place (continuing at
    /// `*mask_offset` into the key), and validate text so far (§8.1: fail as soon as it is
    /// invalid, not at the end of the message).
    ///
    /// # Errors
    ///
    /// [`ProtocolError::InvalidUtf8`] as soon as a text message cannot be valid UTF-8.
    ///
    ///
    /// `final_remaining` is what the message's final frame still announces, this piece included
    /// (`None` before the final frame). It caps geometric growth at the message's known end, so a
    /// single-frame message ends up in a buffer of exactly its size; it never makes the buffer
    /// grow before the bytes are here. Earlier fragments grow geometrically: capping them at
    /// their own ends would reallocate on every small fragment.
    pub(crate) fn push(
        &mut self,
        piece: &[u8],
        final_remaining: Option<u64>,
        mask: Option<[u8; 4]>,
        mask_offset: &mut usize,
    ) -> Result<(), ProtocolError> {
        let start = self.buf.len();
        let needed = start.saturating_add(piece.len());
        if needed > self.buf.capacity() {
            let doubled = self.buf.capacity().saturating_mul(2).max(MIN_CAPACITY);
            let target = match final_remaining {
                Some(remaining) => {
                    // Up to twice what is here with this piece (never more: a length announced
                    // but not sent costs nothing), so a large piece takes the rest of its frame
                    // at once, without a second allocation and copy for the last bytes.
                    let grown = doubled.max(needed.saturating_mul(2));
                    let end = to_u64(start).saturating_add(remaining);
                    usize::try_from(end).map_or(grown, |end| grown.min(end))
                }
                None => doubled,
            };
            self.buf.reserve_exact(target.max(needed) - start);
        }
        self.buf.extend_from_slice(piece);
        let added = &mut self.buf[start..];
        if let Some(key) = mask {
            *mask_offset = apply_mask(added, key, *mask_offset);
        }
        if self.kind == Some(DataKind::Text) {
            self.utf8
                .feed(added)
                .map_err(|()| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }

    /// Whether no payload byte of the message has been received yet (its frames so far were
    /// empty), so a final frame that arrives whole is the whole message.
    fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.taken == 0
    }

    /// The message's kind if nothing of it has arrived yet, so that a final frame that arrived
    /// whole can be handed over as it is, without passing through the buffer (see
    /// [`finish_lent`](Self::finish_lent)).
    pub(crate) fn empty_kind(&self) -> Option<DataKind> {
        self.kind.filter(|_| self.is_empty())
    }

    /// The message, [empty](Self::empty_kind) so far, was handed over whole without passing
    /// through the buffer: only its state is ended here.
    pub(crate) fn finish_lent(&mut self) {
        self.kind = None;
    }

    /// Inflate a piece of a compressed message's payload (RFC 7692 §7.2.2) into the message as it
    /// arrives: unmask it (continuing at `*mask_offset`) a stack-sized chunk at a time, inflate it
    /// into the buffer, which never grows past `max_message_size`, and validate text so far.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::MessageTooLarge`] as soon as the inflated message would pass the limit,
    /// [`ProtocolError::InvalidCompressedData`] for data that does not inflate,
    /// [`ProtocolError::InvalidUtf8`] as soon as inflated text cannot be valid UTF-8.
    #[cfg(feature = "deflate")]
    pub(crate) fn push_compressed(
        &mut self,
        piece: &[u8],
        mask: Option<[u8; 4]>,
        mask_offset: &mut usize,
        inflater: &mut Decompressor,
        max_message_size: usize,
    ) -> Result<(), ProtocolError> {
        let Some(key) = mask else {
            return self.inflate(piece, inflater, self.buf_limit(max_message_size));
        };
        // The input is borrowed; unmask a copy, a chunk at a time, so nothing is allocated.
        let mut chunk = [0u8; INFLATE_CHUNK];
        for part in piece.chunks(INFLATE_CHUNK) {
            let unmasked = &mut chunk[..part.len()];
            unmasked.copy_from_slice(part);
            *mask_offset = apply_mask(unmasked, key, *mask_offset);
            self.inflate(unmasked, inflater, self.buf_limit(max_message_size))?;
        }
        Ok(())
    }

    /// The compressed message's payload is complete: inflate the tail its sender removed
    /// (RFC 7692 §7.2.2). [`finish`](Self::finish) then hands the message over.
    ///
    /// # Errors
    ///
    /// As [`push_compressed`](Self::push_compressed).
    #[cfg(feature = "deflate")]
    pub(crate) fn finish_compressed(
        &mut self,
        inflater: &mut Decompressor,
        max_message_size: usize,
    ) -> Result<(), ProtocolError> {
        let start = self.buf.len();
        let limit = self.buf_limit(max_message_size);
        inflater
            .finish(&mut self.buf, limit)
            .map_err(inflate_error)?;
        self.validate_from(start)?;
        // Inflating grows the buffer by doubling; the message keeps only what it needs.
        if self.buf.capacity() - self.buf.len() > self.buf.len() / 8 + MIN_CAPACITY {
            self.buf.shrink_to_fit();
        }
        Ok(())
    }

    #[cfg(feature = "deflate")]
    fn inflate(
        &mut self,
        input: &[u8],
        inflater: &mut Decompressor,
        max_message_size: usize,
    ) -> Result<(), ProtocolError> {
        let start = self.buf.len();
        let inflated = inflater.decompress(input, &mut self.buf, max_message_size);
        // Validate what did come out even when inflating failed: invalid text is reported
        // before an oversize message, as it would be without compression.
        self.validate_from(start)?;
        inflated.map_err(inflate_error)
    }

    /// How large `buf` may grow: the message limit minus what was already handed out.
    #[cfg(feature = "deflate")]
    fn buf_limit(&self, max_message_size: usize) -> usize {
        usize::try_from(self.taken).map_or(0, |taken| max_message_size.saturating_sub(taken))
    }

    /// Validate text appended since `start` (§8.1: fail as soon as it is invalid).
    #[cfg(feature = "deflate")]
    fn validate_from(&mut self, start: usize) -> Result<(), ProtocolError> {
        if self.kind == Some(DataKind::Text) {
            let added = self.buf.get(start..).unwrap_or_default();
            self.utf8
                .feed(added)
                .map_err(|()| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }

    /// The final frame ended: hand the message over, leaving no allocation behind.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::InvalidUtf8`] if text ends inside a code point.
    pub(crate) fn finish(&mut self) -> Result<Event, ProtocolError> {
        let kind = self.kind.take();
        let buf = std::mem::take(&mut self.buf);
        match kind {
            Some(DataKind::Text) => {
                self.utf8
                    .finish()
                    .map_err(|()| ProtocolError::InvalidUtf8)?;
                // Every byte went through the validator as it arrived (`push`, or
                // `validate_from` after inflating), so this cannot fail; validating the whole once
                // more (at SIMD speed) keeps the text's validity a local fact of `Utf8Bytes`.
                Utf8Bytes::validated(Bytes::from(buf)).map(Event::Text)
            }
            _ => Ok(Event::Binary(Bytes::from(buf))),
        }
    }

    /// Hand out what arrived since the last piece as an [`Event::Fragment`] (delivering
    /// fragments): `None` when there is nothing to hand out and the message goes on. Text keeps
    /// back the bytes of a code point that is not complete yet (at most 3), so that every piece
    /// is valid UTF-8 on its own; they begin the next piece. With `fin`, the message ends.
    ///
    /// The buffer goes with the piece (no copy: `Bytes` takes the `Vec`), so the memory held
    /// between pieces is at most those 3 bytes.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::InvalidUtf8`] if text ends inside a code point (with `fin`).
    pub(crate) fn take_fragment(&mut self, fin: bool) -> Result<Option<Event>, ProtocolError> {
        let Some(kind) = self.kind else {
            return Ok(None);
        };
        if fin {
            if kind == DataKind::Text {
                self.utf8
                    .finish()
                    .map_err(|()| ProtocolError::InvalidUtf8)?;
            }
            self.kind = None;
            self.taken = 0;
            let data = Bytes::from(std::mem::take(&mut self.buf));
            return Ok(Some(Event::Fragment { kind, data, fin }));
        }
        // The validator holds exactly the trailing bytes of an unfinished code point, which are
        // the last bytes fed, so they are the end of `buf`.
        let split = self.buf.len().saturating_sub(self.utf8.pending_len());
        if split == 0 {
            return Ok(None);
        }
        let carry = self.buf.get(split..).unwrap_or_default().to_vec();
        let mut data = std::mem::replace(&mut self.buf, carry);
        data.truncate(split);
        self.taken = self.taken.saturating_add(to_u64(split));
        Ok(Some(Event::Fragment {
            kind,
            data: Bytes::from(data),
            fin,
        }))
    }

    /// Bytes of memory held (tests check that hostile headers and idle connections hold none).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Drop any message in progress and its memory.
    pub(crate) fn clear(&mut self) {
        *self = Reassembly::default();
    }
}

/// The smallest allocation for a message buffer, so byte-sized pieces do not reallocate often.
const MIN_CAPACITY: usize = 64;

/// The stack buffer masked compressed input is unmasked into before inflating.
#[cfg(feature = "deflate")]
const INFLATE_CHUNK: usize = 4096;

/// The connection-level meaning of an inflate failure.
#[cfg(feature = "deflate")]
fn inflate_error(err: InflateError) -> ProtocolError {
    match err {
        // §10.4 and RFC 7692 §8: the limit applies to the inflated size.
        InflateError::TooLarge => ProtocolError::MessageTooLarge,
        _ => ProtocolError::InvalidCompressedData,
    }
}

/// Lossless on every platform Rust supports (`usize` is at most 64 bits).
pub(crate) fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(r: &mut Reassembly, piece: &[u8], final_remaining: Option<u64>) {
        r.push(piece, final_remaining, None, &mut 0).unwrap();
    }

    #[test]
    fn single_frame_message_buffer_is_exactly_its_size() {
        let mut r = Reassembly::default();
        r.start(DataKind::Binary);
        let total = 100_000u64;
        let mut left = total;
        while left > 0 {
            let n = left.min(1500);
            push(&mut r, &vec![1; n as usize], Some(left));
            left -= n;
            assert!(r.capacity() <= total as usize);
        }
        assert_eq!(r.capacity(), total as usize);
        match r.finish().unwrap() {
            Event::Binary(b) => assert_eq!(b.len(), total as usize),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.capacity(), 0, "the buffer went with the message");
    }

    #[test]
    fn many_small_fragments_grow_the_buffer_geometrically() {
        let mut r = Reassembly::default();
        r.start(DataKind::Binary);
        let mut growths = 0;
        let mut capacity = 0;
        for _ in 0..10_000 {
            push(&mut r, &[0; 100], None);
            if r.capacity() != capacity {
                assert!(
                    r.capacity() >= 2 * capacity,
                    "{capacity} -> {}",
                    r.capacity()
                );
                capacity = r.capacity();
                growths += 1;
            }
        }
        assert!(growths <= 20, "{growths} reallocations");
    }

    #[test]
    fn final_fragment_growth_stops_at_the_message_end() {
        let mut r = Reassembly::default();
        r.start(DataKind::Binary);
        push(&mut r, &[0; 64], None);
        assert_eq!(r.capacity(), 64);
        // A final frame of 1000 bytes in 10-byte pieces: doubling, then capped at 64 + 1000.
        for left in (1..=100u64).rev() {
            push(&mut r, &[0; 10], Some(left * 10));
        }
        assert_eq!(r.capacity(), 1064);

        // A large first piece of a single-frame message: the rest of the frame at once, when it
        // is no more than what arrived; not before.
        let mut r = Reassembly::default();
        r.start(DataKind::Binary);
        push(&mut r, &[0; 60_000], Some(65_536));
        assert_eq!(r.capacity(), 65_536);
        let mut r = Reassembly::default();
        r.start(DataKind::Binary);
        push(&mut r, &[0; 1000], Some(1 << 30));
        assert_eq!(r.capacity(), 2000);
    }

    #[test]
    fn size_accounting_counts_what_was_received_plus_the_announced_frame() {
        let mut r = Reassembly::default();
        r.start(DataKind::Text);
        assert_eq!(r.check_frame(10, 10), Ok(()));
        push(&mut r, b"hello", None);
        assert_eq!(r.check_frame(5, 10), Ok(()));
        assert_eq!(r.check_frame(6, 10), Err(ProtocolError::MessageTooLarge));
        assert_eq!(
            r.check_frame(u64::MAX, usize::MAX),
            Err(ProtocolError::MessageTooLarge)
        );
    }

    #[test]
    fn text_is_validated_as_it_arrives() {
        let mut r = Reassembly::default();
        r.start(DataKind::Text);
        let key = [1, 2, 3, 4];
        let mut masked = "añb".as_bytes().to_vec();
        crate::frame::mask::apply_mask_scalar(&mut masked, key, 0);
        let mut offset = 0;
        for piece in masked.chunks(1) {
            r.push(piece, None, Some(key), &mut offset).unwrap();
        }
        assert_eq!(r.finish(), Ok(Event::Text("añb".into())));
        r.start(DataKind::Text);
        assert_eq!(
            r.push(b"a\xC0", None, None, &mut 0),
            Err(ProtocolError::InvalidUtf8)
        );
    }
}
