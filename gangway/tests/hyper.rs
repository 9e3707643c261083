//! gangway inside hyper 1 and axum servers (`gangway::hyper`): the same handshake checks and
//! answers as the HTTP/1.1 path, subprotocols, frames pipelined behind the request head, and an
//! axum route, over loopback.

#![cfg(feature = "hyper")]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use common::{bounded, masked_frame, raw_exchange, read_frame, read_head, request_head};
use futures_util::{SinkExt, StreamExt};
use gangway::hyper::Refusal;
use gangway::proto::HandshakeError;
use gangway::{ClientBuilder, CloseCode, Error, Message, ServerBuilder};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the server side saw of one request.
#[derive(Debug)]
enum Seen {
    /// `upgrade` refused the request.
    Refused(Refusal),
    /// The WebSocket opened, with this subprotocol; the echo ran until the client closed it.
    Echoed {
        protocol: Option<String>,
        close_code: Option<CloseCode>,
    },
    /// The pending upgrade, or the echo, failed.
    Failed(Error),
}

/// Echo every text and binary message until the client closes; report how it went.
async fn echo(pending: gangway::hyper::PendingUpgrade, seen: mpsc::UnboundedSender<Seen>) {
    let outcome = async {
        let mut ws = pending.await?;
        while let Some(message) = ws.next().await {
            if let data @ (Message::Text(_) | Message::Binary(_)) = message? {
                ws.send(data).await?;
            }
        }
        Ok::<_, Error>(Seen::Echoed {
            protocol: ws.protocol().map(str::to_owned),
            close_code: ws.close_frame().and_then(|f| f.as_ref().map(|f| f.code)),
        })
    }
    .await;
    let _ = seen.send(outcome.unwrap_or_else(Seen::Failed));
}

/// The WebSocket half of a request handler: refusals are answered and reported, accepted
/// requests are echoed in a task of their own.
fn websocket_route<B>(
    request: &mut http::Request<B>,
    server: &ServerBuilder,
    seen: &mpsc::UnboundedSender<Seen>,
) -> http::Response<String> {
    match gangway::hyper::upgrade(request, server) {
        Ok((response, pending)) => {
            tokio::spawn(echo(pending, seen.clone()));
            response
        }
        Err(refusal) => {
            let response = refusal.response();
            let _ = seen.send(Seen::Refused(refusal));
            response
        }
    }
}

/// A hyper HTTP/1.1 server on a free loopback port: a plain page for requests that do not ask
/// for a WebSocket, the gangway echo for those that do. Without `upgrades`, hyper serves
/// connections without handing them over after a `101`.
async fn hyper_server(
    server: ServerBuilder,
    upgrades: bool,
) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (server, tx) = (server.clone(), tx.clone());
            let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                let response = if gangway::hyper::is_upgrade_request(&request) {
                    websocket_route(&mut request, &server, &tx)
                } else {
                    http::Response::new("the page\n".to_owned())
                };
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
            tokio::spawn(async move {
                if upgrades {
                    let _ = connection.with_upgrades().await;
                } else {
                    let _ = connection.await;
                }
            });
        }
    });
    (addr, rx)
}

/// The same WebSocket route in an axum application, at `/ws`, next to a page at `/`.
async fn axum_server(server: ServerBuilder) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    use axum::extract::{Request, State};
    use axum::routing::get;

    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route(
            "/",
            get(|| async { axum::response::Html("<p>the page</p>") }),
        )
        .route(
            "/ws",
            get(
                |State((server, tx)): State<(ServerBuilder, mpsc::UnboundedSender<Seen>)>,
                 mut request: Request| async move {
                    websocket_route(&mut request, &server, &tx)
                },
            ),
        )
        .with_state((server, tx));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

/// The next thing the server saw.
async fn next_seen(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    seen.recv().await.expect("the server is gone")
}

