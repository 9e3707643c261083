//! How `gangway connect` prints a received message on exactly one line.
//!
//! The rules (the CLI contract): `\` → `\\`, newline → `\n`, carriage return → `\r`, tab → `\t`,
//! every other byte in 0x00–0x1F and 0x7F → `\xNN` (two lowercase hex digits), bytes that are not
//! part of valid UTF-8 → `\xNN`, and everything else verbatim, so UTF-8 text (including 4-byte
//! characters) reads as it was sent. Escaping matters because the peer chooses these bytes: an
//! unescaped newline would forge a second message, an escape sequence would drive the terminal.

/// Append `bytes`, escaped, to `out`. Text and binary messages use the same rules; for text the
/// invalid-UTF-8 rule never applies.
pub(crate) fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len());
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid().as_bytes();
        // Multi-byte sequences never contain bytes below 0x80, so escaping ASCII byte by byte
        // cannot split a character; runs that need no escape are copied in one go.
        let mut start = 0;
        for (i, &b) in valid.iter().enumerate() {
            let escaped: Option<&[u8]> = match b {
                b'\\' => Some(b"\\\\"),
                b'\n' => Some(b"\\n"),
                b'\r' => Some(b"\\r"),
                b'\t' => Some(b"\\t"),
                0x00..=0x1F | 0x7F => None,
                _ => continue,
            };
            out.extend_from_slice(&valid[start..i]);
            match escaped {
                Some(e) => out.extend_from_slice(e),
                None => push_hex(b, out),
            }
            start = i + 1;
        }
        out.extend_from_slice(&valid[start..]);
        for &b in chunk.invalid() {
            push_hex(b, out);
        }
    }
}

/// `\xNN` with two lowercase hex digits.
fn push_hex(b: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[
        b'\\',
        b'x',
        HEX[usize::from(b >> 4)],
        HEX[usize::from(b & 0xF)],
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escape(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        escape_into(bytes, &mut out);
        String::from_utf8(out).expect("escaped output is always UTF-8")
    }

    #[test]
    fn plain_text_is_printed_verbatim() {
        assert_eq!(escape(b"hello, world"), "hello, world");
        assert_eq!(escape(b""), "");
    }

    #[test]
    fn named_escapes() {
        assert_eq!(escape(b"a\\b"), "a\\\\b");
        assert_eq!(escape(b"line1\nline2"), "line1\\nline2");
        assert_eq!(escape(b"cr\r"), "cr\\r");
        assert_eq!(escape(b"\tx"), "\\tx");
    }

    #[test]
    fn other_control_bytes_become_lowercase_hex() {
        assert_eq!(escape(b"\x00"), "\\x00");
        assert_eq!(escape(b"\x07bell"), "\\x07bell");
        assert_eq!(escape(b"\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape(b"\x1f\x7f"), "\\x1f\\x7f");
        assert_eq!(escape(b" ~"), " ~");
    }

    #[test]
    fn multibyte_utf8_is_printed_verbatim() {
        let s = "caf\u{e9} \u{20ac} \u{1F600} \u{10FFFF}";
        assert_eq!(escape(s.as_bytes()), s);
        // C1 controls are valid UTF-8 characters, not bytes 0x00-0x1F: verbatim.
        assert_eq!(escape("\u{85}".as_bytes()), "\u{85}");
    }

    #[test]
    fn invalid_utf8_bytes_become_hex() {
        assert_eq!(escape(b"\xff\xfeabc"), "\\xff\\xfeabc");
        assert_eq!(escape(b"\x80"), "\\x80");
        // A truncated 4-byte sequence: each of its bytes is escaped, the text around it is kept.
        assert_eq!(escape(b"a\xf0\x9f\x98b"), "a\\xf0\\x9f\\x98b");
        // Valid characters right after an invalid byte survive.
        assert_eq!(escape(b"\xc3\xe2\x82\xac"), "\\xc3\u{20ac}");
        // Surrogates encoded in UTF-8 are not valid UTF-8.
        assert_eq!(escape(b"\xed\xa0\x80"), "\\xed\\xa0\\x80");
    }

    #[test]
    fn output_never_contains_a_line_break() {
        let all: Vec<u8> = (0..=255u8).collect();
        let out = escape(&all);
        assert!(!out.contains('\n') && !out.contains('\r'));
        assert!(out.starts_with("\\x00\\x01"));
        assert!(out.contains("\\x7f\\x80\\x81"));
        assert!(out.ends_with("\\xfe\\xff"));
    }
}
