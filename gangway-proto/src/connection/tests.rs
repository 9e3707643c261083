//! In-memory client↔server tests of [`Connection`]: two endpoints with seeded randomness, the
//! output of one fed to the other, no sockets. Raw frames stand in for a misbehaving peer.

use bytes::Bytes;

use super::*;
use crate::random::SeededRandom;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

// ---- Harness ----

fn client_with(config: Config) -> Connection {
    Connection::with_random(Role::Client, config, Box::new(SeededRandom::new(7)))
}

fn server_with(config: Config) -> Connection {
    Connection::with_random(Role::Server, config, Box::new(SeededRandom::new(11)))
}

fn client() -> Connection {
    client_with(Config::default())
}

fn server() -> Connection {
    server_with(Config::default())
}

fn endpoint_with(role: Role, config: Config) -> Connection {
    match role {
        Role::Client => client_with(config),
        Role::Server => server_with(config),
    }
}

fn endpoint(role: Role) -> Connection {
    endpoint_with(role, Config::default())
}

/// Everything `conn` wants to write, marked as written.
fn take_output(conn: &mut Connection) -> Vec<u8> {
    let bytes = conn.output().to_vec();
    conn.consume_output(bytes.len());
    bytes
}

/// Move everything `from` wants to write into `to`, in one piece.
fn pump(from: &mut Connection, to: &mut Connection) -> Result<(), ProtocolError> {
    let bytes = take_output(from);
    to.receive_data(&bytes)
}

/// The start of a control frame split across reads, as the connection keeps it.
fn stored_control(conn: &Connection) -> Option<&[u8; MAX_CONTROL_PAYLOAD]> {
    conn.spill
        .as_deref()
        .and_then(|spill| spill.control.as_deref())
}

fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

/// A frame as seen on the wire, unmasked.
#[derive(Debug)]
struct WireFrame {
    header: FrameHeader,
    payload: Vec<u8>,
}

/// Decode every frame in `bytes`, which must hold whole frames only.
fn frames(mut bytes: &[u8]) -> Vec<WireFrame> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (header, len) = FrameHeader::decode(bytes).unwrap().expect("whole header");
        let end = len + usize::try_from(header.payload_len).unwrap();
        let mut payload = bytes[len..end].to_vec();
        if let Some(key) = header.mask {
            crate::frame::mask::apply_mask_scalar(&mut payload, key, 0);
        }
        out.push(WireFrame { header, payload });
        bytes = &bytes[end..];
    }
    out
}

/// The close frame in `bytes` (which must be the last frame): `Some(None)` for an empty one.
fn close_in(bytes: &[u8]) -> Option<Option<CloseFrame>> {
    let all = frames(bytes);
    let position = all.iter().position(|f| f.header.opcode == OpCode::Close)?;
    assert_eq!(position, all.len() - 1, "frames after the close frame");
    Some(CloseFrame::parse(&all[position].payload).unwrap())
}

/// The status code of the close frame waiting in `conn`'s output.
fn queued_close_code(conn: &Connection) -> Option<u16> {
    close_in(conn.output())?.map(|c| c.code.0)
}

/// A frame as a peer might send it: any first byte (FIN, RSV, opcode), minimal length form.
fn raw(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![first];
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let start = out.len();
    if let Some(key) = mask {
        out.extend_from_slice(&key);
        out.extend_from_slice(payload);
        crate::frame::mask::apply_mask_scalar(&mut out[start + 4..], key, 0);
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A frame a well-behaved peer of `receiver` would send: masked towards a server only.
fn to(receiver: Role, first: u8, payload: &[u8]) -> Vec<u8> {
    raw(first, payload, (receiver == Role::Server).then_some(KEY))
}

/// A close frame payload.
fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    [&code.to_be_bytes()[..], reason].concat()
}

/// Feed `bytes` to a fresh endpoint and expect it to fail with `err` and queue `code` (once the
/// events before the violation are handed out).
fn assert_fails(role: Role, bytes: &[u8], err: ProtocolError, code: u16) {
    let mut conn = endpoint(role);
    assert_eq!(conn.receive_data(bytes), Err(err), "{role:?}");
    let _ = events(&mut conn);
    assert_eq!(queued_close_code(&conn), Some(code), "{role:?}");
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.should_close_transport());
}

const ROLES: [Role; 2] = [Role::Client, Role::Server];

// ---- Messages both ways ----

#[test]
fn echo_of_text_and_binary_at_length_boundaries() {
    for size in [0usize, 125, 126, 65535, 65536, 1 << 20] {
        let (mut c, mut s) = (client(), server());
        let text: String = (0..size)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let binary: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();

        c.send_text(&text).unwrap();
        c.send_binary(&binary).unwrap();
        let wire = frames(c.output());
        assert_eq!(wire.len(), 2);
        for (frame, payload) in wire.iter().zip([text.as_bytes(), &binary]) {
            assert!(frame.header.fin && frame.header.mask.is_some(), "{size}");
            assert_eq!(frame.header.payload_len, size as u64);
            assert!(frame.payload == payload, "{size}");
        }
        pump(&mut c, &mut s).unwrap();
        let received = events(&mut s);
        assert!(
            received
                == [
                    Event::Text(text.clone().into()),
                    Event::Binary(binary.clone().into())
                ],
            "server side, {size} bytes"
        );

        for event in received {
            match event {
                Event::Text(t) => s.send_text(&t).unwrap(),
                Event::Binary(b) => s.send_binary(&b).unwrap(),
                other => panic!("{other:?}"),
            }
        }
        assert!(frames(s.output()).iter().all(|f| f.header.mask.is_none()));
        pump(&mut s, &mut c).unwrap();
        assert!(
            events(&mut c) == [Event::Text(text.into()), Event::Binary(binary.into())],
            "client side, {size} bytes"
        );
    }
}

/// A stream exercising every frame kind, as `receiver`'s peer would send it.
fn mixed_stream(receiver: Role) -> (Vec<u8>, Vec<Event>) {
    let big: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
    let stream = [
        to(receiver, 0x81, b"Hello"),
        to(receiver, 0x01, "H€".as_bytes()),
        to(receiver, 0x89, b"ping"),
        to(receiver, 0x00, &[]),
        to(receiver, 0x80, "l😀o".as_bytes()),
        to(receiver, 0x82, &big),
        to(receiver, 0x82, &[]),
        to(receiver, 0x8A, b"pong"),
        to(receiver, 0x88, &close_payload(1000, b"bye")),
    ]
    .concat();
    let expected = vec![
        Event::Text("Hello".into()),
        Event::Ping(Bytes::from_static(b"ping")),
        Event::Text("H€l😀o".into()),
        Event::Binary(big.into()),
        Event::Binary(Bytes::new()),
        Event::Pong(Bytes::from_static(b"pong")),
        Event::Close(Some(CloseFrame {
            code: CloseCode::NORMAL,
            reason: "bye".into(),
        })),
    ];
    (stream, expected)
}

fn feed_in_pieces(role: Role, stream: &[u8], cuts: &[usize]) -> (Vec<Event>, Vec<u8>) {
    let copied = feed_in_pieces_by(role, stream, cuts, Feed::Copied);
    let lent = feed_in_pieces_by(role, stream, cuts, Feed::Lent);
    assert_eq!(
        copied, lent,
        "receive_data and receive_buf differ at {cuts:?}"
    );
    copied
}

/// How input is fed: borrowed ([`Connection::receive_data`]) or handed over
/// ([`Connection::receive_buf`]).
#[derive(Clone, Copy, Debug)]
enum Feed {
    Copied,
    Lent,
}

fn feed(conn: &mut Connection, data: &[u8], how: Feed) -> Result<(), ProtocolError> {
    match how {
        Feed::Copied => conn.receive_data(data),
        Feed::Lent => conn.receive_buf(bytes::BytesMut::from(data)),
    }
}

fn feed_in_pieces_by(
    role: Role,
    stream: &[u8],
    cuts: &[usize],
    how: Feed,
) -> (Vec<Event>, Vec<u8>) {
    let mut conn = endpoint(role);
    let mut start = 0;
    for &end in cuts.iter().chain([stream.len()].iter()) {
        assert_eq!(
            feed(&mut conn, &stream[start..end], how),
            Ok(()),
            "{how:?} {cuts:?}"
        );
        start = end;
    }
    (events(&mut conn), take_output(&mut conn))
}

#[test]
fn lent_message_is_a_slice_of_the_input_unmasked_in_place() {
    let payload: Vec<u8> = (0..300u16).map(|i| (i * 7) as u8).collect();
    let stream = [
        to(Role::Server, 0x82, &payload),
        to(Role::Server, 0x81, "text too, é".as_bytes()),
        to(Role::Server, 0x82, b"second"),
    ]
    .concat();
    let input = bytes::BytesMut::from(&stream[..]);
    let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
    let mut s = server();
    s.receive_buf(input).unwrap();
    let got = events(&mut s);
    assert_eq!(
        got,
        [
            Event::Binary(payload.into()),
            Event::Text("text too, é".into()),
            Event::Binary(Bytes::from_static(b"second")),
        ]
    );
    for event in &got {
        let at = match event {
            Event::Binary(data) => data.as_ptr(),
            Event::Text(text) => text.as_ptr(),
            other => panic!("unexpected {other:?}"),
        };
        assert!(
            range.contains(&(at as usize)),
            "a message that arrived whole is not copied: {event:?}"
        );
    }

    // A message that arrives in two reads is gathered, as with `receive_data`: only its last
    // piece is in the second buffer.
    let frame = to(Role::Server, 0x82, b"split payload");
    let mut s = server();
    s.receive_buf(bytes::BytesMut::from(&frame[..9])).unwrap();
    assert_eq!(s.poll_event(), None);
    s.receive_buf(bytes::BytesMut::from(&frame[9..])).unwrap();
    assert_eq!(
        events(&mut s),
        [Event::Binary(Bytes::from_static(b"split payload"))]
    );
}

/// Feed `stream` to a fresh endpoint of `role` with `config` in one call, copied and lent:
/// both give the same result, events and output, which are returned.
fn feed_once_both_ways(
    role: Role,
    config: &Config,
    stream: &[u8],
) -> (Result<(), ProtocolError>, Vec<Event>, Vec<u8>) {
    let mut results = Vec::new();
    for how in [Feed::Copied, Feed::Lent] {
        let mut conn = endpoint_with(role, config.clone());
        let result = feed(&mut conn, stream, how);
        results.push((result, events(&mut conn), take_output(&mut conn)));
    }
    let lent = results.pop().unwrap();
    let copied = results.pop().unwrap();
    assert_eq!(
        copied, lent,
        "{role:?}: receive_data and receive_buf differ"
    );
    copied
}

