//! permessage-deflate in the connection (RFC 7692 §6): RSV1 marks a compressed message on its
//! first frame; data messages go through the codec, control frames never do.

use super::{Connection, RSV1};
use crate::error::{ApiMisuse, ProtocolError};
use crate::extensions::permessage_deflate::{
    CompressedMessage, DeflateParams, PerMessageDeflate, StatelessCompression,
};
use crate::frame::OpCode;
use crate::message::DataKind;

impl Connection {
    /// Use permessage-deflate with the agreed `params` and this connection's
    /// [`Config::deflate`](crate::Config::deflate) preferences.
    pub(crate) fn enable_deflate(&mut self, params: &DeflateParams) {
        let codec = PerMessageDeflate::new(self.role, params, &self.config.deflate);
        self.deflate = Some(Box::new(codec));
        // RFC 7692 §6: the extension gives RSV1 its meaning.
        self.allowed_rsv |= RSV1;
    }

    /// The agreed permessage-deflate parameters are in use (for the adapter's logs and tests).
    pub fn uses_deflate(&self) -> bool {
        self.deflate.is_some()
    }

    /// How this connection would compress a whole data message of `len` bytes sent now, if it
    /// compresses it on its own (without context takeover, RFC 7692 §7.1.1): the parameters that
    /// alone determine the compressed bytes. Connections with the same value send the same
    /// bytes for the same message, so a message sent to many is compressed once per distinct
    /// value ([`StatelessCompression::compress_text`], [`compress_binary`]) and queued on each
    /// with [`send_compressed`](Self::send_compressed); see [`StatelessCompression`] for an
    /// example.
    ///
    /// `None`: send the message as usual ([`send_text`](Self::send_text),
    /// [`send_binary_shared`](Self::send_binary_shared)...). It goes uncompressed (no
    /// permessage-deflate, under [`DeflateConfig::threshold`], an 8-bit window), or compressed
    /// with context takeover, by this connection's own compressor.
    ///
    /// [`compress_binary`]: StatelessCompression::compress_binary
    /// [`DeflateConfig::threshold`]: crate::extensions::permessage_deflate::DeflateConfig::threshold
    pub fn stateless_compression(&self, len: usize) -> Option<StatelessCompression> {
        self.deflate.as_deref()?.stateless_compression(len)
    }

