//! A [`Connection`] in either role fed arbitrary bytes in arbitrary pieces, with commands
//! interleaved, checked against a model of what RFC 6455 and the documented API allow.
//!
//! Input: one configuration byte, then a sequence of chunks, each starting with a tag byte:
//!
//! | tag         | action                                                                  |
//! |-------------|-------------------------------------------------------------------------|
//! | `0x00–0xF7` | `receive_data` with the next `tag` bytes (fewer at the end of the input) |
//! | `0xF8`      | `send_ping(b"hi")`                                                      |
//! | `0xF9`      | `send_close(1000, "bye")`                                               |
//! | `0xFA`      | `send_text("text")`                                                     |
//! | `0xFB`      | `send_fragment(Text, b"fr\xC3", false)` (a character left open)         |
//! | `0xFC`      | `send_fragment(Text, b"\xA9!", true)` (closes it)                       |
//! | `0xFD`      | `send_fragment(Binary, [0xFF, 0], false)`                               |
//! | `0xFE`      | `send_fragment(Binary, [], true)`                                       |
//! | `0xFF`      | `receive_eof`                                                           |
//!
//! After each chunk every event is polled (`poll_event` decodes them from what was fed; text and
//! binary messages are echoed back when the configuration asks for it) and the whole output is
//! taken and parsed as frames. At the end of the input, `receive_eof`.
//!
//! Configuration byte: bits 0–1 pick `max_message_size`, bits 2–3 `max_frame_size`, bits 4–5
//! `max_send_frame_size`, bit 6 turns the echo on.

use std::collections::VecDeque;

use gangway_proto::config::DEFAULT_MAX_MESSAGE_SIZE;
use gangway_proto::{
    ApiMisuse, CloseCode, CloseFrame, Config, Connection, DataKind, End, Event, EventRef, OpCode,
    ProtocolError, Role, SeededRandom, State,
};

use crate::output::{OutFrame, OutputReader};
use crate::{check_input_ignored, check_life_cycle, now};

/// Receive limits to choose from: the default, and sizes small enough for short inputs to cross.
const RECEIVE_LIMITS: [usize; 4] = [DEFAULT_MAX_MESSAGE_SIZE, 4096, 130, 16];

/// Send fragment sizes to choose from.
const SEND_FRAME_SIZES: [usize; 4] = [usize::MAX, 1, 7, 125];

/// Run the connection harness in `role` on `data` (format in the module docs).
///
/// Oracle: no panic; `poll_event` fails at most once and only with a documented
/// [`ProtocolError`] that the role can see (or [`ProtocolError::UnexpectedEof`] after an early
/// EOF), after handing out every event before the violation, which can still be answered; the
/// output then ends with a close frame carrying [`ProtocolError::close_code`] (unless our close
/// was already sent); events arrive in a legal order and within the limits; pings are answered
/// with equal pongs until our close; the peer's close is answered with its code; our output is a
/// well-formed frame sequence for the role (masking, minimal lengths, nothing after the close)
/// carrying exactly the messages we queued; commands succeed or fail exactly as documented;
/// `state`, `ended` and `should_close_transport` follow the close handshake.
pub fn check(role: Role, data: &[u8]) {
    let Some((&config_byte, mut rest)) = data.split_first() else {
        return;
    };
    let mut config = Config::default();
    config.max_message_size = RECEIVE_LIMITS[usize::from(config_byte & 3)];
    config.max_frame_size = RECEIVE_LIMITS[usize::from((config_byte >> 2) & 3)];
    config.max_send_frame_size = SEND_FRAME_SIZES[usize::from((config_byte >> 4) & 3)];
    let echo = config_byte & 0x40 != 0;
    check_lent_input(role, &config, rest);
    let mut harness = Harness::new(role, config, echo);
    while let Some((&tag, tail)) = rest.split_first() {
        rest = tail;
        match tag {
            0x00..=0xF7 => {
                let (piece, tail) = rest.split_at(usize::from(tag).min(rest.len()));
                rest = tail;
                harness.receive(piece);
            }
            0xF8 => harness.ping(),
            0xF9 => harness.close(),
            0xFA => harness.text(),
            0xFB => harness.fragment(DataKind::Text, b"fr\xC3", false),
            0xFC => harness.fragment(DataKind::Text, b"\xA9!", true),
            0xFD => harness.fragment(DataKind::Binary, &[0xFF, 0], false),
            0xFE => harness.fragment(DataKind::Binary, &[], true),
            0xFF => harness.eof(),
        }
    }
    harness.eof();
}

