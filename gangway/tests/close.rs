//! Ending connections over loopback: the close handshake in both directions, its timeout,
//! protocol errors, and a peer that stops reading.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    bounded, close_code, listener, masked_frame, pair, read_frame, read_head, request_head,
};
use futures_util::{SinkExt, StreamExt};
use gangway::proto::ProtocolError;
use gangway::{CloseCode, CloseFrame, Error, Message, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server `WebSocket` and a raw TCP client that completed the handshake with it.
async fn server_with_raw_client() -> (WebSocket<TcpStream>, TcpStream) {
    let (listener, _) = listener().await;
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        gangway::accept(tcp).await.unwrap()
    });
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(request_head("").as_bytes()).await.unwrap();
    let head = read_head(&mut raw).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (accepting.await.unwrap(), raw)
}

#[tokio::test]
async fn client_close_ends_the_server_stream_with_the_close_frame() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        let serving = tokio::spawn(async move {
            assert!(
                server.next().await.is_none(),
                "a clean close is not an error"
            );
            server
        });
        client.close(CloseCode::NORMAL, "bye").await.unwrap();
        let server = serving.await.unwrap();
        let expected = CloseFrame {
            code: CloseCode::NORMAL,
            reason: "bye".into(),
        };
        assert_eq!(server.close_frame(), Some(&Some(expected)));
        // The server answered with the same code (RFC 6455 §5.5.1).
        let answer = client.close_frame().unwrap().as_ref().unwrap();
        assert_eq!(answer.code, CloseCode::NORMAL);
        // The close handshake is over for the client too.
        assert!(client.next().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn server_closes_the_tcp_connection_after_the_close_handshake() {
    bounded(async {
        let (mut server, mut raw) = server_with_raw_client().await;
        let closing =
            tokio::spawn(async move { server.close(CloseCode::GOING_AWAY, "shutdown").await });
        let (first, payload) = read_frame(&mut raw).await;
        assert_eq!(first, 0x88);
        assert_eq!(close_code(&payload), 1001);
        assert_eq!(&payload[2..], b"shutdown");
        raw.write_all(&masked_frame(0x8, &payload[..2]))
            .await
            .unwrap();
        // RFC 6455 §7.1.1: the server closes TCP first; the client only has to read the EOF.
        let mut rest = Vec::new();
        raw.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        closing.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn client_stream_ends_after_the_servers_close() {
    bounded(async {
        let (mut client, mut server) = pair().await;
        let serving =
            tokio::spawn(async move { server.close(CloseCode::GOING_AWAY, "restart").await });
        assert!(client.next().await.is_none());
        let frame = client.close_frame().unwrap().as_ref().unwrap();
        assert_eq!(
            (frame.code, frame.reason.as_str()),
            (CloseCode::GOING_AWAY, "restart")
        );
        serving.await.unwrap().unwrap();
        // Calling close after the peer closed only finishes: nothing is sent, no error.
        client.close(CloseCode::NORMAL, "").await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn client_close_stops_waiting_for_the_servers_eof_at_the_close_timeout() {
    bounded(async {
        let (listener, url) = listener().await;
        // A server that answers the close frame but never closes the TCP connection.
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let head = read_head(&mut tcp).await;
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let accept = gangway::proto::handshake::accept_key(key.as_bytes());
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            tcp.write_all(response.as_bytes()).await.unwrap();
            let (first, payload) = read_frame(&mut tcp).await;
            assert_eq!(first, 0x88);
            tcp.write_all(&common::unmasked_frame(0x8, &payload))
                .await
                .unwrap();
            tcp
        });
        let (mut client, _) = gangway::ClientBuilder::new(&url)
            .unwrap()
            .close_timeout(Duration::from_millis(300))
            .connect()
            .await
            .unwrap();
        let started = Instant::now();
        client.close(CloseCode::NORMAL, "").await.unwrap();
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        // The client then closed its side.
        let mut tcp = server.await.unwrap();
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    })
    .await;
}

#[tokio::test]
async fn close_times_out_when_the_peer_never_answers() {
    bounded(async {
        let (mut server, mut raw) = server_with_raw_client().await;
        server.set_close_timeout(Duration::from_millis(200));
        let closing = tokio::spawn(async move { server.close(CloseCode::NORMAL, "").await });
        let (first, _) = read_frame(&mut raw).await;
        assert_eq!(first, 0x88);
        // No answer from the client.
        let result = closing.await.unwrap();
        assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    })
    .await;
}

#[tokio::test]
async fn unmasked_frame_from_the_client_fails_with_1002() {
    bounded(async {
        let (mut server, mut raw) = server_with_raw_client().await;
        raw.write_all(&masked_frame(0x1, b"before")).await.unwrap();
        raw.write_all(&common::unmasked_frame(0x1, b"unmasked"))
            .await
            .unwrap();
        // Messages before the violation are delivered, then the error, then the end.
        assert_eq!(
            server.next().await.unwrap().unwrap(),
            Message::text("before")
        );
        match server.next().await {
            Some(Err(Error::Protocol(ProtocolError::UnmaskedFrame))) => {}
            other => panic!("expected the protocol error, got {other:?}"),
        }
        assert!(server.next().await.is_none());
        // RFC 6455 §5.1, §7.1.7: the close frame says why, then the connection is closed.
        let (first, payload) = read_frame(&mut raw).await;
        assert_eq!(first, 0x88);
        assert_eq!(close_code(&payload), 1002);
        let mut rest = Vec::new();
        raw.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    })
    .await;
}

#[tokio::test]
async fn lost_connection_is_an_unexpected_eof() {
    bounded(async {
        let (mut server, raw) = server_with_raw_client().await;
        drop(raw);
        match server.next().await {
            Some(Err(Error::Protocol(ProtocolError::UnexpectedEof))) => {}
            other => panic!("expected an unexpected eof, got {other:?}"),
        }
        assert!(server.next().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn sending_waits_when_the_peer_does_not_read() {
    bounded(async {
        let (mut server, raw) = server_with_raw_client().await;
        let sent = Arc::new(AtomicUsize::new(0));
        let sending = {
            let sent = Arc::clone(&sent);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![0u8; 64 << 10]);
                // Capped, so that a broken bound fails the test instead of exhausting memory.
                for _ in 0..1024 {
                    // `feed` does not flush: only the bounded write buffer can make it wait.
                    server.feed(Message::binary(chunk.clone())).await.unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                    // Let the timer run even if `feed` never waits.
                    tokio::task::yield_now().await;
                }
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after_1s = sent.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after_2s = sent.load(Ordering::Relaxed);
        eprintln!("sends completed: {after_1s} after 1 s, {after_2s} after 2 s");
        // Kernel buffers take some megabytes; our own buffer only the high-water mark. Without
        // the bound, a loopback peer would accept gigabytes in 2 s.
        assert!(
            after_2s * (64 << 10) < 32 << 20,
            "{after_2s} sends completed"
        );
        assert_eq!(
            after_1s, after_2s,
            "sends kept completing though nobody reads"
        );
        sending.abort();
        drop(raw);
    })
    .await;
}

/// A raw server that answers the upgrade, then runs `script` on the TCP connection; then it
/// aborts the connection with a reset (SO_LINGER 0), as the Autobahn testsuite's server does
/// after every close handshake.
async fn resetting_server<F, Fut>(script: F) -> (String, tokio::task::JoinHandle<()>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = TcpStream> + Send,
{
    let (listener, url) = listener().await;
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let head = read_head(&mut tcp).await;
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .trim()
            .to_owned();
        let accept = gangway::proto::handshake::accept_key(key.as_bytes());
        tcp.write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let tcp = script(tcp).await;
        tcp.set_zero_linger().unwrap();
        drop(tcp);
    });
    (url, task)
}

#[tokio::test]
async fn a_reset_after_the_close_handshake_the_server_started_is_a_clean_end() {
    bounded(async {
        let (url, server) = resetting_server(|mut tcp| async move {
            tcp.write_all(&[0x88, 0x02, 0x03, 0xe8]).await.unwrap();
            let (first, payload) = read_frame(&mut tcp).await;
            assert_eq!((first, close_code(&payload)), (0x88, 1000));
            tcp
        })
        .await;
        let (mut ws, _) = gangway::connect(&url).await.unwrap();
        // RFC 6455 §7.1.4: both close frames crossed, so the connection closed cleanly; the
        // reset that follows instead of a FIN changes nothing.
        assert!(ws.next().await.is_none(), "a clean end, not an error");
        assert_eq!(
            ws.close_frame().cloned().flatten().map(|f| f.code),
            Some(CloseCode::NORMAL)
        );
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_reset_after_the_close_handshake_the_client_started_is_a_clean_end() {
    bounded(async {
        let (url, server) = resetting_server(|mut tcp| async move {
            let (first, payload) = read_frame(&mut tcp).await;
            assert_eq!((first, close_code(&payload)), (0x88, 1000));
            tcp.write_all(&[0x88, 0x02, 0x03, 0xe8]).await.unwrap();
            tcp
        })
        .await;
        let (mut ws, _) = gangway::connect(&url).await.unwrap();
        ws.close(CloseCode::NORMAL, "")
            .await
            .expect("a clean close");
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_reset_before_the_close_handshake_completes_is_still_an_error() {
    bounded(async {
        // The server resets without any close frame: the connection is lost, not closed.
        let (url, server) = resetting_server(|tcp| async move { tcp }).await;
        let (mut ws, _) = gangway::connect(&url).await.unwrap();
        match ws.next().await {
            Some(Err(Error::Io(e))) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}")
            }
            Some(Err(Error::Protocol(ProtocolError::UnexpectedEof))) => {}
            other => panic!("a reset with no close frame is a lost connection: {other:?}"),
        }
        server.await.unwrap();
    })
    .await;
}
