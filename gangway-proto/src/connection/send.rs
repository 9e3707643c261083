//! Sending: the application's commands, and the framing and masking of everything queued,
//! automatic answers included.

use bytes::Bytes;

use super::state::Phase;
use super::{Connection, MAX_CLOSE_REASON, MAX_CONTROL_PAYLOAD};
use crate::error::ApiMisuse;
use crate::frame::mask::apply_mask;
use crate::frame::{CloseCode, FrameHeader, OpCode};
use crate::message::{to_u64, DataKind};
use crate::prepared::{Encoding, Prepared};
use crate::text::Utf8Bytes;
use crate::utf8::Utf8Validator;

/// The smallest payload that [`Connection::send_binary_shared`] queues without copying: below it,
/// a copy into the output buffer costs less than one more part in a vectored write (measured
/// with pipelined 1 KiB echoes: a `writev` of many small parts costs the kernel more than the
/// copy saves).
pub(super) const SHARED_MIN_LEN: usize = 16 * 1024;

/// Commands.
impl Connection {
    /// Queue a text message.
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::AlreadyClosing`] once the connection is not open (our close frame went, the
    /// peer's close was handed out, the connection failed or ended), [`ApiMisuse::FragmentOrder`]
    /// inside a fragmented message.
    #[inline]
    pub fn send_text(&mut self, text: &str) -> Result<(), ApiMisuse> {
        self.check_can_send_message()?;
        self.write_whole(OpCode::Text, text.as_bytes());
        Ok(())
    }

    /// Queue a binary message.
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text).
    #[inline]
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), ApiMisuse> {
        self.check_can_send_message()?;
        self.write_whole(OpCode::Binary, data);
        Ok(())
    }

    /// Queue a binary message without copying its payload, where it can go out as it is: a
    /// server's frame is not masked, so without permessage-deflate a payload of at least 16 KiB
    /// that is not split into several frames is written to the transport from `data` itself (see
    /// [`output_parts`](Self::output_parts)), and `data` is dropped once written. Anything else is
    /// copied, as [`send_binary`](Self::send_binary) does. An echo server hands back a received
    /// message this way, without a copy either way.
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text).
    #[inline]
    pub fn send_binary_shared(&mut self, data: Bytes) -> Result<(), ApiMisuse> {
        self.check_can_send_message()?;
        self.write_message_shared(OpCode::Binary, data);
        Ok(())
    }

    /// [`send_binary_shared`](Self::send_binary_shared) for text.
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text).
    #[inline]
    pub fn send_text_shared(&mut self, text: Utf8Bytes) -> Result<(), ApiMisuse> {
        self.check_can_send_message()?;
        self.write_message_shared(OpCode::Text, text.into_bytes());
        Ok(())
    }

    /// Queue messages framed once for many connections (see [`prepared`](crate::prepared)): a
    /// server queues the frames as they are, shared (a reference count, no copy), written with
    /// the rest of the output (see [`output_parts`](Self::output_parts)). A connection that
    /// cannot send them as they are (a client, whose frames are masked; a
    /// [`max_send_frame_size`](crate::Config::max_send_frame_size) below one of the messages)
    /// frames each message again, as [`send_text`](Self::send_text) and
    /// [`send_binary`](Self::send_binary) would.
    ///
    /// With permessage-deflate the messages go out as they were prepared: uncompressed (RSV1
    /// clear, which RFC 7692 §6 lets a sender choose for any message), or compressed for this
    /// connection's [`prepared_encoding`](Self::prepared_encoding).
    ///
    /// # Errors
    ///
    /// As [`send_text`](Self::send_text), and [`ApiMisuse::CompressionMismatch`] for messages
    /// compressed for another encoding; nothing is queued then.
    pub fn send_prepared(&mut self, prepared: &Prepared) -> Result<(), ApiMisuse> {
        self.check_can_send_message()?;
        #[cfg(feature = "deflate")]
        if let Some(compression) = prepared.compression() {
            self.check_compression(compression)?;
        }
        if self.rng.is_some() || prepared.max_payload() > self.config.max_send_frame_size {
            for frame in prepared.payloads() {
                if frame.rsv == 0 {
                    self.write_message(frame.opcode, frame.payload, true);
                } else {
                    // Compressed for this connection's parameters already (checked above).
                    self.write_frames(frame.opcode, frame.rsv, frame.payload, true);
                }
            }
        } else if !prepared.is_empty() {
            // Whole frames, shared as they are: nothing is framed or copied here.
            if self.output.is_empty() {
                self.timers.output_started();
            }
            self.output.push_shared(prepared.frames().clone());
        }
        Ok(())
    }

    /// How this connection sends messages prepared for many: the [`Encoding`] whose frames
    /// [`send_prepared`](Self::send_prepared) queues as they are. [`Encoding::PLAIN`] without
    /// permessage-deflate, and when this connection compresses with context takeover (or not
    /// at all: an 8-bit window); a compressed encoding when it compresses each message on its
    /// own (see [`prepared`](crate::prepared)).
    pub fn prepared_encoding(&self) -> Encoding {
        #[cfg(feature = "deflate")]
        if let Some(deflate) = self.deflate.as_deref() {
            if let Some(compression) = deflate.compressor.stateless() {
                return Encoding::compressed(compression, deflate.threshold());
            }
        }
        Encoding::PLAIN
    }

    /// Queue one fragment of a message: the first call's `kind` starts it, later calls continue
    /// it (their `kind` must match), `fin` ends it. Control frames may be sent between fragments.
    ///
    /// A rejected fragment is not sent and leaves the message in progress as it was.
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::FragmentOrder`] for a kind that differs from the message in progress,
    /// [`ApiMisuse::InvalidUtf8`] when text fragments stop being UTF-8,
    /// [`ApiMisuse::AlreadyClosing`] once the connection is not open.
    pub fn send_fragment(
        &mut self,
        kind: DataKind,
        data: &[u8],
        fin: bool,
    ) -> Result<(), ApiMisuse> {
        self.check_can_send_data()?;
        let opcode = match self.sending {
            None => match kind {
                DataKind::Text => OpCode::Text,
                DataKind::Binary => OpCode::Binary,
            },
            Some(current) if current == kind => OpCode::Continuation,
            Some(_) => return Err(ApiMisuse::FragmentOrder),
        };
        if kind == DataKind::Text {
            // §8.1: text is UTF-8 as a whole message; a code point may straddle fragments.
            // Work on a copy so a rejected fragment leaves the state untouched.
            let mut utf8 = if self.sending.is_some() {
                self.sending_utf8.clone()
            } else {
                Utf8Validator::new()
            };
            utf8.feed(data).map_err(|()| ApiMisuse::InvalidUtf8)?;
            if fin {
                utf8.finish().map_err(|()| ApiMisuse::InvalidUtf8)?;
            }
            self.sending_utf8 = utf8;
        }
        self.write_message(opcode, data, fin);
        self.sending = if fin { None } else { Some(kind) };
        Ok(())
    }

    /// Queue a ping.
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::ControlPayloadTooLong`] over 125 bytes, [`ApiMisuse::AlreadyClosing`].
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), ApiMisuse> {
        self.send_control(OpCode::Ping, payload)?;
        self.awaiting_pong = true;
        Ok(())
    }

    /// Queue an unsolicited pong (pings are answered automatically).
    ///
    /// # Errors
    ///
    /// As [`send_ping`](Self::send_ping).
    pub fn send_pong(&mut self, payload: &[u8]) -> Result<(), ApiMisuse> {
        self.send_control(OpCode::Pong, payload)
    }

    /// Start the close handshake (the peer's close is answered automatically).
    ///
    /// A fragmented message we were sending is abandoned: nothing may follow the close frame.
    /// The close handshake's deadline ([`Config::close_timeout`](crate::Config::close_timeout))
    /// starts from the next time given.
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::InvalidCloseCode`] for a code that may not be sent,
    /// [`ApiMisuse::ControlPayloadTooLong`] for a reason over 123 bytes,
    /// [`ApiMisuse::AlreadyClosing`] once the connection is not open.
    pub fn send_close(&mut self, code: CloseCode, reason: &str) -> Result<(), ApiMisuse> {
        if !self.phase.is_open() {
            return Err(ApiMisuse::AlreadyClosing);
        }
        if !code.is_sendable() {
            return Err(ApiMisuse::InvalidCloseCode(code.0));
        }
        if reason.len() > MAX_CLOSE_REASON {
            return Err(ApiMisuse::ControlPayloadTooLong);
        }
        self.write_close(Some((code, reason)));
        self.enter(Phase::CloseSent);
        Ok(())
    }
}

