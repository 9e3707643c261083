//! Subprotocols and extension offers (RFC 6455 §4.2.2, §9.1, §11.3.4), shared by HTTP/1.1 and
//! (later) HTTP/2.

use http::header::HeaderMap;

/// One extension from a `Sec-WebSocket-Extensions` header: a name and its parameters
/// (RFC 6455 §9.1 grammar; quoted values are unquoted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// The extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// Parameters in order, with their values if they had one.
    pub params: Vec<(String, Option<String>)>,
}

/// The comma-separated tokens of every `name` header line, trimmed, empty ones skipped
/// (RFC 7230 §7 list rule). For `Connection`, `Upgrade`, `Sec-WebSocket-Protocol`.
pub fn header_tokens<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Parse every `Sec-WebSocket-Extensions` line into offers, in order.
///
/// # Errors
///
/// A short reason if the syntax is not that of RFC 6455 §9.1.
pub fn parse_extensions(headers: &HeaderMap) -> Result<Vec<ExtensionOffer>, &'static str> {
    let _ = headers;
    todo!()
}

/// The subprotocol a server selects: the first of its `supported` list (in its order of
/// preference) that the client `offered`. `None` when nothing matches, which is not a refusal:
/// the response then has no `Sec-WebSocket-Protocol` header.
pub fn select_protocol<'a>(supported: &'a [String], offered: &[String]) -> Option<&'a str> {
    supported
        .iter()
        .find(|s| offered.iter().any(|o| o == *s))
        .map(String::as_str)
}
