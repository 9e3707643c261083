//! `gangway serve`: an echo server on every path, with the demo page at `GET /`; with
//! `--broadcast`, a broadcast server instead: each connection is a member of the room named by
//! its URL path (`gangway::hub`), and what a client sends goes to every member of its room.
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
use std::task::Poll;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures_util::{Stream, StreamExt};
use gangway::http2::{H2Stream, Http2Incoming, Http2Server};
use gangway::hub::{Hub, HubConfig, Member, PublishError, WhenFull};
use gangway::proto::handshake::{accept_key, header_tokens, select_protocol};
use gangway::{
    CloseCode, CloseFrame, Config, DeflateConfig, Incoming, MaybeTlsStream, Message, ServerBuilder,
    WebSocket,
};
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::demo::{self, HandshakeLog, HandshakeRecord};
use crate::shutdown::{OpenGuard, Shutdown, Stopping};
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
    /// Address to listen on, HOST:PORT (127.0.0.1:9001 for this machine only, 0.0.0.0:9001 for
    /// every interface, [::1]:9001 for IPv6); port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9001", value_parser = parse_listen)]
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
    /// answer to a ping; no close frame is sent to a dead peer. An HTTP/2 connection with no
    /// request or WebSocket open for as long is closed with GOAWAY (fractions allowed; 0: never).
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

    /// How permessage-deflate keeps its compression state (docs/deflate.md has the memory each
    /// costs). `window` (the default): the server's messages are compressed without context
    /// takeover, each on its own with a state the thread lends; the client's may refer back to
    /// earlier ones within a 2^BITS window, the one thing a connection keeps between messages
    /// (4 KiB at 12 bits; a client that cannot be held to a window gets no context takeover).
    /// `shared`: no context takeover either way, an idle connection keeps nothing. `dedicated`:
    /// context takeover both ways, each connection keeps its own states (about 210 KB at 12
    /// bits).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "window",
        value_parser = ["window", "shared", "dedicated"],
        conflicts_with = "no_deflate"
    )]
    deflate_mode: String,

    /// permessage-deflate's LZ77 window, 2^BITS bytes: the client's in `window` mode (8-13,
    /// default 12); both directions' in `dedicated` mode (8-15, default 12) and in `shared` mode
    /// (8-15, default 15). The client is held to it when it offers client_max_window_bits.
    #[arg(
        long,
        value_name = "BITS",
        value_parser = clap::value_parser!(u8).range(8..=15),
        conflicts_with = "no_deflate"
    )]
    deflate_window_bits: Option<u8>,

    /// permessage-deflate's compression level, 0 (none) to 9 (smallest, slowest); default 6.
    #[arg(
        long,
        value_name = "LEVEL",
        value_parser = clap::value_parser!(u32).range(0..=9),
        conflicts_with = "no_deflate"
    )]
    deflate_level: Option<u32>,

    /// Worker threads, at most 1024; 0: one per CPU this process may run on (see `taskset`).
    /// With one, a single event loop runs everything.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=MAX_THREADS))]
    threads: u16,

    /// Broadcast instead of echoing: every connection joins the room named by its URL path, and
    /// every text or binary message a client sends goes to every member of its room, the sender
    /// included.
    #[arg(long)]
    broadcast: bool,

    /// With --broadcast: a client's messages go to the other members of its room, not back to
    /// itself.
    #[arg(long, requires = "broadcast")]
    broadcast_exclude_self: bool,

    /// With --broadcast: the most bytes of messages waiting for one member (published to its
    /// room, not yet written to it); messages larger than that are refused with 1009.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20, requires = "broadcast",
          value_parser = clap::value_parser!(u64).range(64..=1 << 40))]
    broadcast_queue_bytes: u64,

    /// With --broadcast: the most messages waiting for one member.
    #[arg(long, value_name = "N", default_value_t = 4096, requires = "broadcast",
          value_parser = clap::value_parser!(u64).range(1..=1 << 32))]
    broadcast_queue_messages: u64,

    /// With --broadcast: what happens to a member that has more waiting: its oldest messages
    /// are dropped (and counted), or it is closed with 1013 (try again later) or 1008 (policy
    /// violation).
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = WhenFullArg::Drop,
          requires = "broadcast")]
    broadcast_when_full: WhenFullArg,

    /// With --broadcast: rooms span every `gangway serve --broadcast` connected to this Redis
    /// server (pub/sub), e.g. redis://127.0.0.1:6379. At most once: a process disconnected
    /// from Redis misses what others publish meanwhile (counted and logged).
    #[cfg(feature = "redis")]
    #[arg(
        long,
        value_name = "URL",
        requires = "broadcast",
        conflicts_with = "nats"
    )]
    redis: Option<String>,

    /// With --broadcast: rooms span every `gangway serve --broadcast` connected to this NATS
    /// server (core pub/sub), e.g. nats://127.0.0.1:4222. At most once, as with --redis.
    #[cfg(feature = "nats")]
    #[arg(long, value_name = "URL", requires = "broadcast")]
    nats: Option<String>,

    /// With --redis: keep each room's last N messages in a Redis Stream. Every message then
    /// reaches every member from Redis, in one order for the room, after a line with its
    /// position (`EPOCH:OFFSET`); a client that reconnects with `?epoch=E&offset=N` gets what
    /// it missed first, or is told that it cannot (docs/cluster.md). Local delivery waits for
    /// Redis.
    #[cfg(feature = "redis")]
    #[arg(
        long,
        value_name = "N",
        requires = "redis",
        conflicts_with = "broadcast_exclude_self"
    )]
    history: Option<std::num::NonZeroUsize>,
}

impl ServeOpts {
    /// The engine named by --redis or --nats, if any.
    fn engine(&self) -> Option<gangway_bus::Engine> {
        #[cfg(feature = "redis")]
        if let Some(url) = &self.redis {
            return Some(gangway_bus::Engine::Redis(url.clone()));
        }
        #[cfg(feature = "nats")]
        if let Some(url) = &self.nats {
            return Some(gangway_bus::Engine::Nats(url.clone()));
        }
        None
    }

    /// --history, if given.
    fn history(&self) -> Option<std::num::NonZeroUsize> {
        #[cfg(feature = "redis")]
        return self.history;
        #[cfg(not(feature = "redis"))]
        None
    }
}

/// The most worker threads `--threads` takes: far more than any machine gangway runs on has
/// CPUs, and few enough that a typo cannot ask the system for millions of threads.
const MAX_THREADS: i64 = 1024;