#[test]
fn whole_messages_in_one_read_take_the_short_path_with_the_same_results() {
    // Lengths on both sides of each header form (7-bit, 16-bit, 64-bit), more messages than one
    // batch of the short path, and frames it leaves to the general path (a ping, a fragmented
    // message, a 64-bit length) in between.
    let lengths = [0usize, 1, 31, 32, 125, 126, 127, 1000, 65535, 65536];
    for role in ROLES {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for round in 0..5 {
            for &len in &lengths {
                let payload: Vec<u8> = (0..len).map(|i| (i * 31 + round) as u8).collect();
                stream.extend(to(role, 0x82, &payload));
                expected.push(Event::Binary(payload.into()));
                let text = "é".repeat(len / 2);
                stream.extend(to(role, 0x81, text.as_bytes()));
                expected.push(Event::Text(text.into()));
            }
            stream.extend(to(role, 0x89, b"ping"));
            expected.push(Event::Ping(Bytes::from_static(b"ping")));
            stream.extend(to(role, 0x02, b"frag"));
            stream.extend(to(role, 0x80, b"mented"));
            expected.push(Event::Binary(Bytes::from_static(b"fragmented")));
        }
        let (result, got, output) = feed_once_both_ways(role, &Config::default(), &stream);
        assert_eq!(result, Ok(()));
        assert!(got == expected, "{role:?}: events differ");
        // The pongs, and nothing else.
        let answers = frames(&output);
        assert_eq!(answers.len(), 5);
        assert!(answers.iter().all(|f| f.header.opcode == OpCode::Pong));

        // Every message that arrived whole, in one frame, is a slice of the input.
        let input = bytes::BytesMut::from(&stream[..]);
        let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
        let mut conn = endpoint(role);
        conn.receive_buf(input).unwrap();
        let lent = events(&mut conn)
            .iter()
            .filter(|e| match e {
                Event::Binary(data) => {
                    !data.is_empty() && range.contains(&(data.as_ptr() as usize))
                }
                Event::Text(text) => !text.is_empty() && range.contains(&(text.as_ptr() as usize)),
                _ => false,
            })
            .count();
        // 5 rounds of 9 non-empty binary and 8 non-empty text messages, all but the
        // reassembled one (empty ones own no bytes).
        assert_eq!(lent, 5 * (9 + 8), "{role:?}");
    }
}

#[test]
fn the_short_path_checks_what_the_general_path_checks() {
    let small = Config {
        max_frame_size: 100,
        max_message_size: 200,
        ..Config::default()
    };
    let fragments = Config {
        deliver_fragments: true,
        ..Config::default()
    };
    let default = Config::default();
    let small_frames_only = Config {
        max_frame_size: 1000,
        ..small.clone()
    };
    let good = to(Role::Server, 0x82, b"before");
    // (receiver, its config, the bad frames after a good one, what feeding them gives)
    type Case<'a> = (Role, &'a Config, Vec<u8>, Result<(), ProtocolError>);
    let cases: Vec<Case> = vec![
        // At the frame limit, then past it.
        (
            Role::Server,
            &small,
            to(Role::Server, 0x82, &[7; 100]),
            Ok(()),
        ),
        (
            Role::Server,
            &small,
            to(Role::Server, 0x82, &[7; 101]),
            Err(ProtocolError::FrameTooLarge),
        ),
        // A message over the limit in one frame, with a larger frame limit.
        (
            Role::Server,
            &small_frames_only,
            to(Role::Server, 0x81, &[b'a'; 201]),
            Err(ProtocolError::MessageTooLarge),
        ),
        // A new message while a fragmented one is in progress.
        (
            Role::Server,
            &default,
            [to(Role::Server, 0x01, b"a"), to(Role::Server, 0x82, b"b")].concat(),
            Err(ProtocolError::ExpectedContinuation),
        ),
        // Masking the wrong way for the role.
        (
            Role::Server,
            &default,
            raw(0x82, b"unmasked", None),
            Err(ProtocolError::UnmaskedFrame),
        ),
        (
            Role::Client,
            &default,
            raw(0x82, b"masked", Some(KEY)),
            Err(ProtocolError::MaskedFrame),
        ),
        // Invalid UTF-8 in the 40th message of one read (past the first batch).
        (
            Role::Server,
            &default,
            [
                to(Role::Server, 0x81, b"fine").repeat(39),
                to(Role::Server, 0x81, &[b'o', 0xc3]),
                to(Role::Server, 0x81, b"never seen"),
            ]
            .concat(),
            Err(ProtocolError::InvalidUtf8),
        ),
        // Delivering fragments: whole messages still come as one fin piece each.
        (
            Role::Server,
            &fragments,
            to(Role::Server, 0x81, b"piece"),
            Ok(()),
        ),
    ];
    for (role, config, bad, expected) in cases {
        let stream = [
            if role == Role::Server {
                good.clone()
            } else {
                raw(0x82, b"before", None)
            },
            bad,
        ]
        .concat();
        let (result, got, output) = feed_once_both_ways(role, config, &stream);
        assert_eq!(result, expected, "{role:?} {config:?}");
        let first = if config.deliver_fragments {
            Event::Fragment {
                kind: DataKind::Binary,
                data: Bytes::from_static(b"before"),
                fin: true,
            }
        } else {
            Event::Binary(Bytes::from_static(b"before"))
        };
        assert_eq!(got.first(), Some(&first), "{role:?} {expected:?}");
        match expected {
            Ok(()) => assert_eq!(got.len(), 2, "{role:?}"),
            Err(err) => {
                assert_eq!(close_in(&output).unwrap().unwrap().code, err.close_code());
                if err == ProtocolError::InvalidUtf8 {
                    // The 39 good messages came before the failure; nothing after it.
                    assert_eq!(got.len(), 40);
                }
            }
        }
    }
}

#[test]
fn a_message_read_in_pieces_into_one_buffer_is_joined_without_a_copy() {
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
    let stream = [
        to(Role::Server, 0x82, &payload),
        to(Role::Server, 0x81, "next é".as_bytes()),
        to(Role::Server, 0x82, &payload[..300]),
    ]
    .concat();
    let expected = [
        Event::Binary(payload.clone().into()),
        Event::Text("next é".into()),
        Event::Binary(Bytes::copy_from_slice(&payload[..300])),
    ];
    // Cuts inside the first header, its payload, and the second frame's header.
    for cuts in [
        &[1, 2, 9, 5000, 70_013][..],
        &[13, 14, 40_000, 70_015],
        &[70_000],
    ] {
        // Consecutive pieces of one buffer, as reads into the same buffer are.
        let mut buf = bytes::BytesMut::from(&stream[..]);
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let mut s = server();
        let mut at = 0;
        for &cut in cuts {
            s.receive_buf(buf.split_to(cut - at)).unwrap();
            at = cut;
        }
        s.receive_buf(buf).unwrap();
        let got = events(&mut s);
        assert_eq!(got, expected, "{cuts:?}");
        let Event::Binary(first) = &got[0] else {
            unreachable!()
        };
        assert!(
            range.contains(&(first.as_ptr() as usize)),
            "{cuts:?}: the pieces of the first message were joined, not copied"
        );
        // A piece fed by `receive_data` after a partial `receive_buf` goes on from it.
        let mut s = server();
        s.receive_buf(bytes::BytesMut::from(&stream[..cuts[0]]))
            .unwrap();
        s.receive_data(&stream[cuts[0]..]).unwrap();
        assert_eq!(events(&mut s), expected, "{cuts:?}, then copied");
    }
}

#[test]
fn lent_input_fails_like_copied_input() {
    // An unmasked frame to a server, invalid UTF-8, a reserved bit: the same error and the same
    // close frame either way, and the events before the violation are still delivered.
    let good = to(Role::Server, 0x82, b"before");
    for bad in [
        raw(0x82, b"unmasked", None),
        to(Role::Server, 0x81, &[0xff, 0xfe]),
        to(Role::Server, 0xc2, b"rsv1"),
    ] {
        let stream = [good.clone(), bad].concat();
        let mut results = Vec::new();
        for how in [Feed::Copied, Feed::Lent] {
            let mut s = server();
            let err = feed(&mut s, &stream, how);
            assert!(err.is_err(), "{how:?}");
            // Input after a failure is ignored.
            assert_eq!(feed(&mut s, &good, how), Ok(()));
            results.push((err, events(&mut s), take_output(&mut s)));
        }
        assert_eq!(results[0], results[1]);
        assert_eq!(
            results[0].1[0],
            Event::Binary(Bytes::from_static(b"before"))
        );
    }
}

#[test]
fn every_byte_split_of_small_frames_gives_the_same_events_and_output() {
    for role in ROLES {
        let (stream, expected) = mixed_stream(role);
        let (whole_events, whole_output) = feed_in_pieces(role, &stream, &[]);
        assert_eq!(whole_events, expected);
        // The pong answers the ping, then the close is echoed with the same code.
        let answers = frames(&whole_output);
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0].header.opcode, OpCode::Pong);
        assert_eq!(answers[0].payload, b"ping");
        assert_eq!(close_in(&whole_output).unwrap().unwrap().code.0, 1000);

        for cut in 0..=stream.len() {
            let (e, o) = feed_in_pieces(role, &stream, &[cut]);
            assert_eq!(e, expected, "{role:?} cut at {cut}");
            assert_eq!(o, whole_output, "{role:?} cut at {cut}");
        }
        let bytewise: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(
            feed_in_pieces(role, &stream, &bytewise),
            (expected, whole_output)
        );
    }
}

/// The largest control frames (§5.5: 125 bytes of payload) towards `receiver`, and the events
/// they give.
fn largest_control_frames(receiver: Role) -> (Vec<u8>, Vec<Event>) {
    let ping: Vec<u8> = (0..125u8).map(|i| i.wrapping_mul(37)).collect();
    let reason = "r€".repeat(30) + "end";
    assert_eq!(reason.len(), 123);
    let stream = [
        to(receiver, 0x89, &ping),
        to(receiver, 0x88, &close_payload(1001, reason.as_bytes())),
    ]
    .concat();
    let expected = vec![
        Event::Ping(Bytes::from(ping)),
        Event::Close(Some(CloseFrame {
            code: CloseCode::GOING_AWAY,
            reason,
        })),
    ];
    (stream, expected)
}

