//! The opening handshake on both sides: parsing a head that may arrive in pieces, the RFC 6455
//! §4.1/§4.2.1 checks, and the responses a server builds.

use std::sync::OnceLock;

use gangway_proto::handshake::client::{ClientHandshake, ClientOptions};
use gangway_proto::handshake::{
    accept_key, is_valid_key, parse_extensions, select_protocol, server, Negotiated, Parsed,
};
use gangway_proto::{HandshakeError, SeededRandom};
use http::header::{HeaderMap, HeaderValue, SEC_WEBSOCKET_EXTENSIONS};
use http::{Method, StatusCode, Uri, Version};

use crate::split_point;

/// Head size limit for both sides: below libFuzzer's usual input length, so
/// [`HandshakeError::HeadTooLarge`] is reachable.
pub const MAX_HEAD_SIZE: usize = 2048;

/// The subprotocols our fuzzed server supports.
const SERVER_PROTOCOLS: [&str; 2] = ["superchat", "chat"];

/// Seed of the client's fixed random source; the committed response seeds answer its key.
pub const CLIENT_SEED: u64 = 0x0067_616e_6777_6179;

/// What the fuzzed client offers.
const CLIENT_PROTOCOLS: [&str; 2] = ["chat", "superchat"];
const CLIENT_EXTENSION: &str = "permessage-deflate; client_max_window_bits";

/// A parsed request, in a comparable form.
type RequestView = (Method, Uri, Version, HeaderMap, usize);

/// A parsed and checked response, in a comparable form.
type ResponseView = (StatusCode, Version, HeaderMap, Negotiated, usize);

/// `server::parse_request`, then `check_request` and `accept` or `reject`, on arbitrary bytes.
///
/// Oracle: only the errors a server can produce; a head that completes has the same result
/// whether it arrived whole or in two pieces; the responses are well-formed HTTP/1.1 and carry
/// what was negotiated.
pub fn check_request(data: &[u8]) {
    let result = server::parse_request(data, MAX_HEAD_SIZE);
    same_head(data, &result);
    assert_split_consistent(data, &request_view(&result), |piece| {
        request_view(&server::parse_request(piece, MAX_HEAD_SIZE))
    });
    let (req, head_len) = match result {
        Ok(Parsed::Complete(req, n)) => (req, n),
        Ok(Parsed::Partial) => {
            assert!(data.len() <= MAX_HEAD_SIZE, "partial past the head limit");
            return;
        }
        Err(err) => {
            assert!(
                matches!(
                    err,
                    HandshakeError::MalformedHttp(_) | HandshakeError::HeadTooLarge
                ),
                "parse_request: undocumented error {err:?}"
            );
            check_reject(&err);
            return;
        }
    };
    assert!(
        head_len <= data.len().min(MAX_HEAD_SIZE),
        "head length {head_len}"
    );
    assert!(
        data[..head_len].ends_with(b"\n"),
        "head does not end a line"
    );
    let _ = server::is_upgrade_request(&req);
    check_connect(&req);
    match server::check_request(&req) {
        Ok(offer) => {
            // The same request as an RFC 8441 extended CONNECT (no key, no `Upgrade`): the
            // checks the two share (host, version, origin, subprotocols, extensions) accept it
            // too and read the same offer. (Only for a request target without an authority:
            // an HTTP/2 `:authority` is judged on its own, userinfo refused.)
            if req.uri().authority().is_none() {
                let connect = as_connect(&req);
                let h2_offer = server::check_connect_request(&connect, Some("websocket"))
                    .expect("an upgrade request accepted on HTTP/1.1 is accepted as a CONNECT");
                assert_eq!(h2_offer.key, None);
                assert_eq!(h2_offer.protocols, offer.protocols);
                assert_eq!(h2_offer.extensions, offer.extensions);
                assert_eq!(h2_offer.origin, offer.origin);
            }
            // An HTTP/1.1 upgrade request always carries a key (only RFC 8441's CONNECT has none).
            let key = offer
                .key
                .as_deref()
                .expect("an accepted upgrade request has a key");
            assert!(is_valid_key(key.as_bytes()), "accepted key {key:?}");
            let supported: Vec<String> = SERVER_PROTOCOLS.iter().map(|s| s.to_string()).collect();
            let protocol = select_protocol(&supported, &offer.protocols);
            if let Some(p) = protocol {
                assert!(offer.protocols.iter().any(|o| o == p));
            }
            let response = server::accept(&offer, protocol, &offer.extensions);
            let head = response_lines(&response);
            assert_eq!(head[0], "HTTP/1.1 101 Switching Protocols");
            let expected_accept = format!("Sec-WebSocket-Accept: {}", accept_key(key.as_bytes()));
            assert!(head.contains(&expected_accept.as_str()), "{head:?}");
            match protocol {
                Some(p) => assert!(head.contains(&format!("Sec-WebSocket-Protocol: {p}").as_str())),
                None => assert!(!head.iter().any(|l| l.starts_with("Sec-WebSocket-Protocol"))),
            }
            // The extensions line we write must read back as the offers it was built from.
            let mut headers = HeaderMap::new();
            for line in &head {
                if let Some(value) = line.strip_prefix("Sec-WebSocket-Extensions: ") {
                    let value = HeaderValue::from_str(value).expect("extensions line is a value");
                    headers.append(SEC_WEBSOCKET_EXTENSIONS, value);
                }
            }
            assert_eq!(parse_extensions(&headers).as_ref(), Ok(&offer.extensions));
        }
        Err(err) => {
            assert!(
                is_check_error(&err),
                "check_request: undocumented error {err:?}"
            );
            check_reject(&err);
        }
    }
}

