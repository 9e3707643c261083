//! Word-at-a-time masking against the byte-at-a-time reference (RFC 6455 §5.3).

use gangway_proto::frame::mask::{apply_mask, apply_mask_scalar};

/// Input: 4 key bytes, 8 bytes of key offset (any `usize`, little-endian), then the data.
///
/// Oracle: [`apply_mask`] and [`apply_mask_scalar`] give the same bytes and the same next offset,
/// also when the data is masked in two pieces, continuing at the returned offset; masking twice
/// gives the data back.
pub fn check(data: &[u8]) {
    let Some((key, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Some((offset, payload)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let offset = usize::try_from(u64::from_le_bytes(*offset)).unwrap_or(usize::MAX);

    let mut fast = payload.to_vec();
    let mut scalar = payload.to_vec();
    let fast_end = apply_mask(&mut fast, *key, offset);
    let scalar_end = apply_mask_scalar(&mut scalar, *key, offset);
    assert_eq!(fast_end, scalar_end, "next offset");
    assert!(fast_end < 4, "next offset {fast_end}");
    assert_eq!(fast, scalar, "masked bytes");

    // In two pieces, the second continuing where the first ended (at an unaligned point).
    let split = payload.len() / 3;
    let mut pieces = payload.to_vec();
    let (head, tail) = pieces.split_at_mut(split);
    let middle = apply_mask(head, *key, offset);
    assert_eq!(
        apply_mask(tail, *key, middle),
        fast_end,
        "offset after two pieces"
    );
    assert_eq!(pieces, fast, "masked in two pieces");

    // XOR is its own inverse.
    apply_mask(&mut fast, *key, offset);
    assert_eq!(fast, payload, "unmasking");
}
