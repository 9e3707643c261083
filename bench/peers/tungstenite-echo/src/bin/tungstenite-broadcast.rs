//! Broadcast server on tokio-tungstenite, written the way its users write one (axum's chat
//! example, the tokio-tungstenite chat examples): one `tokio::sync::broadcast` channel per room
//! (the URL path), and per connection two tasks: one forwards what the peer sends into the
//! channel, the other forwards what the channel carries to the peer with `send` (framed and
//! written for each message and each connection). A receiver that lags behind the channel's
//! capacity ends its connection, as in those examples (`while let Ok(..) = rx.recv().await`).
//!
//! Usage: `tungstenite-broadcast [--listen] ADDR [--capacity N]` (default 127.0.0.1:9001, a
//! channel of 65,536 messages: larger than one round of the benchmark with 5,000 members, so
//! that nobody lags there). Prints nothing but errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<Message>>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let (addr, capacity) = args();
    let listener = TcpListener::bind(addr).await?;
    let rooms: Rooms = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(connection(stream, Arc::clone(&rooms), capacity));
    }
}

async fn connection(stream: TcpStream, rooms: Rooms, capacity: usize) {
    // The load generator does not time Nagle's delays; every server here disables it.
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    let callback = |req: &Request, res: Response| {
        path = req.uri().path().to_owned();
        Ok(res)
    };
    let ws = match tokio_tungstenite::accept_hdr_async(stream, callback).await {
        Ok(ws) => ws,
        Err(e) => return eprintln!("tungstenite-broadcast: handshake: {e}"),
    };
    let tx = rooms
        .lock()
        .unwrap()
        .entry(path)
        .or_insert_with(|| broadcast::channel(capacity).0)
        .clone();
    let mut rx = tx.subscribe();
    let (mut sender, mut receiver) = ws.split();
    let mut send_task = tokio::spawn(async move {
        while let Ok(msg) = rx.recv().await {
            if sender.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut recv_task = tokio::spawn(async move {
        while let Some(Ok(msg)) = receiver.next().await {
            if msg.is_text() || msg.is_binary() {
                let _ = tx.send(msg);
            }
        }
    });
    tokio::select! {
        _ = &mut send_task => recv_task.abort(),
        _ = &mut recv_task => send_task.abort(),
    }
}

/// `[--listen] ADDR` and `--capacity N`.
fn args() -> (String, usize) {
    let mut addr = "127.0.0.1:9001".to_string();
    let mut capacity = 65_536;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => addr = args.next().expect("--listen ADDR"),
            "--capacity" => {
                capacity = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--capacity N")
            }
            other => addr = other.to_string(),
        }
    }
    (addr, capacity)
}
