//! Failing the connection (RFC 6455 §7.1.7): the events before a violation, the close frame
//! after them, nothing after that.

use bytes::Bytes;

use super::messages::mixed_stream;
use super::pair::*;
use crate::error::{ApiMisuse, ProtocolError};
use crate::frame::CloseCode;
use crate::message::Event;
use crate::random::{RandomSource, SeededRandom};
use crate::role::Role;
use crate::{End, State};

#[test]
fn events_before_a_violation_are_handed_out_first() {
    let mut s = server();
    let stream = [
        to(Role::Server, 0x81, b"first"),
        to(Role::Server, 0x89, b"p"),
        to(Role::Server, 0x83, b"bad"),
        to(Role::Server, 0x81, b"never"),
    ]
    .concat();
    feed(&mut s, &stream);
    assert_eq!(
        drain(&mut s),
        (
            vec![
                Event::Text("first".into()),
                Event::Ping(Bytes::from_static(b"p"))
            ],
            Err(ProtocolError::ReservedOpcode(3))
        )
    );
    let out = frames(s.output());
    assert_eq!(out.len(), 2, "the pong, then the close");
    assert_eq!(out[0].opcode, 0xA);
    assert_eq!(
        s.ended(),
        Some(End::Failed(ProtocolError::ReservedOpcode(3)))
    );
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
    feed(&mut s, &stream);
    assert_eq!(s.poll_event(), Ok(Some(Event::Text("first".into()))));
    // The violation is not reached yet: the connection is open and takes the answer.
    assert_eq!(s.state(), State::Open);
    assert!(!s.should_close_transport());
    assert_eq!(s.send_text("first"), Ok(()));
    assert_eq!(s.poll_event(), Err(ProtocolError::ReservedBits));
    assert_eq!(s.state(), State::Closed);
    let out = frames(s.output());
    assert_eq!(out.len(), 2, "the echo, then the close");
    assert_eq!(out[0].opcode, 0x1);
    assert_eq!(queued_close_code(&s), Some(1002));
    assert!(s.should_close_transport());
    assert_eq!(s.send_text("late"), Err(ApiMisuse::AlreadyClosing));
}

#[test]
fn input_after_a_failure_is_ignored_and_the_error_reported_once() {
    let mut s = server();
    feed(&mut s, &raw(0x81, b"x", None));
    assert!(drain(&mut s).1.is_err());
    let output = s.output().to_vec();
    feed(&mut s, &to(Role::Server, 0x81, b"later"));
    feed(&mut s, &raw(0x81, b"again", None));
    assert_eq!(drain(&mut s), (vec![], Ok(())));
    assert_eq!(s.output(), output);
    assert_eq!(s.send_text("x"), Err(ApiMisuse::AlreadyClosing));
    s.receive_eof();
    assert_eq!(s.poll_event(), Ok(None));
}

#[test]
fn failure_close_reason_is_the_error_text() {
    let mut c = client();
    feed(&mut c, &raw(0x81, b"x", Some(KEY)));
    assert!(drain(&mut c).1.is_err());
    let close = close_in(c.output()).unwrap().unwrap();
    assert_eq!(close.code, CloseCode::PROTOCOL_ERROR);
    assert_eq!(close.reason, ProtocolError::MaskedFrame.to_string());
}

#[test]
fn failure_after_our_close_queues_no_second_close() {
    let mut s = server();
    s.send_close(CloseCode::NORMAL, "").unwrap();
    feed(&mut s, &raw(0x81, b"x", None));
    assert_eq!(drain(&mut s).1, Err(ProtocolError::UnmaskedFrame));
    assert_eq!(frames(s.output()).len(), 1);
    assert_eq!(queued_close_code(&s), Some(1000));
    assert_eq!(s.state(), State::Closed);
}

#[test]
fn close_reason_is_truncated_at_a_character_boundary() {
    use crate::connection::truncate_at_char;
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
        let how = if round % 3 == 0 {
            Feed::Lent
        } else {
            Feed::Copied
        };
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
            feed_by(&mut conn, piece, how);
            if let (_, Err(e)) = drain(&mut conn) {
                assert!(!failed, "error reported twice");
                failed = true;
                assert_eq!(queued_close_code(&conn), Some(e.close_code().0), "{e:?}");
            }
        }
        conn.receive_eof();
        let _ = drain(&mut conn);
        assert_eq!(conn.state(), State::Closed);
        assert!(conn.ended().is_some());
    }
}
