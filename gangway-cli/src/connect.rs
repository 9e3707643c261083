//! `gangway connect URL`: stdin lines become messages, received messages are printed one per line.
//!
//! The WebSocket is split into halves so reading never waits on writing: a peer that echoes a
//! large message while we are still sending the next one would otherwise deadlock with us, each
//! side blocked writing to a peer that is not reading.
//!
//! ```text
//!  stdin thread ──┐
//!                 ├─ Outgoing ─► writer task ─► SplitSink ─┐
//!  reader (echo) ─┘                                        ├─ WebSocket
//!  stdout ◄── reader (this task) ◄── SplitStream ◄─────────┘
//! ```
//!
//! Stdin is read on a plain thread: a blocking read cannot be cancelled, and a thread that is
//! still blocked when the session ends simply goes away with the process.
//!
//! With `--reconnect` the stdin thread and its queue outlive the connections: each session's
//! writer borrows the queue and hands it back, so lines that a dead connection did not take wait,
//! in order, for the next one ([`AFTER_HELP`] states the rules, [`crate::backoff`] the delays).
//! Exit statuses and their lines come from [`crate::exit`]; `-v` from [`crate::trace`].

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use clap::Args;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use gangway::http2::{ClientStream, Http2};
use gangway::proto::OsRandom;
use gangway::{ClientBuilder, CloseCode, CloseFrame, DeflateConfig, Error, Message, WebSocket};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, oneshot, watch};

use crate::backoff::{Backoff, STABLE_AFTER};
use crate::escape::escape_into;
use crate::exit::{code, seconds, Failure};
use crate::trace::{self, Traced};
use crate::{causes, parse_seconds};

/// How long the session keeps reading after it failed, so the close frame the core queued gets
/// written and the peer's answer read.
const AFTER_ERROR_TIMEOUT: Duration = Duration::from_secs(2);

/// How long, by default, the session stays open after the end of stdin while messages keep
/// arriving: a server may answer the last line after our close would have reached it, and a
/// close that arrives first takes the answer's place (RFC 6455 §5.5.1; Python `websockets`
/// drops it). One second is far more than a loopback or LAN server needs, and covers the
/// round trip to a distant one.
const DEFAULT_EOF_WAIT: Duration = Duration::from_secs(1);

/// How long Ctrl-C waits for the server to answer our close (1001) before exiting anyway.
const INTERRUPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages queued between stdin (or the echo) and the writer. Small, because a queued line may
/// be 16 MiB; the reader of stdin waits when it is full.
const QUEUE: usize = 4;

/// Options of `gangway connect`.
#[derive(Args, Debug)]
pub(crate) struct ConnectOpts {
    /// The server's URL, e.g. ws://127.0.0.1:9001/.
    url: String,

    /// Subprotocol to offer (repeatable, in order of preference).
    #[arg(long = "protocol", value_name = "NAME")]
    pub(crate) protocols: Vec<String>,

