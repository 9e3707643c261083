//! End-to-end tests of `gangway bench`: against `gangway serve` (echo and handshake modes, the
//! JSON line), against hand-written servers that echo wrongly (errors counted, exit status 1),
//! and without a server at all.
//!
//! Every run is short (about a second) and bounded; every process started is killed on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use gangway_proto::frame::FrameHeader;

mod support;

use support::{collect, gangway, switching_protocols, text, Proc, Serve};

/// Upper bound for a bench run and for the hand-written servers' reads.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A finished `gangway bench` run.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Run `gangway bench URL ARGS...` to completion, at most `support::TIMEOUT`.
fn bench(url: &str, args: &[&str]) -> Run {
    let mut proc = Proc::spawn(
        gangway()
            .arg("bench")
            .arg(url)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stdout = collect(proc.0.stdout.take().expect("stdout piped"));
    let stderr = collect(proc.0.stderr.take().expect("stderr piped"));
    let status = proc.wait();
    let read = |h: JoinHandle<Vec<u8>>| text(&h.join().expect("reader"));
    Run {
        status,
        stdout: read(stdout),
        stderr: read(stderr),
    }
}

/// The keys of the JSON line, in order.
const KEYS: [&str; 15] = [
    "mode",
    "url",
    "connections",
    "payload",
    "window",
    "text",
    "duration_s",
    "count",
    "per_s",
    "mib_per_s",
    "p50_us",
    "p99_us",
    "p999_us",
    "max_us",
    "errors",
];

/// The JSON line of a run, checked for shape: one line, one object, every key in order, each
/// value a JSON string, boolean or number. Values by key, as their JSON text.
fn json(run: &Run) -> Vec<(String, String)> {
    let line = run.stdout.strip_suffix('\n').expect("a final newline");
    assert!(!line.contains('\n'), "one line only: {:?}", run.stdout);
    let body = line
        .strip_prefix('{')
        .and_then(|l| l.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a JSON object: {line}"));
    // No value in these tests contains a comma (the URL is ws://127.0.0.1:PORT/).
    let fields: Vec<(String, String)> = body
        .split(',')
        .map(|f| {
            let (k, v) = f.split_once(':').unwrap_or_else(|| panic!("field {f:?}"));
            let k = k
                .strip_prefix('"')
                .and_then(|k| k.strip_suffix('"'))
                .unwrap_or_else(|| panic!("key {k:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, KEYS, "{line}");
    for (k, v) in &fields {
        let string = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
        let boolean = v == "true" || v == "false";
        let number = v.parse::<f64>().is_ok_and(f64::is_finite);
        assert!(string || boolean || number, "{k}: {v}");
    }
    fields
}

fn get<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    &fields
        .iter()
        .find(|(k, _)| k == key)
        .expect("key present")
        .1
}

fn num(fields: &[(String, String)], key: &str) -> f64 {
    get(fields, key).parse().expect("a number")
}

/// The checks every clean run passes: counted something, no errors, ordered percentiles.
fn assert_clean(run: &Run, mode: &str) -> Vec<(String, String)> {
    assert!(
        run.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        run.status,
        run.stdout,
        run.stderr
    );
    let f = json(run);
    assert_eq!(get(&f, "mode"), format!("\"{mode}\""));
    assert_eq!(num(&f, "errors"), 0.0, "{}", run.stdout);
    let count = num(&f, "count");
    assert!(count > 0.0, "{}", run.stdout);
    let duration = num(&f, "duration_s");
    assert!((num(&f, "per_s") - count / duration).abs() <= 0.1 + count * 1e-9);
    let (p50, p99, p999, max) = (
        num(&f, "p50_us"),
        num(&f, "p99_us"),
        num(&f, "p999_us"),
        num(&f, "max_us"),
    );
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{}",
        run.stdout
    );
    f
}

#[test]
fn echo_runs_against_gangway_serve() {
    let serve = Serve::start(&[]);
    let url = serve.url("/");
    for (connections, window, payload, text) in [
        ("2", "1", "16", false),
        ("2", "16", "16", true),
        ("3", "16", "1000", false),
        ("1", "4", "70000", true),
    ] {
        let mut args = vec![
            "--json",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--connections",
            connections,
            "--window",
            window,
            "--payload",
            payload,
        ];
        if text {
            args.push("--text");
        }
        let run = bench(&url, &args);
        let f = assert_clean(&run, "echo");
        assert_eq!(get(&f, "url"), format!("\"{url}\""));
        assert_eq!(get(&f, "connections"), connections);
        assert_eq!(get(&f, "window"), window);
        assert_eq!(get(&f, "payload"), payload);
        assert_eq!(get(&f, "text"), text.to_string());
        let payload: f64 = payload.parse().unwrap();
        let expected_mib = num(&f, "per_s") * payload / 1_048_576.0;
        assert!((num(&f, "mib_per_s") - expected_mib).abs() <= 0.001 + expected_mib * 1e-3);
    }
}

#[test]
fn echo_on_several_threads_and_human_summary() {
    let serve = Serve::start(&[]);
    let run = bench(
        &serve.url("/"),
        &[
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--connections",
            "4",
            "--window",
            "8",
            "--threads",
            "2",
        ],
    );
    assert!(run.status.success(), "{}{}", run.stdout, run.stderr);
    for label in [
        "messages",
        "per second",
        "MiB/s",
        "latency",
        "p99.9",
        "errors      0\n",
    ] {
        assert!(run.stdout.contains(label), "{label}: {}", run.stdout);
    }
    // Not a terminal: no progress line.
    assert_eq!(run.stderr, "");
}

#[test]
fn handshakes_against_gangway_serve() {
    let serve = Serve::start(&[]);
    let run = bench(
        &serve.url("/"),
        &[
            "--handshakes",
            "--json",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--connections",
            "2",
        ],
    );
    let f = assert_clean(&run, "handshakes");
    assert_eq!(num(&f, "mib_per_s"), 0.0);
}

/// How a hand-written server answers each data frame.
#[derive(Clone, Copy, Debug)]
enum Misbehave {
    /// A binary frame one byte longer than the message.
    WrongLength,
    /// Bytes that are no frame at all (a reserved opcode).
    Garbage,
    /// Every byte back unchanged, masked frames included (a raw TCP echo: the ceiling that
    /// `bench --raw-echo` measures).
    RawEcho,
}

/// A server that completes the opening handshake properly, then answers as `how` says, and
/// the close handshake properly. It serves connections until the test ends.
fn misbehaving_server(how: Misbehave) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            std::thread::spawn(move || {
                let _ = serve_one(tcp, how);
            });
        }
    });
    addr
}

