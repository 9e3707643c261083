//! Shared by the raw echo and the handshake floor (included with `#[path]`): the one piece of
//! the request both read.

/// The value of the `Sec-WebSocket-Key` header in a request head, trimmed.
pub fn websocket_key(head: &[u8]) -> Option<&[u8]> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = line.split_at(colon);
        name.eq_ignore_ascii_case(b"sec-websocket-key")
            .then(|| value[1..].trim_ascii())
            .filter(|v| !v.is_empty())
    })
}
