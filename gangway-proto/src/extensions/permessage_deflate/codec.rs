//! The per-message codec of permessage-deflate (RFC 7692 §7.2): raw DEFLATE, a sync flush at the
//! end of each message with its `00 00 ff ff` tail removed, and the tail put back before
//! inflating.

use std::fmt;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::negotiate::{clamp_bits, DeflateConfig, DeflateParams};
use super::spare::{self, INFLATE_WINDOW_BITS};
use super::stateless::StatelessCompression;
use crate::role::Role;

/// The end of a sync flush, an empty stored block's LEN and NLEN: removed from the end of every
/// compressed message (§7.2.1) and appended again before inflating it (§7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The smallest window zlib compresses raw DEFLATE with (2^9 bytes); it refuses 8 bits.
const MIN_ZLIB_WINDOW_BITS: u8 = 9;

/// The smallest growth step of an output buffer, so that byte-sized pieces do not reallocate
/// every time.
const MIN_GROWTH: usize = 256;

/// Both directions of permessage-deflate for one connection: what we send and what we receive.
///
/// Built from what the handshake agreed ([`DeflateParams`]) and our own preferences
/// ([`DeflateConfig`]: level, threshold, a smaller window or no context takeover of our own).
/// Only data messages go through it; control frames are never compressed (RFC 7692 §6).
#[derive(Debug)]
pub struct PerMessageDeflate {
    /// What we send.
    pub compressor: Compressor,
    /// What we receive.
    pub decompressor: Decompressor,
    threshold: usize,
}

impl PerMessageDeflate {
    /// The codec for an endpoint in `role`.
    ///
    /// Our compressor uses the window the agreement allows us, or our own smaller one, and drops
    /// context takeover if either the agreement or our configuration says so. Our decompressor
    /// follows the peer's side of the agreement. Nothing is allocated until the first message.
    pub fn new(role: Role, params: &DeflateParams, config: &DeflateConfig) -> Self {
        let (ours, theirs) = match role {
            Role::Server => (
                (
                    params.server_max_window_bits,
                    params.server_no_context_takeover,
                    config.server_max_window_bits,
                    config.server_no_context_takeover,
                ),
                (
                    params.client_max_window_bits,
                    params.client_no_context_takeover,
                ),
            ),
            Role::Client => (
                (
                    params.client_max_window_bits,
                    params.client_no_context_takeover,
                    config.client_max_window_bits,
                    config.client_no_context_takeover,
                ),
                (
                    params.server_max_window_bits,
                    params.server_no_context_takeover,
                ),
            ),
        };
        let (allowed_bits, agreed_no_takeover, own_bits, own_no_takeover) = ours;
        let window_bits = own_bits.map_or(allowed_bits, |own| own.min(allowed_bits));
        PerMessageDeflate {
            compressor: Compressor::new(
                window_bits,
                config.level,
                agreed_no_takeover || own_no_takeover,
            ),
            decompressor: Decompressor::new(theirs.0, theirs.1),
            threshold: config.threshold,
        }
    }

    /// Whether a whole message of `len` bytes should be sent compressed: at least the threshold,
    /// and a compressor that can honour the agreed window.
    pub fn should_compress(&self, len: usize) -> bool {
        len >= self.threshold && self.compressor.can_compress()
    }

    /// The size from which whole messages are compressed
    /// ([`DeflateConfig::threshold`](super::DeflateConfig::threshold)).
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// How a whole message of `len` bytes is compressed, when it is compressed on its own: the
    /// parameters that alone determine its compressed bytes, so that a message sent to many
    /// connections is compressed once per distinct value (see [`StatelessCompression`]).
    ///
    /// `None` when the message goes uncompressed (under the threshold, or an 8-bit window) or
    /// is compressed with context takeover, referring back to what this connection sent before:
    /// such a message must be compressed by this connection's own compressor.
    pub fn stateless_compression(&self, len: usize) -> Option<StatelessCompression> {
        if len < self.threshold {
            return None;
        }
        self.compressor.stateless()
    }
}

/// Compresses outgoing messages (RFC 7692 §7.2.1).
///
/// Each call compresses a whole message, or the next fragment of one, with a sync flush, so every
/// frame's payload is complete DEFLATE blocks. At the end of a message the flush's
/// `00 00 ff ff` tail is removed.
///
/// With context takeover the state is allocated on the first message and kept for the next
/// ones, which may refer back to it. Without, the state is borrowed from the thread's spare
/// states when a message starts and given back, reset, when it ends: the next message starts
/// with an empty window, and no memory is held between messages.
pub struct Compressor {
    /// With context takeover: from the first message on. Without: while a message is in
    /// progress. Boxed: an idle connection pays a pointer for it.
    deflate: Option<Box<Compress>>,
    window_bits: u8,
    level: Compression,
    no_context_takeover: bool,
}

impl fmt::Debug for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressor")
            .field("window_bits", &self.window_bits)
            .field("level", &self.level.level())
            .field("no_context_takeover", &self.no_context_takeover)
            .field("allocated", &self.deflate.is_some())
            .finish()
    }
}

impl Compressor {
    /// A compressor with a window of 2^`window_bits` bytes (8 to 15; other values are taken as
    /// the nearest), compression `level` (0 to 9, more is 9), and context takeover unless
    /// `no_context_takeover`.
    pub fn new(window_bits: u8, level: u32, no_context_takeover: bool) -> Self {
        Compressor {
            deflate: None,
            window_bits: clamp_bits(window_bits),
            level: Compression::new(level.min(9)),
            no_context_takeover,
        }
    }

