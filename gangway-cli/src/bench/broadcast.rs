//! `gangway bench URL --broadcast`: N connections in one room of a broadcast server; each sends
//! one message per round and waits for N messages (everyone's, its own included) before the
//! next. What is measured: messages delivered per second (received by any connection), the
//! latency from a message's send to each delivery, and, with `--server-pid`, the server's CPU
//! time per delivered message.
//!
//! Each message carries its sender, its round and its send time (the load's clock, shared by
//! every connection): 16 bytes at the start of the payload (with `--text`, 32 hexadecimal digits
//! at the start of JSON-like text). Every receiver checks that each sender's messages arrive once
//! and in order; at the end, sending stops, and every connection must receive every message that
//! was sent before it closes (a message lost or duplicated is an error, as is one out of order).
//!
//! With `--deflate` the connections offer permessage-deflate as browsers do; every compressed
//! message received is inflated whole (with the parameters the server agreed to) and checked as
//! an uncompressed one is. What they send goes uncompressed (RFC 7692 §6 lets a sender choose).
//!
//! `--stalled S` adds S connections that join the room and never read: the server's policy for
//! slow members applies to them, and the others' figures show whether they are held up.
//!
//! `--also URL` spreads the connections over several nodes of one service (rooms across
//! processes): connection i goes to node i mod n, and the deliveries from a member of another
//! node are also measured on their own (what the hop between nodes adds). `--positioned` skips
//! the position line before each message and the control lines of `gangway serve --history`.

use std::future::{poll_fn, Future as _};
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use gangway::proto::extensions::permessage_deflate::Decompressor;
use gangway::proto::frame::mask::apply_mask;
use gangway::proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use gangway::proto::{OsRandom, RandomSource};
use gangway::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::{
    close_connection, open_one, opened, BenchOpts, Closing, CpuWindow, Errors, Histogram, Opened,
    Shared, CLOSE_TIMEOUT,
};

/// The bytes at the start of every binary payload: sender (u32), round (u32), send time (u64
/// nanoseconds since the run's epoch), little-endian.
const STAMP: usize = 16;

/// The bytes at the start of every text payload (`--text`): the same three numbers in
/// lowercase hexadecimal, 8, 8 and 16 digits.
const TEXT_STAMP: usize = 32;

/// RSV1: a compressed message (RFC 7692 §6).
const RSV1: u8 = 0b100;

/// The stamp's length: the smallest payload a broadcast run sends.
pub(super) fn stamp_len(text: bool) -> usize {
    if text {
        TEXT_STAMP
    } else {
        STAMP
    }
}

/// After the run, how long no connection may receive anything while messages are missing
/// before they count as lost.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait after every connection is open before the first message: the server
/// joins a connection to its room right after answering its handshake.
const SETTLE: Duration = Duration::from_millis(200);

/// Bytes read at most at once by one connection.
const READ_SIZE: usize = 32 << 10;

/// The longest position line accepted before a message (`--positioned`): an epoch of up to 64
/// characters, a colon, an offset of up to 20 digits and the newline.
const MAX_POSITION_LINE: usize = 86;

/// What every connection of a broadcast run shares, besides [`Shared`].
#[derive(Debug)]
pub(super) struct Room {
    /// The instant stamps count from.
    epoch: Instant,
    /// Connections that send and receive.
    members: u64,
    /// Sending stops once set (at the end of the measured time).
    stop: AtomicBool,
    /// Sends under way between the check of `stop` and the count (see `Member::start_send`).
    in_send: AtomicU64,
    /// Messages sent by all.
    sent: AtomicU64,
    /// Every message sent, once sending has stopped: what each connection must receive.
    pub(super) total: AtomicU64,
    total_known: AtomicBool,
    drained: Notify,
    /// Messages missing (or duplicated) at the end, over all connections, once nothing
    /// arrived anywhere for [`STALL_TIMEOUT`].
    pub(super) lost: AtomicU64,
    /// Messages still in flight when `--drain-timeout` passed, deliveries still going on.
    pub(super) undelivered: AtomicU64,
    /// How long after the run the messages still on their way may take (`--drain-timeout`).
    drain_timeout: Duration,
    /// When a connection last received something (nanoseconds since `epoch`).
    last_progress: AtomicU64,
    /// Rounds completed by member 0 (how many times it received its N messages).
    pub(super) rounds: AtomicU64,
    /// The node each member is connected to (`--also`), by member id.
    node_of: Vec<usize>,
    nodes: usize,
    /// Latencies of the deliveries from a member of another node (nanoseconds).
    crossed: std::sync::Mutex<Histogram>,
    /// Deliveries measured that arrived compressed.
    pub(super) compressed: AtomicU64,
}

