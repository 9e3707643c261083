//! `gangway bench URL`: a WebSocket load generator, cheap enough not to be the bottleneck of the
//! server it measures.
//!
//! Echo mode (the default) opens the connections, then keeps `--window` messages in flight on
//! each: every echo received lets one more message out. The client side of that loop does as
//! little as possible per message:
//!
//! - the frames are encoded and masked once, at the start, and shared by every connection; a
//!   write sends every frame that may go out now, in one system call, straight from that block;
//! - echoes are read into one reusable buffer per connection and only their headers are parsed
//!   (opcode and length are checked); payload bytes are skipped where they lie, never copied;
//! - the clock is read once per read and once per batch of writes, and the send instants wait in
//!   a queue allocated once, `--window` long;
//! - latencies go into a log-linear [`Histogram`] of fixed size, one per worker thread.
//!
//! `--handshakes` measures connection set-up instead: each loop connects, upgrades, sends a
//! close frame and waits for the server's close frame and end of stream, again and again.
//!
//! Only what completes inside the measured time (after `--warmup`, for `--duration`) is counted.
//! The run always uses plain `ws://`: a TLS layer would measure the TLS library. With `--http2`
//! every WebSocket is a stream of one cleartext HTTP/2 connection (RFC 8441) instead of a TCP
//! connection of its own.

mod broadcast;
mod histogram;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::poll_fn;
use std::io::{self, IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use clap::Args;
use gangway::http2::Http2Connection;
use gangway::proto::extensions::permessage_deflate::{DeflateConfig, DeflateParams};
use gangway::proto::frame::mask::apply_mask;
use gangway::proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use gangway::proto::handshake::client::{ClientHandshake, ClientOptions};
use gangway::proto::handshake::Parsed;
use gangway::proto::{OsRandom, RandomSource};
use gangway::Error;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::exit::{code, Failure};
use crate::parse_seconds;

pub(crate) use histogram::Histogram;

/// Bound on connecting and the opening handshake, for each connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on the close handshake at the end of the run (and on a whole `--handshakes` cycle).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest `--payload`: 64 MiB.
const MAX_PAYLOAD: u64 = 64 << 20;

/// Largest block of pre-encoded frames (`--window` frames of `--payload` bytes).
const MAX_BLOCK: usize = 256 << 20;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 << 10;

/// The part of `--help` that does not fit an option: what is measured, the output, the exit
/// statuses.
pub(crate) const AFTER_HELP: &str = "\
Echo mode (the default):
  Opens --connections connections, then keeps --window messages in flight on each: every echo
  received lets one more message out. Frames are encoded and masked once at the start; echoes
  are checked by their header (opcode and length) and their payload skipped. A message's
  latency runs from its write to the arrival of the end of its echo. At the end each connection
  is closed with a close frame (1000) and the server's close frame and end of stream awaited.

Handshake mode (--handshakes):
  Each of --connections loops connects, upgrades, sends a close frame (1000), reads the
  server's close frame and waits for the end of the stream, again and again. A cycle's latency
  is its whole duration.

Broadcast mode (--broadcast):
  The --connections connections are in one room of a broadcast server (the URL's path); each
  sends one binary message per round (--payload bytes, at least 16: sender, round and send time
  are stamped at its start; with --text, JSON-like text of at least 32 bytes, the stamp in hex)
  and waits for --connections messages (everyone's, its own included) before the next. A
  delivery is a message received by a connection; its latency runs from the message's send to
  its arrival. Each connection checks that every sender's messages arrive once and in order; at
  the end sending stops and each must receive every message sent: what is missing once nothing
  arrived for 5 s is an error, what still arrives after --drain-timeout is reported as
  undelivered. --stalled adds connections that join and never read nor send. With --deflate the
  connections offer permessage-deflate as browsers do and inflate every compressed message they
  receive (checked whole); they send theirs uncompressed.

Only what completes after --warmup and within --duration is counted. A progress line is shown
on stderr when it is a terminal. With --server-pid, the server's CPU time over the measured time
is read from /proc and reported per message (per cycle, per delivery).

Output:
  A summary on stdout: messages (or handshakes), per second, MiB/s (payload bytes echoed per
  second, one direction), p50/p99/p99.9/max latency in microseconds, errors. With --json, one
  line instead:
  {\"mode\":\"echo\"|\"handshakes\"|\"broadcast\",\"url\":...,\"connections\":N,\"payload\":B,
   \"window\":W,\"text\":BOOL,\"duration_s\":F,\"count\":N,\"per_s\":F,\"mib_per_s\":F,
   \"p50_us\":F,\"p99_us\":F,\"p999_us\":F,\"max_us\":F,\"errors\":N}
  with --server-pid, \"server_cpu_us_per\":F,\"server_cpu_share\":F before the brace; with
  --broadcast, \"stalled\":N,\"rounds\":N,\"lost\":N,\"undelivered\":N,\"deflate\":BOOL,
  \"compressed\":N (deliveries measured that arrived compressed),\"sent\":N (messages sent in
  the whole run, warmup included); with --also, \"nodes\":N,\"crossed_count\":N,
  \"crossed_p50_us\":F,\"crossed_p99_us\":F (the deliveries that crossed between nodes).

Errors counted: an echo with another opcode or length; bytes that are not server frames; a
connection lost or closed by the server during the run; a failed handshake cycle; a close
handshake that did not complete.

Exit status:
  0   the run completed without errors
  1   errors were counted
  2   usage (options, a URL that is not ws://)
  6, 7, 8, 22, 28, 52, 56: no connection could be opened at all, numbered as gangway connect
      numbers them (6 name not resolved, 7 TCP connect failed, 22 upgrade refused, ...)
";

/// Options of `gangway bench`.
#[derive(Args, Debug)]
pub(crate) struct BenchOpts {
    /// The echo server: ws://HOST:PORT/PATH (plain ws only; wss:// is refused).
    #[arg(value_parser = parse_url)]
    url: http::Uri,

    /// Connections to open; with --handshakes, the number of concurrent
    /// connect-upgrade-close loops.
    #[arg(
        long,
        short = 'c',
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    connections: u32,

    /// Payload bytes of each message (0 to 67108864).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 16,
        value_parser = clap::value_parser!(u64).range(0..=MAX_PAYLOAD)
    )]
    payload: u64,

    /// Messages each connection keeps in flight: 1 is request/response, more is pipelined
    /// (each echo received lets one more message out).
    #[arg(
        long,
        value_name = "W",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=65_536)
    )]
    window: u32,

    /// Seconds measured, after the warmup (fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_positive_seconds)]
    duration: Duration,

    /// Seconds of load before measuring starts; what completes during it is not counted
    /// (fractions allowed; 0: none).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_seconds)]
    warmup: Duration,

    /// Send text messages (an ASCII payload) instead of binary ones.
    #[arg(long)]
    text: bool,

    /// Measure handshakes instead of echoes: each loop connects, upgrades (a fresh key, the
    /// accept value checked), sends a close frame (1000), reads the server's close frame and
    /// waits for the end of the stream, then starts again.
    #[arg(long)]
    handshakes: bool,

    /// Print the result as one line of JSON on stdout instead of the summary.
    #[arg(long)]
    json: bool,

    /// The server is a raw TCP echo (the ceiling a WebSocket server is compared with): it
    /// answers the upgrade, then returns every byte unchanged, so echoes arrive masked and the
    /// close frame comes back as sent. Accept that instead of counting it as an error.
    #[arg(long, conflicts_with = "handshakes")]
    raw_echo: bool,

    /// Send nothing: open the connections, keep them open and idle for --warmup and --duration,
    /// then close them (what idle WebSockets cost a server; no message is counted).
    #[arg(long, conflicts_with_all = ["handshakes", "raw_echo"])]
    idle: bool,

    /// Open every connection's WebSocket as a stream of one HTTP/2 connection (prior knowledge,
    /// RFC 8441) instead of a TCP connection each: --connections WebSockets share it.
    #[arg(long, conflicts_with_all = ["handshakes", "raw_echo"])]
    http2: bool,

    /// Measure a broadcast server (`gangway serve --broadcast`, or any server that sends each
    /// message to every connection on the same path): every connection sends one binary
    /// message per round (JSON-like text with --text) and waits for --connections messages
    /// (everyone's, its own included) before the next. Reports deliveries per second and the
    /// latency from send to delivery; needs --payload of at least 16 bytes, 32 with --text (the
    /// sender, round and send time are stamped in).
    #[arg(long, conflicts_with_all = ["handshakes", "raw_echo", "idle", "http2"])]
    broadcast: bool,

    /// With --broadcast: offer permessage-deflate as browsers do (`permessage-deflate;
    /// client_max_window_bits`) and inflate every compressed message received, each checked
    /// whole (the messages sent go uncompressed).
    #[arg(long, requires = "broadcast")]
    deflate: bool,

    /// With --broadcast: this many more connections that join the room and never read nor
    /// send (the server's policy for slow members applies to them; the others' figures show
    /// whether they are held up).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "broadcast",
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    stalled: u32,

    /// With --broadcast: how long after the run the messages still on their way may take to
    /// arrive (a slow server's; what arrives later is reported as undelivered).
    #[arg(long, value_name = "SECS", default_value = "60", requires = "broadcast",
          value_parser = parse_positive_seconds)]
    drain_timeout: Duration,

    /// With --broadcast: another node of the same broadcast service (rooms across processes,
    /// e.g. `gangway serve --broadcast --redis URL` on several ports), with the same path;
    /// repeat for more. The connections are spread over URL and these in turn, and the latency
    /// of the deliveries that crossed from one node to another is also reported on its own.
    #[arg(long, value_name = "URL", value_parser = parse_url, requires = "broadcast")]
    also: Vec<http::Uri>,

    /// With --broadcast: the server sends each message after a line with its position and
    /// sends control lines (`gangway serve --history`): skip them. Binary messages only
    /// (control lines are text), uncompressed.
    #[arg(long, requires = "broadcast", conflicts_with_all = ["text", "deflate"])]
    positioned: bool,

    /// Also report the CPU time of this process (the server, on this machine) per message
    /// measured, read from /proc at the start and the end of the measured time (Linux). Repeat
    /// for a server of several processes (its nodes, its message engine): their CPU times are
    /// added.
    #[arg(long, value_name = "PID")]
    server_pid: Vec<u32>,

    /// Threads generating the load: 1 runs everything on one thread (pin it with taskset);
    /// more uses a multi-threaded runtime with that many workers.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=1024)
    )]
    threads: u32,
}

