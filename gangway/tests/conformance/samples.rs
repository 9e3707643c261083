//! UTF-8 test sequences from Markus Kuhn's "UTF-8 decoder capability and stress test"
//! (UTF-8-test.txt), grouped as the suite numbers them (6.5–6.23), each with its validity.
//!
//! Validity is declared by hand and cross-checked against `std::str::from_utf8` by
//! [`self_check`], so a typo in a byte array cannot silently turn a case around.

/// A group of sequences: (title, [(valid, bytes)]).
pub(crate) type Group = (&'static str, Vec<(bool, Vec<u8>)>);

/// "κόσμε", the Greek word of the test file's section 1.
pub(crate) const KOSME: &[u8] = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";

fn v(bytes: &[u8]) -> (bool, Vec<u8>) {
    (true, bytes.to_vec())
}

fn x(bytes: &[u8]) -> (bool, Vec<u8>) {
    (false, bytes.to_vec())
}

/// Every group, in order; the first gets number 6.5.
pub(crate) fn groups() -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();

    groups.push((
        "some valid UTF-8 sequences",
        vec![
            v(b"hello\x24world"),
            v(b"hello\xc2\xa2world"),
            v(b"hello\xe2\x82\xacworld"),
            v(b"hello\xf0\xa4\xad\xa2world"),
            v(KOSME),
        ],
    ));

    // Prefixes that end inside a code point can only be judged at the end of the message.
    let boundaries = [2, 5, 7, 9, 11];
    groups.push((
        "every prefix of a valid string with multi-byte code points",
        (1..=KOSME.len())
            .map(|n| (boundaries.contains(&n), KOSME[..n].to_vec()))
            .collect(),
    ));

    groups.push((
        "first possible sequence of each length (2.1)",
        vec![
            v(b"\x00"),
            v(b"\xc2\x80"),
            v(b"\xe0\xa0\x80"),
            v(b"\xf0\x90\x80\x80"),
        ],
    ));
    groups.push((
        "first possible 5- and 6-byte sequences: beyond U+10FFFF (2.1.5-6)",
        vec![x(b"\xf8\x88\x80\x80\x80"), x(b"\xfc\x84\x80\x80\x80\x80")],
    ));
    groups.push((
        "last possible sequence of each length (2.2)",
        vec![
            v(b"\x7f"),
            v(b"\xdf\xbf"),
            v(b"\xef\xbf\xbf"),
            v(b"\xf4\x8f\xbf\xbf"),
        ],
    ));
    groups.push((
        "last possible 4-, 5- and 6-byte sequences: beyond U+10FFFF (2.2.4-6)",
        vec![
            x(b"\xf7\xbf\xbf\xbf"),
            x(b"\xfb\xbf\xbf\xbf\xbf"),
            x(b"\xfd\xbf\xbf\xbf\xbf\xbf"),
        ],
    ));
    groups.push((
        "other boundary conditions (2.3)",
        vec![
            v(b"\xed\x9f\xbf"),
            v(b"\xee\x80\x80"),
            v(b"\xef\xbf\xbd"),
            v(b"\xf4\x8f\xbf\xbf"),
            x(b"\xf4\x90\x80\x80"),
        ],
    ));

    let all_continuations: Vec<u8> = (0x80..=0xbf).collect();
    groups.push((
        "unexpected continuation bytes (3.1)",
        vec![
            x(b"\x80"),
            x(b"\xbf"),
            x(b"\x80\xbf"),
            x(b"\x80\xbf\x80"),
            x(b"\x80\xbf\x80\xbf"),
            x(b"\x80\xbf\x80\xbf\x80"),
            x(b"\x80\xbf\x80\xbf\x80\xbf"),
            x(&all_continuations),
        ],
    ));

    // Each start byte of a range followed by a space (3.2.1-5).
    let lonely = |lo: u8, hi: u8| -> (bool, Vec<u8>) {
        (false, (lo..=hi).flat_map(|b| [b, b' ']).collect())
    };
    groups.push((
        "lonely start characters (3.2)",
        vec![
            lonely(0xc0, 0xdf),
            lonely(0xe0, 0xef),
            lonely(0xf0, 0xf7),
            lonely(0xf8, 0xfb),
            lonely(0xfc, 0xfd),
        ],
    ));

    let missing_last: [&[u8]; 10] = [
        b"\xc0",
        b"\xe0\x80",
        b"\xf0\x80\x80",
        b"\xf8\x80\x80\x80",
        b"\xfc\x80\x80\x80\x80",
        b"\xdf",
        b"\xef\xbf",
        b"\xf7\xbf\xbf",
        b"\xfb\xbf\xbf\xbf",
        b"\xfd\xbf\xbf\xbf\xbf",
    ];
    groups.push((
        "sequences with the last continuation byte missing (3.3)",
        missing_last.iter().map(|s| x(s)).collect(),
    ));
    groups.push((
        "concatenation of incomplete sequences (3.4)",
        vec![x(&missing_last.concat())],
    ));
    groups.push((
        "impossible bytes (3.5)",
        vec![x(b"\xfe"), x(b"\xff"), x(b"\xfe\xfe\xff\xff")],
    ));
    groups.push((
        "overlong ASCII character (4.1)",
        vec![
            x(b"\xc0\xaf"),
            x(b"\xe0\x80\xaf"),
            x(b"\xf0\x80\x80\xaf"),
            x(b"\xf8\x80\x80\x80\xaf"),
            x(b"\xfc\x80\x80\x80\x80\xaf"),
        ],
    ));
    groups.push((
        "maximum overlong sequences (4.2)",
        vec![
            x(b"\xc1\xbf"),
            x(b"\xe0\x9f\xbf"),
            x(b"\xf0\x8f\xbf\xbf"),
            x(b"\xf8\x87\xbf\xbf\xbf"),
            x(b"\xfc\x83\xbf\xbf\xbf\xbf"),
        ],
    ));
    groups.push((
        "overlong NUL character (4.3)",
        vec![
            x(b"\xc0\x80"),
            x(b"\xe0\x80\x80"),
            x(b"\xf0\x80\x80\x80"),
            x(b"\xf8\x80\x80\x80\x80"),
            x(b"\xfc\x80\x80\x80\x80\x80"),
        ],
    ));
    groups.push((
        "single UTF-16 surrogates (5.1)",
        vec![
            x(b"\xed\xa0\x80"),
            x(b"\xed\xad\xbf"),
            x(b"\xed\xae\x80"),
            x(b"\xed\xaf\xbf"),
            x(b"\xed\xb0\x80"),
            x(b"\xed\xbe\x80"),
            x(b"\xed\xbf\xbf"),
        ],
    ));
    groups.push((
        "paired UTF-16 surrogates (5.2)",
        vec![
            x(b"\xed\xa0\x80\xed\xb0\x80"),
            x(b"\xed\xa0\x80\xed\xbf\xbf"),
            x(b"\xed\xad\xbf\xed\xb0\x80"),
            x(b"\xed\xad\xbf\xed\xbf\xbf"),
            x(b"\xed\xae\x80\xed\xb0\x80"),
            x(b"\xed\xae\x80\xed\xbf\xbf"),
            x(b"\xed\xaf\xbf\xed\xb0\x80"),
            x(b"\xed\xaf\xbf\xed\xbf\xbf"),
        ],
    ));

    // Non-characters are valid UTF-8 (5.3; RFC 3629): U+FFFE, U+FFFF and the last two code
    // points of every supplementary plane.
    let mut nonchars = vec![v(b"\xef\xbf\xbe"), v(b"\xef\xbf\xbf")];
    for plane in 1..=16u32 {
        for low in [0xFFFE, 0xFFFF] {
            let c = char::from_u32(plane << 16 | low).expect("a scalar value");
            nonchars.push(v(c.to_string().as_bytes()));
        }
    }
    groups.push(("non-character code points (5.3, valid)", nonchars));
    groups.push((
        "Unicode specials U+FFF9-U+FFFF (valid)",
        (0xFFF9..=0xFFFFu32)
            .map(|c| {
                v(char::from_u32(c)
                    .expect("a scalar value")
                    .to_string()
                    .as_bytes())
            })
            .collect(),
    ));
    groups
}

/// How many bytes of `bytes` must arrive before it is certain that they cannot start valid
/// UTF-8; `None` if every prefix could still be completed (only the end of the message shows
/// the error). A fail-fast receiver fails the connection once this many bytes are in.
pub(crate) fn detectable_after(bytes: &[u8]) -> Option<usize> {
    (1..=bytes.len())
        .find(|&n| std::str::from_utf8(&bytes[..n]).is_err_and(|e| e.error_len().is_some()))
}

/// The declared validity of every sequence agrees with the standard library.
pub(crate) fn self_check() {
    for (title, seqs) in groups() {
        for (valid, bytes) in seqs {
            assert_eq!(
                std::str::from_utf8(&bytes).is_ok(),
                valid,
                "{title}: {bytes:02x?}"
            );
        }
    }
    assert_eq!(detectable_after(b"\xed\xa0\x80"), Some(2));
    assert_eq!(detectable_after(b"\xff"), Some(1));
    assert_eq!(detectable_after(b"\xe0\x80"), Some(2));
    assert_eq!(detectable_after(b"\xce"), None);
    assert_eq!(detectable_after(b"\xf4\x90\x80\x80"), Some(2));
}
