//! Compression (RFC 7692 permessage-deflate), walked the way the Autobahn testsuite's sections 12
//! and 13 do, plus the frames a misbehaving peer could send (section 14, ours). Every case runs
//! against gangway as a server and as a client, and each case's time is measured.
//!
//! - 12: echo of compressed messages of 16 B to 128 KiB under the default parameters: compressible
//!   text (12.1), incompressible binary (12.2), prose (12.3), compressible binary (12.4), and
//!   compressible binary sent in 256-byte frames (12.5).
//! - 13: the same under every parameter: each offer of Autobahn 13.1–13.7 (context takeover off
//!   either way, window bits 8, 9 and 15, several offers at once), and the server's own choices.
//! - 14: the RFC 7692 §7.2.3 example frames; uncompressed messages between compressed ones; a ping
//!   between the frames of a compressed message; RSV1 on a continuation or control frame (1002);
//!   data that does not inflate (1007); text that is not UTF-8 once inflated (1007); a bomb that
//!   inflates past the message size limit (1009).
//!
//! The raw peer (the other end, scripted here) negotiates in its own handshake, compresses and
//! inflates with gangway's codec (independent implementations are the interop suites' job), and
//! checks every frame gangway sends: masking for its role, no RSV2/RSV3, RSV1 only on the first
//! frame of a data message, and that gangway compressed exactly the echoes it should (everything
//! from its 32-byte threshold up, nothing when its window is limited to 8 bits): the extension was
//! negotiated AND used.
//!
//! Message counts: a few per size in an unoptimized in-process run; Autobahn-like counts (up to
//! 1000 per case) against `GANGWAY_BIN` or with `GANGWAY_CONFORMANCE_HEAVY=1`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gangway::proto::extensions::permessage_deflate::{
    Compressor, DeflateParams, PerMessageDeflate,
};
use gangway::proto::handshake::ExtensionOffer;
use gangway::proto::Role as ProtoRole;
use gangway::{ClientBuilder, Config, DeflateConfig, Message, ServerBuilder};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::peer::{
    accept_for, base64_encode, encode_all, read_head, spawn_reader, Frame, Head, Incoming, Rng,
    Side, BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT,
};
use crate::target::Target;

/// One wait: a handshake, an echo, a close.
const PROMPT: Duration = Duration::from_secs(15);

/// Cases run at the same time.
const PARALLEL: usize = 4;

/// gangway's compression threshold with `DeflateConfig::default()` (the CLI's too).
const THRESHOLD: usize = 32;

/// RSV1, the "Per-Message Compressed" bit, in `Frame::rsv` / `Received::rsv`.
const RSV1: u8 = 0b100;

/// Message sizes of Autobahn 12.x and 13.x.
const SIZES: [usize; 10] = [16, 64, 256, 1024, 4096, 8192, 16384, 32768, 65536, 131_072];

/// The offer gangway's client sends (`DeflateConfig::default()`, `gangway connect --deflate`).
const CLIENT_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// What the peer sends in a step.
#[derive(Clone, Debug)]
enum Step {
    /// A message, compressed by the peer (RSV1) or not, in frames of at most `frame` bytes of
    /// payload; gangway must echo it.
    Echo {
        opcode: u8,
        payload: Vec<u8>,
        compressed: bool,
        frame: Option<usize>,
    },
    /// These frames as they are (made for a fresh connection); then these echoes (opcode,
    /// inflated payload) and pongs are expected.
    Raw {
        frames: Vec<Frame>,
        echoes: Vec<(u8, Vec<u8>)>,
        pongs: usize,
    },
}

/// How gangway ends the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The peer closes with 1000 after the steps; gangway answers 1000.
    Normal,
    /// gangway fails the connection with this code after the steps.
    Fail(u16),
}

#[derive(Clone, Debug)]
struct Case {
    id: String,
    description: String,
    /// Server role: what the raw client offers, and gangway's exact answer. `None`: the case
    /// does not apply to the server role.
    server: Option<(String, String)>,
    /// Client role: the raw server's answer to gangway's offer. `None`: server role only.
    client: Option<String>,
    steps: Vec<Step>,
    ending: Ending,
    /// A server with this message size limit (the bomb).
    max_message_size: Option<usize>,
}

impl Case {
    fn new(id: impl Into<String>, description: impl Into<String>) -> Case {
        Case {
            id: id.into(),
            description: description.into(),
            server: Some(("permessage-deflate".into(), "permessage-deflate".into())),
            client: Some("permessage-deflate".into()),
            steps: Vec::new(),
            ending: Ending::Normal,
            max_message_size: None,
        }
    }

    /// The server role: the peer offers `offer` and gangway answers `answer`. The client role:
    /// the peer answers `answer` to gangway's offer, if that answers it.
    fn negotiate(mut self, offer: &str, answer: &str) -> Case {
        self.server = Some((offer.into(), answer.into()));
        self.client = Some(answer.into());
        self
    }

    fn server_only(mut self) -> Case {
        self.client = None;
        self
    }

    fn step(mut self, step: Step) -> Case {
        self.steps.push(step);
        self
    }

    fn fails(mut self, code: u16) -> Case {
        self.ending = Ending::Fail(code);
        self
    }

    fn section(&self) -> &str {
        self.id.split('.').next().unwrap_or_default()
    }
}

fn echo(opcode: u8, payload: Vec<u8>) -> Step {
    Step::Echo {
        opcode,
        payload,
        compressed: true,
        frame: None,
    }
}

