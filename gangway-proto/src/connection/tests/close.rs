//! The close handshake (RFC 6455 §5.5.1, §7) and the end of the transport.

use bytes::Bytes;

use super::pair::*;
use crate::error::{ApiMisuse, ProtocolError};
use crate::frame::{CloseCode, CloseFrame};
use crate::message::{DataKind, Event};
use crate::role::Role;
use crate::{End, State};

#[test]
fn close_codes_0_to_5000_are_accepted_exactly_when_sendable() {
    for code in 0u16..=5000 {
        let mut s = server();
        feed(&mut s, &to(Role::Server, 0x88, &close_payload(code, b"r")));
        let (got, result) = drain(&mut s);
        if CloseCode(code).is_sendable() {
            assert_eq!(result, Ok(()), "{code}");
            let expected = CloseFrame {
                code: CloseCode(code),
                reason: "r".into(),
            };
            assert_eq!(got, [Event::Close(Some(expected))], "{code}");
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
    feed(&mut c, &to(Role::Client, 0x88, &[]));
    assert_eq!(events(&mut c), [Event::Close(None)]);
    assert_eq!(c.peer_close(), Some(&None));
    assert_eq!(close_in(c.output()), Some(None));
}

#[test]
fn client_close_is_echoed_and_the_server_closes_the_transport() {
    let mut pair = Pair::new();
    pair.client.send_close(CloseCode(4000), "bye").unwrap();
    assert_eq!(pair.client.state(), State::Closing);
    assert_eq!(pair.client.ended(), None);
    assert_eq!(
        pair.client.send_close(CloseCode::NORMAL, ""),
        Err(ApiMisuse::AlreadyClosing)
    );
    let expected = CloseFrame {
        code: CloseCode(4000),
        reason: "bye".into(),
    };
    assert_eq!(
        pair.deliver_to_server(),
        [Event::Close(Some(expected.clone()))]
    );
    let s = &pair.server;
    assert_eq!(s.peer_close(), Some(&Some(expected.clone())));
    assert_eq!(s.state(), State::Closed);
    assert_eq!(s.ended(), Some(End::Clean));
    assert_eq!(queued_close_code(s), Some(4000));
    // §7.1.1: the server closes TCP first, once its close frame is written.
    assert!(s.should_close_transport());

    assert_eq!(pair.deliver_to_client(), [Event::Close(Some(expected))]);
    let c = &mut pair.client;
    assert_eq!(c.state(), State::Closed);
    assert_eq!(c.ended(), Some(End::Clean));
    assert!(c.output().is_empty(), "a close is not answered twice");
    // The client waits for the server's EOF.
    assert!(!c.should_close_transport());
    c.receive_eof();
    assert!(c.should_close_transport());
    assert_eq!(c.poll_event(), Ok(None));
    pair.server.receive_eof();
    assert_eq!(pair.server.poll_event(), Ok(None));
}

#[test]
fn server_initiated_close_leaves_the_client_waiting_for_eof() {
    let mut pair = Pair::new();
    pair.server
        .send_close(CloseCode::GOING_AWAY, "restart")
        .unwrap();
    assert_eq!(pair.server.state(), State::Closing);
    assert!(!pair.server.should_close_transport());
    feed(&mut pair.client, &take_output(&mut pair.server));
    // The close is decoded, and answered, when the application asks for it.
    assert_eq!(pair.client.state(), State::Open);
    assert_eq!(queued_close_code(&pair.client), None);
    assert!(matches!(
        events(&mut pair.client)[..],
        [Event::Close(Some(_))]
    ));
    assert_eq!(pair.client.state(), State::Closed);
    assert!(!pair.client.should_close_transport());
    assert_eq!(queued_close_code(&pair.client), Some(1001));
    assert_eq!(
        pair.deliver_to_server(),
        [Event::Close(Some(CloseFrame {
            code: CloseCode::GOING_AWAY,
            reason: "restart".into()
        }))]
    );
    assert_eq!(pair.server.state(), State::Closed);
    assert!(pair.server.should_close_transport());
}

#[test]
fn a_client_that_saw_eof_with_the_close_frame_waits_no_more() {
    let mut c = client();
    feed(&mut c, &to(Role::Client, 0x88, &close_payload(1000, b"")));
    c.receive_eof();
    assert!(matches!(events(&mut c)[..], [Event::Close(Some(_))]));
    assert_eq!(c.ended(), Some(End::Clean));
    assert!(c.should_close_transport(), "the server already closed");
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
    feed(&mut s, &stream);
    feed(&mut s, &to(Role::Server, 0x89, b"later"));
    assert_eq!(events(&mut s).len(), 1, "only the close");
    assert_eq!(s.input.len(), 0, "the rest is dropped");
    let out = frames(s.output());
    assert_eq!(out.len(), 1, "no pong after close: {out:?}");
    assert_eq!(out[0].opcode, 0x8);
}

#[test]
fn after_our_close_data_still_arrives_but_pings_get_no_pong() {
    let mut s = server();
    s.send_close(CloseCode::NORMAL, "").unwrap();
    let sent = take_output(&mut s);
    feed(&mut s, &to(Role::Server, 0x81, b"in flight"));
    feed(&mut s, &to(Role::Server, 0x89, b"p"));
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
        conn.receive_eof();
        assert_eq!(conn.poll_event(), Err(ProtocolError::UnexpectedEof));
        assert_eq!(conn.state(), State::Closed);
        assert_eq!(
            conn.ended(),
            Some(End::Failed(ProtocolError::UnexpectedEof))
        );
        assert!(conn.should_close_transport());
        assert!(conn.output().is_empty(), "1006 is never sent");
        conn.receive_eof();
        assert_eq!(conn.poll_event(), Ok(None), "reported once");

        // Our close sent, the peer's never came.
        let mut conn = endpoint(role);
        conn.send_close(CloseCode::NORMAL, "").unwrap();
        conn.receive_eof();
        assert_eq!(conn.poll_event(), Err(ProtocolError::UnexpectedEof));
        assert_eq!(conn.state(), State::Closed);

        // Messages before the end are handed out first.
        let mut conn = endpoint(role);
        feed(&mut conn, &to(role, 0x81, b"last words"));
        conn.receive_eof();
        assert_eq!(
            drain(&mut conn),
            (
                vec![Event::Text("last words".into())],
                Err(ProtocolError::UnexpectedEof)
            )
        );
    }
}

#[test]
fn eof_in_the_middle_of_a_frame_is_unexpected() {
    let mut s = server();
    feed(&mut s, &to(Role::Server, 0x81, b"Hello")[..4]);
    s.receive_eof();
    assert_eq!(drain(&mut s), (vec![], Err(ProtocolError::UnexpectedEof)));
}

#[test]
fn messages_before_a_close_can_still_be_answered() {
    // A client sends two messages and its close in one burst; an echo server that answers each
    // message as it takes it must get the echoes out before its close frame.
    let mut pair = Pair::new();
    pair.client.send_text("a").unwrap();
    pair.client.send_text("b").unwrap();
    pair.client.send_close(CloseCode::NORMAL, "").unwrap();
    feed(&mut pair.server, &take_output(&mut pair.client));
    while let Ok(Some(event)) = pair.server.poll_event() {
        if let Event::Text(t) = event {
            pair.server.send_text(&t).unwrap();
        }
    }
    assert!(pair.server.should_close_transport());
    assert_eq!(
        pair.deliver_to_client(),
        [
            Event::Text("a".into()),
            Event::Text("b".into()),
            Event::Close(Some(CloseFrame {
                code: CloseCode::NORMAL,
                reason: String::new()
            }))
        ]
    );
    assert_eq!(pair.client.state(), State::Closed);
}