/// A `--listen` value: `HOST:PORT`. A bare port or a bare host is refused with the form to use,
/// rather than with the resolver's "invalid socket address".
fn parse_listen(s: &str) -> Result<String, String> {
    if let Ok(port) = s.trim().parse::<u16>() {
        return Err(format!(
            "an address needs a host: 127.0.0.1:{port} (this machine only) or 0.0.0.0:{port} \
             (every interface)"
        ));
    }
    let has_port = match s.rsplit_once(':') {
        // An IPv6 address without a port ("::1") has colons but no "]:" before its last one.
        Some((host, port)) => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if !has_port {
        return Err(format!(
            "an address needs a port: {s}:9001, or {s}:0 for any free port (IPv6: [::1]:9001)"
        ));
    }
    Ok(s.to_owned())
}

/// `--broadcast-when-full`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum WhenFullArg {
    /// Drop the member's oldest messages and count them.
    Drop,
    /// Close the member with 1013 (try again later).
    Close,
    /// Close the member with 1008 (policy violation).
    ClosePolicy,
}

impl WhenFullArg {
    fn policy(self) -> WhenFull {
        match self {
            WhenFullArg::Drop => WhenFull::Drop,
            WhenFullArg::Close => WhenFull::Close(CloseCode::TRY_AGAIN_LATER),
            WhenFullArg::ClosePolicy => WhenFull::Close(CloseCode::POLICY_VIOLATION),
        }
    }
}

impl ServeOpts {
    /// The number of worker threads to run: `--threads`, or one per CPU available.
    pub(crate) fn threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => usize::from(n),
        }
    }
}

/// The permessage-deflate settings of `--deflate-mode`, `--deflate-window-bits` and
/// `--deflate-level` (the memory each mode costs is in docs/deflate.md).
fn deflate_config(opts: &ServeOpts) -> anyhow::Result<DeflateConfig> {
    let mut config = match opts.deflate_mode.as_str() {
        "shared" | "dedicated" => {
            let (mut config, default_bits) = if opts.deflate_mode == "shared" {
                (DeflateConfig::no_context_takeover(), 15)
            } else {
                (DeflateConfig::default(), 12)
            };
            let bits = opts.deflate_window_bits.unwrap_or(default_bits);
            if bits < 15 {
                // Answered as server_max_window_bits (RFC 7692 §7.1.2.1), and as
                // client_max_window_bits to a client that offered that parameter (§7.1.2.2).
                config.server_max_window_bits = Some(bits);
                config.client_max_window_bits = Some(bits);
            }
            config
        }
        _ => {
            let bits = opts.deflate_window_bits.unwrap_or(12);
            anyhow::ensure!(
                bits <= 13,
                "--deflate-window-bits {bits}: at most 13 with --deflate-mode window (a larger \
                 window is kept as a whole compression state: use --deflate-mode dedicated)"
            );
            DeflateConfig::bounded_client_window(bits)
        }
    };
    if let Some(level) = opts.deflate_level {
        config.level = level;
    }
    Ok(config)
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
    /// With --broadcast: the rooms, one per URL path.
    hub: Option<Hub>,
    /// --broadcast-exclude-self.
    exclude_self: bool,
    /// --history: the bus, which then positions every message; members join with what their
    /// client missed (see [`join_history`]).
    history: Option<gangway_bus::Bus>,
    /// --idle-timeout (`None` for 0): how long an HTTP/2 connection may stay with no stream being
    /// served (see [`serve_http2`]).
    http2_idle_timeout: Option<Duration>,
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
        (Some(cert), Some(key)) => {
            let mut config = gangway::tls::server_config_from_pem_files(cert, key)
                .map_err(|e| anyhow::anyhow!("{}", causes(&e)))
                .context("cannot use the tls certificate")?;
            // HTTP/2 first (browsers then open their WebSockets as streams of the page's
            // connection, RFC 8441), HTTP/1.1 for the others.
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Some(gangway::tls::TlsAcceptor::from(std::sync::Arc::new(config)))
        }
        _ => None,
    };

    // Like the certificate: an option that cannot be used stops the server before it listens.
    let deflate = (!opts.no_deflate)
        .then(|| deflate_config(&opts))
        .transpose()?;

    let listener = listen(&opts.listen)
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
    if let Some(deflate) = deflate {
        config.deflate = deflate;
    }
    let hub_config = opts.broadcast.then(|| {
        let hub_config = HubConfig {
            max_queued_bytes: usize::try_from(opts.broadcast_queue_bytes).unwrap_or(usize::MAX),
            max_queued_messages: usize::try_from(opts.broadcast_queue_messages)
                .unwrap_or(usize::MAX),
            when_full: opts.broadcast_when_full.policy(),
        };
        // A message that could not be queued for anyone is refused as it arrives, with 1009,
        // like any message over the size limit: its frame (payload and a header of up to 10
        // bytes) must fit the queue.
        let largest = hub_config.max_queued_bytes.saturating_sub(10);
        config.max_message_size = config.max_message_size.min(largest);
        config.max_frame_size = config.max_frame_size.min(largest);
        info!(
            exclude_self = opts.broadcast_exclude_self,
            queue_bytes = hub_config.max_queued_bytes,
            queue_messages = hub_config.max_queued_messages,
            when_full = ?opts.broadcast_when_full,
            "broadcast: each connection joins the room named by its URL path"
        );
        hub_config
    });
    // Rooms across processes: the hub hands what its members publish to the bus, and the bus
    // delivers what other processes publish to the hub's members here.
    let mut bus = None;
    let hub = match (hub_config, opts.engine()) {
        (Some(hub_config), Some(engine)) => {
            let bus_config = gangway_bus::BusConfig {
                max_message_size: config.max_message_size,
                history: opts.history(),
                ..gangway_bus::BusConfig::default()
            };
            let shown = format!("{engine:?}");
            let (hub, connected) = gangway_bus::hub_with_bus(engine, bus_config, hub_config)
                .await
                .map_err(|e| anyhow::anyhow!("{}", causes(&e)))
                .with_context(|| format!("cannot join the rooms of other processes ({shown})"))?;
            info!(
                engine = %shown,
                history = opts.history().map_or(0, |n| n.get()),
                "broadcast: rooms span the processes on this engine"
            );
            bus = Some(connected);
            Some(hub)
        }
        (hub_config, _) => hub_config.map(Hub::new),
    };
    let mut builder = ServerBuilder::new().config(config);
    for p in &opts.protocols {
        builder = builder.protocol(p.clone());
    }
    if !opts.origins.is_empty() {
        info!(origins = ?opts.origins, "accepting only these origins");
        builder = builder.allowed_origins(&opts.origins);
    }
    // Leaked: it lives as long as the process (one per run). Connection tasks refer to it
    // without a reference count, and a session's shutdown future, which borrows from it, can
    // then live in the session's small heap block (see `Cold`) instead of its task.
    let server: &'static Server = Box::leak(Box::new(Server {
        builder,
        protocols: opts.protocols,
        handshakes: HandshakeLog::default(),
        tls,
        shutdown: Shutdown::default(),
        hub,
        exclude_self: opts.broadcast_exclude_self,
        history: bus.clone().filter(gangway_bus::Bus::history),
        http2_idle_timeout: Some(opts.idle_timeout).filter(|t| !t.is_zero()),
    }));

    // One signal future for the whole loop, and a hand-written poll instead of `select!`: this
    // runs once per connection, and a fresh `recv` future and the macro's bookkeeping per accept
    // cost as much as the rest of the accept. Every connection waiting in the backlog is taken
    // in one go (tokio's budget makes the task yield after a long run); the signal is looked at
    // whenever the backlog is empty.
    let stop = signals.recv();
    tokio::pin!(stop);
    // Memory freed after a wave of traffic goes back to the system (see `heap`); dropped with the
    // runtime when the server returns.
    tokio::spawn(crate::heap::trim_when_quiet());
    let signal = loop {
        let next: std::io::Result<&str> = std::future::poll_fn(|cx| {
            while let Poll::Ready(accepted) = listener.poll_accept(cx) {
                let (tcp, peer) = accepted?;
                prepare(&tcp);
                // Detached: a panic is reported by the panic hook, and tasks still running
                // when the server returns are dropped with the runtime.
                tokio::spawn(ConnectionTask::new(server, tcp, peer));
            }
            stop.as_mut().poll(cx).map(Ok)
        })
        .await;
        match next {
            Ok(signal) => break signal,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    drop(listener);
    info!(signal, open = server.shutdown.open(), "shutting down");
    if let Some(bus) = &bus {
        let s = bus.stats();
        info!(
            published = s.published,
            delivered = s.delivered,
            lost = s.lost,
            recovered = s.recovered,
            duplicates = s.duplicates,
            gaps = s.gaps,
            epoch_changes = s.epoch_changes,
            refused_too_large = s.refused_too_large,
            dropped_queue_full = s.dropped_queue_full,
            "bus counters"
        );
    }
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

/// Listen on `addr` (a name is resolved; the first address that binds is used), as
/// `TcpListener::bind` does (`SO_REUSEADDR` on Unix, a backlog of 128), with `TCP_NODELAY` set
/// on the listening socket.
///
/// Frames are batched (one write per turn of the event loop), so Nagle's algorithm would only
/// hold answers back waiting for the peer's delayed ACK. On Linux an accepted socket inherits
/// the option from the listener, which saves a system call per connection (see [`prepare`]).
async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut last_err = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let bound = (|| {
            let socket = match addr {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            // As the standard library and tokio do: a restarted server can bind at once while
            // connections of the previous one are in TIME_WAIT. (On Windows the option would
            // let another process take the port.)
            #[cfg(unix)]
            socket.set_reuseaddr(true)?;
            socket.set_nodelay(true)?;
            socket.bind(addr)?;
            socket.listen(128)
        })();
        match bound {
            Ok(listener) => return Ok(listener),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        )
    }))
}

