//! Comparing origins for the server's origin policy (RFC 6455 §10.2, RFC 6454).

use std::fmt::Write as _;

/// `origin` in the one form that equal origins share, so that a policy compares with `==`.
///
/// A browser sends the ASCII serialization of RFC 6454 §6.2: `scheme://host[:port]`, scheme and
/// host in lowercase, no port when it is the scheme's default, no path. The same form is made
/// here from what a person may write in a configuration (`HTTPS://Example.com:443/`) and from
/// what a client sends: scheme and host ASCII-lowercased, a default port (80 for http and ws,
/// 443 for https and wss) and a lone trailing `/` dropped. Anything else is kept as it is, so a
/// value that is not an origin only equals the same value; `null` (an opaque origin, RFC 6454
/// §7.3) is such a value.
pub(crate) fn normalize(origin: &str) -> String {
    let origin = origin.trim();
    let Some((scheme, rest)) = origin.split_once("://") else {
        return origin.to_ascii_lowercase();
    };
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = split_port(authority);
    let default_port = match scheme.as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    };
    let mut out = format!("{scheme}://{}", host.to_ascii_lowercase());
    match port.map(|p| (p, p.parse::<u16>())) {
        // RFC 3986 §3.2.3: an empty port means the default one.
        None | Some(("", _)) => {}
        Some((_, Ok(n))) if Some(n) == default_port => {}
        // Writing to a String cannot fail.
        Some((_, Ok(n))) => {
            let _ = write!(out, ":{n}");
        }
        Some((p, Err(_))) => {
            out.push(':');
            out.push_str(p);
        }
    }
    // An origin has no path: keep one (it then matches no real origin), drop a lone `/`.
    if path != "/" {
        out.push_str(path);
    }
    out
}

/// `host[:port]` or `[v6 address][:port]` → host and port.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        if let Some(end) = authority.find(']') {
            let (host, rest) = authority.split_at(end + 1);
            return (host, rest.strip_prefix(':'));
        }
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_the_same_origin_are_equal() {
        for same in [
            "https://example.com",
            "HTTPS://Example.COM",
            "https://example.com:443",
            "https://example.com/",
            "https://example.com:/",
            " https://example.com ",
        ] {
            assert_eq!(normalize(same), "https://example.com", "{same}");
        }
        assert_eq!(normalize("http://a.example:80"), "http://a.example");
        assert_eq!(normalize("http://[::1]:8080"), "http://[::1]:8080");
        assert_eq!(normalize("http://[::1]:80"), "http://[::1]");
        assert_eq!(normalize("null"), "null");
    }

    #[test]
    fn different_origins_stay_different() {
        let pairs = [
            ("https://example.com", "http://example.com"),
            ("https://example.com", "https://example.com:8443"),
            ("https://example.com", "https://evil.example.com"),
            ("https://example.com", "https://example.com.evil"),
            ("http://example.com:443", "http://example.com"),
            ("https://example.com", "https://example.com/path"),
            ("https://example.com", "null"),
        ];
        for (a, b) in pairs {
            assert_ne!(normalize(a), normalize(b), "{a} vs {b}");
        }
    }
}
