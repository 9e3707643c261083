//! Subprotocols and extension offers (RFC 6455 §4.2.2, §9.1, §11.3.4), shared by HTTP/1.1 and
//! (later) HTTP/2.

use std::fmt;

use http::header::{AsHeaderName, HeaderMap, HeaderValue};

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
///
/// `name` is a `&str` or, cheaper (it is not parsed again), a `&HeaderName`.
pub fn header_tokens<'a, K: AsHeaderName>(
    headers: &'a HeaderMap,
    name: K,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    list_elements(headers.get_all(name).iter().map(HeaderValue::as_bytes)).filter(|t| !t.is_empty())
}

/// The comma-separated elements of every line of a list header, trimmed, empty ones kept
/// (RFC 7230 §7 list rule).
pub(crate) fn list_elements<'a>(
    lines: impl Iterator<Item = &'a [u8]>,
) -> impl Iterator<Item = &'a [u8]> {
    lines.flat_map(elements)
}

/// Whether one of the lines of a list header has `token` (any case) among its elements: what
/// [`list_elements`] would find, looked for line by line.
pub(crate) fn list_has<'a>(mut lines: impl Iterator<Item = &'a [u8]>, token: &[u8]) -> bool {
    // A line that is the token alone, as `Upgrade: websocket` and `Connection: Upgrade` nearly
    // always are, is its one element: no need to split it.
    lines.any(|line| {
        line.eq_ignore_ascii_case(token) || elements(line).any(|e| e.eq_ignore_ascii_case(token))
    })
}

/// The comma-separated elements of one line of a list header, trimmed, empty ones kept.
fn elements(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Parse every `Sec-WebSocket-Extensions` line into offers, in order.
///
/// The grammar is RFC 6455 §9.1: a comma-separated list (over any number of header lines) of
/// `token *( ";" token [ "=" ( token | quoted-string ) ] )`, with optional whitespace around the
/// separators. Quoted values are unquoted and must then be tokens themselves (§9.1). Empty list
/// elements are skipped (RFC 7230 §7).
///
/// ```
/// use http::header::{HeaderMap, HeaderValue};
///
/// let mut headers = HeaderMap::new();
/// headers.append(
///     "sec-websocket-extensions",
///     HeaderValue::from_static("permessage-deflate; client_max_window_bits=\"10\", foo"),
/// );
/// let offers = gangway_proto::handshake::parse_extensions(&headers).unwrap();
/// assert_eq!(offers[0].name, "permessage-deflate");
/// assert_eq!(offers[0].params, [("client_max_window_bits".into(), Some("10".into()))]);
/// assert_eq!(offers[1].name, "foo");
/// ```
///
/// # Errors
///
/// A short reason if the syntax is not that of RFC 6455 §9.1.
pub fn parse_extensions(headers: &HeaderMap) -> Result<Vec<ExtensionOffer>, &'static str> {
    extension_offers(
        headers
            .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .map(HeaderValue::as_bytes),
    )
}

/// [`parse_extensions`] on the `Sec-WebSocket-Extensions` lines, however they were parsed.
pub(crate) fn extension_offers<'a>(
    lines: impl Iterator<Item = &'a [u8]>,
) -> Result<Vec<ExtensionOffer>, &'static str> {
    let mut offers = Vec::new();
    for line in lines {
        parse_extension_list(line, &mut offers)?;
    }
    Ok(offers)
}

/// Parse one `Sec-WebSocket-Extensions` value (one header line) and append its offers to `out`.
pub(crate) fn parse_extension_list(
    line: &[u8],
    out: &mut Vec<ExtensionOffer>,
) -> Result<(), &'static str> {
    let mut cur = Cursor { rest: line };
    loop {
        cur.skip_ows();
        match cur.peek() {
            None => return Ok(()),
            // An empty list element: `a, , b` (RFC 7230 §7).
            Some(b',') => {
                cur.bump();
                continue;
            }
            Some(_) => {}
        }
        let name = cur.token().ok_or("expected an extension name")?;
        let mut offer = ExtensionOffer {
            name: name.to_owned(),
            params: Vec::new(),
        };
        cur.skip_ows();
        while cur.peek() == Some(b';') {
            cur.bump();
            cur.skip_ows();
            let param = cur.token().ok_or("expected a parameter name")?;
            cur.skip_ows();
            let value = if cur.peek() == Some(b'=') {
                cur.bump();
                cur.skip_ows();
                let value = if cur.peek() == Some(b'"') {
                    let v = cur.quoted_string()?;
                    // RFC 6455 §9.1: the unescaped value MUST conform to the token ABNF.
                    if !is_token(v.as_bytes()) {
                        return Err("quoted parameter value is not a token");
                    }
                    v
                } else {
                    cur.token().ok_or("expected a parameter value")?.to_owned()
                };
                cur.skip_ows();
                Some(value)
            } else {
                None
            };
            offer.params.push((param.to_owned(), value));
        }
        out.push(offer);
        match cur.peek() {
            None => return Ok(()),
            Some(b',') => cur.bump(),
            Some(_) => return Err("unexpected character"),
        }
    }
}

