//! Frame opcodes (RFC 6455 §5.2, §11.8).

use crate::error::ProtocolError;

/// A frame opcode. Reserved values never make an `OpCode`: decoding them is a
/// [`ProtocolError::ReservedOpcode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    // The wire values as discriminants: `as_u8` is a cast, `is_control` one comparison.
    /// 0x0: continues a fragmented message.
    Continuation = 0x0,
    /// 0x1: first frame of a text message.
    Text = 0x1,
    /// 0x2: first frame of a binary message.
    Binary = 0x2,
    /// 0x8: close.
    Close = 0x8,
    /// 0x9: ping.
    Ping = 0x9,
    /// 0xA: pong.
    Pong = 0xA,
}

impl OpCode {
    /// Parse the 4-bit opcode field.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::ReservedOpcode`] for 0x3–0x7 and 0xB–0xF.
    #[inline]
    pub fn from_u8(v: u8) -> Result<OpCode, ProtocolError> {
        Ok(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    /// The 4-bit wire value.
    #[inline]
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Close, ping and pong are control frames (§5.5): the opcodes from 0x8.
    #[inline]
    pub fn is_control(self) -> bool {
        self as u8 >= 0x8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nibble_is_an_opcode_or_reserved() {
        for v in 0u8..16 {
            match OpCode::from_u8(v) {
                Ok(op) => assert_eq!(op.as_u8(), v),
                Err(e) => {
                    assert!((3..=7).contains(&v) || v >= 0xB, "{v}");
                    assert_eq!(e, ProtocolError::ReservedOpcode(v));
                }
            }
        }
    }
}
