//! Masking, reserved bits and opcodes, control frame rules (RFC 6455 §5.1–§5.5).

use super::pair::*;
use crate::error::ProtocolError;
use crate::frame::CloseCode;
use crate::message::DataKind;
use crate::role::Role;

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
        let keys: Vec<Option<[u8; 4]>> = wire.iter().map(|f| f.mask).collect();
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
        assert!(wire.iter().all(|f| f.rsv == 0));
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
            // Even when it is the only byte received so far.
            let mut conn = endpoint(role);
            feed(&mut conn, &[0x80 | opcode]);
            assert_eq!(
                conn.poll_event(),
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
        feed(&mut conn, &to(role, 0x89, &[b'z'; 125]));
        assert_eq!(events(&mut conn).len(), 1);
        assert_eq!(frames(conn.output())[0].payload, [b'z'; 125]);
    }
}
