//! Client: connect to a `ws://` or `wss://` URL, directly or through a proxy.

use std::time::Duration;

use gangway_proto::handshake::client::{ClientHandshake, ClientOptions};
use gangway_proto::handshake::{Negotiated, WebSocketUrl};
#[cfg(not(feature = "rustls"))]
use gangway_proto::ApiMisuse;
use gangway_proto::{Config, Connection, OsRandom, Role};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::head::HeadError;
use crate::proxy::ProxySettings;
use crate::{Error, MaybeTlsStream, WebSocket, DEFAULT_CLOSE_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT};

/// The ALPN protocol of a WebSocket upgrade (RFC 6455 §4.1 speaks HTTP/1.1).
pub(crate) const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

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
/// [`Error::Api`] for a bad URL, [`Error::Io`] for connection failures, [`Error::Tls`] when the
/// TLS handshake fails (e.g. a certificate that is not trusted, expired, or for another host),
/// [`Error::Proxy`] when a proxy fails, [`Error::Handshake`] when the server's answer is not a
/// valid WebSocket upgrade, [`Error::Timeout`].
pub async fn connect(url: &str) -> Result<(WebSocket<MaybeTlsStream>, http::Response<()>), Error> {
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
    /// `uri`, checked: where to connect.
    url: WebSocketUrl,
    protocols: Vec<String>,
    headers: Vec<(String, String)>,
    origin: Option<String>,
    config: Config,
    handshake_timeout: Duration,
    close_timeout: Duration,
    proxy: ProxySettings,
    #[cfg(feature = "rustls")]
    tls: crate::tls::ClientTls,
}

