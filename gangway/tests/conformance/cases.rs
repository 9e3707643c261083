//! The case table: RFC 6455 walked section by section the way the Autobahn testsuite does
//! (1 framing, 2 ping/pong, 3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8, 7 closing,
//! 9 limits and performance, 10 misc), plus the opening handshake (`H`, see `handshake.rs`).
//!
//! Numbers that exist in Autobahn mean the same thing here; numbers Autobahn does not have are
//! ours (for example 1.3 "split at every byte boundary", 7.14 "every close code 0–5000").
//!
//! Every case is written once, role-neutral: the raw peer masks its frames as its side requires
//! (a client masks, a server does not), so the same table runs against gangway as a server and as
//! a client.

use std::time::Duration;

use crate::peer::{Frame, BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT};
use crate::samples::{self, KOSME};

/// Pause between the pieces of a frame split on purpose, so that each piece reaches gangway in a
/// read of its own (TCP gives no guarantee; loopback with no delay is reliable in practice).
pub(crate) const SPLIT_PAUSE: Duration = Duration::from_millis(2);

/// Which role of gangway a case applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Roles {
    Both,
    Server,
    Client,
}

/// The role gangway plays in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Server,
    Client,
}

impl Role {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

/// What gangway is expected to send back, in order: echoed messages (same type, same bytes) and
/// pongs. Pings gangway might send on its own are not replies.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Pong(Vec<u8>),
}

/// One thing the raw peer does.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    /// Write the frames in one write.
    Send(Vec<Frame>),
    /// Write the frames' bytes in pieces of `size` bytes, pausing between pieces.
    Chop {
        frames: Vec<Frame>,
        size: usize,
        pause: Duration,
    },
    /// One write per frame, pausing between frames.
    PerFrame { frames: Vec<Frame>, pause: Duration },
    /// Two writes, cut at `at`. With `failed_between`, gangway must have failed the connection
    /// after the first write: its close frame must arrive before the second write is made.
    SplitAt {
        frames: Vec<Frame>,
        at: Cut,
        failed_between: bool,
    },
    /// For every boundary between two bytes of the frames' encoding (up to `upto` bytes in, if
    /// set): write them in two pieces cut there. The step's replies are expected once per cut.
    SplitEverywhere {
        frames: Vec<Frame>,
        upto: Option<usize>,
    },
    /// Wait.
    Pause(Duration),
    /// Gangway must have failed the connection by now: its close frame must arrive (bounded wait)
    /// before anything more is sent.
    FailedHere,
    /// Wait until every reply expected so far has arrived (round trips).
    AwaitReplies,
}

/// Where to cut the encoding of a list of frames.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cut {
    /// After this many bytes of the encoding.
    Byte(usize),
    /// After `k` payload bytes of frame `frame` (its header, mask key included, goes first).
    Payload { frame: usize, k: usize },
}

/// An action and the replies it must cause.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub(crate) action: Action,
    pub(crate) replies: Vec<Reply>,
}

/// How the connection must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Closing {
    /// After the steps the raw peer closes with 1000; gangway answers 1000.
    Normal,
    /// The steps included the peer's close; gangway answers with this code (`None`: an empty
    /// close frame).
    Answer(Option<u16>),
    /// Gangway fails the connection: it sends a close frame with this code first.
    Fail(u16),
}

/// The opening handshake of a case.
#[derive(Clone, Debug)]
pub(crate) enum Handshake {
    /// A valid request or response; the steps run after it.
    Standard,
    /// Server role only: the peer sends this request (fixed key `dGhlIHNhbXBsZSBub25jZQ==`).
    Request(crate::handshake::RequestCase),
    /// Client role only: the peer answers with this response.
    Response(crate::handshake::ResponseCase),
}

/// One case of the table.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    /// Autobahn-like number, e.g. `5.19`.
    pub(crate) id: String,
    pub(crate) description: String,
    pub(crate) roles: Roles,
    /// Too slow for an unoptimized in-process run: only run against `GANGWAY_BIN`.
    pub(crate) heavy: bool,
    pub(crate) handshake: Handshake,
    pub(crate) steps: Vec<Step>,
    pub(crate) closing: Closing,
    /// Bound on the whole case.
    pub(crate) time_limit: Duration,
}

impl Case {
    pub(crate) fn new(id: impl Into<String>, description: impl Into<String>) -> Case {
        Case {
            id: id.into(),
            description: description.into(),
            roles: Roles::Both,
            heavy: false,
            handshake: Handshake::Standard,
            steps: Vec::new(),
            closing: Closing::Normal,
            time_limit: Duration::from_secs(15),
        }
    }

    /// Add a step.
    pub(crate) fn then(mut self, action: Action, replies: Vec<Reply>) -> Case {
        self.steps.push(Step { action, replies });
        self
    }

    /// Add a one-write step.
    pub(crate) fn send(self, frames: Vec<Frame>, replies: Vec<Reply>) -> Case {
        self.then(Action::Send(frames), replies)
    }

    pub(crate) fn closing(mut self, closing: Closing) -> Case {
        self.closing = closing;
        self
    }

    /// Gangway fails the connection with `code`.
    pub(crate) fn fails(self, code: u16) -> Case {
        self.closing(Closing::Fail(code))
    }

    pub(crate) fn only(mut self, roles: Roles) -> Case {
        self.roles = roles;
        self
    }

    pub(crate) fn heavy(mut self) -> Case {
        self.heavy = true;
        self
    }

    pub(crate) fn limit(mut self, secs: u64) -> Case {
        self.time_limit = Duration::from_secs(secs);
        self
    }

    pub(crate) fn handshake(mut self, handshake: Handshake) -> Case {
        self.handshake = handshake;
        self
    }

    pub(crate) fn applies_to(&self, role: Role) -> bool {
        match self.roles {
            Roles::Both => true,
            Roles::Server => role == Role::Server,
            Roles::Client => role == Role::Client,
        }
    }

    /// The section number: what comes before the first dot.
    pub(crate) fn section(&self) -> &str {
        self.id.split('.').next().unwrap_or_default()
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, bytes) = match self {
            Reply::Text(b) => ("text", b),
            Reply::Binary(b) => ("binary", b),
            Reply::Pong(b) => ("pong", b),
        };
        write!(f, "{kind}({})", show_bytes(bytes))
    }
}

