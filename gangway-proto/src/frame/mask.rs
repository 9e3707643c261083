//! Masking (RFC 6455 §5.3): XOR with a 4-byte key, continuing at an offset into the key.
//!
//! Every payload byte a server receives goes through here once, so it must run at memory speed.
//! There are three implementations, equal byte for byte:
//!
//! - [`apply_mask_scalar`], a byte at a time: the reference that tests and fuzzing compare with.
//! - [`apply_mask_portable`], for any CPU: the key repeated into a `u64`, XORed over 32-byte
//!   chunks that the compiler turns into vector instructions of the baseline target (two SSE2
//!   XORs per chunk on x86_64).
//! - On x86_64 with AVX2, found at run time: the same loop over 64-byte chunks, compiled with
//!   AVX2 enabled (256-bit XORs). [`apply_mask`] picks it for buffers long enough to gain.

/// Buffers shorter than this take the portable path even with AVX2: they are masked in a few
/// word XORs, and the (not inlinable) AVX2 function would only add a call.
#[cfg(target_arch = "x86_64")]
const AVX2_MIN_LEN: usize = 64;

/// XOR `data` with `key`, starting at byte `offset` of the key (0–3), so a payload can be
/// unmasked in pieces as it arrives. Returns the key offset after `data`.
///
/// Uses the fastest implementation this CPU runs (see the [module docs](self)); equal to
/// [`apply_mask_scalar`] for every input.
#[inline]
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    if data.len() < SMALL_LEN {
        return mask_small(data, key, offset);
    }
    #[cfg(target_arch = "x86_64")]
    if data.len() >= AVX2_MIN_LEN {
        return apply_mask_with(MaskPath::Avx2, data, key, offset);
    }
    apply_mask_with(MaskPath::Portable, data, key, offset)
}

/// Below this length, [`apply_mask`] masks with [`mask_small`], inlined into the caller.
const SMALL_LEN: usize = 32;

/// Masking of short payloads (most chat messages, pings, close frames): at most three word
/// XORs and three byte XORs, with no loop set-up, inlined where it is called.
#[inline(always)]
fn mask_small(data: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let end = offset.wrapping_add(data.len()) & 3;
    // `rotated`'s bytes in memory are the key starting at `offset`; `wide` is them twice.
    let rotated = u32::from_ne_bytes(key).rotate_right(rotation_bits(offset & 3));
    let wide = u64::from(rotated) | (u64::from(rotated) << 32);
    let mut words = data.chunks_exact_mut(8);
    for word in &mut words {
        xor_words(word, wide);
    }
    let mut rest = words.into_remainder();
    if rest.len() >= 4 {
        let (half, tail) = rest.split_at_mut(4);
        let mut bytes = [0u8; 4];
        // Both sides are exactly 4 bytes long.
        bytes.copy_from_slice(half);
        half.copy_from_slice(&(u32::from_ne_bytes(bytes) ^ rotated).to_ne_bytes());
        rest = tail;
    }
    // Whole words and half-words keep the key's phase: the last bytes start at `rotated[0]`.
    for (b, k) in rest.iter_mut().zip(rotated.to_ne_bytes()) {
        *b ^= k;
    }
    end
}

/// The implementation [`apply_mask`] uses when the CPU offers nothing faster: 32-byte chunks
/// that the compiler vectorises for the baseline target. Public so that benchmarks and fuzzing
/// can measure and check it on machines where [`apply_mask`] takes another path.
pub fn apply_mask_portable(data: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    apply_mask_with(MaskPath::Portable, data, key, offset)
}

/// An implementation of masking, for tests to force each one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MaskPath {
    /// [`apply_mask_portable`]'s loop: any CPU.
    Portable,
    /// The AVX2 loop; on a CPU without AVX2 it falls back to [`MaskPath::Portable`].
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl MaskPath {
    /// The paths this CPU can really run (a forced [`MaskPath::Avx2`] without AVX2 would only
    /// test the fallback again).
    #[cfg(test)]
    pub(crate) fn supported() -> Vec<MaskPath> {
        #[allow(unused_mut)] // Only x86_64 has a second path.
        let mut paths = vec![MaskPath::Portable];
        #[cfg(target_arch = "x86_64")]
        if avx2::detected() {
            paths.push(MaskPath::Avx2);
        }
        paths
    }
}

