//! WebSocket over HTTP/2 (RFC 8441, feature `http2`): both roles, on the `h2` crate.
//!
//! An HTTP/2 server that sends `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1` (RFC 8441 §3) accepts
//! WebSockets as streams: the client sends an extended CONNECT with `:protocol = websocket` and
//! the usual `sec-websocket-*` headers (no key), the server answers `200`, and the stream's DATA
//! frames then carry the WebSocket's bytes. Many WebSockets and ordinary requests share one
//! connection, each with its own flow control. Nothing else changes: the handshake's checks and
//! choices are the core's (`gangway_proto::handshake`), and the WebSocket is the same
//! [`WebSocket`](crate::WebSocket), running over an [`H2Stream`].
//!
//! ```text
//!   client                                   server
//!   Http2Connection::connect ── TLS (ALPN h2) or h2c ──► ServerBuilder::accept_http2
//!        ◄──────────── SETTINGS (ENABLE_CONNECT_PROTOCOL = 1) ────────────
//!   .websocket(url) ── HEADERS :method CONNECT, :protocol websocket ──► Http2Server::accept
//!        ◄──────────────────── HEADERS :status 200 ─────────────────── Http2Incoming::accept
//!   WebSocket<H2Stream> ◄══════ DATA frames (RFC 6455 frames) ═══════► WebSocket<H2Stream>
//!   close: END_STREAM (as a FIN) · lost: RST_STREAM (1006)
//! ```
//!
//! - Servers: [`ServerBuilder::accept_http2`](crate::ServerBuilder::accept_http2) on a
//!   transport that speaks HTTP/2 (TLS whose ALPN chose `h2`, or cleartext with prior
//!   knowledge), then [`Http2Server::accept`] for each request. Inside hyper or axum,
//!   `gangway::hyper::upgrade` accepts extended CONNECT requests too.
//! - Clients: [`ClientBuilder::http2`](crate::ClientBuilder::http2) for one WebSocket (with an
//!   optional fallback to HTTP/1.1), [`Http2Connection`] for several on one connection.
//!
//! Flow control: each stream may have 128 KiB in flight each way, and the connection 16 MiB:
//! a WebSocket that is not read holds its own stream's window only, so 128 of them can stall
//! before the others notice. A server allows 128 concurrent streams per connection.

mod client;
mod rewind;
mod server;
mod stream;

use std::fmt;

pub use client::{ClientStream, Http2, Http2Builder, Http2Connection};
pub use rewind::Rewind;
pub use server::{Http2Incoming, Http2Server};
pub use stream::H2Stream;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4), which an HTTP/1.1 parser refuses:
/// its request line says `HTTP/2.0`.
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The preface as a request (`PRI * HTTP/2.0`), when `read` starts with all of it.
pub(crate) fn prior_knowledge(read: &[u8]) -> Option<http::Request<()>> {
    if !read.starts_with(PREFACE) {
        return None;
    }
    let mut request = http::Request::new(());
    *request.method_mut() = http::Method::from_bytes(b"PRI").ok()?;
    *request.uri_mut() = http::Uri::from_static("*");
    *request.version_mut() = http::Version::HTTP_2;
    Some(request)
}

/// Set once a client's HTTP/2 connection is closed: its driver task (which writes what the
/// streams queued) has finished. A program that ends right after its WebSocket waits for it,
/// or the last frames, still in the connection's buffer, would be lost with the process.
#[derive(Debug, Default)]
pub(crate) struct ConnectionClosed {
    closed: std::sync::atomic::AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl ConnectionClosed {
    fn set(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.waker.wake();
    }

    /// Resolves once [`set`](Self::set) was called.
    async fn wait(self: std::sync::Arc<Self>) {
        std::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            if self.closed.load(std::sync::atomic::Ordering::Acquire) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }
}

/// Why WebSocket over HTTP/2 failed ([`Error::Http2`](crate::Error::Http2)).
#[derive(Debug)]
#[non_exhaustive]
pub enum Http2Error {
    /// The server speaks HTTP/2 but did not enable the extended CONNECT
    /// (`SETTINGS_ENABLE_CONNECT_PROTOCOL`, RFC 8441 §3): it cannot carry WebSockets over
    /// HTTP/2. Use HTTP/1.1 ([`Http2::Preferred`] falls back to it).
    ExtendedConnectDisabled,
    /// TLS did not choose HTTP/2: the server's ALPN answer was not `h2`.
    NotNegotiated,
    /// The HTTP/2 connection or stream failed: what was being done, and h2's error.
    Failed {
        /// What was being done, e.g. "http/2 handshake failed".
        context: &'static str,
        /// The cause.
        source: h2::Error,
    },
}

impl Http2Error {
    pub(crate) fn new(context: &'static str, source: h2::Error) -> Self {
        Http2Error::Failed { context, source }
    }
}

impl fmt::Display for Http2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Http2Error::ExtendedConnectDisabled => {
                f.write_str("the server did not enable websockets over http/2 (extended connect)")
            }
            Http2Error::NotNegotiated => f.write_str("the server did not choose http/2 (alpn)"),
            Http2Error::Failed { context, .. } => f.write_str(context),
        }
    }
}

impl std::error::Error for Http2Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Http2Error::Failed { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Window sizes and limits of the connections made here (see the module's docs).
#[derive(Clone, Copy, Debug)]
struct Settings {
    /// Bytes each stream may have in flight toward us.
    stream_window: u32,
    /// Streams a client may have open at once on a server's connection.
    max_streams: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stream_window: 128 << 10,
            max_streams: 128,
        }
    }
}

impl Settings {
    /// Enough for every stream's window at once: a stream nobody reads never stalls the others.
    fn connection_window(self) -> u32 {
        self.stream_window.saturating_mul(self.max_streams)
    }

    fn apply_server(self, builder: &mut h2::server::Builder) {
        builder
            .initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window())
            .max_concurrent_streams(self.max_streams);
    }

    fn apply_client(self, builder: &mut h2::client::Builder) {
        builder
            .initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window())
            .enable_push(false);
    }
}
