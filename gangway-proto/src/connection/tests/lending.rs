//! Receiving by lending (`for_each_event`): the same events as `poll_event`, lent in place, with
//! the answers sent through the `Replies` lent with them.

use std::io::IoSlice;
use std::ops::ControlFlow;

use bytes::{Bytes, BytesMut};

use super::pair::*;
use crate::error::{ApiMisuse, ProtocolError};
use crate::frame::CloseCode;
use crate::message::{Event, EventRef};
use crate::role::Role;
use crate::State;

/// Every event `conn`'s input holds, lent to a callback that echoes text and binary messages
/// with `echo`, as owned events; and how it ended.
fn lend_all(conn: &mut crate::Connection) -> (Vec<Event>, Result<ControlFlow<()>, ProtocolError>) {
    let mut got = Vec::new();
    let result = conn.for_each_event(|event, replies| {
        let echoed = replies.echo();
        let is_message = matches!(event, EventRef::Text(_) | EventRef::Binary(_));
        assert_eq!(echoed, Ok(is_message), "echo of {event:?}");
        got.push(owned(event));
        ControlFlow::Continue(())
    });
    (got, result)
}

fn owned(event: EventRef<'_>) -> Event {
    match event {
        EventRef::Text(text) => Event::Text(text.into()),
        EventRef::Binary(data) => Event::Binary(Bytes::copy_from_slice(data)),
        EventRef::Ping(data) => Event::Ping(Bytes::copy_from_slice(data)),
        EventRef::Pong(data) => Event::Pong(Bytes::copy_from_slice(data)),
        EventRef::Fragment { kind, data, fin } => Event::Fragment {
            kind,
            data: Bytes::copy_from_slice(data),
            fin,
        },
        EventRef::Close(close) => Event::Close(close.cloned()),
    }
}

#[test]
fn messages_are_lent_in_place_and_answered_in_order_with_the_pings() {
    let stream = [
        to(Role::Server, 0x82, b"one"),
        to(Role::Server, 0x89, b"p"),
        to(Role::Server, 0x81, "deux, é".as_bytes()),
        // A fragmented message: gathered, then lent from the event made for it.
        to(Role::Server, 0x01, b"thr"),
        to(Role::Server, 0x80, b"ee"),
    ]
    .concat();
    let input = BytesMut::from(&stream[..]);
    let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
    let mut s = server();
    s.receive_buf(input, now());
    let mut pointers = Vec::new();
    let result = s.for_each_event(|event, replies| {
        if let EventRef::Binary(data) = event {
            pointers.push(data.as_ptr() as usize);
        }
        if let EventRef::Text(text) = event {
            pointers.push(text.as_ptr() as usize);
        }
        replies.echo().unwrap();
        ControlFlow::Continue(())
    });
    assert_eq!(result, Ok(ControlFlow::Continue(())));
    // "one" and "deux" lent out of the input itself; "three", gathered, from a buffer of its own.
    assert_eq!(pointers.len(), 3);
    assert!(range.contains(&pointers[0]) && range.contains(&pointers[1]));
    assert!(!range.contains(&pointers[2]));
    let out = frames(&take_output(&mut s));
    let sent: Vec<(u8, &[u8])> = out.iter().map(|f| (f.opcode, &f.payload[..])).collect();
    assert_eq!(
        sent,
        [
            (0x2, &b"one"[..]),
            (0xA, b"p"),
            (0x1, "deux, é".as_bytes()),
            (0x1, b"three"),
        ]
    );
}

#[test]
fn lent_events_are_the_events_poll_event_hands_out_however_the_input_is_cut() {
    let large: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let stream = [
        to(Role::Server, 0x82, b"small"),
        to(Role::Server, 0x82, &large),
        to(Role::Server, 0x8A, b"pong"),
        to(Role::Server, 0x81, "é".repeat(40).as_bytes()),
        to(Role::Server, 0x02, b"a"),
        to(Role::Server, 0x89, b"between"),
        to(Role::Server, 0x80, b"b"),
        to(Role::Server, 0x82, b""),
        to(Role::Server, 0x88, &[0x03, 0xE8, b'o', b'k']),
    ]
    .concat();
    for cut in [1, 2, 7, 100, 16_000, stream.len()] {
        for how in [Feed::Copied, Feed::Lent] {
            let (mut polled, mut lent) = (server(), server());
            let (mut expected, mut got) = (Vec::new(), Vec::new());
            for piece in stream.chunks(cut) {
                feed_by(&mut polled, piece, how);
                feed_by(&mut lent, piece, how);
                // Each echoed before the next is decoded, as the lending side does.
                while let Some(event) = polled.poll_event().unwrap() {
                    if let Event::Text(text) = &event {
                        polled.send_text(text).unwrap();
                    }
                    if let Event::Binary(data) = &event {
                        polled.send_binary(data).unwrap();
                    }
                    expected.push(event);
                }
                let (events, result) = lend_all(&mut lent);
                assert_eq!(result, Ok(ControlFlow::Continue(())));
                got.extend(events);
                assert_eq!(
                    take_output(&mut polled),
                    take_output(&mut lent),
                    "cut {cut}"
                );
            }
            assert_eq!(got, expected, "cut {cut}, {how:?}");
            assert_eq!(got.len(), 8);
            assert_eq!(lent.state(), polled.state());
            assert_eq!(lent.state(), State::Closed);
        }
    }
}

