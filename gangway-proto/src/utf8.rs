//! Incremental, fail-fast UTF-8 validation across frame and fragment boundaries (RFC 6455 §8.1).

/// Validates a text message as it arrives, a piece at a time.
///
/// [`Utf8Validator::feed`] fails as soon as the bytes seen so far cannot be the start of valid
/// UTF-8, even in the middle of a frame; [`Utf8Validator::finish`] fails if the message ends inside
/// a code point.
#[derive(Clone, Debug, Default)]
pub struct Utf8Validator {
    // Bytes of an incomplete code point carried over from the previous piece.
    _pending: [u8; 4],
    _pending_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validate the next piece. `Err(())` as soon as the text can no longer be valid.
    #[allow(clippy::result_unit_err)]
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let _ = bytes;
        todo!("utf8 feed")
    }

    /// The message ended: `Err(())` if it ended inside a code point. Resets for the next message.
    #[allow(clippy::result_unit_err)]
    pub fn finish(&mut self) -> Result<(), ()> {
        todo!("utf8 finish")
    }

    /// Forget any partial code point, ready for a new message.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}
