//! Tiny proxies for tests, on 127.0.0.1: an HTTP `CONNECT` proxy and a SOCKS5 server (RFC 1928,
//! RFC 1929). Each counts the connections it accepts, checks credentials when told to, records
//! what each client asked for, and relays bytes both ways. Each runs on a thread and runtime of its
//! own, so sync and async tests can use them alike; dropping the handle stops it.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Longest a relayed connection may live: tests are bounded.
const RELAY_LIMIT: Duration = Duration::from_secs(30);

/// What a client asked the proxy for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    /// HTTP: the `CONNECT` target. SOCKS5: `ipv4 ADDR:PORT`, `ipv6 [ADDR]:PORT` or
    /// `domain NAME:PORT`, as the client sent it.
    pub(crate) target: String,
    /// HTTP: the `Proxy-Authorization` value. SOCKS5: `user:password` when sent.
    pub(crate) credentials: Option<String>,
}

/// What a proxy saw.
#[derive(Default)]
pub(crate) struct Log {
    connections: AtomicUsize,
    requests: Mutex<Vec<Request>>,
}

impl Log {
    /// How many TCP connections the proxy accepted.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The requests, in order.
    pub(crate) fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn record(&self, request: Request) {
        self.requests.lock().unwrap().push(request);
    }
}

/// How a test proxy behaves.
#[derive(Clone, Default)]
pub(crate) struct Options {
    /// Require these credentials (HTTP: Basic; SOCKS5: username/password).
    pub(crate) credentials: Option<(String, String)>,
    /// Connect here whatever the client asked for (the request is still recorded).
    pub(crate) route_to: Option<SocketAddr>,
    /// SOCKS5: answer the request with this reply code instead of connecting (0: connect).
    pub(crate) socks_reply: u8,
}

/// A running test proxy; stops when dropped.
pub(crate) struct TestProxy {
    pub(crate) addr: SocketAddr,
    pub(crate) log: Arc<Log>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestProxy {
    /// An HTTP `CONNECT` proxy.
    pub(crate) fn http(options: Options) -> TestProxy {
        TestProxy::start(options, false)
    }

    /// A SOCKS5 server.
    pub(crate) fn socks5(options: Options) -> TestProxy {
        TestProxy::start(options, true)
    }

    fn start(options: Options, socks: bool) -> TestProxy {
        let log = Arc::new(Log::default());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread_log = log.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let serve = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        thread_log.connections.fetch_add(1, Ordering::SeqCst);
                        let (log, options) = (thread_log.clone(), options.clone());
                        tokio::spawn(async move {
                            let work = async {
                                if socks {
                                    socks5_client(tcp, &log, &options).await
                                } else {
                                    http_client(tcp, &log, &options).await
                                }
                            };
                            let _ = tokio::time::timeout(RELAY_LIMIT, work).await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        TestProxy {
            addr: addr_rx.recv().unwrap(),
            log,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The proxy URL with `scheme` and optional `user:password@`.
    pub(crate) fn url(&self, scheme: &str, userinfo: Option<&str>) -> String {
        match userinfo {
            Some(u) => format!("{scheme}://{u}@{}", self.addr),
            None => format!("{scheme}://{}", self.addr),
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One HTTP proxy client: `CONNECT target`, then a relay.
async fn http_client(mut tcp: TcpStream, log: &Log, options: &Options) -> std::io::Result<()> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if tcp.read(&mut byte).await? == 0 || head.len() > 8192 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let authorization = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });
    log.record(Request {
        target: target.to_owned(),
        credentials: authorization.clone(),
    });
    if method != "CONNECT" {
        tcp.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Ok(());
    }
    if let Some((user, password)) = &options.credentials {
        let expected = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
        if authorization.as_deref() != Some(expected.as_str()) {
            tcp.write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                  Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
            )
            .await?;
            return Ok(());
        }
    }
    let upstream = match options.route_to {
        Some(addr) => TcpStream::connect(addr).await,
        None => TcpStream::connect(target).await,
    };
    let mut upstream = match upstream {
        Ok(u) => u,
        Err(_) => {
            tcp.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    tcp.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await?;
    Ok(())
}

/// One SOCKS5 client: method selection, optional username/password, CONNECT, relay.
async fn socks5_client(mut tcp: TcpStream, log: &Log, options: &Options) -> std::io::Result<()> {
    let mut greeting = [0u8; 2];
    tcp.read_exact(&mut greeting).await?;
    let mut methods = vec![0u8; usize::from(greeting[1])];
    tcp.read_exact(&mut methods).await?;
    assert_eq!(greeting[0], 5, "socks version");
    let mut sent_credentials = None;
    match &options.credentials {
        Some((user, password)) => {
            if !methods.contains(&2) {
                tcp.write_all(&[5, 0xff]).await?;
                return Ok(());
            }
            tcp.write_all(&[5, 2]).await?;
            let mut head = [0u8; 2];
            tcp.read_exact(&mut head).await?;
            let mut got_user = vec![0u8; usize::from(head[1])];
            tcp.read_exact(&mut got_user).await?;
            let mut plen = [0u8; 1];
            tcp.read_exact(&mut plen).await?;
            let mut got_password = vec![0u8; usize::from(plen[0])];
            tcp.read_exact(&mut got_password).await?;
            let ok = got_user == user.as_bytes() && got_password == password.as_bytes();
            sent_credentials = Some(format!(
                "{}:{}",
                String::from_utf8_lossy(&got_user),
                String::from_utf8_lossy(&got_password)
            ));
            tcp.write_all(&[1, if ok { 0 } else { 1 }]).await?;
            if !ok {
                log.record(Request {
                    target: String::new(),
                    credentials: sent_credentials,
                });
                return Ok(());
            }
        }
        None => {
            if !methods.contains(&0) {
                tcp.write_all(&[5, 0xff]).await?;
                return Ok(());
            }
            tcp.write_all(&[5, 0]).await?;
        }
    }
    let mut request = [0u8; 4];
    tcp.read_exact(&mut request).await?;
    let host = match request[3] {
        1 => {
            let mut ip = [0u8; 4];
            tcp.read_exact(&mut ip).await?;
            format!("ipv4 {}", std::net::Ipv4Addr::from(ip))
        }
        4 => {
            let mut ip = [0u8; 16];
            tcp.read_exact(&mut ip).await?;
            format!("ipv6 [{}]", std::net::Ipv6Addr::from(ip))
        }
        3 => {
            let mut len = [0u8; 1];
            tcp.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            tcp.read_exact(&mut name).await?;
            format!("domain {}", String::from_utf8_lossy(&name))
        }
        _ => return Ok(()),
    };
    let mut port = [0u8; 2];
    tcp.read_exact(&mut port).await?;
    let port = u16::from_be_bytes(port);
    let target = format!("{host}:{port}");
    log.record(Request {
        target: target.clone(),
        credentials: sent_credentials,
    });
    let reply = |code: u8| [5, code, 0, 1, 0, 0, 0, 0, 0, 0];
    if options.socks_reply != 0 {
        tcp.write_all(&reply(options.socks_reply)).await?;
        return Ok(());
    }
    let address = target.split_once(' ').map(|(_, a)| a).unwrap_or_default();
    let upstream = match options.route_to {
        Some(addr) => TcpStream::connect(addr).await,
        None => TcpStream::connect(address).await,
    };
    let Ok(mut upstream) = upstream else {
        tcp.write_all(&reply(5)).await?;
        return Ok(());
    };
    tcp.write_all(&reply(0)).await?;
    tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await?;
    Ok(())
}

/// Standard base64 with padding (RFC 4648 §4), written out here as an oracle independent of the
/// code under test.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