impl Room {
    /// With several nodes: the deliveries that crossed between nodes, and their p50 and p99
    /// latencies in microseconds.
    pub(super) fn crossed(&self) -> Option<(u64, f64, f64)> {
        if self.nodes < 2 {
            return None;
        }
        let h = self.crossed.lock().unwrap_or_else(PoisonError::into_inner);
        let us = |ns: u64| ns as f64 / 1000.0;
        Some((h.count(), us(h.quantile(0.5)), us(h.quantile(0.99))))
    }
}

/// Open `count` connections, connection i to node i mod n; each is tagged with its node.
fn open_spread(
    nodes: &[(SocketAddr, http::Uri)],
    count: u32,
    deflate: bool,
) -> JoinSet<Result<Opened<(TcpStream, usize)>, Error>> {
    let mut opening = JoinSet::new();
    for i in 0..count as usize {
        let node = i % nodes.len();
        let (addr, uri) = nodes[node].clone();
        opening.spawn(async move {
            let (tcp, buf, rng, agreed) = open_one(addr, uri, deflate).await?;
            Ok(((tcp, node), buf, rng, agreed))
        });
    }
    opening
}

/// Broadcast mode: open the members (and the stalled connections), run them for the warmup and
/// the duration, stop sending, wait for every message to arrive everywhere, close.
pub(super) async fn run(
    opts: &BenchOpts,
    nodes: &[(SocketAddr, http::Uri)],
    shards: usize,
    cpu: &Arc<CpuWindow>,
) -> Result<(Arc<Shared>, Arc<Room>), Error> {
    let payload = usize::try_from(opts.payload).unwrap_or(usize::MAX);
    let total = opts.connections + opts.stalled;
    // At least one member besides the stalled ones.
    let (mut conns, failed) = opened(
        open_spread(nodes, total, opts.deflate),
        total,
        opts.stalled as usize + 1,
    )
    .await?;
    // The stalled ones are the last opened: they never read (their buffers fill) and never
    // send. Kept open until the end.
    let stalled: Vec<TcpStream> = conns
        .split_off(conns.len() - opts.stalled as usize)
        .into_iter()
        .map(|((tcp, _), _, _, _)| tcp)
        .collect();
    let node_of: Vec<usize> = conns.iter().map(|((_, node), _, _, _)| *node).collect();
    let members = conns.len() as u64;
    tokio::time::sleep(SETTLE).await;

    let shared = Shared::begin(opts, shards, failed, cpu);
    let room = Arc::new(Room {
        epoch: Instant::now(),
        members,
        stop: AtomicBool::new(false),
        in_send: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        total: AtomicU64::new(0),
        total_known: AtomicBool::new(false),
        drained: Notify::new(),
        lost: AtomicU64::new(0),
        undelivered: AtomicU64::new(0),
        drain_timeout: opts.drain_timeout,
        last_progress: AtomicU64::new(0),
        rounds: AtomicU64::new(0),
        node_of,
        nodes: nodes.len(),
        crossed: std::sync::Mutex::default(),
        compressed: AtomicU64::new(0),
    });
    let progress = super::spawn_progress(&shared, "delivered");
    let mut running = JoinSet::new();
    // What follows the stamp in every message: JSON-like text with --text (it compresses as
    // such messages do), else letters.
    let filler: Arc<[u8]> = filler(payload - stamp_len(opts.text), opts.text).into();
    for (i, ((tcp, node), leftover, rng, agreed)) in conns.into_iter().enumerate() {
        let mut rbuf = vec![0u8; READ_SIZE + leftover.len()].into_boxed_slice();
        rbuf[..leftover.len()].copy_from_slice(&leftover);
        // The server's messages: compressed with its window, each on its own or not.
        let inflater = agreed
            .map(|p| Decompressor::new(p.server_max_window_bits, p.server_no_context_takeover));
        let member = Member {
            tcp,
            id: i as u32,
            node,
            round: 0,
            owed: 0,
            sending: true,
            frame: Vec::with_capacity(payload + MAX_HEADER_LEN),
            wpos: 0,
            payload,
            text: opts.text,
            filler: Arc::clone(&filler),
            rbuf,
            filled: leftover.len(),
            parser: StampParser::new(opts.payload, opts.text, opts.positioned, inflater),
            next_round: vec![0; members as usize],
            received: 0,
            rng,
        };
        running.spawn(member.run(Arc::clone(&shared), Arc::clone(&room)));
    }
    // At the end of the measured time: sending stops; once no send is under way, the number of
    // messages sent is final and every connection drains up to it.
    tokio::time::sleep_until(shared.end.into()).await;
    room.stop.store(true, Ordering::SeqCst);
    while room.in_send.load(Ordering::SeqCst) > 0 {
        tokio::task::yield_now().await;
    }
    room.total
        .store(room.sent.load(Ordering::SeqCst), Ordering::SeqCst);
    room.total_known.store(true, Ordering::SeqCst);
    room.drained.notify_waiters();
    while running.join_next().await.is_some() {}
    drop(stalled);
    super::stop_progress(progress);
    Ok((shared, room))
}

