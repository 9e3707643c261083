//! One [`Connection`] with permessage-deflate negotiated, in either role, facing a peer that
//! sends arbitrary bytes, malformed frames, and well-formed messages compressed by a zlib
//! stream of the harness's own, with commands in between.
//!
//! Input: three setup bytes, then operations, each starting with a tag byte.
//!
//! Setup: byte 0: bit 0 the role (client when set), bits 1–4 the server's mode and the client's
//! offer ([`Agreement::from_bytes`]), bits 5–6 `max_message_size`, bit 7 echo (received
//! messages are sent back); byte 1: window bits and level ([`Agreement::from_bytes`]), bit 7
//! `deliver_fragments`; byte 2: bits 0–1 `max_frame_size`, bits 2–3 `max_send_frame_size`,
//! bits 4–5 our `threshold`, bit 6 input through `receive_buf` instead of `receive_data`.
//!
//! | tag | operation |
//! |-----|-----------|
//! | `0x00–0x7F` | `n = tag`: the next `n` bytes, as they are, in one read |
//! | `0x80–0x9F` | a well-formed data message from the peer (below) |
//! | `0xA0`, `0xA1` | a ping, a pong from the peer: next byte `n`, then `n % 126` bytes of payload |
//! | `0xA2`, `0xA3` | a close from the peer: with code 1000 and reason `"bye"`, without a code |
//! | `0xA4–0xAF` | a frame from the peer with any first byte: next byte `b0`, next byte `n`, then `n` bytes of payload, masked as the role expects (not when `tag` is odd) |
//! | `0xB0–0xB9` | a command (below): next byte `n`, then `n` bytes of data |
//! | `0xBA` | `send_ping`: next byte `n`, then `n % 126` bytes |
//! | `0xBB` | `send_close(1000, "bye")` |
//! | `0xBC` | `receive_eof` |
//! | `0xBD–0xBF` | nothing |
//! | `0xC0–0xFF` | `n = tag & 0x3F`: the next `n` bytes, one read per byte |
//!
//! A data message from the peer: bit 0 of the tag is the kind (binary when set), bit 1 asks for
//! compression (impossible with an 8-bit window: then it goes uncompressed), bits 2–4 pick its
//! length ([`LENGTHS`]: the content repeated); then a byte `f`: bits 0–2 the number of frames
//! less one, bit 3 a ping between the first two frames, bit 4 a final DEFLATE block (BFINAL)
//! instead of a sync flush at the end, bits 5–7 how the bytes are cut into reads; then a byte
//! `n` and `n` bytes of content (text is made valid UTF-8).
//!
//! Commands, by the tag's low nibble: `0`/`1` `send_text`/`send_binary`, `2`/`3`
//! `send_text_shared`/`send_binary_shared`, `4`/`5` a text/binary message compressed once
//! ([`Connection::stateless_compression`], [`Connection::send_compressed`]; sent as usual when
//! the connection has no stateless compression for it), `6`/`7` `send_fragment` text/binary
//! not final, `8`/`9` final.

use std::collections::VecDeque;

use bytes::BytesMut;
use flate2::{Compress, Compression, FlushCompress, Status};
use gangway_proto::{
    ApiMisuse, CloseCode, Config, Connection, DataKind, Event, ProtocolError, Role,
};

use super::{cycled, frame, message, Agreement, SPARE_BUDGET, STATES_BUDGET};
use crate::memory;
use crate::output::{OutputReader, TAIL};
use crate::{check_input_ignored, check_life_cycle, now};

/// Receive limits to choose from: one large enough for every message the harness builds, and
/// sizes small enough for short inputs to cross.
const RECEIVE_LIMITS: [usize; 4] = [1 << 20, 4096, 130, 16];

/// Send fragment sizes to choose from.
const SEND_FRAME_SIZES: [usize; 4] = [usize::MAX, 1, 7, 125];

/// Our compression thresholds to choose from: the default, everything, and large messages only.
const THRESHOLDS: [usize; 4] = [32, 0, 1, 1000];

