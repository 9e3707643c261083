//! Server: accept WebSocket connections on streams the caller accepted.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use gangway_proto::config::DEFAULT_MAX_HEAD_SIZE;
use gangway_proto::handshake::server::{self as hs, ClientOffer, RequestHead};
use gangway_proto::handshake::{self, Negotiated};
use gangway_proto::{Config, Connection, HandshakeError, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::deadline::within;
use crate::head::HeadError;
use crate::{origin, Error, WebSocket, DEFAULT_CLOSE_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT};

/// After refusing a request, how long to keep reading (and discarding) what the client still
/// sends before dropping the connection, and how much at most.
///
/// Closing a socket with unread bytes in its receive buffer makes the kernel answer with a reset,
/// which can destroy the error response before the client has read it.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: u64 = 64 << 10;

/// Accept a WebSocket on `stream` with default settings; a bad request gets the HTTP error answer
/// the RFC calls for and an [`Error::Handshake`].
///
/// ```no_run
/// # async fn run() -> Result<(), gangway::Error> {
/// use futures_util::{SinkExt, StreamExt};
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// let (tcp, _) = listener.accept().await?;
/// let mut ws = gangway::accept(tcp).await?;
/// while let Some(msg) = ws.next().await {
///     ws.send(msg?).await?; // echo
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Handshake`], [`Error::Io`], [`Error::Timeout`].
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> Result<WebSocket<S>, Error> {
    ServerBuilder::new().accept(stream).await
}

type OriginCheck = Arc<dyn Fn(Option<&str>) -> bool + Send + Sync>;

/// Settings for accepting connections. Cheap to clone; share one per listener.
///
/// ```no_run
/// # async fn run() -> Result<(), gangway::Error> {
/// let server = gangway::ServerBuilder::new()
///     .protocol("chat")
///     .origin_check(|origin| origin == Some("https://example.com"));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// loop {
///     let (tcp, _) = listener.accept().await?;
///     let server = server.clone();
///     tokio::spawn(async move {
///         let incoming = server.read_request(tcp).await?;
///         if !incoming.is_upgrade() {
///             let page = http::Response::builder()
///                 .header("Content-Type", "text/plain")
///                 .body(())
///                 .expect("static response");
///             return incoming.respond(page, b"hello\n").await;
///         }
///         let _ws = incoming.accept().await?;
///         Ok::<_, gangway::Error>(())
///     });
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct ServerBuilder {
    /// Shared, not copied: every request read clones the builder (one reference count, and a
    /// pointer in the [`Incoming`] that is handed around until the answer), and the setters
    /// copy the settings only while they are shared.
    pub(crate) settings: Arc<Settings>,
}

/// What a [`ServerBuilder`] sets.
#[derive(Clone)]
pub(crate) struct Settings {
    protocols: Vec<String>,
    /// Shared by every connection accepted.
    config: Arc<Config>,
    max_head_size: usize,
    pub(crate) handshake_timeout: Duration,
    close_timeout: Duration,
    origin_check: Option<OriginCheck>,
    require_origin: bool,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("protocols", &self.settings.protocols)
            .field("config", &self.settings.config)
            .field("max_head_size", &self.settings.max_head_size)
            .field("handshake_timeout", &self.settings.handshake_timeout)
            .field("close_timeout", &self.settings.close_timeout)
            .field("origin_check", &self.settings.origin_check.is_some())
            .field("require_origin", &self.settings.require_origin)
            .finish()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    /// The settings, to change: copied first if another builder shares them.
    fn settings_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// Default settings: no subprotocols, default limits, 16 KiB head, 10 s handshake timeout,
    /// no keepalive, 30 s write timeout, every origin allowed (and none required).
    pub fn new() -> Self {
        ServerBuilder {
            settings: Arc::new(Settings {
                protocols: Vec::new(),
                config: Arc::default(),
                max_head_size: DEFAULT_MAX_HEAD_SIZE,
                handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
                close_timeout: DEFAULT_CLOSE_TIMEOUT,
                origin_check: None,
                require_origin: false,
            }),
        }
    }

    /// Support a subprotocol; the first supported one the client offered is selected.
    pub fn protocol(mut self, name: impl Into<String>) -> Self {
        self.settings_mut().protocols.push(name.into());
        self
    }

    /// Limits and timers for accepted connections. Replaces the whole [`Config`], including
    /// what [`ping_interval`](Self::ping_interval), [`idle_timeout`](Self::idle_timeout) and
    /// [`write_timeout`](Self::write_timeout) set before.
    pub fn config(mut self, config: Config) -> Self {
        self.settings_mut().config = Arc::new(config);
        self
    }

    /// permessage-deflate (RFC 7692): accept a client's offer with these preferences, or never
    /// (`DeflateConfig::disabled()`, the default). Sets [`Config`]'s `deflate`.
    ///
    /// What a connection keeps between messages depends on the choice:
    /// `DeflateConfig::bounded_client_window(12)` (what `gangway serve` uses) keeps the
    /// client's 4 KiB window, `DeflateConfig::no_context_takeover()` nothing, and
    /// `DeflateConfig::default()` (context takeover both ways, as the client offers) about
    /// 420 KiB of compression state once the connection has compressed and inflated a message.
    /// See [`gangway_proto::extensions::permessage_deflate`] for the details.
    ///
    /// ```
    /// use gangway::{DeflateConfig, ServerBuilder};
    ///
    /// let server = ServerBuilder::new().deflate(DeflateConfig::bounded_client_window(12));
    /// # let _ = server;
    /// ```
    #[cfg(feature = "deflate")]
    pub fn deflate(mut self, deflate: crate::DeflateConfig) -> Self {
        Arc::make_mut(&mut self.settings_mut().config).deflate = deflate;
        self
    }

    /// Keepalive: ping the peer after this long without receiving anything
    /// ([`Config::ping_interval`]; default off). `None` or zero: off.
    pub fn ping_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        Arc::make_mut(&mut self.settings_mut().config).ping_interval = interval.into();
        self
    }

    /// Drop a dead peer: close the connection abnormally after this long without receiving
    /// anything, pongs included ([`Config::idle_timeout`]; default off). `None` or zero: off.
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        Arc::make_mut(&mut self.settings_mut().config).idle_timeout = timeout.into();
        self
    }

    /// Drop a peer that stopped reading: fail sending after output waited this long without
    /// the transport taking any ([`Config::write_timeout`]; default 30 s). `None` or zero: off.
    pub fn write_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        Arc::make_mut(&mut self.settings_mut().config).write_timeout = timeout.into();
        self
    }

    /// Largest request head (default 16 KiB); larger ones get 431.
    pub fn max_head_size(mut self, bytes: usize) -> Self {
        self.settings_mut().max_head_size = bytes;
        self
    }

    /// Bound on receiving the request head (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.settings_mut().handshake_timeout = timeout;
        self
    }

    /// Bound on the close handshake of accepted connections (default 5 s); see
    /// [`WebSocket::set_close_timeout`].
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.settings_mut().close_timeout = timeout;
        self
    }

    /// Decide by `Origin` (None when the request has none); `false` answers 403.
    ///
    /// Replaces the list set by [`allowed_origins`](Self::allowed_origins).
    pub fn origin_check(
        mut self,
        check: impl Fn(Option<&str>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.settings_mut().origin_check = Some(Arc::new(check));
        self
    }

    /// Accept only these origins (`https://example.com`, `http://localhost:8080`); a request
    /// with another `Origin` gets 403 (RFC 6455 §4.2.2 item 4, §10.2). A request without
    /// `Origin` is still accepted unless [`require_origin`](Self::require_origin) says otherwise.
    ///
    /// Compared as origins, not as strings (RFC 6454 §5, §6.2): scheme and host case-insensitive,
    /// a default port (80 for http and ws, 443 for https and wss) the same as none, a trailing
    /// `/` ignored. Anything else must match exactly: no wildcards, and a path never matches.
    /// `null` allows the opaque origin that sandboxed pages and local files send.
    ///
    /// Replaces a check set by [`origin_check`](Self::origin_check).
    ///
    /// ```
    /// let server = gangway::ServerBuilder::new()
    ///     .allowed_origins(["https://example.com", "http://localhost:8080"]);
    /// ```
    pub fn allowed_origins<I>(self, origins: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let allowed: Vec<String> = origins
            .into_iter()
            .map(|o| origin::normalize(o.as_ref()))
            .collect();
        self.origin_check(move |sent| match sent {
            None => true,
            Some(sent) => allowed.contains(&origin::normalize(sent)),
        })
    }

    /// Whether a request without an `Origin` header is refused with 403 (default `false`).
    ///
    /// Browsers always send `Origin` (RFC 6455 §4.1 item 8), so requiring it shuts out only
    /// other clients, which usually send none; the origin policy protects against pages in a
    /// browser, not against clients that can send any header they like (§10.2).
    pub fn require_origin(mut self, require: bool) -> Self {
        self.settings_mut().require_origin = require;
        self
    }

    /// Read the request head and accept the WebSocket, or answer the error and fail.
    ///
    /// # Errors
    ///
    /// As [`accept`].
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> Result<WebSocket<S>, Error> {
        self.read_request(stream).await?.accept().await
    }

    /// Read the request head only, for servers that answer plain HTTP requests too.
    ///
    /// The whole head must arrive within the handshake timeout: a client that trickles bytes is
    /// cut off (the connection is dropped) when it expires.
    ///
    /// # Errors
    ///
    /// [`Error::Handshake`] for a malformed or oversized head (already answered with 400/431),
    /// [`Error::Io`], [`Error::Timeout`].
    pub fn read_request<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> impl std::future::Future<Output = Result<Incoming<S>, Error>> {
        let builder = self.clone();
        let mut stream = stream;
        // A block, not an async function: an async function keeps its arguments in its future
        // twice over (as received, and moved into its body), the stream and the builder here.
        async move {
            // What was read is gone at the end of this statement: kept until the refusal is
            // written, it would be in this future beside the reading.
            let limit = builder.settings.handshake_timeout;
            let refusal =
                match read_head_within(&mut stream, builder.settings.max_head_size, limit).await {
                    Some(Ok((head, leftover))) => {
                        return Ok(Incoming {
                            stream,
                            head,
                            leftover,
                            builder,
                        })
                    }
                    Some(Err(Error::Handshake(e))) => e,
                    Some(Err(e)) => return Err(e),
                    None => {
                        tracing::debug!("request head not received within the handshake timeout");
                        return Err(Error::Timeout);
                    }
                };
            tracing::debug!(error = %refusal, "refused websocket request head");
            // Boxed: the refusal's state is larger than the reading's.
            Box::pin(reject(&mut stream, &refusal)).await;
            Err(Error::Handshake(refusal))
        }
    }
}