/// The same chunks (format in the module docs) fed to three connections, one borrowing its
/// input (`receive_data`) and two handed it (`receive_buf`, which lends whole messages out of it),
/// the first two drained by `poll_event`, the third by `for_each_event` (which lends whole
/// messages in place); each echoes the text and binary messages it gets, the third through the
/// `Replies` it is lent: every result, event and byte of output must be the same.
fn check_lent_input(role: Role, config: &Config, mut rest: &[u8]) {
    let new = || Connection::with_random(role, config.clone(), Box::new(SeededRandom::new(7)));
    let (mut copied, mut lent, mut each) = (new(), new(), new());
    // Every piece of input, one after the other in one buffer: the pieces fed from it are
    // consecutive slices of one allocation, as reads into one buffer are (a message cut between
    // them is joined without a copy), the others are buffers of their own.
    let mut pool = bytes::BytesMut::new();
    let mut scan = rest;
    while let Some((&tag, tail)) = scan.split_first() {
        scan = tail;
        if tag <= 0xF7 {
            let (piece, tail) = scan.split_at(usize::from(tag).min(scan.len()));
            pool.extend_from_slice(piece);
            scan = tail;
        }
    }
    while let Some((&tag, tail)) = rest.split_first() {
        rest = tail;
        match tag {
            0x00..=0xF7 => {
                let (piece, tail) = rest.split_at(usize::from(tag).min(rest.len()));
                rest = tail;
                let pooled = pool.split_to(piece.len());
                copied.receive_data(piece, now());
                let (to_lent, to_each) = if tag % 2 == 0 {
                    (pooled, bytes::BytesMut::from(piece))
                } else {
                    (bytes::BytesMut::from(piece), pooled)
                };
                lent.receive_buf(to_lent, now());
                each.receive_buf(to_each, now());
            }
            0xFF => {
                copied.receive_eof();
                lent.receive_eof();
                each.receive_eof();
            }
            // Commands change what later input means (a close sent, a fragment open): both
            // connections get them, to reach the same states.
            command => {
                let send = |conn: &mut Connection| match command {
                    0xF8 => conn.send_ping(b"hi"),
                    0xF9 => conn.send_close(CloseCode::NORMAL, "bye"),
                    0xFA => conn.send_text("text"),
                    0xFB => conn.send_fragment(DataKind::Text, b"fr\xC3", false),
                    0xFC => conn.send_fragment(DataKind::Text, b"\xA9!", true),
                    0xFD => conn.send_fragment(DataKind::Binary, &[0xFF, 0], false),
                    _ => conn.send_fragment(DataKind::Binary, &[], true),
                };
                let result = send(&mut copied);
                assert_eq!(result, send(&mut lent), "command result");
                assert_eq!(result, send(&mut each), "command result");
            }
        }
        let polled = poll_and_echo(&mut copied);
        assert_eq!(polled, poll_and_echo(&mut lent), "events differ");
        assert_eq!(polled, lend_and_echo(&mut each), "lent events differ");
        for conn in [&mut lent, &mut each] {
            assert_eq!(copied.output(), conn.output(), "output differs");
            assert_eq!(copied.state(), conn.state());
            assert_eq!(copied.ended(), conn.ended());
        }
        let n = copied.output().len();
        for conn in [&mut copied, &mut lent, &mut each] {
            conn.consume_output(n);
        }
    }
}

/// What draining a connection's events gave: each event with the result of echoing it (for text
/// and binary messages), and how the draining ended.
type Drained = (
    Vec<(Event, Option<Result<(), ApiMisuse>>)>,
    Result<(), ProtocolError>,
);

/// Every event `conn`'s input holds, by `poll_event`, each text and binary message echoed.
fn poll_and_echo(conn: &mut Connection) -> Drained {
    let mut events = Vec::new();
    loop {
        match conn.poll_event() {
            Ok(Some(event)) => {
                let echoed = match &event {
                    Event::Text(text) => Some(conn.send_text(text)),
                    Event::Binary(data) => Some(conn.send_binary(data)),
                    _ => None,
                };
                events.push((event, echoed));
            }
            Ok(None) => return (events, Ok(())),
            Err(err) => return (events, Err(err)),
        }
    }
}

