//! permessage-deflate through the builders: negotiated only when both sides are configured for it,
//! and then really used (far fewer bytes cross for compressible messages).

#![cfg(feature = "deflate")]

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gangway::{ClientBuilder, CloseCode, DeflateConfig, Message, ServerBuilder, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// A transport that counts the bytes written through it.
struct Counting {
    inner: DuplexStream,
    written: Arc<AtomicUsize>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.fetch_add(n, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A client and a server over an in-memory pipe, each with its own builder; the counters tell
/// how many bytes each side wrote, handshake included.
struct Pair {
    client: WebSocket<Counting>,
    server: WebSocket<Counting>,
    client_wrote: Arc<AtomicUsize>,
    server_wrote: Arc<AtomicUsize>,
}

async fn pair(client: ClientBuilder, server: ServerBuilder) -> Pair {
    let (a, b) = tokio::io::duplex(64 << 10);
    let (client_wrote, server_wrote) = (Arc::default(), Arc::default());
    let a = Counting {
        inner: a,
        written: Arc::clone(&client_wrote),
    };
    let b = Counting {
        inner: b,
        written: Arc::clone(&server_wrote),
    };
    let (client, server) = tokio::join!(client.connect_on(a), server.accept(b));
    Pair {
        client: client.unwrap().0,
        server: server.unwrap(),
        client_wrote,
        server_wrote,
    }
}

fn client() -> ClientBuilder {
    ClientBuilder::new("ws://localhost/").unwrap()
}

/// Text that compresses well, like JSON: `len` bytes of it, give or take 64.
fn compressible(len: usize) -> String {
    let mut text = String::with_capacity(len);
    let mut i = 0u32;
    while text.len() < len - 64 {
        text.push_str(&format!("{{\"id\":{i},\"name\":\"gangway\",\"ok\":true}},"));
        i += 1;
    }
    text
}

/// Send `message` from the client, echo it from the server, and check it came back unchanged.
/// Each send runs beside the receive: a large message does not fit in the pipe.
async fn round_trip(p: &mut Pair, message: Message) {
    let (sent, got) = tokio::join!(p.client.send(message.clone()), p.server.next());
    sent.unwrap();
    let got = got.unwrap().unwrap();
    assert_eq!(got, message);
    let (sent, back) = tokio::join!(p.server.send(got), p.client.next());
    sent.unwrap();
    assert_eq!(back.unwrap().unwrap(), message);
}

async fn close(mut p: Pair) {
    let (closed, end) = tokio::join!(p.client.close(CloseCode::NORMAL, ""), p.server.next());
    closed.unwrap();
    assert!(end.is_none());
}

fn bounded<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout(Duration::from_secs(60), f)
}

#[tokio::test]
async fn deflate_is_negotiated_and_shrinks_what_crosses() {
    bounded(async {
        let mut p = pair(
            client().deflate(DeflateConfig::default()),
            ServerBuilder::new().deflate(DeflateConfig::default()),
        )
        .await;
        assert!(p.client.uses_deflate());
        assert!(p.server.uses_deflate());
        let text = compressible(1 << 20);
        let (client_before, server_before) = (
            p.client_wrote.load(Ordering::Relaxed),
            p.server_wrote.load(Ordering::Relaxed),
        );
        round_trip(&mut p, Message::text(text.clone())).await;
        let client_sent = p.client_wrote.load(Ordering::Relaxed) - client_before;
        let server_sent = p.server_wrote.load(Ordering::Relaxed) - server_before;
        // Uncompressed, each way would take more than 1 MiB.
        assert!(
            client_sent < text.len() / 10,
            "client wrote {client_sent} bytes"
        );
        assert!(
            server_sent < text.len() / 10,
            "server wrote {server_sent} bytes"
        );
        // Small and binary messages too, and the same text again (context takeover).
        round_trip(&mut p, Message::text("hi")).await;
        round_trip(&mut p, Message::binary(vec![7u8; 100_000])).await;
        round_trip(&mut p, Message::text(text)).await;
        close(p).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn deflate_is_off_unless_both_sides_ask_for_it() {
    bounded(async {
        for (client_on, server_on) in [(false, false), (true, false), (false, true)] {
            let mut c = client();
            if client_on {
                c = c.deflate(DeflateConfig::default());
            }
            let mut s = ServerBuilder::new();
            if server_on {
                s = s.deflate(DeflateConfig::default());
            }
            let mut p = pair(c, s).await;
            assert!(!p.client.uses_deflate(), "{client_on} {server_on}");
            assert!(!p.server.uses_deflate(), "{client_on} {server_on}");
            let text = compressible(1 << 20);
            let before = p.client_wrote.load(Ordering::Relaxed);
            round_trip(&mut p, Message::text(text.clone())).await;
            assert!(p.client_wrote.load(Ordering::Relaxed) - before > text.len());
            close(p).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn every_parameter_combination_round_trips() {
    bounded(async {
        let text = compressible(200_000);
        for server_no_context_takeover in [false, true] {
            for client_no_context_takeover in [false, true] {
                for (server_bits, client_bits) in [
                    (None, None),
                    (Some(9), Some(9)),
                    (Some(12), Some(15)),
                    (Some(8), Some(8)),
                ] {
                    let mut offer = DeflateConfig::default();
                    offer.server_no_context_takeover = server_no_context_takeover;
                    offer.client_no_context_takeover = client_no_context_takeover;
                    offer.server_max_window_bits = server_bits;
                    offer.client_max_window_bits = client_bits;
                    let mut p = pair(
                        client().deflate(offer.clone()),
                        ServerBuilder::new().deflate(DeflateConfig::default()),
                    )
                    .await;
                    assert!(p.client.uses_deflate(), "{offer:?}");
                    for _ in 0..2 {
                        round_trip(&mut p, Message::text(text.clone())).await;
                        round_trip(&mut p, Message::binary(vec![1u8; 70_000])).await;
                    }
                    close(p).await;
                }
            }
        }
    })
    .await
    .unwrap();
}
