//! A client and a server [`Connection`] that negotiated permessage-deflate exchange messages:
//! what one compresses, the other inflates, across many messages, so that context takeover,
//! the windows and the server's kept window (mode `window`) carry from message to message.
//!
//! Input: two setup bytes, then messages.
//!
//! Setup: byte 0: bits 0–3 the server's mode and the client's offer
//! ([`Agreement::from_bytes`]), bits 4–5 both ends' `max_send_frame_size`, bit 6
//! `deliver_fragments` on both ends, bit 7 input through `receive_buf`; byte 1: window bits and
//! level ([`Agreement::from_bytes`]), bit 7 both ends compress every message (threshold 0).
//!
//! Each message: a tag byte, a delivery byte, a byte `n` and `n` bytes of content. The tag:
//! bit 7 the direction (server to client when set), bit 6 the kind (binary when set), bits 3–5
//! the length ([`LENGTHS`](super::connection::LENGTHS): the content repeated), bits 0–2 how it
//! is sent: `0` `send_text`/`send_binary`, `1` the shared variants, `2` compressed once
//! ([`Connection::stateless_compression`], [`Connection::send_compressed`]) when the connection
//! can, else as `0`, `3`–`7` in `how - 1` fragments. The delivery byte: bits 0–2 the size of
//! the reads that carry it to the other end, bit 3 hold it back (it goes with the next message
//! delivered that way), bits 4–7 where the fragments are cut.

use std::collections::VecDeque;

use bytes::BytesMut;
use gangway_proto::{Config, Connection, DataKind, Event, Role};

use super::connection::LENGTHS;
use super::{cycled, message, Agreement, SPARE_BUDGET, STATES_BUDGET};
use crate::memory;
use crate::now;
use crate::output::{take_output, OutputReader};

/// Send fragment sizes to choose from.
const SEND_FRAME_SIZES: [usize; 4] = [usize::MAX, 7, 125, 4096];

/// Read sizes to choose from.
const READ_SIZES: [usize; 8] = [usize::MAX, 1, 2, 3, 5, 64, 1000, 4096];

/// Run the harness on `data` (format in the module docs).
///
/// Oracle: every send succeeds; what each end sends inflates, with a plain zlib stream of the
/// harness's (a fresh one per message without context takeover), to the message sent, and is
/// compressed exactly when the documented rules say (a whole message from the threshold up, a
/// fragmented one always; never with an 8-bit window); the other end receives every message,
/// in order, byte for byte, however the bytes are cut into reads and however many messages a
/// read holds; a connection without context takeover compresses a message once for many
/// exactly when it should; the close handshake then completes; the heap grows by no more than
/// the compression states and a few copies of the messages in flight.
pub fn check(data: &[u8]) {
    let [setup, tuning, ops @ ..] = data else {
        return;
    };
    let memory = memory::Peak::start();
    let budget = {
        let mut pair = Pair::new(*setup, *tuning);
        let mut ops = ops;
        while let [tag, delivery, n, rest @ ..] = ops {
            let (content, rest) = rest.split_at(usize::from(*n).min(rest.len()));
            ops = rest;
            pair.exchange(*tag, *delivery, content);
        }
        pair.close();
        STATES_BUDGET + 16 * pair.most_in_flight
    };
    memory.check(budget, SPARE_BUDGET);
}

/// One end and what it sent that the other has not received yet.
struct End {
    conn: Connection,
    role: Role,
    /// Its output, parsed and inflated independently.
    out: OutputReader,
    /// Its output not delivered yet.
    wire: Vec<u8>,
    /// Messages it sent, not received yet.
    in_flight: VecDeque<(DataKind, Vec<u8>)>,
    /// Its message that the other end is receiving in pieces (`deliver_fragments`).
    pieces: Option<(DataKind, Vec<u8>)>,
}

struct Pair {
    agreement: Agreement,
    client: End,
    server: End,
    lend_input: bool,
    /// The most message bytes in flight at once, for the memory budget.
    most_in_flight: usize,
}

