//! Loopback helpers shared by the integration tests: a connected client/server pair, and raw
//! frames and heads for peers that misbehave on purpose.

#![allow(dead_code)] // each test binary uses its own subset

use std::future::Future;
use std::time::Duration;

use gangway::{ClientBuilder, MaybeTlsStream, ServerBuilder, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound for any single test.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Run `fut`, failing the test if it takes longer than [`TEST_TIMEOUT`].
pub(crate) async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, fut)
        .await
        .expect("test took too long")
}

/// A listener on a free loopback port and its `ws://` URL.
pub(crate) async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    (listener, url)
}

/// A client and a server connected over loopback.
pub(crate) async fn pair_with(
    client: impl FnOnce(ClientBuilder) -> ClientBuilder,
    server: ServerBuilder,
) -> (WebSocket<MaybeTlsStream>, WebSocket<TcpStream>) {
    let (listener, url) = listener().await;
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp).await.unwrap()
    });
    let (client, response) = client(ClientBuilder::new(&url).unwrap())
        .connect()
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    (client, accepting.await.unwrap())
}

/// A client and a server with default settings.
pub(crate) async fn pair() -> (WebSocket<MaybeTlsStream>, WebSocket<TcpStream>) {
    pair_with(|c| c, ServerBuilder::new()).await
}

/// A valid upgrade request head, with `extra` header lines (each ending in `\r\n`).
pub(crate) fn request_head(extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A single-frame message from a client: FIN set, masked with a fixed key.
pub(crate) fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    gangway_test_support::masked(opcode, payload)
}

/// A single-frame message from a server: FIN set, no mask.
pub(crate) fn unmasked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    gangway_test_support::unmasked(opcode, payload)
}

/// Read one frame: (first byte, unmasked payload).
pub(crate) async fn read_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    tcp.read_exact(&mut h).await.unwrap();
    let len = match h[1] & 0x7f {
        126 => u64::from(tcp.read_u16().await.unwrap()),
        127 => tcp.read_u64().await.unwrap(),
        n => u64::from(n),
    };
    let key = if h[1] & 0x80 != 0 {
        let mut k = [0u8; 4];
        tcp.read_exact(&mut k).await.unwrap();
        Some(k)
    } else {
        None
    };
    let mut payload = vec![0u8; usize::try_from(len).unwrap()];
    tcp.read_exact(&mut payload).await.unwrap();
    if let Some(k) = key {
        gangway_test_support::apply_mask(&mut payload, k);
    }
    (h[0], payload)
}

/// The status code of a close frame payload.
pub(crate) fn close_code(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}

/// Read an HTTP head (through the blank line), a byte at a time so nothing after it is consumed.
pub(crate) async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    String::from_utf8(head).unwrap()
}

/// Send `request` raw and return everything the server answers until it closes the connection.
pub(crate) async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}
