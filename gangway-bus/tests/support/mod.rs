//! Real engines for the tests: Debian's `redis-server` and `nats-server`, started on a free
//! loopback port with their files in a temporary directory, and killed by PID when dropped
//! (also when a test fails).

#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which engine.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Redis {
        /// Append-only file with fsync on every write: a restart keeps the history.
        persistent: bool,
    },
    Nats,
}

/// A running engine server.
pub struct Server {
    kind: Kind,
    pub port: u16,
    /// NATS only: the port of its HTTP monitoring (`-m`), where it counts subscriptions.
    pub monitor_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

fn binary(names: &[&str]) -> String {
    for n in names {
        if std::path::Path::new(n).exists() {
            return (*n).to_owned();
        }
    }
    panic!("none of {names:?} is installed (scripts/test.sh installs them with apt-get)")
}

impl Server {
    pub fn start(kind: Kind) -> Server {
        let dir = std::env::temp_dir().join(format!(
            "gangway-bus-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Server {
            kind,
            port: free_port(),
            monitor_port: free_port(),
            dir,
            child: None,
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        match self.kind {
            Kind::Redis { .. } => format!("redis://127.0.0.1:{}", self.port),
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = match self.kind {
            Kind::Redis { persistent } => {
                let mut c = Command::new(binary(&["/usr/bin/redis-server"]));
                c.args(["--port", &port, "--bind", "127.0.0.1", "--save", ""]);
                if persistent {
                    c.args(["--appendonly", "yes", "--appendfsync", "always"]);
                } else {
                    c.args(["--appendonly", "no"]);
                }
                c.arg("--dir").arg(&self.dir);
                c
            }
            Kind::Nats => {
                let mut c =
                    Command::new(binary(&["/usr/sbin/nats-server", "/usr/bin/nats-server"]));
                c.args(["-a", "127.0.0.1", "-p", &port]);
                c.args(["-m", &self.monitor_port.to_string()]);
                c
            }
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the engine server");
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{:?} did not start on {port}",
                self.kind
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the server (SIGKILL: no goodbye to the clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill it, wait `down`, start it again on the same port.
    pub fn restart(&mut self, down: Duration) {
        self.kill();
        std::thread::sleep(down);
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    /// NATS only: how many subscriptions the server has whose subject matches `subject`,
    /// counted by the server itself (its monitoring endpoint `/subsz?subs=1&test=SUBJECT`).
    pub fn nats_subscriptions(&self, subject: &str) -> u64 {
        use std::io::{Read, Write};
        let addr: SocketAddr = format!("127.0.0.1:{}", self.monitor_port).parse().unwrap();
        let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .expect("connect to the NATS monitoring port");
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Room subjects are URL-safe but for `%` (see the engine's `subject`).
        let query = subject.replace('%', "%25");
        write!(
            tcp,
            "GET /subsz?subs=1&test={query} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.") && answer.contains("\"num_subscriptions\""),
            "not a /subsz answer: {answer}"
        );
        // `total` is the number of matching subscriptions, left out when there is none.
        match answer.split_once("\"total\":") {
            None => 0,
            Some((_, rest)) => rest
                .trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a count after \"total\": {answer}")),
        }
    }
}