/// [`poll_and_echo`] by `for_each_event`: the events lent, the echoes sent through the
/// `Replies` lent with them.
fn lend_and_echo(conn: &mut Connection) -> Drained {
    let mut events = Vec::new();
    let result = conn.for_each_event(|event, replies| {
        let echoed = match event {
            // Both ways to answer: `echo` (without a copy for a large message), and sending a
            // copy of what was lent.
            EventRef::Text(text) if text.len() % 2 == 0 => Some(replies.send_text(text)),
            EventRef::Binary(data) if data.len() % 2 == 0 => Some(replies.send_binary(data)),
            EventRef::Text(_) | EventRef::Binary(_) => Some(replies.echo().map(|sent| {
                assert!(sent, "a message lent, but echo sent nothing");
            })),
            _ => {
                assert_eq!(replies.echo(), Ok(false), "echo of {event:?}");
                None
            }
        };
        events.push((owned(event), echoed));
        std::ops::ControlFlow::Continue(())
    });
    if let Ok(flow) = result {
        assert!(
            flow.is_continue(),
            "stopped though the callback never stopped it"
        );
    }
    (events, result.map(|_| ()))
}

/// A lent event as the event `poll_event` hands out.
fn owned(event: EventRef<'_>) -> Event {
    match event {
        EventRef::Text(text) => Event::Text(text.into()),
        EventRef::Binary(data) => Event::Binary(bytes::Bytes::copy_from_slice(data)),
        EventRef::Ping(data) => Event::Ping(bytes::Bytes::copy_from_slice(data)),
        EventRef::Pong(data) => Event::Pong(bytes::Bytes::copy_from_slice(data)),
        EventRef::Fragment { kind, data, fin } => Event::Fragment {
            kind,
            data: bytes::Bytes::copy_from_slice(data),
            fin,
        },
        EventRef::Close(close) => Event::Close(close.cloned()),
    }
}

/// The connection under test and the model it is checked against.
struct Harness {
    conn: Connection,
    role: Role,
    config: Config,
    echo: bool,
    /// Our output, parsed.
    out: OutputReader,
    /// Messages we queued that have not been seen complete in the output yet.
    queued: VecDeque<(DataKind, Vec<u8>)>,
    /// The message we are sending in fragments: its kind and the bytes so far.
    sending: Option<(DataKind, Vec<u8>)>,
    /// Ping payloads received, in order.
    pings: Vec<Vec<u8>>,
    /// The peer's close frame was received.
    peer_closed: bool,
    /// The connection failed (a protocol error, or EOF before the close handshake).
    failed: bool,
    /// What `poll_event` failed with.
    error: Option<ProtocolError>,
    /// `receive_eof` was called.
    eof: bool,
    /// Bytes fed so far: no message can be larger.
    fed: usize,
}

impl Harness {
    fn new(role: Role, config: Config, echo: bool) -> Self {
        let conn = Connection::with_random(role, config.clone(), Box::new(SeededRandom::new(7)));
        Harness {
            conn,
            role,
            config,
            echo,
            out: OutputReader::new(role, None),
            queued: VecDeque::new(),
            sending: None,
            pings: Vec::new(),
            peer_closed: false,
            failed: false,
            error: None,
            eof: false,
            fed: 0,
        }
    }

    /// Whether sending is over: our close is out, the peer's close was handed out (and
    /// answered), or the connection failed.
    fn closing(&self) -> bool {
        self.out.closed() || self.peer_closed || self.failed
    }

    fn input_finished(&self) -> bool {
        self.failed || self.peer_closed
    }

    fn receive(&mut self, piece: &[u8]) {
        let ignored = self.input_finished();
        self.fed += piece.len();
        self.conn.receive_data(piece, now());
        if ignored {
            check_input_ignored(&mut self.conn);
            return;
        }
        self.settle();
    }

    /// The connection failed with `err` as `poll_event` reached it: every event before it was
    /// handed out; check the close frame it queued (among `frames`, the output since).
    fn check_failure(&mut self, err: ProtocolError, close_was_sent: bool, frames: &[OutFrame]) {
        let sent = frames.iter().filter(|f| f.opcode == OpCode::Close).count();
        if close_was_sent || err == ProtocolError::UnexpectedEof {
            // 1006 is never sent (§7.4.1); nothing follows our own close.
            assert_eq!(sent, 0, "a close frame for {err:?}");
        } else {
            // §7.1.7: fail the connection by sending the close frame for the error.
            let last = frames
                .last()
                .expect("no close frame after a protocol error");
            assert_eq!(
                last.opcode,
                OpCode::Close,
                "output after {err:?} ends with {last:?}"
            );
            let close = CloseFrame::parse(&last.payload).expect("our close frame parses");
            assert_eq!(
                close.map(|c| c.code),
                Some(err.close_code()),
                "close code for {err:?}"
            );
        }
    }

