//! WebSockets inside a hyper 1 (or axum) server: accept a request that hyper already parsed.
//!
//! An application that already serves HTTP with hyper, or with a framework on top of it such as
//! axum, hands the upgrade request of a route to [`upgrade`]. It runs the same checks as
//! [`Incoming::accept`](crate::Incoming::accept) (RFC 6455 §4.2.1 and the origin policy of the
//! [`ServerBuilder`]), then gives back the answer for the application to return, and a future
//! that yields the [`WebSocket`] once hyper has sent that answer and handed the
//! connection over:
//!
//! ```text
//!   request ──► upgrade(&mut request, &server)
//!                 ├─ Ok((101 response, PendingUpgrade)) ─► return the response to hyper;
//!                 │                                        spawn: PendingUpgrade.await ─► WebSocket
//!                 └─ Err(Refusal) ─► return refusal.response() (400/403/405/426, or 500)
//! ```
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use futures_util::{SinkExt, StreamExt};
//! use hyper::body::Incoming;
//!
//! async fn handle(
//!     server: gangway::ServerBuilder,
//!     mut request: http::Request<Incoming>,
//! ) -> Result<http::Response<String>, Infallible> {
//!     let (response, pending) = match gangway::hyper::upgrade(&mut request, &server) {
//!         Ok(accepted) => accepted,
//!         Err(refusal) => return Ok(refusal.response()),
//!     };
//!     // The WebSocket exists only once hyper has sent the response: never await it here.
//!     tokio::spawn(async move {
//!         let mut ws = pending.await?;
//!         while let Some(msg) = ws.next().await {
//!             ws.send(msg?).await?; // echo
//!         }
//!         Ok::<_, gangway::Error>(())
//!     });
//!     Ok(response)
//! }
//! ```
//!
//! hyper must serve the connection with upgrades enabled (`serve_connection(..).with_upgrades()`
//! of `hyper::server::conn::http1`; `axum::serve` does it).
//!
//! **HTTP/2** (feature `http2`): the same call accepts an extended CONNECT request with
//! `:protocol = websocket` (RFC 8441), answered `200` instead of `101`, when hyper serves HTTP/2
//! with `enable_connect_protocol()` (`hyper::server::conn::http2::Builder`, or hyper-util's
//! `auto::Builder::http2()`), which advertises `SETTINGS_ENABLE_CONNECT_PROTOCOL` to clients.
//! The WebSocket then runs on the request's stream, beside the connection's other requests, and
//! is the same [`UpgradedWebSocket`]. Browsers use it when they already have an HTTP/2
//! connection to the origin. Bytes the client sent right behind its
//! request head (frames it pipelined) are not lost: hyper keeps what it read ahead inside the
//! upgraded connection, and the WebSocket reads them first.
//!
//! The answers are `http::Response<String>`: `String` is an `http_body::Body`, and axum returns
//! it as is. A hyper service with another body type maps it, e.g.
//! `response.map(http_body_util::Full::from)`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::hyper::upgrade::{OnUpgrade, Upgraded};
use gangway_proto::handshake::header_tokens;
use gangway_proto::handshake::server as hs;
use gangway_proto::HandshakeError;
use http::header::{self, HeaderValue};
use http::StatusCode;
use hyper_util::rt::TokioIo;

use crate::server::Accepted;
use crate::{Error, ServerBuilder, WebSocket};

/// A WebSocket on a connection that hyper upgraded.
pub type UpgradedWebSocket = WebSocket<TokioIo<Upgraded>>;

/// Whether `request` asks for a WebSocket (an `Upgrade` header naming `websocket`; with the
/// `http2` feature also an HTTP/2 CONNECT with `:protocol = websocket`), for servers that answer
/// other requests on the same path themselves. It says nothing of the request's validity:
/// [`upgrade`] judges that.
pub fn is_upgrade_request<B>(request: &http::Request<B>) -> bool {
    if let Some(protocol) = connect_protocol(request.version(), request.extensions()) {
        return request.method() == http::Method::CONNECT
            && protocol.is_some_and(|p| p.eq_ignore_ascii_case("websocket"));
    }
    header_tokens(request.headers(), header::UPGRADE.as_str())
        .any(|t| t.eq_ignore_ascii_case(b"websocket"))
}

