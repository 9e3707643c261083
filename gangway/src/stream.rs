//! `WebSocket`: a `Stream` of received messages and a `Sink` of messages to send.
//!
//! The adapter is a driver of the core's [`Connection`]: it holds no protocol state of its own.
//! Every decision (decoding, reassembly, pongs, close answers, when to stop reading, when to drop
//! the transport, every deadline including the close handshake's) is the core's. This file moves
//! bytes between the transport and the core, tells the core the time, arms the one timer the
//! core asks for, and keeps what only the transport has: whether it needs a flush, whether its
//! write side is shut down, whether the last read found nothing.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use futures_core::Stream;
use futures_sink::Sink;
use futures_util::task::AtomicWaker;
pub use gangway_proto::config::DEFAULT_CLOSE_TIMEOUT;
use gangway_proto::{
    CloseCode, CloseFrame, Connection, End, EventRef, Replies, SpareBuffers, State, TimeoutError,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Sleep;

use crate::{Error, Fragment, Message};

/// How many bytes of encoded frames may wait in the write buffer before sending waits.
///
/// [`Sink::poll_ready`] returns `Pending` while more than this many bytes are queued and the
/// transport does not take them, so a peer that stops reading holds at most this much (plus the
/// one message that crossed the mark) of this side's memory.
pub const WRITE_BUFFER_HIGH_WATER: usize = 128 << 10;

/// The most one read takes: enough to amortise system calls on bulk transfers, and for several
/// 64 KiB messages to arrive whole in one read (a message that arrives whole is not copied).
///
/// The buffer is shared by every connection polled on the same thread (one per thread, like an
/// event loop's): bytes read go straight into the core, which keeps only what it has not handed
/// out yet, so no connection holds a read buffer of its own and an idle one holds none at all.
/// It is never zero-filled: reads go into its spare capacity.
///
/// Each read is split off the buffer and handed to the core, which lends messages that arrived
/// whole out of it (slices: no copy, no allocation). The buffer's space is reused once every
/// message lent from it is dropped; while one is kept, reading goes on in a new buffer and the
/// old one lives as long as its last message (see [`Message::Binary`]).
const READ_SIZE: usize = 256 << 10;

/// The size of the per-thread read buffer: one read's. A read that leaves room goes on in the
/// same buffer right after the last, so a binary message cut between the two is joined again
/// without a copy (see `Connection::receive_buf`). Room for two full reads would join more of
/// them for one connection pipelining large messages, but measured 2.5 KB per connection instead
/// of 2.2 after 10,000 connections each echoed a 64 KiB message (`scripts/idle-conns.py`): the
/// larger buffers stay alive while the answers they hold are written.
const READ_BUFFER_SIZE: usize = READ_SIZE;

/// The most one read takes on a connection with permessage-deflate (see `poll_read_with`).
#[cfg(feature = "deflate")]
const DEFLATE_READ_SIZE: usize = 64 << 10;

/// Below this much room left in the read buffer, it is renewed before reading (reused in place
/// when no message lent from it is alive), so that reads stay large.
const MIN_READ_ROOM: usize = 64 << 10;

thread_local! {
    /// What the connections polled on this thread share (see [`PerThread`]).
    static PER_THREAD: std::cell::RefCell<PerThread> = std::cell::RefCell::new(PerThread::default());
}

/// A buffer for bytes written before a connection exists (a server's handshake answer): the
/// output buffer this thread's connections keep spare, if there is one. Hand it back with
/// [`give_back_spare`] once written: the next connection's output goes there.
pub(crate) fn take_spare() -> Vec<u8> {
    PER_THREAD.with(|shared| {
        shared
            .try_borrow_mut()
            .map(|mut shared| shared.spare.take())
            .unwrap_or_default()
    })
}

/// Hand back a buffer from [`take_spare`].
pub(crate) fn give_back_spare(buf: Vec<u8>) {
    PER_THREAD.with(|shared| {
        if let Ok(mut shared) = shared.try_borrow_mut() {
            shared.spare.give_back(buf);
        }
    });
}

/// Buffers shared by the connections polled on one thread, one connection at a time.
#[derive(Default)]
struct PerThread {
    /// The read buffer (see [`READ_SIZE`]).
    read: BytesMut,
    /// The core's output buffer, handed back by the last connection that went idle and taken
    /// by the next that reads (see [`WebSocket::release_if_idle`]).
    spare: SpareBuffers,
}
/// Below this many bytes of queued output, [`Sink::poll_ready`] writes nothing (see there): large
/// enough to batch many small messages into one write, small enough that a large message goes
/// out as soon as the next one is sent.
const CORK_SIZE: usize = 16 << 10;

/// The most parts of the output given to one vectored write: a pipelined batch of echoed large
/// messages is two parts each (header, payload), and a larger batch takes another write.
const MAX_WRITE_PARTS: usize = 64;

/// An open WebSocket over the transport `S`.
///
/// Receive with `StreamExt::next`: the stream yields [`Message`]s and ends with `None` after a
/// clean close (the peer's close frame is then in [`close_frame`](Self::close_frame)). A protocol
/// violation by the peer yields one [`Error::Protocol`] (once the matching close frame was
/// written, or the close timeout passed), a lost connection one [`Error::Io`] or
/// [`Error::Protocol`] with [`ProtocolError::UnexpectedEof`], a peer that stopped responding one
/// [`Error::Unresponsive`] (see Timers below); the stream ends after that.
///
/// [`ProtocolError::UnexpectedEof`]: gangway_proto::ProtocolError::UnexpectedEof
///
/// To close, [`close`](Self::close) sends a close frame and waits for the handshake to finish.
/// `SinkExt::close` (spelled `SinkExt::close(&mut ws)` on a whole `WebSocket`, whose own `close`
/// takes a code) only sends close 1000 and flushes; the stream then ends after the peer's answer.
///
/// Send with `SinkExt::send`. Sending waits while more than [`WRITE_BUFFER_HIGH_WATER`] bytes are
/// queued, so a peer that does not read cannot make this side's memory grow. Pings are answered
/// and the peer's close frame is echoed while the stream is polled: keep reading, even in a
/// server that only sends.
///
/// `SinkExt::feed` queues a message without writing it (until 16 KiB are queued): what is queued
/// goes out in one write at the next flush (`send` is `feed` plus flush), or when the stream,
/// polled, has handed out every message it decoded and reads again. An echo or a request
/// handler that `feed`s one reply per message received thus writes once per batch of input.
///
/// # Two tasks
///
/// `futures_util::StreamExt::split` gives a read half and a write half that can move to two tasks
/// (they share the `WebSocket` behind a lock that is held only during each poll). Both halves may
/// write to the transport (the read half writes pongs and close answers), and each half is woken
/// when the transport becomes writable again.
///
/// The write half's `feed` (`start_send`) only parks the message in the half; it reaches the
/// connection at the half's next `poll_ready` or flush. A reply to a message must reach it before
/// the stream is polled again if it is to be sent: that poll may take the peer's close or a
/// protocol violation that followed the message, and nothing can be sent after that.
///
/// ```no_run
/// # async fn run(ws: gangway::WebSocket<tokio::net::TcpStream>) -> Result<(), gangway::Error> {
/// use futures_util::{SinkExt, StreamExt};
/// let (mut tx, mut rx) = ws.split();
/// let reader = tokio::spawn(async move {
///     while let Some(msg) = rx.next().await {
///         println!("{:?}", msg?);
///     }
///     Ok::<_, gangway::Error>(())
/// });
/// tx.send(gangway::Message::text("hello")).await?;
/// tx.close().await?; // sends close 1000; the reader ends after the peer's answer
/// reader.await.expect("reader task panicked")?;
/// # Ok(()) }
/// ```
///
/// # Timers
///
/// One timer per connection, armed for the earliest of:
///
/// - the core's deadlines from the [`Config`](gangway_proto::Config): keepalive pings after
///   `ping_interval` of silence, [`TimeoutError::Idle`] after `idle_timeout` without receiving
///   anything, [`TimeoutError::Write`] after `write_timeout` without the transport taking any
///   output (a peer that never reads: sending waits, then fails). A timeout ends the
///   connection at once, without a close frame (1006), as [`Error::Unresponsive`]: the stream
///   yields it once and ends, and sending returns it from then on.
/// - the close handshake's bound ([`DEFAULT_CLOSE_TIMEOUT`], or
///   [`set_close_timeout`](Self::set_close_timeout)), also a deadline of the core's.
///
/// The adapter only arms the timer the core asks for and tells it the time: every decision is
/// the core's. So the tokio runtime must have its time driver enabled. Keepalive works while the stream is
/// polled: pongs and other input are only read then.
///
/// # Drop behavior
///
/// Dropping the `WebSocket` drops the transport at once, without a close handshake; call
/// [`close`](Self::close) first to close cleanly.
pub struct WebSocket<S> {
    // Every idle connection holds one of these: fields are kept small (see the size test).
    io: S,
    conn: Connection,
    /// Boxed twice: 8 bytes instead of a `Box<str>`'s 16 (a `String`'s 24), for one more small
    /// allocation only when a subprotocol was negotiated; never written to.
    protocol: Option<Box<Box<str>>>,
    /// The one timer, armed for the core's deadline ([`Connection::poll_timeout`]) and only
    /// moved earlier, never later (a timer that fires early is re-armed), so traffic that
    /// postpones the keepalive costs nothing. `None` while there is no deadline.
    timer: Option<Pin<Box<Sleep>>>,
    /// Who is woken when the transport becomes writable or the timer fires.
    wakers: Wakers,
    /// The halves that registered `wakers`' waker, as [`Half::bit`]s (see [`Wakers::register`];
    /// kept here, among the other small fields, rather than padded to a word in `wakers`).
    waker_halves: u8,
    /// The timer was polled (registered its waker) since it was last set.
    timer_polled: bool,
    /// The last read found nothing to read: the connection is idle once its output is written
    /// (see [`release_if_idle`](Self::release_if_idle)).
    read_idle: bool,
    /// We shut the transport's write side down.
    write_shutdown: bool,
    /// Bytes were written since the last flush of the transport.
    needs_flush: bool,
    /// The stream ended: everything after yields `None`.
    done: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wrap a transport whose handshake is done. `leftover` are bytes read after the handshake
    /// head (frames the peer pipelined); they are fed to `conn` before anything else is read.
    ///
    /// A protocol violation in `leftover` is reported by the first poll of the stream, after the
    /// messages that preceded it.
    ///
    /// The idle timeout and the keepalive start counting at the first poll that reads or waits
    /// to write (at this call if `leftover` holds bytes).
    pub fn from_parts(io: S, conn: Connection, protocol: Option<String>, leftover: &[u8]) -> Self {
        let mut conn = conn;
        // The idle and keepalive clocks start at the first reading the core is given: here if
        // frames came with the head, else at the first poll (microseconds later, when a server
        // starts its session), which reads the clock anyway. One clock reading fewer per
        // connection (bench/RESULTS.md).
        if !leftover.is_empty() {
            conn.receive_data(leftover, now());
        }
        WebSocket {
            io,
            conn,
            protocol: protocol.map(|p| Box::new(p.into_boxed_str())),
            timer: None,
            wakers: Wakers::default(),
            waker_halves: 0,
            timer_polled: false,
            read_idle: false,
            write_shutdown: false,
            needs_flush: false,
            done: false,
        }
    }

    /// The negotiated subprotocol.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref().map(|p| &**p)
    }

    /// Whether permessage-deflate (RFC 7692) was negotiated: messages may then be compressed
    /// both ways.
    #[cfg(feature = "deflate")]
    pub fn uses_deflate(&self) -> bool {
        self.conn.uses_deflate()
    }

    /// Whether a ping of ours (sent, or the keepalive's) has had no pong yet. The peer may send
    /// that pong even after its close frame: a server that closes the transport without reading
    /// on would answer it with a TCP reset.
    pub fn awaiting_pong(&self) -> bool {
        self.conn.awaiting_pong()
    }

    /// The peer's close frame, once received (`Some(None)`: it carried no status code).
    pub fn close_frame(&self) -> Option<&Option<CloseFrame>> {
        self.conn.peer_close()
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The core connection, for the hub to queue broadcast frames on.
    pub(crate) fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Bound the close handshake by `timeout` instead of the [`Config`](gangway_proto::Config)'s
    /// (by default [`DEFAULT_CLOSE_TIMEOUT`]). A wait that has already started keeps its
    /// deadline.
    ///
    /// The bound is kept in whole milliseconds, rounded up, so the handshake is never cut
    /// shorter than asked (a timeout of 1 µs waits 1 ms; zero stays zero). A timeout of
    /// `u32::MAX` milliseconds (about 49.7 days) or more does not bound the handshake at all.
    pub fn set_close_timeout(&mut self, timeout: Duration) {
        self.conn.set_close_timeout(Some(timeout));
    }

    /// Send a close frame, then wait (bounded) for the peer's close and the end of the transport.
    /// Messages that arrive meanwhile are discarded.
    ///
    /// If the peer closed first (or the connection already ended) nothing is sent: this only
    /// finishes the close. A server shuts the TCP connection down once the handshake is done
    /// (RFC 6455 §7.1.1); a client waits for the server to do so, at most the close timeout.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] for a code that may not be sent or after a close was already sent,
    /// [`Error::Io`], [`Error::Timeout`] when the peer did not answer within the close timeout,
    /// [`Error::Protocol`] when the peer broke the protocol meanwhile.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        if !self.done && self.conn.peer_close().is_none() {
            match self.conn.state() {
                State::Open => self.conn.send_close(code, reason)?,
                // Our close frame is already out: a second one is a caller mistake (§5.5.1).
                State::Closing => return Err(Error::Api(gangway_proto::ApiMisuse::AlreadyClosing)),
                // Failed, or ended: nothing to send, only the transport to finish.
                State::Closed => {}
            }
        }
        std::future::poll_fn(|cx| loop {
            match Pin::new(&mut *self).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Ok(_discarded))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
            }
        })
        .await
    }

    /// Poll for the next piece of a message: [`recv_fragment`](Self::recv_fragment) for callers
    /// that implement `Future` or `Stream` by hand.
    ///
    /// Pings and pongs are skipped (pings are answered all the same); a whole message, when the
    /// connection does not deliver fragments, is one piece with `fin`. `Ready(None)` after a
    /// clean close, as for the stream.
    ///
    /// # Errors
    ///
    /// As the stream: [`Error::Protocol`], [`Error::Io`], [`Error::Unresponsive`],
    /// [`Error::Timeout`], once, and then `None`.
    pub fn poll_next_fragment(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Fragment, Error>>> {
        loop {
            let message = match ready!(Pin::new(&mut *self).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(message)) => message,
            };
            let fragment = match message {
                Message::Fragment(fragment) => fragment,
                Message::Text(text) => Fragment {
                    kind: gangway_proto::DataKind::Text,
                    data: text.into(),
                    fin: true,
                },
                Message::Binary(data) => Fragment {
                    kind: gangway_proto::DataKind::Binary,
                    data,
                    fin: true,
                },
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            return Poll::Ready(Some(Ok(fragment)));
        }
    }

    /// Receive the next piece of a message, for messages too large to hold whole.
    ///
    /// With [`Config::deliver_fragments`](gangway_proto::Config::deliver_fragments) on, each
    /// message comes as the pieces that arrived from the network (at most one read of the
    /// transport each, 256 KiB, 64 KiB with permessage-deflate), in order, the last with `fin`,
    /// so a message of any size passes
    /// through in bounded memory. Without it, each whole message is one piece with `fin`. Pings
    /// and pongs are skipped (pings are answered all the same). `None` after a clean close.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future (a `tokio::select!` branch that lost) loses nothing.
    /// A piece stays queued in the [`Connection`] until the poll that returns it takes it out,
    /// and that poll completes the future; a poll that returns `Pending` has only fed the core
    /// with bytes read from the transport, which the next call hands out.
    ///
    /// # Errors
    ///
    /// As the stream: [`Error::Protocol`], [`Error::Io`], [`Error::Unresponsive`],
    /// [`Error::Timeout`], once, and then `None`. A protocol error in the middle of a message
    /// (text that is not UTF-8, a message over the size limit) comes after the pieces before
    /// it: discard the partial message.
    pub async fn recv_fragment(&mut self) -> Option<Result<Fragment, Error>> {
        std::future::poll_fn(|cx| self.poll_next_fragment(cx)).await
    }

    /// Send one piece of a message: the first call's `kind` starts it, later calls continue it
    /// with the same `kind`, the call with `fin` ends it. Nothing else but pings and pongs may
    /// be sent until then. Each piece goes out as one frame (or several, past
    /// [`Config::max_send_frame_size`](gangway_proto::Config::max_send_frame_size)).
    ///
    /// Waits while more than [`WRITE_BUFFER_HIGH_WATER`] bytes are queued, then queues the piece
    /// and returns, so memory stays bounded however large the message. The piece is written as
    /// sending, flushing or receiving goes on; flush (`SinkExt::flush`) after the last piece if
    /// nothing else will follow.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future either sent nothing or queued the whole piece, never
    /// part of it. The only wait is for buffer space, before the piece reaches the connection;
    /// the piece is queued whole in the same poll that completes the future. A cancelled call
    /// sent nothing: call again with the same piece.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] for a `kind` that differs from the message in progress, text that is not
    /// UTF-8 (a code point may straddle two pieces, but the message must be valid when it ends),
    /// or after our close frame; then the piece was not sent and the message in progress is as
    /// it was. [`Error::Io`] and [`Error::Unresponsive`] when the transport fails or the peer
    /// stopped reading.
    pub async fn send_fragment(
        &mut self,
        kind: gangway_proto::DataKind,
        data: bytes::Bytes,
        fin: bool,
    ) -> Result<(), Error> {
        let mut piece = Some(Fragment { kind, data, fin });
        std::future::poll_fn(|cx| {
            ready!(Pin::new(&mut *self).poll_ready(cx))?;
            // Taken only once the wait is over: every poll before this one queued nothing.
            let Some(piece) = piece.take() else {
                return Poll::Ready(Ok(()));
            };
            Poll::Ready(Pin::new(&mut *self).start_send(Message::Fragment(piece)))
        })
        .await
    }

    /// Write as much of the core's output as the transport takes, then flush it.
    ///
    /// `Ready(Ok)` means everything was written and flushed. `Pending` means the transport is
    /// full; `cx`'s waker (as the given half) is woken when it is writable.
    fn poll_write_output(&mut self, cx: &mut Context<'_>, half: Half) -> Poll<io::Result<()>> {
        if self.conn.output().is_empty() && !self.needs_flush {
            return Poll::Ready(Ok(()));
        }
        let (waker, changed) = self
            .wakers
            .register(&mut self.waker_halves, half, cx.waker());
        self.timer_polled &= !changed;
        let mut wcx = Context::from_waker(waker);
        loop {
            let out = self.conn.output();
            if out.is_empty() {
                break;
            }
            if self.write_shutdown {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "write side already shut down",
                )));
            }
            let len = out.len();
            let written = if len < self.conn.output_len() && self.io.is_write_vectored() {
                // The output is in parts (payloads queued without a copy): all of them in one
                // system call.
                let mut parts = [io::IoSlice::new(&[]); MAX_WRITE_PARTS];
                let count = self.conn.output_parts(&mut parts);
                let total = parts[..count].iter().map(|part| part.len()).sum::<usize>();
                Pin::new(&mut self.io)
                    .poll_write_vectored(&mut wcx, &parts[..count])
                    .map_ok(|n| n.min(total))
            } else {
                Pin::new(&mut self.io)
                    .poll_write(&mut wcx, out)
                    .map_ok(|n| n.min(len))
            };
            match written {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                // `min` above: a transport claiming more than it was given must not make us panic.
                Poll::Ready(Ok(n)) => {
                    self.conn.consume_output(n);
                    self.needs_flush = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.needs_flush {
            ready!(Pin::new(&mut self.io).poll_flush(&mut wcx))?;
            self.needs_flush = false;
        }
        // Written out after the last read found nothing: idle now. Or ended (the close
        // handshake's last frame written, or the connection failed): nothing more is written,
        // and the output buffer goes to the next connection rather than to the allocator.
        self.release_if_idle();
        Poll::Ready(Ok(()))
    }

    /// Shut the transport's write side down (TCP FIN). Failures are ignored: the peer is gone.
    fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.write_shutdown {
            let (waker, changed) =
                self.wakers
                    .register(&mut self.waker_halves, Half::Read, cx.waker());
            self.timer_polled &= !changed;
            let _ = ready!(Pin::new(&mut self.io).poll_shutdown(&mut Context::from_waker(waker)));
            self.write_shutdown = true;
        }
        Poll::Ready(())
    }

    /// Read once from the transport and feed the core (or tell it about EOF).
    fn poll_read_into_core(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<io::Result<()>> {
        PER_THREAD.with(|shared| match shared.try_borrow_mut() {
            Ok(mut shared) => {
                let PerThread { read, spare } = &mut *shared;
                if read.capacity() - read.len() < MIN_READ_ROOM {
                    // Reuses the allocation in place when nothing lent from it is alive.
                    read.reserve(READ_BUFFER_SIZE);
                }
                self.poll_read_with(cx, read, spare, now)
            }
            // Only if a transport's own read polls another WebSocket on this thread (one
            // tunnelled in another): that read gets buffers of its own.
            Err(_) => self.poll_read_with(
                cx,
                &mut BytesMut::with_capacity(READ_SIZE),
                &mut SpareBuffers::default(),
                now,
            ),
        })
    }

    /// [`poll_read_into_core`](Self::poll_read_into_core) with the given buffer, which has room
    /// to read into and holds no bytes.
    fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        spare: &mut SpareBuffers,
        now: Instant,
    ) -> Poll<io::Result<()>> {
        // Into the buffer's spare capacity: no zero-filling. The future holds no state between
        // polls, so polling a new one each time is the same as polling one to completion.
        //
        // With permessage-deflate, a read is cut to `DEFLATE_READ_SIZE`: compressed pieces are
        // inflated as they are handed out, and the read's size bounds what one read can inflate
        // into.
        #[cfg(feature = "deflate")]
        let room = if self.conn.uses_deflate() {
            DEFLATE_READ_SIZE
        } else {
            READ_SIZE
        };
        #[cfg(not(feature = "deflate"))]
        let room = READ_SIZE;
        let mut limited = BufMut::limit(&mut *buf, room);
        let read = std::pin::pin!(self.io.read_buf(&mut limited));
        let read = read.poll(cx)?;
        if read.is_pending() {
            self.read_idle = true;
            if self.conn.holds_spare_buffers() {
                self.conn.release_buffers_into(spare);
            }
            return Poll::Pending;
        }
        self.read_idle = false;
        if buf.is_empty() {
            self.conn.receive_eof();
        } else {
            // The output buffer for the answers, from the last connection that went idle.
            self.conn.reuse_buffers(spare);
            // The bytes read leave the shared buffer; its room after them is for the next read.
            self.conn.receive_buf(buf.split(), now);
        }
        Poll::Ready(Ok(()))
    }

    /// Act on the core's deadline if it has passed (`deadline`, from
    /// [`Connection::poll_timeout`]), and arm the timer for the next one. Returns whether the
    /// core acted (a keepalive ping is queued, or the connection was given up on: either way there
    /// is output or an ending to process). The timer wakes both halves, like the transport's
    /// writability (the write half may be waiting for a write timeout, the read half for a ping).
    fn poll_timers(
        &mut self,
        cx: &mut Context<'_>,
        half: Half,
        now: Instant,
        deadline: Option<Instant>,
    ) -> bool {
        let mut acted = false;
        let mut now = now;
        let mut deadline = deadline;
        loop {
            if deadline.is_some_and(|d| d <= now) {
                acted = true;
                if self.conn.handle_timeout(now).is_err() {
                    // The other half may be waiting for the transport, which will never come.
                    self.wakers.wake();
                }
                deadline = self.conn.poll_timeout(now);
            }
            // The core's next deadline is later than `now` after `handle_timeout`.
            let Some(next) = deadline else {
                self.timer = None;
                return acted;
            };
            let next = tokio::time::Instant::from_std(next);
            let timer = match &mut self.timer {
                Some(timer) => {
                    if timer.is_elapsed() || next < timer.deadline() {
                        timer.as_mut().reset(next);
                        self.timer_polled = false;
                    }
                    timer
                }
                None => {
                    self.timer_polled = false;
                    self.timer.insert(Box::pin(tokio::time::sleep_until(next)))
                }
            };
            let (waker, changed) = self
                .wakers
                .register(&mut self.waker_halves, half, cx.waker());
            self.timer_polled &= !changed;
            // A timer polled since it was last set (with the waker registered now), and not due
            // yet, has our waker: when it fires, it wakes the task and a later pass finds it
            // due. No need to poll it again on every turn.
            if self.timer_polled && tokio::time::Instant::from_std(now) < timer.deadline() {
                return acted;
            }
            if timer
                .as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_pending()
            {
                self.timer_polled = true;
                return acted;
            }
            now = self::now();
            deadline = self.conn.poll_timeout(now);
            // It fired meanwhile: look at the deadlines again.
        }
    }

    /// Give back the output buffer the core keeps between messages once the connection is
    /// idle (the last read found nothing, and the output is written) or has ended (the close
    /// handshake's last frame is written: it would be freed with the connection). It goes to
    /// this thread's [`PerThread::spare`], for the next connection that reads. An idle
    /// connection then holds no buffer, yet a connection that goes idle after every message
    /// (request/response traffic) allocates none for the next: it takes the spare set back.
    /// Holding them until the connection had been quiet for a while (a timer) cost more per
    /// message, and after a wave of traffic on every connection left the heap as large as all
    /// their buffers together.
    ///
    /// This is the release after a write that ended after the last read; the read side
    /// releases when it finds nothing to read (see `poll_read_with`).
    fn release_if_idle(&mut self) {
        if (self.read_idle || self.conn.ended().is_some()) && self.conn.holds_spare_buffers() {
            PER_THREAD.with(|shared| match shared.try_borrow_mut() {
                Ok(mut shared) => self.conn.release_buffers_into(&mut shared.spare),
                Err(_) => self.conn.release_buffers(),
            });
        }
    }

    /// The error that ends the connection for good, if any: what sending returns once the core
    /// gave up on an unresponsive peer.
    fn dead(&self) -> Option<Error> {
        match self.conn.ended() {
            Some(End::TimedOut(e @ (TimeoutError::Idle | TimeoutError::Write))) => {
                Some(Error::Unresponsive(e))
            }
            _ => None,
        }
    }

    /// End the stream: the error to yield last, if any, from how the core says the connection
    /// ended.
    fn finish(&mut self) -> Option<Error> {
        self.done = true;
        self.timer = None;
        match self.conn.ended() {
            Some(End::Failed(e)) => Some(Error::Protocol(e)),
            Some(End::TimedOut(TimeoutError::Close)) => Some(Error::Timeout),
            Some(End::TimedOut(e)) => Some(Error::Unresponsive(e)),
            Some(End::Clean) | None => None,
        }
    }

    /// End the stream on a transport error (a protocol failure already seen takes precedence).
    ///
    /// Once both close frames have crossed (the peer's received, ours written), the connection
    /// is closed cleanly whatever the transport does next (RFC 6455 §7.1.4): a reset instead of
    /// the peer's FIN, as servers that abort the TCP connection after the close handshake send,
    /// ends the stream like the FIN would.
    fn finish_with_io(&mut self, e: io::Error) -> Option<Error> {
        if self.close_handshake_done() {
            tracing::debug!("transport error after the close handshake, ignored: {e}");
            return self.finish();
        }
        self.done = true;
        self.timer = None;
        Some(match self.conn.ended() {
            Some(End::Failed(p)) => Error::Protocol(p),
            _ => self.dead().unwrap_or(Error::Io(e)),
        })
    }

    /// Whether the close handshake is complete: the peer's close frame was received and ours
    /// (its answer, or the close we started) is written out.
    fn close_handshake_done(&self) -> bool {
        self.conn.ended() == Some(End::Clean) && self.conn.output_len() == 0
    }
}