/// Bytes for a report: short ones in full (escaped), long ones by length and a checksum.
pub(crate) fn show_bytes(bytes: &[u8]) -> String {
    if bytes.len() <= 48 {
        format!("{:?}", bytes.escape_ascii().to_string())
    } else {
        let sum = bytes
            .iter()
            .fold(0u32, |h, &b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        format!("{} bytes, checksum {sum:08x}", bytes.len())
    }
}

// ---- payloads -------------------------------------------------------------------------------

/// UTF-8 text of exactly `len` bytes mixing 1-, 2-, 3- and 4-byte characters, so that frame and
/// fragment boundaries fall inside code points.
pub(crate) fn text(len: usize) -> Vec<u8> {
    let mut out = String::with_capacity(len);
    for c in "Hello-κόσμε-€-𝄞-".chars().cycle() {
        if out.len() + c.len_utf8() > len {
            break;
        }
        out.push(c);
    }
    while out.len() < len {
        out.push('*');
    }
    out.into_bytes()
}

/// `len` bytes covering every byte value, varying with `seed`.
pub(crate) fn binary(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Printable ASCII of `len` bytes (close reasons, ping payloads).
pub(crate) fn ascii(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'!' + (i % 90) as u8).collect()
}

fn t(bytes: impl Into<Vec<u8>>) -> Reply {
    Reply::Text(bytes.into())
}

fn b(bytes: impl Into<Vec<u8>>) -> Reply {
    Reply::Binary(bytes.into())
}

fn pong(bytes: impl Into<Vec<u8>>) -> Reply {
    Reply::Pong(bytes.into())
}

/// `payload` as a message of `opcode` in fragments of `size` bytes (at least one frame).
pub(crate) fn fragments(opcode: u8, payload: &[u8], size: usize) -> Vec<Frame> {
    let pieces: Vec<&[u8]> = if payload.is_empty() {
        vec![&[]]
    } else {
        payload.chunks(size).collect()
    };
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let op = if i == 0 { opcode } else { CONTINUATION };
            Frame::new(op, p.to_vec()).fin(i == last)
        })
        .collect()
}

/// Whether a close code may be sent and must be accepted (RFC 6455 §7.4.1-2 and the IANA
/// registry): 1000–1003, 1007–1014 (1012–1014 registered by IANA), 3000–4999.
pub(crate) fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

// ---- the table ------------------------------------------------------------------------------

/// Every case, in order.
pub(crate) fn all() -> Vec<Case> {
    let mut cases = Vec::new();
    framing(&mut cases);
    ping_pong(&mut cases);
    reserved_bits(&mut cases);
    opcodes(&mut cases);
    fragmentation(&mut cases);
    utf8(&mut cases);
    closing(&mut cases);
    limits(&mut cases);
    misc(&mut cases);
    crate::handshake::cases(&mut cases);
    cases
}

/// 1: payload lengths at every length-encoding boundary, chopped frames, splits at every byte.
fn framing(cases: &mut Vec<Case>) {
    let lens = [0, 125, 126, 127, 128, 65535, 65536];
    for (kind, opcode, sub) in [("text", TEXT, 1), ("binary", BINARY, 2)] {
        let payload = |len: usize| {
            if opcode == TEXT {
                text(len)
            } else {
                binary(len, 0xfe)
            }
        };
        let reply = |p: Vec<u8>| if opcode == TEXT { t(p) } else { b(p) };
        for (i, &len) in lens.iter().enumerate() {
            let p = payload(len);
            cases.push(
                Case::new(
                    format!("1.{sub}.{}", i + 1),
                    format!("{kind} message with payload length {len}"),
                )
                .send(vec![Frame::new(opcode, p.clone())], vec![reply(p)]),
            );
        }
        let p = payload(65536);
        cases.push(
            Case::new(
                format!("1.{sub}.8"),
                format!("{kind} message of 65536 bytes sent in chops of 997 bytes"),
            )
            .then(
                Action::Chop {
                    frames: vec![Frame::new(opcode, p.clone())],
                    size: 997,
                    pause: Duration::ZERO,
                },
                vec![reply(p)],
            ),
        );
    }

    // 1.3: one connection per frame; the frame is sent again for every cut position.
    let everywhere = |id: &str, desc: &str, frames: Vec<Frame>, upto, replies| {
        Case::new(id, desc)
            .then(Action::SplitEverywhere { frames, upto }, replies)
            .limit(30)
    };
    cases.push(everywhere(
        "1.3.1",
        "text \"Hello\" split at every byte boundary",
        vec![Frame::text("Hello")],
        None,
        vec![t("Hello")],
    ));
    cases.push(everywhere(
        "1.3.2",
        "empty binary message split at every byte boundary",
        vec![Frame::binary(vec![])],
        None,
        vec![b(vec![])],
    ));
    cases.push(everywhere(
        "1.3.3",
        "125-byte binary message (7-bit length) split at every byte boundary",
        vec![Frame::binary(binary(125, 3))],
        None,
        vec![b(binary(125, 3))],
    ));
    cases.push(everywhere(
        "1.3.4",
        "126-byte text message (16-bit length) split at every byte boundary",
        vec![Frame::text(text(126))],
        None,
        vec![t(text(126))],
    ));
    cases.push(everywhere(
        "1.3.5",
        "65536-byte binary message (64-bit length) split at every boundary of its first 24 bytes",
        vec![Frame::binary(binary(65536, 5))],
        Some(24),
        vec![b(binary(65536, 5))],
    ));
    cases.push(everywhere(
        "1.3.6",
        "ping split at every byte boundary",
        vec![Frame::ping("ping")],
        None,
        vec![pong("ping")],
    ));
    cases.push(everywhere(
        "1.3.7",
        "text in two fragments with a ping between, split at every byte boundary",
        vec![
            Frame::text("Hel").fin(false),
            Frame::ping("!"),
            Frame::cont("lo"),
        ],
        None,
        vec![pong("!"), t("Hello")],
    ));
    cases.push(
        Case::new("1.3.8", "close frame sent one byte at a time")
            .then(
                Action::Chop {
                    frames: vec![Frame::close(1000, "bye")],
                    size: 1,
                    pause: SPLIT_PAUSE,
                },
                vec![],
            )
            .closing(Closing::Answer(Some(1000))),
    );

    cases.push(
        Case::new(
            "1.4.1",
            "frame masked against the rule for its sender (server: unmasked, client: masked)",
        )
        .send(vec![Frame::text("Hello").wrong_mask()], vec![])
        .fails(1002),
    );
    cases.push(
        Case::new(
            "1.4.2",
            "valid message, then a wrongly masked one: the first is echoed, then the connection fails",
        )
        .send(
            vec![Frame::text("first"), Frame::binary(vec![1, 2, 3]).wrong_mask()],
            vec![t("first")],
        )
        .fails(1002),
    );
    cases.push(
        Case::new(
            "1.4.3",
            "64-bit payload length with the most significant bit set (header only): fails at once",
        )
        .send(vec![Frame::binary(vec![]).announce(1 << 63)], vec![])
        .then(Action::FailedHere, vec![])
        .fails(1002),
    );
}

