//! permessage-deflate (RFC 7692) on connections built from a real negotiation: the server in
//! each of `gangway serve`'s modes (docs/deflate.md) answering the offers real clients send.
//!
//! - [`connection`]: one connection, either role, fed arbitrary bytes and well-formed messages
//!   compressed by an independent peer, with commands in between;
//! - [`round_trip`]: a client and a server exchanging messages, each inflating what the other
//!   compressed.
//!
//! Both read what a connection sends with [`OutputReader`](crate::output::OutputReader), which
//! inflates its compressed messages with a plain zlib stream of its own (not gangway's codec).

pub mod connection;
pub mod round_trip;

use gangway_proto::extensions::permessage_deflate::{
    check_response, DeflateConfig, DeflateParams, EXTENSION_NAME,
};
use gangway_proto::frame::mask::apply_mask_scalar;
use gangway_proto::handshake::{ExtensionOffer, Negotiated};
use gangway_proto::{Config, Connection, DataKind, Role, SeededRandom};

/// Heap the compression states may take during one input, beyond what the limits allow for
/// messages (docs/deflate.md has the sizes): the thread's spare states (at most four
/// compressors of up to 371 KiB and two decompressors of 46 KiB) and those lent out of them,
/// two connections' own (a compressor and a decompressor each, with context takeover), and the
/// harness's own zlib streams: about 3.5 MiB at most.
pub const STATES_BUDGET: usize = 4 << 20;

/// Heap that may remain once every connection is gone: the thread's spare states (at most four
/// compressors of up to 371 KiB and two decompressors of 46 KiB).
pub const SPARE_BUDGET: usize = 2 << 20;

/// The server's permessage-deflate configuration, as `gangway serve --deflate-mode` sets it up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `window`: the server compresses each message on its own; the client keeps context
    /// takeover within a small window, of which the server keeps the last inflated bytes (as a
    /// preset dictionary) instead of an inflate state.
    Window,
    /// `shared`: no context takeover either way; both directions borrow the thread's states.
    Shared,
    /// `dedicated`: context takeover both ways, each connection keeps its own states.
    Dedicated,
    /// The library's default: context takeover and 32 KiB windows both ways.
    LibraryDefault,
}

impl Mode {
    fn from_bits(bits: u8) -> Mode {
        [
            Mode::Window,
            Mode::Shared,
            Mode::Dedicated,
            Mode::LibraryDefault,
        ][usize::from(bits & 3)]
    }

    /// The server's configuration for `--deflate-window-bits window_bits` and
    /// `--deflate-level level` (as gangway-cli's `serve` builds it).
    fn server_config(self, window_bits: u8, level: u32) -> DeflateConfig {
        let mut config = match self {
            Mode::Window => DeflateConfig::bounded_client_window(window_bits.min(13)),
            Mode::Shared | Mode::Dedicated => {
                let mut config = if self == Mode::Shared {
                    DeflateConfig::no_context_takeover()
                } else {
                    DeflateConfig::default()
                };
                if window_bits < 15 {
                    config.server_max_window_bits = Some(window_bits);
                    config.client_max_window_bits = Some(window_bits);
                }
                config
            }
            Mode::LibraryDefault => DeflateConfig::default(),
        };
        config.level = level;
        config
    }
}

/// What the client offers, as real clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Chromium, Node `ws`: `permessage-deflate; client_max_window_bits`.
    Chromium,
    /// Firefox: `permessage-deflate`, no window limit possible.
    Firefox,
    /// Python `websockets`: `server_max_window_bits=12; client_max_window_bits=12`.
    Websockets,
    /// A client that wants no context takeover either way, with a 10-bit window of its own.
    NoContextTakeover,
}

impl Offer {
    fn from_bits(bits: u8) -> Offer {
        [
            Offer::Chromium,
            Offer::Firefox,
            Offer::Websockets,
            Offer::NoContextTakeover,
        ][usize::from(bits & 3)]
    }

    /// The client's configuration, and the offer it sends.
    fn client(self) -> (DeflateConfig, ExtensionOffer) {
        let mut config = DeflateConfig::default();
        match self {
            Offer::Chromium => {}
            Offer::Firefox => {
                // No DeflateConfig offers this: gangway always offers client_max_window_bits.
                let bare = ExtensionOffer {
                    name: EXTENSION_NAME.to_owned(),
                    params: Vec::new(),
                };
                return (config, bare);
            }
            Offer::Websockets => {
                config.server_max_window_bits = Some(12);
                config.client_max_window_bits = Some(12);
            }
            Offer::NoContextTakeover => {
                config.server_no_context_takeover = true;
                config.client_no_context_takeover = true;
                config.client_max_window_bits = Some(10);
            }
        }
        let offer = config.offer();
        (config, offer)
    }
}

