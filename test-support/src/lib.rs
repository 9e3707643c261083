//! WebSocket frames for tests, in one place: frames as a peer writes them (any first byte, any
//! mask, a hostile announced length), and a reader for the frames an endpoint writes. Every
//! crate's tests (the core's, the tokio layer's, the CLI's, the conformance suite, the
//! benchmarks) build their raw frames here, as RFC 6455 §5.2 lays them out, independently of the
//! code under test.
//!
//! ```
//! use gangway_test_support::{masked, parse_frames, Frame, KEY};
//!
//! // A client's "Hello" (RFC 6455 §5.7, with its masking key).
//! let hello = masked(0x1, b"Hello");
//! assert_eq!(hello, [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
//! let frames = parse_frames(&hello);
//! assert_eq!(frames[0].payload, b"Hello");
//! assert_eq!(frames[0].mask, Some(KEY));
//! // A first fragment with RSV1 set, unmasked.
//! let bytes = Frame::new(0x2, b"part").fin(false).rsv(0b100).encode();
//! assert_eq!(bytes[0], 0x42);
//! ```

/// The masking key of RFC 6455 §5.7's examples, used wherever a test needs a fixed key.
pub const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Opcodes (RFC 6455 §5.2).
pub mod opcode {
    /// Continuation frame.
    pub const CONTINUATION: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xA;
}

/// A frame to write: any FIN, RSV bits and opcode (reserved ones included), masked or not, with
/// its payload length in the shortest form or announced in the 64-bit form. The payload is owned
/// (`Vec<u8>`, the default) or borrowed (`&[u8]`, for large payloads encoded without a copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<P = Vec<u8>> {
    /// FIN.
    pub fin: bool,
    /// RSV1, RSV2, RSV3 in the low three bits (RSV1 = 0b100).
    pub rsv: u8,
    /// The opcode (four bits).
    pub opcode: u8,
    /// The masking key, if masked.
    pub mask: Option<[u8; 4]>,
    /// The payload, unmasked.
    pub payload: P,
    /// A length to announce in the 64-bit form instead of the payload's own, in the shortest
    /// form.
    pub announce: Option<u64>,
}

impl Frame {
    /// A final, unmasked frame of `opcode` carrying (a copy of) `payload`.
    pub fn new(opcode: u8, payload: &[u8]) -> Frame {
        Frame::of(opcode, payload.to_vec())
    }

    /// A frame whose first byte (FIN, RSV, opcode) is `first`, unmasked.
    pub fn from_first_byte(first: u8, payload: &[u8]) -> Frame {
        Frame::new(first & 0x0F, payload)
            .fin(first & 0x80 != 0)
            .rsv((first >> 4) & 0b111)
    }
}

impl<P: AsRef<[u8]>> Frame<P> {
    /// A final, unmasked frame of `opcode` carrying `payload` as it is (owned or borrowed).
    pub fn of(opcode: u8, payload: P) -> Frame<P> {
        Frame {
            fin: true,
            rsv: 0,
            opcode: opcode & 0x0F,
            mask: None,
            payload,
            announce: None,
        }
    }

    /// The same frame with FIN as given.
    pub fn fin(mut self, fin: bool) -> Self {
        self.fin = fin;
        self
    }

    /// The same frame with the RSV bits as given (low three bits).
    pub fn rsv(mut self, rsv: u8) -> Self {
        self.rsv = rsv & 0b111;
        self
    }

    /// The same frame masked with `key` (`None`: unmasked).
    pub fn mask(mut self, key: Option<[u8; 4]>) -> Self {
        self.mask = key;
        self
    }

    /// The same frame with a header announcing `len` payload bytes in the 64-bit form, whatever
    /// the payload really is.
    pub fn announce(mut self, len: u64) -> Self {
        self.announce = Some(len);
        self
    }

    /// The header's length (the payload starts there).
    pub fn header_len(&self) -> usize {
        let len_bytes = match (self.announce, self.payload.as_ref().len()) {
            (Some(_), _) => 8,
            (None, 0..=125) => 0,
            (None, 126..=0xFFFF) => 2,
            (None, _) => 8,
        };
        2 + len_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Append the frame's bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.fin) << 7 | (self.rsv & 0b111) << 4 | (self.opcode & 0x0F));
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let payload = self.payload.as_ref();
        let len = payload.len();
        match self.announce {
            Some(n) => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&n.to_be_bytes());
            }
            // Cannot truncate: each arm is within the type.
            None if len <= 125 => out.push(mask_bit | len as u8),
            None if len <= 0xFFFF => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            None => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        match self.mask {
            Some(key) => {
                out.extend_from_slice(&key);
                let start = out.len();
                out.extend_from_slice(payload);
                apply_mask(&mut out[start..], key);
            }
            None => out.extend_from_slice(payload),
        }
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_len() + self.payload.as_ref().len());
        self.encode_into(&mut out);
        out
    }
}

/// A frame with first byte `first` (FIN, RSV, opcode) carrying `payload`, masked with `mask` if
/// any, length in the shortest form.
pub fn raw(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    Frame::from_first_byte(first, payload).mask(mask).encode()
}

/// A final frame of `opcode` as a client writes it: masked with [`KEY`].
pub fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    Frame::new(opcode, payload).mask(Some(KEY)).encode()
}

/// A final frame of `opcode` as a server writes it: unmasked.
pub fn unmasked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    Frame::new(opcode, payload).encode()
}

