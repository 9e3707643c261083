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

use std::io::BufRead as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use clap::Args;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use gangway::proto::ProtocolError;
use gangway::{ClientBuilder, CloseCode, CloseFrame, Error, Message, WebSocket};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::escape::escape_into;
use crate::{causes, parse_seconds};

/// How long the session keeps reading after it failed, so the close frame the core queued gets
/// written and the peer's answer read.
const AFTER_ERROR_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages queued between stdin (or the echo) and the writer. Small, because a queued line may
/// be 16 MiB; the reader of stdin waits when it is full.
const QUEUE: usize = 4;

/// Exit status for usage errors (same as clap's).
const USAGE: u8 = 2;

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

    /// Send each stdin line as a binary message instead of text.
    #[arg(long)]
    pub(crate) binary: bool,

    /// Ignore stdin; send every received message back unchanged until the peer closes.
    #[arg(long)]
    pub(crate) echo: bool,

    /// Ping the server after this many seconds without hearing from it (fractions allowed;
    /// default: never).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) ping_interval: Option<Duration>,

    /// Give up on the server after this many seconds without receiving anything from it, not
    /// even an answer to a ping: exit 1 with "connection lost: peer idle timeout" (fractions
    /// allowed; default: never).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) idle_timeout: Option<Duration>,
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
}

type Ws = WebSocket<TcpStream>;

/// Connect, run the session, and print the outcome as the contract says.
///
/// # Errors
///
/// Only internal failures (a task that panicked); every connection outcome is an exit status.
pub(crate) async fn run(opts: ConnectOpts) -> anyhow::Result<ExitCode> {
    if opts
        .url
        .get(..6)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("wss://"))
    {
        return Ok(fail("wss:// is not supported yet (TLS comes later)", USAGE));
    }
    let mut builder = match ClientBuilder::new(&opts.url) {
        Ok(b) => b,
        Err(e) => return Ok(fail(&connect_error(&e), exit_status(&e))),
    };
    for p in &opts.protocols {
        builder = builder.protocol(p.clone());
    }
    for (name, value) in &opts.headers {
        builder = builder.header(name.clone(), value.clone());
    }
    builder = builder
        .ping_interval(opts.ping_interval)
        .idle_timeout(opts.idle_timeout);
    let ws = match builder.connect().await {
        Ok((ws, _response)) => ws,
        Err(e) => return Ok(fail(&connect_error(&e), exit_status(&e))),
    };
    if !opts.protocols.is_empty() {
        eprintln!(
            "gangway: subprotocol: {}",
            ws.protocol().map_or_else(|| "none".to_owned(), escape_line)
        );
    }

    let (sink, stream) = ws.split();
    let (tx, rx) = mpsc::channel(QUEUE);
    let (stop_tx, stop_rx) = oneshot::channel();
    let writer = tokio::spawn(write_loop(sink, rx, stop_rx));
    let stdin_error = Arc::new(Mutex::new(None));
    if !opts.echo {
        let (tx, stdin_error, binary) = (tx.clone(), stdin_error.clone(), opts.binary);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || read_stdin(&tx, binary, &stdin_error))
            .context("cannot start the stdin thread")?;
    }

    let (stream, end) = read_loop(stream, tx, opts.echo).await;
    // The writer may still be blocked on a send the peer will never read; it is not needed now.
    let _ = stop_tx.send(());
    let sink = writer.await.context("writer task failed")?;
    let ws = stream
        .reunite(sink)
        .map_err(|_| anyhow!("the websocket halves do not belong together"))?;

    match end {
        ReadEnd::Failed(e) => Ok(fail(&session_error(&e), 1)),
        ReadEnd::Stdout(e) => Ok(fail(&format!("cannot write to stdout: {e}"), 1)),
        ReadEnd::Ended => {
            let stdin_error = stdin_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(message) = stdin_error {
                return Ok(fail(&message, 1));
            }
            Ok(peer_closed(ws.close_frame()))
        }
    }
}

/// The exit after the stream ended: the peer's close frame decides.
fn peer_closed(frame: Option<&Option<CloseFrame>>) -> ExitCode {
    match frame {
        Some(Some(CloseFrame { code, .. })) if *code == CloseCode::NORMAL => ExitCode::SUCCESS,
        Some(Some(CloseFrame { code, reason })) => {
            if reason.is_empty() {
                eprintln!("gangway: closed by peer: {code}");
            } else {
                eprintln!("gangway: closed by peer: {code} {}", escape_line(reason));
            }
            ExitCode::SUCCESS
        }
        Some(None) => {
            eprintln!(
                "gangway: closed by peer: {} (no status code)",
                CloseCode::NO_STATUS
            );
            ExitCode::SUCCESS
        }
        // The stream ended without a close frame and without reporting an error.
        None => fail("connection lost: closed without a close frame", 1),
    }
}

/// Print `gangway: MESSAGE` on stderr and return `status`.
fn fail(message: &str, status: u8) -> ExitCode {
    eprintln!("gangway: {message}");
    ExitCode::from(status)
}

/// The exit status for an error before the session started: 2 for our own mistakes (a bad URL or
/// header), 1 for anything the network did.
fn exit_status(e: &Error) -> u8 {
    match e {
        Error::Api(_) => USAGE,
        _ => 1,
    }
}

