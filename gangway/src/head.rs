//! Reading an HTTP/1.1 head from a transport: the request a server reads, the response a client
//! reads, the answer of an HTTP proxy to `CONNECT`. One loop for the three; each brings its
//! own parser.

use gangway_proto::handshake::Parsed;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How much to read at a time while waiting for a head.
const HEAD_READ_SIZE: usize = 4 << 10;

/// Why no head was read.
#[derive(Debug)]
pub(crate) enum HeadError<E> {
    /// The transport failed.
    Io(std::io::Error),
    /// The transport ended before the head was complete.
    Eof,
    /// More than the limit arrived without a complete head.
    TooLarge,
    /// The parser refused the head.
    Parse(E),
}

/// Read from `stream` until `parse` finds a complete head in what arrived; what it parsed, and
/// every byte read after the head (a peer may send frames right behind its head).
///
/// `parse` is given everything read so far, and answers as httparse does:
/// [`Parsed::Complete`] with the head's length, or [`Parsed::Partial`] for more. It is called
/// only when new bytes bring a newline (a head ends with one: a peer that trickles bytes
/// without any costs no parse) or the limit is passed. Never reads more than one byte past
/// `max_head_size` (enough to know the head is too large), so a peer that never completes its
/// head holds at most that much memory.
pub(crate) async fn read_head<S, T, E>(
    stream: &mut S,
    max_head_size: usize,
    mut parse: impl FnMut(&[u8]) -> Result<Parsed<T>, E>,
) -> Result<(T, Vec<u8>), HeadError<E>>
where
    S: AsyncRead + Unpin,
{
    let limit = max_head_size.saturating_add(1);
    let mut buf = Vec::new();
    loop {
        // At least 1: the loop ends once `buf` holds more than `max_head_size`.
        let room = limit.saturating_sub(buf.len()).min(HEAD_READ_SIZE);
        if buf.capacity() - buf.len() < room {
            // Grow geometrically (a byte-at-a-time peer costs no quadratic copying), but never
            // past the limit.
            let target = (buf.capacity() * 2).max(buf.len() + room).min(limit);
            buf.reserve_exact(target - buf.len());
        }
        let start = buf.len();
        let read = (&mut *stream)
            .take(room as u64)
            .read_buf(&mut buf)
            .await
            .map_err(HeadError::Io)?;
        if read == 0 {
            return Err(HeadError::Eof);
        }
        if !buf[start..].contains(&b'\n') && buf.len() <= max_head_size {
            continue;
        }
        match parse(&buf).map_err(HeadError::Parse)? {
            Parsed::Complete(head, head_len) => {
                let rest = buf.split_off(head_len.min(buf.len()));
                return Ok((head, rest));
            }
            // The parsers enforce the limit too; this keeps memory bounded whatever they do.
            Parsed::Partial if buf.len() > max_head_size => return Err(HeadError::TooLarge),
            Parsed::Partial => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A parser of heads that end with a blank line.
    fn blank_line(buf: &[u8]) -> Result<Parsed<usize>, ()> {
        Ok(match buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(at) => Parsed::Complete(at, at + 4),
            None => Parsed::Partial,
        })
    }

    #[tokio::test]
    async fn a_head_trickled_byte_by_byte_is_read_and_what_follows_kept() {
        let (mut ours, mut peer) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for b in b"GET / HTTP/1.1\r\nHost: x\r\n\r\nframes" {
                peer.write_all(&[*b]).await.unwrap();
            }
            peer
        });
        let (at, rest) = read_head(&mut ours, 100, blank_line).await.unwrap();
        assert_eq!(at, 23);
        let _peer = writer.await.unwrap();
        // The bytes after the head that arrived with it are handed back, the rest is unread.
        assert!(b"frames".starts_with(&rest), "{rest:?}");
    }

    #[tokio::test]
    async fn a_head_over_the_limit_is_refused_having_read_one_byte_past_it() {
        let (mut ours, mut peer) = tokio::io::duplex(1 << 16);
        peer.write_all(&[b'a'; 1000]).await.unwrap();
        peer.write_all(b"\r\n\r\n").await.unwrap();
        let err = read_head(&mut ours, 100, blank_line).await.unwrap_err();
        assert!(matches!(err, HeadError::TooLarge), "{err:?}");
        // 101 bytes were taken: the rest is still in the pipe.
        let mut left = vec![0; 2000];
        drop(peer);
        let n = ours.read(&mut left).await.unwrap();
        assert_eq!(n, 1004 - 101);
    }

    #[tokio::test]
    async fn an_end_before_the_head_is_complete_is_reported() {
        let (mut ours, mut peer) = tokio::io::duplex(64);
        peer.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        drop(peer);
        let err = read_head(&mut ours, 100, blank_line).await.unwrap_err();
        assert!(matches!(err, HeadError::Eof), "{err:?}");
    }
}