impl Pair {
    fn new(setup: u8, tuning: u8) -> Pair {
        let mut agreement = Agreement::from_bytes(setup, tuning);
        if tuning & 0x80 != 0 {
            agreement.client.threshold = 0;
            agreement.server.threshold = 0;
        }
        let mut config = Config::default();
        config.max_send_frame_size = SEND_FRAME_SIZES[usize::from((setup >> 4) & 3)];
        config.deliver_fragments = setup & 0x40 != 0;
        let end = |role| End {
            conn: agreement.connection(role, config.clone()),
            role,
            out: OutputReader::new(role, Some(agreement.compresses(role))),
            wire: Vec::new(),
            in_flight: VecDeque::new(),
            pieces: None,
        };
        let (client, server) = (end(Role::Client), end(Role::Server));
        Pair {
            agreement,
            client,
            server,
            lend_input: setup & 0x80 != 0,
            most_in_flight: 0,
        }
    }

    /// One message (format in the module docs): sent, checked on the wire, delivered unless
    /// held back.
    fn exchange(&mut self, tag: u8, delivery: u8, content: &[u8]) {
        let kind = if tag & 0x40 == 0 {
            DataKind::Text
        } else {
            DataKind::Binary
        };
        let len = LENGTHS[usize::from((tag >> 3) & 7)].unwrap_or(content.len() * 2);
        let data = message(kind, &cycled(content, len));
        let to_server = tag & 0x80 == 0;
        let from = if to_server {
            &mut self.client
        } else {
            &mut self.server
        };
        let compressed = send(&self.agreement, from, kind, &data, tag & 7, delivery >> 4);
        // The wire: the message, compressed when it should be.
        let output = take_output(&mut from.conn);
        from.out.read(&output);
        let (wire_kind, wire_data, wire_compressed) = from
            .out
            .messages
            .pop_front()
            .expect("the message is on the wire");
        assert!(from.out.messages.is_empty(), "more than one message");
        assert_eq!((wire_kind, &wire_data), (kind, &data), "the wire");
        assert_eq!(wire_compressed, compressed, "compressed or not");
        from.wire.extend_from_slice(&output);
        from.in_flight.push_back((kind, data));
        let in_flight: usize = [&self.client, &self.server]
            .iter()
            .flat_map(|end| end.in_flight.iter().map(|(_, m)| m.len()))
            .sum();
        self.most_in_flight = self.most_in_flight.max(in_flight);
        if delivery & 0x08 == 0 {
            let read = READ_SIZES[usize::from(delivery & 7)];
            if to_server {
                deliver(&mut self.client, &mut self.server, read, self.lend_input);
            } else {
                deliver(&mut self.server, &mut self.client, read, self.lend_input);
            }
        }
    }

    /// Deliver what is held back, then close: the client starts, the server answers.
    fn close(&mut self) {
        deliver(&mut self.client, &mut self.server, usize::MAX, false);
        deliver(&mut self.server, &mut self.client, usize::MAX, false);
        self.client
            .conn
            .send_close(gangway_proto::CloseCode::NORMAL, "done")
            .expect("the client closes");
        let close = take_output(&mut self.client.conn);
        self.server.conn.receive_data(&close, now());
        let event = self.server.conn.poll_event();
        assert!(
            matches!(event, Ok(Some(Event::Close(Some(_))))),
            "{event:?}"
        );
        let answer = take_output(&mut self.server.conn);
        self.client.conn.receive_data(&answer, now());
        let event = self.client.conn.poll_event();
        assert!(
            matches!(event, Ok(Some(Event::Close(Some(_))))),
            "{event:?}"
        );
        for end in [&self.client, &self.server] {
            assert_eq!(
                end.conn.state(),
                gangway_proto::State::Closed,
                "{:?}",
                end.role
            );
        }
    }
}