/// A handshake the server accepts: what the `101` answer says and what the connection is built
/// from.
///
/// Both ways of accepting produce it with [`ServerBuilder::negotiate`] and consume it with
/// [`ServerBuilder::open`]: a request head read from a stream ([`Incoming::accept`]) and a
/// request an HTTP server already parsed (`gangway::hyper`). The checks and the choices live
/// there once, so the two cannot drift apart.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// What the client offered (its key answers in `Sec-WebSocket-Accept`).
    pub(crate) offer: ClientOffer,
    /// The selected subprotocol and the extensions in effect (the answer's, and typed).
    pub(crate) negotiated: Negotiated,
}

impl Accepted {
    /// The `101 Switching Protocols` answer as HTTP/1.1 bytes.
    #[cfg(all(test, feature = "hyper"))]
    pub(crate) fn response(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.response_into(&mut out);
        out
    }

    /// The `101 Switching Protocols` answer as HTTP/1.1 bytes, appended to `out`.
    pub(crate) fn response_into(&self, out: &mut Vec<u8>) {
        hs::accept_into(
            out,
            &self.offer,
            self.negotiated.protocol.as_deref(),
            &self.negotiated.extensions,
        );
    }

    /// The same answer as parts for an HTTP library (`101` on HTTP/1.1, `200` on HTTP/2).
    #[cfg_attr(not(any(feature = "hyper", feature = "http2")), allow(dead_code))]
    pub(crate) fn response_parts(&self) -> http::Response<()> {
        hs::accept_response(
            &self.offer,
            self.negotiated.protocol.as_deref(),
            &self.negotiated.extensions,
        )
    }
}

