//! The raw peer over HTTP/2 (RFC 8441): its scripted frames go in the DATA frames of one
//! extended CONNECT stream instead of a TCP connection. The HTTP/2 layer is the `h2` crate, used
//! directly (not gangway's adapter); the WebSocket bytes are the raw peer's own, as over TCP.
//!
//! A stream becomes a byte pipe the session reads and writes like a TCP connection: the raw
//! peer's half-close is END_STREAM, gangway's END_STREAM is the end of what the reader sees.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};

/// Bytes buffered in the pipe each way (the streams' own windows are h2's defaults).
const PIPE: usize = 256 << 10;

/// The stream as a byte pipe: what the session writes into the returned end goes out as DATA
/// (its shutdown as END_STREAM), and what gangway sends comes out of it (its END_STREAM, or a
/// reset, as the end).
pub(crate) fn pipe(mut send: SendStream<Bytes>, mut recv: RecvStream) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let (mut from_session, mut to_session) = tokio::io::split(theirs);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from_session.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = send.send_data(Bytes::new(), true);
                    return;
                }
                Ok(n) => n,
            };
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                send.reserve_capacity(rest.len());
                let granted = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                    Some(Ok(granted)) => granted,
                    _ => return,
                };
                let take = granted.min(rest.len());
                if take == 0 {
                    continue;
                }
                if send
                    .send_data(Bytes::copy_from_slice(&rest[..take]), false)
                    .is_err()
                {
                    return;
                }
                rest = &rest[take..];
            }
        }
    });
    tokio::spawn(async move {
        while let Some(Ok(data)) = recv.data().await {
            let _ = recv.flow_control().release_capacity(data.len());
            if to_session.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = to_session.shutdown().await;
    });
    ours
}

/// Server role: open an HTTP/2 connection to gangway (prior knowledge) and one extended CONNECT
/// stream; the pipe once gangway answered 200.
pub(crate) async fn connect(addr: SocketAddr, limit: Duration) -> Result<DuplexStream, String> {
    let tcp = tokio::time::timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| "tcp connect timed out".to_owned())?
        .map_err(|e| format!("tcp connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (send, conn) = h2::client::handshake(tcp)
        .await
        .map_err(|e| format!("http/2 handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.map_err(|e| format!("http/2: {e}"))?;
    let mut request = http::Request::builder()
        .method("CONNECT")
        .uri(format!("http://{addr}/"))
        .header("sec-websocket-version", "13")
        .body(())
        .map_err(|e| e.to_string())?;
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    // The SETTINGS allowing it come before the answer; h2 refuses to send it otherwise.
    let (response, stream) = send
        .send_request(request, false)
        .map_err(|e| format!("extended connect: {e}"))?;
    let response = tokio::time::timeout(limit, response)
        .await
        .map_err(|_| "no answer to the extended connect".to_owned())?
        .map_err(|e| format!("extended connect: {e}"))?;
    if response.status() != 200 {
        return Err(format!("expected 200, got {}", response.status()));
    }
    if response.headers().contains_key("sec-websocket-accept") {
        return Err("a 200 over HTTP/2 carries no Sec-WebSocket-Accept (RFC 8441 §5)".into());
    }
    Ok(pipe(stream, response.into_body()))
}

/// Client role: accept gangway's HTTP/2 connection, with extended CONNECT enabled, and its one
/// extended CONNECT; check the request, answer 200, and return the pipe.
pub(crate) async fn accept(
    listener: &TcpListener,
    limit: Duration,
) -> Result<DuplexStream, String> {
    let (tcp, _) = tokio::time::timeout(limit, listener.accept())
        .await
        .map_err(|_| "the client did not connect".to_owned())?
        .map_err(|e| format!("accept: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut conn = h2::server::Builder::new()
        .enable_connect_protocol()
        .handshake::<_, Bytes>(tcp)
        .await
        .map_err(|e| format!("http/2 handshake: {e}"))?;
    let (request, mut respond) = tokio::time::timeout(limit, conn.accept())
        .await
        .map_err(|_| "no request from the client".to_owned())?
        .ok_or("the client closed without a request")?
        .map_err(|e| format!("http/2: {e}"))?;
    // The connection goes on (its frames move while it is polled) until it closes.
    tokio::spawn(async move { while conn.accept().await.is_some() {} });
    let protocol = request
        .extensions()
        .get::<h2::ext::Protocol>()
        .map(|p| p.as_str().to_owned());
    let headers = request.headers();
    if request.method() != http::Method::CONNECT || protocol.as_deref() != Some("websocket") {
        return Err(format!(
            "expected CONNECT with :protocol websocket, got {} {protocol:?}",
            request.method()
        ));
    }
    if headers.get("sec-websocket-version").map(|v| v.as_bytes()) != Some(b"13") {
        return Err(format!(
            "sec-websocket-version: {:?}",
            headers.get("sec-websocket-version")
        ));
    }
    if headers.contains_key("sec-websocket-key") {
        return Err("a Sec-WebSocket-Key over HTTP/2 (RFC 8441 §5)".into());
    }
    let body = request.into_body();
    let send = respond
        .send_response(http::Response::new(()), false)
        .map_err(|e| format!("answer: {e}"))?;
    Ok(pipe(send, body))
}