/// 2: pings are answered with the same payload, pongs are ignored, control payloads ≤ 125.
fn ping_pong(cases: &mut Vec<Case>) {
    cases.push(
        Case::new("2.1", "ping without payload")
            .send(vec![Frame::ping(vec![])], vec![pong(vec![])]),
    );
    cases.push(Case::new("2.2", "ping with a small text payload").send(
        vec![Frame::ping("Hello, world!")],
        vec![pong("Hello, world!")],
    ));
    let bin = b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff".to_vec();
    cases.push(
        Case::new("2.3", "ping with a small binary payload")
            .send(vec![Frame::ping(bin.clone())], vec![pong(bin)]),
    );
    cases.push(Case::new("2.4", "ping with a 125-byte payload").send(
        vec![Frame::ping(binary(125, 1))],
        vec![pong(binary(125, 1))],
    ));
    cases.push(
        Case::new(
            "2.5",
            "ping with a 126-byte payload: control frames are at most 125 bytes",
        )
        .send(vec![Frame::ping(binary(126, 1))], vec![])
        .fails(1002),
    );
    cases.push(
        Case::new(
            "2.6",
            "ping with a 125-byte payload sent one byte at a time",
        )
        .then(
            Action::Chop {
                frames: vec![Frame::ping(binary(125, 2))],
                size: 1,
                pause: Duration::from_millis(1),
            },
            vec![pong(binary(125, 2))],
        ),
    );
    cases.push(
        Case::new("2.7", "unsolicited pong without payload")
            .send(vec![Frame::pong(vec![])], vec![]),
    );
    cases.push(
        Case::new("2.8", "unsolicited pong with payload")
            .send(vec![Frame::pong("unsolicited pong payload")], vec![]),
    );
    cases.push(Case::new("2.9", "unsolicited pong, then a ping").send(
        vec![
            Frame::pong("unsolicited pong payload"),
            Frame::ping("ping payload"),
        ],
        vec![pong("ping payload")],
    ));
    let ten: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("payload-{i}").into_bytes())
        .collect();
    cases.push(
        Case::new("2.10", "10 pings in one write: 10 pongs in order").send(
            ten.iter().map(|p| Frame::ping(p.clone())).collect(),
            ten.iter().map(|p| pong(p.clone())).collect(),
        ),
    );
    cases.push(Case::new("2.11", "10 pings sent one byte at a time").then(
        Action::Chop {
            frames: ten.iter().map(|p| Frame::ping(p.clone())).collect(),
            size: 1,
            pause: Duration::from_millis(1),
        },
        ten.iter().map(|p| pong(p.clone())).collect(),
    ));
    cases.push(
        Case::new(
            "2.12",
            "pings of every payload length 0-125: pongs in order",
        )
        .send(
            (0..=125).map(|n| Frame::ping(binary(n, n as u8))).collect(),
            (0..=125).map(|n| pong(binary(n, n as u8))).collect(),
        ),
    );
    cases.push(
        Case::new(
            "2.13",
            "ping announcing 65536 bytes (header only): fails from the header",
        )
        .send(vec![Frame::ping(vec![]).announce(65536)], vec![])
        .then(Action::FailedHere, vec![])
        .fails(1002),
    );
    cases.push(
        Case::new("2.14", "pong with a 126-byte payload")
            .send(vec![Frame::pong(binary(126, 4))], vec![])
            .fails(1002),
    );
    cases.push(
        Case::new("2.15", "ping with a 126-byte payload in a 16-bit length, sent in two parts: fails before the payload")
            .then(
                Action::SplitAt {
                    frames: vec![Frame::ping(binary(126, 6))],
                    at: Cut::Payload { frame: 0, k: 0 },
                    failed_between: true,
                },
                vec![],
            )
            .fails(1002),
    );
}

/// 3: RSV bits without a negotiated extension fail the connection (§5.2).
fn reserved_bits(cases: &mut Vec<Case>) {
    let hello = b"Hello, world!".to_vec();
    cases.push(
        Case::new("3.1", "text with RSV=1")
            .send(vec![Frame::text(hello.clone()).rsv(1)], vec![])
            .fails(1002),
    );
    let bad_then_ping = |rsv: u8| {
        vec![
            Frame::text(hello.clone()),
            Frame::text(hello.clone()).rsv(rsv),
            Frame::ping(vec![]),
        ]
    };
    cases.push(
        Case::new(
            "3.2",
            "text, then text with RSV=2, then ping, in one write: echo, fail, no pong",
        )
        .send(bad_then_ping(2), vec![t(hello.clone())])
        .fails(1002),
    );
    cases.push(
        Case::new(
            "3.3",
            "text, then text with RSV=3, then ping, one write per frame: echo, fail, no pong",
        )
        .then(
            Action::PerFrame {
                frames: bad_then_ping(3),
                pause: SPLIT_PAUSE,
            },
            vec![t(hello.clone())],
        )
        .fails(1002),
    );
    cases.push(
        Case::new(
            "3.4",
            "text, then text with RSV=4, then ping, one byte at a time: echo, fail, no pong",
        )
        .then(
            Action::Chop {
                frames: bad_then_ping(4),
                size: 1,
                pause: Duration::from_millis(1),
            },
            vec![t(hello.clone())],
        )
        .fails(1002),
    );
    cases.push(
        Case::new("3.5", "binary with RSV=5")
            .send(vec![Frame::binary(binary(8, 0)).rsv(5)], vec![])
            .fails(1002),
    );
    cases.push(
        Case::new("3.6", "ping with RSV=6")
            .send(vec![Frame::ping(hello.clone()).rsv(6)], vec![])
            .fails(1002),
    );
    cases.push(
        Case::new("3.7", "close with RSV=7")
            .send(vec![Frame::close(1000, "").rsv(7)], vec![])
            .fails(1002),
    );
    // Every RSV combination on every frame type; the continuation continues a started message.
    let mut n = 0;
    for rsv in 1..=7u8 {
        for (name, opcode) in [
            ("text", TEXT),
            ("binary", BINARY),
            ("continuation", CONTINUATION),
            ("ping", PING),
            ("pong", PONG),
            ("close", CLOSE),
        ] {
            n += 1;
            let frame = if opcode == CLOSE {
                Frame::close(1000, "")
            } else {
                Frame::new(opcode, "abc")
            };
            let mut frames = Vec::new();
            if opcode == CONTINUATION {
                frames.push(Frame::text("start").fin(false));
            }
            frames.push(frame.rsv(rsv));
            cases.push(
                Case::new(format!("3.8.{n}"), format!("{name} frame with RSV={rsv}"))
                    .send(frames, vec![])
                    .fails(1002),
            );
        }
    }
}