impl ServerBuilder {
    /// Everything RFC 6455 §4.2.1 and the origin policy require of `request`, then the choices
    /// of the answer (§4.2.2 item 5): the subprotocol and the extensions.
    ///
    /// # Errors
    ///
    /// The refusal, whose [`HandshakeError::status`] is the answer's status.
    pub(crate) fn negotiate(
        &self,
        request: &http::Request<()>,
    ) -> Result<Accepted, HandshakeError> {
        // A request that asks for no upgrade at all is refused for that, whatever else is wrong
        // with it. Looked at only when the checks fail: a valid request passes the same test in
        // `check_request` (§4.2.1 item 3).
        match hs::check_request(request) {
            Ok(offer) => self.choose(offer),
            Err(e) => Err(hs::upgrade_refusal(request).unwrap_or(e)),
        }
    }

    /// [`negotiate`](Self::negotiate) for a head read from a stream, checked as it was parsed.
    fn negotiate_head(&self, head: RequestHead) -> Result<Accepted, HandshakeError> {
        if head.checked().is_err() {
            if let Some(refusal) = head.upgrade_refusal() {
                return Err(refusal.clone());
            }
        }
        self.choose(head.into_checked()?)
    }

    /// [`negotiate`](Self::negotiate) for an HTTP/2 extended CONNECT request (RFC 8441 §5),
    /// whose `:protocol` pseudo-header is `protocol`: the request's checks differ, the server's
    /// policy and choices are the same.
    ///
    /// # Errors
    ///
    /// The refusal, whose [`HandshakeError::status`] is the answer's status.
    #[cfg_attr(not(any(feature = "hyper", feature = "http2")), allow(dead_code))]
    pub(crate) fn negotiate_connect(
        &self,
        request: &http::Request<()>,
        protocol: Option<&str>,
    ) -> Result<Accepted, HandshakeError> {
        self.choose(hs::check_connect_request(request, protocol)?)
    }