/// For an HTTP/2 request, its `:protocol` pseudo-header (RFC 8441 §4), which hyper keeps in the
/// request's extensions: `Some(None)` when it has none. `None` for an HTTP/1.1 request, or
/// without the `http2` feature (the request is then judged as an HTTP/1.1 upgrade, and refused).
fn connect_protocol(version: http::Version, extensions: &http::Extensions) -> Option<Option<&str>> {
    #[cfg(feature = "http2")]
    if version == http::Version::HTTP_2 {
        return Some(
            extensions
                .get::<::hyper::ext::Protocol>()
                .map(|p| p.as_str()),
        );
    }
    let _ = (version, extensions);
    None
}

/// Accept `request`, parsed by hyper, as a WebSocket opening handshake, with the checks and
/// choices of `server`: RFC 6455 §4.2.1, the origin policy, the subprotocol (the first of the
/// server's list that the client offered), its limits and timeouts.
///
/// On success, return the `101 Switching Protocols` response (with `Sec-WebSocket-Accept` and the
/// selected `Sec-WebSocket-Protocol`), or for an HTTP/2 extended CONNECT the `200`, and spawn the
/// [`PendingUpgrade`]: it yields the WebSocket only after hyper has sent that response. The request's body is not touched; its upgrade
/// handle is taken (a second call finds none).
///
/// Reading the request head is hyper's part here, with hyper's limits: the builder's
/// [`max_head_size`](ServerBuilder::max_head_size) and
/// [`handshake_timeout`](ServerBuilder::handshake_timeout) do not apply (configure hyper's
/// `max_buf_size` and `header_read_timeout` instead). Everything else of the builder does.
///
/// # Errors
///
/// A [`Refusal`] carrying the answer to return instead of the `101` (or `200`):
/// [`Refusal::Handshake`] for a request that is not a valid opening handshake or whose origin is
/// refused, with the status and headers [`Incoming::accept`](crate::Incoming::accept) answers
/// (400, 403, 405, or 426 with `Sec-WebSocket-Version: 13`); [`Refusal::Connect`] for the same
/// over HTTP/2 (feature `http2`); [`Refusal::NoUpgrade`] (500) for a valid request that hyper
/// cannot upgrade: it did not come from a hyper connection, or its upgrade handle was already
/// taken. `request` is left as it was.
pub fn upgrade<B>(
    request: &mut http::Request<B>,
    server: &ServerBuilder,
) -> Result<(http::Response<String>, PendingUpgrade), Refusal> {
    let (method, uri, version) = (
        request.method().clone(),
        request.uri().clone(),
        request.version(),
    );
    let protocol = connect_protocol(version, request.extensions()).map(|p| p.map(str::to_owned));
    let accepted = negotiate(
        method,
        uri,
        version,
        protocol.as_ref().map(Option::as_deref),
        request.headers_mut(),
        server,
    )?;
    pending(accepted, request.extensions_mut(), server)
}

/// [`upgrade`] for a request already split into its parts, as in an axum extractor
/// (`FromRequestParts`) or a middleware.
///
/// # Errors
///
/// As [`upgrade`]; `parts` are then left as they were.
pub fn upgrade_parts(
    parts: &mut http::request::Parts,
    server: &ServerBuilder,
) -> Result<(http::Response<String>, PendingUpgrade), Refusal> {
    let protocol = connect_protocol(parts.version, &parts.extensions).map(|p| p.map(str::to_owned));
    let accepted = negotiate(
        parts.method.clone(),
        parts.uri.clone(),
        parts.version,
        protocol.as_ref().map(Option::as_deref),
        &mut parts.headers,
        server,
    )?;
    pending(accepted, &mut parts.extensions, server)
}