impl ClientBuilder {
    /// Settings for `url` (`ws://host[:port]/path`).
    ///
    /// # Errors
    ///
    /// [`Error::Api`] if `url` is not a WebSocket URL: not `ws://` or `wss://`, no host, user
    /// info, a fragment ([`ApiMisuse::InvalidUrl`](gangway_proto::ApiMisuse::InvalidUrl)), or a
    /// port that is not a number from 1 to 65535
    /// ([`ApiMisuse::InvalidPort`](gangway_proto::ApiMisuse::InvalidPort)). Nothing is
    /// connected before the URL is checked.
    pub fn new(url: &str) -> Result<Self, Error> {
        let checked = WebSocketUrl::parse(url)?;
        Ok(ClientBuilder {
            // `WebSocketUrl::parse` parsed the same text as a URI.
            uri: url
                .parse()
                .map_err(|_| Error::Api(gangway_proto::ApiMisuse::InvalidUrl("not a valid url")))?,
            url: checked,
            protocols: Vec::new(),
            headers: Vec::new(),
            origin: None,
            config: Config::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            proxy: ProxySettings::default(),
            #[cfg(feature = "rustls")]
            tls: crate::tls::ClientTls::default(),
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

    /// permessage-deflate (RFC 7692): offer it with these preferences
    /// (`DeflateConfig::default()`), or not (`DeflateConfig::disabled()`, the default). The
    /// server may decline; it is then not used. Sets [`Config`]'s `deflate`.
    #[cfg(feature = "deflate")]
    pub fn deflate(mut self, deflate: crate::DeflateConfig) -> Self {
        self.config.deflate = deflate;
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

    /// Bound on the TCP connect (through the proxy, if any), the TLS handshake and the opening
    /// handshake together (default 10 s).
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

    /// Connect through this proxy (see [`proxy_from_env`](Self::proxy_from_env) for the URL
    /// forms): `http://[user:password@]host[:port]` (HTTP `CONNECT`, credentials sent as
    /// `Proxy-Authorization: Basic`), `socks5://…` (the server's name resolved here) or
    /// `socks5h://…` (resolved by the proxy). The port defaults to 1080. `wss://` is tunnelled:
    /// TLS runs end to end with the server. Replaces [`proxy_from_env`](Self::proxy_from_env);
    /// the environment is not read.
    ///
    /// # Errors
    ///
    /// [`Error::Proxy`] ([`ProxyError::InvalidUrl`](crate::ProxyError::InvalidUrl)) for a URL
    /// that is not a usable proxy URL.
    pub fn proxy(mut self, url: &str) -> Result<Self, Error> {
        self.proxy.fixed(url)?;
        Ok(self)
    }

    /// Connect directly, without a proxy (the default).
    pub fn no_proxy(mut self) -> Self {
        self.proxy.direct();
        self
    }

    /// Take the proxy from the environment, read at each connect, as curl does: for `wss://`
    /// `https_proxy` or `HTTPS_PROXY`, for `ws://` `http_proxy` or `HTTP_PROXY` (the uppercase
    /// one not under CGI, where any request can set it), then `all_proxy` or `ALL_PROXY`;
    /// lowercase first, empty means unset. Hosts in `no_proxy` or `NO_PROXY` are reached
    /// directly: a comma-separated list of names (each also matching the names under it),
    /// IP addresses, IP ranges (`10.0.0.0/8`), or `*` for all. Loopback addresses and
    /// `localhost` are proxied too unless listed (curl's rule, unlike some other tools).
    ///
    /// Off by default: a library should not change where it connects because of its process's
    /// environment unless asked. (The `gangway` CLI asks.) A malformed proxy variable fails the
    /// connect with [`Error::Proxy`].
    pub fn proxy_from_env(mut self) -> Self {
        self.proxy.use_env();
        self
    }

    /// Hosts to reach without the proxy, in the `no_proxy` syntax of
    /// [`proxy_from_env`](Self::proxy_from_env). Applies to [`proxy`](Self::proxy) and to the
    /// environment's proxy, where it replaces `no_proxy`.
    pub fn proxy_bypass(mut self, list: &str) -> Self {
        self.proxy.bypass(list);
        self
    }

    /// Trust the CA certificates in this PEM file for `wss://`, instead of the default roots
    /// (like curl's `--cacert`). May be called several times: each adds its certificates.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] when the file cannot be read or holds no certificate.
    #[cfg(feature = "rustls")]
    pub fn ca_file(mut self, path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        let certs = crate::tls::certificates_from_pem_file(path)?;
        self.tls.roots.get_or_insert_with(Vec::new).extend(certs);
        Ok(self)
    }

    /// Present this client certificate when the server asks for one: a PEM certificate chain
    /// (ours first) and its PEM private key.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] when a file cannot be read or holds no certificate or key. A key that does
    /// not suit the certificate is reported by [`connect`](Self::connect).
    #[cfg(feature = "rustls")]
    pub fn client_cert_files(
        mut self,
        cert_chain: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> Result<Self, Error> {
        let certs = crate::tls::certificates_from_pem_file(cert_chain)?;
        let key = crate::tls::private_key_from_pem_file(key)?;
        self.tls.identity = Some((certs, std::sync::Arc::new(key)));
        Ok(self)
    }

    /// **Dangerous**: accept any server certificate for `wss://`, whoever it names, whoever
    /// signed it, expired or not.
    ///
    /// The connection is still encrypted, but anyone on the path can impersonate the server
    /// with a certificate of their own and read and change everything: this protects against
    /// nothing but passive eavesdropping. Meant for a command-line `--insecure` against a test
    /// server you control; never in a program that talks to servers it does not.
    #[cfg(feature = "rustls")]
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.tls.insecure = accept;
        self
    }

    /// Use this TLS configuration for `wss://` as it is, instead of the one built from
    /// [`ca_file`](Self::ca_file), [`client_cert_files`](Self::client_cert_files) and
    /// [`danger_accept_invalid_certs`](Self::danger_accept_invalid_certs), which are then
    /// ignored. Set `alpn_protocols` to `[b"http/1.1"]` if the server needs ALPN; build it with
    /// [`tls::crypto_provider`](crate::tls::crypto_provider) to use the same cryptography.
    #[cfg(feature = "rustls")]
    pub fn tls_config(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls.config = Some(config);
        self
    }

    /// The URL being connected to.
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }

    /// The URL, checked: scheme, host and port to connect to.
    pub fn url(&self) -> &WebSocketUrl {
        &self.url
    }

    /// Connect over TCP (through the proxy, if any), speak TLS for `wss://`, and perform the
    /// handshake.
    ///
    /// # Errors
    ///
    /// As [`connect`]. Without the `rustls` feature, [`Error::Api`] for a `wss://` URL.
    pub async fn connect(&self) -> Result<(WebSocket<MaybeTlsStream>, http::Response<()>), Error> {
        self.connect_with(std::convert::identity).await
    }

    /// As [`connect`](Self::connect), with the transport handed to `wrap` once it is connected
    /// (TCP, through the proxy if any, TLS done for `wss://`) and before the opening handshake;
    /// the handshake and the connection then run over what `wrap` returns. For watching or
    /// counting the bytes: the `gangway` CLI's `-v` prints the handshake this way.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with<S, F>(
        &self,
        wrap: F,
    ) -> Result<(WebSocket<S>, http::Response<()>), Error>
    where
        F: FnOnce(MaybeTlsStream) -> S,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // The request is built first: headers it cannot send are refused before connecting.
        let handshake = self.client_handshake()?;
        let attempt = async {
            let stream = self.transport(&[ALPN_HTTP_1_1]).await?;
            self.handshake(wrap(stream), handshake).await
        };
        match tokio::time::timeout(self.handshake_timeout, attempt).await {
            Ok(result) => result,
            Err(_elapsed) => {
                tracing::debug!(uri = %self.uri, "opening handshake timed out");
                Err(Error::Timeout)
            }
        }
    }

    /// The connected transport to the URL's host: TCP, through the proxy if any, and TLS for
    /// `wss://` offering the ALPN protocols `alpn`. Not bounded in time: the caller bounds it
    /// with the handshake that follows.
    pub(crate) async fn transport(&self, alpn: &[&[u8]]) -> Result<MaybeTlsStream, Error> {
        let secure = self.url.is_secure();
        #[cfg(not(feature = "rustls"))]
        if secure {
            return Err(Error::Api(ApiMisuse::InvalidUrl(
                "wss:// needs the rustls feature (or connect_on with a TLS stream)",
            )));
        }
        // The host as looked up (IPv6 without brackets); the URL's port or the scheme's default
        // (RFC 6455 §3: 80 for ws, 443 for wss).
        let (host, port) = (self.url.host(), self.url.port());
        let proxy = self.proxy.select(secure, host)?;
        let tcp = match &proxy {
            Some(proxy) => proxy.tunnel(host, port).await?,
            None => {
                let tcp = connect_tcp(host, port).await?;
                // Frames are written whole; waiting to coalesce them only adds latency.
                tcp.set_nodelay(true)?;
                tcp
            }
        };
        #[cfg(feature = "rustls")]
        if secure {
            let tls = self.tls.connect(host, tcp, alpn).await?;
            return Ok(MaybeTlsStream::from(tls));
        }
        let _ = alpn;
        Ok(MaybeTlsStream::Plain(tcp))
    }

    /// Whether the URL is `wss://`.
    #[cfg_attr(not(feature = "http2"), allow(dead_code))]
    pub(crate) fn is_secure(&self) -> bool {
        self.url.is_secure()
    }

    /// The connection for what the handshake negotiated.
    pub(crate) fn connection(&self, negotiated: &Negotiated) -> Connection {
        Connection::from_negotiated(Role::Client, self.config.clone(), negotiated)
    }

    /// The configured close-handshake bound.
    #[cfg_attr(not(feature = "http2"), allow(dead_code))]
    pub(crate) fn close_timeout_value(&self) -> Duration {
        self.close_timeout
    }

    /// The configured opening-handshake bound.
    #[cfg_attr(not(feature = "http2"), allow(dead_code))]
    pub(crate) fn handshake_timeout_value(&self) -> Duration {
        self.handshake_timeout
    }

    /// The same settings for another URL.
    #[cfg_attr(not(feature = "http2"), allow(dead_code))]
    pub(crate) fn with_url(self, url: &str) -> Result<Self, Error> {
        let other = ClientBuilder::new(url)?;
        Ok(ClientBuilder {
            uri: other.uri,
            url: other.url,
            ..self
        })
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
        let handshake = self.client_handshake()?;
        match tokio::time::timeout(self.handshake_timeout, self.handshake(stream, handshake)).await
        {
            Ok(result) => result,
            Err(_elapsed) => {
                tracing::debug!(uri = %self.uri, "opening handshake timed out");
                Err(Error::Timeout)
            }
        }
    }

    /// The handshake's options: origin, subprotocols, extra headers, and one permessage-deflate
    /// offer when configured (RFC 7692 §5; the answer is checked by the handshake and put to
    /// work by the connection). The same over HTTP/1.1 and HTTP/2.
    pub(crate) fn options(&self) -> ClientOptions {
        let mut options = ClientOptions::default();
        options.origin.clone_from(&self.origin);
        options.protocols.clone_from(&self.protocols);
        options.headers.clone_from(&self.headers);
        #[cfg(feature = "deflate")]
        if self.config.deflate.enabled {
            options
                .extensions
                .push(self.config.deflate.offer().to_string());
        }
        options
    }

    /// The opening request for this builder's settings, with a fresh key.
    pub(crate) fn client_handshake(&self) -> Result<ClientHandshake, Error> {
        // A fresh key per connection from the OS CSPRNG (RFC 6455 §4.1).
        Ok(ClientHandshake::new(
            &self.uri,
            &self.options(),
            &mut OsRandom::new(),
        )?)
    }

    /// Send the request, read the response head, and build the connection from what follows.
    pub(crate) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        handshake: ClientHandshake,
    ) -> Result<(WebSocket<S>, http::Response<()>), Error> {
        stream.write_all(handshake.request()).await?;
        stream.flush().await?;
        let max_head_size = ClientOptions::default().max_head_size;
        let read = crate::head::read_head(&mut stream, max_head_size, |buf| {
            handshake.parse_response(buf)
        })
        .await;
        let ((response, negotiated), leftover) = match read {
            Ok(head) => head,
            Err(HeadError::Io(e)) => return Err(e.into()),
            Err(HeadError::Eof) => {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed during the opening handshake",
                )))
            }
            Err(HeadError::TooLarge) => {
                return Err(self.refused(gangway_proto::HandshakeError::HeadTooLarge))
            }
            Err(HeadError::Parse(e)) => return Err(self.refused(e)),
        };
        let conn = self.connection(&negotiated);
        // Frames the server sent right behind its head belong to the connection.
        let mut ws = WebSocket::from_parts(stream, conn, negotiated.protocol, &leftover);
        ws.set_close_timeout(self.close_timeout);
        Ok((ws, response))
    }

    pub(crate) fn refused(&self, e: gangway_proto::HandshakeError) -> Error {
        tracing::debug!(uri = %self.uri, error = %e, "server refused the websocket handshake");
        Error::Handshake(e)
    }
}