    /// The origin policy, then the choices of the answer (§4.2.2 item 5): the subprotocol and
    /// the extensions.
    fn choose(&self, offer: ClientOffer) -> Result<Accepted, HandshakeError> {
        // §4.2.2 item 4 and §10.2: the server decides which origins it serves, with 403.
        if self.settings.require_origin && offer.origin.is_none() {
            return Err(HandshakeError::OriginRefused);
        }
        if let Some(check) = &self.settings.origin_check {
            if !check(offer.origin.as_deref()) {
                return Err(HandshakeError::OriginRefused);
            }
        }
        let protocol = handshake::select_protocol(&self.settings.protocols, &offer.protocols)
            .map(str::to_owned);
        // permessage-deflate is the only extension implemented, so the only one ever accepted:
        // the client then must not use any other (RFC 6455 §9.1).
        let negotiated = Negotiated::accept(&self.settings.config, protocol, &offer.extensions);
        Ok(Accepted { offer, negotiated })
    }

    /// The WebSocket on `io` once the `101` for `accepted` is sent; `leftover` are bytes the
    /// client sent after its request head (pipelined frames), fed to the connection first.
    pub(crate) fn open<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: S,
        accepted: Accepted,
        leftover: &[u8],
    ) -> WebSocket<S> {
        let conn = Connection::from_negotiated(
            Role::Server,
            Arc::clone(&self.settings.config),
            &accepted.negotiated,
        );
        let mut ws = WebSocket::from_parts(io, conn, accepted.negotiated.protocol, leftover);
        ws.set_close_timeout(self.settings.close_timeout);
        ws
    }
}