    /// Extra request header (repeatable).
    #[arg(
        long = "header",
        short = 'H',
        value_name = "'NAME: VALUE'",
        value_parser = parse_header
    )]
    pub(crate) headers: Vec<(String, String)>,

    /// Send each stdin line as a binary message (any bytes).
    #[arg(long, conflicts_with = "text")]
    pub(crate) binary: bool,

    /// Send each stdin line as a text message, which must be UTF-8 (the default).
    #[arg(long)]
    pub(crate) text: bool,

    /// Ignore stdin; send every received message back unchanged until the peer closes.
    #[arg(long)]
    pub(crate) echo: bool,

    /// Ping the server after this many seconds without hearing from it (fractions allowed;
    /// default: never).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) ping_interval: Option<Duration>,

    /// Give up on the server after this many seconds without receiving anything from it, not
    /// even an answer to a ping: exit 28 with "connection lost: peer idle timeout" (fractions
    /// allowed; default: never).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) idle_timeout: Option<Duration>,

    /// Show the connection on stderr as curl -v does: "* " information, then the request head
    /// ("> " lines) and the response head ("< " lines) as sent and received.
    #[arg(long, short = 'v')]
    pub(crate) verbose: bool,

    /// Give up connecting after this many seconds: TCP (and proxy), TLS and the opening
    /// handshake together (fractions allowed; 0: never; default 10). Exit 28.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) connect_timeout: Option<Duration>,

    /// When connecting fails or the connection is lost, connect again after 0.5 s, 1 s, 2 s, …
    /// (at most 30 s) and go on with stdin; see --help for the rules.
    #[arg(long)]
    pub(crate) reconnect: bool,

    /// With --reconnect: give up after this many retries in a row (default: never).
    #[arg(long, value_name = "N", requires = "reconnect")]
    pub(crate) max_retries: Option<u32>,

    /// Trust the CA certificates in this PEM file for wss://, instead of the system's.
    #[arg(long, value_name = "FILE")]
    pub(crate) cacert: Option<PathBuf>,

    /// Do not verify the server's certificate (wss://). DANGEROUS: anyone on the path can then
    /// pose as the server; only for test servers you control.
    #[arg(long, short = 'k')]
    pub(crate) insecure: bool,

    /// Client certificate to present (PEM chain, ours first); needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,

    /// The PEM private key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,

    /// Connect through this proxy: http://[user:password@]host[:port] (CONNECT),
    /// socks5://… (names resolved here) or socks5h://… (resolved by the proxy); port 1080 by
    /// default. Without it, https_proxy/HTTPS_PROXY (wss), http_proxy/HTTP_PROXY (ws) or
    /// all_proxy/ALL_PROXY are used, as curl does; "" means no proxy at all.
    #[arg(long, short = 'x', value_name = "URL")]
    pub(crate) proxy: Option<String>,

    /// Hosts to reach without the proxy, comma-separated: names (with their subdomains), IP
    /// addresses, ranges such as 10.0.0.0/8, or * for all. Replaces NO_PROXY/no_proxy.
    #[arg(long, value_name = "LIST")]
    pub(crate) noproxy: Option<String>,

    /// Offer permessage-deflate compression (RFC 7692); once connected, print on stderr
    /// whether the server accepted it: "gangway: permessage-deflate: on" (or "off").
    #[arg(long)]
    pub(crate) deflate: bool,

    /// Open the WebSocket over HTTP/2 (RFC 8441): TLS with ALPN h2 for wss://, HTTP/2 with prior
    /// knowledge (h2c) for ws://. Exit 16 when the server does not offer it (see
    /// --http1-fallback).
    #[arg(long)]
    pub(crate) http2: bool,

    /// With --http2: use HTTP/1.1 when the server does not offer WebSockets over HTTP/2.
    #[arg(long, requires = "http2")]
    pub(crate) http1_fallback: bool,

    /// At the end of stdin, close only once the server has sent nothing for this many seconds,
    /// so that answers to the last lines are printed (fractions allowed; 0: close at once;
    /// default 1).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, conflicts_with = "no_close")]
    pub(crate) eof_wait: Option<Duration>,

    /// Do not close at the end of stdin: print what arrives until the server closes (or
    /// --max-received, or Ctrl-C). As websocat's --no-close.
    #[arg(long, short = 'n')]
    pub(crate) no_close: bool,

    /// Close (1000) once this many messages have been received (printed, or echoed with
    /// --echo), and print no more; at the end of stdin, wait for them rather than for a quiet
    /// server (unless --eof-wait is given too). As websocat's --max-messages-rev, also accepted.
    #[arg(long, value_name = "N", alias = "max-messages-rev", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_received: Option<u64>,
}

impl ConnectOpts {
    /// What the end of stdin does.
    fn at_eof(&self) -> AtEof {
        match (self.no_close, self.eof_wait, self.max_received) {
            (true, _, _) | (false, None, Some(_)) => AtEof::KeepOpen,
            (false, Some(wait), _) if wait.is_zero() => AtEof::Close,
            (false, wait, _) => AtEof::CloseWhenQuiet(wait.unwrap_or(DEFAULT_EOF_WAIT)),
        }
    }
}

/// What the end of stdin does to the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AtEof {
    /// Close at once (`--eof-wait 0`).
    Close,
    /// Close once nothing has arrived for this long (restarted by each message).
    CloseWhenQuiet(Duration),
    /// Nothing: the server, `--max-received` or Ctrl-C ends the session.
    KeepOpen,
}

/// `Name: value` → (`Name`, `value`), the value's surrounding whitespace trimmed.
fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("expected 'Name: value', got {s:?}"))?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("invalid header name {name:?}"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// What the writer task is asked to do.
#[derive(Debug)]
enum Outgoing {
    /// Send a message.
    Message(Message),
    /// Send a message back (`--echo`); the sender is told once it is queued on the connection.
    Echo(Message, oneshot::Sender<()>),
    /// Stdin ended: close as [`AtEof`] says.
    EndOfInput,
    /// Start the close handshake (normal closure, 1000).
    Close,
}

/// How the reading side ended.
#[derive(Debug)]
enum ReadEnd {
    /// The stream ended; the close frame (if any) is on the reunited WebSocket.
    Ended,
    /// The connection failed.
    Failed(Error),
    /// Printing failed (stdout closed); a close was sent.
    Stdout(std::io::Error),
    /// Ctrl-C: the session is to be closed with 1001.
    Interrupted,
}

type Ws = WebSocket<Traced<ClientStream>>;

/// How long a session over HTTP/2 waits, once over, for its connection to write what it still
/// holds and close (a stream that ended first lingers up to a second for the peer's end).
const HTTP2_LINGER: Duration = Duration::from_secs(2);

/// Stdin's queue: lines as [`Outgoing::Message`], then [`Outgoing::EndOfInput`] at its end. `None`
/// with `--echo`, which does not read stdin.
type Lines = Option<mpsc::Receiver<Outgoing>>;

/// How a session ended.
#[derive(Debug)]
enum SessionEnd {
    /// A clean close handshake; the peer's close frame (`None`: it had no status code).
    Closed(Option<CloseFrame>),
    /// Ctrl-C; the close (1001) was sent.
    Interrupted,
    /// Anything else.
    Failed(Failure),
}

/// The part of `--help` that does not fit an option: framing, reconnecting, exit codes.
pub(crate) const AFTER_HELP: &str = "\
Framing:
  Sent: each stdin line is one message: its bytes without the \"\\n\" and without one \"\\r\"
  right before it; a last line without \"\\n\" counts. Text by default (--text; the line must be
  UTF-8, else exit 1), binary with --binary (any bytes).
  Received: each text or binary message is printed on stdout as exactly one line, whatever it
  holds, escaped: \\ -> \\\\, LF -> \\n, CR -> \\r, TAB -> \\t, other bytes 0x00-0x1F and 0x7F ->
  \\xNN (lowercase hex), in binary messages bytes that are not UTF-8 -> \\xNN; all else verbatim.
  Unescaping a line gives back the message's bytes exactly. Pings and pongs are not printed.
  At the end of stdin: wait until the server has sent nothing for 1 s (--eof-wait; 0: close
  at once), then close 1000, print what still arrives, exit 0 after the peer's close. A server
  may answer the last line after our close would have reached it, and its answer would then be
  lost. --max-received N closes once N messages arrived (and waits for them at the end of
  stdin); --no-close (-n) leaves the closing to the server. Ctrl-C closes with 1001 (going
  away) and exits 130.

