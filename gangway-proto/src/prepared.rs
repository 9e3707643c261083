//! Messages framed once for any number of server connections: broadcast without a copy per
//! receiver.
//!
//! A server never masks its frames (RFC 6455 §5.1), so the frame of a message is the same bytes
//! on every connection that sends it. [`PreparedBatch`] frames messages into one buffer as they
//! are published; [`take`](PreparedBatch::take) seals what it holds into a [`Prepared`]: shared,
//! immutable bytes that [`Connection::send_prepared`](crate::Connection::send_prepared) queues on
//! each connection as they are (a reference count, no copy, no framing), to be written with the
//! rest of the output in one system call. Messages published in one burst end up in one
//! `Prepared`, written to each connection as one part.
//!
//! ```
//! use gangway_proto::prepared::PreparedBatch;
//! use gangway_proto::{Config, Connection, Role};
//!
//! let mut batch = PreparedBatch::new();
//! batch.push_text("hello");
//! batch.push_binary(&[1, 2, 3]);
//! let prepared = batch.take(); // two messages, framed once
//!
//! let mut a = Connection::new(Role::Server, Config::default());
//! let mut b = Connection::new(Role::Server, Config::default());
//! a.send_prepared(&prepared)?;
//! b.send_prepared(&prepared)?;
//! // The same bytes go out on both: [0x81, 5, "hello", 0x82, 3, 1, 2, 3].
//! assert_eq!(a.output(), prepared.frames().as_ref());
//! assert_eq!(b.output(), a.output());
//! # Ok::<(), gangway_proto::ApiMisuse>(())
//! ```
//!
//! The frames are single frames (FIN set), text or binary, unmasked. Framed with
//! [`push_text`](PreparedBatch::push_text) or [`push_binary`](PreparedBatch::push_binary) they
//! carry no RSV bit: valid on every server connection, with or without permessage-deflate (RFC
//! 7692 §6: RSV1 clear marks a message as not compressed, which a sender may always choose). A
//! connection that cannot send them as they are (a client's frames must be masked; a configured
//! [`max_send_frame_size`](crate::Config::max_send_frame_size) below a message's size) frames
//! each message again, as `send_text` and `send_binary` would.
//!
//! # Compressed once per encoding
//!
//! With permessage-deflate, a server connection that compresses without context takeover sends
//! the same compressed bytes for a message as every other connection that compresses with the
//! same parameters (see [`StatelessCompression`]).
//! [`Connection::prepared_encoding`](crate::Connection::prepared_encoding) says which
//! [`Encoding`] a connection takes; a broadcaster keeps one batch per encoding among its
//! receivers, compresses each message once per distinct compression, and frames it into each
//! compressing batch with `PreparedBatch::push_compressed` (RSV1 set). Such frames go only to
//! connections of that encoding: `send_prepared` refuses them elsewhere.

use bytes::{Bytes, BytesMut};

#[cfg(feature = "deflate")]
use crate::error::ApiMisuse;
#[cfg(feature = "deflate")]
use crate::extensions::permessage_deflate::{CompressedMessage, StatelessCompression};
use crate::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::message::{to_u64, DataKind};

/// RSV1 in [`FrameHeader::rsv`]: permessage-deflate's "Per-Message Compressed" bit (RFC 7692 §6).
#[cfg(feature = "deflate")]
const RSV1: u8 = 0b100;

/// How a connection sends messages prepared for many ([`Prepared`]), as given by
/// [`Connection::prepared_encoding`](crate::Connection::prepared_encoding): a broadcaster keeps
/// one [`PreparedBatch`] per distinct encoding among its receivers, and each receiver takes the
/// frames of its own.
///
/// [`Encoding::PLAIN`] (messages uncompressed) is what a connection without permessage-deflate
/// takes, and one that compresses with context takeover (its compressed messages refer back to
/// what it sent before, so no frame made for others fits it; uncompressed ones always do, RFC
/// 7692 §6). A connection that compresses without context takeover takes a compressed
/// encoding: messages from its compression threshold up compressed with its
/// [`StatelessCompression`], smaller ones plain. Small and `Copy`, `Eq`, `Hash`: a key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Encoding {
    /// The compression, and the size from which messages are compressed.
    #[cfg(feature = "deflate")]
    deflate: Option<(StatelessCompression, usize)>,
}