/// Read until a complete request head; return it and every byte after it.
///
/// The head is boxed as soon as it is parsed: it is handed through the reading's futures, its
/// timeout and the [`Incoming`], and each hand-over copies what is inline (half a kilobyte
/// unboxed, more than a heap block costs).
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_head_size: usize,
) -> Result<(Box<Head>, Vec<u8>), Error> {
    use gangway_proto::handshake::Parsed;
    crate::head::read_head(stream, max_head_size, |buf| {
        let parsed = RequestHead::parse(buf, max_head_size);
        #[cfg(feature = "http2")]
        if parsed.is_err() && buf.starts_with(&crate::http2::PREFACE[..16]) {
            // Not HTTP/1.1: an HTTP/2 client with prior knowledge (RFC 9113 §3.3), once its
            // whole preface is here. A head of length 0: everything read stays for the HTTP/2
            // connection.
            if let Some(request) = crate::http2::prior_knowledge(buf) {
                return Ok(Parsed::Complete(Box::new(Head::preface(request)), 0));
            }
            if buf.len() < crate::http2::PREFACE.len() {
                return Ok(Parsed::Partial);
            }
        }
        Ok(match parsed? {
            Parsed::Complete(head, len) => Parsed::Complete(
                Box::new(Head {
                    http1: Some(head),
                    request: std::sync::OnceLock::new(),
                }),
                len,
            ),
            Parsed::Partial => Parsed::Partial,
        })
    })
    .await
    .map_err(|e| match e {
        HeadError::Io(e) => Error::Io(e),
        HeadError::Eof => Error::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before the request head was complete",
        )),
        HeadError::TooLarge => Error::Handshake(HandshakeError::HeadTooLarge),
        HeadError::Parse(e) => Error::Handshake(e),
    })
}

/// [`Incoming::accept`] once the request is judged: answer `101` and open the WebSocket, or
/// answer the refusal. A block, not an async function: an async function keeps its arguments in
/// its future twice over (as received, and moved into its body).
#[allow(clippy::manual_async_fn)]
fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    negotiated: Result<Accepted, HandshakeError>,
    leftover: Vec<u8>,
    builder: ServerBuilder,
) -> impl std::future::Future<Output = Result<WebSocket<S>, Error>> {
    async move {
        // Looked at in place: taken out, the offer would be in this future twice.
        let response = match &negotiated {
            // Written in this thread's spare output buffer: no allocation of its own.
            Ok(accepted) => {
                let mut out = crate::stream::take_spare();
                accepted.response_into(&mut out);
                out
            }
            Err(e) => {
                tracing::debug!(error = %e, status = e.status(), "refused websocket request");
                // Boxed: the refusal's state is larger than the answer's.
                Box::pin(reject(&mut stream, e)).await;
                return Err(Error::Handshake(e.clone()));
            }
        };
        write_within(&mut stream, &response, builder.settings.handshake_timeout).await?;
        crate::stream::give_back_spare(response);
        match negotiated {
            Ok(accepted) => Ok(builder.open(stream, accepted, &leftover)),
            // Not reached: refused above.
            Err(e) => Err(Error::Handshake(e)),
        }
    }
}