    /// Whether this compressor can compress at all: not with an 8-bit window, which zlib cannot
    /// produce for raw DEFLATE. Such a direction sends its messages uncompressed.
    pub fn can_compress(&self) -> bool {
        self.window_bits >= MIN_ZLIB_WINDOW_BITS
    }

    /// Its parameters, if it compresses every message on its own (without context takeover):
    /// a whole message then compresses to the bytes that
    /// [`StatelessCompression::compress`] gives. `None` with context takeover, or when it
    /// cannot compress.
    pub fn stateless(&self) -> Option<StatelessCompression> {
        (self.no_context_takeover && self.can_compress())
            .then(|| StatelessCompression::new(self.window_bits, self.level.level()))
    }

    /// Compress `data`, a whole message or its next fragment, and append the DEFLATE data to
    /// `out`. With `fin` (the message's last piece) the `00 00 ff ff` tail is removed (RFC 7692
    /// §7.2.1); pieces before it keep theirs (§7.2.1: the removal is for the end of the
    /// message only), so every frame holds complete blocks.
    ///
    /// An empty last piece is `00`, an empty stored block without its tail (§7.2.3.6); an empty
    /// piece before it adds nothing.
    ///
    /// A compressor that cannot compress ([`can_compress`](Self::can_compress)), or whose
    /// state breaks (zlib fails only on a broken internal state), writes `data` as stored
    /// (uncompressed) DEFLATE blocks instead, which every window size inflates; a broken state
    /// is dropped and the next message starts afresh (the peer's window then holds data the new
    /// state never refers to, which is fine).
    pub fn compress(&mut self, data: &[u8], fin: bool, out: &mut Vec<u8>) {
        if !self.can_compress() {
            stored_blocks(data, fin, out);
            self.end_message();
            return;
        }
        if data.is_empty() {
            // zlib answers a flush with no new input with nothing at all (it avoids repeated
            // flushes), but a message's end must carry the header bits of the empty stored
            // block whose LEN/NLEN the peer appends: one zero byte. The stream was already at a
            // byte boundary (every call ends with a sync flush).
            if fin {
                out.push(0x00);
                self.end_message();
            }
            return;
        }
        let start = out.len();
        let (window_bits, level) = (self.window_bits, self.level);
        let deflate = self.deflate.get_or_insert_with(|| {
            if self.no_context_takeover {
                spare::take_compressor(window_bits, level)
            } else {
                Box::new(Compress::new_with_window_bits(level, false, window_bits))
            }
        });
        let mut input = data;
        loop {
            if out.len() == out.capacity() {
                // Compressible input needs far less; incompressible input a little more.
                let guess = (input.len() / 2).max(out.capacity() - start);
                out.reserve(guess.max(MIN_GROWTH));
            }
            let before = deflate.total_in();
            if deflate
                .compress_vec(input, out, FlushCompress::Sync)
                .is_err()
            {
                return self.failed(data, fin, out, start);
            }
            let used = consumed(before, deflate.total_in(), input.len());
            input = &input[used..];
            // zlib: the flush is complete once a call returns with output space left.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if used == 0 && out.len() < out.capacity() {
                // Room and input, yet no progress: a broken state; do not spin on it.
                return self.failed(data, fin, out, start);
            }
        }
        if fin {
            // A sync flush always ends with the tail; anything else is a broken state.
            if !out[start..].ends_with(&TAIL) {
                return self.failed(data, fin, out, start);
            }
            out.truncate(out.len() - TAIL.len());
            self.end_message();
        }
    }

    /// A message is complete: without context takeover, forget it (RFC 7692 §7.1.1) and give the
    /// state back to the thread until the next message.
    fn end_message(&mut self) {
        if self.no_context_takeover {
            if let Some(state) = self.deflate.take() {
                spare::put_compressor(self.window_bits, self.level, state);
            }
        }
    }

    /// Undo a failed call: drop its output and the state it left, and store `data` instead.
    fn failed(&mut self, data: &[u8], fin: bool, out: &mut Vec<u8>, start: usize) {
        out.truncate(start);
        self.deflate = None;
        stored_blocks(data, fin, out);
    }

    /// Whether the compression state is allocated (tests check when it is freed).
    #[cfg(test)]
    fn is_allocated(&self) -> bool {
        self.deflate.is_some()
    }
}

/// Why a compressed message could not be inflated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InflateError {
    /// The message inflates to more than the limit (close code 1009). Inflating stopped there.
    TooLarge,
    /// The payload is not valid DEFLATE, or refers back to data it never sent.
    Corrupt,
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InflateError::TooLarge => f.write_str("inflated message exceeds the size limit"),
            InflateError::Corrupt => f.write_str("invalid deflate data"),
        }
    }
}

impl std::error::Error for InflateError {}

