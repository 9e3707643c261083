//! How `gangway connect` ends: one `gangway: ...` line on stderr and an exit status numbered as
//! curl numbers its own (`man curl`, EXIT CODES) wherever curl has the same failure, so a script
//! written around curl reads gangway's statuses the same way. `1` is kept for what curl has no
//! number for.
//!
//! Each failure also says whether `--reconnect` may try again: a server that is down, restarting
//! or unreachable for a while is worth another attempt; a refused certificate, a bad URL or a
//! server that answers "not found" is not, since the next attempt would meet the same answer.

use std::io;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use gangway::proto::{ApiMisuse, HandshakeError, ProtocolError};
use gangway::tls::{rustls, UntrustedCertificate};
use gangway::{Error, ProxyError};

use crate::causes;

/// The exit statuses; each names curl's constant of the same number.
pub(crate) mod code {
    /// A clean close, whichever side started it.
    pub(crate) const OK: u8 = 0;
    /// Nothing else fits: a stdin line that is not UTF-8 in text mode, an internal error.
    pub(crate) const OTHER: u8 = 1;
    /// Usage: options clap refuses, or a header the handshake cannot send
    /// (`CURLE_FAILED_INIT`, which curl also uses for its usage errors).
    pub(crate) const USAGE: u8 = 2;
    /// The URL is not a WebSocket URL (`CURLE_URL_MALFORMAT`).
    pub(crate) const BAD_URL: u8 = 3;
    /// The proxy's name did not resolve, or the proxy URL is malformed
    /// (`CURLE_COULDNT_RESOLVE_PROXY`, which curl also uses for a malformed proxy).
    pub(crate) const PROXY_RESOLVE: u8 = 5;
    /// The server's name did not resolve (`CURLE_COULDNT_RESOLVE_HOST`).
    pub(crate) const RESOLVE: u8 = 6;
    /// The TCP connection (to the server or the proxy) failed (`CURLE_COULDNT_CONNECT`).
    pub(crate) const CONNECT: u8 = 7;
    /// A `101` answer that is not a valid upgrade (`CURLE_WEIRD_SERVER_REPLY`).
    pub(crate) const WEIRD_REPLY: u8 = 8;
    /// `--http2`: the server does not offer WebSockets over HTTP/2 (ALPN chose no `h2`, or no
    /// extended CONNECT), or the HTTP/2 connection failed (`CURLE_HTTP2`).
    pub(crate) const HTTP2: u8 = 16;
    /// The server answered the upgrade with another status (`CURLE_HTTP_RETURNED_ERROR`; curl
    /// reports a refused WebSocket upgrade with it too).
    pub(crate) const HTTP_STATUS: u8 = 22;
    /// Writing stdout failed (`CURLE_WRITE_ERROR`).
    pub(crate) const WRITE: u8 = 23;
    /// Reading stdin failed (`CURLE_READ_ERROR`).
    pub(crate) const READ: u8 = 26;
    /// A timer ran out (`CURLE_OPERATION_TIMEDOUT`).
    pub(crate) const TIMEOUT: u8 = 28;
    /// The TLS handshake failed, other than the server's certificate (`CURLE_SSL_CONNECT_ERROR`).
    pub(crate) const TLS: u8 = 35;
    /// The server closed the connection without answering the upgrade (`CURLE_GOT_NOTHING`).
    pub(crate) const EMPTY_REPLY: u8 = 52;
    /// The open connection was lost or broken by the peer (`CURLE_RECV_ERROR`).
    pub(crate) const RECV: u8 = 56;
    /// The peer closed with a close code that reports a failure (1002-2999: protocol error,
    /// invalid payload, message too big, internal error, ...). No curl failure matches; curl
    /// leaves 57 unused.
    pub(crate) const PEER_ERROR: u8 = 57;
    /// `--cert`/`--key` cannot be used (`CURLE_SSL_CERTPROBLEM`).
    pub(crate) const CLIENT_CERT: u8 = 58;
    /// The server's certificate was refused (`CURLE_PEER_FAILED_VERIFICATION`).
    pub(crate) const PEER_CERT: u8 = 60;
    /// `--cacert` cannot be used (`CURLE_SSL_CACERT_BADFILE`).
    pub(crate) const CA_FILE: u8 = 77;
    /// The proxy refused the tunnel or broke its protocol (`CURLE_PROXY`).
    pub(crate) const PROXY: u8 = 97;
    /// Ctrl-C (SIGINT): close 1001 was sent. 128 + 2, the status a shell gives a program
    /// killed by SIGINT.
    pub(crate) const INTERRUPTED: u8 = 130;
}

