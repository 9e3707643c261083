//! Section H: the opening handshake (RFC 6455 §4, §11.3), as issue 2 specifies it.
//!
//! H.1 (server role): raw requests, valid ones in unusual shapes (a byte at a time, frames
//! pipelined behind the head, case and token-list variations) and broken ones with the status
//! each must get (426 with `Sec-WebSocket-Version: 13`, 400, 405, 431).
//!
//! H.2 (client role): raw responses; the client must accept the valid shapes and fail on every
//! response that is not a valid upgrade for what it offered, without sending a single frame.

use crate::cases::{Case, Handshake, Reply, Roles};
use crate::peer::{accept_for, Frame};

/// The key of every H.1 request (RFC 6455 §1.3's example).
pub(crate) const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A request the raw client sends instead of the standard one.
#[derive(Clone, Debug)]
pub(crate) struct RequestCase {
    pub(crate) request: Vec<u8>,
    /// Write the request in pieces of this many bytes, pausing between them.
    pub(crate) chunk: Option<usize>,
    /// The status gangway must answer with.
    pub(crate) status: u16,
    /// Header lines the answer must have (value compared as a case-insensitive token).
    pub(crate) must_have: Vec<(&'static str, &'static str)>,
    /// Headers the answer must not have.
    pub(crate) must_not_have: Vec<&'static str>,
    /// The first step's frames go out in the same write as the request head.
    pub(crate) pipelined: bool,
}

/// A response the raw server answers the client's request with.
#[derive(Clone, Debug)]
pub(crate) struct ResponseCase {
    /// Builds the response from the client's `Sec-WebSocket-Key`.
    pub(crate) respond: fn(&str) -> String,
    /// Write the response in pieces of this many bytes, pausing between them.
    pub(crate) chunk: Option<usize>,
    /// The client must accept it (the steps then run) or fail the handshake.
    pub(crate) accepted: bool,
    /// Subprotocols the client offers, in order.
    pub(crate) protocols: Vec<&'static str>,
    /// The first step's frames go out in the same write as the response head.
    pub(crate) pipelined: bool,
    /// Close the connection after the response (an incomplete head).
    pub(crate) close_after: bool,
}

/// The standard request lines (without the request line and the blank line).
fn lines() -> Vec<String> {
    vec![
        "Host: 127.0.0.1".into(),
        "Upgrade: websocket".into(),
        "Connection: Upgrade".into(),
        format!("Sec-WebSocket-Key: {SAMPLE_KEY}"),
        "Sec-WebSocket-Version: 13".into(),
    ]
}

