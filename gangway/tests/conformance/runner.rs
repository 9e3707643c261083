//! Runs a case against one role of one target: the opening handshake, the script, the closing,
//! then the comparison of what gangway sent with what the case expects.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::cases::{show_bytes, Action, Case, Closing, Cut, Handshake, Reply, Role, SPLIT_PAUSE};
use crate::handshake::{standard_response, RequestCase, ResponseCase, SAMPLE_KEY};
use crate::peer::{
    accept_for, base64_decode, base64_encode, encode_all, read_head, spawn_reader, Frame, Head,
    Incoming, Received, Rng, Side, BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT,
};
use crate::target::{Client, ClientEnd, Server, Target};

/// Bound on each wait for something gangway should do promptly (a head, a close, an EOF).
const PROMPT: Duration = Duration::from_secs(5);

/// The cases running now, in every run of the process (`role[ over http/2] id`): what the
/// watchdog of a run that overstays names (see `run_over` in conformance.rs).
pub(crate) static IN_FLIGHT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Keeps a case in [`IN_FLIGHT`] while it runs.
struct InFlight(String);

impl InFlight {
    fn new(name: String) -> InFlight {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone());
        InFlight(name)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

/// The result of one case.
pub(crate) struct Verdict {
    pub(crate) id: String,
    pub(crate) section: String,
    pub(crate) description: String,
    /// `None`: passed; otherwise expected vs. actual.
    pub(crate) failure: Option<String>,
    pub(crate) elapsed: Duration,
}

/// Run `cases` against `role` of `target`, `parallel` at a time; verdicts in table order.
pub(crate) async fn run_all(
    cases: &[Case],
    role: Role,
    target: &Target,
    http2: bool,
    parallel: usize,
) -> Vec<Verdict> {
    let server = match role {
        Role::Server => match Server::start(target).await {
            Ok(s) => Some(s),
            Err(e) => {
                return cases
                    .iter()
                    .map(|c| verdict(c, Some(format!("server did not start: {e}"))))
                    .collect()
            }
        },
        Role::Client => None,
    };
    let ctx = Context {
        target: target.clone(),
        http2,
        server_addr: server.as_ref().map(|s| s.addr),
        keys: Arc::new(Mutex::new(HashSet::new())),
    };
    let mut verdicts: Vec<(usize, Verdict)> = futures_util::stream::iter(cases.iter().enumerate())
        .map(|(i, case)| {
            let ctx = ctx.clone();
            async move {
                let _in_flight = InFlight::new(format!(
                    "{}{} {}",
                    role.name(),
                    if ctx.http2 { " over http/2" } else { "" },
                    case.id
                ));
                let started = Instant::now();
                let result =
                    tokio::time::timeout(case.time_limit, run_case(case, role, &ctx)).await;
                let failure = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(format!("case not finished within {:?}", case.time_limit)),
                };
                let mut v = verdict(case, failure);
                v.elapsed = started.elapsed();
                (i, v)
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    verdicts.sort_by_key(|(i, _)| *i);
    let mut verdicts: Vec<Verdict> = verdicts.into_iter().map(|(_, v)| v).collect();
    if let Some(server) = server {
        if let Err(e) = server.stop().await {
            verdicts.push(Verdict {
                id: "server".into(),
                section: "-".into(),
                description: "the server process stays up for the whole run".into(),
                failure: Some(e),
                elapsed: Duration::ZERO,
            });
        }
    }
    verdicts
}

fn verdict(case: &Case, failure: Option<String>) -> Verdict {
    Verdict {
        id: case.id.clone(),
        section: case.section().to_owned(),
        description: case.description.clone(),
        failure,
        elapsed: Duration::ZERO,
    }
}

#[derive(Clone)]
struct Context {
    target: Target,
    /// The WebSocket runs on an HTTP/2 stream (RFC 8441) instead of a TCP connection.
    http2: bool,
    server_addr: Option<SocketAddr>,
    /// Every `Sec-WebSocket-Key` the client sent: each must be fresh (§4.1).
    keys: Arc<Mutex<HashSet<String>>>,
}

/// Problems found in one case; empty means it passed.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, p: impl Into<String>) {
        self.0.push(p.into());
    }

    fn result(self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0.join("\n      "))
        }
    }
}