Reconnecting (--reconnect):
  A failed attempt or a lost connection (exit codes 6, 7, 28, 52, 56; 22 only for 408, 429 and
  5xx; a proxy failure that may pass) is retried after 0.5 s, doubling up to 30 s, each wait up
  to 25 % shorter at random; the count starts over once a connection stays up for 5 s. A close
  by the peer with 1001, 1012, 1013 or 1014 (going away, restart, try again later, bad gateway)
  reconnects too; any other close ends the program with 0. Certificate, URL, usage and protocol
  errors are not retried. While disconnected, stdin lines wait (stdin is read only a few lines
  ahead) and go, in order, to the next connection; a line being sent when the connection broke
  may be lost. Once stdin has ended and the close was sent, nothing is retried. On giving up
  (--max-retries), the exit code is the last failure's.

Exit codes (curl's numbers where curl has the same failure):
   0  clean close, whichever side started it, with 1000, 1001, no code, or 3000-4999
   1  a stdin line is not UTF-8 in text mode; internal error
   2  usage: unknown or conflicting options, a header the handshake cannot send
   3  malformed URL (not ws:// or wss://, no host, a fragment)
   5  the proxy's name did not resolve, or a malformed proxy URL
   6  the host name did not resolve
   7  the TCP connection failed (refused, unreachable), to the server or the proxy
   8  a 101 answer that is not a valid upgrade (Sec-WebSocket-Accept, Upgrade, ...)
  22  the server answered the upgrade with another HTTP status (404, 403, 503, ...)
  23  writing stdout failed
  26  reading stdin failed
  28  timeout: --connect-timeout, --idle-timeout, write or close handshake timeout
  35  the TLS handshake failed (other than the server's certificate)
  52  the server closed the connection without answering the upgrade
  56  the connection was lost, or the peer broke the protocol (close code sent)
  57  the peer closed with an error code: 1002-2999 (1002 protocol error, 1003 unsupported
      data, 1007 invalid payload, 1008 policy, 1009 too big, 1011 internal error, 1012 restart,
      1013 try again later, 1014 bad gateway, ...)
  58  --cert/--key cannot be used
  60  the server's certificate was refused (self-signed or unknown CA, another host, expired)
  77  --cacert cannot be used
  97  the proxy refused the tunnel (HTTP status such as 407, SOCKS5 refusal)
 130  interrupted (Ctrl-C): close 1001 sent";

/// Connect, run sessions (more than one with `--reconnect`), and end as the contract says.
///
/// # Errors
///
/// Only internal failures (a task that panicked); every connection outcome is an exit status.
pub(crate) async fn run(opts: ConnectOpts) -> anyhow::Result<ExitCode> {
    let builder = match client_builder(&opts) {
        Ok(b) => b,
        Err(failure) => return Ok(failure.report()),
    };
    // Checked by `ClientBuilder::new`: the host as looked up, the port connected to.
    let host = builder.url().host().to_owned();
    let port = builder.url().port();
    let timeout = opts
        .connect_timeout
        .unwrap_or(gangway::DEFAULT_HANDSHAKE_TIMEOUT);

    let interrupted = watch_interrupts();
    let stdin_error = Arc::new(Mutex::new(None));
    let mut lines: Lines = None;
    if !opts.echo {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stdin_error, binary) = (stdin_error.clone(), opts.binary);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || read_stdin(&tx, binary, &stdin_error))
            .context("cannot start the stdin thread")?;
        lines = Some(rx);
    }

    let mut backoff = Backoff::new(opts.max_retries, Box::new(OsRandom::new()));
    // Set while a retry is under way, for its success to be announced.
    let mut retrying = false;
    loop {
        if opts.verbose {
            trace::info(&format!("connecting to {host}:{port}"));
        }
        let connecting = async {
            if opts.http2 {
                let mode = if opts.http1_fallback {
                    Http2::Preferred
                } else {
                    Http2::Required
                };
                builder
                    .clone()
                    .http2(mode)
                    .connect_with(|stream| traced(stream, &opts))
                    .await
            } else {
                builder
                    .connect_with(|stream| traced(ClientStream::Http1(stream), &opts))
                    .await
            }
        };
        let attempt = tokio::select! {
            attempt = connecting => attempt,
            () = wait_interrupted(interrupted.clone()) => return Ok(ExitCode::from(code::INTERRUPTED)),
        };
        // What ended this attempt, when it is worth another: `None` for a restart announced
        // by the peer's close code.
        let retry_after: Option<Failure> = match attempt {
            Err(e) => {
                let failure = Failure::connect(&e, &host, timeout, opts.cacert.as_deref());
                if !(opts.reconnect && failure.transient) {
                    return Ok(failure.report());
                }
                Some(failure)
            }
            Ok((ws, response)) => {
                if opts.verbose && response.version() == http::Version::HTTP_2 {
                    print_http2_response(&response);
                }
                if std::mem::take(&mut retrying) {
                    eprintln!("gangway: reconnected");
                }
                announce(&ws, &opts);
                let opened = Instant::now();
                // Over HTTP/2 the last frames (our close) may still be in the connection's
                // buffer when the session ends: wait (bounded) for it to be written.
                let http2_closed = match ws.get_ref().get_ref() {
                    ClientStream::Http2(h2) => Some(h2.connection_closed()),
                    _ => None,
                };
                let (rest, input_done, end) =
                    session(ws, lines.take(), &opts, &stdin_error, &interrupted).await?;
                if let Some(closed) = http2_closed {
                    let _ = tokio::time::timeout(HTTP2_LINGER, closed).await;
                }
                lines = rest;
                if opened.elapsed() >= STABLE_AFTER {
                    backoff.reset();
                }
                match end {
                    SessionEnd::Closed(frame) => {
                        report_peer_close(frame.as_ref());
                        let code = frame.as_ref().map(|f| f.code);
                        let restart = code.is_some_and(announces_restart);
                        if !(opts.reconnect && restart && !input_done) {
                            return Ok(ExitCode::from(if code.is_some_and(is_error_close) {
                                code::PEER_ERROR
                            } else {
                                code::OK
                            }));
                        }
                        None
                    }
                    SessionEnd::Interrupted => return Ok(ExitCode::from(code::INTERRUPTED)),
                    SessionEnd::Failed(failure) => {
                        if !(opts.reconnect && failure.transient && !input_done) {
                            return Ok(failure.report());
                        }
                        Some(failure)
                    }
                }
            }
        };
        if let Some(failure) = &retry_after {
            eprintln!("gangway: {}", failure.message);
        }
        let Some(delay) = backoff.next_delay() else {
            eprintln!("gangway: giving up after {} retries", backoff.retries());
            return Ok(ExitCode::from(retry_after.map_or(code::OK, |f| f.code)));
        };
        let of = backoff
            .max_retries()
            .map_or_else(String::new, |max| format!(" of {max}"));
        eprintln!(
            "gangway: reconnecting in {} (retry {}{of})",
            seconds(delay),
            backoff.retries()
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = wait_interrupted(interrupted.clone()) => return Ok(ExitCode::from(code::INTERRUPTED)),
        }
        retrying = true;
    }
}

/// The transport as the session runs over it: `-v` describes it, and traces the HTTP/1.1 heads
/// (an HTTP/2 handshake is in HTTP/2 frames, not in the stream: its answer is printed once
/// connected, see [`print_http2_response`]).
fn traced(stream: ClientStream, opts: &ConnectOpts) -> Traced<ClientStream> {
    if opts.verbose {
        match &stream {
            ClientStream::Http1(tcp) => trace::describe(tcp, opts.insecure),
            ClientStream::Http2(h2) => {
                trace::info(&format!("websocket on http/2 stream {}", h2.stream_id()));
            }
            _ => {}
        }
    }
    let heads = opts.verbose && !stream.is_http2();
    Traced::new(stream, heads)
}

/// `-v`: the answer to the extended CONNECT, as `< ` lines (HTTP/2 has no status line: the
/// `:status` pseudo-header comes first, RFC 9113 §8.3.2).
fn print_http2_response(response: &http::Response<()>) {
    eprintln!("< :status: {}", response.status().as_u16());
    for (name, value) in response.headers() {
        eprintln!(
            "< {name}: {}",
            escape_line(&String::from_utf8_lossy(value.as_bytes()))
        );
    }
}

/// The client settings the options ask for.
fn client_builder(opts: &ConnectOpts) -> Result<ClientBuilder, Failure> {
    let builder = ClientBuilder::new(&opts.url).map_err(|e| Failure::setup(&e, code::OTHER))?;
    let mut builder = transport_options(builder, opts)?;
    for p in &opts.protocols {
        builder = builder.protocol(p.clone());
    }
    for (name, value) in &opts.headers {
        builder = builder.header(name.clone(), value.clone());
    }
    builder = builder
        .ping_interval(opts.ping_interval)
        .idle_timeout(opts.idle_timeout);
    if let Some(timeout) = opts.connect_timeout {
        // 0 turns the timer off, as for the other timers (the timer saturates at "never").
        builder = builder.handshake_timeout(if timeout.is_zero() {
            Duration::MAX
        } else {
            timeout
        });
    }
    if opts.deflate {
        builder = builder.deflate(DeflateConfig::default());
    }
    Ok(builder)
}

/// The stderr lines of a fresh connection that the options ask for.
fn announce(ws: &Ws, opts: &ConnectOpts) {
    if !opts.protocols.is_empty() {
        eprintln!(
            "gangway: subprotocol: {}",
            ws.protocol().map_or_else(|| "none".to_owned(), escape_line)
        );
    }
    if opts.deflate {
        let state = if ws.uses_deflate() { "on" } else { "off" };
        eprintln!("gangway: permessage-deflate: {state}");
    }
}

/// One connection's session: stdin lines (or echoes) out, messages printed, until it ends.
/// Hands back stdin's queue, and whether stdin's end was taken (our close was sent).
async fn session(
    ws: Ws,
    lines: Lines,
    opts: &ConnectOpts,
    stdin_error: &Mutex<Option<Failure>>,
    interrupted: &watch::Receiver<bool>,
) -> anyhow::Result<(Lines, bool, SessionEnd)> {
    let (sink, stream) = ws.split();
    let (control, control_rx) = mpsc::channel(QUEUE);
    let (stop_tx, stop_rx) = oneshot::channel();
    // Each message received, counted: the end of stdin waits for the server to go quiet.
    let (received_tx, received) = watch::channel(0u64);
    let writer = tokio::spawn(write_loop(
        sink,
        Queues {
            control: control_rx,
            lines,
            stop: stop_rx,
            received,
        },
        opts.at_eof(),
    ));

    let reading = Reading {
        tx: control,
        echo: opts.echo,
        max_received: opts.max_received,
        received: received_tx,
        interrupted: interrupted.clone(),
    };
    let (stream, end) = read_loop(stream, reading).await;
    // The writer may still be blocked on a send the peer will never read; it is not needed now.
    let _ = stop_tx.send(());
    let (sink, lines, input_done) = writer.await.context("writer task failed")?;
    let mut ws = stream
        .reunite(sink)
        .map_err(|_| anyhow!("the websocket halves do not belong together"))?;

    let end = match end {
        ReadEnd::Interrupted => {
            // Going away (RFC 6455 §7.4.1), so the server does not see a vanished peer; its
            // answer is waited for briefly.
            let _ = tokio::time::timeout(
                INTERRUPT_TIMEOUT,
                ws.close(CloseCode::GOING_AWAY, "interrupted"),
            )
            .await;
            SessionEnd::Interrupted
        }
        ReadEnd::Failed(e) => SessionEnd::Failed(Failure::session(&e)),
        ReadEnd::Stdout(e) => SessionEnd::Failed(Failure::new(
            code::WRITE,
            format!("cannot write to stdout: {e}"),
            false,
        )),
        ReadEnd::Ended => {
            let stdin_failed = stdin_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match (stdin_failed, ws.close_frame()) {
                (Some(failure), _) => SessionEnd::Failed(failure),
                (None, Some(frame)) => SessionEnd::Closed(frame.clone()),
                // The stream ended without a close frame and without reporting an error.
                (None, None) => SessionEnd::Failed(Failure::no_close_frame()),
            }
        }
    };
    Ok((lines, input_done, end))
}

/// TLS and proxy options: what curl users expect, environment included.
fn transport_options(
    mut builder: ClientBuilder,
    opts: &ConnectOpts,
) -> Result<ClientBuilder, Failure> {
    if let Some(ca) = &opts.cacert {
        builder = builder
            .ca_file(ca)
            .map_err(|e| Failure::setup(&e, code::CA_FILE))?;
    }
    if let (Some(cert), Some(key)) = (&opts.cert, &opts.key) {
        builder = builder
            .client_cert_files(cert, key)
            .map_err(|e| Failure::setup(&e, code::CLIENT_CERT))?;
    }
    builder = builder.danger_accept_invalid_certs(opts.insecure);
    let proxy_error = |e| Failure::setup(&e, code::PROXY_RESOLVE);
    builder = match opts.proxy.as_deref() {
        Some("") => builder.no_proxy(),
        Some(url) => {
            // As in curl, NO_PROXY also applies to an explicit proxy.
            let bypass = opts.noproxy.clone().or_else(|| {
                ["no_proxy", "NO_PROXY"]
                    .iter()
                    .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
            });
            let builder = builder.proxy(url).map_err(proxy_error)?;
            match bypass {
                Some(list) => builder.proxy_bypass(&list),
                None => builder,
            }
        }
        None => {
            let builder = builder.proxy_from_env();
            match &opts.noproxy {
                Some(list) => builder.proxy_bypass(list),
                None => builder,
            }
        }
    };
    Ok(builder)
}

/// The line for a clean close by the peer: none for 1000.
fn report_peer_close(frame: Option<&CloseFrame>) {
    match frame {
        Some(CloseFrame { code, .. }) if *code == CloseCode::NORMAL => {}
        Some(CloseFrame { code, reason }) if reason.is_empty() => {
            eprintln!("gangway: closed by peer: {code}");
        }
        Some(CloseFrame { code, reason }) => {
            eprintln!("gangway: closed by peer: {code} {}", escape_line(reason));
        }
        None => eprintln!(
            "gangway: closed by peer: {} (no status code)",
            CloseCode::NO_STATUS
        ),
    }
}

/// Close codes by which a server says it will be back (RFC 6455 §7.4.1 and the IANA registry):
/// going away (a server shutting down), service restart, try again later, bad gateway.
fn announces_restart(code: CloseCode) -> bool {
    [
        CloseCode::GOING_AWAY,
        CloseCode::SERVICE_RESTART,
        CloseCode::TRY_AGAIN_LATER,
        CloseCode::BAD_GATEWAY,
    ]
    .contains(&code)
}

/// Peer-chosen text for a stderr line, escaped like a message so it stays on one line.
fn escape_line(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    escape_into(s.as_bytes(), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// What the reading side needs besides the stream.
struct Reading {
    /// The writer's queue (echoes, and the close of `--max-received` or a failed stdout).
    tx: mpsc::Sender<Outgoing>,
    echo: bool,
    max_received: Option<u64>,
    /// Counts the messages received, for the writer's quiet wait at the end of stdin.
    received: watch::Sender<u64>,
    interrupted: watch::Receiver<bool>,
}

/// Read messages until the stream ends; print them, or send them back with `--echo`.
///
/// Output is buffered and flushed whenever no further message is ready at once, so a burst costs
/// one write and a lone message is shown immediately.
async fn read_loop(mut stream: SplitStream<Ws>, reading: Reading) -> (SplitStream<Ws>, ReadEnd) {
    let Reading {
        tx,
        echo,
        max_received,
        received,
        interrupted,
    } = reading;
    let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, tokio::io::stdout());
    let mut line = Vec::new();
    let mut count = 0u64;
    let end = loop {
        let item = match stream.next().now_or_never() {
            Some(item) => item,
            None => {
                if let Err(e) = out.flush().await {
                    break stdout_failed(&mut stream, &tx, e).await;
                }
                // Cancel-safe: a message decoded meanwhile stays in the connection.
                tokio::select! {
                    item = stream.next() => item,
                    () = wait_interrupted(interrupted.clone()) => break ReadEnd::Interrupted,
                }
            }
        };
        let message = match item {
            None => break ReadEnd::Ended,
            Some(Err(e)) => {
                drain(&mut stream).await;
                break ReadEnd::Failed(e);
            }
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => m,
            // Pings are answered by the core; neither pings nor pongs are printed.
            Some(Ok(_)) => continue,
        };
        if max_received.is_some_and(|max| count >= max) {
            // Past --max-received: our close is sent; what still arrives is not shown.
            continue;
        }
        count += 1;
        received.send_replace(count);
        if max_received == Some(count) {
            // After this message is printed (or echoed) the writer closes; the stream then
            // ends with the peer's answer.
            let handled = handle(message, echo, &tx, &mut out, &mut line).await;
            let _ = tx.send(Outgoing::Close).await;
            if let Err(e) = handled {
                break stdout_failed(&mut stream, &tx, e).await;
            }
            continue;
        }
        if let Err(e) = handle(message, echo, &tx, &mut out, &mut line).await {
            break stdout_failed(&mut stream, &tx, e).await;
        }
    };
    if let Err(e) = out.flush().await {
        if matches!(end, ReadEnd::Ended) {
            return (stream, ReadEnd::Stdout(e));
        }
    }
    (stream, end)
}

/// Print `message` as one escaped line, or send it back with `--echo`.
async fn handle(
    message: Message,
    echo: bool,
    tx: &mpsc::Sender<Outgoing>,
    out: &mut tokio::io::BufWriter<tokio::io::Stdout>,
    line: &mut Vec<u8>,
) -> std::io::Result<()> {
    if echo {
        // Wait until the echo is queued on the connection before reading on: the next read
        // may hand out the peer's close (or fail the connection), after which nothing can be
        // sent, and an echo of a message that came before it must not be lost.
        let (queued_tx, queued_rx) = oneshot::channel();
        if tx.send(Outgoing::Echo(message, queued_tx)).await.is_ok() {
            // An error means the writer gave up on the message; the read side reports why.
            let _ = queued_rx.await;
        }
        return Ok(());
    }
    line.clear();
    match &message {
        Message::Text(t) => escape_into(t.as_bytes(), line),
        Message::Binary(b) => escape_into(b, line),
        // Only whole messages reach here: the connection does not deliver fragments.
        Message::Ping(_) | Message::Pong(_) | Message::Fragment(_) => {}
    }
    line.push(b'\n');
    out.write_all(line).await
}

/// Stdout is gone: nobody can see the messages any more, so close the session politely.
async fn stdout_failed(
    stream: &mut SplitStream<Ws>,
    tx: &mpsc::Sender<Outgoing>,
    e: std::io::Error,
) -> ReadEnd {
    let _ = tx.send(Outgoing::Close).await;
    drain(stream).await;
    ReadEnd::Stdout(e)
}

/// Keep reading (bounded) and discard, so a queued close frame is written and answered.
async fn drain(stream: &mut SplitStream<Ws>) {
    let _ = tokio::time::timeout(AFTER_ERROR_TIMEOUT, async {
        while let Some(item) = stream.next().await {
            if item.is_err() {
                break;
            }
        }
    })
    .await;
}

/// The writer's queues.
struct Queues {
    /// The reader's requests.
    control: mpsc::Receiver<Outgoing>,
    /// Stdin's lines.
    lines: Lines,
    /// The session is over.
    stop: oneshot::Receiver<()>,
    /// Messages received so far (see [`AtEof::CloseWhenQuiet`]).
    received: watch::Receiver<u64>,
}

/// Send what is queued, in order, until told to stop: the reader's requests (`control`) and
/// stdin's lines. After a failed send or our close, the reader's further requests are taken off
/// their queue and dropped, so the reader never blocks; stdin's lines are left in theirs, for
/// the next connection (`--reconnect`). At stdin's end, close as `at_eof` says. Hands back the
/// sink, stdin's queue, and whether stdin's end was taken.
async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    queues: Queues,
    at_eof: AtEof,
) -> (SplitSink<Ws, Message>, Lines, bool) {
    let Queues {
        mut control,
        mut lines,
        mut stop,
        mut received,
    } = queues;
    let mut done = false;
    let mut input_done = false;
    // While waiting for a quiet server at the end of stdin: when to close.
    let mut quiet_until: Option<tokio::time::Instant> = None;
    loop {
        let quiet_wait = match at_eof {
            AtEof::CloseWhenQuiet(wait) => wait,
            _ => Duration::ZERO,
        };
        let request = tokio::select! {
            biased;
            _ = &mut stop => break,
            request = control.recv() => match request {
                Some(r) => r,
                None => break,
            },
            request = next_line(&mut lines), if !done && !input_done => request,
            // Each message received restarts the wait.
            Ok(()) = received.changed(), if quiet_until.is_some() && !done => {
                quiet_until = Some(tokio::time::Instant::now() + quiet_wait);
                continue;
            }
            () = sleep_until(quiet_until), if quiet_until.is_some() && !done => {
                quiet_until = None;
                Outgoing::Close
            }
        };
        let request = match request {
            Outgoing::EndOfInput => {
                input_done = true;
                match at_eof {
                    AtEof::Close => Outgoing::Close,
                    AtEof::CloseWhenQuiet(wait) => {
                        received.mark_unchanged();
                        quiet_until = Some(tokio::time::Instant::now() + wait);
                        continue;
                    }
                    AtEof::KeepOpen => continue,
                }
            }
            request => request,
        };
        if done {
            continue;
        }
        let result = tokio::select! {
            biased;
            _ = &mut stop => break,
            result = async {
                match request {
                    Outgoing::Message(m) => sink.send(m).await,
                    Outgoing::Echo(m, queued) => {
                        let fed = hand_over(&mut sink, m).await;
                        let _ = queued.send(());
                        match fed {
                            Ok(()) => sink.flush().await,
                            Err(e) => Err(e),
                        }
                    }
                    Outgoing::Close => {
                        done = true;
                        sink.close().await
                    }
                    // Turned into a close (or nothing) above.
                    Outgoing::EndOfInput => Ok(()),
                }
            } => result,
        };
        if let Err(e) = result {
            // The reading side sees the same failure (or the peer's close) and reports it.
            tracing::debug!("send failed: {}", causes(&e));
            done = true;
        }
    }
    (sink, lines, input_done)
}

/// Queue `message` on the connection itself, without waiting for the transport to take it.
///
/// `feed` alone is not enough: on a split sink it only parks the message in the half's slot, and
/// the slot reaches the connection at the next `poll_ready` or flush. The echo's reader reads on
/// once this returns, and that read may queue the failure's close frame (or the answer to the
/// peer's close), after which nothing can be sent (RFC 6455 §5.5.1): a message still in the slot
/// would be refused and its echo lost.
async fn hand_over<S>(sink: &mut S, message: Message) -> Result<(), Error>
where
    S: futures_util::Sink<Message, Error = Error> + Unpin,
{
    sink.feed(message).await?;
    std::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).await
}

