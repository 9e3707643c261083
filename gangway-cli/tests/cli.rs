//! End-to-end tests of the `gangway` binary: its processes, its stdout/stderr lines and exit
//! statuses, against itself, an in-test gangway server, and hand-written raw peers.
//!
//! Every test is bounded in time and kills the processes it started on every path.

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gangway::{CloseCode, Message, ServerBuilder};

mod support;

use support::{collect, gangway, switching_protocols, text, Proc, Serve, TIMEOUT};

/// Run `cmd` with `input` on stdin to completion (at most `TIMEOUT`).
fn run(cmd: &mut Command, input: &[u8]) -> Output {
    let mut proc = Proc::spawn(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut stdin = proc.0.stdin.take().expect("stdin piped");
    let input = input.to_vec();
    // The process may exit without reading everything (an error); that is not the test's concern.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stdout = collect(proc.0.stdout.take().expect("stdout piped"));
    let stderr = collect(proc.0.stderr.take().expect("stderr piped"));
    let status = proc.wait();
    let _ = writer.join();
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Run `cmd` to completion (at most `TIMEOUT`) with a stdin that stays open, so only the peer
/// can end the session.
fn run_open_stdin(cmd: &mut Command) -> Output {
    let mut proc = Proc::spawn(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stdout = collect(proc.0.stdout.take().expect("stdout piped"));
    let stderr = collect(proc.0.stderr.take().expect("stderr piped"));
    let status = proc.wait();
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// A client process driven line by line: stdin stays open until dropped, stdout arrives by line.
struct Interactive {
    proc: Proc,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Interactive {
    fn start(cmd: &mut Command) -> Interactive {
        let mut proc = Proc::spawn(
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let stdin = proc.0.stdin.take();
        let stdout = proc.0.stdout.take().expect("stdout piped");
        let stderr = Some(collect(proc.0.stderr.take().expect("stderr piped")));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Interactive {
            proc,
            stdin,
            lines,
            stderr,
        }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    fn next_line(&self) -> String {
        self.lines.recv_timeout(TIMEOUT).expect("a line in time")
    }

    /// Wait for the exit (stdin still open); the status and stderr.
    fn wait(&mut self) -> (ExitStatus, String) {
        let status = self.proc.wait();
        self.stdin = None;
        let stderr = self.stderr.take().expect("stderr").join().expect("reader");
        (status, text(&stderr))
    }
}

/// A plain HTTP/1.1 request over a fresh connection; the whole answer (the server closes).
fn http_get(addr: SocketAddr, target: &str, extra_headers: &str) -> String {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    write!(
        tcp,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\n{extra_headers}Connection: close\r\n\r\n"
    )
    .expect("write request");
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).expect("read answer");
    text(&answer)
}

/// Read an HTTP head (through the blank line) byte by byte, leaving what follows unread.
fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut byte).expect("read head");
        assert_eq!(n, 1, "connection closed inside the head: {}", text(&head));
        head.push(byte[0]);
    }
    text(&head)
}

/// Run an async block on its own thread and runtime (the test thread stays free to block on
/// processes).
fn in_thread<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> JoinHandle<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move { tokio::time::timeout(TIMEOUT, fut).await.expect("in time") })
    })
}

/// A listener on a free loopback port, for a raw or in-test peer.
fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

// --- accept / key ---