/// `len` bytes of filler: JSON-like text (`{"id":0,"name":"gangway","ok":true},...`) or
/// letters.
fn filler(len: usize, json: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0;
    while out.len() < len {
        if json {
            let _ = write!(out, r#"{{"id":{i},"name":"gangway","ok":true}},"#);
        } else {
            out.push(b'a' + (i % 26) as u8);
        }
        i += 1;
    }
    out.truncate(len);
    out
}

/// Ready once sending has stopped and nothing has arrived anywhere for [`STALL_TIMEOUT`].
async fn stalled(room: &Room) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if !room.total_known.load(Ordering::SeqCst) {
            continue;
        }
        let now = Instant::now().duration_since(room.epoch);
        let last = Duration::from_nanos(room.last_progress.load(Ordering::Relaxed));
        if now.saturating_sub(last) >= STALL_TIMEOUT {
            return;
        }
    }
}

/// One member connection.
struct Member {
    tcp: TcpStream,
    id: u32,
    /// The node it is connected to (`--also`).
    node: usize,
    /// The next round this member sends.
    round: u32,
    /// Messages still to receive before the next send.
    owed: u64,
    sending: bool,
    /// The frame being written: `frame[wpos..]` is still to go.
    frame: Vec<u8>,
    wpos: usize,
    payload: usize,
    /// Text messages (`--text`) rather than binary ones.
    text: bool,
    /// What follows the stamp in every message.
    filler: Arc<[u8]>,
    /// Received bytes; `rbuf[..filled]` holds the start of a frame header not yet complete.
    rbuf: Box<[u8]>,
    filled: usize,
    parser: StampParser,
    /// The next round expected from each sender (wrapping: only the order matters).
    next_round: Vec<u32>,
    /// Messages received.
    received: u64,
    rng: OsRandom,
}

/// Why a member stopped early.
enum Stop {
    Connection,
    Protocol,
}

impl Member {
    async fn run(mut self, shared: Arc<Shared>, room: Arc<Room>) {
        let drained = room.drained.notified();
        tokio::pin!(drained);
        // Registered now, so that the notification at the end is not missed.
        drained.as_mut().enable();
        // A server still delivering then is slow, not losing messages: what has not arrived is
        // reported as undelivered, not as an error.
        let deadline = shared.end + room.drain_timeout;
        let run = poll_fn(|cx| self.poll_run(cx, &shared, &room, drained.as_mut()));
        let outcome = tokio::select! {
            outcome = run => Some(outcome),
            () = tokio::time::sleep_until(deadline.into()) => None,
            () = stalled(&room) => None,
        };
        match outcome {
            Some(Err(Stop::Connection)) => Errors::add(&shared.errors.connection),
            Some(Err(Stop::Protocol)) => Errors::add(&shared.errors.protocol),
            Some(Ok(())) | None => {
                let total = room.total.load(Ordering::SeqCst);
                if room.total_known.load(Ordering::SeqCst) && self.received != total {
                    let missing = total.abs_diff(self.received);
                    // Still arriving at the deadline: slow. Nothing for a while: lost.
                    let since = Instant::now().duration_since(room.epoch).saturating_sub(
                        Duration::from_nanos(room.last_progress.load(Ordering::Relaxed)),
                    );
                    if since >= STALL_TIMEOUT || self.received > total {
                        room.lost.fetch_add(missing, Ordering::Relaxed);
                    } else {
                        room.undelivered.fetch_add(missing, Ordering::Relaxed);
                        // The close frame would wait behind them all: the connection is
                        // dropped instead (not counted as a failed close).
                        return;
                    }
                }
                let closed = tokio::time::timeout(CLOSE_TIMEOUT, self.close(&shared, &room)).await;
                if !matches!(closed, Ok(Ok(()))) {
                    Errors::add(&shared.errors.close);
                }
            }
        }
    }