/// Run the server's checks on a request head, given as the form they take
/// (`http::Request<()>`) without copying it: the header map is moved in for the call and back
/// after it. (A standard `Method` is a plain value and a `Uri` shares its bytes: cloning them
/// copies nothing.) `connect` is `Some(:protocol)` for an HTTP/2 request (see
/// [`connect_protocol`]).
fn negotiate(
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    connect: Option<Option<&str>>,
    headers: &mut http::HeaderMap,
    server: &ServerBuilder,
) -> Result<Accepted, Refusal> {
    let mut head = http::Request::new(());
    *head.method_mut() = method;
    *head.uri_mut() = uri;
    *head.version_mut() = version;
    *head.headers_mut() = std::mem::take(headers);
    let negotiated = match connect {
        Some(protocol) => server
            .negotiate_connect(&head, protocol)
            .map_err(Refusal::Connect),
        None => server.negotiate(&head).map_err(Refusal::Handshake),
    };
    *headers = std::mem::take(head.headers_mut());
    negotiated.inspect_err(|e| {
        tracing::debug!(error = %e, status = %e.status(), "refused websocket request");
    })
}

/// The `101` for `accepted` and its pending WebSocket, if the request carries hyper's upgrade
/// handle (taken from `extensions`).
fn pending(
    accepted: Accepted,
    extensions: &mut http::Extensions,
    server: &ServerBuilder,
) -> Result<(http::Response<String>, PendingUpgrade), Refusal> {
    // Without the handle, a `101` would switch protocols on a connection nobody then serves.
    let Some(on_upgrade) = extensions.remove::<OnUpgrade>() else {
        tracing::debug!("websocket request without a hyper upgrade handle");
        return Err(Refusal::NoUpgrade);
    };
    let response = switching_protocols(&accepted);
    let pending = PendingUpgrade {
        on_upgrade,
        server: server.clone(),
        accepted: Some(accepted),
    };
    Ok((response, pending))
}

/// The answer accepting `accepted` for hyper to send: `101` for an HTTP/1.1 upgrade, `200` for
/// an HTTP/2 extended CONNECT, built by the core's handshake module as the HTTP/1.1 bytes of
/// [`Incoming::accept`](crate::Incoming::accept) are.
fn switching_protocols(accepted: &Accepted) -> http::Response<String> {
    // The status and the version come with the parts; hyper writes the version of its
    // connection whatever the response says.
    accepted.response_parts().map(|()| String::new())
}

/// The WebSocket of an accepted request, once hyper has sent the `101` and handed the connection
/// over. Resolves to a [`UpgradedWebSocket`] configured by the [`ServerBuilder`] (limits,
/// keepalive, timeouts, the selected subprotocol).
///
/// It resolves only after the response was returned to hyper, so await it in a spawned task,
/// never in the handler that returns the response.
///
/// # Errors
///
/// [`Error::Io`] when hyper does not upgrade the connection: the connection closed first, or
/// hyper serves it without upgrades (`with_upgrades` not called). The `io::Error` holds hyper's
/// error ([`get_ref`](std::io::Error::get_ref)) and shows its message.
///
/// # Drop behavior
///
/// Dropping it drops the connection as soon as hyper hands it over; the client sees the `101`,
/// then the connection close.
#[must_use = "the WebSocket exists only when the pending upgrade is awaited"]
pub struct PendingUpgrade {
    on_upgrade: OnUpgrade,
    server: ServerBuilder,
    /// Taken when the connection arrives.
    accepted: Option<Accepted>,
}

impl fmt::Debug for PendingUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingUpgrade")
            .field("accepted", &self.accepted)
            .finish_non_exhaustive()
    }
}

impl PendingUpgrade {
    /// The subprotocol the `101` selected.
    pub fn protocol(&self) -> Option<&str> {
        self.accepted
            .as_ref()
            .and_then(|a| a.negotiated.protocol.as_deref())
    }
}

impl Future for PendingUpgrade {
    type Output = Result<UpgradedWebSocket, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let upgraded = match Pin::new(&mut self.on_upgrade).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(upgraded)) => upgraded,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(std::io::Error::other(e)))),
        };
        let Some(accepted) = self.accepted.take() else {
            // Polled again after completion: a caller mistake, answered without panicking.
            return Poll::Ready(Err(Error::Io(std::io::Error::other(
                "pending upgrade polled after completion",
            ))));
        };
        // hyper keeps the bytes it read past the request head inside `Upgraded` and yields them
        // first, so there is no leftover to hand over here: pipelined frames arrive by reading.
        Poll::Ready(Ok(self.server.open(TokioIo::new(upgraded), accepted, &[])))
    }
}