impl Encoding {
    /// Every message uncompressed: valid on every connection.
    pub const PLAIN: Encoding = Encoding {
        #[cfg(feature = "deflate")]
        deflate: None,
    };

    /// Messages of `threshold` bytes and more compressed with `compression`, smaller ones plain.
    #[cfg(feature = "deflate")]
    pub fn compressed(compression: StatelessCompression, threshold: usize) -> Encoding {
        Encoding {
            deflate: Some((compression, threshold)),
        }
    }

    /// Whether every message goes uncompressed.
    pub fn is_plain(self) -> bool {
        self == Encoding::PLAIN
    }

    /// How a message of `len` bytes is compressed in this encoding; `None`: it goes plain.
    #[cfg(feature = "deflate")]
    pub fn compression(self, len: usize) -> Option<StatelessCompression> {
        self.deflate
            .and_then(|(compression, threshold)| (len >= threshold).then_some(compression))
    }
}

/// The first allocation of a batch's buffer: room for many small frames, so that a burst of
/// small messages does not reallocate message after message. Later allocations are made when it
/// is full (see [`PreparedBatch::push_frame`]).
const MIN_BATCH_CAPACITY: usize = 4 << 10;

/// Messages being framed for the server role, one after the other in one buffer, until
/// [`take`](Self::take) seals them into a [`Prepared`].
///
/// Taking leaves the buffer's spare room in place: the next messages are framed right after the
/// ones taken, in the same allocation while it has room, which is reused once every `Prepared`
/// taken from it is dropped.
#[derive(Debug, Default)]
pub struct PreparedBatch {
    buf: BytesMut,
    messages: usize,
    max_payload: usize,
    /// What the compressed frames among the messages were compressed with.
    #[cfg(feature = "deflate")]
    compression: Option<StatelessCompression>,
}

/// Where one message's frame lies in what the next [`PreparedBatch::take`] returns: given by
/// [`PreparedBatch::push_text`] and [`PreparedBatch::push_binary`], for
/// [`Prepared::without`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpan {
    start: usize,
    end: usize,
}

impl FrameSpan {
    /// The frame's first byte.
    pub fn start(&self) -> usize {
        self.start
    }

    /// One past the frame's last byte.
    pub fn end(&self) -> usize {
        self.end
    }
}

impl PreparedBatch {
    /// An empty batch (no allocation until the first message).
    pub fn new() -> Self {
        Self::default()
    }

    /// Frame a text message.
    pub fn push_text(&mut self, text: &str) -> FrameSpan {
        self.push_frame(OpCode::Text, text.as_bytes())
    }

    /// Frame a binary message.
    pub fn push_binary(&mut self, data: &[u8]) -> FrameSpan {
        self.push_frame(OpCode::Binary, data)
    }

    /// Frame a message of `kind`.
    ///
    /// # Errors
    ///
    /// `Err(())` for text that is not UTF-8 (nothing is framed).
    #[allow(clippy::result_unit_err)]
    pub fn push(&mut self, kind: DataKind, payload: &[u8]) -> Result<FrameSpan, ()> {
        match kind {
            DataKind::Text => {
                // §8.1: a text message is UTF-8; the receivers would fail the connection.
                simdutf8::basic::from_utf8(payload).map_err(|_| ())?;
                Ok(self.push_frame(OpCode::Text, payload))
            }
            DataKind::Binary => Ok(self.push_frame(OpCode::Binary, payload)),
        }
    }