#[test]
fn largest_control_frames_split_anywhere_give_the_same_events_and_output() {
    for role in ROLES {
        let (stream, expected) = largest_control_frames(role);
        let mut conn = endpoint(role);
        conn.receive_data(&stream).unwrap();
        // Whole in one read: processed from the input, nothing stored.
        assert!(stored_control(&conn).is_none());
        // The close is answered as its event is handed out.
        assert_eq!(events(&mut conn), expected);
        let whole_output = take_output(&mut conn);
        let answers = frames(&whole_output);
        assert_eq!(answers.len(), 2, "the pong, then the close");
        assert_eq!(answers[0].header.opcode, OpCode::Pong);
        assert_eq!(Event::Ping(answers[0].payload.clone().into()), expected[0]);

        // Every split of the ping into up to three pieces, every split of the whole stream in
        // two: the pieces are gathered, and the buffer for them is freed when the frame ends.
        let ping_len = 2 + usize::from(role == Role::Server) * 4 + 125;
        let mut splits: Vec<Vec<usize>> = (0..=stream.len()).map(|cut| vec![cut]).collect();
        for a in 1..ping_len {
            for b in a..ping_len {
                splits.push(vec![a, b]);
            }
        }
        for cuts in splits {
            let mut conn = endpoint(role);
            let mut start = 0;
            for &end in cuts.iter().chain([stream.len()].iter()) {
                assert_eq!(conn.receive_data(&stream[start..end]), Ok(()), "{cuts:?}");
                start = end;
            }
            assert!(stored_control(&conn).is_none(), "{role:?} {cuts:?}");
            assert_eq!(events(&mut conn), expected, "{role:?} {cuts:?}");
            assert_eq!(take_output(&mut conn), whole_output, "{role:?} {cuts:?}");
        }
    }
}

#[test]
fn split_control_frame_keeps_its_first_part_until_the_rest_arrives() {
    let mut s = server();
    let ping = to(Role::Server, 0x89, b"keep me");
    // Header and two payload bytes: the frame is mid-payload, its start kept aside.
    s.receive_data(&ping[..8]).unwrap();
    assert_eq!(s.control_len(), 2);
    assert_eq!(stored_control(&s).map(|c| &c[..2]), Some(&b"ke"[..]));
    assert_eq!(s.poll_event(), None);
    s.receive_data(&ping[8..]).unwrap();
    assert!(
        stored_control(&s).is_none(),
        "freed once the frame is whole"
    );
    assert_eq!(s.control_len(), 0);
    assert_eq!(
        events(&mut s),
        [Event::Ping(Bytes::from_static(b"keep me"))]
    );

    // A failure in the middle of a split control frame frees it too.
    let mut s = server();
    s.receive_data(&ping[..8]).unwrap();
    assert!(stored_control(&s).is_some());
    assert_eq!(s.receive_eof(), Err(ProtocolError::UnexpectedEof));
    assert!(stored_control(&s).is_none());
}

#[test]
fn random_splits_into_many_pieces_give_the_same_events() {
    let mut rng = SeededRandom::new(99);
    let mut byte = [0u8; 1];
    for role in ROLES {
        let (stream, expected) = mixed_stream(role);
        for _ in 0..200 {
            let cuts: Vec<usize> = (1..stream.len())
                .filter(|_| {
                    rng.fill(&mut byte);
                    byte[0] < 40
                })
                .collect();
            assert_eq!(feed_in_pieces(role, &stream, &cuts).0, expected, "{cuts:?}");
        }
    }
}

#[test]
fn rfc_6455_section_5_7_frames_decode_to_messages() {
    let mut c = client();
    c.receive_data(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])
        .unwrap();
    c.receive_data(&[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f])
        .unwrap();
    c.receive_data(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])
        .unwrap();
    assert_eq!(
        events(&mut c),
        [
            Event::Text("Hello".into()),
            Event::Text("Hello".into()),
            Event::Ping(Bytes::from_static(b"Hello")),
        ]
    );
    // The pong is masked, like the §5.7 example, with a key from the random source.
    let pong = frames(c.output());
    assert_eq!(pong.len(), 1);
    assert_eq!(pong[0].header.opcode, OpCode::Pong);
    assert!(pong[0].header.mask.is_some());
    assert_eq!(pong[0].payload, b"Hello");

    let mut s = server();
    s.receive_data(&[
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ])
    .unwrap();
    assert_eq!(events(&mut s), [Event::Text("Hello".into())]);
}

// ---- Fragmentation ----

#[test]
fn fragmented_binary_with_empty_fragments_is_reassembled() {
    for role in ROLES {
        let mut conn = endpoint(role);
        let stream = [
            to(role, 0x02, &[]),
            to(role, 0x00, &[1, 2]),
            to(role, 0x00, &[]),
            to(role, 0x80, &[3]),
        ]
        .concat();
        conn.receive_data(&stream).unwrap();
        assert_eq!(events(&mut conn), [Event::Binary(vec![1, 2, 3].into())]);
    }
}

#[test]
fn ping_inside_a_fragmented_message_is_answered_at_once() {
    let mut s = server();
    s.receive_data(&to(Role::Server, 0x01, b"Hel")).unwrap();
    s.receive_data(&to(Role::Server, 0x89, b"p")).unwrap();
    // Answered before the message ends.
    let pong = frames(s.output());
    assert_eq!(pong.len(), 1);
    assert_eq!(
        (pong[0].header.opcode, &pong[0].payload[..]),
        (OpCode::Pong, &b"p"[..])
    );
    s.receive_data(&to(Role::Server, 0x80, b"lo")).unwrap();
    assert_eq!(
        events(&mut s),
        [
            Event::Ping(Bytes::from_static(b"p")),
            Event::Text("Hello".into())
        ]
    );
}

#[test]
fn continuation_without_a_message_fails_with_1002() {
    for role in ROLES {
        assert_fails(
            role,
            &to(role, 0x80, b"x"),
            ProtocolError::UnexpectedContinuation,
            1002,
        );
        // Also right after a message that was complete.
        let stream = [to(role, 0x81, b"a"), to(role, 0x00, b"b")].concat();
        assert_fails(role, &stream, ProtocolError::UnexpectedContinuation, 1002);
    }
}

#[test]
fn new_message_inside_a_fragmented_message_fails_with_1002() {
    for role in ROLES {
        for second in [0x81, 0x01, 0x82, 0x02] {
            let stream = [to(role, 0x01, b"a"), to(role, second, b"b")].concat();
            assert_fails(role, &stream, ProtocolError::ExpectedContinuation, 1002);
        }
    }
}

#[test]
fn close_inside_a_fragmented_message_drops_the_partial_message() {
    let mut s = server();
    let stream = [
        to(Role::Server, 0x01, b"Hel"),
        to(Role::Server, 0x88, &close_payload(1001, b"")),
        to(Role::Server, 0x80, b"lo"),
    ]
    .concat();
    s.receive_data(&stream).unwrap();
    assert_eq!(
        events(&mut s),
        [Event::Close(Some(CloseFrame {
            code: CloseCode::GOING_AWAY,
            reason: String::new()
        }))]
    );
    assert_eq!(s.message_capacity(), 0);
}

// ---- UTF-8 ----

#[test]
fn invalid_utf8_fails_mid_frame_before_the_rest_arrives() {
    for role in ROLES {
        let mut payload = b"hello".to_vec();
        payload.extend_from_slice(&[0xED, 0xA0, 0x80]); // a surrogate
        payload.extend_from_slice(&[b'x'; 92]);
        let frame = to(role, 0x81, &payload);
        let header_len = frame.len() - payload.len();
        for how in [Feed::Copied, Feed::Lent] {
            let mut conn = endpoint(role);
            // Lent pieces are consecutive slices of one buffer, as reads into one buffer are.
            let mut pool = bytes::BytesMut::from(&frame[..]);
            let mut feed_next = |conn: &mut Connection, len: usize| {
                let piece = pool.split_to(len);
                match how {
                    Feed::Copied => conn.receive_data(&piece),
                    Feed::Lent => conn.receive_buf(piece),
                }
            };
            // "hello" and the lead byte 0xED can still be the start of valid text.
            assert_eq!(feed_next(&mut conn, header_len + 6), Ok(()));
            assert!(conn.output().is_empty());
            // 0xA0 after 0xED can not: fail now, with most of the frame still to come.
            assert_eq!(
                feed_next(&mut conn, 1),
                Err(ProtocolError::InvalidUtf8),
                "{how:?}"
            );
            assert_eq!(queued_close_code(&conn), Some(1007));
            assert_eq!(feed_next(&mut conn, frame.len() - header_len - 7), Ok(()));
            assert!(events(&mut conn).is_empty());
        }
    }
}

#[test]
fn invalid_utf8_across_fragments_fails_on_the_first_bad_byte() {
    let mut s = server();
    s.receive_data(&to(Role::Server, 0x01, b"a\xF0\x9F"))
        .unwrap();
    s.receive_data(&to(Role::Server, 0x00, b"\x98")).unwrap();
    let last = to(Role::Server, 0x80, b"Ab");
    // The header alone is fine; its first payload byte ends the 4-byte sequence too early.
    s.receive_data(&last[..6]).unwrap();
    assert_eq!(s.receive_data(&last[6..7]), Err(ProtocolError::InvalidUtf8));
    assert_eq!(queued_close_code(&s), Some(1007));
}

#[test]
fn text_ending_inside_a_code_point_fails_with_1007() {
    for role in ROLES {
        assert_fails(
            role,
            &to(role, 0x81, b"a\xE2\x82"),
            ProtocolError::InvalidUtf8,
            1007,
        );
    }
}

#[test]
fn four_byte_character_split_across_fragments_is_valid() {
    let mut s = server();
    let bytes = "😀".as_bytes();
    let stream = [
        to(Role::Server, 0x01, &bytes[..1]),
        to(Role::Server, 0x00, &bytes[1..3]),
        to(Role::Server, 0x80, &bytes[3..]),
    ]
    .concat();
    s.receive_data(&stream).unwrap();
    assert_eq!(events(&mut s), [Event::Text("😀".into())]);
}

#[test]
fn binary_messages_are_not_checked_for_utf8() {
    let mut s = server();
    s.receive_data(&to(Role::Server, 0x82, &[0xFF, 0xED, 0xA0]))
        .unwrap();
    assert_eq!(
        events(&mut s),
        [Event::Binary(Bytes::from_static(&[0xFF, 0xED, 0xA0]))]
    );
}

// ---- Limits ----

/// A masked binary header announcing `len` bytes, with no payload.
fn masked_header(first: u8, len: u64) -> Vec<u8> {
    let mut header = vec![first, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&KEY);
    header
}

