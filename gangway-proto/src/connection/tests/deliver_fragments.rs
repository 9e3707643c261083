//! Delivering messages piece by piece as they arrive (`Config::deliver_fragments`).

use bytes::Bytes;
use gangway_test_support::{apply_mask, header_announcing};

use super::pair::*;
use crate::error::ProtocolError;
use crate::message::{DataKind, Event};
use crate::role::Role;
use crate::Config;

fn fragments_config() -> Config {
    Config {
        deliver_fragments: true,
        ..Config::default()
    }
}

/// The fragment events among `events`: (kind, data, fin); other events are left out.
fn fragments(events: &[Event]) -> Vec<(DataKind, Vec<u8>, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Fragment { kind, data, fin } => Some((*kind, data.to_vec(), *fin)),
            _ => None,
        })
        .collect()
}

#[test]
fn fragments_are_delivered_in_order_as_they_arrive() {
    let mut s = server_with(fragments_config());
    let mut c = client();
    c.send_fragment(DataKind::Binary, b"first", false).unwrap();
    c.send_ping(b"p").unwrap();
    c.send_fragment(DataKind::Binary, b"", false).unwrap();
    c.send_fragment(DataKind::Binary, b"second", true).unwrap();
    c.send_binary(b"whole").unwrap();
    let wire = take_output(&mut c);
    // One byte at a time: a piece per payload byte, nothing held back.
    let mut got = Vec::new();
    for byte in wire.chunks(1) {
        feed(&mut s, byte);
        got.extend(events(&mut s));
    }
    let ping_at = got
        .iter()
        .position(|e| matches!(e, Event::Ping(_)))
        .unwrap();
    let first_piece_at = got
        .iter()
        .position(|e| matches!(e, Event::Fragment { .. }))
        .unwrap();
    assert!(first_piece_at < ping_at, "the ping came after `first`");
    let pieces = fragments(&got);
    assert_eq!(pieces.len(), "firstsecond".len() + "whole".len());
    assert!(pieces
        .iter()
        .all(|(kind, data, _)| *kind == DataKind::Binary && data.len() == 1));
    let fins: Vec<usize> = (0..pieces.len()).filter(|&i| pieces[i].2).collect();
    assert_eq!(fins, [10, 15], "fin on the last byte of each message only");
    let bytes: Vec<u8> = pieces.iter().flat_map(|p| p.1.clone()).collect();
    assert_eq!(bytes, b"firstsecondwhole");
}

#[test]
fn whole_frames_in_one_read_come_as_one_piece_each() {
    let mut pair = Pair::of(client(), server_with(fragments_config()));
    pair.client
        .send_fragment(DataKind::Text, "héllo ".as_bytes(), false)
        .unwrap();
    pair.client
        .send_fragment(DataKind::Text, "wörld".as_bytes(), true)
        .unwrap();
    assert_eq!(
        pair.deliver_to_server(),
        [
            Event::Fragment {
                kind: DataKind::Text,
                data: Bytes::from("héllo "),
                fin: false
            },
            Event::Fragment {
                kind: DataKind::Text,
                data: Bytes::from("wörld"),
                fin: true
            },
        ]
    );
}

#[test]
fn empty_message_is_one_empty_final_piece() {
    let mut pair = Pair::of(client(), server_with(fragments_config()));
    pair.client.send_text("").unwrap();
    assert_eq!(
        pair.deliver_to_server(),
        [Event::Fragment {
            kind: DataKind::Text,
            data: Bytes::new(),
            fin: true
        }]
    );
}

#[test]
fn text_pieces_split_only_at_code_point_boundaries() {
    let text = "a€😀ñ".repeat(50);
    let mut c = client();
    c.send_text(&text).unwrap();
    let wire = take_output(&mut c);
    for cut in [1, 2, 3, 5, 7] {
        let mut s = server_with(fragments_config());
        let mut pieces = Vec::new();
        for chunk in wire.chunks(cut) {
            feed(&mut s, chunk);
            pieces.extend(fragments(&events(&mut s)));
        }
        let mut joined = String::new();
        for (kind, data, _) in &pieces {
            assert_eq!(*kind, DataKind::Text);
            // Each piece is valid UTF-8 on its own.
            joined.push_str(std::str::from_utf8(data).unwrap());
        }
        assert_eq!(joined, text, "cut every {cut} bytes");
        assert!(pieces.last().unwrap().2);
        assert!(pieces.len() > 10, "{} pieces", pieces.len());
    }
}

#[test]
fn invalid_utf8_fails_fast_when_delivering_fragments() {
    let mut s = server_with(fragments_config());
    // A text frame announcing 1000 bytes; the bad byte is in the first few.
    let mut head = header_announcing(0x81, 1000, true);
    let mut payload = b"ok\xC0".to_vec();
    apply_mask(&mut payload, KEY);
    head.extend_from_slice(&payload[..2]);
    feed(&mut s, &head);
    // What arrived before the fault was delivered already.
    assert_eq!(
        fragments(&events(&mut s)),
        [(DataKind::Text, b"ok".to_vec(), false)]
    );
    // The bad byte fails the connection at once (1007), long before the frame's end, and the
    // piece that holds it is not delivered.
    feed(&mut s, &payload[2..]);
    assert_eq!(drain(&mut s), (vec![], Err(ProtocolError::InvalidUtf8)));
    assert_eq!(queued_close_code(&s), Some(1007));
}

#[test]
fn text_ending_inside_a_code_point_fails_when_delivering_fragments() {
    let mut s = server_with(fragments_config());
    feed(&mut s, &to(Role::Server, 0x81, b"ab\xE2\x82"));
    // The final piece is refused whole: no piece claims the message ended well.
    assert_eq!(drain(&mut s), (vec![], Err(ProtocolError::InvalidUtf8)));
    assert_eq!(queued_close_code(&s), Some(1007));
}

#[test]
fn message_limit_counts_pieces_already_delivered() {
    let mut config = fragments_config();
    config.max_message_size = 10;
    let mut s = server_with(config);
    let mut c = client();
    c.send_fragment(DataKind::Binary, &[1; 6], false).unwrap();
    let (got, result) = pump(&mut c, &mut s);
    assert_eq!(result, Ok(()));
    assert_eq!(fragments(&got), [(DataKind::Binary, vec![1; 6], false)]);
    // 6 delivered + 5 announced > 10: refused from the header, before any byte is read.
    c.send_fragment(DataKind::Binary, &[2; 5], true).unwrap();
    assert_eq!(
        pump(&mut c, &mut s),
        (vec![], Err(ProtocolError::MessageTooLarge))
    );
    assert_eq!(queued_close_code(&s), Some(1009));
}

#[test]
fn delivering_fragments_holds_no_message_buffer_between_pieces() {
    let mut s = server_with(fragments_config());
    let mut head = header_announcing(0x82, 1 << 20, true);
    let mut payload = vec![7u8; 4096];
    apply_mask(&mut payload, KEY);
    head.extend_from_slice(&payload);
    feed(&mut s, &head);
    assert_eq!(fragments(&events(&mut s)).len(), 1);
    assert_eq!(s.message_capacity(), 0, "the piece took the buffer");
}