/// 4: reserved opcodes fail the connection (§5.2), data (3–7) and control (11–15) alike.
fn opcodes(cases: &mut Vec<Case>) {
    let hello = b"Hello, world!".to_vec();
    for (sub, ops) in [(1, [3u8, 4, 5, 6, 7]), (2, [11, 12, 13, 14, 15])] {
        for (i, &op) in ops.iter().enumerate() {
            let id = format!("4.{sub}.{}", i + 1);
            let case = match i {
                0 => Case::new(id, format!("frame with reserved opcode {op}, no payload"))
                    .send(vec![Frame::new(op, vec![])], vec![]),
                1 => Case::new(id, format!("frame with reserved opcode {op} and a payload"))
                    .send(vec![Frame::new(op, "reserved opcode payload")], vec![]),
                2 => Case::new(
                    id,
                    format!("text, then reserved opcode {op}, then ping: echo, fail, no pong"),
                )
                .send(
                    vec![
                        Frame::text(hello.clone()),
                        Frame::new(op, vec![]),
                        Frame::ping(vec![]),
                    ],
                    vec![t(hello.clone())],
                ),
                3 => Case::new(
                    id,
                    format!(
                        "text, then reserved opcode {op} with payload, then ping: echo, fail, no pong"
                    ),
                )
                .send(
                    vec![
                        Frame::text(hello.clone()),
                        Frame::new(op, "reserved opcode payload"),
                        Frame::ping(vec![]),
                    ],
                    vec![t(hello.clone())],
                ),
                _ => Case::new(
                    id,
                    format!(
                        "text, reserved opcode {op} with payload, ping, one byte at a time: echo, fail"
                    ),
                )
                .then(
                    Action::Chop {
                        frames: vec![
                            Frame::text(hello.clone()),
                            Frame::new(op, "reserved opcode payload"),
                            Frame::ping(vec![]),
                        ],
                        size: 1,
                        pause: Duration::from_millis(1),
                    },
                    vec![t(hello.clone())],
                ),
            };
            cases.push(case.fails(1002));
        }
    }
    // Inside a fragmented message, and detected from the first byte (fail fast).
    for (i, op) in [3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15]
        .into_iter()
        .enumerate()
    {
        cases.push(
            Case::new(
                format!("4.3.{}", i + 1),
                format!(
                    "reserved opcode {op} between two fragments, first byte alone: fails at once"
                ),
            )
            .send(vec![Frame::text("frag").fin(false)], vec![])
            .then(
                Action::SplitAt {
                    frames: vec![Frame::new(op, "x"), Frame::cont("ment")],
                    at: Cut::Byte(1),
                    failed_between: true,
                },
                vec![],
            )
            .fails(1002),
        );
    }
}

