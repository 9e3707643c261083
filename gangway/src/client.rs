//! Client: connect to a `ws://` URL.

use std::time::Duration;

use gangway_proto::Config;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::{Error, WebSocket};

/// Connect to `url` with default settings.
///
/// ```no_run
/// # async fn run() -> Result<(), gangway::Error> {
/// use futures_util::{SinkExt, StreamExt};
/// let (mut ws, _response) = gangway::connect("ws://127.0.0.1:9001/").await?;
/// ws.send(gangway::Message::text("hello")).await?;
/// if let Some(reply) = ws.next().await {
///     println!("{:?}", reply?);
/// }
/// ws.close(gangway::CloseCode::NORMAL, "").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Api`] for a bad URL, [`Error::Io`] for connection failures, [`Error::Handshake`] when
/// the server's answer is not a valid WebSocket upgrade, [`Error::Timeout`].
pub async fn connect(url: &str) -> Result<(WebSocket<TcpStream>, http::Response<()>), Error> {
    ClientBuilder::new(url)?.connect().await
}

/// Settings for a client connection.
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    _uri: http::Uri,
    _protocols: Vec<String>,
    _headers: Vec<(String, String)>,
    _origin: Option<String>,
    _config: Config,
    _handshake_timeout: Duration,
}

impl ClientBuilder {
    /// Settings for `url` (`ws://host[:port]/path`).
    ///
    /// # Errors
    ///
    /// [`Error::Api`] if `url` is not a WebSocket URL.
    pub fn new(url: &str) -> Result<Self, Error> {
        let _ = url;
        todo!()
    }

    /// Offer a subprotocol (may be called several times; order is preference).
    pub fn protocol(self, name: impl Into<String>) -> Self {
        let _ = name;
        todo!()
    }

    /// Add a header to the request.
    pub fn header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let _ = (name, value);
        todo!()
    }

    /// Send an `Origin` header.
    pub fn origin(self, origin: impl Into<String>) -> Self {
        let _ = origin;
        todo!()
    }

    /// Limits for the connection.
    pub fn config(self, config: Config) -> Self {
        let _ = config;
        todo!()
    }

    /// Bound on the TCP connect plus opening handshake (default 10 s).
    pub fn handshake_timeout(self, timeout: Duration) -> Self {
        let _ = timeout;
        todo!()
    }

    /// Connect over TCP and perform the handshake.
    ///
    /// # Errors
    ///
    /// As [`connect`].
    pub async fn connect(&self) -> Result<(WebSocket<TcpStream>, http::Response<()>), Error> {
        todo!()
    }

    /// Perform the handshake over a transport that is already connected (TLS, a proxy tunnel).
    ///
    /// # Errors
    ///
    /// As [`connect`].
    pub async fn connect_on<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> Result<(WebSocket<S>, http::Response<()>), Error> {
        let _ = stream;
        todo!()
    }
}
