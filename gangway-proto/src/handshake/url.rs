//! WebSocket URLs (RFC 6455 §3): the one place a `ws://` or `wss://` URL is checked, for the
//! request's `Host` and target and for the address a client connects to.

use crate::error::ApiMisuse;

/// A checked `ws://` or `wss://` URL: where to connect and what the request says.
///
/// ```
/// use gangway_proto::handshake::WebSocketUrl;
///
/// let url = WebSocketUrl::parse("wss://[::1]:9443/chat?room=1").unwrap();
/// assert!(url.is_secure());
/// assert_eq!((url.host(), url.port()), ("::1", 9443));
/// assert_eq!(url.host_header(), "[::1]:9443");
/// assert_eq!(url.request_target(), "/chat?room=1");
///
/// let refused = WebSocketUrl::parse("ws://127.0.0.1:99999/").unwrap_err();
/// assert_eq!(refused.to_string(), "invalid websocket url: invalid port 99999 (ports are 1 to 65535)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSocketUrl {
    /// `wss`.
    secure: bool,
    /// The host as it is looked up: an IPv6 literal without its brackets.
    host: String,
    /// The URL's port, or the scheme's default (80, 443).
    port: u16,
    /// `Host` value: the host (IPv6 bracketed), with `:port` when it is not the default.
    host_header: String,
    /// Path and query, `/` when the path is empty.
    request_target: String,
}

impl WebSocketUrl {
    /// Parse and check `url`.
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::InvalidUrl`] for text that is not a URL, a fragment (RFC 6455 §3: "MUST NOT
    /// be used"), and every refusal of [`from_uri`](Self::from_uri); [`ApiMisuse::InvalidPort`]
    /// for a port that is not a number from 1 to 65535.
    pub fn parse(url: &str) -> Result<Self, ApiMisuse> {
        // Checked on the text: `http::Uri` drops a fragment while parsing.
        if url.contains('#') {
            return Err(ApiMisuse::InvalidUrl("fragment not allowed"));
        }
        let uri: http::Uri = url
            .parse()
            .map_err(|_| ApiMisuse::InvalidUrl("not a valid url"))?;
        Self::from_uri(&uri)
    }

    /// Check a parsed URI (a fragment cannot be seen here: `http::Uri` dropped it).
    ///
    /// # Errors
    ///
    /// [`ApiMisuse::InvalidUrl`] for a scheme other than `ws` or `wss` (case-insensitive), no
    /// host, or user info (not in the ws-URI grammar, and credentials would leak into logs);
    /// [`ApiMisuse::InvalidPort`] for a port that is not a number from 1 to 65535.
    pub fn from_uri(uri: &http::Uri) -> Result<Self, ApiMisuse> {
        let scheme = uri
            .scheme_str()
            .ok_or(ApiMisuse::InvalidUrl("missing ws:// or wss://"))?;
        // §3: scheme names are case-insensitive; default ports 80 and 443.
        let secure = if scheme.eq_ignore_ascii_case("ws") {
            false
        } else if scheme.eq_ignore_ascii_case("wss") {
            true
        } else {
            return Err(ApiMisuse::InvalidUrl("scheme is not ws or wss"));
        };
        let default_port = if secure { 443 } else { 80 };
        let authority = uri
            .authority()
            .ok_or(ApiMisuse::InvalidUrl("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(ApiMisuse::InvalidUrl("user info is not allowed"));
        }
        // `http::Uri::host` keeps the brackets of an IPv6 literal, as `Host` needs them.
        let host = authority.host();
        if host.is_empty() {
            return Err(ApiMisuse::InvalidUrl("missing host"));
        }
        // What follows the host is empty, `:` (empty port: the default, RFC 3986 §3.2.3) or
        // `:port`. `http::Uri` accepts ports it cannot represent (`:99999`, `:abc`), and
        // `port_u16` then answers `None` as for no port at all: the digits are checked here,
        // so that such a URL is refused instead of reaching the default port.
        let after_host = authority.as_str().get(host.len()..).unwrap_or_default();
        let port = match after_host.strip_prefix(':') {
            None | Some("") => default_port,
            Some(digits) => match digits.parse::<u16>() {
                // Port 0 names no service: nothing can be reached there.
                Ok(port) if port != 0 && digits.bytes().all(|b| b.is_ascii_digit()) => port,
                _ => return Err(ApiMisuse::InvalidPort(digits.into())),
            },
        };
        let host_header = if port == default_port {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        let path = match uri.path() {
            "" => "/",
            p => p,
        };
        let request_target = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        Ok(WebSocketUrl {
            secure,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            host_header,
            request_target,
        })
    }

    /// Whether the scheme is `wss` (TLS).
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The host to look up and connect to (an IPv6 literal without its brackets); also the
    /// name a TLS certificate must carry.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port to connect to: the URL's, or the scheme's default (80 for `ws`, 443 for `wss`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request's `Host` value: the host (IPv6 in brackets), and `:port` when it is not the
    /// scheme's default.
    pub fn host_header(&self) -> &str {
        &self.host_header
    }

    /// The request target: path and query, `/` when the path is empty.
    pub fn request_target(&self) -> &str {
        &self.request_target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_and_wss_urls_with_a_host_are_accepted() {
        for (url, secure, host, port) in [
            ("ws://127.0.0.1:9001/", false, "127.0.0.1", 9001),
            ("ws://example.com", false, "example.com", 80),
            ("wss://example.com/chat?room=1", true, "example.com", 443),
            ("WSS://example.com:", true, "example.com", 443),
            ("ws://[::1]:8080/x", false, "::1", 8080),
            ("ws://h:65535", false, "h", 65535),
            ("ws://h:1", false, "h", 1),
        ] {
            let parsed = WebSocketUrl::parse(url).expect(url);
            assert_eq!(
                (parsed.is_secure(), parsed.host(), parsed.port()),
                (secure, host, port),
                "{url}"
            );
        }
    }

    #[test]
    fn urls_that_are_not_websocket_urls_are_refused() {
        let cases = [
            ("http://example.com/", "scheme is not ws or wss"),
            ("/chat", "missing ws:// or wss://"),
            ("ws://example.com/#frag", "fragment not allowed"),
            ("ws:///path", "not a valid url"),
            ("not a url", "not a valid url"),
            ("ws://:80/", "missing host"),
            ("ws://user:pw@h/", "user info is not allowed"),
        ];
        for (url, why) in cases {
            assert_eq!(
                WebSocketUrl::parse(url),
                Err(ApiMisuse::InvalidUrl(why)),
                "{url}"
            );
        }
    }

    #[test]
    fn ports_outside_1_to_65535_are_refused_with_their_text() {
        for port in ["99999", "65536", "abc", "0", "+80", "80a", "-1"] {
            let url = format!("ws://127.0.0.1:{port}/");
            let refused = WebSocketUrl::parse(&url);
            assert_eq!(refused, Err(ApiMisuse::InvalidPort(port.into())), "{url}");
        }
        assert_eq!(
            ApiMisuse::InvalidPort("abc".into()).to_string(),
            "invalid websocket url: invalid port abc (ports are 1 to 65535)"
        );
    }
}
