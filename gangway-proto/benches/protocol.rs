//! The protocol core's per-message and per-connection costs: frame header decode and encode
//! (7-, 16- and 64-bit lengths), the server side of the opening handshake for a typical browser
//! request, and a server `Connection` echoing a buffer of masked client frames fed in one
//! `receive_data` (throughput in messages).
//!
//! `cargo bench -p gangway-proto --bench protocol`

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gangway_proto::frame::FrameHeader;
use gangway_proto::handshake::{accept_key, server, Parsed};
use gangway_proto::{Config, Connection, Event, OpCode, Role};
use gangway_test_support::{Frame, KEY};

/// A complete frame as a client sends it: header, then the payload masked with `key`.
fn client_frame(opcode: OpCode, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    Frame::new(opcode.as_u8(), payload).mask(Some(key)).encode()
}

fn frame_headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_header");
    group.throughput(Throughput::Elements(1));
    for (label, payload_len) in [("7bit", 100u64), ("16bit", 1024), ("64bit", 1 << 20)] {
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask: Some(KEY),
            payload_len,
        };
        let mut encoded = [0u8; gangway_proto::frame::MAX_HEADER_LEN];
        let len = header.encode(&mut encoded);
        assert_eq!(
            FrameHeader::decode(&encoded[..len]),
            Ok(Some((header, len)))
        );
        group.bench_function(BenchmarkId::new("decode", label), |b| {
            b.iter(|| FrameHeader::decode(black_box(&encoded[..len])))
        });
        let mut out = [0u8; gangway_proto::frame::MAX_HEADER_LEN];
        group.bench_function(BenchmarkId::new("encode", label), |b| {
            b.iter(|| black_box(&header).encode(black_box(&mut out)))
        });
    }
    group.finish();
}

/// What a current desktop browser sends to open a WebSocket.
const BROWSER_REQUEST: &[u8] = b"GET /chat?room=lobby HTTP/1.1\r\n\
Host: example.com:8080\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

/// Parse and check the request and build the `101` response (no extension accepted).
fn upgrade(request: &[u8]) -> Option<Vec<u8>> {
    let Ok(Parsed::Complete(req, _)) = server::parse_request(request, 16 * 1024) else {
        return None;
    };
    let offer = server::check_request(&req).ok()?;
    Some(server::accept(&offer, None, &[]))
}

fn handshake(c: &mut Criterion) {
    let response = upgrade(BROWSER_REQUEST).expect("a valid request");
    assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_request", |b| {
        b.iter(|| server::parse_request(black_box(BROWSER_REQUEST), 16 * 1024))
    });
    group.bench_function("accept_key", |b| {
        b.iter(|| accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ==")))
    });
    group.bench_function("parse_check_accept", |b| {
        b.iter(|| upgrade(black_box(BROWSER_REQUEST)))
    });
    group.finish();
}

/// Messages per `receive_data` call in the echo benchmark: a pipelined batch, as one read from
/// a busy socket brings.
const BATCH: usize = 64;

fn echo(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo");
    group.throughput(Throughput::Elements(BATCH as u64));
    // JSON-like ASCII, and text where most characters take 2 to 4 bytes.
    let ascii_sample = "{\"seq\": 12345, \"event\": \"echo\", \"ok\": true} ".repeat(40);
    let mixed_sample = "echo ✓ κόσμε 😀 ".repeat(100);
    for (size, size_label) in [(16usize, "16B"), (1024, "1KiB")] {
        for (opcode, kind) in [
            (OpCode::Binary, "binary"),
            (OpCode::Text, "text_ascii"),
            (OpCode::Text, "text_mixed"),
        ] {
            let payload: Vec<u8> = match kind {
                "text_ascii" => ascii_sample.as_bytes()[..size].to_vec(),
                "text_mixed" => {
                    let mut end = size;
                    while !mixed_sample.is_char_boundary(end) {
                        end -= 1;
                    }
                    let mut t = mixed_sample[..end].to_string();
                    t.push_str(&" ".repeat(size - end));
                    t.into_bytes()
                }
                _ => (0..size).map(|i| i as u8).collect(),
            };
            let input: Vec<u8> = (0..BATCH)
                .flat_map(|i| client_frame(opcode, &payload, [i as u8, 0x5A, 0xA5, 0x3C]))
                .collect();
            let mut conn = Connection::new(Role::Server, Config::default());
            // One round outside the measurement, checked: every message comes back.
            let header_len = if size < 126 { 2 } else { 4 };
            assert_eq!(echo_round(&mut conn, &input), BATCH * (header_len + size));
            group.bench_function(BenchmarkId::new(kind, size_label), |b| {
                b.iter(|| echo_round(&mut conn, black_box(&input)))
            });
        }
    }
    group.finish();
}

/// Feed one batch, send every message back, and take the output as a transport would. Returns
/// the bytes written.
fn echo_round(conn: &mut Connection, input: &[u8]) -> usize {
    conn.receive_data(input, now());
    while let Some(event) = conn.poll_event().expect("valid frames") {
        match event {
            Event::Text(text) => conn.send_text(&text).expect("open"),
            Event::Binary(data) => conn.send_binary(&data).expect("open"),
            other => panic!("unexpected event {other:?}"),
        }
    }
    let written = conn.output().len();
    conn.consume_output(written);
    written
}

/// One reading of the clock for every round: the core only stores it.
fn now() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

criterion_group!(benches, frame_headers, handshake, echo);
criterion_main!(benches);