#[test]
fn header_announcing_2_pow_62_bytes_fails_with_1009_without_allocating() {
    let mut s = server();
    assert_eq!(
        s.receive_data(&masked_header(0x82, 1 << 62)),
        Err(ProtocolError::FrameTooLarge)
    );
    assert_eq!(queued_close_code(&s), Some(1009));
    assert_eq!(s.message_capacity(), 0);

    // With no frame limit, the message limit catches it just the same.
    let config = Config {
        max_frame_size: usize::MAX,
        ..Config::default()
    };
    let mut s = server_with(config);
    assert_eq!(
        s.receive_data(&masked_header(0x81, 1 << 62)),
        Err(ProtocolError::MessageTooLarge)
    );
    assert_eq!(queued_close_code(&s), Some(1009));
    assert_eq!(s.message_capacity(), 0);
}

#[test]
fn sixty_four_bit_length_with_top_bit_fails_with_1002() {
    assert_fails(
        Role::Server,
        &masked_header(0x82, 1 << 63),
        ProtocolError::InvalidLength,
        1002,
    );
}

#[test]
fn message_buffer_grows_only_as_bytes_arrive() {
    let mut s = server();
    let mut stream = masked_header(0x82, 10 << 20);
    stream.extend_from_slice(&[0u8; 1000]);
    s.receive_data(&stream).unwrap();
    assert!(s.message_capacity() < 4096, "{}", s.message_capacity());
}

#[test]
fn single_frame_message_buffer_ends_at_its_exact_size() {
    let mut s = server();
    let payload = vec![5u8; 100_000];
    let frame = to(Role::Server, 0x82, &payload);
    for piece in frame.chunks(1000) {
        s.receive_data(piece).unwrap();
    }
    assert_eq!(events(&mut s), [Event::Binary(payload.into())]);
}

#[test]
fn message_growing_past_the_limit_fails_at_the_header_that_crosses_it() {
    let config = Config {
        max_message_size: 1000,
        ..Config::default()
    };
    for role in ROLES {
        // 600 then 400 ends exactly at the limit: fine.
        let mut conn = endpoint_with(role, config.clone());
        let fits = [to(role, 0x02, &[0; 600]), to(role, 0x80, &[0; 400])].concat();
        conn.receive_data(&fits).unwrap();
        assert_eq!(events(&mut conn), [Event::Binary(vec![0; 1000].into())]);

        // 401 more crosses it: refused from the header, before its payload is here.
        let mut conn = endpoint_with(role, config.clone());
        conn.receive_data(&to(role, 0x02, &[0; 600])).unwrap();
        let next = to(role, 0x80, &[0; 401]);
        let header_len = next.len() - 401;
        assert_eq!(
            conn.receive_data(&next[..header_len]),
            Err(ProtocolError::MessageTooLarge)
        );
        assert_eq!(queued_close_code(&conn), Some(1009));
        assert_eq!(conn.message_capacity(), 0);
    }
}

#[test]
fn frame_over_max_frame_size_fails_with_1009() {
    let config = Config {
        max_frame_size: 100,
        ..Config::default()
    };
    let mut s = server_with(config.clone());
    s.receive_data(&to(Role::Server, 0x82, &[1; 100])).unwrap();
    assert_eq!(events(&mut s).len(), 1);
    let mut s = server_with(config);
    assert_eq!(
        s.receive_data(&to(Role::Server, 0x82, &[1; 101])),
        Err(ProtocolError::FrameTooLarge)
    );
    assert_eq!(queued_close_code(&s), Some(1009));
}

// ---- Masking, reserved bits and opcodes, control frame rules ----

#[test]
fn server_receives_unmasked_frame() {
    assert_fails(
        Role::Server,
        &raw(0x81, b"hi", None),
        ProtocolError::UnmaskedFrame,
        1002,
    );
}

#[test]
fn client_receives_masked_frame() {
    assert_fails(
        Role::Client,
        &raw(0x81, b"hi", Some(KEY)),
        ProtocolError::MaskedFrame,
        1002,
    );
}

#[test]
fn client_masks_every_frame_with_a_fresh_key_and_server_never_masks() {
    for role in ROLES {
        let mut conn = endpoint(role);
        conn.send_text("text").unwrap();
        conn.send_binary(b"binary").unwrap();
        conn.send_ping(b"ping").unwrap();
        conn.send_pong(b"pong").unwrap();
        conn.send_fragment(DataKind::Text, b"frag", false).unwrap();
        conn.send_fragment(DataKind::Text, b"ment", true).unwrap();
        conn.send_close(CloseCode::NORMAL, "done").unwrap();
        let wire = frames(conn.output());
        assert_eq!(wire.len(), 7);
        let keys: Vec<Option<[u8; 4]>> = wire.iter().map(|f| f.header.mask).collect();
        match role {
            Role::Client => {
                assert!(keys.iter().all(Option::is_some));
                let mut distinct = keys.clone();
                distinct.sort();
                distinct.dedup();
                assert_eq!(distinct.len(), keys.len(), "keys repeat: {keys:?}");
            }
            Role::Server => assert!(keys.iter().all(Option::is_none)),
        }
        assert!(wire.iter().all(|f| f.header.rsv == 0));
        let payloads: Vec<&[u8]> = wire.iter().map(|f| &f.payload[..]).collect();
        assert_eq!(
            payloads[..6],
            [&b"text"[..], b"binary", b"ping", b"pong", b"frag", b"ment"]
        );
    }
}

#[test]
fn reserved_bits_without_an_extension_fail_with_1002() {
    for role in ROLES {
        for rsv in [0x40, 0x20, 0x10, 0x70] {
            for opcode in [0x1, 0x2, 0x9] {
                assert_fails(
                    role,
                    &to(role, 0x80 | rsv | opcode, b"x"),
                    ProtocolError::ReservedBits,
                    1002,
                );
            }
        }
    }
}

#[test]
fn reserved_opcodes_fail_with_1002() {
    for role in ROLES {
        for opcode in (3u8..=7).chain(11..=15) {
            assert_fails(
                role,
                &to(role, 0x80 | opcode, b"x"),
                ProtocolError::ReservedOpcode(opcode),
                1002,
            );
            // Even when it is the first byte of a read.
            let mut conn = endpoint(role);
            assert_eq!(
                conn.receive_data(&[0x80 | opcode]),
                Err(ProtocolError::ReservedOpcode(opcode))
            );
        }
    }
}

#[test]
fn fragmented_control_frames_fail_with_1002() {
    for role in ROLES {
        for opcode in [0x8, 0x9, 0xA] {
            assert_fails(
                role,
                &to(role, opcode, b""),
                ProtocolError::FragmentedControlFrame,
                1002,
            );
        }
    }
}

#[test]
fn control_frames_over_125_bytes_fail_with_1002() {
    for role in ROLES {
        for opcode in [0x88, 0x89, 0x8A] {
            assert_fails(
                role,
                &to(role, opcode, &[b'a'; 126]),
                ProtocolError::ControlFrameTooLong,
                1002,
            );
        }
        // 125 is the largest allowed, and the pong carries all of it back.
        let mut conn = endpoint(role);
        conn.receive_data(&to(role, 0x89, &[b'z'; 125])).unwrap();
        assert_eq!(frames(conn.output())[0].payload, [b'z'; 125]);
    }
}

#[test]
fn unsolicited_pong_is_delivered_and_not_answered() {
    let mut s = server();
    s.receive_data(&to(Role::Server, 0x8A, b"hb")).unwrap();
    assert_eq!(events(&mut s), [Event::Pong(Bytes::from_static(b"hb"))]);
    assert!(s.output().is_empty());
}

// ---- Failing the connection ----

#[test]
fn events_decoded_before_a_violation_stay_available() {
    let mut s = server();
    let stream = [
        to(Role::Server, 0x81, b"first"),
        to(Role::Server, 0x89, b"p"),
        to(Role::Server, 0x83, b"bad"),
        to(Role::Server, 0x81, b"never"),
    ]
    .concat();
    assert_eq!(
        s.receive_data(&stream),
        Err(ProtocolError::ReservedOpcode(3))
    );
    assert_eq!(
        events(&mut s),
        [
            Event::Text("first".into()),
            Event::Ping(Bytes::from_static(b"p"))
        ]
    );
    let out = frames(s.output());
    assert_eq!(out.len(), 2, "the pong, then the close");
    assert_eq!(out[0].header.opcode, OpCode::Pong);
}

#[test]
fn answers_to_events_before_a_violation_go_out_before_the_close() {
    // A message and a violation in the same read: the echo still goes out, then the close
    // (Autobahn 3.2, 4.1.3, 5.15: "echo for the first message, then the connection fails").
    let mut s = server();
    let stream = [
        to(Role::Server, 0x81, b"first"),
        to(Role::Server, 0xA1, b"rsv"),
    ]
    .concat();
    assert_eq!(s.receive_data(&stream), Err(ProtocolError::ReservedBits));
    assert_eq!(s.state(), State::Closed);
    assert!(
        !s.should_close_transport(),
        "the close frame is not queued yet"
    );
    assert_eq!(s.poll_event(), Some(Event::Text("first".into())));
    assert_eq!(s.send_text("first"), Ok(()));
    assert_eq!(s.poll_event(), None);
    let out = frames(s.output());
    assert_eq!(out.len(), 2, "the echo, then the close");
    assert_eq!(out[0].header.opcode, OpCode::Text);
    assert_eq!(queued_close_code(&s), Some(1002));
    assert!(s.should_close_transport());
    assert_eq!(s.send_text("late"), Err(ApiMisuse::AlreadyClosing));
}

#[test]
fn input_after_a_failure_is_ignored_and_the_error_reported_once() {
    let mut s = server();
    assert!(s.receive_data(&raw(0x81, b"x", None)).is_err());
    let output = s.output().to_vec();
    assert_eq!(s.receive_data(&to(Role::Server, 0x81, b"later")), Ok(()));
    assert_eq!(s.receive_data(&raw(0x81, b"again", None)), Ok(()));
    assert!(events(&mut s).is_empty());
    assert_eq!(s.output(), output);
    assert_eq!(s.send_text("x"), Err(ApiMisuse::AlreadyClosing));
    assert_eq!(s.receive_eof(), Ok(()));
}

#[test]
fn failure_close_reason_is_the_error_text() {
    let mut c = client();
    assert!(c.receive_data(&raw(0x81, b"x", Some(KEY))).is_err());
    let close = close_in(c.output()).unwrap().unwrap();
    assert_eq!(close.code, CloseCode::PROTOCOL_ERROR);
    assert_eq!(close.reason, ProtocolError::MaskedFrame.to_string());
}

