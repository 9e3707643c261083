//! Client: connect to a `ws://` URL.

use std::time::Duration;

use gangway_proto::handshake::client::{ClientHandshake, ClientOptions};
use gangway_proto::handshake::Parsed;
use gangway_proto::{ApiMisuse, Config, Connection, OsRandom, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Error, WebSocket, DEFAULT_CLOSE_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT};

/// How much to read at a time while waiting for the response head.
const HEAD_READ_SIZE: usize = 4 << 10;

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
///
/// ```no_run
/// # async fn run() -> Result<(), gangway::Error> {
/// let (ws, _response) = gangway::ClientBuilder::new("ws://127.0.0.1:9001/chat")?
///     .protocol("chat")
///     .header("Authorization", "Bearer xyz")
///     .connect()
///     .await?;
/// println!("subprotocol: {:?}", ws.protocol());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    uri: http::Uri,
    protocols: Vec<String>,
    headers: Vec<(String, String)>,
    origin: Option<String>,
    config: Config,
    handshake_timeout: Duration,
    close_timeout: Duration,
}

impl ClientBuilder {
    /// Settings for `url` (`ws://host[:port]/path`).
    ///
    /// # Errors
    ///
    /// [`Error::Api`] if `url` is not a WebSocket URL.
    pub fn new(url: &str) -> Result<Self, Error> {
        Ok(ClientBuilder {
            uri: parse_url(url)?,
            protocols: Vec::new(),
            headers: Vec::new(),
            origin: None,
            config: Config::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
        })
    }

    /// Offer a subprotocol (may be called several times; order is preference).
    pub fn protocol(mut self, name: impl Into<String>) -> Self {
        self.protocols.push(name.into());
        self
    }

    /// Add a header to the request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Send an `Origin` header.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Limits and timers for the connection. Replaces the whole [`Config`], including what
    /// [`ping_interval`](Self::ping_interval), [`idle_timeout`](Self::idle_timeout) and
    /// [`write_timeout`](Self::write_timeout) set before.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Keepalive: ping the peer after this long without receiving anything
    /// ([`Config::ping_interval`]; default off). `None` or zero: off.
    pub fn ping_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.config.ping_interval = interval.into();
        self
    }

    /// Drop a dead peer: close the connection abnormally after this long without receiving
    /// anything, pongs included ([`Config::idle_timeout`]; default off). `None` or zero: off.
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.idle_timeout = timeout.into();
        self
    }

    /// Drop a peer that stopped reading: fail sending after output waited this long without
    /// the transport taking any ([`Config::write_timeout`]; default 30 s). `None` or zero: off.
    pub fn write_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.write_timeout = timeout.into();
        self
    }

    /// Bound on the TCP connect plus opening handshake (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Bound on the close handshake of the connection (default 5 s); see
    /// [`WebSocket::set_close_timeout`].
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The URL being connected to.
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }

    /// Connect over TCP and perform the handshake.
    ///
    /// # Errors
    ///
    /// As [`connect`]; [`Error::Api`] for a `wss://` URL (TLS is not built in yet: use
    /// [`connect_on`](Self::connect_on) with a TLS stream).
    pub async fn connect(&self) -> Result<(WebSocket<TcpStream>, http::Response<()>), Error> {
        if self.uri.scheme_str() == Some("wss") {
            return Err(Error::Api(ApiMisuse::InvalidUrl(
                "wss:// needs a TLS stream: use connect_on",
            )));
        }
        // `parse_url` guarantees a host; IPv6 hosts come bracketed in URLs but not in lookups.
        let host = self.uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = self.uri.port_u16().unwrap_or(80);
        let attempt = async {
            let tcp = TcpStream::connect((host, port)).await?;
            // Frames are written whole; waiting to coalesce them only adds latency.
            tcp.set_nodelay(true)?;
            self.handshake(tcp).await
        };
        match tokio::time::timeout(self.handshake_timeout, attempt).await {
            Ok(result) => result,
            Err(_elapsed) => {
                tracing::debug!(uri = %self.uri, "opening handshake timed out");
                Err(Error::Timeout)
            }
        }
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
        match tokio::time::timeout(self.handshake_timeout, self.handshake(stream)).await {
            Ok(result) => result,
            Err(_elapsed) => {
                tracing::debug!(uri = %self.uri, "opening handshake timed out");
                Err(Error::Timeout)
            }
        }
    }

    /// Send the request, read the response head, and build the connection from what follows.
    async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
    ) -> Result<(WebSocket<S>, http::Response<()>), Error> {
        let mut options = ClientOptions::default();
        options.origin.clone_from(&self.origin);
        options.protocols.clone_from(&self.protocols);
        options.headers.clone_from(&self.headers);
        let max_head_size = options.max_head_size;
        // A fresh key per connection from the OS CSPRNG (RFC 6455 §4.1).
        let handshake = ClientHandshake::new(&self.uri, &options, &mut OsRandom::new())?;
        stream.write_all(handshake.request()).await?;
        stream.flush().await?;

        let mut buf = Vec::with_capacity(HEAD_READ_SIZE);
        loop {
            buf.reserve(HEAD_READ_SIZE);
            let start = buf.len();
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed during the opening handshake",
                )));
            }
            // A head can only end at a newline: don't re-parse for bytes that bring none.
            if !buf[start..].contains(&b'\n') && buf.len() <= max_head_size {
                continue;
            }
            match handshake.parse_response(&buf) {
                Ok(Parsed::Complete((response, negotiated), head_len)) => {
                    let conn = Connection::new(Role::Client, self.config.clone());
                    // Frames the server sent right behind its head belong to the connection.
                    let leftover = buf.get(head_len..).unwrap_or_default();
                    let mut ws = WebSocket::from_parts(stream, conn, negotiated.protocol, leftover);
                    ws.set_close_timeout(self.close_timeout);
                    return Ok((ws, response));
                }
                Ok(Parsed::Partial) if buf.len() <= max_head_size => {}
                Ok(Parsed::Partial) => {
                    return Err(self.refused(gangway_proto::HandshakeError::HeadTooLarge));
                }
                Err(e) => return Err(self.refused(e)),
            }
        }
    }

    fn refused(&self, e: gangway_proto::HandshakeError) -> Error {
        tracing::debug!(uri = %self.uri, error = %e, "server refused the websocket handshake");
        Error::Handshake(e)
    }
}