/// `server::RequestHead::parse` answers as `parse_request` (`result`, for the same `data`) and
/// the checks on its request do, and rebuilds that request.
fn same_head(data: &[u8], result: &Result<Parsed<http::Request<()>>, HandshakeError>) {
    match (result, server::RequestHead::parse(data, MAX_HEAD_SIZE)) {
        (Ok(Parsed::Complete(req, n)), Ok(Parsed::Complete(head, m))) => {
            assert_eq!(*n, m, "head length");
            assert_eq!(head.method(), req.method());
            assert_eq!(head.uri(), req.uri());
            assert_eq!(head.version(), req.version());
            assert_eq!(head.is_upgrade(), server::is_upgrade_request(req));
            assert_eq!(
                head.upgrade_refusal(),
                server::upgrade_refusal(req).as_ref()
            );
            let rebuilt = head.to_request();
            assert_eq!(rebuilt.method(), req.method());
            assert_eq!(rebuilt.uri(), req.uri());
            assert_eq!(rebuilt.version(), req.version());
            assert_eq!(rebuilt.headers(), req.headers());
            assert_eq!(head.into_checked(), server::check_request(req));
        }
        (Ok(Parsed::Partial), Ok(Parsed::Partial)) => {}
        (Err(a), Err(b)) => assert_eq!(*a, b, "parse errors differ"),
        (a, b) => panic!("parse_request {a:?}, RequestHead::parse {b:?}"),
    }
}

/// The errors the checks of a parsed request return (`check_request`, `check_connect_request`).
fn is_check_error(err: &HandshakeError) -> bool {
    matches!(
        err,
        HandshakeError::MalformedHttp(_)
            | HandshakeError::MethodNotAllowed
            | HandshakeError::UnsupportedHttpVersion
            | HandshakeError::MissingHeader(_)
            | HandshakeError::DuplicateHeader(_)
            | HandshakeError::InvalidHeader(..)
            | HandshakeError::UnsupportedVersion
    )
}

/// `req` with the method CONNECT, as an HTTP/2 layer would hand over an extended CONNECT.
fn as_connect(req: &http::Request<()>) -> http::Request<()> {
    let mut connect = http::Request::new(());
    *connect.method_mut() = Method::CONNECT;
    *connect.uri_mut() = req.uri().clone();
    *connect.version_mut() = Version::HTTP_2;
    *connect.headers_mut() = req.headers().clone();
    connect
}