#[test]
fn failure_after_our_close_queues_no_second_close() {
    let mut s = server();
    s.send_close(CloseCode::NORMAL, "").unwrap();
    assert_eq!(
        s.receive_data(&raw(0x81, b"x", None)),
        Err(ProtocolError::UnmaskedFrame)
    );
    assert_eq!(frames(s.output()).len(), 1);
    assert_eq!(queued_close_code(&s), Some(1000));
    assert_eq!(s.state(), State::Closed);
}

#[test]
fn close_reason_is_truncated_at_a_character_boundary() {
    assert_eq!(truncate_at_char("abc", 123), "abc");
    let long = "é".repeat(100); // 200 bytes
    let cut = truncate_at_char(&long, 123);
    assert_eq!(cut.len(), 122);
    assert_eq!(truncate_at_char("€", 2), "");
}

#[test]
fn random_input_never_panics() {
    let mut rng = SeededRandom::new(4242);
    let mut buf = [0u8; 64];
    for round in 0..3000 {
        let role = ROLES[round % 2];
        let mut conn = endpoint(role);
        // Half the rounds start from a valid stream with bytes flipped, half from noise.
        let mut input = if round % 4 < 2 {
            mixed_stream(role).0
        } else {
            let mut v = vec![0u8; 300];
            rng.fill(&mut v);
            v
        };
        rng.fill(&mut buf);
        for pair in buf.chunks(2).take(usize::from(buf[63] % 8)) {
            let at = usize::from(pair[0]) % input.len();
            input[at] ^= pair[1];
        }
        let mut failed = false;
        for piece in input.chunks(usize::from(buf[62] % 20) + 1) {
            match conn.receive_data(piece) {
                Ok(()) => {}
                Err(e) => {
                    assert!(!failed, "error reported twice");
                    failed = true;
                    let _ = events(&mut conn);
                    assert_eq!(queued_close_code(&conn), Some(e.close_code().0), "{e:?}");
                }
            }
            let _ = events(&mut conn);
        }
        let _ = conn.receive_eof();
        assert_eq!(conn.state(), State::Closed);
    }
}

// ---- The close handshake ----

#[test]
fn close_codes_0_to_5000_are_accepted_exactly_when_sendable() {
    for code in 0u16..=5000 {
        let mut s = server();
        let result = s.receive_data(&to(Role::Server, 0x88, &close_payload(code, b"r")));
        if CloseCode(code).is_sendable() {
            assert_eq!(result, Ok(()), "{code}");
            let expected = CloseFrame {
                code: CloseCode(code),
                reason: "r".into(),
            };
            assert_eq!(events(&mut s), [Event::Close(Some(expected))], "{code}");
            // Answered with the same code (§5.5.1).
            assert_eq!(queued_close_code(&s), Some(code));
        } else {
            assert_eq!(result, Err(ProtocolError::InvalidCloseCode(code)));
            assert_eq!(queued_close_code(&s), Some(1002), "{code}");
        }
    }
}

#[test]
fn one_byte_close_payload_fails_with_1002() {
    for role in ROLES {
        assert_fails(
            role,
            &to(role, 0x88, &[0x03]),
            ProtocolError::InvalidClosePayload,
            1002,
        );
    }
}

#[test]
fn close_reason_with_invalid_utf8_fails_with_1007() {
    for role in ROLES {
        assert_fails(
            role,
            &to(role, 0x88, &close_payload(1000, b"ok\xFF")),
            ProtocolError::InvalidUtf8,
            1007,
        );
    }
}

#[test]
fn empty_close_is_answered_with_an_empty_close() {
    let mut c = client();
    c.receive_data(&to(Role::Client, 0x88, &[])).unwrap();
    assert_eq!(events(&mut c), [Event::Close(None)]);
    assert_eq!(c.peer_close(), Some(&None));
    assert_eq!(close_in(c.output()), Some(None));
}

#[test]
fn client_close_is_echoed_and_the_server_closes_the_transport() {
    let (mut c, mut s) = (client(), server());
    c.send_close(CloseCode(4000), "bye").unwrap();
    assert_eq!(c.state(), State::Closing);
    assert_eq!(
        c.send_close(CloseCode::NORMAL, ""),
        Err(ApiMisuse::AlreadyClosing)
    );
    pump(&mut c, &mut s).unwrap();
    let expected = CloseFrame {
        code: CloseCode(4000),
        reason: "bye".into(),
    };
    assert_eq!(events(&mut s), [Event::Close(Some(expected.clone()))]);
    assert_eq!(s.peer_close(), Some(&Some(expected)));
    assert_eq!(s.state(), State::Closed);
    assert_eq!(queued_close_code(&s), Some(4000));
    // §7.1.1: the server closes TCP first, once its close frame is written.
    assert!(s.should_close_transport());

    pump(&mut s, &mut c).unwrap();
    assert_eq!(
        events(&mut c),
        [Event::Close(Some(CloseFrame {
            code: CloseCode(4000),
            reason: "bye".into()
        }))]
    );
    assert_eq!(c.state(), State::Closed);
    assert!(c.output().is_empty(), "a close is not answered twice");
    // The client waits for the server's EOF.
    assert!(!c.should_close_transport());
    assert_eq!(c.receive_eof(), Ok(()));
    assert!(c.should_close_transport());
    assert_eq!(s.receive_eof(), Ok(()));
}

#[test]
fn server_initiated_close_leaves_the_client_waiting_for_eof() {
    let (mut c, mut s) = (client(), server());
    s.send_close(CloseCode::GOING_AWAY, "restart").unwrap();
    assert_eq!(s.state(), State::Closing);
    assert!(!s.should_close_transport());
    pump(&mut s, &mut c).unwrap();
    // The answer is queued when the application takes the close event.
    assert_eq!(c.state(), State::Closing);
    assert_eq!(queued_close_code(&c), None);
    assert!(matches!(events(&mut c)[..], [Event::Close(Some(_))]));
    assert_eq!(c.state(), State::Closed);
    assert!(!c.should_close_transport());
    assert_eq!(queued_close_code(&c), Some(1001));
    pump(&mut c, &mut s).unwrap();
    assert_eq!(
        events(&mut s),
        [Event::Close(Some(CloseFrame {
            code: CloseCode::GOING_AWAY,
            reason: "restart".into()
        }))]
    );
    assert_eq!(s.state(), State::Closed);
    assert!(s.should_close_transport());
}

#[test]
fn nothing_is_processed_after_the_peers_close() {
    let mut s = server();
    let stream = [
        to(Role::Server, 0x88, &close_payload(1000, b"")),
        to(Role::Server, 0x89, b"ping"),
        to(Role::Server, 0x81, b"text"),
        raw(0x83, b"even invalid frames", None),
    ]
    .concat();
    s.receive_data(&stream).unwrap();
    s.receive_data(&to(Role::Server, 0x89, b"later")).unwrap();
    assert_eq!(events(&mut s).len(), 1, "only the close");
    let out = frames(s.output());
    assert_eq!(out.len(), 1, "no pong after close: {out:?}");
    assert_eq!(out[0].header.opcode, OpCode::Close);
}

#[test]
fn after_our_close_data_still_arrives_but_pings_get_no_pong() {
    let mut s = server();
    s.send_close(CloseCode::NORMAL, "").unwrap();
    let sent = take_output(&mut s);
    s.receive_data(&to(Role::Server, 0x81, b"in flight"))
        .unwrap();
    s.receive_data(&to(Role::Server, 0x89, b"p")).unwrap();
    assert_eq!(
        events(&mut s),
        [
            Event::Text("in flight".into()),
            Event::Ping(Bytes::from_static(b"p"))
        ]
    );
    assert!(s.output().is_empty());
    assert_eq!(s.send_text("no"), Err(ApiMisuse::AlreadyClosing));
    assert_eq!(s.send_binary(b"no"), Err(ApiMisuse::AlreadyClosing));
    assert_eq!(
        s.send_fragment(DataKind::Binary, b"no", true),
        Err(ApiMisuse::AlreadyClosing)
    );
    assert_eq!(s.send_ping(b""), Err(ApiMisuse::AlreadyClosing));
    assert_eq!(s.send_pong(b""), Err(ApiMisuse::AlreadyClosing));
    assert_eq!(close_in(&sent).unwrap().unwrap().code, CloseCode::NORMAL);
}

#[test]
fn eof_before_the_close_handshake_is_unexpected() {
    for role in ROLES {
        let mut conn = endpoint(role);
        assert_eq!(conn.receive_eof(), Err(ProtocolError::UnexpectedEof));
        assert_eq!(conn.state(), State::Closed);
        assert!(conn.should_close_transport());
        assert!(conn.output().is_empty(), "1006 is never sent");
        assert_eq!(conn.receive_eof(), Ok(()), "reported once");

        // Our close sent, the peer's never came.
        let mut conn = endpoint(role);
        conn.send_close(CloseCode::NORMAL, "").unwrap();
        assert_eq!(conn.receive_eof(), Err(ProtocolError::UnexpectedEof));
        assert_eq!(conn.state(), State::Closed);
    }
}

#[test]
fn eof_in_the_middle_of_a_frame_is_unexpected() {
    let mut s = server();
    s.receive_data(&to(Role::Server, 0x81, b"Hello")[..4])
        .unwrap();
    assert_eq!(s.receive_eof(), Err(ProtocolError::UnexpectedEof));
    assert!(events(&mut s).is_empty());
}

// ---- Sending ----

#[test]
fn send_close_checks_code_and_reason_length() {
    let mut c = client();
    for code in [0, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
        assert_eq!(
            c.send_close(CloseCode(code), ""),
            Err(ApiMisuse::InvalidCloseCode(code))
        );
    }
    assert_eq!(
        c.send_close(CloseCode::NORMAL, &"a".repeat(124)),
        Err(ApiMisuse::ControlPayloadTooLong)
    );
    assert!(c.output().is_empty());
    c.send_close(CloseCode::NORMAL, &"a".repeat(123)).unwrap();
    let close = close_in(c.output()).unwrap().unwrap();
    assert_eq!(close.reason.len(), 123);
}

#[test]
fn control_payloads_over_125_bytes_are_refused() {
    let mut c = client();
    assert_eq!(
        c.send_ping(&[0; 126]),
        Err(ApiMisuse::ControlPayloadTooLong)
    );
    assert_eq!(
        c.send_pong(&[0; 126]),
        Err(ApiMisuse::ControlPayloadTooLong)
    );
    c.send_ping(&[0; 125]).unwrap();
    assert_eq!(frames(c.output()).len(), 1);
}