/// One line describing an error of the TCP connect or the opening handshake.
fn connect_error(e: &Error) -> String {
    match e {
        Error::Handshake(h) => format!("handshake failed: {}", causes(h)),
        Error::Io(io) => format!("connection failed: {}", causes(io)),
        Error::Timeout => "connection failed: timed out during the opening handshake".to_owned(),
        Error::Api(a) => causes(a),
        other => format!("connection failed: {}", causes(other)),
    }
}

/// One line describing an error of an open session.
fn session_error(e: &Error) -> String {
    match e {
        Error::Protocol(ProtocolError::UnexpectedEof) => {
            format!("connection lost: {}", ProtocolError::UnexpectedEof)
        }
        Error::Protocol(p) => format!("protocol error: {p} (sent close {})", p.close_code()),
        Error::Io(io) => format!("connection lost: {}", causes(io)),
        // During a session this timer is the close handshake's (RFC 6455 §7.1.1: the peer's
        // close frame, then the server's EOF).
        Error::Timeout => "connection lost: close handshake timed out".to_owned(),
        // The idle or write timeout: the server went silent, or stopped reading.
        Error::Unresponsive(t) => format!("connection lost: {t}"),
        other => causes(other),
    }
}

/// Peer-chosen text for a stderr line, escaped like a message so it stays on one line.
fn escape_line(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    escape_into(s.as_bytes(), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Read messages until the stream ends; print them, or send them back with `--echo`.
///
/// Output is buffered and flushed whenever no further message is ready at once, so a burst costs
/// one write and a lone message is shown immediately.
async fn read_loop(
    mut stream: SplitStream<Ws>,
    tx: mpsc::Sender<Outgoing>,
    echo: bool,
) -> (SplitStream<Ws>, ReadEnd) {
    let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, tokio::io::stdout());
    let mut line = Vec::new();
    let end = loop {
        let item = match stream.next().now_or_never() {
            Some(item) => item,
            None => {
                if let Err(e) = out.flush().await {
                    break stdout_failed(&mut stream, &tx, e).await;
                }
                stream.next().await
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
        if echo {
            // The writer only goes away at the end of the session; nothing is lost then.
            let _ = tx.send(Outgoing::Message(message)).await;
            continue;
        }
        line.clear();
        match &message {
            Message::Text(t) => escape_into(t.as_bytes(), &mut line),
            Message::Binary(b) => escape_into(b, &mut line),
            Message::Ping(_) | Message::Pong(_) => {}
        }
        line.push(b'\n');
        if let Err(e) = out.write_all(&line).await {
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

/// Send what is queued, in order, until told to stop. After a failed send or our close, further
/// requests are taken off the queue and dropped, so their senders never block.
async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut rx: mpsc::Receiver<Outgoing>,
    mut stop: oneshot::Receiver<()>,
) -> SplitSink<Ws, Message> {
    let mut done = false;
    loop {
        let request = tokio::select! {
            biased;
            _ = &mut stop => break,
            request = rx.recv() => match request {
                Some(r) => r,
                None => break,
            },
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
                    Outgoing::Close => {
                        done = true;
                        sink.close().await
                    }
                }
            } => result,
        };
        if let Err(e) = result {
            // The reading side sees the same failure (or the peer's close) and reports it.
            tracing::debug!("send failed: {}", causes(&e));
            done = true;
        }
    }
    sink
}

/// Read stdin line by line (any length, any bytes) and queue each line as a message; at EOF queue
/// the close. A line that cannot be sent as asked (invalid UTF-8 in text mode) or a read error
/// ends input early: the error is stored for the exit status and the session is closed normally.
fn read_stdin(tx: &mpsc::Sender<Outgoing>, binary: bool, error: &Mutex<Option<String>>) {
    let mut stdin = std::io::stdin().lock();
    let mut number = 0u64;
    loop {
        let mut line = Vec::new();
        match stdin.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                *error.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(format!("cannot read stdin: {e}"));
                break;
            }
        }
        number += 1;
        strip_line_end(&mut line);
        let message = if binary {
            Message::binary(line)
        } else {
            match String::from_utf8(line) {
                Ok(text) => Message::Text(text),
                Err(_) => {
                    *error.lock().unwrap_or_else(PoisonError::into_inner) = Some(format!(
                        "stdin line {number} is not valid utf-8 (use --binary to send bytes)"
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
    let _ = tx.blocking_send(Outgoing::Close);
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
    fn errors_name_their_cause() {
        use gangway::proto::HandshakeError;
        let e = Error::Handshake(HandshakeError::UnexpectedStatus(404));
        assert_eq!(connect_error(&e), "handshake failed: unexpected status 404");
        assert_eq!(exit_status(&e), 1);
        let e = Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(connect_error(&e).starts_with("connection failed: "));
        let e = Error::Protocol(ProtocolError::InvalidUtf8);
        assert_eq!(
            session_error(&e),
            "protocol error: invalid utf-8 (sent close 1007)"
        );
        let e = Error::Protocol(ProtocolError::UnexpectedEof);
        assert!(session_error(&e).starts_with("connection lost: "));
        let e = Error::Unresponsive(gangway::proto::TimeoutError::Idle);
        assert_eq!(session_error(&e), "connection lost: peer idle timeout");
        let e = Error::Api(gangway::proto::ApiMisuse::InvalidUrl("scheme must be ws"));
        assert_eq!(exit_status(&e), USAGE);
    }

    #[test]
    fn peer_reason_is_kept_on_one_line() {
        assert_eq!(escape_line("bye\nnow"), "bye\\nnow");
    }
}
