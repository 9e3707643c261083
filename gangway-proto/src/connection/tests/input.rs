//! Input: kept until asked for, decoded one frame at a time by one path, payloads lent out of
//! a buffer handed over (`receive_buf`) and copied out of one that was not (`receive_data`).

use bytes::{Bytes, BytesMut};

use super::pair::*;
use crate::error::ProtocolError;
use crate::message::{DataKind, Event};
use crate::role::Role;
use crate::{Config, State};

#[test]
fn nothing_is_decoded_until_the_next_event_is_asked_for() {
    let mut s = server();
    let stream = [
        to(Role::Server, 0x81, b"first"),
        to(Role::Server, 0x89, b"p"),
        raw(0x81, b"unmasked", None),
    ]
    .concat();
    feed(&mut s, &stream);
    // Fed, not decoded: no answer, no failure yet.
    assert!(s.output().is_empty());
    assert_eq!(s.state(), State::Open);
    assert_eq!(s.poll_event(), Ok(Some(Event::Text("first".into()))));
    assert!(s.output().is_empty(), "the ping is not decoded yet");
    assert_eq!(
        s.poll_event(),
        Ok(Some(Event::Ping(Bytes::from_static(b"p"))))
    );
    assert_eq!(frames(s.output()).len(), 1, "its pong, with it");
    assert_eq!(s.poll_event(), Err(ProtocolError::UnmaskedFrame));
    assert_eq!(s.poll_event(), Ok(None), "reported once");
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
    let input = BytesMut::from(&stream[..]);
    let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
    let mut s = server();
    s.receive_buf(input, now());
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

    // Fed with `receive_data`, each message is a copy of its own.
    let mut s = server();
    feed(&mut s, &stream);
    let Event::Binary(copied) = events(&mut s).remove(0) else {
        panic!("no binary message");
    };
    assert!(!range.contains(&(copied.as_ptr() as usize)));

    // A message that arrives in two reads is taken whole once the rest is there.
    let frame = to(Role::Server, 0x82, b"split payload");
    let mut s = server();
    s.receive_buf(BytesMut::from(&frame[..9]), now());
    assert_eq!(s.poll_event(), Ok(None));
    s.receive_buf(BytesMut::from(&frame[9..]), now());
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
        feed_by(&mut conn, stream, how);
        let (events, result) = drain(&mut conn);
        results.push((result, events, take_output(&mut conn)));
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
fn whole_messages_in_one_read_are_taken_in_one_piece_with_the_same_results() {
    // Lengths on both sides of each header form (7-bit, 16-bit, 64-bit), many messages in one
    // read, and frames that are gathered instead (a ping, a fragmented message) in between.
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
        assert!(answers.iter().all(|f| f.opcode == 0xA));

        // Every message that arrived whole, in one frame, is a slice of the input.
        let input = BytesMut::from(&stream[..]);
        let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
        let mut conn = endpoint(role);
        conn.receive_buf(input, now());
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
fn copied_and_lent_input_pass_the_same_checks() {
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
        // Invalid UTF-8 in the 40th message of one read.
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
        &[20_000, 70_000],
    ] {
        // Consecutive pieces of one buffer, as reads into the same buffer are.
        for poll_between in [false, true] {
            let mut buf = BytesMut::from(&stream[..]);
            let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
            let mut s = server();
            let mut got = Vec::new();
            let mut at = 0;
            for &cut in cuts {
                s.receive_buf(buf.split_to(cut - at), now());
                if poll_between {
                    got.extend(events(&mut s));
                }
                at = cut;
            }
            s.receive_buf(buf, now());
            got.extend(events(&mut s));
            assert_eq!(got, expected, "{cuts:?}");
            let Event::Binary(first) = &got[0] else {
                unreachable!()
            };
            // Kept as it came when the first piece holds its header and more than a small
            // message would (polled with less, it is copied: a quiet connection must not keep a
            // read buffer alive for a few bytes).
            if !poll_between || cuts[0] > 16 << 10 {
                assert!(
                    range.contains(&(first.as_ptr() as usize)),
                    "{cuts:?}: the pieces of the first message were joined, not copied"
                );
            }
        }
        // A piece fed by `receive_data` after a partial `receive_buf` goes on from it.
        let mut s = server();
        s.receive_buf(BytesMut::from(&stream[..cuts[0]]), now());
        feed(&mut s, &stream[cuts[0]..]);
        assert_eq!(events(&mut s), expected, "{cuts:?}, then copied");
    }
}

#[test]
fn a_small_partial_frame_is_not_kept_as_a_slice_of_the_read_buffer() {
    let frame = to(Role::Server, 0x82, &[3; 1000]);
    let mut s = server();
    // As the tokio layer reads: into a large buffer, each read split off it.
    let mut read = BytesMut::with_capacity(64 << 10);
    let range = read.as_ptr() as usize..read.as_ptr() as usize + (64 << 10);
    read.extend_from_slice(&frame[..500]);
    s.receive_buf(read.split(), now());
    assert_eq!(s.poll_event(), Ok(None));
    assert!(
        !range.contains(&(s.input_ptr() as usize)),
        "copied into a buffer of its own"
    );
    read.extend_from_slice(&frame[500..]);
    s.receive_buf(read.split(), now());
    assert_eq!(events(&mut s), [Event::Binary(Bytes::from(vec![3; 1000]))]);
    assert_eq!(s.input.len(), 0);
    // Everything handed out: nothing of the read buffer is kept.
    drop(s);
    assert!(read.try_reclaim(64 << 10), "the read buffer is free again");
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
            feed_by(&mut s, &stream, how);
            let (got, err) = drain(&mut s);
            assert!(err.is_err(), "{how:?}");
            // Input after a failure is ignored.
            feed_by(&mut s, &good, how);
            assert_eq!(s.poll_event(), Ok(None));
            results.push((err, got, take_output(&mut s)));
        }
        assert_eq!(results[0], results[1]);
        assert_eq!(
            results[0].1[0],
            Event::Binary(Bytes::from_static(b"before"))
        );
    }
}

