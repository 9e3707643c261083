//! `gangway serve`: an echo server on every path, with the demo page at `GET /`.
//!
//! Each accepted TCP connection gets its own task. The request head is read first; an upgrade
//! request becomes an echo session, anything else is answered as plain HTTP (the page, the
//! handshake record the page asks for, or 404). On SIGINT or SIGTERM the listener stops, every
//! session closes with 1001 (RFC 6455 §7.4.1: "going away"), and the process exits 0 once they are
//! done or after [`DRAIN_TIMEOUT`].
//!
//! A server on the internet meets clients that vanish without a word (a laptop closed, a NAT
//! mapping expired): by default a client is pinged after 30 s of silence and dropped after 60 s
//! without an answer (`--ping-interval`, `--idle-timeout`).

use std::future::Future as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures_util::{Sink, Stream, StreamExt};
use gangway::proto::handshake::{accept_key, header_tokens, select_protocol};
use gangway::{
    CloseCode, CloseFrame, Config, DeflateConfig, Incoming, MaybeTlsStream, Message, ServerBuilder,
    WebSocket,
};
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::demo::{self, HandshakeLog, HandshakeRecord};
use crate::shutdown::Shutdown;
use crate::{causes, parse_seconds};

/// How long shutdown waits for open connections to finish their close handshakes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a session that failed keeps reading, so the close frame the core queued is flushed
/// and the peer can answer it.
const AFTER_ERROR_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a finished session waits for the client to close its side of the TCP connection.
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);

/// Options of `gangway serve`.
#[derive(Args, Debug)]
pub(crate) struct ServeOpts {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9001")]
    listen: String,

    /// Subprotocol to support (repeatable); the first of these the client offers is selected.
    #[arg(long = "protocol", value_name = "NAME")]
    protocols: Vec<String>,

    /// Largest message accepted, in bytes; a larger one fails the connection with 1009.
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<usize>,

    /// Ping a client after this many seconds without hearing from it (fractions allowed; 0: never).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_seconds)]
    ping_interval: Duration,

    /// Drop a client after this many seconds without receiving anything from it, not even an
    /// answer to a ping; no close frame is sent to a dead peer (fractions allowed; 0: never).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_seconds)]
    idle_timeout: Duration,

    /// Accept WebSocket requests only from this origin (repeatable), e.g. https://example.com;
    /// other origins get 403. Requests without an Origin header (non-browser clients) are
    /// accepted.
    #[arg(long = "origin", value_name = "URL", value_parser = parse_origin)]
    origins: Vec<String>,

    /// Serve https:// and wss:// with this PEM certificate chain (the server's certificate
    /// first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Refuse permessage-deflate compression (RFC 7692), which is otherwise accepted when a
    /// client offers it.
    #[arg(long)]
    no_deflate: bool,

    /// Worker threads; 0: one per CPU this process may run on (see `taskset`). With one, a
    /// single event loop runs everything.
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
}

impl ServeOpts {
    /// The number of worker threads to run: `--threads`, or one per CPU available.
    pub(crate) fn threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// An `--origin` value: `scheme://host[:port]`, as browsers send it (a trailing `/` is
/// tolerated), or `null`.
fn parse_origin(s: &str) -> Result<String, String> {
    if s == "null" {
        return Ok(s.to_owned());
    }
    let uri: http::Uri = s
        .parse()
        .map_err(|_| format!("expected an origin such as https://example.com, got {s:?}"))?;
    let is_origin = uri.scheme().is_some()
        && uri.host().is_some_and(|h| !h.is_empty())
        && matches!(uri.path(), "" | "/")
        && uri.query().is_none()
        && !uri.authority().is_some_and(|a| a.as_str().contains('@'));
    if is_origin {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "an origin is scheme://host[:port] with no path, got {s:?}"
        ))
    }
}

/// What every connection task shares.
struct Server {
    builder: ServerBuilder,
    protocols: Vec<String>,
    handshakes: HandshakeLog,
    /// Set with --tls-cert: every connection starts with a TLS handshake.
    tls: Option<gangway::tls::TlsAcceptor>,
    /// Raised on SIGINT/SIGTERM; counts the open connections.
    shutdown: Shutdown,
}