/// Lengths of the peer's data messages: the content's, twice it, and lengths that cross the
/// windows (2^8 to 2^15 bytes) and fill several.
pub const LENGTHS: [Option<usize>; 8] = [
    None,
    Some(0),
    Some(100),
    Some(1000),
    Some(4100),
    Some(8200),
    Some(17_000),
    Some(40_000),
];

/// The masking key of the peer's frames to a server.
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Run the harness on `data` (format in the module docs).
///
/// Oracle: no panic; `poll_event` fails at most once, with a documented [`ProtocolError`]
/// that the role can see (or [`ProtocolError::UnexpectedEof`] after an early `receive_eof`),
/// after handing out every event before the violation, and then input is ignored; until the peer sends something malformed,
/// every well-formed message arrives as sent (the peer compresses with the agreed window and
/// context takeover), and only a message or frame over a limit fails the connection (1009);
/// events stay within the limits; our output is well-formed (RSV1 on first data frames only,
/// masking), inflates with a plain zlib stream (a fresh one per message without context
/// takeover) to exactly the messages we queued, answers pings and the close, and ends with the
/// failure's close code; commands succeed or fail as documented; a connection without context
/// takeover compresses a message once for many exactly when it should; the heap grows by no
/// more than the compression states and a few times the limits and the messages built, and
/// once the connection is gone no more than the thread's spare states remain.
pub fn check(data: &[u8]) {
    outcome(data);
}

/// What a run did, for tests of the seeds: `None` for an input too short to set up.
pub fn outcome(data: &[u8]) -> Option<Outcome> {
    let [setup, tuning, limits, ops @ ..] = data else {
        return None;
    };
    let memory = memory::Peak::start();
    let (budget, outcome) = {
        let mut harness = Harness::new(*setup, *tuning, *limits);
        harness.run(ops);
        harness.eof();
        (harness.budget(), harness.outcome)
    };
    // Once the connection is gone, only the thread's spare states may remain.
    memory.check(budget, SPARE_BUDGET);
    Some(outcome)
}

/// What a run of [`check`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// What failed the connection (`receive_eof`'s [`ProtocolError::UnexpectedEof`] included).
    pub error: Option<ProtocolError>,
    /// Data messages received whole.
    pub received: usize,
    /// Of those, the ones the peer had compressed and that were checked against what it sent.
    pub checked_compressed: usize,
    /// Data messages we sent.
    pub sent: usize,
    /// Of those, the ones we compressed.
    pub sent_compressed: usize,
    /// The peer's close was received.
    pub peer_closed: bool,
}

/// What the connection must do next, while the peer has sent only well-formed frames.
#[derive(PartialEq)]
enum Expected {
    Data(DataKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<CloseCode>),
    /// A message or a control frame over a limit: pieces of a message may come first, then the
    /// connection fails with [`ProtocolError::FrameTooLarge`] or
    /// [`ProtocolError::MessageTooLarge`].
    TooLarge,
}

impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |bytes: &[u8]| {
            format!(
                "{} bytes {:02x?}",
                bytes.len(),
                &bytes[..bytes.len().min(16)]
            )
        };
        match self {
            Expected::Data(kind, bytes) => write!(f, "Data({kind:?}, {})", short(bytes)),
            Expected::Ping(p) => write!(f, "Ping({})", short(p)),
            Expected::Pong(p) => write!(f, "Pong({})", short(p)),
            Expected::Close(code) => write!(f, "Close({code:?})"),
            Expected::TooLarge => f.write_str("TooLarge"),
        }
    }
}

/// The peer's compressor: a plain zlib stream with the agreed window and context takeover.
struct Peer {
    role: Role,
    window_bits: u8,
    takeover: bool,
    level: Compression,
    deflate: Option<Compress>,
}

