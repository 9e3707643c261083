//! Peers that stop responding, over loopback with short real timeouts: keepalive pings, a dead
//! peer dropped at the idle timeout, a live one kept past it, and a peer that never reads
//! dropped at the write timeout.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{bounded, listener, read_frame, read_head, request_head};
use futures_util::{SinkExt, StreamExt};
use gangway::proto::TimeoutError;
use gangway::{ClientBuilder, CloseCode, Error, MaybeTlsStream, Message, ServerBuilder, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PING: Duration = Duration::from_millis(100);
const IDLE: Duration = Duration::from_millis(350);

/// A server built by `server` and a raw TCP client that completed the handshake with it.
async fn server_with_raw_client(server: ServerBuilder) -> (WebSocket<TcpStream>, TcpStream) {
    let (listener, _) = listener().await;
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp).await.unwrap()
    });
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(request_head("").as_bytes()).await.unwrap();
    let head = read_head(&mut raw).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (accepting.await.unwrap(), raw)
}

/// A client built by `client` and a raw TCP server that answered its handshake.
async fn client_with_raw_server(
    client: impl FnOnce(ClientBuilder) -> ClientBuilder,
) -> (WebSocket<MaybeTlsStream>, TcpStream) {
    let (listener, url) = listener().await;
    let serving = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let head = read_head(&mut tcp).await;
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .expect("key header");
        let accept = gangway::proto::handshake::accept_key(key.as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        tcp.write_all(response.as_bytes()).await.unwrap();
        tcp
    });
    let (ws, _) = client(ClientBuilder::new(&url).unwrap())
        .connect()
        .await
        .unwrap();
    (ws, serving.await.unwrap())
}

/// Read frames until EOF (or a reset): their first bytes.
async fn frames_until_eof(raw: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = raw.read_to_end(&mut all).await;
    let mut firsts = Vec::new();
    let mut rest = &all[..];
    // Server frames here are short and unmasked: two header bytes, then the payload.
    while rest.len() >= 2 {
        firsts.push(rest[0]);
        let len = usize::from(rest[1] & 0x7f);
        rest = &rest[(2 + len).min(rest.len())..];
    }
    firsts
}

#[tokio::test]
async fn dead_peer_is_dropped_at_the_idle_timeout_without_a_close_frame() {
    bounded(async {
        let server = ServerBuilder::new().ping_interval(PING).idle_timeout(IDLE);
        let started = Instant::now();
        // The raw client completes the handshake, then neither sends nor answers anything.
        let (mut ws, mut raw) = server_with_raw_client(server).await;
        match ws.next().await {
            Some(Err(Error::Unresponsive(TimeoutError::Idle))) => {}
            other => panic!("expected an idle timeout, got {other:?}"),
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed >= IDLE && elapsed < IDLE + Duration::from_secs(1),
            "{elapsed:?}"
        );
        assert!(ws.next().await.is_none(), "the stream ends after the error");
        drop(ws);
        // What the dead peer would have received: pings, no close frame (1006), then EOF.
        let firsts = frames_until_eof(&mut raw).await;
        assert!(firsts.len() >= 2, "{firsts:x?}");
        assert!(firsts.iter().all(|&b| b == 0x89), "{firsts:x?}");
    })
    .await;
}

#[tokio::test]
async fn live_peer_that_answers_pings_stays_past_the_idle_timeout() {
    bounded(async {
        let (mut client, mut server) = common::pair_with(
            |c| c,
            ServerBuilder::new().ping_interval(PING).idle_timeout(IDLE),
        )
        .await;
        // The client answers pings while its stream is polled, as applications do.
        let client_task = tokio::spawn(async move {
            let mut pings = 0;
            while let Some(msg) = client.next().await {
                match msg.unwrap() {
                    Message::Ping(_) => pings += 1,
                    Message::Text(t) => client.send(Message::Text(t)).await.unwrap(),
                    other => panic!("unexpected {other:?}"),
                }
            }
            pings
        });
        // Three idle timeouts of application silence: only pongs to our pings arrive.
        let quiet = tokio::time::sleep(IDLE * 3);
        tokio::pin!(quiet);
        let mut pongs = 0;
        loop {
            tokio::select! {
                _ = &mut quiet => break,
                msg = server.next() => match msg {
                    Some(Ok(Message::Pong(_))) => pongs += 1,
                    other => panic!("connection should be alive, got {other:?}"),
                },
            }
        }
        // About ten come on an idle machine (a ping 100 ms after the last pong); fewer on a
        // loaded one, which delays the timers. The connection can outlive three idle timeouts
        // of silence only by hearing pongs in between: at least two.
        assert!(pongs >= 2, "{pongs} pongs");
        server.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            server.next().await.unwrap().unwrap(),
            Message::text("still here")
        );
        server.close(CloseCode::NORMAL, "").await.unwrap();
        // Every pong answered a ping the client saw (more may have come after the quiet time).
        assert!(client_task.await.unwrap() >= pongs);
    })
    .await;
}