/// Run the server until SIGINT or SIGTERM.
///
/// # Errors
///
/// The address cannot be bound, stdout cannot be written, or signal handlers cannot be installed.
pub(crate) async fn run(opts: ServeOpts) -> anyhow::Result<ExitCode> {
    // Install the handlers before announcing the address: a signal sent right after the
    // `listening on` line must shut down cleanly, not kill the process.
    let mut signals = Signals::new().context("cannot install signal handlers")?;

    // Load the certificate before listening: a bad file is a startup error, not a per-connection one.
    let tls = match (&opts.tls_cert, &opts.tls_key) {
        (Some(cert), Some(key)) => Some(
            gangway::tls::acceptor_from_pem_files(cert, key)
                .map_err(|e| anyhow::anyhow!("{}", causes(&e)))
                .context("cannot use the tls certificate")?,
        ),
        _ => None,
    };

    let listener = TcpListener::bind(&opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {addr}").context("cannot write to stdout")?;
        stdout.flush().context("cannot write to stdout")?;
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(%addr, protocols = ?opts.protocols, "serving; open {scheme}://{addr}/ for the demo page");

    let mut config = Config::default();
    if let Some(max) = opts.max_message_size {
        config.max_message_size = max;
        // No frame can be larger than the message it belongs to; checking the frame header
        // refuses an oversized message before any of it is buffered.
        config.max_frame_size = config.max_frame_size.min(max);
    }
    // Zero turns a timer off (the core's rule).
    config.ping_interval = Some(opts.ping_interval);
    config.idle_timeout = Some(opts.idle_timeout);
    if !opts.idle_timeout.is_zero() && opts.idle_timeout <= opts.ping_interval {
        warn!("--idle-timeout is not longer than --ping-interval: live clients may be dropped");
    }
    if !opts.no_deflate {
        config.deflate = DeflateConfig::default();
    }
    let mut builder = ServerBuilder::new().config(config);
    for p in &opts.protocols {
        builder = builder.protocol(p.clone());
    }
    if !opts.origins.is_empty() {
        info!(origins = ?opts.origins, "accepting only these origins");
        builder = builder.allowed_origins(&opts.origins);
    }
    let server = Arc::new(Server {
        builder,
        protocols: opts.protocols,
        handshakes: HandshakeLog::default(),
        tls,
        shutdown: Shutdown::default(),
    });

    let signal = loop {
        tokio::select! {
            signal = signals.recv() => break signal,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Frames are batched here (one write per turn), so Nagle's algorithm would
                    // only hold answers back waiting for the peer's delayed ACK.
                    let _ = tcp.set_nodelay(true);
                    // Detached: a panic is reported by the panic hook, and tasks still running
                    // when the server returns are dropped with the runtime.
                    let server = Arc::clone(&server);
                    tokio::spawn(connection(Box::new(Accepted { server, tcp, peer })));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    };

    drop(listener);
    info!(signal, open = server.shutdown.open(), "shutting down");
    server.shutdown.trigger();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, server.shutdown.all_closed()).await;
    if drained.is_err() {
        warn!(
            open = server.shutdown.open(),
            "connections still open after {DRAIN_TIMEOUT:?}; dropping them"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A connection just accepted.
struct Accepted {
    server: Arc<Server>,
    tcp: TcpStream,
    peer: SocketAddr,
}

/// One TCP connection: read the head, then a WebSocket session or a plain HTTP answer.
///
/// The argument is boxed: an async function keeps its arguments' slots for its whole life, and
/// this one lives as long as the connection.
async fn connection(accepted: Box<Accepted>) {
    let Accepted { server, tcp, peer } = *accepted;
    let _open = server.shutdown.open_guard();
    // The opening handshake (or the plain HTTP answer) runs in a future of its own, on the heap
    // and only until it is done. A task's future keeps the size of its largest state for its
    // whole life, and the handshake's (request head, answer being written, their timers) is
    // several times an idle session's: inline, it would be most of every idle connection's
    // memory.
    let mut opened = Box::pin(open(&server, tcp, peer)).await;
    // By reference: moving the session out would give the future a second copy of it.
    if let Some(session) = &mut opened {
        run_session(session, peer, &server.shutdown).await;
    }
}

/// Read the request head, then accept an upgrade or answer a plain HTTP request. `None` when
/// there is no session to run: answered as HTTP, refused, or the server is stopping.
async fn open(server: &Server, tcp: TcpStream, peer: SocketAddr) -> Option<Session> {
    let stream = match &server.tls {
        None => MaybeTlsStream::Plain(tcp),
        Some(acceptor) => {
            // Bounded like the request head: a client that never finishes must not hold a task.
            let accepted = tokio::select! {
                tls = tokio::time::timeout(
                    gangway::DEFAULT_HANDSHAKE_TIMEOUT,
                    acceptor.accept(tcp),
                ) => tls,
                () = server.shutdown.stopping() => return None,
            };
            match accepted {
                Ok(Ok(tls)) => MaybeTlsStream::from(tls),
                Ok(Err(e)) => {
                    info!(%peer, "tls handshake failed: {}", causes(&e));
                    return None;
                }
                Err(_elapsed) => {
                    info!(%peer, "tls handshake timed out");
                    return None;
                }
            }
        }
    };
    let incoming = tokio::select! {
        incoming = server.builder.read_request(stream) => incoming,
        () = server.shutdown.stopping() => return None,
    };
    let incoming = match incoming {
        Ok(incoming) => incoming,
        Err(e) => {
            // Already answered (400/431) by the builder, or the peer went away.
            info!(%peer, "request failed: {}", causes(&e));
            return None;
        }
    };
    if incoming.is_upgrade() {
        websocket(server, incoming, peer).await
    } else {
        http(server, incoming, peer).await;
        None
    }
}

/// An accepted WebSocket, and the request path for its log line.
struct Session {
    ws: WebSocket<MaybeTlsStream>,
    path: String,
}

/// An upgrade request: accept it (`None` if refused).
async fn websocket(
    server: &Server,
    incoming: Incoming<MaybeTlsStream>,
    peer: SocketAddr,
) -> Option<Session> {
    let path = incoming.request().uri().path().to_owned();
    // Record before answering 101: the page asks for the record as soon as its socket opens.
    let id = demo::query_id(incoming.request().uri().query()).map(str::to_owned);
    if let Some(id) = &id {
        if let Some(record) = record_handshake(server, incoming.request()) {
            server.handshakes.insert(id, record);
        }
    }

    let ws = match incoming.accept().await {
        Ok(ws) => ws,
        Err(e) => {
            if let Some(id) = &id {
                server.handshakes.remove(id);
            }
            info!(%peer, %path, "websocket handshake refused: {}", causes(&e));
            return None;
        }
    };
    if let Some(id) = &id {
        let selected = ws.protocol().map(str::to_owned);
        server.handshakes.update(id, |r| r.protocol = selected);
    }
    Some(Session { ws, path })
}

/// Echo until the session ends; then log one line.
async fn run_session(session: &mut Session, peer: SocketAddr, shutdown: &Shutdown) {
    let ws = &mut session.ws;
    let (echoed, end) = echo(ws, shutdown).await;
    // On the heap: the linger's buffer and timer exist only at the end of a session, and inline
    // they would be part of every idle session's future.
    Box::pin(linger(ws.get_ref().get_ref())).await;
    info!(
        %peer,
        path = %session.path,
        protocol = ws.protocol().unwrap_or("none"),
        deflate = ws.uses_deflate(),
        echoed,
        "websocket ended: {end}"
    );
}

/// Echo every text and binary message until the peer closes, the connection fails, or the server
/// shuts down. Returns how many messages were echoed and how the session ended.
///
/// Echoes are queued with `feed`, not `send`: nothing is written per message. The stream writes
/// everything queued in one system call when it has no more decoded messages to hand out and is
/// about to read again, so a burst of messages that arrived in one read is answered by one write
/// (corking per turn of the event loop).
async fn echo(ws: &mut WebSocket<MaybeTlsStream>, shutdown: &Shutdown) -> (u64, String) {
    let mut echoed = 0u64;
    // One shutdown future for the whole session: a fresh one per message would register its
    // waker (a lock) every time.
    let stop = shutdown.stopping();
    tokio::pin!(stop);
    // A message received and not yet queued for sending (the write buffer was full).
    let mut waiting: Option<Message> = None;
    // One hand-written loop rather than `select!`s around `next` and `feed`: this runs once per
    // message, and the macros' bookkeeping costs as much as the rest of the echo. The shutdown
    // signal is looked at whenever the session would wait.
    let end = std::future::poll_fn(|cx| loop {
        if let Some(message) = waiting.take() {
            match Pin::new(&mut *ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    if let Err(e) = Pin::new(&mut *ws).start_send(message) {
                        return Poll::Ready(End::Failed(format!(
                            "error while echoing: {}",
                            causes(&e)
                        )));
                    }
                    echoed += 1;
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(End::Failed(format!("error while echoing: {}", causes(&e))))
                }
                Poll::Pending => {
                    waiting = Some(message);
                    return stop.as_mut().poll(cx).map(|()| End::Shutdown);
                }
            }
        }
        match Pin::new(&mut *ws).poll_next(cx) {
            Poll::Ready(None) => return Poll::Ready(End::Closed),
            Poll::Ready(Some(Err(e))) => {
                return Poll::Ready(End::Failed(format!("error: {}", causes(&e))))
            }
            Poll::Ready(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => {
                waiting = Some(m);
            }
            // Pings are answered by the core; pongs need nothing.
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Pending => return stop.as_mut().poll(cx).map(|()| End::Shutdown),
        }
    })
    .await;
    // The ends run once per session: on the heap, so their futures (timers, close handshake)
    // do not make every session's future larger.
    let end = match end {
        End::Closed => format!("closed by peer, {}", describe_close(ws)),
        End::Shutdown => Box::pin(going_away(ws)).await,
        End::Failed(end) => {
            Box::pin(drain(ws)).await;
            end
        }
    };
    (echoed, end)
}

/// How an echo session ended.
enum End {
    /// The peer closed (the stream ended).
    Closed,
    /// The server is shutting down.
    Shutdown,
    /// The connection failed; what to log.
    Failed(String),
}

/// Close with 1001 because the server is shutting down, and wait (bounded) for the answer.
async fn going_away(ws: &mut WebSocket<MaybeTlsStream>) -> String {
    match ws
        .close(CloseCode::GOING_AWAY, "server shutting down")
        .await
    {
        Ok(()) => format!(
            "closed by server shutdown (1001), peer answered {}",
            describe_close(ws)
        ),
        Err(e) => format!("server shutdown, close failed: {}", causes(&e)),
    }
}

/// After an error the core has queued the right close frame; keep reading (bounded) so it is
/// written and the peer's answer is read, instead of cutting the TCP connection at once.
async fn drain(ws: &mut WebSocket<MaybeTlsStream>) {
    let _ = tokio::time::timeout(AFTER_ERROR_TIMEOUT, async {
        while let Some(item) = ws.next().await {
            if item.is_err() {
                // A second error means the transport is gone.
                break;
            }
        }
    })
    .await;
}

/// Read and discard what the client still sends until it closes its side, bounded by
/// [`LINGER_TIMEOUT`].
///
/// Closing a TCP socket that has unread data makes the kernel send RST instead of FIN, and an RST
/// can destroy the close frame we just sent before the client reads it. That happens whenever the
/// client was still sending (a message, its own close) when the session ended here, e.g. after a
/// 1009. The write side is already shut down (FIN sent) when the stream has ended.
async fn linger(tcp: &TcpStream) {
    // Not zero-filled: the bytes are discarded unread, and zeroing 4 KiB per connection would be
    // a measurable share of a short connection's cost.
    let mut buf = Vec::with_capacity(4096);
    // Usually the client's FIN is here already: a few reads tell, without arming a timer.
    for _ in 0..4 {
        buf.clear();
        match tcp.try_read_buf(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => return,
        }
    }
    let _ = tokio::time::timeout(LINGER_TIMEOUT, async {
        loop {
            if tcp.readable().await.is_err() {
                return;
            }
            buf.clear();
            match tcp.try_read_buf(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

/// The peer's close frame as a log fragment.
fn describe_close(ws: &WebSocket<MaybeTlsStream>) -> String {
    match ws.close_frame() {
        Some(Some(CloseFrame { code, reason })) if reason.is_empty() => format!("code {code}"),
        Some(Some(CloseFrame { code, reason })) => format!("code {code} {reason:?}"),
        Some(None) => "no status code (1005)".to_owned(),
        None => "no close frame (1006)".to_owned(),
    }
}

/// What the demo page shows about this handshake. `None` when the request has no key (the
/// handshake is going to be refused anyway).
fn record_handshake(server: &Server, request: &Request<()>) -> Option<HandshakeRecord> {
    let headers = request.headers();
    let key = headers.get("sec-websocket-key")?;
    let key = String::from_utf8_lossy(key.as_bytes()).trim().to_owned();
    let offered: Vec<String> = header_tokens(headers, "sec-websocket-protocol")
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect();
    Some(HandshakeRecord {
        request_line: format!(
            "{} {} {:?}",
            request.method(),
            request.uri(),
            request.version()
        ),
        headers: headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
        accept: accept_key(key.as_bytes()),
        key,
        // The same rule the builder applies; replaced by the actual selection after the 101.
        protocol: select_protocol(&server.protocols, &offered).map(str::to_owned),
    })
}

/// A plain HTTP request: the demo page, a handshake record, or 404.
async fn http(server: &Server, incoming: Incoming<MaybeTlsStream>, peer: SocketAddr) {
    let request = incoming.request();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let head_only = method == Method::HEAD;

    let (status, content_type, body) = match (&method, path.as_str()) {
        (&Method::GET | &Method::HEAD, "/") => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            demo::PAGE.as_bytes().to_vec(),
        ),
        (&Method::GET | &Method::HEAD, "/handshake") => {
            let record = demo::query_id(request.uri().query())
                .and_then(|id| server.handshakes.get(id).map(|r| r.to_json(id)));
            match record {
                Some(json) => (StatusCode::OK, "application/json", json.into_bytes()),
                None => (
                    StatusCode::NOT_FOUND,
                    "application/json",
                    b"{\"error\":\"no handshake recorded for this id\"}".to_vec(),
                ),
            }
        }
        (_, "/" | "/handshake") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            b"method not allowed\n".to_vec(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            b"not found; WebSocket clients are welcome on any path\n".to_vec(),
        ),
    };

    let mut response = Response::new(());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // `respond` closes the connection after the answer; say so (RFC 9112 §9.6).
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    let body: &[u8] = if head_only {
        // HEAD: the headers GET would send, including its length, and no body.
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        &[]
    } else {
        &body
    };
    let result = incoming.respond(response, body).await;
    match result {
        Ok(()) => info!(%peer, %method, %path, status = status.as_u16(), "http request"),
        Err(e) => {
            info!(%peer, %method, %path, status = status.as_u16(), "http request, answer failed: {}", causes(&e))
        }
    }
}

/// SIGINT and SIGTERM (Ctrl-C only where there are no Unix signals).
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// Wait for the next signal; returns its name.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            // If Ctrl-C cannot be watched, shutting down at once beats running unstoppable.
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_session_task_stays_small() {
        // Most of what an idle WebSocket costs the server is its task, whose future keeps the
        // size of its largest state for its whole life (see `connection`).
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let server = Arc::new(Server {
            builder: ServerBuilder::new(),
            protocols: Vec::new(),
            handshakes: HandshakeLog::default(),
            tls: None,
            shutdown: Shutdown::default(),
        });
        let task = connection(Box::new(Accepted {
            server,
            tcp,
            peer: addr,
        }));
        let size = std::mem::size_of_val(&task);
        // Printed for the record (`--nocapture`); the bound catches a large state slipping in.
        println!("connection future: {size} bytes");
        assert!(size <= 1280, "connection future of {size} bytes");
    }
}
