//! The server side of the opening handshake (RFC 6455 §4.2).
//!
//! ```
//! use gangway_proto::handshake::{select_protocol, server, Parsed};
//!
//! let request = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
//!     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!     Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";
//! let Parsed::Complete(req, head_len) = server::parse_request(request, 16 * 1024).unwrap() else {
//!     unreachable!("the whole head is there");
//! };
//! assert_eq!(head_len, request.len()); // later bytes would be WebSocket frames
//! let response = match server::check_request(&req) {
//!     Ok(offer) => {
//!         let supported = ["chat".to_string()];
//!         server::accept(&offer, select_protocol(&supported, &offer.protocols), &[])
//!     }
//!     Err(err) => server::reject(&err),
//! };
//! assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
//! ```

use std::io::Write as _;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use crate::error::HandshakeError;
use crate::handshake::head::{self, MAX_HEADERS};
use crate::handshake::key::{accept_key_into, ACCEPT_LEN};
use crate::handshake::negotiate::{extension_offers, is_token, list_elements, list_has};
use crate::handshake::{is_valid_key, ExtensionOffer, Parsed};

/// What a valid upgrade request offered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientOffer {
    /// `Sec-WebSocket-Key`, trimmed, as sent (already checked to be 16 bytes in base64); `None`
    /// for an HTTP/2 extended CONNECT ([`check_connect_request`]), which has no key (RFC 8441
    /// §5). It also decides the answer: `101` with `Sec-WebSocket-Accept` for a key, `200`
    /// without.
    pub key: Option<String>,
    /// Offered subprotocols in the client's order.
    pub protocols: Vec<String>,
    /// Offered extensions in the client's order.
    pub extensions: Vec<ExtensionOffer>,
    /// The `Origin` header, if any.
    pub origin: Option<String>,
}

/// Parse a request head received so far (HTTP/1.1, `httparse`).
///
/// Call it again with everything received so far whenever more bytes arrive; the head may come a
/// byte at a time. [`Parsed::Complete`] carries the request and the length of its head: the bytes
/// after it are not part of the head (a client may pipeline frames right behind it) and stay the
/// caller's, to be fed to the connection. Every header line is kept, in order, duplicates
/// included, for [`check_request`] to judge.
///
/// # Errors
///
/// [`HandshakeError::HeadTooLarge`] once more than `max_head_size` bytes hold no complete head
/// (or the head has more than 100 header lines),
/// [`HandshakeError::MalformedHttp`] for bytes that are not an HTTP request.
pub fn parse_request(
    buf: &[u8],
    max_head_size: usize,
) -> Result<Parsed<http::Request<()>>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(head::limited(buf, max_head_size)) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return head::partial(buf, max_head_size),
        Err(e) => return Err(head::parse_error(e)),
    };
    // `httparse` fills every field of a complete head; the fallbacks are never taken.
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| HandshakeError::MalformedHttp("invalid method"))?;
    // The request target and the header values are slices of one shared copy of the head: one
    // allocation per request instead of one per value.
    let shared = head::Shared::new(buf, head_len);
    let path = parsed.path.unwrap_or_default();
    let uri = http::Uri::from_maybe_shared(shared.slice(path.as_bytes()))
        .map_err(|_| HandshakeError::MalformedHttp("invalid request target"))?;
    let mut req = http::Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = head::version(parsed.version);
    *req.headers_mut() = shared.header_map(parsed.headers)?;
    Ok(Parsed::Complete(req, head_len))
}

/// A request head as [`RequestHead::parse`] read it: its method, target and version, whether it
/// asks for a WebSocket upgrade, and what [`check_request`] answers for it, worked out while the
/// header lines were parsed, without building an [`http::Request`] (a header map costs more
/// than the whole check). [`to_request`](Self::to_request) builds that request on demand.
///
/// ```
/// use gangway_proto::handshake::{server::RequestHead, Parsed};
///
/// let bytes = b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
///     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
///     Sec-WebSocket-Version: 13\r\n\r\n";
/// let Parsed::Complete(head, len) = RequestHead::parse(bytes, 16 * 1024).unwrap() else {
///     unreachable!("the whole head is there");
/// };
/// assert_eq!(len, bytes.len());
/// assert_eq!(head.uri().path(), "/chat");
/// assert!(head.is_upgrade());
/// let offer = head.checked().unwrap();
/// assert_eq!(offer.key.as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
/// assert_eq!(head.to_request().headers()["host"], "example.com");
/// ```
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// The head as received, for [`to_request`](Self::to_request).
    bytes: Box<[u8]>,
    method: Method,
    uri: http::Uri,
    version: Version,
    /// [`upgrade_refusal`]'s answer.
    no_upgrade: Option<HandshakeError>,
    /// [`check_request`]'s answer.
    checked: Result<ClientOffer, HandshakeError>,
}

impl RequestHead {
    /// Parse a request head received so far, as [`parse_request`] does: the same answers and
    /// the same errors, for the same bytes; then check it as [`check_request`] would.
    ///
    /// # Errors
    ///
    /// As [`parse_request`].
    pub fn parse(buf: &[u8], max_head_size: usize) -> Result<Parsed<RequestHead>, HandshakeError> {
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut []);
        let head_len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut parsed,
            head::limited(buf, max_head_size),
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return head::partial(buf, max_head_size),
            Err(e) => return Err(head::parse_error(e)),
        };
        // As `parse_request`: the method and the target must be what `http` accepts, so that
        // `to_request` can build the request from the same bytes. So must every header line,
        // which `httparse` already sees to: it allows the names and values `http` does (a test
        // holds the two crates to that).
        let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
            .map_err(|_| HandshakeError::MalformedHttp("invalid method"))?;
        let uri = match parsed.path.unwrap_or_default() {
            // The most common target without the heap copy `Uri::try_from` makes of every
            // target: `from_static` parses the same bytes the same way, in place.
            "/" => http::Uri::from_static("/"),
            target => http::Uri::try_from(target)
                .map_err(|_| HandshakeError::MalformedHttp("invalid request target"))?,
        };
        let lines = Indexed::new(parsed.headers);
        let version = head::version(parsed.version);
        let checked = check_upgrade(method == Method::GET, version, uri.path(), &lines);
        Ok(Parsed::Complete(
            RequestHead {
                bytes: buf[..head_len].into(),
                // A request that passes the checks asks for the upgrade (§4.2.1 item 3 is one
                // of them): the refusal is looked for only when they fail.
                no_upgrade: checked.as_ref().err().and_then(|_| no_upgrade(&lines)),
                checked,
                method,
                uri,
                version,
            },
            head_len,
        ))
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request target.
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }

    /// The HTTP version (1.0 or 1.1).
    pub fn version(&self) -> Version {
        self.version
    }

    /// Whether the request asks for a WebSocket upgrade at all, as [`is_upgrade_request`]
    /// answers.
    pub fn is_upgrade(&self) -> bool {
        self.no_upgrade.is_none()
    }

    /// What [`upgrade_refusal`] answers for this request.
    pub fn upgrade_refusal(&self) -> Option<&HandshakeError> {
        self.no_upgrade.as_ref()
    }

    /// What [`check_request`] answers for this request.
    ///
    /// # Errors
    ///
    /// As [`check_request`].
    pub fn checked(&self) -> Result<&ClientOffer, &HandshakeError> {
        self.checked.as_ref()
    }

    /// [`checked`](Self::checked), taken out of the head.
    ///
    /// # Errors
    ///
    /// As [`check_request`].
    pub fn into_checked(self) -> Result<ClientOffer, HandshakeError> {
        self.checked
    }

    /// The request as [`parse_request`] returns it for the same bytes: every header line, in
    /// order.
    pub fn to_request(&self) -> http::Request<()> {
        match parse_request(&self.bytes, self.bytes.len()) {
            Ok(Parsed::Complete(request, _)) => request,
            // Not reached: these bytes parsed as a whole head with the same checks. Should it
            // ever be, the request keeps what is known without its header lines.
            _ => {
                let mut request = http::Request::new(());
                *request.method_mut() = self.method.clone();
                *request.uri_mut() = self.uri.clone();
                *request.version_mut() = self.version;
                request
            }
        }
    }
}

/// Whether the request asks for a WebSocket upgrade at all (an `Upgrade` header naming
/// `websocket`). A server that also serves plain HTTP answers other requests itself; requests
/// that return `true` go to [`check_request`].
pub fn is_upgrade_request(req: &http::Request<()>) -> bool {
    no_upgrade(req.headers()).is_none()
}