async fn run_case(case: &Case, role: Role, ctx: &Context) -> Result<(), String> {
    match role {
        Role::Server => run_against_server(case, ctx).await,
        Role::Client => run_against_client(case, ctx).await,
    }
}

/// A seed per case so every run sends the same bytes.
fn seed(case: &Case) -> u64 {
    case.id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

// ---- server role ----------------------------------------------------------------------------

async fn run_against_server(case: &Case, ctx: &Context) -> Result<(), String> {
    let addr = ctx.server_addr.ok_or("no server")?;
    let mut rng = Rng::new(seed(case));
    if ctx.http2 {
        return http2_server_session(case, addr, rng).await;
    }
    let mut tcp = tokio::time::timeout(PROMPT, TcpStream::connect(addr))
        .await
        .map_err(|_| "tcp connect timed out".to_owned())?
        .map_err(|e| format!("tcp connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;

    // The request: standard, or the case's own.
    let standard;
    let (rc, key): (&RequestCase, String) = match &case.handshake {
        Handshake::Request(rc) => (rc, SAMPLE_KEY.to_owned()),
        Handshake::Standard => {
            let mut k = [0u8; 16];
            rng.fill(&mut k);
            let key = base64_encode(&k);
            let request = format!(
                "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            );
            standard = RequestCase {
                request: request.into_bytes(),
                chunk: None,
                status: 101,
                must_have: Vec::new(),
                must_not_have: vec!["Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions"],
                pipelined: false,
            };
            (&standard, key)
        }
        Handshake::Response(_) => return Err("client-role handshake in a server-role run".into()),
    };
    let mut first = rc.request.clone();
    let skip = pipeline(case, rc.pipelined, Side::Client, &mut rng, &mut first)?;
    write_chunked(&mut tcp, &first, rc.chunk).await?;

    let (head, leftover) = read_head(&mut tcp, PROMPT)
        .await?
        .ok_or("connection closed without an answer to the request")?;
    let head = Head::parse(&head)?;
    let mut problems = Problems::default();
    check_answer(&head, rc, &key, &mut problems);
    if rc.status != 101 || head.status() != Some(101) {
        // Refused (or wrongly refused): the server must close the connection after its answer.
        if head.status() == Some(101) {
            problems.add("answered 101 but the request should have been refused");
        }
        match read_to_end(&mut tcp, PROMPT).await {
            Ok(_) => {}
            Err(e) => problems.add(format!("after the refusal: {e}")),
        }
        return problems.result();
    }

    let (read, write) = tcp.into_split();
    let session = Session::new(Side::Client, write, spawn_reader(read, leftover), rng, case);
    // The server closes the TCP connection first (§7.1.1), after the close handshake or after
    // failing the connection (§7.1.7).
    session
        .play(
            case,
            skip,
            "server did not close the TCP connection after the close (RFC 6455 §7.1.1)",
            &mut problems,
        )
        .await;
    problems.result()
}

/// Check a response head against what the case expects of it.
fn check_answer(head: &Head, rc: &RequestCase, key: &str, problems: &mut Problems) {
    if head.status() != Some(rc.status) {
        problems.add(format!(
            "expected status {}, got {:?}",
            rc.status, head.start_line
        ));
        return;
    }
    for (name, value) in &rc.must_have {
        if !head.has_token(name, value) {
            problems.add(format!(
                "answer lacks `{name}: {value}`: {:?}",
                head.all(name)
            ));
        }
    }
    for name in &rc.must_not_have {
        if !head.all(name).is_empty() {
            problems.add(format!("answer has {name}: {:?}", head.all(name)));
        }
    }
    if rc.status == 101 {
        // §4.2.2 item 5.
        if !head.has_token("Upgrade", "websocket") {
            problems.add(format!(
                "101 without `Upgrade: websocket`: {:?}",
                head.all("Upgrade")
            ));
        }
        if !head.has_token("Connection", "Upgrade") {
            problems.add(format!(
                "101 without `Connection: Upgrade`: {:?}",
                head.all("Connection")
            ));
        }
        let expected = accept_for(key);
        if head.all("Sec-WebSocket-Accept") != [expected.as_str()] {
            problems.add(format!(
                "Sec-WebSocket-Accept: expected [{expected:?}], got {:?}",
                head.all("Sec-WebSocket-Accept")
            ));
        }
    }
}

/// A server-role case over HTTP/2: the framing cases only, the handshake is the extended
/// CONNECT, checked in `http2::connect`.
#[cfg(feature = "http2")]
async fn http2_server_session(case: &Case, addr: SocketAddr, rng: Rng) -> Result<(), String> {
    let stream = crate::http2::connect(addr, PROMPT).await?;
    let mut problems = Problems::default();
    let (read, write) = tokio::io::split(stream);
    let session = Session::new(
        Side::Client,
        write,
        spawn_reader(read, Vec::new()),
        rng,
        case,
    );
    // The server ends its side first (§7.1.1): END_STREAM.
    session
        .play(
            case,
            0,
            "server did not end the stream after the close (RFC 6455 §7.1.1)",
            &mut problems,
        )
        .await;
    problems.result()
}

#[cfg(not(feature = "http2"))]
async fn http2_server_session(_: &Case, _: SocketAddr, _: Rng) -> Result<(), String> {
    Err("built without the http2 feature".into())
}

// ---- client role ----------------------------------------------------------------------------

async fn run_against_client(case: &Case, ctx: &Context) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let url = format!("ws://{addr}/");
    let standard = ResponseCase {
        respond: standard_response,
        chunk: None,
        accepted: true,
        protocols: Vec::new(),
        pipelined: false,
        close_after: false,
    };
    let rc = match &case.handshake {
        Handshake::Response(rc) => rc,
        Handshake::Standard => &standard,
        Handshake::Request(_) => return Err("server-role handshake in a client-role run".into()),
    };
    let client = Client::start(&ctx.target, &url, &rc.protocols, ctx.http2)?;
    let mut problems = Problems::default();
    let outcome = if ctx.http2 {
        http2_client_session(case, &listener, &mut problems).await
    } else {
        client_session(case, ctx, rc, &listener, addr, &mut problems).await
    };
    drop(listener);
    // The client's own verdict on the session (status 0 after a clean close, 1 after a failure).
    let end = client.finish(PROMPT).await;
    let expect_clean = rc.accepted && !matches!(case.closing, Closing::Fail(_));
    match (&end, expect_clean) {
        (ClientEnd::Clean(_), true) | (ClientEnd::Failed(_), false) => {}
        (ClientEnd::Clean(how), false) => problems.add(format!(
            "the client should have reported a failure, but ended cleanly ({how})"
        )),
        (ClientEnd::Failed(how), true) => problems.add(format!(
            "the client should have ended cleanly, but reported a failure: {how}"
        )),
        (ClientEnd::Broken(how), _) => problems.add(format!("client: {how}")),
    }
    if let Err(e) = outcome {
        problems.add(e);
    }
    problems.result()
}

/// The raw server's side of a client-role case.
async fn client_session(
    case: &Case,
    ctx: &Context,
    rc: &ResponseCase,
    listener: &TcpListener,
    addr: SocketAddr,
    problems: &mut Problems,
) -> Result<(), String> {
    let mut rng = Rng::new(seed(case));
    let (mut tcp, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .map_err(|_| "the client did not connect within 10 s".to_owned())?
        .map_err(|e| format!("accept: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (head, leftover) = read_head(&mut tcp, PROMPT)
        .await?
        .ok_or("the client closed without sending a request")?;
    let head = Head::parse(&head)?;
    let key = check_request(&head, addr, rc, ctx, problems);
    if !leftover.is_empty() {
        problems.add(format!(
            "the client sent {} bytes before the server's answer",
            leftover.len()
        ));
    }
    let mut first = (rc.respond)(&key).into_bytes();
    let skip = pipeline(case, rc.pipelined, Side::Server, &mut rng, &mut first)?;
    write_chunked(&mut tcp, &first, rc.chunk).await?;

    if !rc.accepted {
        if rc.close_after {
            let _ = tcp.shutdown().await;
        }
        // The client must fail the connection (§4.1): close it without sending anything.
        match read_to_end(&mut tcp, PROMPT).await {
            Ok(rest) if rest.is_empty() => {}
            Ok(rest) => problems.add(format!(
                "the client sent {} bytes after a response it must refuse: {}",
                rest.len(),
                show_bytes(&rest)
            )),
            Err(e) => problems.add(format!("after the refused response: {e}")),
        }
        return Ok(());
    }

    let (read, write) = tcp.into_split();
    let session = Session::new(
        Side::Server,
        write,
        spawn_reader(read, Vec::new()),
        rng,
        case,
    );
    // The server (this raw peer) closes the TCP connection first (§7.1.1); the client then ends.
    session
        .play(
            case,
            skip,
            "client did not close the TCP connection after the server did",
            problems,
        )
        .await;
    Ok(())
}

/// The raw server's side of a client-role case over HTTP/2: the extended CONNECT (checked in
/// `accept`), then the script on the stream.
#[cfg(feature = "http2")]
async fn http2_client_session(
    case: &Case,
    listener: &TcpListener,
    problems: &mut Problems,
) -> Result<(), String> {
    let rng = Rng::new(seed(case));
    let stream = crate::http2::accept(listener, Duration::from_secs(10)).await?;
    let (read, write) = tokio::io::split(stream);
    let session = Session::new(
        Side::Server,
        write,
        spawn_reader(read, Vec::new()),
        rng,
        case,
    );
    // The server (this raw peer) ends its side first (§7.1.1); the client then ends its own.
    session
        .play(
            case,
            0,
            "client did not end the stream after the server did",
            problems,
        )
        .await;
    Ok(())
}

#[cfg(not(feature = "http2"))]
async fn http2_client_session(_: &Case, _: &TcpListener, _: &mut Problems) -> Result<(), String> {
    Err("built without the http2 feature".into())
}

/// Check the client's request (§4.1); returns its key.
fn check_request(
    head: &Head,
    addr: SocketAddr,
    rc: &ResponseCase,
    ctx: &Context,
    problems: &mut Problems,
) -> String {
    if head.start_line != "GET / HTTP/1.1" {
        problems.add(format!("request line {:?}", head.start_line));
    }
    // §4.1 item 4: the host, with the port when it is not the default.
    let host = addr.to_string();
    if head.all("Host") != [host.as_str()] {
        problems.add(format!(
            "Host: expected [{host:?}], got {:?}",
            head.all("Host")
        ));
    }
    if !head.has_token("Upgrade", "websocket") {
        problems.add(format!("Upgrade: {:?}", head.all("Upgrade")));
    }
    if !head.has_token("Connection", "Upgrade") {
        problems.add(format!("Connection: {:?}", head.all("Connection")));
    }
    if head.all("Sec-WebSocket-Version") != ["13"] {
        problems.add(format!(
            "Sec-WebSocket-Version: {:?}",
            head.all("Sec-WebSocket-Version")
        ));
    }
    let offered: Vec<String> = head
        .all("Sec-WebSocket-Protocol")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .collect();
    if offered != rc.protocols {
        problems.add(format!(
            "offered subprotocols: expected {:?}, got {offered:?}",
            rc.protocols
        ));
    }
    let Some(key) = head.one("Sec-WebSocket-Key") else {
        problems.add(format!(
            "Sec-WebSocket-Key: {:?}",
            head.all("Sec-WebSocket-Key")
        ));
        return String::new();
    };
    // §4.1 item 7: 16 random bytes, base64, fresh for every connection.
    if base64_decode(key).map(|k| k.len()) != Some(16) {
        problems.add(format!(
            "Sec-WebSocket-Key {key:?} is not 16 bytes in base64"
        ));
    }
    let fresh = ctx
        .keys
        .lock()
        .map(|mut keys| keys.insert(key.to_owned()))
        .unwrap_or(true);
    if !fresh {
        problems.add(format!("Sec-WebSocket-Key {key:?} was already used"));
    }
    key.to_owned()
}

// ---- shared ---------------------------------------------------------------------------------

/// With `pipelined`, append the first step's frames to `head` (it must be a single write) and
/// return 1 (steps to skip).
fn pipeline(
    case: &Case,
    pipelined: bool,
    side: Side,
    rng: &mut Rng,
    head: &mut Vec<u8>,
) -> Result<usize, String> {
    if !pipelined {
        return Ok(0);
    }
    match case.steps.first().map(|s| &s.action) {
        Some(Action::Send(frames)) => {
            head.extend(encode_all(frames, side, rng));
            Ok(1)
        }
        _ => Err("a pipelined case must start with a plain send".into()),
    }
}

async fn write_chunked<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    chunk: Option<usize>,
) -> Result<(), String> {
    match chunk {
        None => w.write_all(bytes).await,
        Some(n) => {
            for piece in bytes.chunks(n.max(1)) {
                w.write_all(piece)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(())
        }
    }
    .map_err(|e| format!("write: {e}"))
}

/// Read until EOF (bounded); a reset counts as an end too.
async fn read_to_end<R: AsyncRead + Unpin>(r: &mut R, limit: Duration) -> Result<Vec<u8>, String> {
    let mut rest = Vec::new();
    match tokio::time::timeout(limit, r.read_to_end(&mut rest)).await {
        Ok(_) => Ok(rest),
        Err(_) => Err(format!("connection still open {limit:?} later")),
    }
}

/// Encoded length and cut positions of a frame list as `side` sends it.
fn encoded_len(frames: &[Frame], side: Side) -> usize {
    frames
        .iter()
        .map(|f| f.header_len(side) + f.payload.len())
        .sum()
}

fn resolve_cut(frames: &[Frame], side: Side, cut: Cut) -> usize {
    match cut {
        Cut::Byte(n) => n,
        Cut::Payload { frame, k } => {
            encoded_len(&frames[..frame], side) + frames[frame].header_len(side) + k
        }
    }
}

fn split_everywhere_cuts(frames: &[Frame], side: Side, upto: Option<usize>) -> usize {
    let len = encoded_len(frames, side);
    let cuts = len.saturating_sub(1);
    upto.map_or(cuts, |u| cuts.min(u))
}

/// The replies a case expects from `side`'s point of view, in order.
fn expected_replies(case: &Case, side: Side) -> Vec<Reply> {
    let mut out = Vec::new();
    for step in &case.steps {
        let times = match &step.action {
            Action::SplitEverywhere { frames, upto } => split_everywhere_cuts(frames, side, *upto),
            _ => 1,
        };
        for _ in 0..times {
            out.extend(step.replies.iter().cloned());
        }
    }
    out
}

/// The close frame gangway sent.
#[derive(Debug)]
struct CloseSeen {
    code: Option<u16>,
    reason: Vec<u8>,
}

/// A connection in progress: the raw peer's writes, and what gangway sent so far.
struct Session {
    side: Side,
    write: Box<dyn AsyncWrite + Unpin + Send>,
    rx: UnboundedReceiver<Incoming>,
    rng: Rng,
    deadline: Instant,
    /// Replies counted before each step, to wait for round trips.
    expected: Vec<Reply>,
    replies: Vec<Reply>,
    partial: Option<(u8, Vec<u8>)>,
    close: Option<CloseSeen>,
    /// Whether the peer has sent a close frame.
    close_sent: bool,
    /// The connection ended (EOF or reset).
    ended: Option<String>,
    /// A write failed: gangway is gone, nothing more is sent.
    write_failed: Option<String>,
    problems: Problems,
}

impl Session {
    fn new(
        side: Side,
        write: impl AsyncWrite + Unpin + Send + 'static,
        rx: UnboundedReceiver<Incoming>,
        rng: Rng,
        case: &Case,
    ) -> Session {
        Session {
            side,
            write: Box::new(write),
            rx,
            rng,
            deadline: Instant::now() + case.time_limit,
            expected: expected_replies(case, side),
            replies: Vec::new(),
            partial: None,
            close: None,
            close_sent: false,
            ended: None,
            write_failed: None,
            problems: Problems::default(),
        }
    }

    /// Take in one event from the reader, checking the frame against the rules for its sender.
    fn absorb(&mut self, event: Incoming) {
        let frame = match event {
            Incoming::Frame(f) => f,
            Incoming::Eof => {
                self.ended.get_or_insert_with(|| "eof".into());
                return;
            }
            Incoming::Broken(e) => {
                self.ended.get_or_insert_with(|| e.clone());
                if !e.contains("reset") {
                    self.problems.add(format!("reading gangway's frames: {e}"));
                }
                return;
            }
        };
        let Received {
            fin,
            rsv,
            opcode,
            masked,
            payload,
        } = frame;
        let who = match self.side {
            Side::Client => "server",
            Side::Server => "client",
        };
        // §5.1/§5.3: a client masks every frame, a server none.
        if masked != (self.side == Side::Server) {
            self.problems.add(format!(
                "{who} sent a frame {} (opcode {opcode})",
                if masked { "masked" } else { "unmasked" }
            ));
        }
        if rsv != 0 {
            self.problems.add(format!("{who} sent RSV bits {rsv:03b}"));
        }
        if let Some(close) = &self.close {
            self.problems.add(format!(
                "{who} sent a frame (opcode {opcode}, {}) after its close frame {close:?} (§5.5.1)",
                show_bytes(&payload)
            ));
            return;
        }
        match opcode {
            PING | PONG | CLOSE if !fin || payload.len() > 125 => {
                self.problems.add(format!(
                    "{who} sent an invalid control frame: opcode {opcode}, fin {fin}, {} bytes",
                    payload.len()
                ));
            }
            // Pings gangway sends on its own (keepalive) are not replies.
            PING => {}
            PONG => self.replies.push(Reply::Pong(payload)),
            CLOSE => {
                let (code, reason) = match payload.len() {
                    0 => (None, Vec::new()),
                    1 => {
                        self.problems
                            .add(format!("{who} sent a 1-byte close payload"));
                        (None, payload)
                    }
                    _ => (
                        Some(u16::from_be_bytes([payload[0], payload[1]])),
                        payload[2..].to_vec(),
                    ),
                };
                if std::str::from_utf8(&reason).is_err() {
                    self.problems
                        .add(format!("{who} sent a close reason that is not UTF-8"));
                }
                self.close = Some(CloseSeen { code, reason });
            }
            TEXT | BINARY => {
                if self.partial.is_some() {
                    self.problems
                        .add(format!("{who} started a message inside a fragmented one"));
                }
                if fin {
                    self.push_message(opcode, payload);
                } else {
                    self.partial = Some((opcode, payload));
                }
            }
            CONTINUATION => match self.partial.take() {
                None => self.problems.add(format!(
                    "{who} sent a continuation with nothing to continue"
                )),
                Some((op, mut data)) => {
                    data.extend_from_slice(&payload);
                    if fin {
                        self.push_message(op, data);
                    } else {
                        self.partial = Some((op, data));
                    }
                }
            },
            other => self
                .problems
                .add(format!("{who} sent reserved opcode {other}")),
        }
    }

    fn push_message(&mut self, opcode: u8, data: Vec<u8>) {
        if opcode == TEXT {
            if std::str::from_utf8(&data).is_err() {
                self.problems
                    .add("gangway sent a text message that is not UTF-8");
            }
            self.replies.push(Reply::Text(data));
        } else {
            self.replies.push(Reply::Binary(data));
        }
    }

    /// Take in everything already received.
    fn drain_ready(&mut self) {
        while let Ok(event) = self.rx.try_recv() {
            self.absorb(event);
        }
    }

    /// Wait until `done` holds, the connection ends, or `limit` passes; whether `done` holds.
    async fn wait_until(&mut self, limit: Duration, done: impl Fn(&Session) -> bool) -> bool {
        let until = (Instant::now() + limit).min(self.deadline);
        loop {
            self.drain_ready();
            if done(self) {
                return true;
            }
            if self.ended.is_some() {
                return false;
            }
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(event)) => self.absorb(event),
                Ok(None) => {
                    self.ended.get_or_insert_with(|| "reader gone".into());
                }
                Err(_) => return false,
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        if self.write_failed.is_some() {
            return;
        }
        if let Err(e) = self.write.write_all(bytes).await {
            self.write_failed = Some(e.to_string());
        }
    }

    async fn send_frames(&mut self, frames: &[Frame]) {
        let bytes = encode_all(frames, self.side, &mut self.rng);
        if frames.iter().any(|f| f.opcode == CLOSE) {
            self.close_sent = true;
        }
        self.write(&bytes).await;
    }

    /// The close must already have come: wait for it (bounded) before going on.
    async fn failed_here(&mut self, what: &str) {
        if !self.wait_until(PROMPT, |s| s.close.is_some()).await {
            self.problems.add(format!(
                "not failed fast: no close frame after {what}, before the rest was sent"
            ));
        }
    }

    async fn run_steps(&mut self, case: &Case, skip: usize) {
        let mut replies_so_far = 0;
        for (i, step) in case.steps.iter().enumerate() {
            let n = i + 1;
            if i < skip {
                replies_so_far += step.replies.len();
                continue;
            }
            if self.write_failed.is_some() {
                break;
            }
            match &step.action {
                Action::Send(frames) => self.send_frames(frames).await,
                Action::Chop {
                    frames,
                    size,
                    pause,
                } => {
                    let bytes = encode_all(frames, self.side, &mut self.rng);
                    self.close_sent |= frames.iter().any(|f| f.opcode == CLOSE);
                    for piece in bytes.chunks((*size).max(1)) {
                        self.write(piece).await;
                        if !pause.is_zero() {
                            tokio::time::sleep(*pause).await;
                        }
                    }
                }
                Action::PerFrame { frames, pause } => {
                    for f in frames {
                        self.send_frames(std::slice::from_ref(f)).await;
                        tokio::time::sleep(*pause).await;
                    }
                }
                Action::SplitAt {
                    frames,
                    at,
                    failed_between,
                } => {
                    let bytes = encode_all(frames, self.side, &mut self.rng);
                    self.close_sent |= frames.iter().any(|f| f.opcode == CLOSE);
                    let cut = resolve_cut(frames, self.side, *at).min(bytes.len());
                    self.write(&bytes[..cut]).await;
                    if *failed_between {
                        self.failed_here(&format!("step {n}'s first {cut} bytes"))
                            .await;
                    } else {
                        tokio::time::sleep(SPLIT_PAUSE).await;
                    }
                    self.write(&bytes[cut..]).await;
                }
                Action::SplitEverywhere { frames, upto } => {
                    let cuts = split_everywhere_cuts(frames, self.side, *upto);
                    for cut in 1..=cuts {
                        let bytes = encode_all(frames, self.side, &mut self.rng);
                        self.write(&bytes[..cut]).await;
                        tokio::time::sleep(SPLIT_PAUSE).await;
                        self.write(&bytes[cut..]).await;
                        // One repetition at a time: a pong for the next one could otherwise
                        // overtake the echo of this one, which is legitimate but not the table's
                        // order.
                        replies_so_far += step.replies.len();
                        let want = replies_so_far;
                        self.wait_until(PROMPT, |s| s.replies.len() >= want || s.close.is_some())
                            .await;
                    }
                    continue;
                }
                Action::Pause(d) => tokio::time::sleep(*d).await,
                Action::FailedHere => self.failed_here(&format!("step {}", n - 1)).await,
                Action::AwaitReplies => {
                    let want = replies_so_far;
                    if !self
                        .wait_until(
                            self.deadline.saturating_duration_since(Instant::now()),
                            |s| s.replies.len() >= want || s.close.is_some(),
                        )
                        .await
                    {
                        self.problems.add(format!(
                            "step {n}: {} of {want} replies arrived",
                            self.replies.len()
                        ));
                        break;
                    }
                }
            }
            replies_so_far += step.replies.len();
        }
    }

    /// Finish the close handshake as the case says.
    async fn close_phase(&mut self, case: &Case) {
        if case.closing == Closing::Normal && !self.close_sent {
            // Wait for the replies first (a close right behind the data may legitimately cut
            // them short), then close.
            let want = self.expected.len();
            self.wait_until(
                self.deadline.saturating_duration_since(Instant::now()),
                |s| s.replies.len() >= want || s.close.is_some(),
            )
            .await;
            if self.close.is_none() {
                self.send_frames(&[Frame::close(1000, "")]).await;
            }
        }
        self.wait_until(PROMPT, |s| s.close.is_some()).await;
        // A peer answers a close it did not initiate (§5.5.1), echoing the code.
        if !self.close_sent {
            if let Some(close) = &self.close {
                let answer = match close.code {
                    Some(code) => Frame::close(code, ""),
                    None => Frame::new(CLOSE, vec![]),
                };
                self.send_frames(&[answer]).await;
            }
        }
    }

    /// Run the script from step `skip`, then the close phase and the end of the connection, and
    /// compare. The raw server ends its side first (§7.1.1) and waits for gangway's client to
    /// end its own; the raw client waits for gangway's server to end first. `not_ended` is the
    /// problem when the end does not come.
    async fn play(mut self, case: &Case, skip: usize, not_ended: &str, problems: &mut Problems) {
        self.run_steps(case, skip).await;
        self.close_phase(case).await;
        if matches!(self.side, Side::Server) {
            self.shutdown().await;
        }
        if !self.wait_end(PROMPT).await {
            self.problems.add(not_ended);
        }
        self.compare(case, problems);
    }

    /// Half-close the raw peer's side (TCP FIN).
    async fn shutdown(&mut self) {
        let _ = self.write.shutdown().await;
    }

    /// Wait for the connection to end; whether it did.
    async fn wait_end(&mut self, limit: Duration) -> bool {
        self.wait_until(limit, |s| s.ended.is_some()).await || self.ended.is_some()
    }

    /// Compare what was seen with what the case expects.
    fn compare(mut self, case: &Case, problems: &mut Problems) {
        self.drain_ready();
        if let Some((op, data)) = &self.partial {
            self.problems.add(format!(
                "gangway left a fragmented message unfinished (opcode {op}, {} bytes)",
                data.len()
            ));
        }
        if self.replies != self.expected {
            problems.add(describe_replies(&self.expected, &self.replies));
        }
        let (want, initiated) = match case.closing {
            Closing::Normal => (Some(1000), false),
            Closing::Answer(code) => (code, false),
            Closing::Fail(code) => (Some(code), true),
        };
        match &self.close {
            None => problems.add(format!(
                "expected {} {}, got no close frame (connection: {})",
                if initiated {
                    "a close from gangway with code"
                } else {
                    "the close answered with"
                },
                want.map_or("no code".to_owned(), |c| c.to_string()),
                self.ended.as_deref().unwrap_or("still open"),
            )),
            Some(seen) if seen.code != want => problems.add(format!(
                "expected close code {}, got {} (reason {})",
                want.map_or("none".to_owned(), |c| c.to_string()),
                seen.code.map_or("none".to_owned(), |c| c.to_string()),
                show_bytes(&seen.reason)
            )),
            Some(_) => {}
        }
        if let Some(e) = &self.write_failed {
            if !initiated {
                problems.add(format!("writing to gangway failed: {e}"));
            }
        }
        problems.0.append(&mut self.problems.0);
    }
}

/// Expected vs. actual replies, pointing at the first difference.
fn describe_replies(expected: &[Reply], actual: &[Reply]) -> String {
    let mut text = String::new();
    let first = expected
        .iter()
        .zip(actual)
        .position(|(e, a)| e != a)
        .unwrap_or(expected.len().min(actual.len()));
    let _ = write!(
        text,
        "replies: expected {}, got {}; first difference at #{first}: expected {}, got {}",
        expected.len(),
        actual.len(),
        expected
            .get(first)
            .map_or("nothing".into(), |r| format!("{r:?}")),
        actual
            .get(first)
            .map_or("nothing".into(), |r| format!("{r:?}")),
    );
    if let (Some(e), Some(a)) = (expected.get(first), actual.get(first)) {
        let (eb, ab) = (reply_bytes(e), reply_bytes(a));
        if let Some(at) = eb.iter().zip(ab).position(|(x, y)| x != y) {
            let _ = write!(text, " (bytes differ from offset {at})");
        }
    }
    text
}

fn reply_bytes(r: &Reply) -> &[u8] {
    match r {
        Reply::Text(b) | Reply::Binary(b) | Reply::Pong(b) => b,
    }
}
