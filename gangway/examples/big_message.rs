//! A 1 GiB message through a streaming echo on loopback, in bounded memory.
//!
//! The client generates the message on the fly and sends it in 256 KiB pieces
//! ([`gangway::Message::Fragment`] on the sink half); the server receives it piece by piece
//! ([`WebSocket::recv_fragment`], with `Config::deliver_fragments`) and sends each piece straight
//! back ([`WebSocket::send_fragment`]); the client checks the echo against a checksum. No side
//! ever holds the message. At the end it prints the peak resident memory of the whole process
//! (both ends), VmHWM from `/proc/self/status`.
//!
//! ```text
//! cargo run --release -p gangway --example big_message [MiB]
//! ```

use std::time::Instant;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gangway::{ClientBuilder, CloseCode, Config, DataKind, Fragment, Message, ServerBuilder};
use tokio::net::TcpListener;

/// Size of each piece the client sends.
const PIECE: usize = 256 << 10;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: u64 = std::env::args().nth(1).map_or(Ok(1024), |a| a.parse())?;
    let total = mib << 20;
    let mut config = Config::default();
    config.deliver_fragments = true;
    config.max_message_size = usize::MAX;
    config.max_frame_size = usize::MAX;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/", listener.local_addr()?);
    let server_config = config.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut ws = ServerBuilder::new()
            .config(server_config)
            .accept(tcp)
            .await?;
        let mut largest = 0;
        while let Some(piece) = ws.recv_fragment().await {
            let piece = piece?;
            largest = largest.max(piece.data.len());
            ws.send_fragment(piece.kind, piece.data, piece.fin).await?;
        }
        Ok::<_, gangway::Error>(largest)
    });

    let (client, _) = ClientBuilder::new(&url)?.config(config).connect().await?;
    let (mut tx, mut rx) = client.split();
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let mut sum = Checksum::default();
        let mut sent = 0;
        while sent < total {
            let len = PIECE.min(usize::try_from(total - sent).unwrap_or(PIECE));
            let data: Bytes = (sent..sent + len as u64).map(byte_at).collect();
            sum.update(&data);
            sent += len as u64;
            let piece = Fragment {
                kind: DataKind::Binary,
                data,
                fin: sent == total,
            };
            tx.feed(Message::Fragment(piece)).await?;
        }
        tx.flush().await?;
        Ok::<_, gangway::Error>((tx, sum.0))
    });

    let mut sum = Checksum::default();
    let mut received = 0u64;
    let mut largest = 0;
    loop {
        match rx.next().await {
            Some(Ok(Message::Fragment(piece))) => {
                // The pattern is checked byte by byte: a lost or repeated piece shows at once.
                if piece
                    .data
                    .iter()
                    .zip(received..)
                    .any(|(&b, i)| b != byte_at(i))
                {
                    return Err(format!("wrong bytes in the piece at {received}").into());
                }
                sum.update(&piece.data);
                received += piece.data.len() as u64;
                largest = largest.max(piece.data.len());
                if piece.fin {
                    break;
                }
            }
            other => return Err(format!("expected a fragment, got {other:?}").into()),
        }
    }
    let elapsed = started.elapsed();
    let (tx, sent_sum) = sender.await??;
    let mut client = rx.reunite(tx)?;
    client.close(CloseCode::NORMAL, "").await?;
    let server_largest = server.await??;

    if received != total || sum.0 != sent_sum {
        return Err(format!("echo mismatch: {received} of {total} bytes").into());
    }
    println!(
        "echoed one {mib} MiB message in {:.1} s ({:.0} MiB/s each way), checksum {:016x} ok",
        elapsed.as_secs_f64(),
        mib as f64 / elapsed.as_secs_f64(),
        sum.0
    );
    println!(
        "largest piece received: client {} KiB, server {} KiB",
        largest >> 10,
        server_largest >> 10
    );
    println!(
        "peak RSS of the process (client and server): {}",
        peak_rss()
    );
    Ok(())
}

/// Byte `i` of the message: cheap to generate, and a lost, repeated or reordered piece breaks it.
fn byte_at(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// FNV-1a over the message, 64-bit.
struct Checksum(u64);

impl Default for Checksum {
    fn default() -> Self {
        Checksum(0xcbf2_9ce4_8422_2325)
    }
}

impl Checksum {
    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// VmHWM from `/proc/self/status` (Linux), or a note that it is unknown.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned()))
        })
        .unwrap_or_else(|| "unknown (no /proc/self/status)".to_owned())
}