/// Inflates received compressed messages (RFC 7692 §7.2.2), a piece at a time as the payload
/// arrives, into a buffer that never grows past a limit.
///
/// Feed each piece of a compressed message's payload (unmasked) to
/// [`decompress`](Self::decompress), then call [`finish`](Self::finish) at its end, which
/// inflates the `00 00 ff ff` tail the sender removed. With context takeover the state lives
/// from the first message on; without, it is borrowed from the thread's spare states for each
/// message and given back at its end.
///
/// Every state inflates with a 32 KiB window, which inflates what any smaller window produced
/// (and zlib-rs allocates that much whatever the window).
///
/// With context takeover and a peer window of at most 2^13 bytes, only that window is kept
/// between messages: the last 2^window_bits bytes inflated, which are all the peer's next
/// message may refer to (RFC 7692 §7.1.2.2: its back references reach no further). The state
/// is then borrowed from the thread for each message, the window restored into it as a preset
/// dictionary, and given back at the message's end. An idle connection holds the window's
/// bytes (4 KiB at 12 bits) instead of a state of about 47 KiB; restoring it costs a copy of
/// the window per message, which is why larger windows keep their state instead.
///
/// A DEFLATE block with BFINAL set ends zlib's stream, but not the message: §7.2.1 lets a
/// sender flush with such blocks, and "the next DEFLATE block follows". After one, inflating
/// starts a new stream whose window is seeded with the last 32 KiB inflated from
/// the current message. (A back reference from after such a block into an earlier message, past
/// the start of the current one, is then reported as [`InflateError::Corrupt`]; senders that
/// finish a stream do not make them, as zlib cannot.)
pub struct Decompressor {
    /// With context takeover (and a large window): from the first message on. Otherwise:
    /// while a message is in progress. Boxed: an idle connection pays a pointer for it.
    inflate: Option<Box<Decompress>>,
    no_context_takeover: bool,
    /// With context takeover and a small peer window: that window, kept between messages
    /// instead of the state.
    kept: Option<Window>,
    /// The stream ended with a BFINAL block: the next bytes start a new one.
    stream_ended: bool,
    /// Payload bytes were fed since the last message ended.
    fed: bool,
}

impl fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decompressor")
            .field("no_context_takeover", &self.no_context_takeover)
            .field("kept_window", &self.kept.as_ref().map(|w| w.size))
            .field("allocated", &self.inflate.is_some())
            .finish()
    }
}

/// The largest peer window a decompressor keeps as bytes between messages rather than keeping
/// its state: 2^13 = 8 KiB.
const MAX_KEPT_WINDOW_BITS: u8 = 13;

/// The last bytes inflated, up to the peer's window: what its next message may refer back to.
#[derive(Clone)]
struct Window {
    bytes: Vec<u8>,
    /// 2^window_bits.
    size: usize,
}

impl Window {
    /// Append what was just inflated, keeping the last `size` bytes.
    fn remember(&mut self, inflated: &[u8]) {
        let inflated = &inflated[inflated.len().saturating_sub(self.size)..];
        let excess = (self.bytes.len() + inflated.len()).saturating_sub(self.size);
        if excess > 0 {
            self.bytes.drain(..excess);
        }
        if self.bytes.capacity() == 0 {
            // Allocated once, to its final size.
            self.bytes.reserve_exact(self.size);
        }
        self.bytes.extend_from_slice(inflated);
    }
}

impl Decompressor {
    /// A decompressor for a peer that compresses with a window of at most 2^`window_bits`
    /// bytes (8 to 15, other values taken as the nearest) and, unless `no_context_takeover`,
    /// refers back to earlier messages. A window of up to 2^13 bytes is kept between messages
    /// instead of a state (see above).
    pub fn new(window_bits: u8, no_context_takeover: bool) -> Self {
        let window_bits = clamp_bits(window_bits);
        let kept = (!no_context_takeover && window_bits <= MAX_KEPT_WINDOW_BITS).then(|| Window {
            bytes: Vec::new(),
            size: 1 << window_bits,
        });
        Decompressor {
            inflate: None,
            no_context_takeover,
            kept,
            stream_ended: false,
            fed: false,
        }
    }

    /// Inflate the next piece of a compressed message's payload, appending to `out`, which
    /// never grows past `limit` bytes.
    ///
    /// # Errors
    ///
    /// [`InflateError::TooLarge`] as soon as the message would inflate to more than `limit`
    /// bytes (`out` then holds exactly `limit` bytes: the output stops there);
    /// [`InflateError::Corrupt`] for data that is not DEFLATE. Either way the message is lost and
    /// the decompressor must not be used again.
    pub fn decompress(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        self.fed |= !input.is_empty();
        self.inflate(input, out, limit, false)
    }