/// Both ends' settings and what the handshake agreed on.
#[derive(Clone, Debug)]
pub struct Agreement {
    /// The server's configuration.
    pub mode: Mode,
    /// The client's offer.
    pub offer: Offer,
    /// The server's preferences.
    pub server: DeflateConfig,
    /// The client's preferences.
    pub client: DeflateConfig,
    /// What the server answered, and the client accepted.
    pub params: DeflateParams,
    /// The server's answer.
    pub response: ExtensionOffer,
}

impl Agreement {
    /// The server in `mode` with `window_bits` (8 to 15) and `level` answers `offer`, and the
    /// client checks the answer: both must read it the same way.
    pub fn negotiate(mode: Mode, offer: Offer, window_bits: u8, level: u32) -> Agreement {
        let (client, offered) = offer.client();
        let server = mode.server_config(window_bits, level);
        let accepted = server
            .accept(std::slice::from_ref(&offered))
            .expect("the server accepts every valid offer");
        let params = check_response(&[offered], std::slice::from_ref(&accepted.response))
            .expect("the client takes the server's answer")
            .expect("the answer accepts the extension");
        assert_eq!(
            params, accepted.params,
            "the two ends read the answer apart"
        );
        Agreement {
            mode,
            offer,
            server,
            client,
            params,
            response: accepted.response,
        }
    }

    /// From one byte: mode (bits 0–1), offer (bits 2–3); and from another: window bits
    /// `8 + (bits 0–2)`, level `(bits 3–6) % 10`.
    pub fn from_bytes(setup: u8, tuning: u8) -> Agreement {
        Agreement::negotiate(
            Mode::from_bits(setup),
            Offer::from_bits(setup >> 2),
            8 + (tuning & 7),
            u32::from((tuning >> 3) & 15) % 10,
        )
    }

    /// `role`'s preferences.
    pub fn deflate_config(&self, role: Role) -> &DeflateConfig {
        match role {
            Role::Server => &self.server,
            Role::Client => &self.client,
        }
    }

    /// A connection in `role` built from the agreement, as after the handshake, with `config`
    /// (whose `deflate` is replaced by `role`'s preferences).
    pub fn connection(&self, role: Role, mut config: Config) -> Connection {
        config.deflate = self.deflate_config(role).clone();
        let negotiated = Negotiated {
            extensions: vec![self.response.clone()],
            permessage_deflate: Some(self.params),
            ..Negotiated::default()
        };
        let conn = Connection::from_negotiated_with_random(
            role,
            config,
            &negotiated,
            Box::new(SeededRandom::new(7)),
        );
        assert!(conn.uses_deflate());
        conn
    }

    /// How `role` may compress, by the agreement: its window (bits) and whether it keeps
    /// context takeover.
    pub fn agreed(&self, role: Role) -> (u8, bool) {
        let p = &self.params;
        match role {
            Role::Server => (p.server_max_window_bits, !p.server_no_context_takeover),
            Role::Client => (p.client_max_window_bits, !p.client_no_context_takeover),
        }
    }

    /// How `role` does compress: the agreed window or its own smaller one, and context
    /// takeover unless the agreement or its own preferences drop it (the contract of
    /// `PerMessageDeflate::new`).
    pub fn compresses(&self, role: Role) -> (u8, bool) {
        let (bits, takeover) = self.agreed(role);
        let own = self.deflate_config(role);
        let (own_bits, own_no_takeover) = match role {
            Role::Server => (own.server_max_window_bits, own.server_no_context_takeover),
            Role::Client => (own.client_max_window_bits, own.client_no_context_takeover),
        };
        let bits = own_bits.map_or(bits, |own| own.clamp(8, 15).min(bits));
        (bits, takeover && !own_no_takeover)
    }
}

/// A frame as a peer in the other role sends it: masked with `mask` when it goes to a server
/// (RFC 6455 §5.3). `b0` is the first byte as is (FIN, RSV, opcode, any values).
pub fn frame(b0: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    // Cannot truncate: each arm checks the range.
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    let payload_start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask_scalar(&mut out[payload_start..], key, 0);
    }
    out
}

/// `content` repeated to at least `len` bytes (nothing but zeros if it is empty), then cut to
/// `len`.
pub fn cycled(content: &[u8], len: usize) -> Vec<u8> {
    if content.is_empty() {
        return vec![0; len];
    }
    content.iter().copied().cycle().take(len).collect()
}