/// Sleep until `at` (never when `None`).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Watch for Ctrl-C (SIGINT) from now on: the receiver turns `true` at the first; a second one
/// exits at once (130), in case the server never answers.
fn watch_interrupts() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut seen = false;
        while tokio::signal::ctrl_c().await.is_ok() {
            if std::mem::replace(&mut seen, true) {
                std::process::exit(i32::from(code::INTERRUPTED));
            }
            tx.send_replace(true);
        }
    });
    rx
}

/// Resolves once Ctrl-C was pressed (never, if the watcher is gone).
async fn wait_interrupted(mut interrupted: watch::Receiver<bool>) {
    if interrupted.wait_for(|&pressed| pressed).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Close codes that report a failure (RFC 6455 §7.4.1 and the IANA registry): 1002 and up,
/// below the 3000-4999 range whose meanings are the application's. 1000 (normal) and 1001
/// (going away: a server shutting down, a page closed) are not failures.
fn is_error_close(code: CloseCode) -> bool {
    (1002..3000).contains(&code.0)
}

/// The next request from stdin's queue; never, with `--echo` or once the queue is closed.
/// Cancel-safe (`recv` is): a line is never lost by a `select!` that picks another branch.
async fn next_line(lines: &mut Lines) -> Outgoing {
    if let Some(rx) = lines {
        if let Some(request) = rx.recv().await {
            return request;
        }
    }
    std::future::pending().await
}

/// Read stdin line by line (any length, any bytes) and queue each line as a message; at EOF queue
/// the close. A line that cannot be sent as asked (invalid UTF-8 in text mode) or a read error
/// ends input early: the error is stored for the exit status and the session is closed normally.
fn read_stdin(tx: &mpsc::Sender<Outgoing>, binary: bool, error: &Mutex<Option<Failure>>) {
    let mut stdin = std::io::stdin().lock();
    let mut number = 0u64;
    loop {
        let mut line = Vec::new();
        match stdin.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                *error.lock().unwrap_or_else(PoisonError::into_inner) = Some(Failure::new(
                    code::READ,
                    format!("cannot read stdin: {e}"),
                    false,
                ));
                break;
            }
        }
        number += 1;
        strip_line_end(&mut line);
        let message = if binary {
            Message::binary(line)
        } else {
            match String::from_utf8(line) {
                Ok(text) => Message::Text(text.into()),
                Err(_) => {
                    *error.lock().unwrap_or_else(PoisonError::into_inner) = Some(Failure::new(
                        code::OTHER,
                        format!(
                            "stdin line {number} is not valid utf-8 (use --binary to send bytes)"
                        ),
                        false,
                    ));
                    break;
                }
            }
        };
        if tx.blocking_send(Outgoing::Message(message)).is_err() {
            // The session is over; the rest of stdin has nowhere to go.
            return;
        }
    }
    let _ = tx.blocking_send(Outgoing::EndOfInput);
}

