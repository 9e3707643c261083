//! [`Output`]: the bytes a connection has for the transport, in one buffer and, for payloads
//! queued without a copy, in parts of their own.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

use crate::frame::{FrameHeader, MAX_HEADER_LEN};

/// The largest output buffer kept once drained for the next burst (see
/// [`Output::drained_buffer`]); a larger one, left by a large message, is freed at once.
///
/// Large messages are rare on most connections: keeping their buffers until the connection goes
/// quiet would hold, across 10,000 connections that each sent one 64 KiB message, 640 MiB that
/// the allocator then keeps mapped. Freed at once, each is reused by the next large message.
pub(super) const MAX_RETAINED_OUTPUT: usize = 64 * 1024;

/// The smallest allocation of the output buffer: room for a batch of small frames, so it does
/// not reallocate frame after frame as it fills.
const MIN_OUTPUT_CAPACITY: usize = 512;

/// Bytes waiting for the transport: frames encoded into one buffer, and payloads queued as
/// parts of their own between them ([`push_shared`](Self::push_shared)), in order.
///
/// The caller writes [`first`](Self::first) (or every part at once, [`parts`](Self::parts)) and
/// [`consume`](Self::consume)s what the transport took.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Encoded frames; `buf[pos..]` is not written yet.
    buf: Vec<u8>,
    pos: usize,
    /// Parts queued without a copy, in order, each with the position in `buf` it goes after.
    /// Boxed, and only while some wait: most connections never queue one, and a pointer here
    /// costs every connection 8 bytes where the queue itself would cost 32.
    #[allow(clippy::box_collection)]
    shared: Option<Box<VecDeque<(usize, Bytes)>>>,
}

