//! Messages over loopback: sizes at every length-encoding boundary, two tasks on one connection,
//! and frames pipelined behind the handshake heads.

mod common;

use bytes::Bytes;
use common::{bounded, listener, masked_frame, pair, read_head, request_head, unmasked_frame};
use futures_util::{SinkExt, StreamExt};
use gangway::{CloseCode, Message, WebSocket};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Echo every message until the stream ends.
async fn echo(mut ws: WebSocket<TcpStream>) {
    while let Some(msg) = ws.next().await {
        if let m @ (Message::Text(_) | Message::Binary(_)) = msg.unwrap() {
            ws.send(m).await.unwrap();
        }
    }
}

/// Text of exactly `len` bytes with 2-, 3- and 4-byte characters.
fn text_of_len(len: usize) -> String {
    let mut text = String::with_capacity(len);
    for c in "é€𝄞a".chars().cycle() {
        if text.len() + c.len_utf8() > len {
            break;
        }
        text.push(c);
    }
    while text.len() < len {
        text.push('a');
    }
    text
}

#[tokio::test]
async fn text_and_binary_at_every_length_boundary_echo_unchanged() {
    bounded(async {
        let (mut client, server) = pair().await;
        let server = tokio::spawn(echo(server));
        // 7-bit, 16-bit and 64-bit payload lengths on both sides of each boundary (RFC 6455 §5.2).
        for len in [0, 125, 126, 65535, 65536, 16 << 20] {
            let text = text_of_len(len);
            client.send(Message::text(text.clone())).await.unwrap();
            assert_eq!(
                client.next().await.unwrap().unwrap(),
                Message::Text(text.into())
            );

            let data: Bytes = (0..len).map(|i| (i % 251) as u8).collect();
            client.send(Message::binary(data.clone())).await.unwrap();
            assert_eq!(client.next().await.unwrap().unwrap(), Message::Binary(data));
        }
        client.close(CloseCode::NORMAL, "").await.unwrap();
        server.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_send_and_receive_from_two_tasks() {
    bounded(async {
        let (client, server) = pair().await;
        let server = tokio::spawn(echo(server));
        let (mut tx, mut rx) = client.split();
        // Enough data that both directions fill their buffers: each half must be woken when the
        // transport drains, even though the other half writes to it too.
        const COUNT: usize = 200;
        let payload = Bytes::from(vec![7u8; 64 << 10]);
        let sender = {
            let payload = payload.clone();
            tokio::spawn(async move {
                for i in 0..COUNT {
                    tx.send(Message::text(format!("message {i}")))
                        .await
                        .unwrap();
                    tx.send(Message::binary(payload.clone())).await.unwrap();
                }
                tx
            })
        };
        let receiver = tokio::spawn(async move {
            for i in 0..COUNT {
                let text = rx.next().await.unwrap().unwrap();
                assert_eq!(text, Message::text(format!("message {i}")));
                let binary = rx.next().await.unwrap().unwrap();
                assert_eq!(binary, Message::Binary(payload.clone()));
            }
            rx
        });
        let mut tx = sender.await.unwrap();
        let mut rx = receiver.await.unwrap();
        // Close only after every echo arrived: the server may not send data after answering.
        tx.close().await.unwrap();
        assert!(rx.next().await.is_none());
        let ws = tx.reunite(rx).unwrap();
        assert_eq!(
            ws.close_frame().unwrap().as_ref().unwrap().code,
            CloseCode::NORMAL
        );
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn server_receives_a_frame_pipelined_behind_the_request_head() {
    bounded(async {
        let (listener, _) = listener().await;
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = gangway::accept(tcp).await.unwrap();
            ws.next().await.unwrap().unwrap()
        });
        let mut raw = TcpStream::connect(addr).await.unwrap();
        // The head and the first frame in a single write, as a client may pipeline them.
        let mut bytes = request_head("").into_bytes();
        bytes.extend(masked_frame(0x1, b"pipelined"));
        raw.write_all(&bytes).await.unwrap();
        let head = read_head(&mut raw).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(server.await.unwrap(), Message::text("pipelined"));
    })
    .await;
}

#[tokio::test]
async fn client_receives_a_frame_pipelined_behind_the_101_response() {
    bounded(async {
        let (listener, url) = listener().await;
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let head = read_head(&mut tcp).await;
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let accept = gangway::proto::handshake::accept_key(key.as_bytes());
            let mut bytes = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .into_bytes();
            bytes.extend(unmasked_frame(0x2, b"\x00\x01\x02"));
            tcp.write_all(&bytes).await.unwrap();
            tcp
        });
        let (mut client, _) = gangway::connect(&url).await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::binary(&b"\x00\x01\x02"[..])
        );
        drop(server.await.unwrap());
    })
    .await;
}
