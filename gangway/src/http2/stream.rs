//! [`H2Stream`]: one HTTP/2 stream as a byte stream (`AsyncRead` + `AsyncWrite`), the transport
//! of a WebSocket opened with an extended CONNECT.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
/// - Dropping it before both directions ended resets the stream (RST_STREAM with CANCEL,
///   RFC 8441 §5's abnormal closure).
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received and not read yet.
    pending: Bytes,
    /// END_STREAM was sent.
    send_ended: bool,
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("stream_id", &self.send.stream_id().as_u32())
            .field("pending", &self.pending.len())
            .field("send_ended", &self.send_ended)
            .finish()
    }
}

impl H2Stream {
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        H2Stream {
            send,
            recv,
            pending: Bytes::new(),
            send_ended: false,
        }
    }

    /// The stream's identifier on its connection.
    pub fn stream_id(&self) -> u32 {
        self.send.stream_id().as_u32()
    }

    /// Reset the stream (RST_STREAM) with `reason`, e.g. `h2::Reason::CANCEL`: the peer's
    /// WebSocket ends as a lost connection.
    pub fn reset(&mut self, reason: Reason) {
        self.send.send_reset(reason);
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
            match ready!(this.recv.poll_data(cx)) {
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
        let _ = this.recv.flow_control().release_capacity(n);
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
        loop {
            let capacity = this.send.capacity();
            if capacity > 0 {
                // No more than the window: h2 would otherwise buffer any amount.
                let n = capacity.min(buf.len());
                this.send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(io_error)?;
                return Poll::Ready(Ok(n));
            }
            // Asked for only while there is something to send: reserved capacity is taken from
            // the connection's window too, which the other streams share.
            this.send.reserve_capacity(buf.len());
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                // The stream can send no more: reset by the peer, or the connection gone.
                None => {
                    let reason = match this.send.poll_reset(cx) {
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
            // END_STREAM on an empty DATA frame, behind what is queued. The peer may have reset
            // the stream already: then there is nothing left to end.
            this.send.reserve_capacity(0);
            this.send
                .send_data(Bytes::new(), true)
                .map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}
