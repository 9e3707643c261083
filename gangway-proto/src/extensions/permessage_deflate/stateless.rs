//! Compressing a message once for many connections.
//!
//! Without context takeover (RFC 7692 §7.1.1) a message is compressed from an empty window, so
//! its compressed bytes depend on the message and on the parameters of the compression alone,
//! never on what the connection sent before: every connection that compresses with the same
//! parameters sends the same bytes. A server that sends one message to many connections (a
//! broadcast) compresses it once per distinct [`StatelessCompression`] among them and hands the
//! same [`CompressedMessage`] to each, instead of compressing it once per connection.

use bytes::Bytes;

use super::codec::Compressor;
use super::negotiate::clamp_bits;
use crate::message::DataKind;

/// The parameters that determine the compressed bytes of a message compressed on its own
/// (without context takeover): the LZ77 window and the compression level.
///
/// Two connections whose [`Connection::stateless_compression`] is the same value send the same
/// payload for the same message, so a broadcaster keys its compressed copies on this type (it
/// is `Copy`, `Eq`, `Hash` and `Ord`). A connection that compresses with context takeover has
/// none: its messages refer back to what it sent before, and only its own compressor can
/// compress them.
///
/// ```
/// use std::collections::HashMap;
///
/// use gangway_proto::extensions::permessage_deflate::{
///     CompressedMessage, DeflateConfig, DeflateParams, StatelessCompression,
/// };
/// use gangway_proto::handshake::Negotiated;
/// use gangway_proto::{Config, Connection, Role};
///
/// // Two server connections that agreed on no context takeover, and one without the extension.
/// let mut config = Config::default();
/// config.deflate = DeflateConfig::no_context_takeover();
/// let agreed = DeflateParams {
///     server_no_context_takeover: true,
///     client_no_context_takeover: true,
///     ..DeflateParams::default()
/// };
/// let deflate = Negotiated { permessage_deflate: Some(agreed), ..Negotiated::default() };
/// let mut members = vec![
///     Connection::from_negotiated(Role::Server, config.clone(), &deflate),
///     Connection::from_negotiated(Role::Server, config.clone(), &deflate),
///     Connection::from_negotiated(Role::Server, config, &Negotiated::default()),
/// ];
///
/// // Publish: compressed once per distinct parameter set, sent as it is to the others.
/// let text = r#"{"event":"price","symbol":"GWY","bid":101.25,"ask":101.5}"#.repeat(10);
/// let mut compressed: HashMap<StatelessCompression, CompressedMessage> = HashMap::new();
/// for conn in &mut members {
///     match conn.stateless_compression(text.len()) {
///         Some(how) => {
///             let message = compressed.entry(how).or_insert_with(|| how.compress_text(&text));
///             conn.send_compressed(message).unwrap();
///         }
///         // Uncompressed, or compressed with this connection's own context.
///         None => conn.send_text(&text).unwrap(),
///     }
/// }
/// assert_eq!(compressed.len(), 1);
/// assert_eq!(members[0].output(), members[1].output());
/// assert!(members[0].output().len() < members[2].output().len());
/// ```
///
/// [`Connection::stateless_compression`]: crate::Connection::stateless_compression
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatelessCompression {
    window_bits: u8,
    level: u8,
}

impl StatelessCompression {
    /// Compression with a window of 2^`window_bits` bytes (9 to 15; other values are taken as
    /// the nearest, and 8 as 9: zlib compresses no smaller window) at `level` (0 to 9, more is
    /// 9). A connection gives its own with [`Connection::stateless_compression`].
    ///
    /// [`Connection::stateless_compression`]: crate::Connection::stateless_compression
    pub fn new(window_bits: u8, level: u32) -> Self {
        StatelessCompression {
            window_bits: clamp_bits(window_bits).max(9),
            // At most 9, so it fits.
            level: u8::try_from(level.min(9)).unwrap_or(9),
        }
    }

    /// The LZ77 window: 2^`window_bits` bytes.
    pub fn window_bits(self) -> u8 {
        self.window_bits
    }

    /// The compression level, 0 to 9.
    pub fn level(self) -> u32 {
        u32::from(self.level)
    }

    /// Compress a whole message and append its compressed payload to `out`: the payload of a
    /// data frame with RSV1 set, as a sender without context takeover and with these parameters
    /// produces it (RFC 7692 §7.2.1: DEFLATE blocks ending with a sync flush whose
    /// `00 00 ff ff` tail is removed).
    ///
    /// Nothing is kept: the compression state is borrowed from the thread's spare states for
    /// the call and given back, as connections do for their own messages.
    pub fn compress(self, data: &[u8], out: &mut Vec<u8>) {
        Compressor::new(self.window_bits, self.level(), true).compress(data, true, out);
    }

    /// A text message, compressed (see [`compress`](Self::compress)), ready for
    /// [`Connection::send_compressed`](crate::Connection::send_compressed).
    pub fn compress_text(self, text: &str) -> CompressedMessage {
        self.message(DataKind::Text, text.as_bytes())
    }

