//! Raw TCP echo: the ceiling the WebSocket servers are measured against. So that the very same
//! load generator (and byte-for-byte the same load) can drive it, it answers the HTTP upgrade
//! minimally (a valid `101` with the right `Sec-WebSocket-Accept`), then copies every byte back
//! unchanged: no frame parsing, no unmasking, no WebSocket work at all. The client's masked frames
//! therefore come back masked; the load generator must accept masked frames from this server.
//!
//! Usage: `raw-echo [--listen] ADDR` (default 127.0.0.1:9001). Prints nothing but errors.

#[path = "../../shared/websocket_key.rs"]
mod websocket_key;

use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use websocket_key::websocket_key;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind(listen_addr()).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            // Resets and half-closed peers are routine under a load generator.
            let _ = echo(stream).await;
        });
    }
}

async fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    // One 64 KiB buffer per connection, as a plain tokio echo server would have: large enough that
    // a 64 KiB message needs few reads.
    let mut buf = vec![0u8; 64 << 10];
    let mut filled = 0;
    let head_end = loop {
        if let Some(i) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf[filled..]).await? {
            0 => return Ok(()), // closed, or no request head fits in 64 KiB
            n => filled += n,
        }
    };
    let Some(key) = websocket_key(&buf[..head_end]) else {
        return Ok(()); // not a WebSocket request: not a client of this benchmark
    };
    let accept = base64::engine::general_purpose::STANDARD
        .encode(Sha1::new().chain_update(key).chain_update(GUID).finalize());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    // Bytes that arrived with the request head are echoed like all the others.
    if filled > head_end {
        stream.write_all(&buf[head_end..filled]).await?;
    }
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
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