#[test]
fn accept_prints_the_rfc_6455_example_value() {
    let out = run(gangway().args(["accept", "dGhlIHNhbXBsZSBub25jZQ=="]), b"");
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\n");
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn key_prints_a_fresh_16_byte_key_each_time() {
    let keys: Vec<String> = (0..2)
        .map(|_| {
            let out = run(gangway().arg("key"), b"");
            assert!(out.status.success());
            text(&out.stdout)
        })
        .collect();
    for key in &keys {
        let key = key.strip_suffix('\n').expect("ends with a newline");
        assert_eq!(key.len(), 24);
        assert!(gangway::proto::handshake::is_valid_key(key.as_bytes()));
    }
    assert_ne!(keys[0], keys[1]);
}

// --- connect against serve ---

#[test]
fn connect_sends_lines_and_prints_escaped_echoes() {
    let serve = Serve::start(&[]);
    let input = "hello\n\
                 tab\there\n\
                 crlf line\r\n\
                 \n\
                 bell\x07 esc\x1b del\x7f back\\slash cr\rmid\n\
                 caf\u{e9} \u{1F600}\n\
                 last line without newline";
    let out = run(
        gangway().args(["connect", &serve.url("/")]),
        input.as_bytes(),
    );
    assert_eq!(text(&out.stderr), "");
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(
        text(&out.stdout),
        "hello\n\
         tab\\there\n\
         crlf line\n\
         \n\
         bell\\x07 esc\\x1b del\\x7f back\\\\slash cr\\rmid\n\
         caf\u{e9} \u{1F600}\n\
         last line without newline\n"
    );
}

#[test]
fn connect_binary_sends_raw_bytes() {
    let serve = Serve::start(&[]);
    let out = run(
        gangway().args(["connect", "--binary", &serve.url("/bin")]),
        b"\xff\xfeabc\nok \xe2\x82\xac\n\x00\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "\\xff\\xfeabc\nok \u{20ac}\n\\x00\n");
}

#[test]
fn connect_refuses_invalid_utf8_in_text_mode() {
    let serve = Serve::start(&[]);
    let out = run(
        gangway().args(["connect", &serve.url("/")]),
        b"fine\nbad \xff\nnever sent\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "fine\n");
    assert_eq!(
        text(&out.stderr),
        "gangway: stdin line 2 is not valid utf-8 (use --binary to send bytes)\n"
    );
}

#[test]
fn connect_sends_a_16_mib_line() {
    let serve = Serve::start(&[]);
    let mut line: Vec<u8> = (0..16 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    let expected = line.clone();
    line.push(b'\n');
    let out = run(gangway().args(["connect", &serve.url("/")]), &line);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), expected.len() + 1);
    assert!(out.stdout.starts_with(&expected[..1000]));
    assert_eq!(&out.stdout[..expected.len()], &expected[..]);
}

#[test]
fn connect_negotiates_the_servers_subprotocol() {
    let serve = Serve::start(&["--protocol", "chat"]);
    let out = run(
        gangway().args([
            "connect",
            "--protocol",
            "superchat",
            "--protocol",
            "chat",
            &serve.url("/"),
        ]),
        b"hi\n",
    );
    assert!(out.status.success());
    assert_eq!(text(&out.stderr), "gangway: subprotocol: chat\n");
    assert_eq!(text(&out.stdout), "hi\n");

    let out = run(
        gangway().args(["connect", "--protocol", "superchat", &serve.url("/")]),
        b"",
    );
    assert!(out.status.success());
    assert_eq!(text(&out.stderr), "gangway: subprotocol: none\n");
}

#[test]
fn serve_fails_messages_over_the_limit_with_1009() {
    let serve = Serve::start(&["--max-message-size", "10"]);
    let mut client = Interactive::start(gangway().args(["connect", &serve.url("/")]));
    client.send_line("0123456789");
    assert_eq!(client.next_line(), "0123456789");
    client.send_line("0123456789a");
    let (status, stderr) = client.wait();
    // A close with an error code is a failure for the client (57).
    assert_eq!(status.code(), Some(57), "{status:?}");
    assert!(
        stderr.starts_with("gangway: closed by peer: 1009"),
        "{stderr}"
    );
}

#[test]
fn serve_closes_open_connections_with_1001_on_sigterm() {
    let mut serve = Serve::start(&[]);
    let mut client = Interactive::start(gangway().args(["connect", &serve.url("/some/path?x=1")]));
    // Once the echo is back the session is surely open.
    client.send_line("before shutdown");
    assert_eq!(client.next_line(), "before shutdown");

    let (status, log) = serve.terminate();
    assert!(status.success(), "serve exit {status:?}");
    assert!(log.contains("websocket ended"), "{log}");
    assert!(log.contains("1001"), "{log}");

    // Stdin is still open: the client ends because the server closed, with 1001.
    let (status, stderr) = client.wait();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        stderr,
        "gangway: closed by peer: 1001 server shutting down\n"
    );
}

// --- serve as an HTTP server ---

#[test]
fn serve_answers_the_demo_page_at_root() {
    let serve = Serve::start(&[]);
    let answer = http_get(serve.addr, "/", "");
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(body.starts_with("<!doctype html>"));
    assert!(body.contains("new WebSocket("));
    assert!(body.contains("/handshake?id="));
    assert!(body.trim_end().ends_with("</html>"));
}

#[test]
fn serve_answers_404_to_other_plain_requests() {
    let serve = Serve::start(&[]);
    let answer = http_get(serve.addr, "/nothing-here", "");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let answer = http_get(serve.addr, "/handshake?id=unknown", "");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[test]
fn serve_records_the_handshake_for_the_demo_page() {
    let serve = Serve::start(&["--protocol", "chat"]);
    let mut tcp = TcpStream::connect(serve.addr).expect("connect");
    tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    write!(
        tcp,
        "GET /demo?id=test-42 HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: other, chat\r\nX-Demo: \"quoted\"\r\n\r\n",
        serve.addr
    )
    .expect("write");
    let head = read_head(&mut tcp);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");

    let answer = http_get(serve.addr, "/handshake?id=test-42", "");
    let (head, json) = answer.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("application/json"));
    assert!(json.starts_with("{\"id\":\"test-42\""), "{json}");
    assert!(
        json.contains("\"key\":\"dGhlIHNhbXBsZSBub25jZQ==\""),
        "{json}"
    );
    assert!(
        json.contains("\"accept\":\"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\""),
        "{json}"
    );
    assert!(json.contains("\"protocol\":\"chat\""), "{json}");
    assert!(
        json.contains("\"request_line\":\"GET /demo?id=test-42 HTTP/1.1\""),
        "{json}"
    );
    assert!(json.contains("[\"x-demo\",\"\\\"quoted\\\"\"]"), "{json}");
}

// --- connect against in-test and raw peers ---

#[test]
fn connect_echo_sends_every_message_back() {
    let (l, addr) = listener();
    let server = in_thread(async move {
        l.set_nonblocking(true).expect("nonblocking");
        let l = tokio::net::TcpListener::from_std(l).expect("listener");
        let (tcp, _) = l.accept().await.expect("accept");
        let mut ws = ServerBuilder::new().accept(tcp).await.expect("handshake");
        let sent = vec![
            Message::text("one"),
            Message::binary(vec![0u8, 1, 2, 255]),
            Message::text("\u{1F600}".repeat(20_000)),
            Message::binary(Vec::new()),
        ];
        for m in &sent {
            ws.send(m.clone()).await.expect("send");
        }
        let mut received = Vec::new();
        while received.len() < sent.len() {
            let m = ws.next().await.expect("message").expect("no error");
            if matches!(m, Message::Text(_) | Message::Binary(_)) {
                received.push(m);
            }
        }
        ws.close(CloseCode::NORMAL, "").await.expect("close");
        (sent, received)
    });
    let out = run(
        gangway().args(["connect", "--echo", &format!("ws://{addr}/")]),
        b"stdin is ignored\n",
    );
    let (sent, received) = server.join().expect("server");
    assert_eq!(received, sent);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn connect_reports_the_peers_close_code_and_reason() {
    let (l, addr) = listener();
    let server = in_thread(async move {
        l.set_nonblocking(true).expect("nonblocking");
        let l = tokio::net::TcpListener::from_std(l).expect("listener");
        let (tcp, _) = l.accept().await.expect("accept");
        let mut ws = ServerBuilder::new().accept(tcp).await.expect("handshake");
        ws.send(Message::text("bye soon")).await.expect("send");
        ws.close(CloseCode(4001), "done\nnow").await.expect("close");
        ws.close_frame().cloned()
    });
    let out = run_open_stdin(gangway().args(["connect", &format!("ws://{addr}/")]));
    let answer = server.join().expect("server");
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(text(&out.stdout), "bye soon\n");
    assert_eq!(
        text(&out.stderr),
        "gangway: closed by peer: 4001 done\\nnow\n"
    );
    // The client answered with the same code (RFC 6455 §5.5.1).
    assert_eq!(answer.flatten().map(|f| f.code), Some(CloseCode(4001)));
}

#[test]
fn connect_fails_with_1007_on_invalid_utf8_text() {
    let (addr, server) = raw_server(|tcp| {
        // A valid message, then a text frame that is not UTF-8.
        tcp.write_all(&[0x81, 0x02, b'o', b'k']).expect("write");
        tcp.write_all(&[0x81, 0x03, b'a', 0xff, b'b'])
            .expect("write");
        // The client's close frame: FIN + close, masked, payload = code.
        let mut header = [0u8; 2];
        tcp.read_exact(&mut header).expect("close frame");
        assert_eq!(header[0], 0x88);
        assert_eq!(header[1] & 0x80, 0x80, "client frames are masked");
        let len = usize::from(header[1] & 0x7f);
        let mut rest = vec![0u8; 4 + len];
        tcp.read_exact(&mut rest).expect("close payload");
        let payload: Vec<u8> = rest[4..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ rest[i % 4])
            .collect();
        // Answer the close, then end the TCP connection as a server does. The client may be gone
        // already (a failed connection may be closed by either side, RFC 6455 §7.1.7).
        let _ = tcp.write_all(&[0x88, 0x02, payload[0], payload[1]]);
        u16::from_be_bytes([payload[0], payload[1]])
    });
    // Stdin stays open: the close must come from the failure, not from EOF.
    let out = run_open_stdin(gangway().args(["connect", &format!("ws://{addr}/")]));
    let code = server.join().expect("raw server");
    assert_eq!(code, 1007);
    // curl's 56, "failure receiving network data": the peer broke the protocol.
    assert_eq!(out.status.code(), Some(56));
    assert_eq!(text(&out.stdout), "ok\n");
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("gangway: protocol error: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn connect_reports_an_http_error_status() {
    let (l, addr) = listener();
    let server = std::thread::spawn(move || {
        let (mut tcp, _) = l.accept().expect("accept");
        tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        read_head(&mut tcp);
        tcp.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
            .expect("write");
    });
    let out = run(gangway().args(["connect", &format!("ws://{addr}/")]), b"");
    server.join().expect("raw server");
    // curl's 22: the server answered the upgrade with an HTTP error.
    assert_eq!(out.status.code(), Some(22));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("gangway: handshake failed: "),
        "{stderr}"
    );
    assert!(stderr.contains("unexpected status 404"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn connect_reports_a_refused_connection() {
    let (l, addr) = listener();
    drop(l);
    let out = run(gangway().args(["connect", &format!("ws://{addr}/")]), b"");
    // curl's 7, "failed to connect to host".
    assert_eq!(out.status.code(), Some(7));
    // The address that refused, and why, in the words a person uses.
    assert_eq!(
        text(&out.stderr),
        format!("gangway: cannot connect to {addr}: connection refused\n")
    );
}

#[test]
fn connect_refuses_a_url_with_an_invalid_port_before_connecting() {
    for port in ["99999", "65536", "abc"] {
        let out = run(
            gangway().args(["connect", &format!("ws://127.0.0.1:{port}/")]),
            b"",
        );
        // curl's 3, "URL malformed"; not a connection to port 80.
        assert_eq!(out.status.code(), Some(3), "{port}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stderr),
            format!("gangway: invalid websocket url: invalid port {port} (ports are 1 to 65535)\n")
        );
    }
}

#[test]
fn connect_names_a_header_it_cannot_send_and_why_before_connecting() {
    // Nothing listens: the header is refused before any connection is tried.
    let out = run(
        gangway().args(["connect", "ws://127.0.0.1:1/", "-H", "Upgrade: h2c"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "gangway: cannot send header \"Upgrade\": the handshake writes this header itself\n"
    );
    let out = run(
        gangway().args(["connect", "ws://127.0.0.1:1/", "-H", "X-Bell: a\u{7}b"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with("gangway: cannot send header \"X-Bell\": "),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn serve_listen_and_threads_options_explain_what_they_need() {
    let out = run(gangway().args(["serve", "--listen", "9001"]), b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("an address needs a host: 127.0.0.1:9001"),
        "{}",
        text(&out.stderr)
    );
    let out = run(gangway().args(["serve", "--listen", "localhost"]), b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("an address needs a port"));
    let out = run(gangway().args(["serve", "--threads", "100000"]), b"");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("0..=1024"),
        "{}",
        text(&out.stderr)
    );
}

/// A raw server thread: answers the upgrade, then runs `script` on the connection.
fn raw_server<T: Send + 'static>(
    script: impl FnOnce(&mut TcpStream) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let (l, addr) = listener();
    let server = std::thread::spawn(move || {
        let (mut tcp, _) = l.accept().expect("accept");
        tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let head = read_head(&mut tcp);
        tcp.write_all(switching_protocols(&head).as_bytes())
            .expect("write 101");
        script(&mut tcp)
    });
    (addr, server)
}

/// Read one masked client frame: (first byte, unmasked payload).
fn read_client_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 2];
    tcp.read_exact(&mut header).expect("frame header");
    assert_eq!(header[1] & 0x80, 0x80, "client frames are masked");
    let len = usize::from(header[1] & 0x7f);
    assert!(len < 126);
    let mut rest = vec![0u8; 4 + len];
    tcp.read_exact(&mut rest).expect("frame payload");
    let payload = rest[4..]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ rest[i % 4])
        .collect();
    (header[0], payload)
}

/// Abort the connection with a reset (SO_LINGER 0), as the Autobahn testsuite's server does
/// after each close handshake.
fn reset(tcp: TcpStream) {
    let tcp = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async move {
            tcp.set_nonblocking(true).expect("nonblocking");
            tokio::net::TcpStream::from_std(tcp).expect("tokio stream")
        });
    tcp.set_zero_linger().expect("SO_LINGER 0");
    drop(tcp);
}

#[test]
fn connect_exits_0_when_the_server_resets_after_the_close_handshake() {
    let (addr, server) = raw_server(|tcp| {
        tcp.write_all(&[0x81, 0x02, b'h', b'i']).expect("message");
        tcp.write_all(&[0x88, 0x02, 0x03, 0xe8]).expect("close");
        let (first, payload) = read_client_frame(tcp);
        assert_eq!((first, payload), (0x88, vec![0x03, 0xe8]));
        reset(tcp.try_clone().expect("clone"));
    });
    let out = run_open_stdin(gangway().args(["connect", &format!("ws://{addr}/")]));
    server.join().expect("raw server");
    // RFC 6455 §7.1.4: both close frames crossed; the reset that followed is not a failure.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn connect_exits_non_zero_when_the_peer_closes_with_an_error_code() {
    for (code, status) in [(1011u16, 57), (1002, 57), (1009, 57), (1001, 0), (4000, 0)] {
        let (addr, server) = raw_server(move |tcp| {
            let [hi, lo] = code.to_be_bytes();
            tcp.write_all(&[0x88, 0x02, hi, lo]).expect("close");
            let _ = read_client_frame(tcp);
        });
        let out = run_open_stdin(gangway().args(["connect", &format!("ws://{addr}/")]));
        server.join().expect("raw server");
        assert_eq!(
            out.status.code(),
            Some(status),
            "{code}: {}",
            text(&out.stderr)
        );
        if code != 1000 {
            assert_eq!(
                text(&out.stderr),
                format!("gangway: closed by peer: {code}\n")
            );
        }
    }
}

#[test]
fn connect_waits_at_the_end_of_stdin_for_an_answer_sent_late() {
    // The server answers 300 ms after the line, as a handler that does some work would, and, as
    // Python websockets does, sends nothing more once our close has arrived (RFC 6455 §5.5.1):
    // a close sent at the end of stdin would take the answer's place.
    let (addr, server) = raw_server(|tcp| {
        let (first, payload) = read_client_frame(tcp);
        assert_eq!((first, payload.as_slice()), (0x81, &b"question"[..]));
        tcp.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut next = [0u8; 1];
        match tcp.peek(&mut next) {
            Ok(1) => {
                // The close came first: answer it, and the answer is never sent.
                let (first, payload) = read_client_frame(tcp);
                assert_eq!(first, 0x88);
                let _ = tcp.write_all(&[0x88, 0x02, payload[0], payload[1]]);
                return;
            }
            Ok(_) => return,
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{e}"
            ),
        }
        tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        tcp.write_all(&[0x81, 0x06]).expect("header");
        tcp.write_all(b"answer").expect("answer");
        let (first, payload) = read_client_frame(tcp);
        assert_eq!((first, payload), (0x88, vec![0x03, 0xe8]), "then our close");
        tcp.write_all(&[0x88, 0x02, 0x03, 0xe8])
            .expect("close answer");
    });
    let out = run(
        gangway().args(["connect", &format!("ws://{addr}/")]),
        b"question\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "answer\n");
    server.join().expect("raw server");
}

#[test]
fn connect_max_received_closes_after_that_many_messages() {
    let (addr, server) = raw_server(|tcp| {
        for word in [&b"one"[..], b"two", b"three"] {
            tcp.write_all(&[0x81, word.len() as u8]).expect("header");
            tcp.write_all(word).expect("payload");
        }
        let (first, payload) = read_client_frame(tcp);
        assert_eq!((first, payload), (0x88, vec![0x03, 0xe8]));
        tcp.write_all(&[0x88, 0x02, 0x03, 0xe8])
            .expect("close answer");
    });
    // Stdin stays open: the count alone ends the session, as websocat's --max-messages-rev.
    let out = run_open_stdin(gangway().args([
        "connect",
        "--max-received",
        "2",
        &format!("ws://{addr}/"),
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one\ntwo\n");
    server.join().expect("raw server");
}

#[test]
fn connect_closes_with_1001_and_exits_130_on_ctrl_c() {
    let (tx, rx) = mpsc::channel();
    let (addr, server) = raw_server(move |tcp| {
        tcp.write_all(&[0x81, 0x05]).expect("header");
        tcp.write_all(b"ready").expect("payload");
        let (first, payload) = read_client_frame(tcp);
        tx.send(()).ok();
        let _ = tcp.write_all(&[0x88, 0x02, payload[0], payload[1]]);
        assert_eq!(first, 0x88);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001);
    });
    let mut client = Interactive::start(gangway().args(["connect", &format!("ws://{addr}/")]));
    assert_eq!(client.next_line(), "ready");
    let status = Command::new("kill")
        .args(["-INT", &client.proc.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    rx.recv_timeout(TIMEOUT)
        .expect("the close frame reached the server");
    server.join().expect("raw server");
    let (status, _stderr) = client.wait();
    assert_eq!(status.code(), Some(130));
}

#[test]
fn usage_errors_exit_with_2() {
    let out = run(gangway().arg("connect"), b"");
    assert_eq!(out.status.code(), Some(2));
    let out = run(gangway().args(["connect", "ws://x/", "-H", "nocolon"]), b"");
    assert_eq!(out.status.code(), Some(2));
    // A URL that is not a WebSocket URL is curl's 3, "URL malformed", not a usage error.
    let out = run(gangway().args(["connect", "http://127.0.0.1:1/"]), b"");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("gangway: "));
    let out = run(gangway().arg("frobnicate"), b"");
    assert_eq!(out.status.code(), Some(2));
}

// --- keepalive and origin policy ---

/// A raw WebSocket upgrade to `serve` with `extra` header lines; the response head, and the
/// connection for what follows.
fn raw_upgrade(addr: SocketAddr, extra: &str) -> (String, TcpStream) {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    write!(
        tcp,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .expect("write request");
    (read_head(&mut tcp), tcp)
}

#[test]
fn serve_drops_a_dead_client_at_the_idle_timeout() {
    let mut serve = Serve::start(&["--ping-interval", "0.1", "--idle-timeout", "0.4"]);
    let (head, mut tcp) = raw_upgrade(serve.addr, "");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let started = Instant::now();
    // The client is "dead": it reads, but never answers. It sees pings, then the end of the
    // connection without a close frame (1006, RFC 6455 §7.1.5).
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).expect("the server closes");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(350) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(rest.len() >= 4 && rest.len() % 2 == 0, "{rest:x?}");
    assert!(
        rest.chunks(2).all(|f| f == [0x89, 0x00]),
        "only pings: {rest:x?}"
    );
    let (status, log) = serve.terminate();
    assert!(status.success());
    assert!(log.contains("peer idle timeout"), "{log}");
}

#[test]
fn serve_keeps_a_client_that_answers_pings() {
    let serve = Serve::start(&["--ping-interval", "0.1", "--idle-timeout", "0.3"]);
    let mut client = Interactive::start(gangway().args(["connect", &serve.url("/")]));
    client.send_line("first");
    assert_eq!(client.next_line(), "first");
    // Four idle timeouts of silence; the client answers the pings meanwhile.
    std::thread::sleep(Duration::from_millis(1200));
    client.send_line("still here");
    assert_eq!(client.next_line(), "still here");
}

#[test]
fn connect_gives_up_on_a_silent_server_at_the_idle_timeout() {
    let (l, addr) = listener();
    let server = std::thread::spawn(move || {
        let (mut tcp, _) = l.accept().expect("accept");
        tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let head = read_head(&mut tcp);
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .expect("key header");
        let accept = gangway::proto::handshake::accept_key(key.as_bytes());
        write!(
            tcp,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .expect("write 101");
        // Silent from now on, though it reads: the client's pings arrive, masked.
        let mut pings = 0;
        let mut frame = [0u8; 6];
        while tcp.read_exact(&mut frame).is_ok() {
            assert_eq!(frame[..2], [0x89, 0x80], "an empty masked ping");
            pings += 1;
        }
        pings
    });
    let started = Instant::now();
    let out = run_open_stdin(gangway().args([
        "connect",
        "--ping-interval",
        "0.1",
        "--idle-timeout",
        "0.5",
        &format!("ws://{addr}/"),
    ]));
    let elapsed = started.elapsed();
    let pings = server.join().expect("raw server");
    // curl's 28, "operation timeout".
    assert_eq!(out.status.code(), Some(28));
    assert_eq!(
        text(&out.stderr),
        "gangway: connection lost: peer idle timeout\n"
    );
    assert!(pings >= 2, "{pings} pings");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[test]
fn serve_accepts_only_the_given_origins() {
    let serve = Serve::start(&[
        "--origin",
        "https://app.example",
        "--origin",
        "http://localhost:8080",
    ]);
    for origin in [
        "https://app.example",
        "HTTPS://APP.example:443",
        "http://localhost:8080",
    ] {
        let (head, _tcp) = raw_upgrade(serve.addr, &format!("Origin: {origin}\r\n"));
        assert!(head.starts_with("HTTP/1.1 101"), "{origin}: {head}");
    }
    for origin in ["https://evil.example", "http://app.example", "null"] {
        let (head, _tcp) = raw_upgrade(serve.addr, &format!("Origin: {origin}\r\n"));
        assert!(head.starts_with("HTTP/1.1 403"), "{origin}: {head}");
    }
    // No Origin: a non-browser client, accepted.
    let (head, _tcp) = raw_upgrade(serve.addr, "");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

#[test]
fn keepalive_and_origin_options_refuse_bad_values() {
    for args in [
        &["serve", "--ping-interval", "-1"][..],
        &["serve", "--idle-timeout", "soon"][..],
        &["serve", "--origin", "example.com"][..],
        &["connect", "ws://127.0.0.1:1/", "--idle-timeout", "-0.5"][..],
    ] {
        let out = run(gangway().args(args), b"");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

/// A WebSocket client written by hand over a blocking socket, upgraded on `serve`.
fn raw_client(serve: &Serve) -> TcpStream {
    let mut tcp = TcpStream::connect(serve.addr).expect("connect");
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{}", text(&head));
    tcp
}

/// A masked client frame (FIN set).
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    gangway_test_support::masked(opcode, payload)
}

/// The next server frame (unmasked, short): its opcode and payload.
fn read_server_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).expect("frame header");
    assert!(head[1] < 126, "a short unmasked frame: {head:?}");
    let mut payload = vec![0u8; usize::from(head[1])];
    tcp.read_exact(&mut payload).expect("frame payload");
    (head[0] & 0x0f, payload)
}

/// Send our close frame, read the server's answer, then its end of the stream (its FIN).
fn close_and_read_to_eof(tcp: &mut TcpStream) {
    tcp.write_all(&masked_frame(0x8, &1000u16.to_be_bytes()))
        .unwrap();
    loop {
        match read_server_frame(tcp) {
            (0x8, payload) => {
                assert_eq!(payload, 1000u16.to_be_bytes());
                break;
            }
            // A keepalive ping sent before our close arrived: not answered.
            (0x9, _) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
    let mut rest = [0u8; 16];
    assert_eq!(tcp.read(&mut rest).expect("the server's FIN"), 0);
}

/// What the server's socket does with bytes sent after its FIN: `Ok` if it still reads them (it
/// is waiting for our FIN), an error if it is closed already and answered them with a reset.
fn bytes_after_the_close(tcp: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    // Time for a server that does not wait to have closed its socket (it closes right after its
    // FIN); `LINGER_TIMEOUT`, how long one that waits does so, is 1 s.
    std::thread::sleep(Duration::from_millis(400));
    tcp.write_all(bytes)?;
    // Time for a reset to come back over loopback. Reads cannot tell (they keep returning the
    // end of the stream that came first); a second write fails once the reset is in.
    std::thread::sleep(Duration::from_millis(100));
    tcp.write_all(bytes)
}

#[test]
fn serve_does_not_wait_for_a_client_that_closed_cleanly() {
    let mut serve = Serve::start(&["--ping-interval", "0"]);
    let mut tcp = raw_client(&serve);
    tcp.write_all(&masked_frame(0x1, b"hi")).unwrap();
    assert_eq!(read_server_frame(&mut tcp), (0x1, b"hi".to_vec()));
    close_and_read_to_eof(&mut tcp);
    // The client owes nothing after its close frame: the server closed its socket at once
    // instead of waiting for our FIN, so bytes sent now (which no client should send) meet a
    // closed socket.
    let err = bytes_after_the_close(&mut tcp, &masked_frame(0x1, b"late"))
        .expect_err("the server's socket is closed");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        "{err}"
    );
    let (status, log) = serve.terminate();
    assert!(status.success(), "{status:?}");
    assert!(log.contains("closed by peer, code 1000"), "{log}");
}

#[test]
fn serve_waits_for_the_pong_a_client_still_owes() {
    let mut serve = Serve::start(&["--ping-interval", "0.2"]);
    let mut tcp = raw_client(&serve);
    // A keepalive ping, left unanswered; then our close crosses it.
    assert_eq!(read_server_frame(&mut tcp), (0x9, Vec::new()));
    close_and_read_to_eof(&mut tcp);
    // The pong may follow our close frame (§5.5.1 forbids only data frames): the server still
    // reads, so it arrives without a reset.
    bytes_after_the_close(&mut tcp, &masked_frame(0xA, b"")).expect("no reset");
    drop(tcp);
    let (status, log) = serve.terminate();
    assert!(status.success(), "{status:?}");
    assert!(log.contains("closed by peer, code 1000"), "{log}");
}

/// RFC 9113 §3.4: the client connection preface, then its first frame, an empty SETTINGS.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// The frames of an HTTP/2 byte stream (RFC 9113 §4.1): (type, payload), up to the last whole one.
fn h2_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes.len() < 9 + len {
            break;
        }
        frames.push((bytes[3], bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    frames
}

#[test]
fn serve_closes_an_http2_connection_left_idle_with_goaway() {
    check_idle_http2_connection_closed(&[]);
}

#[test]
fn serve_closes_an_http2_connection_that_stalls_in_the_middle_of_its_headers() {
    // A HEADERS frame for stream 1 that announces 64 bytes and stops after 9: no stream is
    // open until the frame is whole, so the connection counts as idle.
    let mut partial = vec![0, 0, 64, 0x1, 0x4, 0, 0, 0, 1];
    partial.extend_from_slice(&[0x82, 0x87, 0x84, 0x41, 0x8a, 0x08, 0x9d, 0x5c, 0x0b]);
    check_idle_http2_connection_closed(&partial);
}

/// A client that sends the preface and `then`, and nothing more (not even the answer to the PING
/// that comes with the GOAWAY): the server says GOAWAY after the idle timeout, then drops the
/// connection after as long again.
fn check_idle_http2_connection_closed(then: &[u8]) {
    let mut serve = Serve::start(&["--idle-timeout", "0.5"]);
    let mut tcp = TcpStream::connect(serve.addr).expect("connect");
    tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    tcp.write_all(H2_PREFACE).expect("preface");
    tcp.write_all(then).expect("the rest");
    let started = Instant::now();
    let mut all = Vec::new();
    tcp.read_to_end(&mut all).expect("the server closes");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    let frames = h2_frames(&all);
    // SETTINGS first (§3.4), then a GOAWAY with NO_ERROR (§6.8: error code after the last
    // stream id).
    assert_eq!(frames.first().map(|f| f.0), Some(0x4), "{frames:?}");
    let goaway = frames.iter().find(|f| f.0 == 0x7).expect("a GOAWAY");
    assert_eq!(goaway.1.get(4..8), Some(&[0, 0, 0, 0][..]), "{goaway:?}");
    let (status, log) = serve.terminate();
    assert!(status.success());
    assert!(log.contains("http/2 connection idle"), "{log}");
}

#[test]
fn serve_keeps_an_http2_connection_while_a_websocket_is_open_then_closes_it_when_idle() {
    let serve = Serve::start(&["--idle-timeout", "0.6", "--ping-interval", "0.2"]);
    let url = serve.url("/");
    let checked = in_thread(async move {
        let builder = gangway::ClientBuilder::new(&url).expect("url");
        let conn = gangway::http2::Http2Connection::connect(&builder)
            .await
            .expect("an HTTP/2 connection");
        let (mut ws, response) = conn.websocket(&url).await.expect("a websocket");
        assert_eq!(response.status(), 200);
        // Three idle timeouts with the WebSocket open (the client answers the server's pings
        // as it reads): the connection stays, the WebSocket echoes.
        let open_until = tokio::time::Instant::now() + Duration::from_millis(1800);
        let mut sent = 0;
        while tokio::time::Instant::now() < open_until {
            sent += 1;
            ws.send(Message::text(format!("message {sent}")))
                .await
                .expect("send");
            // The server's pings come too (answered by the library as they are read).
            let echo = loop {
                match ws.next().await.expect("an echo").expect("no error") {
                    Message::Ping(_) | Message::Pong(_) => continue,
                    other => break other,
                }
            };
            assert_eq!(echo, Message::text(format!("message {sent}")));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ws.close(CloseCode::NORMAL, "").await.expect("close");
        while let Some(next) = ws.next().await {
            next.expect("a clean close");
        }
        // Without a stream, the connection is idle: the server ends it after the timeout.
        let closed_at = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .expect("the server closes the idle connection");
        (sent, closed_at.elapsed())
    });
    let (sent, closed_after) = checked.join().expect("the client's checks");
    assert!(sent >= 5, "{sent}");
    assert!(
        closed_after >= Duration::from_millis(500) && closed_after < Duration::from_secs(3),
        "{closed_after:?}"
    );
}
