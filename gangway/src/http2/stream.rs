//! [`H2Stream`]: one HTTP/2 stream as a byte stream (`AsyncRead` + `AsyncWrite`), the transport
//! of a WebSocket opened with an extended CONNECT.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use std::sync::Arc;

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ConnectionClosed;

/// One HTTP/2 stream as the transport of a WebSocket (RFC 8441 §5): DATA frames carry the
/// WebSocket's bytes both ways.
///
/// - Reading yields the peer's DATA; the peer's END_STREAM is the end of the stream (EOF), the
///   orderly close that a TCP FIN is on HTTP/1.1. A stream reset by the peer (RST_STREAM), or
///   the connection lost, is an error of kind [`ConnectionReset`](io::ErrorKind::ConnectionReset):
///   the WebSocket ends as a lost connection (close code 1006).
/// - Flow control is honoured both ways: received bytes are released to the peer's send window
///   only once read, so a WebSocket that is not read stops its peer's stream, and only that
///   stream; a write waits for send window and sends no more than the window allows.
/// - Shutting the write side down sends END_STREAM (the core's "half-close the write side").
/// - Dropping it before its write side ended resets the stream (RST_STREAM with CANCEL,
///   RFC 8441 §5's abnormal closure). Dropping it after END_STREAM was sent, while the peer's
///   side is still open, keeps the stream for up to a second in a task of its own, reading
///   and discarding what still arrives, so that what was sent last (a close frame) is not
///   discarded by a reset: the linger of a TCP socket, on a stream.
pub struct H2Stream {
    /// Taken only by `drop`.
    parts: Option<Parts>,
    /// Received and not read yet.
    pending: Bytes,
    /// END_STREAM was sent.
    send_ended: bool,
    /// A client's connection, to wait for its end ([`closed`](Self::closed)).
    connection: Option<Arc<ConnectionClosed>>,
}

/// The two directions of the stream.
struct Parts {
    send: SendStream<Bytes>,
    recv: RecvStream,
}

/// How long a stream dropped after its END_STREAM waits for the peer's (see [`H2Stream`]).
const LINGER: Duration = Duration::from_secs(1);

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("stream_id", &self.stream_id())
            .field("pending", &self.pending.len())
            .field("send_ended", &self.send_ended)
            .finish()
    }
}

impl H2Stream {
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        H2Stream {
            parts: Some(Parts { send, recv }),
            pending: Bytes::new(),
            send_ended: false,
            connection: None,
        }
    }

    /// A client's stream, on the connection that `connection` watches.
    pub(crate) fn on_connection(mut self, connection: Arc<ConnectionClosed>) -> Self {
        self.connection = Some(connection);
        self
    }

    /// A future that resolves once the HTTP/2 connection of this stream has closed, everything
    /// it had to send written: for a client that ends its program after its WebSocket (await it
    /// after dropping the WebSocket, bounded: the connection closes once no stream and no
    /// [`Http2Connection`](super::Http2Connection) uses it). On a server's stream it resolves
    /// at once: the server drives its connection itself
    /// ([`Http2Server::accept`](super::Http2Server::accept)).
    pub fn connection_closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let connection = self.connection.clone();
        async move {
            if let Some(connection) = connection {
                connection.wait().await;
            }
        }
    }

    /// The stream's identifier on its connection.
    pub fn stream_id(&self) -> u32 {
        self.parts
            .as_ref()
            .map_or(0, |p| p.send.stream_id().as_u32())
    }

    /// Reset the stream (RST_STREAM) with `reason`, e.g. `h2::Reason::CANCEL`: the peer's
    /// WebSocket ends as a lost connection.
    pub fn reset(&mut self, reason: Reason) {
        if let Some(parts) = &mut self.parts {
            parts.send.send_reset(reason);
        }
    }

    fn parts(&mut self) -> io::Result<&mut Parts> {
        // Only `drop` takes them.
        self.parts
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "http/2 stream dropped"))
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        let Some(Parts { send, mut recv }) = self.parts.take() else {
            return;
        };
        // Not ended by us: the reset that dropping sends is the abnormal closure. Ended both
        // ways: the stream is closed, nothing is reset.
        if !self.send_ended || recv.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let _send = send;
            let _ = tokio::time::timeout(LINGER, async {
                while let Some(Ok(data)) = recv.data().await {
                    let _ = recv.flow_control().release_capacity(data.len());
                }
            })
            .await;
        });
    }
}

/// An h2 failure as the I/O error the WebSocket reports: a reset or a lost connection is
/// `ConnectionReset` (the peer is gone, as a TCP reset says), with h2's error as the cause.
fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        if let Some(io) = e.get_io() {
            return io::Error::new(io.kind(), e);
        }
    }
    io::Error::new(io::ErrorKind::ConnectionReset, e)
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            match ready!(this.parts()?.recv.poll_data(cx)) {
                // END_STREAM: the peer's orderly end, as a FIN.
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => this.pending = data,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        // What was read is the application's now: the peer may send as much again. Releasing
        // fails only once the stream is gone, which the next read reports.
        let _ = this.parts()?.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.send_ended {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "http/2 stream already ended",
            )));
        }
        let send = &mut this.parts()?.send;
        loop {
            let capacity = send.capacity();
            if capacity > 0 {
                // No more than the window: h2 would otherwise buffer any amount.
                let n = capacity.min(buf.len());
                send.send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(io_error)?;
                return Poll::Ready(Ok(n));
            }
            // Asked for only while there is something to send: reserved capacity is taken from
            // the connection's window too, which the other streams share.
            send.reserve_capacity(buf.len());
            match ready!(send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                // The stream can send no more: reset by the peer, or the connection gone.
                None => {
                    let reason = match send.poll_reset(cx) {
                        Poll::Ready(Ok(reason)) => format!("http/2 stream reset ({reason:?})"),
                        _ => "http/2 stream closed".to_owned(),
                    };
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        reason,
                    )));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 owns the connection's buffer and writes it as the connection is driven.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.send_ended {
            this.send_ended = true;
            // END_STREAM on an empty DATA frame, behind what is queued.
            let send = &mut this.parts()?.send;
            send.reserve_capacity(0);
            send.send_data(Bytes::new(), true).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}