/// The first address `url`'s host and port resolve to.
async fn resolve(url: &http::Uri) -> Result<SocketAddr, Error> {
    let host = url.host().unwrap_or_default();
    let port = url.port_u16().unwrap_or(80);
    let mut addrs = tokio::net::lookup_host((host, port)).await?;
    addrs.next().ok_or_else(|| {
        Error::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        ))
    })
}

/// `--url`: a `ws://` URL with a host, as [`ClientHandshake`] accepts it.
fn parse_url(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("invalid url {s:?}: {e}"))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => {
            return Err("wss:// is not supported: bench measures plain ws:// servers".into())
        }
        _ => return Err(format!("expected a ws:// url, got {s:?}")),
    }
    ClientHandshake::new(&uri, &ClientOptions::default(), &mut OsRandom::new())
        .map_err(|e| format!("invalid url {s:?}: {e}"))?;
    Ok(uri)
}

/// A number of seconds above zero.
fn parse_positive_seconds(s: &str) -> Result<Duration, String> {
    let d = parse_seconds(s)?;
    if d.is_zero() {
        return Err("expected a duration above 0".into());
    }
    Ok(d)
}

/// Run the benchmark on its own runtime: one thread unless `--threads` asks for more, so the
/// whole load generator can be pinned to one CPU.
pub(crate) fn run(opts: BenchOpts) -> ExitCode {
    let built = if opts.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.threads as usize)
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gangway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(bench(opts));
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

/// What went wrong during a run, by kind (the summary shows them apart).
#[derive(Debug, Default)]
struct Errors {
    /// An echo with another opcode or length than the message sent.
    mismatch: AtomicU64,
    /// Bytes that are not WebSocket frames from a server, or an echo nobody asked for.
    protocol: AtomicU64,
    /// A connection lost, reset, or closed by the server during the run; a connection or a
    /// handshake cycle that failed.
    connection: AtomicU64,
    /// The close handshake at the end did not complete in time or went wrong.
    close: AtomicU64,
}