impl Peer {
    /// Compress `data` as one message: ended by a sync flush whose tail is removed (RFC 7692
    /// §7.2.1), or by a final block (BFINAL, §7.2.3.4), after which the stream starts anew.
    fn compress(&mut self, data: &[u8], finish: bool) -> Vec<u8> {
        if data.is_empty() {
            // §7.2.3.6: an empty stored block without its tail; a final block needs its own.
            if finish {
                self.deflate = None;
                return vec![0x03, 0x00];
            }
            return vec![0x00];
        }
        let (bits, level) = (self.window_bits, self.level);
        let deflate = self
            .deflate
            .get_or_insert_with(|| Compress::new_with_window_bits(level, false, bits));
        let flush = if finish {
            FlushCompress::Finish
        } else {
            FlushCompress::Sync
        };
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut input = data;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            }
            let before = deflate.total_in();
            let status = deflate
                .compress_vec(input, &mut out, flush)
                .expect("zlib compresses");
            let used = usize::try_from(deflate.total_in() - before).expect("fits");
            input = &input[used..];
            let done = if finish {
                status == Status::StreamEnd
            } else {
                input.is_empty() && out.len() < out.capacity()
            };
            if done {
                break;
            }
        }
        if finish {
            self.deflate = None;
        } else {
            assert!(out.ends_with(&TAIL), "a sync flush ends with its tail");
            out.truncate(out.len() - TAIL.len());
            if !self.takeover {
                self.deflate = None;
            }
        }
        out
    }

    /// The masking key of its frames (§5.3: a client masks).
    fn mask(&self) -> Option<[u8; 4]> {
        (self.role == Role::Client).then_some(KEY)
    }
}

struct Harness {
    conn: Connection,
    role: Role,
    agreement: Agreement,
    config: Config,
    echo: bool,
    lend_input: bool,
    peer: Peer,
    /// Our output, parsed.
    out: OutputReader,
    /// Messages we queued that have not been seen whole in the output yet.
    queued: VecDeque<(DataKind, Vec<u8>)>,
    /// The message we are sending in fragments.
    sending: Option<(DataKind, Vec<u8>)>,
    /// The peer has sent only well-formed frames: `expected` is what must come.
    clean: bool,
    expected: VecDeque<Expected>,
    /// The message being delivered in pieces (`deliver_fragments`).
    pieces: Option<(DataKind, Vec<u8>)>,
    /// Ping payloads received, in order.
    pings: Vec<Vec<u8>>,
    peer_closed: bool,
    failed: bool,
    eof: bool,
    outcome: Outcome,
    /// The largest message the harness made, and the largest read of arbitrary bytes, for
    /// the memory budget.
    largest_message: usize,
    largest_read: usize,
}

impl Harness {
    fn new(setup: u8, tuning: u8, limits: u8) -> Harness {
        let role = if setup & 1 == 0 {
            Role::Server
        } else {
            Role::Client
        };
        let agreement = Agreement::from_bytes(setup >> 1, tuning);
        let mut config = Config::default();
        config.max_message_size = RECEIVE_LIMITS[usize::from((setup >> 5) & 3)];
        config.deliver_fragments = tuning & 0x80 != 0;
        config.max_frame_size = RECEIVE_LIMITS[usize::from(limits & 3)];
        config.max_send_frame_size = SEND_FRAME_SIZES[usize::from((limits >> 2) & 3)];
        let mut agreement = agreement;
        let threshold = THRESHOLDS[usize::from((limits >> 4) & 3)];
        match role {
            Role::Server => agreement.server.threshold = threshold,
            Role::Client => agreement.client.threshold = threshold,
        }
        let conn = agreement.connection(role, config.clone());
        let peer_role = match role {
            Role::Server => Role::Client,
            Role::Client => Role::Server,
        };
        let (window_bits, takeover) = agreement.agreed(peer_role);
        let peer = Peer {
            role: peer_role,
            window_bits,
            takeover,
            level: Compression::new(u32::from(tuning >> 3) % 10),
            deflate: None,
        };
        let out = OutputReader::new(role, Some(agreement.compresses(role)));
        Harness {
            conn,
            role,
            agreement,
            config,
            echo: setup & 0x80 != 0,
            lend_input: limits & 0x40 != 0,
            peer,
            out,
            queued: VecDeque::new(),
            sending: None,
            clean: true,
            expected: VecDeque::new(),
            pieces: None,
            pings: Vec::new(),
            peer_closed: false,
            failed: false,
            eof: false,
            outcome: Outcome::default(),
            largest_message: 0,
            largest_read: 0,
        }
    }

