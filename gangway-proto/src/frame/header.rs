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
    /// # Errors
    ///
    /// [`ProtocolError::ReservedOpcode`] and [`ProtocolError::InvalidLength`] (64-bit length with
    /// the top bit set). Role- and state-dependent checks (masking, RSV, control-frame rules) are
    /// the connection's.
    pub fn decode(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let _ = buf;
        todo!("frame header decode")
    }

    /// The encoded length of this header (2 to 14 bytes).
    pub fn encoded_len(&self) -> usize {
        todo!("encoded_len")
    }

    /// Encode into `out` (at least [`MAX_HEADER_LEN`] bytes); returns the bytes written.
    /// The shortest length form is always used (§5.2: "the minimal number of bytes").
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let _ = out;
        todo!("frame header encode")
    }
}
