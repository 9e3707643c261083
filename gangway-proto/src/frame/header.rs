//! Incremental frame header decode and encode (RFC 6455 §5.2).

use crate::error::ProtocolError;
use crate::frame::OpCode;

/// The longest possible frame header: 2 + 8 (64-bit length) + 4 (mask) bytes.
pub const MAX_HEADER_LEN: usize = 14;

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the last frame of a message.
    pub fin: bool,
    /// RSV1, RSV2, RSV3 in the low three bits (RSV1 = 0b100).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Decode a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a header (feed more bytes and call
    /// again), or `Ok(Some((header, header_len)))`.
    ///
    /// Errors are reported as soon as the bytes that show them are present, so a reserved
    /// opcode fails on the first byte, before the rest of the header arrives.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::ReservedOpcode`] and [`ProtocolError::InvalidLength`] (64-bit length with
    /// the top bit set). Role- and state-dependent checks (masking, RSV, control-frame rules) are
    /// the connection's.
    #[inline(always)]
    pub fn decode(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        let opcode = OpCode::from_u8(b0 & 0x0F)?;
        let Some(&b1) = buf.get(1) else {
            return Ok(None);
        };
        let masked = b1 & 0x80 != 0;
        let (len_bytes, payload_len) = match b1 & 0x7F {
            126 => {
                let Some(ext) = buf.get(2..4) else {
                    return Ok(None);
                };
                (2, u64::from(u16::from_be_bytes([ext[0], ext[1]])))
            }
            127 => {
                // §5.2: "the most significant bit MUST be 0". Checked on the first length byte.
                if buf.get(2).is_some_and(|&b| b & 0x80 != 0) {
                    return Err(ProtocolError::InvalidLength);
                }
                let Some(ext) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut be = [0u8; 8];
                be.copy_from_slice(ext);
                (8, u64::from_be_bytes(be))
            }
            short => (0, u64::from(short)),
        };
        let mut len = 2 + len_bytes;
        let mask = if masked {
            let Some(key) = buf.get(len..len + 4) else {
                return Ok(None);
            };
            len += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        let header = FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0b111,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, len)))
    }

    /// The encoded length of this header (2 to 14 bytes).
    pub fn encoded_len(&self) -> usize {
        let len_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        2 + len_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Encode into `out` (at least [`MAX_HEADER_LEN`] bytes); returns the bytes written.
    /// The shortest length form is always used (§5.2: "the minimal number of bytes").
    ///
    /// # Panics
    ///
    /// If `out` is shorter than [`encoded_len`](Self::encoded_len).
    pub fn encode(&self, out: &mut [u8]) -> usize {
        out[0] = u8::from(self.fin) << 7 | (self.rsv & 0b111) << 4 | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut len = match self.payload_len {
            short @ 0..=125 => {
                // Cannot truncate: at most 125.
                out[1] = mask_bit | short as u8;
                2
            }
            medium @ 126..=0xFFFF => {
                out[1] = mask_bit | 126;
                // Cannot truncate: at most 0xFFFF.
                out[2..4].copy_from_slice(&(medium as u16).to_be_bytes());
                4
            }
            long => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&long.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> (FrameHeader, usize) {
        FrameHeader::decode(bytes).unwrap().unwrap()
    }

    fn header(fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, payload_len: u64) -> FrameHeader {
        FrameHeader {
            fin,
            rsv: 0,
            opcode,
            mask,
            payload_len,
        }
    }

    /// Every proper prefix is partial, the whole decodes to `expected` and encodes back.
    fn assert_round_trip(bytes: &[u8], expected: FrameHeader) {
        for cut in 0..bytes.len() {
            assert_eq!(FrameHeader::decode(&bytes[..cut]), Ok(None), "prefix {cut}");
        }
        assert_eq!(decode_all(bytes), (expected, bytes.len()));
        let mut trailing = bytes.to_vec();
        trailing.extend_from_slice(b"payload");
        assert_eq!(decode_all(&trailing), (expected, bytes.len()));
        assert_eq!(expected.encoded_len(), bytes.len());
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = expected.encode(&mut out);
        assert_eq!(&out[..n], bytes);
    }

    #[test]
    fn rfc_6455_section_5_7_unmasked_hello() {
        let frame = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, n) = decode_all(&frame);
        assert_eq!(h, header(true, OpCode::Text, None, 5));
        assert_eq!(&frame[n..], b"Hello");
        assert_round_trip(&frame[..2], h);
    }

    #[test]
    fn rfc_6455_section_5_7_masked_hello() {
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = decode_all(&frame);
        assert_eq!(
            h,
            header(true, OpCode::Text, Some([0x37, 0xfa, 0x21, 0x3d]), 5)
        );
        assert_eq!(n, 6);
        let mut payload = frame[n..].to_vec();
        crate::frame::mask::apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(payload, b"Hello");
        assert_round_trip(&frame[..6], h);
    }

    #[test]
    fn rfc_6455_section_5_7_fragmented_hello() {
        let first = [0x01, 0x03, 0x48, 0x65, 0x6c];
        let second = [0x80, 0x02, 0x6c, 0x6f];
        assert_eq!(
            decode_all(&first),
            (header(false, OpCode::Text, None, 3), 2)
        );
        assert_eq!(
            decode_all(&second),
            (header(true, OpCode::Continuation, None, 2), 2)
        );
    }

    #[test]
    fn rfc_6455_section_5_7_ping_and_masked_pong() {
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(decode_all(&ping), (header(true, OpCode::Ping, None, 5), 2));
        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            decode_all(&pong),
            (
                header(true, OpCode::Pong, Some([0x37, 0xfa, 0x21, 0x3d]), 5),
                6
            )
        );
    }

    #[test]
    fn rfc_6455_section_5_7_256_bytes_binary_uses_16_bit_length() {
        assert_round_trip(
            &[0x82, 0x7E, 0x01, 0x00],
            header(true, OpCode::Binary, None, 256),
        );
    }

    #[test]
    fn rfc_6455_section_5_7_64_kib_binary_uses_64_bit_length() {
        assert_round_trip(
            &[0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00],
            header(true, OpCode::Binary, None, 65536),
        );
    }

    #[test]
    fn length_form_boundaries_are_minimal() {
        for (len, form) in [
            (0u64, 2usize),
            (125, 2),
            (126, 4),
            (0xFFFF, 4),
            (0x1_0000, 10),
            (u64::MAX >> 1, 10),
        ] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let h = header(true, OpCode::Binary, mask, len);
                let extra = if mask.is_some() { 4 } else { 0 };
                assert_eq!(h.encoded_len(), form + extra, "{len}");
                let mut out = [0u8; MAX_HEADER_LEN];
                let n = h.encode(&mut out);
                assert_round_trip(&out[..n], h);
            }
        }
    }

    #[test]
    fn full_header_with_rsv_bits_and_mask_round_trips() {
        let h = FrameHeader {
            fin: false,
            rsv: 0b101,
            opcode: OpCode::Continuation,
            mask: Some([0xDE, 0xAD, 0xBE, 0xEF]),
            payload_len: 0x0123_4567_89AB_CDEF,
        };
        let mut out = [0u8; MAX_HEADER_LEN];
        assert_eq!(h.encode(&mut out), MAX_HEADER_LEN);
        assert_eq!(out[0], 0b0101_0000);
        assert_round_trip(&out, h);
    }

    #[test]
    fn sixty_four_bit_length_with_top_bit_set_is_invalid() {
        let bytes = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        // Reported as soon as the offending byte is present.
        assert_eq!(
            FrameHeader::decode(&bytes[..3]),
            Err(ProtocolError::InvalidLength)
        );
        assert_eq!(
            FrameHeader::decode(&bytes),
            Err(ProtocolError::InvalidLength)
        );
    }

    #[test]
    fn reserved_opcodes_fail_on_the_first_byte() {
        for op in (3u8..=7).chain(11..=15) {
            assert_eq!(
                FrameHeader::decode(&[0x80 | op]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn non_minimal_length_forms_are_accepted() {
        // §5.2 requires senders to use the minimal form; receivers decode what they get.
        assert_eq!(
            decode_all(&[0x82, 0x7E, 0x00, 0x05]),
            (header(true, OpCode::Binary, None, 5), 4)
        );
    }
}