    /// A binary message, compressed (see [`compress`](Self::compress)), ready for
    /// [`Connection::send_compressed`](crate::Connection::send_compressed).
    pub fn compress_binary(self, data: &[u8]) -> CompressedMessage {
        self.message(DataKind::Binary, data)
    }

    fn message(self, kind: DataKind, data: &[u8]) -> CompressedMessage {
        // Compressible messages shrink; an incompressible one grows by a few bytes per 16 KiB.
        let mut payload = Vec::with_capacity(data.len() / 2 + 64);
        self.compress(data, &mut payload);
        CompressedMessage {
            kind,
            compression: self,
            payload: Bytes::from(payload),
        }
    }
}

/// A whole data message compressed once by [`StatelessCompression`], to be sent as it is on any
/// number of connections with that compression
/// ([`Connection::send_compressed`](crate::Connection::send_compressed)).
///
/// Cloning it shares the payload (a [`Bytes`]), so each connection queues the same bytes. It can
/// only be made from a `&str` or a `&[u8]` by [`StatelessCompression`], so a text message is
/// known to be UTF-8 without inflating it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressedMessage {
    kind: DataKind,
    compression: StatelessCompression,
    payload: Bytes,
}

impl CompressedMessage {
    /// Text or binary.
    pub fn kind(&self) -> DataKind {
        self.kind
    }

    /// The parameters it was compressed with: a connection sends it only if its own
    /// [`stateless_compression`](crate::Connection::stateless_compression) is the same.
    pub fn compression(&self) -> StatelessCompression {
        self.compression
    }

    /// The compressed payload (what follows the frame header, RSV1 set).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extensions::permessage_deflate::{DeflateConfig, DeflateParams, PerMessageDeflate};
    use crate::role::Role;

    fn json(len: usize) -> String {
        let mut s = String::new();
        let mut i = 0;
        while s.len() < len {
            s.push_str(&format!("{{\"id\":{i},\"name\":\"gangway\",\"ok\":true}},"));
            i += 1;
        }
        s.truncate(len);
        s
    }

    #[test]
    fn compresses_as_a_connection_without_context_takeover_does() {
        let params = DeflateParams {
            server_no_context_takeover: true,
            server_max_window_bits: 11,
            ..DeflateParams::default()
        };
        let config = DeflateConfig {
            level: 4,
            ..DeflateConfig::default()
        };
        let mut codec = PerMessageDeflate::new(Role::Server, &params, &config);
        for len in [40, 1000, 70_000] {
            let text = json(len);
            let how = codec
                .stateless_compression(text.len())
                .expect("no takeover");
            assert_eq!(how, StatelessCompression::new(11, 4));
            let mut ours = Vec::new();
            // Twice: the connection's second message too.
            for _ in 0..2 {
                ours.clear();
                codec.compressor.compress(text.as_bytes(), true, &mut ours);
                assert_eq!(how.compress_text(&text).payload()[..], ours[..], "{len}");
            }
        }
    }

    #[test]
    fn connections_with_context_takeover_or_under_the_threshold_have_none() {
        let config = DeflateConfig::default();
        let takeover = PerMessageDeflate::new(Role::Server, &DeflateParams::default(), &config);
        assert_eq!(takeover.stateless_compression(1000), None);
        let params = DeflateParams {
            server_no_context_takeover: true,
            ..DeflateParams::default()
        };
        let codec = PerMessageDeflate::new(Role::Server, &params, &config);
        assert!(codec.stateless_compression(config.threshold).is_some());
        assert_eq!(codec.stateless_compression(config.threshold - 1), None);
        // An 8-bit window: messages go uncompressed.
        let params = DeflateParams {
            server_max_window_bits: 8,
            ..params
        };
        let codec = PerMessageDeflate::new(Role::Server, &params, &config);
        assert_eq!(codec.stateless_compression(1000), None);
        // Our own choice of no context takeover counts as well as the agreement.
        let config = DeflateConfig::no_context_takeover();
        let codec = PerMessageDeflate::new(Role::Client, &DeflateParams::default(), &config);
        assert_eq!(
            codec.stateless_compression(1000),
            Some(StatelessCompression::new(15, 6))
        );
    }

    #[test]
    fn parameters_are_brought_into_range_and_ordered() {
        assert_eq!(StatelessCompression::new(8, 6).window_bits(), 9);
        assert_eq!(StatelessCompression::new(30, 60).window_bits(), 15);
        assert_eq!(StatelessCompression::new(30, 60).level(), 9);
        assert!(StatelessCompression::new(10, 9) < StatelessCompression::new(11, 1));
    }

    #[test]
    fn compressed_messages_share_their_payload() {
        let how = StatelessCompression::new(15, 6);
        let message = how.compress_binary(json(5000).as_bytes());
        let copy = message.clone();
        assert_eq!(message.payload().as_ptr(), copy.payload().as_ptr());
        assert_eq!(message.kind(), DataKind::Binary);
        assert_eq!(message.compression(), how);
        assert!(message.payload().len() < 1000);
    }
}