/// How many messages of `size` bytes a case sends.
fn count(size: usize, heavy: bool) -> usize {
    if heavy {
        (8 << 20) / size.max(1)
    } else {
        (128 << 10) / size.max(1)
    }
    .clamp(2, if heavy { 1000 } else { 50 })
}

/// JSON-like text: compresses more than tenfold.
fn json_text(len: usize, seed: u64) -> Vec<u8> {
    let mut out = String::with_capacity(len + 64);
    let mut i = seed;
    while out.len() < len {
        out.push_str(&format!(
            "{{\"id\":{i},\"name\":\"gangway\",\"tags\":[\"ws\",\"deflate\"],\"ok\":true}},"
        ));
        i += 1;
    }
    out.truncate(len);
    out.into_bytes()
}

/// Prose with 2-, 3- and 4-byte characters (Autobahn 12.3 uses a fairy tale), cut at a
/// character boundary at or below `len`.
fn prose(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "Snow ",
        "White ",
        "mirror ",
        "on ",
        "the ",
        "wall, ",
        "forêt ",
        "königin ",
        "— ",
        "sept ",
        "nains 🍎 ",
        "schön. ",
    ];
    let mut rng = Rng::new(seed);
    let mut out = String::with_capacity(len + 16);
    loop {
        let word = WORDS[(rng.next_u32() % 12) as usize];
        if out.len() + word.len() > len {
            break;
        }
        out.push_str(word);
    }
    while out.len() < len {
        out.push('.');
    }
    out.into_bytes()
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    Rng::new(seed).fill(&mut out);
    out
}

/// Binary that compresses: records with a counter.
fn records(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    let mut i = seed as u32;
    while out.len() < len {
        out.extend_from_slice(&i.to_le_bytes());
        out.extend_from_slice(&[0xAB, 0xCD, 0, 0, 1, 2, 3, 4]);
        i = i.wrapping_add(1);
    }
    out.truncate(len);
    out
}

/// `data` compressed as the first message of a fresh connection (window 15).
fn fresh_deflate(data: &[u8], fin: bool) -> Vec<u8> {
    let mut out = Vec::new();
    Compressor::new(15, 6, false).compress(data, fin, &mut out);
    out
}