    fn check_protocol_error(&self, err: ProtocolError) {
        use ProtocolError as E;
        assert!(
            matches!(
                err,
                E::ReservedBits
                    | E::ReservedOpcode(3..=7 | 11..=15)
                    | E::InvalidLength
                    | E::FragmentedControlFrame
                    | E::ControlFrameTooLong
                    | E::UnexpectedContinuation
                    | E::ExpectedContinuation
                    | E::InvalidUtf8
                    | E::InvalidClosePayload
                    | E::FrameTooLarge
                    | E::MessageTooLarge
            ) || matches!(err, E::InvalidCloseCode(c) if !CloseCode(c).is_sendable())
                || (err == E::UnmaskedFrame && self.role == Role::Server)
                || (err == E::MaskedFrame && self.role == Role::Client),
            "undocumented error for {:?}: {err:?}",
            self.role
        );
        assert!(
            err.close_code().is_sendable(),
            "{err:?} maps to {}",
            err.close_code()
        );
    }

    fn eof(&mut self) {
        // Every event was handed out after the last chunk: only a partial frame can be left.
        let clean = self.failed || self.eof || self.peer_closed;
        self.conn.receive_eof();
        self.eof = true;
        let failed_before = self.failed;
        let frames = self.settle();
        if clean {
            assert_eq!(
                self.failed, failed_before,
                "EOF after the close handshake failed"
            );
        } else {
            // §7.1.5: 1006, which is never sent.
            assert!(self.failed, "EOF before the close handshake did not fail");
            assert_eq!(
                self.conn.ended(),
                Some(End::Failed(ProtocolError::UnexpectedEof))
            );
        }
        assert!(frames.is_empty(), "EOF produced output {frames:?}");
        assert_eq!(self.conn.state(), State::Closed);
        assert!(self.conn.should_close_transport());
    }

    fn ping(&mut self) {
        let expected = if self.closing() {
            Err(ApiMisuse::AlreadyClosing)
        } else {
            Ok(())
        };
        assert_eq!(self.conn.send_ping(b"hi"), expected, "send_ping");
        let frames = self.settle();
        if expected.is_ok() {
            assert!(frames
                .iter()
                .any(|f| f.opcode == OpCode::Ping && f.payload == b"hi"));
        }
    }

    fn close(&mut self) {
        let expected = if self.closing() {
            Err(ApiMisuse::AlreadyClosing)
        } else {
            Ok(())
        };
        assert_eq!(
            self.conn.send_close(CloseCode::NORMAL, "bye"),
            expected,
            "send_close"
        );
        if expected.is_ok() {
            // Nothing may follow the close frame: a fragmented message stays unfinished.
            self.sending = None;
        }
        let frames = self.settle();
        if expected.is_ok() {
            let last = frames.last().expect("send_close wrote nothing");
            assert_eq!(last.opcode, OpCode::Close);
            assert_eq!(last.payload, b"\x03\xe8bye");
        }
    }

    fn text(&mut self) {
        self.send_message(DataKind::Text, b"text");
        self.settle();
    }

    /// `send_text` or `send_binary` of a whole message, with the documented outcome.
    fn send_message(&mut self, kind: DataKind, data: &[u8]) {
        let expected = if self.closing() {
            Err(ApiMisuse::AlreadyClosing)
        } else if self.sending.is_some() {
            Err(ApiMisuse::FragmentOrder)
        } else {
            Ok(())
        };
        // Half the messages (by length) go through the API that may queue the payload without
        // copying it; the wire must not tell them apart.
        let shared = data.len() % 2 == 1;
        let result = match (kind, shared) {
            (DataKind::Text, false) => self.conn.send_text(
                std::str::from_utf8(data).expect("text messages are received as strings"),
            ),
            (DataKind::Text, true) => self.conn.send_text_shared(
                std::str::from_utf8(data)
                    .expect("text messages are received as strings")
                    .into(),
            ),
            (DataKind::Binary, false) => self.conn.send_binary(data),
            (DataKind::Binary, true) => self
                .conn
                .send_binary_shared(bytes::Bytes::copy_from_slice(data)),
        };
        assert_eq!(result, expected, "send {kind:?}");
        if result.is_ok() {
            self.queued.push_back((kind, data.to_vec()));
        }
    }

