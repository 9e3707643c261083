//! What a connection sends, taken whole and checked frame by frame (RFC 6455 §5, RFC 7692 §6);
//! compressed messages are inflated with a plain zlib stream of the reader's own, not gangway's
//! codec.

use std::collections::VecDeque;

use flate2::{Decompress, FlushDecompress, Status};
use gangway_proto::frame::mask::apply_mask_scalar;
use gangway_proto::frame::FrameHeader;
use gangway_proto::{CloseFrame, Connection, DataKind, OpCode, Role};

/// The end of a sync flush, removed from every compressed message (RFC 7692 §7.2.1).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// RSV1, permessage-deflate's "Per-Message Compressed" bit, in [`FrameHeader::rsv`].
pub const RSV1: u8 = 0b100;

/// A message read from the wire: its kind and bytes (inflated if it was compressed), and
/// whether it was compressed.
pub type WireMessage = (DataKind, Vec<u8>, bool);

/// A frame read from the wire, its payload unmasked.
#[derive(Debug)]
pub struct OutFrame {
    /// Its opcode.
    pub opcode: OpCode,
    /// Its payload, as sent (compressed if it was).
    pub payload: Vec<u8>,
}

/// Parses and checks everything one connection sends, across calls.
pub struct OutputReader {
    role: Role,
    /// With permessage-deflate: the window (bits) and context takeover the sender compresses
    /// with. Without, every RSV bit must be clear.
    compression: Option<(u8, bool)>,
    /// The inflate state for messages with context takeover.
    inflate: Option<Decompress>,
    /// The data message being read: kind, payload so far, compressed.
    message: Option<WireMessage>,
    /// Data messages read whole, in order.
    pub messages: VecDeque<WireMessage>,
    /// Pong payloads, in order.
    pub pongs: Vec<Vec<u8>>,
    /// Our close frame, once sent.
    pub close: Option<Option<CloseFrame>>,
}

impl OutputReader {
    /// A reader for what `role` sends; `compression`: the window (bits) and context takeover
    /// it compresses with, when it negotiated permessage-deflate.
    pub fn new(role: Role, compression: Option<(u8, bool)>) -> OutputReader {
        OutputReader {
            role,
            compression,
            inflate: None,
            message: None,
            messages: VecDeque::new(),
            pongs: Vec::new(),
            close: None,
        }
    }

    /// Whether our close frame was sent.
    pub fn closed(&self) -> bool {
        self.close.is_some()
    }

    /// Read everything `conn` has to send.
    pub fn drain(&mut self, conn: &mut Connection) -> Vec<OutFrame> {
        self.read(&take_output(conn))
    }

    /// Parse `output`, which must be whole frames, check each, and return them.
    pub fn read(&mut self, mut output: &[u8]) -> Vec<OutFrame> {
        let mut frames = Vec::new();
        while !output.is_empty() {
            // RFC 6455 §5.5.1: nothing is sent after the close frame.
            assert!(!self.closed(), "output after our close frame: {output:x?}");
            let (header, len) = FrameHeader::decode(output)
                .expect("our frame header decodes")
                .expect("our output ends inside a frame header");
            assert_eq!(len, header.encoded_len(), "length not in minimal form");
            // §5.3: a client masks every frame; a server never does.
            assert_eq!(
                header.mask.is_some(),
                self.role == Role::Client,
                "{header:?}"
            );
            let allowed_rsv = if self.compression.is_some() { RSV1 } else { 0 };
            assert_eq!(header.rsv & !allowed_rsv, 0, "RSV bits in {header:?}");
            let payload_len = usize::try_from(header.payload_len).expect("payload fits");
            let mut payload = output
                .get(len..len + payload_len)
                .expect("our output ends inside a payload")
                .to_vec();
            output = &output[len + payload_len..];
            if let Some(key) = header.mask {
                apply_mask_scalar(&mut payload, key, 0);
            }
            let compressed = header.rsv & RSV1 != 0;
            if header.opcode.is_control() {
                assert!(
                    header.fin && payload.len() <= 125,
                    "control frame {header:?}"
                );
                // RFC 7692 §6: control frames are never compressed.
                assert!(!compressed, "RSV1 on a control frame");
            }
            match header.opcode {
                OpCode::Text | OpCode::Binary => {
                    assert!(
                        self.message.is_none(),
                        "new message inside a fragmented one"
                    );
                    let kind = if header.opcode == OpCode::Text {
                        DataKind::Text
                    } else {
                        DataKind::Binary
                    };
                    self.message = Some((kind, payload.clone(), compressed));
                }
                OpCode::Continuation => {
                    // RFC 7692 §6: RSV1 is on the first frame only.
                    assert!(!compressed, "RSV1 on a continuation frame");
                    let message = self.message.as_mut().expect("continuation of nothing");
                    message.1.extend_from_slice(&payload);
                }
                OpCode::Close => {
                    let close = CloseFrame::parse(&payload).expect("our close frame parses");
                    assert!(close.as_ref().is_none_or(|c| c.code.is_sendable()));
                    self.close = Some(close);
                    self.message = None;
                }
                OpCode::Pong => self.pongs.push(payload.clone()),
                OpCode::Ping => {}
            }
            if header.fin && !header.opcode.is_control() {
                let (kind, payload, compressed) = self.message.take().expect("just set");
                let data = if compressed {
                    self.inflate(&payload)
                } else {
                    payload
                };
                if kind == DataKind::Text {
                    // RFC 6455 §8.1: text messages we send are UTF-8.
                    assert!(std::str::from_utf8(&data).is_ok(), "text we sent");
                }
                self.messages.push_back((kind, data, compressed));
            }
            frames.push(OutFrame {
                opcode: header.opcode,
                payload,
            });
        }
        frames
    }

    /// Inflate one compressed message: a fresh stream for each without context takeover, so a
    /// message that refers back to an earlier one fails here; with the agreed window, so one
    /// that refers back further than it (past what the stream holds) fails too.
    fn inflate(&mut self, payload: &[u8]) -> Vec<u8> {
        let (bits, takeover) = self
            .compression
            .expect("RSV1 is allowed only with permessage-deflate");
        // zlib cannot compress raw DEFLATE with an 8-bit window (RFC 7692 §7.1.2 allows it):
        // such a direction must send its messages uncompressed.
        assert!(bits >= 9, "compressed with an 8-bit window");
        if !takeover {
            self.inflate = None;
        }
        let inflate = self
            .inflate
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, bits));
        let mut input = [payload, &TAIL[..]].concat();
        let mut out = Vec::with_capacity(payload.len() * 4 + 64);
        let mut ended = false;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            }
            let before = inflate.total_in();
            let status = inflate
                .decompress_vec(&input, &mut out, FlushDecompress::Sync)
                .unwrap_or_else(|e| panic!("our compressed message does not inflate: {e}"));
            let used = usize::try_from(inflate.total_in() - before).expect("fits");
            input.drain(..used);
            if status == Status::StreamEnd {
                // A BFINAL block (which gangway never sends): whatever follows is not ours.
                ended = true;
                break;
            }
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        assert!(!ended, "our compressed message ends the DEFLATE stream");
        out
    }
}

/// Everything `conn` has to send (the output may be in parts: payloads queued without a copy).
pub fn take_output(conn: &mut Connection) -> Vec<u8> {
    let mut output = Vec::new();
    while !conn.output().is_empty() {
        let part = conn.output();
        output.extend_from_slice(part);
        let n = part.len();
        conn.consume_output(n);
    }
    assert_eq!(conn.output_len(), 0, "output left after output() was empty");
    output
}