/// The whole table.
fn all(heavy: bool) -> Vec<Case> {
    let mut cases = Vec::new();
    // 12: default parameters, every size.
    type Gen = fn(usize, u64) -> Vec<u8>;
    let kinds: [(u32, &str, u8, Gen, Option<usize>); 5] = [
        (1, "compressible text", TEXT, json_text, None),
        (2, "incompressible binary", BINARY, random, None),
        (3, "prose text", TEXT, prose, None),
        (4, "compressible binary", BINARY, records, None),
        (
            5,
            "compressible binary in 256-byte frames",
            BINARY,
            records,
            Some(256),
        ),
    ];
    for (sub, what, opcode, gen, frame) in kinds {
        for (i, &size) in SIZES.iter().enumerate() {
            let mut case = Case::new(
                format!("12.{sub}.{}", i + 1),
                format!("{} × {what} of {size} bytes", count(size, heavy)),
            );
            for m in 0..count(size, heavy) {
                case = case.step(Step::Echo {
                    opcode,
                    payload: gen(size, m as u64),
                    compressed: true,
                    frame,
                });
            }
            cases.push(case);
        }
    }

    // 13: every parameter. (offer, gangway's answer) as Autobahn 13.1-13.7 offer them, then ours.
    let params: [(&str, &str, &str); 10] = [
        ("13.1", "permessage-deflate", "permessage-deflate"),
        (
            "13.2",
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
        ),
        (
            "13.3",
            "permessage-deflate; client_max_window_bits=8",
            "permessage-deflate; client_max_window_bits=8",
        ),
        (
            "13.4",
            "permessage-deflate; client_max_window_bits=15",
            "permessage-deflate",
        ),
        (
            "13.5",
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=9",
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=9",
        ),
        (
            "13.6",
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=15",
            "permessage-deflate; client_no_context_takeover",
        ),
        (
            "13.7",
            "permessage-deflate; foo=1, permessage-deflate; client_no_context_takeover; \
             client_max_window_bits, permessage-deflate",
            "permessage-deflate; client_no_context_takeover",
        ),
        (
            "13.8",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
        ),
        (
            "13.9",
            "permessage-deflate; server_max_window_bits=9; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=9",
        ),
        (
            "13.10",
            "permessage-deflate; server_max_window_bits=8; server_no_context_takeover; \
             client_no_context_takeover; client_max_window_bits=12",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=8; client_max_window_bits=12",
        ),
    ];
    for (id, offer, answer) in params {
        for (i, &size) in SIZES.iter().enumerate() {
            let mut case = Case::new(
                format!("{id}.{}", i + 1),
                format!(
                    "{} × text of {size} bytes; offer {offer}",
                    count(size, heavy)
                ),
            )
            .negotiate(offer, answer);
            if id == "13.7" {
                // Several offers: only a server chooses among them.
                case = case.server_only();
            }
            for m in 0..count(size, heavy) {
                case = case.step(echo(TEXT, json_text(size, m as u64)));
            }
            cases.push(case);
        }
    }

    // 14: RFC 7692 §7.2.3 frames and misbehaving peers.
    let hello = b"Hello".to_vec();
    cases.push(
        Case::new(
            "14.1",
            "RFC 7692 §7.2.3: one block, a back reference, a stored block, BFINAL, two blocks",
        )
        .step(Step::Raw {
            frames: rfc_7692_examples(true),
            echoes: vec![(TEXT, hello.clone()); 6],
            pongs: 0,
        }),
    );
    cases.push(
        Case::new("14.2", "uncompressed messages between compressed ones")
            .step(echo(TEXT, json_text(1000, 1)))
            .step(Step::Echo {
                opcode: BINARY,
                payload: records(5000, 2),
                compressed: false,
                frame: None,
            })
            .step(Step::Echo {
                opcode: TEXT,
                payload: json_text(100, 3),
                compressed: false,
                frame: Some(7),
            })
            .step(echo(TEXT, json_text(1000, 1))),
    );
    let first = fresh_deflate(&json_text(3000, 4), true);
    let (a, b) = first.split_at(first.len() / 2);
    cases.push(
        Case::new("14.3", "a ping between the frames of a compressed message").step(Step::Raw {
            frames: vec![
                Frame::text(a.to_vec()).rsv(RSV1).fin(false),
                Frame::ping(b"between".to_vec()),
                Frame::cont(b.to_vec()),
            ],
            echoes: vec![(TEXT, json_text(3000, 4))],
            pongs: 1,
        }),
    );
    let hello_deflated = fresh_deflate(&hello, true);
    cases.push(
        Case::new("14.4", "RSV1 on a continuation frame: 1002")
            .step(Step::Raw {
                frames: vec![
                    Frame::text(hello_deflated[..3].to_vec())
                        .rsv(RSV1)
                        .fin(false),
                    Frame::cont(hello_deflated[3..].to_vec()).rsv(RSV1),
                ],
                echoes: vec![],
                pongs: 0,
            })
            .fails(1002),
    );
    cases.push(
        Case::new("14.5", "RSV1 on a ping: 1002")
            .step(Step::Raw {
                frames: vec![Frame::ping(b"p".to_vec()).rsv(RSV1)],
                echoes: vec![],
                pongs: 0,
            })
            .fails(1002),
    );
    cases.push(
        Case::new("14.6", "RSV2 with permessage-deflate: 1002")
            .step(Step::Raw {
                frames: vec![Frame::text(hello_deflated.clone()).rsv(RSV1 | 0b010)],
                echoes: vec![],
                pongs: 0,
            })
            .fails(1002),
    );
    cases.push(
        Case::new("14.7", "compressed data that does not inflate: 1007")
            .step(Step::Raw {
                frames: vec![Frame::binary(vec![0xff, 0xff, 0xff, 0xff]).rsv(RSV1)],
                echoes: vec![],
                pongs: 0,
            })
            .fails(1007),
    );
    let mut bad_text = json_text(2000, 5);
    bad_text.extend_from_slice(b"\xed\xa0\x80 surrogate");
    cases.push(
        Case::new("14.8", "text that is not UTF-8 once inflated: 1007")
            .step(Step::Raw {
                frames: vec![Frame::text(fresh_deflate(&bad_text, true)).rsv(RSV1)],
                echoes: vec![],
                pongs: 0,
            })
            .fails(1007),
    );
    let mut bomb = Case::new(
        "14.9",
        "a 32 KiB message, then 80 MiB of zeros compressed to 80 KB: 1009 at the limit (1 MiB; \
         the CLI client's default 64 MiB)",
    )
    .step(Step::Raw {
        frames: vec![Frame::binary(fresh_deflate(&vec![0; 32 << 10], true)).rsv(RSV1)],
        echoes: vec![(BINARY, vec![0; 32 << 10])],
        pongs: 0,
    })
    .step(Step::Raw {
        frames: vec![Frame::binary(bomb_payload()).rsv(RSV1)],
        echoes: vec![],
        pongs: 0,
    })
    .fails(1009);
    // The CLI client has no size limit option and keeps its default, 64 MiB.
    bomb.max_message_size = Some(1 << 20);
    cases.push(bomb);
    cases
}

