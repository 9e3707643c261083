//! The client side of the opening handshake (RFC 6455 §4.1, §4.2.2 checks in §4.1 "the client
//! MUST").
//!
//! ```
//! use gangway_proto::handshake::client::{ClientHandshake, ClientOptions};
//! use gangway_proto::handshake::{accept_key, Parsed};
//! use gangway_proto::OsRandom;
//!
//! let uri: http::Uri = "ws://example.com:8080/chat".parse().unwrap();
//! let hs = ClientHandshake::new(&uri, &ClientOptions::default(), &mut OsRandom::new()).unwrap();
//! // ... write hs.request() to the transport, then read the response:
//! let response = format!(
//!     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
//!      Sec-WebSocket-Accept: {}\r\n\r\n",
//!     accept_key(hs.key().as_bytes())
//! );
//! match hs.parse_response(response.as_bytes()).unwrap() {
//!     Parsed::Complete((_response, negotiated), head_len) => {
//!         assert_eq!(head_len, response.len()); // later bytes are frames
//!         assert_eq!(negotiated.protocol, None);
//!     }
//!     Parsed::Partial => unreachable!("the whole head is there"),
//! }
//! ```

use http::header::{self, HeaderMap, HeaderValue};

use crate::config::DEFAULT_MAX_HEAD_SIZE;
use crate::error::{ApiMisuse, HandshakeError};
use crate::handshake::head::{self, MAX_HEADERS};
use crate::handshake::negotiate::{is_token, parse_extension_list};
use crate::handshake::{
    accept_key, generate_key, header_tokens, parse_extensions, ExtensionOffer, Negotiated, Parsed,
    WebSocketUrl,
};
use crate::random::RandomSource;

/// What the client asks for beyond the required headers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// `Origin` header, if any.
    pub origin: Option<String>,
    /// Subprotocols to offer, in order of preference (`Sec-WebSocket-Protocol`).
    pub protocols: Vec<String>,
    /// Extension offers, each as it appears in `Sec-WebSocket-Extensions`.
    pub extensions: Vec<String>,
    /// Extra headers, sent as given.
    pub headers: Vec<(String, String)>,
    /// Largest response head accepted.
    pub max_head_size: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            origin: None,
            protocols: Vec::new(),
            extensions: Vec::new(),
            headers: Vec::new(),
            max_head_size: DEFAULT_MAX_HEAD_SIZE,
        }
    }
}

/// A client handshake in progress: the request to send, and what to check in the response.
#[derive(Clone, Debug)]
pub struct ClientHandshake {
    /// The `Sec-WebSocket-Key` sent.
    key: String,
    /// The `Sec-WebSocket-Accept` the server must answer with.
    expected_accept: String,
    /// The request head.
    request: Vec<u8>,
    /// What was offered, to check the server's choices against.
    offered: Offered,
    /// Largest response head accepted.
    max_head_size: usize,
}

/// What a client offered, to check the server's choices against (the same on HTTP/1.1 and
/// HTTP/2).
#[derive(Clone, Debug)]
struct Offered {
    /// Subprotocols offered, in order.
    protocols: Vec<String>,
    /// The extensions offered.
    extensions: Vec<ExtensionOffer>,
}

/// The options of a client handshake, checked: what both request forms are built from.
struct Checked<'a> {
    target: WebSocketUrl,
    /// The `Host` value (an extra `Host` header replaces the URL's).
    host: String,
    origin: Option<String>,
    /// Extra headers, other than `Host` and `Origin`, in order.
    extra: Vec<(&'a str, &'a str)>,
    offered: Offered,
}

/// Headers the handshake writes itself; an extra one would contradict it.
const RESERVED_HEADERS: [&str; 7] = [
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
];

impl<'a> Checked<'a> {
    /// See [`ClientHandshake::new`] for the rules and errors.
    fn new(uri: &http::Uri, options: &'a ClientOptions) -> Result<Self, ApiMisuse> {
        let target = WebSocketUrl::from_uri(uri)?;

        let mut host = target.host_header().to_owned();
        let mut origin = options.origin.clone();
        let mut extra = Vec::with_capacity(options.headers.len());
        let (mut host_given, mut origin_given) = (false, false);
        for (name, value) in &options.headers {
            let refuse = |reason| Err(ApiMisuse::invalid_header(name, reason));
            if !is_token(name.as_bytes()) {
                return refuse("the name is not an http token (letters, digits, !#$%&'*+-.^_`|~)");
            }
            if !is_field_value(value) {
                return refuse("the value has a control character (CR, LF, NUL, ...)");
            }
            let reserved = |r: &&str| name.eq_ignore_ascii_case(r);
            if RESERVED_HEADERS.iter().any(reserved) {
                return refuse("the handshake writes this header itself");
            }
            if name.eq_ignore_ascii_case("host") {
                // A server refuses a request with two Host lines (RFC 7230 §5.4).
                if std::mem::replace(&mut host_given, true) {
                    return refuse("given twice");
                }
                host.clone_from(value);
            } else if name.eq_ignore_ascii_case("origin") {
                if std::mem::replace(&mut origin_given, true) {
                    return refuse("given twice");
                }
                origin = Some(value.clone());
            } else {
                extra.push((name.as_str(), value.as_str()));
            }
        }

        if origin.as_deref().is_some_and(|o| !is_field_value(o)) {
            return Err(ApiMisuse::invalid_header(
                "Origin",
                "the value has a control character (CR, LF, NUL, ...)",
            ));
        }
        // RFC 6455 §4.1 item 10: the subprotocols are tokens, and unique.
        for (i, p) in options.protocols.iter().enumerate() {
            if !is_token(p.as_bytes()) {
                return Err(ApiMisuse::invalid_header(
                    "Sec-WebSocket-Protocol",
                    "a subprotocol is not an http token",
                ));
            }
            if options.protocols[..i].contains(p) {
                return Err(ApiMisuse::invalid_header(
                    "Sec-WebSocket-Protocol",
                    "a subprotocol is offered twice",
                ));
            }
        }
        let mut offered_extensions = Vec::new();
        for e in &options.extensions {
            let before = offered_extensions.len();
            let parsed = is_field_value(e)
                && parse_extension_list(e.as_bytes(), &mut offered_extensions).is_ok();
            // An empty offer would send an empty list element, or an empty header.
            if !parsed || offered_extensions.len() == before {
                return Err(ApiMisuse::invalid_header(
                    "Sec-WebSocket-Extensions",
                    "an offer is not in the extension grammar of RFC 6455 §9.1",
                ));
            }
        }
        Ok(Checked {
            target,
            host,
            origin,
            extra,
            offered: Offered {
                protocols: options.protocols.clone(),
                extensions: offered_extensions,
            },
        })
    }
}