/// Set up an accepted connection: `TCP_NODELAY`, unless inherited from the listener (Linux).
fn prepare(tcp: &TcpStream) {
    #[cfg(not(target_os = "linux"))]
    let _ = tcp.set_nodelay(true);
    #[cfg(target_os = "linux")]
    let _ = tcp;
}

// A connection's guard refers to the server (see `OpenGuard`).
impl AsRef<Shutdown> for Server {
    fn as_ref(&self) -> &Shutdown {
        &self.shutdown
    }
}

/// What a session keeps for its whole life but rarely touches: the server's guard, where the
/// connection came from (for the log line), the shutdown signal, and the echo loop's counters.
/// One small heap block beside the task, allocated when the connection is accepted.
///
/// Apart from the task to keep the task small (see [`ConnectionTask`]). 89 to 104 bytes (see the
/// size test): glibc's allocator then serves it from the 112-byte gap it leaves before the
/// 128-byte aligned I/O state tokio allocates for the connection just before, so it takes no
/// room of its own (seen in allocation traces; a larger or smaller block would).
struct Cold {
    /// Counts the connection as open until the session ends.
    guard: OpenGuard<&'static Server>,
    peer: SocketAddr,
    /// Set once the upgrade is accepted.
    path: RequestPath,
    /// One shutdown future for the whole session: a fresh one per wait would register its waker
    /// (a lock) every time.
    stop: Stopping<'static>,
    /// Messages echoed (published, in a broadcast session).
    echoed: u64,
}

/// One TCP connection's task: read the head, then a WebSocket session or a plain HTTP answer.
///
/// Most of what an idle connection costs is its tokio task, which keeps the size of its
/// future's largest state for its whole life, plus 104 bytes (tokio 1.54), rounded up to a
/// multiple of 128 (the task is 128-byte aligned). Hence a future written by hand rather than an
/// async function, which would also keep its arguments, the references its awaited futures hold
/// into it, and their drop flags: an idle session holds the `WebSocket` and a pointer to
/// [`Cold`], and its task is 384 bytes (640 with an async function). What runs only once, before
/// or after (opening handshake, closing, lingering, the log line), runs in futures of its own on
/// the heap.
///
/// `cold` is beside the [`Phase`] rather than in each of its variants: a change of phase then
/// writes the new phase in place, where taking `cold` out of the old one copied the whole task
/// out and back.
struct ConnectionTask {
    /// Taken when the session ends (into [`end_session`], or dropped with the log line).
    cold: Option<Box<Cold>>,
    phase: Phase,
}

/// Where a [`ConnectionTask`] is.
// The idle session is the variant that matters, and it is kept inline on purpose: boxing it would
// cost an allocation and an indirection per message. The others are short-lived.
#[allow(clippy::large_enum_variant)]
enum Phase {
    /// Accepted, not polled yet (the stream is taken when the opening starts).
    Accepted(Option<TcpStream>),
    /// Reading the request head, then accepting the upgrade or answering plain HTTP. Boxed: its
    /// state (request head, answer being written, their timers) is several times an idle
    /// session's.
    Opening(Pin<Box<dyn std::future::Future<Output = Option<Session>> + Send>>),
    /// The echo session.
    Echoing(WebSocket<MaybeTlsStream>),
    /// The broadcast session (--broadcast): a member of the room named by the path. Boxed: a
    /// member is a `WebSocket` and a pointer, which inline would make every connection's task,
    /// echo sessions' too, one size class larger.
    Broadcasting(Box<Member<MaybeTlsStream>>),
    /// Closing, lingering, the log line.
    Ending(Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
    Done,
}

impl ConnectionTask {
    /// Called right after the accept, before the spawn: `Cold` is allocated between the
    /// connection's I/O state and its task (see [`Cold`]).
    fn new(server: &'static Server, tcp: TcpStream, peer: SocketAddr) -> Self {
        let cold = Box::new(Cold {
            guard: OpenGuard::new(server),
            peer,
            path: RequestPath::new(""),
            stop: server.shutdown.stopping(),
            echoed: 0,
        });
        ConnectionTask {
            cold: Some(cold),
            phase: Phase::Accepted(Some(tcp)),
        }
    }