/// Send `request` raw; return the answer (lowercased, so that header names compare whatever
/// their case) and what the server saw.
async fn refused(
    addr: SocketAddr,
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    request: &str,
) -> (String, Refusal) {
    // The refusal says `Connection: close`: hyper closes the connection after it, which ends
    // the exchange.
    let answer = raw_exchange(addr, request.as_bytes()).await.to_lowercase();
    match next_seen(seen).await {
        Seen::Refused(refusal) => (answer, refusal),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A gangway client sends text and binary through the server, gets both back, and closes.
async fn gangway_client_echo(url: &str, seen: &mut mpsc::UnboundedReceiver<Seen>) {
    let (mut ws, response) = ClientBuilder::new(url).unwrap().connect().await.unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("hello 🚢")).await.unwrap();
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello 🚢"));
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
    match next_seen(seen).await {
        Seen::Echoed {
            protocol: None,
            close_code: Some(code),
        } => assert_eq!(code, CloseCode::NORMAL),
        other => panic!("expected a clean echo, got {other:?}"),
    }
}

/// A raw client pipelines a frame right behind its request head, in the same write: the server
/// must answer `101` and echo that frame (hyper read it ahead with the head).
async fn pipelined_frame_is_echoed(addr: SocketAddr, path: &str) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bytes = request_head("")
        .replacen("GET / ", &format!("GET {path} "), 1)
        .into_bytes();
    bytes.extend_from_slice(&masked_frame(0x1, b"right behind the head"));
    tcp.write_all(&bytes).await.unwrap();

    let head = read_head(&mut tcp).await.to_lowercase();
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    // The RFC 6455 §1.3 key and its accept value (the header value keeps its case).
    assert!(
        head.contains(&"\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n".to_lowercase()),
        "{head}"
    );
    assert!(!head.contains("sec-websocket-protocol"), "{head}");
    // RFC 7230 §3.3.2: a 1xx response has no body, hence no length.
    assert!(!head.contains("content-length"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(
        read_frame(&mut tcp).await,
        (0x81, b"right behind the head".to_vec())
    );

    tcp.write_all(&masked_frame(0x8, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    let (first, payload) = read_frame(&mut tcp).await;
    assert_eq!((first, common::close_code(&payload)), (0x88, 1000));
}

#[tokio::test]
async fn gangway_client_echoes_through_a_hyper_server() {
    bounded(async {
        let (addr, mut seen) = hyper_server(ServerBuilder::new(), true).await;
        gangway_client_echo(&format!("ws://{addr}/chat"), &mut seen).await;
    })
    .await;
}

#[tokio::test]
async fn frame_pipelined_behind_the_head_reaches_the_websocket() {
    bounded(async {
        let (addr, mut seen) = hyper_server(ServerBuilder::new(), true).await;
        pipelined_frame_is_echoed(addr, "/").await;
        assert!(matches!(next_seen(&mut seen).await, Seen::Echoed { .. }));
    })
    .await;
}

#[tokio::test]
async fn version_8_is_refused_with_426_naming_version_13() {
    bounded(async {
        let (addr, mut seen) = hyper_server(ServerBuilder::new(), true).await;
        let request = request_head("").replace("Version: 13", "Version: 8");
        let (answer, refusal) = refused(addr, &mut seen, &request).await;
        assert_eq!(
            refusal,
            Refusal::Handshake(HandshakeError::UnsupportedVersion)
        );
        assert!(answer.starts_with("http/1.1 426 "), "{answer}");
        // RFC 6455 §4.2.2 item 4: the versions the server understands.
        assert!(
            answer.contains("\r\nsec-websocket-version: 13\r\n"),
            "{answer}"
        );
        assert!(answer.contains("\r\nupgrade: websocket\r\n"), "{answer}");
    })
    .await;
}

#[tokio::test]
async fn key_that_is_not_16_bytes_is_refused_with_400() {
    bounded(async {
        let (addr, mut seen) = hyper_server(ServerBuilder::new(), true).await;
        let request = request_head("").replace("dGhlIHNhbXBsZSBub25jZQ==", "0123456789abcdef");
        let (answer, refusal) = refused(addr, &mut seen, &request).await;
        assert!(
            matches!(
                refusal,
                Refusal::Handshake(HandshakeError::InvalidHeader("Sec-WebSocket-Key", _))
            ),
            "{refusal:?}"
        );
        assert!(answer.starts_with("http/1.1 400 "), "{answer}");
        // The body names the reason, as on the HTTP/1.1 path.
        assert!(
            answer.ends_with("\r\n\r\ninvalid sec-websocket-key header: not 16 bytes in base64\n"),
            "{answer}"
        );
        assert!(!answer.contains("sec-websocket-accept"), "{answer}");
    })
    .await;
}

#[tokio::test]
async fn post_is_refused_with_405_allowing_get() {
    bounded(async {
        let (addr, mut seen) = hyper_server(ServerBuilder::new(), true).await;
        let request = request_head("Content-Length: 0\r\n").replacen("GET", "POST", 1);
        let (answer, refusal) = refused(addr, &mut seen, &request).await;
        assert_eq!(
            refusal,
            Refusal::Handshake(HandshakeError::MethodNotAllowed)
        );
        assert!(answer.starts_with("http/1.1 405 "), "{answer}");
        assert!(answer.contains("\r\nallow: get\r\n"), "{answer}");
    })
    .await;
}

#[tokio::test]
async fn origin_outside_the_policy_is_refused_with_403() {
    bounded(async {
        let server = ServerBuilder::new().allowed_origins(["https://app.example"]);
        let (addr, mut seen) = hyper_server(server, true).await;

        let request = request_head("Origin: https://evil.example\r\n");
        let (answer, refusal) = refused(addr, &mut seen, &request).await;
        assert_eq!(refusal, Refusal::Handshake(HandshakeError::OriginRefused));
        assert!(answer.starts_with("http/1.1 403 "), "{answer}");

        // The same origin, spelled differently, is let in.
        let (mut ws, _) = ClientBuilder::new(&format!("ws://{addr}/"))
            .unwrap()
            .origin("HTTPS://App.Example:443")
            .connect()
            .await
            .unwrap();
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        assert!(matches!(next_seen(&mut seen).await, Seen::Echoed { .. }));
    })
    .await;
}

#[tokio::test]
async fn first_supported_subprotocol_the_client_offered_is_selected() {
    bounded(async {
        let server = ServerBuilder::new().protocol("chat").protocol("superchat");
        let (addr, mut seen) = hyper_server(server, true).await;
        let url = format!("ws://{addr}/");

        // The server's order decides among the offered ones (RFC 6455 §4.2.2 item 5 leaves the
        // choice to the server).
        let (mut ws, response) = ClientBuilder::new(&url)
            .unwrap()
            .protocol("superchat")
            .protocol("chat")
            .connect()
            .await
            .unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
        assert_eq!(ws.protocol(), Some("chat"));
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        match next_seen(&mut seen).await {
            Seen::Echoed { protocol, .. } => assert_eq!(protocol.as_deref(), Some("chat")),
            other => panic!("expected an echo, got {other:?}"),
        }

        // None in common: accepted without the header, not refused.
        let (mut ws, response) = ClientBuilder::new(&url)
            .unwrap()
            .protocol("mqtt")
            .connect()
            .await
            .unwrap();
        assert!(!response.headers().contains_key("sec-websocket-protocol"));
        assert_eq!(ws.protocol(), None);
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        match next_seen(&mut seen).await {
            Seen::Echoed { protocol, .. } => assert_eq!(protocol, None),
            other => panic!("expected an echo, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn plain_requests_on_the_same_port_are_served_as_http() {
    bounded(async {
        let (addr, _seen) = hyper_server(ServerBuilder::new(), true).await;
        let answer = raw_exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nthe page\n"), "{answer}");
    })
    .await;
}

#[tokio::test]
async fn connection_served_without_upgrades_fails_the_pending_websocket() {
    bounded(async {
        let (addr, mut seen) = hyper_server(ServerBuilder::new(), false).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request_head("").as_bytes()).await.unwrap();
        let head = read_head(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        match next_seen(&mut seen).await {
            Seen::Failed(Error::Io(e)) => {
                // hyper's own error is inside, naming why.
                assert!(
                    e.get_ref().is_some_and(|inner| inner.is::<hyper::Error>()),
                    "{e:?}"
                );
            }
            other => panic!("expected the upgrade to fail, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn axum_route_echoes_for_a_gangway_client() {
    bounded(async {
        let (addr, mut seen) = axum_server(ServerBuilder::new()).await;
        gangway_client_echo(&format!("ws://{addr}/ws"), &mut seen).await;

        // The page is on the same port.
        let answer = raw_exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("<p>the page</p>"), "{answer}");
    })
    .await;
}

#[tokio::test]
async fn axum_route_answers_raw_clients_strictly() {
    bounded(async {
        let (addr, mut seen) = axum_server(ServerBuilder::new()).await;
        pipelined_frame_is_echoed(addr, "/ws").await;
        assert!(matches!(next_seen(&mut seen).await, Seen::Echoed { .. }));

        let request = request_head("")
            .replacen("GET / ", "GET /ws ", 1)
            .replace("Version: 13", "Version: 12");
        let (answer, refusal) = refused(addr, &mut seen, &request).await;
        assert_eq!(
            refusal,
            Refusal::Handshake(HandshakeError::UnsupportedVersion)
        );
        assert!(answer.starts_with("http/1.1 426 "), "{answer}");
        assert!(
            answer.contains("\r\nsec-websocket-version: 13\r\n"),
            "{answer}"
        );

        // A repeated key is no key at all (RFC 6455 §4.2.1 item 5: exactly one).
        let request = request_head("Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n")
            .replacen("GET / ", "GET /ws ", 1);
        let (answer, refusal) = refused(addr, &mut seen, &request).await;
        assert_eq!(
            refusal,
            Refusal::Handshake(HandshakeError::DuplicateHeader("Sec-WebSocket-Key"))
        );
        assert!(answer.starts_with("http/1.1 400 "), "{answer}");
    })
    .await;
}