impl Errors {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn total(&self) -> u64 {
        [
            &self.mismatch,
            &self.protocol,
            &self.connection,
            &self.close,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// State shared by every connection of a run.
#[derive(Debug)]
struct Shared {
    /// Measuring starts here (after the warmup)...
    start: Instant,
    /// ...and ends here.
    end: Instant,
    /// Latencies in nanoseconds: one histogram per worker thread, so a lock is uncontended
    /// with one thread and rarely contended with more.
    shards: Vec<Mutex<Histogram>>,
    errors: Errors,
}

impl Shared {
    fn new(start: Instant, duration: Duration, shards: usize) -> Shared {
        Shared {
            start,
            end: start + duration,
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            errors: Errors::default(),
        }
    }

    /// The shared state of a run whose connections are open (`failed` could not open): measuring
    /// starts after the warmup, the server's CPU time is read then (`--server-pid`).
    fn begin(opts: &BenchOpts, shards: usize, failed: u64, cpu: &Arc<CpuWindow>) -> Arc<Shared> {
        let shared = Arc::new(Shared::new(
            Instant::now() + opts.warmup,
            opts.duration,
            shards,
        ));
        for _ in 0..failed {
            Errors::add(&shared.errors.connection);
        }
        cpu.spawn(opts, &shared);
        shared
    }

    fn shard(&self, i: usize) -> &Mutex<Histogram> {
        &self.shards[i % self.shards.len()]
    }

    /// Whether something completing at `now` is counted.
    fn measured(&self, now: Instant) -> bool {
        now >= self.start && now < self.end
    }

    fn merged(&self) -> Histogram {
        let mut all = Histogram::default();
        for s in &self.shards {
            all.merge(&s.lock().unwrap_or_else(PoisonError::into_inner));
        }
        all
    }

    fn count(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).count())
            .sum()
    }
}

/// The whole run: connect, load, report.
async fn bench(opts: BenchOpts) -> ExitCode {
    let stamp = broadcast::stamp_len(opts.text);
    if opts.broadcast && opts.payload < stamp as u64 {
        eprintln!(
            "gangway: --broadcast needs --payload of at least {stamp} bytes (the stamp of each \
             message)"
        );
        return ExitCode::from(code::USAGE);
    }
    if opts.broadcast && opts.window != 1 {
        eprintln!("gangway: --broadcast sends one message per round: --window must be 1");
        return ExitCode::from(code::USAGE);
    }
    #[cfg(not(target_os = "linux"))]
    if !opts.server_pid.is_empty() {
        eprintln!("gangway: --server-pid reads /proc: Linux only");
        return ExitCode::from(code::USAGE);
    }
    let payload = usize::try_from(opts.payload).unwrap_or(usize::MAX);
    let frame_len = payload.saturating_add(MAX_HEADER_LEN);
    if !opts.handshakes && frame_len.saturating_mul(opts.window as usize) > MAX_BLOCK {
        eprintln!(
            "gangway: --window {} of --payload {} needs more than {} MiB of frames; \
             lower one of them",
            opts.window,
            opts.payload,
            MAX_BLOCK >> 20
        );
        return ExitCode::from(code::USAGE);
    }
    let host = opts.url.host().unwrap_or_default().to_owned();
    // Resolved once: a name lookup per handshake cycle would be measured too.
    let addr = match resolve(&opts.url).await {
        Ok(addr) => addr,
        Err(e) => return Failure::connect(&e, &host, CONNECT_TIMEOUT, None).report(),
    };
    let mut nodes = vec![(addr, opts.url.clone())];
    for url in &opts.also {
        match resolve(url).await {
            Ok(addr) => nodes.push((addr, url.clone())),
            Err(e) => {
                let host = url.host().unwrap_or_default();
                return Failure::connect(&e, host, CONNECT_TIMEOUT, None).report();
            }
        }
    }
    let shards = opts.threads as usize;
    let cpu = Arc::new(CpuWindow::default());
    let mut room = None;
    let shared = if opts.handshakes {
        match handshakes(&opts, addr, shards, &cpu).await {
            Ok(shared) => shared,
            Err(e) => return Failure::connect(&e, &host, CONNECT_TIMEOUT, None).report(),
        }
    } else if opts.broadcast {
        match broadcast::run(&opts, &nodes, shards, &cpu).await {
            Ok((shared, r)) => {
                room = Some(r);
                shared
            }
            Err(e) => return Failure::connect(&e, &host, CONNECT_TIMEOUT, None).report(),
        }
    } else {
        match echo(&opts, addr, shards, &cpu).await {
            Ok(shared) => shared,
            Err(e) => return Failure::connect(&e, &host, CONNECT_TIMEOUT, None).report(),
        }
    };
    let mut report = Report::new(&opts, &shared);
    report.server_cpu_ns = cpu.measured();
    if let Some(room) = &room {
        report.lost = room.lost.load(Ordering::Relaxed);
        report.errors += report.lost;
        report.rounds = room.rounds.load(Ordering::Relaxed);
        report.undelivered = room.undelivered.load(Ordering::Relaxed);
        report.crossed = room.crossed();
        report.compressed = room.compressed.load(Ordering::Relaxed);
        report.sent = room.total.load(Ordering::Relaxed);
    }
    let mut stdout = io::stdout().lock();
    let text = if opts.json {
        report.json(&opts)
    } else {
        report.human(&opts, &shared.errors)
    };
    if stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        eprintln!("gangway: cannot write to stdout");
        return ExitCode::from(code::WRITE);
    }
    if report.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(code::OTHER)
    }
}

/// The server's CPU time over the measured time, read from /proc (`--server-pid`).
#[derive(Debug, Default)]
struct CpuWindow {
    /// At the start of the measured time, then at its end (nanoseconds; 0: not read).
    start: AtomicU64,
    end: AtomicU64,
}

impl CpuWindow {
    /// Read the server's CPU time at the start and the end of the measured time (`--server-pid`:
    /// the sum over its processes).
    fn spawn(self: &Arc<Self>, opts: &BenchOpts, shared: &Shared) {
        if opts.server_pid.is_empty() {
            return;
        }
        let pids = opts.server_pid.clone();
        let (start, end) = (shared.start, shared.end);
        let cpu = Arc::clone(self);
        tokio::spawn(async move {
            // 0 (not read) if any process cannot be read: a partial sum would mislead.
            let read = || -> u64 {
                pids.iter()
                    .map(|&pid| cpu_ns(pid))
                    .sum::<Option<u64>>()
                    .unwrap_or(0)
            };
            tokio::time::sleep_until(start.into()).await;
            cpu.start.store(read(), Ordering::SeqCst);
            tokio::time::sleep_until(end.into()).await;
            cpu.end.store(read(), Ordering::SeqCst);
        });
    }

    /// The CPU time in the measured time, if it was read.
    fn measured(&self) -> Option<u64> {
        let (start, end) = (
            self.start.load(Ordering::SeqCst),
            self.end.load(Ordering::SeqCst),
        );
        (start > 0 && end >= start).then(|| end - start)
    }
}

/// The CPU time of every thread of process `pid`, in nanoseconds: the first field of each
/// thread's `schedstat` (precise), else `utime + stime` from `/proc/PID/stat` (clock ticks of
/// 10 ms).
fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            // A thread that ended between the listing and the read counts nothing.
            if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
            }
        }
    }
    if total > 0 {
        return Some(total);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks * 10_000_000)
}

/// The figures of a finished run.
#[derive(Debug)]
struct Report {
    count: u64,
    duration_s: f64,
    per_s: f64,
    mib_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    errors: u64,
    /// The server's CPU time over the measured time (`--server-pid`).
    server_cpu_ns: Option<u64>,
    /// Broadcast: messages missing (or extra) at the end, over all connections.
    lost: u64,
    /// Broadcast: rounds the first connection completed.
    rounds: u64,
    /// Broadcast: messages still on their way when the wait for them ended (a slow server).
    undelivered: u64,
    /// Broadcast over several nodes (`--also`): the deliveries that crossed from one node to
    /// another, and their p50 and p99 latencies in microseconds.
    crossed: Option<(u64, f64, f64)>,
    /// Broadcast: deliveries measured that arrived compressed (permessage-deflate).
    compressed: u64,
    /// Broadcast: messages sent in the whole run (warmup included).
    sent: u64,
}