    /// Whether the session whose socket is `ws` ends here, without a future of its own: the
    /// peer closed and there is nothing left to wait for ([`done_at_once`]). If so its log line
    /// is written; the socket and the guard are dropped by the caller. Else the caller runs
    /// [`end_session`] on the heap.
    fn ended_at_once(
        ws: &WebSocket<MaybeTlsStream>,
        cold: &Cold,
        end: &End,
        dropped: Option<u64>,
    ) -> bool {
        if !done_at_once(ws, end) {
            return false;
        }
        if tracing::enabled!(tracing::Level::INFO) {
            log_end(ws, cold, &closed_by_peer(ws), dropped);
        }
        true
    }
}

impl std::future::Future for ConnectionTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            // `cold` is there until the session ends: in every phase before `Ending`.
            let cold = this.cold.as_deref_mut();
            match (&mut this.phase, cold) {
                (Phase::Accepted(tcp), Some(cold)) => {
                    let Some(tcp) = tcp.take() else {
                        return Poll::Ready(());
                    };
                    this.phase = Phase::Opening(Box::pin(open(cold.guard.owner(), tcp, cold.peer)));
                }
                (Phase::Opening(open), Some(cold)) => {
                    let Poll::Ready(opened) = open.as_mut().poll(cx) else {
                        return Poll::Pending;
                    };
                    let Some(Session { ws, path }) = opened else {
                        // No session: the guard (in `cold`) is dropped here, the task is done.
                        this.cold = None;
                        this.phase = Phase::Done;
                        return Poll::Ready(());
                    };
                    cold.path = path;
                    this.phase = match (ws, &cold.guard.owner().hub) {
                        (Opened::Member(member), _) => Phase::Broadcasting(Box::new(member)),
                        (Opened::Socket(ws), Some(hub)) => {
                            let mut member = hub.member(ws);
                            member.join(cold.path.as_str());
                            Phase::Broadcasting(Box::new(member))
                        }
                        (Opened::Socket(ws), None) => Phase::Echoing(ws),
                    };
                }
                (Phase::Echoing(ws), Some(cold)) => {
                    let Poll::Ready(end) = echo(ws, cold, cx) else {
                        return Poll::Pending;
                    };
                    // Looked at in place: the socket is moved only into `end_session`.
                    if ConnectionTask::ended_at_once(ws, cold, &end, None) {
                        this.cold = None;
                        this.phase = Phase::Done;
                    } else if let (Phase::Echoing(ws), Some(cold)) = (
                        std::mem::replace(&mut this.phase, Phase::Done),
                        this.cold.take(),
                    ) {
                        this.phase = Phase::Ending(Box::pin(end_session(ws, cold, end, None)));
                    }
                }
                (Phase::Broadcasting(member), Some(cold)) => {
                    let Poll::Ready(end) = broadcast(member, cold, cx) else {
                        return Poll::Pending;
                    };
                    if let (Phase::Broadcasting(member), Some(cold)) = (
                        std::mem::replace(&mut this.phase, Phase::Done),
                        this.cold.take(),
                    ) {
                        let dropped = member.dropped();
                        // Leaves the room: nothing more is delivered while it closes.
                        let ws = member.into_websocket();
                        let dropped = Some(dropped);
                        this.phase = if ConnectionTask::ended_at_once(&ws, &cold, &end, dropped) {
                            Phase::Done
                        } else {
                            Phase::Ending(Box::pin(end_session(ws, cold, end, dropped)))
                        };
                    }
                }
                (Phase::Ending(ending), _) => {
                    let Poll::Ready(()) = ending.as_mut().poll(cx) else {
                        return Poll::Pending;
                    };
                    this.phase = Phase::Done;
                }
                // Done; or (not reached) a phase before `Ending` without `cold`, which is taken
                // only when the session ends.
                (Phase::Done, _) | (_, None) => return Poll::Ready(()),
            }
        }
    }
}

/// Read the request head, then accept an upgrade or answer a plain HTTP request. `None` when
/// there is no session to run: answered as HTTP, refused, or the server is stopping.
async fn open(server: &'static Server, tcp: TcpStream, peer: SocketAddr) -> Option<Session> {
    let stream = match &server.tls {
        None => MaybeTlsStream::Plain(tcp),
        // Boxed, as every path but the plain WebSocket's: a TLS session being set up is several
        // times the rest of this future, which would be that size for every connection.
        Some(_) => Box::pin(tls(server, tcp, peer)).await?,
    };
    let incoming = read_request(server, stream, peer).await?;
    // The paths other than the WebSocket's run in futures of their own on the heap: inline,
    // the largest (HTTP/2's, 4 KiB) would make this future that size for every connection,
    // copied when it is boxed and moved on every upgrade. The request is looked at in a plain
    // function (`route`): a local of an async function that was ever borrowed keeps its room in
    // the future until its scope ends, and the request would be kept beside the answer's state.
    let (route, incoming) = route(server, incoming, peer);
    match route {
        Route::Http2 => {
            // `move`: borrowed, the request would keep its room in this future.
            Box::pin(async move {
                let conn = incoming.accept_http2().await;
                serve_http2(server, conn, peer).await;
            })
            .await;
            None
        }
        Route::Http => {
            Box::pin(http(server, incoming, peer)).await;
            None
        }
        Route::Refused(answer) => {
            let (response, body) = *answer;
            let _ = Box::pin(async move { incoming.respond(response, &body).await }).await;
            None
        }
        Route::Upgrade(Upgrade { path, since, id }) => {
            let mut ws = match incoming.accept().await {
                Ok(ws) => ws,
                Err(e) => {
                    if let Some(id) = &id {
                        server.handshakes.remove(id);
                    }
                    info!(%peer, %path, "websocket handshake refused: {}", causes(&e));
                    return None;
                }
            };
            if let Some(id) = id.as_deref() {
                ws = record_protocol(server, id, ws);
            }
            let ws = match &server.history {
                // Boxed: rare, and larger than the rest of this future.
                Some(bus) => Opened::Member(
                    Box::pin(join_history(server, bus, ws, &path, since, peer)).await?,
                ),
                None => Opened::Socket(ws),
            };
            Some(Session { ws, path })
        }
    }
}

/// The request head, or `None` when it could not be read (answered already with 400 or 431 if
/// it was malformed or too large) or the server is stopping.
async fn read_request(
    server: &'static Server,
    stream: MaybeTlsStream,
    peer: SocketAddr,
) -> Option<Incoming<MaybeTlsStream>> {
    let read = tokio::select! {
        // The request first: a head that is there already is read without polling (and so
        // registering, then removing) the shutdown signal.
        biased;
        read = server.builder.read_request(stream) => read,
        () = server.shutdown.stopping() => return None,
    };
    read.inspect_err(|e| info!(%peer, "request failed: {}", causes(e)))
        .ok()
}