/// `server::check_connect_request` on a parsed request as it came (any method), its
/// `:protocol` taken from its `Upgrade` header (none without one).
///
/// Oracle: only the errors an HTTP/2 server can produce, each with an answer that is valid on
/// HTTP/2; an accepted request is a CONNECT for `websocket` with a version 13 and no key, and
/// is answered `200` with no `Sec-WebSocket-Accept`, with what it offered.
fn check_connect(req: &http::Request<()>) {
    let protocol = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok());
    match server::check_connect_request(req, protocol) {
        Ok(offer) => {
            assert_eq!(req.method(), Method::CONNECT);
            assert!(protocol.is_some_and(|p| p.eq_ignore_ascii_case("websocket")));
            assert!(req.uri().path().starts_with('/'));
            let versions: Vec<_> = req
                .headers()
                .get_all(http::header::SEC_WEBSOCKET_VERSION)
                .iter()
                .collect();
            assert_eq!(versions.len(), 1, "{versions:?}");
            assert_eq!(versions[0].as_bytes().trim_ascii(), b"13");
            assert_eq!(offer.key, None);
            let supported: Vec<String> = SERVER_PROTOCOLS.iter().map(|s| s.to_string()).collect();
            let selected = select_protocol(&supported, &offer.protocols);
            let response = server::accept_response(&offer, selected, &offer.extensions);
            assert_eq!(response.status(), StatusCode::OK);
            let headers = response.headers();
            assert!(headers.get(http::header::SEC_WEBSOCKET_ACCEPT).is_none());
            // RFC 9113 §8.2.2: no connection-specific fields on HTTP/2.
            assert!(headers.get(http::header::UPGRADE).is_none());
            assert!(headers.get(http::header::CONNECTION).is_none());
            assert_eq!(
                headers
                    .get(http::header::SEC_WEBSOCKET_PROTOCOL)
                    .map(|v| v.as_bytes()),
                selected.map(str::as_bytes)
            );
            assert_eq!(parse_extensions(headers).as_ref(), Ok(&offer.extensions));
        }
        Err(err) => {
            // The HTTP version is the HTTP/2 layer's.
            assert!(
                is_check_error(&err) && err != HandshakeError::UnsupportedHttpVersion,
                "check_connect_request: undocumented error {err:?}"
            );
            let status = err.status();
            assert!(matches!(status, 400 | 403 | 405 | 426), "{status}");
            let response = server::reject_response(&err, Version::HTTP_2);
            assert_eq!(response.status().as_u16(), status);
            let headers = response.headers();
            assert!(headers.get(http::header::CONNECTION).is_none());
            assert!(headers.get(http::header::UPGRADE).is_none());
            if status == 426 {
                assert_eq!(
                    headers
                        .get(http::header::SEC_WEBSOCKET_VERSION)
                        .map(|v| v.as_bytes()),
                    Some(&b"13"[..])
                );
            }
            if status == 405 {
                assert_eq!(
                    headers.get(http::header::ALLOW).map(|v| v.as_bytes()),
                    Some(&b"CONNECT"[..])
                );
            }
        }
    }
}

/// `ClientHandshake::parse_response` on arbitrary bytes, for a client with a fixed key that
/// offered two subprotocols and one extension.
///
/// Oracle: only the errors a client can produce; a complete response is a 101 with our accept
/// value, and negotiates only what was offered; the result does not depend on how the head was
/// split.
pub fn check_response(data: &[u8]) {
    let whole = parse_response(data);
    assert_split_consistent(data, &whole, parse_response);
    match whole {
        Ok(Some((status, _, headers, negotiated, head_len))) => {
            assert_eq!(status, StatusCode::SWITCHING_PROTOCOLS);
            assert!(head_len <= data.len().min(MAX_HEAD_SIZE));
            let expected = accept_key(client().key().as_bytes());
            let accepts: Vec<_> = headers.get_all("sec-websocket-accept").iter().collect();
            assert_eq!(accepts.len(), 1);
            assert_eq!(accepts[0].as_bytes().trim_ascii(), expected.as_bytes());
            if let Some(p) = &negotiated.protocol {
                assert!(CLIENT_PROTOCOLS.contains(&p.as_str()), "unoffered {p:?}");
            }
            for e in &negotiated.extensions {
                assert!(e.name.eq_ignore_ascii_case("permessage-deflate"), "{e:?}");
            }
        }
        Ok(None) => assert!(data.len() <= MAX_HEAD_SIZE, "partial past the head limit"),
        Err(err) => assert!(
            matches!(
                err,
                HandshakeError::MalformedHttp(_)
                    | HandshakeError::HeadTooLarge
                    | HandshakeError::UnexpectedStatus(_)
                    | HandshakeError::MissingHeader(_)
                    | HandshakeError::DuplicateHeader(_)
                    | HandshakeError::InvalidHeader(..)
                    | HandshakeError::AcceptMismatch
                    | HandshakeError::UnofferedSubprotocol(_)
                    | HandshakeError::UnofferedExtension(_)
            ),
            "parse_response: undocumented error {err:?}"
        ),
    }
}