#[test]
fn long_messages_are_split_at_max_send_frame_size() {
    let config = Config {
        max_send_frame_size: 10,
        ..Config::default()
    };
    let mut c = client_with(config);
    let text = "0123456789abcdef€xyz"; // 22 bytes; '€' straddles a frame boundary
    c.send_text(text).unwrap();
    let wire = frames(c.output());
    let shape: Vec<(OpCode, bool, usize)> = wire
        .iter()
        .map(|f| (f.header.opcode, f.header.fin, f.payload.len()))
        .collect();
    assert_eq!(
        shape,
        [
            (OpCode::Text, false, 10),
            (OpCode::Continuation, false, 10),
            (OpCode::Continuation, true, 2)
        ]
    );
    let mut s = server();
    pump(&mut c, &mut s).unwrap();
    assert_eq!(events(&mut s), [Event::Text(text.into())]);
}

#[test]
fn fragments_with_interleaved_control_frames_arrive_as_one_message() {
    let (mut c, mut s) = (client(), server());
    let bytes = "a😀b".as_bytes();
    c.send_fragment(DataKind::Text, &bytes[..2], false).unwrap();
    c.send_ping(b"mid").unwrap();
    c.send_fragment(DataKind::Text, &bytes[2..4], false)
        .unwrap();
    c.send_fragment(DataKind::Text, &bytes[4..], true).unwrap();
    c.send_fragment(DataKind::Binary, &[1], true).unwrap();
    pump(&mut c, &mut s).unwrap();
    assert_eq!(
        events(&mut s),
        [
            Event::Ping(Bytes::from_static(b"mid")),
            Event::Text("a😀b".into()),
            Event::Binary(Bytes::from_static(&[1])),
        ]
    );
}

#[test]
fn fragments_out_of_order_are_refused() {
    let mut c = client();
    c.send_fragment(DataKind::Binary, b"a", false).unwrap();
    assert_eq!(
        c.send_fragment(DataKind::Text, b"b", true),
        Err(ApiMisuse::FragmentOrder)
    );
    assert_eq!(c.send_text("x"), Err(ApiMisuse::FragmentOrder));
    assert_eq!(c.send_binary(b"x"), Err(ApiMisuse::FragmentOrder));
    c.send_fragment(DataKind::Binary, b"c", true).unwrap();
    c.send_text("after").unwrap();
    let mut s = server();
    pump(&mut c, &mut s).unwrap();
    assert_eq!(
        events(&mut s),
        [
            Event::Binary(Bytes::from_static(b"ac")),
            Event::Text("after".into())
        ]
    );
}

#[test]
fn invalid_utf8_text_fragments_are_refused_without_sending() {
    let mut c = client();
    c.send_fragment(DataKind::Text, b"ok\xE2\x82", false)
        .unwrap();
    let before = c.output().len();
    assert_eq!(
        c.send_fragment(DataKind::Text, b"A", false),
        Err(ApiMisuse::InvalidUtf8)
    );
    // Ending the message inside the code point is refused too.
    assert_eq!(
        c.send_fragment(DataKind::Text, b"", true),
        Err(ApiMisuse::InvalidUtf8)
    );
    assert_eq!(c.output().len(), before);
    // The message in progress is intact: completing the code point works.
    c.send_fragment(DataKind::Text, b"\xAC!", true).unwrap();
    let mut s = server();
    pump(&mut c, &mut s).unwrap();
    assert_eq!(events(&mut s), [Event::Text("ok€!".into())]);
}

#[test]
fn close_abandons_a_fragmented_message_we_were_sending() {
    let mut c = client();
    c.send_fragment(DataKind::Text, b"part", false).unwrap();
    c.send_close(CloseCode::NORMAL, "").unwrap();
    assert_eq!(
        c.send_fragment(DataKind::Text, b"rest", true),
        Err(ApiMisuse::AlreadyClosing)
    );
}

// ---- Output buffer and memory ----

#[test]
fn output_is_consumed_in_pieces() {
    let mut s = server();
    s.send_text("abc").unwrap();
    let all = s.output().to_vec();
    s.consume_output(2);
    assert_eq!(s.output(), &all[2..]);
    s.send_text("def").unwrap();
    assert_eq!(&s.output()[..all.len() - 2], &all[2..]);
    let rest = s.output().len();
    s.consume_output(rest);
    assert!(s.output().is_empty());
}

/// What a connection of `role` with `config` writes for `sends`, each message sent with the
/// `shared` API or copied; the output is consumed `step` bytes at a time (0: all of it at once,
/// through [`Connection::output_parts`]), with more messages queued between the steps.
fn output_of_sends(
    role: Role,
    config: &Config,
    sends: &[(DataKind, Vec<u8>)],
    shared: bool,
    step: usize,
) -> Vec<u8> {
    let mut conn = endpoint_with(role, config.clone());
    let mut written = Vec::new();
    let consume = |conn: &mut Connection, written: &mut Vec<u8>| {
        if step == 0 {
            let mut parts = [std::io::IoSlice::new(&[]); 64];
            let n = conn.output_parts(&mut parts);
            let total: usize = parts[..n].iter().map(|p| p.len()).sum();
            assert_eq!(total, conn.output_len(), "every part fits in 64");
            for part in &parts[..n] {
                written.extend_from_slice(part);
            }
            conn.consume_output(total);
        } else {
            // Not past the first part: a caller writing `output()` alone does that.
            let n = step.min(conn.output().len());
            written.extend_from_slice(&conn.output()[..n]);
            conn.consume_output(n);
        }
    };
    for (i, (kind, data)) in sends.iter().enumerate() {
        match (kind, shared) {
            (DataKind::Binary, true) => conn.send_binary_shared(Bytes::from(data.clone())),
            (DataKind::Binary, false) => conn.send_binary(data),
            (DataKind::Text, true) => {
                conn.send_text_shared(Utf8Bytes::try_from(Bytes::from(data.clone())).unwrap())
            }
            (DataKind::Text, false) => conn.send_text(std::str::from_utf8(data).unwrap()),
        }
        .unwrap();
        if i % 3 == 2 {
            conn.send_ping(b"between").unwrap();
            // Some of what is queued is written before the next message.
            consume(&mut conn, &mut written);
        }
    }
    while conn.output_len() > 0 {
        consume(&mut conn, &mut written);
    }
    assert!(conn.output().is_empty());
    assert!(conn.spill.is_none(), "written payloads are dropped");
    written
}

#[test]
fn shared_payloads_go_out_exactly_as_copied_ones() {
    let sends: Vec<(DataKind, Vec<u8>)> = [
        0usize,
        100,
        SHARED_MIN_LEN - 1,
        SHARED_MIN_LEN,
        20_000,
        70_000,
        5,
        2000,
        65_536,
    ]
    .iter()
    .enumerate()
    .map(|(i, &len)| {
        if i % 2 == 0 {
            (
                DataKind::Binary,
                (0..len).map(|b| (b * 13 + i) as u8).collect(),
            )
        } else {
            (DataKind::Text, "ü".repeat(len / 2).into_bytes())
        }
    })
    .collect();
    let split = Config {
        max_send_frame_size: 3000,
        ..Config::default()
    };
    for role in ROLES {
        for config in [Config::default(), split.clone()] {
            let expected = output_of_sends(role, &config, &sends, false, 0);
            for step in [0, 1, 7, 1000, 100_000] {
                assert!(
                    output_of_sends(role, &config, &sends, true, step) == expected,
                    "{role:?}, frames of at most {}, step {step}",
                    config.max_send_frame_size
                );
            }
            // And the peer reads the messages back.
            let peer_role = match role {
                Role::Client => Role::Server,
                Role::Server => Role::Client,
            };
            let mut peer = endpoint_with(peer_role, Config::default());
            peer.receive_data(&expected).unwrap();
            let messages: Vec<Event> = events(&mut peer)
                .into_iter()
                .filter(|e| !matches!(e, Event::Ping(_)))
                .collect();
            assert_eq!(messages.len(), sends.len());
        }
    }
}

#[test]
fn a_server_sends_large_payloads_from_the_shared_buffer() {
    let payload = Bytes::from(vec![9u8; 20_000]);
    let mut s = server();
    s.send_binary(b"first").unwrap();
    s.send_binary_shared(payload.clone()).unwrap();
    s.send_binary_shared(Bytes::from_static(b"small: copied"))
        .unwrap();
    let mut parts = [std::io::IoSlice::new(&[]); 8];
    let n = s.output_parts(&mut parts);
    // "first" and the next header, the payload itself, then the small frame.
    assert_eq!(n, 3);
    assert_eq!(parts[1].as_ptr(), payload.as_ptr(), "not copied");
    assert_eq!(parts[0].len(), 7 + 4);
    assert_eq!(parts[2].len(), 2 + 13);
    assert_eq!(s.output_len(), 7 + 4 + 20_000 + 15);
    // `output()` stops before the payload, then is the payload.
    assert_eq!(s.output().len(), 11);
    s.consume_output(11);
    assert_eq!(s.output().as_ptr(), payload.as_ptr());
    // Only parts fitting in `dst` are given.
    let mut one = [std::io::IoSlice::new(&[]); 1];
    assert_eq!(s.output_parts(&mut one), 1);
    assert_eq!(one[0].len(), 20_000);
    // Releasing buffers keeps what is not written.
    s.release_buffers();
    assert_eq!(s.output_len(), 20_015);
    s.consume_output(20_015);
    assert_eq!(s.output_len(), 0);
    // The last reference to the payload is ours again: the connection dropped its own.
    assert!(payload.is_unique());
}

#[test]
#[should_panic(expected = "past the")]
fn consuming_more_output_than_there_is_panics() {
    let mut s = server();
    s.send_text("abc").unwrap();
    s.consume_output(6);
}

#[test]
fn slow_writer_does_not_grow_the_output_without_bound() {
    let mut s = server();
    for _ in 0..10_000 {
        s.send_binary(&[0; 100]).unwrap();
        s.consume_output(100);
    }
    // Each round adds 102 bytes and writes 100: only the unwritten bytes are kept (plus slack).
    assert!(s.out.len() <= 2 * s.output().len() + 102, "{}", s.out.len());
}

/// Heap bytes a connection holds in its buffers.
fn heap_bytes(conn: &Connection) -> usize {
    conn.out.capacity()
        + conn.message_capacity()
        + conn.events.capacity() * std::mem::size_of::<Event>()
        + conn
            .spill
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<Spill>())
}