/// 5: fragmentation (§5.4): legal orders reassemble, illegal ones fail, control frames may sit
/// between fragments but may not be fragmented.
fn fragmentation(cases: &mut Vec<Case>) {
    let frag = |a: &str, b_: &str| vec![Frame::text(a).fin(false), Frame::cont(b_)];
    cases.push(
        Case::new("5.1", "ping in two fragments")
            .send(
                vec![
                    Frame::ping("fragment1").fin(false),
                    Frame::cont("fragment2"),
                ],
                vec![],
            )
            .fails(1002),
    );
    cases.push(
        Case::new("5.2", "pong in two fragments")
            .send(
                vec![
                    Frame::pong("fragment1").fin(false),
                    Frame::cont("fragment2"),
                ],
                vec![],
            )
            .fails(1002),
    );
    cases.push(Case::new("5.3", "text in two fragments").send(
        frag("fragment1", "fragment2"),
        vec![t("fragment1fragment2")],
    ));
    cases.push(
        Case::new("5.4", "text in two fragments, one write per frame").then(
            Action::PerFrame {
                frames: frag("fragment1", "fragment2"),
                pause: Duration::from_millis(20),
            },
            vec![t("fragment1fragment2")],
        ),
    );
    cases.push(
        Case::new("5.5", "text in two fragments, one byte at a time").then(
            Action::Chop {
                frames: frag("fragment1", "fragment2"),
                size: 1,
                pause: Duration::from_millis(1),
            },
            vec![t("fragment1fragment2")],
        ),
    );
    let with_ping = vec![
        Frame::text("fragment1").fin(false),
        Frame::ping("pongme!"),
        Frame::cont("fragment2"),
    ];
    let ping_replies = vec![pong("pongme!"), t("fragment1fragment2")];
    cases.push(
        Case::new("5.6", "text in two fragments with a ping between")
            .send(with_ping.clone(), ping_replies.clone()),
    );
    cases.push(
        Case::new(
            "5.7",
            "text in two fragments with a ping between, one write per frame",
        )
        .then(
            Action::PerFrame {
                frames: with_ping.clone(),
                pause: SPLIT_PAUSE,
            },
            ping_replies.clone(),
        ),
    );
    cases.push(
        Case::new(
            "5.8",
            "text in two fragments with a ping between, one byte at a time",
        )
        .then(
            Action::Chop {
                frames: with_ping,
                size: 1,
                pause: Duration::from_millis(1),
            },
            ping_replies,
        ),
    );
    // Continuations with nothing to continue.
    for (sub, fin) in [(9, true), (12, false)] {
        let frames = || {
            vec![
                Frame::cont("non-continuation payload").fin(fin),
                Frame::text("Hello, world!"),
            ]
        };
        let fin_name = if fin { "FIN set" } else { "FIN clear" };
        cases.push(
            Case::new(
                format!("5.{sub}"),
                format!("continuation ({fin_name}) with nothing to continue, then text"),
            )
            .send(frames(), vec![])
            .fails(1002),
        );
        cases.push(
            Case::new(
                format!("5.{}", sub + 1),
                format!(
                    "continuation ({fin_name}) with nothing to continue, then text, one write per frame"
                ),
            )
            .then(
                Action::PerFrame {
                    frames: frames(),
                    pause: SPLIT_PAUSE,
                },
                vec![],
            )
            .fails(1002),
        );
        cases.push(
            Case::new(
                format!("5.{}", sub + 2),
                format!(
                    "continuation ({fin_name}) with nothing to continue, then text, one byte at a time"
                ),
            )
            .then(
                Action::Chop {
                    frames: frames(),
                    size: 1,
                    pause: Duration::from_millis(1),
                },
                vec![],
            )
            .fails(1002),
        );
    }
    cases.push(
        Case::new(
            "5.15",
            "text in two fragments, then a continuation with nothing to continue, then text",
        )
        .send(
            vec![
                Frame::text("fragment1").fin(false),
                Frame::cont("fragment2"),
                Frame::cont("fragment3").fin(false),
                Frame::text("fragment4"),
            ],
            vec![t("fragment1fragment2")],
        )
        .fails(1002),
    );
    for (sub, fin) in [(16, false), (17, true)] {
        let fin_name = if fin { "FIN set" } else { "FIN clear" };
        let mut frames = Vec::new();
        for _ in 0..2 {
            frames.push(Frame::cont("fragment1").fin(fin));
            frames.push(Frame::text("fragment2").fin(false));
            frames.push(Frame::cont("fragment3"));
        }
        cases.push(
            Case::new(
                format!("5.{sub}"),
                format!("twice: continuation ({fin_name}) with nothing to continue, then a fragmented text"),
            )
            .send(frames, vec![])
            .fails(1002),
        );
    }
    cases.push(
        Case::new("5.18", "text in two fragments, both with the text opcode")
            .send(
                vec![
                    Frame::text("fragment1").fin(false),
                    Frame::text("fragment2"),
                ],
                vec![],
            )
            .fails(1002),
    );
    let five = |chop: bool| {
        let mut c = Case::new(
            if chop { "5.20" } else { "5.19" },
            if chop {
                "text in 5 fragments with 2 pings between, pauses, each frame one byte at a time"
            } else {
                "text in 5 fragments with 2 pings between, pauses between frames"
            },
        );
        let groups = [
            (vec![Frame::text("fragment1").fin(false)], vec![]),
            (vec![Frame::cont("fragment2").fin(false)], vec![]),
            (vec![Frame::ping("pongme 1!")], vec![pong("pongme 1!")]),
            (vec![Frame::cont("fragment3").fin(false)], vec![]),
            (vec![Frame::ping("pongme 2!")], vec![pong("pongme 2!")]),
            (vec![Frame::cont("fragment4").fin(false)], vec![]),
            (
                vec![Frame::cont("fragment5")],
                vec![t("fragment1fragment2fragment3fragment4fragment5")],
            ),
        ];
        for (frames, replies) in groups {
            let action = if chop {
                Action::Chop {
                    frames,
                    size: 1,
                    pause: Duration::from_millis(1),
                }
            } else {
                Action::Send(frames)
            };
            c = c
                .then(action, replies)
                .then(Action::Pause(Duration::from_millis(50)), vec![]);
        }
        c
    };
    cases.push(five(false));
    cases.push(five(true));

    // Ours: 1-byte and empty fragments, controls everywhere, every illegal order.
    let bin = binary(64, 9);
    cases.push(
        Case::new("5.21", "binary message in 64 fragments of 1 byte")
            .send(fragments(BINARY, &bin, 1), vec![b(bin.clone())]),
    );
    cases.push(
        Case::new(
            "5.22",
            "text with multi-byte characters in fragments of 1 byte (code points split across frames)",
        )
        .send(fragments(TEXT, KOSME, 1), vec![t(KOSME)]),
    );
    cases.push(
        Case::new(
            "5.23",
            "fragmented message with empty first, middle and last fragments",
        )
        .send(
            vec![
                Frame::binary(vec![]).fin(false),
                Frame::cont(vec![1, 2]).fin(false),
                Frame::cont(vec![]).fin(false),
                Frame::cont(vec![3]).fin(false),
                Frame::cont(vec![]),
            ],
            vec![b(vec![1, 2, 3])],
        ),
    );
    let mut interleaved = Vec::new();
    let mut replies = Vec::new();
    for (i, f) in fragments(BINARY, &bin[..8], 1).into_iter().enumerate() {
        interleaved.push(f);
        if i < 7 {
            interleaved.push(Frame::ping(vec![i as u8]));
            interleaved.push(Frame::pong(vec![0xee]));
            replies.push(pong(vec![i as u8]));
        }
    }
    replies.push(b(bin[..8].to_vec()));
    cases.push(
        Case::new(
            "5.24",
            "binary in 8 one-byte fragments with a ping and a pong between every two",
        )
        .send(interleaved, replies),
    );
    // Every pair (message start without FIN, then a new start): must be a continuation.
    let mut n = 0;
    for (first, first_op) in [("text", TEXT), ("binary", BINARY)] {
        for (second, second_op) in [("text", TEXT), ("binary", BINARY)] {
            for fin in [false, true] {
                n += 1;
                cases.push(
                    Case::new(
                        format!("5.25.{n}"),
                        format!(
                            "{first} fragment without FIN, then a new {second} frame (FIN {})",
                            if fin { "set" } else { "clear" }
                        ),
                    )
                    .send(
                        vec![
                            Frame::new(first_op, "abc").fin(false),
                            Frame::new(second_op, "def").fin(fin),
                        ],
                        vec![],
                    )
                    .fails(1002),
                );
            }
        }
    }
    cases.push(
        Case::new(
            "5.26.1",
            "complete text message, then a continuation: echo, then fail",
        )
        .send(
            vec![Frame::text("done"), Frame::cont("more")],
            vec![t("done")],
        )
        .fails(1002),
    );
    cases.push(
        Case::new(
            "5.26.2",
            "complete fragmented binary message, then a continuation without FIN: echo, then fail",
        )
        .send(
            vec![
                Frame::binary(vec![1]).fin(false),
                Frame::cont(vec![2]),
                Frame::cont(vec![3]).fin(false),
            ],
            vec![b(vec![1, 2])],
        )
        .fails(1002),
    );
    cases.push(
        Case::new(
            "5.26.3",
            "close frame without FIN (fragmented control frame)",
        )
        .send(vec![Frame::close(1000, "").fin(false)], vec![])
        .fails(1002),
    );
    // Legal orders: start, 0/1/3 middles, end; both kinds; messages back to back.
    let mut n = 0;
    for (kind, op) in [("text", TEXT), ("binary", BINARY)] {
        for middles in [0usize, 1, 3] {
            n += 1;
            let mut frames = vec![Frame::new(op, "s").fin(false)];
            for _ in 0..middles {
                frames.push(Frame::cont("m").fin(false));
            }
            frames.push(Frame::cont("e"));
            let whole = format!("s{}e", "m".repeat(middles)).into_bytes();
            frames.push(Frame::new(op, "next"));
            let replies = if op == TEXT {
                vec![t(whole), t("next")]
            } else {
                vec![b(whole), b("next")]
            };
            cases.push(
                Case::new(
                    format!("5.27.{n}"),
                    format!(
                        "{kind} message in {} fragments, then an unfragmented one",
                        middles + 2
                    ),
                )
                .send(frames, replies),
            );
        }
    }
}

