//! The adapter's error: the core's errors plus I/O, TLS, proxies and timeouts.

use std::borrow::Cow;
use std::fmt;

use gangway_proto::{ApiMisuse, HandshakeError, ProtocolError, TimeoutError};

use crate::ProxyError;

/// Anything that can go wrong on a gangway connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    Io(std::io::Error),
    /// The opening handshake failed (refused by us, or by the peer).
    Handshake(HandshakeError),
    /// The peer broke the protocol; the matching close frame was sent.
    Protocol(ProtocolError),
    /// The call is not allowed in the connection's state, or its arguments are not.
    Api(ApiMisuse),
    /// The opening handshake, or the close handshake, took longer than allowed.
    Timeout,
    /// The peer stopped responding: nothing received for the idle timeout, or output not taken
    /// for the write timeout ([`Config`](gangway_proto::Config)). The connection was dropped
    /// without a close frame (close code 1006, RFC 6455 §7.1.5).
    Unresponsive(TimeoutError),
    /// TLS failed: the handshake (a certificate refused, an alert from the peer), or loading
    /// certificates and keys. The cause comes through [`source`](std::error::Error::source).
    Tls(TlsError),
    /// The proxy could not be reached, or refused to open a tunnel to the server.
    Proxy(ProxyError),
    /// WebSocket over HTTP/2 (RFC 8441) is not possible with this server, or its HTTP/2
    /// connection failed (feature `http2`).
    #[cfg(feature = "http2")]
    Http2(crate::http2::Http2Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(_) => f.write_str("i/o error"),
            Error::Handshake(_) => f.write_str("websocket handshake failed"),
            Error::Protocol(_) => f.write_str("websocket protocol error"),
            Error::Api(_) => f.write_str("invalid use of the websocket"),
            Error::Timeout => f.write_str("timed out"),
            Error::Unresponsive(_) => f.write_str("connection lost"),
            Error::Tls(_) => f.write_str("tls error"),
            Error::Proxy(_) => f.write_str("proxy error"),
            #[cfg(feature = "http2")]
            Error::Http2(_) => f.write_str("http/2 error"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Handshake(e) => Some(e),
            Error::Protocol(e) => Some(e),
            Error::Api(e) => Some(e),
            Error::Timeout => None,
            Error::Unresponsive(e) => Some(e),
            Error::Tls(e) => Some(e),
            Error::Proxy(e) => Some(e),
            #[cfg(feature = "http2")]
            Error::Http2(e) => Some(e),
        }
    }
}

impl From<std::io::Error> for Error {
    /// [`Error::Io`], or [`Error::Tls`] when the I/O error is TLS failing (the TLS stream reports
    /// a refused certificate or a peer's alert as an I/O error wrapping the TLS error).
    fn from(e: std::io::Error) -> Self {
        #[cfg(feature = "rustls")]
        let e = match e.downcast::<rustls::Error>() {
            Ok(tls) => {
                let tls = crate::tls::Explained::new(tls, None);
                return Error::Tls(TlsError::new("tls connection failed", tls));
            }
            Err(e) => e,
        };
        Error::Io(e)
    }
}

impl From<TlsError> for Error {
    fn from(e: TlsError) -> Self {
        Error::Tls(e)
    }
}

impl From<ProxyError> for Error {
    fn from(e: ProxyError) -> Self {
        Error::Proxy(e)
    }
}

/// What failed with TLS, in words, and the underlying cause (a TLS error, an I/O error, a
/// malformed PEM file) as its [`source`](std::error::Error::source).
#[derive(Debug)]
pub struct TlsError {
    context: Cow<'static, str>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl TlsError {
    /// `context` says what was being done (lowercase, e.g. "tls handshake with example.com
    /// failed"); `source` why it failed.
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    pub(crate) fn new(
        context: impl Into<Cow<'static, str>>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        TlsError {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// An error without a further cause.
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    pub(crate) fn msg(context: impl Into<Cow<'static, str>>) -> Self {
        TlsError {
            context: context.into(),
            source: None,
        }
    }

    /// The TLS library's error, when that is the cause (e.g. to tell an expired certificate
    /// from one for another host: `rustls::Error::InvalidCertificate`). A server certificate
    /// that nothing trusted vouches for is `CertificateError::UnknownIssuer`, self-signed or
    /// not ([`untrusted_certificate`](Self::untrusted_certificate) tells which).
    #[cfg(feature = "rustls")]
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        let mut cause = self.first_cause();
        while let Some(e) = cause {
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            if let Some(explained) = e.downcast_ref::<crate::tls::Explained>() {
                return Some(explained.rustls_error());
            }
            cause = e.source();
        }
        None
    }

    /// Why the server's certificate was refused as untrusted, when it was: self-signed, or
    /// issued by a CA that is not trusted. `None` for any other failure (a certificate for
    /// another name, expired, a refused handshake). A tool can tell its user how to trust the
    /// certificate from this (`gangway connect` suggests `--cacert FILE`).
    #[cfg(feature = "rustls")]
    pub fn untrusted_certificate(&self) -> Option<crate::tls::UntrustedCertificate> {
        let mut cause = self.first_cause();
        while let Some(e) = cause {
            if let Some(explained) = e.downcast_ref::<crate::tls::Explained>() {
                return explained.untrusted_certificate();
            }
            if let Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )) = e.downcast_ref::<rustls::Error>()
            {
                return Some(crate::tls::UntrustedCertificate::UnknownIssuer);
            }
            cause = e.source();
        }
        None
    }

    /// The first cause in the chain.
    #[cfg(feature = "rustls")]
    fn first_cause(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.source {
            Some(s) => Some(s.as_ref()),
            None => None,
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.source {
            Some(s) => Some(s.as_ref()),
            None => None,
        }
    }
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        Error::Handshake(e)
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
    }
}

impl From<TimeoutError> for Error {
    fn from(e: TimeoutError) -> Self {
        Error::Unresponsive(e)
    }
}

impl From<ApiMisuse> for Error {
    fn from(e: ApiMisuse) -> Self {
        Error::Api(e)
    }
}