/// Why a connection attempt or a session ended badly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The text after `gangway: `, on one line.
    pub(crate) message: String,
    /// The exit status.
    pub(crate) code: u8,
    /// Whether `--reconnect` tries again after it.
    pub(crate) transient: bool,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>, transient: bool) -> Failure {
        Failure {
            message: message.into(),
            code,
            transient,
        }
    }

    /// Print the line and give the status.
    pub(crate) fn report(&self) -> ExitCode {
        eprintln!("gangway: {}", self.message);
        ExitCode::from(self.code)
    }

    /// An option that could not be turned into settings (the URL, a proxy URL, a file).
    pub(crate) fn setup(e: &Error, file_code: u8) -> Failure {
        match e {
            Error::Api(a @ (ApiMisuse::InvalidUrl(_) | ApiMisuse::InvalidPort(_))) => {
                Failure::new(code::BAD_URL, causes(a), false)
            }
            Error::Api(a) => Failure::new(code::USAGE, causes(a), false),
            Error::Proxy(p) => Failure::new(code::PROXY_RESOLVE, causes(p), false),
            Error::Tls(t) => Failure::new(file_code, causes(t), false),
            other => Failure::new(code::OTHER, causes(other), false),
        }
    }

    /// A failed connection attempt: TCP (and proxy), TLS, or the opening handshake. `host` is
    /// the server's name from the URL, `timeout` the bound on the whole attempt, `cacert` the
    /// file of `--cacert`.
    pub(crate) fn connect(
        e: &Error,
        host: &str,
        timeout: Duration,
        cacert: Option<&Path>,
    ) -> Failure {
        match e {
            Error::Io(io) => connect_io(io, host),
            Error::Handshake(HandshakeError::UnexpectedStatus(status)) => Failure::new(
                code::HTTP_STATUS,
                format!("handshake failed: unexpected status {status}"),
                // As curl's --retry: a timeout, too many requests, or a server-side failure
                // may go away; any other status will be given again.
                matches!(status, 408 | 429 | 500..=599),
            ),
            Error::Handshake(h) => Failure::new(
                code::WEIRD_REPLY,
                format!("handshake failed: {}", causes(h)),
                false,
            ),
            Error::Timeout => Failure::new(
                code::TIMEOUT,
                format!(
                    "connection failed: timed out after {} (connect and opening handshake)",
                    seconds(timeout)
                ),
                true,
            ),
            // "tls handshake with HOST failed: invalid peer certificate: ..." and the like.
            Error::Tls(t) => {
                let refused_certificate =
                    matches!(t.rustls_error(), Some(rustls::Error::InvalidCertificate(_)));
                let status = if refused_certificate {
                    code::PEER_CERT
                } else {
                    code::TLS
                };
                let mut message = causes(t);
                if let Some(untrusted) = t.untrusted_certificate() {
                    message.push_str(&trust_hint(untrusted, cacert));
                }
                Failure::new(status, message, false)
            }
            Error::Proxy(p) => proxy(p),
            Error::Http2(h) => Failure::new(code::HTTP2, causes(h), false),
            Error::Api(a @ (ApiMisuse::InvalidUrl(_) | ApiMisuse::InvalidPort(_))) => {
                Failure::new(code::BAD_URL, causes(a), false)
            }
            // A header or subprotocol the handshake refuses to send: the command line's fault.
            Error::Api(a) => Failure::new(code::USAGE, causes(a), false),
            other => Failure::new(
                code::OTHER,
                format!("connection failed: {}", causes(other)),
                false,
            ),
        }
    }

    /// A failure of an open session.
    pub(crate) fn session(e: &Error) -> Failure {
        match e {
            Error::Protocol(ProtocolError::UnexpectedEof) => Failure::new(
                code::RECV,
                format!("connection lost: {}", ProtocolError::UnexpectedEof),
                true,
            ),
            // The peer broke the protocol and was told so; a new connection would meet the
            // same peer, so --reconnect stops here.
            Error::Protocol(p) => Failure::new(
                code::RECV,
                format!("protocol error: {p} (sent close {})", p.close_code()),
                false,
            ),
            Error::Io(io) => {
                Failure::new(code::RECV, format!("connection lost: {}", causes(io)), true)
            }
            // A TLS record that failed (a bad MAC, an alert): the connection is gone.
            Error::Tls(t) => {
                Failure::new(code::RECV, format!("connection lost: {}", causes(t)), true)
            }
            // During a session this timer is the close handshake's (RFC 6455 §7.1.1: the
            // peer's close frame, then the server's EOF).
            Error::Timeout => Failure::new(
                code::TIMEOUT,
                "connection lost: close handshake timed out",
                true,
            ),
            // The idle or write timeout: the server went silent, or stopped reading.
            Error::Unresponsive(t) => {
                Failure::new(code::TIMEOUT, format!("connection lost: {t}"), true)
            }
            other => Failure::new(code::OTHER, causes(other), false),
        }
    }

    /// The stream ended without a close frame and without an error.
    pub(crate) fn no_close_frame() -> Failure {
        Failure::new(
            code::RECV,
            "connection lost: closed without a close frame",
            true,
        )
    }
}

