//! Messages both ways: every frame kind, every length form, split anywhere.

use bytes::Bytes;

use super::pair::*;
use crate::frame::{CloseCode, CloseFrame};
use crate::message::Event;
use crate::random::{RandomSource, SeededRandom};
use crate::role::Role;
use crate::{Config, Connection};

#[test]
fn echo_of_text_and_binary_at_length_boundaries() {
    for size in [0usize, 125, 126, 65535, 65536, 1 << 20] {
        let mut pair = Pair::new();
        let text: String = (0..size)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let binary: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();

        pair.client.send_text(&text).unwrap();
        pair.client.send_binary(&binary).unwrap();
        let wire = frames(pair.client.output());
        assert_eq!(wire.len(), 2);
        for (frame, payload) in wire.iter().zip([text.as_bytes(), &binary]) {
            assert!(frame.fin && frame.mask.is_some(), "{size}");
            assert!(frame.payload == payload, "{size}");
        }
        let received = pair.deliver_to_server();
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
                Event::Text(t) => pair.server.send_text(&t).unwrap(),
                Event::Binary(b) => pair.server.send_binary(&b).unwrap(),
                other => panic!("{other:?}"),
            }
        }
        assert!(frames(pair.server.output())
            .iter()
            .all(|f| f.mask.is_none()));
        assert!(
            pair.deliver_to_client() == [Event::Text(text.into()), Event::Binary(binary.into())],
            "client side, {size} bytes"
        );
    }
}

/// A stream exercising every frame kind, as `receiver`'s peer would send it.
pub(super) fn mixed_stream(receiver: Role) -> (Vec<u8>, Vec<Event>) {
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

/// Feed `stream` cut at `cuts` to a fresh endpoint of `role`, in three ways that must agree:
/// copied and lent with the events drained after each piece (as a transport's reader does), and
/// lent with every piece fed before any event is asked for. Returns the events and the output.
pub(super) fn feed_in_pieces(role: Role, stream: &[u8], cuts: &[usize]) -> (Vec<Event>, Vec<u8>) {
    let copied = feed_in_pieces_by(role, stream, cuts, Feed::Copied, true);
    let lent = feed_in_pieces_by(role, stream, cuts, Feed::Lent, true);
    let lent_at_once = feed_in_pieces_by(role, stream, cuts, Feed::Lent, false);
    assert_eq!(
        copied, lent,
        "receive_data and receive_buf differ at {cuts:?}"
    );
    assert_eq!(
        lent, lent_at_once,
        "polling between pieces differs at {cuts:?}"
    );
    copied
}

fn feed_in_pieces_by(
    role: Role,
    stream: &[u8],
    cuts: &[usize],
    how: Feed,
    poll_between: bool,
) -> (Vec<Event>, Vec<u8>) {
    let mut conn = endpoint(role);
    let mut got = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain([stream.len()].iter()) {
        feed_by(&mut conn, &stream[start..end], how);
        if poll_between {
            got.extend(events(&mut conn));
        }
        start = end;
    }
    got.extend(events(&mut conn));
    (got, take_output(&mut conn))
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
        assert_eq!(answers[0].opcode, 0xA);
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
        feed(&mut conn, &stream);
        // The close is answered as its event is handed out.
        assert_eq!(events(&mut conn), expected);
        assert_eq!(conn.input.len(), 0, "nothing left in the input");
        let whole_output = take_output(&mut conn);
        let answers = frames(&whole_output);
        assert_eq!(answers.len(), 2, "the pong, then the close");
        assert_eq!(answers[0].opcode, 0xA);
        assert_eq!(Event::Ping(answers[0].payload.clone().into()), expected[0]);

        // Every split of the ping into up to three pieces, every split of the whole stream in
        // two: the pieces are kept until the frame is whole, and let go of once it is.
        let ping_len = 2 + usize::from(role == Role::Server) * 4 + 125;
        let mut splits: Vec<Vec<usize>> = (0..=stream.len()).map(|cut| vec![cut]).collect();
        for a in 1..ping_len {
            for b in a..ping_len {
                splits.push(vec![a, b]);
            }
        }
        for cuts in splits {
            let (got, output) = feed_in_pieces(role, &stream, &cuts);
            assert_eq!(got, expected, "{role:?} {cuts:?}");
            assert_eq!(output, whole_output, "{role:?} {cuts:?}");
        }
    }
}