/// 6: text must be UTF-8 (§8.1); invalid text fails with 1007 as soon as it cannot be valid,
/// inside a frame and across fragments.
fn utf8(cases: &mut Vec<Case>) {
    cases.push(
        Case::new("6.1.1", "empty text message").send(vec![Frame::text(vec![])], vec![t(vec![])]),
    );
    cases.push(
        Case::new("6.1.2", "text message in three empty fragments").send(
            vec![
                Frame::text(vec![]).fin(false),
                Frame::cont(vec![]).fin(false),
                Frame::cont(vec![]),
            ],
            vec![t(vec![])],
        ),
    );
    cases.push(
        Case::new("6.1.3", "text: empty, non-empty, empty fragment").send(
            vec![
                Frame::text(vec![]).fin(false),
                Frame::cont("middle frame payload").fin(false),
                Frame::cont(vec![]),
            ],
            vec![t("middle frame payload")],
        ),
    );
    let hello = "Hello-µ@ßöäüàá-UTF-8!!".as_bytes().to_vec();
    cases.push(
        Case::new("6.2.1", "valid UTF-8 with 2-byte characters in one frame")
            .send(vec![Frame::text(hello.clone())], vec![t(hello.clone())]),
    );
    cases.push(
        Case::new(
            "6.2.2",
            "the same in two fragments split at a code point boundary",
        )
        .send(
            vec![
                Frame::text(hello[..6].to_vec()).fin(false),
                Frame::cont(hello[6..].to_vec()),
            ],
            vec![t(hello.clone())],
        ),
    );
    cases.push(Case::new("6.2.3", "the same, one byte at a time").then(
        Action::Chop {
            frames: vec![Frame::text(hello.clone())],
            size: 1,
            pause: Duration::from_millis(1),
        },
        vec![t(hello.clone())],
    ));
    cases.push(
        Case::new(
            "6.2.4",
            "valid UTF-8 in fragments of 1 byte (fragments end inside code points)",
        )
        .send(fragments(TEXT, &hello, 1), vec![t(hello)]),
    );
    let bad = [KOSME, b"\xed\xa0\x80", b"edited"].concat();
    cases.push(
        Case::new("6.3.1", "invalid UTF-8 (a surrogate) in one frame")
            .send(vec![Frame::text(bad.clone())], vec![])
            .fails(1007),
    );
    cases.push(
        Case::new("6.3.2", "the same in fragments of 1 byte")
            .send(fragments(TEXT, &bad, 1), vec![])
            .fails(1007),
    );

    // 6.4: fail fast. The bad code point U+110000 (F4 90 80 80) is known bad at its second byte.
    let part1 = KOSME.to_vec();
    let part2 = b"\xf4\x90\x80\x80".to_vec();
    let part3 = b"edited".to_vec();
    cases.push(
        Case::new(
            "6.4.1",
            "3 fragments, the 2nd invalid: the connection fails before the 3rd is sent",
        )
        .send(
            vec![
                Frame::text(part1.clone()).fin(false),
                Frame::cont(part2.clone()).fin(false),
            ],
            vec![],
        )
        .then(Action::FailedHere, vec![])
        .send(vec![Frame::cont(part3.clone())], vec![])
        .fails(1007),
    );
    cases.push(
        Case::new(
            "6.4.2",
            "3 fragments, invalid at the 1st byte of the 2nd: fails before the 3rd is sent",
        )
        .send(
            vec![
                Frame::text([KOSME, b"\xf4"].concat()).fin(false),
                Frame::cont(b"\x90".to_vec()).fin(false),
            ],
            vec![],
        )
        .then(Action::FailedHere, vec![])
        .send(vec![Frame::cont(b"\x80\x80edited".to_vec())], vec![])
        .fails(1007),
    );
    let whole = [&part1[..], &part2, &part3].concat();
    cases.push(
        Case::new(
            "6.4.3",
            "one frame sent in two parts, the first ending just after the invalid bytes: fails before the rest",
        )
        .then(
            Action::SplitAt {
                frames: vec![Frame::text(whole.clone())],
                at: Cut::Payload { frame: 0, k: part1.len() + part2.len() },
                failed_between: true,
            },
            vec![],
        )
        .fails(1007),
    );
    cases.push(
        Case::new(
            "6.4.4",
            "one frame sent in two parts, the first ending at the first invalid byte: fails before the rest",
        )
        .then(
            Action::SplitAt {
                frames: vec![Frame::text(whole)],
                at: Cut::Payload { frame: 0, k: part1.len() + 2 },
                failed_between: true,
            },
            vec![],
        )
        .fails(1007),
    );

    // 6.5-6.23: Markus Kuhn's sequences, one frame each.
    let groups = samples::groups();
    for (gi, (title, seqs)) in groups.iter().enumerate() {
        for (si, (valid, bytes)) in seqs.iter().enumerate() {
            let id = format!("6.{}.{}", gi + 5, si + 1);
            let desc = format!(
                "{title}: {} in one frame: {}",
                crate::cases::show_bytes(bytes),
                if *valid { "echoed" } else { "fails" }
            );
            let case = Case::new(id, desc);
            cases.push(if *valid {
                case.send(vec![Frame::text(bytes.clone())], vec![t(bytes.clone())])
            } else {
                case.send(vec![Frame::text(bytes.clone())], vec![])
                    .fails(1007)
            });
        }
    }

    // Ours: every sequence split at every position, inside one frame (6.24/6.26) and as two
    // fragments (6.25/6.27). Valid ones: one connection, one echo per split. Invalid ones: one
    // connection per split; when the first part already shows the error, the close must arrive
    // before the second part is sent.
    let mut valid_n = 0;
    let mut invalid_n = 0;
    for (title, seqs) in &groups {
        for (valid, bytes) in seqs {
            if bytes.len() < 2 {
                continue;
            }
            let shown = show_bytes(bytes);
            if *valid {
                valid_n += 1;
                let mut in_frame = Case::new(
                    format!("6.24.{valid_n}"),
                    format!("{title}: {shown} in one frame, split at every payload position"),
                );
                let mut in_fragments = Case::new(
                    format!("6.25.{valid_n}"),
                    format!("{title}: {shown} in two fragments split at every position"),
                );
                for k in 1..bytes.len() {
                    in_frame = in_frame.then(
                        Action::SplitAt {
                            frames: vec![Frame::text(bytes.clone())],
                            at: Cut::Payload { frame: 0, k },
                            failed_between: false,
                        },
                        vec![t(bytes.clone())],
                    );
                    in_fragments = in_fragments.send(
                        vec![
                            Frame::text(bytes[..k].to_vec()).fin(false),
                            Frame::cont(bytes[k..].to_vec()),
                        ],
                        vec![t(bytes.clone())],
                    );
                }
                cases.push(in_frame);
                cases.push(in_fragments);
            } else {
                invalid_n += 1;
                let detect = samples::detectable_after(bytes);
                for k in 1..bytes.len() {
                    let early = detect.is_some_and(|d| d <= k);
                    let when = if early {
                        "fails before the rest is sent"
                    } else {
                        "fails"
                    };
                    cases.push(
                        Case::new(
                            format!("6.26.{invalid_n}.{k}"),
                            format!("{title}: {shown} in one frame sent in two parts cut after byte {k}: {when}"),
                        )
                        .then(
                            Action::SplitAt {
                                frames: vec![Frame::text(bytes.clone())],
                                at: Cut::Payload { frame: 0, k },
                                failed_between: early,
                            },
                            vec![],
                        )
                        .fails(1007),
                    );
                    let mut c = Case::new(
                        format!("6.27.{invalid_n}.{k}"),
                        format!("{title}: {shown} in two fragments cut after byte {k}: {when}"),
                    )
                    .send(vec![Frame::text(bytes[..k].to_vec()).fin(false)], vec![]);
                    if early {
                        c = c.then(Action::FailedHere, vec![]);
                    }
                    cases.push(
                        c.send(vec![Frame::cont(bytes[k..].to_vec())], vec![])
                            .fails(1007),
                    );
                }
            }
        }
    }
}

