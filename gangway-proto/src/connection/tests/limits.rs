//! Size limits (RFC 6455 §10.4): decided from the announced length, before anything is stored.

use gangway_test_support::header_announcing;

use super::pair::*;
use crate::error::ProtocolError;
use crate::message::Event;
use crate::role::Role;
use crate::Config;

#[test]
fn header_announcing_2_pow_62_bytes_fails_with_1009_without_allocating() {
    let mut s = server();
    feed(&mut s, &header_announcing(0x82, 1 << 62, true));
    assert_eq!(drain(&mut s).1, Err(ProtocolError::FrameTooLarge));
    assert_eq!(queued_close_code(&s), Some(1009));
    assert_eq!(s.message_capacity(), 0);
    assert_eq!(s.input.len(), 0);

    // With no frame limit, the message limit catches it just the same.
    let config = Config {
        max_frame_size: usize::MAX,
        ..Config::default()
    };
    let mut s = server_with(config);
    feed(&mut s, &header_announcing(0x81, 1 << 62, true));
    assert_eq!(drain(&mut s).1, Err(ProtocolError::MessageTooLarge));
    assert_eq!(queued_close_code(&s), Some(1009));
    assert_eq!(s.message_capacity(), 0);
}

#[test]
fn sixty_four_bit_length_with_top_bit_fails_with_1002() {
    assert_fails(
        Role::Server,
        &header_announcing(0x82, 1 << 63, true),
        ProtocolError::InvalidLength,
        1002,
    );
}

#[test]
fn a_message_is_held_only_as_its_bytes_arrive() {
    // 10 MiB announced, 1000 bytes sent: a binary frame is kept as it came, a text one gathered
    // (validated as it arrives); either way what is held is what arrived.
    for first in [0x82, 0x81] {
        let mut s = server();
        let mut stream = header_announcing(first, 10 << 20, true);
        let mut payload = [b'a'; 1000];
        gangway_test_support::apply_mask(&mut payload, KEY);
        stream.extend_from_slice(&payload);
        feed(&mut s, &stream);
        assert_eq!(s.poll_event(), Ok(None));
        assert!(s.message_capacity() < 4096, "{}", s.message_capacity());
        assert!(s.input.len() <= stream.len());
    }
}

#[test]
fn single_frame_message_arrives_whole_from_many_pieces() {
    let mut s = server();
    let payload = vec![5u8; 100_000];
    let frame = to(Role::Server, 0x82, &payload);
    let mut got = Vec::new();
    for piece in frame.chunks(1000) {
        feed(&mut s, piece);
        got.extend(events(&mut s));
    }
    assert_eq!(got, [Event::Binary(payload.into())]);
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
        feed(&mut conn, &fits);
        assert_eq!(events(&mut conn), [Event::Binary(vec![0; 1000].into())]);

        // 401 more crosses it: refused from the header, before its payload is here.
        let mut conn = endpoint_with(role, config.clone());
        feed(&mut conn, &to(role, 0x02, &[0; 600]));
        assert_eq!(drain(&mut conn), (vec![], Ok(())));
        let next = to(role, 0x80, &[0; 401]);
        let header_len = next.len() - 401;
        feed(&mut conn, &next[..header_len]);
        assert_eq!(drain(&mut conn).1, Err(ProtocolError::MessageTooLarge));
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
    feed(&mut s, &to(Role::Server, 0x82, &[1; 100]));
    assert_eq!(events(&mut s).len(), 1);
    let mut s = server_with(config);
    feed(&mut s, &to(Role::Server, 0x82, &[1; 101]));
    assert_eq!(drain(&mut s).1, Err(ProtocolError::FrameTooLarge));
    assert_eq!(queued_close_code(&s), Some(1009));
}