/// How to trust a certificate that is not, as curl points to its own `--cacert`: ` (give it
/// with --cacert FILE to trust it)`, or what the file given lacks.
fn trust_hint(untrusted: UntrustedCertificate, cacert: Option<&Path>) -> String {
    match (untrusted, cacert) {
        (UntrustedCertificate::SelfSigned, None) => {
            " (give it with --cacert FILE to trust it)".to_owned()
        }
        (UntrustedCertificate::SelfSigned, Some(file)) => {
            format!(" (not in --cacert {})", file.display())
        }
        (UntrustedCertificate::UnknownIssuer, None) => {
            " (give the ca's certificate with --cacert FILE to trust it)".to_owned()
        }
        (UntrustedCertificate::UnknownIssuer, Some(file)) => {
            format!(" (its ca is not in --cacert {})", file.display())
        }
        // A reason this version does not know has no hint.
        _ => String::new(),
    }
}

/// An I/O error while connecting directly: name resolution, TCP, or the handshake's exchange.
fn connect_io(io: &io::Error, host: &str) -> Failure {
    if let Some(why) = lookup_failure(io) {
        return Failure::new(
            code::RESOLVE,
            format!("could not resolve host {host}: {why}"),
            true,
        );
    }
    let status = match io.kind() {
        // The server closed the connection before any answer (what the library reports when
        // the stream ends inside the response head).
        io::ErrorKind::UnexpectedEof => code::EMPTY_REPLY,
        // Connected, then the server reset the connection while we waited for its answer.
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => code::RECV,
        _ => code::CONNECT,
    };
    let why = causes(io);
    // "cannot connect to 127.0.0.1:9001: connection refused" says it all already.
    let message = if why.starts_with("cannot connect to ") {
        why
    } else {
        format!("connection failed: {why}")
    };
    Failure::new(status, message, true)
}

/// What the proxy did.
fn proxy(p: &ProxyError) -> Failure {
    let line = causes(p);
    match p {
        ProxyError::InvalidUrl { .. } => Failure::new(code::PROXY_RESOLVE, line, false),
        ProxyError::Io { source, .. } => {
            let status = if lookup_failure(source).is_some() {
                code::PROXY_RESOLVE
            } else if is_connect_failure(source) {
                code::CONNECT
            } else {
                code::PROXY
            };
            Failure::new(status, line, true)
        }
        // 502/503/504: the proxy could not reach the server (yet); 407/403 will not change.
        ProxyError::Status { status, .. } => {
            Failure::new(code::PROXY, line, matches!(status, 500..=599))
        }
        // RFC 1928 §6: general failure, network or host unreachable, connection refused, TTL
        // expired may pass; "not allowed by ruleset" and unsupported requests will not.
        ProxyError::SocksRefused { code: reply, .. } => {
            Failure::new(code::PROXY, line, matches!(reply, 1 | 3..=6))
        }
        _ => Failure::new(code::PROXY, line, false),
    }
}

/// The resolver's own words, if `io` is a failed name lookup. The standard library reports
/// these as "failed to lookup address information: WHY" (getaddrinfo's message) with no error
/// kind of their own, and tokio as "could not resolve to any address" when the name resolves to
/// nothing.
fn lookup_failure(io: &io::Error) -> Option<String> {
    let text = io.to_string();
    if let Some(why) = text.strip_prefix("failed to lookup address information: ") {
        return Some(why.to_owned());
    }
    (io.kind() == io::ErrorKind::InvalidInput && text == "could not resolve to any address")
        .then_some(text)
}

/// Whether `io` is a TCP connect that did not get through.
fn is_connect_failure(io: &io::Error) -> bool {
    matches!(
        io.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::TimedOut
    )
}