    /// Frame a message compressed once for every connection of an [`Encoding`] that compresses
    /// with its parameters (made by [`StatelessCompression`]): its compressed payload, RSV1
    /// set (RFC 7692 §6). The batch's frames then go only to connections that compress with
    /// the same parameters.
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::CompressionMismatch`] when the batch holds messages compressed with other
    /// parameters since the last [`take`](Self::take) (nothing is framed): one batch serves one
    /// encoding.
    #[cfg(feature = "deflate")]
    pub fn push_compressed(&mut self, message: &CompressedMessage) -> Result<FrameSpan, ApiMisuse> {
        let compression = message.compression();
        if self.compression.is_some_and(|c| c != compression) {
            return Err(ApiMisuse::CompressionMismatch);
        }
        self.compression = Some(compression);
        let opcode = match message.kind() {
            DataKind::Text => OpCode::Text,
            DataKind::Binary => OpCode::Binary,
        };
        Ok(self.push_frame_rsv(opcode, RSV1, message.payload()))
    }

    /// One frame: FIN, `opcode`, no RSV bit, unmasked (§5.1: a server never masks), the shortest
    /// length encoding (§5.2).
    fn push_frame(&mut self, opcode: OpCode, payload: &[u8]) -> FrameSpan {
        self.push_frame_rsv(opcode, 0, payload)
    }

    /// [`push_frame`](Self::push_frame) with the RSV bits `rsv`.
    fn push_frame_rsv(&mut self, opcode: OpCode, rsv: u8, payload: &[u8]) -> FrameSpan {
        let header = FrameHeader {
            fin: true,
            rsv,
            opcode,
            mask: None,
            payload_len: to_u64(payload.len()),
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        let needed = head_len + payload.len();
        if self.buf.capacity() - self.buf.len() < needed {
            // Room for this frame and at least as much again: a burst doubles the buffer rather
            // than growing it frame by frame.
            self.buf
                .reserve(needed.max(self.buf.len()).max(MIN_BATCH_CAPACITY));
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&head[..head_len]);
        self.buf.extend_from_slice(payload);
        self.messages += 1;
        self.max_payload = self.max_payload.max(payload.len());
        FrameSpan {
            start,
            end: self.buf.len(),
        }
    }

    /// The messages framed since the last [`take`](Self::take).
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// The bytes of the frames framed since the last [`take`](Self::take).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was framed since the last [`take`](Self::take).
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Seal the messages framed so far into a [`Prepared`] (empty if there are none); the batch
    /// starts again, empty, in the same buffer's spare room.
    pub fn take(&mut self) -> Prepared {
        let prepared = Prepared {
            frames: self.buf.split().freeze(),
            messages: self.messages,
            max_payload: self.max_payload,
            #[cfg(feature = "deflate")]
            compression: self.compression.take(),
        };
        self.messages = 0;
        self.max_payload = 0;
        prepared
    }
}

/// One or more messages framed once for the server role: whole single frames, unmasked, in
/// shared bytes (cloning is a reference count). RSV1 is set on the messages compressed for an
/// [`Encoding`] ([`compression`](Self::compression)), on none otherwise.
///
/// Made by a [`PreparedBatch`] (or [`Prepared::message`]) only, so the bytes are always whole,
/// valid frames; queue them with
/// [`Connection::send_prepared`](crate::Connection::send_prepared).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    frames: Bytes,
    messages: usize,
    /// The largest payload among the messages (a connection that splits larger messages into
    /// several frames frames them again).
    max_payload: usize,
    /// What the compressed messages among them were compressed with (none if no frame has
    /// RSV1).
    #[cfg(feature = "deflate")]
    compression: Option<StatelessCompression>,
}

impl Prepared {
    /// One message of `kind`, framed.
    ///
    /// # Errors
    ///
    /// `Err(())` for text that is not UTF-8.
    #[allow(clippy::result_unit_err)]
    pub fn message(kind: DataKind, payload: &[u8]) -> Result<Prepared, ()> {
        let mut batch = PreparedBatch::new();
        batch.push(kind, payload)?;
        Ok(batch.take())
    }

    /// The frames, as they go on the wire.
    pub fn frames(&self) -> &Bytes {
        &self.frames
    }

    /// How many messages the frames carry.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// The bytes of the frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether there is no message.
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// The largest payload among the messages.
    pub(crate) fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// What the compressed messages among them were compressed with: only a connection that
    /// compresses with the same parameters may send them
    /// ([`Connection::send_prepared`](crate::Connection::send_prepared) checks). `None`: no
    /// message is compressed, any connection may send them.
    #[cfg(feature = "deflate")]
    pub fn compression(&self) -> Option<StatelessCompression> {
        self.compression
    }

    /// The messages, in order: each one's opcode and payload (for a connection that frames them
    /// again).
    pub(crate) fn payloads(&self) -> Frames<'_> {
        Frames {
            rest: &self.frames,
            at: 0,
        }
    }

    /// The frames that are not in `spans` (frames this batch holds, in order, such as the ones a
    /// receiver published itself and must not get back), as pieces of these shared bytes: one
    /// per run of frames between two left out. A span that is not one of this batch's frames is
    /// ignored.
    ///
    /// Finding the frames walks the headers of the batch, so this costs a little per message:
    /// meant for the few receivers that left something out, not for every receiver of a batch.
    pub fn without(&self, spans: &[FrameSpan]) -> Vec<Prepared> {
        let mut pieces = Vec::new();
        let mut spans = spans.iter().peekable();
        // The piece being gathered: its start, messages, largest payload.
        let mut piece = (0, 0, 0);
        for frame in self.payloads() {
            // Spans before this frame are not frames of the batch: skipped.
            while spans.next_if(|s| s.start < frame.start).is_some() {}
            let left_out = spans.next_if(|s| s.start == frame.start && s.end == frame.end);
            if left_out.is_some() {
                if piece.1 > 0 {
                    pieces.push(self.piece(piece.0..frame.start, piece.1, piece.2));
                }
                piece = (frame.end, 0, 0);
            } else {
                piece.1 += 1;
                piece.2 = piece.2.max(frame.payload.len());
            }
        }
        if piece.1 > 0 {
            pieces.push(self.piece(piece.0..self.frames.len(), piece.1, piece.2));
        }
        pieces
    }

    /// The frames in `range` of these bytes (whole frames, `messages` of them), shared.
    fn piece(
        &self,
        range: std::ops::Range<usize>,
        messages: usize,
        max_payload: usize,
    ) -> Prepared {
        Prepared {
            frames: self.frames.slice(range),
            messages,
            max_payload,
            // Kept even if the piece holds no compressed frame: the frames are for this
            // encoding's connections.
            #[cfg(feature = "deflate")]
            compression: self.compression,
        }
    }
}

/// One frame of a [`Prepared`].
pub(crate) struct Frame<'a> {
    pub(crate) opcode: OpCode,
    /// RSV1 for a compressed message, else 0.
    pub(crate) rsv: u8,
    pub(crate) payload: &'a [u8],
    start: usize,
    end: usize,
}

/// The frames of a [`Prepared`], in order.
pub(crate) struct Frames<'a> {
    rest: &'a [u8],
    /// Where `rest` starts in the frames.
    at: usize,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        // Written by `PreparedBatch::push_frame`: whole, valid frames, so a header always decodes
        // and its payload is all there; anything else ends the walk.
        let (header, head_len) = FrameHeader::decode(self.rest).ok()??;
        let len = usize::try_from(header.payload_len).ok()?;
        let payload = self.rest.get(head_len..head_len + len)?;
        let frame_len = head_len + len;
        let frame = Frame {
            opcode: header.opcode,
            rsv: header.rsv,
            payload,
            start: self.at,
            end: self.at + frame_len,
        };
        self.rest = &self.rest[frame_len..];
        self.at += frame_len;
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(texts: &[&str]) -> (Prepared, Vec<FrameSpan>) {
        let mut batch = PreparedBatch::new();
        let spans = texts.iter().map(|t| batch.push_text(t)).collect();
        (batch.take(), spans)
    }

    fn texts(p: &Prepared) -> Vec<String> {
        p.payloads()
            .map(|f| String::from_utf8(f.payload.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn frames_are_the_rfc_examples_for_a_server() {
        // RFC 6455 §5.7: "A single-frame unmasked text message", then 256 and 65536 bytes of
        // binary data in a single unmasked frame (16- and 64-bit lengths).
        let mut batch = PreparedBatch::new();
        batch.push_text("Hello");
        batch.push_binary(&[0; 256]);
        batch.push_binary(&[0; 65536]);
        let p = batch.take();
        let f = p.frames();
        assert_eq!(&f[..7], [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(&f[7..11], [0x82, 0x7E, 0x01, 0x00]);
        let third = 11 + 256;
        assert_eq!(
            &f[third..third + 10],
            [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
        );
        assert_eq!(f.len(), third + 10 + 65536);
        assert_eq!((p.messages(), p.max_payload()), (3, 65536));
    }

    #[test]
    fn take_seals_what_was_pushed_and_starts_again_in_the_same_buffer() {
        let mut batch = PreparedBatch::new();
        batch.push_text("one");
        let first = batch.take();
        assert!(batch.is_empty());
        batch.push_text("two");
        batch.push_text("three");
        let second = batch.take();
        assert_eq!(texts(&first), ["one"]);
        assert_eq!(texts(&second), ["two", "three"]);
        // The second batch was framed right after the first, in the same allocation.
        assert_eq!(
            first.frames().as_ptr().wrapping_add(first.len()),
            second.frames().as_ptr()
        );
        assert!(batch.take().is_empty());
    }

    #[test]
    fn push_refuses_text_that_is_not_utf8() {
        let mut batch = PreparedBatch::new();
        assert_eq!(batch.push(DataKind::Text, b"\xff"), Err(()));
        assert!(batch.is_empty());
        assert!(batch.push(DataKind::Binary, b"\xff").is_ok());
        assert!(Prepared::message(DataKind::Text, b"ok").is_ok());
    }

    #[test]
    fn without_leaves_out_the_given_frames_and_shares_the_rest() {
        let (p, spans) = batch_of(&["a", "b", "c", "d", "e"]);
        let pieces = p.without(&[spans[1], spans[2], spans[4]]);
        let got: Vec<Vec<String>> = pieces.iter().map(texts).collect();
        assert_eq!(got, [vec!["a"], vec!["d"]]);
        assert_eq!(pieces[1].messages(), 1);
        // Slices of the same bytes, not copies.
        assert_eq!(pieces[0].frames().as_ptr(), p.frames().as_ptr());
        // Nothing left out: one piece, all of it.
        assert_eq!(p.without(&[]), vec![p.clone()]);
        // Everything left out: nothing.
        assert!(p.without(&spans).is_empty());
    }

    use crate::connection::tests::pair::{events, feed, take_output as drain};
    use crate::{ApiMisuse, CloseCode, Config, Connection, Event, Role};

    #[test]
    fn a_server_queues_the_frames_shared_between_its_own_messages() {
        let (p, _) = batch_of(&["b1", "b2"]);
        let mut server = Connection::new(Role::Server, Config::default());
        server.send_text("before").unwrap();
        server.send_prepared(&p).unwrap();
        server.send_text("after").unwrap();
        // Three parts: "before", the prepared frames themselves (not copied), "after".
        let mut parts = [std::io::IoSlice::new(&[]); 4];
        assert_eq!(server.output_parts(&mut parts), 3);
        assert_eq!(parts[1].as_ptr(), p.frames().as_ptr());
        assert_eq!(server.output_len(), 8 + p.len() + 7);
        let wire = drain(&mut server);
        let mut client = Connection::new(Role::Client, Config::default());
        feed(&mut client, &wire);
        assert_eq!(
            events(&mut client),
            ["before", "b1", "b2", "after"].map(|t| Event::Text(t.into()))
        );
    }

    #[test]
    fn a_client_frames_each_message_again_masked() {
        let mut batch = PreparedBatch::new();
        batch.push_text("hi");
        batch.push_binary(&[9; 300]);
        let p = batch.take();
        let mut client = Connection::new(Role::Client, Config::default());
        client.send_prepared(&p).unwrap();
        let wire = drain(&mut client);
        assert_ne!(&wire[..], &p.frames()[..], "a client's frames are masked");
        let mut server = Connection::new(Role::Server, Config::default());
        feed(&mut server, &wire);
        assert_eq!(
            events(&mut server),
            [Event::Text("hi".into()), Event::Binary(vec![9; 300].into())]
        );
    }

    #[test]
    fn a_smaller_max_send_frame_size_splits_the_messages_into_frames() {
        let (p, _) = batch_of(&["0123456789", "ab"]);
        let config = Config {
            max_send_frame_size: 4,
            ..Config::default()
        };
        let mut server = Connection::new(Role::Server, config);
        server.send_prepared(&p).unwrap();
        let wire = drain(&mut server);
        // "0123456789" in frames of 4, 4, 2 bytes; "ab" in one frame, unchanged.
        assert_eq!(wire.len(), 3 * 2 + 10 + 2 + 2);
        assert_eq!(wire[0], 0x01, "a first text fragment, not FIN");
        let mut client = Connection::new(Role::Client, Config::default());
        feed(&mut client, &wire);
        assert_eq!(
            events(&mut client),
            [Event::Text("0123456789".into()), Event::Text("ab".into())]
        );
    }

    #[cfg(feature = "deflate")]
    #[test]
    fn with_permessage_deflate_the_messages_go_uncompressed() {
        use crate::extensions::permessage_deflate::DeflateParams;
        let text = "compressible ".repeat(100);
        let (p, _) = batch_of(&[text.as_str()]);
        let params = DeflateParams::default();
        let mut server = Connection::new(Role::Server, Config::default());
        server.enable_deflate(&params);
        let mut client = Connection::new(Role::Client, Config::default());
        client.enable_deflate(&params);
        // A message the server compresses when sent the usual way...
        server.send_text(&text).unwrap();
        let compressed = drain(&mut server);
        assert_eq!(compressed[0], 0xC1, "FIN, RSV1, text");
        // ...goes as it was prepared: RSV1 clear (RFC 7692 §6), the same bytes for everyone.
        server.send_prepared(&p).unwrap();
        let shared = drain(&mut server);
        assert_eq!(&shared[..], &p.frames()[..]);
        assert_eq!(shared[0], 0x81);
        // And the client reads both, before and after, with its inflater state intact.
        server.send_text(&text).unwrap();
        let again = drain(&mut server);
        for wire in [compressed, shared, again] {
            feed(&mut client, &wire);
        }
        assert_eq!(
            events(&mut client),
            vec![Event::Text(text.as_str().into()); 3]
        );
    }

    /// A server and a client that agreed on permessage-deflate with `params`, the server
    /// configured by `config`.
    #[cfg(feature = "deflate")]
    fn deflate_pair(
        params: &crate::extensions::permessage_deflate::DeflateParams,
        config: crate::extensions::permessage_deflate::DeflateConfig,
    ) -> (Connection, Connection) {
        let config = Config {
            deflate: config,
            ..Config::default()
        };
        let mut server = Connection::new(Role::Server, config);
        server.enable_deflate(params);
        let mut client = Connection::new(Role::Client, Config::default());
        client.enable_deflate(params);
        (server, client)
    }

    #[cfg(feature = "deflate")]
    fn no_takeover() -> crate::extensions::permessage_deflate::DeflateParams {
        crate::extensions::permessage_deflate::DeflateParams {
            server_no_context_takeover: true,
            ..Default::default()
        }
    }

    #[cfg(feature = "deflate")]
    #[test]
    fn the_encoding_of_a_connection_follows_its_compression() {
        use crate::extensions::permessage_deflate::{
            DeflateConfig, DeflateParams, StatelessCompression,
        };
        let plain = Connection::new(Role::Server, Config::default());
        assert_eq!(plain.prepared_encoding(), Encoding::PLAIN);
        assert!(plain.prepared_encoding().is_plain());
        // Without context takeover: the connection's compression, from its threshold up.
        let config = DeflateConfig {
            threshold: 100,
            level: 3,
            ..DeflateConfig::default()
        };
        let params = DeflateParams {
            server_max_window_bits: 10,
            ..no_takeover()
        };
        let (server, _) = deflate_pair(&params, config.clone());
        let encoding = server.prepared_encoding();
        let how = StatelessCompression::new(10, 3);
        assert_eq!(encoding, Encoding::compressed(how, 100));
        assert_eq!(encoding.compression(99), None);
        assert_eq!(encoding.compression(100), Some(how));
        assert_eq!(server.stateless_compression(100), Some(how));
        // With context takeover: plain (only its own compressor could compress for it).
        let (server, _) = deflate_pair(&DeflateParams::default(), config);
        assert_eq!(server.prepared_encoding(), Encoding::PLAIN);
    }

    #[cfg(feature = "deflate")]
    #[test]
    fn compressed_frames_go_as_they_are_to_connections_of_their_encoding() {
        use crate::extensions::permessage_deflate::DeflateConfig;
        let (mut server, mut client) = deflate_pair(&no_takeover(), DeflateConfig::default());
        let encoding = server.prepared_encoding();
        let long = "compressible ".repeat(100);
        let how = encoding.compression(long.len()).expect("compressed");
        let message = how.compress_text(&long);
        let mut batch = PreparedBatch::new();
        batch.push_text("short");
        let span = batch.push_compressed(&message).unwrap();
        batch.push_binary(&[1, 2, 3]);
        let p = batch.take();
        assert_eq!(p.compression(), Some(how));
        assert_eq!(p.messages(), 3);
        // The compressed frame: FIN, RSV1, text; its payload is the compressed message's.
        let frame = &p.frames()[span.start()..span.end()];
        assert_eq!(frame[0], 0xC1);
        assert_eq!(
            &frame[frame.len() - message.payload().len()..],
            &message.payload()[..]
        );
        assert!(frame.len() < long.len() / 4);
        server.send_prepared(&p).unwrap();
        let wire = drain(&mut server);
        assert_eq!(&wire[..], &p.frames()[..], "queued as they are");
        feed(&mut client, &wire);
        assert_eq!(
            events(&mut client),
            [
                Event::Text("short".into()),
                Event::Text(long.as_str().into()),
                Event::Binary(vec![1, 2, 3].into())
            ]
        );
        // The batch starts again with no compression of its own.
        batch.push_text("x");
        assert_eq!(batch.take().compression(), None);
    }

    #[cfg(feature = "deflate")]
    #[test]
    fn compressed_frames_are_refused_by_connections_of_another_encoding() {
        use crate::extensions::permessage_deflate::{
            DeflateConfig, DeflateParams, StatelessCompression,
        };
        let text = "compressible ".repeat(100);
        let message = StatelessCompression::new(15, 6).compress_text(&text);
        let mut batch = PreparedBatch::new();
        batch.push_compressed(&message).unwrap();
        let p = batch.take();
        let mut plain = Connection::new(Role::Server, Config::default());
        let (mut takeover, _) = deflate_pair(&DeflateParams::default(), DeflateConfig::default());
        let other = DeflateParams {
            server_max_window_bits: 12,
            ..no_takeover()
        };
        let (mut smaller_window, _) = deflate_pair(&other, DeflateConfig::default());
        for conn in [&mut plain, &mut takeover, &mut smaller_window] {
            assert_eq!(conn.send_prepared(&p), Err(ApiMisuse::CompressionMismatch));
            assert!(conn.output().is_empty(), "nothing queued");
        }
        // One batch holds one encoding.
        let mut batch = PreparedBatch::new();
        batch.push_compressed(&message).unwrap();
        let smaller = StatelessCompression::new(12, 6).compress_text(&text);
        assert_eq!(
            batch.push_compressed(&smaller),
            Err(ApiMisuse::CompressionMismatch)
        );
        assert_eq!(batch.messages(), 1);
    }

    #[cfg(feature = "deflate")]
    #[test]
    fn compressed_frames_split_by_a_smaller_max_send_frame_size_keep_rsv1_on_the_first() {
        use crate::extensions::permessage_deflate::DeflateConfig;
        let (_, mut client) = deflate_pair(&no_takeover(), DeflateConfig::default());
        let config = Config {
            max_send_frame_size: 64,
            ..Config::default()
        };
        let mut server = Connection::new(Role::Server, config);
        server.enable_deflate(&no_takeover());
        let text: String = (0..400).map(|i| format!("{i},")).collect();
        let how = server.stateless_compression(text.len()).unwrap();
        let message = how.compress_text(&text);
        let mut batch = PreparedBatch::new();
        batch.push_compressed(&message).unwrap();
        let p = batch.take();
        server.send_prepared(&p).unwrap();
        let wire = drain(&mut server);
        assert!(message.payload().len() > 64, "more than one frame");
        assert_eq!(wire[0], 0x41, "not FIN, RSV1, text");
        assert_eq!(wire[2 + 64] & 0x70, 0, "a continuation has no RSV bit");
        feed(&mut client, &wire);
        assert_eq!(events(&mut client), [Event::Text(text.as_str().into())]);
    }

    #[test]
    fn nothing_is_queued_after_our_close_or_inside_a_fragmented_message() {
        let (p, _) = batch_of(&["x"]);
        let mut server = Connection::new(Role::Server, Config::default());
        server
            .send_fragment(DataKind::Text, b"part", false)
            .unwrap();
        assert_eq!(server.send_prepared(&p), Err(ApiMisuse::FragmentOrder));
        server.send_fragment(DataKind::Text, b"end", true).unwrap();
        server.send_close(CloseCode::NORMAL, "").unwrap();
        let before = server.output_len();
        assert_eq!(server.send_prepared(&p), Err(ApiMisuse::AlreadyClosing));
        assert_eq!(server.output_len(), before);
    }

    #[test]
    fn an_empty_prepared_queues_nothing() {
        let mut server = Connection::new(Role::Server, Config::default());
        server.send_prepared(&Prepared::default()).unwrap();
        assert!(server.output().is_empty());
    }

    #[test]
    fn without_ignores_spans_that_are_not_frames_of_the_batch() {
        let (p, spans) = batch_of(&["first", "second"]);
        let (_, other) = batch_of(&["xy", "z"]);
        let bogus = FrameSpan {
            start: spans[0].start + 1,
            end: spans[0].end,
        };
        let pieces = p.without(&[bogus, other[1], spans[1]]);
        assert_eq!(
            pieces.iter().map(texts).collect::<Vec<_>>(),
            [vec!["first"]]
        );
    }
}
