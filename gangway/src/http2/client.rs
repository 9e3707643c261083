//! The client role: WebSockets on an HTTP/2 connection, alone or several sharing it, and the
//! fallback to HTTP/1.1.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use gangway_proto::handshake::client::ConnectHandshake;
use gangway_proto::handshake::Negotiated;
use gangway_proto::ApiMisuse;
use h2::client::SendRequest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{ConnectionClosed, H2Stream, Http2Error, Settings};
use crate::client::ALPN_HTTP_1_1;
use crate::{ClientBuilder, Error, MaybeTlsStream, WebSocket};

/// The ALPN protocol of HTTP/2 over TLS (RFC 9113 §3.2).
const ALPN_H2: &[u8] = b"h2";

/// How a client uses HTTP/2 ([`ClientBuilder::http2`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Http2 {
    /// Only over HTTP/2: fail with [`Error::Http2`] when the server does not speak it (TLS
    /// chose no `h2`; a cleartext server refused the prior-knowledge preface) or has not enabled
    /// WebSockets over it ([`Http2Error::ExtendedConnectDisabled`]).
    Required,
    /// Over HTTP/2 when the server offers it, else over HTTP/1.1: on the same TLS connection
    /// when ALPN chose `http/1.1`, on a new connection when the server speaks HTTP/2 without
    /// extended CONNECT, or (cleartext) did not answer the HTTP/2 preface.
    Preferred,
}

impl ClientBuilder {
    /// Open the WebSocket over HTTP/2 (RFC 8441, feature `http2`) rather than with an HTTP/1.1
    /// upgrade: TLS with ALPN `h2` for `wss://`, HTTP/2 with prior knowledge (h2c) for `ws://`;
    /// wait for the server's SETTINGS; send the extended CONNECT.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), gangway::Error> {
    /// use gangway::http2::Http2;
    /// let (ws, response) = gangway::ClientBuilder::new("wss://example.com/chat")?
    ///     .http2(Http2::Preferred)
    ///     .connect()
    ///     .await?;
    /// println!("over HTTP/2: {}", ws.get_ref().is_http2());
    /// # Ok(()) }
    /// ```
    ///
    /// Several WebSockets may share one connection: see [`Http2Connection`].
    pub fn http2(self, mode: Http2) -> Http2Builder {
        Http2Builder {
            builder: self,
            mode,
        }
    }
}

/// A [`ClientBuilder`] that opens its WebSocket over HTTP/2 ([`ClientBuilder::http2`]).
#[derive(Clone, Debug)]
pub struct Http2Builder {
    builder: ClientBuilder,
    mode: Http2,
}

