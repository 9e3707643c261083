//! Text is UTF-8 (RFC 6455 §8.1), checked as it arrives.

use bytes::{Bytes, BytesMut};

use super::pair::*;
use crate::error::ProtocolError;
use crate::message::Event;
use crate::role::Role;
use crate::Connection;

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
            let mut pool = BytesMut::from(&frame[..]);
            let mut feed_next = |conn: &mut Connection, len: usize| {
                let piece = pool.split_to(len);
                match how {
                    Feed::Copied => conn.receive_data(&piece, now()),
                    Feed::Lent => conn.receive_buf(piece, now()),
                }
                drain(conn)
            };
            // "hello" and the lead byte 0xED can still be the start of valid text.
            assert_eq!(feed_next(&mut conn, header_len + 6), (vec![], Ok(())));
            assert!(conn.output().is_empty());
            // 0xA0 after 0xED can not: fail now, with most of the frame still to come.
            assert_eq!(
                feed_next(&mut conn, 1),
                (vec![], Err(ProtocolError::InvalidUtf8)),
                "{how:?}"
            );
            assert_eq!(queued_close_code(&conn), Some(1007));
            assert_eq!(
                feed_next(&mut conn, frame.len() - header_len - 7),
                (vec![], Ok(()))
            );
        }
    }
}

#[test]
fn invalid_utf8_across_fragments_fails_on_the_first_bad_byte() {
    let mut s = server();
    feed(&mut s, &to(Role::Server, 0x01, b"a\xF0\x9F"));
    feed(&mut s, &to(Role::Server, 0x00, b"\x98"));
    let last = to(Role::Server, 0x80, b"Ab");
    // The header alone is fine; its first payload byte ends the 4-byte sequence too early.
    feed(&mut s, &last[..6]);
    assert_eq!(drain(&mut s), (vec![], Ok(())));
    feed(&mut s, &last[6..7]);
    assert_eq!(drain(&mut s), (vec![], Err(ProtocolError::InvalidUtf8)));
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
    feed(&mut s, &stream);
    assert_eq!(events(&mut s), [Event::Text("😀".into())]);
}

#[test]
fn binary_messages_are_not_checked_for_utf8() {
    let mut s = server();
    feed(&mut s, &to(Role::Server, 0x82, &[0xFF, 0xED, 0xA0]));
    assert_eq!(
        events(&mut s),
        [Event::Binary(Bytes::from_static(&[0xFF, 0xED, 0xA0]))]
    );
}