    /// Send and receive until every message sent by anyone has arrived here.
    fn poll_run(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Shared,
        room: &Room,
        drained: Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) -> Poll<Result<(), Stop>> {
        let mut drained = drained;
        loop {
            if self.wpos == self.frame.len() && self.owed == 0 && self.sending {
                self.start_send(room);
            }
            while self.wpos < self.frame.len() {
                match Pin::new(&mut self.tcp).poll_write(cx, &self.frame[self.wpos..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Err(Stop::Connection))
                    }
                    Poll::Ready(Ok(n)) => self.wpos += n,
                    Poll::Pending => break,
                }
            }
            if room.total_known.load(Ordering::SeqCst)
                && self.received >= room.total.load(Ordering::SeqCst)
                && self.wpos == self.frame.len()
            {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut self.rbuf[self.filled..]);
            match Pin::new(&mut self.tcp).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        return Poll::Ready(Err(Stop::Connection));
                    }
                    if self.received(n, shared, room)? {
                        // The server closed.
                        return Poll::Ready(Err(Stop::Connection));
                    }
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Err(Stop::Connection)),
                Poll::Pending => {
                    // Woken at the end of the run too: everything may have arrived already.
                    if !room.total_known.load(Ordering::SeqCst)
                        && drained.as_mut().poll(cx).is_ready()
                    {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Start sending the next round's message, unless sending has stopped.
    fn start_send(&mut self, room: &Room) {
        // Counted under way before `stop` is checked: once `stop` is set and nothing is under
        // way, `sent` is final.
        room.in_send.fetch_add(1, Ordering::SeqCst);
        if room.stop.load(Ordering::SeqCst) {
            room.in_send.fetch_sub(1, Ordering::SeqCst);
            self.sending = false;
            return;
        }
        room.sent.fetch_add(1, Ordering::SeqCst);
        room.in_send.fetch_sub(1, Ordering::SeqCst);
        let now = Instant::now();
        // Cannot truncate in practice: u64 nanoseconds last 584 years.
        let at = now.duration_since(room.epoch).as_nanos() as u64;
        let mut payload = Vec::with_capacity(self.payload);
        if self.text {
            let _ = write!(payload, "{:08x}{:08x}{at:016x}", self.id, self.round);
        } else {
            payload.extend_from_slice(&self.id.to_le_bytes());
            payload.extend_from_slice(&self.round.to_le_bytes());
            payload.extend_from_slice(&at.to_le_bytes());
        }
        payload.extend_from_slice(&self.filler);
        let mut key = [0u8; 4];
        self.rng.fill(&mut key);
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: if self.text {
                OpCode::Text
            } else {
                OpCode::Binary
            },
            mask: Some(key),
            payload_len: payload.len() as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        self.frame.clear();
        self.frame.extend_from_slice(&head[..n]);
        let start = self.frame.len();
        self.frame.extend_from_slice(&payload);
        apply_mask(&mut self.frame[start..], key, 0);
        self.wpos = 0;
        self.round = self.round.wrapping_add(1);
        self.owed = room.members;
    }

    /// Account for `n` new bytes: every message's stamp is checked and its latency recorded.
    /// True once the server's close frame has been read.
    fn received(&mut self, n: usize, shared: &Shared, room: &Room) -> Result<bool, Stop> {
        let total = self.filled + n;
        let now = Instant::now();
        let measured = shared.measured(now);
        // Cannot truncate in practice: u64 nanoseconds last 584 years.
        let now_ns = now.duration_since(room.epoch).as_nanos() as u64;
        room.last_progress.store(now_ns, Ordering::Relaxed);
        let mut hist = None;
        let mut crossed = None;
        let mut bad = 0u64;
        let mut count = 0u64;
        let mut compressed = 0u64;
        let next_round = &mut self.next_round;
        let node = self.node;
        let (consumed, closed) = self.parser.feed(&self.rbuf[..total], |stamp, deflated| {
            count += 1;
            if deflated && measured {
                compressed += 1;
            }
            let Some(stamp) = stamp else {
                bad += 1;
                return;
            };
            let expected = next_round.get_mut(stamp.sender as usize);
            match expected {
                Some(next) if *next == stamp.round => *next = next.wrapping_add(1),
                _ => bad += 1,
            }
            if measured {
                let h = hist.get_or_insert_with(|| {
                    shared
                        .shard(stamp.sender as usize)
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                });
                h.record(now_ns.saturating_sub(stamp.at));
                let from = room.node_of.get(stamp.sender as usize);
                if room.nodes > 1 && from.is_some_and(|&n| n != node) {
                    crossed
                        .get_or_insert_with(|| {
                            room.crossed.lock().unwrap_or_else(PoisonError::into_inner)
                        })
                        .record(now_ns.saturating_sub(stamp.at));
                }
            }
        })?;
        drop(hist);
        drop(crossed);
        for _ in 0..bad {
            Errors::add(&shared.errors.mismatch);
        }
        if compressed > 0 {
            room.compressed.fetch_add(compressed, Ordering::Relaxed);
        }
        self.received += count;
        // Rounds overlap: what arrives counts toward the round this member waits for.
        let before = self.owed;
        self.owed = self.owed.saturating_sub(count);
        if self.id == 0 && before > 0 && self.owed == 0 {
            room.rounds.fetch_add(1, Ordering::Relaxed);
        }
        self.rbuf.copy_within(consumed..total, 0);
        self.filled = total - consumed;
        Ok(closed)
    }

    /// Finish the frame being written, then close (see [`close_connection`]).
    async fn close(&mut self, shared: &Shared, room: &Room) -> io::Result<()> {
        if self.wpos < self.frame.len() {
            self.tcp.write_all(&self.frame[self.wpos..]).await?;
            self.wpos = self.frame.len();
        }
        close_connection(&mut (self, shared, room)).await
    }
}

impl Closing for (&mut Member, &Shared, &Room) {
    type Io = TcpStream;

    fn io_and_room(&mut self) -> (&mut TcpStream, &mut [u8]) {
        let member = &mut *self.0;
        (&mut member.tcp, &mut member.rbuf[member.filled..])
    }

    fn feed(&mut self, n: usize) -> io::Result<bool> {
        // Messages still arriving are read past, not counted.
        let received = self.0.received;
        let closed = self
            .0
            .received(n, self.1, self.2)
            .map_err(|_| io::Error::other("unexpected frame while closing"));
        self.0.received = received;
        closed
    }

    fn rng(&mut self) -> &mut OsRandom {
        &mut self.0.rng
    }
}

/// A message's stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    sender: u32,
    round: u32,
    at: u64,
}

