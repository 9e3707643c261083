//! The output: parts written from their own buffers, consumed in pieces; and memory: buffers
//! kept while busy, given back while idle, the struct's own size.

use std::sync::Arc;

use bytes::Bytes;

use super::pair::*;
use crate::connection::output::MAX_RETAINED_OUTPUT;
use crate::connection::receive::Spill;
use crate::connection::send::SHARED_MIN_LEN;
use crate::connection::{timers, SpareBuffers};
use crate::frame::CloseCode;
use crate::message::{DataKind, Event};
use crate::role::Role;
use crate::text::Utf8Bytes;
use crate::{Config, Connection};

#[test]
fn output_is_consumed_in_pieces() {
    let mut s = server();
    s.send_text("abc").unwrap();
    let all = s.output().to_vec();
    s.consume_output(2);
    assert_eq!(s.output(), &all[2..]);
    s.send_text("def").unwrap();
    assert_eq!(&s.output()[..all.len() - 2], &all[2..]);
    let rest = s.output().len();
    s.consume_output(rest);
    assert!(s.output().is_empty());
}

/// What a connection of `role` with `config` writes for `sends`, each message sent with the
/// `shared` API or copied; the output is consumed `step` bytes at a time (0: all of it at once,
/// through [`Connection::output_parts`]), with more messages queued between the steps.
fn output_of_sends(
    role: Role,
    config: &Config,
    sends: &[(DataKind, Vec<u8>)],
    shared: bool,
    step: usize,
) -> Vec<u8> {
    let mut conn = endpoint_with(role, config.clone());
    let mut written = Vec::new();
    let consume = |conn: &mut Connection, written: &mut Vec<u8>| {
        if step == 0 {
            let mut parts = [std::io::IoSlice::new(&[]); 64];
            let n = conn.output_parts(&mut parts);
            let total: usize = parts[..n].iter().map(|p| p.len()).sum();
            assert_eq!(total, conn.output_len(), "every part fits in 64");
            for part in &parts[..n] {
                written.extend_from_slice(part);
            }
            conn.consume_output(total);
        } else {
            // Not past the first part: a caller writing `output()` alone does that.
            let n = step.min(conn.output().len());
            written.extend_from_slice(&conn.output()[..n]);
            conn.consume_output(n);
        }
    };
    for (i, (kind, data)) in sends.iter().enumerate() {
        match (kind, shared) {
            (DataKind::Binary, true) => conn.send_binary_shared(Bytes::from(data.clone())),
            (DataKind::Binary, false) => conn.send_binary(data),
            (DataKind::Text, true) => {
                conn.send_text_shared(Utf8Bytes::try_from(Bytes::from(data.clone())).unwrap())
            }
            (DataKind::Text, false) => conn.send_text(std::str::from_utf8(data).unwrap()),
        }
        .unwrap();
        if i % 3 == 2 {
            conn.send_ping(b"between").unwrap();
            // Some of what is queued is written before the next message.
            consume(&mut conn, &mut written);
        }
    }
    while conn.output_len() > 0 {
        consume(&mut conn, &mut written);
    }
    assert!(conn.output().is_empty());
    assert!(conn.output.is_empty(), "written payloads are dropped");
    written
}

#[test]
fn shared_payloads_go_out_exactly_as_copied_ones() {
    let sends: Vec<(DataKind, Vec<u8>)> = [
        0usize,
        100,
        SHARED_MIN_LEN - 1,
        SHARED_MIN_LEN,
        20_000,
        70_000,
        5,
        2000,
        65_536,
    ]
    .iter()
    .enumerate()
    .map(|(i, &len)| {
        if i % 2 == 0 {
            (
                DataKind::Binary,
                (0..len).map(|b| (b * 13 + i) as u8).collect(),
            )
        } else {
            (DataKind::Text, "ü".repeat(len / 2).into_bytes())
        }
    })
    .collect();
    let split = Config {
        max_send_frame_size: 3000,
        ..Config::default()
    };
    for role in ROLES {
        for config in [Config::default(), split.clone()] {
            let expected = output_of_sends(role, &config, &sends, false, 0);
            for step in [0, 1, 7, 1000, 100_000] {
                assert!(
                    output_of_sends(role, &config, &sends, true, step) == expected,
                    "{role:?}, frames of at most {}, step {step}",
                    config.max_send_frame_size
                );
            }
            // And the peer reads the messages back.
            let mut peer = endpoint(peer_of(role));
            feed(&mut peer, &expected);
            let messages: Vec<Event> = events(&mut peer)
                .into_iter()
                .filter(|e| !matches!(e, Event::Ping(_)))
                .collect();
            assert_eq!(messages.len(), sends.len());
        }
    }
}

