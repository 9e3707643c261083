//! [`Utf8Bytes`]: the text of a message, shared like [`Bytes`] and read like a `&str`.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// Text known to be valid UTF-8, held in [`Bytes`]: cloning it and slicing a received message out
/// of the read buffer cost no copy. Read it as a `&str` (it dereferences to one).
///
/// Every way to make one checks the bytes or starts from a `str`, so the text is always valid.
///
/// ```
/// use gangway_proto::Utf8Bytes;
///
/// let text = Utf8Bytes::from("héllo");
/// assert_eq!(text, "héllo");
/// assert_eq!(text.len(), 6);
/// assert!(text.starts_with("hé"));
/// let owned: String = text.to_string();
/// assert_eq!(Utf8Bytes::from(owned), text);
/// assert!(Utf8Bytes::try_from(bytes::Bytes::from_static(b"\xff")).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Text from a string literal, without copying it.
    pub const fn from_static(text: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(text.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        #[allow(unsafe_code)]
        // SAFETY: `from_utf8_unchecked` requires valid UTF-8. Every constructor of `Utf8Bytes`
        // takes a `str` or validates its bytes (`TryFrom<Bytes>`, `validated`), and the bytes
        // are never modified afterwards (`Bytes` is immutable).
        unsafe {
            std::str::from_utf8_unchecked(&self.0)
        }
    }

    /// The text's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The underlying bytes, without copying.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Validate received bytes as UTF-8 (with simdutf8, as fast as it gets) and wrap them.
    pub(crate) fn validated(bytes: Bytes) -> Result<Self, crate::ProtocolError> {
        validate(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }
}

/// Received bytes as text, validated as UTF-8 (with simdutf8, as fast as it gets): the one check
/// of every text message that arrives whole, handed over or lent.
#[inline]
pub(crate) fn validate(bytes: &[u8]) -> Result<&str, crate::ProtocolError> {
    // Short ASCII, the usual small message, is checked a word at a time, inline (the standard
    // library's check does that); simdutf8's set-up costs more than the check itself below a
    // vector's length.
    if bytes.len() < 64 {
        return std::str::from_utf8(bytes).map_err(|_| crate::ProtocolError::InvalidUtf8);
    }
    simdutf8::basic::from_utf8(bytes).map_err(|_| crate::ProtocolError::InvalidUtf8)
}

impl Deref for Utf8Bytes {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<str> for Utf8Bytes {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<String> for Utf8Bytes {
    /// Takes the string's buffer, without copying.
    fn from(text: String) -> Self {
        Utf8Bytes(Bytes::from(text))
    }
}

impl From<&str> for Utf8Bytes {
    /// Copies the text (see [`Utf8Bytes::from_static`] for literals).
    fn from(text: &str) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<&String> for Utf8Bytes {
    /// Copies the text.
    fn from(text: &String) -> Self {
        Utf8Bytes::from(text.as_str())
    }
}

impl From<Box<str>> for Utf8Bytes {
    fn from(text: Box<str>) -> Self {
        Utf8Bytes(Bytes::from(text.into_boxed_bytes()))
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(text: Utf8Bytes) -> Self {
        text.0
    }
}

impl From<Utf8Bytes> for String {
    /// Copies the text.
    fn from(text: Utf8Bytes) -> Self {
        text.as_str().to_owned()
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = std::str::Utf8Error;

    /// Checks that the bytes are UTF-8; no copy.
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Utf8Bytes {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Utf8Bytes> for str {
    fn eq(&self, other: &Utf8Bytes) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Utf8Bytes> for &str {
    fn eq(&self, other: &Utf8Bytes) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Utf8Bytes> for String {
    fn eq(&self, other: &Utf8Bytes) -> bool {
        self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_constructor_keeps_the_text_and_invalid_bytes_are_refused() {
        let expected = "a€😀";
        let all = [
            Utf8Bytes::from(expected),
            Utf8Bytes::from(expected.to_owned()),
            Utf8Bytes::from(&expected.to_owned()),
            Utf8Bytes::from(Box::<str>::from(expected)),
            Utf8Bytes::from_static("a€😀"),
            Utf8Bytes::try_from(Bytes::from_static(expected.as_bytes())).unwrap(),
            Utf8Bytes::validated(Bytes::from_static(expected.as_bytes())).unwrap(),
        ];
        for text in all {
            assert_eq!(text.as_str(), expected);
            assert_eq!(text.as_bytes(), expected.as_bytes());
            assert_eq!(
                format!("{text}|{text:?}"),
                format!("{expected}|{expected:?}")
            );
            assert_eq!(String::from(text.clone()), expected);
            assert_eq!(Bytes::from(text), expected.as_bytes());
        }
        // A code point cut short, a lone continuation byte, an overlong encoding, a surrogate.
        for bad in [&b"a\xe2\x82"[..], b"\x80", b"\xc0\xaf", b"\xed\xa0\x80"] {
            assert!(Utf8Bytes::try_from(Bytes::copy_from_slice(bad)).is_err());
            assert_eq!(
                Utf8Bytes::validated(Bytes::copy_from_slice(bad)),
                Err(crate::ProtocolError::InvalidUtf8)
            );
        }
    }

    #[test]
    fn short_and_long_texts_take_either_check_with_the_same_answers() {
        for len in [0, 1, 15, 16, 63, 64, 65, 200] {
            let ascii = "a".repeat(len);
            let valid = Utf8Bytes::validated(Bytes::from(ascii.clone())).unwrap();
            assert_eq!(valid, ascii);
            if len == 0 {
                continue;
            }
            // A stray byte at the end or at the start; a 2-byte character cut at the end.
            for bad in [
                [ascii.as_bytes(), b"\xff"].concat(),
                [b"\x80", ascii.as_bytes()].concat(),
                [ascii.as_bytes(), b"\xc3"].concat(),
            ] {
                assert_eq!(
                    Utf8Bytes::validated(Bytes::from(bad)),
                    Err(crate::ProtocolError::InvalidUtf8),
                    "{len}"
                );
            }
            let accented = ascii[1..].to_owned() + "é";
            assert!(Utf8Bytes::validated(Bytes::from(accented)).is_ok());
        }
    }

    #[test]
    fn compares_with_strings_both_ways() {
        let text = Utf8Bytes::from_static("same");
        let owned = String::from("same");
        // Each impl by name: both directions, with `&str`, `str` and `String`.
        assert!(PartialEq::<&str>::eq(&text, &"same"));
        assert!(PartialEq::<Utf8Bytes>::eq(&"same", &text));
        assert!(PartialEq::<str>::eq(&text, "same"));
        assert!(PartialEq::<Utf8Bytes>::eq("same", &text));
        assert!(PartialEq::<String>::eq(&text, &owned));
        assert!(PartialEq::<Utf8Bytes>::eq(&owned, &text));
        assert!(!PartialEq::<&str>::eq(&text, &"other"));
        assert!(!PartialEq::<Utf8Bytes>::eq(&String::from("other"), &text));
        let shared = Bytes::from_static(b"same");
        assert_eq!(Utf8Bytes::try_from(shared).unwrap(), text);
    }
}