impl Stamp {
    /// A stamp as sent: [`STAMP`] bytes of little-endian numbers, or [`TEXT_STAMP`] hexadecimal
    /// digits; `None` if it is not one.
    fn decode(bytes: &[u8]) -> Option<Stamp> {
        if bytes.len() == TEXT_STAMP {
            let hex = std::str::from_utf8(bytes).ok()?;
            return Some(Stamp {
                sender: u32::from_str_radix(&hex[..8], 16).ok()?,
                round: u32::from_str_radix(&hex[8..16], 16).ok()?,
                at: u64::from_str_radix(&hex[16..], 16).ok()?,
            });
        }
        Some(Stamp {
            sender: u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?),
            round: u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?),
            at: u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?),
        })
    }
}

/// Parsing of the server's frames that reads each message's stamp and skips the rest (or
/// inflates it all, for a compressed message).
#[derive(Debug)]
struct StampParser {
    payload: u64,
    /// `--positioned`: a position line precedes each message's payload, and text messages are
    /// control lines (skipped).
    positioned: bool,
    /// The current message's position line is not over yet; its length so far.
    in_line: bool,
    line: u64,
    /// The current frame's payload length.
    frame_len: u64,
    /// Text messages with a hexadecimal stamp, or binary ones.
    text: bool,
    /// Payload bytes of the current frame not yet seen.
    left: u64,
    /// The current frame is a data frame (its stamp is gathered), or a control frame.
    data: bool,
    close: bool,
    /// The stamp of the current message, as it arrives.
    stamp: [u8; TEXT_STAMP],
    have: usize,
    /// The current message is what was sent (its opcode, the right length).
    ok: bool,
    /// A header was read and its payload is not all seen yet.
    in_frame: bool,
    /// permessage-deflate, when the server agreed to it.
    inflater: Option<Decompressor>,
    /// The current message is compressed: its payload is inflated into `inflated`.
    compressed: bool,
    inflated: Vec<u8>,
}

