//! `gangway connect -v`: the opening handshake on stderr, as curl shows HTTP.
//!
//! `* ` lines are information (where we connected, TLS), `> ` lines the request head as written
//! to the connection, `< ` lines the response head as read from it; each head ends with its blank
//! line (`> ` or `< ` alone). The heads are taken from the bytes themselves, by [`Traced`], a
//! transport wrapper that watches them go by until each head's blank line and is a plain
//! pass-through from then on: what is shown is exactly what was sent and received (the real
//! `Sec-WebSocket-Key`, the server's headers in its order and spelling), also when the server
//! refuses the upgrade. Received lines are escaped like messages: the server chooses them.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use gangway::MaybeTlsStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::escape::escape_into;

/// A head line longer than this is cut (the rest is not shown); heads are a few hundred bytes.
const MAX_LINE: usize = 8 << 10;

/// A transport that prints the heads crossing it on stderr (when tracing) and passes everything
/// through unchanged.
#[derive(Debug)]
pub(crate) struct Traced<S> {
    inner: S,
    sent: Option<Head>,
    received: Option<Head>,
}

impl<S> Traced<S> {
    /// Wrap `inner`; with `trace` false nothing is ever printed.
    pub(crate) fn new(inner: S, trace: bool) -> Traced<S> {
        Traced {
            inner,
            sent: trace.then(|| Head::new("> ")),
            received: trace.then(|| Head::new("< ")),
        }
    }

    /// The transport inside.
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Print a `* ` information line.
pub(crate) fn info(line: &str) {
    eprintln!("* {line}");
}

/// The `* ` lines about a fresh transport: the peer's address, and the TLS session.
pub(crate) fn describe(stream: &MaybeTlsStream, insecure: bool) {
    match stream.get_ref().peer_addr() {
        Ok(addr) => info(&format!("connected to {addr}")),
        Err(e) => info(&format!("connected (peer address unknown: {e})")),
    }
    let Some(tls) = stream.tls_state() else {
        return;
    };
    let version = tls
        .protocol_version()
        .map_or_else(|| "?".to_owned(), |v| format!("{v:?}").replace('_', "."));
    let suite = tls
        .negotiated_cipher_suite()
        .map_or_else(|| "?".to_owned(), |s| format!("{:?}", s.suite()));
    info(&format!("tls: {version}, {suite}"));
    if let Some(alpn) = tls.alpn_protocol() {
        info(&format!("alpn: {}", String::from_utf8_lossy(alpn)));
    }
    let chain = tls.peer_certificates().map_or(0, <[_]>::len);
    let verified = if insecure {
        "NOT verified (--insecure)"
    } else {
        "verified"
    };
    info(&format!(
        "server certificate {verified}; chain of {chain} certificate{}",
        if chain == 1 { "" } else { "s" }
    ));
}

/// One direction's head, cut into lines as its bytes go by.
#[derive(Debug)]
struct Head {
    prefix: &'static str,
    line: Vec<u8>,
}

impl Head {
    fn new(prefix: &'static str) -> Head {
        Head {
            prefix,
            line: Vec::new(),
        }
    }

    /// Take `bytes`, handing each complete line (prefixed, escaped, without its line end) to
    /// `print`. True once the blank line that ends the head went by: the rest is not a head.
    fn feed(&mut self, bytes: &[u8], print: &mut impl FnMut(String)) -> bool {
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() < MAX_LINE {
                    self.line.push(b);
                }
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let mut shown = self.prefix.as_bytes().to_vec();
            escape_into(&self.line, &mut shown);
            print(String::from_utf8_lossy(&shown).into_owned());
            let end = self.line.is_empty();
            self.line.clear();
            if end {
                return true;
            }
        }
        false
    }
}

/// Feed a direction's head, and stop watching it once it is complete.
fn watch(head: &mut Option<Head>, bytes: &[u8]) {
    if let Some(h) = head {
        if h.feed(bytes, &mut |line| eprintln!("{line}")) {
            *head = None;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Traced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        watch(&mut this.received, &buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Traced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        // Shown once written: a line appears when it has really gone out.
        watch(&mut this.sent, buf.get(..n).unwrap_or(buf));
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        if this.sent.is_some() {
            let mut left = n;
            for b in bufs {
                let take = left.min(b.len());
                watch(&mut this.sent, &b[..take]);
                left -= take;
                if left == 0 {
                    break;
                }
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn lines(head: &mut Head, chunks: &[&[u8]]) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        let mut done = false;
        for chunk in chunks {
            done = head.feed(chunk, &mut |l| out.push(l));
        }
        (out, done)
    }

    #[test]
    fn head_lines_are_cut_at_line_ends_across_chunks() {
        let mut head = Head::new("< ");
        let (out, done) = lines(
            &mut head,
            &[
                b"HTTP/1.1 101 Switching",
                b" Protocols\r\nUpgrade: websocket\r",
                b"\n",
            ],
        );
        assert_eq!(
            out,
            ["< HTTP/1.1 101 Switching Protocols", "< Upgrade: websocket"]
        );
        assert!(!done);
        let (out, done) = lines(&mut head, &[b"\r\n\x81\x02ok"]);
        assert_eq!(out, ["< "]);
        assert!(done, "the blank line ends the head");
    }

    #[test]
    fn head_lines_from_the_peer_are_escaped() {
        let mut head = Head::new("< ");
        let (out, _) = lines(&mut head, &[b"X-Evil: a\x1b[2Jb\tc\r\n"]);
        assert_eq!(out, ["< X-Evil: a\\x1b[2Jb\\tc"]);
    }

    #[tokio::test]
    async fn traced_stream_passes_bytes_through_unchanged() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut traced = Traced::new(a, false);
        traced
            .write_all(b"GET / HTTP/1.1\r\n\r\nframes")
            .await
            .unwrap();
        let mut got = [0u8; 24];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n\r\nframes");
        b.write_all(b"answer").await.unwrap();
        let mut got = [0u8; 6];
        traced.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"answer");
    }
}
