//! The opening handshake over loopback: refusals with the status RFC 6455 §4.2.1 calls for,
//! limits, timeouts, subprotocols, and plain HTTP on the same port.

mod common;

use std::time::{Duration, Instant};

use common::{bounded, listener, raw_exchange, request_head};
use gangway::proto::HandshakeError;
use gangway::{ClientBuilder, Error, ServerBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Send `request` to a server built by `server`; return the server's error and the raw answer.
async fn refused(server: ServerBuilder, request: &[u8]) -> (HandshakeError, String) {
    let (listener, _) = listener().await;
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp).await.unwrap_err()
    });
    let answer = raw_exchange(addr, request).await;
    match accepting.await.unwrap() {
        Error::Handshake(e) => (e, answer),
        other => panic!("expected a handshake error, got {other:?}"),
    }
}

#[tokio::test]
async fn version_8_is_refused_with_426_naming_version_13() {
    bounded(async {
        let request = request_head("").replace("Version: 13", "Version: 8");
        let (err, answer) = refused(ServerBuilder::new(), request.as_bytes()).await;
        assert_eq!(err, HandshakeError::UnsupportedVersion);
        assert!(answer.starts_with("HTTP/1.1 426 "), "{answer}");
        // RFC 6455 §4.2.2: the versions the server understands.
        assert!(answer.contains("Sec-WebSocket-Version: 13\r\n"), "{answer}");
    })
    .await;
}

#[tokio::test]
async fn post_is_refused_with_405() {
    bounded(async {
        let request = request_head("").replacen("GET", "POST", 1);
        let (err, answer) = refused(ServerBuilder::new(), request.as_bytes()).await;
        assert_eq!(err, HandshakeError::MethodNotAllowed);
        assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
    })
    .await;
}

#[tokio::test]
async fn key_that_is_not_16_bytes_is_refused_with_400() {
    bounded(async {
        let request = request_head("").replace("dGhlIHNhbXBsZSBub25jZQ==", "0123456789abcdef");
        let (err, answer) = refused(ServerBuilder::new(), request.as_bytes()).await;
        assert!(
            matches!(err, HandshakeError::InvalidHeader("Sec-WebSocket-Key", _)),
            "{err:?}"
        );
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    })
    .await;
}

#[tokio::test]
async fn plain_get_accepted_as_websocket_is_refused_with_400() {
    bounded(async {
        let request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        let (err, answer) = refused(ServerBuilder::new(), request).await;
        assert_eq!(err, HandshakeError::MissingHeader("Upgrade"));
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    })
    .await;
}

#[tokio::test]
async fn refused_origin_gets_403() {
    bounded(async {
        let server = ServerBuilder::new().origin_check(|o| o == Some("https://good.example"));
        let request = request_head("Origin: https://evil.example\r\n");
        let (err, answer) = refused(server, request.as_bytes()).await;
        assert_eq!(err, HandshakeError::OriginRefused);
        assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    })
    .await;
}

#[tokio::test]
async fn oversized_head_gets_431() {
    bounded(async {
        let filler = format!("X-Filler: {}\r\n", "a".repeat(20 << 10));
        let (err, answer) = refused(ServerBuilder::new(), request_head(&filler).as_bytes()).await;
        assert_eq!(err, HandshakeError::HeadTooLarge);
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    })
    .await;
}