/// Check everything RFC 6455 §4.2.1 requires of the request.
///
/// The checks run in the order of §4.2.1 and the first failure is returned. The `Origin` header
/// is reported in the [`ClientOffer`], not judged: whether to accept it is the caller's policy
/// (§10.2), answered with [`HandshakeError::OriginRefused`].
///
/// # Errors
///
/// The first failure: method not GET (405), HTTP before 1.1 or a request target that is neither
/// an absolute path nor an absolute URI, `Host` absent or repeated, `Upgrade` without `websocket`
/// or `Connection` without `upgrade` (token lists across all lines, case-insensitive),
/// `Sec-WebSocket-Key` absent, repeated or not 16 bytes in base64, `Sec-WebSocket-Version` absent
/// or repeated (400) or not 13 ([`HandshakeError::UnsupportedVersion`], 426), `Origin` repeated,
/// a `Sec-WebSocket-Protocol` element that is not a token, malformed `Sec-WebSocket-Extensions`
/// (all 400).
pub fn check_request(req: &http::Request<()>) -> Result<ClientOffer, HandshakeError> {
    check_upgrade(
        req.method() == Method::GET,
        req.version(),
        req.uri().path(),
        req.headers(),
    )
}

/// The checks of [`check_request`], on the parts of a request however it was parsed: whether
/// its method is GET, its version, its path, and its header lines.
fn check_upgrade(
    get: bool,
    version: Version,
    path: &str,
    headers: &(impl Lines + ?Sized),
) -> Result<ClientOffer, HandshakeError> {
    // §4.2.1 item 1: "An HTTP/1.1 or higher GET request, including a Request-URI".
    if !get {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if version < Version::HTTP_11 {
        return Err(HandshakeError::UnsupportedHttpVersion);
    }
    // The resource name is an absolute path, or comes inside an absolute URI (§3, §4.2.1 item 1).
    if !path.starts_with('/') {
        return Err(HandshakeError::MalformedHttp(
            "request target is not an absolute path or uri",
        ));
    }
    // Item 2: a |Host| header field. RFC 7230 §5.4: exactly one, with a valid value, else 400;
    // RFC 6455 §4.1 item 4: the value is the host, optionally with ":" and the port.
    let host = single(headers, Known::Host, "Host")?;
    if !is_host(host) {
        return Err(HandshakeError::InvalidHeader(
            "Host",
            "not a host with an optional port",
        ));
    }
    // Item 3: an |Upgrade| header field containing the value "websocket".
    required_token(headers, Known::Upgrade, "Upgrade", b"websocket")?;
    // Item 4: a |Connection| header field that includes the token "Upgrade".
    required_token(headers, Known::Connection, "Connection", b"upgrade")?;
    // Item 5: a |Sec-WebSocket-Key| that, base64-decoded, is 16 bytes long.
    let key = single(headers, Known::Key, "Sec-WebSocket-Key")?;
    if !is_valid_key(key) {
        return Err(HandshakeError::InvalidHeader(
            "Sec-WebSocket-Key",
            "not 16 bytes in base64",
        ));
    }
    // Items 6 and 7.
    let origin = version_and_origin(headers)?;
    // Items 8 and 9: subprotocols and extensions.
    let (protocols, extensions) = offered(headers)?;
    Ok(ClientOffer {
        // A valid key is base64, hence ASCII: the conversion is exact.
        key: Some(text(key.trim_ascii())),
        protocols,
        extensions,
        origin,
    })
}

/// What a server answers a request that asks for no WebSocket upgrade at all (no `Upgrade`
/// header naming `websocket`), whatever else is wrong with it: that it asked for none
/// (`None` for an upgrade request). A server that accepts only WebSockets reports this before
/// the failures of [`check_request`], which come in the order of RFC 6455 §4.2.1.
pub fn upgrade_refusal(req: &http::Request<()>) -> Option<HandshakeError> {
    no_upgrade(req.headers())
}

/// A header value as text: as it is when it is UTF-8 (a valid key, a token, nearly every
/// origin), with U+FFFD for what is not. What `String::from_utf8_lossy` gives, without its
/// slower walk for the common case.
fn text(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(value).into_owned(),
    }
}

/// [`upgrade_refusal`] on the header lines: RFC 6455 §4.2.1 item 3's check alone.
fn no_upgrade(headers: &(impl Lines + ?Sized)) -> Option<HandshakeError> {
    required_token(headers, Known::Upgrade, "Upgrade", b"websocket").err()
}

/// Check an HTTP/2 extended CONNECT request for a WebSocket (RFC 8441 §4, §5), as the HTTP/2
/// layer hands it over: `protocol` is its `:protocol` pseudo-header (`None` when absent), the
/// request's URI carries `:scheme`, `:authority` and `:path`.
///
/// What RFC 6455 §4.2.1 asks of an HTTP/1.1 upgrade is asked here where HTTP/2 keeps it: the
/// method (CONNECT instead of GET), `:protocol` = `websocket` instead of `Upgrade` and
/// `Connection`, `:authority` (or `Host`) for the host, `Sec-WebSocket-Version: 13`, and the same
/// optional `Origin`, `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions`. There is no
/// `Sec-WebSocket-Key`: one sent anyway is ignored (§5: the key and the accept value are not
/// used). The offer's `key` is `None`, so [`accept_response`] answers `200`.
///
/// # Errors
///
/// The first failure: a method other than CONNECT (405, `Allow: CONNECT`), `:protocol` absent or
/// not `websocket`, no `:path` (a request target that is not an absolute path), no
/// `:authority` and no `Host`, `Sec-WebSocket-Version` absent or repeated (400) or not 13
/// (426), `Origin` repeated, a malformed subprotocol or extension list (400).
pub fn check_connect_request(
    req: &http::Request<()>,
    protocol: Option<&str>,
) -> Result<ClientOffer, HandshakeError> {
    // RFC 8441 §4: the extended CONNECT is a CONNECT carrying `:protocol`.
    if req.method() != Method::CONNECT {
        return Err(HandshakeError::MethodNotAllowed);
    }
    // §5: `:protocol` is "websocket" (RFC 6455 §11.3's upgrade token; compared as HTTP tokens
    // are, without regard to case).
    match protocol {
        None => return Err(HandshakeError::MissingHeader(":protocol")),
        Some(p) if !p.eq_ignore_ascii_case("websocket") => {
            return Err(HandshakeError::InvalidHeader(":protocol", "not websocket"));
        }
        Some(_) => {}
    }
    // §4: an extended CONNECT names its resource with `:scheme` and `:path`, as other requests
    // do (RFC 9113 §8.3.1: `:path` is not empty, and starts with "/" for http and https).
    if !req.uri().path().starts_with('/') {
        return Err(HandshakeError::MalformedHttp(
            ":path is not an absolute path",
        ));
    }
    let headers = req.headers();
    // The host: `:authority` (RFC 9113 §8.3.1 says clients use it rather than `Host`), or a
    // `Host` header from a client that sends one instead.
    let host_ok = match req.uri().authority() {
        Some(authority) => is_host(authority.as_str().as_bytes()),
        None => is_host(single(headers, Known::Host, ":authority")?),
    };
    if !host_ok {
        return Err(HandshakeError::InvalidHeader(
            ":authority",
            "not a host with an optional port",
        ));
    }
    // RFC 6455 §4.2.1 items 6 and 7, kept by RFC 8441 §5.
    let origin = version_and_origin(headers)?;
    let (protocols, extensions) = offered(headers)?;
    Ok(ClientOffer {
        key: None,
        protocols,
        extensions,
        origin,
    })
}

/// RFC 6455 §4.2.1 item 6: `Sec-WebSocket-Version` is 13 (another version gets 426 and the
/// versions we speak, §4.2.2 item 4); item 7: the optional `Origin`, at most once (two would let
/// a policy judge one and miss the other). The same on HTTP/1.1 and HTTP/2 (RFC 8441 §5).
fn version_and_origin(headers: &(impl Lines + ?Sized)) -> Result<Option<String>, HandshakeError> {
    let version = single(headers, Known::Version, "Sec-WebSocket-Version")?;
    if version.trim_ascii() != b"13" {
        return Err(HandshakeError::UnsupportedVersion);
    }
    Ok(optional_single(headers, Known::Origin, "Origin")?.map(text))
}

