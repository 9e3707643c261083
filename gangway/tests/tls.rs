//! wss:// on loopback with certificates made in the test: trust through a CA file, refusal of a
//! certificate for another host, of an expired or not yet valid one and of an untrusted one
//! (self-signed or from an unknown CA) in words, insecure mode, client certificates, SNI and
//! ALPN.

#![cfg(feature = "rustls")]

#[path = "support/certs.rs"]
mod certs;
mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use certs::{TestCa, Usage, Validity};
use common::bounded;
use futures_util::{SinkExt, StreamExt};
use gangway::tls::{self, rustls, TlsAcceptor};
use gangway::{ClientBuilder, CloseCode, Error, Message, ServerBuilder};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the server saw of one TLS handshake: the SNI name, or the error.
type Seen = Result<Option<String>, String>;

/// A wss echo server on 127.0.0.1 with `config`; reports each TLS handshake it sees.
async fn echo_server(config: rustls::ServerConfig) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, seen_tx) = (acceptor.clone(), seen_tx.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        let sni = tls.get_ref().1.server_name().map(str::to_owned);
                        let _ = seen_tx.send(Ok(sni));
                        tls
                    }
                    Err(e) => {
                        let _ = seen_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let Ok(mut ws) = ServerBuilder::new().accept(tls).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if matches!(message, Message::Text(_) | Message::Binary(_)) {
                        let _ = ws.send(message).await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A CA and a server certificate it signed for `names`, as a server configuration.
fn server_config(ca: &TestCa, names: &[&str], validity: Validity) -> rustls::ServerConfig {
    let issued = ca.issue("server", names, Usage::Server, validity);
    tls::server_config_from_pem_files(&issued.cert, &issued.key).unwrap()
}

/// Send a text and a binary message and expect them back; then close normally.
async fn echo_round_trip(ws: &mut gangway::WebSocket<gangway::MaybeTlsStream>) {
    ws.send(Message::text("over tls 🔒")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("over tls 🔒")
    );
    let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(data.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(data));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

/// The TLS error of a failed connect, as text (with its causes).
fn tls_failure(result: Result<impl std::fmt::Debug, Error>) -> (rustls::Error, String) {
    let (cause, text, _) = refusal(result);
    (cause, text)
}

/// The TLS error of a failed connect, as text (with its causes), and why the certificate is
/// not trusted when that is the reason.
fn refusal(
    result: Result<impl std::fmt::Debug, Error>,
) -> (rustls::Error, String, Option<tls::UntrustedCertificate>) {
    let err = result.expect_err("the connection must be refused");
    let Error::Tls(tls) = &err else {
        panic!("expected a tls error, got {err:?}");
    };
    let cause = tls
        .rustls_error()
        .expect("a rustls error as the cause")
        .clone();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    (cause, text, tls.untrusted_certificate())
}

#[tokio::test]
async fn wss_echo_with_a_certificate_signed_by_the_given_ca() {
    bounded(async {
        let ca = TestCa::new("trusted");
        let (addr, mut seen) =
            echo_server(server_config(&ca, &["localhost"], Validity::Current)).await;
        let url = format!("wss://localhost:{}/chat", addr.port());
        let (mut ws, response) = ClientBuilder::new(&url)
            .unwrap()
            .ca_file(&ca.cert)
            .unwrap()
            .connect()
            .await
            .unwrap();
        assert_eq!(response.status(), 101);
        let transport = ws.get_ref();
        assert!(transport.is_tls());
        let state = transport.tls_state().expect("tls session");
        assert_eq!(state.alpn_protocol(), Some(&b"http/1.1"[..]), "ALPN");
        // SNI: the URL's host reached the server.
        assert_eq!(seen.recv().await.unwrap(), Ok(Some("localhost".to_owned())));
        echo_round_trip(&mut ws).await;
    })
    .await;
}

#[tokio::test]
async fn wss_to_an_ip_address_checks_the_ip_and_sends_no_sni() {
    bounded(async {
        let ca = TestCa::new("ip");
        let (addr, mut seen) =
            echo_server(server_config(&ca, &["127.0.0.1"], Validity::Current)).await;
        let (mut ws, _) = ClientBuilder::new(&format!("wss://{addr}/"))
            .unwrap()
            .ca_file(&ca.cert)
            .unwrap()
            .connect()
            .await
            .unwrap();
        // TLS forbids IP addresses in SNI (RFC 6066 §3).
        assert_eq!(seen.recv().await.unwrap(), Ok(None));
        echo_round_trip(&mut ws).await;
    })
    .await;
}

#[tokio::test]
async fn certificate_for_another_host_is_refused_and_the_error_names_both() {
    bounded(async {
        let ca = TestCa::new("wrong-host");
        let (addr, _seen) =
            echo_server(server_config(&ca, &["other.example"], Validity::Current)).await;
        let result = ClientBuilder::new(&format!("wss://localhost:{}/", addr.port()))
            .unwrap()
            .ca_file(&ca.cert)
            .unwrap()
            .connect()
            .await;
        let (cause, text) = tls_failure(result);
        assert!(
            matches!(
                cause,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{cause:?}"
        );
        assert!(
            text.contains("tls handshake with localhost failed"),
            "{text}"
        );
        assert!(text.contains("other.example"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    bounded(async {
        let ca = TestCa::new("expired");
        let (addr, _seen) =
            echo_server(server_config(&ca, &["localhost"], Validity::Expired)).await;
        let result = ClientBuilder::new(&format!("wss://localhost:{}/", addr.port()))
            .unwrap()
            .ca_file(&ca.cert)
            .unwrap()
            .connect()
            .await;
        let (cause, text, untrusted) = refusal(result);
        assert!(
            matches!(
                cause,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired
                        | rustls::CertificateError::ExpiredContext { .. }
                )
            ),
            "{cause:?}"
        );
        assert_eq!(
            text,
            "tls error: tls handshake with localhost failed: the certificate expired on \
             2001-01-01 00:00:00 UTC"
        );
        assert_eq!(untrusted, None);
    })
    .await;
}

#[tokio::test]
async fn certificate_from_an_unknown_ca_is_refused() {
    bounded(async {
        let server_ca = TestCa::new("server-side");
        let other_ca = TestCa::new("client-side");
        let (addr, _seen) =
            echo_server(server_config(&server_ca, &["localhost"], Validity::Current)).await;
        let result = ClientBuilder::new(&format!("wss://localhost:{}/", addr.port()))
            .unwrap()
            .ca_file(&other_ca.cert)
            .unwrap()
            .connect()
            .await;
        let (cause, text, untrusted) = refusal(result);
        assert_eq!(
            cause,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        );
        assert_eq!(
            text,
            "tls error: tls handshake with localhost failed: certificate for localhost was not \
             issued by a trusted ca"
        );
        assert_eq!(untrusted, Some(tls::UntrustedCertificate::UnknownIssuer));
    })
    .await;
}

#[tokio::test]
async fn a_self_signed_certificate_that_is_not_trusted_is_refused_as_such() {
    bounded(async {
        // OpenSSL 3's `req -x509` certificate (CA:TRUE, which webpki reports first) and one
        // without the CA flag (for which webpki finds no issuer): both are untrusted because
        // nobody vouches for them, and say so.
        let dir = certs::TempDir::new();
        let unrelated = TestCa::new("unrelated");
        for (what, issued) in [
            (
                "CA:TRUE",
                certs::self_signed_ca_certificate(&dir, &["localhost"], Validity::Current),
            ),
            (
                "CA:FALSE",
                certs::self_signed_certificate(&dir, &["localhost"], Validity::Current),
            ),
        ] {
            let (cause, text, untrusted) =
                refusal(connect_trusting(&issued, "localhost", &unrelated.cert).await);
            assert_eq!(
                text,
                "tls error: tls handshake with localhost failed: self-signed certificate for \
                 localhost is not trusted",
                "{what}"
            );
            // The reason, for programs: no trusted issuer.
            assert_eq!(
                cause,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
                "{what}"
            );
            assert_eq!(
                untrusted,
                Some(tls::UntrustedCertificate::SelfSigned),
                "{what}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_self_signed_certificate_without_the_ca_flag_given_as_trusted_is_accepted() {
    bounded(async {
        let dir = certs::TempDir::new();
        let issued = certs::self_signed_certificate(&dir, &["localhost"], Validity::Current);
        let (mut ws, _) = connect_trusting(&issued, "localhost", &issued.cert)
            .await
            .expect("the trusted certificate itself is accepted");
        echo_round_trip(&mut ws).await;
    })
    .await;
}

#[tokio::test]
async fn certificate_not_valid_yet_is_refused_with_its_date() {
    bounded(async {
        let ca = TestCa::new("not-yet");
        let (addr, _seen) =
            echo_server(server_config(&ca, &["localhost"], Validity::NotYetValid)).await;
        let result = ClientBuilder::new(&format!("wss://localhost:{}/", addr.port()))
            .unwrap()
            .ca_file(&ca.cert)
            .unwrap()
            .connect()
            .await;
        let (cause, text, untrusted) = refusal(result);
        assert!(
            matches!(
                cause,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidYetContext { .. }
                )
            ),
            "{cause:?}"
        );
        assert_eq!(
            text,
            "tls error: tls handshake with localhost failed: the certificate is not valid \
             before 4000-01-01 00:00:00 UTC"
        );
        assert_eq!(untrusted, None);
    })
    .await;
}

#[tokio::test]
async fn insecure_mode_accepts_an_expired_certificate_for_another_host() {
    bounded(async {
        let ca = TestCa::new("insecure");
        let (addr, _seen) =
            echo_server(server_config(&ca, &["other.example"], Validity::Expired)).await;
        let (mut ws, _) = ClientBuilder::new(&format!("wss://localhost:{}/", addr.port()))
            .unwrap()
            .danger_accept_invalid_certs(true)
            .connect()
            .await
            .unwrap();
        echo_round_trip(&mut ws).await;
    })
    .await;
}

/// A server configuration that requires a client certificate signed by `client_ca`.
fn requiring_client_certs(ca: &TestCa, client_ca: &TestCa) -> rustls::ServerConfig {
    let issued = ca.issue("server", &["localhost"], Usage::Server, Validity::Current);
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::certificates_from_pem_file(&client_ca.cert).unwrap() {
        roots.add(cert).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        tls::crypto_provider(),
    )
    .build()
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            tls::certificates_from_pem_file(&issued.cert).unwrap(),
            tls::private_key_from_pem_file(&issued.key).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

#[tokio::test]
async fn server_requiring_a_client_certificate_accepts_one_signed_by_its_ca() {
    bounded(async {
        let ca = TestCa::new("mtls-server");
        let clients = TestCa::new("mtls-clients");
        let client = clients.issue(
            "client",
            &["client.example"],
            Usage::Client,
            Validity::Current,
        );
        let (addr, mut seen) = echo_server(requiring_client_certs(&ca, &clients)).await;
        let (mut ws, _) = ClientBuilder::new(&format!("wss://localhost:{}/", addr.port()))
            .unwrap()
            .ca_file(&ca.cert)
            .unwrap()
            .client_cert_files(&client.cert, &client.key)
            .unwrap()
            .connect()
            .await
            .unwrap();
        assert_eq!(seen.recv().await.unwrap(), Ok(Some("localhost".to_owned())));
        echo_round_trip(&mut ws).await;
    })
    .await;
}

#[tokio::test]
async fn server_requiring_a_client_certificate_refuses_a_client_without_one() {
    bounded(async {
        let ca = TestCa::new("mtls-server");
        let clients = TestCa::new("mtls-clients");
        let (addr, mut seen) = echo_server(requiring_client_certs(&ca, &clients)).await;
        let result = ClientBuilder::new(&format!("wss://localhost:{}/", addr.port()))
            .unwrap()
            .ca_file(&ca.cert)
            .unwrap()
            .connect()
            .await;
        // TLS 1.3: the client's handshake is done before the server has checked anything; the
        // server's alert arrives while the client waits for the 101.
        let (cause, _) = tls_failure(result);
        assert!(
            matches!(cause, rustls::Error::AlertReceived(_)),
            "{cause:?}"
        );
        let server_side = seen.recv().await.unwrap();
        assert!(server_side.is_err(), "the server accepted: {server_side:?}");

        // A certificate from another CA is refused as well.
        let strangers = TestCa::new("strangers");
        let stranger = strangers.issue("client", &["x.example"], Usage::Client, Validity::Current);
        let result = ClientBuilder::new(&format!("wss://localhost:{}/", addr.port()))
            .unwrap()
            .ca_file(&ca.cert)
            .unwrap()
            .client_cert_files(&stranger.cert, &stranger.key)
            .unwrap()
            .connect()
            .await;
        tls_failure(result);
        assert!(seen.recv().await.unwrap().is_err());
    })
    .await;
}

#[tokio::test]
async fn pem_files_without_what_is_asked_for_are_reported_with_their_path() {
    let ca = TestCa::new("files");
    let issued = ca.issue("server", &["localhost"], Usage::Server, Validity::Current);
    let err = tls::certificates_from_pem_file(&issued.key).unwrap_err();
    assert!(err.to_string() == "tls error", "{err}");
    let text = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        text.starts_with("no certificate in ") && text.ends_with("server-key.pem"),
        "{text}"
    );

    let err = tls::private_key_from_pem_file(&issued.cert).unwrap_err();
    let text = std::error::Error::source(&err).unwrap().to_string();
    assert!(text.starts_with("no private key in "), "{text}");

    let missing = ca.dir.path().join("missing.pem");
    let err = ClientBuilder::new("wss://localhost/")
        .unwrap()
        .ca_file(&missing)
        .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    // A key that does not belong to the certificate is refused when the server starts.
    let other = ca.issue("other", &["localhost"], Usage::Server, Validity::Current);
    assert!(tls::acceptor_from_pem_files(&issued.cert, &other.key).is_err());
}

#[tokio::test]
async fn plain_ws_client_against_a_tls_server_fails_cleanly() {
    bounded(async {
        let ca = TestCa::new("plain");
        let (addr, mut seen) =
            echo_server(server_config(&ca, &["localhost"], Validity::Current)).await;
        let result = ClientBuilder::new(&format!("ws://{addr}/"))
            .unwrap()
            .connect()
            .await;
        assert!(result.is_err());
        assert!(seen.recv().await.unwrap().is_err());
    })
    .await;
}

/// A wss echo server presenting `issued`, and a client trusting `trusted` (a PEM file).
async fn connect_trusting(
    issued: &certs::Issued,
    host: &str,
    trusted: &std::path::Path,
) -> Result<
    (
        gangway::WebSocket<gangway::MaybeTlsStream>,
        http::Response<()>,
    ),
    Error,
> {
    let config = tls::server_config_from_pem_files(&issued.cert, &issued.key).unwrap();
    let (addr, _seen) = echo_server(config).await;
    ClientBuilder::new(&format!("wss://{host}:{}/", addr.port()))
        .unwrap()
        .ca_file(trusted)
        .unwrap()
        .connect()
        .await
}

#[tokio::test]
async fn a_self_signed_ca_certificate_given_as_trusted_is_accepted_as_the_servers() {
    bounded(async {
        // OpenSSL 3's `req -x509` certificate (CA:TRUE), given as the trusted file, as curl and
        // Python's ssl accept it.
        let dir = certs::TempDir::new();
        let issued = certs::self_signed_ca_certificate(&dir, &["localhost"], Validity::Current);
        let (mut ws, _) = connect_trusting(&issued, "localhost", &issued.cert)
            .await
            .expect("the trusted certificate itself is accepted");
        echo_round_trip(&mut ws).await;
    })
    .await;
}

#[tokio::test]
async fn a_trusted_self_signed_ca_certificate_still_needs_the_right_name_and_dates() {
    bounded(async {
        let dir = certs::TempDir::new();
        let issued = certs::self_signed_ca_certificate(&dir, &["localhost"], Validity::Current);
        let (cause, text) = tls_failure(connect_trusting(&issued, "127.0.0.1", &issued.cert).await);
        assert!(
            matches!(
                cause,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{cause:?}"
        );
        assert!(
            text.ends_with(
                "name 127.0.0.1 does not match the certificate's names: DnsName(\"localhost\")"
            ) || text.contains("name 127.0.0.1 does not match the certificate's names"),
            "{text}"
        );

        let expired = certs::self_signed_ca_certificate(&dir, &["localhost"], Validity::Expired);
        let (cause, text) =
            tls_failure(connect_trusting(&expired, "localhost", &expired.cert).await);
        assert!(
            matches!(
                cause,
                rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext { .. })
            ),
            "{cause:?}"
        );
        assert!(
            text.ends_with("the certificate expired on 2001-01-01 00:00:00 UTC"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_ca_certificate_presented_by_a_server_is_refused_in_words_unless_it_is_the_trusted_one() {
    bounded(async {
        // The server presents a self-signed CA certificate that is not the trusted file's
        // (another key, the same subject): refused as a self-signed certificate nobody trusts,
        // not for its CA flag (which would be accepted were the certificate trusted).
        let dir = certs::TempDir::new();
        let issued = certs::self_signed_ca_certificate(&dir, &["localhost"], Validity::Current);
        let other = certs::self_signed_ca_certificate(&dir, &["localhost"], Validity::Current);
        let (cause, text) = tls_failure(connect_trusting(&issued, "localhost", &other.cert).await);
        assert!(
            matches!(cause, rustls::Error::InvalidCertificate(_)),
            "{cause:?}"
        );
        assert!(!text.contains("Other("), "a debug dump: {text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.ends_with("self-signed certificate for localhost is not trusted"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn wss_to_a_plain_text_server_says_the_server_did_not_answer_tls() {
    bounded(async {
        // A plain HTTP server: it reads the ClientHello as a bad request and answers 400.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await;
            let _ = tokio::io::AsyncWriteExt::write_all(
                &mut tcp,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        });
        let result = ClientBuilder::new(&format!("wss://{addr}/"))
            .unwrap()
            .connect()
            .await;
        let (_cause, text) = tls_failure(result);
        assert!(
            text.ends_with("the server did not answer with tls (is it a plain ws:// server?)"),
            "{text}"
        );
    })
    .await;
}
