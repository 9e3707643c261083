//! `WebSocket`: a `Stream` of received messages and a `Sink` of messages to send.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use gangway_proto::{CloseCode, CloseFrame, Connection};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Error, Message};

/// An open WebSocket over the transport `S`.
///
/// Receive with `StreamExt::next`, send with `SinkExt::send`; `StreamExt::split` gives halves for
/// two tasks. Sending waits while the write buffer is full, so a peer that does not read cannot make
/// this side's memory grow.
pub struct WebSocket<S> {
    _io: S,
    _conn: Connection,
    _protocol: Option<String>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wrap a transport whose handshake is done. `leftover` are bytes read after the handshake head.
    pub fn from_parts(io: S, conn: Connection, protocol: Option<String>, leftover: &[u8]) -> Self {
        let _ = leftover;
        WebSocket {
            _io: io,
            _conn: conn,
            _protocol: protocol,
        }
    }

    /// The negotiated subprotocol.
    pub fn protocol(&self) -> Option<&str> {
        self._protocol.as_deref()
    }

    /// The peer's close frame, once received (`Some(None)`: it carried no status code).
    pub fn close_frame(&self) -> Option<&Option<CloseFrame>> {
        todo!()
    }

    /// Send a close frame, then wait (bounded) for the peer's close and the end of the transport.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] for a code that may not be sent or after a close was already sent,
    /// [`Error::Io`], [`Error::Timeout`].
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let _ = (code, reason);
        todo!()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let _ = cx;
        todo!()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let _ = cx;
        todo!()
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        let _ = item;
        todo!()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let _ = cx;
        todo!()
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let _ = cx;
        todo!()
    }
}