impl ClientHandshake {
    /// Build the request for `uri` (`ws://` or `wss://`, host required; the path and query are the
    /// request target, `/` if empty). `Host` carries the port when it is not the scheme's default
    /// (80 for `ws`, 443 for `wss`). A fresh key is drawn from `rng`.
    ///
    /// The request is `GET <target> HTTP/1.1` with `Host`, `Upgrade: websocket`,
    /// `Connection: Upgrade`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version: 13`, then `Origin`,
    /// `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions` when the options ask for them, then
    /// the extra headers in order. An extra `Host` or `Origin` replaces the one the handshake
    /// would send.
    ///
    /// A fragment cannot reach this function: `http::Uri` drops it while parsing (RFC 6455 §3
    /// forbids fragments in WebSocket URIs).
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::InvalidUrl`] for a URI that is not a WebSocket URL (another scheme, no host,
    /// user info, an invalid port); [`ApiMisuse::InvalidHeader`] for an origin, subprotocol,
    /// extension offer or extra header that cannot be sent: a subprotocol that is not a token or
    /// is offered twice, an extension offer not in the RFC 6455 §9.1 grammar, a header name that
    /// is not a token, a value with control characters (CR, LF, NUL...), an extra header the
    /// handshake writes itself (`Upgrade`, `Connection`, `Sec-WebSocket-*`; subprotocols and
    /// extensions go through the options), or `Host`/`Origin` given twice.
    pub fn new(
        uri: &http::Uri,
        options: &ClientOptions,
        rng: &mut dyn RandomSource,
    ) -> Result<Self, ApiMisuse> {
        let Checked {
            target,
            host,
            origin,
            extra,
            offered,
        } = Checked::new(uri, options)?;

        // §4.1 item 7: a nonce of 16 random bytes, fresh for each connection.
        let key = generate_key(rng);
        // §4.1 items 1-9, in that order.
        let mut request = format!("GET {} HTTP/1.1\r\n", target.request_target());
        let mut line = |name: &str, value: &str| {
            request.push_str(name);
            request.push_str(": ");
            request.push_str(value);
            request.push_str("\r\n");
        };
        line("Host", &host);
        line("Upgrade", "websocket");
        line("Connection", "Upgrade");
        line("Sec-WebSocket-Key", &key);
        line("Sec-WebSocket-Version", "13");
        if let Some(o) = &origin {
            line("Origin", o);
        }
        if !options.protocols.is_empty() {
            line("Sec-WebSocket-Protocol", &options.protocols.join(", "));
        }
        if !options.extensions.is_empty() {
            line("Sec-WebSocket-Extensions", &options.extensions.join(", "));
        }
        for (name, value) in extra {
            line(name, value);
        }
        request.push_str("\r\n");

        Ok(ClientHandshake {
            expected_accept: accept_key(key.as_bytes()),
            key,
            request: request.into_bytes(),
            offered,
            max_head_size: options.max_head_size,
        })
    }

    /// The `Sec-WebSocket-Key` sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The request head, ready to write.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// Parse and check the response received so far.
    ///
    /// Call it again with everything received so far whenever more bytes arrive.
    /// [`Parsed::Complete`] carries the response, what was negotiated, and the length of the head:
    /// the bytes after it are frames the server may already have sent, and belong to the
    /// connection.
    ///
    /// # Errors
    ///
    /// A [`HandshakeError`] naming what was wrong, checked in the order of RFC 6455 §4.1: a
    /// malformed head, or one over [`ClientOptions::max_head_size`]
    /// ([`HandshakeError::HeadTooLarge`]); a status other than 101
    /// ([`HandshakeError::UnexpectedStatus`]); `Upgrade` missing or not `websocket`;
    /// `Connection` missing or without the `upgrade` token; zero or several
    /// `Sec-WebSocket-Accept`, or a value other than the one for our key
    /// ([`HandshakeError::AcceptMismatch`]); a `Sec-WebSocket-Protocol` that is not exactly one
    /// token, or one we did not offer ([`HandshakeError::UnofferedSubprotocol`]); malformed
    /// `Sec-WebSocket-Extensions`, or an extension we did not offer
    /// ([`HandshakeError::UnofferedExtension`]).
    pub fn parse_response(
        &self,
        buf: &[u8],
    ) -> Result<Parsed<(http::Response<()>, Negotiated)>, HandshakeError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let head_len = match parsed.parse(head::limited(buf, self.max_head_size)) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return head::partial(buf, self.max_head_size),
            Err(e) => return Err(head::parse_error(e)),
        };
        // `httparse` fills the code of a complete head and checks it is three digits.
        let code = parsed.code.unwrap_or_default();
        let status = http::StatusCode::from_u16(code)
            .map_err(|_| HandshakeError::MalformedHttp("invalid status code"))?;
        let mut response = http::Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = head::version(parsed.version);
        *response.headers_mut() = head::header_map(parsed.headers)?;

        let negotiated = self.check(&response)?;
        Ok(Parsed::Complete((response, negotiated), head_len))
    }

    /// The checks of RFC 6455 §4.1 ("the client MUST") on a complete response.
    fn check(&self, response: &http::Response<()>) -> Result<Negotiated, HandshakeError> {
        // Item 1: anything but 101 is handled per HTTP, i.e. not a WebSocket connection.
        if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            return Err(HandshakeError::UnexpectedStatus(response.status().as_u16()));
        }
        let headers = response.headers();
        // Item 2: |Upgrade| present and its value "websocket"; any other value fails.
        if !headers.contains_key(header::UPGRADE) {
            return Err(HandshakeError::MissingHeader("Upgrade"));
        }
        let mut upgrade = header_tokens(headers, "upgrade").peekable();
        if upgrade.peek().is_none() || !upgrade.all(|t| t.eq_ignore_ascii_case(b"websocket")) {
            return Err(HandshakeError::InvalidHeader("Upgrade", "not websocket"));
        }
        // Item 3: |Connection| with the token "Upgrade".
        if !headers.contains_key(header::CONNECTION) {
            return Err(HandshakeError::MissingHeader("Connection"));
        }
        if !header_tokens(headers, "connection").any(|t| t.eq_ignore_ascii_case(b"upgrade")) {
            return Err(HandshakeError::InvalidHeader(
                "Connection",
                "no upgrade token",
            ));
        }
        // Item 4: |Sec-WebSocket-Accept|, exactly once, derived from our key.
        let mut accepts = headers.get_all(header::SEC_WEBSOCKET_ACCEPT).iter();
        let accept = accepts
            .next()
            .ok_or(HandshakeError::MissingHeader("Sec-WebSocket-Accept"))?;
        if accepts.next().is_some() {
            return Err(HandshakeError::DuplicateHeader("Sec-WebSocket-Accept"));
        }
        if accept.as_bytes().trim_ascii() != self.expected_accept.as_bytes() {
            return Err(HandshakeError::AcceptMismatch);
        }
        self.offered.check_choices(headers)
    }
}

impl Offered {
    /// The server's choices (RFC 6455 §4.1 items 5 and 6), the same on HTTP/1.1 and HTTP/2.
    fn check_choices(&self, headers: &HeaderMap) -> Result<Negotiated, HandshakeError> {
        // Item 6 (§4.2.2 item 5: the server selects one subprotocol, or none).
        let protocol = self.selected_protocol(headers)?;
        // Item 5: every extension in use must have been offered.
        let extensions = parse_extensions(headers)
            .map_err(|why| HandshakeError::InvalidHeader("Sec-WebSocket-Extensions", why))?;
        if let Some(e) = extensions.iter().find(|e| {
            !self
                .extensions
                .iter()
                .any(|o| o.name.eq_ignore_ascii_case(&e.name))
        }) {
            return Err(HandshakeError::UnofferedExtension(e.name.clone()));
        }
        // RFC 7692 §5: the client MUST fail the connection on an invalid permessage-deflate
        // answer, or one that answers none of its offers.
        #[cfg(feature = "deflate")]
        let permessage_deflate =
            crate::extensions::permessage_deflate::check_response(&self.extensions, &extensions)?;
        Ok(Negotiated {
            protocol,
            extensions,
            #[cfg(feature = "deflate")]
            permessage_deflate,
        })
    }

    /// The subprotocol the server selected: at most one line holding one token we offered.
    fn selected_protocol(&self, headers: &HeaderMap) -> Result<Option<String>, HandshakeError> {
        let mut lines = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
        let Some(value) = lines.next() else {
            return Ok(None);
        };
        if lines.next().is_some() {
            return Err(HandshakeError::DuplicateHeader("Sec-WebSocket-Protocol"));
        }
        let value = value.as_bytes().trim_ascii();
        if !is_token(value) {
            return Err(HandshakeError::InvalidHeader(
                "Sec-WebSocket-Protocol",
                "not a single token",
            ));
        }
        // A token is ASCII: the conversion is exact.
        let value = String::from_utf8_lossy(value).into_owned();
        if !self.protocols.contains(&value) {
            return Err(HandshakeError::UnofferedSubprotocol(value));
        }
        Ok(Some(value))
    }
}

/// A client's opening handshake over HTTP/2 (RFC 8441 §5): the extended CONNECT request to send
/// on a new stream, and the checks of the server's answer.
///
/// The HTTP/2 layer sends [`request`](Self::request) with the `:protocol` pseudo-header set to
/// `websocket` (it is not a header, so it is not in the request: `h2::ext::Protocol` carries it),
/// and hands the response head to [`check_response`](Self::check_response). The stream is then
/// the WebSocket's transport.
///
/// ```
/// use gangway_proto::handshake::client::{ClientOptions, ConnectHandshake};
///
/// let uri: http::Uri = "wss://example.com/chat".parse().unwrap();
/// let hs = ConnectHandshake::new(&uri, &ClientOptions::default()).unwrap();
/// assert_eq!(hs.request().method(), http::Method::CONNECT);
/// assert_eq!(hs.request().uri(), "https://example.com/chat");
/// let ok = http::Response::builder().status(200).body(()).unwrap();
/// assert_eq!(hs.check_response(&ok).unwrap().protocol, None);
/// ```
#[derive(Clone, Debug)]
pub struct ConnectHandshake {
    request: http::Request<()>,
    offered: Offered,
}

impl ConnectHandshake {
    /// Build the request for `uri`: `CONNECT` with `:scheme` `https` for `wss://` and `http` for
    /// `ws://` (RFC 8441 §5), `:authority` the URL's host (and port when it is not the
    /// default), `:path` its path and query, then `sec-websocket-version: 13`, `origin`,
    /// `sec-websocket-protocol` and `sec-websocket-extensions` as the options ask, then the extra
    /// headers in order. An extra `Host` header sets `:authority` instead (HTTP/2 has no `Host`
    /// of its own, RFC 9113 §8.3.1); no `Sec-WebSocket-Key` is sent (§5).
    ///
    /// # Errors
    ///
    /// As [`ClientHandshake::new`], and [`ApiMisuse::InvalidHeader`] for a `Host` that is not
    /// an authority.
    pub fn new(uri: &http::Uri, options: &ClientOptions) -> Result<Self, ApiMisuse> {
        let Checked {
            target,
            host,
            origin,
            extra,
            offered,
        } = Checked::new(uri, options)?;
        let scheme = if target.is_secure() { "https" } else { "http" };
        let target_uri = http::Uri::builder()
            .scheme(scheme)
            .authority(host.as_str())
            .path_and_query(target.request_target())
            .build()
            .map_err(|_| ApiMisuse::invalid_header("Host", "not an authority for :authority"))?;
        let mut request = http::Request::new(());
        *request.method_mut() = http::Method::CONNECT;
        *request.uri_mut() = target_uri;
        *request.version_mut() = http::Version::HTTP_2;
        let headers = request.headers_mut();
        // The values were checked by `Checked::new`; HTTP/2 also wants lowercase names, which
        // `HeaderName` makes.
        let mut field = |name: &str, value: &str| -> Result<(), ApiMisuse> {
            let header = header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ApiMisuse::invalid_header(name, "not a header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| ApiMisuse::invalid_header(name, "not a header value"))?;
            headers.append(header, value);
            Ok(())
        };
        field("sec-websocket-version", "13")?;
        if let Some(o) = &origin {
            field("origin", o)?;
        }
        if !offered.protocols.is_empty() {
            field("sec-websocket-protocol", &offered.protocols.join(", "))?;
        }
        if !options.extensions.is_empty() {
            field("sec-websocket-extensions", &options.extensions.join(", "))?;
        }
        for (name, value) in extra {
            field(name, value)?;
        }
        Ok(ConnectHandshake { request, offered })
    }

    /// The request to send, without its `:protocol` (see the type's docs).
    pub fn request(&self) -> &http::Request<()> {
        &self.request
    }

    /// Check the server's answer to the request (RFC 8441 §5, RFC 6455 §4.1 where it applies).
    ///
    /// # Errors
    ///
    /// [`HandshakeError::UnexpectedStatus`] for a status that is not 2xx (RFC 9113 §8.5: any 2xx
    /// opens the tunnel; the stream is then no WebSocket); then as
    /// [`ClientHandshake::parse_response`] for the subprotocol and the extensions. There is no
    /// `Upgrade`, `Connection` or `Sec-WebSocket-Accept` to check on HTTP/2.
    pub fn check_response(
        &self,
        response: &http::Response<()>,
    ) -> Result<Negotiated, HandshakeError> {
        if !response.status().is_success() {
            return Err(HandshakeError::UnexpectedStatus(response.status().as_u16()));
        }
        self.offered.check_choices(response.headers())
    }
}

/// Whether `value` can be sent as a header value: visible characters, spaces, tabs and
/// non-ASCII bytes, and no control characters (RFC 7230 §3.2: CR, LF or NUL would end or
/// corrupt the head).
fn is_field_value(value: &str) -> bool {
    HeaderValue::from_str(value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::server;
    use crate::random::SeededRandom;

    #[test]
    fn extended_connect_request_of_rfc_8441() {
        let mut options = options(&["chat", "superchat"], &["permessage-deflate"]);
        options.origin = Some("http://www.example.com".into());
        options.headers = vec![("X-Token".into(), "abc".into())];
        let hs = ConnectHandshake::new(
            &"wss://server.example.com/chat?x=1".parse().unwrap(),
            &options,
        )
        .unwrap();
        let request = hs.request();
        assert_eq!(request.method(), http::Method::CONNECT);
        assert_eq!(request.version(), http::Version::HTTP_2);
        assert_eq!(request.uri(), "https://server.example.com/chat?x=1");
        let headers: Vec<_> = request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            headers,
            [
                ("sec-websocket-version", "13"),
                ("origin", "http://www.example.com"),
                ("sec-websocket-protocol", "chat, superchat"),
                ("sec-websocket-extensions", "permessage-deflate"),
                ("x-token", "abc"),
            ]
        );
        // ws:// is http, and a port other than the default stays in :authority.
        let plain =
            ConnectHandshake::new(&"ws://h:8080".parse().unwrap(), &ClientOptions::default())
                .unwrap();
        assert_eq!(plain.request().uri(), "http://h:8080/");
        // A Host header sets :authority.
        let with_host = ClientOptions {
            headers: vec![("Host".into(), "other.example".into())],
            ..ClientOptions::default()
        };
        let hs = ConnectHandshake::new(&"ws://h/".parse().unwrap(), &with_host).unwrap();
        assert_eq!(hs.request().uri(), "http://other.example/");
        assert!(hs.request().headers().get("host").is_none());
    }

    #[test]
    fn extended_connect_response_checks() {
        let hs = ConnectHandshake::new(
            &"wss://h/".parse().unwrap(),
            &options(&["chat"], &["permessage-deflate"]),
        )
        .unwrap();
        let response = |status: u16, headers: &[(&str, &str)]| {
            let mut b = http::Response::builder().status(status);
            for (n, v) in headers {
                b = b.header(*n, *v);
            }
            b.body(()).unwrap()
        };
        let ok = hs
            .check_response(&response(200, &[("sec-websocket-protocol", "chat")]))
            .unwrap();
        assert_eq!(ok.protocol.as_deref(), Some("chat"));
        // Any 2xx opens the tunnel (RFC 9113 §8.5); 101 and 4xx do not.
        assert!(hs.check_response(&response(204, &[])).is_ok());
        assert_eq!(
            hs.check_response(&response(101, &[])).unwrap_err(),
            HandshakeError::UnexpectedStatus(101)
        );
        assert_eq!(
            hs.check_response(&response(426, &[])).unwrap_err(),
            HandshakeError::UnexpectedStatus(426)
        );
        assert_eq!(
            hs.check_response(&response(200, &[("sec-websocket-protocol", "other")]))
                .unwrap_err(),
            HandshakeError::UnofferedSubprotocol("other".into())
        );
        assert_eq!(
            hs.check_response(&response(200, &[("sec-websocket-extensions", "x-unknown")]))
                .unwrap_err(),
            HandshakeError::UnofferedExtension("x-unknown".into())
        );
    }

    /// Hands out the bytes of RFC 6455 §1.3's nonce, "the sample nonce".
    struct SampleNonce;

    impl RandomSource for SampleNonce {
        fn fill(&mut self, dest: &mut [u8]) {
            dest.copy_from_slice(&b"the sample nonce"[..dest.len()]);
        }
    }

    /// The opening handshake response of RFC 6455 §1.3.
    const RFC_RESPONSE: &str = "HTTP/1.1 101 Switching Protocols\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
        Sec-WebSocket-Protocol: chat\r\n\
        \r\n";

    fn options(protocols: &[&str], extensions: &[&str]) -> ClientOptions {
        ClientOptions {
            protocols: protocols.iter().map(|p| p.to_string()).collect(),
            extensions: extensions.iter().map(|e| e.to_string()).collect(),
            ..ClientOptions::default()
        }
    }

    fn handshake(uri: &str, options: &ClientOptions) -> Result<ClientHandshake, ApiMisuse> {
        ClientHandshake::new(&uri.parse().unwrap(), options, &mut SampleNonce)
    }

    /// The RFC example handshake, offering `chat, superchat`.
    fn rfc_handshake() -> ClientHandshake {
        let mut options = options(&["chat", "superchat"], &[]);
        options.origin = Some("http://example.com".into());
        handshake("ws://server.example.com/chat", &options).unwrap()
    }

    /// A 101 response to the RFC example, with `extra` header lines (each ending in CRLF).
    fn response_with(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n"
        )
    }