#[tokio::test]
async fn bytes_waiting_unread_count_as_heard_from_the_peer() {
    bounded(async {
        let (mut client, mut server) =
            common::pair_with(|c| c, ServerBuilder::new().idle_timeout(IDLE)).await;
        let talking = tokio::spawn(async move {
            for i in 0..10 {
                client.send(Message::text(i.to_string())).await.unwrap();
                tokio::time::sleep(IDLE / 7).await;
            }
            client
        });
        // The application is busy elsewhere for two idle timeouts while messages arrive.
        tokio::time::sleep(IDLE * 2).await;
        for i in 0..10 {
            let msg = server.next().await.unwrap();
            assert_eq!(msg.unwrap(), Message::text(i.to_string()));
        }
        let _client = talking.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn server_pings_a_silent_peer_every_interval() {
    bounded(async {
        let (mut ws, mut raw) =
            server_with_raw_client(ServerBuilder::new().ping_interval(PING)).await;
        let reading = tokio::spawn(async move {
            let mut pings = 0;
            let started = Instant::now();
            while started.elapsed() < PING * 5 + PING / 2 {
                let (first, payload) = read_frame(&mut raw).await;
                assert_eq!(first, 0x89, "a ping");
                assert!(payload.is_empty());
                pings += 1;
            }
            pings
        });
        // The server's stream must be polled for the timer to run.
        let serving =
            tokio::spawn(async move { ws.next().await.map(|r| r.map_err(|e| e.to_string())) });
        let pings = reading.await.unwrap();
        assert!((4..=7).contains(&pings), "{pings} pings in 5.5 intervals");
        serving.abort();
    })
    .await;
}

#[tokio::test]
async fn client_pings_masked_and_drops_a_dead_server() {
    bounded(async {
        let (mut ws, mut raw) =
            client_with_raw_server(|c| c.ping_interval(PING).idle_timeout(IDLE)).await;
        let started = Instant::now();
        let reading = tokio::spawn(async move {
            let mut header = [0u8; 2];
            raw.read_exact(&mut header).await.unwrap();
            raw.read_exact(&mut [0u8; 4]).await.expect("a masking key");
            // Kept open: the server is silent, not gone.
            (header, raw)
        });
        match ws.next().await {
            Some(Err(Error::Unresponsive(TimeoutError::Idle))) => {}
            other => panic!("expected an idle timeout, got {other:?}"),
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed >= IDLE && elapsed < IDLE + Duration::from_secs(1),
            "{elapsed:?}"
        );
        // RFC 6455 §5.3: the client's ping is masked.
        assert_eq!(reading.await.unwrap().0, [0x89, 0x80]);
    })
    .await;
}

#[tokio::test]
async fn no_keepalive_by_default() {
    bounded(async {
        let (mut ws, mut raw) = server_with_raw_client(ServerBuilder::new()).await;
        let quiet = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
        assert!(quiet.is_err(), "nothing happens on a quiet connection");
        let mut byte = [0u8; 1];
        let nothing = tokio::time::timeout(Duration::from_millis(50), raw.read(&mut byte)).await;
        assert!(nothing.is_err(), "no ping was sent");
    })
    .await;
}

#[tokio::test]
async fn peer_that_never_reads_is_dropped_at_the_write_timeout() {
    bounded(async {
        let write_timeout = Duration::from_millis(400);
        let server = ServerBuilder::new().write_timeout(write_timeout);
        let (ws, mut raw) = server_with_raw_client(server).await;
        let (mut tx, mut rx) = ws.split();
        // The read half waits too, as in a real application; the timeout must wake it.
        let reader = tokio::spawn(async move {
            let first = rx.next().await.map(|r| r.map_err(|e| format!("{e:?}")));
            (first, rx.next().await.is_none())
        });
        let chunk = Bytes::from(vec![0u8; 64 << 10]);
        let mut sent = 0usize;
        let mut last_sent = Instant::now();
        let err = loop {
            // Capped, so that a broken bound fails the test instead of exhausting memory.
            assert!(sent < 1024, "sends kept completing though nobody reads");
            match tx.send(Message::binary(chunk.clone())).await {
                Ok(()) => {
                    sent += 1;
                    last_sent = Instant::now();
                }
                Err(e) => break e,
            }
        };
        let stalled = last_sent.elapsed();
        assert!(
            matches!(err, Error::Unresponsive(TimeoutError::Write)),
            "{err:?}"
        );
        // Sends stopped completing (kernel buffers are a few MiB), then the timeout ended them.
        assert!(sent * chunk.len() < 32 << 20, "{sent} sends completed");
        assert!(
            stalled >= write_timeout - Duration::from_millis(50),
            "{stalled:?}"
        );
        // Sending keeps failing the same way.
        let again = tx.send(Message::text("more")).await;
        assert!(matches!(
            again,
            Err(Error::Unresponsive(TimeoutError::Write))
        ));
        let (first, ended) = reader.await.unwrap();
        assert_eq!(first, Some(Err("Unresponsive(Write)".to_owned())));
        assert!(ended);
        drop(tx);
        // The connection is closed: whatever the kernel held arrives, then the end.
        let mut rest = Vec::new();
        let _ = raw.read_to_end(&mut rest).await;
    })
    .await;
}

#[tokio::test]
async fn write_timeout_is_30_seconds_by_default() {
    assert_eq!(
        gangway::Config::default().write_timeout,
        Some(Duration::from_secs(30))
    );
}
