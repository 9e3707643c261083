//! `gangway connect` as curl and websocat users expect it: curl's exit codes, `--text` and
//! `--binary`, `-v` showing the handshake, `--connect-timeout`, and `--reconnect` with backoff.
//!
//! Every peer is on 127.0.0.1 (host names under `.invalid`, which never resolve, stand for a
//! name that does not exist); every test is bounded in time and kills the processes it started.

#[path = "../../gangway/tests/support/certs.rs"]
mod certs;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use certs::{TestCa, Usage, Validity};
use futures_util::{SinkExt, StreamExt};
use gangway::{CloseCode, Message, ServerBuilder};
use support::{switching_protocols, Proc, TIMEOUT};

/// The binary, with no proxy from the machine's environment.
fn gangway() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gangway"));
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `cmd` started with all three pipes.
fn spawn_piped(cmd: &mut Command) -> Proc {
    Proc::spawn(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
}

/// Each line a pipe produces, as it comes.
fn lines_of(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// What a finished `gangway connect` did.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

/// Run `cmd` with `input` on stdin, then EOF (`None`: stdin stays open); bounded.
fn run(cmd: &mut Command, input: Option<&str>) -> Outcome {
    let mut proc = spawn_piped(cmd);
    let stdout = lines_of(proc.0.stdout.take().expect("stdout"));
    let stderr = lines_of(proc.0.stderr.take().expect("stderr"));
    let mut stdin = proc.0.stdin.take();
    if let Some(input) = input {
        // The child may exit before reading (a refused connection): a broken pipe is fine.
        let _ = stdin.as_mut().expect("stdin").write_all(input.as_bytes());
        stdin = None;
    }
    let status = proc.wait();
    drop(stdin);
    Outcome {
        code: status.code(),
        stdout: stdout.iter().collect(),
        stderr: stderr.iter().collect(),
    }
}

/// A client driven line by line, stdout and stderr read by line as they come.
struct Interactive {
    proc: Proc,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Every stderr line seen so far.
    seen: Vec<String>,
}

impl Interactive {
    fn start(cmd: &mut Command) -> Interactive {
        let mut proc = spawn_piped(cmd);
        Interactive {
            stdin: proc.0.stdin.take(),
            stdout: lines_of(proc.0.stdout.take().expect("stdout")),
            stderr: lines_of(proc.0.stderr.take().expect("stderr")),
            proc,
            seen: Vec::new(),
        }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    fn next_line(&self) -> String {
        self.stdout.recv_timeout(TIMEOUT).expect("a line in time")
    }

    /// Wait for a stderr line that starts with `prefix`; returns it.
    fn stderr_line(&mut self, prefix: &str) -> String {
        loop {
            let line = self
                .stderr
                .recv_timeout(TIMEOUT)
                .unwrap_or_else(|_| panic!("no {prefix:?} line; stderr: {:?}", self.seen));
            self.seen.push(line.clone());
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Close stdin and wait for the exit; the status code and all of stderr.
    fn finish(mut self) -> (Option<i32>, Vec<String>) {
        self.stdin = None;
        let status = self.proc.wait();
        self.seen.extend(self.stderr.iter());
        (status.code(), self.seen)
    }
}

/// A running `gangway serve --listen 127.0.0.1:0 ARGS...`.
struct Serve {
    _proc: Proc,
    addr: SocketAddr,
}

impl Serve {
    fn start(args: &[&str]) -> Serve {
        let mut proc = spawn_piped(
            gangway()
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(args),
        );
        let line = lines_of(proc.0.stdout.take().expect("stdout"))
            .recv_timeout(TIMEOUT)
            .expect("serve prints its address");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Serve { _proc: proc, addr }
    }
}

/// A listener on a free loopback port.
fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

/// A raw HTTP peer for one connection: reads the request head, then runs `answer` on the
/// connection. Returns the request head.
fn raw_peer(
    answer: impl FnOnce(&str, &mut TcpStream) + Send + 'static,
) -> (SocketAddr, JoinHandle<String>) {
    let (l, addr) = listener();
    let peer = std::thread::spawn(move || {
        let (mut tcp, _) = l.accept().expect("accept");
        tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(
                tcp.read(&mut byte).expect("read head"),
                1,
                "closed in the head"
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).expect("ASCII head");
        answer(&head, &mut tcp);
        head
    });
    (addr, peer)
}

fn assert_one_line(out: &Outcome, prefix: &str) {
    assert_eq!(out.stderr.len(), 1, "{out:?}");
    assert!(out.stderr[0].starts_with(prefix), "{out:?}");
}

// --- exit codes ---

#[test]
fn refused_connection_exits_7() {
    let (l, addr) = listener();
    drop(l);
    let out = run(
        gangway().args(["connect", &format!("ws://{addr}/")]),
        Some(""),
    );
    assert_eq!(out.code, Some(7), "{out:?}");
    assert_one_line(&out, &format!("gangway: cannot connect to {addr}: "));
}

#[test]
fn unknown_host_exits_6() {
    // RFC 6761 §6.4: names under .invalid never resolve.
    let out = run(
        gangway().args(["connect", "ws://gangway-test.invalid:9/"]),
        Some(""),
    );
    assert_eq!(out.code, Some(6), "{out:?}");
    assert_one_line(
        &out,
        "gangway: could not resolve host gangway-test.invalid: ",
    );
}

#[test]
fn malformed_urls_exit_3_and_usage_errors_2() {
    for url in [
        "http://127.0.0.1:1/",
        "ws:///no-host",
        "ws://h/#fragment",
        "no url",
    ] {
        let out = run(gangway().args(["connect", url]), Some(""));
        assert_eq!(out.code, Some(3), "{url}: {out:?}");
        assert_one_line(&out, "gangway: invalid websocket url: ");
    }
    // A header the handshake writes itself cannot be given: the command line's mistake.
    let serve = Serve::start(&[]);
    let url = format!("ws://{}/", serve.addr);
    let out = run(
        gangway().args(["connect", &url, "-H", "Sec-WebSocket-Key: x"]),
        Some(""),
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_one_line(
        &out,
        "gangway: cannot send header \"Sec-WebSocket-Key\": the handshake writes this header itself",
    );
    // Options clap refuses: 2 as well.
    for args in [
        &["connect", &url, "--text", "--binary"][..],
        &["connect", &url, "--max-retries", "3"][..],
        &["connect", &url, "--connect-timeout", "never"][..],
        &["connect"][..],
    ] {
        let out = run(gangway().args(args), Some(""));
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
    }
}

#[test]
fn http_status_instead_of_101_exits_22() {
    let (addr, peer) = raw_peer(|_, tcp| {
        tcp.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
            .expect("write");
    });
    let out = run(
        gangway().args(["connect", &format!("ws://{addr}/")]),
        Some(""),
    );
    peer.join().expect("peer");
    assert_eq!(out.code, Some(22), "{out:?}");
    assert_eq!(
        out.stderr,
        ["gangway: handshake failed: unexpected status 403"]
    );
}

#[test]
fn invalid_upgrade_exits_8_and_no_answer_52() {
    let (addr, peer) = raw_peer(|_, tcp| {
        // A 101 whose Sec-WebSocket-Accept belongs to another key (RFC 6455 §4.1 item 4).
        tcp.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        )
        .expect("write");
    });
    let out = run(
        gangway().args(["connect", &format!("ws://{addr}/")]),
        Some(""),
    );
    peer.join().expect("peer");
    assert_eq!(out.code, Some(8), "{out:?}");
    assert_one_line(
        &out,
        "gangway: handshake failed: Sec-WebSocket-Accept mismatch",
    );

    // The request is read, then the connection closed without a word.
    let (addr, peer) = raw_peer(|_, _| {});
    let out = run(
        gangway().args(["connect", &format!("ws://{addr}/")]),
        Some(""),
    );
    peer.join().expect("peer");
    assert_eq!(out.code, Some(52), "{out:?}");
    assert_one_line(&out, "gangway: connection failed: ");
}

#[test]
fn silent_server_exits_28_at_the_connect_timeout() {
    // The kernel completes the TCP handshake from the backlog; nobody ever answers.
    let (_listener, addr) = listener();
    let started = Instant::now();
    let out = run(
        gangway().args([
            "connect",
            "--connect-timeout",
            "0.3",
            &format!("ws://{addr}/"),
        ]),
        None,
    );
    let elapsed = started.elapsed();
    assert_eq!(out.code, Some(28), "{out:?}");
    assert_eq!(
        out.stderr,
        ["gangway: connection failed: timed out after 0.3s (connect and opening handshake)"]
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

#[test]
fn lost_connection_exits_56() {
    let (addr, peer) = raw_peer(|head, tcp| {
        tcp.write_all(switching_protocols(head).as_bytes())
            .expect("write 101");
        tcp.write_all(&[0x81, 0x02, b'h', b'i']).expect("write");
        // Gone without a close frame (RFC 6455 §7.1.5: close code 1006).
    });
    let out = run(gangway().args(["connect", &format!("ws://{addr}/")]), None);
    peer.join().expect("peer");
    assert_eq!(out.code, Some(56), "{out:?}");
    assert_eq!(out.stdout, ["hi"]);
    assert_one_line(&out, "gangway: connection lost: ");
}

#[test]
fn tls_failures_exit_35_60_77_and_58() {
    let ca = TestCa::new("conventions");
    let issued = ca.issue("serve", &["localhost"], Usage::Server, Validity::Current);
    let cert = issued.cert.to_str().expect("UTF-8 path");
    let key = issued.key.to_str().expect("UTF-8 path");
    let cacert = ca.cert.to_str().expect("UTF-8 path");
    let tls = Serve::start(&["--tls-cert", cert, "--tls-key", key]);
    let port = tls.addr.port();

    // The certificate names localhost, not 127.0.0.1: refused, 60.
    let out = run(
        gangway().args([
            "connect",
            &format!("wss://127.0.0.1:{port}/"),
            "--cacert",
            cacert,
        ]),
        Some(""),
    );
    assert_eq!(out.code, Some(60), "{out:?}");
    assert_one_line(&out, "gangway: tls handshake with 127.0.0.1 failed: ");

    // TLS spoken to a server that does not speak it: 35.
    let plain = Serve::start(&[]);
    let out = run(
        gangway().args([
            "connect",
            &format!("wss://localhost:{}/", plain.addr.port()),
        ]),
        Some(""),
    );
    assert_eq!(out.code, Some(35), "{out:?}");
    assert_one_line(&out, "gangway: tls handshake with localhost failed: ");

    // Files that cannot be used: 77 for --cacert, 58 for --cert/--key.
    let url = format!("wss://localhost:{port}/");
    let out = run(
        gangway().args(["connect", &url, "--cacert", "/nonexistent/ca.pem"]),
        Some(""),
    );
    assert_eq!(out.code, Some(77), "{out:?}");
    assert_one_line(&out, "gangway: ");
    let out = run(
        gangway().args([
            "connect",
            &url,
            "--cert",
            "/nonexistent/c.pem",
            "--key",
            "/nonexistent/k.pem",
        ]),
        Some(""),
    );
    assert_eq!(out.code, Some(58), "{out:?}");
    assert_one_line(&out, "gangway: ");

    // And with -v, the TLS session is described before the request.
    let out = run(
        gangway().args(["connect", "-v", &url, "--cacert", cacert]),
        Some("over tls\n"),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, ["over tls"]);
    let tls_line = out
        .stderr
        .iter()
        .position(|l| l.starts_with("* tls: TLSv1."))
        .expect("a tls line");
    let request = out
        .stderr
        .iter()
        .position(|l| l.starts_with("> GET / HTTP/1.1"))
        .expect("the request");
    assert!(tls_line < request, "{:?}", out.stderr);
    assert!(
        out.stderr
            .iter()
            .any(|l| l.starts_with("* server certificate verified")),
        "{:?}",
        out.stderr
    );
}

// --- framing options ---

#[test]
fn text_is_the_default_and_can_be_said() {
    let serve = Serve::start(&[]);
    let url = format!("ws://{}/", serve.addr);
    for args in [&["connect", &url][..], &["connect", "--text", &url][..]] {
        let out = run(gangway().args(args), Some("caf\u{e9}\nline\twith tab\n"));
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(out.stdout, ["caf\u{e9}", "line\\twith tab"]);
    }
    // Invalid UTF-8 is no text: exit 1, nothing fits better in curl's list.
    let mut proc = spawn_piped(gangway().args(["connect", "--text", &url]));
    let stderr = lines_of(proc.0.stderr.take().expect("stderr"));
    let mut stdin = proc.0.stdin.take().expect("stdin");
    let _ = stdin.write_all(b"bad \xff\n");
    drop(stdin);
    let status = proc.wait();
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        stderr.iter().collect::<Vec<_>>(),
        ["gangway: stdin line 1 is not valid utf-8 (use --binary to send bytes)"]
    );
}

#[test]
fn a_message_with_newlines_prints_as_one_line() {
    let (l, addr) = listener();
    l.set_nonblocking(true).expect("nonblocking");
    let server = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                let l = tokio::net::TcpListener::from_std(l).expect("listener");
                let (tcp, _) = l.accept().await.expect("accept");
                let mut ws = ServerBuilder::new().accept(tcp).await.expect("handshake");
                ws.send(Message::text("two\nlines\r\nand a \\ backslash"))
                    .await
                    .expect("send");
                ws.send(Message::binary(b"bin\n\xff".to_vec()))
                    .await
                    .expect("send");
                ws.close(CloseCode::NORMAL, "").await.expect("close");
            });
    });
    let out = run(gangway().args(["connect", &format!("ws://{addr}/")]), None);
    server.join().expect("server");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        ["two\\nlines\\r\\nand a \\\\ backslash", "bin\\n\\xff"]
    );
}

// --- -v ---

#[test]
fn verbose_shows_the_handshake_as_sent_and_received() {
    let serve = Serve::start(&["--protocol", "chat"]);
    let out = run(
        gangway().args([
            "connect",
            "-v",
            "--protocol",
            "chat",
            "-H",
            "X-Trace: 1",
            &format!("ws://{}/v?x=1", serve.addr),
        ]),
        Some("hello\n"),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, ["hello"]);
    let err = &out.stderr;
    let addr = serve.addr;
    assert_eq!(err[0], format!("* connecting to 127.0.0.1:{}", addr.port()));
    assert_eq!(err[1], format!("* connected to {addr}"));
    assert_eq!(err[2], "> GET /v?x=1 HTTP/1.1");
    assert_eq!(err[3], format!("> Host: {addr}"));
    let key = err
        .iter()
        .find_map(|l| l.strip_prefix("> Sec-WebSocket-Key: "))
        .expect("the key sent");
    assert!(err.contains(&"> X-Trace: 1".to_owned()), "{err:?}");
    // The request head ends with its blank line, then the response head follows.
    let blank = err.iter().position(|l| l == "> ").expect("end of request");
    assert_eq!(err[blank + 1], "< HTTP/1.1 101 Switching Protocols");
    // The accept shown is the server's answer to the key shown: both are the real ones.
    let accept = gangway::proto::handshake::accept_key(key.as_bytes());
    assert!(
        err.contains(&format!("< Sec-WebSocket-Accept: {accept}")),
        "{err:?}"
    );
    assert!(
        err.contains(&"< Sec-WebSocket-Protocol: chat".to_owned()),
        "{err:?}"
    );
    let end = err.iter().position(|l| l == "< ").expect("end of response");
    assert_eq!(err[end + 1..], ["gangway: subprotocol: chat"]);
}

#[test]
fn verbose_shows_a_refusal_too() {
    let (addr, peer) = raw_peer(|_, tcp| {
        tcp.write_all(
            b"HTTP/1.1 404 Not Found\r\nX-Reason: no\troute\r\nContent-Length: 0\r\n\r\n",
        )
        .expect("write");
    });
    let out = run(
        gangway().args(["connect", "-v", &format!("ws://{addr}/missing")]),
        Some(""),
    );
    peer.join().expect("peer");
    assert_eq!(out.code, Some(22), "{out:?}");
    let err = &out.stderr;
    assert!(
        err.contains(&"> GET /missing HTTP/1.1".to_owned()),
        "{err:?}"
    );
    let status = err
        .iter()
        .position(|l| l == "< HTTP/1.1 404 Not Found")
        .expect("the status line");
    // What the server sent is escaped as messages are: one line, no control characters.
    assert_eq!(err[status + 1], "< X-Reason: no\\troute");
    assert_eq!(
        err.last().map(String::as_str),
        Some("gangway: handshake failed: unexpected status 404")
    );
}

// --- --reconnect ---

/// An in-test server for `connections` connections, one after the other. Connection `i` echoes
/// text until it got `quota[i]` messages, then ends as `ends[i]` says: `None` drops the TCP
/// connection without a close frame, `Some(code)` closes with that code. The last connection
/// echoes until the client closes. Returns the messages each connection received.
fn reconnect_server(ends: Vec<Option<u16>>) -> (SocketAddr, JoinHandle<Vec<Vec<String>>>) {
    let (l, addr) = listener();
    l.set_nonblocking(true).expect("nonblocking");
    let server = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                let l = tokio::net::TcpListener::from_std(l).expect("listener");
                let mut received = Vec::new();
                for i in 0..=ends.len() {
                    let accepted = tokio::time::timeout(TIMEOUT, l.accept()).await;
                    let (tcp, _) = accepted.expect("a connection in time").expect("accept");
                    let mut ws = ServerBuilder::new().accept(tcp).await.expect("handshake");
                    let mut got = Vec::new();
                    while let Some(Ok(m)) = ws.next().await {
                        let Message::Text(t) = m else { continue };
                        got.push(t.to_string());
                        ws.send(Message::text(t)).await.expect("echo");
                        if i < ends.len() {
                            break;
                        }
                    }
                    match ends.get(i) {
                        Some(Some(code)) => {
                            ws.close(CloseCode(*code), "restart").await.expect("close");
                        }
                        // Dropped: TCP ends without a close frame.
                        Some(None) | None => drop(ws),
                    }
                    received.push(got);
                }
                received
            })
    });
    (addr, server)
}

