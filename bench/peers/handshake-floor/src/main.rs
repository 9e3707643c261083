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
//! With `--echo` it is the floor of the echo scenarios instead: after the `101` it echoes every
//! data frame until the close frame, doing only what no WebSocket echo can skip. Per read of the
//! socket, each whole frame's header is decoded (FIN, opcode, mask bit, 7-, 16- or 64-bit
//! length), its payload unmasked into the answer behind an unmasked header, and the answers of
//! the whole read go out in one write. It checks nothing else (no UTF-8 validation, no
//! fragmentation rules, no limits) and has no API between the frames and the answers: the
//! distance between the raw TCP echo and it is what the WebSocket framing itself costs.
//!
//! Usage: `handshake-floor [--read-to-eof] [--echo] [--listen] ADDR` (default 127.0.0.1:9001).

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
    let (addr, read_to_eof, echo) = args();
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?
        .block_on(async {
            let listener = TcpListener::bind(addr).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                tokio::spawn(async move {
                    // Resets and clients that go away are not this benchmark's business.
                    let _ = cycle(stream, read_to_eof, echo).await;
                });
            }
        })
}

async fn cycle(mut stream: TcpStream, read_to_eof: bool, echo: bool) -> std::io::Result<()> {
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

    buf.drain(..head_end);
    if echo {
        echo_frames(&mut stream, &mut buf).await?;
    }
    // The close frame: FIN + opcode 8, masked, at most 125 bytes of payload (a control frame).
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

thread_local! {
    /// One read buffer and one answer buffer for every connection of the (single) thread, as
    /// `gangway serve` shares its read buffer: per-connection buffers of a window's size each
    /// would not stay in the cache with many connections.
    static BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        std::cell::RefCell::new((vec![0; 256 << 10], Vec::with_capacity(256 << 10)));
}

/// `--echo`: echo whole data frames (FIN set, masked, opcode 1 or 2) until the first other
/// frame, which is left at the start of `buf` (the close frame, answered by the caller). `buf`
/// keeps only what a read left over (the start of a frame), the shared buffers the rest.
async fn echo_frames(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut unsent = Vec::new();
    loop {
        if !unsent.is_empty() {
            stream.write_all(&unsent).await?;
            unsent.clear();
        }
        if buf.len() >= 2 && !((buf[0] == 0x81 || buf[0] == 0x82) && buf[1] & 0x80 != 0) {
            // Another frame: the close frame, or something this floor does not serve.
            return Ok(());
        }
        stream.readable().await?;
        let eof = BUFFERS.with(|b| -> std::io::Result<bool> {
            let (input, out) = &mut *b.borrow_mut();
            // `input` is never shorter than 256 KiB: what was left over, then the read.
            let kept = buf.len();
            if input.len() < kept + (64 << 10) {
                input.resize(kept + (256 << 10), 0);
            }
            input[..kept].copy_from_slice(buf);
            let n = match stream.try_read(&mut input[kept..]) {
                Ok(0) => return Ok(true),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            let input = &input[..kept + n];
            let pos = answer(input, out);
            buf.clear();
            buf.extend_from_slice(&input[pos..]);
            let written = match stream.try_write(out) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            unsent.extend_from_slice(&out[written..]);
            out.clear();
            Ok(false)
        })?;
        if eof {
            return Ok(());
        }
    }
}

/// Append to `out` the answers to the whole data frames at the start of `input`; returns how
/// many bytes of `input` they took.
fn answer(input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut pos = 0;
    while let Some((header_len, len)) = data_frame(&input[pos..]) {
        let Some(end) = (pos + header_len).checked_add(len).filter(|&e| e <= input.len()) else {
            break;
        };
        let key = [input[pos + header_len - 4], input[pos + header_len - 3],
            input[pos + header_len - 2], input[pos + header_len - 1]];
        out.push(input[pos]);
        if len < 126 {
            out.push(len as u8);
        } else if len < 65536 {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let start = out.len();
        out.extend_from_slice(&input[pos + header_len..end]);
        unmask(&mut out[start..], key);
        pos = end;
    }
    pos
}

/// XOR `data` with the repeated `key`, 32 bytes at a time (which the compiler turns into vector
/// instructions), then byte by byte.
fn unmask(data: &mut [u8], key: [u8; 4]) {
    let mut wide = [0u8; 32];
    for (i, b) in wide.iter_mut().enumerate() {
        *b = key[i % 4];
    }
    let mut chunks = data.chunks_exact_mut(32);
    for c in &mut chunks {
        for (b, k) in c.iter_mut().zip(wide) {
            *b ^= k;
        }
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// A whole-message, masked data frame's header at the start of `b`: (header length, payload
/// length); `None` for another frame or a header not all there.
fn data_frame(b: &[u8]) -> Option<(usize, usize)> {
    if b.len() < 2 || (b[0] != 0x81 && b[0] != 0x82) || b[1] & 0x80 == 0 {
        return None;
    }
    let (ext, len) = match b[1] & 0x7f {
        126 => (2, usize::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?))),
        127 => (8, usize::try_from(u64::from_be_bytes(b.get(2..10)?.try_into().ok()?)).ok()?),
        n => (0, usize::from(n)),
    };
    let header_len = 2 + ext + 4;
    (b.len() >= header_len).then_some((header_len, len))
}

/// `[--read-to-eof] [--echo] [--listen] ADDR`.
fn args() -> (String, bool, bool) {
    let mut addr = "127.0.0.1:9001".to_string();
    let mut read_to_eof = false;
    let mut echo = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--read-to-eof" => read_to_eof = true,
            "--echo" => echo = true,
            "--listen" => addr = args.next().unwrap_or(addr),
            _ => addr = arg,
        }
    }
    (addr, read_to_eof, echo)
}
