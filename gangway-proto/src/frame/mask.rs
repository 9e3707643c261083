//! Masking (RFC 6455 §5.3): XOR with a 4-byte key, continuing at an offset into the key.

/// XOR `data` with `key`, starting at byte `offset` of the key (0–3), so a payload can be
/// unmasked in pieces as it arrives. Returns the key offset after `data`.
///
/// Works a word at a time: the key is rotated to start at `offset` and repeated into a `u64`,
/// so each 8-byte chunk takes one XOR (the compiler widens the loop further where it can).
/// Equal to [`apply_mask_scalar`] for every input.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let offset = offset & 3;
    let end = (offset + data.len()) & 3;
    // `rotated[i]` masks the byte at index `i` modulo 4 of `data`.
    let rotated = u32::from_ne_bytes(key).rotate_right(rotation_bits(offset));
    let rotated = rotated.to_ne_bytes();
    let wide = u64::from_ne_bytes([
        rotated[0], rotated[1], rotated[2], rotated[3], rotated[0], rotated[1], rotated[2],
        rotated[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        // Both sides are exactly 8 bytes long: `chunks_exact_mut(8)`.
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (b, k) in chunks
        .into_remainder()
        .iter_mut()
        .zip(rotated.iter().cycle())
    {
        *b ^= k;
    }
    end
}

/// How far to rotate the native-endian `u32` of the key so that its first byte in memory is
/// `key[offset]`.
fn rotation_bits(offset: usize) -> u32 {
    // Cannot truncate: offset is 0..=3.
    let bits = (offset as u32) * 8;
    if cfg!(target_endian = "little") {
        bits
    } else {
        // On big-endian the first byte in memory is the most significant: rotate the other way.
        (32 - bits) % 32
    }
}

/// The byte-at-a-time reference implementation; fuzzing checks [`apply_mask`] against it.
pub fn apply_mask_scalar(data: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    // Only the offset modulo 4 matters, and wrapping keeps it (2^64 is a multiple of 4): an
    // offset near `usize::MAX` must not overflow.
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[offset.wrapping_add(i) & 3];
    }
    offset.wrapping_add(data.len()) & 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::{RandomSource, SeededRandom};

    fn random_bytes(rng: &mut SeededRandom, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rng.fill(&mut v);
        v
    }

    fn assert_same_as_scalar(data: &[u8], key: [u8; 4], offset: usize) {
        let mut fast = data.to_vec();
        let mut scalar = data.to_vec();
        let a = apply_mask(&mut fast, key, offset);
        let b = apply_mask_scalar(&mut scalar, key, offset);
        assert_eq!(a, b, "len {} offset {offset}", data.len());
        assert!(fast == scalar, "len {} offset {offset}", data.len());
    }

    #[test]
    fn fast_mask_equals_scalar_for_every_short_length_and_offset() {
        let mut rng = SeededRandom::new(1);
        for len in 0..=64 {
            let data = random_bytes(&mut rng, len);
            for offset in 0..4 {
                for key in [[0x37, 0xfa, 0x21, 0x3d], [1, 2, 3, 4], [0xFF, 0, 0xFF, 0]] {
                    assert_same_as_scalar(&data, key, offset);
                }
            }
        }
    }

    #[test]
    fn fast_mask_equals_scalar_on_large_and_unaligned_buffers() {
        let mut rng = SeededRandom::new(2);
        let data = random_bytes(&mut rng, (1 << 20) + 13);
        for start in 0..8 {
            for offset in 0..4 {
                assert_same_as_scalar(&data[start..], [0xA1, 0xB2, 0xC3, 0xD4], offset);
            }
        }
    }

    #[test]
    fn masking_in_pieces_equals_masking_at_once() {
        let mut rng = SeededRandom::new(3);
        let data = random_bytes(&mut rng, 1000);
        let key = [9, 8, 7, 6];
        let mut whole = data.clone();
        apply_mask_scalar(&mut whole, key, 0);
        for piece in [1usize, 3, 5, 7, 8, 9, 31, 333] {
            let mut pieces = data.clone();
            let mut offset = 0;
            for chunk in pieces.chunks_mut(piece) {
                offset = apply_mask(chunk, key, offset);
            }
            assert!(pieces == whole, "piece size {piece}");
        }
    }

    #[test]
    fn rfc_6455_section_5_7_masked_hello() {
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert_eq!(apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0), 1);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn offset_above_three_wraps_like_scalar() {
        assert_same_as_scalar(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2, 4, 8], 6);
    }

    #[test]
    fn offset_near_usize_max_does_not_overflow() {
        // Found by the `mask` fuzz target: the scalar reference computed `offset + len` and
        // overflowed (a panic with overflow checks on).
        let key = [0xA9, 0xA9, 0xA9, 0xFF];
        assert_same_as_scalar(&[0], key, usize::MAX);
        assert_same_as_scalar(&[1, 2, 3, 4, 5, 6, 7, 8, 9], key, usize::MAX - 2);
        let mut data = [0u8; 2];
        // usize::MAX is 3 modulo 4: key[3], then key[0].
        assert_eq!(apply_mask_scalar(&mut data, key, usize::MAX), 1);
        assert_eq!(data, [0xFF, 0xA9]);
    }
}
