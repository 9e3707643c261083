//! permessage-deflate end to end through the binary: `gangway serve` accepts it unless
//! `--no-deflate`, `gangway connect --deflate` offers it, and a counting proxy between the two
//! shows that a compressible message really crosses compressed.
//!
//! Every test is bounded in time and kills the processes it started on every path.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Upper bound for anything a test waits for.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A child process that is killed and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `gangway serve` on a free port with `args`; its address.
fn serve(args: &[&str]) -> (Proc, SocketAddr) {
    let mut proc = Proc(
        Command::new(env!("CARGO_BIN_EXE_gangway"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gangway serve starts"),
    );
    let mut line = String::new();
    BufReader::new(proc.0.stdout.take().expect("stdout piped"))
        .read_line(&mut line)
        .expect("the listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening on ADDR")
        .parse()
        .expect("an address");
    (proc, addr)
}

/// Collect everything a pipe produces, on a thread.
fn collect(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        all
    })
}

/// `gangway connect` with `args` and `input` on stdin, to completion: status, stdout, stderr.
fn connect(args: &[&str], input: &[u8]) -> (ExitStatus, String, String) {
    let mut proc = Proc(
        Command::new(env!("CARGO_BIN_EXE_gangway"))
            .arg("connect")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gangway connect starts"),
    );
    let mut stdin = proc.0.stdin.take().expect("stdin piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stdout = collect(proc.0.stdout.take().expect("stdout piped"));
    let stderr = collect(proc.0.stderr.take().expect("stderr piped"));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = proc.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "gangway connect did not exit in time"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    let text = |h: JoinHandle<Vec<u8>>| String::from_utf8(h.join().expect("reader")).unwrap();
    (status, text(stdout), text(stderr))
}

/// A TCP proxy for one connection to `target` that counts the bytes going each way:
/// (its address, client→server count, server→client count).
fn counting_proxy(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (up, down) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (up2, down2) = (Arc::clone(&up), Arc::clone(&down));
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let Ok(server) = TcpStream::connect(target) else {
            return;
        };
        for s in [&client, &server] {
            let _ = s.set_read_timeout(Some(TIMEOUT));
        }
        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let a = std::thread::spawn(move || copy(client, server, &up2));
        copy(s2, c2, &down2);
        let _ = a.join();
    });
    (addr, up, down)
}

fn copy(mut from: TcpStream, mut to: TcpStream, count: &AtomicUsize) {
    let mut buf = [0u8; 16 << 10];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        count.fetch_add(n, Ordering::Relaxed);
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A line of about 1 MiB that compresses well, like JSON.
fn compressible_line() -> String {
    let mut line = String::with_capacity(1 << 20);
    let mut i = 0u32;
    while line.len() < 1 << 20 {
        line.push_str(&format!("{{\"id\":{i},\"name\":\"gangway\",\"ok\":true}},"));
        i += 1;
    }
    line
}

#[test]
fn serve_accepts_deflate_by_default_and_connect_offers_it_on_request() {
    let (_server, addr) = serve(&[]);
    let url = format!("ws://{addr}/");
    let (status, stdout, stderr) =
        connect(&[&url, "--deflate"], "héllo 𝄞\nsecond line\n".as_bytes());
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "héllo 𝄞\nsecond line\n");
    assert_eq!(stderr, "gangway: permessage-deflate: on\n");
    // Without --deflate nothing is offered and nothing is printed about it.
    let (status, stdout, stderr) = connect(&[&url], b"plain\n");
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "plain\n");
    assert_eq!(stderr, "");
}

#[test]
fn serve_no_deflate_declines_the_offer() {
    let (_server, addr) = serve(&["--no-deflate"]);
    let url = format!("ws://{addr}/");
    let (status, stdout, stderr) = connect(&[&url, "--deflate"], b"still echoed\n");
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "still echoed\n");
    assert_eq!(stderr, "gangway: permessage-deflate: off\n");
}

#[test]
fn a_compressible_megabyte_crosses_in_far_fewer_bytes_both_ways() {
    let (_server, addr) = serve(&[]);
    let line = compressible_line();
    let input = format!("{line}\n");
    for (deflate, compressed) in [(true, true), (false, false)] {
        let (proxy, up, down) = counting_proxy(addr);
        let url = format!("ws://{proxy}/");
        let mut args = vec![url.as_str()];
        if deflate {
            args.push("--deflate");
        }
        let (status, stdout, stderr) = connect(&args, input.as_bytes());
        assert!(status.success(), "{stderr}");
        assert_eq!(stdout, input, "the echo is exact");
        let (up, down) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
        if compressed {
            assert!(up < line.len() / 10, "client to server: {up} bytes");
            assert!(down < line.len() / 10, "server to client: {down} bytes");
        } else {
            assert!(up > line.len() && down > line.len(), "{up} / {down} bytes");
        }
    }
}