impl Report {
    fn new(opts: &BenchOpts, shared: &Shared) -> Report {
        let h = shared.merged();
        let duration_s = opts.duration.as_secs_f64();
        let count = h.count();
        let per_s = count as f64 / duration_s;
        let mib_per_s = if opts.handshakes {
            0.0
        } else {
            per_s * opts.payload as f64 / f64::from(1 << 20)
        };
        let us = |ns: u64| ns as f64 / 1000.0;
        Report {
            count,
            duration_s,
            per_s,
            mib_per_s,
            p50_us: us(h.quantile(0.5)),
            p99_us: us(h.quantile(0.99)),
            p999_us: us(h.quantile(0.999)),
            max_us: us(h.max()),
            errors: shared.errors.total(),
            server_cpu_ns: None,
            lost: 0,
            rounds: 0,
            undelivered: 0,
            crossed: None,
            compressed: 0,
            sent: 0,
        }
    }

    /// The server's CPU time per message measured, in microseconds, and its share of one CPU.
    fn server_cpu(&self) -> Option<(f64, f64)> {
        let ns = self.server_cpu_ns? as f64;
        let per = if self.count == 0 {
            0.0
        } else {
            ns / 1000.0 / self.count as f64
        };
        Some((per, ns / 1e9 / self.duration_s))
    }

    fn mode(opts: &BenchOpts) -> &'static str {
        if opts.handshakes {
            "handshakes"
        } else if opts.broadcast {
            "broadcast"
        } else {
            "echo"
        }
    }

    /// One line of JSON; every number is finite (the duration is above zero).
    fn json(&self, opts: &BenchOpts) -> String {
        let mut url = String::new();
        json_string(&mut url, &opts.url.to_string());
        let cpu = match self.server_cpu() {
            Some((per, share)) => {
                format!(",\"server_cpu_us_per\":{per:.4},\"server_cpu_share\":{share:.3}")
            }
            None => String::new(),
        };
        let broadcast = if opts.broadcast {
            let crossed = match self.crossed {
                Some((count, p50, p99)) => format!(
                    ",\"nodes\":{},\"crossed_count\":{count},\"crossed_p50_us\":{p50:.1},\
                     \"crossed_p99_us\":{p99:.1}",
                    opts.also.len() + 1
                ),
                None => String::new(),
            };
            format!(
                ",\"stalled\":{},\"rounds\":{},\"lost\":{},\"undelivered\":{},\"deflate\":{},\
                 \"compressed\":{},\"sent\":{}{crossed}",
                opts.stalled,
                self.rounds,
                self.lost,
                self.undelivered,
                opts.deflate,
                self.compressed,
                self.sent
            )
        } else {
            String::new()
        };
        format!(
            "{{\"mode\":\"{}\",\"url\":{url},\"connections\":{},\"payload\":{},\"window\":{},\
             \"text\":{},\"duration_s\":{:.3},\"count\":{},\"per_s\":{:.1},\"mib_per_s\":{:.3},\
             \"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"errors\":{}\
             {cpu}{broadcast}}}\n",
            Report::mode(opts),
            opts.connections,
            opts.payload,
            opts.window,
            opts.text,
            self.duration_s,
            self.count,
            self.per_s,
            self.mib_per_s,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.errors,
        )
    }

    fn human(&self, opts: &BenchOpts, errors: &Errors) -> String {
        let mut out = String::new();
        let kind = if opts.text { "text" } else { "binary" };
        let _ = if opts.handshakes {
            writeln!(
                out,
                "handshakes  {} connect-upgrade-close cycles, {} loops, {}",
                opts.url,
                opts.connections,
                runtime_name(opts.threads)
            )
        } else if opts.broadcast {
            writeln!(
                out,
                "broadcast   {}, {} members{}, {} B {kind}{}, {}",
                opts.url,
                opts.connections,
                if opts.stalled > 0 {
                    format!(" and {} that never read", opts.stalled)
                } else {
                    String::new()
                },
                opts.payload,
                if opts.deflate {
                    ", permessage-deflate offered"
                } else {
                    ""
                },
                runtime_name(opts.threads)
            )
        } else {
            writeln!(
                out,
                "echo        {}, {} connections, window {}, {} B {kind}, {}",
                opts.url,
                opts.connections,
                opts.window,
                opts.payload,
                runtime_name(opts.threads)
            )
        };
        let what = if opts.handshakes {
            "handshakes"
        } else if opts.broadcast {
            "delivered"
        } else {
            "messages"
        };
        let _ = writeln!(
            out,
            "{what:<11} {} in {:.3} s (after {:.3} s of warmup)",
            self.count,
            self.duration_s,
            opts.warmup.as_secs_f64()
        );
        let _ = writeln!(out, "per second  {:.0}", self.per_s);
        if !opts.handshakes {
            let _ = writeln!(
                out,
                "MiB/s       {:.2} (payload, one direction)",
                self.mib_per_s
            );
        }
        let _ = writeln!(
            out,
            "latency     p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs",
            self.p50_us, self.p99_us, self.p999_us, self.max_us
        );
        if let Some((per, share)) = self.server_cpu() {
            let per_what = if opts.handshakes {
                "cycle"
            } else if opts.broadcast {
                "delivered message"
            } else {
                "message"
            };
            let _ = writeln!(
                out,
                "server CPU  {per:.3} µs per {per_what} ({:.0} % of one CPU)",
                share * 100.0
            );
        }
        if let Some((count, p50, p99)) = self.crossed {
            let _ = writeln!(
                out,
                "crossed     {count} deliveries from a member of another node: p50 {p50:.1} µs  \
                 p99 {p99:.1} µs"
            );
        }
        if opts.broadcast {
            let _ = writeln!(out, "rounds      {} (the first connection's)", self.rounds);
            if opts.deflate {
                let _ = writeln!(
                    out,
                    "compressed  {} of the deliveries measured",
                    self.compressed
                );
            }
            if self.undelivered > 0 {
                let _ = writeln!(
                    out,
                    "undelivered {} (still on their way {:.1} s after the run)",
                    self.undelivered,
                    opts.drain_timeout.as_secs_f64()
                );
            }
        }
        let _ = write!(out, "errors      {}", self.errors);
        if self.errors > 0 {
            let wrong = if opts.broadcast {
                "wrong or out of order"
            } else {
                "wrong echo"
            };
            let lost = AtomicU64::new(self.lost);
            let parts = [
                (wrong, &errors.mismatch),
                ("protocol", &errors.protocol),
                ("connection", &errors.connection),
                ("close", &errors.close),
                ("missing at the end", &lost),
            ];
            let mut sep = " (";
            for (name, n) in parts {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = write!(out, "{sep}{name} {n}");
                    sep = ", ";
                }
            }
            out.push(')');
        }
        out.push('\n');
        out
    }
}

fn runtime_name(threads: u32) -> String {
    if threads == 1 {
        "1 thread".into()
    } else {
        format!("{threads} threads")
    }
}