#[test]
fn idle_connection_holds_almost_no_memory() {
    let (mut c, mut s) = (client(), server());
    assert_eq!(heap_bytes(&c) + heap_bytes(&s), 0);
    let big = vec![7u8; 1 << 20];
    for _ in 0..3 {
        c.send_binary(&big).unwrap();
        c.send_ping(b"x").unwrap();
        pump(&mut c, &mut s).unwrap();
        for event in events(&mut s) {
            if let Event::Binary(b) = event {
                s.send_binary(&b).unwrap();
            }
        }
        pump(&mut s, &mut c).unwrap();
        assert_eq!(events(&mut c).len(), 2, "pong and the echo");
    }
    for conn in [&c, &s] {
        assert!(heap_bytes(conn) <= 2048, "{}", heap_bytes(conn));
        assert!(std::mem::size_of_val(conn) <= MAX_CONNECTION_SIZE);
    }
}

/// The most a [`Connection`] may take inline (160 bytes with permessage-deflate built in, 152
/// without). It sits in every connection's task, idle or not, so at 10,000 connections each byte
/// here is 10 kB; and a server's task must stay within tokio's 384-byte allocation class (the
/// future at most 280 bytes, the `WebSocket` around this included). This bound keeps it from
/// growing back.
const MAX_CONNECTION_SIZE: usize = 160;

#[test]
fn connection_struct_is_small() {
    let size = std::mem::size_of::<Connection>();
    println!(
        "size_of::<Connection>() = {size} bytes (config {}, timers {}, events {}; out of line \
         while needed: Spill {})",
        std::mem::size_of::<Arc<Config>>(),
        std::mem::size_of::<timers::Timers>(),
        std::mem::size_of::<VecDeque<Event>>(),
        std::mem::size_of::<Spill>(),
    );
    assert!(
        size <= MAX_CONNECTION_SIZE,
        "{size} > {MAX_CONNECTION_SIZE}"
    );
}

#[test]
fn idle_connection_keeps_no_buffer_after_small_messages() {
    // Small buffers are released too once the connection goes idle: kept per connection, they
    // would add up over thousands of idle connections.
    let (mut c, mut s) = (client(), server());
    for size in [1, 100, 1000] {
        c.send_text(&"a".repeat(size)).unwrap();
        c.send_ping(b"x").unwrap();
        pump(&mut c, &mut s).unwrap();
        for event in events(&mut s) {
            if let Event::Text(t) = event {
                s.send_text(&t).unwrap();
            }
        }
        pump(&mut s, &mut c).unwrap();
        assert_eq!(events(&mut c).len(), 2, "pong and the echo");
        // Busy, they keep their buffers for the next burst...
        assert!(heap_bytes(&s) > 0, "server after {size}-byte messages");
        // ...until the adapter sees the transport idle.
        c.release_buffers();
        s.release_buffers();
        assert_eq!(heap_bytes(&c), 0, "client after {size}-byte messages");
        assert_eq!(heap_bytes(&s), 0, "server after {size}-byte messages");
    }
}

#[test]
fn the_spill_is_there_only_while_the_general_path_needs_it() {
    let (mut c, mut s) = (client(), server());
    c.send_ping(b"ping").unwrap();
    c.send_fragment(DataKind::Text, b"he", false).unwrap();
    c.send_fragment(DataKind::Text, b"llo", true).unwrap();
    c.send_binary(&[9; 200]).unwrap();
    let wire = c.output().to_vec();
    c.consume_output(wire.len());
    // Ends of frames on the wire: masked client frames, headers of 6 and 8 bytes.
    let ends = [6 + 4, 10 + 6 + 2, 18 + 6 + 3, 27 + 8 + 200];
    assert_eq!(*ends.last().unwrap(), wire.len());
    // Byte by byte: every header and payload is split, so the general path keeps state between
    // calls; it is freed at each frame's end, except inside the fragmented message.
    for (i, byte) in wire.iter().enumerate() {
        s.receive_data(std::slice::from_ref(byte)).unwrap();
        let at_rest = ends.contains(&(i + 1)) && i + 1 != ends[1];
        assert_eq!(s.spill.is_none(), at_rest, "after byte {}", i + 1);
    }
    let got = events(&mut s);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[1], Event::Text("hello".into()));
    // The peer's close frame stays on record (in the spill) for the rest of the connection.
    c.send_close(CloseCode::NORMAL, "bye").unwrap();
    pump(&mut c, &mut s).unwrap();
    events(&mut s);
    s.release_buffers();
    assert!(s.spill.is_some());
    let close = s
        .peer_close()
        .cloned()
        .flatten()
        .expect("a close frame with a code");
    assert_eq!(
        (close.code, close.reason.as_str()),
        (CloseCode::NORMAL, "bye")
    );
}

#[test]
fn idle_connections_hand_their_buffers_to_the_next_busy_one() {
    let mut spare = SpareBuffers::default();
    let (mut c, mut a, mut b) = (client(), server(), server());
    c.send_binary(b"one").unwrap();
    c.send_binary(b"two").unwrap();
    let wire = c.output().to_vec();
    a.receive_data(&wire).unwrap();
    // Not idle yet: an event waits, and its answer is not written.
    assert_eq!(
        a.poll_event(),
        Some(Event::Binary(Bytes::from_static(b"one")))
    );
    a.send_binary(b"one").unwrap();
    a.release_buffers_into(&mut spare);
    assert!(spare.is_empty(), "nothing is taken from a busy connection");
    assert_eq!(
        a.poll_event(),
        Some(Event::Binary(Bytes::from_static(b"two")))
    );
    let out_at = a.output().as_ptr();
    a.consume_output(a.output_len());
    a.release_buffers_into(&mut spare);
    assert!(
        !a.holds_spare_buffers() && heap_bytes(&a) == 0,
        "idle: holds nothing"
    );
    assert!(!spare.is_empty());
    // The next connection to read takes them: the same allocation, no new one.
    b.reuse_buffers(&mut spare);
    assert!(spare.is_empty());
    b.receive_data(&wire).unwrap();
    assert_eq!(events(&mut b).len(), 2);
    b.send_binary(b"x").unwrap();
    assert_eq!(b.output().as_ptr(), out_at);
    assert_eq!(b.output(), [0x82, 1, b'x']);
    // A large output buffer is freed, not kept for the others.
    b.send_binary(&vec![0; 1 << 20]).unwrap();
    b.consume_output(b.output_len());
    b.release_buffers_into(&mut spare);
    assert_eq!(spare.out.capacity(), 0);
    assert!(spare.events.capacity() > 0);
    assert_eq!(heap_bytes(&b), 0);
}

/// Echo every message in `conn`'s queue, and return how many there were.
fn echo_all(conn: &mut Connection) -> usize {
    let mut n = 0;
    while let Some(event) = conn.poll_event() {
        match event {
            Event::Text(t) => conn.send_text(&t).unwrap(),
            Event::Binary(b) => conn.send_binary(&b).unwrap(),
            other => panic!("{other:?}"),
        }
        n += 1;
    }
    n
}

#[test]
fn busy_connection_reuses_its_buffers_between_batches() {
    let mut c = client();
    for i in 0..16u8 {
        c.send_binary(&[i; 16]).unwrap();
    }
    let batch = take_output(&mut c);
    let mut s = server();
    s.receive_data(&batch).unwrap();
    assert_eq!(echo_all(&mut s), 16);
    take_output(&mut s);
    let (out_ptr, out_cap) = (s.out.as_ptr(), s.out.capacity());
    let events_cap = s.events.capacity();
    assert!(out_cap >= 16 * 18, "{out_cap}");
    assert!(events_cap >= 16, "{events_cap}");
    for _ in 0..10 {
        s.receive_data(&batch).unwrap();
        assert_eq!(echo_all(&mut s), 16);
        let echoed = take_output(&mut s);
        assert_eq!(frames(&echoed).len(), 16);
        // The same allocations, neither freed nor grown: no allocation per batch.
        assert_eq!((s.out.as_ptr(), s.out.capacity()), (out_ptr, out_cap));
        assert_eq!(s.events.capacity(), events_cap);
    }
    s.release_buffers();
    assert_eq!(heap_bytes(&s), 0);
    // Allocated again by the next message.
    s.receive_data(&batch).unwrap();
    assert_eq!(echo_all(&mut s), 16);
    assert_eq!(frames(s.output()).len(), 16);
}

#[test]
fn release_buffers_keeps_what_is_not_written_or_handed_out() {
    let mut c = client();
    c.send_text("one").unwrap();
    c.send_text("two").unwrap();
    let mut s = server();
    s.receive_data(&take_output(&mut c)).unwrap();
    s.send_binary(b"queued").unwrap();
    s.consume_output(3);
    s.release_buffers();
    assert_eq!(s.output().len(), 8 - 3);
    assert_eq!(
        s.output(),
        &[0x82, 6, b'q', b'u', b'e', b'u', b'e', b'd'][3..]
    );
    assert_eq!(
        events(&mut s),
        [Event::Text("one".into()), Event::Text("two".into())]
    );
    // A message half received survives too.
    let frame = to(Role::Server, 0x82, &[9; 100]);
    s.receive_data(&frame[..50]).unwrap();
    s.release_buffers();
    s.receive_data(&frame[50..]).unwrap();
    assert_eq!(events(&mut s), [Event::Binary(Bytes::from(vec![9; 100]))]);
}

#[test]
fn large_buffers_are_freed_once_drained_without_release() {
    let mut s = server();
    s.send_binary(&vec![1; MAX_RETAINED_OUTPUT + 1]).unwrap();
    take_output(&mut s);
    assert_eq!(s.out.capacity(), 0);
    let mut c = client();
    for _ in 0..MAX_RETAINED_EVENTS * 2 {
        c.send_ping(b"").unwrap();
    }
    s.receive_data(&take_output(&mut c)).unwrap();
    assert_eq!(events(&mut s).len(), MAX_RETAINED_EVENTS * 2);
    assert_eq!(s.events.capacity(), 0);
}

#[test]
fn whole_messages_after_empty_fragments_take_the_one_piece_path() {
    let mut s = server();
    // Nothing received before the final frame: the final frame is the whole message.
    let mut stream = to(Role::Server, 0x01, b"");
    stream.extend(to(Role::Server, 0x80, "h\u{e9}llo".as_bytes()));
    stream.extend(to(Role::Server, 0x02, b""));
    stream.extend(to(Role::Server, 0x00, b""));
    stream.extend(to(Role::Server, 0x80, b"bin"));
    // Bytes before the final frame: not the whole message.
    stream.extend(to(Role::Server, 0x01, b"ab"));
    stream.extend(to(Role::Server, 0x80, b"cd"));
    s.receive_data(&stream).unwrap();
    assert_eq!(
        events(&mut s),
        [
            Event::Text("h\u{e9}llo".into()),
            Event::Binary(Bytes::from_static(b"bin")),
            Event::Text("abcd".into()),
        ]
    );
    // A whole text message is still validated, wherever the bad byte is.
    s.receive_data(&to(Role::Server, 0x01, b"")).unwrap();
    let mut bad = b"ok ".repeat(100);
    bad[150] = 0xFF;
    assert_eq!(
        s.receive_data(&to(Role::Server, 0x80, &bad)),
        Err(ProtocolError::InvalidUtf8)
    );
    assert_eq!(queued_close_code(&s), Some(1007));
}

