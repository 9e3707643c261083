//! The client side of the opening handshake (RFC 6455 §4.1, §4.2.2 checks in §4.1 "the client
//! MUST").

use crate::config::DEFAULT_MAX_HEAD_SIZE;
use crate::error::{ApiMisuse, HandshakeError};
use crate::handshake::{Negotiated, Parsed};
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
    _private: (),
}

impl ClientHandshake {
    /// Build the request for `uri` (`ws://` or `wss://`, host required; the path and query are the
    /// request target, `/` if empty). `Host` carries the port when it is not the scheme's default.
    /// A fresh key is drawn from `rng`.
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::InvalidUrl`] for a URI that is not a WebSocket URL (or has a fragment, RFC 6455
    /// §3), [`ApiMisuse::InvalidHeader`] for an extra header that cannot be sent.
    pub fn new(
        uri: &http::Uri,
        options: &ClientOptions,
        rng: &mut dyn RandomSource,
    ) -> Result<Self, ApiMisuse> {
        let _ = (uri, options, rng);
        todo!()
    }

    /// The `Sec-WebSocket-Key` sent.
    pub fn key(&self) -> &str {
        todo!()
    }

    /// The request head, ready to write.
    pub fn request(&self) -> &[u8] {
        todo!()
    }

    /// Parse and check the response received so far.
    ///
    /// # Errors
    ///
    /// A [`HandshakeError`] naming what was wrong: malformed or oversized head, status other than
    /// 101, `Upgrade`/`Connection` tokens missing, zero or several `Sec-WebSocket-Accept` or a
    /// mismatch, a subprotocol or extension that was not offered.
    pub fn parse_response(
        &self,
        buf: &[u8],
    ) -> Result<Parsed<(http::Response<()>, Negotiated)>, HandshakeError> {
        let _ = buf;
        todo!()
    }
}