/// The fuzzed client: built once, its key fixed by [`CLIENT_SEED`].
pub fn client() -> &'static ClientHandshake {
    static CLIENT: OnceLock<ClientHandshake> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut options = ClientOptions::default();
        options.protocols = CLIENT_PROTOCOLS.iter().map(|s| s.to_string()).collect();
        options.extensions = vec![CLIENT_EXTENSION.to_string()];
        options.max_head_size = MAX_HEAD_SIZE;
        let uri = Uri::from_static("ws://server.example.com/chat");
        ClientHandshake::new(&uri, &options, &mut SeededRandom::new(CLIENT_SEED))
            .expect("fixed client options are valid")
    })
}

fn request_view(
    result: &Result<Parsed<http::Request<()>>, HandshakeError>,
) -> Result<Option<RequestView>, HandshakeError> {
    Ok(match result.as_ref().map_err(Clone::clone)? {
        Parsed::Complete(req, n) => Some((
            req.method().clone(),
            req.uri().clone(),
            req.version(),
            req.headers().clone(),
            *n,
        )),
        Parsed::Partial => None,
    })
}

fn parse_response(data: &[u8]) -> Result<Option<ResponseView>, HandshakeError> {
    Ok(match client().parse_response(data)? {
        Parsed::Complete((resp, negotiated), n) => Some((
            resp.status(),
            resp.version(),
            resp.headers().clone(),
            negotiated,
            n,
        )),
        Parsed::Partial => None,
    })
}

/// A head received in two pieces: the first piece alone is either still partial, or already
/// gives the final answer (more bytes never change a complete head or an error).
fn assert_split_consistent<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    whole: &Result<Option<T>, HandshakeError>,
    parse: impl Fn(&[u8]) -> Result<Option<T>, HandshakeError>,
) {
    let split = split_point(data);
    let first = parse(&data[..split]);
    if !matches!(first, Ok(None)) {
        assert_eq!(&first, whole, "first {split} bytes decided differently");
    }
}

/// A refusal names its status, says `Connection: close`, and its body has the announced length.
fn check_reject(err: &HandshakeError) {
    let status = err.status();
    assert!(matches!(status, 400 | 403 | 405 | 426 | 431), "{status}");
    let response = server::reject(err);
    let text = std::str::from_utf8(&response).expect("reject writes text");
    let (head, body) = text.split_once("\r\n\r\n").expect("reject ends its head");
    let lines: Vec<&str> = head.split("\r\n").collect();
    assert!(lines[0].starts_with(&format!("HTTP/1.1 {status} ")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("Connection: ") && l.ends_with("close")));
    assert!(lines.contains(&format!("Content-Length: {}", body.len()).as_str()));
    if status == 426 {
        assert!(lines.contains(&"Sec-WebSocket-Version: 13"));
    }
}

/// The lines of a response head we built (it has no body), checking there is no bare CR or LF
/// inside a line (header injection) and that each header line is `Name: value`.
fn response_lines(response: &[u8]) -> Vec<&str> {
    let text = std::str::from_utf8(response).expect("accept writes text");
    let head = text
        .strip_suffix("\r\n\r\n")
        .expect("head ends with an empty line");
    let lines: Vec<&str> = head.split("\r\n").collect();
    for line in &lines {
        assert!(!line.contains(['\r', '\n']), "bare CR or LF in {line:?}");
    }
    for line in &lines[1..] {
        let (name, _) = line.split_once(": ").expect("header line");
        assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()));
    }
    lines
}