    fn run(&mut self, ops: &[u8]) {
        let mut input = Reader(ops);
        while let Some(tag) = input.byte() {
            match tag {
                0x00..=0x7F => {
                    let bytes = input.bytes(tag);
                    self.clean = false;
                    self.receive_in_pieces(bytes, usize::MAX);
                }
                0x80..=0x9F => {
                    let shape = input.byte().unwrap_or(0);
                    let n = input.byte().unwrap_or(0);
                    self.peer_message(tag, shape, input.bytes(n));
                }
                0xA0..=0xA3 => {
                    let payload = match tag {
                        0xA0 | 0xA1 => {
                            let n = input.byte().unwrap_or(0);
                            input.bytes(n % 126).to_vec()
                        }
                        0xA2 => b"\x03\xe8bye".to_vec(),
                        _ => Vec::new(),
                    };
                    self.peer_control(tag, payload);
                }
                0xA4..=0xAF => {
                    let b0 = input.byte().unwrap_or(0);
                    let n = input.byte().unwrap_or(0);
                    // An odd tag masks as the role does not expect.
                    let mask = if tag % 2 == 0 {
                        self.peer.mask()
                    } else {
                        self.peer.mask().xor(Some(KEY))
                    };
                    self.clean = false;
                    let wire = frame(b0, mask, input.bytes(n));
                    self.receive_in_pieces(&wire, usize::MAX);
                }
                0xB0..=0xB9 => {
                    let n = input.byte().unwrap_or(0);
                    self.command(tag & 0x0F, input.bytes(n));
                }
                0xBA => {
                    let n = input.byte().unwrap_or(0);
                    self.ping(input.bytes(n % 126));
                }
                0xBB => self.close(),
                0xBC => self.eof(),
                0xBD..=0xBF => {}
                0xC0..=0xFF => {
                    let bytes = input.bytes(tag & 0x3F);
                    self.clean = false;
                    self.receive_in_pieces(bytes, 1);
                }
            }
        }
    }

    /// Whether input is ignored from now on.
    fn input_finished(&self) -> bool {
        self.failed || self.eof || self.peer_closed
    }

    /// A well-formed data message from the peer (format in the module docs).
    fn peer_message(&mut self, tag: u8, shape: u8, content: &[u8]) {
        let kind = if tag & 1 == 0 {
            DataKind::Text
        } else {
            DataKind::Binary
        };
        let len = LENGTHS[usize::from((tag >> 2) & 7)].unwrap_or(content.len() * 2);
        let message = message(kind, &cycled(content, len));
        self.largest_message = self.largest_message.max(message.len());
        let compressed = tag & 2 != 0 && self.peer.window_bits >= 9;
        let payload = if compressed {
            self.peer.compress(&message, shape & 0x10 != 0)
        } else {
            message.clone()
        };
        // Cut the payload into frames at points derived from the shape.
        let frames = usize::from(shape & 7) + 1;
        let mut cuts: Vec<usize> = (1..frames)
            .map(|i| (i * 7919 + usize::from(shape) * 31) % (payload.len() + 1))
            .collect();
        cuts.sort_unstable();
        let mut bounds = vec![0];
        bounds.extend(cuts);
        bounds.push(payload.len());
        // Config::max_frame_size: a compressed message's frames are allowed an eighth and 64
        // bytes more.
        let max = self.config.max_frame_size;
        let max_frame = if compressed {
            max.saturating_add(max / 8 + 64)
        } else {
            max
        };
        let too_large = message.len() > self.config.max_message_size
            || bounds.windows(2).any(|w| w[1] - w[0] > max_frame);
        let ping = shape & 0x08 != 0 && frames > 1 && !too_large;
        let mut wire = Vec::new();
        for (i, w) in bounds.windows(2).enumerate() {
            let fin = if i + 1 == frames { 0x80 } else { 0 };
            let b0 = match (i, kind) {
                (0, DataKind::Text) => 0x01 | if compressed { 0x40 } else { 0 },
                (0, DataKind::Binary) => 0x02 | if compressed { 0x40 } else { 0 },
                _ => 0x00,
            };
            wire.extend(frame(fin | b0, self.peer.mask(), &payload[w[0]..w[1]]));
            if i == 0 && ping {
                wire.extend(frame(0x89, self.peer.mask(), b"inside"));
            }
        }
        if self.clean && !self.input_finished() {
            if too_large {
                self.expected.push_back(Expected::TooLarge);
            } else {
                if ping {
                    self.expected.push_back(Expected::Ping(b"inside".to_vec()));
                }
                self.expected.push_back(Expected::Data(kind, message));
            }
        }
        let piece = [usize::MAX, 1, 2, 3, 7, 64, 100, 1000][usize::from(shape >> 5)];
        let expected = self.clean && !self.input_finished() && !too_large;
        self.receive_in_pieces(&wire, piece);
        if self.clean && !self.failed {
            assert!(
                self.expected.is_empty(),
                "not delivered: {:?}",
                self.expected
            );
            if expected && compressed {
                self.outcome.checked_compressed += 1;
            }
        }
    }