/// A header alone, with first byte `first`, announcing `len` payload bytes in the 64-bit form,
/// masked with [`KEY`] if `masked`: a peer announcing more than it sends.
pub fn header_announcing(first: u8, len: u64, masked: bool) -> Vec<u8> {
    let frame = Frame::from_first_byte(first, &[])
        .announce(len)
        .mask(masked.then_some(KEY));
    frame.encode()
}

/// A close frame's payload: the status code, then the reason.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    [&code.to_be_bytes()[..], reason].concat()
}

/// XOR `data` with `key` from the key's first byte (RFC 6455 §5.3), eight bytes at a time so that
/// megabytes stay cheap in debug builds.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // Whole 8-byte chunks keep the key aligned: the remainder starts at key[0].
    for (b, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *b ^= k;
    }
}

/// A frame as read from the wire, its payload unmasked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireFrame {
    /// FIN.
    pub fin: bool,
    /// RSV1, RSV2, RSV3 in the low three bits.
    pub rsv: u8,
    /// The opcode.
    pub opcode: u8,
    /// The masking key, if the frame was masked.
    pub mask: Option<[u8; 4]>,
    /// The payload, unmasked.
    pub payload: Vec<u8>,
}

impl WireFrame {
    /// A close frame's status code, if it has one.
    pub fn close_code(&self) -> Option<u16> {
        match self.payload[..] {
            [a, b, ..] => Some(u16::from_be_bytes([a, b])),
            _ => None,
        }
    }
}

/// The frame at the start of `bytes`, if it is all there, and its length on the wire.
pub fn parse_frame(bytes: &[u8]) -> Option<(WireFrame, usize)> {
    let (&b0, rest) = bytes.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    let (len, rest) = match b1 & 0x7F {
        126 => {
            let (ext, rest) = split(rest, 2)?;
            (u64::from(u16::from_be_bytes([ext[0], ext[1]])), rest)
        }
        127 => {
            let (ext, rest) = split(rest, 8)?;
            let mut be = [0u8; 8];
            be.copy_from_slice(ext);
            (u64::from_be_bytes(be), rest)
        }
        short => (u64::from(short), rest),
    };
    let (mask, rest) = if b1 & 0x80 != 0 {
        let (key, rest) = split(rest, 4)?;
        (Some([key[0], key[1], key[2], key[3]]), rest)
    } else {
        (None, rest)
    };
    let (payload, rest) = split(rest, usize::try_from(len).ok()?)?;
    let mut payload = payload.to_vec();
    if let Some(key) = mask {
        apply_mask(&mut payload, key);
    }
    let frame = WireFrame {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0b111,
        opcode: b0 & 0x0F,
        mask,
        payload,
    };
    Some((frame, bytes.len() - rest.len()))
}

/// Every frame in `bytes`.
///
/// # Panics
///
/// If `bytes` ends inside a frame: tests give it whole frames only.
pub fn parse_frames(mut bytes: &[u8]) -> Vec<WireFrame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let (frame, len) = parse_frame(bytes).expect("whole frames only");
        frames.push(frame);
        bytes = &bytes[len..];
    }
    frames
}

/// The opcodes of every frame in `bytes` (whole frames only).
pub fn opcodes(bytes: &[u8]) -> Vec<u8> {
    parse_frames(bytes).iter().map(|f| f.opcode).collect()
}

fn split(bytes: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (bytes.len() >= n).then(|| bytes.split_at(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_section_5_7_examples_encode_and_parse_back() {
        assert_eq!(unmasked(opcode::TEXT, b"Hello"), b"\x81\x05Hello");
        assert_eq!(
            raw(0x01, b"Hel", None),
            [0x01, 0x03, 0x48, 0x65, 0x6c],
            "a first fragment"
        );
        assert_eq!(unmasked(opcode::PING, b"Hello"), b"\x89\x05Hello");
        let long = vec![7u8; 256];
        assert_eq!(
            &unmasked(opcode::BINARY, &long)[..4],
            [0x82, 0x7E, 0x01, 0x00]
        );
        let longer = vec![7u8; 65536];
        assert_eq!(
            &unmasked(opcode::BINARY, &longer)[..10],
            [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        for bytes in [
            masked(opcode::TEXT, b"Hello"),
            unmasked(opcode::BINARY, &longer),
        ] {
            let (frame, len) = parse_frame(&bytes).unwrap();
            assert_eq!(len, bytes.len());
            assert!(frame.payload == b"Hello" || frame.payload == longer);
        }
    }

    #[test]
    fn announced_lengths_and_partial_frames() {
        let header = header_announcing(0x82, 1 << 62, true);
        assert_eq!(header.len(), 14);
        assert_eq!(header[1], 0xFF);
        assert_eq!(parse_frame(&header), None, "the payload never came");
        let frame = masked(opcode::CLOSE, &close_payload(1000, b"bye"));
        for cut in 0..frame.len() {
            assert_eq!(parse_frame(&frame[..cut]), None, "{cut}");
        }
        assert_eq!(parse_frames(&frame)[0].close_code(), Some(1000));
    }

    #[test]
    fn masking_twice_restores_the_payload_at_every_length() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut masked = data.clone();
            apply_mask(&mut masked, KEY);
            for (i, (m, d)) in masked.iter().zip(&data).enumerate() {
                assert_eq!(*m, d ^ KEY[i % 4]);
            }
            apply_mask(&mut masked, KEY);
            assert_eq!(masked, data);
        }
    }
}
