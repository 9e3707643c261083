//! permessage-deflate (RFC 7692): each data message compressed with DEFLATE, RSV1 marking the
//! compressed ones.
//!
//! Two halves that meet only through [`DeflateParams`], which a
//! [`Negotiated`](crate::handshake::Negotiated) carries from the handshake to the connection:
//!
//! - negotiation ([`DeflateConfig::offer`], [`DeflateConfig::accept`], [`check_response`]): which
//!   of the four parameters of §7.1 the two ends agree on, decided once during the opening
//!   handshake;
//! - the codec ([`PerMessageDeflate`], made of a [`Compressor`] and a [`Decompressor`]): raw
//!   DEFLATE with a sync flush per message and the `00 00 ff ff` tail removed (§7.2.1) and
//!   restored (§7.2.2), used by the connection for data messages only. Control frames never
//!   reach it (§6: they are never compressed).
//!
//! ```
//! use gangway_proto::extensions::permessage_deflate::{check_response, DeflateConfig};
//! use gangway_proto::Role;
//!
//! // Client: the offer to put in Sec-WebSocket-Extensions.
//! let client = DeflateConfig::default();
//! let offer = client.offer();
//! assert_eq!(offer.to_string(), "permessage-deflate; client_max_window_bits");
//!
//! // Server: the first acceptable offer, and what to answer.
//! let server = DeflateConfig::default();
//! let accepted = server.accept(&[offer.clone()]).expect("acceptable");
//! assert_eq!(accepted.response.to_string(), "permessage-deflate");
//!
//! // Client: the server's answer checked against what was offered.
//! let params = check_response(&[offer], &[accepted.response]).unwrap().expect("negotiated");
//! assert_eq!(params, accepted.params);
//! ```
//!
//! # Memory per connection
//!
//! What a connection keeps between messages depends on context takeover (RFC 7692 §7.1.1), that
//! is, on whether a message may refer back to earlier ones:
//!
//! - a direction **without context takeover** keeps nothing: its state is borrowed from the
//!   thread's spare states when a message starts and given back, reset, when it ends (each thread
//!   keeps at most four compressors and two decompressors);
//! - a received direction **with context takeover and a window of at most 2^13 bytes** keeps
//!   the last 2^window_bits bytes inflated, all the peer's next message may refer to, and
//!   restores them into a borrowed state as a preset dictionary when the next message starts;
//! - any other direction with context takeover keeps its state from its first message on.
//!
//! Figures for the zlib-rs backend (64-bit Linux), with `memLevel` 8, the value flate2 uses and
//! does not let us change:
//!
//! | state | size |
//! | --- | --- |
//! | compressor | 248,960 B + 4 × 2^window_bits: 371 KiB at 15 bits, 259 KiB at 12, 245 KiB at 9 |
//! | decompressor | 47,552 B (46.4 KiB) whatever the window: zlib-rs always allocates 32 KiB |
//! | kept window | 2^window_bits bytes: 4 KiB at 12 bits |
//! | the codec itself | about 100 bytes, from the handshake on |
//!
//! So a server with many connections answers `server_no_context_takeover` (what it sends is
//! compressed with a borrowed state) and either `client_no_context_takeover` or a small
//! `client_max_window_bits`: [`DeflateConfig::bounded_client_window`] (a 4 KiB window per
//! connection at 12 bits) or [`DeflateConfig::no_context_takeover`] (nothing). With
//! [`DeflateConfig::default`] and a client that allows it, a connection that compressed and
//! inflated one message keeps about 420 KiB. Measured figures for each choice, with browsers'
//! and Python `websockets`' offers, are in the repository's `docs/deflate.md`.
//!
//! Besides the state, a received compressed message is inflated into the message buffer, which
//! never grows past [`Config::max_message_size`](crate::Config::max_message_size): a small
//! message that inflates to more (a "zip bomb") fails with 1009 once the limit is reached,
//! having allocated at most the limit. A sent message is compressed into a buffer that lives
//! until it is framed.
//!
//! # Compressing a message once for many connections
//!
//! Without context takeover, what a message compresses to depends only on the message and on a
//! [`StatelessCompression`] (window and level): a server that sends one message to many
//! connections compresses it once per distinct value among them and sends the same
//! [`CompressedMessage`] on each ([`Connection::stateless_compression`],
//! [`Connection::send_compressed`]).
//!
//! [`Connection::stateless_compression`]: crate::Connection::stateless_compression
//! [`Connection::send_compressed`]: crate::Connection::send_compressed

mod codec;
mod negotiate;
mod spare;
mod stateless;

pub use codec::{Compressor, Decompressor, InflateError, PerMessageDeflate};
pub use negotiate::{
    check_response, Accepted, DeflateConfig, DeflateParams, DEFAULT_LEVEL, DEFAULT_THRESHOLD,
    EXTENSION_NAME,
};
pub use stateless::{CompressedMessage, StatelessCompression};