/// `bytes` as a message of `kind`: text is made valid UTF-8 (invalid sequences replaced).
pub fn message(kind: DataKind, bytes: &[u8]) -> Vec<u8> {
    match kind {
        DataKind::Text => String::from_utf8_lossy(bytes).into_owned().into_bytes(),
        DataKind::Binary => bytes.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use gangway_proto::frame::FrameHeader;
    use gangway_proto::ProtocolError;

    use super::connection::Outcome;
    use super::*;
    use crate::tests::{seed, seeds};

    #[test]
    fn committed_seeds_pass_the_oracles() {
        for seed in seeds("deflate_connection") {
            connection::check(&seed);
        }
        for seed in seeds("deflate_round_trip") {
            round_trip::check(&seed);
        }
    }

    /// The seeds reach what they are named for, or the fuzzer starts cold.
    #[test]
    fn connection_seeds_reach_what_they_are_named_for() {
        let outcome = |name| connection::outcome(&seed("deflate_connection", name)).unwrap();
        let failed = |name| outcome(name).error;
        assert_eq!(
            failed("corrupt_compressed_data"),
            Some(ProtocolError::InvalidCompressedData)
        );
        assert_eq!(
            failed("rsv1_on_continuation_and_control"),
            Some(ProtocolError::MisplacedCompressedBit)
        );
        assert_eq!(
            failed("message_over_limit_inflated"),
            Some(ProtocolError::MessageTooLarge)
        );
        assert_eq!(
            failed("frame_over_limit"),
            Some(ProtocolError::FrameTooLarge)
        );
        // A ping within 125 bytes, over a frame limit set below that, from a well-formed peer.
        assert_eq!(
            failed("ping_over_a_small_frame_limit"),
            Some(ProtocolError::FrameTooLarge)
        );
        // Compressed messages that arrive as the independent peer sent them, and compressed
        // messages of ours that inflate as queued, closed cleanly.
        for name in [
            "server_window_chromium_echo",
            "client_shared_firefox_stateless",
            "server_dedicated_websockets_fragments_bytewise",
            "server_default_final_blocks",
            "client_no_context_takeover_offer_receive_buf",
        ] {
            let Outcome {
                error,
                checked_compressed,
                peer_closed,
                ..
            } = outcome(name);
            assert_eq!(error, None, "{name}");
            assert!(checked_compressed >= 2, "{name}: {checked_compressed}");
            assert!(peer_closed, "{name}");
        }
        let echo = outcome("server_window_chromium_echo");
        assert!(echo.sent_compressed >= 5, "{echo:?}");
        let rfc = outcome("rfc_7692_7_2_3_hello_frames");
        assert_eq!(
            (rfc.received, rfc.error),
            (3, Some(ProtocolError::UnexpectedEof))
        );
        // An 8-bit window: nothing compressed, everything received.
        let narrow = outcome("eight_bit_windows");
        assert_eq!((narrow.sent_compressed, narrow.checked_compressed), (0, 0));
        assert!(narrow.received >= 1 && narrow.sent >= 2, "{narrow:?}");
    }

    #[test]
    fn every_mode_and_offer_negotiates() {
        for setup in 0..16 {
            for tuning in 0..=255 {
                let agreement = Agreement::from_bytes(setup, tuning);
                for role in [Role::Client, Role::Server] {
                    let (bits, _) = agreement.compresses(role);
                    assert!((8..=15).contains(&bits));
                    agreement.connection(role, Config::default());
                }
            }
        }
        // The window mode answers Chromium's offer as documented.
        let window = Agreement::negotiate(Mode::Window, Offer::Chromium, 12, 6);
        assert_eq!(
            window.response.to_string(),
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=12"
        );
        assert_eq!(window.agreed(Role::Client), (12, true));
        assert!(!window.agreed(Role::Server).1);
    }

    #[test]
    fn frames_are_encoded_with_the_minimal_length() {
        for len in [0, 125, 126, 65535, 65536] {
            let bytes = frame(0x82, Some([1, 2, 3, 4]), &vec![7; len]);
            let (header, n) = FrameHeader::decode(&bytes).unwrap().unwrap();
            assert_eq!((n, header.payload_len), (header.encoded_len(), len as u64));
            let mut payload = bytes[n..].to_vec();
            apply_mask_scalar(&mut payload, [1, 2, 3, 4], 0);
            assert!(payload.iter().all(|&b| b == 7));
        }
    }
}