    /// A control frame from the peer.
    fn peer_control(&mut self, tag: u8, payload: Vec<u8>) {
        let (opcode, expected) = match tag {
            0xA0 => (0x89, Expected::Ping(payload.clone())),
            0xA1 => (0x8A, Expected::Pong(payload.clone())),
            0xA2 => (0x88, Expected::Close(Some(CloseCode::NORMAL))),
            _ => (0x88, Expected::Close(None)),
        };
        // Config::max_frame_size bounds control frames too (a limit under 125 bytes refuses
        // the larger ones with 1009).
        let too_large = payload.len() > self.config.max_frame_size;
        if self.clean && !self.input_finished() {
            self.expected.push_back(if too_large {
                Expected::TooLarge
            } else {
                expected
            });
        }
        self.receive_in_pieces(&frame(opcode, self.peer.mask(), &payload), usize::MAX);
    }

    /// Feed `bytes` in reads of at most `piece` bytes, checking after each.
    fn receive_in_pieces(&mut self, bytes: &[u8], piece: usize) {
        if !self.clean {
            self.largest_read = self.largest_read.max(bytes.len());
        }
        if bytes.is_empty() {
            self.receive(bytes);
        }
        for chunk in bytes.chunks(piece.max(1)) {
            self.receive(chunk);
        }
    }

    fn receive(&mut self, bytes: &[u8]) {
        let ignored = self.input_finished();
        if self.lend_input {
            self.conn.receive_buf(BytesMut::from(bytes), now());
        } else {
            self.conn.receive_data(bytes, now());
        }
        if ignored {
            check_input_ignored(&mut self.conn);
            return;
        }
        self.settle();
    }

