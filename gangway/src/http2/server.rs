//! The server role: an HTTP/2 connection whose extended CONNECT requests become WebSockets, and
//! whose other requests the application answers.

use std::future::poll_fn;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{H2Stream, Http2Error, Settings};
use crate::{Error, ServerBuilder, WebSocket};

impl ServerBuilder {
    /// Serve HTTP/2 on `io` (after TLS with ALPN `h2`, or cleartext with prior knowledge): send
    /// our SETTINGS, with `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1` (RFC 8441 §3), and read the
    /// client's preface. Requests then come from [`Http2Server::accept`].
    ///
    /// The builder's checks, choices, limits and timers apply to every WebSocket of the
    /// connection; its `max_head_size` does not (HTTP/2 has its own header list limit).
    ///
    /// # Errors
    ///
    /// [`Error::Http2`] when the client does not speak HTTP/2 or the connection fails,
    /// [`Error::Timeout`] after the handshake timeout.
    pub async fn accept_http2<S>(&self, io: S) -> Result<Http2Server<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut builder = h2::server::Builder::new();
        Settings::default().apply_server(&mut builder);
        builder.enable_connect_protocol();
        let conn = tokio::time::timeout(self.settings.handshake_timeout, builder.handshake(io))
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(|e| Error::Http2(Http2Error::new("http/2 handshake failed", e)))?;
        Ok(Http2Server {
            conn,
            builder: self.clone(),
        })
    }
}

/// A server's HTTP/2 connection: the requests of its streams, WebSockets and others.
///
/// The connection's frames, for every stream, move while [`accept`](Self::accept) is polled:
/// keep calling it in a loop and handle each request in a task of its own (an [`Http2Incoming`]
/// is `Send`).
///
/// ```no_run
/// # async fn run(tcp: tokio::net::TcpStream) -> Result<(), gangway::Error> {
/// use futures_util::{SinkExt, StreamExt};
/// let server = gangway::ServerBuilder::new();
/// let mut conn = server.accept_http2(tcp).await?;
/// while let Some(incoming) = conn.accept().await {
///     let incoming = incoming?;
///     tokio::spawn(async move {
///         if !incoming.is_websocket() {
///             let page = http::Response::new(());
///             return incoming.respond(page, "hello\n".into());
///         }
///         let mut ws = incoming.accept().await?;
///         while let Some(msg) = ws.next().await {
///             ws.send(msg?).await?; // echo
///         }
///         Ok::<_, gangway::Error>(())
///     });
/// }
/// # Ok(()) }
/// ```
pub struct Http2Server<S> {
    conn: h2::server::Connection<S, Bytes>,
    builder: ServerBuilder,
}

impl<S> std::fmt::Debug for Http2Server<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Server").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Http2Server<S> {
    /// The next request, once its headers have arrived; `None` once the connection is closed
    /// (by the client, or after [`graceful_shutdown`](Self::graceful_shutdown)).
    ///
    /// # Errors
    ///
    /// [`Error::Http2`] when the connection fails (a protocol error, the transport lost).
    pub async fn accept(&mut self) -> Option<Result<Http2Incoming, Error>> {
        let (request, respond) = match self.conn.accept().await? {
            Ok(pair) => pair,
            Err(e) => {
                return Some(Err(Error::Http2(Http2Error::new(
                    "http/2 connection failed",
                    e,
                ))))
            }
        };
        let (mut head, body) = request.into_parts();
        let protocol = head.extensions.remove::<h2::ext::Protocol>();
        Some(Ok(Http2Incoming {
            request: http::Request::from_parts(head, ()),
            protocol,
            body,
            respond,
            builder: self.builder.clone(),
        }))
    }

    /// Stop taking new streams (GOAWAY); the open ones go on. [`accept`](Self::accept) must
    /// still be polled until it returns `None`.
    pub fn graceful_shutdown(&mut self) {
        self.conn.graceful_shutdown();
    }

    /// Keep the connection going without taking requests (each new one is refused with
    /// `RST_STREAM(REFUSED_STREAM)`), until it is closed: for a server that stops accepting but
    /// lets the open streams finish.
    ///
    /// # Errors
    ///
    /// [`Error::Http2`] when the connection fails.
    pub async fn closed(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.conn.poll_closed(cx))
            .await
            .map_err(|e| Error::Http2(Http2Error::new("http/2 connection failed", e)))
    }
}