fn request(start: &str, lines: &[String]) -> Vec<u8> {
    let mut r = format!("{start}\r\n");
    for l in lines {
        r.push_str(l);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// The standard lines with the line starting with `name` replaced by `with` (removed if `None`).
fn edit(name: &str, with: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for l in lines() {
        if l.to_ascii_lowercase()
            .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        {
            if let Some(w) = with {
                out.push(w.to_owned());
            }
        } else {
            out.push(l);
        }
    }
    out
}

fn added(extra: &[&str]) -> Vec<String> {
    let mut l = lines();
    l.extend(extra.iter().map(|s| (*s).to_owned()));
    l
}

fn accepted_request(request: Vec<u8>) -> RequestCase {
    RequestCase {
        request,
        chunk: None,
        status: 101,
        must_have: Vec::new(),
        must_not_have: vec!["Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions"],
        pipelined: false,
    }
}

fn refused_request(request: Vec<u8>, status: u16) -> RequestCase {
    RequestCase {
        request,
        chunk: None,
        status,
        must_have: Vec::new(),
        must_not_have: vec!["Sec-WebSocket-Accept"],
        pipelined: false,
    }
}

/// The standard 101 response for `key`.
pub(crate) fn standard_response(key: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_for(key)
    )
}

fn response_case(respond: fn(&str) -> String, accepted: bool) -> ResponseCase {
    ResponseCase {
        respond,
        chunk: None,
        accepted,
        protocols: Vec::new(),
        pipelined: false,
        close_after: false,
    }
}

/// A ping and a message: the pong (queued by the core as the ping is read) comes before the echo
/// (sent by the application once it has the message), whatever the read boundaries.
fn echo_hello(case: Case) -> Case {
    case.send(
        vec![Frame::ping("p"), Frame::text("Hello")],
        vec![Reply::Pong(b"p".to_vec()), Reply::Text(b"Hello".to_vec())],
    )
}

fn server_case(id: &str, desc: &str, rc: RequestCase) -> Case {
    let accepted = rc.status == 101;
    let case = Case::new(id, desc)
        .only(Roles::Server)
        .handshake(Handshake::Request(rc));
    if accepted {
        echo_hello(case)
    } else {
        case
    }
}

fn client_case(id: &str, desc: &str, rc: ResponseCase) -> Case {
    let accepted = rc.accepted;
    let case = Case::new(id, desc)
        .only(Roles::Client)
        .handshake(Handshake::Response(rc));
    if accepted {
        echo_hello(case)
    } else {
        case
    }
}

/// Every handshake case.
pub(crate) fn cases(cases: &mut Vec<Case>) {
    server_cases(cases);
    client_cases(cases);
}

fn server_cases(cases: &mut Vec<Case>) {
    let get = "GET / HTTP/1.1";
    let ok = |id: &str, desc: &str, lines: Vec<String>| {
        server_case(id, desc, accepted_request(request(get, &lines)))
    };
    cases.push(ok(
        "H.1.1",
        "standard request: 101 with the right accept key",
        lines(),
    ));
    let mut rc = accepted_request(request(get, &lines()));
    rc.chunk = Some(1);
    cases.push(server_case(
        "H.1.2",
        "request head sent one byte at a time: 101",
        rc,
    ));
    let mut rc = accepted_request(request(get, &lines()));
    rc.pipelined = true;
    cases.push(server_case(
        "H.1.3",
        "frames pipelined right behind the request head, in the same write: kept and echoed",
        rc,
    ));
    cases.push(ok(
        "H.1.4",
        "header names and tokens in other cases, Connection with several tokens: 101",
        vec![
            "host: 127.0.0.1".into(),
            "UPGRADE: WebSocket".into(),
            "connection: keep-alive, Upgrade".into(),
            format!("sec-websocket-key: {SAMPLE_KEY}"),
            "SEC-WEBSOCKET-VERSION: 13".into(),
        ],
    ));
    cases.push(ok(
        "H.1.5",
        "Connection tokens spread over two header lines: 101",
        edit(
            "Connection",
            Some("Connection: keep-alive\r\nConnection: upgrade"),
        ),
    ));
    cases.push(ok(
        "H.1.6",
        "Upgrade with another protocol listed first: 101",
        edit("Upgrade", Some("Upgrade: foo/2, websocket")),
    ));
    cases.push(ok(
        "H.1.7",
        "subprotocols offered, none supported: 101 without Sec-WebSocket-Protocol",
        added(&["Sec-WebSocket-Protocol: chat, superchat"]),
    ));
    cases.push(ok(
        "H.1.8",
        "extensions offered, none supported: 101 without Sec-WebSocket-Extensions",
        // Not permessage-deflate: `gangway serve` accepts that one (compression.rs covers it).
        added(&["Sec-WebSocket-Extensions: x-webkit-deflate-frame, x-unknown; a=1"]),
    ));
    cases.push(ok(
        "H.1.9",
        "request with Origin and unrelated headers: 101",
        added(&[
            "Origin: http://127.0.0.1",
            "User-Agent: conformance",
            "Cookie: a=b",
        ]),
    ));
    let mut rc = accepted_request(request("GET http://127.0.0.1/chat HTTP/1.1", &lines()));
    rc.must_not_have.clear();
    cases.push(server_case(
        "H.1.10",
        "request target in absolute form (§4.2.1 item 1): 101",
        rc,
    ));

    let refused = |id: &str, desc: &str, req: Vec<u8>, status: u16| {
        server_case(id, desc, refused_request(req, status))
    };
    let mut rc = refused_request(
        request(
            get,
            &edit("Sec-WebSocket-Version", Some("Sec-WebSocket-Version: 8")),
        ),
        426,
    );
    rc.must_have.push(("Sec-WebSocket-Version", "13"));
    cases.push(server_case(
        "H.1.20",
        "version 8: 426 Upgrade Required naming version 13 (§4.2.2)",
        rc,
    ));
    let mut rc = refused_request(
        request(
            get,
            &edit("Sec-WebSocket-Version", Some("Sec-WebSocket-Version: 14")),
        ),
        426,
    );
    rc.must_have.push(("Sec-WebSocket-Version", "13"));
    cases.push(server_case(
        "H.1.21",
        "version 14: 426 naming version 13",
        rc,
    ));
    cases.push(refused(
        "H.1.22",
        "no Sec-WebSocket-Version: 400",
        request(get, &edit("Sec-WebSocket-Version", None)),
        400,
    ));
    cases.push(refused(
        "H.1.23",
        "Sec-WebSocket-Version twice: 400",
        request(get, &added(&["Sec-WebSocket-Version: 13"])),
        400,
    ));
    cases.push(refused(
        "H.1.24",
        "no Sec-WebSocket-Key: 400",
        request(get, &edit("Sec-WebSocket-Key", None)),
        400,
    ));
    cases.push(refused(
        "H.1.25",
        "Sec-WebSocket-Key twice: 400",
        request(
            get,
            &added(&["Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw=="]),
        ),
        400,
    ));
    cases.push(refused(
        "H.1.26",
        "Sec-WebSocket-Key that is not base64: 400",
        request(
            get,
            &edit(
                "Sec-WebSocket-Key",
                Some("Sec-WebSocket-Key: not*base64*at*all!!"),
            ),
        ),
        400,
    ));
    cases.push(refused(
        "H.1.27",
        "Sec-WebSocket-Key of 15 bytes: 400",
        request(
            get,
            &edit(
                "Sec-WebSocket-Key",
                Some("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA"),
            ),
        ),
        400,
    ));
    cases.push(refused(
        "H.1.28",
        "Sec-WebSocket-Key of 17 bytes: 400",
        request(
            get,
            &edit(
                "Sec-WebSocket-Key",
                Some("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA="),
            ),
        ),
        400,
    ));
    cases.push(refused(
        "H.1.29",
        "no Host: 400",
        request(get, &edit("Host", None)),
        400,
    ));
    cases.push(refused(
        "H.1.30",
        "Host twice: 400",
        request(get, &added(&["Host: example.com"])),
        400,
    ));
    cases.push(refused(
        "H.1.31",
        "no Connection: 400",
        request(get, &edit("Connection", None)),
        400,
    ));
    cases.push(refused(
        "H.1.32",
        "Connection without the upgrade token: 400",
        request(get, &edit("Connection", Some("Connection: keep-alive"))),
        400,
    ));
    cases.push(refused(
        "H.1.33",
        "POST instead of GET: 405",
        request("POST / HTTP/1.1", &lines()),
        405,
    ));
    cases.push(refused(
        "H.1.34",
        "HTTP/1.0: 400",
        request("GET / HTTP/1.0", &lines()),
        400,
    ));
    let big = format!("X-Padding: {}", "a".repeat(20 << 10));
    cases.push(refused(
        "H.1.35",
        "request head over 16 KiB: 431",
        request(get, &added(&[big.as_str()])),
        431,
    ));
    cases.push(refused(
        "H.1.36",
        "garbage instead of a request line: 400",
        request("NOT AN HTTP REQUEST", &lines()),
        400,
    ));
    cases.push(refused(
        "H.1.37",
        "plain GET / without Upgrade: answered as HTTP (200, the demo page), not upgraded",
        request(get, &["Host: 127.0.0.1".to_owned()]),
        200,
    ));
    cases.push(refused(
        "H.1.38",
        "Upgrade to another protocol with WebSocket headers: answered as HTTP (200), not upgraded",
        request(get, &edit("Upgrade", Some("Upgrade: h2c"))),
        200,
    ));
}

fn client_cases(cases: &mut Vec<Case>) {
    cases.push(client_case(
        "H.2.1",
        "standard 101 response: the client's request is valid and the echo runs",
        response_case(standard_response, true),
    ));
    let mut rc = response_case(standard_response, true);
    rc.chunk = Some(1);
    cases.push(client_case(
        "H.2.2",
        "response head sent one byte at a time: accepted",
        rc,
    ));
    let mut rc = response_case(standard_response, true);
    rc.pipelined = true;
    cases.push(client_case(
        "H.2.3",
        "frames pipelined right behind the 101 head, in the same write: kept and echoed",
        rc,
    ));
    cases.push(client_case(
        "H.2.4",
        "header names and tokens in other cases: accepted",
        response_case(
            |key| {
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nCONNECTION: UPGRADE\r\n\
                     sec-websocket-accept: {}\r\n\r\n",
                    accept_for(key)
                )
            },
            true,
        ),
    ));
    cases.push(client_case(
        "H.2.5",
        "Connection with several tokens and extra headers: accepted",
        response_case(
            |key| {
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nServer: conformance\r\nUpgrade: websocket\r\n\
                     Connection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: {}\r\nX-Extra: 1\r\n\r\n",
                    accept_for(key)
                )
            },
            true,
        ),
    ));
    let mut rc = response_case(
        |key| {
            standard_response(key)
                .replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: superchat\r\n\r\n")
        },
        true,
    );
    rc.protocols = vec!["chat", "superchat"];
    cases.push(client_case(
        "H.2.6",
        "client offers chat, superchat; server selects superchat: accepted",
        rc,
    ));
    let mut rc = response_case(standard_response, true);
    rc.protocols = vec!["chat"];
    cases.push(client_case(
        "H.2.7",
        "client offers chat; server selects none: accepted without a subprotocol",
        rc,
    ));

    let fails = |id: &str, desc: &str, respond: fn(&str) -> String| {
        client_case(id, desc, response_case(respond, false))
    };
    cases.push(fails(
        "H.2.10",
        "status 200 with every upgrade header: fails",
        |key| standard_response(key).replace("101 Switching Protocols", "200 OK"),
    ));
    cases.push(fails("H.2.11", "status 404: fails", |_| {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()
    }));
    cases.push(fails("H.2.12", "status 426 naming version 13: fails", |_| {
        "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"
            .to_owned()
    }));
    cases.push(fails("H.2.13", "redirect (302): fails", |_| {
        "HTTP/1.1 302 Found\r\nLocation: ws://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n".to_owned()
    }));
    cases.push(fails("H.2.14", "no Upgrade header: fails", |key| {
        standard_response(key).replace("Upgrade: websocket\r\n", "")
    }));
    cases.push(fails(
        "H.2.15",
        "Upgrade to another protocol: fails",
        |key| standard_response(key).replace("Upgrade: websocket", "Upgrade: h2c"),
    ));
    cases.push(fails("H.2.16", "no Connection header: fails", |key| {
        standard_response(key).replace("Connection: Upgrade\r\n", "")
    }));
    cases.push(fails(
        "H.2.17",
        "Connection without the upgrade token: fails",
        |key| standard_response(key).replace("Connection: Upgrade", "Connection: keep-alive"),
    ));
    cases.push(fails("H.2.18", "no Sec-WebSocket-Accept: fails", |key| {
        standard_response(key).replace(
            &format!("Sec-WebSocket-Accept: {}\r\n", accept_for(key)),
            "",
        )
    }));
    cases.push(fails(
        "H.2.19",
        "Sec-WebSocket-Accept computed for another key: fails",
        |_| standard_response(SAMPLE_KEY),
    ));
    cases.push(fails(
        "H.2.20",
        "Sec-WebSocket-Accept twice (both right): fails, exactly one is allowed",
        |key| {
            standard_response(key).replace(
                "\r\n\r\n",
                &format!("\r\nSec-WebSocket-Accept: {}\r\n\r\n", accept_for(key)),
            )
        },
    ));
    cases.push(fails(
        "H.2.21",
        "Sec-WebSocket-Accept that is the key itself, not its hash: fails",
        |key| standard_response(key).replace(&accept_for(key), key),
    ));
    cases.push(fails(
        "H.2.22",
        "subprotocol selected although none was offered: fails",
        |key| {
            standard_response(key).replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: chat\r\n\r\n")
        },
    ));
    let mut rc = response_case(
        |key| {
            standard_response(key)
                .replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: superchat\r\n\r\n")
        },
        false,
    );
    rc.protocols = vec!["chat"];
    cases.push(client_case(
        "H.2.23",
        "client offers chat; server selects superchat: fails",
        rc,
    ));
    cases.push(fails(
        "H.2.24",
        "extension accepted although none was offered: fails",
        |key| {
            standard_response(key).replace(
                "\r\n\r\n",
                "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
            )
        },
    ));
    let mut rc = response_case(
        |_| "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n".to_owned(),
        false,
    );
    rc.close_after = true;
    cases.push(client_case(
        "H.2.25",
        "server closes the connection in the middle of the response head: fails",
        rc,
    ));
    cases.push(fails(
        "H.2.26",
        "garbage instead of a status line: fails",
        |_| "SSH-2.0-OpenSSH_9.6\r\n\r\n".to_owned(),
    ));
}