/// The cases for a server in `mode`. With [`ServerMode::Shared`] every answer also has
/// `server_no_context_takeover; client_no_context_takeover` (a server may add them to any
/// answer, RFC 7692 §7.1.1.1, §7.1.1.2). With [`ServerMode::Window`] every answer has
/// `server_no_context_takeover`, and either `client_max_window_bits` at most 12 (when offered,
/// §7.1.2.2) or `client_no_context_takeover`. Without client context takeover, a back reference
/// into the client's previous message, which it was told not to make, fails with 1007 instead
/// of inflating.
fn for_server_mode(mut cases: Vec<Case>, mode: ServerMode) -> Vec<Case> {
    if mode == ServerMode::Takeover {
        return cases;
    }
    for case in &mut cases {
        if let Some((_, answer)) = &mut case.server {
            *answer = match mode {
                ServerMode::Window => window_answer(&case.id).to_owned(),
                _ => without_context_takeover(answer),
            };
        }
        if case.id == "14.1" {
            // Its second frame is §7.2.3.2's back reference: the case without it, and the back
            // reference alone in a case of its own.
            case.server = None;
        }
    }
    let hello = b"Hello".to_vec();
    let hello_and_back_reference = vec![
        Frame::text([0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).rsv(RSV1),
        Frame::text([0xf2, 0x00, 0x11, 0x00, 0x00]).rsv(RSV1),
    ];
    let answer = without_context_takeover("permessage-deflate");
    let mut rfc_examples = Case::new(
        "14.1s",
        "RFC 7692 §7.2.3 without context takeover: one block, a stored block, BFINAL, two blocks",
    )
    .step(Step::Raw {
        frames: rfc_7692_examples(false),
        echoes: vec![(TEXT, hello.clone()); 5],
        pongs: 0,
    })
    .server_only();
    rfc_examples.server = Some(("permessage-deflate".into(), answer.clone()));
    cases.push(rfc_examples);
    let mut back_reference = Case::new(
        "14.10",
        "a back reference into the previous message after client_no_context_takeover: 1007",
    )
    .step(Step::Raw {
        frames: hello_and_back_reference.clone(),
        echoes: vec![(TEXT, hello.clone())],
        pongs: 0,
    })
    .server_only()
    .fails(1007);
    back_reference.server = Some(("permessage-deflate".into(), answer));
    cases.push(back_reference);
    if mode == ServerMode::Window {
        // The server keeps only the client's window between messages: enough for §7.2.3.2.
        let offer = "permessage-deflate; client_max_window_bits";
        let mut within_window = Case::new(
            "14.11",
            "RFC 7692 §7.2.3.2: a back reference into the previous message, within the client's \
             window",
        )
        .step(Step::Raw {
            frames: hello_and_back_reference,
            echoes: vec![(TEXT, hello); 2],
            pongs: 0,
        })
        .server_only();
        within_window.server = Some((offer.into(), window_answer("14.11").to_owned()));
        cases.push(within_window);
    }
    cases
}

/// What a server in [`ServerMode::Window`] (12-bit client windows) answers to the offer of the
/// case `id`: the offers of section 13 (see `all`), or a bare `permessage-deflate` (the other
/// cases), or `permessage-deflate; client_max_window_bits` (14.11).
fn window_answer(id: &str) -> &'static str {
    let section: String = id.split('.').take(2).collect::<Vec<_>>().join(".");
    match section.as_str() {
        "13.3" => "permessage-deflate; server_no_context_takeover; client_max_window_bits=8",
        "13.4" | "14.11" => {
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=12"
        }
        "13.5" => {
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             client_max_window_bits=9"
        }
        "13.6" | "13.7" => {
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             client_max_window_bits=12"
        }
        "13.9" => {
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9; \
             client_max_window_bits=12"
        }
        "13.10" => {
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=8; client_max_window_bits=12"
        }
        // No client_max_window_bits offered: the client's window cannot be bounded.
        _ => "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    }
}

/// `answer` (a permessage-deflate answer as gangway writes it) with both context takeover
/// parameters, in gangway's order: the two flags, then the window sizes.
fn without_context_takeover(answer: &str) -> String {
    let mut params: Vec<&str> = vec![
        "permessage-deflate",
        "server_no_context_takeover",
        "client_no_context_takeover",
    ];
    params.extend(
        answer
            .split("; ")
            .skip(1)
            .filter(|p| !p.ends_with("context_takeover")),
    );
    params.join("; ")
}

/// How a gangway server under test compresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerMode {
    /// The library's `DeflateConfig::default()`: the offer's parameters, context takeover where
    /// the client allows it.
    Takeover,
    /// No context takeover either way: `DeflateConfig::no_context_takeover()`, and `gangway
    /// serve --deflate-mode shared`.
    Shared,
    /// No context takeover for the server, a 12-bit window for the client:
    /// `DeflateConfig::bounded_client_window(12)`, and `gangway serve`'s default.
    Window,
}

/// The frames of RFC 7692 §7.2.3, each a "Hello": one compressed block (§7.2.3.1), the same
/// message again as a back reference into the first (§7.2.3.2, only `with_back_reference`: it
/// needs the client's context takeover), a stored block (§7.2.3.3), a BFINAL block (§7.2.3.4),
/// two blocks (§7.2.3.5), and §7.2.3.1 in two fragments.
fn rfc_7692_examples(with_back_reference: bool) -> Vec<Frame> {
    let mut frames = vec![Frame::text([0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).rsv(RSV1)];
    if with_back_reference {
        frames.push(Frame::text([0xf2, 0x00, 0x11, 0x00, 0x00]).rsv(RSV1));
    }
    frames.extend([
        Frame::text([
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ])
        .rsv(RSV1),
        Frame::text([0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]).rsv(RSV1),
        Frame::text([
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ])
        .rsv(RSV1),
        Frame::text([0xf2, 0x48, 0xcd]).rsv(RSV1).fin(false),
        Frame::cont([0xc9, 0xc9, 0x07, 0x00]),
    ]);
    frames
}

/// 80 MiB of zeros as the second message of a connection whose first was 32 KiB of zeros:
/// compressed on its own (a fresh stream refers to nothing before it, which is valid with or
/// without context takeover). Compressing it takes a while in a debug build: done once.
fn bomb_payload() -> Vec<u8> {
    static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BOMB.get_or_init(|| fresh_deflate(&vec![0; 80 << 20], true))
        .clone()
}

/// Gangway's role in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Server,
    Client,
}

struct Verdict {
    id: String,
    section: String,
    description: String,
    elapsed: Duration,
    failure: Option<String>,
}

#[test]
fn compression_server_in_process() {
    run(Role::Server, &Target::InProcess, ServerMode::Takeover);
}

#[test]
fn compression_server_in_process_without_context_takeover() {
    run(Role::Server, &Target::InProcess, ServerMode::Shared);
}

#[test]
fn compression_server_in_process_with_a_bounded_client_window() {
    run(Role::Server, &Target::InProcess, ServerMode::Window);
}

#[test]
fn compression_client_in_process() {
    run(Role::Client, &Target::InProcess, ServerMode::Takeover);
}

/// `gangway serve` in its default mode (`--deflate-mode window`).
#[test]
fn compression_server_binary() {
    if let Some(bin) = binary() {
        run(Role::Server, &Target::Binary(bin), ServerMode::Window);
    }
}

#[test]
fn compression_client_binary() {
    if let Some(bin) = binary() {
        run(Role::Client, &Target::Binary(bin), ServerMode::Takeover);
    }
}