#[test]
fn a_server_sends_large_payloads_from_the_shared_buffer() {
    let payload = Bytes::from(vec![9u8; 20_000]);
    let mut s = server();
    s.send_binary(b"first").unwrap();
    s.send_binary_shared(payload.clone()).unwrap();
    s.send_binary_shared(Bytes::from_static(b"small: copied"))
        .unwrap();
    let mut parts = [std::io::IoSlice::new(&[]); 8];
    let n = s.output_parts(&mut parts);
    // "first" and the next header, the payload itself, then the small frame.
    assert_eq!(n, 3);
    assert_eq!(parts[1].as_ptr(), payload.as_ptr(), "not copied");
    assert_eq!(parts[0].len(), 7 + 4);
    assert_eq!(parts[2].len(), 2 + 13);
    assert_eq!(s.output_len(), 7 + 4 + 20_000 + 15);
    // `output()` stops before the payload, then is the payload.
    assert_eq!(s.output().len(), 11);
    s.consume_output(11);
    assert_eq!(s.output().as_ptr(), payload.as_ptr());
    // Only parts fitting in `dst` are given.
    let mut one = [std::io::IoSlice::new(&[]); 1];
    assert_eq!(s.output_parts(&mut one), 1);
    assert_eq!(one[0].len(), 20_000);
    // Releasing buffers keeps what is not written.
    s.release_buffers();
    assert_eq!(s.output_len(), 20_015);
    s.consume_output(20_015);
    assert_eq!(s.output_len(), 0);
    // The last reference to the payload is ours again: the connection dropped its own.
    assert!(payload.is_unique());
}

#[test]
#[should_panic(expected = "past the")]
fn consuming_more_output_than_there_is_panics() {
    let mut s = server();
    s.send_text("abc").unwrap();
    s.consume_output(6);
}

#[test]
fn slow_writer_does_not_grow_the_output_without_bound() {
    let mut s = server();
    for _ in 0..10_000 {
        s.send_binary(&[0; 100]).unwrap();
        s.consume_output(100);
    }
    // Each round adds 102 bytes and writes 100: only the unwritten bytes are kept (plus slack).
    let buffered = s.output.buffered();
    assert!(buffered <= 2 * s.output().len() + 102, "{buffered}");
}

#[test]
fn automatic_answers_left_unsent_pause_the_input() {
    // A peer that pings and never reads: past 64 KiB of unsent pongs, the caller is told to
    // stop reading until the output drains.
    let mut s = server();
    let ping = to(Role::Server, 0x89, &[0x55; 125]);
    let mut pings = 0;
    while !s.input_paused() {
        feed(&mut s, &ping);
        assert_eq!(events(&mut s).len(), 1);
        pings += 1;
    }
    assert_eq!(pings, (64 << 10) / 127 + 1);
    // The application's own messages do not count.
    let mut busy = server();
    busy.send_binary(&vec![0; 1 << 20]).unwrap();
    assert!(!busy.input_paused());
    // Written out: reading goes on.
    let waiting = s.output_len();
    s.consume_output(waiting - 1);
    assert!(s.input_paused(), "not all of it");
    s.consume_output(1);
    assert!(!s.input_paused());
}

/// Heap bytes a connection holds in its buffers.
fn heap_bytes(conn: &Connection) -> usize {
    conn.output.capacity()
        + conn.message_capacity()
        + conn.input_capacity()
        + conn
            .spill
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<Spill>())
}

#[test]
fn idle_connection_holds_almost_no_memory() {
    let mut pair = Pair::new();
    assert_eq!(heap_bytes(&pair.client) + heap_bytes(&pair.server), 0);
    let big = vec![7u8; 1 << 20];
    for _ in 0..3 {
        pair.client.send_binary(&big).unwrap();
        pair.client.send_ping(b"x").unwrap();
        for event in pair.deliver_to_server() {
            if let Event::Binary(b) = event {
                pair.server.send_binary(&b).unwrap();
            }
        }
        assert_eq!(pair.deliver_to_client().len(), 2, "pong and the echo");
    }
    for conn in [&pair.client, &pair.server] {
        assert!(heap_bytes(conn) <= 2048, "{}", heap_bytes(conn));
        assert!(std::mem::size_of_val(conn) <= MAX_CONNECTION_SIZE);
    }
}

/// The most a [`Connection`] may take inline (184 bytes with permessage-deflate built in, 176
/// without). It sits in every connection's task, idle or not, so at 10,000 connections each byte
/// here is 10 kB; and a server's task must stay within tokio's 384-byte allocation class (the
/// future at most 280 bytes, the `WebSocket` around this included, which is exactly where it
/// is). This bound keeps it from growing.
const MAX_CONNECTION_SIZE: usize = 184;

