//! Messages as streams over loopback: a large message echoed piece by piece in bounded memory,
//! and the fragment calls cancelled by `tokio::select!` without losing or duplicating a byte.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{bounded, pair_with};
use futures_util::SinkExt;
use gangway::{ClientBuilder, CloseCode, Config, DataKind, ServerBuilder, WebSocket};
use tokio::net::TcpStream;

/// Room for large messages, delivered piece by piece.
fn streaming_config() -> Config {
    let mut config = Config::default();
    config.deliver_fragments = true;
    config.max_message_size = usize::MAX;
    config.max_frame_size = usize::MAX;
    config
}

/// Byte `i` of the test message: a pattern that a lost, repeated or reordered piece breaks.
fn byte_at(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// The message bytes from `start`, `len` of them.
fn chunk_at(start: u64, len: usize) -> Bytes {
    (start..start + len as u64).map(byte_at).collect()
}

/// Echo each piece as it arrives, until the stream ends; with `pause_every`, stop for a
/// millisecond every so many pieces (so the peer finds nothing to read now and then).
async fn fragment_echo(mut ws: WebSocket<TcpStream>, pause_every: Option<usize>) -> usize {
    let mut largest = 0;
    let mut pieces = 0;
    while let Some(piece) = ws.recv_fragment().await {
        let piece = piece.unwrap();
        pieces += 1;
        if pause_every.is_some_and(|n| pieces % n == 0) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        largest = largest.max(piece.data.len());
        ws.send_fragment(piece.kind, piece.data, piece.fin)
            .await
            .unwrap();
    }
    largest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_message_is_echoed_piece_by_piece_in_bounded_pieces() {
    const TOTAL: u64 = 32 << 20;
    const CHUNK: usize = 256 << 10;
    bounded(async {
        let (client, server) = pair_with(
            |c| c.config(streaming_config()),
            ServerBuilder::new().config(streaming_config()),
        )
        .await;
        let server = tokio::spawn(fragment_echo(server, None));
        let (mut tx, mut rx) = futures_util::StreamExt::split(client);
        let sender = tokio::spawn(async move {
            let mut sent = 0;
            while sent < TOTAL {
                let len = CHUNK.min((TOTAL - sent) as usize);
                let fin = sent + len as u64 == TOTAL;
                let piece = gangway::Fragment {
                    kind: DataKind::Binary,
                    data: chunk_at(sent, len),
                    fin,
                };
                tx.feed(gangway::Message::Fragment(piece)).await.unwrap();
                sent += len as u64;
            }
            tx.flush().await.unwrap();
            tx
        });
        let mut received = 0u64;
        let mut largest = 0;
        loop {
            let Some(Ok(gangway::Message::Fragment(piece))) =
                futures_util::StreamExt::next(&mut rx).await
            else {
                panic!("expected a fragment at byte {received}");
            };
            assert_eq!(piece.kind, DataKind::Binary);
            assert_eq!(piece.data, chunk_at(received, piece.data.len()));
            received += piece.data.len() as u64;
            largest = largest.max(piece.data.len());
            if piece.fin {
                break;
            }
        }
        assert_eq!(received, TOTAL);
        let tx = sender.await.unwrap();
        let mut client = rx.reunite(tx).unwrap();
        client.close(CloseCode::NORMAL, "").await.unwrap();
        let server_largest = server.await.unwrap();
        // Pieces are at most one read of the transport (256 KiB), never the message.
        assert!(largest <= 256 << 10, "client piece of {largest} bytes");
        assert!(
            server_largest <= 256 << 10,
            "server piece of {server_largest} bytes"
        );
    })
    .await;
}

#[tokio::test]
async fn whole_messages_come_as_single_final_pieces_by_default() {
    bounded(async {
        let (mut client, mut server) = pair_with(|c| c, ServerBuilder::new()).await;
        client.send(gangway::Message::text("héllo")).await.unwrap();
        let piece = server.recv_fragment().await.unwrap().unwrap();
        assert_eq!(piece.text(), Some("héllo"));
        assert!(piece.fin);
        // Sending in pieces works without delivering fragments: the peer gets one message.
        client
            .send_fragment(DataKind::Text, Bytes::from("wör"), false)
            .await
            .unwrap();
        client
            .send_fragment(DataKind::Text, Bytes::from("ld"), true)
            .await
            .unwrap();
        client.flush().await.unwrap();
        assert_eq!(
            futures_util::StreamExt::next(&mut server)
                .await
                .unwrap()
                .unwrap(),
            gangway::Message::text("wörld")
        );
        // The server reads on to answer the close.
        let drain = async { while server.recv_fragment().await.is_some() {} };
        let (closed, ()) = tokio::join!(client.close(CloseCode::NORMAL, ""), drain);
        closed.unwrap();
    })
    .await;
}

#[tokio::test]
async fn sending_a_different_kind_mid_message_is_refused_and_nothing_is_sent() {
    bounded(async {
        let (mut client, _server) = pair_with(|c| c, ServerBuilder::new()).await;
        client
            .send_fragment(DataKind::Binary, Bytes::from_static(b"a"), false)
            .await
            .unwrap();
        let err = client
            .send_fragment(DataKind::Text, Bytes::from_static(b"b"), true)
            .await
            .unwrap_err();
        assert!(matches!(err, gangway::Error::Api(_)), "{err:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragment_calls_cancelled_by_select_lose_and_repeat_nothing() {
    const TOTAL: u64 = 32 << 20;
    const CHUNK: usize = 64 << 10;
    bounded(async {
        let (mut client, server) = pair_with(
            |c: ClientBuilder| c.config(streaming_config()),
            ServerBuilder::new().config(streaming_config()),
        )
        .await;
        let server = tokio::spawn(fragment_echo(server, Some(16)));
        let mut sent = 0u64;
        let mut received = 0u64;
        let (mut send_cancelled, mut recv_cancelled) = (0, 0);
        let mut done = false;
        let mut round = 0u32;
        // Nothing is in flight yet: this receive surely waits, and is dropped while waiting.
        tokio::select! {
            biased;
            piece = client.recv_fragment() => panic!("received {piece:?} before sending"),
            () = tokio::task::yield_now() => recv_cancelled += 1,
        }
        // One task: alternately try to send and to receive, each raced against a yield or a
        // timer that often wins, so both futures are dropped mid-wait again and again.
        while !done {
            round += 1;
            let loser = |round: u32| async move {
                // Mostly a yield, which loses to a call that completes in its first two polls;
                // now and then a timer (a millisecond, tokio's resolution).
                if round % 8 == 0 {
                    tokio::time::sleep(Duration::from_micros(100)).await;
                } else {
                    tokio::task::yield_now().await;
                }
            };
            if sent < TOTAL {
                let len = CHUNK.min((TOTAL - sent) as usize);
                let fin = sent + len as u64 == TOTAL;
                tokio::select! {
                    biased;
                    result = client.send_fragment(DataKind::Binary, chunk_at(sent, len), fin) => {
                        result.unwrap();
                        sent += len as u64;
                    }
                    () = loser(round) => send_cancelled += 1,
                }
            } else {
                // Everything is queued: push it out while receiving.
                let _ = tokio::time::timeout(Duration::from_millis(1), client.flush()).await;
            }
            // Receive only once a send was cancelled: until then the buffers fill up (the echo
            // stalls when nobody reads it), so sending has to wait.
            if send_cancelled == 0 && sent < TOTAL {
                continue;
            }
            tokio::select! {
                biased;
                piece = client.recv_fragment() => {
                    let piece = piece.unwrap().unwrap();
                    assert_eq!(
                        piece.data,
                        chunk_at(received, piece.data.len()),
                        "at byte {received}"
                    );
                    received += piece.data.len() as u64;
                    done = piece.fin;
                }
                () = loser(round) => recv_cancelled += 1,
            }
        }
        assert_eq!(received, TOTAL);
        // Sends are cancelled while the transport is full; receives less often (the echo keeps
        // the socket busy), but the first one always was.
        assert!(
            send_cancelled > 0,
            "cancelled {send_cancelled} sends and {recv_cancelled} receives"
        );
        client.close(CloseCode::NORMAL, "").await.unwrap();
        server.await.unwrap();
    })
    .await;
}
