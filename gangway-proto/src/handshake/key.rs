//! `Sec-WebSocket-Key` and `Sec-WebSocket-Accept` (RFC 6455 §4.1, §4.2.2, §11.3).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

use crate::random::RandomSource;

/// The GUID appended to the key before hashing (RFC 6455 §1.3).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64-encoded (24 characters).
pub fn generate_key(rng: &mut dyn RandomSource) -> String {
    let mut nonce = [0u8; 16];
    rng.fill(&mut nonce);
    STANDARD.encode(nonce)
}

/// The `Sec-WebSocket-Accept` value for a key as it was sent: base64(SHA-1(key + GUID)), with
/// the key's surrounding whitespace trimmed.
///
/// ```
/// assert_eq!(
///     gangway_proto::handshake::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
///     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
/// );
/// ```
pub fn accept_key(key: &[u8]) -> String {
    let mut out = [0u8; ACCEPT_LEN];
    let accept = accept_key_into(key, &mut out);
    accept.to_owned()
}

/// The length of a `Sec-WebSocket-Accept` value: a 20-byte SHA-1 digest in padded base64.
pub(crate) const ACCEPT_LEN: usize = 28;

/// [`accept_key`] written into `out`, for the server's answer: no allocation per handshake.
pub(crate) fn accept_key_into<'a>(key: &[u8], out: &'a mut [u8; ACCEPT_LEN]) -> &'a str {
    let mut sha = Sha1::new();
    sha.update(key.trim_ascii());
    sha.update(GUID.as_bytes());
    let digest = sha.finalize();
    // 20 bytes always encode to exactly 28 characters, so the buffer always fits; the fallback
    // (an empty value) is never taken.
    let len = STANDARD.encode_slice(digest, &mut out[..]).unwrap_or(0);
    // Base64 is ASCII.
    std::str::from_utf8(&out[..len]).unwrap_or_default()
}

/// Whether a received key (whitespace trimmed) is base64 that decodes to exactly 16 bytes.
pub fn is_valid_key(key: &[u8]) -> bool {
    // 16 bytes encode to 22 characters and "==" padding (RFC 4648 §4), and only so: checked
    // without decoding. The 22nd character carries the last 2 bits of the 16th byte and 4 bits
    // that must be zero (canonical base64, as the decoder requires): A, Q, g or w.
    match key.trim_ascii() {
        [chars @ .., last, b'=', b'='] if chars.len() == 21 => {
            chars.iter().all(|&b| BASE64[usize::from(b)])
                && matches!(last, b'A' | b'Q' | b'g' | b'w')
        }
        _ => false,
    }
}

/// For every byte, whether it is in the base64 alphabet (RFC 4648 §4, without the padding).
static BASE64: [bool; 256] =
    crate::handshake::byte_set!(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    /// What [`is_valid_key`] answers, by decoding: base64 that decodes to exactly 16 bytes.
    fn decodes_to_16(key: &[u8]) -> bool {
        let mut decoded = [0u8; 64];
        STANDARD
            .decode_slice(key.trim_ascii(), &mut decoded)
            .is_ok_and(|n| n == 16)
    }

    #[test]
    fn a_key_is_valid_exactly_when_it_decodes_to_16_bytes() {
        let mut keys: Vec<Vec<u8>> = vec![
            b"dGhlIHNhbXBsZSBub25jZQ==".to_vec(),
            b" dGhlIHNhbXBsZSBub25jZQ==\t".to_vec(),
            b"dGhlIHNhbXBsZSBub25jZQ=".to_vec(),
            b"dGhlIHNhbXBsZSBub25jZQ".to_vec(),
            b"dGhlIHNhbXBsZSBub25jZR==".to_vec(),
            b"dGhlIHNhbXBsZSBub25jZQ==dGhl".to_vec(),
            b"dGhlIHNhbXBsZSBub25jZQA=".to_vec(),
            b"dGhlIHNhbXBsZSBub25j====".to_vec(),
            b"dGhlIHNhbXBsZSBub25jZ-==".to_vec(),
            b"AAAAAAAAAAAAAAAAAAAAAA==".to_vec(),
            b"////////////////////ww==".to_vec(),
            b"dGhlIHNhbXBsZSBub25jZQ".to_vec(),
            Vec::new(),
        ];
        // Every byte in every position of a valid key.
        for at in 0..24 {
            for b in 0..=255u8 {
                let mut key = b"08kp54j1E3z4IfuM1m75tQ==".to_vec();
                key[at] = b;
                keys.push(key);
            }
        }
        let mut random = SeededRandom::new(15);
        for _ in 0..2000 {
            let mut raw = [0u8; 16];
            random.fill(&mut raw);
            keys.push(STANDARD.encode(raw).into_bytes());
        }
        let mut valid = 0;
        for key in &keys {
            assert_eq!(is_valid_key(key), decodes_to_16(key), "{key:?}");
            valid += usize::from(is_valid_key(key));
        }
        // The probe is not empty-handed either way.
        assert!(
            valid > 2000 && valid < keys.len(),
            "{valid} of {}",
            keys.len()
        );
    }

    #[test]
    fn rfc_6455_accept_vectors() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            accept_key(b"08kp54j1E3z4IfuM1m75tQ=="),
            "Dhg2s/gXkbuTiYk690dns7LmEhY="
        );
        assert_eq!(
            accept_key(b" \t08kp54j1E3z4IfuM1m75tQ== "),
            "Dhg2s/gXkbuTiYk690dns7LmEhY="
        );
    }

    #[test]
    fn generated_keys_are_16_random_bytes() {
        let mut rng = SeededRandom::new(7);
        let a = generate_key(&mut rng);
        let b = generate_key(&mut rng);
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert_eq!(STANDARD.decode(&a).unwrap().len(), 16);
        assert!(is_valid_key(a.as_bytes()));
    }

    #[test]
    fn keys_that_do_not_decode_to_16_bytes_are_invalid() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key(b"0123456789abcdef")); // 16 printable characters, 12 bytes
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ")); // unpadded
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZSE=")); // 17 bytes
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZ!=="));
        assert!(!is_valid_key(b""));
    }
}
