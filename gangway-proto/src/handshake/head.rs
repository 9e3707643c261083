//! What parsing a request head and a response head share: the size limit, the header count and
//! turning `httparse` headers into an [`http::HeaderMap`].

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::error::HandshakeError;

/// The most header lines a head may have; more is answered like an oversized head (431). The
/// handshake needs about ten; browsers send around twenty.
pub(crate) const MAX_HEADERS: usize = 100;

/// The part of `buf` worth handing to `httparse`: never more than `max_head_size` bytes, so the
/// work per call is bounded by the limit, whatever the caller buffered.
pub(crate) fn limited(buf: &[u8], max_head_size: usize) -> &[u8] {
    &buf[..buf.len().min(max_head_size)]
}

/// What to answer when `httparse` wants more bytes: more is fine until the buffer already holds
/// more than the limit without a complete head.
pub(crate) fn partial<T>(
    buf: &[u8],
    max_head_size: usize,
) -> Result<super::Parsed<T>, HandshakeError> {
    if buf.len() > max_head_size {
        Err(HandshakeError::HeadTooLarge)
    } else {
        Ok(super::Parsed::Partial)
    }
}

/// Map an `httparse` error to ours; too many header lines counts as an oversized head.
pub(crate) fn parse_error(err: httparse::Error) -> HandshakeError {
    let why = match err {
        httparse::Error::TooManyHeaders => return HandshakeError::HeadTooLarge,
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status code",
        httparse::Error::Token => "invalid token",
        httparse::Error::Version => "invalid http version",
    };
    HandshakeError::MalformedHttp(why)
}

/// The HTTP version `httparse` reported (it only parses HTTP/1.x).
pub(crate) fn version(minor: Option<u8>) -> http::Version {
    match minor {
        Some(0) => http::Version::HTTP_10,
        _ => http::Version::HTTP_11,
    }
}

/// Every header line, in order, duplicates kept (several lines with one name are lists that
/// the checks read as a whole, RFC 7230 §3.2.2).
pub(crate) fn header_map(headers: &[httparse::Header<'_>]) -> Result<HeaderMap, HandshakeError> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for h in headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HandshakeError::MalformedHttp("invalid header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| HandshakeError::MalformedHttp("invalid header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// A copy of a complete head that header values and the request target are cut from, without a
/// copy (and an allocation) each.
pub(crate) struct Shared<'a> {
    /// What was parsed: the slices `httparse` returned point into it.
    parsed: &'a [u8],
    /// The same bytes, shared.
    head: Bytes,
}

impl<'a> Shared<'a> {
    /// The first `head_len` bytes of `buf`, the buffer `httparse` parsed.
    pub(crate) fn new(buf: &'a [u8], head_len: usize) -> Self {
        let parsed = &buf[..head_len.min(buf.len())];
        Shared {
            parsed,
            head: Bytes::copy_from_slice(parsed),
        }
    }

    /// The shared bytes of `part`, a slice of the parsed buffer; a copy if it is not one (never
    /// the case for what `httparse` returns).
    pub(crate) fn slice(&self, part: &[u8]) -> Bytes {
        let start = (part.as_ptr() as usize).wrapping_sub(self.parsed.as_ptr() as usize);
        match start.checked_add(part.len()) {
            Some(end) if end <= self.parsed.len() => self.head.slice(start..end),
            _ => Bytes::copy_from_slice(part),
        }
    }

    /// [`header_map`] with the values cut from the shared head.
    pub(crate) fn header_map(
        &self,
        headers: &[httparse::Header<'_>],
    ) -> Result<HeaderMap, HandshakeError> {
        let mut map = HeaderMap::with_capacity(headers.len());
        for h in headers {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| HandshakeError::MalformedHttp("invalid header name"))?;
            // The same validation as `HeaderValue::from_bytes`, without the copy.
            let value = HeaderValue::from_maybe_shared(self.slice(h.value))
                .map_err(|_| HandshakeError::MalformedHttp("invalid header value"))?;
            map.append(name, value);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `httparse` takes a request with a header line `name: value`.
    fn httparse_takes(name: &[u8], value: &[u8]) -> bool {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.extend_from_slice(name);
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n\r\n");
        let mut headers = [httparse::EMPTY_HEADER; 4];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                // Taken as this very line (not, say, as a name that ends sooner).
                request.headers.len() == 1
                    && request.headers[0].name.as_bytes() == name
                    && request.headers[0].value == value
            }
            _ => false,
        }
    }

    /// `RequestHead` builds its request from lines `httparse` took, without checking them again:
    /// every name and value `httparse` takes must be one `http` takes.
    #[test]
    fn httparse_takes_no_header_line_that_http_refuses() {
        // The probe sees lines taken and lines refused.
        assert!(httparse_takes(b"x-a", b"v \x80\t w"));
        assert!(!httparse_takes(b"x a", b"v"));
        assert!(!httparse_takes(b"n", b"v\x00"));
        for b in 0..=255u8 {
            for name in [vec![b], vec![b'x', b, b'y']] {
                if httparse_takes(&name, b"v") {
                    assert!(HeaderName::from_bytes(&name).is_ok(), "name {name:?}");
                }
            }
            for value in [vec![b], vec![b'x', b, b'y']] {
                if httparse_takes(b"n", &value) {
                    assert!(HeaderValue::from_bytes(&value).is_ok(), "value {value:?}");
                }
            }
        }
    }
}
