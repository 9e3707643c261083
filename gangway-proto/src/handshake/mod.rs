//! The opening handshake (RFC 6455 §4) over HTTP/1.1, kept apart from framing.
//!
//! Both sides parse the peer's HTTP head incrementally: call the parse function with everything
//! received so far; [`Parsed::Partial`] asks for more bytes; [`Parsed::Complete`] says how many
//! bytes the head took, and every byte after them belongs to the WebSocket connection (a peer may
//! pipeline frames right behind its head).
//!
//! - Client: [`client::ClientHandshake`] builds the request and checks the response.
//! - Server: [`server::parse_request`], [`server::check_request`], then [`server::accept`] or
//!   [`server::reject`].
//!
//! The outcome is a [`Negotiated`], from which a [`Connection`](crate::Connection) is built.

pub mod client;
mod head;
mod key;
mod negotiate;
pub mod server;
mod url;

pub use key::{accept_key, generate_key, is_valid_key, GUID};
pub use negotiate::{header_tokens, parse_extensions, select_protocol, ExtensionOffer};
pub use url::WebSocketUrl;

/// The result of parsing a head that may still be arriving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The head is complete: the value, and the number of bytes the head took.
    Complete(T, usize),
    /// More bytes are needed.
    Partial,
}

/// What the opening handshake agreed on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// The subprotocol selected by the server, if any.
    pub protocol: Option<String>,
    /// The extensions in effect, in the server's order.
    pub extensions: Vec<ExtensionOffer>,
}