/// Send `data` from `end` as `how` says (module docs); `cuts` places the fragments. Returns
/// whether the message must go compressed.
fn send(
    agreement: &Agreement,
    end: &mut End,
    kind: DataKind,
    data: &[u8],
    how: u8,
    cuts: u8,
) -> bool {
    let (bits, takeover) = agreement.compresses(end.role);
    let threshold = agreement.deflate_config(end.role).threshold;
    let conn = &mut end.conn;
    let text = || std::str::from_utf8(data).expect("text messages are made valid UTF-8");
    let whole = bits >= 9 && data.len() >= threshold;
    match how {
        0..=2 => {
            let stateless = conn.stateless_compression(data.len());
            assert_eq!(
                stateless.is_some(),
                whole && !takeover,
                "stateless compression of {} bytes, window {bits}, takeover {takeover}",
                data.len()
            );
            let result = match (how, kind, stateless) {
                (2, DataKind::Text, Some(s)) => conn.send_compressed(&s.compress_text(text())),
                (2, DataKind::Binary, Some(s)) => conn.send_compressed(&s.compress_binary(data)),
                (1, DataKind::Text, _) => conn.send_text_shared(text().into()),
                (1, DataKind::Binary, _) => {
                    conn.send_binary_shared(bytes::Bytes::copy_from_slice(data))
                }
                (_, DataKind::Text, _) => conn.send_text(text()),
                (_, DataKind::Binary, _) => conn.send_binary(data),
            };
            result.expect("send");
            whole
        }
        _ => {
            // Cut at character boundaries for text (each fragment is checked on its own).
            let count = usize::from(how - 1);
            let mut bounds: Vec<usize> = (1..count)
                .map(|i| (i * 7919 + usize::from(cuts) * 131) % (data.len() + 1))
                .map(|mut at| {
                    while kind == DataKind::Text && !text().is_char_boundary(at) {
                        at -= 1;
                    }
                    at
                })
                .collect();
            bounds.sort_unstable();
            bounds.insert(0, 0);
            bounds.push(data.len());
            for (i, w) in bounds.windows(2).enumerate() {
                let fin = i + 2 == bounds.len();
                conn.send_fragment(kind, &data[w[0]..w[1]], fin)
                    .expect("send_fragment");
            }
            // RFC 7692 §6: the first fragment decides; gangway compresses a fragmented
            // message whenever it can, as its size is not known then.
            bits >= 9
        }
    }
}

/// Carry what `from` sent to `to`, in reads of `read` bytes, and check that every message it
/// sent arrives, in order, as sent.
fn deliver(from: &mut End, to: &mut End, read: usize, lend: bool) {
    let wire = std::mem::take(&mut from.wire);
    for piece in wire.chunks(read.max(1)) {
        if lend {
            to.conn.receive_buf(BytesMut::from(piece), now());
        } else {
            to.conn.receive_data(piece, now());
        }
        while let Some(event) = to
            .conn
            .poll_event()
            .unwrap_or_else(|e| panic!("{:?} refused what {:?} sent: {e}", to.role, from.role))
        {
            let (kind, data) = match event {
                Event::Text(text) => (DataKind::Text, text.as_bytes().to_vec()),
                Event::Binary(data) => (DataKind::Binary, data.to_vec()),
                Event::Fragment { kind, data, fin } => {
                    let (k, so_far) = from.pieces.get_or_insert_with(|| (kind, Vec::new()));
                    assert_eq!(*k, kind, "fragment kinds");
                    so_far.extend_from_slice(&data);
                    if !fin {
                        continue;
                    }
                    from.pieces.take().expect("just inserted")
                }
                other => panic!("unexpected {other:?}"),
            };
            let sent = from.in_flight.pop_front().expect("a message nobody sent");
            assert_eq!((kind, data), sent, "{:?} received", to.role);
        }
        // Nothing to answer: no pings, no close.
        assert!(to.conn.output().is_empty(), "{:?} answered", to.role);
    }
    assert!(
        from.in_flight.is_empty(),
        "not received: {:?}",
        from.in_flight.len()
    );
}
