//! The incremental UTF-8 validator against `std::str::from_utf8`.

use gangway_proto::utf8::Utf8Validator;

/// Input: one byte `k`, then `k % 16` piece lengths (one byte each), then the text. The text is
/// fed in pieces of those lengths (the last piece takes the rest).
///
/// Oracle: the verdict equals `std::str::from_utf8` on the whole text; when the text is invalid
/// the piece that fails is exactly the one holding the first byte at which the text stops being
/// a prefix of valid UTF-8 (RFC 6455 §8.1 fail-fast), and a failed `feed` leaves the validator
/// unchanged.
pub fn check(data: &[u8]) {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let cuts = usize::from(k % 16).min(rest.len());
    let (lengths, text) = rest.split_at(cuts);
    let bad = first_bad_byte(text);

    let mut validator = Utf8Validator::new();
    let mut start = 0;
    let ends = lengths
        .iter()
        .scan(0usize, |end, &n| {
            *end = (*end + usize::from(n)).min(text.len());
            Some(*end)
        })
        .chain(std::iter::once(text.len()));
    for end in ends {
        let before = format!("{validator:?}");
        let result = validator.feed(&text[start..end]);
        match bad {
            Some(b) if b < end => {
                assert_eq!(result, Err(()), "piece {start}..{end} holds bad byte {b}");
                assert_eq!(
                    format!("{validator:?}"),
                    before,
                    "failed feed changed the state"
                );
                return;
            }
            _ => assert_eq!(
                result,
                Ok(()),
                "piece {start}..{end} failed before byte {bad:?}"
            ),
        }
        start = end;
    }
    let valid = std::str::from_utf8(text).is_ok();
    assert_eq!(validator.finish().is_ok(), valid, "verdict at the end");
    // `finish` resets: the next message starts clean.
    assert_eq!(validator.feed(b"ok"), Ok(()));
    assert_eq!(validator.finish(), Ok(()));
}

/// The index of the first byte at which `text` stops being a prefix of valid UTF-8, from the
/// standard library's error. `None` if every prefix is valid (the text may still end inside a
/// code point).
pub fn first_bad_byte(text: &[u8]) -> Option<usize> {
    let err = std::str::from_utf8(text).err()?;
    let start = err.valid_up_to();
    // `error_len` is the length of the invalid sequence at `valid_up_to`: either the longest
    // prefix of a code point that the next byte breaks (the bad byte is the one after it), or
    // a single byte that can start nothing (the bad byte is that one).
    let len = err.error_len()?;
    let prefix_ok =
        std::str::from_utf8(&text[start..start + len]).is_err_and(|e| e.error_len().is_none());
    Some(if prefix_ok { start + len } else { start })
}