impl Output {
    /// Whether nothing waits to be written.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.buf.len() && self.shared.is_none()
    }

    /// The bytes waiting, in every part.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        let buffered = self.buf.len() - self.pos;
        match &self.shared {
            None => buffered,
            Some(queue) => buffered + queue.iter().map(|(_, part)| part.len()).sum::<usize>(),
        }
    }

    /// The next bytes to write: the start of the buffer, up to the first shared part, or that
    /// part once the buffer before it is written.
    #[inline]
    pub(crate) fn first(&self) -> &[u8] {
        let end = match self.shared.as_deref().and_then(VecDeque::front) {
            None => self.buf.len(),
            Some((at, part)) if *at == self.pos => return part,
            Some(&(at, _)) => at,
        };
        self.buf.get(self.pos..end).unwrap_or_default()
    }

    /// The parts waiting, in order, as many as `dst` holds; returns how many were filled.
    pub(crate) fn parts<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        let mut push = |part: &'a [u8]| {
            if part.is_empty() {
                return true;
            }
            let Some(slot) = dst.get_mut(filled) else {
                return false;
            };
            *slot = IoSlice::new(part);
            filled += 1;
            true
        };
        let mut pos = self.pos;
        for (at, part) in self.shared.as_deref().into_iter().flatten() {
            if !push(&self.buf[pos..*at]) || !push(part) {
                return filled;
            }
            pos = *at;
        }
        push(&self.buf[pos..]);
        filled
    }

    /// Mark the first `n` bytes as written; returns whether everything is written now.
    ///
    /// # Panics
    ///
    /// If `n` is larger than [`len`](Self::len).
    #[inline]
    pub(crate) fn consume(&mut self, n: usize) -> bool {
        if self.shared.is_none() {
            let waiting = self.buf.len() - self.pos;
            assert!(
                n <= waiting,
                "consume_output({n}) past the {waiting} bytes of output"
            );
            self.pos += n;
        } else {
            let waiting = self.len();
            assert!(
                n <= waiting,
                "consume_output({n}) past the {waiting} bytes of output"
            );
            self.consume_parts(n);
        }
        if self.pos != self.buf.len() || self.shared.is_some() {
            return false;
        }
        self.pos = 0;
        if self.buf.capacity() > MAX_RETAINED_OUTPUT {
            // A large message's buffer is not kept for the small ones that usually follow.
            self.buf = Vec::new();
        } else {
            // Kept for the next burst: allocating it again for every batch of messages would
            // cost more than the framing (see `drained_buffer` for when it is given back).
            self.buf.clear();
        }
        true
    }

    /// [`consume`](Self::consume) across the parts.
    fn consume_parts(&mut self, mut n: usize) {
        while n > 0 {
            let Some((at, part)) = self.shared.as_deref_mut().and_then(VecDeque::front_mut) else {
                self.pos += n;
                return;
            };
            if self.pos < *at {
                let k = n.min(*at - self.pos);
                self.pos += k;
                n -= k;
            } else {
                let k = n.min(part.len());
                part.advance(k);
                n -= k;
                if part.is_empty() {
                    self.pop_shared();
                }
            }
        }
    }

    /// Drop the front shared part, and the queue once empty.
    fn pop_shared(&mut self) {
        if let Some(queue) = self.shared.as_deref_mut() {
            queue.pop_front();
            if queue.is_empty() {
                self.shared = None;
            }
        }
    }

    /// Before a frame of `payload_len` bytes is appended: drop what was written from the front
    /// once it outweighs what was not (a transport that takes a little at a time must not make
    /// the buffer grow without bound), and reserve room for the longest header and the payload.
    #[inline(always)]
    pub(crate) fn reserve_frame(&mut self, payload_len: usize) {
        if self.pos > 0 && self.pos >= self.buf.len() - self.pos {
            self.compact();
        }
        let needed = MAX_HEADER_LEN + payload_len;
        if self.buf.capacity() - self.buf.len() < needed {
            // Once per frame at most; the first allocation leaves room for more small frames.
            let wanted = (self.buf.len() + needed).max(MIN_OUTPUT_CAPACITY);
            self.buf.reserve(wanted - self.buf.len());
        }
    }

    /// Drop the written bytes from the front of the buffer.
    fn compact(&mut self) {
        self.buf.drain(..self.pos);
        // Shared parts go after the same bytes as before, now earlier in `buf`.
        for (at, _) in self.shared.as_deref_mut().into_iter().flatten() {
            *at -= self.pos;
        }
        self.pos = 0;
    }

    /// Append a server's frame (unmasked) of at most 64 KiB, its header in the 2- or 4-byte
    /// form, reserved for by [`reserve_frame`](Self::reserve_frame).
    #[inline(always)]
    pub(crate) fn push_server_frame(&mut self, b0: u8, payload: &[u8]) {
        let len = payload.len();
        debug_assert!(len <= 0xFFFF);
        if len <= 125 {
            // Two pushes into the room reserved: two stores, where copying a 2-byte array is a
            // call. Cannot truncate: at most 125.
            self.buf.push(b0);
            self.buf.push(len as u8);
        } else {
            // Cannot truncate: at most 0xFFFF.
            let [hi, lo] = (len as u16).to_be_bytes();
            self.buf.extend_from_slice(&[b0, 126, hi, lo]);
        }
        self.buf.extend_from_slice(payload);
    }

    /// Append a frame header (room reserved by [`reserve_frame`](Self::reserve_frame)); returns
    /// where its payload starts in the buffer.
    #[inline]
    pub(crate) fn push_header(&mut self, header: &FrameHeader) -> usize {
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        // A fixed-size copy is a couple of moves where a copy of `head_len` bytes is a call to
        // `memcpy`; the bytes past the header are cut off again before the payload.
        let start = self.buf.len() + head_len;
        self.buf.extend_from_slice(&head);
        self.buf.truncate(start);
        start
    }

    /// Append payload bytes to the buffer.
    #[inline]
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer's bytes from `start` (a frame's payload, to be masked in place).
    pub(crate) fn tail_mut(&mut self, start: usize) -> &mut [u8] {
        self.buf.get_mut(start..).unwrap_or_default()
    }

    /// Queue `part` to be written after everything queued so far, without copying it: it is
    /// written from its own buffer (a vectored write with [`parts`](Self::parts)) and dropped
    /// once written. A whole pre-encoded frame, or a payload after its header.
    pub(crate) fn push_shared(&mut self, part: Bytes) {
        if part.is_empty() {
            return;
        }
        let at = self.buf.len();
        self.shared
            .get_or_insert_with(Box::default)
            .push_back((at, part));
    }

    /// Drop everything unwritten, and the buffer (the connection gave up on the transport).
    pub(crate) fn clear(&mut self) {
        *self = Output::default();
    }

    /// The buffer, if nothing waits in it and it is worth keeping for another connection (see
    /// [`SpareBuffers`](super::SpareBuffers)).
    pub(crate) fn drained_buffer(&mut self) -> Option<Vec<u8>> {
        if !self.is_empty() || self.buf.capacity() == 0 {
            return None;
        }
        let mut buf = std::mem::take(&mut self.buf);
        self.pos = 0;
        buf.clear();
        Some(buf)
    }

    /// Whether [`drained_buffer`](Self::drained_buffer) would give a buffer.
    pub(crate) fn holds_drained_buffer(&self) -> bool {
        self.is_empty() && self.buf.capacity() > 0
    }

    /// Take `buf` (empty) as the buffer, if this output has none.
    #[inline]
    pub(crate) fn reuse(&mut self, buf: &mut Vec<u8>) {
        if self.buf.capacity() == 0 && self.pos == 0 {
            std::mem::swap(&mut self.buf, buf);
        }
    }

    /// Bytes of heap the buffer holds (tests).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes in the buffer, written or not (tests).
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Where the buffer is (tests: the same allocation is reused).
    #[cfg(test)]
    pub(crate) fn buffer_ptr(&self) -> *const u8 {
        self.buf.as_ptr()
    }
}