/// 7: the close handshake (§5.5.1, §7): answers, codes, reasons, and what follows a close.
fn closing(cases: &mut Vec<Case>) {
    let answered = Closing::Answer(Some(1000));
    cases.push(
        Case::new(
            "7.1.1",
            "text message, then close: echo, then the close is answered",
        )
        .send(
            vec![Frame::text("Hello World!"), Frame::close(1000, "")],
            vec![t("Hello World!")],
        )
        .closing(answered),
    );
    cases.push(
        Case::new("7.1.2", "two close frames: the second is ignored")
            .send(vec![Frame::close(1000, ""), Frame::close(1000, "")], vec![])
            .closing(answered),
    );
    cases.push(
        Case::new("7.1.3", "close, then ping: no pong after the close")
            .send(vec![Frame::close(1000, ""), Frame::ping("ping")], vec![])
            .closing(answered),
    );
    cases.push(
        Case::new("7.1.4", "close, then text: no echo after the close")
            .send(vec![Frame::close(1000, ""), Frame::text("after")], vec![])
            .closing(answered),
    );
    cases.push(
        Case::new(
            "7.1.5",
            "text fragment, close, last fragment: the message is dropped, the close answered",
        )
        .send(
            vec![
                Frame::text("fragment1").fin(false),
                Frame::close(1000, ""),
                Frame::cont("fragment2"),
            ],
            vec![],
        )
        .closing(answered),
    );
    let big = binary(256 << 10, 7);
    cases.push(
        Case::new(
            "7.1.6",
            "256 KiB message, close, ping, in one write: echo, close answered, no pong",
        )
        .send(
            vec![
                Frame::binary(big.clone()),
                Frame::close(1000, ""),
                Frame::ping("ping"),
            ],
            vec![b(big)],
        )
        .closing(answered),
    );
    cases.push(
        Case::new(
            "7.1.7",
            "binary fragment, close during the fragmented message: close answered",
        )
        .send(
            vec![Frame::binary(vec![1, 2]).fin(false), Frame::close(1000, "")],
            vec![],
        )
        .closing(answered),
    );
    cases.push(
        Case::new(
            "7.1.8",
            "close, then a frame that breaks the rules: ignored, not parsed",
        )
        .send(
            vec![Frame::close(1000, ""), Frame::text("x").rsv(7)],
            vec![],
        )
        .closing(answered),
    );
    cases.push(
        Case::new(
            "7.1.9",
            "close, then bytes that are no frame at all: ignored",
        )
        .send(vec![Frame::close(1000, "")], vec![])
        .send(vec![Frame::new(0xF, vec![0xff; 40]).rsv(7)], vec![])
        .closing(answered),
    );

    cases.push(
        Case::new(
            "7.3.1",
            "close with an empty payload: answered with an empty close",
        )
        .send(vec![Frame::new(CLOSE, vec![])], vec![])
        .closing(Closing::Answer(None)),
    );
    cases.push(
        Case::new("7.3.2", "close with a 1-byte payload")
            .send(vec![Frame::new(CLOSE, vec![0x03])], vec![])
            .fails(1002),
    );
    cases.push(
        Case::new("7.3.3", "close 1000 without reason")
            .send(vec![Frame::close(1000, "")], vec![])
            .closing(answered),
    );
    cases.push(
        Case::new("7.3.4", "close 1000 with a short reason")
            .send(vec![Frame::close(1000, "Hello World!")], vec![])
            .closing(answered),
    );
    cases.push(
        Case::new("7.3.5", "close 1000 with a 123-byte reason (payload 125)")
            .send(vec![Frame::close(1000, ascii(123))], vec![])
            .closing(answered),
    );
    cases.push(
        Case::new("7.3.6", "close 1000 with a 124-byte reason (payload 126)")
            .send(vec![Frame::close(1000, ascii(124))], vec![])
            .fails(1002),
    );
    for n in 0..=123 {
        cases.push(
            Case::new(
                format!("7.3.7.{n}"),
                format!("close 1000 with a reason of {n} bytes"),
            )
            .send(vec![Frame::close(1000, ascii(n))], vec![])
            .closing(answered),
        );
    }
    cases.push(
        Case::new(
            "7.3.8",
            "close 1000 with a 123-byte reason of 3-byte characters",
        )
        .send(vec![Frame::close(1000, "€".repeat(41))], vec![])
        .closing(answered),
    );
    cases.push(
        Case::new(
            "7.3.9",
            "close 4000 with a reason split across a byte-at-a-time write",
        )
        .then(
            Action::Chop {
                frames: vec![Frame::close(4000, "κόσμε")],
                size: 1,
                pause: Duration::from_millis(1),
            },
            vec![],
        )
        .closing(Closing::Answer(Some(4000))),
    );

    cases.push(
        Case::new("7.5.1", "close 1000 with an invalid UTF-8 reason")
            .send(
                vec![Frame::close(
                    1000,
                    [KOSME, b"\xed\xa0\x80", b"edited"].concat(),
                )],
                vec![],
            )
            .fails(1007),
    );
    let mut n = 0;
    for (title, seqs) in samples::groups() {
        for (valid, bytes) in seqs {
            if bytes.len() > 123 {
                continue;
            }
            n += 1;
            let case = Case::new(
                format!("7.5.2.{n}"),
                format!("close 1000 with reason {}: {title}", show_bytes(&bytes)),
            )
            .send(vec![Frame::close(1000, &bytes)], vec![]);
            cases.push(if valid {
                case.closing(answered)
            } else {
                case.fails(1007)
            });
        }
    }

    let valid = [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ];
    for (i, code) in valid.into_iter().enumerate() {
        cases.push(
            Case::new(
                format!("7.7.{}", i + 1),
                format!("close with valid code {code}: answered with {code}"),
            )
            .send(vec![Frame::close(code, "")], vec![])
            .closing(Closing::Answer(Some(code))),
        );
    }
    let invalid = [0u16, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999];
    for (i, code) in invalid.into_iter().enumerate() {
        cases.push(
            Case::new(
                format!("7.9.{}", i + 1),
                format!("close with invalid code {code}"),
            )
            .send(vec![Frame::close(code, "")], vec![])
            .fails(1002),
        );
    }
    cases.push(
        Case::new("7.13.1", "close with code 5000 (outside every range)")
            .send(vec![Frame::close(5000, "")], vec![])
            .fails(1002),
    );
    cases.push(
        Case::new("7.13.2", "close with code 65535")
            .send(vec![Frame::close(65535, "")], vec![])
            .fails(1002),
    );
    for code in 0..=5000u16 {
        let case = Case::new(format!("7.14.{code}"), format!("close with code {code}"))
            .send(vec![Frame::close(code, "")], vec![]);
        cases.push(if valid_close_code(code) {
            case.closing(Closing::Answer(Some(code)))
        } else {
            case.fails(1002)
        });
    }
}