/// The demo page's record of the handshake `id`: the subprotocol `ws` selected. The socket is
/// handed back rather than borrowed: a local of an async function that was ever borrowed keeps
/// its room in the future until its scope ends (264 bytes more in the opening future).
fn record_protocol(
    server: &Server,
    id: &str,
    ws: WebSocket<MaybeTlsStream>,
) -> WebSocket<MaybeTlsStream> {
    let selected = ws.protocol().map(str::to_owned);
    server.handshakes.update(id, |r| r.protocol = selected);
    ws
}

/// What to do with a request that was read.
enum Route {
    /// HTTP/2 with prior knowledge.
    Http2,
    /// A plain HTTP request.
    Http,
    /// An upgrade refused before its handshake is looked at (a bad history position), and the
    /// answer (boxed: rare, and twice the size of the rest).
    Refused(Box<(Response<()>, Vec<u8>)>),
    /// An upgrade, and what it asks beyond the handshake.
    Upgrade(Upgrade),
}

/// Where a request goes (the request given back).
fn route(
    server: &Server,
    incoming: Incoming<MaybeTlsStream>,
    peer: SocketAddr,
) -> (Route, Incoming<MaybeTlsStream>) {
    let route = if incoming.is_http2_prior_knowledge() {
        Route::Http2
    } else if !incoming.is_upgrade() {
        Route::Http
    } else {
        match upgrade(server, &incoming, peer) {
            Ok(upgrade) => Route::Upgrade(upgrade),
            Err(answer) => Route::Refused(Box::new(answer)),
        }
    };
    (route, incoming)
}

/// The TLS handshake of a connection to a server with a certificate: the encrypted stream, or
/// `None` when there is no HTTP/1.1 session to run (HTTP/2 chosen by ALPN and served here, the
/// handshake failed or timed out, the server is stopping).
async fn tls(server: &'static Server, tcp: TcpStream, peer: SocketAddr) -> Option<MaybeTlsStream> {
    let acceptor = server.tls.as_ref()?;
    // Bounded like the request head: a client that never finishes must not hold a task.
    let accepted = tokio::select! {
        tls = tokio::time::timeout(
            gangway::DEFAULT_HANDSHAKE_TIMEOUT,
            acceptor.accept(tcp),
        ) => tls,
        () = server.shutdown.stopping() => return None,
    };
    match accepted {
        Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
            let conn = server.builder.accept_http2(MaybeTlsStream::from(tls)).await;
            serve_http2(server, conn, peer).await;
            None
        }
        Ok(Ok(tls)) => Some(MaybeTlsStream::from(tls)),
        Ok(Err(e)) => {
            info!(%peer, "tls handshake failed: {}", causes(&e));
            None
        }
        Err(_elapsed) => {
            info!(%peer, "tls handshake timed out");
            None
        }
    }
}

/// An accepted WebSocket, and the request path for its log line.
struct Session {
    ws: Opened,
    path: RequestPath,
}

/// An accepted WebSocket, or with --history a member of its room already.
enum Opened {
    /// Echoing, or joining its room without history.
    Socket(WebSocket<MaybeTlsStream>),
    /// Joined with what its client missed (see [`join_history`]).
    Member(Member<MaybeTlsStream>),
}

/// The request path, kept for the session's log line: inline when it is short, as nearly every
/// path is, so an idle session holds no allocation for it (a `String` would cost a heap block
/// on top of its 24 bytes). 16 bytes, so that [`Cold`] stays small.
enum RequestPath {
    /// The first `len` bytes of the array.
    Inline { len: u8, bytes: [u8; INLINE_PATH] },
    /// A thin pointer: a `Box<str>` would make every path's slot 24 bytes instead of 16.
    Heap(Box<Box<str>>),
}

/// The longest path kept inline: what fits beside the length and the variant tag in 16 bytes.
const INLINE_PATH: usize = 14;

impl RequestPath {
    fn new(path: &str) -> Self {
        match u8::try_from(path.len()) {
            Ok(len) if path.len() <= INLINE_PATH => {
                let mut bytes = [0; INLINE_PATH];
                bytes[..path.len()].copy_from_slice(path.as_bytes());
                RequestPath::Inline { len, bytes }
            }
            _ => RequestPath::Heap(Box::new(path.into())),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Copied whole from a `&str`, so always UTF-8; the default is never taken.
            RequestPath::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            RequestPath::Heap(path) => path,
        }
    }
}

impl std::fmt::Display for RequestPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an upgrade request asks beyond the handshake, taken before it is answered.
struct Upgrade {
    /// For the log line and the room.
    path: RequestPath,
    /// With history: the position the client saw last.
    since: Option<gangway_bus::Position>,
    /// The demo page's id for the handshake record (`?id=`), recorded already.
    id: Option<String>,
}

/// The upgrade request's path, its position in the room's history, and the demo page's record
/// of its handshake; `Err` with the `400` to answer when the position does not parse.
#[allow(clippy::result_large_err)]
fn upgrade(
    server: &Server,
    incoming: &Incoming<MaybeTlsStream>,
    peer: SocketAddr,
) -> Result<Upgrade, (Response<()>, Vec<u8>)> {
    let path = RequestPath::new(incoming.uri().path());
    // With history: the position the client saw last, checked before answering 101.
    let since = asked_position(server, incoming.uri()).inspect_err(|_| {
        info!(%peer, %path, "websocket refused: bad position in the query");
    })?;
    // Record before answering 101: the page asks for the record as soon as its socket opens.
    let id = demo::query_id(incoming.uri().query()).map(str::to_owned);
    if let Some(id) = &id {
        if let Some(record) = record_handshake(server, incoming.request(), None) {
            server.handshakes.insert(id, record);
        }
    }
    Ok(Upgrade { path, since, id })
}

/// How long a member joining with history may wait for the engine (its subscription to the
/// room, the history reads) before it is closed with 1013.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// With --history: the position a client passes in its URL's query (`?epoch=E&offset=N`),
/// `None` without. `Err` with a 400 answer when it does not parse.
#[allow(clippy::result_large_err)]
fn asked_position(
    server: &Server,
    uri: &http::Uri,
) -> Result<Option<gangway_bus::Position>, (Response<()>, Vec<u8>)> {
    if server.history.is_none() {
        return Ok(None);
    }
    gangway_bus::Position::from_query(uri.query()).map_err(|e| {
        let body = format!("bad position: {e}\n").into_bytes();
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::BAD_REQUEST;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        (response, body)
    })
}