/// A request on a server's HTTP/2 connection: a WebSocket's extended CONNECT, or another
/// request to answer.
pub struct Http2Incoming {
    request: http::Request<()>,
    protocol: Option<h2::ext::Protocol>,
    body: RecvStream,
    respond: SendResponse<Bytes>,
    builder: ServerBuilder,
}

impl std::fmt::Debug for Http2Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Incoming")
            .field("request", &self.request)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl Http2Incoming {
    /// The request head (`:method`, `:scheme`, `:authority` and `:path` in the method and URI).
    pub fn request(&self) -> &http::Request<()> {
        &self.request
    }

    /// The `:protocol` pseudo-header of an extended CONNECT (RFC 8441 §4).
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_ref().map(h2::ext::Protocol::as_str)
    }

    /// Whether the request asks for a WebSocket: a CONNECT with `:protocol = websocket`. It
    /// says nothing of the request's validity: [`accept`](Self::accept) judges that.
    pub fn is_websocket(&self) -> bool {
        self.request.method() == http::Method::CONNECT
            && self
                .protocol()
                .is_some_and(|p| p.eq_ignore_ascii_case("websocket"))
    }

    /// Check the request (RFC 8441 §5, RFC 6455 §4.2.1 where it applies, and the builder's
    /// origin policy), answer `200` with the selected subprotocol and extensions, and open the
    /// WebSocket on the stream; or answer the refusal (400, 403, 405 with `Allow: CONNECT`, 426
    /// with `Sec-WebSocket-Version: 13`) and fail.
    ///
    /// # Errors
    ///
    /// [`Error::Handshake`] (already answered), [`Error::Http2`] when the stream is gone.
    pub async fn accept(self) -> Result<WebSocket<H2Stream>, Error> {
        let Http2Incoming {
            request,
            protocol,
            body,
            mut respond,
            builder,
        } = self;
        let protocol = protocol.as_ref().map(h2::ext::Protocol::as_str);
        let accepted = match builder.negotiate_connect(&request, protocol) {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, status = e.status(), "refused websocket request");
                let response =
                    gangway_proto::handshake::server::reject_response(&e, http::Version::HTTP_2);
                let (parts, text) = response.into_parts();
                send(
                    &mut respond,
                    http::Response::from_parts(parts, ()),
                    text.into(),
                )?;
                return Err(Error::Handshake(e));
            }
        };
        let send = respond
            .send_response(accepted.response_parts(), false)
            .map_err(|e| Error::Http2(Http2Error::new("cannot answer the request", e)))?;
        Ok(builder.open(H2Stream::new(send, body), accepted, &[]))
    }

    /// Answer as plain HTTP: `response`'s status and headers, then `body` (buffered by the
    /// connection and sent as the client's flow control allows). The request's own body is not
    /// read.
    ///
    /// # Errors
    ///
    /// [`Error::Http2`] when the stream is gone, or `response` has headers HTTP/2 does not allow
    /// (`Connection`, `Upgrade` and other connection-specific ones, RFC 9113 §8.2.2).
    pub fn respond(self, response: http::Response<()>, body: Bytes) -> Result<(), Error> {
        let mut respond = self.respond;
        send(&mut respond, response, body)
    }
}

/// `response` and its whole `body` on the stream of `respond`.
fn send(
    respond: &mut SendResponse<Bytes>,
    response: http::Response<()>,
    body: Bytes,
) -> Result<(), Error> {
    let failed = |e| Error::Http2(Http2Error::new("cannot answer the request", e));
    if body.is_empty() {
        respond.send_response(response, true).map_err(failed)?;
        return Ok(());
    }
    let mut stream = respond.send_response(response, false).map_err(failed)?;
    stream.send_data(body, true).map_err(failed)
}