fn binary() -> Option<PathBuf> {
    std::env::var_os("GANGWAY_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

fn flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

fn report(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn run(role: Role, target: &Target, mode: ServerMode) {
    let heavy = matches!(target, Target::Binary(_)) || flag("GANGWAY_CONFORMANCE_HEAVY");
    let filter: Vec<String> = std::env::var("GANGWAY_CONFORMANCE_CASES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let cases: Vec<Case> = for_server_mode(all(heavy), mode)
        .into_iter()
        .filter(|c| match role {
            Role::Server => c.server.is_some(),
            Role::Client => c.client.is_some(),
        })
        .filter(|c| filter.is_empty() || filter.iter().any(|f| c.id.starts_with(f.as_str())))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let verdicts: Vec<Verdict> = runtime.block_on(async {
        futures_util::stream::iter(cases.iter())
            .map(|case| async move {
                let started = Instant::now();
                let limit = Duration::from_secs(120);
                let failure =
                    match tokio::time::timeout(limit, run_case(case, role, target, mode)).await {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e),
                        Err(_) => Some(format!("not finished within {limit:?}")),
                    };
                Verdict {
                    id: case.id.clone(),
                    section: case.section().to_owned(),
                    description: case.description.clone(),
                    elapsed: started.elapsed(),
                    failure,
                }
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await
    });
    let elapsed = started.elapsed();
    runtime.shutdown_timeout(Duration::from_secs(5));

    let name = match (role, mode) {
        (Role::Server, ServerMode::Takeover) => "server",
        (Role::Server, ServerMode::Shared) => "server without context takeover",
        (Role::Server, ServerMode::Window) => "server with a bounded client window",
        (Role::Client, _) => "client",
    };
    let target_name = target.name();
    let mut verdicts = verdicts;
    verdicts.sort_by(|a, b| a.id.cmp(&b.id));
    if flag("GANGWAY_CONFORMANCE_VERBOSE") {
        for v in &verdicts {
            let mark = if v.failure.is_some() { "FAIL" } else { "ok  " };
            report(&format!(
                "{mark} {:>8.1} ms {} {}",
                v.elapsed.as_secs_f64() * 1e3,
                v.id,
                v.description
            ));
        }
    }
    let mut text = String::new();
    let mut sections: std::collections::BTreeMap<String, (usize, usize, Duration)> =
        Default::default();
    for v in &verdicts {
        let entry = sections.entry(v.section.clone()).or_default();
        entry.1 += 1;
        entry.2 += v.elapsed;
        match &v.failure {
            None => entry.0 += 1,
            Some(f) => text.push_str(&format!(
                "  FAILED {} [{name}, {target_name}] {}\n      {f}\n",
                v.id, v.description
            )),
        }
    }
    let failed = verdicts.iter().filter(|v| v.failure.is_some()).count();
    let per_section: Vec<String> = sections
        .iter()
        .map(|(s, (ok, total, time))| format!("{s}: {ok}/{total} in {:.1} s", time.as_secs_f64()))
        .collect();
    report(&format!(
        "{text}compression {name}: {} passed, {failed} failed ({target_name}; {}; {:.1} s)\n  \
         by section: {}",
        verdicts.len() - failed,
        if heavy { "full counts" } else { "light counts" },
        elapsed.as_secs_f64(),
        per_section.join(", ")
    ));
    assert_eq!(
        failed, 0,
        "{failed} compression case(s) failed in the {name} role"
    );
}

async fn run_case(
    case: &Case,
    role: Role,
    target: &Target,
    mode: ServerMode,
) -> Result<(), String> {
    match role {
        Role::Server => against_server(case, target, mode).await,
        Role::Client => against_client(case, target).await,
    }
}

// ---- gangway as the server ----

async fn against_server(case: &Case, target: &Target, mode: ServerMode) -> Result<(), String> {
    let (offer, answer) = case.server.clone().ok_or("not a server case")?;
    let server = EchoServer::start(target, case.max_message_size, mode).await?;
    let result = async {
        let mut tcp = TcpStream::connect(server.addr)
            .await
            .map_err(|e| format!("tcp connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut rng = Rng::new(seed(&case.id));
        let mut k = [0u8; 16];
        rng.fill(&mut k);
        let key = base64_encode(&k);
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: {offer}\r\n\r\n",
            server.addr
        );
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let (head, leftover) = read_head(&mut tcp, PROMPT)
            .await?
            .ok_or("connection closed without an answer")?;
        let head = Head::parse(&head)?;
        if head.status() != Some(101) {
            return Err(format!("answered {:?}, not 101", head.start_line));
        }
        if head.one("sec-websocket-accept") != Some(accept_for(&key).as_str()) {
            return Err("wrong Sec-WebSocket-Accept".into());
        }
        let got = head.all("sec-websocket-extensions").join(", ");
        if got != answer {
            return Err(format!(
                "Sec-WebSocket-Extensions {got:?}, expected {answer:?}"
            ));
        }
        let (read, write) = tcp.into_split();
        let mut session = Session::new(
            Side::Client,
            write,
            spawn_reader(read, leftover),
            &answer,
            rng,
        )?;
        session.run(case).await?;
        // The server closes the TCP connection first (RFC 6455 §7.1.1).
        session.expect_eof().await
    }
    .await;
    let stopped = server.stop().await;
    result.and(stopped)
}

/// An echo server with permessage-deflate on: in this process, or `gangway serve`.
struct EchoServer {
    addr: SocketAddr,
    run: ServerRun,
}

enum ServerRun {
    InProcess(tokio::task::JoinHandle<()>),
    Binary(Child),
}

impl EchoServer {
    async fn start(
        target: &Target,
        max_message_size: Option<usize>,
        mode: ServerMode,
    ) -> Result<EchoServer, String> {
        match target {
            Target::InProcess => {
                let listener = TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| e.to_string())?;
                let addr = listener.local_addr().map_err(|e| e.to_string())?;
                let mut config = Config::default();
                config.deflate = match mode {
                    ServerMode::Takeover => DeflateConfig::default(),
                    ServerMode::Shared => DeflateConfig::no_context_takeover(),
                    ServerMode::Window => DeflateConfig::bounded_client_window(12),
                };
                if let Some(max) = max_message_size {
                    config.max_message_size = max;
                    config.max_frame_size = max;
                }
                let builder = ServerBuilder::new().config(config);
                let task = tokio::spawn(async move {
                    while let Ok((tcp, _)) = listener.accept().await {
                        let builder = builder.clone();
                        tokio::spawn(async move {
                            if let Ok(ws) = builder.accept(tcp).await {
                                echo_loop(ws).await;
                            }
                        });
                    }
                });
                Ok(EchoServer {
                    addr,
                    run: ServerRun::InProcess(task),
                })
            }
            Target::Binary(bin) => {
                let mut cmd = Command::new(bin);
                cmd.args(["serve", "--listen", "127.0.0.1:0"]);
                match mode {
                    ServerMode::Takeover => {
                        cmd.args(["--deflate-mode", "dedicated", "--deflate-window-bits", "15"]);
                    }
                    ServerMode::Shared => {
                        cmd.args(["--deflate-mode", "shared"]);
                    }
                    ServerMode::Window => {}
                }
                if let Some(max) = max_message_size {
                    cmd.args(["--max-message-size", &max.to_string()]);
                }
                let mut child = cmd
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
                let stdout = child.stdout.take().ok_or("no stdout")?;
                let mut line = String::new();
                tokio::time::timeout(PROMPT, BufReader::new(stdout).read_line(&mut line))
                    .await
                    .map_err(|_| "no `listening on` line".to_owned())?
                    .map_err(|e| e.to_string())?;
                let addr = line
                    .trim_end()
                    .strip_prefix("listening on ")
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| format!("unexpected first stdout line {line:?}"))?;
                Ok(EchoServer {
                    addr,
                    run: ServerRun::Binary(child),
                })
            }
        }
    }

    async fn stop(self) -> Result<(), String> {
        match self.run {
            ServerRun::InProcess(task) => {
                task.abort();
                Ok(())
            }
            ServerRun::Binary(mut child) => {
                let crashed = child.try_wait().map_err(|e| e.to_string())?;
                let _ = child.start_kill();
                let _ = child.wait().await;
                match crashed {
                    None => Ok(()),
                    Some(status) => Err(format!("gangway serve exited during the case: {status}")),
                }
            }
        }
    }
}

/// Echo text and binary messages until the stream ends (as `gangway serve` and `connect --echo`).
async fn echo_loop<S>(mut ws: gangway::WebSocket<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(item) = ws.next().await {
        match item {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // After a failure the close frame is queued: keep polling (bounded) so it is written.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

// ---- gangway as the client ----

async fn against_client(case: &Case, target: &Target) -> Result<(), String> {
    let answer = case.client.clone().ok_or("not a client case")?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let url = format!(
        "ws://{}/",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let client = EchoClient::start(target, &url, case.max_message_size)?;
    let session = async {
        let (mut tcp, _) = tokio::time::timeout(PROMPT, listener.accept())
            .await
            .map_err(|_| "gangway did not connect".to_owned())?
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (head, leftover) = read_head(&mut tcp, PROMPT)
            .await?
            .ok_or("connection closed without a request")?;
        let head = Head::parse(&head)?;
        let offered = head.all("sec-websocket-extensions").join(", ");
        if offered != CLIENT_OFFER {
            return Err(format!("offer {offered:?}, expected {CLIENT_OFFER:?}"));
        }
        let key = head.one("sec-websocket-key").ok_or("no key")?.to_owned();
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: {answer}\r\n\r\n",
            accept_for(&key)
        );
        tcp.write_all(response.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let (read, write) = tcp.into_split();
        let mut session = Session::new(
            Side::Server,
            write,
            spawn_reader(read, leftover),
            &answer,
            Rng::new(seed(&case.id)),
        )?;
        session.run(case).await?;
        // The server (the peer) closes the TCP connection after the close handshake.
        session.shutdown().await;
        Ok(())
    }
    .await;
    let end = client.finish().await;
    session?;
    match (case.ending, end) {
        (Ending::Normal, Ok(())) => Ok(()),
        (Ending::Normal, Err(e)) => Err(format!("client did not end cleanly: {e}")),
        (Ending::Fail(_), Err(_)) => Ok(()),
        (Ending::Fail(code), Ok(())) => Err(format!(
            "client ended cleanly although it failed the connection with {code}"
        )),
    }
}

/// An echo client with permessage-deflate on: in this process, or `gangway connect --deflate`.
enum EchoClient {
    InProcess(tokio::task::JoinHandle<Result<(), String>>),
    Binary(Child),
}

impl EchoClient {
    fn start(target: &Target, url: &str, max: Option<usize>) -> Result<EchoClient, String> {
        match target {
            Target::InProcess => {
                let url = url.to_owned();
                Ok(EchoClient::InProcess(tokio::spawn(async move {
                    let mut config = Config::default();
                    config.deflate = DeflateConfig::default();
                    if let Some(max) = max {
                        config.max_message_size = max;
                        config.max_frame_size = max;
                    }
                    let builder = ClientBuilder::new(&url)
                        .map_err(|e| e.to_string())?
                        .config(config);
                    let (mut ws, _) = builder.connect().await.map_err(|e| e.to_string())?;
                    if !ws.uses_deflate() {
                        return Err("permessage-deflate not in use".into());
                    }
                    let mut failure = None;
                    while let Some(item) = ws.next().await {
                        match item {
                            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                                if let Err(e) = ws.send(m).await {
                                    failure = Some(e.to_string());
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                failure = Some(e.to_string());
                                break;
                            }
                        }
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    failure.map_or(Ok(()), Err)
                })))
            }
            Target::Binary(bin) => {
                let child = Command::new(bin)
                    .args(["connect", "--echo", "--deflate", url])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
                Ok(EchoClient::Binary(child))
            }
        }
    }

    async fn finish(self) -> Result<(), String> {
        match self {
            EchoClient::InProcess(task) => tokio::time::timeout(PROMPT, task)
                .await
                .map_err(|_| "client still running".to_owned())?
                .map_err(|e| format!("client task: {e}"))?,
            EchoClient::Binary(mut child) => {
                let mut stderr = child.stderr.take().ok_or("no stderr")?;
                let status = tokio::time::timeout(PROMPT, child.wait())
                    .await
                    .map_err(|_| "gangway connect still running".to_owned())?
                    .map_err(|e| e.to_string())?;
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text).await;
                if !text.contains("gangway: permessage-deflate: on") {
                    return Err(format!("no `permessage-deflate: on` line: {text:?}"));
                }
                match status.code() {
                    Some(0) => Ok(()),
                    _ => Err(format!("exit {status}: {}", text.trim_end())),
                }
            }
        }
    }
}

// ---- the raw peer's session ----

/// The peer's end of a connection that negotiated permessage-deflate.
struct Session {
    side: Side,
    write: OwnedWriteHalf,
    incoming: UnboundedReceiver<Incoming>,
    rng: Rng,
    codec: PerMessageDeflate,
    /// gangway compresses its messages of `THRESHOLD` bytes and more (not at all with an 8-bit
    /// window).
    gangway_compresses: bool,
}

/// A message gangway sent.
struct Echoed {
    opcode: u8,
    payload: Vec<u8>,
    compressed: bool,
}

enum Got {
    Message(Echoed),
    Pong,
    Close(Option<u16>),
    Eof,
}

impl Session {
    fn new(
        side: Side,
        write: OwnedWriteHalf,
        incoming: UnboundedReceiver<Incoming>,
        answer: &str,
        rng: Rng,
    ) -> Result<Session, String> {
        let element = parse_answer(answer)?;
        let params = DeflateParams::from_response(&element).map_err(str::to_owned)?;
        // The peer's own side of the agreement, compressing everything (threshold 0).
        let peer_role = match side {
            Side::Client => ProtoRole::Client,
            Side::Server => ProtoRole::Server,
        };
        let mut config = DeflateConfig::default();
        config.threshold = 0;
        let codec = PerMessageDeflate::new(peer_role, &params, &config);
        let gangway_bits = match side {
            Side::Client => params.server_max_window_bits,
            Side::Server => params.client_max_window_bits,
        };
        Ok(Session {
            side,
            write,
            incoming,
            rng,
            codec,
            gangway_compresses: gangway_bits > 8,
        })
    }

    async fn send(&mut self, frames: &[Frame]) -> Result<(), String> {
        let bytes = encode_all(frames, self.side, &mut self.rng);
        self.write
            .write_all(&bytes)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    async fn run(&mut self, case: &Case) -> Result<(), String> {
        for (i, step) in case.steps.iter().enumerate() {
            let (frames, echoes, pongs) = match step {
                Step::Echo {
                    opcode,
                    payload,
                    compressed,
                    frame,
                } => {
                    let frames = self.frames(*opcode, payload, *compressed, *frame);
                    (frames, vec![(*opcode, payload.clone())], 0)
                }
                Step::Raw {
                    frames,
                    echoes,
                    pongs,
                } => (frames.clone(), echoes.clone(), *pongs),
            };
            self.send(&frames).await?;
            let (mut want_echoes, mut want_pongs) = (echoes.into_iter(), pongs);
            let mut next = want_echoes.next();
            while next.is_some() || want_pongs > 0 {
                match self.next().await? {
                    Got::Message(m) => {
                        let Some((opcode, payload)) = next.take() else {
                            return Err(format!("step {i}: an unexpected message"));
                        };
                        if m.opcode != opcode || m.payload != payload {
                            return Err(format!(
                                "step {i}: echo of {} bytes (opcode {}) differs: got {} bytes \
                                 (opcode {})",
                                payload.len(),
                                opcode,
                                m.payload.len(),
                                m.opcode
                            ));
                        }
                        let expected = self.gangway_compresses && payload.len() >= THRESHOLD;
                        if m.compressed != expected {
                            return Err(format!(
                                "step {i}: echo of {} bytes {} compressed",
                                payload.len(),
                                if m.compressed { "was" } else { "was not" }
                            ));
                        }
                        next = want_echoes.next();
                    }
                    Got::Pong if want_pongs > 0 => want_pongs -= 1,
                    Got::Pong => return Err(format!("step {i}: an unexpected pong")),
                    Got::Close(code) => {
                        return Err(format!("step {i}: gangway closed with {code:?}"));
                    }
                    Got::Eof => return Err(format!("step {i}: gangway closed the connection")),
                }
            }
        }
        match case.ending {
            Ending::Normal => {
                self.send(&[Frame::close(1000, "")]).await?;
                match self.next().await? {
                    Got::Close(Some(1000)) => Ok(()),
                    Got::Close(code) => Err(format!("close answered with {code:?}")),
                    _ => Err("no close answer".into()),
                }
            }
            Ending::Fail(expected) => loop {
                match self.next().await? {
                    Got::Close(code) if code == Some(expected) => {
                        // Answer it, as a peer does.
                        let _ = self.send(&[Frame::close(expected, "")]).await;
                        return Ok(());
                    }
                    Got::Close(code) => {
                        return Err(format!("closed with {code:?}, not {expected}"))
                    }
                    Got::Eof => return Err(format!("no close frame ({expected} expected)")),
                    Got::Message(_) | Got::Pong => {}
                }
            },
        }
    }

    /// The frames of a message the peer sends.
    fn frames(
        &mut self,
        opcode: u8,
        payload: &[u8],
        compressed: bool,
        frame: Option<usize>,
    ) -> Vec<Frame> {
        let body = if compressed {
            let mut out = Vec::new();
            self.codec.compressor.compress(payload, true, &mut out);
            out
        } else {
            payload.to_vec()
        };
        let size = frame.unwrap_or(usize::MAX).max(1);
        let pieces: Vec<&[u8]> = if body.is_empty() {
            vec![&[][..]]
        } else {
            body.chunks(size).collect()
        };
        let last = pieces.len() - 1;
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, piece)| {
                let f = if i == 0 {
                    Frame::new(opcode, piece.to_vec())
                } else {
                    Frame::cont(piece.to_vec())
                };
                let f = f.fin(i == last);
                if i == 0 && compressed {
                    f.rsv(RSV1)
                } else {
                    f
                }
            })
            .collect()
    }

    /// The next message, pong, close or end from gangway, checking every frame on the way.
    async fn next(&mut self) -> Result<Got, String> {
        let gangway_masks = self.side == Side::Server;
        let mut message: Option<(u8, bool, Vec<u8>)> = None;
        loop {
            let item = tokio::time::timeout(PROMPT, self.incoming.recv())
                .await
                .map_err(|_| "nothing from gangway in time".to_owned())?
                .ok_or("reader ended")?;
            let frame = match item {
                Incoming::Frame(f) => f,
                Incoming::Eof => return Ok(Got::Eof),
                Incoming::Broken(e) => return Err(e),
            };
            if frame.masked != gangway_masks {
                return Err(format!(
                    "frame masked: {}, expected {gangway_masks}",
                    frame.masked
                ));
            }
            if frame.rsv & 0b011 != 0 {
                return Err(format!("RSV2/RSV3 set: {:#b}", frame.rsv));
            }
            match frame.opcode {
                PING | PONG | CLOSE => {
                    if frame.rsv != 0 {
                        return Err("RSV1 on a control frame (RFC 7692 §6)".into());
                    }
                    match frame.opcode {
                        PONG => return Ok(Got::Pong),
                        CLOSE => {
                            let code = (frame.payload.len() >= 2)
                                .then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                            return Ok(Got::Close(code));
                        }
                        _ => continue, // a ping of gangway's own
                    }
                }
                TEXT | BINARY => {
                    if message.is_some() {
                        return Err("a new message inside a fragmented one".into());
                    }
                    message = Some((frame.opcode, frame.rsv & RSV1 != 0, Vec::new()));
                }
                CONTINUATION => {
                    if message.is_none() {
                        return Err("a continuation without a message".into());
                    }
                    if frame.rsv != 0 {
                        return Err("RSV1 on a continuation frame (RFC 7692 §6)".into());
                    }
                }
                other => return Err(format!("opcode {other}")),
            }
            let Some((opcode, compressed, buf)) = message.as_mut() else {
                continue;
            };
            if *compressed {
                self.codec
                    .decompressor
                    .decompress(&frame.payload, buf, usize::MAX)
                    .map_err(|e| format!("inflating gangway's message: {e}"))?;
            } else {
                buf.extend_from_slice(&frame.payload);
            }
            if frame.fin {
                let (opcode, compressed, mut payload) = (*opcode, *compressed, std::mem::take(buf));
                if compressed {
                    self.codec
                        .decompressor
                        .finish(&mut payload, usize::MAX)
                        .map_err(|e| format!("inflating gangway's message: {e}"))?;
                }
                return Ok(Got::Message(Echoed {
                    opcode,
                    payload,
                    compressed,
                }));
            }
        }
    }

    /// gangway (the server) must close the TCP connection after the close handshake.
    async fn expect_eof(&mut self) -> Result<(), String> {
        loop {
            match self.next().await {
                Ok(Got::Eof) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.contains("reset") || e.contains("reader ended") => return Ok(()),
                Err(e) => return Err(format!("waiting for the server to close TCP: {e}")),
            }
        }
    }

    async fn shutdown(&mut self) {
        let _ = self.write.shutdown().await;
        // Wait (bounded) for the client's side to end too.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Incoming::Frame(_)) = self.incoming.recv().await {}
        })
        .await;
    }
}

/// The response element `answer` (`permessage-deflate; a; b=1`).
fn parse_answer(answer: &str) -> Result<ExtensionOffer, String> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::SEC_WEBSOCKET_EXTENSIONS,
        http::HeaderValue::from_str(answer).map_err(|e| e.to_string())?,
    );
    let mut all = gangway::proto::handshake::parse_extensions(&headers).map_err(str::to_owned)?;
    if all.len() != 1 {
        return Err(format!("{answer:?} is not one element"));
    }
    Ok(all.remove(0))
}

fn seed(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
