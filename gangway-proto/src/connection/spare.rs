//! [`SpareBuffers`]: buffers that idle connections hand back, for the next busy one.

use super::output::MAX_RETAINED_OUTPUT;
use super::Connection;

/// Empty buffers that idle connections handed back, for the next busy one (see
/// [`Connection::release_buffers_into`]). Holds at most one output buffer (of at most 64 KiB);
/// `Default` holds none.
#[derive(Debug, Default)]
pub struct SpareBuffers {
    out: Vec<u8>,
}

impl SpareBuffers {
    /// Whether it holds no buffer.
    pub fn is_empty(&self) -> bool {
        self.out.capacity() == 0
    }

    /// Lend the output buffer it holds (empty; a new, empty `Vec` if it holds none), for bytes
    /// written before a connection exists: a server's handshake answer. Hand it back with
    /// [`give_back`](Self::give_back) once written, for the next connection.
    ///
    /// ```
    /// use gangway_proto::SpareBuffers;
    ///
    /// let mut spare = SpareBuffers::default();
    /// let mut buf = spare.take();
    /// buf.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    /// spare.give_back(buf);
    /// assert!(!spare.is_empty());
    /// assert!(spare.take().is_empty());
    /// ```
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Keep `buf`, emptied, as a spare output buffer if there is room for it and it is not too
    /// large to keep; else it is freed.
    pub fn give_back(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        self.keep(buf);
    }

    /// Keep `buf` (empty) if there is room for it and it is not too large to keep; else it is
    /// freed.
    fn keep(&mut self, buf: Vec<u8>) {
        if self.out.capacity() == 0 && buf.capacity() <= MAX_RETAINED_OUTPUT {
            self.out = buf;
        }
    }
}

/// Buffers kept between messages, and given back while idle.
impl Connection {
    /// Free the buffers that a busy connection keeps between messages: the output buffer once
    /// everything in it was consumed, and the input buffer once everything in it was handed
    /// out. Call it when the connection goes idle, e.g. when the transport has nothing to read
    /// and [`output`](Self::output) is empty, so that idle connections hold no heap buffer.
    ///
    /// Nothing else changes: unconsumed output, input not handed out yet and a message being
    /// reassembled are kept, and the next message allocates again. Cheap when there is nothing
    /// to free, so it may be called on every idle turn.
    pub fn release_buffers(&mut self) {
        // Handed to a spare set that is dropped at once: freed.
        self.release_buffers_into(&mut SpareBuffers::default());
    }

    /// [`release_buffers`](Self::release_buffers), handing the output buffer to `spare` instead
    /// of freeing it, for another connection to [take](Self::reuse_buffers): an event loop that
    /// serves many connections keeps one spare set for all of them, so a connection that goes
    /// idle after each message (request/response traffic) allocates nothing for the next, and
    /// idle connections still hold none. `spare` keeps one buffer; what it cannot keep is freed.
    ///
    /// ```
    /// use gangway_proto::{Config, Connection, Role, SpareBuffers};
    ///
    /// let mut spare = SpareBuffers::default();
    /// let (mut a, mut b) = (
    ///     Connection::new(Role::Server, Config::default()),
    ///     Connection::new(Role::Server, Config::default()),
    /// );
    /// a.send_text("hello")?;
    /// a.consume_output(a.output_len());
    /// a.release_buffers_into(&mut spare); // `a` is idle: its output buffer goes to `spare`
    /// assert!(!a.holds_spare_buffers());
    /// b.reuse_buffers(&mut spare); // `b` is about to be busy: it takes it
    /// b.send_text("world")?;
    /// # Ok::<(), gangway_proto::ApiMisuse>(())
    /// ```
    pub fn release_buffers_into(&mut self, spare: &mut SpareBuffers) {
        if let Some(buf) = self.output.drained_buffer() {
            spare.keep(buf);
        }
        self.input.release_if_empty();
        self.tidy_spill();
    }

    /// Take from `spare` the buffers this connection has none of (see
    /// [`release_buffers_into`](Self::release_buffers_into)); call it before feeding input, e.g.
    /// when the transport is readable.
    #[inline]
    pub fn reuse_buffers(&mut self, spare: &mut SpareBuffers) {
        self.output.reuse(&mut spare.out);
    }

    /// Whether [`release_buffers`](Self::release_buffers) would free anything now.
    pub fn holds_spare_buffers(&self) -> bool {
        self.output.holds_drained_buffer() || self.input.holds_empty_buffer()
    }
}
