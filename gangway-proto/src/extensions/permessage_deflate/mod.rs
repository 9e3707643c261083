//! permessage-deflate (RFC 7692): each data message compressed with DEFLATE, RSV1 marking the
//! compressed ones.
//!
//! Two halves that meet only through [`DeflateParams`]:
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
//! The compression state of each direction is allocated when that direction first compresses
//! (or inflates) a message, so a connection that never sends a compressed message holds none.
//! Figures for the zlib-rs backend (measured on 64-bit Linux), with `memLevel` 8, the value
//! flate2 uses and does not let us change:
//!
//! | state | size |
//! | --- | --- |
//! | compressor | 348,960 B + 4 × 2^window_bits B: 469 KiB at 15 bits, 357 KiB at 12, 343 KiB at 9 |
//! | decompressor | 47,552 B (46.4 KiB) whatever the window: zlib-rs always allocates 32 KiB |
//!
//! (zlib's own formula, 2^(window_bits+2) + 2^(memLevel+9), gives 256 KiB at 15 bits; zlib-rs
//! adds a fixed 128 KiB hash table and larger symbol buffers.)
//!
//! With context takeover (the default) each state lives as long as the connection, so a
//! connection that compresses in both directions holds about 515 KiB. Without context takeover
//! in a direction (`server_no_context_takeover` / `client_no_context_takeover`) that direction's
//! state exists only while a message is being compressed or inflated, and is freed after it: an
//! idle connection then holds nothing. A server with many mostly idle connections should ask for
//! both (see [`DeflateConfig`]).
//!
//! Besides the state, a received compressed message is inflated into the message buffer, which
//! never grows past [`Config::max_message_size`](crate::Config::max_message_size): a small
//! message that inflates to more (a "zip bomb") fails with 1009 once the limit is reached,
//! having allocated at most the limit. A sent message is compressed into a buffer that lives
//! until it is framed.

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