/// [`read_head`] within `limit` ([`within`]: no timer if the head is there already).
async fn read_head_within<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_head_size: usize,
    limit: Duration,
) -> Option<Result<(Box<Head>, Vec<u8>), Error>> {
    within(limit, pin!(read_head(stream, max_head_size))).await
}

/// Write an answer to the request (the `101`, or a plain HTTP answer) and flush it, within
/// `limit` ([`within`]: no timer unless the socket's buffer is full).
async fn write_within<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    limit: Duration,
) -> Result<(), Error> {
    let written = within(
        limit,
        pin!(async {
            stream.write_all(bytes).await?;
            stream.flush().await
        }),
    )
    .await;
    match written {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(Error::Io(e)),
        None => Err(Error::Timeout),
    }
}

/// Answer `err` with its HTTP status, then close the connection gracefully. Failures are ignored:
/// the handshake error is what the caller reports.
async fn reject<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, err: &HandshakeError) {
    let response = hs::reject(err);
    let _ = write_within(stream, &response, LINGER_TIME).await;
    close_gracefully(stream).await;
}

/// Shut the write side down, then discard what the client still sends (bounded) so that the
/// answer is not destroyed by a reset.
async fn close_gracefully<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = tokio::time::timeout(LINGER_TIME, async {
        stream.shutdown().await?;
        let mut rest = (&mut *stream).take(LINGER_BYTES);
        tokio::io::copy(&mut rest, &mut tokio::io::sink()).await
    })
    .await;
}

/// A request head that was read, before it is accepted as a WebSocket or answered as HTTP.
pub struct Incoming<S> {
    stream: S,
    /// Boxed: see [`read_head`].
    head: Box<Head>,
    leftover: Vec<u8>,
    builder: ServerBuilder,
}

/// What [`Incoming`] read.
#[derive(Debug)]
struct Head {
    /// An HTTP/1.1 request head, checked as it was parsed; `None` for an HTTP/2 client's
    /// preface.
    http1: Option<RequestHead>,
    /// The request, built only if asked for ([`Incoming::request`]): accepting a WebSocket
    /// needs none. From the start for a preface: `PRI * HTTP/2.0`.
    request: std::sync::OnceLock<Box<http::Request<()>>>,
}

impl Head {
    #[cfg(feature = "http2")]
    fn preface(request: http::Request<()>) -> Self {
        Head {
            http1: None,
            request: std::sync::OnceLock::from(Box::new(request)),
        }
    }

    fn request(&self) -> &http::Request<()> {
        self.request.get_or_init(|| {
            Box::new(match &self.http1 {
                Some(head) => head.to_request(),
                // Not reached: a preface's request is there from the start.
                None => http::Request::new(()),
            })
        })
    }
}