#[test]
fn connection_struct_is_small() {
    let size = std::mem::size_of::<Connection>();
    println!(
        "size_of::<Connection>() = {size} bytes (config {}, timers {}, input {}, output {}; out \
         of line while needed: Spill {})",
        std::mem::size_of::<Arc<Config>>(),
        std::mem::size_of::<timers::Timers>(),
        std::mem::size_of::<crate::connection::receive::Input>(),
        std::mem::size_of::<crate::connection::output::Output>(),
        std::mem::size_of::<Spill>(),
    );
    assert!(
        size <= MAX_CONNECTION_SIZE,
        "{size} > {MAX_CONNECTION_SIZE}"
    );
}

#[test]
fn idle_connection_keeps_no_buffer_after_small_messages() {
    // Small buffers are released too once the connection goes idle: kept per connection, they
    // would add up over thousands of idle connections.
    let mut pair = Pair::new();
    for size in [1, 100, 1000] {
        pair.client.send_text(&"a".repeat(size)).unwrap();
        pair.client.send_ping(b"x").unwrap();
        for event in pair.deliver_to_server() {
            if let Event::Text(t) = event {
                pair.server.send_text(&t).unwrap();
            }
        }
        assert_eq!(pair.deliver_to_client().len(), 2, "pong and the echo");
        // Busy, they keep their buffers for the next burst...
        assert!(
            heap_bytes(&pair.server) > 0,
            "server after {size}-byte messages"
        );
        // ...until the adapter sees the transport idle.
        pair.client.release_buffers();
        pair.server.release_buffers();
        assert_eq!(
            heap_bytes(&pair.client),
            0,
            "client after {size}-byte messages"
        );
        assert_eq!(
            heap_bytes(&pair.server),
            0,
            "server after {size}-byte messages"
        );
    }
}

#[test]
fn the_spill_is_there_only_while_a_message_is_gathered() {
    let mut pair = Pair::new();
    let c = &mut pair.client;
    c.send_ping(b"ping").unwrap();
    c.send_fragment(DataKind::Text, b"he", false).unwrap();
    c.send_fragment(DataKind::Text, b"llo", true).unwrap();
    c.send_binary(&[9; 200]).unwrap();
    let wire = take_output(c);
    // Frames on the wire (masked client frames, headers of 6 and 8 bytes): the ping ends at 10,
    // the first fragment's header at 16, the last fragment at 27, the binary frame at 235.
    let s = &mut pair.server;
    let mut got = Vec::new();
    // Byte by byte: a control frame and a single-frame message are kept in the input until they
    // are whole, and need no spill; the fragmented message is gathered in it, from its first
    // header to its last byte.
    for (i, byte) in wire.iter().enumerate() {
        feed(s, std::slice::from_ref(byte));
        got.extend(events(s));
        let gathering = (16..27).contains(&(i + 1));
        assert_eq!(s.spill.is_some(), gathering, "after byte {}", i + 1);
    }
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[1], Event::Text("hello".into()));
    // The peer's close frame stays on record (in the spill) for the rest of the connection.
    pair.client.send_close(CloseCode::NORMAL, "bye").unwrap();
    pair.deliver_to_server();
    pair.server.release_buffers();
    assert!(pair.server.spill.is_some());
    let close = pair
        .server
        .peer_close()
        .cloned()
        .flatten()
        .expect("a close frame with a code");
    assert_eq!(
        (close.code, close.reason.as_str()),
        (CloseCode::NORMAL, "bye")
    );
}

#[test]
fn idle_connections_hand_their_buffers_to_the_next_busy_one() {
    let mut spare = SpareBuffers::default();
    let (mut c, mut a, mut b) = (client(), server(), server());
    c.send_binary(b"one").unwrap();
    c.send_binary(b"two").unwrap();
    let wire = c.output().to_vec();
    feed(&mut a, &wire);
    // Not idle yet: input waits, and the answer is not written.
    assert_eq!(
        a.poll_event(),
        Ok(Some(Event::Binary(Bytes::from_static(b"one"))))
    );
    a.send_binary(b"one").unwrap();
    a.release_buffers_into(&mut spare);
    assert!(spare.is_empty(), "nothing is taken from a busy connection");
    assert_eq!(
        a.poll_event(),
        Ok(Some(Event::Binary(Bytes::from_static(b"two"))))
    );
    let out_at = a.output().as_ptr();
    a.consume_output(a.output_len());
    a.release_buffers_into(&mut spare);
    assert!(
        !a.holds_spare_buffers() && heap_bytes(&a) == 0,
        "idle: holds nothing"
    );
    assert!(!spare.is_empty());
    // The next connection to read takes them: the same allocation, no new one.
    b.reuse_buffers(&mut spare);
    assert!(spare.is_empty());
    feed(&mut b, &wire);
    assert_eq!(events(&mut b).len(), 2);
    b.send_binary(b"x").unwrap();
    assert_eq!(b.output().as_ptr(), out_at);
    assert_eq!(b.output(), [0x82, 1, b'x']);
    // A large output buffer is freed, not kept for the others.
    b.send_binary(&vec![0; 1 << 20]).unwrap();
    b.consume_output(b.output_len());
    b.release_buffers_into(&mut spare);
    assert!(spare.is_empty());
    assert_eq!(heap_bytes(&b), 0);
}