/// [`apply_mask`] through the given implementation, whatever the length.
pub(crate) fn apply_mask_with(
    path: MaskPath,
    data: &mut [u8],
    key: [u8; 4],
    offset: usize,
) -> usize {
    match path {
        MaskPath::Portable => mask_in_chunks::<32>(data, key, offset),
        #[cfg(target_arch = "x86_64")]
        MaskPath::Avx2 => avx2::apply_mask(data, key, offset)
            .unwrap_or_else(|| mask_in_chunks::<32>(data, key, offset)),
    }
}

/// The masking loop shared by every fast path: `N`-byte chunks of `u64` XORs (`N` a multiple
/// of 8, so every chunk starts at the same key phase), then single words, then single bytes.
///
/// The fixed-size inner loop is what the compiler widens into vector XORs: inlined into a
/// function compiled with AVX2, the same code becomes 256-bit instructions.
#[inline(always)]
fn mask_in_chunks<const N: usize>(data: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let offset = offset & 3;
    let end = (offset + data.len()) & 3;
    // `rotated[i]` masks the byte at index `i` modulo 4 of `data`.
    let rotated = u32::from_ne_bytes(key).rotate_right(rotation_bits(offset));
    let rotated = rotated.to_ne_bytes();
    let wide = u64::from_ne_bytes([
        rotated[0], rotated[1], rotated[2], rotated[3], rotated[0], rotated[1], rotated[2],
        rotated[3],
    ]);
    let mut chunks = data.chunks_exact_mut(N);
    for chunk in &mut chunks {
        xor_words(chunk, wide);
    }
    let rest = chunks.into_remainder();
    let whole_words = rest.len() / 8 * 8;
    let (words, bytes) = rest.split_at_mut(whole_words);
    xor_words(words, wide);
    // Word and chunk lengths are multiples of 4: the tail starts at key phase 0 again.
    for (b, k) in bytes.iter_mut().zip(rotated.iter().cycle()) {
        *b ^= k;
    }
    end
}

/// XOR every whole 8-byte word of `data` with `wide`.
#[inline(always)]
fn xor_words(data: &mut [u8], wide: u64) {
    for word in data.chunks_exact_mut(8) {
        let mut bytes = [0u8; 8];
        // Both sides are exactly 8 bytes long: `chunks_exact_mut(8)`.
        bytes.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
    }
}

