//! The opening handshake (RFC 6455 §4) over HTTP/1.1, kept apart from framing.
//!
//! Both sides parse the peer's HTTP head incrementally: call the parse function with everything
//! received so far; [`Parsed::Partial`] asks for more bytes; [`Parsed::Complete`] says how many
//! bytes the head took, and every byte after them belongs to the WebSocket connection (a peer may
//! pipeline frames right behind its head).
//!
//! - Client: [`client::ClientHandshake`] builds the request and checks the response.
//! - Server: [`server::parse_request`], [`server::check_request`], then [`server::accept`] or
//!   [`server::reject`]. [`server::RequestHead::parse`] parses and checks in one pass without
//!   building an `http::Request` (what a server that reads heads from a socket wants).
//!
//! The outcome is a [`Negotiated`], from which a [`Connection`](crate::Connection) is built.

/// A set of bytes as a 256-entry table (`static NAME: [bool; 256] = byte_set!(|b| test);`): a
/// lookup per byte where a test would be a chain of comparisons. `test` is a `const` expression
/// in the byte `b`.
macro_rules! byte_set {
    (|$b:ident| $test:expr) => {{
        let mut table = [false; 256];
        let mut i = 0;
        while i < 256 {
            let $b = i as u8;
            table[i] = $test;
            i += 1;
        }
        table
    }};
}
pub(crate) use byte_set;

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

/// What the opening handshake agreed on, from which a [`Connection`](crate::Connection) is
/// built ([`Connection::from_negotiated`](crate::Connection::from_negotiated)).
///
/// A client gets it from [`client::ClientHandshake::parse_response`], a server from
/// [`Negotiated::accept`]; either way the extensions this crate implements come typed, checked
/// once, and the connection uses them as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// The subprotocol selected by the server, if any.
    pub protocol: Option<String>,
    /// The extensions in effect, as the server's answer lists them (its
    /// `Sec-WebSocket-Extensions`), in its order.
    pub extensions: Vec<ExtensionOffer>,
    /// permessage-deflate (RFC 7692), when the answer accepted it: the parameters agreed on.
    #[cfg(feature = "deflate")]
    pub permessage_deflate: Option<crate::extensions::permessage_deflate::DeflateParams>,
}

impl Negotiated {
    /// Server: what to agree to, given the subprotocol already chosen (see [`select_protocol`])
    /// and the client's extension `offers`: every element of its `Sec-WebSocket-Extensions`, in
    /// its order of preference, whatever carried them (HTTP/1.1 headers, or HTTP/2's for
    /// RFC 8441). The offers come from [`parse_extensions`] or, on HTTP/1.1, from
    /// [`server::check_request`].
    ///
    /// Of the extensions this crate implements, those that `config` enables are accepted:
    /// permessage-deflate as [`DeflateConfig::accept`] decides (feature `deflate`). The
    /// answer's elements are in [`extensions`](Self::extensions), for the `101` (or HTTP/2
    /// `200`) response; every other offer is declined by leaving it out (RFC 6455 §9.1).
    ///
    /// [`DeflateConfig::accept`]: crate::extensions::permessage_deflate::DeflateConfig::accept
    #[cfg_attr(not(feature = "deflate"), allow(unused_variables))]
    pub fn accept(
        config: &crate::Config,
        protocol: Option<String>,
        offers: &[ExtensionOffer],
    ) -> Negotiated {
        #[cfg(feature = "deflate")]
        {
            let accepted = config.deflate.accept(offers);
            let permessage_deflate = accepted.as_ref().map(|a| a.params);
            Negotiated {
                protocol,
                extensions: accepted.map(|a| a.response).into_iter().collect(),
                permessage_deflate,
            }
        }
        #[cfg(not(feature = "deflate"))]
        Negotiated {
            protocol,
            extensions: Vec::new(),
        }
    }
}