#[test]
fn split_control_frame_is_kept_until_the_rest_arrives() {
    let mut s = server();
    let ping = to(Role::Server, 0x89, b"keep me");
    // Header and two payload bytes: not whole, kept (a copy of its own, not a slice of the
    // buffer it was read into: the connection may stay quiet for long).
    s.receive_buf(bytes::BytesMut::from(&ping[..8]), now());
    assert_eq!(s.poll_event(), Ok(None));
    assert_eq!(s.input.len(), 8);
    feed(&mut s, &ping[8..]);
    assert_eq!(
        events(&mut s),
        [Event::Ping(Bytes::from_static(b"keep me"))]
    );
    assert_eq!(s.input.len(), 0, "let go of once the frame is whole");

    // A failure in the middle of a split control frame drops it too.
    let mut s = server();
    feed(&mut s, &ping[..8]);
    assert_eq!(s.poll_event(), Ok(None));
    s.receive_eof();
    assert_eq!(s.poll_event(), Err(crate::ProtocolError::UnexpectedEof));
    assert_eq!(s.input.len(), 0);
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
    feed(&mut c, &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    feed(
        &mut c,
        &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f],
    );
    feed(&mut c, &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
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
    assert_eq!(pong[0].opcode, 0xA);
    assert!(pong[0].mask.is_some());
    assert_eq!(pong[0].payload, b"Hello");

    let mut s = server();
    feed(
        &mut s,
        &[
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ],
    );
    assert_eq!(events(&mut s), [Event::Text("Hello".into())]);
}

#[test]
fn unsolicited_pong_is_delivered_and_not_answered() {
    let mut s = server();
    feed(&mut s, &to(Role::Server, 0x8A, b"hb"));
    assert_eq!(events(&mut s), [Event::Pong(Bytes::from_static(b"hb"))]);
    assert!(s.output().is_empty());
}

#[test]
fn a_ping_is_awaited_until_a_pong_comes() {
    let mut s = server();
    assert!(!s.awaiting_pong());
    s.send_ping(b"are you there").unwrap();
    assert!(s.awaiting_pong());
    // Other input, even a ping of the peer's, is no answer.
    feed(&mut s, &to(Role::Server, 0x89, b"mine"));
    feed(&mut s, &to(Role::Server, 0x82, b"data"));
    events(&mut s);
    assert!(s.awaiting_pong());
    feed(&mut s, &to(Role::Server, 0x8A, b"are you there"));
    events(&mut s);
    assert!(!s.awaiting_pong());
    // After the peer's close frame, the pong to a ping that crossed it may still come.
    s.send_ping(b"").unwrap();
    feed(&mut s, &to(Role::Server, 0x88, &close_payload(1000, b"")));
    events(&mut s);
    assert!(s.awaiting_pong());
}

#[test]
fn connections_with_the_os_random_source_mask_as_their_role_requires() {
    let mut pair = Pair::of(
        Connection::new(Role::Client, Config::default()),
        Connection::new(Role::Server, Config::default()),
    );
    pair.client.send_text("to server").unwrap();
    pair.server.send_text("to client").unwrap();
    assert!(frames(pair.client.output())[0].mask.is_some());
    assert!(frames(pair.server.output())[0].mask.is_none());
    assert_eq!(pair.deliver_to_server(), [Event::Text("to server".into())]);
    assert_eq!(pair.deliver_to_client(), [Event::Text("to client".into())]);
}