    fn outcome(hs: &ClientHandshake, response: &str) -> Result<Negotiated, HandshakeError> {
        match hs.parse_response(response.as_bytes())? {
            Parsed::Complete((_, negotiated), n) => {
                assert_eq!(n, response.len());
                Ok(negotiated)
            }
            Parsed::Partial => panic!("incomplete response {response:?}"),
        }
    }

    fn host_line(uri: &str) -> String {
        let hs = handshake(uri, &ClientOptions::default()).unwrap();
        let request = String::from_utf8(hs.request().to_vec()).unwrap();
        request
            .lines()
            .find_map(|l| l.strip_prefix("Host: "))
            .unwrap()
            .to_owned()
    }

    fn request_line(uri: &str) -> String {
        let hs = handshake(uri, &ClientOptions::default()).unwrap();
        let request = String::from_utf8(hs.request().to_vec()).unwrap();
        request.lines().next().unwrap().to_owned()
    }

    #[test]
    fn rfc_6455_example_request_is_built() {
        let hs = rfc_handshake();
        assert_eq!(hs.key(), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(
            std::str::from_utf8(hs.request()).unwrap(),
            "GET /chat HTTP/1.1\r\n\
             Host: server.example.com\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Origin: http://example.com\r\n\
             Sec-WebSocket-Protocol: chat, superchat\r\n\
             \r\n"
        );
    }

    #[test]
    fn rfc_6455_example_response_is_accepted() {
        let negotiated = outcome(&rfc_handshake(), RFC_RESPONSE).unwrap();
        assert_eq!(negotiated.protocol.as_deref(), Some("chat"));
        assert!(negotiated.extensions.is_empty());
    }

    #[test]
    fn request_passes_the_server_checks_and_the_answer_passes_ours() {
        let mut opts = options(
            &["chat", "superchat"],
            &["permessage-deflate; client_max_window_bits"],
        );
        opts.headers
            .push(("Authorization".into(), "Bearer t0k3n".into()));
        let hs = ClientHandshake::new(
            &"ws://127.0.0.1:9001/echo?x=1".parse().unwrap(),
            &opts,
            &mut SeededRandom::new(1),
        )
        .unwrap();
        let Ok(Parsed::Complete(req, n)) = server::parse_request(hs.request(), 16 << 10) else {
            panic!("request does not parse");
        };
        assert_eq!(n, hs.request().len());
        assert_eq!(req.headers()["authorization"], "Bearer t0k3n");
        assert_eq!(req.uri(), "/echo?x=1");
        let offer = server::check_request(&req).unwrap();
        assert_eq!(offer.key.as_deref(), Some(hs.key()));
        assert_eq!(offer.protocols, ["chat", "superchat"]);
        let supported = ["superchat".to_string()];
        let protocol = crate::handshake::select_protocol(&supported, &offer.protocols);
        // RFC 7692 §7.1.2.2: the answer to a bare client_max_window_bits carries a value.
        let accepted = [ExtensionOffer {
            name: "permessage-deflate".into(),
            params: vec![("client_max_window_bits".into(), Some("10".into()))],
        }];
        let response = server::accept(&offer, protocol, &accepted);
        let Ok(Parsed::Complete((resp, negotiated), n)) = hs.parse_response(&response) else {
            panic!("response refused");
        };
        assert_eq!(n, response.len());
        assert_eq!(resp.status(), 101);
        assert_eq!(negotiated.protocol.as_deref(), Some("superchat"));
        assert_eq!(negotiated.extensions, accepted);
    }

    #[cfg(feature = "deflate")]
    #[test]
    fn invalid_permessage_deflate_answer_fails_the_handshake() {
        let hs = handshake(
            "ws://server.example.com/chat",
            &options(&[], &["permessage-deflate"]),
        )
        .unwrap();
        let response = response_with(
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\r\n",
        );
        assert_eq!(
            outcome(&hs, &response),
            Err(HandshakeError::InvalidHeader(
                "Sec-WebSocket-Extensions",
                "permessage-deflate response has client_max_window_bits, which was not offered"
            ))
        );
        let valid = response_with(
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9\r\n",
        );
        assert_eq!(
            outcome(&hs, &valid).unwrap().extensions[0].name,
            "permessage-deflate"
        );
    }

    #[test]
    fn each_handshake_has_a_fresh_key() {
        let uri = "ws://h/".parse().unwrap();
        let mut rng = SeededRandom::new(42);
        let a = ClientHandshake::new(&uri, &ClientOptions::default(), &mut rng).unwrap();
        let b = ClientHandshake::new(&uri, &ClientOptions::default(), &mut rng).unwrap();
        assert_ne!(a.key(), b.key());
        assert!(crate::handshake::is_valid_key(a.key().as_bytes()));
    }

    #[test]
    fn host_carries_the_port_only_when_not_the_default() {
        assert_eq!(host_line("ws://example.com/"), "example.com");
        assert_eq!(host_line("ws://example.com:80/"), "example.com");
        assert_eq!(host_line("ws://example.com:/"), "example.com");
        assert_eq!(host_line("ws://example.com:8080/"), "example.com:8080");
        assert_eq!(host_line("wss://example.com:443/"), "example.com");
        assert_eq!(host_line("wss://example.com:80/"), "example.com:80");
        assert_eq!(host_line("WSS://example.com"), "example.com");
        assert_eq!(host_line("ws://127.0.0.1:9001"), "127.0.0.1:9001");
    }

    #[test]
    fn ipv6_host_keeps_its_brackets() {
        assert_eq!(host_line("ws://[::1]:9001/"), "[::1]:9001");
        assert_eq!(host_line("ws://[::1]/"), "[::1]");
        assert_eq!(host_line("wss://[2001:db8::1]:443/x"), "[2001:db8::1]");
    }

    #[test]
    fn request_target_is_path_and_query() {
        assert_eq!(request_line("ws://h"), "GET / HTTP/1.1");
        assert_eq!(request_line("ws://h?x=1"), "GET /?x=1 HTTP/1.1");
        assert_eq!(request_line("ws://h/a/b?c=d&e"), "GET /a/b?c=d&e HTTP/1.1");
        // http::Uri drops the fragment; it never reaches the wire.
        assert_eq!(request_line("ws://h/a#frag"), "GET /a HTTP/1.1");
    }

    #[test]
    fn urls_that_are_not_websocket_urls_are_refused() {
        let cases = [
            (
                "http://h/",
                ApiMisuse::InvalidUrl("scheme is not ws or wss"),
            ),
            ("wsx://h/", ApiMisuse::InvalidUrl("scheme is not ws or wss")),
            (
                "/relative",
                ApiMisuse::InvalidUrl("missing ws:// or wss://"),
            ),
            ("ws://:80/", ApiMisuse::InvalidUrl("missing host")),
            (
                "ws://user:pw@h/",
                ApiMisuse::InvalidUrl("user info is not allowed"),
            ),
            ("ws://h:99999/", ApiMisuse::InvalidPort("99999".into())),
        ];
        for (uri, err) in cases {
            assert_eq!(
                handshake(uri, &ClientOptions::default()).unwrap_err(),
                err,
                "{uri}"
            );
        }
        assert_eq!(
            ApiMisuse::InvalidUrl("missing host").to_string(),
            "invalid websocket url: missing host"
        );
    }

    #[test]
    fn extra_headers_are_sent_after_the_handshake_headers() {
        let mut opts = options(&[], &["permessage-deflate"]);
        opts.headers = vec![
            ("X-Trace".into(), "1".into()),
            ("Cookie".into(), "a=b; c=d".into()),
        ];
        let hs = handshake("ws://h/", &opts).unwrap();
        let request = std::str::from_utf8(hs.request()).unwrap();
        assert!(request.ends_with(
            "Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: permessage-deflate\r\n\
             X-Trace: 1\r\n\
             Cookie: a=b; c=d\r\n\r\n"
        ));
    }

    #[test]
    fn extra_host_and_origin_replace_the_defaults() {
        let mut opts = ClientOptions {
            origin: Some("http://a.example".into()),
            ..ClientOptions::default()
        };
        opts.headers = vec![
            ("host".into(), "virtual.example".into()),
            ("ORIGIN".into(), "http://b.example".into()),
        ];
        let hs = handshake("ws://127.0.0.1:9001/", &opts).unwrap();
        let request = std::str::from_utf8(hs.request()).unwrap();
        assert!(request.contains("\r\nHost: virtual.example\r\n"));
        assert!(request.contains("\r\nOrigin: http://b.example\r\n"));
        assert_eq!(request.matches("Host:").count(), 1);
        assert_eq!(request.matches("Origin:").count(), 1);
    }

    #[test]
    fn headers_that_cannot_be_sent_are_refused() {
        let bad: &[(&str, &str)] = &[
            ("Bad Name", "x"),
            ("", "x"),
            ("X-Colon:", "x"),
            ("X-Inject", "a\r\nEvil: 1"),
            ("X-Lf", "a\nb"),
            ("X-Nul", "a\0b"),
            ("X-Ctl", "a\x01b"),
            ("Upgrade", "h2c"),
            ("connection", "close"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "8"),
            ("Sec-WebSocket-Accept", "x"),
            ("Sec-WebSocket-Protocol", "chat"),
            ("Sec-WebSocket-Extensions", "permessage-deflate"),
        ];
        for (name, value) in bad {
            let mut opts = ClientOptions::default();
            opts.headers.push(((*name).into(), (*value).into()));
            let refused = handshake("ws://h/", &opts).unwrap_err();
            assert!(
                matches!(&refused, ApiMisuse::InvalidHeader { name: n, .. } if &**n == *name),
                "{name:?}: {value:?}: {refused:?}"
            );
        }
        for twice in ["Host", "Origin"] {
            let mut opts = ClientOptions::default();
            opts.headers.push((twice.into(), "a".into()));
            opts.headers.push((twice.into(), "b".into()));
            assert_eq!(
                handshake("ws://h/", &opts).unwrap_err(),
                ApiMisuse::invalid_header(twice, "given twice")
            );
        }
        let opts = ClientOptions {
            origin: Some("http://a\r\nX: y".into()),
            ..ClientOptions::default()
        };
        assert!(matches!(
            handshake("ws://h/", &opts).unwrap_err(),
            ApiMisuse::InvalidHeader { name, .. } if &*name == "Origin"
        ));
    }

    #[test]
    fn a_refused_header_is_named_with_the_reason() {
        let mut opts = ClientOptions::default();
        opts.headers.push(("X-Ok".into(), "1".into()));
        opts.headers.push(("Upgrade".into(), "h2c".into()));
        assert_eq!(
            handshake("ws://h/", &opts).unwrap_err().to_string(),
            "cannot send header \"Upgrade\": the handshake writes this header itself"
        );
        let mut opts = ClientOptions::default();
        opts.headers.push(("X-Bell".into(), "a\x07b".into()));
        assert_eq!(
            handshake("ws://h/", &opts).unwrap_err().to_string(),
            "cannot send header \"X-Bell\": the value has a control character (CR, LF, NUL, ...)"
        );
    }

    #[test]
    fn offers_that_cannot_be_sent_are_refused() {
        for protocols in [&["a b"][..], &["chat", "chat"], &[""], &["chat,superchat"]] {
            let refused = handshake("ws://h/", &options(protocols, &[])).unwrap_err();
            assert!(
                matches!(&refused, ApiMisuse::InvalidHeader { name, .. } if &**name == "Sec-WebSocket-Protocol"),
                "{protocols:?}: {refused:?}"
            );
        }
        for extensions in [&["foo;"][..], &[""], &["a\r\nb"], &["x; y=\"a b\""]] {
            let refused = handshake("ws://h/", &options(&[], extensions)).unwrap_err();
            assert!(
                matches!(&refused, ApiMisuse::InvalidHeader { name, .. } if &**name == "Sec-WebSocket-Extensions"),
                "{extensions:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn response_arriving_one_byte_at_a_time() {
        let hs = rfc_handshake();
        let bytes = RFC_RESPONSE.as_bytes();
        for end in 0..bytes.len() {
            assert!(
                matches!(hs.parse_response(&bytes[..end]), Ok(Parsed::Partial)),
                "after {end} bytes"
            );
        }
        assert!(matches!(hs.parse_response(bytes), Ok(Parsed::Complete(_, n)) if n == bytes.len()));
    }

    #[test]
    fn frames_pipelined_after_the_response_are_left_to_the_caller() {
        let hs = rfc_handshake();
        let mut bytes = RFC_RESPONSE.as_bytes().to_vec();
        let frame = [0x81, 0x02, b'H', b'i'];
        bytes.extend_from_slice(&frame);
        match hs.parse_response(&bytes) {
            Ok(Parsed::Complete(_, n)) => assert_eq!(&bytes[n..], frame),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_other_than_101_is_named() {
        let hs = rfc_handshake();
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        let err = hs.parse_response(ok.as_bytes()).unwrap_err();
        assert_eq!(err, HandshakeError::UnexpectedStatus(200));
        assert_eq!(err.to_string(), "unexpected status 200");
        let refused =
            String::from_utf8(server::reject(&HandshakeError::UnsupportedVersion)).unwrap();
        assert_eq!(
            hs.parse_response(refused.as_bytes()).unwrap_err(),
            HandshakeError::UnexpectedStatus(426)
        );
    }

    #[test]
    fn upgrade_must_be_websocket() {
        let hs = rfc_handshake();
        let missing = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(
            outcome(&hs, missing),
            Err(HandshakeError::MissingHeader("Upgrade"))
        );
        let other = missing.replace("Connection", "Upgrade: h2c\r\nConnection");
        assert_eq!(
            outcome(&hs, &other),
            Err(HandshakeError::InvalidHeader("Upgrade", "not websocket"))
        );
        let extra = missing.replace("Connection", "Upgrade: websocket, h2c\r\nConnection");
        assert!(outcome(&hs, &extra).is_err());
        let empty = missing.replace("Connection", "Upgrade: \r\nConnection");
        assert!(outcome(&hs, &empty).is_err());
        let cased = missing.replace("Connection", "Upgrade: WebSocket\r\nConnection");
        assert!(outcome(&hs, &cased).is_ok());
    }

    #[test]
    fn connection_must_have_the_upgrade_token() {
        let hs = rfc_handshake();
        let missing = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                       Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(
            outcome(&hs, missing),
            Err(HandshakeError::MissingHeader("Connection"))
        );
        let keep_alive = missing.replace(
            "Upgrade: websocket",
            "Upgrade: websocket\r\nConnection: keep-alive",
        );
        assert_eq!(
            outcome(&hs, &keep_alive),
            Err(HandshakeError::InvalidHeader(
                "Connection",
                "no upgrade token"
            ))
        );
        let listed = missing.replace(
            "Upgrade: websocket",
            "Upgrade: websocket\r\nConnection: keep-alive\r\nconnection: close, UPGRADE",
        );
        assert!(outcome(&hs, &listed).is_ok());
    }

    #[test]
    fn accept_must_appear_once_and_match() {
        let hs = rfc_handshake();
        let missing = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                       Connection: Upgrade\r\n\r\n";
        assert_eq!(
            outcome(&hs, missing),
            Err(HandshakeError::MissingHeader("Sec-WebSocket-Accept"))
        );
        let dup = response_with("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n");
        assert_eq!(
            outcome(&hs, &dup),
            Err(HandshakeError::DuplicateHeader("Sec-WebSocket-Accept"))
        );
        let wrong = response_with("").replace(
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            "Dhg2s/gXkbuTiYk690dns7LmEhY=",
        );
        let err = outcome(&hs, &wrong).unwrap_err();
        assert_eq!(err, HandshakeError::AcceptMismatch);
        assert_eq!(err.to_string(), "Sec-WebSocket-Accept mismatch");
        // The key itself echoed back is the classic mistake.
        let echoed =
            response_with("").replace("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(outcome(&hs, &echoed), Err(HandshakeError::AcceptMismatch));
    }

    #[test]
    fn subprotocol_must_be_one_we_offered() {
        let hs = rfc_handshake();
        assert_eq!(outcome(&hs, &response_with("")).unwrap().protocol, None);
        assert_eq!(
            outcome(&hs, &response_with("Sec-WebSocket-Protocol: superchat\r\n"))
                .unwrap()
                .protocol
                .as_deref(),
            Some("superchat")
        );
        let err = outcome(&hs, &response_with("Sec-WebSocket-Protocol: mqtt\r\n")).unwrap_err();
        assert_eq!(err, HandshakeError::UnofferedSubprotocol("mqtt".into()));
        assert_eq!(
            err.to_string(),
            "server selected subprotocol \"mqtt\" that was not offered"
        );
        // Subprotocol names are compared exactly.
        assert_eq!(
            outcome(&hs, &response_with("Sec-WebSocket-Protocol: Chat\r\n")),
            Err(HandshakeError::UnofferedSubprotocol("Chat".into()))
        );
        assert_eq!(
            outcome(
                &hs,
                &response_with("Sec-WebSocket-Protocol: chat, superchat\r\n")
            ),
            Err(HandshakeError::InvalidHeader(
                "Sec-WebSocket-Protocol",
                "not a single token"
            ))
        );
        assert_eq!(
            outcome(
                &hs,
                &response_with("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n")
            ),
            Err(HandshakeError::DuplicateHeader("Sec-WebSocket-Protocol"))
        );
    }

    #[test]
    fn subprotocol_when_none_was_offered_is_refused() {
        let hs = handshake("ws://server.example.com/chat", &ClientOptions::default()).unwrap();
        assert_eq!(
            outcome(&hs, RFC_RESPONSE),
            Err(HandshakeError::UnofferedSubprotocol("chat".into()))
        );
    }

    #[test]
    fn extensions_must_be_ones_we_offered() {
        let opts = options(
            &[],
            &["permessage-deflate; client_max_window_bits", "x-a, x-b"],
        );
        let hs = handshake("ws://server.example.com/chat", &opts).unwrap();
        let accepted = outcome(
            &hs,
            &response_with(
                "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=\"10\"\r\n\
                 Sec-WebSocket-Extensions: x-b\r\n",
            ),
        )
        .unwrap();
        assert_eq!(accepted.extensions.len(), 2);
        assert_eq!(accepted.extensions[0].name, "permessage-deflate");
        assert_eq!(
            accepted.extensions[0].params,
            [("server_max_window_bits".into(), Some("10".into()))]
        );
        assert_eq!(accepted.extensions[1].name, "x-b");
        assert_eq!(
            outcome(
                &hs,
                &response_with("Sec-WebSocket-Extensions: x-b, x-c\r\n")
            ),
            Err(HandshakeError::UnofferedExtension("x-c".into()))
        );
        assert_eq!(
            outcome(&hs, &response_with("Sec-WebSocket-Extensions: x-b;\r\n")),
            Err(HandshakeError::InvalidHeader(
                "Sec-WebSocket-Extensions",
                "expected a parameter name"
            ))
        );
        let none_offered = rfc_handshake();
        let err = outcome(
            &none_offered,
            &response_with("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
        )
        .unwrap_err();
        assert_eq!(
            err,
            HandshakeError::UnofferedExtension("permessage-deflate".into())
        );
        assert_eq!(
            err.to_string(),
            "server accepted extension \"permessage-deflate\" that was not offered"
        );
    }

    #[test]
    fn response_head_over_the_limit_is_refused() {
        let mut opts = options(&["chat"], &[]);
        opts.max_head_size = RFC_RESPONSE.len();
        let hs = handshake("ws://server.example.com/chat", &opts).unwrap();
        assert!(outcome(&hs, RFC_RESPONSE).is_ok());
        opts.max_head_size = RFC_RESPONSE.len() - 1;
        let hs = handshake("ws://server.example.com/chat", &opts).unwrap();
        assert_eq!(
            hs.parse_response(RFC_RESPONSE.as_bytes()).unwrap_err(),
            HandshakeError::HeadTooLarge
        );
        assert!(matches!(
            hs.parse_response(&RFC_RESPONSE.as_bytes()[..10]),
            Ok(Parsed::Partial)
        ));
    }

    #[test]
    fn malformed_responses_are_refused() {
        let hs = rfc_handshake();
        for bytes in [
            &b"HTTP/1.1 1O1 Switching\r\n\r\n"[..],
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade websocket\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nX: \x00\r\n\r\n",
        ] {
            assert!(
                matches!(
                    hs.parse_response(bytes),
                    Err(HandshakeError::MalformedHttp(_))
                ),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn garbage_responses_never_panic() {
        let hs = rfc_handshake();
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = response_with(
            "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: x; a=\"1\"\r\n",
        )
        .into_bytes();
        let (mut complete, mut refused) = (0, 0);
        for round in 0..6000 {
            let input: Vec<u8> = if round % 2 == 0 {
                let len = (next() % 300) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut input = valid.clone();
                for _ in 0..(next() % 3 + 1) {
                    let at = (next() % input.len() as u64) as usize;
                    if next() % 4 == 0 {
                        input.truncate(at.max(1));
                    } else {
                        input[at] = next() as u8;
                    }
                }
                input
            };
            match hs.parse_response(&input) {
                Ok(Parsed::Partial) => assert!(input.len() <= hs.max_head_size),
                Ok(Parsed::Complete((resp, negotiated), n)) => {
                    assert!(n <= input.len());
                    assert_eq!(resp.status(), 101);
                    assert!(negotiated
                        .protocol
                        .map_or(true, |p| p == "chat" || p == "superchat"));
                    complete += 1;
                }
                // Every refusal is one of the client-side errors, never a server-side one.
                Err(
                    HandshakeError::MalformedHttp(_)
                    | HandshakeError::HeadTooLarge
                    | HandshakeError::UnexpectedStatus(_)
                    | HandshakeError::MissingHeader(_)
                    | HandshakeError::DuplicateHeader(_)
                    | HandshakeError::InvalidHeader(..)
                    | HandshakeError::AcceptMismatch
                    | HandshakeError::UnofferedSubprotocol(_)
                    | HandshakeError::UnofferedExtension(_),
                ) => refused += 1,
                Err(other) => panic!("undocumented error {other:?} for {input:?}"),
            }
        }
        assert!(complete > 0 && refused > 0);
    }
}
