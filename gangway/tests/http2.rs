//! WebSocket over HTTP/2 (RFC 8441) on loopback: gangway's server and client, a raw h2 peer for
//! what the two would never send each other (refusals, a server without extended CONNECT), and
//! hyper's HTTP/2 server with `gangway::hyper::upgrade`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gangway::http2::{Http2, Http2Connection, Http2Error};
use gangway::{ClientBuilder, CloseCode, DeflateConfig, Error, Message, ServerBuilder};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound of any single wait.
const STEP: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A gangway HTTP/2 server (prior knowledge) that echoes on every path, except `/flood`, where
/// it sends binary messages of 64 KiB until `flood_total` bytes were taken by the stream (and
/// reports, once a second has passed or all was sent, how many were), and `/drop`, where it
/// drops the WebSocket at once (the stream is reset).
async fn h2_server(
    server: ServerBuilder,
    flood_total: usize,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, reports) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (server, report) = (server.clone(), report.clone());
            tokio::spawn(async move {
                let mut conn = server.accept_http2(tcp).await.unwrap();
                while let Some(incoming) = conn.accept().await {
                    let Ok(incoming) = incoming else { return };
                    let report = report.clone();
                    tokio::spawn(async move {
                        let path = incoming.request().uri().path().to_owned();
                        let Ok(mut ws) = incoming.accept().await else {
                            return;
                        };
                        match path.as_str() {
                            "/drop" => drop(ws),
                            // How the session ended, as an I/O error kind (0: cleanly, 1: by
                            // another error), for a client that resets its stream.
                            "/watch" => {
                                let end = loop {
                                    match ws.next().await {
                                        Some(Ok(_)) => {}
                                        None => break 0,
                                        Some(Err(Error::Io(e)))
                                            if e.kind() == std::io::ErrorKind::ConnectionReset =>
                                        {
                                            break 2
                                        }
                                        Some(Err(_)) => break 1,
                                    }
                                };
                                report.send(end).unwrap();
                            }
                            "/flood" => {
                                let chunk = Bytes::from(vec![7u8; 64 << 10]);
                                let mut sent = 0;
                                let flood = async {
                                    while sent < flood_total {
                                        ws.send(Message::Binary(chunk.clone())).await.unwrap();
                                        sent += chunk.len();
                                    }
                                };
                                let _ = tokio::time::timeout(Duration::from_secs(1), flood).await;
                                report.send(sent).unwrap();
                            }
                            _ => {
                                while let Some(Ok(msg)) = ws.next().await {
                                    if ws.send(msg).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            });
        }
    });
    (addr, reports)
}

#[tokio::test]
async fn echo_over_h2c_with_a_200_and_a_clean_close() {
    let (addr, _) = h2_server(ServerBuilder::new().protocol("chat"), 0).await;
    let builder = ClientBuilder::new(&format!("ws://{addr}/echo"))
        .unwrap()
        .protocol("chat");
    let conn = within("connect", Http2Connection::connect(&builder))
        .await
        .unwrap();
    assert!(conn.is_extended_connect_enabled());
    let (mut ws, response) = within("websocket", conn.websocket(&format!("ws://{addr}/x")))
        .await
        .unwrap();
    // RFC 8441 §5: 200, the selected subprotocol, and no accept value.
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
    assert!(!response.headers().contains_key("sec-websocket-accept"));
    assert_eq!(ws.protocol(), Some("chat"));

    ws.send(Message::text("über h2")).await.unwrap();
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(
        within("text", ws.next()).await.unwrap().unwrap(),
        Message::text("über h2")
    );
    match within("binary", ws.next()).await.unwrap().unwrap() {
        Message::Binary(b) => assert!(b[..] == big[..], "1 MiB echoed exactly"),
        other => panic!("{other:?}"),
    }
    within("close", ws.close(CloseCode::from(4001), "bye"))
        .await
        .unwrap();
    let frame = ws.close_frame().unwrap().clone().unwrap();
    assert_eq!(u16::from(frame.code), 4001);
}

#[tokio::test]
async fn websockets_share_one_connection_and_an_unread_one_stalls_only_itself() {
    // 8 MiB is far more than one stream's window (128 KiB) and than the socket buffers.
    let total = 8 << 20;
    let (addr, mut reports) = h2_server(ServerBuilder::new(), total).await;
    let builder = ClientBuilder::new(&format!("ws://{addr}/")).unwrap();
    let conn = within("connect", Http2Connection::connect(&builder))
        .await
        .unwrap();
    // Never read: its stream's window fills, and the server's sends must wait.
    let (flood, _) = within("flood", conn.websocket(&format!("ws://{addr}/flood")))
        .await
        .unwrap();
    let mut echoes = Vec::new();
    for _ in 0..10 {
        let (ws, _) = within("echo", conn.websocket(&format!("ws://{addr}/echo")))
            .await
            .unwrap();
        echoes.push(ws);
    }
    // Every other WebSocket of the connection still echoes, while the flood is stalled.
    for round in 0..20 {
        for (i, ws) in echoes.iter_mut().enumerate() {
            let text = format!("{round}/{i}");
            ws.send(Message::text(text.clone())).await.unwrap();
            assert_eq!(
                within("echo", ws.next()).await.unwrap().unwrap(),
                Message::text(text)
            );
        }
    }
    let sent = within("flood report", reports.recv()).await.unwrap();
    // Flow control held the server back: about one window (plus the WebSocket's own write
    // buffer) left, nowhere near the total.
    println!("the unread stream took {sent} of {total} bytes");
    assert!(sent < 2 << 20, "the unread stream took {sent} bytes");
    drop(flood);
}

#[tokio::test]
async fn a_reset_stream_is_a_lost_connection() {
    let (addr, _) = h2_server(ServerBuilder::new(), 0).await;
    let builder = ClientBuilder::new(&format!("ws://{addr}/drop")).unwrap();
    let (mut ws, _) = within("connect", builder.clone().http2(Http2::Required).connect())
        .await
        .unwrap();
    assert!(ws.get_ref().is_http2());
    match within("reset", ws.next()).await {
        Some(Err(Error::Io(e))) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        other => panic!("expected a lost connection, got {other:?}"),
    }
    // No close frame: 1006 (RFC 6455 §7.1.5).
    assert!(ws.close_frame().is_none());
}

#[tokio::test]
async fn a_stream_reset_by_the_client_is_a_lost_connection_for_the_server() {
    let (addr, mut reports) = h2_server(ServerBuilder::new(), 0).await;
    let builder = ClientBuilder::new(&format!("ws://{addr}/")).unwrap();
    let conn = within("connect", Http2Connection::connect(&builder))
        .await
        .unwrap();
    let (mut stream, response) = within("tunnel", conn.tunnel(&format!("ws://{addr}/watch")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    stream.reset(h2::Reason::CANCEL);
    // RFC 8441 §5: RST_STREAM is the abnormal closure; the server's WebSocket ends as a lost
    // connection (an I/O error, no close frame: 1006), not as a clean end.
    assert_eq!(within("the server's end", reports.recv()).await, Some(2));
}

#[tokio::test]
async fn permessage_deflate_over_h2() {
    let (addr, _) = h2_server(ServerBuilder::new().deflate(DeflateConfig::default()), 0).await;
    let builder = ClientBuilder::new(&format!("ws://{addr}/"))
        .unwrap()
        .deflate(DeflateConfig::default());
    let (mut ws, response) = within("connect", builder.http2(Http2::Required).connect())
        .await
        .unwrap();
    assert!(ws.uses_deflate());
    assert!(response.headers()["sec-websocket-extensions"]
        .to_str()
        .unwrap()
        .starts_with("permessage-deflate"));
    let text = "compressible ".repeat(10_000);
    ws.send(Message::text(text.clone())).await.unwrap();
    assert_eq!(
        within("echo", ws.next()).await.unwrap().unwrap(),
        Message::text(text)
    );
    within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .unwrap();
}

/// A raw h2 client's extended CONNECT to `addr` with `headers`, `:protocol` (if any) and
/// `method`; the response status and headers.
async fn raw_request(
    addr: SocketAddr,
    method: &str,
    protocol: Option<&'static str>,
    headers: &[(&str, &str)],
) -> http::Response<()> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}/chat"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(()).unwrap();
    if let Some(p) = protocol {
        request
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static(p));
    }
    let (response, _stream) = send.send_request(request, true).unwrap();
    let response = within("response", response).await.unwrap();
    response.map(|_| ())
}

#[tokio::test]
async fn refusals_have_the_statuses_of_rfc_6455_without_connection_headers() {
    let server = ServerBuilder::new().allowed_origins(["https://good.example"]);
    let (addr, _) = h2_server(server, 0).await;
    let v13 = ("sec-websocket-version", "13");
    // The server advertises the extended CONNECT (RFC 8441 §3).
    let ok = raw_request(addr, "CONNECT", Some("websocket"), &[v13]).await;
    assert_eq!(ok.status(), 200);

    let old = raw_request(
        addr,
        "CONNECT",
        Some("websocket"),
        &[("sec-websocket-version", "8")],
    )
    .await;
    assert_eq!(old.status(), 426);
    assert_eq!(old.headers()["sec-websocket-version"], "13");
    assert!(!old.headers().contains_key("connection"));
    assert!(!old.headers().contains_key("upgrade"));

    let foreign = raw_request(
        addr,
        "CONNECT",
        Some("websocket"),
        &[v13, ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(foreign.status(), 403);

    let missing = raw_request(addr, "CONNECT", Some("websocket"), &[]).await;
    assert_eq!(missing.status(), 400);

    let other = raw_request(addr, "CONNECT", Some("webtransport"), &[v13]).await;
    assert_eq!(other.status(), 400);

    let get = raw_request(addr, "GET", None, &[v13]).await;
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "CONNECT");
}

/// An HTTP/2 server without extended CONNECT on cleartext connections that start with the
/// HTTP/2 preface; gangway's HTTP/1.1 echo on the others.
async fn server_without_extended_connect() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut first = [0u8; 3];
                let _ = within("first bytes", tcp.peek(&mut first)).await;
                if &first == b"PRI" {
                    let mut conn = h2::server::handshake(tcp).await.unwrap();
                    while let Some(Ok((_, mut respond))) = conn.accept().await {
                        let response = http::Response::builder().status(404).body(()).unwrap();
                        let _ = respond.send_response(response, true);
                    }
                } else if let Ok(mut ws) = ServerBuilder::new().accept(tcp).await {
                    while let Some(Ok(msg)) = ws.next().await {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn no_extended_connect_is_a_typed_error_or_a_fallback_when_allowed() {
    let addr = server_without_extended_connect().await;
    let builder = ClientBuilder::new(&format!("ws://{addr}/")).unwrap();
    match within("connect", Http2Connection::connect(&builder)).await {
        Err(Error::Http2(Http2Error::ExtendedConnectDisabled)) => {}
        other => panic!("expected the typed error, got {other:?}"),
    }
    match within("required", builder.clone().http2(Http2::Required).connect()).await {
        Err(Error::Http2(Http2Error::ExtendedConnectDisabled)) => {}
        other => panic!("expected the typed error, got {other:?}"),
    }
    let (mut ws, response) = within("preferred", builder.http2(Http2::Preferred).connect())
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    assert!(!ws.get_ref().is_http2());
    ws.send(Message::text("over http/1.1")).await.unwrap();
    assert_eq!(
        within("echo", ws.next()).await.unwrap().unwrap(),
        Message::text("over http/1.1")
    );
}

#[tokio::test]
async fn hyper_http2_server_accepts_extended_connect_through_the_upgrade_helper() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = ServerBuilder::new()
        .protocol("chat")
        .allowed_origins(["https://good.example"]);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let server = server.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut request| {
                    let server = server.clone();
                    async move {
                        assert!(gangway::hyper::is_upgrade_request(&request));
                        let (response, pending) =
                            match gangway::hyper::upgrade(&mut request, &server) {
                                Ok(accepted) => accepted,
                                Err(refusal) => return Ok::<_, Infallible>(refusal.response()),
                            };
                        tokio::spawn(async move {
                            let mut ws = pending.await.unwrap();
                            while let Some(Ok(msg)) = ws.next().await {
                                let _ = ws.send(msg).await;
                            }
                        });
                        Ok(response)
                    }
                });
                let mut http2 =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                http2.enable_connect_protocol();
                let _ = http2
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });

    let builder = ClientBuilder::new(&format!("ws://{addr}/ws"))
        .unwrap()
        .protocol("chat");
    let (mut ws, response) = within("connect", builder.http2(Http2::Required).connect())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(ws.protocol(), Some("chat"));
    ws.send(Message::text("through hyper")).await.unwrap();
    assert_eq!(
        within("echo", ws.next()).await.unwrap().unwrap(),
        Message::text("through hyper")
    );
    within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .unwrap();

    let foreign = raw_request(
        addr,
        "CONNECT",
        Some("websocket"),
        &[
            ("sec-websocket-version", "13"),
            ("origin", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(foreign.status(), 403);
    let old = raw_request(
        addr,
        "CONNECT",
        Some("websocket"),
        &[("sec-websocket-version", "7")],
    )
    .await;
    assert_eq!(old.status(), 426);
    assert_eq!(old.headers()["sec-websocket-version"], "13");
}