/// Parse a `ws://` or `wss://` URL with a host and no fragment (RFC 6455 §3).
fn parse_url(url: &str) -> Result<http::Uri, ApiMisuse> {
    // Fragments are meaningless in WebSocket URIs and MUST NOT be used (RFC 6455 §3).
    if url.contains('#') {
        return Err(ApiMisuse::InvalidUrl("fragment not allowed"));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|_| ApiMisuse::InvalidUrl("not a valid url"))?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("ws") || s.eq_ignore_ascii_case("wss") => {}
        Some(_) => return Err(ApiMisuse::InvalidUrl("scheme must be ws or wss")),
        None => return Err(ApiMisuse::InvalidUrl("missing ws:// or wss://")),
    }
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(uri),
        _ => Err(ApiMisuse::InvalidUrl("missing host")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_and_wss_urls_with_a_host_are_accepted() {
        for url in [
            "ws://127.0.0.1:9001/",
            "ws://example.com",
            "wss://example.com/chat?room=1",
            "ws://[::1]:8080/x",
        ] {
            assert!(parse_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn urls_that_are_not_websocket_urls_are_refused() {
        let cases = [
            ("http://example.com/", "scheme must be ws or wss"),
            ("/chat", "missing ws:// or wss://"),
            ("ws://example.com/#frag", "fragment not allowed"),
            ("ws:///path", "not a valid url"),
            ("not a url", "not a valid url"),
        ];
        for (url, why) in cases {
            assert_eq!(parse_url(url), Err(ApiMisuse::InvalidUrl(why)), "{url}");
        }
    }

    #[tokio::test]
    async fn wss_without_a_tls_stream_is_an_api_error() {
        let builder = ClientBuilder::new("wss://127.0.0.1:1/").unwrap();
        assert!(matches!(
            builder.connect().await,
            Err(Error::Api(ApiMisuse::InvalidUrl(_)))
        ));
    }
}