impl<S> std::fmt::Debug for Incoming<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("head", &self.head)
            .field("leftover", &self.leftover.len())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Incoming<S> {
    /// The request head, every header line in order (built on the first call).
    pub fn request(&self) -> &http::Request<()> {
        self.head.request()
    }

    /// The request target: [`request`](Self::request)`.uri()`, without building the request.
    pub fn uri(&self) -> &http::Uri {
        match &self.head.http1 {
            Some(head) => head.uri(),
            None => self.head.request().uri(),
        }
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Whether the request asks for a WebSocket upgrade.
    pub fn is_upgrade(&self) -> bool {
        self.head
            .http1
            .as_ref()
            .is_some_and(RequestHead::is_upgrade)
    }

    /// Whether the client spoke HTTP/2 with prior knowledge (RFC 9113 §3.3) instead of sending
    /// an HTTP/1.1 request: its preface was read, and [`request`](Self::request) is the
    /// preface's `PRI * HTTP/2.0`. Serve it with [`accept_http2`](Self::accept_http2).
    #[cfg(feature = "http2")]
    pub fn is_http2_prior_knowledge(&self) -> bool {
        self.head.http1.is_none()
    }

    /// Serve the connection as HTTP/2 (see
    /// [`ServerBuilder::accept_http2`](crate::ServerBuilder::accept_http2)), with what was read
    /// so far (the client's preface, perhaps more) read again first. For a connection of
    /// [`is_http2_prior_knowledge`](Self::is_http2_prior_knowledge); on another one the
    /// HTTP/2 handshake fails.
    ///
    /// # Errors
    ///
    /// As [`ServerBuilder::accept_http2`](crate::ServerBuilder::accept_http2).
    #[cfg(feature = "http2")]
    pub async fn accept_http2(
        self,
    ) -> Result<crate::http2::Http2Server<crate::http2::Rewind<S>>, Error> {
        // For prior knowledge, everything read, the preface included; else what followed the
        // HTTP/1.1 head, which h2 refuses as a preface.
        let stream = crate::http2::Rewind::new(self.leftover, self.stream);
        self.builder.accept_http2(stream).await
    }

    /// The `Sec-WebSocket-Accept` value an accepted handshake answers with: `None` unless the
    /// request has exactly one valid `Sec-WebSocket-Key`.
    pub fn accept_key(&self) -> Option<String> {
        let mut keys = self
            .request()
            .headers()
            .get_all("sec-websocket-key")
            .into_iter();
        let key = keys.next()?.as_bytes();
        if keys.next().is_some() || !handshake::is_valid_key(key) {
            return None;
        }
        Some(handshake::accept_key(key))
    }

    /// Check the request (RFC 6455 §4.2.1 and the origin policy) and answer 101, or answer the error.
    ///
    /// The request is judged when this is called; the answer is written when the future is
    /// polled.
    ///
    /// # Errors
    ///
    /// [`Error::Handshake`] (already answered), [`Error::Io`], [`Error::Timeout`] if the answer
    /// cannot be written within the handshake timeout.
    pub fn accept(self) -> impl std::future::Future<Output = Result<WebSocket<S>, Error>> {
        // Decided before the first poll, so that the future holds only what the answer needs,
        // not the request head: it is a fraction of the size, and moved as often.
        let negotiated = match self.head.http1 {
            Some(head) => self.builder.negotiate_head(head),
            None => self.builder.negotiate(self.head.request()),
        };
        answer(self.stream, negotiated, self.leftover, self.builder)
    }

    /// Answer as plain HTTP and close the connection.
    ///
    /// # Errors
    ///
    /// [`Error::Io`], [`Error::Timeout`] if the answer cannot be written within the handshake
    /// timeout.
    pub async fn respond(self, response: http::Response<()>, body: &[u8]) -> Result<(), Error> {
        let mut stream = self.stream;
        let bytes = hs::encode_response(&response, body);
        write_within(&mut stream, &bytes, self.builder.settings.handshake_timeout).await?;
        close_gracefully(&mut stream).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;

    /// A client that sends `prefix`, then `pattern` over and over, in reads of at most `chunk`
    /// bytes, and counts what was taken from it.
    struct Endless {
        prefix: &'static [u8],
        pattern: &'static [u8],
        chunk: usize,
        taken: usize,
    }

    impl AsyncRead for Endless {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = buf.remaining().min(self.chunk);
            for i in self.taken..self.taken + n {
                let byte = match self.prefix.get(i) {
                    Some(b) => *b,
                    None => self.pattern[(i - self.prefix.len()) % self.pattern.len()],
                };
                buf.put_slice(&[byte]);
            }
            self.taken += n;
            Poll::Ready(Ok(()))
        }
    }

    async fn taken_before_refusal(
        prefix: &'static [u8],
        pattern: &'static [u8],
        chunk: usize,
        max: usize,
    ) -> usize {
        let mut client = Endless {
            prefix,
            pattern,
            chunk,
            taken: 0,
        };
        match read_head(&mut client, max).await {
            Err(Error::Handshake(HandshakeError::HeadTooLarge)) => {}
            other => panic!("expected a head too large, got {other:?}"),
        }
        client.taken
    }

    #[tokio::test]
    async fn endless_head_is_refused_after_one_byte_past_the_limit() {
        let request_line = b"GET / HTTP/1.1\r\n";
        let header_line = b"X-Filler: aaaaaaaaaaaaaaaaaaaa\r\n";
        for (prefix, pattern, chunk) in [
            (&request_line[..], &header_line[..], 1),
            (&request_line[..], &header_line[..], 1000),
            (&request_line[..], &header_line[..], 1 << 20),
            // A request target that never ends: no newline at all.
            (&b"GET /"[..], &b"a"[..], 7),
            (&b"GET /"[..], &b"a"[..], 1 << 20),
        ] {
            for max in [100, DEFAULT_MAX_HEAD_SIZE] {
                let taken = taken_before_refusal(prefix, pattern, chunk, max).await;
                // The buffer holds everything read: it never exceeds the limit by more than 1.
                // (Many short header lines are refused sooner, for their number.)
                assert!(taken <= max + 1, "chunk {chunk}, limit {max}: {taken} read");
                assert!(
                    taken > max.min(3000),
                    "chunk {chunk}, limit {max}: {taken} read"
                );
            }
        }
    }

    #[test]
    fn a_request_without_upgrade_is_refused_for_that_first() {
        let builder = ServerBuilder::new();
        let request = |method: &str, upgrade: Option<&str>| {
            let mut r = http::Request::builder()
                .method(method)
                .uri("/")
                .header("Host", "example.com")
                .header("Connection", "Upgrade")
                .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("Sec-WebSocket-Version", "13");
            if let Some(u) = upgrade {
                r = r.header("Upgrade", u);
            }
            r.body(()).unwrap()
        };
        // Also wrong (POST would be 405), but the missing upgrade is what is reported.
        assert_eq!(
            builder.negotiate(&request("POST", None)).unwrap_err(),
            HandshakeError::MissingHeader("Upgrade")
        );
        assert_eq!(
            builder
                .negotiate(&request("POST", Some("h2c")))
                .unwrap_err(),
            HandshakeError::InvalidHeader("Upgrade", "no websocket token")
        );
        // An upgrade request is judged by the full checks.
        assert_eq!(
            builder
                .negotiate(&request("POST", Some("websocket")))
                .unwrap_err(),
            HandshakeError::MethodNotAllowed
        );
        let accepted = builder
            .negotiate(&request("GET", Some("WebSocket")))
            .unwrap();
        assert_eq!(
            accepted.offer.key.as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
    }

    #[test]
    fn an_incoming_request_is_moved_without_a_copy_call() {
        // Handed through the reading's futures, its timeout and a server's routing, an
        // `Incoming` is moved several times; up to 128 bytes a move is a few register stores,
        // above it a `memcpy` call (see `read_head`). Printed for the record (`--nocapture`).
        let size = std::mem::size_of::<Incoming<tokio::net::TcpStream>>();
        println!("Incoming<TcpStream>: {size} bytes");
        assert!(size <= 128, "{size} bytes");
        assert_eq!(std::mem::size_of::<ServerBuilder>(), 8);
    }

    #[tokio::test]
    async fn head_at_the_limit_is_read_and_what_follows_is_kept() {
        let head = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut bytes = head.as_bytes().to_vec();
        bytes.extend_from_slice(b"\x81\x80pipelined");
        let mut stream = &bytes[..];
        let (read, leftover) = read_head(&mut stream, head.len()).await.unwrap();
        let Head {
            http1: Some(request),
            ..
        } = *read
        else {
            panic!("not an HTTP/1.1 head");
        };
        assert_eq!(request.uri(), "/");
        // One byte past the head was read with it; the rest is still in the transport.
        assert_eq!(leftover, b"\x81");
        assert_eq!(stream, b"\x80pipelined");
    }
}