/// `0.5s`, `10s`: a duration as the options take it.
pub(crate) fn seconds(d: Duration) -> String {
    let text = format!("{:.3}", d.as_secs_f64());
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN: Duration = Duration::from_secs(10);

    #[test]
    fn connect_failures_take_curls_numbers() {
        let refused = Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        let f = Failure::connect(&refused, "h", TEN, None);
        assert_eq!((f.code, f.transient), (code::CONNECT, true));
        assert!(
            f.message.starts_with("connection failed: "),
            "{}",
            f.message
        );

        let status = Error::Handshake(HandshakeError::UnexpectedStatus(404));
        let f = Failure::connect(&status, "h", TEN, None);
        assert_eq!(f.message, "handshake failed: unexpected status 404");
        assert_eq!((f.code, f.transient), (code::HTTP_STATUS, false));
        let busy = Error::Handshake(HandshakeError::UnexpectedStatus(503));
        assert!(Failure::connect(&busy, "h", TEN, None).transient);

        let accept = Error::Handshake(HandshakeError::AcceptMismatch);
        assert_eq!(
            Failure::connect(&accept, "h", TEN, None).code,
            code::WEIRD_REPLY
        );

        let f = Failure::connect(&Error::Timeout, "h", Duration::from_millis(500), None);
        assert_eq!(f.code, code::TIMEOUT);
        assert_eq!(
            f.message,
            "connection failed: timed out after 0.5s (connect and opening handshake)"
        );

        let eof = Error::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed during the opening handshake",
        ));
        assert_eq!(
            Failure::connect(&eof, "h", TEN, None).code,
            code::EMPTY_REPLY
        );

        let url = Error::Api(ApiMisuse::InvalidUrl("scheme is not ws or wss"));
        let f = Failure::connect(&url, "h", TEN, None);
        assert_eq!((f.code, f.transient), (code::BAD_URL, false));
        assert_eq!(f.message, "invalid websocket url: scheme is not ws or wss");
    }

    #[test]
    fn a_failed_lookup_is_told_from_a_refused_connection() {
        let lookup =
            io::Error::other("failed to lookup address information: Name or service not known");
        let f = Failure::connect(&Error::Io(lookup), "echo.invalid", TEN, None);
        assert_eq!(f.code, code::RESOLVE);
        assert_eq!(
            f.message,
            "could not resolve host echo.invalid: Name or service not known"
        );
        let nothing = io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        );
        assert_eq!(
            Failure::connect(&Error::Io(nothing), "h", TEN, None).code,
            code::RESOLVE
        );
    }

    #[test]
    fn proxy_failures_say_whether_they_may_pass() {
        let refused = ProxyError::Status {
            proxy: "p:3128".into(),
            status: 407,
            reason: "Proxy Authentication Required".into(),
        };
        let f = Failure::connect(&Error::Proxy(refused), "h", TEN, None);
        assert_eq!((f.code, f.transient), (code::PROXY, false));
        let gateway = ProxyError::Status {
            proxy: "p:3128".into(),
            status: 502,
            reason: String::new(),
        };
        assert!(Failure::connect(&Error::Proxy(gateway), "h", TEN, None).transient);
        let down = ProxyError::Io {
            proxy: "p:3128".into(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(
            Failure::connect(&Error::Proxy(down), "h", TEN, None).code,
            code::CONNECT
        );
        let bad = ProxyError::InvalidUrl {
            url: "ftp://x".into(),
            reason: "unsupported scheme",
        };
        assert_eq!(
            Failure::setup(&Error::Proxy(bad), code::OTHER).code,
            code::PROXY_RESOLVE
        );
    }

    #[test]
    fn session_failures_are_receive_errors_or_timeouts() {
        let f = Failure::session(&Error::Protocol(ProtocolError::InvalidUtf8));
        assert_eq!(f.message, "protocol error: invalid utf-8 (sent close 1007)");
        assert_eq!((f.code, f.transient), (code::RECV, false));
        let f = Failure::session(&Error::Protocol(ProtocolError::UnexpectedEof));
        assert!(f.message.starts_with("connection lost: "), "{}", f.message);
        assert_eq!((f.code, f.transient), (code::RECV, true));
        let f = Failure::session(&Error::Unresponsive(gangway::proto::TimeoutError::Idle));
        assert_eq!(f.message, "connection lost: peer idle timeout");
        assert_eq!((f.code, f.transient), (code::TIMEOUT, true));
    }

    #[test]
    fn seconds_print_as_the_options_take_them() {
        assert_eq!(seconds(Duration::from_millis(500)), "0.5s");
        assert_eq!(seconds(Duration::from_secs(30)), "30s");
        assert_eq!(seconds(Duration::from_millis(1375)), "1.375s");
    }
}
