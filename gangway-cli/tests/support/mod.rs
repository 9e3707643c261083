//! Helpers shared by the tests of the `gangway` binary: starting it, bounding its life, reading
//! its pipes, and a `gangway serve` on a free loopback port.
//!
//! Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Upper bound for anything a test waits for.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn gangway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gangway"))
}

/// `gangway` run by `sh` with its soft limit on open files raised to `files` (or the hard limit,
/// if lower): a process with 1,000 connections needs more than the common default of 1,024.
pub(crate) fn gangway_with_open_files(files: u32) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -n {files} 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_gangway"));
    cmd
}

/// A child process that is killed and reaped when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Proc {
    pub(crate) fn spawn(cmd: &mut Command) -> Proc {
        Proc(cmd.spawn().expect("gangway binary starts"))
    }

    /// Wait for the exit, at most `TIMEOUT`.
    pub(crate) fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Collect everything a pipe produces, on a thread (so the child never blocks on a full pipe).
pub(crate) fn collect(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        all
    })
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running `gangway serve --listen 127.0.0.1:0 ARGS...`.
pub(crate) struct Serve {
    pub(crate) proc: Proc,
    pub(crate) addr: SocketAddr,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Serve {
    pub(crate) fn start(args: &[&str]) -> Serve {
        Serve::start_with(gangway(), args)
    }

    /// [`start`](Self::start) with `command` as the binary (see [`gangway_with_open_files`]).
    pub(crate) fn start_with(mut command: Command, args: &[&str]) -> Serve {
        let mut proc = Proc::spawn(
            command
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let stderr = collect(proc.0.stderr.take().expect("stderr piped"));
        let stdout = proc.0.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(TIMEOUT).expect("serve prints its address");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        assert!(line.ends_with('\n'));
        Serve {
            proc,
            addr,
            stderr: Some(stderr),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Send SIGTERM; return the exit status and everything it logged.
    pub(crate) fn terminate(&mut self) -> (ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.proc.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let status = self.proc.wait();
        let log = self.stderr.take().expect("stderr").join().expect("reader");
        (status, text(&log))
    }
}

/// The `101` for the request `head`: its `Sec-WebSocket-Key` (any case) answered as RFC 6455
/// §4.2.2 says.
pub(crate) fn switching_protocols(head: &str) -> String {
    let key = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .expect("a Sec-WebSocket-Key header");
    let accept = gangway::proto::handshake::accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}