#[test]
fn whole_messages_after_empty_fragments_are_taken_in_one_piece() {
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
    let input = BytesMut::from(&stream[..]);
    let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
    s.receive_buf(input, now());
    let got = events(&mut s);
    assert_eq!(
        got,
        [
            Event::Text("h\u{e9}llo".into()),
            Event::Binary(Bytes::from_static(b"bin")),
            Event::Text("abcd".into()),
        ]
    );
    let Event::Binary(bin) = &got[1] else {
        unreachable!()
    };
    assert!(range.contains(&(bin.as_ptr() as usize)), "lent");
    // A whole text message is still validated, wherever the bad byte is.
    feed(&mut s, &to(Role::Server, 0x01, b""));
    let mut bad = b"ok ".repeat(100);
    bad[150] = 0xFF;
    feed(&mut s, &to(Role::Server, 0x80, &bad));
    assert_eq!(drain(&mut s), (vec![], Err(ProtocolError::InvalidUtf8)));
    assert_eq!(queued_close_code(&s), Some(1007));
}

#[test]
fn whole_invalid_text_in_one_read_fails_after_the_messages_before_it() {
    let mut s = server();
    let mut stream = to(Role::Server, 0x81, b"fine");
    stream.extend(to(Role::Server, 0x81, b"bad \xC3\x28 text"));
    feed(&mut s, &stream);
    assert_eq!(s.poll_event(), Ok(Some(Event::Text("fine".into()))));
    s.send_text("fine").unwrap();
    assert_eq!(s.poll_event(), Err(ProtocolError::InvalidUtf8));
    let out = frames(s.output());
    assert_eq!(out[0].payload, b"fine");
    assert_eq!(close_in(s.output()).flatten().map(|c| c.code.0), Some(1007));
}

#[test]
fn input_left_after_the_last_event_is_let_go_of() {
    // A lent buffer all handed out is not held by the connection (the caller's read buffer can
    // be reused in place); a copied one is kept for the next `receive_data`, unless it is large.
    let frame = to(Role::Server, 0x82, b"x");
    let mut s = server();
    let mut read = BytesMut::with_capacity(1024);
    read.extend_from_slice(&frame);
    s.receive_buf(read.split(), now());
    assert_eq!(events(&mut s).len(), 1);
    assert!(read.try_reclaim(1024), "nothing of the read buffer is kept");

    let mut s = server();
    feed(&mut s, &frame);
    assert_eq!(events(&mut s).len(), 1);
    assert!(s.holds_spare_buffers(), "kept for the next read");
    s.release_buffers();
    assert!(!s.holds_spare_buffers());
    feed(&mut s, &to(Role::Server, 0x82, &vec![1; 100 << 10]));
    assert_eq!(events(&mut s).len(), 1);
    assert!(!s.holds_spare_buffers(), "a large one is freed at once");
}