    fn fragment(&mut self, kind: DataKind, data: &[u8], fin: bool) {
        let so_far = match &self.sending {
            Some((k, bytes)) if *k == kind => Some(bytes.as_slice()),
            Some(_) => None,
            None => Some(&[][..]),
        };
        let expected = if self.closing() {
            Err(ApiMisuse::AlreadyClosing)
        } else if let Some(so_far) = so_far {
            let whole = [so_far, data].concat();
            // §8.1: the text so far must be a prefix of valid UTF-8, and whole once finished.
            let utf8_ok = match std::str::from_utf8(&whole) {
                Ok(_) => true,
                Err(e) => !fin && e.error_len().is_none(),
            };
            if kind == DataKind::Text && !utf8_ok {
                Err(ApiMisuse::InvalidUtf8)
            } else {
                Ok(())
            }
        } else {
            Err(ApiMisuse::FragmentOrder)
        };
        let result = self.conn.send_fragment(kind, data, fin);
        assert_eq!(
            result, expected,
            "send_fragment({kind:?}, {data:x?}, {fin})"
        );
        if result.is_ok() {
            let (_, bytes) = self.sending.get_or_insert_with(|| (kind, Vec::new()));
            bytes.extend_from_slice(data);
            if fin {
                let message = self.sending.take().expect("just inserted");
                self.queued.push_back(message);
            }
        }
        self.settle();
    }

    /// Poll every event, echo messages if asked to, then take and check the whole output.
    /// Returns the frames written since the last call.
    fn settle(&mut self) -> Vec<OutFrame> {
        let mut peer_close = None;
        let mut failure = None;
        loop {
            let event = match self.conn.poll_event() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(err) => {
                    assert!(!self.failed, "error reported twice: {err:?}");
                    if err == ProtocolError::UnexpectedEof {
                        assert!(self.eof, "{err:?} before EOF");
                    } else {
                        self.check_protocol_error(err);
                    }
                    self.failed = true;
                    self.error = Some(err);
                    // Nothing follows our close frame: a fragmented message stays unfinished.
                    self.sending = None;
                    failure = Some((err, self.out.closed()));
                    assert_eq!(self.conn.poll_event(), Ok(None), "after {err:?}");
                    break;
                }
            };
            assert!(
                !self.peer_closed && peer_close.is_none(),
                "event {event:?} after the close event"
            );
            match event {
                Event::Text(text) => {
                    self.check_message_size(text.len());
                    if self.echo {
                        self.send_message(DataKind::Text, text.as_bytes());
                    }
                }
                Event::Binary(data) => {
                    self.check_message_size(data.len());
                    if self.echo {
                        self.send_message(DataKind::Binary, &data);
                    }
                }
                Event::Ping(payload) => {
                    assert!(payload.len() <= 125);
                    self.pings.push(payload.to_vec());
                }
                Event::Pong(payload) => assert!(payload.len() <= 125),
                Event::Fragment { .. } => panic!("a fragment without Config::deliver_fragments"),
                Event::Close(close) => {
                    assert!(!self.failed, "close event after a failure");
                    if let Some(c) = &close {
                        assert!(c.code.is_sendable(), "close event with code {}", c.code);
                        assert!(c.reason.len() <= 123);
                    }
                    peer_close = Some((close, self.out.closed()));
                }
            }
        }
        // The output may be in parts (payloads queued without a copy): taken part by part.
        let frames = self.out.drain(&mut self.conn);

        // Messages we queued come out whole, in order, as soon as they are queued.
        while let Some((kind, bytes, _)) = self.out.messages.pop_front() {
            let expected = self.queued.pop_front().expect("a message we did not queue");
            assert_eq!((kind, bytes), expected, "message on the wire");
        }
        assert!(
            self.queued.is_empty(),
            "queued but not written: {:?}",
            self.queued
        );
        // §5.5.2: every ping gets a pong with its payload, until our close is sent.
        assert!(self.out.pongs.len() <= self.pings.len(), "unsolicited pong");
        assert_eq!(
            self.out.pongs[..],
            self.pings[..self.out.pongs.len()],
            "pong payloads"
        );
        if !self.out.closed() {
            assert_eq!(self.out.pongs.len(), self.pings.len(), "ping not answered");
        }
        if let Some((close, close_was_sent)) = peer_close {
            self.peer_closed = true;
            if !close_was_sent {
                // §5.5.1: answer the close, echoing its code (none if it had none).
                self.sending = None;
                let ours = frames
                    .iter()
                    .rev()
                    .find(|f| f.opcode == OpCode::Close)
                    .expect("the peer's close was not answered");
                let ours = CloseFrame::parse(&ours.payload).expect("our close frame parses");
                assert_eq!(ours.map(|c| c.code), close.map(|c| c.code), "close answer");
            }
        }
        if let Some((err, close_was_sent)) = failure {
            self.check_failure(err, close_was_sent, &frames);
        }
        check_life_cycle(
            &self.conn,
            self.out.closed(),
            self.peer_closed,
            self.error,
            self.eof,
        );
        frames
    }

    fn check_message_size(&self, len: usize) {
        assert!(
            len <= self.config.max_message_size,
            "message of {len} bytes"
        );
        assert!(
            len <= self.fed,
            "message of {len} bytes from {} fed",
            self.fed
        );
    }
}
