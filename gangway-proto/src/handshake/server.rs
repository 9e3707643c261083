//! The server side of the opening handshake (RFC 6455 §4.2).

use crate::error::HandshakeError;
use crate::handshake::{ExtensionOffer, Parsed};

/// What a valid upgrade request offered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientOffer {
    /// `Sec-WebSocket-Key`, trimmed, as sent (already checked to be 16 bytes in base64).
    pub key: String,
    /// Offered subprotocols in the client's order.
    pub protocols: Vec<String>,
    /// Offered extensions in the client's order.
    pub extensions: Vec<ExtensionOffer>,
    /// The `Origin` header, if any.
    pub origin: Option<String>,
}

/// Parse a request head received so far (HTTP/1.1, `httparse`).
///
/// # Errors
///
/// [`HandshakeError::HeadTooLarge`] once more than `max_head_size` bytes hold no complete head,
/// [`HandshakeError::MalformedHttp`] for bytes that are not an HTTP request.
pub fn parse_request(
    buf: &[u8],
    max_head_size: usize,
) -> Result<Parsed<http::Request<()>>, HandshakeError> {
    let _ = (buf, max_head_size);
    todo!()
}

/// Whether the request asks for a WebSocket upgrade at all (an `Upgrade` header naming
/// `websocket`). A server that also serves plain HTTP answers other requests itself; requests
/// that return `true` go to [`check_request`].
pub fn is_upgrade_request(req: &http::Request<()>) -> bool {
    let _ = req;
    todo!()
}

/// Check everything RFC 6455 §4.2.1 requires of the request.
///
/// # Errors
///
/// The first failure: method not GET (405), HTTP before 1.1, `Host` absent or repeated,
/// `Upgrade` without `websocket` or `Connection` without `upgrade` (token lists across all lines,
/// case-insensitive), `Sec-WebSocket-Key` absent, repeated or not 16 bytes in base64,
/// `Sec-WebSocket-Version` absent or repeated (400) or not 13 (426), a repeated
/// `Sec-WebSocket-Protocol`-style header that must appear once, malformed extensions.
pub fn check_request(req: &http::Request<()>) -> Result<ClientOffer, HandshakeError> {
    let _ = req;
    todo!()
}

/// The `101 Switching Protocols` response accepting `offer`, with the selected subprotocol and the
/// accepted extensions (already validated by the caller against the offer), ready to write.
pub fn accept(
    offer: &ClientOffer,
    protocol: Option<&str>,
    extensions: &[ExtensionOffer],
) -> Vec<u8> {
    let _ = (offer, protocol, extensions);
    todo!()
}

/// The response refusing a request for `err`: its [`HandshakeError::status`], a short plain-text
/// body naming the reason, `Connection: close`, and for 426 `Sec-WebSocket-Version: 13`.
pub fn reject(err: &HandshakeError) -> Vec<u8> {
    let _ = err;
    todo!()
}

/// Serialize an HTTP/1.1 response head and body (for servers that answer plain requests too,
/// e.g. a page at `/`). `Content-Length` is added when absent.
pub fn encode_response(response: &http::Response<()>, body: &[u8]) -> Vec<u8> {
    let _ = (response, body);
    todo!()
}