/// Remove the line's `\n` and then one `\r` before it (CRLF input).
fn strip_line_end(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_option_splits_at_the_first_colon() {
        assert_eq!(
            parse_header("Authorization: Bearer a:b"),
            Ok(("Authorization".into(), "Bearer a:b".into()))
        );
        assert_eq!(
            parse_header("X-Empty:"),
            Ok(("X-Empty".into(), String::new()))
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": value").is_err());
        assert!(parse_header("Bad Name: v").is_err());
    }

    #[test]
    fn line_ends_are_stripped_once() {
        let strip = |s: &[u8]| {
            let mut v = s.to_vec();
            strip_line_end(&mut v);
            v
        };
        assert_eq!(strip(b"abc\n"), b"abc");
        assert_eq!(strip(b"abc\r\n"), b"abc");
        assert_eq!(strip(b"abc\r\r\n"), b"abc\r");
        assert_eq!(strip(b"abc"), b"abc", "last line without newline");
        assert_eq!(strip(b"abc\r"), b"abc\r", "a lone CR is not a line end");
        assert_eq!(strip(b"\n"), b"");
    }

    #[test]
    fn only_close_codes_that_announce_a_return_reconnect() {
        for code in [1001, 1012, 1013, 1014] {
            assert!(announces_restart(CloseCode(code)), "{code}");
        }
        for code in [1000, 1002, 1008, 1011, 4000] {
            assert!(!announces_restart(CloseCode(code)), "{code}");
        }
    }

    #[test]
    fn peer_reason_is_kept_on_one_line() {
        assert_eq!(escape_line("bye\nnow"), "bye\\nnow");
    }

    #[tokio::test]
    async fn echo_handed_over_before_the_next_read_precedes_the_failure_close() {
        use gangway::proto::{Config, Connection, Role};
        use tokio::io::AsyncReadExt as _;

        // A complete text message, then a continuation with nothing to continue (§5.4), masked
        // with a zero key as a client's frames are: "done" is delivered, then the connection fails.
        let mut input = vec![0x81, 0x84, 0, 0, 0, 0];
        input.extend_from_slice(b"done");
        input.extend_from_slice(&[0x80, 0x84, 0, 0, 0, 0]);
        input.extend_from_slice(b"more");
        let (io, mut peer) = tokio::io::duplex(4096);
        let conn = Connection::new(Role::Server, Config::default());
        let (mut sink, mut stream) = WebSocket::from_parts(io, conn, None, &input).split();

        let message = stream
            .next()
            .await
            .expect("a message")
            .expect("no error yet");
        assert_eq!(message, Message::text("done"));
        hand_over(&mut sink, message)
            .await
            .expect("sending is still allowed");
        // The next read queues the failure's close frame and writes out all that is queued.
        assert!(matches!(stream.next().await, Some(Err(Error::Protocol(_)))));
        drop((sink, stream));

        let mut sent = Vec::new();
        peer.read_to_end(&mut sent)
            .await
            .expect("read what was sent");
        assert_eq!(
            sent.get(..6),
            Some(&b"\x81\x04done"[..]),
            "echo first: {sent:02x?}"
        );
        assert_eq!(sent.get(6), Some(&0x88), "then the close: {sent:02x?}");
        assert_eq!(
            sent.get(8..10),
            Some(&[0x03, 0xea][..]),
            "1002: {sent:02x?}"
        );
    }
}