#[test]
fn reconnect_goes_on_with_stdin_after_a_drop_and_a_restart() {
    // Connection 1 is dropped, connection 2 closes with 1001, connection 3 stays.
    let (addr, server) = reconnect_server(vec![None, Some(1001)]);
    let mut client =
        Interactive::start(gangway().args(["connect", "--reconnect", &format!("ws://{addr}/")]));
    client.send_line("one");
    assert_eq!(client.next_line(), "one");
    client.stderr_line("gangway: connection lost: ");
    let wait = client.stderr_line("gangway: reconnecting in ");
    assert!(wait.ends_with(" (retry 1)"), "{wait}");
    // Typed while disconnected (or just reconnected): it waits for the new connection.
    client.send_line("two");
    client.stderr_line("gangway: reconnected");
    assert_eq!(client.next_line(), "two");
    client.stderr_line("gangway: closed by peer: 1001 restart");
    let wait = client.stderr_line("gangway: reconnecting in ");
    assert!(wait.ends_with(" (retry 2)"), "{wait}");
    client.send_line("three");
    assert_eq!(client.next_line(), "three");
    let (code, stderr) = client.finish();
    assert_eq!(code, Some(0), "{stderr:?}");
    assert_eq!(
        server.join().expect("server"),
        [vec!["one"], vec!["two"], vec!["three"]]
    );
}

