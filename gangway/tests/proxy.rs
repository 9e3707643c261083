//! Client proxies against real proxies on loopback (written in the test, see support/proxies.rs):
//! HTTP CONNECT with basic auth, SOCKS5 with username/password, local and remote name
//! resolution, wss:// through both, refusals, and the bypass list.

#[path = "support/certs.rs"]
mod certs;
mod common;
#[path = "support/proxies.rs"]
mod proxies;

use std::net::SocketAddr;

use common::bounded;
use futures_util::{SinkExt, StreamExt};
use gangway::{ClientBuilder, CloseCode, Error, Message, ProxyError, ServerBuilder};
use proxies::{Options, Request, TestProxy};
use tokio::net::TcpListener;

/// A ws echo server on 127.0.0.1 that accepts any number of connections.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let Ok(mut ws) = ServerBuilder::new().accept(tcp).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if matches!(m, Message::Text(_) | Message::Binary(_)) {
                        let _ = ws.send(m).await;
                    }
                }
            });
        }
    });
    addr
}

/// Connect with `builder`, exchange one message, close.
async fn echo_once(builder: ClientBuilder) {
    let (mut ws, _) = builder.connect().await.unwrap();
    ws.send(Message::text("through the tunnel")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("through the tunnel")
    );
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

fn credentials(user: &str, password: &str) -> Option<(String, String)> {
    Some((user.to_owned(), password.to_owned()))
}

#[tokio::test]
async fn ws_through_an_http_connect_proxy_with_basic_auth() {
    bounded(async {
        let server = echo_server().await;
        let proxy = TestProxy::http(Options {
            credentials: credentials("alice", "p@ss:word"),
            ..Options::default()
        });
        let builder = ClientBuilder::new(&format!("ws://{server}/"))
            .unwrap()
            .proxy(&proxy.url("http", Some("alice:p%40ss%3Aword")))
            .unwrap();
        echo_once(builder).await;
        assert_eq!(proxy.log.connections(), 1);
        assert_eq!(
            proxy.log.requests(),
            [Request {
                target: server.to_string(),
                credentials: Some(format!("Basic {}", proxies::base64(b"alice:p@ss:word"))),
            }]
        );
    })
    .await;
}

#[tokio::test]
async fn http_proxy_refusal_is_an_error_naming_the_status() {
    bounded(async {
        let server = echo_server().await;
        let proxy = TestProxy::http(Options {
            credentials: credentials("alice", "secret"),
            ..Options::default()
        });
        for userinfo in [None, Some("alice:wrong")] {
            let err = ClientBuilder::new(&format!("ws://{server}/"))
                .unwrap()
                .proxy(&proxy.url("http", userinfo))
                .unwrap()
                .connect()
                .await
                .unwrap_err();
            match &err {
                Error::Proxy(ProxyError::Status { status, .. }) => assert_eq!(*status, 407),
                other => panic!("{other:?}"),
            }
            let text = std::error::Error::source(&err).unwrap().to_string();
            assert!(
                text.contains("status 407 Proxy Authentication Required"),
                "{text}"
            );
            assert!(!text.contains("wrong"), "no password in messages: {text}");
        }
        assert_eq!(proxy.log.connections(), 2);
    })
    .await;
}

#[tokio::test]
async fn http_proxy_that_cannot_reach_the_server_answers_502() {
    bounded(async {
        let proxy = TestProxy::http(Options::default());
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let err = ClientBuilder::new(&format!("ws://{closed}/"))
            .unwrap()
            .proxy(&proxy.url("http", None))
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Proxy(ProxyError::Status { status: 502, .. })),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn ws_through_socks5h_sends_the_name_and_credentials() {
    bounded(async {
        let server = echo_server().await;
        let proxy = TestProxy::socks5(Options {
            credentials: credentials("bob", "hunter2"),
            // The name is the proxy's to resolve; it routes it to the test server.
            route_to: Some(server),
            ..Options::default()
        });
        let builder = ClientBuilder::new(&format!("ws://ws.invalid:{}/", server.port()))
            .unwrap()
            .proxy(&proxy.url("socks5h", Some("bob:hunter2")))
            .unwrap();
        echo_once(builder).await;
        assert_eq!(
            proxy.log.requests(),
            [Request {
                target: format!("domain ws.invalid:{}", server.port()),
                credentials: Some("bob:hunter2".to_owned()),
            }]
        );
    })
    .await;
}

#[tokio::test]
async fn ws_through_socks5_resolves_the_name_here() {
    bounded(async {
        let server = echo_server().await;
        let proxy = TestProxy::socks5(Options {
            route_to: Some(server),
            ..Options::default()
        });
        let builder = ClientBuilder::new(&format!("ws://localhost:{}/", server.port()))
            .unwrap()
            .proxy(&proxy.url("socks5", None))
            .unwrap();
        echo_once(builder).await;
        let requests = proxy.log.requests();
        assert_eq!(requests.len(), 1);
        let target = &requests[0].target;
        // Whichever loopback address `localhost` resolved to first, an address was sent.
        assert!(
            *target == format!("ipv4 127.0.0.1:{}", server.port())
                || *target == format!("ipv6 [::1]:{}", server.port()),
            "{target}"
        );
        assert_eq!(requests[0].credentials, None);
    })
    .await;
}

#[tokio::test]
async fn socks5_refusals_are_typed_errors() {
    bounded(async {
        let server = echo_server().await;
        let url = format!("ws://{server}/");

        let proxy = TestProxy::socks5(Options {
            credentials: credentials("bob", "hunter2"),
            ..Options::default()
        });
        let err = ClientBuilder::new(&url)
            .unwrap()
            .proxy(&proxy.url("socks5", Some("bob:wrong")))
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Proxy(ProxyError::SocksAuth { .. })),
            "{err:?}"
        );
        let err = ClientBuilder::new(&url)
            .unwrap()
            .proxy(&proxy.url("socks5", None))
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Proxy(ProxyError::SocksAuth { .. })),
            "no credentials offered: {err:?}"
        );

        let refusing = TestProxy::socks5(Options {
            socks_reply: 5,
            ..Options::default()
        });
        let err = ClientBuilder::new(&url)
            .unwrap()
            .proxy(&refusing.url("socks5h", None))
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        match &err {
            Error::Proxy(e @ ProxyError::SocksRefused { code: 5, .. }) => {
                assert!(
                    e.to_string().contains("connection refused (reply 5)"),
                    "{e}"
                );
            }
            other => panic!("{other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn bypassed_hosts_are_reached_directly() {
    bounded(async {
        let server = echo_server().await;
        let proxy = TestProxy::http(Options::default());
        let builder = ClientBuilder::new(&format!("ws://{server}/"))
            .unwrap()
            .proxy(&proxy.url("http", None))
            .unwrap();
        echo_once(builder.clone().proxy_bypass("example.com, 127.0.0.0/8")).await;
        assert_eq!(
            proxy.log.connections(),
            0,
            "127.0.0.1 is in the bypass list"
        );
        echo_once(builder.clone().proxy_bypass("example.com")).await;
        assert_eq!(
            proxy.log.connections(),
            1,
            "127.0.0.1 is not in the bypass list"
        );
        echo_once(builder.no_proxy()).await;
        assert_eq!(proxy.log.connections(), 1, "no_proxy() connects directly");
    })
    .await;
}

#[cfg(feature = "rustls")]
mod tls {
    use std::sync::Arc;

    use gangway::tls::TlsAcceptor;

    use super::certs::{TestCa, Usage, Validity};
    use super::*;

    /// A wss echo server on 127.0.0.1 with a certificate for `localhost`; reports each SNI.
    async fn wss_echo_server(
        ca: &TestCa,
    ) -> (
        SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<Option<String>>,
    ) {
        let issued = ca.issue("server", &["localhost"], Usage::Server, Validity::Current);
        let config = gangway::tls::server_config_from_pem_files(&issued.cert, &issued.key).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sni_tx, sni) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, sni_tx) = (acceptor.clone(), sni_tx.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = sni_tx.send(tls.get_ref().1.server_name().map(str::to_owned));
                    let Ok(mut ws) = ServerBuilder::new().accept(tls).await else {
                        return;
                    };
                    while let Some(Ok(m)) = ws.next().await {
                        if matches!(m, Message::Text(_) | Message::Binary(_)) {
                            let _ = ws.send(m).await;
                        }
                    }
                });
            }
        });
        (addr, sni)
    }

    #[tokio::test]
    async fn wss_through_an_http_connect_proxy_is_tls_end_to_end() {
        bounded(async {
            let ca = TestCa::new("proxied");
            let (server, mut sni) = wss_echo_server(&ca).await;
            let proxy = TestProxy::http(Options {
                credentials: credentials("alice", "secret"),
                ..Options::default()
            });
            let builder = ClientBuilder::new(&format!("wss://localhost:{}/", server.port()))
                .unwrap()
                .ca_file(&ca.cert)
                .unwrap()
                .proxy(&proxy.url("http", Some("alice:secret")))
                .unwrap();
            echo_once(builder).await;
            // The proxy was asked for the name; TLS (with the name as SNI) ran through it.
            let requests = proxy.log.requests();
            assert_eq!(requests.len(), 1);
            assert_eq!(requests[0].target, format!("localhost:{}", server.port()));
            assert_eq!(sni.recv().await.unwrap().as_deref(), Some("localhost"));
        })
        .await;
    }

    #[tokio::test]
    async fn wss_through_socks5h_is_tls_end_to_end() {
        bounded(async {
            let ca = TestCa::new("socks-proxied");
            let (server, mut sni) = wss_echo_server(&ca).await;
            let proxy = TestProxy::socks5(Options {
                route_to: Some(server),
                ..Options::default()
            });
            let builder = ClientBuilder::new(&format!("wss://localhost:{}/", server.port()))
                .unwrap()
                .ca_file(&ca.cert)
                .unwrap()
                .proxy(&proxy.url("socks5h", None))
                .unwrap();
            echo_once(builder).await;
            assert_eq!(
                proxy.log.requests()[0].target,
                format!("domain localhost:{}", server.port())
            );
            assert_eq!(sni.recv().await.unwrap().as_deref(), Some("localhost"));
        })
        .await;
    }
}
