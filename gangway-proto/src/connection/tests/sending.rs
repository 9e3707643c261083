//! What the application sends: checks, fragments, frame sizes.

use bytes::Bytes;

use super::pair::*;
use crate::error::ApiMisuse;
use crate::frame::CloseCode;
use crate::message::{DataKind, Event};
use crate::Config;

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
    assert_eq!(c.ended(), None);
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
    let mut pair = Pair::of(client_with(config), server());
    let text = "0123456789abcdef€xyz"; // 22 bytes; '€' straddles a frame boundary
    pair.client.send_text(text).unwrap();
    let wire = frames(pair.client.output());
    let shape: Vec<(u8, bool, usize)> = wire
        .iter()
        .map(|f| (f.opcode, f.fin, f.payload.len()))
        .collect();
    assert_eq!(shape, [(0x1, false, 10), (0x0, false, 10), (0x0, true, 2)]);
    assert_eq!(pair.deliver_to_server(), [Event::Text(text.into())]);
}

#[test]
fn fragments_with_interleaved_control_frames_arrive_as_one_message() {
    let mut pair = Pair::new();
    let c = &mut pair.client;
    let bytes = "a😀b".as_bytes();
    c.send_fragment(DataKind::Text, &bytes[..2], false).unwrap();
    c.send_ping(b"mid").unwrap();
    c.send_fragment(DataKind::Text, &bytes[2..4], false)
        .unwrap();
    c.send_fragment(DataKind::Text, &bytes[4..], true).unwrap();
    c.send_fragment(DataKind::Binary, &[1], true).unwrap();
    assert_eq!(
        pair.deliver_to_server(),
        [
            Event::Ping(Bytes::from_static(b"mid")),
            Event::Text("a😀b".into()),
            Event::Binary(Bytes::from_static(&[1])),
        ]
    );
}

#[test]
fn fragments_out_of_order_are_refused() {
    let mut pair = Pair::new();
    let c = &mut pair.client;
    c.send_fragment(DataKind::Binary, b"a", false).unwrap();
    assert_eq!(
        c.send_fragment(DataKind::Text, b"b", true),
        Err(ApiMisuse::FragmentOrder)
    );
    assert_eq!(c.send_text("x"), Err(ApiMisuse::FragmentOrder));
    assert_eq!(c.send_binary(b"x"), Err(ApiMisuse::FragmentOrder));
    c.send_fragment(DataKind::Binary, b"c", true).unwrap();
    c.send_text("after").unwrap();
    assert_eq!(
        pair.deliver_to_server(),
        [
            Event::Binary(Bytes::from_static(b"ac")),
            Event::Text("after".into())
        ]
    );
}

#[test]
fn invalid_utf8_text_fragments_are_refused_without_sending() {
    let mut pair = Pair::new();
    let c = &mut pair.client;
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
    assert_eq!(pair.deliver_to_server(), [Event::Text("ok€!".into())]);
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