#[test]
fn whole_invalid_text_in_one_read_fails_after_the_messages_before_it() {
    let mut s = server();
    let mut stream = to(Role::Server, 0x81, b"fine");
    stream.extend(to(Role::Server, 0x81, b"bad \xC3\x28 text"));
    assert_eq!(s.receive_data(&stream), Err(ProtocolError::InvalidUtf8));
    assert_eq!(s.poll_event(), Some(Event::Text("fine".into())));
    s.send_text("fine").unwrap();
    assert_eq!(s.poll_event(), None);
    let out = frames(s.output());
    assert_eq!(out[0].payload, b"fine");
    assert_eq!(close_in(s.output()).flatten().map(|c| c.code.0), Some(1007));
}

#[test]
fn connections_with_the_os_random_source_mask_as_their_role_requires() {
    let mut c = Connection::new(Role::Client, Config::default());
    let mut s = Connection::new(Role::Server, Config::default());
    c.send_text("to server").unwrap();
    s.send_text("to client").unwrap();
    assert!(frames(c.output())[0].header.mask.is_some());
    assert!(frames(s.output())[0].header.mask.is_none());
    pump(&mut c, &mut s).unwrap();
    pump(&mut s, &mut c).unwrap();
    assert_eq!(events(&mut s), [Event::Text("to server".into())]);
    assert_eq!(events(&mut c), [Event::Text("to client".into())]);
}

#[test]
fn messages_before_a_close_can_still_be_answered() {
    // A client sends two messages and its close in one burst; an echo server that answers each
    // message as it takes it must get the echoes out before its close frame.
    let (mut c, mut s) = (client(), server());
    c.send_text("a").unwrap();
    c.send_text("b").unwrap();
    c.send_close(CloseCode::NORMAL, "").unwrap();
    pump(&mut c, &mut s).unwrap();
    while let Some(event) = s.poll_event() {
        if let Event::Text(t) = event {
            s.send_text(&t).unwrap();
        }
    }
    assert!(s.should_close_transport());
    pump(&mut s, &mut c).unwrap();
    assert_eq!(
        events(&mut c),
        [
            Event::Text("a".into()),
            Event::Text("b".into()),
            Event::Close(Some(CloseFrame {
                code: CloseCode::NORMAL,
                reason: String::new()
            }))
        ]
    );
    assert_eq!(c.state(), State::Closed);
}

// ---- Delivering fragments (Config::deliver_fragments) ----

fn fragments_config() -> Config {
    Config {
        deliver_fragments: true,
        ..Config::default()
    }
}

/// The fragment events among `events`: (kind, data, fin); other events are left out.
fn fragments(events: &[Event]) -> Vec<(DataKind, Vec<u8>, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Fragment { kind, data, fin } => Some((*kind, data.to_vec(), *fin)),
            _ => None,
        })
        .collect()
}

#[test]
fn fragments_are_delivered_in_order_as_they_arrive() {
    let mut s = server_with(fragments_config());
    let mut c = client();
    c.send_fragment(DataKind::Binary, b"first", false).unwrap();
    c.send_ping(b"p").unwrap();
    c.send_fragment(DataKind::Binary, b"", false).unwrap();
    c.send_fragment(DataKind::Binary, b"second", true).unwrap();
    c.send_binary(b"whole").unwrap();
    let wire = take_output(&mut c);
    // One byte at a time: a piece per payload byte, nothing held back.
    let mut got = Vec::new();
    for byte in wire.chunks(1) {
        s.receive_data(byte).unwrap();
        got.extend(events(&mut s));
    }
    let ping_at = got
        .iter()
        .position(|e| matches!(e, Event::Ping(_)))
        .unwrap();
    let first_piece_at = got
        .iter()
        .position(|e| matches!(e, Event::Fragment { .. }))
        .unwrap();
    assert!(first_piece_at < ping_at, "the ping came after `first`");
    let pieces = fragments(&got);
    assert_eq!(pieces.len(), "firstsecond".len() + "whole".len());
    assert!(pieces
        .iter()
        .all(|(kind, data, _)| *kind == DataKind::Binary && data.len() == 1));
    let fins: Vec<usize> = (0..pieces.len()).filter(|&i| pieces[i].2).collect();
    assert_eq!(fins, [10, 15], "fin on the last byte of each message only");
    let bytes: Vec<u8> = pieces.iter().flat_map(|p| p.1.clone()).collect();
    assert_eq!(bytes, b"firstsecondwhole");
}

#[test]
fn whole_frames_in_one_read_come_as_one_piece_each() {
    let mut s = server_with(fragments_config());
    let mut c = client();
    c.send_fragment(DataKind::Text, "héllo ".as_bytes(), false)
        .unwrap();
    c.send_fragment(DataKind::Text, "wörld".as_bytes(), true)
        .unwrap();
    pump(&mut c, &mut s).unwrap();
    assert_eq!(
        events(&mut s),
        [
            Event::Fragment {
                kind: DataKind::Text,
                data: Bytes::from("héllo "),
                fin: false
            },
            Event::Fragment {
                kind: DataKind::Text,
                data: Bytes::from("wörld"),
                fin: true
            },
        ]
    );
}

#[test]
fn empty_message_is_one_empty_final_piece() {
    let mut s = server_with(fragments_config());
    let mut c = client();
    c.send_text("").unwrap();
    pump(&mut c, &mut s).unwrap();
    assert_eq!(
        events(&mut s),
        [Event::Fragment {
            kind: DataKind::Text,
            data: Bytes::new(),
            fin: true
        }]
    );
}

#[test]
fn text_pieces_split_only_at_code_point_boundaries() {
    let text = "a€😀ñ".repeat(50);
    let mut s = server_with(fragments_config());
    let mut c = client();
    c.send_text(&text).unwrap();
    let wire = take_output(&mut c);
    for cut in [1, 2, 3, 5, 7] {
        let mut s2 = server_with(fragments_config());
        let mut pieces = Vec::new();
        for chunk in wire.chunks(cut) {
            s2.receive_data(chunk).unwrap();
            pieces.extend(fragments(&events(&mut s2)));
        }
        let mut joined = String::new();
        for (kind, data, _) in &pieces {
            assert_eq!(*kind, DataKind::Text);
            // Each piece is valid UTF-8 on its own.
            joined.push_str(std::str::from_utf8(data).unwrap());
        }
        assert_eq!(joined, text, "cut every {cut} bytes");
        assert!(pieces.last().unwrap().2);
        assert!(pieces.len() > 10, "{} pieces", pieces.len());
    }
    s.receive_data(&wire).unwrap();
}

#[test]
fn invalid_utf8_fails_fast_when_delivering_fragments() {
    let mut s = server_with(fragments_config());
    // A text frame announcing 1000 bytes; the bad byte is in the first few.
    let mut head = masked_header(0x81, 1000);
    let mut payload = b"ok\xC0".to_vec();
    crate::frame::mask::apply_mask_scalar(&mut payload, KEY, 0);
    head.extend_from_slice(&payload[..2]);
    s.receive_data(&head).unwrap();
    // What arrived before the fault was delivered already.
    assert_eq!(
        fragments(&events(&mut s)),
        [(DataKind::Text, b"ok".to_vec(), false)]
    );
    // The bad byte fails the connection at once (1007), long before the frame's end, and the
    // piece that holds it is not delivered.
    assert_eq!(
        s.receive_data(&payload[2..]),
        Err(ProtocolError::InvalidUtf8)
    );
    assert!(fragments(&events(&mut s)).is_empty());
    assert_eq!(queued_close_code(&s), Some(1007));
}

#[test]
fn text_ending_inside_a_code_point_fails_when_delivering_fragments() {
    let mut s = server_with(fragments_config());
    let frame = to(Role::Server, 0x81, b"ab\xE2\x82");
    assert_eq!(s.receive_data(&frame), Err(ProtocolError::InvalidUtf8));
    // The final piece is refused whole: no piece claims the message ended well.
    assert!(fragments(&events(&mut s)).is_empty());
    assert_eq!(queued_close_code(&s), Some(1007));
}

#[test]
fn message_limit_counts_pieces_already_delivered() {
    let mut config = fragments_config();
    config.max_message_size = 10;
    let mut s = server_with(config);
    let mut c = client();
    c.send_fragment(DataKind::Binary, &[1; 6], false).unwrap();
    pump(&mut c, &mut s).unwrap();
    assert_eq!(
        fragments(&events(&mut s)),
        [(DataKind::Binary, vec![1; 6], false)]
    );
    // 6 delivered + 5 announced > 10: refused from the header, before any byte is read.
    c.send_fragment(DataKind::Binary, &[2; 5], true).unwrap();
    assert_eq!(pump(&mut c, &mut s), Err(ProtocolError::MessageTooLarge));
    assert!(fragments(&events(&mut s)).is_empty());
    assert_eq!(queued_close_code(&s), Some(1009));
}

#[test]
fn delivering_fragments_holds_no_message_buffer_between_pieces() {
    let mut s = server_with(fragments_config());
    let mut head = masked_header(0x82, 1 << 20);
    let mut payload = vec![7u8; 4096];
    crate::frame::mask::apply_mask_scalar(&mut payload, KEY, 0);
    head.extend_from_slice(&payload);
    s.receive_data(&head).unwrap();
    assert_eq!(fragments(&events(&mut s)).len(), 1);
    assert_eq!(s.message_capacity(), 0, "the piece took the buffer");
}

#[test]
fn a_ping_is_awaited_until_a_pong_comes() {
    let mut s = server();
    assert!(!s.awaiting_pong());
    s.send_ping(b"are you there").unwrap();
    assert!(s.awaiting_pong());
    // Other input, even a ping of the peer's, is no answer.
    s.receive_data(&to(Role::Server, 0x89, b"mine")).unwrap();
    s.receive_data(&to(Role::Server, 0x82, b"data")).unwrap();
    assert!(s.awaiting_pong());
    s.receive_data(&to(Role::Server, 0x8A, b"are you there"))
        .unwrap();
    assert!(!s.awaiting_pong());
    // After the peer's close frame, the pong to a ping that crossed it may still come.
    s.send_ping(b"").unwrap();
    s.receive_data(&to(Role::Server, 0x88, &close_payload(1000, b"")))
        .unwrap();
    assert!(s.awaiting_pong());
}