/// With --history: make `ws` a member of the room named by `path`, first sending what its client
/// missed since `since` and the control line (`gangway_bus::join_with_history`). `None` when the
/// engine does not answer in time (closed with 1013), the connection failed, or the server is
/// stopping (closed with 1001).
async fn join_history<S: Transport>(
    server: &Server,
    bus: &gangway_bus::Bus,
    ws: WebSocket<S>,
    path: &RequestPath,
    since: Option<gangway_bus::Position>,
    peer: SocketAddr,
) -> Option<Member<S>> {
    // Always set with --history (it requires --redis, which requires --broadcast).
    let hub = server.hub.as_ref()?;
    let mut member = hub.member(ws);
    let room = path.as_str();
    let joining = tokio::time::timeout(
        JOIN_TIMEOUT,
        gangway_bus::join_with_history(bus, &mut member, room, since.as_ref()),
    );
    let joined = tokio::select! {
        joined = joining => Some(joined),
        () = server.shutdown.stopping() => None,
    };
    let (code, reason, why) = match joined {
        Some(Ok(Ok(joined))) => {
            info!(
                %peer,
                room,
                asked = %since.map_or_else(|| "nothing".to_owned(), |p| p.to_string()),
                told = ?joined.control,
                at = %joined.at,
                recovered = joined.recovered,
                "member joined with history"
            );
            return Some(member);
        }
        Some(Ok(Err(gangway_bus::JoinError::Send(e)))) => {
            info!(%peer, room, "joining with history failed: {}", causes(&e));
            return None;
        }
        Some(Ok(Err(e))) => (
            CloseCode::TRY_AGAIN_LATER,
            "cannot read the room's history",
            causes(&e),
        ),
        Some(Err(_elapsed)) => (
            CloseCode::TRY_AGAIN_LATER,
            "the message engine does not answer",
            format!("the engine did not answer within {JOIN_TIMEOUT:?}"),
        ),
        None => (
            CloseCode::GOING_AWAY,
            "server shutting down",
            "server shutting down".to_owned(),
        ),
    };
    warn!(%peer, room, "member not joined: {why}; closing with {code}");
    let _ = tokio::time::timeout(AFTER_ERROR_TIMEOUT, member.close(code, reason)).await;
    None
}

/// Echo every text and binary message until the peer closes, the connection fails, or the server
/// shuts down (`cold.stop` resolves). Ready with how the loop ended; `cold.echoed` counts the
/// messages echoed.
///
/// Messages are lent out of the read buffer and answered at once, in place
/// ([`WebSocket::poll_each`]): nothing is split off, counted or allocated per message, and a large
/// message goes back out of the buffer it arrived in. Nothing is written per message either: the
/// answers to everything one read brought go out in one system call, before the next read. The
/// shutdown signal is looked at whenever the session would wait.
fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
    cold: &mut Cold,
    cx: &mut std::task::Context<'_>,
) -> Poll<End> {
    // Counted here and added once on the way out: the loop then touches `cold` only to wait.
    let mut echoed = 0;
    let mut refused = None;
    // Pings are answered by the core; pongs need nothing.
    let polled = ws.poll_each(cx, |_, replies| match replies.echo() {
        Ok(sent) => echoed += u64::from(sent),
        Err(e) => refused = Some(e),
    });
    cold.echoed += echoed;
    if let Some(e) = refused {
        // Not reached: a message is lent only while the connection is open, and then it can be
        // sent.
        return Poll::Ready(End::Failed(format!("error while echoing: {e}")));
    }
    match polled {
        Poll::Ready(Ok(())) => Poll::Ready(End::Closed),
        Poll::Ready(Err(e)) if vanished(&e) => Poll::Ready(End::Vanished),
        Poll::Ready(Err(e)) => Poll::Ready(End::Failed(format!("error: {}", causes(&e)))),
        Poll::Pending => Pin::new(&mut cold.stop).poll(cx).map(|()| End::Shutdown),
    }
}

