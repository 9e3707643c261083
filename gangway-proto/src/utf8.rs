//! Incremental, fail-fast UTF-8 validation across frame and fragment boundaries (RFC 6455 §8.1).

/// Validates a text message as it arrives, a piece at a time.
///
/// [`Utf8Validator::feed`] fails as soon as the bytes seen so far cannot be the start of valid
/// UTF-8, even in the middle of a frame; [`Utf8Validator::finish`] fails if the message ends inside
/// a code point.
///
/// Between pieces it carries at most the 3 bytes of an unfinished code point, so it costs nothing
/// to keep one per connection.
#[derive(Clone, Debug, Default)]
pub struct Utf8Validator {
    // Bytes of an incomplete code point carried over from the previous piece. They are always a
    // valid prefix of one code point (1–3 bytes), as checked when they were fed.
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validate the next piece. `Err(())` as soon as the text can no longer be valid.
    ///
    /// A failed call leaves the validator as it was before the call.
    #[allow(clippy::result_unit_err)]
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ()> {
        // Completing a carried code point updates the state before the rest is checked; a
        // failure in the rest must not leave that half-applied (5 bytes to copy).
        let before = self.clone();
        self.advance(bytes).inspect_err(|()| *self = before)
    }

    /// [`feed`](Self::feed) without restoring the state on failure.
    fn advance(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let rest = if self.pending_len == 0 {
            bytes
        } else {
            match self.complete_pending(bytes)? {
                Some(rest) => rest,
                // Still inside the same code point; `bytes` is all taken.
                None => return Ok(()),
            }
        };
        // Split off a code point cut by the end of the piece (1–3 bytes) so that the rest goes
        // to the SIMD validator whole and takes its fast, yes/no path; asking simdutf8 where an
        // incomplete end starts would cost a second, scalar pass over the last block.
        let (body, tail) = rest.split_at(incomplete_tail_start(rest));
        if simdutf8::basic::from_utf8(body).is_err() {
            // An error in `body` is final: either a bad byte, or a sequence cut short by the
            // lead byte that starts `tail`.
            return Err(());
        }
        if tail.is_empty() {
            return Ok(());
        }
        match std::str::from_utf8(tail) {
            // Not reached (`tail` is shorter than its lead byte says), but harmless.
            Ok(_) => Ok(()),
            // `error_len() == None`: a valid start of a code point, to be completed by the next
            // piece. (The standard library checks the prefix too, so e.g. `ED A0` or `F4 90`
            // are errors here.)
            Err(e) if e.error_len().is_none() => {
                self.pending[..tail.len()].copy_from_slice(tail);
                // Cannot truncate: `tail` is at most 3 bytes.
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(()),
        }
    }

    /// The message ended: `Err(())` if it ended inside a code point. Resets for the next message.
    #[allow(clippy::result_unit_err)]
    pub fn finish(&mut self) -> Result<(), ()> {
        let complete = self.pending_len == 0;
        self.reset();
        if complete {
            Ok(())
        } else {
            Err(())
        }
    }

    /// How many bytes of an unfinished code point are carried (0 to 3): the last bytes fed.
    pub(crate) fn pending_len(&self) -> usize {
        usize::from(self.pending_len)
    }

    /// Forget any partial code point, ready for a new message.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Continue the pending code point with the start of `bytes`. Returns the bytes after it
    /// once it is complete, or `None` if `bytes` ended first (then they are pending too).
    fn complete_pending<'a>(&mut self, bytes: &'a [u8]) -> Result<Option<&'a [u8]>, ()> {
        let have = usize::from(self.pending_len);
        let width = match self.pending[0] {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
        let take = (width - have).min(bytes.len());
        let mut point = self.pending;
        point[have..have + take].copy_from_slice(&bytes[..take]);
        match simdutf8::compat::from_utf8(&point[..have + take]) {
            Ok(_) => {
                self.pending_len = 0;
                Ok(Some(&bytes[take..]))
            }
            Err(e) if e.error_len().is_none() => {
                self.pending = point;
                // Cannot truncate: at most 3 bytes, or the code point would be complete.
                self.pending_len = (have + take) as u8;
                Ok(None)
            }
            Err(_) => Err(()),
        }
    }
}