impl<S> WebSocket<S> {
    /// The core connection (the hub reads how it takes broadcast frames).
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl<S> std::fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("conn", &self.conn)
            .field("protocol", &self.protocol)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_drive(cx, |conn| loop {
            // The next message is decoded when asked for. A violation (`Err`) is reported once
            // the close frame the core queued for it is written, as the connection's end.
            match conn.poll_event() {
                Ok(Some(event)) => match Message::from_event(event) {
                    Some(msg) => return Taken::Item(msg),
                    None => continue, // the peer's close: the core answered it
                },
                _ => return Taken::Exhausted,
            }
        })
    }
}

/// What [`WebSocket::poll_drive`] took from the core in one turn.
enum Taken<T> {
    /// Something to hand out.
    Item(T),
    /// Every event of the input was taken: read more.
    Exhausted,
    /// Taking stopped with events left, because too much output waits: read no more until it is
    /// written.
    Blocked,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// The one life cycle of the receiving side, shared by the stream and
    /// [`poll_each`](Self::poll_each): take from the core what its input holds (`take`), and when
    /// it holds nothing more, write what is queued, act on the deadlines, close the transport at
    /// the end, and read.
    #[inline(always)]
    fn poll_drive<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut take: impl FnMut(&mut Connection) -> Taken<T>,
    ) -> Poll<Option<Result<T, Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut clock = Clock::default();
        loop {
            let blocked = match take(&mut self.conn) {
                Taken::Item(item) => return Poll::Ready(Some(Ok(item))),
                Taken::Exhausted => false,
                Taken::Blocked => true,
            };
            let now = clock.now();
            // Pongs, close answers and queued messages go out while we keep reading: a full
            // transport must not stop us from receiving (the peer may be waiting for us to read).
            // Everything queued since the last read (the answers to a whole batch of messages)
            // goes out in one write.
            let drained = match self.poll_write_output(cx, Half::Read) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(e)) => return Poll::Ready(self.finish_with_io(e).map(Err)),
                Poll::Pending => false,
            };
            if blocked && drained {
                // Room again for the answers to what is left of the input.
                continue;
            }
            let ending = self.conn.should_close_transport();
            if ending && (drained || self.conn.close_timed_out()) {
                // The end is here, with nothing left to write: close the transport (the server
                // first, RFC 6455 §7.1.1; either side after a failure, §7.1.7). Past the close
                // handshake's deadline, without waiting for the shutdown to complete.
                if self.poll_shutdown_write(cx).is_ready() || self.conn.close_timed_out() {
                    return Poll::Ready(self.finish().map(Err));
                }
            }
            // Stop reading while too much output waits: too many automatic answers, or (`blocked`)
            // the answers of a `poll_each` callback.
            let paused = blocked || self.conn.input_paused();
            let deadline = self.conn.poll_timeout(now);
            if !ending && !paused && deadline.is_some_and(|d| d <= now) {
                // A deadline is due: read first, so that bytes already waiting count as heard
                // from the peer (an application that was busy must not find its peer idle).
                match self.poll_read_into_core(cx, now) {
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(e)) => return Poll::Ready(self.finish_with_io(e).map(Err)),
                    Poll::Pending => {}
                }
            }
            if self.poll_timers(cx, Half::Read, now, deadline) {
                // A keepalive ping to write, or the connection given up on: start over.
                continue;
            }
            if ending {
                // Waiting for the transport to take the output or to shut down, bounded by the
                // close handshake's deadline (the timer is armed for it).
                return Poll::Pending;
            }
            if paused && !drained {
                // Woken by the transport once it takes more (the write registered the waker).
                return Poll::Pending;
            }
            // Reading goes on in the closing state too: the peer's close frame, and for a client
            // the server's EOF (§7.1.1), are still to come.
            match self.poll_read_into_core(cx, now) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(self.finish_with_io(e).map(Err)),
                Poll::Ready(Ok(())) => {}
            }
        }
    }

    /// Receive by lending: hand every message and control frame to `f` as it is decoded, lent
    /// out of the read buffer (see [`Connection::for_each_event`]), with the [`Replies`] to answer
    /// it at once; until no more input is there (`Pending`), or the connection ends: `Ready(Ok)`
    /// after a clean close, `Ready(Err)` as the stream would yield. Meanwhile it does what polling
    /// the stream does: writes the answers (all of a read's in one write), keeps the deadlines,
    /// closes the transport at the end.
    ///
    /// Nothing is split off, counted or allocated per message, and there is no poll per
    /// message: this is the fastest way to receive, for applications that answer each message
    /// before the next (an echo, a router, a counter). One that needs to wait while handling a
    /// message uses the stream. While more than [`WRITE_BUFFER_HIGH_WATER`] bytes of answers
    /// wait, the rest of the input waits for the transport to take them.
    ///
    /// It may be mixed with polling the stream: each takes the next events of the input, in
    /// order, and nothing is handed out twice.
    ///
    /// # Errors
    ///
    /// As the stream: [`Error::Protocol`], [`Error::Io`], [`Error::Unresponsive`],
    /// [`Error::Timeout`], once; after the end, `Ready(Ok)` again.
    ///
    /// [`Replies`]: gangway_proto::Replies
    pub fn poll_each<F>(&mut self, cx: &mut Context<'_>, mut f: F) -> Poll<Result<(), Error>>
    where
        F: FnMut(EventRef<'_>, &mut Replies<'_>),
    {
        let drive = self.poll_drive(cx, |conn| {
            let flow = conn.for_each_event(|event, replies| {
                f(event, replies);
                if replies.output_len() > WRITE_BUFFER_HIGH_WATER {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            match flow {
                Ok(ControlFlow::Break(())) => Taken::<Infallible>::Blocked,
                // An error is the connection's end, found once the close frame is written.
                Ok(ControlFlow::Continue(())) | Err(_) => Taken::Exhausted,
            }
        });
        drive.map(|end| match end {
            None => Ok(()),
            Some(Err(e)) => Err(e),
            Some(Ok(never)) => match never {},
        })
    }

    /// [`poll_each`](Self::poll_each) until the connection ends: every message and control frame
    /// is lent to `f`, with the [`Replies`] to answer it.
    ///
    /// ```no_run
    /// use gangway::EventRef;
    ///
    /// # async fn run(mut ws: gangway::WebSocket<tokio::net::TcpStream>) -> Result<(), gangway::Error> {
    /// // An echo server's session.
    /// ws.each(|event, replies| {
    ///     let _ = match event {
    ///         EventRef::Text(text) => replies.send_text(text),
    ///         EventRef::Binary(data) => replies.send_binary(data),
    ///         _ => Ok(()), // pings are answered by the core
    ///     };
    /// })
    /// .await
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`poll_each`](Self::poll_each).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: every event was handed to `f` by the poll that decoded it; what was read and
    /// not decoded stays in the connection.
    ///
    /// [`Replies`]: gangway_proto::Replies
    pub async fn each<F>(&mut self, mut f: F) -> Result<(), Error>
    where
        F: FnMut(EventRef<'_>, &mut Replies<'_>),
    {
        std::future::poll_fn(|cx| self.poll_each(cx, &mut f)).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        // Corking: below this much queued output nothing is written here. It goes out in one
        // write with whatever follows it, at the next flush, or when the stream has handed out
        // every message it decoded and reads again. So an echo that feeds a reply per message
        // writes once per batch of input, not once per message.
        if this.conn.output_len() < CORK_SIZE {
            return match this.dead() {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Ready(Ok(())),
            };
        }
        if let Poll::Ready(Err(e)) = this.poll_write_output(cx, Half::Write) {
            return Poll::Ready(Err(Error::Io(e)));
        }
        // The write timeout ends the wait below for a peer that never reads.
        let now = now();
        let deadline = this.conn.poll_timeout(now);
        let acted = this.poll_timers(cx, Half::Write, now, deadline);
        if let Some(e) = this.dead() {
            return Poll::Ready(Err(e));
        }
        if acted {
            // A keepalive ping was queued: send it along.
            if let Poll::Ready(Err(e)) = this.poll_write_output(cx, Half::Write) {
                return Poll::Ready(Err(Error::Io(e)));
            }
        }
        // The bounded write buffer: wait for the transport while too much is queued.
        if this.conn.output_len() > WRITE_BUFFER_HIGH_WATER {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        let this = self.get_mut();
        let conn = &mut this.conn;
        // Output that starts waiting starts the write timeout, from the time the core is given
        // next (when the output is written or the timer armed).
        let sent = match item {
            // A large payload is written from the message itself, not copied (an echoed message
            // goes back out of the read buffer it arrived in).
            Message::Text(text) => conn.send_text_shared(text),
            Message::Binary(data) => conn.send_binary_shared(data),
            Message::Ping(payload) => conn.send_ping(&payload),
            Message::Pong(payload) => conn.send_pong(&payload),
            Message::Fragment(f) => conn.send_fragment(f.kind, &f.data, f.fin),
        };
        // Once the core gave up on an unresponsive peer, that is the error, not the refusal.
        sent.map_err(|e| this.dead().unwrap_or(Error::Api(e)))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_write_all(cx)
    }

    /// Send close 1000 (unless a close was already sent or received) and flush. The transport
    /// stays open: keep polling the stream to receive the peer's close and end cleanly.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if let Some(e) = this.dead() {
            return Poll::Ready(Err(e));
        }
        if this.conn.state() == State::Open {
            this.conn.send_close(CloseCode::NORMAL, "")?;
        }
        this.poll_write_all(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// The sink's flush: write everything, or fail at the write timeout.
    fn poll_write_all(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if let Some(e) = self.dead() {
            return Poll::Ready(Err(e));
        }
        loop {
            if let Poll::Ready(result) = self.poll_write_output(cx, Half::Write) {
                return Poll::Ready(result.map_err(Error::Io));
            }
            let now = now();
            let deadline = self.conn.poll_timeout(now);
            let acted = self.poll_timers(cx, Half::Write, now, deadline);
            if let Some(e) = self.dead() {
                return Poll::Ready(Err(e));
            }
            if !acted {
                return Poll::Pending;
            }
        }
    }
}

/// The current time, from tokio's clock (so that tests with paused time control it too).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The time for the turns of one poll of the stream: read once, when first needed, and again
/// every [`Clock::TURNS`] turns (a turn handles one read's input: microseconds each), not once
/// per turn. The usual poll takes two turns (one that reads, one that finds nothing more), and
/// the clock costs as much as 1% of a small message's echo.
#[derive(Default)]
struct Clock {
    read: Option<Instant>,
    turns: u8,
}

impl Clock {
    /// Turns that share one reading.
    const TURNS: u8 = 8;

    fn now(&mut self) -> Instant {
        self.turns += 1;
        match self.read {
            Some(read) if self.turns <= Self::TURNS => read,
            _ => {
                self.turns = 1;
                *self.read.insert(now())
            }
        }
    }
}

/// Which half of a split `WebSocket` is writing.
#[derive(Clone, Copy, Debug)]
enum Half {
    /// The stream side (pongs, close answers, output flushed while reading).
    Read,
    /// The sink side.
    Write,
}

impl Half {
    /// The half as a bit in `WebSocket::waker_halves`.
    fn bit(self) -> u8 {
        match self {
            Half::Read => 1,
            Half::Write => 2,
        }
    }
}

/// The waker handed to the transport's writes and to the timer.
///
/// A transport remembers one waker per direction, so after a split the read half's write (of a
/// pong, say) would replace the write half's waker and leave the sender asleep forever, and so
/// does the timer. While every wait comes from one task (a `WebSocket` that is not split, or
/// halves polled by one task), that task's waker is handed on as it is. From the first wait of
/// one half from a task other than the one the other half last waited from, every wait goes
/// through a shared [`WriteWakers`] proxy instead, which wakes both halves. The proxy is
/// allocated then, not for every connection.
#[derive(Debug, Default)]
struct Wakers {
    /// The waker handed on: the task's, or the proxy's once `shared` is set.
    current: Option<Waker>,
    /// The proxy, once the halves have waited from different tasks.
    shared: Option<Arc<WriteWakers>>,
}

impl Wakers {
    /// `half` is about to wait with `waker`: the waker to hand to the transport or the timer,
    /// and whether it differs from the one handed on before (a timer polled with that one
    /// must be polled again). `halves` are the halves that registered the current waker (while
    /// no proxy is needed), as [`Half::bit`]s.
    fn register(&mut self, halves: &mut u8, half: Half, waker: &Waker) -> (&Waker, bool) {
        let changed = match (&self.shared, &self.current) {
            (Some(shared), _) => {
                shared.register(half, waker);
                false
            }
            (None, Some(current)) if current.will_wake(waker) => {
                *halves |= half.bit();
                false
            }
            (None, Some(current)) if *halves & !half.bit() != 0 => {
                // The other half waited from another task: both must be woken from now on.
                let shared = Arc::new(WriteWakers::default());
                let other = match half {
                    Half::Read => Half::Write,
                    Half::Write => Half::Read,
                };
                shared.register(other, current);
                shared.register(half, waker);
                self.current = Some(Waker::from(Arc::clone(&shared)));
                self.shared = Some(shared);
                true
            }
            // The first wait, or the same half from another task: that task replaces the one
            // before, as a transport's own waker would.
            (None, _) => {
                self.current = Some(waker.clone());
                *halves = half.bit();
                true
            }
        };
        (self.current.get_or_insert_with(|| waker.clone()), changed)
    }

    /// Wake whoever waits (both halves, once split).
    fn wake(&self) {
        if let Some(waker) = &self.current {
            waker.wake_by_ref();
        }
    }
}

/// The two tasks that may wait for the transport to become writable, once a split `WebSocket`'s
/// halves wait from different tasks (see [`Wakers`]).
#[derive(Debug, Default)]
struct WriteWakers {
    read_half: AtomicWaker,
    write_half: AtomicWaker,
}

impl WriteWakers {
    fn register(&self, half: Half, waker: &Waker) {
        match half {
            Half::Read => self.read_half.register(waker),
            Half::Write => self.write_half.register(waker),
        }
    }
}

impl Wake for WriteWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.read_half.wake();
        self.write_half.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use gangway_proto::{Config, ProtocolError, Role};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn server_over(io: DuplexStream, leftover: &[u8]) -> WebSocket<DuplexStream> {
        WebSocket::from_parts(
            io,
            Connection::new(Role::Server, Config::default()),
            None,
            leftover,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_clock_starts_at_the_first_poll() {
        // A session handed over and first polled 5 s later (a server that queues what it
        // accepts) is not judged on those 5 s: its idle timeout counts from the first poll.
        let (io, _peer) = tokio::io::duplex(64);
        let mut config = Config::default();
        config.idle_timeout = Some(Duration::from_secs(2));
        config.ping_interval = None;
        let mut ws = WebSocket::from_parts(io, Connection::new(Role::Server, config), None, &[]);
        tokio::time::advance(Duration::from_secs(5)).await;
        let polled = tokio::time::Instant::now();
        let end = std::future::poll_fn(|cx| Pin::new(&mut ws).poll_next(cx)).await;
        assert!(
            matches!(end, Some(Err(Error::Unresponsive(TimeoutError::Idle)))),
            "{end:?}"
        );
        assert_eq!(polled.elapsed(), Duration::from_secs(2));
    }

    /// A transport that writes vectored, at most `max` bytes per call taken across the parts
    /// it is given, and counts its vectored calls.
    struct Trickle {
        io: DuplexStream,
        max: usize,
        vectored_calls: Arc<AtomicUsize>,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.max);
            Pin::new(&mut self.io).poll_write(cx, &buf[..n])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.vectored_calls.fetch_add(1, Ordering::SeqCst);
            let mut gathered = Vec::new();
            for part in bufs {
                let room = self.max - gathered.len();
                gathered.extend_from_slice(&part[..part.len().min(room)]);
            }
            Pin::new(&mut self.io).poll_write(cx, &gathered)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn large_messages_go_out_in_vectored_writes_intact_however_little_each_write_takes() {
        for max in [1, 7, 4096, usize::MAX] {
            let (io, peer) = tokio::io::duplex(1 << 20);
            let vectored_calls = Arc::new(AtomicUsize::new(0));
            let transport = Trickle {
                io,
                max,
                vectored_calls: Arc::clone(&vectored_calls),
            };
            let mut ws = WebSocket::from_parts(
                transport,
                Connection::new(Role::Server, Config::default()),
                None,
                &[],
            );
            // Sent as a server sends them: large payloads from their own buffers, small ones
            // copied, in one batch.
            let mut sent = Vec::new();
            for i in 0..6u8 {
                let len = if i % 2 == 0 {
                    20_000 + usize::from(i)
                } else {
                    10
                };
                let payload = Bytes::from(vec![i; len]);
                sent.push(payload.clone());
                futures_util::SinkExt::feed(&mut ws, Message::Binary(payload))
                    .await
                    .unwrap();
            }
            futures_util::SinkExt::flush(&mut ws).await.unwrap();
            assert!(vectored_calls.load(Ordering::SeqCst) > 0, "max {max}");
            drop(ws);
            // The client's reading side: every frame whole and in order.
            let mut client = Connection::new(Role::Client, Config::default());
            let mut wire = Vec::new();
            let mut peer = peer;
            peer.read_to_end(&mut wire).await.unwrap();
            client.receive_data(&wire, Instant::now());
            let got: Vec<Bytes> = std::iter::from_fn(|| client.poll_event().unwrap())
                .map(|event| match event {
                    gangway_proto::Event::Binary(data) => data,
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            assert_eq!(got, sent, "max {max}");
        }
    }

    /// A client frame: FIN, `opcode`, masked when `masked`.
    fn client_frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let key = masked.then_some(gangway_test_support::KEY);
        gangway_test_support::Frame::new(opcode, payload)
            .mask(key)
            .encode()
    }

    #[tokio::test]
    async fn violation_in_leftover_is_reported_after_the_messages_before_it() {
        let (io, _peer) = tokio::io::duplex(1024);
        let mut leftover = client_frame(0x1, b"first", true);
        leftover.extend(client_frame(0x1, b"unmasked", false));
        let mut ws = server_over(io, &leftover);
        assert_eq!(
            futures_util::StreamExt::next(&mut ws)
                .await
                .unwrap()
                .unwrap(),
            Message::text("first")
        );
        assert!(matches!(
            futures_util::StreamExt::next(&mut ws).await,
            Some(Err(Error::Protocol(ProtocolError::UnmaskedFrame)))
        ));
        assert!(futures_util::StreamExt::next(&mut ws).await.is_none());
    }

    #[tokio::test]
    async fn connections_on_one_thread_share_the_read_buffer() {
        let first = client_frame(0x2, b"data", true);
        let (io, mut peer) = tokio::io::duplex(1024);
        let mut ws = server_over(io, &[]);
        peer.write_all(&first).await.unwrap();
        let Some(Ok(Message::Binary(data))) = futures_util::StreamExt::next(&mut ws).await else {
            panic!("no binary message");
        };
        assert_eq!(data, &b"data"[..]);
        let waker = Waker::from(Arc::new(CountingWaker::default()));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut ws).poll_next(&mut cx).is_pending());
        // A second connection on this thread reads into the same buffer, right after the first
        // read, and its message is lent from there too (not copied).
        let (io2, mut peer2) = tokio::io::duplex(1024);
        let mut ws2 = server_over(io2, &[]);
        peer2
            .write_all(&client_frame(0x2, b"other", true))
            .await
            .unwrap();
        let Some(Ok(Message::Binary(other))) = futures_util::StreamExt::next(&mut ws2).await else {
            panic!("no binary message");
        };
        assert_eq!(other, &b"other"[..]);
        assert_eq!(
            other.as_ptr() as usize - data.as_ptr() as usize,
            first.len()
        );
    }

    #[tokio::test]
    async fn a_kept_message_survives_while_reading_goes_on_in_a_new_buffer() {
        let (io, mut peer) = tokio::io::duplex(64 << 10);
        let mut ws = server_over(io, &[]);
        let payload = [7u8; 100];
        let frame = client_frame(0x2, &payload, true);
        const COUNT: usize = 12_000;
        // Several times the read buffer's size, written while the server reads.
        let writer = tokio::spawn(async move {
            peer.write_all(&client_frame(0x2, b"keep me", true))
                .await
                .unwrap();
            for _ in 0..COUNT {
                peer.write_all(&frame).await.unwrap();
            }
            peer
        });
        let Some(Ok(Message::Binary(kept))) = futures_util::StreamExt::next(&mut ws).await else {
            panic!("no binary message");
        };
        let kept_at = kept.as_ptr() as usize;
        let mut outside = 0;
        let (mut lowest, mut highest) = (usize::MAX, 0);
        for i in 0..COUNT {
            let Some(Ok(Message::Binary(data))) = futures_util::StreamExt::next(&mut ws).await
            else {
                panic!("message {i} missing");
            };
            assert_eq!(data, &payload[..], "message {i}");
            let at = data.as_ptr() as usize;
            // The kept message's buffer cannot be reused while it lives: later reads go on in
            // other allocations.
            if at.abs_diff(kept_at) > READ_BUFFER_SIZE {
                outside += 1;
                lowest = lowest.min(at);
                highest = highest.max(at);
            }
        }
        assert_eq!(kept, &b"keep me"[..], "a kept message is never overwritten");
        assert!(
            outside > 0,
            "{COUNT} messages read without leaving the first buffer"
        );
        // Nothing else was kept: once the first buffer was left, one buffer was reused (or freed
        // and allocated again at the same place), not a new one per renewal.
        assert!(
            highest - lowest < READ_BUFFER_SIZE,
            "{lowest:#x}..{highest:#x}"
        );
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn buffers_are_released_once_nothing_is_left_to_read_or_write() {
        let (io, mut peer) = tokio::io::duplex(4096);
        let mut ws = server_over(io, &[]);
        let waker = Waker::from(Arc::new(CountingWaker::default()));
        let mut cx = Context::from_waker(&waker);
        // Two messages in one read: the second is still queued while the first is echoed.
        let mut frames = client_frame(0x2, b"ping me", true);
        frames.extend(client_frame(0x2, b"and me", true));
        peer.write_all(&frames).await.unwrap();
        let first = futures_util::StreamExt::next(&mut ws)
            .await
            .unwrap()
            .unwrap();
        futures_util::SinkExt::feed(&mut ws, first).await.unwrap();
        // Busy: an event waits and the echo is not written yet; nothing is freed.
        assert!(ws.conn.output_len() > 0);
        let second = futures_util::StreamExt::next(&mut ws)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second, Message::Binary(Bytes::from_static(b"and me")));
        // The next poll writes the echo and finds nothing to read: idle, buffers given back,
        // to this thread's spare set.
        assert!(Pin::new(&mut ws).poll_next(&mut cx).is_pending());
        assert!(ws.conn.output().is_empty());
        assert!(!ws.conn.holds_spare_buffers());
        assert!(PER_THREAD.with(|shared| !shared.borrow().spare.is_empty()));
        let mut echo = [0u8; 9];
        peer.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo[2..], b"ping me");

        // A reply larger than the transport takes: reading finds nothing while it is still
        // being written, and its buffer goes once the rest is written.
        peer.write_all(&client_frame(0x2, b"x", true))
            .await
            .unwrap();
        let _ = futures_util::StreamExt::next(&mut ws)
            .await
            .unwrap()
            .unwrap();
        futures_util::SinkExt::feed(&mut ws, Message::Binary(vec![7u8; 10_000].into()))
            .await
            .unwrap();
        assert!(Pin::new(&mut ws).poll_next(&mut cx).is_pending());
        assert!(ws.conn.output_len() > 0, "the duplex holds 4096 bytes");
        let mut reply = vec![0u8; 4 + 10_000];
        let (read, flushed) = tokio::join!(
            peer.read_exact(&mut reply),
            futures_util::SinkExt::flush(&mut ws)
        );
        read.unwrap();
        flushed.unwrap();
        assert!(reply[4..].iter().all(|&b| b == 7));
        assert!(!ws.conn.holds_spare_buffers(), "released after the write");
    }

    #[tokio::test]
    async fn the_close_reply_buffer_goes_to_the_spare_set_when_the_connection_ends() {
        let (io, mut peer) = tokio::io::duplex(4096);
        let mut ws = server_over(io, &[]);
        // This thread's spare set starts empty (tests share threads only one at a time).
        drop(take_spare());
        peer.write_all(&client_frame(0x8, &1000u16.to_be_bytes(), true))
            .await
            .unwrap();
        // The close is answered, and the stream ends: the reply was written from a buffer of
        // the connection's own, given back now that nothing more will be written.
        assert!(futures_util::StreamExt::next(&mut ws).await.is_none());
        let mut reply = [0u8; 4];
        peer.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, [0x88, 2, 0x03, 0xe8]);
        assert!(ws.conn.ended().is_some());
        assert!(!ws.conn.holds_spare_buffers());
        let spare = take_spare();
        assert!(
            spare.is_empty() && spare.capacity() > 0,
            "{}",
            spare.capacity()
        );
        // What a handshake answer borrows and hands back is kept for the next connection.
        give_back_spare(spare);
        assert!(PER_THREAD.with(|shared| !shared.borrow().spare.is_empty()));
    }

    #[tokio::test]
    async fn sender_is_woken_when_the_transport_drains_after_the_reader_wrote() {
        let (io, mut peer) = tokio::io::duplex(4096);
        let mut ws = server_over(io, &[]);
        let sender = Arc::new(CountingWaker::default());
        let reader = Arc::new(CountingWaker::default());
        let sender_waker = Waker::from(Arc::clone(&sender));
        let reader_waker = Waker::from(Arc::clone(&reader));
        let mut sender_cx = Context::from_waker(&sender_waker);
        let mut reader_cx = Context::from_waker(&reader_waker);

        // Fill the transport and the write buffer until sending waits.
        let chunk = Bytes::from(vec![0u8; 32 << 10]);
        while Pin::new(&mut ws).poll_ready(&mut sender_cx).is_ready() {
            Pin::new(&mut ws)
                .start_send(Message::Binary(chunk.clone()))
                .unwrap();
        }
        // The read half writes too (it flushes queued output), replacing the transport's waker.
        assert!(Pin::new(&mut ws).poll_next(&mut reader_cx).is_pending());

        // The peer reads: the transport is writable again, and the sender must hear of it.
        let mut sink = vec![0u8; 4096];
        let _ = peer.read(&mut sink).await.unwrap();
        assert!(sender.0.load(Ordering::SeqCst) > 0, "sender never woken");
    }

    #[tokio::test]
    async fn one_task_needs_no_waker_proxy_and_a_second_one_gets_it() {
        let (io, mut peer) = tokio::io::duplex(4096);
        let mut ws = server_over(io, &[]);
        let first = Arc::new(CountingWaker::default());
        let second = Arc::new(CountingWaker::default());
        let first_waker = Waker::from(Arc::clone(&first));
        let second_waker = Waker::from(Arc::clone(&second));
        let mut first_cx = Context::from_waker(&first_waker);
        let mut second_cx = Context::from_waker(&second_waker);

        // One task sends until sending waits, and reads (which writes too): both halves wait
        // with its waker, handed to the transport as it is.
        let chunk = Bytes::from(vec![0u8; 32 << 10]);
        while Pin::new(&mut ws).poll_ready(&mut first_cx).is_ready() {
            Pin::new(&mut ws)
                .start_send(Message::Binary(chunk.clone()))
                .unwrap();
        }
        assert!(Pin::new(&mut ws).poll_next(&mut first_cx).is_pending());
        assert!(ws.wakers.shared.is_none(), "proxy allocated for one task");

        // The sending side moves to another task and waits there: from now on both tasks wait
        // for the transport, and both must be woken.
        assert!(Pin::new(&mut ws).poll_ready(&mut second_cx).is_pending());
        assert!(ws.wakers.shared.is_some(), "no proxy for two tasks");
        let mut sink = vec![0u8; 4096];
        let _ = peer.read(&mut sink).await.unwrap();
        assert!(second.0.load(Ordering::SeqCst) > 0, "sender never woken");
        assert!(first.0.load(Ordering::SeqCst) > 0, "reader never woken");
    }

    #[test]
    fn websocket_stays_small() {
        // Every idle connection holds one (a server's task keeps it for the connection's whole
        // life): a field that slips in costs every connection. The adapter's own fields take
        // 48 bytes: 46 (the wakers 24; protocol and timer 8 each; six flags) padded to a word.
        // Everything about the protocol, the close handshake's deadline included, is the core's.
        // The core's `Connection` (bounded by the core's own size test) and the transport come
        // on top; a `TcpStream` is 24 bytes in a release build of this crate, 40 in its tests
        // (the tokio features they enable, such as the multi-thread runtime, widen it).
        let size = std::mem::size_of::<WebSocket<tokio::net::TcpStream>>();
        let own =
            size - std::mem::size_of::<Connection>() - std::mem::size_of::<tokio::net::TcpStream>();
        assert!(own <= 48, "WebSocket's own fields: {own} bytes (of {size})");
    }

    #[tokio::test]
    async fn peer_that_pings_without_reading_cannot_grow_the_write_buffer() {
        let (io, mut peer) = tokio::io::duplex(64 << 10);
        let mut ws = server_over(io, &[]);
        let ping = client_frame(0x9, &[0x55; 125], true);
        // 4 MiB of pings, far more than any buffer; the writer stalls once we stop reading.
        let flood = tokio::spawn(async move {
            for _ in 0..(4 << 20) / ping.len() {
                if peer.write_all(&ping).await.is_err() {
                    break;
                }
            }
            peer
        });
        let mut pings = 0;
        while let Ok(Some(msg)) = tokio::time::timeout(
            Duration::from_millis(200),
            futures_util::StreamExt::next(&mut ws),
        )
        .await
        {
            assert!(matches!(msg, Ok(Message::Ping(_))));
            pings += 1;
        }
        assert!(pings > 0);
        // The core pauses reading past 64 KiB of unsent answers; one read's worth of pings may
        // be answered before the pause is seen.
        assert!(
            ws.conn.output().len() <= (64 << 10) + 2 * READ_SIZE,
            "{} bytes of pongs queued",
            ws.conn.output().len()
        );
        flood.abort();
    }

    #[tokio::test]
    async fn each_lends_every_message_and_its_answers_go_out_in_order() {
        let (io, mut peer) = tokio::io::duplex(1 << 20);
        let large: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
        let mut stream = Vec::new();
        for i in 0..200u32 {
            stream.extend(client_frame(0x2, &i.to_be_bytes(), true));
            if i % 50 == 0 {
                stream.extend(client_frame(0x1, "é".repeat(100).as_bytes(), true));
                stream.extend(client_frame(0x9, b"ping", true));
                stream.extend(client_frame(0x2, &large, true));
            }
        }
        stream.extend(client_frame(0x8, &[0x03, 0xE8], true));
        let expected_frames = 200 + 4 * 3 + 1;
        let mut ws = server_over(io, &[]);
        let writer = tokio::spawn(async move {
            peer.write_all(&stream).await.unwrap();
            let mut echoed = Vec::new();
            peer.read_to_end(&mut echoed).await.unwrap();
            echoed
        });
        let (mut binary, mut kinds) = (0u32, Vec::new());
        let end = ws
            .each(|event, replies| {
                match event {
                    EventRef::Binary(data) if data.len() == 4 => {
                        assert_eq!(data, binary.to_be_bytes(), "in order");
                        binary += 1;
                    }
                    other => kinds.push(format!("{other:?}").chars().take(4).collect::<String>()),
                }
                replies.echo().unwrap();
            })
            .await;
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(binary, 200);
        assert_eq!(kinds.iter().filter(|k| *k == "Text").count(), 4);
        assert_eq!(kinds.iter().filter(|k| *k == "Ping").count(), 4);
        assert_eq!(kinds.last().map(String::as_str), Some("Clos"));
        // The server closed the transport after the close handshake: everything came back.
        let echoed = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .unwrap()
            .unwrap();
        let frames = gangway_test_support::parse_frames(&echoed);
        assert_eq!(frames.len(), expected_frames);
        let larges = frames
            .iter()
            .filter(|f| f.payload.len() == large.len())
            .count();
        assert_eq!(larges, 4);
        assert!(frames
            .iter()
            .all(|f| f.payload.len() != large.len() || f.payload == large));
        assert_eq!(frames.last().map(|f| f.opcode), Some(0x8));
        // Ended: it stays so.
        assert!(ws
            .each(|_, _| panic!("nothing after the end"))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn each_stops_reading_while_its_answers_wait_for_a_peer_that_does_not_read() {
        let (io, mut peer) = tokio::io::duplex(64 << 10);
        let mut ws = server_over(io, &[]);
        let message = client_frame(0x2, &[0x33; 1000], true);
        // 8 MiB of messages, never reading the echoes: the writer stalls once we stop reading.
        let flood = tokio::spawn(async move {
            let mut sent = 0;
            for _ in 0..(8 << 20) / message.len() {
                if peer.write_all(&message).await.is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        });
        let mut echoed = 0usize;
        let waited = tokio::time::timeout(
            Duration::from_millis(500),
            ws.each(|_, replies| {
                replies.echo().unwrap();
                echoed += 1;
            }),
        )
        .await;
        assert!(waited.is_err(), "still open, waiting for the peer to read");
        assert!(echoed > 0);
        assert!(
            !flood.is_finished(),
            "the reading stopped, so the writer stalled"
        );
        // At most the high-water mark plus one read's worth of answers.
        let queued = ws.conn.output_len();
        assert!(
            queued <= WRITE_BUFFER_HIGH_WATER + READ_SIZE + 1000,
            "{queued} bytes of answers queued"
        );
        assert!(echoed * 1004 < (8 << 20) / 2, "{echoed} echoed");
        flood.abort();
    }

    #[tokio::test]
    async fn each_ends_with_the_violation_after_the_messages_before_it() {
        let (io, mut peer) = tokio::io::duplex(1 << 16);
        let mut stream = client_frame(0x2, b"before", true);
        stream.extend(client_frame(0x2, b"unmasked", false));
        peer.write_all(&stream).await.unwrap();
        let mut ws = server_over(io, &[]);
        let mut got = Vec::new();
        let end = ws
            .each(|event, _| {
                if let EventRef::Binary(data) = event {
                    got.push(data.to_vec());
                }
            })
            .await;
        assert_eq!(got, [b"before".to_vec()]);
        assert!(
            matches!(
                end,
                Err(Error::Protocol(gangway_proto::ProtocolError::UnmaskedFrame))
            ),
            "{end:?}"
        );
        let mut out = Vec::new();
        peer.read_to_end(&mut out).await.unwrap();
        let frames = gangway_test_support::parse_frames(&out);
        assert_eq!(
            frames.last().map(|f| f.opcode),
            Some(0x8),
            "the close frame for 1002"
        );
    }
}
