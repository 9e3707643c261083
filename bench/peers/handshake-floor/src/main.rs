//! The handshake floor: the least a tokio server must do for one connect-upgrade-close cycle of
//! `gangway bench --handshakes`, so that the WebSocket servers' cost per cycle can be compared
//! with the TCP and runtime work that no WebSocket server can avoid. It is not a WebSocket server:
//! it checks nothing beyond what it needs to answer, and answers nothing but this exchange.
//!
//! Per connection, the same wire exchange as `gangway serve`:
//!
//! 1. accept (one task per connection, on a current-thread runtime: what `gangway serve` runs on
//!    one CPU);
//! 2. read up to the blank line that ends the request head;
//! 3. write a `101` with the `Sec-WebSocket-Accept` computed from the request's key (SHA-1 +
//!    base64), in one write;
//! 4. read the client's masked close frame, answer it with an unmasked close frame carrying the
//!    same payload (its status code);
//! 5. shut the write side down (FIN), then close the socket. The client has sent its close frame
//!    and sends nothing more, so nothing is left unread and the close sends no RST.
//!
//! With `--read-to-eof`, step 5 also waits for the client's FIN before closing (what
//! `gangway serve` does to avoid a reset when a client may still be sending), to price that wait.
//!
//! Anything else (no key, a head over 8 KiB, another frame first) drops the connection.
//! Nagle's algorithm is left on: when the close frame is written the `101` has been acknowledged
//! (the client's close frame carried the ACK), so nothing is held back.
//!
//! Usage: `handshake-floor [--read-to-eof] [--listen] ADDR` (default 127.0.0.1:9001).

#[path = "../../shared/websocket_key.rs"]
mod websocket_key;

use base64::Engine;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use websocket_key::websocket_key;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Larger request heads are not from the load generator.
const MAX_HEAD: usize = 8 << 10;

fn main() -> std::io::Result<()> {
    let (addr, read_to_eof) = args();
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?
        .block_on(async {
            let listener = TcpListener::bind(addr).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                tokio::spawn(async move {
                    // Resets and clients that go away are not this benchmark's business.
                    let _ = cycle(stream, read_to_eof).await;
                });
            }
        })
}

async fn cycle(mut stream: TcpStream, read_to_eof: bool) -> std::io::Result<()> {
    // Not zero-filled: `read_buf` appends into the spare capacity.
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        let searched = buf.len().saturating_sub(3);
        if stream.read_buf(&mut buf).await? == 0 || buf.len() > MAX_HEAD {
            return Ok(());
        }
        if let Some(i) = buf[searched..].windows(4).position(|w| w == b"\r\n\r\n") {
            break searched + i + 4;
        }
    };
    let Some(key) = websocket_key(&buf[..head_end]) else {
        return Ok(());
    };
    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Accept: ";
    let mut response = [0u8; HEAD.len() + 28 + 4];
    response[..HEAD.len()].copy_from_slice(HEAD);
    let digest = Sha1::new().chain_update(key).chain_update(GUID).finalize();
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(digest, &mut response[HEAD.len()..HEAD.len() + 28])
        .map_err(|_| std::io::ErrorKind::InvalidData)?;
    response[HEAD.len() + n..].copy_from_slice(b"\r\n\r\n");
    stream.write_all(&response).await?;

    // The close frame: FIN + opcode 8, masked, at most 125 bytes of payload (a control frame).
    buf.drain(..head_end);
    loop {
        if buf.len() >= 2 {
            if buf[0] != 0x88 || buf[1] & 0x80 == 0 || buf[1] & 0x7f > 125 {
                return Ok(());
            }
            if buf.len() >= 6 + usize::from(buf[1] & 0x7f) {
                break;
            }
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
    let len = usize::from(buf[1] & 0x7f);
    let mut reply = [0u8; 2 + 125];
    reply[0] = 0x88;
    reply[1] = len as u8; // at most 125
    for i in 0..len {
        reply[2 + i] = buf[6 + i] ^ buf[2 + i % 4];
    }
    stream.write_all(&reply[..2 + len]).await?;
    stream.shutdown().await?;
    if read_to_eof {
        buf.clear();
        while stream.read_buf(&mut buf).await? != 0 {
            buf.clear();
        }
    }
    Ok(())
}

/// `[--read-to-eof] [--listen] ADDR`.
fn args() -> (String, bool) {
    let mut addr = "127.0.0.1:9001".to_string();
    let mut read_to_eof = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--read-to-eof" => read_to_eof = true,
            "--listen" => addr = args.next().unwrap_or(addr),
            _ => addr = arg,
        }
    }
    (addr, read_to_eof)
}