impl Http2Builder {
    /// Connect, over HTTP/2 or (when allowed) HTTP/1.1, and perform the opening handshake,
    /// all within the handshake timeout.
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::connect`], and [`Error::Http2`] with [`Http2::Required`] when the
    /// server does not offer WebSockets over HTTP/2, or the HTTP/2 connection fails.
    pub async fn connect(&self) -> Result<(WebSocket<ClientStream>, http::Response<()>), Error> {
        self.connect_with(std::convert::identity).await
    }

    /// As [`connect`](Self::connect), with the transport handed to `wrap` before the WebSocket
    /// runs over it (see [`ClientBuilder::connect_with`]): on HTTP/1.1 before the handshake, on
    /// HTTP/2 once the stream is open (the handshake is in HTTP/2 frames, not in the stream).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with<S, F>(
        &self,
        wrap: F,
    ) -> Result<(WebSocket<S>, http::Response<()>), Error>
    where
        F: FnOnce(ClientStream) -> S,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let builder = &self.builder;
        let attempt = async {
            let alpn: &[&[u8]] = match self.mode {
                Http2::Required => &[ALPN_H2],
                Http2::Preferred => &[ALPN_H2, ALPN_HTTP_1_1],
            };
            let stream = builder.transport(alpn).await?;
            if !speaks_h2(&stream) {
                if self.mode == Http2::Required {
                    return Err(Error::Http2(Http2Error::NotNegotiated));
                }
                tracing::debug!(uri = %builder.uri(), "tls chose http/1.1: no http/2");
                let handshake = builder.client_handshake()?;
                return builder
                    .handshake(wrap(ClientStream::Http1(stream)), handshake)
                    .await;
            }
            let fallback = match Http2Connection::handshake(stream, builder).await {
                Ok(conn) if conn.extended_connect => {
                    return conn.open(builder, |s| wrap(ClientStream::Http2(s))).await;
                }
                Ok(_) => Http2Error::ExtendedConnectDisabled,
                Err(Error::Http2(e)) => e,
                Err(e) => return Err(e),
            };
            if self.mode == Http2::Required {
                return Err(Error::Http2(fallback));
            }
            tracing::debug!(uri = %builder.uri(), reason = %fallback, "falling back to http/1.1");
            let stream = builder.transport(&[ALPN_HTTP_1_1]).await?;
            let handshake = builder.client_handshake()?;
            builder
                .handshake(wrap(ClientStream::Http1(stream)), handshake)
                .await
        };
        bounded(builder, attempt).await
    }
}

/// Whether HTTP/2 is to be spoken on `stream`: TLS chose `h2`, or it is cleartext (h2c with
/// prior knowledge, RFC 9113 §3.3).
fn speaks_h2(stream: &MaybeTlsStream) -> bool {
    #[cfg(feature = "rustls")]
    if let Some(tls) = stream.tls_state() {
        return tls.alpn_protocol() == Some(ALPN_H2);
    }
    let _ = stream;
    true
}

/// `attempt` within the builder's handshake timeout.
async fn bounded<T>(
    builder: &ClientBuilder,
    attempt: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(builder.handshake_timeout_value(), attempt).await {
        Ok(result) => result,
        Err(_elapsed) => {
            tracing::debug!(uri = %builder.uri(), "opening handshake timed out");
            Err(Error::Timeout)
        }
    }
}

/// A client's HTTP/2 connection, on which WebSockets open as streams (RFC 8441): several
/// WebSockets, one TCP (and TLS) connection.
///
/// Cheap to clone: the clones share the connection. It is driven by a task of its own (spawned
/// on the current tokio runtime), and closes once every clone and every WebSocket opened on it
/// are dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), gangway::Error> {
/// use gangway::http2::Http2Connection;
/// let builder = gangway::ClientBuilder::new("wss://example.com/feed")?;
/// let conn = Http2Connection::connect(&builder).await?;
/// let (prices, _) = conn.websocket("wss://example.com/prices").await?;
/// let (news, _) = conn.websocket("wss://example.com/news").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Http2Connection {
    send: SendRequest<Bytes>,
    /// The settings of the WebSockets opened by [`websocket`](Self::websocket), and the origin
    /// (scheme, host, port) the connection serves.
    builder: ClientBuilder,
    /// The server sent `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`.
    extended_connect: bool,
    /// Set when the driver task ends.
    closed: Arc<ConnectionClosed>,
}

impl std::fmt::Debug for Http2Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Connection")
            .field("uri", self.builder.uri())
            .field("extended_connect", &self.extended_connect)
            .finish_non_exhaustive()
    }
}

impl Http2Connection {
    /// Open an HTTP/2 connection to the origin of `builder`'s URL (TCP, through its proxy if any;
    /// TLS with ALPN `h2` for `wss://`, prior knowledge for `ws://`), and wait for the server's
    /// SETTINGS. The WebSockets opened on it take `builder`'s settings.
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::connect`] for the connection; [`Error::Http2`] when TLS did not choose
    /// `h2`, the server does not speak HTTP/2, or it has not enabled extended CONNECT
    /// ([`Http2Error::ExtendedConnectDisabled`]): it can serve no WebSocket over HTTP/2.
    pub async fn connect(builder: &ClientBuilder) -> Result<Self, Error> {
        let attempt = async {
            let stream = builder.transport(&[ALPN_H2]).await?;
            if !speaks_h2(&stream) {
                return Err(Error::Http2(Http2Error::NotNegotiated));
            }
            let conn = Self::handshake(stream, builder).await?;
            if !conn.extended_connect {
                return Err(Error::Http2(Http2Error::ExtendedConnectDisabled));
            }
            Ok(conn)
        };
        bounded(builder, attempt).await
    }

    /// The HTTP/2 handshake on a connected transport, until the server's SETTINGS are known.
    async fn handshake(stream: MaybeTlsStream, builder: &ClientBuilder) -> Result<Self, Error> {
        let failed = |e| Error::Http2(Http2Error::new("http/2 handshake failed", e));
        let mut h2 = h2::client::Builder::new();
        Settings::default().apply_client(&mut h2);
        let (send, mut conn) = h2.handshake(stream).await.map_err(failed)?;
        let mut ping = conn.ping_pong();
        let closed = Arc::new(ConnectionClosed::default());
        let driver_closed = Arc::clone(&closed);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http/2 connection ended");
            }
            driver_closed.set();
        });
        // The server's SETTINGS are the first frame it sends (RFC 9113 §3.4) and are processed
        // in order: once the answer to a PING sent now is back, they are known, among them
        // SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3, which the client must see before it
        // sends an extended CONNECT).
        if let Some(ping) = &mut ping {
            ping.ping(h2::Ping::opaque()).await.map_err(failed)?;
        }
        let send = send.ready().await.map_err(failed)?;
        let extended_connect = send.is_extended_connect_protocol_enabled();
        tracing::debug!(uri = %builder.uri(), extended_connect, "http/2 connection ready");
        Ok(Http2Connection {
            send,
            builder: builder.clone(),
            extended_connect,
            closed,
        })
    }

    /// A future that resolves once the connection has closed, everything it had to send written
    /// (see [`H2Stream::connection_closed`]).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        Arc::clone(&self.closed).wait()
    }

    /// Whether the server enabled the extended CONNECT (`SETTINGS_ENABLE_CONNECT_PROTOCOL`, RFC
    /// 8441 §3), without which it can carry no WebSocket.
    pub fn is_extended_connect_enabled(&self) -> bool {
        self.extended_connect
    }

    /// Open a WebSocket to `url` on this connection, with the settings of the builder it was
    /// made with, within its handshake timeout.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] for a URL that is not a WebSocket URL of the connection's origin (same
    /// scheme, host and port; RFC 9113 §9.1.1), [`Error::Http2`] when the connection or the
    /// stream failed, [`Error::Handshake`] when the server refused (another status than 2xx) or
    /// answered with choices that were not offered.
    pub async fn websocket(
        &self,
        url: &str,
    ) -> Result<(WebSocket<H2Stream>, http::Response<()>), Error> {
        let builder = self.builder.clone().with_url(url)?;
        self.websocket_with(&builder).await
    }

    /// As [`websocket`](Self::websocket), with the URL and the settings (subprotocols,
    /// headers, limits, deflate, timeouts) of `builder`; its transport settings (TLS, proxy) do
    /// not apply, the connection has them already.
    ///
    /// # Errors
    ///
    /// As [`websocket`](Self::websocket).
    pub async fn websocket_with(
        &self,
        builder: &ClientBuilder,
    ) -> Result<(WebSocket<H2Stream>, http::Response<()>), Error> {
        self.check_origin(builder)?;
        bounded(builder, self.open(builder, std::convert::identity)).await
    }

    /// The stream of an extended CONNECT to `url` that the server accepted (checked as for
    /// [`websocket`](Self::websocket)), with no WebSocket on it yet: for running a WebSocket
    /// implementation of one's own over it (`gangway bench --http2` writes pre-encoded frames).
    ///
    /// # Errors
    ///
    /// As [`websocket`](Self::websocket).
    pub async fn tunnel(&self, url: &str) -> Result<(H2Stream, http::Response<()>), Error> {
        let builder = self.builder.clone().with_url(url)?;
        self.check_origin(&builder)?;
        let (stream, response, _) = bounded(&builder, self.extended_connect(&builder)).await?;
        Ok((stream, response))
    }

    /// A URL of the connection's origin (same scheme, host and port; RFC 9113 §9.1.1).
    fn check_origin(&self, builder: &ClientBuilder) -> Result<(), Error> {
        let (ours, theirs) = (self.builder.uri(), builder.uri());
        let same_origin = self.builder.is_secure() == builder.is_secure()
            && ours.host().map(str::to_ascii_lowercase)
                == theirs.host().map(str::to_ascii_lowercase)
            && ours.port_u16() == theirs.port_u16();
        if same_origin {
            Ok(())
        } else {
            Err(Error::Api(ApiMisuse::InvalidUrl(
                "not the origin of the http/2 connection",
            )))
        }
    }

    /// Send the extended CONNECT for `builder`'s URL and settings, check the answer, and run the
    /// WebSocket on the stream (wrapped by `wrap`).
    async fn open<S, F>(
        &self,
        builder: &ClientBuilder,
        wrap: F,
    ) -> Result<(WebSocket<S>, http::Response<()>), Error>
    where
        F: FnOnce(H2Stream) -> S,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (stream, response, negotiated) = self.extended_connect(builder).await?;
        let conn = builder.connection(&negotiated);
        let mut ws = WebSocket::from_parts(wrap(stream), conn, negotiated.protocol, &[]);
        ws.set_close_timeout(builder.close_timeout_value());
        Ok((ws, response))
    }

    /// The extended CONNECT (RFC 8441 §5) for `builder`'s URL and settings: the accepted
    /// stream, the answer, and what it negotiated.
    async fn extended_connect(
        &self,
        builder: &ClientBuilder,
    ) -> Result<(H2Stream, http::Response<()>, Negotiated), Error> {
        if !self.extended_connect {
            return Err(Error::Http2(Http2Error::ExtendedConnectDisabled));
        }
        let failed = |e| Error::Http2(Http2Error::new("http/2 stream failed", e));
        let handshake = ConnectHandshake::new(builder.uri(), &builder.options())?;
        let template = handshake.request();
        let mut request = http::Request::new(());
        *request.method_mut() = template.method().clone();
        *request.uri_mut() = template.uri().clone();
        *request.version_mut() = template.version();
        *request.headers_mut() = template.headers().clone();
        // RFC 8441 §5: the `:protocol` pseudo-header, which h2 takes from the extensions.
        request
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static("websocket"));
        let mut send = self.send.clone().ready().await.map_err(failed)?;
        let (response, stream) = send.send_request(request, false).map_err(failed)?;
        let response = response.await.map_err(failed)?;
        let (parts, recv) = response.into_parts();
        let response = http::Response::from_parts(parts, ());
        // A refusal drops `stream` and `recv`: the stream is reset (CANCEL) if still open.
        let negotiated = handshake
            .check_response(&response)
            .map_err(|e| builder.refused(e))?;
        let stream = H2Stream::new(stream, recv).on_connection(Arc::clone(&self.closed));
        Ok((stream, response, negotiated))
    }
}

/// The transport of a client WebSocket that may run over HTTP/2 ([`Http2Builder::connect`]):
/// an HTTP/1.1 connection of its own, or a stream of an HTTP/2 connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientStream {
    /// An HTTP/1.1 connection, upgraded (also after a fallback).
    Http1(MaybeTlsStream),
    /// A stream of an HTTP/2 connection.
    Http2(H2Stream),
}

impl ClientStream {
    /// Whether the WebSocket runs over HTTP/2.
    pub fn is_http2(&self) -> bool {
        matches!(self, ClientStream::Http2(_))
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Http1(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Http2(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Http1(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Http2(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Http1(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Http2(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Http1(s) => s.is_write_vectored(),
            ClientStream::Http2(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Http1(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Http2(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Http1(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Http2(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
