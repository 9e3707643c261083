//! `gangway serve --broadcast` end to end: 1,000 members measured by `gangway bench --broadcast`
//! (which checks that every message arrives once and in order), and members that stop reading,
//! handled by the policy without the server's memory growing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod support;

use support::{collect, gangway_with_open_files, text, Proc, Serve, TIMEOUT};

#[test]
fn a_thousand_members_each_get_every_message_once_in_order() {
    // 1,000 connections in each process: more open files than the common default allows.
    let mut serve = Serve::start_with(
        gangway_with_open_files(4096),
        &["--broadcast", "--ping-interval", "0", "--threads", "2"],
    );
    let mut bench = Proc::spawn(
        gangway_with_open_files(4096)
            .args(["bench", &serve.url("/room"), "--broadcast", "--json"])
            .args(["--connections", "1000", "--payload", "20"])
            .args(["--duration", "1", "--warmup", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stdout = collect(bench.0.stdout.take().expect("stdout piped"));
    let stderr = collect(bench.0.stderr.take().expect("stderr piped"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = bench.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "bench did not finish in time");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = text(&stdout.join().expect("reader"));
    let err = text(&stderr.join().expect("reader"));
    // The load counts a message that is missing, duplicated or out of order (each connection
    // checks every sender's sequence, and at the end waits for every message sent) as an error,
    // and exits 1 on any.
    assert!(status.success(), "bench: {status}\n{out}\n{err}");
    assert!(out.contains("\"mode\":\"broadcast\""), "{out}");
    assert!(out.contains("\"connections\":1000"), "{out}");
    assert!(out.contains("\"errors\":0"), "{out}");
    assert!(out.contains("\"lost\":0,\"undelivered\":0"), "{out}");
    let (status, _) = serve.terminate();
    assert!(status.success());
}

/// `GET` the upgrade for `path`, then read the 101 head; the stream then carries frames.
fn join(serve: &Serve, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(serve.addr).expect("connect");
    tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        serve.addr
    )
    .expect("request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", text(&head));
    tcp
}

/// A masked binary frame (zero key: the payload is sent as it is).
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x82];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
    out
}

/// The server's resident memory, in KiB.
fn rss_kib(serve: &Serve) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", serve.proc.0.id()))
        .expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .expect("VmRSS")
}

/// Publish `count` messages of `size` bytes to `/feed` from a member (in `/feed` too) that gets
/// each batch of four back before it sends the next, while a member that reads nothing is in
/// `/feed` too. Returns the server's RSS growth in KiB.
fn flood(serve: &Serve, count: usize, size: usize) -> u64 {
    let mut publisher = join(serve, "/feed");
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(serve);
    let message = frame(&vec![b'x'; size]);
    let batch = 4;
    let mut back = vec![0u8; batch * (size + 4)];
    for _ in 0..count / batch {
        for _ in 0..batch {
            publisher.write_all(&message).expect("publish");
        }
        // The publisher's messages come back to it (it is a member of the room): every one, in
        // time, whatever the member that reads nothing does.
        publisher
            .read_exact(&mut back)
            .expect("the publisher gets its messages back");
        assert_eq!(back[..4], [0x82, 126, (size >> 8) as u8, size as u8]);
    }
    let grown = rss_kib(serve).saturating_sub(before);
    println!("{count} messages of {size} bytes published: the server grew by {grown} KiB");
    grown
}

#[test]
fn a_member_that_stops_reading_loses_its_oldest_messages_and_memory_stays_bounded() {
    let mut serve = Serve::start(&[
        "--broadcast",
        "--broadcast-queue-bytes",
        "262144",
        "--broadcast-queue-messages",
        "1000",
    ]);
    let stalled = join(&serve, "/feed");
    // 64 MiB published: the stalled member would keep 16 MiB (1,000 messages) without its
    // byte limit; with it, its kernel buffers take a few MiB, its queue 256 KiB.
    let grown = flood(&serve, 4096, 16 << 10);
    assert!(grown < 8 << 10, "the server grew by {grown} KiB");
    drop(stalled);
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
    // Its session's log line counts what it lost.
    let line = log
        .lines()
        .find(|l| l.contains("websocket ended") && !l.contains("dropped=0"))
        .unwrap_or_else(|| panic!("no session dropped anything:\n{log}"));
    let dropped: u64 = line
        .split("dropped=")
        .nth(1)
        .and_then(|d| d.split_whitespace().next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(dropped > 3000, "{line}");
}

#[test]
fn a_member_that_stops_reading_is_closed_with_1013_and_memory_stays_bounded() {
    let mut serve = Serve::start(&[
        "--broadcast",
        "--broadcast-queue-bytes",
        "262144",
        "--broadcast-when-full",
        "close",
    ]);
    let mut stalled = join(&serve, "/feed");
    // 32 MiB published, quickly: the stalled member must read the close frame before the close
    // handshake's timeout (5 s) ends its connection.
    let grown = flood(&serve, 2048, 16 << 10);
    assert!(grown < 8 << 10, "the server grew by {grown} KiB");
    // Reading at last: what was written before, then the close frame, 1013 (try again later).
    let mut all = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let close = loop {
        let n = stalled.read(&mut buf).expect("read");
        assert!(n > 0, "closed without a close frame");
        all.extend_from_slice(&buf[..n]);
        // Walk the frames received so far; the close frame is the last.
        let mut at = 0;
        let mut found = None;
        while all.len() >= at + 2 {
            let (b0, b1) = (all[at], all[at + 1] & 0x7f);
            let (len, head) = match b1 {
                126 if all.len() >= at + 4 => {
                    (u16::from_be_bytes([all[at + 2], all[at + 3]]) as usize, 4)
                }
                127 if all.len() >= at + 10 => (
                    u64::from_be_bytes(all[at + 2..at + 10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if all.len() < at + head + len {
                break;
            }
            if b0 == 0x88 {
                found = Some(all[at + head..at + head + len].to_vec());
            }
            at += head + len;
        }
        if let Some(payload) = found {
            break payload;
        }
    };
    assert_eq!(close[..2], 1013u16.to_be_bytes(), "{}", text(&close[2..]));
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
}