/// The subprotocols (RFC 6455 §4.2.1 item 8: tokens, in a list that may span several lines,
/// §11.3.4) and the extensions (item 9, the §9.1 grammar) a request offers. The same on HTTP/1.1
/// and HTTP/2 (RFC 8441 §5).
fn offered(
    headers: &(impl Lines + ?Sized),
) -> Result<(Vec<String>, Vec<ExtensionOffer>), HandshakeError> {
    let protocols = list_elements(headers.lines(Known::Protocol))
        .filter(|t| !t.is_empty())
        .map(|t| {
            if is_token(t) {
                Ok(text(t))
            } else {
                Err(HandshakeError::InvalidHeader(
                    "Sec-WebSocket-Protocol",
                    "element is not a token",
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let extensions = extension_offers(headers.lines(Known::Extensions))
        .map_err(|why| HandshakeError::InvalidHeader("Sec-WebSocket-Extensions", why))?;
    Ok((protocols, extensions))
}

/// The `101 Switching Protocols` response accepting `offer`, with the selected subprotocol and the
/// accepted extensions (already validated by the caller against the offer), ready to write: the
/// HTTP/1.1 form of [`accept_response`], with the same fields in the same order.
///
/// `protocol` must be a token; one chosen with [`select_protocol`](super::select_protocol) from
/// the offer's list always is. Extension names and parameter names must be tokens (as those from
/// [`parse_extensions`](super::parse_extensions) are); parameter values that are not tokens are sent as quoted strings.
pub fn accept(
    offer: &ClientOffer,
    protocol: Option<&str>,
    extensions: &[ExtensionOffer],
) -> Vec<u8> {
    let mut out = Vec::new();
    accept_into(&mut out, offer, protocol, extensions);
    out
}

/// [`accept`], appended to `out`: a server that keeps a buffer for what it writes (the output
/// buffer of its connections) writes the answer there without allocating one.
///
/// ```
/// use gangway_proto::handshake::server::{accept, accept_into, check_request};
///
/// let request = http::Request::get("/chat")
///     .header("host", "example.com")
///     .header("upgrade", "websocket")
///     .header("connection", "Upgrade")
///     .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
///     .header("sec-websocket-version", "13")
///     .body(())
///     .unwrap();
/// let offer = check_request(&request).unwrap();
/// let mut out = b"kept".to_vec();
/// accept_into(&mut out, &offer, None, &[]);
/// assert_eq!(&out[4..], &accept(&offer, None, &[])[..]);
/// assert!(out.ends_with(b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"));
/// ```
pub fn accept_into(
    out: &mut Vec<u8>,
    offer: &ClientOffer,
    protocol: Option<&str>,
    extensions: &[ExtensionOffer],
) {
    // Appended to one buffer with room for the common answer: at most one allocation per
    // handshake, no header map, no formatting machinery.
    out.reserve(STATUS_101.len() + 90 + ACCEPT_LEN + protocol.map_or(0, |p| p.len() + 26));
    out.extend_from_slice(if offer.key.is_some() {
        STATUS_101
    } else {
        b"HTTP/1.1 200 OK\r\n"
    });
    accept_fields(offer, protocol, extensions, |field, value| {
        write_field(out, field, value);
    });
    out.extend_from_slice(b"\r\n");
}

/// The status line of an accepted HTTP/1.1 upgrade.
const STATUS_101: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n";

/// The response accepting `offer`, as parts for an HTTP library to send (hyper, h2): on HTTP/1.1
/// (`offer.key` is set) `101` with `Upgrade`, `Connection` and `Sec-WebSocket-Accept`
/// (RFC 6455 §4.2.2 item 5); on HTTP/2 (an offer of [`check_connect_request`]) `200` with none of
/// them (RFC 8441 §5). Then the selected `Sec-WebSocket-Protocol` and the accepted
/// `Sec-WebSocket-Extensions`, as [`accept`] writes them.
pub fn accept_response(
    offer: &ClientOffer,
    protocol: Option<&str>,
    extensions: &[ExtensionOffer],
) -> http::Response<()> {
    let mut response = http::Response::new(());
    if offer.key.is_some() {
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    } else {
        *response.version_mut() = Version::HTTP_2;
    }
    let headers = response.headers_mut();
    accept_fields(offer, protocol, extensions, |field, value| {
        append_field(headers, field, value);
    });
    response
}

/// The response refusing a request for `err`: its [`HandshakeError::status`], a short plain-text
/// body naming the reason, `Connection: close`, and for 426 `Sec-WebSocket-Version: 13`.
///
/// A 426 also carries `Upgrade: websocket` (RFC 7231 §6.5.15), hence `Connection: Upgrade, close`
/// (RFC 7230 §6.7); a 405 carries `Allow: GET` (RFC 7231 §6.5.5). The HTTP/1.1 form of
/// [`reject_response`], with the same fields in the same order.
pub fn reject(err: &HandshakeError) -> Vec<u8> {
    let status = err.status();
    let body = format!("{err}\n");
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes());
    reject_fields(err, Version::HTTP_11, body.len(), |field, value| {
        write_field(&mut out, field, value);
    });
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// The response refusing a request for `err` on a connection of `version`, as parts for an HTTP
/// library to send, with its plain-text body.
///
/// On HTTP/1.1 the fields of [`reject`]. On HTTP/2 the same without the connection-specific
/// `Connection` and `Upgrade` (RFC 9113 §8.2.2 forbids them): a 426 says
/// `Sec-WebSocket-Version: 13`, and a 405 `Allow: CONNECT`, the method of a WebSocket there
/// (RFC 8441 §4).
pub fn reject_response(err: &HandshakeError, version: Version) -> http::Response<String> {
    let body = format!("{err}\n");
    let mut response = http::Response::new(String::new());
    // Statuses of handshake errors are valid codes (400 to 431); 400 stays the fallback.
    *response.status_mut() = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    *response.version_mut() = version;
    let headers = response.headers_mut();
    reject_fields(err, version, body.len(), |field, value| {
        append_field(headers, field, value);
    });
    *response.body_mut() = body;
    response
}

/// A header field of a handshake answer. The answers are built once, as lists of these
/// ([`accept_fields`], [`reject_fields`]), and written either as HTTP/1.1 bytes or as an
/// `http::Response` for an HTTP library: the two forms cannot drift apart.
#[derive(Clone, Copy, Debug)]
enum Field {
    Upgrade,
    Connection,
    Accept,
    Protocol,
    Extensions,
    Version,
    Allow,
    ContentType,
    ContentLength,
}

impl Field {
    /// The name as HTTP/1.1 answers usually write it.
    fn title(self) -> &'static str {
        match self {
            Field::Upgrade => "Upgrade",
            Field::Connection => "Connection",
            Field::Accept => "Sec-WebSocket-Accept",
            Field::Protocol => "Sec-WebSocket-Protocol",
            Field::Extensions => "Sec-WebSocket-Extensions",
            Field::Version => "Sec-WebSocket-Version",
            Field::Allow => "Allow",
            Field::ContentType => "Content-Type",
            Field::ContentLength => "Content-Length",
        }
    }

    fn name(self) -> HeaderName {
        match self {
            Field::Upgrade => header::UPGRADE,
            Field::Connection => header::CONNECTION,
            Field::Accept => header::SEC_WEBSOCKET_ACCEPT,
            Field::Protocol => header::SEC_WEBSOCKET_PROTOCOL,
            Field::Extensions => header::SEC_WEBSOCKET_EXTENSIONS,
            Field::Version => header::SEC_WEBSOCKET_VERSION,
            Field::Allow => header::ALLOW,
            Field::ContentType => header::CONTENT_TYPE,
            Field::ContentLength => header::CONTENT_LENGTH,
        }
    }
}

/// `Name: value` and CRLF.
fn write_field(out: &mut Vec<u8>, field: Field, value: &[u8]) {
    out.extend_from_slice(field.title().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The field added to `headers`. Values come from the handshake (base64, tokens, quoted strings,
/// numbers: visible ASCII); one that were not a valid header value would be a bug here, not input,
/// and is left out rather than panicking.
fn append_field(headers: &mut HeaderMap, field: Field, value: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(value) {
        headers.append(field.name(), value);
    }
}

/// The fields of the answer accepting `offer` (see [`accept_response`]), in order.
fn accept_fields(
    offer: &ClientOffer,
    protocol: Option<&str>,
    extensions: &[ExtensionOffer],
    mut field: impl FnMut(Field, &[u8]),
) {
    // RFC 6455 §4.2.2 item 5: Upgrade, Connection, and the accept value for the key; none of
    // them on HTTP/2, where the stream is the WebSocket once the 200 is sent (RFC 8441 §5).
    if let Some(key) = &offer.key {
        field(Field::Upgrade, b"websocket");
        field(Field::Connection, b"Upgrade");
        let mut accept = [0u8; ACCEPT_LEN];
        field(
            Field::Accept,
            accept_key_into(key.as_bytes(), &mut accept).as_bytes(),
        );
    }
    if let Some(p) = protocol {
        field(Field::Protocol, p.as_bytes());
    }
    if !extensions.is_empty() {
        let mut list = Vec::with_capacity(64);
        for (i, e) in extensions.iter().enumerate() {
            if i > 0 {
                list.extend_from_slice(b", ");
            }
            // Writing to a Vec cannot fail.
            let _ = write!(list, "{e}");
        }
        field(Field::Extensions, &list);
    }
}

/// The fields of the answer refusing a request for `err` on `version` (see [`reject_response`]),
/// in order, for a body of `body_len` bytes.
fn reject_fields(
    err: &HandshakeError,
    version: Version,
    body_len: usize,
    mut field: impl FnMut(Field, &[u8]),
) {
    let http1 = version < Version::HTTP_2;
    field(Field::ContentType, b"text/plain; charset=utf-8");
    field(Field::ContentLength, body_len.to_string().as_bytes());
    match err.status() {
        // RFC 6455 §4.2.2 item 4: the versions the server understands. On HTTP/1.1 a 426 also
        // names the protocol to upgrade to (RFC 7231 §6.5.15), and `Upgrade` is then a
        // connection option (RFC 7230 §6.7).
        426 => {
            if http1 {
                field(Field::Connection, b"Upgrade, close");
                field(Field::Upgrade, b"websocket");
            }
            field(Field::Version, b"13");
        }
        // RFC 7231 §6.5.5: a 405 lists the methods the resource allows: the method that opens
        // a WebSocket, GET on HTTP/1.1, CONNECT on HTTP/2 (RFC 8441 §4).
        405 => {
            if http1 {
                field(Field::Connection, b"close");
                field(Field::Allow, b"GET");
            } else {
                field(Field::Allow, b"CONNECT");
            }
        }
        _ if http1 => field(Field::Connection, b"close"),
        _ => {}
    }
}

/// Serialize an HTTP/1.1 response head and body (for servers that answer plain requests too,
/// e.g. a page at `/`). `Content-Length` is added when absent.
///
/// The status line always says `HTTP/1.1` with the status's canonical reason phrase. Header
/// lines keep the map's order, duplicates included, with names written in the usual
/// capitalization (`Content-Type`). No `Content-Length` is added to a 1xx, 204 or 304 response,
/// which has no body (RFC 7230 §3.3.2), nor next to a `Transfer-Encoding`; `body` is written as
/// given.
pub fn encode_response(response: &http::Response<()>, body: &[u8]) -> Vec<u8> {
    let status = response.status();
    let mut out = Vec::with_capacity(64 + 64 * response.headers().len() + body.len());
    let status_line = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        reason_phrase(status.as_u16())
    );
    out.extend_from_slice(status_line.as_bytes());
    for (name, value) in response.headers() {
        write_name(&mut out, name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodyless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framed = response.headers().contains_key(header::CONTENT_LENGTH)
        || response.headers().contains_key(header::TRANSFER_ENCODING);
    if !bodyless && !framed {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// `name` as usually written: each dash-separated word capitalized.
fn write_name(out: &mut Vec<u8>, name: &HeaderName) {
    let mut start = true;
    for &b in name.as_str().as_bytes() {
        out.push(if start { b.to_ascii_uppercase() } else { b });
        start = b == b'-';
    }
}

/// Whether a `Host` value is `host [ ":" port ]` (RFC 7230 §5.4, RFC 3986 §3.2.2, §3.2.3), with
/// a host that is not empty and without the user info an authority may otherwise carry.
///
/// The host is an IP literal in brackets (an IPv6 address, with an RFC 6874 zone identifier or
/// not, or an `IPvFuture`), or a registered name or IPv4 address: unreserved characters,
/// percent-encoded octets and sub-delimiters. The port is digits (none is allowed).
fn is_host(value: &[u8]) -> bool {
    let (host, port) = match value.iter().rposition(|&b| b == b':') {
        // A colon inside the brackets of an IP literal is not the port's.
        Some(colon) if !value[colon..].contains(&b']') => (&value[..colon], &value[colon + 1..]),
        _ => (value, &[][..]),
    };
    if !port.iter().all(u8::is_ascii_digit) {
        return false;
    }
    match host {
        [] => false,
        [b'[', literal @ .., b']'] => is_ip_literal(literal),
        name => is_reg_name(name),
    }
}

/// RFC 3986 `unreserved`.
const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `sub-delims`.
const fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// `*( pct-encoded / allowed )`.
fn is_pct_text(s: &[u8], allowed: impl Fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            }
            b if allowed(b) => i += 1,
            _ => return false,
        }
    }
    true
}

/// RFC 3986 `reg-name` (which covers `IPv4address`).
fn is_reg_name(name: &[u8]) -> bool {
    is_pct_text(name, |b| REG_NAME[usize::from(b)])
}

/// For every byte, whether a `reg-name` may have it as it is: `unreserved / sub-delims`. A
/// lookup per byte of the `Host` of every request.
static REG_NAME: [bool; 256] = crate::handshake::byte_set!(|b| is_unreserved(b) || is_sub_delim(b));

/// What is inside the brackets of an RFC 3986 `IP-literal`: an `IPv6address` (with an RFC 6874
/// `ZoneID` after `%25`, or not) or an `IPvFuture` (`v`, hex digits, `.`, then unreserved
/// characters, sub-delimiters and colons).
fn is_ip_literal(literal: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = literal {
        let hex = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        return match rest[hex..] {
            [b'.', ref tail @ ..] if hex > 0 && !tail.is_empty() => tail
                .iter()
                .all(|&b| is_unreserved(b) || is_sub_delim(b) || b == b':'),
            _ => false,
        };
    }
    let (address, zone) = match literal.windows(3).position(|w| w == b"%25") {
        Some(at) => (&literal[..at], Some(&literal[at + 3..])),
        None => (literal, None),
    };
    // `ZoneID = 1*( unreserved / pct-encoded )`.
    let zone_ok = zone.map_or(true, |z| !z.is_empty() && is_pct_text(z, is_unreserved));
    zone_ok && std::str::from_utf8(address).is_ok_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
}

/// The canonical reason phrase, or an empty one (the status line keeps its space).
fn reason_phrase(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// The header fields the checks read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    Host,
    Upgrade,
    Connection,
    Key,
    Version,
    Origin,
    Protocol,
    Extensions,
}

impl Known {
    /// Every one, in the order of their slots in [`Indexed`].
    #[cfg(test)]
    const ALL: [Known; 8] = [
        Known::Host,
        Known::Upgrade,
        Known::Connection,
        Known::Key,
        Known::Version,
        Known::Origin,
        Known::Protocol,
        Known::Extensions,
    ];

    fn header(self) -> HeaderName {
        match self {
            Known::Host => header::HOST,
            Known::Upgrade => header::UPGRADE,
            Known::Connection => header::CONNECTION,
            Known::Key => header::SEC_WEBSOCKET_KEY,
            Known::Version => header::SEC_WEBSOCKET_VERSION,
            Known::Origin => header::ORIGIN,
            Known::Protocol => header::SEC_WEBSOCKET_PROTOCOL,
            Known::Extensions => header::SEC_WEBSOCKET_EXTENSIONS,
        }
    }

    /// The name in lowercase.
    fn name(self) -> &'static str {
        match self {
            Known::Host => "host",
            Known::Upgrade => "upgrade",
            Known::Connection => "connection",
            Known::Key => "sec-websocket-key",
            Known::Version => "sec-websocket-version",
            Known::Origin => "origin",
            Known::Protocol => "sec-websocket-protocol",
            Known::Extensions => "sec-websocket-extensions",
        }
    }

    /// The field named `name` (any case), if the checks read it. The eight names have eight
    /// lengths: one comparison at most.
    fn of(name: &[u8]) -> Option<Known> {
        let known = match name.len() {
            4 => Known::Host,
            7 => Known::Upgrade,
            10 => Known::Connection,
            17 => Known::Key,
            21 => Known::Version,
            6 => Known::Origin,
            22 => Known::Protocol,
            24 => Known::Extensions,
            _ => return None,
        };
        name.eq_ignore_ascii_case(known.name().as_bytes())
            .then_some(known)
    }
}

/// The header lines of a request by name, as the checks read them: those of an
/// [`HeaderMap`] (a request parsed by [`parse_request`] or an HTTP library) or those `httparse`
/// found in a head ([`Indexed`], for [`RequestHead`]). The checks are written once, for both.
trait Lines {
    /// The value of every line named `name`, in order.
    fn lines(&self, name: Known) -> impl Iterator<Item = &[u8]>;
}

impl Lines for HeaderMap {
    fn lines(&self, name: Known) -> impl Iterator<Item = &[u8]> {
        // Looked up by `HeaderName`, not by string: a string would be parsed (and lowercased)
        // again on every lookup.
        self.get_all(name.header())
            .iter()
            .map(HeaderValue::as_bytes)
    }
}

/// The lines of a head parsed by `httparse`, with where each field the checks read is: one
/// pass over the names, then each lookup goes straight to its lines.
struct Indexed<'h, 'b> {
    lines: &'h [httparse::Header<'b>],
    /// For each of [`Known::ALL`], the first line with that name and one past the last
    /// (`(0, 0)` for none).
    at: [(u8, u8); 8],
}

impl<'h, 'b> Indexed<'h, 'b> {
    fn new(lines: &'h [httparse::Header<'b>]) -> Self {
        let mut at = [(0, 0); 8];
        // At most `MAX_HEADERS` (100) lines: every index fits.
        for (i, line) in lines.iter().enumerate().take(usize::from(u8::MAX)) {
            if let Some(known) = Known::of(line.name.as_bytes()) {
                let (first, end) = &mut at[known as usize];
                if *end == 0 {
                    *first = i as u8;
                }
                *end = i as u8 + 1;
            }
        }
        Indexed { lines, at }
    }
}

impl Lines for Indexed<'_, '_> {
    fn lines(&self, name: Known) -> impl Iterator<Item = &[u8]> {
        let (first, end) = self.at[name as usize];
        let last = usize::from(end).saturating_sub(1);
        // The first and the last line of the range were found by that name; only those between
        // (other fields, or repeats) are looked at again.
        self.lines[usize::from(first)..usize::from(end)]
            .iter()
            .enumerate()
            .filter(move |&(i, h)| {
                i == 0
                    || usize::from(first) + i == last
                    || Known::of(h.name.as_bytes()) == Some(name)
            })
            .map(|(_, h)| h.value)
    }
}

/// A header that must be present and contain `token`.
fn required_token(
    headers: &(impl Lines + ?Sized),
    name: Known,
    display: &'static str,
    token: &[u8],
) -> Result<(), HandshakeError> {
    // One lookup for both questions.
    let mut lines = headers.lines(name);
    let Some(first) = lines.next() else {
        return Err(HandshakeError::MissingHeader(display));
    };
    if !list_has(std::iter::once(first).chain(lines), token) {
        return Err(HandshakeError::InvalidHeader(
            display,
            if token == b"websocket" {
                "no websocket token"
            } else {
                "no upgrade token"
            },
        ));
    }
    Ok(())
}

/// The value of a header that must appear exactly once.
fn single<'a>(
    headers: &'a (impl Lines + ?Sized),
    name: Known,
    display: &'static str,
) -> Result<&'a [u8], HandshakeError> {
    optional_single(headers, name, display)?.ok_or(HandshakeError::MissingHeader(display))
}

/// The value of a header that may appear at most once.
fn optional_single<'a>(
    headers: &'a (impl Lines + ?Sized),
    name: Known,
    display: &'static str,
) -> Result<Option<&'a [u8]>, HandshakeError> {
    let mut values = headers.lines(name);
    let first = values.next();
    if values.next().is_some() {
        return Err(HandshakeError::DuplicateHeader(display));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_MAX_HEAD_SIZE;
    use crate::handshake::select_protocol;

    /// The opening handshake request of RFC 6455 §1.3.
    const RFC_REQUEST: &str = "GET /chat HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\
        \r\n";

    /// A valid request with `extra` header lines (each ending in CRLF) added, and `drop`ped
    /// header names removed.
    fn request_with(drop: &[&str], extra: &str) -> String {
        let mut out = String::from("GET /chat HTTP/1.1\r\n");
        for line in RFC_REQUEST.split("\r\n").skip(1) {
            let name = line.split(':').next().unwrap_or_default();
            if line.is_empty() || drop.iter().any(|d| d.eq_ignore_ascii_case(name)) {
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        out.push_str(extra);
        out.push_str("\r\n");
        out
    }

    fn parse(head: &str) -> http::Request<()> {
        match parse_request(head.as_bytes(), DEFAULT_MAX_HEAD_SIZE) {
            Ok(Parsed::Complete(req, n)) => {
                assert_eq!(n, head.len());
                req
            }
            other => panic!("not a complete request: {other:?}"),
        }
    }

    /// `check_request`'s answer, which the head parsed without a request must give too.
    fn check(head: &str) -> Result<ClientOffer, HandshakeError> {
        let checked = check_request(&parse(head));
        same_as_request(head.as_bytes(), DEFAULT_MAX_HEAD_SIZE);
        checked
    }

    /// `RequestHead::parse` answers as `parse_request`, `check_request`, `is_upgrade_request`
    /// and `upgrade_refusal` do for `input`, and its request is theirs.
    fn same_as_request(input: &[u8], limit: usize) {
        match (
            parse_request(input, limit),
            RequestHead::parse(input, limit),
        ) {
            (Ok(Parsed::Complete(req, n)), Ok(Parsed::Complete(head, m))) => {
                assert_eq!(n, m, "{input:?}");
                assert_eq!(head.method(), req.method());
                assert_eq!(head.uri(), req.uri());
                assert_eq!(head.version(), req.version());
                assert_eq!(head.is_upgrade(), is_upgrade_request(&req), "{input:?}");
                assert_eq!(head.upgrade_refusal(), upgrade_refusal(&req).as_ref());
                assert_eq!(head.checked(), check_request(&req).as_ref());
                let rebuilt = head.to_request();
                assert_eq!(rebuilt.method(), req.method());
                assert_eq!(rebuilt.uri(), req.uri());
                assert_eq!(rebuilt.version(), req.version());
                assert_eq!(rebuilt.headers(), req.headers());
                assert_eq!(head.into_checked(), check_request(&req));
            }
            (Ok(Parsed::Partial), Ok(Parsed::Partial)) => {}
            (Err(a), Err(b)) => assert_eq!(a, b, "{input:?}"),
            (a, b) => panic!("{input:?}: parse_request {a:?}, RequestHead::parse {b:?}"),
        }
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_root_target_parses_as_any_other() {
        for target in ["/", "/x", "*", "/?q", "//"] {
            let head = format!(
                "GET {target} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            );
            let Ok(Parsed::Complete(parsed, _)) = RequestHead::parse(head.as_bytes(), 4096) else {
                panic!("{target}: not parsed");
            };
            let uri = http::Uri::try_from(target).unwrap();
            assert_eq!(parsed.uri(), &uri, "{target}");
            assert_eq!(parsed.uri().path(), uri.path(), "{target}");
            assert_eq!(parsed.uri().query(), uri.query(), "{target}");
            assert_eq!(parsed.to_request().uri(), &uri, "{target}");
        }
    }

    #[test]
    fn rfc_6455_example_request_is_accepted_with_the_example_response() {
        let offer = check(RFC_REQUEST).unwrap();
        assert_eq!(offer.key.as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(offer.protocols, ["chat", "superchat"]);
        assert_eq!(offer.extensions, []);
        assert_eq!(offer.origin.as_deref(), Some("http://example.com"));
        let supported = ["chat".to_string()];
        let selected = select_protocol(&supported, &offer.protocols);
        assert_eq!(
            text(&accept(&offer, selected, &[])),
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: chat\r\n\
             \r\n"
        );
    }

    #[test]
    fn parsed_request_keeps_method_target_version_and_every_header_line() {
        let req = parse(&request_with(&[], "X-A: 1\r\nx-a: 2\r\n"));
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/chat");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "server.example.com");
        let xa: Vec<_> = req.headers().get_all("x-a").iter().collect();
        assert_eq!(xa, ["1", "2"]);
        assert_eq!(req.headers().len(), 9);
    }

    #[test]
    fn request_arriving_one_byte_at_a_time() {
        let bytes = RFC_REQUEST.as_bytes();
        for end in 0..bytes.len() {
            assert!(
                matches!(
                    parse_request(&bytes[..end], DEFAULT_MAX_HEAD_SIZE),
                    Ok(Parsed::Partial)
                ),
                "after {end} bytes"
            );
        }
        match parse_request(bytes, DEFAULT_MAX_HEAD_SIZE) {
            Ok(Parsed::Complete(req, n)) => {
                assert_eq!(n, bytes.len());
                assert!(check_request(&req).is_ok());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pipelined_frame_after_the_head_is_left_to_the_caller() {
        let mut bytes = RFC_REQUEST.as_bytes().to_vec();
        // A masked text frame "Hi", sent right behind the head.
        let frame = [0x81, 0x82, 1, 2, 3, 4, b'H' ^ 1, b'i' ^ 2];
        bytes.extend_from_slice(&frame);
        match parse_request(&bytes, DEFAULT_MAX_HEAD_SIZE) {
            Ok(Parsed::Complete(_, n)) => {
                assert_eq!(n, RFC_REQUEST.len());
                assert_eq!(&bytes[n..], frame);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn head_over_the_limit_gets_431() {
        let head = RFC_REQUEST.as_bytes();
        // Complete but longer than the limit.
        assert_eq!(
            parse_request(head, head.len() - 1).unwrap_err(),
            (HandshakeError::HeadTooLarge)
        );
        // Exactly at the limit is fine, with or without pipelined bytes behind it.
        assert!(matches!(
            parse_request(head, head.len()),
            Ok(Parsed::Complete(_, n)) if n == head.len()
        ));
        let mut more = head.to_vec();
        more.extend_from_slice(b"\x81\x80xxxx");
        assert!(matches!(
            parse_request(&more, head.len()),
            Ok(Parsed::Complete(_, n)) if n == head.len()
        ));
        // Still partial and already longer than the limit.
        let partial = &head[..head.len() - 2];
        assert!(matches!(
            parse_request(&partial[..100], 100),
            Ok(Parsed::Partial)
        ));
        assert_eq!(
            parse_request(&partial[..101], 100).unwrap_err(),
            (HandshakeError::HeadTooLarge)
        );
        // A head that never ends.
        let mut endless = b"GET / HTTP/1.1\r\nX: ".to_vec();
        endless.resize(DEFAULT_MAX_HEAD_SIZE + 1, b'a');
        assert_eq!(
            parse_request(&endless, DEFAULT_MAX_HEAD_SIZE).unwrap_err(),
            (HandshakeError::HeadTooLarge)
        );
        let response = reject(&HandshakeError::HeadTooLarge);
        assert!(text(&response).starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    }

    #[test]
    fn too_many_header_lines_get_431() {
        // The request has 7 lines of its own.
        let ok = request_with(&[], &"X-Pad: 1\r\n".repeat(MAX_HEADERS - 7));
        assert_eq!(parse(&ok).headers().len(), MAX_HEADERS);
        assert!(check(&ok).is_ok());
        let many = request_with(&[], &"X-Pad: 1\r\n".repeat(MAX_HEADERS - 6));
        assert_eq!(
            parse_request(many.as_bytes(), DEFAULT_MAX_HEAD_SIZE).unwrap_err(),
            (HandshakeError::HeadTooLarge)
        );
    }

    #[test]
    fn malformed_heads_get_400() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                "invalid token",
            ),
            (b"GET / HTTP/2.0\r\n\r\n", "invalid http version"),
            (
                b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
                "invalid header name",
            ),
            (
                b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
                "invalid header value",
            ),
            (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", "invalid header value"),
            (b"GET /\x7f HTTP/1.1\r\n\r\n", "invalid token"),
            (
                b"GET / HTTP/1.1\r\n folded: x\r\n\r\n",
                "invalid header name",
            ),
        ];
        for (bytes, why) in cases {
            let err = parse_request(bytes, DEFAULT_MAX_HEAD_SIZE).unwrap_err();
            assert_eq!(err, HandshakeError::MalformedHttp(why), "{bytes:?}");
            assert_eq!(err.status(), 400);
        }
        let response = reject(&HandshakeError::MalformedHttp("invalid token"));
        assert!(text(&response).starts_with("HTTP/1.1 400 Bad Request\r\n"));
    }

    #[test]
    fn request_target_must_be_a_path_or_an_absolute_uri() {
        let star = RFC_REQUEST.replacen("/chat", "*", 1);
        assert_eq!(
            check(&star),
            Err(HandshakeError::MalformedHttp(
                "request target is not an absolute path or uri"
            ))
        );
        let authority = RFC_REQUEST.replacen("/chat", "example.com:80", 1);
        assert!(check(&authority).is_err());
        let absolute = RFC_REQUEST.replacen("/chat", "ws://server.example.com/chat?x=1", 1);
        assert!(check(&absolute).is_ok());
    }

    #[test]
    fn method_other_than_get_gets_405_with_allow() {
        let post = RFC_REQUEST.replacen("GET", "POST", 1);
        let err = check(&post).unwrap_err();
        assert_eq!(err, HandshakeError::MethodNotAllowed);
        assert_eq!(err.status(), 405);
        let body = "method not allowed, expected GET\n";
        assert_eq!(
            text(&reject(&err)),
            format!(
                "HTTP/1.1 405 Method Not Allowed\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\n\
                 Connection: close\r\n\
                 Allow: GET\r\n\
                 \r\n{body}",
                body.len()
            )
        );
    }

    #[test]
    fn http_1_0_is_refused() {
        let old = RFC_REQUEST.replacen("HTTP/1.1", "HTTP/1.0", 1);
        let err = check(&old).unwrap_err();
        assert_eq!(err, HandshakeError::UnsupportedHttpVersion);
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn each_field_the_checks_read_is_known_by_its_name_in_any_case() {
        for (slot, known) in Known::ALL.into_iter().enumerate() {
            assert_eq!(known as usize, slot);
            assert_eq!(known.header().as_str(), known.name());
            let name = known.name();
            assert_eq!(Known::of(name.as_bytes()), Some(known));
            assert_eq!(Known::of(name.to_ascii_uppercase().as_bytes()), Some(known));
            // Same length, another name.
            let mut other = name.as_bytes().to_vec();
            other[0] = b'x';
            assert_eq!(Known::of(&other), None);
        }
        assert_eq!(Known::of(b"x-forwarded-host"), None);
    }

    #[test]
    fn host_must_appear_exactly_once() {
        assert_eq!(
            check(&request_with(&["host"], "")),
            Err(HandshakeError::MissingHeader("Host"))
        );
        assert_eq!(
            check(&request_with(&[], "Host: other.example\r\n")),
            Err(HandshakeError::DuplicateHeader("Host"))
        );
    }

    #[test]
    fn host_must_be_a_host_with_an_optional_port() {
        for host in [
            "127.0.0.1:9001",
            "[::1]:9001",
            "[::1]",
            "example.com",
            "EXAMPLE.com:80",
            "example.com:",
            "[2001:db8::7]:443",
            "[::ffff:192.0.2.1]",
            "[fe80::1%25eth0]:80",
            "[v7.fe80::a+en1]",
            "xn--bcher-kva.example",
            "a%41b",
            "a!$&'()*+,;=b-._~",
        ] {
            let head = request_with(&["host"], &format!("Host: {host}\r\n"));
            assert!(check(&head).is_ok(), "{host}");
        }
        for host in [
            "",
            "a b",
            "user@example.com",
            "example.com/path",
            "[::1",
            "a:b:c",
            ":80",
            "[]",
            "[::1]x",
            "x[::1]",
            "[::1]:8a",
            "[1::2::3]",
            "[::1%25]",
            "[::1%eth0]",
            "[v7.]",
            "[v.x]",
            "a%4",
            "a%zz",
            "a[b",
            "example.com?q",
            "example.com#f",
            "b\u{e4}r.example",
        ] {
            let head = request_with(&["host"], &format!("Host: {host}\r\n"));
            assert_eq!(
                check(&head),
                Err(HandshakeError::InvalidHeader(
                    "Host",
                    "not a host with an optional port"
                )),
                "{host:?}"
            );
        }
    }

    #[test]
    fn upgrade_and_connection_tokens_across_lines_and_case() {
        let spread = request_with(
            &["upgrade", "connection"],
            "Upgrade: h2c\r\nConnection: keep-alive\r\nupgrade: WebSocket\r\n\
             CONNECTION: close, UPGRADE\r\n",
        );
        assert!(check(&spread).is_ok());
        let listed = request_with(
            &["upgrade", "connection"],
            "Upgrade: foo/2, WEBSOCKET\r\nConnection: keep-alive, Upgrade\r\n",
        );
        assert!(check(&listed).is_ok());
        assert!(is_upgrade_request(&parse(&listed)));
    }

    #[test]
    fn upgrade_without_websocket_is_refused() {
        assert_eq!(
            check(&request_with(&["upgrade"], "")),
            Err(HandshakeError::MissingHeader("Upgrade"))
        );
        let err = check(&request_with(&["upgrade"], "Upgrade: h2c, websockets\r\n")).unwrap_err();
        assert_eq!(
            err,
            HandshakeError::InvalidHeader("Upgrade", "no websocket token")
        );
        assert_eq!(err.status(), 400);
        assert_eq!(
            err.to_string(),
            "invalid Upgrade header: no websocket token"
        );
    }

    #[test]
    fn connection_without_upgrade_is_refused() {
        assert_eq!(
            check(&request_with(&["connection"], "")),
            Err(HandshakeError::MissingHeader("Connection"))
        );
        assert_eq!(
            check(&request_with(&["connection"], "Connection: keep-alive\r\n")),
            Err(HandshakeError::InvalidHeader(
                "Connection",
                "no upgrade token"
            ))
        );
        // A token is compared whole, not as a substring.
        assert_eq!(
            check(&request_with(&["connection"], "Connection: upgraded\r\n")),
            Err(HandshakeError::InvalidHeader(
                "Connection",
                "no upgrade token"
            ))
        );
    }

    #[test]
    fn plain_requests_are_not_upgrade_requests() {
        let plain = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n";
        assert!(!is_upgrade_request(&parse(plain)));
        assert!(!is_upgrade_request(&parse(
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        )));
        assert!(is_upgrade_request(&parse(RFC_REQUEST)));
    }

    #[test]
    fn key_must_be_16_bytes_of_base64_exactly_once() {
        assert_eq!(
            check(&request_with(&["sec-websocket-key"], "")),
            Err(HandshakeError::MissingHeader("Sec-WebSocket-Key"))
        );
        assert_eq!(
            check(&request_with(
                &[],
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            )),
            Err(HandshakeError::DuplicateHeader("Sec-WebSocket-Key"))
        );
        let invalid = HandshakeError::InvalidHeader("Sec-WebSocket-Key", "not 16 bytes in base64");
        for key in [
            "0123456789abcdef", // 16 printable characters are not 16 bytes
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZSE=",
            "dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==",
            "",
        ] {
            let head = request_with(
                &["sec-websocket-key"],
                &format!("Sec-WebSocket-Key: {key}\r\n"),
            );
            assert_eq!(check(&head), Err(invalid.clone()), "{key:?}");
        }
        // Surrounding whitespace is not part of the key.
        let padded = request_with(
            &["sec-websocket-key"],
            "Sec-WebSocket-Key: \t dGhlIHNhbXBsZSBub25jZQ== \t\r\n",
        );
        assert_eq!(
            check(&padded).unwrap().key.as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
    }

    #[test]
    fn version_must_appear_once_and_be_13() {
        assert_eq!(
            check(&request_with(&["sec-websocket-version"], "")),
            Err(HandshakeError::MissingHeader("Sec-WebSocket-Version"))
        );
        let dup = check(&request_with(&[], "Sec-WebSocket-Version: 13\r\n")).unwrap_err();
        assert_eq!(
            dup,
            HandshakeError::DuplicateHeader("Sec-WebSocket-Version")
        );
        assert_eq!(dup.status(), 400);
        for v in ["8", "14", "13, 8", ""] {
            let head = request_with(
                &["sec-websocket-version"],
                &format!("Sec-WebSocket-Version: {v}\r\n"),
            );
            assert_eq!(
                check(&head),
                Err(HandshakeError::UnsupportedVersion),
                "{v:?}"
            );
        }
    }

    #[test]
    fn unsupported_version_gets_426_naming_version_13() {
        let err = HandshakeError::UnsupportedVersion;
        assert_eq!(err.status(), 426);
        let body = "unsupported Sec-WebSocket-Version, expected 13\n";
        assert_eq!(
            text(&reject(&err)),
            format!(
                "HTTP/1.1 426 Upgrade Required\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\n\
                 Connection: Upgrade, close\r\n\
                 Upgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\n\
                 \r\n{body}",
                body.len()
            )
        );
    }

    #[test]
    fn reject_answers_400_with_the_reason_as_body() {
        let err = HandshakeError::DuplicateHeader("Sec-WebSocket-Key");
        let response = reject(&err);
        let body = "duplicate Sec-WebSocket-Key header\n";
        assert_eq!(
            text(&response),
            format!(
                "HTTP/1.1 400 Bad Request\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\n\
                 Connection: close\r\n\
                 \r\n{body}",
                body.len()
            )
        );
        assert!(
            text(&reject(&HandshakeError::OriginRefused)).starts_with("HTTP/1.1 403 Forbidden\r\n")
        );
    }

    #[test]
    fn subprotocols_are_collected_across_lines_in_order() {
        let head = request_with(
            &["sec-websocket-protocol"],
            "Sec-WebSocket-Protocol: chat, , superchat\r\nSec-WebSocket-Protocol: v2.json\r\n",
        );
        let offer = check(&head).unwrap();
        assert_eq!(offer.protocols, ["chat", "superchat", "v2.json"]);
        let none = check(&request_with(&["sec-websocket-protocol"], "")).unwrap();
        assert!(none.protocols.is_empty());
    }

    #[test]
    fn subprotocol_selection_is_the_servers_first_offered_choice() {
        let offer = check(RFC_REQUEST).unwrap();
        let supported = ["chat".to_string()];
        let chat = select_protocol(&supported, &offer.protocols);
        assert_eq!(chat, Some("chat"));
        let response = text(&accept(&offer, chat, &[])).to_owned();
        assert!(response.contains("\r\nSec-WebSocket-Protocol: chat\r\n"));
        // Nothing in common: no header, and still an acceptance.
        let other = ["mqtt".to_string()];
        let none = select_protocol(&other, &offer.protocols);
        assert_eq!(none, None);
        let response = text(&accept(&offer, none, &[])).to_owned();
        assert!(response.starts_with("HTTP/1.1 101 "));
        assert!(!response
            .to_ascii_lowercase()
            .contains("sec-websocket-protocol"));
    }

    #[test]
    fn subprotocol_that_is_not_a_token_gets_400() {
        let head = request_with(
            &["sec-websocket-protocol"],
            "Sec-WebSocket-Protocol: chat, super chat\r\n",
        );
        assert_eq!(
            check(&head),
            Err(HandshakeError::InvalidHeader(
                "Sec-WebSocket-Protocol",
                "element is not a token"
            ))
        );
    }

    #[test]
    fn extensions_are_parsed_and_echoed_in_accept() {
        let head = request_with(
            &[],
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
             Sec-WebSocket-Extensions: x-test; a=\"1\"\r\n",
        );
        let offer = check(&head).unwrap();
        assert_eq!(offer.extensions.len(), 2);
        assert_eq!(offer.extensions[0].name, "permessage-deflate");
        assert_eq!(offer.extensions[1].params, [("a".into(), Some("1".into()))]);
        let accepted = [ExtensionOffer {
            name: "permessage-deflate".into(),
            params: vec![("server_max_window_bits".into(), Some("10".into()))],
        }];
        let response = text(&accept(&offer, None, &accepted)).to_owned();
        assert!(response.ends_with(
            "\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n\r\n"
        ));
        let two = text(&accept(&offer, Some("chat"), &offer.extensions)).to_owned();
        assert!(two.ends_with(
            "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: \
             permessage-deflate; client_max_window_bits, x-test; a=1\r\n\r\n"
        ));
    }

    #[test]
    fn malformed_extensions_get_400() {
        let head = request_with(&[], "Sec-WebSocket-Extensions: foo; a=\"x y\"\r\n");
        let err = check(&head).unwrap_err();
        assert_eq!(
            err,
            HandshakeError::InvalidHeader(
                "Sec-WebSocket-Extensions",
                "quoted parameter value is not a token"
            )
        );
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn origin_is_reported_not_judged() {
        let none = check(&request_with(&["origin"], "")).unwrap();
        assert_eq!(none.origin, None);
        let evil = check(&request_with(
            &["origin"],
            "Origin: http://evil.example\r\n",
        ))
        .unwrap();
        assert_eq!(evil.origin.as_deref(), Some("http://evil.example"));
        assert_eq!(
            check(&request_with(&[], "Origin: http://evil.example\r\n")),
            Err(HandshakeError::DuplicateHeader("Origin"))
        );
    }

    #[test]
    fn first_failure_wins() {
        // No Host, no Upgrade and a bad key: Host is checked first (RFC 6455 §4.2.1 order).
        let head = request_with(&["host", "upgrade", "sec-websocket-key"], "");
        assert_eq!(check(&head), Err(HandshakeError::MissingHeader("Host")));
        let post = head.replacen("GET", "PUT", 1);
        assert_eq!(check(&post), Err(HandshakeError::MethodNotAllowed));
    }

    #[test]
    fn encode_response_writes_status_headers_and_length() {
        let response = http::Response::builder()
            .status(200)
            .header("content-type", "text/html; charset=utf-8")
            .header("x-dup", "a")
            .header("x-dup", "b")
            .body(())
            .unwrap();
        assert_eq!(
            text(&encode_response(&response, b"<p>hi</p>")),
            "HTTP/1.1 200 OK\r\n\
             Content-Type: text/html; charset=utf-8\r\n\
             X-Dup: a\r\n\
             X-Dup: b\r\n\
             Content-Length: 9\r\n\
             \r\n<p>hi</p>"
        );
        let given = http::Response::builder()
            .status(404)
            .header("content-length", "0")
            .body(())
            .unwrap();
        assert_eq!(
            text(&encode_response(&given, b"")),
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        );
        let no_content = http::Response::builder().status(204).body(()).unwrap();
        assert_eq!(
            text(&encode_response(&no_content, b"")),
            "HTTP/1.1 204 No Content\r\n\r\n"
        );
        let chunked = http::Response::builder()
            .status(200)
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        assert_eq!(
            text(&encode_response(&chunked, b"0\r\n\r\n")),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        );
        let unknown = http::Response::builder().status(599).body(()).unwrap();
        assert!(text(&encode_response(&unknown, b"")).starts_with("HTTP/1.1 599 \r\n"));
    }

    /// An HTTP/2 extended CONNECT request (RFC 8441 §5's example), as an HTTP/2 layer hands it
    /// over: pseudo-headers in the method and URI, `:protocol` apart.
    fn connect_request(headers: &[(&str, &str)]) -> http::Request<()> {
        let mut builder = http::Request::builder()
            .method(Method::CONNECT)
            .uri("https://server.example.com/chat")
            .version(Version::HTTP_2);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    const H2_VALID: &[(&str, &str)] = &[
        ("sec-websocket-protocol", "chat, superchat"),
        ("sec-websocket-extensions", "permessage-deflate"),
        ("sec-websocket-version", "13"),
        ("origin", "http://www.example.com"),
    ];

    #[test]
    fn rfc_8441_example_request_is_accepted_with_a_200_without_key_or_accept() {
        let offer = check_connect_request(&connect_request(H2_VALID), Some("websocket")).unwrap();
        assert_eq!(offer.key, None);
        assert_eq!(offer.protocols, ["chat", "superchat"]);
        assert_eq!(offer.extensions[0].name, "permessage-deflate");
        assert_eq!(offer.origin.as_deref(), Some("http://www.example.com"));
        let response = accept_response(&offer, Some("chat"), &[]);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), Version::HTTP_2);
        let names: Vec<_> = response.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["sec-websocket-protocol"]);
        assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
        // The HTTP/1.1 writer makes the same decision from the same offer.
        assert_eq!(
            text(&accept(&offer, Some("chat"), &[])),
            "HTTP/1.1 200 OK\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        );
    }

    #[test]
    fn extended_connect_refusals() {
        let check = |method: Method, protocol: Option<&str>, headers: &[(&str, &str)]| {
            let mut request = connect_request(headers);
            *request.method_mut() = method;
            check_connect_request(&request, protocol)
        };
        let v13 = [("sec-websocket-version", "13")];
        assert!(check(Method::CONNECT, Some("WebSocket"), &v13).is_ok());
        // A key sent anyway is not looked at (§5).
        assert!(check(
            Method::CONNECT,
            Some("websocket"),
            &[("sec-websocket-version", "13"), ("sec-websocket-key", "x")]
        )
        .is_ok());
        assert_eq!(
            check(Method::GET, None, &v13).unwrap_err(),
            HandshakeError::MethodNotAllowed
        );
        assert_eq!(
            check(Method::CONNECT, None, &v13).unwrap_err(),
            HandshakeError::MissingHeader(":protocol")
        );
        assert_eq!(
            check(Method::CONNECT, Some("webtransport"), &v13).unwrap_err(),
            HandshakeError::InvalidHeader(":protocol", "not websocket")
        );
        assert_eq!(
            check(Method::CONNECT, Some("websocket"), &[]).unwrap_err(),
            HandshakeError::MissingHeader("Sec-WebSocket-Version")
        );
        assert_eq!(
            check(
                Method::CONNECT,
                Some("websocket"),
                &[("sec-websocket-version", "8")]
            )
            .unwrap_err(),
            HandshakeError::UnsupportedVersion
        );
        assert_eq!(
            check(
                Method::CONNECT,
                Some("websocket"),
                &[
                    ("sec-websocket-version", "13"),
                    ("origin", "a"),
                    ("origin", "b")
                ]
            )
            .unwrap_err(),
            HandshakeError::DuplicateHeader("Origin")
        );
        // No :authority: a Host header does, none at all does not.
        let mut no_authority = connect_request(&v13);
        *no_authority.uri_mut() = http::Uri::from_static("/chat");
        assert_eq!(
            check_connect_request(&no_authority, Some("websocket")).unwrap_err(),
            HandshakeError::MissingHeader(":authority")
        );
        no_authority
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_static("example.com:8443"));
        assert!(check_connect_request(&no_authority, Some("websocket")).is_ok());
    }

    #[test]
    fn http2_refusals_have_no_connection_headers_and_allow_connect() {
        for (err, status) in [
            (HandshakeError::UnsupportedVersion, 426),
            (HandshakeError::MethodNotAllowed, 405),
            (HandshakeError::OriginRefused, 403),
            (HandshakeError::MissingHeader(":protocol"), 400),
        ] {
            let h1 = reject_response(&err, Version::HTTP_11);
            let h2 = reject_response(&err, Version::HTTP_2);
            assert_eq!(h1.status(), status);
            assert_eq!(h2.status(), status);
            assert_eq!(h2.body(), &format!("{err}\n"));
            assert_eq!(
                h2.headers()["content-length"],
                h2.body().len().to_string().as_str()
            );
            assert!(!h2.headers().contains_key("connection"), "{err}");
            assert!(!h2.headers().contains_key("upgrade"), "{err}");
            assert!(!h1.headers()["connection"].is_empty());
            if status == 426 {
                assert_eq!(h2.headers()["sec-websocket-version"], "13");
                assert_eq!(h1.headers()["sec-websocket-version"], "13");
            }
            if status == 405 {
                assert_eq!(h2.headers()["allow"], "CONNECT");
                assert_eq!(h1.headers()["allow"], "GET");
            }
            // The HTTP/1.1 bytes are the HTTP/1.1 parts, written out.
            let bytes = String::from_utf8(reject(&err)).unwrap();
            for (name, value) in h1.headers() {
                let line = format!("{}: {}\r\n", name, value.to_str().unwrap());
                assert!(
                    bytes
                        .to_ascii_lowercase()
                        .contains(&line.to_ascii_lowercase()),
                    "{line:?} in {bytes:?}"
                );
            }
        }
    }

    #[test]
    fn accept_bytes_and_parts_are_the_same_answer() {
        let offer = check(RFC_REQUEST).unwrap();
        let deflate = ExtensionOffer {
            name: "permessage-deflate".into(),
            params: vec![("client_max_window_bits".into(), Some("10".into()))],
        };
        let bytes = accept(&offer, Some("chat"), std::slice::from_ref(&deflate));
        let parts = accept_response(&offer, Some("chat"), std::slice::from_ref(&deflate));
        assert_eq!(parts.status(), StatusCode::SWITCHING_PROTOCOLS);
        let mut written = String::from("HTTP/1.1 101 Switching Protocols\r\n");
        for (name, value) in parts.headers() {
            let title = match name.as_str() {
                "upgrade" => "Upgrade",
                "connection" => "Connection",
                "sec-websocket-accept" => "Sec-WebSocket-Accept",
                "sec-websocket-protocol" => "Sec-WebSocket-Protocol",
                "sec-websocket-extensions" => "Sec-WebSocket-Extensions",
                other => panic!("unexpected {other}"),
            };
            written.push_str(&format!("{title}: {}\r\n", value.to_str().unwrap()));
        }
        written.push_str("\r\n");
        assert_eq!(text(&bytes), written);
        assert!(written.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(written.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\r\n"
        ));
    }

    /// xorshift64, for reproducible garbage.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// What the fuzz oracle saw.
    #[derive(Default)]
    struct Outcomes {
        partial: usize,
        accepted: usize,
        refused: usize,
        parse_errors: usize,
    }

    /// The fuzz oracle: any input is either still partial, a complete head within the input
    /// that the checks accept or refuse with a status, or one of the documented parse errors.
    fn assert_documented(input: &[u8], limit: usize, seen: &mut Outcomes) {
        same_as_request(input, limit);
        match parse_request(input, limit) {
            Ok(Parsed::Partial) => {
                assert!(input.len() <= limit);
                seen.partial += 1;
            }
            Ok(Parsed::Complete(req, n)) => {
                assert!(n <= input.len() && n <= limit);
                match check_request(&req) {
                    Ok(offer) => {
                        let protocol = offer.protocols.first().map(String::as_str);
                        let response = accept(&offer, protocol, &offer.extensions);
                        assert!(response.starts_with(b"HTTP/1.1 101 "));
                        seen.accepted += 1;
                    }
                    Err(e) => {
                        assert!(matches!(e.status(), 400 | 405 | 426), "{e:?}");
                        assert!(reject(&e).starts_with(b"HTTP/1.1 4"));
                        seen.refused += 1;
                    }
                }
            }
            Err(HandshakeError::HeadTooLarge | HandshakeError::MalformedHttp(_)) => {
                seen.parse_errors += 1;
            }
            Err(other) => panic!("undocumented parse error {other:?} for {input:?}"),
        }
    }

    #[test]
    fn garbage_input_never_panics() {
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let alphabet = b"GET / HTTP/1.1\r\n:, ;=\"\\\tHost Upgrade websocket Connection upgrade \
            Sec-WebSocket-Key Sec-WebSocket-Version 13 Sec-WebSocket-Extensions \x00\x7f\xff";
        for _ in 0..3000 {
            let len = (next(&mut state) % 200) as usize;
            // Half raw bytes, half bytes drawn from HTTP-looking pieces.
            let raw = next(&mut state) % 2 == 0;
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next(&mut state);
                    if raw {
                        r as u8
                    } else {
                        alphabet[(r % alphabet.len() as u64) as usize]
                    }
                })
                .collect();
            assert_documented(&input, 128, &mut Outcomes::default());
        }
        // Mutations of a valid request: flipped bytes, truncations, duplicated spans.
        let valid = request_with(&[], "Sec-WebSocket-Extensions: a; b=\"c\", d\r\n").into_bytes();
        let mut seen = Outcomes::default();
        for _ in 0..3000 {
            let mut input = valid.clone();
            for _ in 0..(next(&mut state) % 4 + 1) {
                let at = (next(&mut state) % input.len() as u64) as usize;
                match next(&mut state) % 3 {
                    0 => input[at] = next(&mut state) as u8,
                    1 => input.truncate(at.max(1)),
                    _ => {
                        let span: Vec<u8> = input[at..].iter().take(20).copied().collect();
                        input.splice(at..at, span);
                    }
                }
            }
            assert_documented(&input, DEFAULT_MAX_HEAD_SIZE, &mut seen);
        }
        // The mutations reach every outcome, so the oracle is exercised, not bypassed.
        assert!(seen.partial > 0 && seen.accepted > 0 && seen.refused > 0 && seen.parse_errors > 0);
    }
}