/// The AVX2 path: the only unsafe code of the crate, a call that needs the CPU feature.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    /// Whether this CPU has AVX2. The standard library caches the CPUID answer in an atomic,
    /// so after the first call this is a load and a bit test.
    pub(super) fn detected() -> bool {
        std::is_x86_feature_detected!("avx2")
    }

    /// Mask with 256-bit XORs; `None` (nothing done) when this CPU has no AVX2.
    pub(super) fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) -> Option<usize> {
        if !detected() {
            return None;
        }
        // SAFETY: `mask_avx2`'s only requirement is that the CPU supports AVX2, which was
        // detected on this CPU just above. Its body is safe code.
        Some(unsafe { mask_avx2(data, key, offset) })
    }

    /// The shared chunk loop, compiled with AVX2 enabled so that its 64-byte chunks become
    /// 256-bit loads, XORs and stores.
    ///
    /// The bytes before the first 32-byte boundary are masked first, on their own, so that no
    /// 256-bit access of the loop straddles two cache lines (payloads follow 2- to 14-byte
    /// headers: they rarely start aligned).
    #[target_feature(enable = "avx2")]
    unsafe fn mask_avx2(data: &mut [u8], key: [u8; 4], offset: usize) -> usize {
        let head_len = data.as_ptr().align_offset(32).min(data.len());
        let (head, body) = data.split_at_mut(head_len);
        let offset = super::mask_in_chunks::<64>(head, key, offset);
        super::mask_in_chunks::<64>(body, key, offset)
    }
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

    /// A masking function under test, by name.
    type Implementation = (String, Box<dyn Fn(&mut [u8], [u8; 4], usize) -> usize>);

    /// Every way to mask: the dispatcher, the public portable function, and each path this
    /// CPU supports, forced whatever the length.
    fn implementations() -> Vec<Implementation> {
        let mut all: Vec<Implementation> = vec![
            ("apply_mask".into(), Box::new(apply_mask)),
            ("apply_mask_portable".into(), Box::new(apply_mask_portable)),
        ];
        for path in MaskPath::supported() {
            all.push((
                format!("{path:?}"),
                Box::new(move |d: &mut [u8], k, o| apply_mask_with(path, d, k, o)),
            ));
        }
        all
    }

    /// Mask `data[start..]` in place (so its start has the alignment `start` gives it) with
    /// every implementation and compare with the byte-at-a-time reference, including the bytes
    /// before `start`, which must stay untouched.
    fn assert_same_as_scalar_at(data: &[u8], start: usize, key: [u8; 4], offset: usize) {
        let mut scalar = data.to_vec();
        let expected_end = apply_mask_scalar(&mut scalar[start..], key, offset);
        for (name, mask) in implementations() {
            let mut fast = data.to_vec();
            let end = mask(&mut fast[start..], key, offset);
            let what = format!("{name}: len {} start {start} offset {offset}", data.len());
            assert_eq!(end, expected_end, "{what}");
            assert!(fast == scalar, "{what}");
        }
    }

    fn assert_same_as_scalar(data: &[u8], key: [u8; 4], offset: usize) {
        assert_same_as_scalar_at(data, 0, key, offset);
    }

    #[test]
    fn every_path_equals_scalar_for_every_length_to_300_and_offset() {
        let mut rng = SeededRandom::new(1);
        for len in 0..=300 {
            let data = random_bytes(&mut rng, len);
            for offset in 0..4 {
                for key in [[0x37, 0xfa, 0x21, 0x3d], [1, 2, 3, 4], [0xFF, 0, 0xFF, 0]] {
                    assert_same_as_scalar(&data, key, offset);
                }
            }
        }
    }

    #[test]
    fn every_path_equals_scalar_at_unaligned_starts() {
        let mut rng = SeededRandom::new(4);
        let data = random_bytes(&mut rng, 300);
        // Every start within a 64-byte line, so that the first chunk and the tail fall at
        // every alignment.
        for start in 0..64 {
            for offset in 0..4 {
                assert_same_as_scalar_at(&data, start, [0x5A, 0xC3, 0x0F, 0x96], offset);
            }
        }
    }

    #[test]
    fn every_path_equals_scalar_on_large_random_lengths() {
        let mut rng = SeededRandom::new(2);
        let mut len_bytes = [0u8; 4];
        let mut lengths = vec![(1 << 20) + 13, 65_536, 65_535, 4099];
        for _ in 0..6 {
            rng.fill(&mut len_bytes);
            lengths.push(usize::try_from(u32::from_le_bytes(len_bytes) % 200_000).unwrap_or(0));
        }
        for len in lengths {
            let data = random_bytes(&mut rng, len + 8);
            for start in [0, 1, 3, 7] {
                let offset = start & 3;
                assert_same_as_scalar_at(
                    &data[..start + len],
                    start,
                    [0xA1, 0xB2, 0xC3, 0xD4],
                    offset,
                );
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
        for (name, mask) in implementations() {
            for piece in [1usize, 3, 5, 7, 8, 9, 31, 63, 65, 333] {
                let mut pieces = data.clone();
                let mut offset = 0;
                for chunk in pieces.chunks_mut(piece) {
                    offset = mask(chunk, key, offset);
                }
                assert!(pieces == whole, "{name}: piece size {piece}");
            }
        }
    }

    #[test]
    fn rfc_6455_section_5_7_masked_hello() {
        for (name, mask) in implementations() {
            let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
            assert_eq!(mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0), 1, "{name}");
            assert_eq!(&payload, b"Hello", "{name}");
        }
    }

    #[test]
    fn offset_above_three_wraps_like_scalar() {
        assert_same_as_scalar(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2, 4, 8], 6);
        assert_same_as_scalar(&[7; 200], [1, 2, 4, 8], 6);
    }

    #[test]
    fn offset_near_usize_max_does_not_overflow() {
        // Found by the `mask` fuzz target: the scalar reference computed `offset + len` and
        // overflowed (a panic with overflow checks on).
        let key = [0xA9, 0xA9, 0xA9, 0xFF];
        assert_same_as_scalar(&[0], key, usize::MAX);
        assert_same_as_scalar(&[1, 2, 3, 4, 5, 6, 7, 8, 9], key, usize::MAX - 2);
        assert_same_as_scalar(&[0x55; 130], key, usize::MAX - 1);
        let mut data = [0u8; 2];
        // usize::MAX is 3 modulo 4: key[3], then key[0].
        assert_eq!(apply_mask_scalar(&mut data, key, usize::MAX), 1);
        assert_eq!(data, [0xFF, 0xA9]);
    }
}