    /// The message's payload is complete: inflate the `00 00 ff ff` tail its sender removed
    /// (RFC 7692 §7.2.2), appending to `out` (never past `limit`), and without context takeover
    /// drop the state. A message whose payload was empty is an empty message: there is nothing
    /// to inflate.
    ///
    /// # Errors
    ///
    /// As [`decompress`](Self::decompress).
    pub fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        if !std::mem::take(&mut self.fed) {
            // An empty payload holds no block, not even the header bits the tail would
            // complete (appending the tail would leave half a block behind): an empty message.
        } else if self.stream_ended {
            // The payload ended right after a BFINAL block: it carries no header bits for the
            // tail to complete. Start the next stream at this block boundary.
            self.restart(out);
        } else {
            self.inflate(&TAIL, out, limit, true)?;
        }
        if self.no_context_takeover || self.kept.is_some() {
            // The peer's next message refers to nothing before it (§7.1.1), or to no more than
            // the window kept: the state goes back to the thread.
            self.stream_ended = false;
            if let Some(state) = self.inflate.take() {
                spare::put_decompressor(state);
            }
        }
        Ok(())
    }

    /// Forget any message in progress and free the state (a state in the middle of a message, or
    /// one that failed, is never given back to the thread), and the window kept.
    pub fn release(&mut self) {
        self.inflate = None;
        self.stream_ended = false;
        self.fed = false;
        if let Some(kept) = &mut self.kept {
            kept.bytes = Vec::new();
        }
    }

    fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
        tail: bool,
    ) -> Result<(), InflateError> {
        loop {
            if self.stream_ended {
                if tail {
                    // A BFINAL block ended inside the restored tail: what is left of the tail
                    // belongs to no block.
                    self.restart(out);
                    return Ok(());
                }
                if input.is_empty() {
                    return Ok(());
                }
                self.restart(out);
            }
            let (no_context_takeover, kept) = (self.no_context_takeover, &mut self.kept);
            let inflate = self.inflate.get_or_insert_with(|| {
                if let Some(kept) = kept {
                    let mut state = spare::take_decompressor();
                    // A fresh raw stream takes a dictionary; with an empty one nothing changes.
                    // Were it refused, a back reference would be reported as corrupt data.
                    let _ = state.set_dictionary(&kept.bytes);
                    state
                } else if no_context_takeover {
                    spare::take_decompressor()
                } else {
                    Box::new(Decompress::new_with_window_bits(false, INFLATE_WINDOW_BITS))
                }
            });
            let before_in = inflate.total_in();
            let before_out = out.len();
            let status = if out.len() >= limit {
                // Full. Any further byte is one too many: probe with one byte of stack.
                let mut probe = [0u8; 1];
                let before = inflate.total_out();
                let status = inflate
                    .decompress(input, &mut probe, FlushDecompress::None)
                    .map_err(|_| InflateError::Corrupt)?;
                if inflate.total_out() != before {
                    return Err(InflateError::TooLarge);
                }
                status
            } else {
                if out.len() == out.capacity() {
                    reserve(out, limit, input.len());
                }
                let status = inflate
                    .decompress_vec(input, out, FlushDecompress::None)
                    .map_err(|_| InflateError::Corrupt)?;
                // Spare capacity the caller gave `out` beyond the limit is not ours to fill.
                if out.len() > limit {
                    out.truncate(limit);
                    return Err(InflateError::TooLarge);
                }
                status
            };
            let used = consumed(before_in, inflate.total_in(), input.len());
            input = &input[used..];
            if let Some(kept) = &mut self.kept {
                kept.remember(&out[before_out..]);
            }
            if status == Status::StreamEnd {
                self.stream_ended = true;
                continue;
            }
            let room_left = out.len() < out.capacity() || out.len() >= limit;
            if input.is_empty() && room_left {
                // zlib: with input exhausted and output space left, all output is out.
                return Ok(());
            }
            if used == 0 && out.len() == before_out && room_left {
                // No progress with input and room to spare: zlib would have said why; do not
                // spin on it.
                return Err(InflateError::Corrupt);
            }
        }
    }

    /// Start a new stream after a BFINAL block, seeded with what the current message inflated
    /// so far (the window the sender's next blocks may refer to).
    fn restart(&mut self, out: &[u8]) {
        self.stream_ended = false;
        let Some(inflate) = self.inflate.as_mut() else {
            // Only a stream that ended has a restart; the next piece starts a fresh one anyway.
            return;
        };
        // A raw stream again, with the same 32 KiB window.
        inflate.reset(false);
        if let Some(kept) = &self.kept {
            // Everything inflated so far, this message included, up to the peer's window.
            let _ = inflate.set_dictionary(&kept.bytes);
        } else if !self.no_context_takeover {
            let window = 1usize << INFLATE_WINDOW_BITS;
            let history = &out[out.len().saturating_sub(window)..];
            // Setting a dictionary on a fresh raw stream cannot fail; if it did, a later back
            // reference would be reported as corrupt data.
            let _ = inflate.set_dictionary(history);
        }
    }

    /// Whether the inflate state is allocated (tests check when it is freed).
    #[cfg(test)]
    fn is_allocated(&self) -> bool {
        self.inflate.is_some()
    }
}