/// Framing, masking, and what may be sent when.
impl Connection {
    /// A whole message may be sent now: not once closing, not inside a fragmented one.
    #[inline]
    pub(super) fn check_can_send_message(&self) -> Result<(), ApiMisuse> {
        self.check_can_send_data()?;
        if self.sending.is_some() {
            return Err(ApiMisuse::FragmentOrder);
        }
        Ok(())
    }

    /// §5.5.1: nothing is sent after our close frame (ours, an answer to the peer's, or the one
    /// that fails the connection).
    #[inline]
    fn check_can_send_data(&self) -> Result<(), ApiMisuse> {
        if self.phase.is_open() {
            Ok(())
        } else {
            Err(ApiMisuse::AlreadyClosing)
        }
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), ApiMisuse> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(ApiMisuse::ControlPayloadTooLong);
        }
        self.check_can_send_data()?;
        self.write_frame(true, opcode, payload);
        Ok(())
    }

    /// Queue what `write` writes as an automatic answer (a pong, a close frame), counted until
    /// the output drains (see [`input_paused`](Self::input_paused)).
    pub(super) fn answer(&mut self, write: impl FnOnce(&mut Self)) {
        let before = self.output.len();
        write(self);
        let added = u32::try_from(self.output.len().saturating_sub(before)).unwrap_or(u32::MAX);
        self.unsent_answers = self.unsent_answers.saturating_add(added);
    }

    /// Queue a close frame (`None`: without a status code) and stop sending: a fragmented
    /// message in progress is abandoned. The caller moves the phase on.
    pub(super) fn write_close(&mut self, close: Option<(CloseCode, &str)>) {
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        let len = match close {
            None => 0,
            Some((code, reason)) => {
                let reason = super::truncate_at_char(reason, MAX_CLOSE_REASON);
                payload[..2].copy_from_slice(&code.0.to_be_bytes());
                payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
                2 + reason.len()
            }
        };
        self.write_frame(true, OpCode::Close, &payload[..len]);
        self.sending = None;
    }

    /// Queue a data message or fragment (compressed when permessage-deflate is in use and the
    /// message qualifies), split into frames of at most `max_send_frame_size`.
    #[inline]
    fn write_message(&mut self, opcode: OpCode, data: &[u8], fin: bool) {
        #[cfg(feature = "deflate")]
        if self.deflate.is_some() {
            if let Some((compressed, rsv)) = self.compress_outgoing(opcode, data, fin) {
                self.write_frames(opcode, rsv, &compressed, fin);
                return;
            }
        }
        if data.len() <= self.config.max_send_frame_size {
            // The usual message: one frame.
            self.write_frame_rsv(fin, 0, opcode, data);
        } else {
            self.write_frames(opcode, 0, data, fin);
        }
    }

    /// Whether a whole message of `len` bytes is the usual one, a server's small message that is
    /// one frame and not compressed: copied behind its header in place (`write_frame_rsv`'s first
    /// branch), with nothing else to decide.
    #[inline(always)]
    fn written_in_place(&self, len: usize) -> bool {
        #[cfg(feature = "deflate")]
        let compressing = self.deflate.is_some();
        #[cfg(not(feature = "deflate"))]
        let compressing = false;
        len < SHARED_MIN_LEN
            && !compressing
            && self.rng.is_none()
            && len <= self.config.max_send_frame_size
    }

    /// [`write_message`](Self::write_message) for a whole message, the usual one written in
    /// place here (see [`written_in_place`](Self::written_in_place)).
    #[inline(always)]
    fn write_whole(&mut self, opcode: OpCode, data: &[u8]) {
        if self.written_in_place(data.len()) {
            self.write_frame_rsv(true, 0, opcode, data);
            return;
        }
        self.write_message(opcode, data, true);
    }

    /// [`write_message`](Self::write_message) for a payload that may be queued without a copy
    /// (see [`send_binary_shared`](Self::send_binary_shared)). With permessage-deflate every
    /// message takes the copying path, which decides whether to compress it.
    #[inline(always)]
    fn write_message_shared(&mut self, opcode: OpCode, data: Bytes) {
        if self.written_in_place(data.len()) {
            self.write_frame_rsv(true, 0, opcode, &data);
            return;
        }
        self.write_message_shared_slow(opcode, data);
    }

    /// [`write_message_shared`](Self::write_message_shared) for everything but a server's small
    /// message.
    #[inline(never)]
    fn write_message_shared_slow(&mut self, opcode: OpCode, data: Bytes) {
        #[cfg(feature = "deflate")]
        let compressing = self.deflate.is_some();
        #[cfg(not(feature = "deflate"))]
        let compressing = false;
        if compressing {
            // The copying path decides whether to compress.
            self.write_message(opcode, &data, true);
            return;
        }
        self.write_whole_shared(opcode, 0, data);
    }

    /// Queue a whole message's payload as it is, `rsv` on its first frame: without a copy where
    /// it can go out from `data` itself (see [`send_binary_shared`](Self::send_binary_shared)).
    pub(super) fn write_whole_shared(&mut self, opcode: OpCode, rsv: u8, data: Bytes) {
        if data.len() > self.config.max_send_frame_size {
            // Split into frames.
            self.write_frames(opcode, rsv, &data, true);
            return;
        }
        if data.len() < SHARED_MIN_LEN || self.rng.is_some() {
            // Copied: small, or to be masked (a client's).
            self.write_frame_rsv(true, rsv, opcode, &data);
            return;
        }
        self.begin_frame(0);
        self.output.push_header(&FrameHeader {
            fin: true,
            rsv,
            opcode,
            mask: None,
            payload_len: to_u64(data.len()),
        });
        self.output.push_shared(data);
    }

    /// Queue `data` as frames of at most `max_send_frame_size`, `rsv` on the first only.
    fn write_frames(&mut self, opcode: OpCode, rsv: u8, data: &[u8], fin: bool) {
        let max = self.config.max_send_frame_size.max(1);
        let mut opcode = opcode;
        let mut rsv = rsv;
        let mut rest = data;
        loop {
            let (chunk, tail) = rest.split_at(rest.len().min(max));
            self.write_frame_rsv(fin && tail.is_empty(), rsv, opcode, chunk);
            rsv = 0;
            if tail.is_empty() {
                return;
            }
            opcode = OpCode::Continuation;
            rest = tail;
        }
    }

    /// Queue one frame without RSV bits (control frames, and data without an extension).
    pub(super) fn write_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        self.write_frame_rsv(fin, 0, opcode, payload);
    }

    /// Queue one frame: header, then the payload copied once and masked in place.
    #[inline(always)]
    fn write_frame_rsv(&mut self, fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) {
        if payload.len() <= 0xFFFF && self.rng.is_none() {
            // A server's frame of up to 64 KiB, the most common: its two or four header bytes
            // and the payload, written in place.
            self.begin_frame(payload.len());
            let b0 = u8::from(fin) << 7 | (rsv & 0b111) << 4 | opcode.as_u8();
            self.output.push_server_frame(b0, payload);
            return;
        }
        self.write_frame_with_header(fin, rsv, opcode, payload);
    }

    /// [`write_frame_rsv`](Self::write_frame_rsv) for a frame with a longer header: a server's
    /// larger frame, or any client frame (masked with a fresh key, §5.3).
    #[inline(never)]
    fn write_frame_with_header(&mut self, fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) {
        self.begin_frame(payload.len());
        let mask = self.rng.as_mut().map(|rng| {
            let mut key = [0u8; 4];
            rng.fill(&mut key);
            key
        });
        let start = self.output.push_header(&FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: to_u64(payload.len()),
        });
        self.output.push(payload);
        if let Some(key) = mask {
            apply_mask(self.output.tail_mut(start), key, 0);
        }
    }

    /// Before a frame is appended to the output: the write timeout counts from when output
    /// starts waiting, and room is reserved for a header and `payload_len` bytes.
    #[inline(always)]
    fn begin_frame(&mut self, payload_len: usize) {
        if self.output.is_empty() {
            self.timers.output_started();
        }
        self.output.reserve_frame(payload_len);
    }
}