/// `s` as a JSON string, quotes included.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A progress line on stderr, about once a second, while the run lasts; only on a terminal.
fn spawn_progress(shared: &Arc<Shared>, what: &'static str) -> Option<tokio::task::JoinHandle<()>> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let shared = Arc::clone(shared);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The count and instant of the previous line, for the rate since then.
        let mut last = (shared.start, 0);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let line = if now <= shared.start {
                format!(
                    "warming up, {:.0} s to go",
                    shared.start.duration_since(now).as_secs_f64()
                )
            } else {
                let count = shared.count();
                let since = now.duration_since(last.0).as_secs_f64();
                // A rate over a few milliseconds (the first tick after the warmup) says nothing.
                let rate = if since >= 0.5 {
                    let rate = (count - last.1) as f64 / since;
                    last = (now, count);
                    format!("  {rate:.0}/s")
                } else {
                    String::new()
                };
                let elapsed = now.min(shared.end).duration_since(shared.start);
                let total = shared.end.duration_since(shared.start);
                format!(
                    "{:.1}/{:.1} s  {count} {what}{rate}  errors {}",
                    elapsed.as_secs_f64(),
                    total.as_secs_f64(),
                    shared.errors.total()
                )
            };
            eprint!("\r\x1b[K{line}");
        }
    }))
}

/// Stop the progress line and clear it.
fn stop_progress(progress: Option<tokio::task::JoinHandle<()>>) {
    if let Some(p) = progress {
        p.abort();
        eprint!("\r\x1b[K");
    }
}