#[test]
fn a_large_message_is_echoed_out_of_the_buffer_it_arrived_in() {
    let large = vec![0x5Au8; 20_000];
    let stream = to(Role::Server, 0x82, &large);
    let input = BytesMut::from(&stream[..]);
    let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
    let mut s = server();
    s.receive_buf(input, now());
    let (got, result) = lend_all(&mut s);
    assert_eq!(result, Ok(ControlFlow::Continue(())));
    assert_eq!(got, [Event::Binary(large.clone().into())]);
    let mut parts = [IoSlice::new(&[]); 4];
    let n = s.output_parts(&mut parts);
    assert_eq!(n, 2, "the header, then the payload as a part of its own");
    assert_eq!(parts[1].len(), 20_000);
    assert!(range.contains(&(parts[1].as_ptr() as usize)), "not copied");
    assert_eq!(&parts[1][..], &large[..]);
}

#[test]
fn a_stop_leaves_the_rest_of_the_input_for_the_next_call() {
    let stream = [
        to(Role::Server, 0x82, b"1"),
        to(Role::Server, 0x82, b"2"),
        to(Role::Server, 0x82, b"3"),
    ]
    .concat();
    let mut s = server();
    s.receive_buf(BytesMut::from(&stream[..]), now());
    let mut seen = Vec::new();
    let result = s.for_each_event(|event, _| {
        seen.push(owned(event));
        ControlFlow::Break(())
    });
    assert_eq!(result, Ok(ControlFlow::Break(())));
    assert_eq!(seen, [Event::Binary(Bytes::from_static(b"1"))]);
    assert_eq!(
        s.poll_event(),
        Ok(Some(Event::Binary(Bytes::from_static(b"2"))))
    );
    let (rest, result) = lend_all(&mut s);
    assert_eq!(result, Ok(ControlFlow::Continue(())));
    assert_eq!(rest, [Event::Binary(Bytes::from_static(b"3"))]);
}

#[test]
fn a_violation_ends_lending_after_the_messages_before_it() {
    let stream = [
        to(Role::Server, 0x82, b"ok"),
        to(Role::Server, 0x81, b"bad \xFF text"),
        to(Role::Server, 0x82, b"never"),
    ]
    .concat();
    for how in [Feed::Copied, Feed::Lent] {
        let mut s = server();
        feed_by(&mut s, &stream, how);
        let (got, result) = lend_all(&mut s);
        assert_eq!(got, [Event::Binary(Bytes::from_static(b"ok"))]);
        assert_eq!(result, Err(ProtocolError::InvalidUtf8));
        // The echo, then the close frame that fails the connection.
        assert_eq!(queued_close_code(&s), Some(1007));
        let out = frames(&take_output(&mut s));
        assert_eq!(out.len(), 2);
        assert_eq!(&out[0].payload[..], b"ok");
        let (after, result) = lend_all(&mut s);
        assert!(after.is_empty());
        assert_eq!(result, Ok(ControlFlow::Continue(())), "reported once");
    }
}

#[test]
fn the_peers_close_is_lent_and_answered_and_nothing_can_be_sent_after_it() {
    let stream = [
        to(Role::Server, 0x82, b"last"),
        to(Role::Server, 0x88, &[0x03, 0xE9, b'b', b'y', b'e']),
        to(Role::Server, 0x82, b"after the close"),
    ]
    .concat();
    let mut s = server();
    s.receive_buf(BytesMut::from(&stream[..]), now());
    let mut after_close = None;
    let result = s.for_each_event(|event, replies| {
        if let EventRef::Close(close) = event {
            assert_eq!(
                close.map(|c| (c.code, c.reason.as_str())),
                Some((CloseCode::GOING_AWAY, "bye"))
            );
            assert_eq!(replies.echo(), Ok(false));
            after_close = Some(replies.send_binary(b"too late"));
        } else {
            replies.echo().unwrap();
        }
        ControlFlow::Continue(())
    });
    assert_eq!(result, Ok(ControlFlow::Continue(())));
    assert_eq!(after_close, Some(Err(ApiMisuse::AlreadyClosing)));
    let out = frames(&take_output(&mut s));
    assert_eq!(
        out.len(),
        2,
        "the echo and the answering close, nothing after"
    );
    assert_eq!(out[1].opcode, 0x8);
    assert_eq!(s.state(), State::Closed);
    assert!(s.should_close_transport());
}