fn serve_one(mut tcp: TcpStream, how: Misbehave) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(TIMEOUT))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tcp.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    tcp.write_all(switching_protocols(&head).as_bytes())?;
    buf.drain(..head_end);
    if let Misbehave::RawEcho = how {
        tcp.write_all(&buf)?;
        loop {
            let n = tcp.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            tcp.write_all(&chunk[..n])?;
        }
    }
    loop {
        // Every complete frame in `buf`.
        while let Ok(Some((h, len))) = FrameHeader::decode(&buf) {
            let total = len + h.payload_len as usize;
            if buf.len() < total {
                break;
            }
            buf.drain(..total);
            match h.opcode.as_u8() {
                0x8 => {
                    tcp.write_all(&[0x88, 0x02, 0x03, 0xE8])?;
                    tcp.shutdown(std::net::Shutdown::Write)?;
                    while tcp.read(&mut chunk)? > 0 {}
                    return Ok(());
                }
                0x1 | 0x2 => match how {
                    Misbehave::WrongLength => {
                        let wrong = h.payload_len as usize + 1;
                        let mut frame = vec![0x82];
                        if wrong < 126 {
                            frame.push(wrong as u8);
                        } else {
                            frame.push(126);
                            frame.extend_from_slice(&(wrong as u16).to_be_bytes());
                        }
                        frame.resize(frame.len() + wrong, b'x');
                        tcp.write_all(&frame)?;
                    }
                    Misbehave::Garbage => tcp.write_all(&[0xFF; 16])?,
                    Misbehave::RawEcho => unreachable!("handled above"),
                },
                _ => {}
            }
        }
        let n = tcp.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn wrong_lengths_are_counted_as_errors() {
    let addr = misbehaving_server(Misbehave::WrongLength);
    let run = bench(
        &format!("ws://{addr}/"),
        &[
            "--json",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--connections",
            "2",
            "--window",
            "4",
        ],
    );
    assert_eq!(run.status.code(), Some(1), "{}{}", run.stdout, run.stderr);
    let f = json(&run);
    assert!(num(&f, "errors") > 0.0, "{}", run.stdout);
    // No echo was right, so none was counted.
    assert_eq!(num(&f, "count"), 0.0, "{}", run.stdout);
}

#[test]
fn garbage_is_a_protocol_error() {
    let addr = misbehaving_server(Misbehave::Garbage);
    let run = bench(
        &format!("ws://{addr}/"),
        &["--duration", "0.5", "--warmup", "0"],
    );
    assert_eq!(run.status.code(), Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("errors      1 (protocol 1)\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn raw_echo_is_measured_only_when_asked_for() {
    let addr = misbehaving_server(Misbehave::RawEcho);
    let url = format!("ws://{addr}/");
    let args = [
        "--json",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--connections",
        "2",
        "--window",
        "4",
        "--payload",
        "300",
    ];
    // Masked echoes are a protocol error from a WebSocket server...
    let run = bench(&url, &args);
    assert_eq!(run.status.code(), Some(1), "{}{}", run.stdout, run.stderr);
    assert!(num(&json(&run), "errors") > 0.0, "{}", run.stdout);
    // ...and the expected answer of a raw TCP echo, lengths still checked.
    let mut raw = args.to_vec();
    raw.push("--raw-echo");
    let run = bench(&url, &raw);
    let f = assert_clean(&run, "echo");
    assert!(num(&f, "count") > 0.0, "{}", run.stdout);
}

#[test]
fn no_server_is_a_connect_failure_and_wss_a_usage_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("address").port()
    };
    for args in [&[][..], &["--handshakes"][..]] {
        let run = bench(&format!("ws://127.0.0.1:{port}/"), args);
        assert_eq!(run.status.code(), Some(7), "{}", run.stderr);
        assert!(
            run.stderr.starts_with("gangway: connection failed: "),
            "{}",
            run.stderr
        );
        assert_eq!(run.stdout, "");
    }
    let run = bench("wss://127.0.0.1:1/", &[]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        run.stderr.contains("wss:// is not supported"),
        "{}",
        run.stderr
    );
}
