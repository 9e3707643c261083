//! Compression states kept by the thread, not by a connection: what a direction without context
//! takeover borrows for one message and gives back at its end (a "shared compressor", as
//! uWebSockets calls it).
//!
//! Without context takeover (RFC 7692 §7.1.1) a message is compressed and inflated from an empty
//! window, so the state left by one message is of no use to the next: a connection has nothing to
//! keep between messages. Allocating a state for each message would cost an allocation and its
//! initialisation every time (zlib-rs clears a 128 KiB hash table for each compressor, and
//! allocates about 380 KiB); keeping one per connection would cost that memory on every idle
//! connection. Each thread instead keeps a few reset states, handed to whichever connection on
//! that thread starts a message and returned when the message ends. A reset state produces the
//! same bytes as a fresh one, so where a message was compressed never changes what it
//! compresses to.
//!
//! The thread holds at most [`MAX_SPARE_COMPRESSORS`] compressors (one per window and level, the
//! least recently returned dropped first) and [`MAX_SPARE_DECOMPRESSORS`] decompressors, so its
//! memory is bounded whatever the number of connections: about 430 KiB on a thread that
//! compresses with one window and level and inflates (see the
//! [module docs](super#memory-per-connection)). States in use are owned by their connection until
//! the message ends; one dropped mid-message (a failed or closed connection) is freed, never
//! returned.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress};

/// The most compressors a thread keeps: enough for a server's window and level, a client's, and
/// a couple more, without holding much memory (each is about 380 KiB at 15 window bits).
const MAX_SPARE_COMPRESSORS: usize = 4;

/// The most decompressors a thread keeps. Every decompressor inflates with a 32 KiB window, so
/// any of them serves any message; a second one covers a connection whose message arrives in
/// several reads while another on the same thread completes one.
const MAX_SPARE_DECOMPRESSORS: usize = 2;

/// The window every decompressor inflates with: 2^15 bytes inflates what any smaller window
/// produced, and zlib-rs allocates 32 KiB whatever the window.
pub(super) const INFLATE_WINDOW_BITS: u8 = 15;

/// One thread's reset states.
struct Spare {
    /// `(window_bits, level, state)`, the most recently returned last.
    compressors: Vec<(u8, Compression, Box<Compress>)>,
    /// Boxed as the connections hold them, so lending one moves a pointer, not a state.
    #[allow(clippy::vec_box)]
    decompressors: Vec<Box<Decompress>>,
}

thread_local! {
    static SPARE: RefCell<Spare> = const {
        RefCell::new(Spare {
            compressors: Vec::new(),
            decompressors: Vec::new(),
        })
    };
}

/// A compressor for raw DEFLATE with this window and level, ready for a new stream: one the
/// thread kept, or a new one.
pub(super) fn take_compressor(window_bits: u8, level: Compression) -> Box<Compress> {
    let kept = SPARE
        .try_with(|spare| {
            let mut spare = spare.borrow_mut();
            let at = spare
                .compressors
                .iter()
                .rposition(|(bits, l, _)| *bits == window_bits && *l == level)?;
            Some(spare.compressors.remove(at).2)
        })
        .ok()
        .flatten();
    kept.unwrap_or_else(|| Box::new(Compress::new_with_window_bits(level, false, window_bits)))
}

/// Give back a compressor whose message is complete (it ended with a sync flush, so the state is
/// sound): it is reset and kept for the next message on this thread, or freed if the thread
/// keeps enough already.
pub(super) fn put_compressor(window_bits: u8, level: Compression, mut state: Box<Compress>) {
    // Reset here rather than when taken: what the thread keeps is ready to use, and a state the
    // thread will not keep is not reset for nothing.
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.compressors.len() == MAX_SPARE_COMPRESSORS {
            spare.compressors.remove(0);
        }
        state.reset();
        spare.compressors.push((window_bits, level, state));
    });
}

/// A raw-DEFLATE decompressor with a 32 KiB window, ready for a new stream.
pub(super) fn take_decompressor() -> Box<Decompress> {
    let kept = SPARE
        .try_with(|spare| spare.borrow_mut().decompressors.pop())
        .ok()
        .flatten();
    kept.unwrap_or_else(|| Box::new(Decompress::new_with_window_bits(false, INFLATE_WINDOW_BITS)))
}

/// Give back a decompressor whose message is complete: reset and kept, or freed.
pub(super) fn put_decompressor(mut state: Box<Decompress>) {
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.decompressors.len() < MAX_SPARE_DECOMPRESSORS {
            // A raw stream again, with the 32 KiB window it was made with.
            state.reset(false);
            spare.decompressors.push(state);
        }
    });
}

/// How many compressors and decompressors this thread keeps (tests).
#[cfg(test)]
pub(super) fn counts() -> (usize, usize) {
    SPARE.with(|spare| {
        let spare = spare.borrow();
        (spare.compressors.len(), spare.decompressors.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_kept_up_to_the_bound_and_reused() {
        // On a thread of its own: its spare states start empty.
        std::thread::spawn(kept_up_to_the_bound_and_reused)
            .join()
            .unwrap();
    }

    fn kept_up_to_the_bound_and_reused() {
        assert_eq!(counts(), (0, 0));
        let level = Compression::new(6);
        let a = take_compressor(15, level);
        let b = take_compressor(15, level);
        put_compressor(15, level, a);
        put_compressor(15, level, b);
        assert_eq!(counts(), (2, 0));
        let _reused = take_compressor(15, level);
        assert_eq!(counts(), (1, 0), "taken from the spare states");
        // Another window is another state; the oldest goes first past the bound.
        for bits in 9..=13 {
            put_compressor(
                bits,
                level,
                Box::new(Compress::new_with_window_bits(level, false, bits)),
            );
        }
        assert_eq!(counts(), (MAX_SPARE_COMPRESSORS, 0));
        let _ = take_compressor(15, level);
        assert_eq!(
            counts(),
            (MAX_SPARE_COMPRESSORS, 0),
            "the 15-bit one was dropped"
        );

        for _ in 0..3 {
            put_decompressor(Box::new(Decompress::new_with_window_bits(false, 15)));
        }
        assert_eq!(counts(), (MAX_SPARE_COMPRESSORS, MAX_SPARE_DECOMPRESSORS));
        let _ = take_decompressor();
        assert_eq!(counts().1, MAX_SPARE_DECOMPRESSORS - 1);
    }
}