/// Connect to `host:port`: each address the name resolves to in turn, as
/// `TcpStream::connect` does, but a failure names the address that refused (`cannot connect to
/// 127.0.0.1:9001`, with the system's reason as its source). The error keeps the kind of the
/// last failure (`ConnectionRefused`, `TimedOut`, ...); a failed lookup is returned as it is.
async fn connect_tcp(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(match last {
        Some((addr, e)) => {
            // A name is shown with the address it resolved to, an address as it is.
            let target = if host.parse::<std::net::IpAddr>().is_ok() {
                addr.to_string()
            } else {
                format!("{host}:{port} ({addr})")
            };
            std::io::Error::new(e.kind(), ConnectFailed { target, source: e })
        }
        None => std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        ),
    })
}

/// A TCP connection that could not be made: to where, and the system's reason.
#[derive(Debug)]
struct ConnectFailed {
    target: String,
    source: std::io::Error,
}

impl std::fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot connect to {}", self.target)
    }
}

impl std::error::Error for ConnectFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use gangway_proto::ApiMisuse;

    #[test]
    fn urls_that_are_not_websocket_urls_are_refused_by_the_builder() {
        let cases = [
            (
                "http://example.com/",
                ApiMisuse::InvalidUrl("scheme is not ws or wss"),
            ),
            (
                "ws://example.com/#frag",
                ApiMisuse::InvalidUrl("fragment not allowed"),
            ),
            (
                "ws://127.0.0.1:99999/",
                ApiMisuse::InvalidPort("99999".into()),
            ),
        ];
        for (url, why) in cases {
            match ClientBuilder::new(url) {
                Err(Error::Api(e)) => assert_eq!(e, why, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_invalid_port_is_refused_before_connecting_and_named() {
        // `http::Uri` takes these, and reports no port for them: they used to reach port 80.
        for port in ["99999", "65536", "abc"] {
            let url = format!("ws://127.0.0.1:{port}/");
            match ClientBuilder::new(&url) {
                Err(Error::Api(e)) => assert_eq!(
                    e.to_string(),
                    format!("invalid websocket url: invalid port {port} (ports are 1 to 65535)")
                ),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap();
        drop(listener);
        let err = ClientBuilder::new(&format!("ws://{closed}/"))
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        let Error::Io(io) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        assert_eq!(io.to_string(), format!("cannot connect to {closed}"));
        let cause = std::error::Error::source(io).map(ToString::to_string);
        assert!(cause.is_some_and(|c| c.contains("refused")), "{err:?}");
    }

    #[cfg(not(feature = "rustls"))]
    #[tokio::test]
    async fn wss_without_tls_support_is_an_api_error() {
        let builder = ClientBuilder::new("wss://127.0.0.1:1/").unwrap();
        assert!(matches!(
            builder.connect().await,
            Err(Error::Api(ApiMisuse::InvalidUrl(_)))
        ));
    }

    #[cfg(feature = "rustls")]
    #[tokio::test]
    async fn wss_is_attempted_when_tls_is_built_in() {
        // Nothing listens on port 1: the TCP connect fails before TLS, on the URL's port.
        let builder = ClientBuilder::new("wss://127.0.0.1:1/").unwrap();
        assert!(matches!(builder.connect().await, Err(Error::Io(_))));
    }

    #[tokio::test]
    async fn proxy_urls_are_checked_by_the_builder() {
        let builder = ClientBuilder::new("ws://127.0.0.1:1/").unwrap();
        assert!(matches!(
            builder.clone().proxy("ftp://proxy"),
            Err(Error::Proxy(crate::ProxyError::InvalidUrl { .. }))
        ));
        // A proxy that refuses connections is reported as the proxy's failure, not the server's.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap();
        drop(listener);
        let err = builder
            .proxy(&format!("http://{closed}"))
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        match err {
            Error::Proxy(crate::ProxyError::Io { proxy, .. }) => {
                assert_eq!(proxy, closed.to_string());
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn connect_with_runs_the_handshake_over_the_wrapped_transport() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            crate::ServerBuilder::new().accept(tcp).await.is_ok()
        });
        let mut wrapped = false;
        let (ws, response) = ClientBuilder::new(&format!("ws://{addr}/"))
            .unwrap()
            .connect_with(|stream| {
                wrapped = true;
                assert!(!stream.is_tls());
                tokio::io::BufStream::new(stream)
            })
            .await
            .unwrap();
        assert!(wrapped);
        assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
        // The connection runs over what `wrap` returned.
        let _: &tokio::io::BufStream<MaybeTlsStream> = ws.get_ref();
        assert!(server.await.unwrap());
    }
}