/// A request that [`upgrade`] did not accept, and the answer to return for it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a valid opening handshake (RFC 6455 §4.2.1), or the origin policy refused it; the
    /// status is [`HandshakeError::status`].
    Handshake(HandshakeError),
    /// An HTTP/2 request that is not a valid extended CONNECT for a WebSocket (RFC 8441 §5), or
    /// whose origin the policy refused; the status is [`HandshakeError::status`], and the answer
    /// has no HTTP/1.1 connection headers (RFC 9113 §8.2.2).
    Connect(HandshakeError),
    /// A valid handshake that hyper cannot upgrade: the request did not come from a hyper
    /// connection (HTTP/1.1 with upgrades, or HTTP/2 with `enable_connect_protocol`), or its
    /// upgrade handle was already taken. The fault is the server's, hence `500`.
    NoUpgrade,
}

impl Refusal {
    /// The status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            // Statuses of handshake errors are valid codes (400 to 431); 400 stays the fallback.
            Refusal::Handshake(e) | Refusal::Connect(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            Refusal::NoUpgrade => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer, with the status, headers and plain-text body that
    /// [`Incoming::accept`](crate::Incoming::accept) sends for the same refusal, built by the
    /// same function of the core ([`reject_response`](gangway_proto::handshake::server::reject_response)):
    /// `Connection: close`; for 426 also `Upgrade: websocket` and `Sec-WebSocket-Version: 13`
    /// (RFC 6455 §4.2.2 item 4); for 405 `Allow: GET`. On HTTP/2 without the connection headers,
    /// and a 405 says `Allow: CONNECT`.
    pub fn response(&self) -> http::Response<String> {
        match self {
            Refusal::Handshake(e) => hs::reject_response(e, http::Version::HTTP_11),
            Refusal::Connect(e) => hs::reject_response(e, http::Version::HTTP_2),
            Refusal::NoUpgrade => {
                let body = format!("{self}\n");
                let mut response = http::Response::new(String::new());
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                *response.body_mut() = body;
                response
            }
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The body names the reason, as the HTTP/1.1 path's does.
            Refusal::Handshake(e) | Refusal::Connect(e) => fmt::Display::fmt(e, f),
            Refusal::NoUpgrade => f.write_str("connection cannot be upgraded"),
        }
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Refusal::Handshake(e) | Refusal::Connect(e) => e.source(),
            Refusal::NoUpgrade => None,
        }
    }
}

impl From<Refusal> for http::Response<String> {
    fn from(refusal: Refusal) -> Self {
        refusal.response()
    }
}

#[cfg(test)]
mod tests {
    use gangway_proto::handshake::ExtensionOffer;

    use super::*;

    /// Status, lowercased header lines in order, and body of an HTTP/1.1 response.
    fn split_response(bytes: &[u8]) -> (u16, Vec<(String, String)>, String) {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        (status.parse().unwrap(), headers, body.to_owned())
    }

    fn response_parts(response: &http::Response<String>) -> (u16, Vec<(String, String)>, String) {
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        (response.status().as_u16(), headers, response.body().clone())
    }

    fn request(headers: &[(&str, &str)]) -> http::Request<Vec<u8>> {
        let mut builder = http::Request::builder().uri("/chat");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(b"body bytes".to_vec()).unwrap()
    }

    const VALID: &[(&str, &str)] = &[
        ("Host", "server.example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Origin", "http://example.com"),
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        ("Sec-WebSocket-Version", "13"),
    ];

    #[test]
    fn refusals_answer_like_the_http1_path() {
        for err in [
            HandshakeError::MissingHeader("Host"),
            HandshakeError::InvalidHeader("Sec-WebSocket-Key", "not 16 bytes in base64"),
            HandshakeError::MethodNotAllowed,
            HandshakeError::UnsupportedVersion,
            HandshakeError::OriginRefused,
        ] {
            let ours = Refusal::Handshake(err.clone()).response();
            assert_eq!(
                response_parts(&ours),
                split_response(&hs::reject(&err)),
                "{err}"
            );
        }
    }