    /// Poll every event (echoing messages if asked to) and check it, up to the failure
    /// `poll_event` may reach, then take and check the whole output.
    fn settle(&mut self) {
        let close_was_sent = self.out.closed();
        let mut peer_close = None;
        let mut error = None;
        loop {
            let event = match self.conn.poll_event() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(err) => {
                    self.fail(err);
                    error = Some(err);
                    assert_eq!(self.conn.poll_event(), Ok(None), "event after {err:?}");
                    break;
                }
            };
            assert!(peer_close.is_none(), "{event:?} after the close event");
            self.event(event, &mut peer_close);
        }
        self.out.drain(&mut self.conn);
        while let Some((kind, bytes, compressed)) = self.out.messages.pop_front() {
            let queued = self.queued.pop_front().expect("a message we did not queue");
            assert_eq!((kind, bytes), queued, "message on the wire");
            self.outcome.sent += 1;
            self.outcome.sent_compressed += usize::from(compressed);
        }
        assert!(
            self.queued.is_empty(),
            "queued but not sent: {:?}",
            self.queued
        );
        // RFC 6455 §5.5.2: every ping answered with its payload, until our close.
        let pongs = &self.out.pongs;
        assert!(pongs.len() <= self.pings.len(), "unsolicited pong");
        assert_eq!(pongs[..], self.pings[..pongs.len()], "pong payloads");
        if !self.out.closed() {
            assert_eq!(pongs.len(), self.pings.len(), "ping not answered");
        }
        if !close_was_sent {
            if let Some(err) = error {
                // The failure's close code (1006 is never sent).
                let sent = self.out.close.as_ref().map(|c| c.as_ref().map(|c| c.code));
                let expected =
                    (err != ProtocolError::UnexpectedEof).then_some(Some(err.close_code()));
                assert_eq!(sent, expected, "close frame after {err:?}");
            } else if let Some(close) = peer_close {
                // §5.5.1: the peer's close is answered with its code as it is handed out.
                let sent = self
                    .out
                    .close
                    .as_ref()
                    .expect("the peer's close was not answered");
                assert_eq!(sent.as_ref().map(|c| c.code), close, "close answer");
            }
        }
        if peer_close.is_some() {
            self.peer_closed = true;
            self.outcome.peer_closed = true;
        }
        check_life_cycle(
            &self.conn,
            self.out.closed(),
            self.peer_closed,
            self.outcome.error,
            self.eof,
        );
    }

    /// `poll_event` reached the failure `err`: every event before it was handed out.
    fn fail(&mut self, err: ProtocolError) {
        assert!(!self.failed, "error reported twice: {err:?}");
        let documented = match err {
            // Only after receive_eof.
            ProtocolError::UnexpectedEof => self.eof,
            ProtocolError::UnmaskedFrame => self.role == Role::Server,
            ProtocolError::MaskedFrame => self.role == Role::Client,
            _ => true,
        };
        assert!(documented, "{err:?} from poll_event as a {:?}", self.role);
        if self.clean && err != ProtocolError::UnexpectedEof {
            assert!(
                matches!(
                    err,
                    ProtocolError::FrameTooLarge | ProtocolError::MessageTooLarge
                ) && self.expected.front() == Some(&Expected::TooLarge),
                "a well-formed peer was refused: {err:?}, expected {:?}",
                self.expected
            );
        }
        self.expected.clear();
        self.failed = true;
        self.outcome.error = Some(err);
        // The failure's close frame is queued now: it abandons the message we were sending.
        self.sending = None;
    }

    fn event(&mut self, event: Event, peer_close: &mut Option<Option<CloseCode>>) {
        let limit = self.config.max_message_size;
        let got = match event {
            Event::Text(text) => {
                assert!(
                    !self.config.deliver_fragments,
                    "a whole message with deliver_fragments"
                );
                assert!(text.len() <= limit, "message of {} bytes", text.len());
                if self.echo {
                    self.send_whole(DataKind::Text, text.as_bytes(), false);
                }
                Some(Expected::Data(DataKind::Text, text.as_bytes().to_vec()))
            }
            Event::Binary(data) => {
                assert!(
                    !self.config.deliver_fragments,
                    "a whole message with deliver_fragments"
                );
                assert!(data.len() <= limit, "message of {} bytes", data.len());
                if self.echo {
                    self.send_whole(DataKind::Binary, &data, false);
                }
                Some(Expected::Data(DataKind::Binary, data.to_vec()))
            }
            Event::Fragment { kind, data, fin } => {
                assert!(
                    self.config.deliver_fragments,
                    "a fragment without deliver_fragments"
                );
                // Empty only as the last; text valid UTF-8 on its own.
                assert!(fin || !data.is_empty(), "an empty piece before the last");
                if kind == DataKind::Text {
                    assert!(std::str::from_utf8(&data).is_ok(), "a text piece");
                }
                let (k, so_far) = self.pieces.get_or_insert_with(|| (kind, Vec::new()));
                assert_eq!(*k, kind, "fragment kinds");
                so_far.extend_from_slice(&data);
                assert!(so_far.len() <= limit, "message of {} bytes", so_far.len());
                fin.then(|| {
                    let (kind, whole) = self.pieces.take().expect("just inserted");
                    Expected::Data(kind, whole)
                })
            }
            Event::Ping(payload) => {
                assert!(payload.len() <= 125);
                self.pings.push(payload.to_vec());
                Some(Expected::Ping(payload.to_vec()))
            }
            Event::Pong(payload) => {
                assert!(payload.len() <= 125);
                Some(Expected::Pong(payload.to_vec()))
            }
            Event::Close(close) => {
                assert!(!self.failed, "close event after a failure");
                let code = close.map(|c| c.code);
                *peer_close = Some(code);
                Some(Expected::Close(code))
            }
        };
        if let Some(Expected::Data(..)) = got {
            self.outcome.received += 1;
        }
        if !self.clean {
            return;
        }
        match got {
            Some(got) => {
                let expected = self.expected.pop_front();
                assert_eq!(expected.as_ref(), Some(&got), "event");
            }
            // A piece of a message: of the one expected next (pieces of its first frame come
            // before a ping that follows that frame).
            None => {
                let message = |e: Option<&Expected>| {
                    matches!(e, Some(Expected::Data(..) | Expected::TooLarge))
                };
                let next = match self.expected.front() {
                    Some(Expected::Ping(_)) => self.expected.get(1),
                    front => front,
                };
                assert!(message(next), "a piece of no message: {:?}", self.expected);
            }
        }
    }

    /// What sending a whole message (or a fragment, with `fragment`'s kind) must give now:
    /// nothing goes out after our close, the peer's (answered as it was handed out), or a
    /// failure (reached after the events before it, which can still be answered).
    fn send_outcome(&self, fragment: Option<DataKind>) -> Result<(), ApiMisuse> {
        if self.out.closed() || self.failed || self.peer_closed {
            return Err(ApiMisuse::AlreadyClosing);
        }
        match (fragment, &self.sending) {
            (None, Some(_)) => Err(ApiMisuse::FragmentOrder),
            (Some(kind), Some((open, _))) if kind != *open => Err(ApiMisuse::FragmentOrder),
            _ => Ok(()),
        }
    }

    /// A whole message: copied, or shared (queued without a copy where large enough).
    fn send_whole(&mut self, kind: DataKind, data: &[u8], shared: bool) {
        let data = message(kind, data);
        let expected = self.send_outcome(None);
        let result = match (kind, shared) {
            (DataKind::Text, false) => self.conn.send_text(as_str(&data)),
            (DataKind::Text, true) => self.conn.send_text_shared(as_str(&data).into()),
            (DataKind::Binary, false) => self.conn.send_binary(&data),
            (DataKind::Binary, true) => self
                .conn
                .send_binary_shared(bytes::Bytes::copy_from_slice(&data)),
        };
        assert_eq!(result, expected, "send {kind:?}");
        if result.is_ok() {
            self.queued.push_back((kind, data));
        }
    }

    /// A whole message compressed once for many connections, when this connection compresses
    /// without context takeover.
    fn send_stateless(&mut self, kind: DataKind, data: &[u8]) {
        let data = message(kind, data);
        let (bits, takeover) = self.agreement.compresses(self.role);
        let threshold = self.agreement.deflate_config(self.role).threshold;
        let stateless = self.conn.stateless_compression(data.len());
        assert_eq!(
            stateless.is_some(),
            !takeover && bits >= 9 && data.len() >= threshold,
            "stateless compression of {} bytes, window {bits}, takeover {takeover}",
            data.len()
        );
        let Some(stateless) = stateless else {
            return self.send_whole(kind, &data, false);
        };
        assert_eq!(stateless.window_bits(), bits);
        let compressed = match kind {
            DataKind::Text => stateless.compress_text(as_str(&data)),
            DataKind::Binary => stateless.compress_binary(&data),
        };
        let expected = self.send_outcome(None);
        assert_eq!(
            self.conn.send_compressed(&compressed),
            expected,
            "send_compressed"
        );
        if expected.is_ok() {
            self.queued.push_back((kind, data));
        }
    }

    fn fragment(&mut self, kind: DataKind, data: &[u8], fin: bool) {
        let data = message(kind, data);
        let expected = self.send_outcome(Some(kind));
        let result = self.conn.send_fragment(kind, &data, fin);
        assert_eq!(result, expected, "send_fragment({kind:?}, {fin})");
        if result.is_ok() {
            let (_, so_far) = self.sending.get_or_insert_with(|| (kind, Vec::new()));
            so_far.extend_from_slice(&data);
            if fin {
                let whole = self.sending.take().expect("just inserted");
                self.queued.push_back(whole);
            }
        }
    }

    fn command(&mut self, command: u8, data: &[u8]) {
        let kind = if command & 1 == 0 {
            DataKind::Text
        } else {
            DataKind::Binary
        };
        match command {
            0 | 1 => self.send_whole(kind, data, false),
            2 | 3 => self.send_whole(kind, data, true),
            4 | 5 => self.send_stateless(kind, data),
            6 | 7 => self.fragment(kind, data, false),
            _ => self.fragment(kind, data, true),
        }
        self.settle();
    }

    fn ping(&mut self, payload: &[u8]) {
        let expected = self.send_outcome(None).or_else(|e| match e {
            // A ping may go out inside a fragmented message.
            ApiMisuse::FragmentOrder => Ok(()),
            e => Err(e),
        });
        assert_eq!(self.conn.send_ping(payload), expected, "send_ping");
        self.settle();
    }

    fn close(&mut self) {
        let expected = self.send_outcome(None).or_else(|e| match e {
            ApiMisuse::FragmentOrder => Ok(()),
            e => Err(e),
        });
        let result = self.conn.send_close(CloseCode::NORMAL, "bye");
        assert_eq!(result, expected, "send_close");
        if result.is_ok() {
            // Nothing follows the close frame: a fragmented message stays unfinished.
            self.sending = None;
        }
        self.settle();
        if result.is_ok() {
            assert!(self.out.closed(), "send_close wrote no close frame");
        }
    }

    fn eof(&mut self) {
        // Every event was handed out after the last read: only a partial frame can be left.
        let clean_end = self.failed || self.eof || self.peer_closed;
        let failed_before = self.failed;
        self.conn.receive_eof();
        self.eof = true;
        self.settle();
        if clean_end {
            assert_eq!(
                self.failed, failed_before,
                "EOF after the close handshake failed"
            );
        } else {
            // RFC 6455 §7.1.5: 1006, which is never sent.
            assert_eq!(
                self.outcome.error,
                Some(ProtocolError::UnexpectedEof),
                "EOF before the close handshake"
            );
        }
        assert!(self.conn.should_close_transport());
    }

    /// How much the heap may grow during the input: the compression states; a message being
    /// reassembled (at most the limit, with room to grow); a few copies of each message the
    /// harness built (its compressed form, the event, an echo and its compressed form); and
    /// for arbitrary bytes, DEFLATE's largest expansion (about 1032 times) with room to grow.
    fn budget(&self) -> usize {
        STATES_BUDGET
            + 2 * self.config.max_message_size
            + 16 * self.largest_message
            + 2100 * self.largest_read
    }
}

/// A text message built by [`message`], which is valid UTF-8.
fn as_str(data: &[u8]) -> &str {
    std::str::from_utf8(data).expect("text messages are made valid UTF-8")
}

/// The operations' bytes, read from the front; past the end, nothing.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    /// The next `n` bytes, or as many as are left.
    fn bytes(&mut self, n: u8) -> &'a [u8] {
        let (head, rest) = self.0.split_at(usize::from(n).min(self.0.len()));
        self.0 = rest;
        head
    }
}
