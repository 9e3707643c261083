//! Memory per idle WebSocket over HTTP/2 (RFC 8441) on a server: opens `N` HTTP/2 connections
//! (prior knowledge, `ws://`) with one WebSocket each, lets them sit idle, and reads the server's
//! resident set size (`VmRSS` of `/proc/PID/status`, Linux) before and after. Then it checks one
//! echo on every WebSocket, so each was really open, and closes them.
//!
//! ```sh
//! cargo build --release -p gangway-cli && cargo build --release -p gangway --example http2_idle
//! # 10,000 connections need more than 10,000 open files on each side (`ulimit -n`).
//! target/release/gangway serve --listen 127.0.0.1:9001 --ping-interval 0 --idle-timeout 0 &
//! target/release/examples/http2_idle ws://127.0.0.1:9001/ 10000 $!
//! ```
//!
//! Prints `idle http/2 websockets: N, server RSS before: X KiB, after: Y KiB, per connection: Z
//! bytes`. Each connection is one TCP connection with one stream: the cost of HTTP/2's own state
//! (its buffers and header tables) comes on top of the WebSocket's.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gangway::http2::Http2Connection;
use gangway::{ClientBuilder, Message};

fn rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(n), Some(pid)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: http2_idle URL N SERVER_PID");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N: a number");
    let pid: u32 = pid.parse().expect("SERVER_PID: a number");
    let builder = ClientBuilder::new(&url).expect("a ws:// URL");

    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let conn = Http2Connection::connect(&builder)
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        let (ws, response) = conn
            .websocket(&url)
            .await
            .unwrap_or_else(|e| panic!("websocket {i}: {e}"));
        assert_eq!(response.status(), 200);
        open.push((conn, ws));
    }
    // Idle: whatever the handshakes left behind is released or kept for good by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    println!(
        "idle http/2 websockets: {n}, server RSS before: {before} KiB, after: {after} KiB, per \
         connection: {} bytes",
        (after.saturating_sub(before) * 1024) / n as u64
    );

    for (i, (_, ws)) in open.iter_mut().enumerate() {
        let text = format!("still here {i}");
        ws.send(Message::text(text.clone())).await.expect("send");
        let echo = loop {
            match ws.next().await.expect("an echo").expect("no error") {
                Message::Ping(_) | Message::Pong(_) => continue,
                other => break other,
            }
        };
        assert_eq!(echo, Message::text(text));
    }
    println!("every websocket echoed once");
    for (_, ws) in &mut open {
        let _ = ws.close(gangway::CloseCode::NORMAL, "").await;
    }
}