    /// Queue a whole data message compressed already, as it is: its payload goes out with RSV1
    /// set on the first frame (split by [`Config::max_send_frame_size`](crate::Config) like
    /// any message), without a copy where a message of the same size would go without one (see
    /// [`send_binary_shared`](Self::send_binary_shared)).
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::CompressionMismatch`] unless this connection compresses without context
    /// takeover with the same parameters ([`stateless_compression`](Self::stateless_compression)
    /// for a message of any size from the threshold up); otherwise as
    /// [`send_text`](Self::send_text).
    pub fn send_compressed(&mut self, message: &CompressedMessage) -> Result<(), ApiMisuse> {
        self.check_can_send_message()?;
        self.check_compression(message.compression())?;
        let opcode = match message.kind() {
            DataKind::Text => OpCode::Text,
            DataKind::Binary => OpCode::Binary,
        };
        self.write_whole_shared(opcode, RSV1, message.payload().clone());
        Ok(())
    }

    /// A message compressed with `compression` may go out here: this connection compresses
    /// without context takeover with the same parameters.
    pub(super) fn check_compression(
        &self,
        compression: StatelessCompression,
    ) -> Result<(), ApiMisuse> {
        let ours = self
            .deflate
            .as_deref()
            .and_then(|d| d.compressor.stateless());
        if ours == Some(compression) {
            Ok(())
        } else {
            Err(ApiMisuse::CompressionMismatch)
        }
    }

    /// Inflate a piece of the compressed message being received.
    pub(super) fn inflate_piece(
        &mut self,
        piece: &[u8],
        mask: Option<[u8; 4]>,
        mask_offset: &mut usize,
    ) -> Result<(), ProtocolError> {
        // RSV1 is accepted only once the codec exists, so it is there.
        let Some(deflate) = self.deflate.as_deref_mut() else {
            return Err(ProtocolError::ReservedBits);
        };
        // A data frame's `start_frame` made the spill.
        let spill = self.spill.get_or_insert_with(Box::default);
        spill.message.push_compressed(
            piece,
            mask,
            mask_offset,
            &mut deflate.decompressor,
            self.config.max_message_size,
        )
    }

    /// The compressed message's last frame has arrived: inflate the tail its sender removed.
    pub(super) fn finish_inflating(&mut self) -> Result<(), ProtocolError> {
        let Some(deflate) = self.deflate.as_deref_mut() else {
            return Err(ProtocolError::ReservedBits);
        };
        let spill = self.spill.get_or_insert_with(Box::default);
        spill
            .message
            .finish_compressed(&mut deflate.decompressor, self.config.max_message_size)
    }

    /// Compress an outgoing data message or fragment if it should be: the payload to send and the
    /// RSV bits of its first frame, or `None` to send `data` as it is.
    ///
    /// A whole message is compressed from the threshold up; a fragmented one is compressed whole
    /// or not at all, as decided at its first fragment (RFC 7692 §6: RSV1 on the first frame
    /// covers the message), whatever its size.
    pub(super) fn compress_outgoing(
        &mut self,
        opcode: OpCode,
        data: &[u8],
        fin: bool,
    ) -> Option<(Vec<u8>, u8)> {
        let deflate = self.deflate.as_deref_mut()?;
        let first = opcode != OpCode::Continuation;
        if first {
            self.sending_compressed = if fin {
                deflate.should_compress(data.len())
            } else {
                deflate.compressor.can_compress()
            };
        }
        if !self.sending_compressed {
            return None;
        }
        let mut compressed = Vec::new();
        deflate.compressor.compress(data, fin, &mut compressed);
        if fin {
            self.sending_compressed = false;
        }
        Some((compressed, if first { RSV1 } else { 0 }))
    }
}

#[cfg(test)]
mod tests {
    //! In-memory client↔server tests with permessage-deflate, in the spirit of the Autobahn
    //! testsuite's sections 12 and 13: messages of many sizes under every parameter combination,
    //! and the frames a misbehaving peer could send.

    use gangway_test_support::WireFrame;

    use super::*;
    use crate::config::Config;
    use crate::connection::tests::pair::{drain, events, feed, take_output, to};
    use crate::extensions::permessage_deflate::{Compressor, DeflateConfig};
    use crate::frame::{CloseCode, FrameHeader};
    use crate::handshake::Negotiated;
    use crate::message::{DataKind, Event};
    use crate::random::SeededRandom;
    use crate::role::Role;
    use crate::State;

    fn config_with(deflate: DeflateConfig) -> Config {
        Config {
            deflate,
            ..Config::default()
        }
    }

    fn endpoint(role: Role, config: Config, params: Option<DeflateParams>) -> Connection {
        let mut conn = Connection::with_random(role, config, Box::new(SeededRandom::new(7)));
        if let Some(params) = params {
            conn.enable_deflate(&params);
        }
        conn
    }

    /// A client and a server that agreed on `params`, each with `deflate` preferences.
    fn pair(params: DeflateParams, deflate: &DeflateConfig) -> (Connection, Connection) {
        (
            endpoint(Role::Client, config_with(deflate.clone()), Some(params)),
            endpoint(Role::Server, config_with(deflate.clone()), Some(params)),
        )
    }

    /// Every frame in `bytes` (whole frames only).
    fn frames(bytes: &[u8]) -> Vec<WireFrame> {
        gangway_test_support::parse_frames(bytes)
    }

    /// The close code `conn` sent last.
    fn close_code(bytes: &[u8]) -> Option<u16> {
        let frame = frames(bytes).pop()?;
        (frame.opcode == OpCode::Close.as_u8()).then(|| frame.close_code())?
    }

    fn text_like(len: usize, seed: u32) -> String {
        const WORDS: [&str; 8] = [
            "gangway ",
            "frame ",
            "deflate ",
            "window ",
            "message ",
            "the ",
            "κόσμε ",
            "🦀 ",
        ];
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        let mut out = String::with_capacity(len + 8);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.push_str(WORDS[(x % 8) as usize]);
        }
        while out.len() > len {
            out.pop();
        }
        out
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Autobahn 12.x/13.x sizes: 16 B to 128 KiB.
    const SIZES: [usize; 9] = [16, 64, 256, 1024, 4096, 8192, 16384, 65536, 131072];

    #[test]
    fn echo_of_every_size_under_every_parameter_combination() {
        for snct in [false, true] {
            for cnct in [false, true] {
                for (smwb, cmwb) in [(15, 15), (9, 9), (12, 10), (8, 15), (15, 8)] {
                    let params = DeflateParams {
                        server_no_context_takeover: snct,
                        client_no_context_takeover: cnct,
                        server_max_window_bits: smwb,
                        client_max_window_bits: cmwb,
                    };
                    let (mut client, mut server) = pair(params, &DeflateConfig::default());
                    for (i, &size) in SIZES.iter().enumerate() {
                        let text = text_like(size, i as u32);
                        let binary = noise(size, i as u64);
                        client.send_text(&text).unwrap();
                        client.send_binary(&binary).unwrap();
                        let wire = take_output(&mut client);
                        let sent = frames(&wire);
                        // 8-bit windows are honoured by not compressing (zlib cannot).
                        // Under the threshold (32 bytes), uncompressed.
                        let compressed = cmwb > 8 && size >= 32;
                        assert_eq!(sent[0].rsv == RSV1, compressed, "{params:?} {size}");
                        feed(&mut server, &wire);
                        assert_eq!(
                            events(&mut server),
                            [
                                Event::Text(text.clone().into()),
                                Event::Binary(binary.clone().into())
                            ],
                            "{params:?} {size}"
                        );
                        // Echo back.
                        server.send_text(&text).unwrap();
                        server.send_binary(&binary).unwrap();
                        let wire = take_output(&mut server);
                        assert_eq!(frames(&wire)[0].rsv == RSV1, smwb > 8 && size >= 32);
                        feed(&mut client, &wire);
                        assert_eq!(
                            events(&mut client),
                            [Event::Text(text.into()), Event::Binary(binary.into())],
                            "{params:?} {size}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn shared_sends_are_compressed_like_copied_ones() {
        let text = text_like(5000, 1);
        let (_, mut copied) = pair(DeflateParams::default(), &DeflateConfig::default());
        let (mut client, mut shared) = pair(DeflateParams::default(), &DeflateConfig::default());
        for _ in 0..2 {
            copied.send_text(&text).unwrap();
            copied.send_binary(text.as_bytes()).unwrap();
            shared.send_text_shared(text.as_str().into()).unwrap();
            shared
                .send_binary_shared(bytes::Bytes::from(text.clone()))
                .unwrap();
        }
        // Compressed (the payload is not what goes out), in one part.
        assert!(shared.spill.is_none());
        let wire = take_output(&mut shared);
        assert_eq!(wire, take_output(&mut copied));
        assert!(wire.len() < text.len());
        feed(&mut client, &wire);
        assert_eq!(events(&mut client).len(), 4);
    }

    #[test]
    fn compressible_messages_cross_in_far_fewer_bytes() {
        let (mut client, mut server) = pair(DeflateParams::default(), &DeflateConfig::default());
        let text = text_like(1 << 20, 3);
        client.send_text(&text).unwrap();
        let wire = take_output(&mut client);
        assert!(
            wire.len() < text.len() / 4,
            "{} bytes on the wire",
            wire.len()
        );
        feed(&mut server, &wire);
        assert_eq!(events(&mut server), [Event::Text(text.into())]);
    }

    #[test]
    fn rfc_7692_7_2_3_1_and_2_frames_are_received() {
        // The RFC's unmasked frames (a server sends them), then the masked equivalent.
        let mut client = endpoint(
            Role::Client,
            Config::default(),
            Some(DeflateParams::default()),
        );
        feed(
            &mut client,
            &[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        );
        feed(&mut client, &[0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00]);
        // §7.2.3.1: fragmented.
        feed(
            &mut client,
            &[
                0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00,
            ],
        );
        assert_eq!(
            events(&mut client),
            [
                Event::Text("Hello".into()),
                Event::Text("Hello".into()),
                Event::Text("Hello".into())
            ]
        );
        let mut server = endpoint(
            Role::Server,
            Config::default(),
            Some(DeflateParams::default()),
        );
        feed(
            &mut server,
            &to(
                Role::Server,
                0xc1,
                &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            ),
        );
        assert_eq!(events(&mut server), [Event::Text("Hello".into())]);
    }

    #[test]
    fn sent_hello_twice_matches_rfc_7692_7_2_3_2() {
        let deflate = DeflateConfig {
            threshold: 0,
            ..DeflateConfig::default()
        };
        let (mut client, _) = pair(DeflateParams::default(), &deflate);
        client.send_text("Hello").unwrap();
        client.send_text("Hello").unwrap();
        let sent = frames(&take_output(&mut client));
        assert_eq!(sent[0].rsv, RSV1);
        assert_eq!(sent[0].payload, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(sent[1].payload, [0xf2, 0x00, 0x11, 0x00, 0x00]);
    }

    #[test]
    fn messages_under_the_threshold_go_uncompressed_and_both_kinds_are_received() {
        let (mut client, mut server) = pair(DeflateParams::default(), &DeflateConfig::default());
        let small = "x".repeat(31);
        let large = "x".repeat(32);
        client.send_text(&small).unwrap();
        client.send_text(&large).unwrap();
        let wire = take_output(&mut client);
        let sent = frames(&wire);
        assert_eq!(sent[0].rsv, 0, "31 bytes: uncompressed");
        assert_eq!(sent[0].payload, small.as_bytes());
        assert_eq!(sent[1].rsv, RSV1, "32 bytes: compressed");
        feed(&mut server, &wire);
        assert_eq!(
            events(&mut server),
            [Event::Text(small.into()), Event::Text(large.into())]
        );
    }

    #[test]
    fn control_frames_are_never_compressed() {
        let deflate = DeflateConfig {
            threshold: 0,
            ..DeflateConfig::default()
        };
        let (mut client, mut server) = pair(DeflateParams::default(), &deflate);
        client.send_ping(&[b'p'; 100]).unwrap();
        client.send_pong(b"pong").unwrap();
        client
            .send_close(CloseCode::NORMAL, &"r".repeat(100))
            .unwrap();
        let wire = take_output(&mut client);
        for frame in frames(&wire) {
            assert_eq!(frame.rsv, 0, "{:?}", frame.opcode);
        }
        feed(&mut server, &wire);
        // The automatic pong and close answer are not compressed either.
        events(&mut server);
        for frame in frames(&take_output(&mut server)) {
            assert_eq!(frame.rsv, 0, "{:?}", frame.opcode);
        }
    }

    #[test]
    fn fragments_are_compressed_as_one_message_with_rsv1_on_the_first_frame_only() {
        let (mut client, mut server) = pair(DeflateParams::default(), &DeflateConfig::default());
        let text = text_like(5000, 5);
        let (a, rest) = text.split_at(10);
        let (b, c) = rest.split_at(2000);
        client
            .send_fragment(DataKind::Text, a.as_bytes(), false)
            .unwrap();
        client.send_ping(b"between").unwrap();
        client
            .send_fragment(DataKind::Text, b.as_bytes(), false)
            .unwrap();
        client
            .send_fragment(DataKind::Text, c.as_bytes(), true)
            .unwrap();
        let wire = take_output(&mut client);
        let rsv: Vec<(OpCode, u8)> = frames(&wire)
            .iter()
            .map(|f| (OpCode::from_u8(f.opcode).unwrap(), f.rsv))
            .collect();
        assert_eq!(
            rsv,
            [
                (OpCode::Text, RSV1),
                (OpCode::Ping, 0),
                (OpCode::Continuation, 0),
                (OpCode::Continuation, 0)
            ]
        );
        feed(&mut server, &wire);
        assert_eq!(
            events(&mut server),
            [Event::Ping("between".into()), Event::Text(text.into())]
        );
    }

    #[test]
    fn compressed_messages_split_by_the_frame_size_limit_keep_rsv1_on_the_first_frame() {
        let mut config = config_with(DeflateConfig::default());
        config.max_send_frame_size = 100;
        let mut client = endpoint(Role::Client, config, Some(DeflateParams::default()));
        let mut server = endpoint(
            Role::Server,
            config_with(DeflateConfig::default()),
            Some(DeflateParams::default()),
        );
        let binary = noise(1000, 1);
        client.send_binary(&binary).unwrap();
        let wire = take_output(&mut client);
        let sent = frames(&wire);
        assert!(sent.len() > 10);
        assert_eq!(sent[0].rsv, RSV1);
        assert!(sent[1..]
            .iter()
            .all(|f| f.rsv == 0 && f.opcode == OpCode::Continuation.as_u8()));
        feed(&mut server, &wire);
        assert_eq!(events(&mut server), [Event::Binary(binary.into())]);
    }

    #[test]
    fn bytes_split_anywhere_inflate_the_same() {
        let (mut client, _) = pair(DeflateParams::default(), &DeflateConfig::default());
        let mut server = endpoint(
            Role::Server,
            Config::default(),
            Some(DeflateParams::default()),
        );
        let text = text_like(30_000, 8);
        client.send_text(&text).unwrap();
        client.send_text(&text).unwrap();
        let mut got = Vec::new();
        for (i, byte) in take_output(&mut client).iter().enumerate() {
            feed(&mut server, std::slice::from_ref(byte));
            match drain(&mut server) {
                (events, Ok(())) => got.extend(events),
                (_, Err(e)) => panic!("byte {i}: {e}"),
            }
        }
        assert_eq!(
            got,
            [Event::Text(text.clone().into()), Event::Text(text.into())]
        );
    }

    #[test]
    fn rsv1_on_a_continuation_frame_fails_with_1002() {
        let mut server = endpoint(
            Role::Server,
            Config::default(),
            Some(DeflateParams::default()),
        );
        let mut c = Compressor::new(15, 6, false);
        let mut payload = Vec::new();
        c.compress(b"Hello", true, &mut payload);
        let stream = [
            to(Role::Server, 0x41, &payload[..2]),
            to(Role::Server, 0xc0, &payload[2..]),
        ]
        .concat();
        feed(&mut server, &stream);
        assert_eq!(
            drain(&mut server).1,
            Err(ProtocolError::MisplacedCompressedBit)
        );
        assert_eq!(close_code(&take_output(&mut server)), Some(1002));
    }

    #[test]
    fn rsv1_on_a_control_frame_fails_with_1002() {
        for b0 in [0xc9, 0xca, 0xc8] {
            let mut client = endpoint(
                Role::Client,
                Config::default(),
                Some(DeflateParams::default()),
            );
            feed(&mut client, &to(Role::Client, b0, b""));
            assert_eq!(
                drain(&mut client).1,
                Err(ProtocolError::MisplacedCompressedBit),
                "{b0:#x}"
            );
            assert_eq!(close_code(&take_output(&mut client)), Some(1002));
        }
    }

    #[test]
    fn rsv2_and_rsv3_still_fail_with_deflate_on() {
        for b0 in [0xa1, 0x91, 0xe1] {
            let mut client = endpoint(
                Role::Client,
                Config::default(),
                Some(DeflateParams::default()),
            );
            feed(&mut client, &to(Role::Client, b0, b"x"));
            assert_eq!(
                drain(&mut client).1,
                Err(ProtocolError::ReservedBits),
                "{b0:#x}"
            );
            assert_eq!(close_code(&take_output(&mut client)), Some(1002));
        }
    }

    #[test]
    fn rsv1_without_deflate_is_a_reserved_bit() {
        let mut client = endpoint(Role::Client, Config::default(), None);
        feed(
            &mut client,
            &[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        );
        assert_eq!(drain(&mut client).1, Err(ProtocolError::ReservedBits));
    }

    #[test]
    fn deflate_bomb_fails_with_1009_at_the_limit() {
        let mut config = config_with(DeflateConfig::default());
        config.max_message_size = 1 << 20;
        let mut client = endpoint(Role::Client, config, Some(DeflateParams::default()));
        let mut bomb = Vec::new();
        Compressor::new(15, 9, false).compress(&vec![0; 10 << 20], true, &mut bomb);
        assert!(bomb.len() < 12_000);
        let frame = to(Role::Client, 0xc2, &bomb);
        let mut result = Ok(());
        for piece in frame.chunks(512) {
            feed(&mut client, piece);
            result = drain(&mut client).1;
            assert!(client.message_capacity() <= 1 << 20, "never past the limit");
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ProtocolError::MessageTooLarge));
        assert_eq!(close_code(&take_output(&mut client)), Some(1009));
        assert_eq!(client.message_capacity(), 0, "released with the failure");
    }

    #[test]
    fn compressed_text_is_delivered_in_valid_pieces_as_it_inflates() {
        let text = text_like(200_000, 5);
        let mut payload = Vec::new();
        Compressor::new(15, 6, false).compress(text.as_bytes(), true, &mut payload);
        let mut config = config_with(DeflateConfig::default());
        config.deliver_fragments = true;
        let mut client = endpoint(Role::Client, config, Some(DeflateParams::default()));
        let frame = to(Role::Client, 0xc1, &payload);
        let mut joined = String::new();
        let mut pieces = 0;
        let mut fins = 0;
        for chunk in frame.chunks(1000) {
            feed(&mut client, chunk);
            for event in events(&mut client) {
                let Event::Fragment { kind, data, fin } = event else {
                    panic!("{event:?}");
                };
                assert_eq!(kind, DataKind::Text);
                joined.push_str(std::str::from_utf8(&data).unwrap());
                pieces += 1;
                fins += usize::from(fin);
            }
            // Only the inflated bytes of this read, never the message so far.
            assert!(client.message_capacity() < 100_000);
        }
        assert_eq!(joined, text);
        assert_eq!(fins, 1);
        assert!(pieces > 1, "{pieces} pieces");
    }

    #[test]
    fn deflate_bomb_fails_with_1009_when_delivering_fragments() {
        let mut config = config_with(DeflateConfig::default());
        config.max_message_size = 1 << 20;
        config.deliver_fragments = true;
        let mut client = endpoint(Role::Client, config, Some(DeflateParams::default()));
        let mut bomb = Vec::new();
        Compressor::new(15, 9, false).compress(&vec![0; 10 << 20], true, &mut bomb);
        let frame = to(Role::Client, 0xc2, &bomb);
        let mut delivered = 0;
        let mut result = Ok(());
        for piece in frame.chunks(512) {
            feed(&mut client, piece);
            let (got, drained) = drain(&mut client);
            result = drained;
            for event in got {
                if let Event::Fragment { data, .. } = event {
                    delivered += data.len();
                }
            }
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ProtocolError::MessageTooLarge));
        assert!(delivered <= 1 << 20, "{delivered} bytes delivered");
    }

    #[test]
    fn message_limit_counts_inflated_bytes_and_allows_exactly_the_limit() {
        let text = text_like(10_000, 4);
        let mut payload = Vec::new();
        Compressor::new(15, 6, false).compress(text.as_bytes(), true, &mut payload);
        for (limit, ok) in [(10_000, true), (9_999, false)] {
            let mut config = config_with(DeflateConfig::default());
            config.max_message_size = limit;
            let mut client = endpoint(Role::Client, config, Some(DeflateParams::default()));
            feed(&mut client, &to(Role::Client, 0xc1, &payload));
            let (got, result) = drain(&mut client);
            if ok {
                assert_eq!(result, Ok(()));
                assert_eq!(got, [Event::Text(text.clone().into())]);
            } else {
                assert_eq!(result, Err(ProtocolError::MessageTooLarge));
            }
        }
    }

    #[test]
    fn incompressible_message_at_the_limit_is_accepted_though_its_frame_is_larger() {
        // Random bytes grow a little when deflated; the frame limit allows for it.
        let data = noise(1024, 9);
        let mut payload = Vec::new();
        Compressor::new(15, 6, false).compress(&data, true, &mut payload);
        assert!(payload.len() > data.len());
        let mut config = config_with(DeflateConfig::default());
        config.max_message_size = 1024;
        config.max_frame_size = 1024;
        let mut client = endpoint(Role::Client, config.clone(), Some(DeflateParams::default()));
        feed(&mut client, &to(Role::Client, 0xc2, &payload));
        assert_eq!(events(&mut client), [Event::Binary(data.into())]);
        // Far past the allowance is still refused from the header alone.
        let mut client = endpoint(Role::Client, config, Some(DeflateParams::default()));
        let huge = FrameHeader {
            fin: true,
            rsv: RSV1,
            opcode: OpCode::Binary,
            mask: None,
            payload_len: 4096,
        };
        let mut head = [0u8; crate::frame::MAX_HEADER_LEN];
        let n = huge.encode(&mut head);
        feed(&mut client, &head[..n]);
        assert_eq!(drain(&mut client).1, Err(ProtocolError::FrameTooLarge));
    }

    #[test]
    fn compressed_frames_get_the_documented_allowance_over_the_frame_limit_and_no_more() {
        // Config::max_frame_size: a compressed message's frame may exceed the limit by an
        // eighth plus 64 bytes; an uncompressed one may not, nor a compressed one by a byte more.
        let mut config = config_with(DeflateConfig::default());
        config.max_frame_size = 16;
        let allowed = 16 + 16 / 8 + 64;
        for (b0, len, accepted) in [
            (0xc2, allowed, true),
            (0xc2, allowed + 1, false),
            (0x82, 16, true),
            (0x82, 17, false),
            // A continuation of a compressed message has the allowance too.
            (0x00, allowed, true),
        ] {
            let mut client = endpoint(Role::Client, config.clone(), Some(DeflateParams::default()));
            if b0 == 0x00 {
                feed(&mut client, &to(Role::Client, 0x42, &[]));
                assert_eq!(events(&mut client), []);
            }
            let header = FrameHeader {
                fin: b0 & 0x80 != 0,
                rsv: (b0 >> 4) & 0b111,
                opcode: OpCode::from_u8(b0 & 0x0f).unwrap(),
                mask: None,
                payload_len: len as u64,
            };
            let mut head = [0u8; crate::frame::MAX_HEADER_LEN];
            let n = header.encode(&mut head);
            // The header alone: the limit is checked before the payload comes.
            feed(&mut client, &head[..n]);
            let (got, result) = drain(&mut client);
            assert_eq!(got, [], "{b0:#x}, {len} bytes");
            let expected = if accepted {
                Ok(())
            } else {
                Err(ProtocolError::FrameTooLarge)
            };
            assert_eq!(result, expected, "{b0:#x}, {len} bytes");
        }
    }

    #[test]
    fn invalid_utf8_after_inflating_fails_with_1007_before_the_message_ends() {
        let mut server = endpoint(
            Role::Server,
            Config::default(),
            Some(DeflateParams::default()),
        );
        let mut payload = Vec::new();
        let mut c = Compressor::new(15, 6, false);
        c.compress(b"valid text, then \xff", false, &mut payload);
        // A first fragment, not final: the error comes without waiting for the rest.
        feed(&mut server, &to(Role::Server, 0x41, &payload));
        assert_eq!(drain(&mut server).1, Err(ProtocolError::InvalidUtf8));
        assert_eq!(close_code(&take_output(&mut server)), Some(1007));
    }

    #[test]
    fn corrupt_compressed_data_fails_with_1007() {
        let mut client = endpoint(
            Role::Client,
            Config::default(),
            Some(DeflateParams::default()),
        );
        feed(&mut client, &to(Role::Client, 0xc2, &[0xff, 0xff, 0xff]));
        assert_eq!(
            drain(&mut client).1,
            Err(ProtocolError::InvalidCompressedData)
        );
        assert_eq!(close_code(&take_output(&mut client)), Some(1007));
        assert_eq!(client.state(), State::Closed);
    }

    #[test]
    fn uncompressed_messages_are_accepted_with_deflate_on() {
        let mut client = endpoint(
            Role::Client,
            Config::default(),
            Some(DeflateParams::default()),
        );
        feed(&mut client, &to(Role::Client, 0x81, b"plain"));
        feed(
            &mut client,
            &to(
                Role::Client,
                0xc1,
                &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            ),
        );
        feed(&mut client, &to(Role::Client, 0x82, b"plain"));
        assert_eq!(
            events(&mut client),
            [
                Event::Text("plain".into()),
                Event::Text("Hello".into()),
                Event::Binary("plain".into())
            ]
        );
    }

    #[test]
    fn an_empty_compressed_message_is_empty() {
        let deflate = DeflateConfig {
            threshold: 0,
            ..DeflateConfig::default()
        };
        let (mut client, mut server) = pair(DeflateParams::default(), &deflate);
        client.send_text("").unwrap();
        client.send_binary(b"").unwrap();
        let wire = take_output(&mut client);
        assert!(frames(&wire)
            .iter()
            .all(|f| f.rsv == RSV1 && f.payload == [0x00]));
        feed(&mut server, &wire);
        // And a peer's RSV1 frame with no payload at all.
        feed(&mut server, &to(Role::Server, 0xc1, b""));
        assert_eq!(
            events(&mut server),
            [
                Event::Text(crate::Utf8Bytes::default()),
                Event::Binary(Default::default()),
                Event::Text(crate::Utf8Bytes::default())
            ]
        );
    }

    #[test]
    fn from_negotiated_uses_the_agreed_extension() {
        let negotiated = Negotiated {
            permessage_deflate: Some(DeflateParams {
                server_no_context_takeover: true,
                ..DeflateParams::default()
            }),
            ..Negotiated::default()
        };
        let mut config = config_with(DeflateConfig::default());
        config.deflate.threshold = 0;
        let mut server = Connection::from_negotiated(Role::Server, config, &negotiated);
        assert!(server.uses_deflate());
        server.send_text("Hello").unwrap();
        server.send_text("Hello").unwrap();
        let sent = frames(&take_output(&mut server));
        // No context takeover: the second "Hello" is compressed afresh.
        assert_eq!(sent[0].payload, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(sent[1].payload, sent[0].payload);

        let plain =
            Connection::from_negotiated(Role::Server, Config::default(), &Negotiated::default());
        assert!(!plain.uses_deflate());
    }

    #[test]
    fn a_server_answer_and_the_clients_check_agree() {
        let server_config = config_with(DeflateConfig::no_context_takeover());
        let offer = DeflateConfig::default().offer();
        let accepted = Negotiated::accept(&server_config, None, std::slice::from_ref(&offer));
        assert_eq!(
            accepted.extensions[0].to_string(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let checked =
            crate::extensions::permessage_deflate::check_response(&[offer], &accepted.extensions);
        assert_eq!(checked, Ok(accepted.permessage_deflate));
        // Not enabled: nothing accepted.
        let declined = Negotiated::accept(&Config::default(), None, &accepted.extensions);
        assert_eq!(declined, Negotiated::default());
    }

    #[test]
    fn precompressed_messages_go_out_as_the_connection_would_send_them() {
        let agreed = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateParams::default()
        };
        let deflate = DeflateConfig::no_context_takeover();
        let (mut client, mut server) = pair(agreed, &deflate);
        let (_, mut reference) = pair(agreed, &deflate);
        for len in [40, 2000, 20_000, 100_000] {
            let text = text_like(len, len as u32);
            let how = server
                .stateless_compression(text.len())
                .expect("no takeover");
            server.send_compressed(&how.compress_text(&text)).unwrap();
            reference.send_text(&text).unwrap();
            let binary = noise(len, 3);
            server
                .send_compressed(&how.compress_binary(&binary))
                .unwrap();
            reference.send_binary(&binary).unwrap();
            let wire = take_output(&mut server);
            assert_eq!(wire, take_output(&mut reference), "{len}");
            feed(&mut client, &wire);
            assert_eq!(
                events(&mut client),
                [Event::Text(text.into()), Event::Binary(binary.into())]
            );
        }
        // Under the threshold: sent as usual, uncompressed.
        assert_eq!(server.stateless_compression(deflate.threshold - 1), None);
    }

    #[test]
    fn precompressed_messages_need_the_same_parameters() {
        let message = StatelessCompression::new(15, 6).compress_text("x".repeat(100).as_str());
        let takeover = DeflateParams::default();
        let (_, mut server) = pair(takeover, &DeflateConfig::default());
        assert_eq!(server.stateless_compression(100), None);
        assert_eq!(
            server.send_compressed(&message),
            Err(ApiMisuse::CompressionMismatch)
        );
        let mut plain = endpoint(Role::Server, Config::default(), None);
        assert_eq!(
            plain.send_compressed(&message),
            Err(ApiMisuse::CompressionMismatch)
        );
        let smaller = DeflateParams {
            server_no_context_takeover: true,
            server_max_window_bits: 10,
            ..DeflateParams::default()
        };
        let (_, mut server) = pair(smaller, &DeflateConfig::default());
        assert_eq!(
            server.send_compressed(&message),
            Err(ApiMisuse::CompressionMismatch)
        );
        assert!(take_output(&mut server).is_empty());
        // Inside a fragmented message: refused like any message.
        let agreed = DeflateParams {
            server_no_context_takeover: true,
            ..DeflateParams::default()
        };
        let (_, mut server) = pair(agreed, &DeflateConfig::default());
        server
            .send_fragment(DataKind::Text, b"first", false)
            .unwrap();
        assert_eq!(
            server.send_compressed(&message),
            Err(ApiMisuse::FragmentOrder)
        );
    }

    #[test]
    fn precompressed_large_messages_are_queued_without_a_copy() {
        let agreed = DeflateParams {
            server_no_context_takeover: true,
            ..DeflateParams::default()
        };
        let (mut client, mut server) = pair(agreed, &DeflateConfig::default());
        let data = noise(100_000, 1);
        let message = StatelessCompression::new(15, 6).compress_binary(&data);
        server.send_compressed(&message).unwrap();
        let mut parts = [std::io::IoSlice::new(&[]); 4];
        let n = server.output_parts(&mut parts);
        assert_eq!(n, 2, "header, then the shared payload");
        assert_eq!(parts[1].as_ptr(), message.payload().as_ptr());
        let wire = take_output(&mut server);
        feed(&mut client, &wire);
        assert_eq!(events(&mut client), [Event::Binary(data.into())]);
    }
}