/// Publish every text and binary message to the member's room until the peer closes, the
/// connection fails, or the server shuts down; meanwhile the member's stream delivers what the
/// room receives. `cold.echoed` counts the messages published.
fn broadcast<S: AsyncRead + AsyncWrite + Unpin>(
    member: &mut Member<S>,
    cold: &mut Cold,
    cx: &mut std::task::Context<'_>,
) -> Poll<End> {
    let exclude_self = cold.guard.owner().exclude_self;
    let mut published = 0;
    let result = loop {
        match Pin::new(&mut *member).poll_next(cx) {
            Poll::Ready(None) => break Poll::Ready(End::Closed),
            Poll::Ready(Some(Err(e))) => {
                break Poll::Ready(End::Failed(format!("error: {}", causes(&e))))
            }
            Poll::Ready(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => {
                let room = cold.path.as_str();
                let sent = if exclude_self {
                    member.publish_to_others(room, &m)
                } else {
                    member.publish(room, &m)
                };
                match sent {
                    Ok(_) => published += 1,
                    // With --history, when the queue toward Redis is full (Redis has been
                    // unreachable for a while): nobody got the message; the client is told to
                    // come back later rather than have its messages vanish.
                    Err(PublishError::Refused) => break Poll::Ready(End::Refused),
                    // Cannot happen: the message is text or binary, no larger than the queue
                    // (the size limit is set so), and --history conflicts with
                    // --broadcast-exclude-self.
                    Err(_) => {}
                }
            }
            // Pings are answered by the core; pongs need nothing.
            Poll::Ready(Some(Ok(_))) => continue,
            Poll::Pending => break Pin::new(&mut cold.stop).poll(cx).map(|()| End::Shutdown),
        }
    };
    cold.echoed += published;
    result
}

/// Whether `e` is the peer gone without a close frame: its EOF or a reset, not a violation
/// of the protocol (a laptop closed, a process killed, a tab closed by a browser that skips
/// the close handshake).
fn vanished(e: &gangway::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        gangway::Error::Protocol(gangway::proto::ProtocolError::UnexpectedEof) => true,
        gangway::Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// How an echo session ended.
enum End {
    /// The peer closed (the stream ended).
    Closed,
    /// The peer went away without a close frame.
    Vanished,
    /// The server is shutting down.
    Shutdown,
    /// With --history: the bus refused a message the client sent (its queue toward the engine
    /// is full).
    Refused,
    /// The connection failed; what to log.
    Failed(String),
}

/// Whether a session that ended so has nothing left to do but its log line: the peer closed
/// and its close frame was answered. A client that sent its close frame sends nothing more
/// (§5.5.1), except the pong to a ping of ours that crossed it: with none awaited, nothing can
/// arrive to turn our close into a reset, and the client's FIN needs no waiting for.
fn done_at_once<S: Transport>(ws: &WebSocket<S>, end: &End) -> bool {
    matches!(end, End::Closed) && !ws.awaiting_pong()
}

/// The end of a session, once: finish the close handshake as `end` requires, let the client
/// close its side, and log one line. Runs on the heap (see [`ConnectionTask::ended_at_once`]),
/// unless there is nothing to wait for ([`done_at_once`]). `dropped`: a broadcast session's
/// messages dropped for being too slow.
async fn end_session<S: Transport>(
    mut ws: WebSocket<S>,
    cold: Box<Cold>,
    end: End,
    dropped: Option<u64>,
) {
    let ws = &mut ws;
    let done = done_at_once(ws, &end);
    // The description is only for the log line: not built when it is not logged.
    let logged = tracing::enabled!(tracing::Level::INFO);
    let end = match end {
        End::Closed if logged => closed_by_peer(ws),
        End::Closed => String::new(),
        End::Shutdown => going_away(ws).await,
        End::Refused => match ws
            .close(
                CloseCode::TRY_AGAIN_LATER,
                "the message engine is unreachable",
            )
            .await
        {
            Ok(()) => "closed with 1013: the queue toward the message engine is full".to_owned(),
            Err(e) => format!("engine queue full, close failed: {}", causes(&e)),
        },
        // Nothing to drain or answer: the transport is gone.
        End::Vanished => "peer disconnected without closing".to_owned(),
        End::Failed(end) => {
            drain(ws).await;
            end
        }
    };
    if !done {
        if let Some(tcp) = ws.get_ref().tcp() {
            linger(tcp).await;
        }
    }
    log_end(ws, &cold, &end, dropped);
}

/// How a session the peer closed ended, for its log line.
fn closed_by_peer<S: Transport>(ws: &WebSocket<S>) -> String {
    format!("closed by peer, {}", describe_close(ws))
}

/// The session's one log line, at its end: `end` says how it ended.
fn log_end<S: Transport>(ws: &WebSocket<S>, cold: &Cold, end: &str, dropped: Option<u64>) {
    match dropped {
        None => info!(
            peer = %cold.peer,
            path = %cold.path,
            protocol = ws.protocol().unwrap_or("none"),
            deflate = ws.uses_deflate(),
            echoed = cold.echoed,
            "websocket ended: {end}"
        ),
        Some(dropped) => info!(
            peer = %cold.peer,
            room = %cold.path,
            protocol = ws.protocol().unwrap_or("none"),
            deflate = ws.uses_deflate(),
            published = cold.echoed,
            dropped,
            "websocket ended: {end}"
        ),
    }
}

/// Close with 1001 because the server is shutting down, and wait (bounded) for the answer.
async fn going_away<S: Transport>(ws: &mut WebSocket<S>) -> String {
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
async fn drain<S: Transport>(ws: &mut WebSocket<S>) {
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
fn describe_close<S: Transport>(ws: &WebSocket<S>) -> String {
    match ws.close_frame() {
        Some(Some(CloseFrame { code, reason })) if reason.is_empty() => format!("code {code}"),
        Some(Some(CloseFrame { code, reason })) => format!("code {code} {reason:?}"),
        Some(None) => "no status code (1005)".to_owned(),
        None => "no close frame (1006)".to_owned(),
    }
}

/// What the demo page shows about this handshake: an HTTP/1.1 upgrade, or (with its
/// `:protocol`) an HTTP/2 extended CONNECT. `None` when an HTTP/1.1 request has no key (the
/// handshake is going to be refused anyway).
fn record_handshake(
    server: &Server,
    request: &Request<()>,
    connect_protocol: Option<&str>,
) -> Option<HandshakeRecord> {
    let headers = request.headers();
    let key = match connect_protocol {
        // RFC 8441 §5: no key over HTTP/2.
        Some(_) => None,
        None => {
            let key = headers.get("sec-websocket-key")?;
            Some(String::from_utf8_lossy(key.as_bytes()).trim().to_owned())
        }
    };
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
        headers: connect_protocol
            .map(|p| (":protocol".to_owned(), p.to_owned()))
            .into_iter()
            .chain(headers.iter().map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            }))
            .collect(),
        accept: key.as_ref().map(|k| accept_key(k.as_bytes())),
        key,
        // The same rule the builder applies; replaced by the actual selection after the 101.
        protocol: select_protocol(&server.protocols, &offered).map(str::to_owned),
    })
}

/// A plain HTTP request: the demo page, a handshake record, or 404.
async fn http(server: &Server, incoming: Incoming<MaybeTlsStream>, peer: SocketAddr) {
    let request = incoming.request();
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let (mut response, body) = page(server, request);
    // `respond` closes the connection after the answer; say so (RFC 9112 §9.6).
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    let status = response.status().as_u16();
    let result = incoming.respond(response, &body).await;
    match result {
        Ok(()) => info!(%peer, %method, %path, status, "http request"),
        Err(e) => {
            info!(%peer, %method, %path, status, "http request, answer failed: {}", causes(&e))
        }
    }
}

/// The answer to a plain HTTP request, on HTTP/1.1 or HTTP/2: the demo page, a handshake
/// record, or 404.
fn page(server: &Server, request: &Request<()>) -> (Response<()>, Vec<u8>) {
    let method = request.method();
    let head_only = method == Method::HEAD;

    let (status, content_type, body) = match (method, request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/") => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            demo::page(server.hub.is_some()).into_bytes(),
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
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    // HEAD: the headers GET would send, including its length, and no body.
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    let body = if head_only { Vec::new() } else { body };
    (response, body)
}

/// The transport of a session: a TCP connection of its own (HTTP/1.1, perhaps in TLS), or a
/// stream of an HTTP/2 connection.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP connection to linger on at the end, if the session has one of its own.
    fn tcp(&self) -> Option<&TcpStream>;
}

impl Transport for MaybeTlsStream {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.get_ref())
    }
}

