//! WebSocket echo server on tokio-tungstenite, set up as its own echo example does: one task per
//! connection, `accept_async`, and the read half forwarded into the write half (text and binary
//! only). Reading a Ping or a Close queues the Pong or the Close reply inside tungstenite, which
//! sends it with the next write or flush.
//!
//! Usage: `tungstenite-echo [--listen] ADDR` (default 127.0.0.1:9001). Prints nothing but errors.

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind(listen_addr()).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(echo(stream));
    }
}

async fn echo(stream: TcpStream) {
    // The load generator does not time Nagle's delays; every server here disables it.
    let _ = stream.set_nodelay(true);
    let ws = match tokio_tungstenite::accept_async(stream).await {
        Ok(ws) => ws,
        Err(e) => return eprintln!("tungstenite-echo: handshake: {e}"),
    };
    let (write, read) = ws.split();
    // `forward` feeds every ready message and flushes only when the read side has nothing more,
    // which batches the pipelined echoes into few writes.
    let result = read
        .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await;
    if let Err(e) = result {
        use tokio_tungstenite::tungstenite::{error::ProtocolError, Error};
        // A client that vanishes without a close handshake is routine under a load generator.
        let routine = matches!(
            e,
            Error::ConnectionClosed
                | Error::AlreadyClosed
                | Error::Io(_)
                | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        );
        if !routine {
            eprintln!("tungstenite-echo: {e}");
        }
    }
}

/// `--listen ADDR` or a positional `ADDR`.
fn listen_addr() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, addr] if flag == "--listen" => addr.clone(),
        [addr] => addr.clone(),
        _ => "127.0.0.1:9001".to_string(),
    }
}