/// A position in a header value being parsed.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn bump(&mut self) {
        self.rest = self.rest.get(1..).unwrap_or_default();
    }

    /// Skip optional whitespace (RFC 7230 §3.2.3: SP and HTAB).
    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.bump();
        }
    }

    /// The longest run of token characters, or `None` if there is none.
    fn token(&mut self) -> Option<&'a str> {
        let len = self.rest.iter().take_while(|&&b| is_tchar(b)).count();
        if len == 0 {
            return None;
        }
        let (token, rest) = self.rest.split_at(len);
        self.rest = rest;
        // Token characters are ASCII, so this never fails.
        std::str::from_utf8(token).ok()
    }

    /// A quoted-string (RFC 2616 §2.2), unescaped; the cursor is on its opening quote.
    fn quoted_string(&mut self) -> Result<String, &'static str> {
        self.bump();
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => return Err("unterminated quoted string"),
                Some(b'"') => {
                    self.bump();
                    break;
                }
                Some(b'\\') => {
                    self.bump();
                    // quoted-pair = "\" CHAR: any US-ASCII character.
                    match self.peek() {
                        Some(c) if c.is_ascii() => value.push(c),
                        _ => return Err("invalid escape in quoted string"),
                    }
                    self.bump();
                }
                // qdtext: TEXT (no controls other than HTAB) except the quote.
                Some(c) if c == b'\t' || (c >= 0x20 && c != 0x7f) => {
                    value.push(c);
                    self.bump();
                }
                Some(_) => return Err("control character in quoted string"),
            }
        }
        // Anything that is not valid UTF-8 cannot be a token either.
        String::from_utf8(value).map_err(|_| "quoted parameter value is not a token")
    }
}

/// Whether `b` may appear in a token (RFC 7230 §3.2.6 `tchar`, the same set as RFC 2616's
/// token: visible ASCII except separators).
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// [`is_tchar`] for every byte: a lookup per byte of a header name rather than a chain of
/// comparisons.
static TCHAR: [bool; 256] = crate::handshake::byte_set!(|b| b.is_ascii_alphanumeric()
    || matches!(
        b,
        b'!' | b'#'
            | b'$'
            | b'%'
            | b'&'
            | b'\''
            | b'*'
            | b'+'
            | b'-'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~'
    ));