/// 9: large messages whole and fragmented, tiny TCP chops, round trips and bursts. The echo must
/// come back intact and in order. Heavy cases only run against a release binary.
fn limits(cases: &mut Vec<Case>) {
    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;
    let sizes = [64 * KIB, 256 * KIB, MIB, 4 * MIB, 8 * MIB, 16 * MIB];
    for (sub, kind, op) in [(1, "text", TEXT), (2, "binary", BINARY)] {
        for (i, &size) in sizes.iter().enumerate() {
            let p = if op == TEXT {
                text(size)
            } else {
                binary(size, i as u8)
            };
            let reply = if op == TEXT {
                t(p.clone())
            } else {
                b(p.clone())
            };
            let mut c = Case::new(
                format!("9.{sub}.{}", i + 1),
                format!("{kind} message of {}", human(size)),
            )
            .send(vec![Frame::new(op, p)], vec![reply])
            .limit(60);
            if size > 4 * MIB {
                c = c.heavy();
            }
            cases.push(c);
        }
    }
    let frag_sizes = [
        64,
        256,
        KIB,
        4 * KIB,
        16 * KIB,
        64 * KIB,
        256 * KIB,
        MIB,
        4 * MIB,
    ];
    for (sub, kind, op) in [(3, "text", TEXT), (4, "binary", BINARY)] {
        let p = if op == TEXT {
            text(4 * MIB)
        } else {
            binary(4 * MIB, 77)
        };
        for (i, &frag) in frag_sizes.iter().enumerate() {
            let reply = if op == TEXT {
                t(p.clone())
            } else {
                b(p.clone())
            };
            cases.push(
                Case::new(
                    format!("9.{sub}.{}", i + 1),
                    format!("{kind} message of 4 MiB in fragments of {}", human(frag)),
                )
                .send(fragments(op, &p, frag), vec![reply])
                .limit(60),
            );
        }
    }
    for (sub, kind, op) in [(5, "text", TEXT), (6, "binary", BINARY)] {
        let p = if op == TEXT {
            text(MIB)
        } else {
            binary(MIB, 11)
        };
        for (i, chop) in [64usize, 128, 256, 512, 1024, 2048].into_iter().enumerate() {
            let reply = if op == TEXT {
                t(p.clone())
            } else {
                b(p.clone())
            };
            let c = Case::new(
                format!("9.{sub}.{}", i + 1),
                format!("{kind} message of 1 MiB written in TCP chops of {chop} bytes"),
            )
            .then(
                Action::Chop {
                    frames: vec![Frame::new(op, p.clone())],
                    size: chop,
                    pause: Duration::ZERO,
                },
                vec![reply],
            )
            .limit(60);
            cases.push(c);
        }
    }
    for (sub, kind, op) in [(7, "text", TEXT), (8, "binary", BINARY)] {
        for (i, size) in [0usize, 16, 64, 256, 1024, 4096].into_iter().enumerate() {
            let mut c = Case::new(
                format!("9.{sub}.{}", i + 1),
                format!("1000 {kind} messages of {size} bytes, one round trip each"),
            )
            .limit(60);
            for m in 0..1000 {
                let p = if op == TEXT {
                    text(size)
                } else {
                    binary(size, m as u8)
                };
                let reply = if op == TEXT {
                    t(p.clone())
                } else {
                    b(p.clone())
                };
                c = c
                    .send(vec![Frame::new(op, p)], vec![reply])
                    .then(Action::AwaitReplies, vec![]);
            }
            cases.push(c);
        }
    }
    // Ours: bursts, 16 MiB in fragments, hostile headers.
    let mut rng = crate::peer::Rng::new(99);
    let mut burst = Vec::new();
    let mut replies = Vec::new();
    for m in 0..1000usize {
        let size = (rng.next_u32() % 2048) as usize;
        if m % 2 == 0 {
            burst.push(Frame::text(text(size)));
            replies.push(t(text(size)));
        } else {
            burst.push(Frame::binary(binary(size, m as u8)));
            replies.push(b(binary(size, m as u8)));
        }
    }
    cases.push(
        Case::new(
            "9.9.1",
            "burst: 1000 text and binary messages of 0-2 KiB in one write, echoed in order",
        )
        .send(burst, replies)
        .limit(60),
    );
    let mut burst = Vec::new();
    let mut replies = Vec::new();
    for m in 0..100usize {
        let p = binary(64 * KIB, m as u8);
        burst.extend(fragments(BINARY, &p, 16 * KIB));
        replies.push(b(p));
    }
    cases.push(
        Case::new(
            "9.9.2",
            "burst: 100 binary messages of 64 KiB in 16 KiB fragments in one write",
        )
        .send(burst, replies)
        .limit(60),
    );
    for (i, frag) in [MIB, 4 * MIB].into_iter().enumerate() {
        let p = text(16 * MIB);
        cases.push(
            Case::new(
                format!("9.10.{}", i + 1),
                format!("text message of 16 MiB in fragments of {}", human(frag)),
            )
            .send(fragments(TEXT, &p, frag), vec![t(p.clone())])
            .limit(60)
            .heavy(),
        );
    }
    cases.push(
        Case::new(
            "9.11.1",
            "header announcing 2^62 payload bytes (header only): refused with 1009 at once",
        )
        .send(vec![Frame::binary(vec![]).announce(1 << 62)], vec![])
        .then(Action::FailedHere, vec![])
        .fails(1009),
    );
    cases.push(
        Case::new(
            "9.11.2",
            "text header announcing 65 MiB, over the default 64 MiB limit (header only): 1009 at once",
        )
        .send(vec![Frame::text(vec![]).announce(65 << 20)], vec![])
        .then(Action::FailedHere, vec![])
        .fails(1009),
    );
}

/// 10: miscellaneous.
fn misc(cases: &mut Vec<Case>) {
    let p = text(65536);
    cases.push(
        Case::new(
            "10.1.1",
            "text message of 65536 bytes in fragments of 1300 bytes",
        )
        .send(fragments(TEXT, &p, 1300), vec![t(p.clone())]),
    );
}

fn human(n: usize) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}