/// Connect and complete the opening handshake; the bytes read past the response head (frames
/// the server sent at once) are left in `buf`.
async fn open(
    addr: SocketAddr,
    uri: &http::Uri,
    rng: &mut OsRandom,
    buf: &mut Vec<u8>,
    offer_deflate: bool,
) -> Result<(TcpStream, Option<DeflateParams>), Error> {
    let mut tcp = TcpStream::connect(addr).await.map_err(Error::Io)?;
    // Small pipelined frames must leave at once, not wait for Nagle's algorithm.
    tcp.set_nodelay(true).map_err(Error::Io)?;
    let mut options = ClientOptions::default();
    if offer_deflate {
        // What browsers offer (Chromium, and Python websockets and Node ws by default).
        options.extensions = vec![DeflateConfig::default().offer().to_string()];
    }
    // A fresh key for every connection (RFC 6455 §4.1).
    let hs = ClientHandshake::new(uri, &options, rng).map_err(Error::Api)?;
    tcp.write_all(hs.request()).await.map_err(Error::Io)?;
    buf.clear();
    let mut chunk = [0u8; 2048];
    loop {
        let n = tcp.read(&mut chunk).await.map_err(Error::Io)?;
        if n == 0 {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during the opening handshake",
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
        match hs.parse_response(buf).map_err(Error::Handshake)? {
            Parsed::Complete((_, negotiated), head_len) => {
                buf.drain(..head_len);
                return Ok((tcp, negotiated.permessage_deflate));
            }
            Parsed::Partial if buf.len() > MAX_HEAD => {
                return Err(Error::Handshake(
                    gangway::proto::HandshakeError::HeadTooLarge,
                ))
            }
            Parsed::Partial => {}
        }
    }
}

/// A connection of the load at the end of its run (see [`close_connection`]).
trait Closing {
    /// The transport.
    type Io: AsyncRead + AsyncWrite + Unpin;
    /// The transport and the room left in the read buffer.
    fn io_and_room(&mut self) -> (&mut Self::Io, &mut [u8]);
    /// Account for `n` more bytes read into that room; true once the server's close frame was
    /// among them.
    fn feed(&mut self, n: usize) -> io::Result<bool>;
    fn rng(&mut self) -> &mut OsRandom;
    /// The server is a raw echo: our own close frame comes back, and it never closes.
    fn echoes_close(&self) -> bool {
        false
    }
}

/// End a connection properly once the frame under way is written: send a close frame (1000),
/// read until the server's close frame, then until the end of the stream.
async fn close_connection(c: &mut impl Closing) -> io::Result<()> {
    let frame = close_frame(c.rng());
    c.io_and_room().0.write_all(&frame).await?;
    let mut closed = false;
    loop {
        let (io, room) = c.io_and_room();
        let n = io.read(room).await?;
        if n == 0 {
            return if closed {
                Ok(())
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        if closed {
            // Nothing may follow the close frame; it is dropped, not parsed.
            continue;
        }
        closed = c.feed(n)?;
        if closed && c.echoes_close() {
            // A raw echo returned our own close frame and will not close: done.
            return Ok(());
        }
    }
}

/// A close frame with status 1000, masked with a fresh key.
fn close_frame(rng: &mut OsRandom) -> [u8; 8] {
    let mut key = [0u8; 4];
    rng.fill(&mut key);
    let mut frame = [0x88, 0x82, key[0], key[1], key[2], key[3], 0x03, 0xE8];
    apply_mask(&mut frame[6..], key, 0);
    frame
}

/// `--window` frames, encoded and masked once for the whole run, each with its own key.
fn encode_frames(opts: &BenchOpts, rng: &mut OsRandom) -> Vec<u8> {
    let payload = usize::try_from(opts.payload).unwrap_or(usize::MAX);
    // Printable ASCII, valid UTF-8 for --text; a pattern that is not all zeros for binary.
    let pattern: Vec<u8> = (0..payload).map(|i| b'a' + (i % 26) as u8).collect();
    let opcode = if opts.text {
        OpCode::Text
    } else {
        OpCode::Binary
    };
    let mut block = Vec::with_capacity((payload + MAX_HEADER_LEN) * opts.window as usize);
    for _ in 0..opts.window {
        let mut key = [0u8; 4];
        rng.fill(&mut key);
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(key),
            payload_len: opts.payload,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        block.extend_from_slice(&head[..n]);
        let start = block.len();
        block.extend_from_slice(&pattern);
        apply_mask(&mut block[start..], key, 0);
    }
    block
}

/// Echo mode: open every connection, then run them all for the warmup and the duration.
async fn echo(
    opts: &BenchOpts,
    addr: SocketAddr,
    shards: usize,
    cpu: &Arc<CpuWindow>,
) -> Result<Arc<Shared>, Error> {
    let mut rng = OsRandom::new();
    let block: Arc<[u8]> = encode_frames(opts, &mut rng).into();
    let frame_len = block.len() / opts.window as usize;
    // Enough for a window of small echoes in one read, at most 64 KiB: 1000 connections with
    // large messages stay at 64 MiB of buffers.
    let rbuf_len = (frame_len * opts.window as usize).clamp(4 << 10, 64 << 10);

    if opts.http2 {
        // One HTTP/2 connection; each WebSocket is one of its streams.
        let url = opts.url.to_string();
        let builder = gangway::ClientBuilder::new(&url)?;
        let conn = Http2Connection::connect(&builder).await?;
        let mut opening = JoinSet::new();
        for _ in 0..opts.connections {
            let (conn, url) = (conn.clone(), url.clone());
            opening.spawn(async move {
                let (stream, _response) = conn.tunnel(&url).await?;
                Ok::<_, Error>((stream, Vec::new(), OsRandom::new(), None))
            });
        }
        return run_echo(opts, opening, block, frame_len, rbuf_len, shards, cpu).await;
    }
    let opening = open_tcp(opts, addr, opts.connections);
    run_echo(opts, opening, block, frame_len, rbuf_len, shards, cpu).await
}

/// Start opening `count` TCP connections to the URL, each with its opening handshake.
fn open_tcp(
    opts: &BenchOpts,
    addr: SocketAddr,
    count: u32,
) -> JoinSet<Result<Opened<TcpStream>, Error>> {
    let mut opening = JoinSet::new();
    for _ in 0..count {
        opening.spawn(open_one(addr, opts.url.clone(), opts.deflate));
    }
    opening
}

/// Open one connection to `uri` at `addr`, its opening handshake done within
/// [`CONNECT_TIMEOUT`].
async fn open_one(
    addr: SocketAddr,
    uri: http::Uri,
    deflate: bool,
) -> Result<Opened<TcpStream>, Error> {
    let mut rng = OsRandom::new();
    let mut buf = Vec::new();
    let opening = open(addr, &uri, &mut rng, &mut buf, deflate);
    let (tcp, agreed) = tokio::time::timeout(CONNECT_TIMEOUT, opening)
        .await
        .map_err(|_| Error::Timeout)??;
    Ok((tcp, buf, rng, agreed))
}

/// The connections that opened, and how many did not (reported on stderr). At least `needed`
/// must open, else the first error is returned.
async fn opened<T>(
    mut opening: JoinSet<Result<Opened<T>, Error>>,
    count: u32,
    needed: usize,
) -> Result<(Vec<Opened<T>>, u64), Error>
where
    T: Send + 'static,
{
    let mut opened = Vec::with_capacity(count as usize);
    let mut first_error = None;
    let mut failed = 0u64;
    while let Some(joined) = opening.join_next().await {
        match joined {
            Ok(Ok(conn)) => opened.push(conn),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(Error::Io(io::Error::other(e)));
            }
        }
    }
    if opened.len() < needed {
        return Err(first_error.unwrap_or(Error::Timeout));
    }
    if let Some(e) = &first_error {
        eprintln!(
            "gangway: {failed} of {count} connections failed ({}); running with the others",
            crate::causes(e)
        );
    }
    Ok((opened, failed))
}

/// An opened connection: the transport, bytes the server sent behind its response head, the
/// connection's source of masks, and the permessage-deflate parameters agreed on (if offered
/// and accepted).
type Opened<T> = (T, Vec<u8>, OsRandom, Option<DeflateParams>);

/// Echo mode once the connections are opening: run each as an [`EchoConn`] until the end.
async fn run_echo<T>(
    opts: &BenchOpts,
    opening: JoinSet<Result<Opened<T>, Error>>,
    block: Arc<[u8]>,
    frame_len: usize,
    rbuf_len: usize,
    shards: usize,
    cpu: &Arc<CpuWindow>,
) -> Result<Arc<Shared>, Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (open_conns, failed) = opened(opening, opts.connections, 1).await?;
    let shared = Shared::begin(opts, shards, failed, cpu);
    let progress = spawn_progress(&shared, "messages");
    let expect = if opts.text {
        OpCode::Text
    } else {
        OpCode::Binary
    };
    let mut running = JoinSet::new();
    for (i, (tcp, leftover, rng, _)) in open_conns.into_iter().enumerate() {
        // Room for a read even behind bytes the server sent with its response head.
        let mut rbuf = vec![0u8; rbuf_len + leftover.len()].into_boxed_slice();
        rbuf[..leftover.len()].copy_from_slice(&leftover);
        let conn = EchoConn {
            io: tcp,
            block: Arc::clone(&block),
            frame_len,
            window: opts.window as usize,
            credits: opts.window as usize,
            sending: !opts.idle,
            wpos: 0,
            wend: 0,
            sent: VecDeque::with_capacity(opts.window as usize),
            rbuf,
            filled: leftover.len(),
            parser: Parser {
                allow_masked: opts.raw_echo,
                ..Parser::new(expect, opts.payload)
            },
            shard: i,
            rng,
        };
        running.spawn(conn.run(Arc::clone(&shared)));
    }
    while running.join_next().await.is_some() {}
    stop_progress(progress);
    Ok(shared)
}

/// Why a connection stopped early.
#[derive(Debug)]
enum Stop {
    /// The connection failed, or the server closed it.
    Connection,
    /// The server sent something that is not its side of the echo.
    Protocol,
}

/// One connection of echo mode, over a TCP connection or an HTTP/2 stream.
struct EchoConn<T> {
    io: T,
    /// `window` pre-encoded frames; a batch of k frames is the first k of them.
    block: Arc<[u8]>,
    frame_len: usize,
    window: usize,
    /// Frames that may be sent and are not yet part of a write.
    credits: usize,
    /// Whether new frames go out (false once the run is over).
    sending: bool,
    /// The batch being written: `block[wpos..wend]` is still to go.
    wpos: usize,
    wend: usize,
    /// When each message in flight was written, oldest first; never longer than `window`.
    sent: VecDeque<Instant>,
    /// Received bytes; `rbuf[..filled]` holds the start of a frame header not yet complete.
    rbuf: Box<[u8]>,
    filled: usize,
    parser: Parser,
    /// Which latency histogram this connection records into.
    shard: usize,
    rng: OsRandom,
}

impl<T: AsyncRead + AsyncWrite + Unpin> EchoConn<T> {
    async fn run(mut self, shared: Arc<Shared>) {
        // The whole loop is bounded by the end of the run, so a server that stops answering
        // cannot hold the benchmark; the state lives in `self`, so the close below still knows
        // where the stream stands.
        let outcome = tokio::time::timeout_at(shared.end.into(), self.load(&shared)).await;
        match outcome {
            Ok(Err(Stop::Connection)) => Errors::add(&shared.errors.connection),
            Ok(Err(Stop::Protocol)) => Errors::add(&shared.errors.protocol),
            Ok(Ok(())) | Err(_) => {
                let closed = tokio::time::timeout(CLOSE_TIMEOUT, self.close(&shared)).await;
                if !matches!(closed, Ok(Ok(()))) {
                    Errors::add(&shared.errors.close);
                }
            }
        }
    }

    /// Keep the window full until the end of the run.
    async fn load(&mut self, shared: &Shared) -> Result<(), Stop> {
        loop {
            let n = poll_fn(|cx| self.poll_io(cx, shared))
                .await
                .map_err(|_| Stop::Connection)?;
            if n == 0 {
                return Err(Stop::Connection);
            }
            let now = Instant::now();
            let ended = self.received(n, now, shared, true)?;
            if ended {
                return Err(Stop::Connection);
            }
            if now >= shared.end {
                self.sending = false;
                return Ok(());
            }
        }
    }

    /// Write what may go out, then read: ready with the number of bytes read. Both directions
    /// progress in the one task, so a server that echoes while still reading never waits on us.
    fn poll_io(&mut self, cx: &mut Context<'_>, shared: &Shared) -> Poll<io::Result<usize>> {
        loop {
            if self.wpos == self.wend {
                if self.credits == 0 || !self.sending {
                    break;
                }
                let now = Instant::now();
                if now >= shared.end {
                    self.sending = false;
                    break;
                }
                // Every frame that may go out now, in one write.
                self.wpos = 0;
                self.wend = self.credits * self.frame_len;
                for _ in 0..self.credits {
                    self.sent.push_back(now);
                }
                self.credits = 0;
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.block[self.wpos..self.wend]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.wpos += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        let mut rb = ReadBuf::new(&mut self.rbuf[self.filled..]);
        match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Account for `n` new bytes received at `now`: every echo completed gives back its credit
    /// and, if `count`, its latency. True once the server's close frame has been read.
    fn received(
        &mut self,
        n: usize,
        now: Instant,
        shared: &Shared,
        count: bool,
    ) -> Result<bool, Stop> {
        let total = self.filled + n;
        let measured = count && shared.measured(now);
        let mut hist = None;
        let mut bad = 0u64;
        let mut unsolicited = false;
        let sent = &mut self.sent;
        let credits = &mut self.credits;
        let (consumed, closed) = self.parser.feed(&self.rbuf[..total], |ok| {
            let Some(at) = sent.pop_front() else {
                unsolicited = true;
                return;
            };
            *credits += 1;
            if !ok {
                bad += 1;
            } else if measured {
                let h = hist.get_or_insert_with(|| {
                    shared
                        .shard(self.shard)
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                });
                // Cannot truncate in practice: u64 nanoseconds last 584 years.
                h.record(now.duration_since(at).as_nanos() as u64);
            }
        })?;
        drop(hist);
        for _ in 0..bad {
            Errors::add(&shared.errors.mismatch);
        }
        if unsolicited {
            return Err(Stop::Protocol);
        }
        // At most a partial header is left: move it to the front for the next read.
        self.rbuf.copy_within(consumed..total, 0);
        self.filled = total - consumed;
        debug_assert!(self.credits + self.sent.len() <= self.window);
        Ok(closed)
    }

    /// End the connection properly: finish the frame being written, then close (see
    /// [`close_connection`]).
    async fn close(&mut self, shared: &Shared) -> io::Result<()> {
        self.sending = false;
        if self.wpos < self.wend {
            let rest = &self.block[self.wpos..self.wend];
            self.io.write_all(rest).await?;
            self.wpos = self.wend;
        }
        close_connection(&mut (self, shared)).await
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Closing for (&mut EchoConn<T>, &Shared) {
    type Io = T;

    fn io_and_room(&mut self) -> (&mut T, &mut [u8]) {
        let conn = &mut *self.0;
        (&mut conn.io, &mut conn.rbuf[conn.filled..])
    }

    fn feed(&mut self, n: usize) -> io::Result<bool> {
        self.0
            .received(n, Instant::now(), self.1, false)
            .map_err(|_| io::Error::other("unexpected frame while closing"))
    }

    fn rng(&mut self) -> &mut OsRandom {
        &mut self.0.rng
    }

    fn echoes_close(&self) -> bool {
        self.0.parser.allow_masked
    }
}

/// What the frame being skipped is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Data,
    Close,
    /// Ping or pong: skipped (a benchmark run is shorter than any idle timeout).
    Other,
}

/// Header-only parsing of the server's frames: each header is checked and its payload skipped
/// where it lies.
#[derive(Debug)]
struct Parser {
    /// Echoes may be masked (a raw TCP echo returns the client's frames as they were).
    allow_masked: bool,
    expect: OpCode,
    payload: u64,
    /// Payload bytes of the current frame not yet seen.
    skip: u64,
    kind: Kind,
    fin: bool,
    /// A data message is under way (a continuation frame is allowed).
    in_message: bool,
    /// The message's opcode matches the one sent.
    opcode_ok: bool,
    /// Payload length of the message so far.
    message_len: u64,
}

impl Parser {
    fn new(expect: OpCode, payload: u64) -> Parser {
        Parser {
            allow_masked: false,
            expect,
            payload,
            skip: 0,
            kind: Kind::Other,
            fin: true,
            in_message: false,
            opcode_ok: false,
            message_len: 0,
        }
    }

    /// Walk `buf`: `on_message(ok)` for each complete message, `ok` false if its opcode or
    /// length differ from what was sent. Returns the bytes consumed (the rest is a partial
    /// header) and whether a close frame ended.
    fn feed(
        &mut self,
        buf: &[u8],
        mut on_message: impl FnMut(bool),
    ) -> Result<(usize, bool), Stop> {
        let mut i = 0;
        while i < buf.len() {
            if self.skip > 0 {
                let n = self.skip.min((buf.len() - i) as u64);
                self.skip -= n;
                // Cannot truncate: at most buf.len() - i.
                i += n as usize;
                if self.skip > 0 {
                    break;
                }
            } else {
                let Some((h, len)) = FrameHeader::decode(&buf[i..]).map_err(|_| Stop::Protocol)?
                else {
                    break;
                };
                i += len;
                // Server frames are never masked, and no extension was negotiated.
                if (h.mask.is_some() && !self.allow_masked) || h.rsv != 0 {
                    return Err(Stop::Protocol);
                }
                self.kind = match h.opcode {
                    OpCode::Text | OpCode::Binary if !self.in_message => {
                        self.in_message = true;
                        self.opcode_ok = h.opcode == self.expect;
                        self.message_len = h.payload_len;
                        Kind::Data
                    }
                    OpCode::Continuation if self.in_message => {
                        self.message_len = self.message_len.saturating_add(h.payload_len);
                        Kind::Data
                    }
                    OpCode::Close | OpCode::Ping | OpCode::Pong
                        if h.fin && h.payload_len <= 125 =>
                    {
                        if h.opcode == OpCode::Close {
                            Kind::Close
                        } else {
                            Kind::Other
                        }
                    }
                    _ => return Err(Stop::Protocol),
                };
                self.fin = h.fin;
                self.skip = h.payload_len;
            }
            if self.skip == 0 {
                match self.kind {
                    Kind::Data if self.fin => {
                        self.in_message = false;
                        on_message(self.opcode_ok && self.message_len == self.payload);
                    }
                    Kind::Close => return Ok((i, true)),
                    Kind::Data | Kind::Other => {}
                }
            }
        }
        Ok((i, false))
    }
}

/// Handshake mode: after one cycle shows the server is there, run the loops for the warmup and
/// the duration.
async fn handshakes(
    opts: &BenchOpts,
    addr: SocketAddr,
    shards: usize,
    cpu: &Arc<CpuWindow>,
) -> Result<Arc<Shared>, Error> {
    let mut probe = Cycle::new();
    tokio::time::timeout(CONNECT_TIMEOUT, probe.run(addr, &opts.url))
        .await
        .map_err(|_| Error::Timeout)??;

    let shared = Arc::new(Shared::new(
        Instant::now() + opts.warmup,
        opts.duration,
        shards,
    ));
    cpu.spawn(opts, &shared);
    let progress = spawn_progress(&shared, "handshakes");
    let mut running = JoinSet::new();
    for i in 0..opts.connections as usize {
        let shared = Arc::clone(&shared);
        let uri = opts.url.clone();
        running.spawn(async move {
            let mut cycle = Cycle::new();
            // A cycle under way at the end is finished, not cut, and not counted.
            while Instant::now() < shared.end {
                let started = Instant::now();
                match tokio::time::timeout(CLOSE_TIMEOUT, cycle.run(addr, &uri)).await {
                    Ok(Ok(())) => {
                        let now = Instant::now();
                        if shared.measured(now) {
                            // Cannot truncate in practice: u64 nanoseconds last 584 years.
                            let ns = now.duration_since(started).as_nanos() as u64;
                            shared
                                .shard(i)
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .record(ns);
                        }
                    }
                    Ok(Err(_)) | Err(_) => {
                        Errors::add(&shared.errors.connection);
                        // A server that went away must not turn the loop into a busy spin.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        });
    }
    while running.join_next().await.is_some() {}
    stop_progress(progress);
    Ok(shared)
}

/// One loop of `--handshakes`, with its buffers kept from cycle to cycle.
struct Cycle {
    rng: OsRandom,
    buf: Vec<u8>,
}

impl Cycle {
    fn new() -> Cycle {
        Cycle {
            rng: OsRandom::new(),
            buf: Vec::with_capacity(1024),
        }
    }

    /// Connect, upgrade, close (1000), read the server's close frame and the end of stream.
    async fn run(&mut self, addr: SocketAddr, uri: &http::Uri) -> Result<(), Error> {
        let (mut tcp, _) = open(addr, uri, &mut self.rng, &mut self.buf, false).await?;
        let frame = close_frame(&mut self.rng);
        tcp.write_all(&frame).await.map_err(Error::Io)?;
        let protocol =
            |why: &'static str| Error::Io(io::Error::new(io::ErrorKind::InvalidData, why));
        let mut chunk = [0u8; 256];
        // The server's close frame: it may already be in `buf`, behind the response head.
        loop {
            if let Some((h, len)) =
                FrameHeader::decode(&self.buf).map_err(|_| protocol("not a websocket frame"))?
            {
                if h.opcode != OpCode::Close || h.mask.is_some() || !h.fin {
                    return Err(protocol("expected the server's close frame"));
                }
                // Cannot truncate: a close frame decoded with a length above 125 is refused.
                if h.payload_len > 125 {
                    return Err(protocol("close frame too long"));
                }
                if self.buf.len() >= len + h.payload_len as usize {
                    break;
                }
            }
            let n = tcp.read(&mut chunk).await.map_err(Error::Io)?;
            if n == 0 {
                return Err(protocol("closed without a close frame"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        // Then the end of the stream: the server closes the TCP connection first (RFC 6455
        // §7.1.1), so the wait in TIME_WAIT is the server's.
        loop {
            let n = tcp.read(&mut chunk).await.map_err(Error::Io)?;
            if n == 0 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, payload_len: usize) -> Vec<u8> {
        gangway_test_support::Frame::new(opcode, &vec![b'x'; payload_len])
            .fin(fin)
            .encode()
    }

    fn feed_all(p: &mut Parser, bytes: &[u8], step: usize) -> (Vec<bool>, bool) {
        let mut results = Vec::new();
        let mut closed = false;
        let mut pending: Vec<u8> = Vec::new();
        for chunk in bytes.chunks(step) {
            pending.extend_from_slice(chunk);
            let (used, c) = p
                .feed(&pending, |ok| results.push(ok))
                .expect("valid frames");
            closed |= c;
            pending.drain(..used);
            assert!(
                pending.len() < MAX_HEADER_LEN,
                "only a partial header is kept"
            );
        }
        (results, closed)
    }

    #[test]
    fn parser_checks_opcode_and_length_in_any_split() {
        let mut stream = frame(2, true, 300);
        stream.extend(frame(2, true, 299)); // too short
        stream.extend(frame(1, true, 300)); // text, not binary
        stream.extend(frame(9, true, 3)); // a ping in between is skipped
        stream.extend(frame(2, false, 100)); // fragmented: 100 + 200
        stream.extend(frame(0, true, 200));
        stream.extend(frame(8, true, 2));
        for step in [1, 2, 3, 7, 64, 1000, stream.len()] {
            let mut p = Parser::new(OpCode::Binary, 300);
            let (results, closed) = feed_all(&mut p, &stream, step);
            assert_eq!(results, [true, false, false, true], "step {step}");
            assert!(closed, "step {step}");
        }
    }

    #[test]
    fn parser_refuses_what_a_server_cannot_send() {
        let mut masked = frame(2, true, 4);
        masked[1] |= 0x80;
        masked.splice(2..2, [1, 2, 3, 4]);
        let reserved = vec![0x83, 0x00];
        let stray_continuation = frame(0, true, 1);
        let long_ping = frame(9, true, 126);
        let mut interleaved = frame(2, false, 1);
        interleaved.extend(frame(2, true, 1));
        for bad in [masked, reserved, stray_continuation, long_ping, interleaved] {
            let mut p = Parser::new(OpCode::Binary, 1);
            assert!(p.feed(&bad, |_| {}).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn frames_are_masked_and_decode_back() {
        let opts = BenchOpts {
            url: "ws://127.0.0.1:1/".parse().unwrap(),
            connections: 1,
            payload: 200,
            window: 3,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            text: true,
            handshakes: false,
            json: false,
            raw_echo: false,
            idle: false,
            http2: false,
            broadcast: false,
            deflate: false,
            stalled: 0,
            drain_timeout: Duration::from_secs(60),
            also: Vec::new(),
            positioned: false,
            server_pid: Vec::new(),
            threads: 1,
        };
        let block = encode_frames(&opts, &mut OsRandom::new());
        assert_eq!(block.len() % 3, 0);
        for frame in block.chunks(block.len() / 3) {
            let (h, len) = FrameHeader::decode(frame).unwrap().unwrap();
            assert_eq!((h.opcode, h.fin, h.payload_len), (OpCode::Text, true, 200));
            let mut payload = frame[len..].to_vec();
            apply_mask(&mut payload, h.mask.expect("client frames are masked"), 0);
            assert!(std::str::from_utf8(&payload).is_ok());
            assert_eq!(&payload[..3], b"abc");
        }
        let close = close_frame(&mut OsRandom::new());
        let (h, len) = FrameHeader::decode(&close).unwrap().unwrap();
        let mut code = close[len..].to_vec();
        apply_mask(&mut code, h.mask.unwrap(), 0);
        assert_eq!((h.opcode, code), (OpCode::Close, vec![0x03, 0xE8]));
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        json_string(&mut s, "ws://h/\"a\\b\n");
        assert_eq!(s, r#""ws://h/\"a\\b\u000a""#);
    }
}