/// Whether `s` is a non-empty token (RFC 2616 §2.2).
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Writes the offer as it appears in `Sec-WebSocket-Extensions`: `name; param; param=value`,
/// with values that are not tokens written as quoted strings.
impl fmt::Display for ExtensionOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (param, value) in &self.params {
            write!(f, "; {param}")?;
            match value {
                Some(v) if is_token(v.as_bytes()) => write!(f, "={v}")?,
                Some(v) => {
                    f.write_str("=\"")?;
                    for c in v.chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"")?;
                }
                None => {}
            }
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for l in lines {
            map.append(
                http::header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_str(l).unwrap(),
            );
        }
        map
    }

    fn parse(lines: &[&str]) -> Result<Vec<ExtensionOffer>, &'static str> {
        parse_extensions(&headers(lines))
    }

    fn offer(name: &str, params: &[(&str, Option<&str>)]) -> ExtensionOffer {
        ExtensionOffer {
            name: name.into(),
            params: params
                .iter()
                .map(|(k, v)| ((*k).into(), v.map(Into::into)))
                .collect(),
        }
    }

    #[test]
    fn no_header_means_no_extensions() {
        assert_eq!(parse(&[]), Ok(vec![]));
    }

    #[test]
    fn extensions_with_params_across_lines() {
        let got = parse(&[
            "permessage-deflate; client_max_window_bits, permessage-deflate;server_no_context_takeover",
            "x-foo ;a=1 ; b = 2",
        ])
        .unwrap();
        assert_eq!(
            got,
            vec![
                offer("permessage-deflate", &[("client_max_window_bits", None)]),
                offer(
                    "permessage-deflate",
                    &[("server_no_context_takeover", None)]
                ),
                offer("x-foo", &[("a", Some("1")), ("b", Some("2"))]),
            ]
        );
    }

    #[test]
    fn quoted_values_are_unquoted_and_unescaped() {
        let got = parse(&[r#"foo; a="10"; b="x\-y", bar; c = "tok""#]).unwrap();
        assert_eq!(
            got,
            vec![
                offer("foo", &[("a", Some("10")), ("b", Some("x-y"))]),
                offer("bar", &[("c", Some("tok"))]),
            ]
        );
    }

    #[test]
    fn quoted_values_must_be_tokens_once_unquoted() {
        // RFC 6455 §9.1: a comma or a space inside quotes is not a token.
        assert_eq!(
            parse(&[r#"foo; a="1,2""#]),
            Err("quoted parameter value is not a token")
        );
        assert_eq!(
            parse(&[r#"foo; a="x y""#]),
            Err("quoted parameter value is not a token")
        );
        assert_eq!(
            parse(&[r#"foo; a="""#]),
            Err("quoted parameter value is not a token")
        );
    }

    #[test]
    fn empty_list_elements_are_skipped() {
        let got = parse(&[" , foo ,, bar,", ""]).unwrap();
        assert_eq!(got, vec![offer("foo", &[]), offer("bar", &[])]);
    }

    #[test]
    fn bad_extension_syntax_is_rejected() {
        let cases: &[(&str, &str)] = &[
            ("foo bar", "unexpected character"),
            ("foo;", "expected a parameter name"),
            ("foo; =1", "expected a parameter name"),
            ("foo; a=", "expected a parameter value"),
            ("foo; a=,", "expected a parameter value"),
            (";a", "expected an extension name"),
            ("foo; a=1 2", "unexpected character"),
            ("foo; a=\"1", "unterminated quoted string"),
            ("foo; a=\"1\\", "invalid escape in quoted string"),
            ("foo; a=\"1\"x", "unexpected character"),
            ("fo/o", "unexpected character"),
            ("foo; a=b=c", "unexpected character"),
            ("foo; a:b", "unexpected character"),
        ];
        for (line, why) in cases {
            assert_eq!(parse(&[line]), Err(*why), "{line:?}");
        }
    }

    #[test]
    fn non_ascii_bytes_are_rejected() {
        let mut map = HeaderMap::new();
        map.append(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_bytes(b"f\xc3\xa9e").unwrap(),
        );
        assert_eq!(parse_extensions(&map), Err("unexpected character"));
        let mut map = HeaderMap::new();
        map.append(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_bytes(b"foo; a=\"\xff\"").unwrap(),
        );
        assert_eq!(
            parse_extensions(&map),
            Err("quoted parameter value is not a token")
        );
    }

    #[test]
    fn display_writes_the_header_syntax_and_quotes_non_tokens() {
        let e = offer(
            "permessage-deflate",
            &[
                ("client_max_window_bits", None),
                ("server_max_window_bits", Some("10")),
            ],
        );
        assert_eq!(
            e.to_string(),
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10"
        );
        let odd = offer("x", &[("a", Some("b c")), ("q", Some("say \"hi\\\""))]);
        assert_eq!(odd.to_string(), r#"x; a="b c"; q="say \"hi\\\"""#);
        // What Display writes parses back to the same offer (quoted non-token values aside).
        assert_eq!(parse(&[&e.to_string()]).unwrap(), vec![e]);
    }

    #[test]
    fn header_tokens_span_lines_and_skip_empty_elements() {
        let mut map = HeaderMap::new();
        map.append(
            "connection",
            HeaderValue::from_static("keep-alive, , Upgrade"),
        );
        map.append("connection", HeaderValue::from_static(" close "));
        let tokens: Vec<&[u8]> = header_tokens(&map, "connection").collect();
        assert_eq!(tokens, [&b"keep-alive"[..], b"Upgrade", b"close"]);
    }

    #[test]
    fn select_protocol_takes_the_servers_first_offered_choice() {
        let offered = ["chat".to_string(), "superchat".to_string()];
        assert_eq!(select_protocol(&["chat".into()], &offered), Some("chat"));
        assert_eq!(
            select_protocol(&["superchat".into(), "chat".into()], &offered),
            Some("superchat")
        );
        assert_eq!(select_protocol(&["other".into()], &offered), None);
        assert_eq!(select_protocol(&["chat".into()], &[]), None);
    }

    #[test]
    fn tokens_follow_rfc_2616() {
        assert!(is_token(b"permessage-deflate"));
        assert!(is_token(b"!#$%&'*+-.^_`|~09azAZ"));
        assert!(!is_token(b""));
        for sep in b"()<>@,;:\\\"/[]?={} \t\x7f\x00" {
            assert!(!is_token(&[b'a', *sep]), "{sep}");
        }
    }
}
