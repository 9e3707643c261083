//! Fragmented messages (RFC 6455 §5.4).

use bytes::Bytes;

use super::pair::*;
use crate::error::ProtocolError;
use crate::frame::{CloseCode, CloseFrame};
use crate::message::Event;
use crate::role::Role;

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
        feed(&mut conn, &stream);
        assert_eq!(events(&mut conn), [Event::Binary(vec![1, 2, 3].into())]);
    }
}

#[test]
fn ping_inside_a_fragmented_message_is_answered_at_once() {
    let mut s = server();
    feed(&mut s, &to(Role::Server, 0x01, b"Hel"));
    feed(&mut s, &to(Role::Server, 0x89, b"p"));
    assert_eq!(events(&mut s), [Event::Ping(Bytes::from_static(b"p"))]);
    // Answered before the message ends.
    let pong = frames(s.output());
    assert_eq!(pong.len(), 1);
    assert_eq!((pong[0].opcode, &pong[0].payload[..]), (0xA, &b"p"[..]));
    feed(&mut s, &to(Role::Server, 0x80, b"lo"));
    assert_eq!(events(&mut s), [Event::Text("Hello".into())]);
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
    feed(&mut s, &stream);
    assert_eq!(
        events(&mut s),
        [Event::Close(Some(CloseFrame {
            code: CloseCode::GOING_AWAY,
            reason: String::new()
        }))]
    );
    assert_eq!(s.message_capacity(), 0);
}