/// An HTTP/2 stream ends with END_STREAM or a reset, both in frames: nothing to linger on.
impl Transport for H2Stream {
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

/// Serve an HTTP/2 connection (TLS with ALPN `h2`, or cleartext with prior knowledge): the demo
/// page and the handshake records as on HTTP/1.1, and WebSockets as extended CONNECT streams
/// (RFC 8441), each an echo session of its own. Runs until the connection ends; on shutdown it
/// sends GOAWAY and lets the sessions close with 1001.
async fn serve_http2<S: AsyncRead + AsyncWrite + Unpin>(
    server: &'static Server,
    conn: Result<Http2Server<S>, gangway::Error>,
    peer: SocketAddr,
) {
    let mut conn = match conn {
        Ok(conn) => conn,
        Err(e) => {
            info!(%peer, "http/2 connection failed: {}", causes(&e));
            return;
        }
    };
    // The requests being served, each in a task of its own. While there is none, the
    // connection is idle: after --idle-timeout it is closed with GOAWAY, as an HTTP/1.1
    // connection that sends no request is at the handshake timeout, so that a client cannot
    // keep connections open for nothing.
    let mut streams = tokio::task::JoinSet::new();
    let mut idle_since = tokio::time::Instant::now();
    let mut stopping = false;
    // Once closed for idleness, the connection ends when the client has seen the GOAWAY (it
    // answers the PING sent with it); a client that answers nothing is dropped when that has
    // not happened within --idle-timeout again.
    let mut give_up = None;
    // The connection's frames, for every stream, move only while `accept` is polled: it is
    // polled until the connection is over, also while shutting down.
    loop {
        let next = if stopping {
            while streams.try_join_next().is_some() {}
            match give_up.filter(|_| streams.is_empty()) {
                Some(at) => match tokio::time::timeout_at(at, conn.accept()).await {
                    Ok(next) => next,
                    Err(_elapsed) => {
                        info!(%peer, "http/2 connection idle: no answer to its GOAWAY, dropped");
                        break;
                    }
                },
                None => conn.accept().await,
            }
        } else {
            let idle_deadline = server
                .http2_idle_timeout
                .filter(|_| streams.is_empty())
                .map(|timeout| idle_since + timeout);
            tokio::select! {
                next = conn.accept() => next,
                Some(_) = streams.join_next(), if !streams.is_empty() => {
                    if streams.is_empty() {
                        idle_since = tokio::time::Instant::now();
                    }
                    continue;
                }
                () = tokio::time::sleep_until(idle_deadline.unwrap_or(idle_since)),
                    if idle_deadline.is_some() =>
                {
                    info!(%peer, "http/2 connection idle: closing it");
                    stopping = true;
                    give_up = server
                        .http2_idle_timeout
                        .map(|timeout| tokio::time::Instant::now() + timeout);
                    conn.graceful_shutdown();
                    continue;
                }
                () = server.shutdown.stopping() => {
                    stopping = true;
                    conn.graceful_shutdown();
                    continue;
                }
            }
        };
        match next {
            None => break,
            Some(Err(e)) => {
                info!(%peer, "http/2 connection failed: {}", causes(&e));
                break;
            }
            Some(Ok(incoming)) => {
                streams.spawn(http2_request(server, incoming, peer));
            }
        }
    }
    // What is still running ends on its own (its stream fails with the connection).
    streams.detach_all();
}

/// One request of an HTTP/2 connection: a WebSocket echo session, or a page.
async fn http2_request(server: &'static Server, incoming: Http2Incoming, peer: SocketAddr) {
    let request = incoming.request();
    let path = RequestPath::new(request.uri().path());
    if !incoming.is_websocket() {
        let (method, uri_path) = (request.method().clone(), request.uri().path().to_owned());
        let (response, body) = page(server, request);
        let status = response.status().as_u16();
        match incoming.respond(response, body.into()) {
            Ok(()) => info!(%peer, %method, path = %uri_path, status, "http/2 request"),
            Err(e) => {
                info!(%peer, %method, path = %uri_path, status, "http/2 request, answer failed: {}", causes(&e))
            }
        }
        return;
    }
    let since = match asked_position(server, request.uri()) {
        Ok(since) => since,
        Err((response, body)) => {
            info!(%peer, %path, "websocket refused: bad position in the query");
            let _ = incoming.respond(response, body.into());
            return;
        }
    };
    let id = demo::query_id(request.uri().query()).map(str::to_owned);
    if let Some(id) = &id {
        if let Some(record) = record_handshake(server, request, incoming.protocol()) {
            server.handshakes.insert(id, record);
        }
    }
    let mut ws = match incoming.accept().await {
        Ok(ws) => ws,
        Err(e) => {
            if let Some(id) = &id {
                server.handshakes.remove(id);
            }
            info!(%peer, %path, "websocket handshake refused: {}", causes(&e));
            return;
        }
    };
    if let Some(id) = &id {
        let selected = ws.protocol().map(str::to_owned);
        server.handshakes.update(id, |r| r.protocol = selected);
    }
    let mut cold = Box::new(Cold {
        guard: OpenGuard::new(server),
        peer,
        path,
        stop: server.shutdown.stopping(),
        echoed: 0,
    });
    match &server.hub {
        Some(hub) => {
            let mut member = match &server.history {
                Some(bus) => match join_history(server, bus, ws, &cold.path, since, peer).await {
                    Some(member) => member,
                    None => return,
                },
                None => {
                    let mut member = hub.member(ws);
                    member.join(cold.path.as_str());
                    member
                }
            };
            let end = std::future::poll_fn(|cx| broadcast(&mut member, &mut cold, cx)).await;
            let dropped = member.dropped();
            end_session(member.into_websocket(), cold, end, Some(dropped)).await;
        }
        None => {
            let end = std::future::poll_fn(|cx| echo(&mut ws, &mut cold, cx)).await;
            end_session(ws, cold, end, None).await;
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

    #[test]
    fn idle_session_task_stays_small() {
        // Most of what an idle WebSocket costs the server is its task, which keeps the size of
        // its future's largest state for its whole life (see `ConnectionTask`). The task around
        // the future adds 104 bytes (tokio 1.54) and is rounded up to a multiple of 128: 280
        // bytes is the most that fits a 384-byte task; one more byte makes every connection's
        // task 512.
        let task = std::mem::size_of::<ConnectionTask>();
        // glibc's allocator serves a request of 89 to 104 bytes from the 112-byte gap it leaves
        // before the connection's 128-byte aligned I/O state (see `Cold`): a larger or a smaller
        // one takes room of its own.
        let cold = std::mem::size_of::<Cold>();
        // Printed for the record (`--nocapture`); the bounds catch a state slipping in or out.
        println!("connection task: {task} bytes, cold state: {cold} bytes");
        assert!(task <= 280, "connection task of {task} bytes");
        assert!((89..=104).contains(&cold), "cold state of {cold} bytes");
        assert_eq!(std::mem::size_of::<RequestPath>(), 16);
    }

    /// The size of what `f` returns, without calling it.
    fn returned_size<A, B, C, R>(_: impl FnOnce(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn the_opening_future_stays_small() {
        // Boxed for every connection (see `ConnectionTask::Opening`) and moved as often: at most
        // 1,032 bytes, glibc's allocator serves it from its per-thread cache (a larger block
        // takes its slower path, about 300 instructions more per allocation and per free,
        // callgrind). It was 3,328 bytes when the TLS handshake, the request head and the
        // answer's state were all kept in it at once.
        let open = returned_size(open);
        println!("opening future: {open} bytes");
        assert!(open <= 1032, "opening future of {open} bytes");
    }

    #[test]
    fn request_paths_inline_and_on_the_heap_read_back() {
        let long = format!("/{}", "é".repeat(200));
        for path in [
            "",
            "/",
            "/abcdefghijklm",
            "/abcdefghijklmn",
            "/é",
            long.as_str(),
        ] {
            let kept = RequestPath::new(path);
            assert_eq!(kept.as_str(), path);
            assert_eq!(kept.to_string(), path);
            let inline = matches!(kept, RequestPath::Inline { .. });
            assert_eq!(inline, path.len() <= INLINE_PATH, "{path:?}");
        }
    }

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        // Set on the listener and inherited on Linux, set per connection elsewhere: either way
        // an accepted connection must not wait for Nagle's algorithm.
        let listener = listen("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        prepare(&tcp);
        assert!(tcp.nodelay().unwrap());
        // The client side is not the listener's: the option stays off there.
        assert!(!client.nodelay().unwrap());
    }
}
