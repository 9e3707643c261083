//! Server: accept WebSocket connections on streams the caller accepted.

use std::sync::Arc;
use std::time::Duration;

use gangway_proto::Config;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Error, WebSocket};

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
#[derive(Clone)]
pub struct ServerBuilder {
    _protocols: Vec<String>,
    _config: Config,
    _max_head_size: usize,
    _handshake_timeout: Duration,
    _origin_check: Option<OriginCheck>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder").finish_non_exhaustive()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    /// Default settings: no subprotocols, default limits, 16 KiB head, 10 s handshake timeout,
    /// every origin allowed.
    pub fn new() -> Self {
        todo!()
    }

    /// Support a subprotocol; the first supported one the client offered is selected.
    pub fn protocol(self, name: impl Into<String>) -> Self {
        let _ = name;
        todo!()
    }

    /// Limits for accepted connections.
    pub fn config(self, config: Config) -> Self {
        let _ = config;
        todo!()
    }

    /// Largest request head (default 16 KiB); larger ones get 431.
    pub fn max_head_size(self, bytes: usize) -> Self {
        let _ = bytes;
        todo!()
    }

    /// Bound on receiving the request head (default 10 s).
    pub fn handshake_timeout(self, timeout: Duration) -> Self {
        let _ = timeout;
        todo!()
    }

    /// Decide by `Origin` (None when the request has none); `false` answers 403.
    pub fn origin_check(
        self,
        check: impl Fn(Option<&str>) -> bool + Send + Sync + 'static,
    ) -> Self {
        let _ = check;
        todo!()
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
        let _ = stream;
        todo!()
    }

    /// Read the request head only, for servers that answer plain HTTP requests too.
    ///
    /// # Errors
    ///
    /// [`Error::Handshake`] for a malformed or oversized head (already answered with 400/431),
    /// [`Error::Io`], [`Error::Timeout`].
    pub async fn read_request<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> Result<Incoming<S>, Error> {
        let _ = stream;
        todo!()
    }
}

/// A request head that was read, before it is accepted as a WebSocket or answered as HTTP.
pub struct Incoming<S> {
    _stream: S,
    _request: http::Request<()>,
    _leftover: Vec<u8>,
    _builder: ServerBuilder,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Incoming<S> {
    /// The request head.
    pub fn request(&self) -> &http::Request<()> {
        &self._request
    }

    /// Whether the request asks for a WebSocket upgrade.
    pub fn is_upgrade(&self) -> bool {
        todo!()
    }

    /// Check the request (RFC 6455 §4.2.1 and the origin policy) and answer 101, or answer the error.
    ///
    /// # Errors
    ///
    /// [`Error::Handshake`] (already answered), [`Error::Io`].
    pub async fn accept(self) -> Result<WebSocket<S>, Error> {
        todo!()
    }

    /// Answer as plain HTTP and close the connection.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub async fn respond(self, response: http::Response<()>, body: &[u8]) -> Result<(), Error> {
        let _ = (response, body);
        todo!()
    }
}