    #[test]
    fn refusal_without_upgrade_handle_is_a_server_error() {
        let response = Refusal::NoUpgrade.response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["connection"], "close");
        assert_eq!(response.body(), "connection cannot be upgraded\n");
    }

    #[test]
    fn switching_protocols_answers_like_the_http1_path() {
        for protocols in [&[][..], &["superchat", "chat"][..]] {
            let server = protocols
                .iter()
                .fold(ServerBuilder::new(), |s, p| s.protocol(*p));
            let (mut parts, _) = request(VALID).into_parts();
            let accepted = negotiate(
                parts.method.clone(),
                parts.uri.clone(),
                parts.version,
                None,
                &mut parts.headers,
                &server,
            )
            .unwrap();
            let ours = switching_protocols(&accepted);
            assert_eq!(response_parts(&ours), split_response(&accepted.response()));
            let expected_protocol = protocols.first().copied();
            assert_eq!(
                ours.headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.to_str().unwrap()),
                expected_protocol
            );
            assert_eq!(
                ours.headers()["sec-websocket-accept"],
                "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
            );
        }
    }

    #[test]
    fn accepted_extensions_are_answered_like_the_http1_path() {
        let (mut parts, _) = request(VALID).into_parts();
        let mut accepted = negotiate(
            parts.method.clone(),
            parts.uri.clone(),
            parts.version,
            None,
            &mut parts.headers,
            &ServerBuilder::new(),
        )
        .unwrap();
        let deflate = |bits: &str| ExtensionOffer {
            name: "permessage-deflate".into(),
            params: vec![
                ("server_no_context_takeover".into(), None),
                ("client_max_window_bits".into(), Some(bits.into())),
            ],
        };
        accepted.negotiated.extensions = vec![deflate("10"), deflate("9")];
        let ours = switching_protocols(&accepted);
        assert_eq!(response_parts(&ours), split_response(&accepted.response()));
        assert!(ours.headers()["sec-websocket-extensions"]
            .to_str()
            .unwrap()
            .starts_with("permessage-deflate; server_no_context_takeover"));
    }

    #[test]
    fn refused_request_is_left_as_it_was() {
        let server = ServerBuilder::new().allowed_origins(["https://elsewhere.example"]);
        let mut req = request(VALID);
        // A handle that upgrades nothing (none of hyper's connections is behind this request).
        let handle = ::hyper::upgrade::on(http::Request::new(()));
        req.extensions_mut().insert(handle);
        let before = req.headers().clone();
        assert_eq!(
            upgrade(&mut req, &server).unwrap_err(),
            Refusal::Handshake(HandshakeError::OriginRefused)
        );
        assert_eq!(req.headers(), &before);
        assert_eq!(req.body(), b"body bytes");
        assert_eq!(req.uri(), "/chat");
        // The upgrade handle stays for whoever answers the request instead.
        assert!(req.extensions().get::<OnUpgrade>().is_some());

        let (mut parts, _) = req.into_parts();
        assert_eq!(
            upgrade_parts(&mut parts, &server).unwrap_err(),
            Refusal::Handshake(HandshakeError::OriginRefused)
        );
        assert_eq!(parts.headers, before);
        assert!(parts.extensions.get::<OnUpgrade>().is_some());
    }

    #[test]
    fn valid_request_without_upgrade_handle_is_refused_with_500() {
        let mut req = request(VALID);
        let refusal = upgrade(&mut req, &ServerBuilder::new()).unwrap_err();
        assert_eq!(refusal, Refusal::NoUpgrade);
        // A bad request is judged first: its answer says what the client did wrong.
        let mut bad = request(&VALID[..6]);
        let refusal = upgrade(&mut bad, &ServerBuilder::new()).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::Handshake(HandshakeError::MissingHeader("Sec-WebSocket-Version"))
        );
        assert_eq!(refusal.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn upgrade_requests_are_recognized_by_token() {
        assert!(is_upgrade_request(&request(&[(
            "Upgrade",
            "h2c, WebSocket"
        )])));
        assert!(!is_upgrade_request(&request(&[("Upgrade", "h2c")])));
        assert!(!is_upgrade_request(&request(&[])));
    }
}