/// Where a code point cut off by the end of `bytes` starts: the index of the last lead byte if
/// fewer bytes follow it than it announces, else `bytes.len()`.
///
/// Only the last 3 bytes are looked at: a cut code point has at most 3 bytes. Invalid lead
/// bytes are not judged here; the validation of the body or of the tail rejects them.
fn incomplete_tail_start(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(3) {
        let i = len - back;
        let width = match bytes[i] {
            // Continuation byte: keep looking back for the lead byte.
            0x80..=0xBF => continue,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            // ASCII or a byte that never starts a sequence: nothing is cut.
            _ => 1,
        };
        return if back < width { i } else { len };
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::{RandomSource, SeededRandom};

    /// The index of the first byte at which `input` stops being a prefix of valid UTF-8.
    fn first_bad_byte(input: &[u8]) -> Option<usize> {
        (1..=input.len())
            .find(|&end| std::str::from_utf8(&input[..end]).is_err_and(|e| e.error_len().is_some()))
            .map(|end| end - 1)
    }

    /// Feed `input` in the pieces that `cuts` delimit and check, against the standard library,
    /// that the error comes exactly from the piece holding the first bad byte, and that `finish`
    /// agrees with `std::str::from_utf8` on the whole.
    fn check_split(input: &[u8], cuts: &[usize]) {
        let bad = first_bad_byte(input);
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&input.len())) {
            let result = v.feed(&input[start..end]);
            match bad {
                Some(b) if b < end => {
                    assert!(
                        b >= start,
                        "{input:x?} {cuts:?}: should have failed earlier"
                    );
                    assert_eq!(result, Err(()), "{input:x?} {cuts:?}: piece {start}..{end}");
                    return;
                }
                _ => assert_eq!(result, Ok(()), "{input:x?} {cuts:?}: piece {start}..{end}"),
            }
            start = end;
        }
        assert_eq!(
            v.finish().is_ok(),
            std::str::from_utf8(input).is_ok(),
            "{input:x?} {cuts:?}"
        );
    }

    fn check_every_single_split(input: &[u8]) {
        check_split(input, &[]);
        for cut in 0..=input.len() {
            check_split(input, &[cut]);
        }
        let bytewise: Vec<usize> = (1..input.len()).collect();
        check_split(input, &bytewise);
    }

    fn random_cuts(rng: &mut SeededRandom, len: usize) -> Vec<usize> {
        let mut b = [0u8; 1];
        let mut cuts: Vec<usize> = (1..len)
            .filter(|_| {
                rng.fill(&mut b);
                b[0] < 64
            })
            .collect();
        cuts.dedup();
        cuts
    }

    /// Markus Kuhn's UTF-8 decoder capability and stress test, as byte sequences.
    fn kuhn_cases() -> Vec<Vec<u8>> {
        let mut cases: Vec<Vec<u8>> = vec![
            "κόσμε".as_bytes().to_vec(),
            // 2.1 first possible sequence of each length.
            vec![0x00],
            vec![0xC2, 0x80],
            vec![0xE0, 0xA0, 0x80],
            vec![0xF0, 0x90, 0x80, 0x80],
            vec![0xF8, 0x88, 0x80, 0x80, 0x80],
            vec![0xFC, 0x84, 0x80, 0x80, 0x80, 0x80],
            // 2.2 last possible sequence of each length.
            vec![0x7F],
            vec![0xDF, 0xBF],
            vec![0xEF, 0xBF, 0xBF],
            vec![0xF7, 0xBF, 0xBF, 0xBF],
            vec![0xFB, 0xBF, 0xBF, 0xBF, 0xBF],
            vec![0xFD, 0xBF, 0xBF, 0xBF, 0xBF, 0xBF],
            // 2.3 other boundaries.
            vec![0xED, 0x9F, 0xBF],
            vec![0xEE, 0x80, 0x80],
            vec![0xEF, 0xBF, 0xBD],
            vec![0xF4, 0x8F, 0xBF, 0xBF],
            vec![0xF4, 0x90, 0x80, 0x80],
            // 3.1 unexpected continuation bytes.
            vec![0x80],
            vec![0xBF],
            vec![0x80, 0xBF],
            vec![0x80, 0xBF, 0x80, 0xBF],
            (0x80..=0xBF).collect(),
            // 3.5 impossible bytes.
            vec![0xFE],
            vec![0xFF],
            vec![0xFE, 0xFE, 0xFF, 0xFF],
            // 4.1 overlong ASCII '/'.
            vec![0xC0, 0xAF],
            vec![0xE0, 0x80, 0xAF],
            vec![0xF0, 0x80, 0x80, 0xAF],
            vec![0xF8, 0x80, 0x80, 0x80, 0xAF],
            // 4.2 maximum overlongs.
            vec![0xC1, 0xBF],
            vec![0xE0, 0x9F, 0xBF],
            vec![0xF0, 0x8F, 0xBF, 0xBF],
            // 4.3 overlong NUL.
            vec![0xC0, 0x80],
            vec![0xE0, 0x80, 0x80],
            vec![0xF0, 0x80, 0x80, 0x80],
            // 5.1 single surrogates.
            vec![0xED, 0xA0, 0x80],
            vec![0xED, 0xAD, 0xBF],
            vec![0xED, 0xAE, 0x80],
            vec![0xED, 0xAF, 0xBF],
            vec![0xED, 0xB0, 0x80],
            vec![0xED, 0xBE, 0x80],
            vec![0xED, 0xBF, 0xBF],
            // 5.2 surrogate pairs.
            vec![0xED, 0xA0, 0x80, 0xED, 0xB0, 0x80],
            vec![0xED, 0xAF, 0xBF, 0xED, 0xBF, 0xBF],
            // 5.3 noncharacters are valid UTF-8.
            vec![0xEF, 0xBF, 0xBE],
            vec![0xEF, 0xBF, 0xBF],
            // Autobahn 6.x style: valid text then a bad byte mid-stream.
            b"Hello-\xC2\xB5@\xC3\x9F\xC3\xB6\xC3\xA4\xC3\xBC\xC3\xA0\xC3\xA1-UTF-8!!".to_vec(),
            b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80edited".to_vec(),
            b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xF4\x90\x80\x80edited".to_vec(),
        ];
        // 3.2 lonely start bytes, each followed by a space.
        for lead in 0xC0u8..=0xFD {
            cases.push(vec![lead, 0x20]);
        }
        // 3.3 sequences with the last continuation byte missing, alone and concatenated (3.4).
        let truncated: Vec<Vec<u8>> = vec![
            vec![0xC0],
            vec![0xE0, 0x80],
            vec![0xF0, 0x80, 0x80],
            vec![0xDF],
            vec![0xEF, 0xBF],
            vec![0xF7, 0xBF, 0xBF],
            vec![0xE1, 0x80],
            vec![0xF1, 0x80, 0x80],
            vec![0xF4, 0x8F, 0xBF],
        ];
        cases.push(truncated.concat());
        cases.extend(truncated);
        cases
    }

    #[test]
    fn kuhn_stress_test_at_every_split() {
        for case in kuhn_cases() {
            check_every_single_split(&case);
            // The same inside longer valid text, across word-sized boundaries.
            let padded = [
                b"0123456789abcdef" as &[u8],
                &case,
                b"\xF0\x9F\x98\x80 tail",
            ]
            .concat();
            check_every_single_split(&padded);
        }
    }

    #[test]
    fn bad_prefixes_fail_on_the_byte_that_makes_them_bad() {
        for (input, bad_at) in [
            (&[0xF4, 0x90][..], 1),
            (&[0xED, 0xA0], 1),
            (&[0xC0], 0),
            (&[0xC1], 0),
            (&[0xE0, 0x80], 1),
            (&[0xF0, 0x8F], 1),
            (&[0xF5], 0),
            (&[0xE1, 0x80, 0x41], 2),
            (&[b'a', 0x80], 1),
        ] {
            assert_eq!(first_bad_byte(input), Some(bad_at), "{input:x?}");
            let mut v = Utf8Validator::new();
            for (i, &b) in input.iter().enumerate() {
                assert_eq!(v.feed(&[b]).is_err(), i == bad_at, "{input:x?} at {i}");
                if i == bad_at {
                    break;
                }
            }
        }
    }

    #[test]
    fn message_ending_inside_a_code_point_fails_at_finish() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[b'a', 0xF0, 0x9F]), Ok(()));
        assert_eq!(v.finish(), Err(()));
        // `finish` reset it: the next message starts clean.
        assert_eq!(v.feed(b"ok"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn failed_feed_leaves_the_state_unchanged() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xE2, 0x82]), Ok(()));
        assert_eq!(v.feed(&[0x41]), Err(()));
        assert_eq!(v.feed(&[0xAC]), Ok(())); // completes U+20AC
        assert_eq!(v.finish(), Ok(()));
        assert_eq!(v.feed(b"abc\xE2\x82\xACxyz\xFF"), Err(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn failed_feed_after_completing_a_carried_code_point_leaves_the_state_unchanged() {
        // Found by the `utf8` fuzz target: `CF` is carried, the next piece completes it with
        // `83` and then fails on `FF`; the failed call used to drop the carried `CF`.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xCF]), Ok(()));
        assert_eq!(v.feed(&[0x83, 0xFF]), Err(()));
        assert_eq!(v.feed(&[0x83]), Ok(()), "the carried CF is still there");
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn random_texts_and_corruptions_at_random_splits_match_std() {
        let mut rng = SeededRandom::new(0x5EED);
        let alphabet = [
            "a",
            "~",
            "\u{7F}",
            "é",
            "ß",
            "€",
            "\u{FFFD}",
            "\u{10FFFF}",
            "😀",
            "\u{800}",
        ];
        let mut b = [0u8; 4];
        for round in 0..2000 {
            let mut text = Vec::new();
            rng.fill(&mut b);
            for _ in 0..(b[0] % 40) {
                rng.fill(&mut b);
                text.extend_from_slice(alphabet[usize::from(b[0]) % alphabet.len()].as_bytes());
            }
            if round % 2 == 1 && !text.is_empty() {
                // Corrupt one byte, or truncate: most corruptions make it invalid somewhere.
                rng.fill(&mut b);
                let at = usize::from(u16::from_le_bytes([b[0], b[1]])) % text.len();
                if b[2] < 32 {
                    text.truncate(at);
                } else {
                    text[at] = b[3];
                }
            }
            for _ in 0..4 {
                let cuts = random_cuts(&mut rng, text.len());
                check_split(&text, &cuts);
            }
        }
    }

    #[test]
    fn random_bytes_at_every_split_match_std() {
        // Mostly bytes from 0x80 up: lead bytes valid and not, continuation bytes, in any order.
        let mut rng = SeededRandom::new(0xB17E5);
        let mut b = [0u8; 16];
        for _ in 0..3000 {
            rng.fill(&mut b);
            let len = usize::from(b[0] % 12);
            let input: Vec<u8> = b[1..=len]
                .iter()
                .map(|&x| if x < 0x30 { b'a' } else { x | 0x80 })
                .collect();
            check_every_single_split(&input);
        }
    }

    #[test]
    fn only_a_code_point_cut_by_the_end_is_split_off() {
        for (input, start) in [
            (&b""[..], 0),
            (b"abc", 3),
            (b"ab\xC3", 2),
            (b"ab\xC3\xA9", 4),
            (b"a\xE2\x82", 1),
            (b"a\xE2\x82\xAC", 4),
            (b"\xF0\x9F\x98", 0),
            (b"x\xF0\x9F\x98\x80", 5),
            // Three continuation bytes: the lead byte is further back, the code point complete.
            (b"\x80\x80\x80", 3),
            // Invalid bytes are left to the validators.
            (b"ab\xFF", 3),
            (b"ab\xC0", 2),
        ] {
            assert_eq!(incomplete_tail_start(input), start, "{input:x?}");
        }
    }

    #[test]
    fn long_mixed_text_in_pieces_that_cut_code_points_carries_only_the_cut_bytes() {
        let text = "κόσμε 😀 ✓ a".repeat(5_000);
        let bytes = text.as_bytes();
        for piece in [1460, 4093, 7] {
            let mut v = Utf8Validator::new();
            let mut fed = 0;
            for chunk in bytes.chunks(piece) {
                assert_eq!(v.feed(chunk), Ok(()));
                fed += chunk.len();
                // What is carried is exactly the part of a code point that the cut left over.
                let boundary = (0..=fed).rev().find(|&i| text.is_char_boundary(i)).unwrap();
                assert_eq!(v.pending_len(), fed - boundary, "piece {piece} at {fed}");
            }
            assert_eq!(v.finish(), Ok(()));
        }
    }

    #[test]
    fn long_valid_text_in_large_pieces() {
        let text = "gangway ✓ 😀 ".repeat(10_000);
        let bytes = text.as_bytes();
        let mut v = Utf8Validator::new();
        for chunk in bytes.chunks(4093) {
            assert_eq!(v.feed(chunk), Ok(()));
        }
        assert_eq!(v.finish(), Ok(()));
    }
}