#[test]
fn reconnect_gives_up_after_max_retries() {
    let (l, addr) = listener();
    drop(l);
    let started = Instant::now();
    let out = run(
        gangway().args([
            "connect",
            "--reconnect",
            "--max-retries",
            "2",
            &format!("ws://{addr}/"),
        ]),
        None,
    );
    let elapsed = started.elapsed();
    // The last failure's status: refused, 7.
    assert_eq!(out.code, Some(7), "{out:?}");
    let err = &out.stderr;
    assert_eq!(err.len(), 6, "{err:?}");
    for i in [0, 2, 4] {
        assert_eq!(
            err[i],
            format!("gangway: cannot connect to {addr}: connection refused"),
            "{err:?}"
        );
    }
    assert!(err[1].starts_with("gangway: reconnecting in 0."), "{err:?}");
    assert!(err[1].ends_with("s (retry 1 of 2)"), "{err:?}");
    assert!(err[3].ends_with("s (retry 2 of 2)"), "{err:?}");
    assert_eq!(err[5], "gangway: giving up after 2 retries");
    // 0.5 s then 1 s, each at most a quarter shorter.
    assert!(
        elapsed >= Duration::from_millis(1100) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
}

#[test]
fn reconnect_leaves_permanent_failures_and_clean_closes_alone() {
    let (addr, peer) = raw_peer(|_, tcp| {
        tcp.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .expect("write");
    });
    let out = run(
        gangway().args(["connect", "--reconnect", &format!("ws://{addr}/")]),
        None,
    );
    peer.join().expect("peer");
    assert_eq!(out.code, Some(22), "{out:?}");
    assert_eq!(
        out.stderr,
        ["gangway: handshake failed: unexpected status 404"]
    );

    // A close with 1000 ends the program: the server meant it.
    let (addr, peer) = raw_peer(|head, tcp| {
        tcp.write_all(switching_protocols(head).as_bytes())
            .expect("write 101");
        tcp.write_all(&[0x88, 0x02, 0x03, 0xe8]).expect("close");
        let mut answer = [0u8; 8];
        tcp.read_exact(&mut answer).expect("the client's close");
        assert_eq!(answer[0], 0x88);
    });
    let out = run(
        gangway().args(["connect", "--reconnect", &format!("ws://{addr}/")]),
        None,
    );
    peer.join().expect("peer");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stderr, Vec::<String>::new());
}
