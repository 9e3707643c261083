//! Masking (RFC 6455 §5.3): XOR with a 4-byte key, continuing at an offset into the key.

/// XOR `data` with `key`, starting at byte `offset` of the key (0–3), so a payload can be
/// unmasked in pieces as it arrives. Returns the key offset after `data`.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let _ = (data, key, offset);
    todo!("apply_mask")
}

/// The byte-at-a-time reference implementation; fuzzing checks [`apply_mask`] against it.
pub fn apply_mask_scalar(data: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[(offset + i) & 3];
    }
    (offset + data.len()) & 3
}