#[tokio::test]
async fn client_trickling_its_head_is_cut_at_the_handshake_timeout() {
    bounded(async {
        let (listener, _) = listener().await;
        let addr = listener.local_addr().unwrap();
        let timeout = Duration::from_millis(300);
        let accepting = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let started = Instant::now();
            let result = ServerBuilder::new()
                .handshake_timeout(timeout)
                .accept(tcp)
                .await;
            (result.unwrap_err(), started.elapsed())
        });
        let mut raw = TcpStream::connect(addr).await.unwrap();
        // One byte every 20 ms, newlines included: always making progress, never finishing.
        let trickle = async {
            for b in request_head("").bytes().cycle() {
                if b == b'\r' {
                    continue;
                }
                if raw.write_all(&[b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
        let (err, elapsed) = accepting.await.unwrap();
        assert!(matches!(err, Error::Timeout), "{err:?}");
        assert!(elapsed >= timeout && elapsed < timeout * 3, "{elapsed:?}");
        // The server dropped the connection: nothing more arrives.
        let mut rest = Vec::new();
        let _ = raw.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
    })
    .await;
}

#[tokio::test]
async fn server_selects_its_first_supported_protocol_that_the_client_offered() {
    bounded(async {
        let (client, server) = common::pair_with(
            |c| c.protocol("superchat").protocol("chat"),
            ServerBuilder::new().protocol("chat").protocol("superchat"),
        )
        .await;
        assert_eq!(client.protocol(), Some("chat"));
        assert_eq!(server.protocol(), Some("chat"));

        let (client, server) = common::pair_with(
            |c| c.protocol("other"),
            ServerBuilder::new().protocol("chat"),
        )
        .await;
        assert_eq!(client.protocol(), None);
        assert_eq!(server.protocol(), None);
    })
    .await;
}

#[tokio::test]
async fn client_reports_the_status_of_a_refusal() {
    bounded(async {
        let (listener, url) = listener().await;
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            common::read_head(&mut tcp).await;
            tcp.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        match gangway::connect(&url).await {
            Err(Error::Handshake(HandshakeError::UnexpectedStatus(404))) => {}
            other => panic!("expected status 404, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn client_times_out_on_a_server_that_never_answers() {
    bounded(async {
        let (listener, url) = listener().await;
        let silent = tokio::spawn(async move { listener.accept().await.unwrap() });
        let result = ClientBuilder::new(&url)
            .unwrap()
            .handshake_timeout(Duration::from_millis(200))
            .connect()
            .await;
        assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
        drop(silent.await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn plain_http_request_is_answered_on_the_same_port() {
    bounded(async {
        let (listener, _) = listener().await;
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let incoming = ServerBuilder::new().read_request(tcp).await.unwrap();
            assert!(!incoming.is_upgrade());
            assert_eq!(incoming.request().uri().path(), "/page");
            let response = http::Response::builder()
                .header("Content-Type", "text/html")
                .body(())
                .unwrap();
            incoming.respond(response, b"<p>hi</p>").await.unwrap();
        });
        let answer = raw_exchange(addr, b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(answer.ends_with("\r\n\r\n<p>hi</p>"), "{answer}");
    })
    .await;
}

#[tokio::test]
async fn incoming_tells_the_accept_key_it_will_send() {
    bounded(async {
        let (listener, _) = listener().await;
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let incoming = ServerBuilder::new().read_request(tcp).await.unwrap();
            let key = incoming.accept_key();
            let _ws = incoming.accept().await.unwrap();
            key
        });
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(request_head("").as_bytes()).await.unwrap();
        let head = common::read_head(&mut raw).await;
        // The RFC 6455 §1.3 example key and its accept value.
        let key = server.await.unwrap();
        assert_eq!(key.as_deref(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn trickling_client_is_cut_at_the_default_10_second_handshake_timeout() {
    // Simulated time: the default takes 10 s, which would be long to wait for.
    let (client, server) = tokio::io::duplex(1024);
    let started = tokio::time::Instant::now();
    let accepting = tokio::spawn(async move { ServerBuilder::new().accept(server).await });
    let trickle = tokio::spawn(async move {
        let mut client = client;
        // One byte a second, newlines included: always making progress, never finishing.
        for b in request_head("").bytes().filter(|&b| b != b'\r').cycle() {
            if client.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let result = tokio::time::timeout(Duration::from_secs(60), accepting)
        .await
        .expect("cut within a minute")
        .unwrap();
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    let elapsed = started.elapsed();
    assert_eq!(gangway::DEFAULT_HANDSHAKE_TIMEOUT, Duration::from_secs(10));
    assert!(
        elapsed >= Duration::from_secs(10) && elapsed < Duration::from_secs(11),
        "{elapsed:?}"
    );
    // The server dropped its end: the trickle's next write fails.
    tokio::time::timeout(Duration::from_secs(5), trickle)
        .await
        .expect("the trickle stops")
        .unwrap();
}

/// Whether a server built by `server` accepts `request`; its raw answer.
async fn answer_of(server: ServerBuilder, request: &str) -> (bool, String) {
    let (listener, _) = listener().await;
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp).await
    });
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(request.as_bytes()).await.unwrap();
    let head = common::read_head(&mut raw).await;
    // Gone at once: a refusing server need not linger for more of the request.
    drop(raw);
    let accepted = accepting.await.unwrap();
    if let Err(e) = &accepted {
        assert!(
            matches!(e, Error::Handshake(HandshakeError::OriginRefused)),
            "{e:?}"
        );
    }
    (accepted.is_ok(), head)
}

#[tokio::test]
async fn allowed_origins_accept_only_the_listed_origins() {
    bounded(async {
        let server = || {
            ServerBuilder::new().allowed_origins(["https://app.example", "http://localhost:8080"])
        };
        for origin in [
            "https://app.example",
            // RFC 6454: scheme and host are case-insensitive, the default port is no port.
            "HTTPS://App.Example",
            "https://app.example:443",
            "http://localhost:8080",
        ] {
            let request = request_head(&format!("Origin: {origin}\r\n"));
            let (accepted, head) = answer_of(server(), &request).await;
            assert!(accepted, "{origin}: {head}");
            assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        }
        for origin in [
            "https://evil.example",
            "http://app.example",
            "https://app.example:8443",
            "https://app.example.evil",
            "http://localhost",
            "null",
        ] {
            let request = request_head(&format!("Origin: {origin}\r\n"));
            let (accepted, head) = answer_of(server(), &request).await;
            assert!(!accepted, "{origin}");
            assert!(head.starts_with("HTTP/1.1 403 "), "{origin}: {head}");
        }
    })
    .await;
}

#[tokio::test]
async fn request_without_origin_is_allowed_unless_origin_is_required() {
    bounded(async {
        let listed = || ServerBuilder::new().allowed_origins(["https://app.example"]);
        let (accepted, head) = answer_of(listed(), &request_head("")).await;
        assert!(accepted, "{head}");

        let (accepted, head) = answer_of(listed().require_origin(true), &request_head("")).await;
        assert!(!accepted);
        assert!(head.starts_with("HTTP/1.1 403 "), "{head}");

        // Required, with no list: any origin will do, but one there must be.
        let required = || ServerBuilder::new().require_origin(true);
        let (accepted, _) = answer_of(required(), &request_head("")).await;
        assert!(!accepted);
        let request = request_head("Origin: https://anywhere.example\r\n");
        let (accepted, head) = answer_of(required(), &request).await;
        assert!(accepted, "{head}");
    })
    .await;
}