impl StampParser {
    fn new(
        payload: u64,
        text: bool,
        positioned: bool,
        inflater: Option<Decompressor>,
    ) -> StampParser {
        StampParser {
            payload,
            text,
            positioned,
            in_line: false,
            line: 0,
            frame_len: 0,
            left: 0,
            data: false,
            close: false,
            stamp: [0; TEXT_STAMP],
            have: 0,
            ok: false,
            in_frame: false,
            inflater,
            compressed: false,
            inflated: Vec::new(),
        }
    }

    /// Walk `buf`: `on_message(stamp, compressed)` for each complete message (`None` if it is
    /// not one that was sent). Returns the bytes consumed (the rest is a partial header) and
    /// whether a close frame ended.
    fn feed(
        &mut self,
        buf: &[u8],
        mut on_message: impl FnMut(Option<Stamp>, bool),
    ) -> Result<(usize, bool), Stop> {
        let stamp_len = stamp_len(self.text);
        // An inflated message longer than what was sent is not one of ours: stop there.
        let limit = usize::try_from(self.payload)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let mut i = 0;
        loop {
            if !self.in_frame {
                let Some((h, len)) = FrameHeader::decode(&buf[i..]).map_err(|_| Stop::Protocol)?
                else {
                    return Ok((i, false));
                };
                i += len;
                // Server frames are never masked; RSV1 only on a data frame with
                // permessage-deflate agreed; messages are single frames here (the server frames
                // what it forwards once).
                let data = matches!(h.opcode, OpCode::Binary | OpCode::Text);
                let compressed = h.rsv == RSV1 && data && self.inflater.is_some();
                if h.mask.is_some() || (h.rsv != 0 && !compressed) || !h.fin {
                    return Err(Stop::Protocol);
                }
                self.left = h.payload_len;
                self.frame_len = h.payload_len;
                self.have = 0;
                self.line = 0;
                self.compressed = compressed;
                self.inflated.clear();
                match h.opcode {
                    // Control lines (`!position E:N` and the like).
                    OpCode::Text if self.positioned => {
                        self.data = false;
                    }
                    OpCode::Binary | OpCode::Text => {
                        self.data = true;
                        self.in_line = self.positioned;
                        let sent = if self.text {
                            OpCode::Text
                        } else {
                            OpCode::Binary
                        };
                        // A compressed message's length is checked once inflated, a positioned
                        // one's once its line is read.
                        self.ok = h.opcode == sent
                            && (compressed || self.positioned || h.payload_len == self.payload);
                    }
                    OpCode::Close | OpCode::Ping | OpCode::Pong if h.payload_len <= 125 => {
                        self.data = false;
                    }
                    _ => return Err(Stop::Protocol),
                }
                self.close = h.opcode == OpCode::Close;
                self.in_frame = true;
            }
            if self.data && self.in_line && !self.compressed {
                // `--positioned`: the line before the message, up to its newline.
                let avail = (buf.len() - i) as u64;
                let take = self.left.min(avail) as usize;
                let end = buf[i..i + take].iter().position(|&b| b == b'\n');
                let used = end.map_or(take, |k| k + 1);
                i += used;
                self.left -= used as u64;
                self.line += used as u64;
                if self.line > MAX_POSITION_LINE as u64 {
                    return Err(Stop::Protocol);
                }
                if end.is_some() {
                    self.in_line = false;
                } else if self.left > 0 {
                    return Ok((i, false));
                }
            }
            // The frame's payload: the stamp gathered, the rest skipped where it lies.
            let avail = (buf.len() - i) as u64;
            let take = self.left.min(avail) as usize;
            if self.data && self.compressed {
                if let Some(inflater) = self.inflater.as_mut() {
                    inflater
                        .decompress(&buf[i..i + take], &mut self.inflated, limit)
                        .map_err(|_| Stop::Protocol)?;
                }
            } else if self.data && self.have < stamp_len {
                let n = take.min(stamp_len - self.have);
                self.stamp[self.have..self.have + n].copy_from_slice(&buf[i..i + n]);
                self.have += n;
            }
            i += take;
            self.left -= take as u64;
            if self.left > 0 {
                return Ok((i, false));
            }
            self.in_frame = false;
            if self.close {
                return Ok((i, true));
            }
            if self.data {
                if self.compressed {
                    if let Some(inflater) = self.inflater.as_mut() {
                        inflater
                            .finish(&mut self.inflated, limit)
                            .map_err(|_| Stop::Protocol)?;
                    }
                    self.ok &= self.inflated.len() as u64 == self.payload;
                    self.have = self.inflated.len().min(stamp_len);
                    self.stamp[..self.have].copy_from_slice(&self.inflated[..self.have]);
                } else if self.positioned {
                    self.ok &= !self.in_line && self.frame_len - self.line == self.payload;
                }
                let stamp = if self.ok && self.have == stamp_len {
                    Stamp::decode(&self.stamp[..stamp_len])
                } else {
                    None
                };
                on_message(stamp, self.compressed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use gangway::proto::extensions::permessage_deflate::StatelessCompression;

    use super::*;

    /// A server frame (unmasked, final) of `opcode` carrying `payload`.
    fn frame(opcode: OpCode, rsv: u8, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            fin: true,
            rsv,
            opcode,
            mask: None,
            payload_len: payload.len() as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        [&head[..n], payload].concat()
    }

    fn text_message(sender: u32, round: u32, at: u64, len: usize) -> String {
        let mut s = format!("{sender:08x}{round:08x}{at:016x}");
        s.push_str(std::str::from_utf8(&filler(len - TEXT_STAMP, true)).unwrap());
        s
    }

    fn parse(parser: &mut StampParser, wire: &[u8]) -> Result<Vec<(Option<Stamp>, bool)>, ()> {
        let mut got = Vec::new();
        let (used, closed) = parser
            .feed(wire, |stamp, compressed| got.push((stamp, compressed)))
            .map_err(|_| ())?;
        assert_eq!((used, closed), (wire.len(), false));
        Ok(got)
    }

    #[test]
    fn compressed_and_plain_text_messages_are_read_whole() {
        let len = 1024;
        let how = StatelessCompression::new(15, 6);
        let first = text_message(3, 7, 0x1234_5678_9abc, len);
        let second = text_message(4, 0, 99, len);
        let compressed = how.compress_text(&first);
        assert!(
            compressed.payload().len() < len / 4,
            "JSON-like filler compresses"
        );
        let mut wire = frame(OpCode::Text, RSV1, compressed.payload());
        wire.extend(frame(OpCode::Text, 0, second.as_bytes()));
        let mut parser =
            StampParser::new(len as u64, true, false, Some(Decompressor::new(15, true)));
        // Fed byte by byte: the inflater takes the payload in pieces.
        let mut got = Vec::new();
        let mut rest = &wire[..];
        let mut pending = Vec::new();
        while !rest.is_empty() {
            pending.push(rest[0]);
            rest = &rest[1..];
            let (used, _) = parser
                .feed(&pending, |stamp, c| got.push((stamp, c)))
                .unwrap_or_else(|_| panic!("valid frames"));
            pending.drain(..used);
        }
        let stamp = |sender, round, at| Some(Stamp { sender, round, at });
        assert_eq!(
            got,
            [
                (stamp(3, 7, 0x1234_5678_9abc), true),
                (stamp(4, 0, 99), false)
            ]
        );
    }

    #[test]
    fn wrong_compressed_messages_are_told_apart() {
        let len = 100;
        let how = StatelessCompression::new(15, 6);
        let inflater = || Some(Decompressor::new(15, true));
        // Inflating to another length: not what was sent.
        let short = how.compress_text(&text_message(1, 0, 0, 60));
        let mut parser = StampParser::new(len, true, false, inflater());
        let got = parse(&mut parser, &frame(OpCode::Text, RSV1, short.payload()));
        assert_eq!(got, Ok(vec![(None, true)]));
        // Not DEFLATE data: a protocol error.
        let mut parser = StampParser::new(len, true, false, inflater());
        assert!(parse(&mut parser, &frame(OpCode::Text, RSV1, &[0xff; 40])).is_err());
        // RSV1 without permessage-deflate agreed: a protocol error.
        let mut parser = StampParser::new(len, true, false, None);
        assert!(parse(&mut parser, &frame(OpCode::Text, RSV1, short.payload())).is_err());
        // A binary stamp is read from binary messages.
        let mut payload = vec![0u8; 20];
        payload[..4].copy_from_slice(&5u32.to_le_bytes());
        let mut parser = StampParser::new(20, false, false, None);
        let got = parse(&mut parser, &frame(OpCode::Binary, 0, &payload)).unwrap();
        assert_eq!(got[0].0.map(|s| s.sender), Some(5));
    }

    fn stamped(sender: u32, round: u32, at: u64, len: usize) -> Vec<u8> {
        let mut p = vec![b'x'; len];
        p[..4].copy_from_slice(&sender.to_le_bytes());
        p[4..8].copy_from_slice(&round.to_le_bytes());
        p[8..16].copy_from_slice(&at.to_le_bytes());
        p
    }

    /// Feed `bytes` to `parser` in pieces of `step` bytes, as reads would bring them; the
    /// stamps (None: a message that is not one sent).
    fn parse_in_pieces(parser: &mut StampParser, bytes: &[u8], step: usize) -> Vec<Option<Stamp>> {
        let mut got = Vec::new();
        let mut pending = Vec::new();
        for piece in bytes.chunks(step) {
            pending.extend_from_slice(piece);
            let (used, closed) = parser
                .feed(&pending, |s, _| got.push(s))
                .unwrap_or_else(|_| panic!("protocol error"));
            assert!(!closed);
            pending.drain(..used);
        }
        assert!(pending.is_empty());
        got
    }

    #[test]
    fn position_lines_and_control_lines_are_skipped() {
        let mut wire = frame(OpCode::Text, 0, b"!position 3fa4c2e9:41");
        let mut m = b"3fa4c2e9:42\n".to_vec();
        m.extend_from_slice(&stamped(7, 1, 99, 20));
        wire.extend_from_slice(&frame(OpCode::Binary, 0, &m));
        // A message without its line is not one that was sent.
        wire.extend_from_slice(&frame(OpCode::Binary, 0, &stamped(7, 2, 100, 20)));
        wire.extend_from_slice(&frame(OpCode::Text, 0, b"!recovered 3fa4c2e9:42"));
        let expected = vec![
            Some(Stamp {
                sender: 7,
                round: 1,
                at: 99,
            }),
            None,
        ];
        for step in [1, 3, 7, wire.len()] {
            let mut parser = StampParser::new(20, false, true, None);
            assert_eq!(
                parse_in_pieces(&mut parser, &wire, step),
                expected,
                "{step}"
            );
        }
    }

    #[test]
    fn a_position_line_without_an_end_is_a_protocol_error() {
        let mut parser = StampParser::new(20, false, true, None);
        let wire = frame(OpCode::Binary, 0, &[b'1'; 200]);
        assert!(parser.feed(&wire, |_, _| {}).is_err());
    }

    #[test]
    fn without_positions_messages_are_taken_as_sent() {
        let mut parser = StampParser::new(20, false, false, None);
        let wire = frame(OpCode::Binary, 0, &stamped(1, 5, 6, 20));
        let got = parse_in_pieces(&mut parser, &wire, 2);
        assert_eq!(
            got,
            [Some(Stamp {
                sender: 1,
                round: 5,
                at: 6
            })]
        );
    }
}