/// Echo every message `conn`'s input holds, and return how many there were.
fn echo_all(conn: &mut Connection) -> usize {
    let mut n = 0;
    for event in events(conn) {
        match event {
            Event::Text(t) => conn.send_text(&t).unwrap(),
            Event::Binary(b) => conn.send_binary(&b).unwrap(),
            other => panic!("{other:?}"),
        }
        n += 1;
    }
    n
}

#[test]
fn busy_connection_reuses_its_buffers_between_batches() {
    let mut c = client();
    for i in 0..16u8 {
        c.send_binary(&[i; 16]).unwrap();
    }
    let batch = take_output(&mut c);
    let mut s = server();
    feed(&mut s, &batch);
    assert_eq!(echo_all(&mut s), 16);
    take_output(&mut s);
    let (out_ptr, out_cap) = (s.output.buffer_ptr(), s.output.capacity());
    let (in_ptr, in_cap) = (s.input_ptr(), s.input_capacity());
    assert!(out_cap >= 16 * 18, "{out_cap}");
    assert!(in_cap >= batch.len(), "{in_cap}");
    for _ in 0..10 {
        feed(&mut s, &batch);
        assert_eq!(echo_all(&mut s), 16);
        let echoed = take_output(&mut s);
        assert_eq!(frames(&echoed).len(), 16);
        // The same allocations, neither freed nor grown: no buffer allocated per batch.
        assert_eq!(
            (s.output.buffer_ptr(), s.output.capacity()),
            (out_ptr, out_cap)
        );
        assert_eq!(s.input_capacity(), in_cap);
        assert_eq!(s.input_ptr(), in_ptr);
    }
    s.release_buffers();
    assert_eq!(heap_bytes(&s), 0);
    // Allocated again by the next message.
    feed(&mut s, &batch);
    assert_eq!(echo_all(&mut s), 16);
    assert_eq!(frames(s.output()).len(), 16);
}

#[test]
fn release_buffers_keeps_what_is_not_written_or_handed_out() {
    let mut c = client();
    c.send_text("one").unwrap();
    c.send_text("two").unwrap();
    let mut s = server();
    feed(&mut s, &take_output(&mut c));
    s.send_binary(b"queued").unwrap();
    s.consume_output(3);
    s.release_buffers();
    assert_eq!(s.output().len(), 8 - 3);
    assert_eq!(
        s.output(),
        &[0x82, 6, b'q', b'u', b'e', b'u', b'e', b'd'][3..]
    );
    assert_eq!(
        events(&mut s),
        [Event::Text("one".into()), Event::Text("two".into())]
    );
    // A message half received survives too, kept or gathered.
    for first in [0x82, 0x81] {
        let frame = to(Role::Server, first, &[b'9'; 100]);
        feed(&mut s, &frame[..50]);
        assert_eq!(s.poll_event(), Ok(None));
        s.release_buffers();
        feed(&mut s, &frame[50..]);
        assert_eq!(events(&mut s).len(), 1);
    }
}

#[test]
fn large_buffers_are_freed_once_drained_without_release() {
    let mut s = server();
    s.send_binary(&vec![1; MAX_RETAINED_OUTPUT + 1]).unwrap();
    take_output(&mut s);
    assert_eq!(s.output.capacity(), 0);
    // The same for a large input buffer once everything in it was handed out.
    let mut c = client();
    for _ in 0..2000 {
        c.send_ping(b"").unwrap();
    }
    let pings = take_output(&mut c);
    assert!(pings.len() > MAX_RETAINED_OUTPUT / 10);
    feed(&mut s, &pings.repeat(10));
    assert_eq!(events(&mut s).len(), 20_000);
    assert_eq!(s.input_capacity(), 0);
}