/// Append `data` as stored DEFLATE blocks (RFC 1951 §3.2.4: no compression, so no window), each
/// complete: a header byte (BFINAL 0, BTYPE 00, padding), LEN and NLEN, the bytes. At the end of a
/// message (`fin`) one more `00` starts the empty stored block whose LEN and NLEN (`00 00 ff ff`)
/// the receiver appends (RFC 7692 §7.2.1, §7.2.3.3). The stream must be at a byte boundary, as
/// it is after every sync flush.
fn stored_blocks(data: &[u8], fin: bool, out: &mut Vec<u8>) {
    for block in data.chunks(usize::from(u16::MAX)) {
        // `chunks` bounds the length by u16::MAX.
        let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
        out.push(0x00);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    if fin {
        out.push(0x00);
    }
}

/// Make room in `out` for more inflated bytes: double it (at least [`MIN_GROWTH`], or twice the
/// input, as DEFLATE rarely shrinks data by less), never past `limit`.
fn reserve(out: &mut Vec<u8>, limit: usize, input_len: usize) {
    let room = limit.saturating_sub(out.len());
    let want = out
        .capacity()
        .max(input_len.saturating_mul(2))
        .max(MIN_GROWTH)
        .min(room);
    out.reserve_exact(want);
}

/// The input bytes a call consumed, from zlib's running totals (at most `available`).
fn consumed(before: u64, after: u64, available: usize) -> usize {
    usize::try_from(after.saturating_sub(before)).map_or(available, |n| n.min(available))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &[u8] = b"Hello";
    const ROOMY: usize = 1 << 20;

    fn compress(c: &mut Compressor, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        c.compress(data, true, &mut out);
        out
    }

    fn inflate(
        d: &mut Decompressor,
        payload: &[u8],
        limit: usize,
    ) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        d.decompress(payload, &mut out, limit)?;
        d.finish(&mut out, limit)?;
        Ok(out)
    }

    fn decompressor() -> Decompressor {
        Decompressor::new(15, false)
    }

    /// Deterministic data that compresses somewhat, like text: words from a small vocabulary.
    fn text_like(len: usize, seed: u32) -> Vec<u8> {
        const WORDS: [&str; 12] = [
            "gangway ",
            "frame ",
            "deflate ",
            "window ",
            "message ",
            "the ",
            "a ",
            "of ",
            "context ",
            "takeover ",
            "\n",
            "{\"id\": ",
        ];
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.extend_from_slice(WORDS[(x % 12) as usize].as_bytes());
            if x % 7 == 0 {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out.truncate(len);
        out
    }

    /// Incompressible data (xorshift).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    // RFC 7692 §7.2.3 examples.

    #[test]
    fn rfc_7692_7_2_3_1_hello_in_one_compressed_block() {
        let mut c = Compressor::new(15, 6, false);
        assert_eq!(
            compress(&mut c, HELLO),
            [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
        );
        assert_eq!(
            inflate(
                &mut decompressor(),
                &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
                ROOMY
            ),
            Ok(HELLO.to_vec())
        );
    }

    #[test]
    fn rfc_7692_7_2_3_1_hello_in_two_fragments() {
        // The same payload split over two frames: 0xf2 0x48 0xcd | 0xc9 0xc9 0x07 0x00.
        let mut d = decompressor();
        let mut out = Vec::new();
        d.decompress(&[0xf2, 0x48, 0xcd], &mut out, ROOMY).unwrap();
        d.decompress(&[0xc9, 0xc9, 0x07, 0x00], &mut out, ROOMY)
            .unwrap();
        d.finish(&mut out, ROOMY).unwrap();
        assert_eq!(out, HELLO);
    }

    #[test]
    fn rfc_7692_7_2_3_2_second_hello_refers_back_with_context_takeover() {
        let mut c = Compressor::new(15, 6, false);
        assert_eq!(
            compress(&mut c, HELLO),
            [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
        );
        assert_eq!(compress(&mut c, HELLO), [0xf2, 0x00, 0x11, 0x00, 0x00]);
        let mut d = decompressor();
        assert_eq!(
            inflate(&mut d, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], ROOMY),
            Ok(HELLO.to_vec())
        );
        assert_eq!(
            inflate(&mut d, &[0xf2, 0x00, 0x11, 0x00, 0x00], ROOMY),
            Ok(HELLO.to_vec())
        );
    }

    #[test]
    fn without_context_takeover_the_second_hello_is_compressed_alone() {
        let mut c = Compressor::new(15, 6, true);
        let first = compress(&mut c, HELLO);
        assert!(!c.is_allocated(), "no state kept between messages");
        assert_eq!(compress(&mut c, HELLO), first);
        // A peer without context takeover: each message stands alone, no state kept between.
        let mut d = Decompressor::new(15, true);
        assert_eq!(inflate(&mut d, &first, ROOMY), Ok(HELLO.to_vec()));
        assert!(!d.is_allocated());
        assert_eq!(inflate(&mut d, &first, ROOMY), Ok(HELLO.to_vec()));
    }

    #[test]
    fn states_without_context_takeover_are_borrowed_from_the_thread_for_one_message() {
        std::thread::spawn(|| {
            let text = text_like(50_000, 3);
            let mut c = Compressor::new(12, 6, true);
            let mut d = Decompressor::new(15, true);
            let first = compress(&mut c, &text);
            assert_eq!(spare::counts(), (1, 0), "given back at the message's end");
            assert_eq!(inflate(&mut d, &first, ROOMY), Ok(text.clone()));
            assert_eq!(spare::counts(), (1, 1));
            // A message in pieces holds its states until it ends.
            let mut wire = Vec::new();
            c.compress(&text[..20_000], false, &mut wire);
            assert!(c.is_allocated());
            assert_eq!(spare::counts(), (0, 1));
            c.compress(&text[20_000..], true, &mut wire);
            assert_eq!(spare::counts(), (1, 1));
            let mut out = Vec::new();
            d.decompress(&wire[..100], &mut out, ROOMY).unwrap();
            assert!(d.is_allocated());
            assert_eq!(spare::counts(), (1, 0));
            d.decompress(&wire[100..], &mut out, ROOMY).unwrap();
            d.finish(&mut out, ROOMY).unwrap();
            assert_eq!(out, text);
            assert_eq!(spare::counts(), (1, 1));
            // Another connection on the thread takes the same states, and a reused state
            // compresses exactly as a fresh one did: the bytes never depend on it.
            let mut other = Compressor::new(12, 6, true);
            assert_eq!(compress(&mut other, &text), first);
            assert_eq!(spare::counts(), (1, 1));
            // A failed message's state is dropped, not given back.
            let mut out = Vec::new();
            assert_eq!(
                d.decompress(&[0xff, 0xff, 0xff], &mut out, ROOMY),
                Err(InflateError::Corrupt)
            );
            d.release();
            assert_eq!(spare::counts(), (1, 0));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn rfc_7692_7_2_3_3_hello_in_an_uncompressed_block() {
        let payload = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(
            inflate(&mut decompressor(), &payload, ROOMY),
            Ok(HELLO.to_vec())
        );
        // Level 0 produces exactly that.
        assert_eq!(compress(&mut Compressor::new(15, 0, false), HELLO), payload);
    }

    #[test]
    fn rfc_7692_7_2_3_4_hello_in_a_bfinal_block_and_the_stream_goes_on() {
        let mut d = decompressor();
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(inflate(&mut d, &bfinal, ROOMY), Ok(HELLO.to_vec()));
        // The next messages still inflate, and may refer back to "Hello" (the window survives
        // the end of the stream).
        assert_eq!(
            inflate(&mut d, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], ROOMY),
            Ok(HELLO.to_vec())
        );
        assert_eq!(
            inflate(&mut d, &[0xf2, 0x00, 0x11, 0x00, 0x00], ROOMY),
            Ok(HELLO.to_vec())
        );
    }

    #[test]
    fn a_message_after_a_bfinal_block_without_padding_byte_still_inflates() {
        // A sender that ends the message right after the BFINAL block (no 0x00 for the tail).
        let mut d = decompressor();
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&mut d, &bfinal, ROOMY), Ok(HELLO.to_vec()));
        assert_eq!(
            inflate(&mut d, &[0xf2, 0x00, 0x11, 0x00, 0x00], ROOMY),
            Ok(HELLO.to_vec()),
            "the window of the finished stream is kept"
        );
    }

    #[test]
    fn blocks_after_a_bfinal_block_in_the_same_message_are_inflated() {
        // §7.2.1: "The next DEFLATE block follows the padded data if any".
        // "Hello" in a BFINAL block, then "World" compressed by a fresh stream.
        let mut world = Vec::new();
        Compressor::new(15, 6, false).compress(b"World", true, &mut world);
        let mut payload = vec![0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        payload.extend_from_slice(&world);
        assert_eq!(
            inflate(&mut decompressor(), &payload, ROOMY),
            Ok(b"HelloWorld".to_vec())
        );
    }

    #[test]
    fn rfc_7692_7_2_3_5_two_blocks_in_one_message() {
        let payload = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(
            inflate(&mut decompressor(), &payload, ROOMY),
            Ok(HELLO.to_vec())
        );
        // The same from our compressor: "Hel" as a non-final fragment keeps its flush tail.
        let mut c = Compressor::new(15, 6, false);
        let mut out = Vec::new();
        c.compress(b"Hel", false, &mut out);
        assert!(
            out.ends_with(&TAIL),
            "a fragment before the last keeps the tail"
        );
        c.compress(b"lo", true, &mut out);
        assert_eq!(
            inflate(&mut decompressor(), &out, ROOMY),
            Ok(HELLO.to_vec())
        );
    }

    #[test]
    fn rfc_7692_7_2_3_6_an_empty_final_fragment_is_one_zero_byte() {
        let mut c = Compressor::new(15, 6, false);
        let mut first = Vec::new();
        c.compress(HELLO, false, &mut first);
        let mut last = Vec::new();
        c.compress(b"", true, &mut last);
        assert_eq!(last, [0x00]);
        let mut d = decompressor();
        let mut out = Vec::new();
        d.decompress(&first, &mut out, ROOMY).unwrap();
        d.decompress(&last, &mut out, ROOMY).unwrap();
        d.finish(&mut out, ROOMY).unwrap();
        assert_eq!(out, HELLO);
        // An empty message, and the stream still works after it.
        assert_eq!(compress(&mut c, b""), [0x00]);
        assert_eq!(inflate(&mut d, &[0x00], ROOMY), Ok(Vec::new()));
        let again = compress(&mut c, HELLO);
        assert_eq!(inflate(&mut d, &again, ROOMY), Ok(HELLO.to_vec()));
    }

    #[test]
    fn round_trips_under_every_parameter_combination() {
        let messages: Vec<Vec<u8>> = vec![
            b"x".to_vec(),
            text_like(16, 1),
            text_like(1000, 2),
            text_like(1000, 2), // a repeat: back references with context takeover
            noise(3000, 3),
            text_like(70_000, 4), // longer than every window
            vec![0; 100_000],
            text_like(131_072, 5),
        ];
        for bits in 9..=15u8 {
            for level in [0, 1, 6, 9] {
                for no_takeover in [false, true] {
                    let mut c = Compressor::new(bits, level, no_takeover);
                    let mut d = Decompressor::new(bits, no_takeover);
                    for (i, m) in messages.iter().enumerate() {
                        let wire = compress(&mut c, m);
                        let back = inflate(&mut d, &wire, ROOMY);
                        assert_eq!(
                            back.as_deref(),
                            Ok(&m[..]),
                            "bits {bits} level {level} no_takeover {no_takeover} message {i}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn round_trips_when_fragments_and_payload_pieces_are_cut_anywhere() {
        let message = text_like(20_000, 9);
        let mut c = Compressor::new(15, 6, false);
        let mut d = decompressor();
        for round in 0..3 {
            // Sent in fragments of 1, 7, 4096... bytes, received in pieces of other sizes.
            let mut wire = Vec::new();
            let mut rest = &message[..];
            let sizes = [1, 7, 4096, 333];
            let mut i = 0;
            while !rest.is_empty() {
                let (piece, tail) = rest.split_at(sizes[i % sizes.len()].min(rest.len()));
                c.compress(piece, tail.is_empty(), &mut wire);
                rest = tail;
                i += 1;
            }
            let mut out = Vec::new();
            for piece in wire.chunks(13 + round) {
                d.decompress(piece, &mut out, ROOMY).unwrap();
            }
            d.finish(&mut out, ROOMY).unwrap();
            assert_eq!(out, message, "round {round}");
        }
    }

    #[test]
    fn eight_bit_windows_compress_to_stored_blocks() {
        let mut c = Compressor::new(8, 6, false);
        assert!(!c.can_compress());
        // Stored blocks need no window: the §7.2.3.3 payload.
        assert_eq!(
            compress(&mut c, HELLO),
            [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00]
        );
        assert!(!c.is_allocated());
        // A peer's 8-bit stream (zlib makes it with 9 bits) inflates with our window.
        let wire = compress(&mut Compressor::new(9, 6, false), HELLO);
        assert_eq!(
            inflate(&mut Decompressor::new(8, false), &wire, ROOMY),
            Ok(HELLO.to_vec())
        );
    }

    #[test]
    fn stored_blocks_round_trip_in_fragments_and_past_64_kib() {
        let data = noise(200_000, 5);
        let mut wire = Vec::new();
        stored_blocks(&data[..70_000], false, &mut wire);
        stored_blocks(&[], false, &mut wire);
        stored_blocks(&data[70_000..], true, &mut wire);
        assert_eq!(inflate(&mut decompressor(), &wire, ROOMY), Ok(data));
        let mut empty = Vec::new();
        stored_blocks(&[], true, &mut empty);
        assert_eq!(empty, [0x00]);
    }

    #[test]
    fn an_empty_compressed_payload_is_an_empty_message_and_leaves_the_stream_intact() {
        let mut c = Compressor::new(15, 6, false);
        let mut d = decompressor();
        assert_eq!(
            inflate(&mut d, &compress(&mut c, HELLO), ROOMY),
            Ok(HELLO.to_vec())
        );
        assert_eq!(inflate(&mut d, &[], ROOMY), Ok(Vec::new()));
        assert_eq!(
            inflate(&mut d, &compress(&mut c, HELLO), ROOMY),
            Ok(HELLO.to_vec())
        );
    }

    #[test]
    fn corrupt_data_is_an_error_not_a_panic() {
        for payload in [
            &[0xff, 0xff, 0xff, 0xff][..],
            &[0x07],                         // BTYPE 11: reserved
            &[0x00, 0x01, 0x00, 0x00, 0x00], // stored block with NLEN not the complement of LEN
            &[0xf2, 0x00, 0x11, 0x00, 0x00], // a back reference with nothing behind it
        ] {
            assert_eq!(
                inflate(&mut decompressor(), payload, ROOMY),
                Err(InflateError::Corrupt),
                "{payload:02x?}"
            );
        }
    }

    #[test]
    fn bomb_stops_at_the_limit_without_allocating_past_it() {
        // 10 MiB of zeros compress to about 10 KB.
        let bomb = compress(&mut Compressor::new(15, 9, false), &vec![0; 10 << 20]);
        assert!(bomb.len() < 12_000, "{} bytes", bomb.len());
        let limit = 1 << 20;
        let mut d = decompressor();
        let mut out = Vec::new();
        let mut result = Ok(());
        for piece in bomb.chunks(1024) {
            result = d.decompress(piece, &mut out, limit);
            assert!(out.capacity() <= limit, "capacity {}", out.capacity());
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(InflateError::TooLarge));
        assert_eq!(
            out.len(),
            limit,
            "inflated up to the limit, not a byte more"
        );
        assert!(out.capacity() <= limit);
    }

    #[test]
    fn a_message_of_exactly_the_limit_is_accepted() {
        let data = text_like(50_000, 11);
        let wire = compress(&mut Compressor::new(15, 6, false), &data);
        assert_eq!(
            inflate(&mut decompressor(), &wire, data.len()),
            Ok(data.clone())
        );
        assert_eq!(
            inflate(&mut decompressor(), &wire, data.len() - 1),
            Err(InflateError::TooLarge)
        );
        // Exactly at the limit when the payload ends, and the tail adds nothing.
        let mut out = Vec::new();
        let mut d = decompressor();
        d.decompress(&wire, &mut out, data.len()).unwrap();
        d.finish(&mut out, data.len()).unwrap();
        assert_eq!(out.capacity(), data.len());
    }

    #[test]
    fn growth_is_geometric() {
        let data = vec![b'a'; 1 << 20];
        let wire = compress(&mut Compressor::new(15, 6, false), &data);
        let mut d = decompressor();
        let mut out = Vec::new();
        let mut growths = 0;
        let mut capacity = 0;
        for piece in wire.chunks(16) {
            d.decompress(piece, &mut out, ROOMY).unwrap();
            if out.capacity() != capacity {
                capacity = out.capacity();
                growths += 1;
            }
        }
        d.finish(&mut out, ROOMY).unwrap();
        assert_eq!(out.len(), data.len());
        assert!(growths <= 16, "{growths} reallocations");
    }

    #[test]
    fn codec_directions_follow_the_role() {
        let params = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: false,
            server_max_window_bits: 10,
            client_max_window_bits: 8,
        };
        let config = DeflateConfig {
            client_no_context_takeover: true,
            server_max_window_bits: Some(9),
            ..DeflateConfig::default()
        };
        let server = PerMessageDeflate::new(Role::Server, &params, &config);
        assert_eq!(server.compressor.window_bits, 9, "our own smaller window");
        assert!(server.compressor.no_context_takeover);
        assert!(!server.decompressor.no_context_takeover);
        assert_eq!(
            server.decompressor.kept.as_ref().map(|w| w.size),
            Some(256),
            "the client's 8-bit window"
        );
        let client = PerMessageDeflate::new(Role::Client, &params, &config);
        assert!(
            !client.compressor.can_compress(),
            "8-bit window: uncompressed"
        );
        assert!(!client.should_compress(1 << 20));
        assert!(client.compressor.no_context_takeover, "our own choice");
        assert!(client.decompressor.no_context_takeover);
        assert!(client.decompressor.kept.is_none());
    }

    #[test]
    fn a_small_peer_window_is_kept_instead_of_the_state() {
        std::thread::spawn(|| {
            let mut c = Compressor::new(12, 6, false);
            let mut d = Decompressor::new(12, false);
            let mut sent = Vec::new();
            for (i, len) in [1000, 3000, 1000, 9000, 50, 20_000, 1000]
                .into_iter()
                .enumerate()
            {
                // Repeats, so that messages refer back to earlier ones.
                let message = text_like(len, (i % 3) as u32);
                let wire = compress(&mut c, &message);
                assert_eq!(inflate(&mut d, &wire, ROOMY), Ok(message.clone()), "{i}");
                assert!(!d.is_allocated(), "only the window between messages");
                assert_eq!(spare::counts().1, 1, "the state went back to the thread");
                sent.extend_from_slice(&message);
                let kept = &d.kept.as_ref().unwrap().bytes;
                assert_eq!(kept[..], sent[sent.len().saturating_sub(4096)..], "{i}");
                assert!(kept.capacity() <= 4096);
            }
            // The window is what makes back references work: without it they fail.
            let repeat = compress(&mut c, &text_like(1000, 0));
            assert!(
                repeat.len() < 100,
                "a back reference: {} bytes",
                repeat.len()
            );
            let mut fresh = Decompressor::new(12, false);
            assert_eq!(
                inflate(&mut fresh, &repeat, ROOMY),
                Err(InflateError::Corrupt)
            );
            assert_eq!(inflate(&mut d, &repeat, ROOMY), Ok(text_like(1000, 0)));
            // Larger windows keep their state.
            assert!(Decompressor::new(14, false).kept.is_none());
            assert!(Decompressor::new(13, false).kept.is_some());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_kept_window_survives_a_bfinal_block_and_messages_in_pieces() {
        let mut c = Compressor::new(10, 6, false);
        let mut d = Decompressor::new(10, false);
        let first = text_like(700, 1);
        let wire = compress(&mut c, &first);
        assert_eq!(inflate(&mut d, &wire, ROOMY), Ok(first.clone()));
        // A message that ends its stream with a BFINAL block (§7.2.3.4), then a new stream that
        // refers back across it, fed a byte at a time.
        let mut bfinal = Vec::with_capacity(2 * first.len());
        let mut z = flate2::Compress::new_with_window_bits(Compression::new(6), false, 10);
        let status = z
            .compress_vec(&first, &mut bfinal, flate2::FlushCompress::Finish)
            .unwrap();
        assert_eq!(status, Status::StreamEnd);
        // The stream after it may refer back to the message before, through the window.
        let mut next = Compressor::new(10, 6, false);
        next.compress(&first, true, &mut Vec::new());
        let again = compress(&mut next, &first);
        assert!(again.len() < 50, "{} bytes: a back reference", again.len());
        let mut out = Vec::new();
        for byte in bfinal.iter().chain(again.iter()) {
            d.decompress(std::slice::from_ref(byte), &mut out, ROOMY)
                .unwrap();
        }
        d.finish(&mut out, ROOMY).unwrap();
        let want = [first.clone(), first].concat();
        let at = out.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!((out.len(), at), (want.len(), None));
    }

    #[test]
    fn threshold_decides_which_messages_are_compressed() {
        let config = DeflateConfig::default();
        let codec = PerMessageDeflate::new(Role::Server, &DeflateParams::default(), &config);
        assert!(!codec.should_compress(config.threshold - 1));
        assert!(codec.should_compress(config.threshold));
        let config = DeflateConfig {
            threshold: 0,
            ..DeflateConfig::default()
        };
        let codec = PerMessageDeflate::new(Role::Server, &DeflateParams::default(), &config);
        assert!(codec.should_compress(0));
    }

    #[test]
    fn state_is_allocated_on_first_use_only() {
        let mut codec = PerMessageDeflate::new(
            Role::Client,
            &DeflateParams::default(),
            &DeflateConfig::default(),
        );
        assert!(!codec.compressor.is_allocated());
        assert!(!codec.decompressor.is_allocated());
        let wire = compress(&mut codec.compressor, HELLO);
        assert!(codec.compressor.is_allocated(), "kept for context takeover");
        inflate(&mut codec.decompressor, &wire, ROOMY).unwrap();
        assert!(codec.decompressor.is_allocated());
        codec.decompressor.release();
        assert!(!codec.decompressor.is_allocated());
    }
}
