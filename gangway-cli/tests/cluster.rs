//! `gangway serve --broadcast` on several processes sharing rooms through a real engine (Debian's
//! redis-server or nats-server on a free loopback port), with WebSocket members:
//!
//! - 300 members in 10 rooms over three processes: every member gets every message of its room
//!   exactly once, in publish order per publisher, with each engine;
//! - `--history`: a member that reconnects with its position gets what it missed, in order,
//!   without duplicates, or is told that it cannot;
//! - faults, while publishers publish: the engine restarted (Redis with and without history,
//!   NATS), a process killed (SIGKILL) and its members reconnecting to another; what was lost
//!   and recovered is counted and checked against the processes' own counters.
//! - `--history` with Redis down: the sender is closed with 1013 once the queue toward Redis is
//!   full.
//!
//! Every process (engine, nodes) is stopped by PID when its handle is dropped, also when a test
//! fails; every wait is bounded.

#![cfg(all(feature = "redis", feature = "nats"))]

#[path = "../../gangway-bus/tests/support/mod.rs"]
mod engines;
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gangway::Message;
use support::Serve;
use tokio::sync::Mutex;

const NODES: usize = 3;
const ROOMS: usize = 10;
const MEMBERS: usize = 300;
/// Messages each publisher sends; three publishers per room, one on each node.
const PER_PUBLISHER: usize = 20;

type Received = Arc<Mutex<Vec<String>>>;

async fn three_nodes_share_rooms(engine_flag: &str, url: &str) {
    let nodes: Vec<Serve> = (0..NODES)
        .map(|_| Serve::start(&["--broadcast", engine_flag, url]))
        .collect();
    // Member i: node i % 3, room i % 10.
    let mut senders = Vec::new();
    let mut logs: Vec<(usize, Received)> = Vec::new();
    let mut readers = Vec::new();
    for i in 0..MEMBERS {
        let room = i % ROOMS;
        let url = nodes[i % NODES].url(&format!("/room{room}"));
        let (ws, _) = gangway::connect(&url).await.expect("connect");
        let (sink, mut stream) = ws.split();
        let log = Received::default();
        let into = log.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                if let Message::Text(t) = m {
                    into.lock().await.push(t.as_str().to_owned());
                }
            }
        }));
        senders.push(sink);
        logs.push((room, log));
    }
    // The rooms' engine subscriptions are made as the first members join; wait until a probe
    // from every node reaches every member before counting.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for (i, sink) in senders.iter_mut().enumerate().take(ROOMS * NODES) {
            sink.send(Message::text(format!("probe-{i}")))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut ready = true;
        for (_, log) in &logs {
            let log = log.lock().await;
            let from: HashSet<_> = log
                .iter()
                .filter_map(|m| m.strip_prefix("probe-"))
                .map(|i| i.parse::<usize>().unwrap() % NODES)
                .collect();
            ready &= from.len() == NODES;
        }
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "rooms never spanned the nodes");
    }
    for (_, log) in &logs {
        log.lock().await.clear();
    }
    // Publishers: members 0..30 are, for each room, one member on each node.
    for n in 0..PER_PUBLISHER {
        for (i, sink) in senders.iter_mut().enumerate().take(ROOMS * NODES) {
            sink.send(Message::text(format!("m{i}-{n}"))).await.unwrap();
        }
    }
    let expected = NODES * PER_PUBLISHER;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut done = 0;
        for (_, log) in &logs {
            let log = log.lock().await;
            done += log.iter().filter(|m| m.starts_with('m')).count();
        }
        if done >= MEMBERS * expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut total = 0;
    for (member, (room, log)) in logs.iter().enumerate() {
        let log = log.lock().await;
        let mut per: HashMap<usize, Vec<usize>> = HashMap::new();
        for m in log.iter().filter_map(|m| m.strip_prefix('m')) {
            let (publisher, n) = m.split_once('-').unwrap();
            let (publisher, n): (usize, usize) = (publisher.parse().unwrap(), n.parse().unwrap());
            assert_eq!(
                publisher % ROOMS,
                *room,
                "member {member} got another room's message"
            );
            per.entry(publisher).or_default().push(n);
        }
        assert_eq!(
            per.len(),
            NODES,
            "member {member}: publishers {:?}",
            per.keys()
        );
        for (publisher, ns) in per {
            // Every message once, in the order it was published.
            assert_eq!(
                ns,
                (0..PER_PUBLISHER).collect::<Vec<_>>(),
                "member {member} from publisher {publisher}"
            );
            total += PER_PUBLISHER;
        }
    }
    println!(
        "{engine_flag}: {NODES} nodes, {MEMBERS} members in {ROOMS} rooms: {total} deliveries, each exactly once and in order"
    );
    for r in readers {
        r.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_nodes_share_rooms() {
    let server = engines::Server::start(engines::Kind::Redis { persistent: false });
    three_nodes_share_rooms("--redis", &server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_three_nodes_share_rooms() {
    let server = engines::Server::start(engines::Kind::Nats);
    three_nodes_share_rooms("--nats", &server.url()).await;
}

// --- Members that keep what they receive, and reconnect with their position ------------------

/// A message as a member received it: with history, its position; a control line
/// (`!recovered E:N`...) as `control`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    Message {
        position: Option<(String, u64)>,
        body: String,
    },
    Control(String),
    /// The connection ended (the node was killed, or stopped); the member reconnected.
    Reconnected,
}

/// One WebSocket member: what it received, and its publishing half.
struct Client {
    got: Arc<std::sync::Mutex<Vec<Got>>>,
    sink: Arc<Mutex<Option<Sink>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    /// The node it is connected to now (an index into the URLs it was given).
    node: Arc<AtomicUsize>,
}

type Sink = futures_util::stream::SplitSink<gangway::WebSocket<gangway::MaybeTlsStream>, Message>;

impl Client {
    /// Connect to `urls[0]`; when that connection ends, reconnect to the next URL, with the
    /// position of the last message received (`?epoch=E&offset=N`) when there is one.
    async fn start(urls: Vec<String>) -> Client {
        Client::start_gated(urls, Arc::new(AtomicBool::new(true))).await
    }

    /// [`Client::start`], reconnecting only once `gate` is open.
    async fn start_gated(urls: Vec<String>, gate: Arc<AtomicBool>) -> Client {
        let got: Arc<std::sync::Mutex<Vec<Got>>> = Arc::default();
        let sink: Arc<Mutex<Option<Sink>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let node = Arc::new(AtomicUsize::new(0));
        let (ws, _) = gangway::connect(&urls[0]).await.expect("connect");
        let (first_sink, first_stream) = ws.split();
        *sink.lock().await = Some(first_sink);
        let task = {
            let (got, sink, stop, node) = (got.clone(), sink.clone(), stop.clone(), node.clone());
            tokio::spawn(async move {
                let mut stream = first_stream;
                let mut at = 0;
                loop {
                    while let Some(Ok(m)) = stream.next().await {
                        if let Message::Text(t) = m {
                            got.lock().unwrap().push(parse(t.as_str()));
                        }
                    }
                    if stop.load(Ordering::Relaxed) || at + 1 >= urls.len() {
                        return;
                    }
                    at += 1;
                    node.store(at, Ordering::Relaxed);
                    let query = last_position(&got.lock().unwrap())
                        .map(|(e, o)| format!("?epoch={e}&offset={o}"))
                        .unwrap_or_default();
                    got.lock().unwrap().push(Got::Reconnected);
                    while !gate.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let url = format!("{}{query}", urls[at]);
                    let (ws, _) = gangway::connect(&url).await.expect("reconnect");
                    let (s, st) = ws.split();
                    *sink.lock().await = Some(s);
                    stream = st;
                }
            })
        };
        Client {
            got,
            sink,
            stop,
            task,
            node,
        }
    }

    async fn send(&self, text: String) {
        let mut sink = self.sink.lock().await;
        let sink = sink.as_mut().expect("connected");
        sink.send(Message::text(text)).await.expect("send");
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// The message bodies received.
    fn bodies(&self) -> Vec<String> {
        self.got()
            .into_iter()
            .filter_map(|g| match g {
                Got::Message { body, .. } => Some(body),
                _ => None,
            })
            .collect()
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

/// What a member received, as text: a control line, a positioned message or a plain one.
fn parse(text: &str) -> Got {
    if text.starts_with('!') {
        return Got::Control(text.to_owned());
    }
    if let Some((line, body)) = text.split_once('\n') {
        if let Some((epoch, offset)) = line.split_once(':') {
            if let Ok(offset) = offset.parse() {
                return Got::Message {
                    position: Some((epoch.to_owned(), offset)),
                    body: body.to_owned(),
                };
            }
        }
    }
    Got::Message {
        position: None,
        body: text.to_owned(),
    }
}

/// The last position a member saw: of its last message, or of its last control line.
fn last_position(got: &[Got]) -> Option<(String, u64)> {
    got.iter().rev().find_map(|g| match g {
        Got::Message { position, .. } => position.clone(),
        Got::Control(line) => {
            let (_, at) = line.split_once(' ')?;
            let (e, o) = at.split_once(':')?;
            Some((e.to_owned(), o.parse().ok()?))
        }
        Got::Reconnected => None,
    })
}

/// Wait until `done` or `limit`.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

/// Per publisher, the numbers of its messages a member received (bodies `p<publisher>-<n>`),
/// in the order received.
fn per_publisher(bodies: &[String]) -> BTreeMap<usize, Vec<usize>> {
    let mut per: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for b in bodies {
        let Some((p, n)) = b.strip_prefix('p').and_then(|b| b.split_once('-')) else {
            continue;
        };
        if let (Ok(p), Ok(n)) = (p.parse(), n.parse()) {
            per.entry(p).or_default().push(n);
        }
    }
    per
}

/// A counter from a node's `bus counters` log line (logged at SIGTERM).
fn counter(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("bus counters"))
        .unwrap_or_else(|| panic!("no bus counters in the log:\n{log}"));
    let key = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

// --- History: recovery through `serve` -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_gives_a_reconnecting_member_what_it_missed_or_says_it_cannot() {
    let redis = engines::Server::start(engines::Kind::Redis { persistent: false });
    let url = redis.url();
    let args = ["--broadcast", "--redis", &url, "--history", "6"];
    let nodes = [Serve::start(&args), Serve::start(&args)];
    let room = "/h";

    // A fresh member is told where the room stands.
    let a = Client::start(vec![nodes[0].url(room)]).await;
    assert!(until(Duration::from_secs(10), || !a.got().is_empty()).await);
    let Got::Control(first) = &a.got()[0] else {
        panic!("{:?}", a.got())
    };
    let epoch = first
        .strip_prefix("!position ")
        .and_then(|p| p.strip_suffix(":0"))
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let b = Client::start(vec![nodes[1].url(room)]).await;
    assert!(until(Duration::from_secs(10), || !b.got().is_empty()).await);
    assert_eq!(b.got(), [Got::Control(format!("!position {epoch}:0"))]);

    // Every member, the publisher's own included, gets each message with its position, in one
    // order.
    for i in 1..=5 {
        a.send(format!("a{i}")).await;
    }
    let five = |c: &Client| c.bodies().len() == 5;
    assert!(until(Duration::from_secs(10), || five(&a) && five(&b)).await);
    let expected: Vec<Got> = (1..=5)
        .map(|i| Got::Message {
            position: Some((epoch.clone(), i)),
            body: format!("a{i}"),
        })
        .collect();
    assert_eq!(a.got()[1..], expected[..]);
    assert_eq!(b.got()[1..], expected[..]);

    // A member that saw up to 2, reconnecting to the other node after 3 more: 3..=8 (the last
    // six are kept), then the control line, then live messages.
    for i in 6..=8 {
        a.send(format!("a{i}")).await;
    }
    assert!(until(Duration::from_secs(10), || a.bodies().len() == 8).await);
    let back = Client::start(vec![format!(
        "{}?epoch={epoch}&offset=2",
        nodes[0].url(room)
    )])
    .await;
    assert!(until(Duration::from_secs(10), || back.got().len() == 7).await);
    a.send("a9".to_owned()).await;
    assert!(until(Duration::from_secs(10), || back.got().len() == 8).await);
    let mut expected: Vec<Got> = (3..=8)
        .map(|i| Got::Message {
            position: Some((epoch.clone(), i)),
            body: format!("a{i}"),
        })
        .collect();
    expected.push(Got::Control(format!("!recovered {epoch}:8")));
    expected.push(Got::Message {
        position: Some((epoch.clone(), 9)),
        body: "a9".to_owned(),
    });
    assert_eq!(back.got(), expected);

    // Older than the history keeps (it has 4..=9), of another epoch, or ahead of the room: the
    // member is told it cannot recover, and where live messages start.
    for asked in [
        format!("epoch={epoch}&offset=2"),
        "epoch=0123abcd&offset=3".to_owned(),
        format!("epoch={epoch}&offset=99"),
    ] {
        let c = Client::start(vec![format!("{}?{asked}", nodes[1].url(room))]).await;
        assert!(until(Duration::from_secs(10), || !c.got().is_empty()).await);
        assert_eq!(
            c.got(),
            [Got::Control(format!("!unrecoverable {epoch}:9"))],
            "{asked}"
        );
        c.stop();
    }
    // Nothing missed: nothing sent but the line.
    let c = Client::start(vec![format!(
        "{}?epoch={epoch}&offset=9",
        nodes[1].url(room)
    )])
    .await;
    assert!(until(Duration::from_secs(10), || !c.got().is_empty()).await);
    assert_eq!(c.got(), [Got::Control(format!("!recovered {epoch}:9"))]);

    // A position that does not parse is refused before the upgrade.
    let err = gangway::connect(&format!("{}?epoch=x-y&offset=1", nodes[0].url(room)))
        .await
        .expect_err("a bad position is refused");
    assert!(
        matches!(
            err,
            gangway::Error::Handshake(gangway::proto::HandshakeError::UnexpectedStatus(400))
        ),
        "{err:?}"
    );
    for c in [a, b, back, c] {
        c.stop();
    }
}

// --- Faults ------------------------------------------------------------------------------------

/// Messages each publisher sends, and the pause between two of them.
const FAULT_MESSAGES: usize = 150;
const FAULT_PAUSE: Duration = Duration::from_millis(5);
const FAULT_ROOMS: usize = 3;
/// Members per room and node; the first of each is a publisher (if its node publishes).
const FAULT_MEMBERS: usize = 3;
/// With a node killed: messages the others publish before its members reconnect.
const MISSED_AFTER_KILL: usize = 10;

/// Publishers of the run with a node killed: the first member of each room on each node that
/// stays.
fn publishing_count() -> usize {
    FAULT_ROOMS * (NODES - 1)
}

/// A member of the fault runs: its node, its room, the client.
type Placed = (usize, usize, Client);

/// `FAULT_ROOMS` rooms, each with `FAULT_MEMBERS` members on every node. A member of node `n`
/// reconnects to `fallback(n)`, if any, when its connection ends and `gate` is open.
async fn spread(
    nodes: &[Serve],
    fallback: impl Fn(usize) -> Option<usize>,
    gate: &Arc<AtomicBool>,
) -> Vec<Placed> {
    let mut clients = Vec::new();
    for room in 0..FAULT_ROOMS {
        for _ in 0..FAULT_MEMBERS {
            for (node, serve) in nodes.iter().enumerate() {
                let path = format!("/f{room}");
                let mut urls = vec![serve.url(&path)];
                if let Some(other) = fallback(node) {
                    urls.push(nodes[other].url(&path));
                }
                clients.push((node, room, Client::start_gated(urls, gate.clone()).await));
            }
        }
    }
    clients
}

/// The publisher id of the member at `index` of [`spread`]'s list, if it publishes: the first
/// member of each room on each node in `publishing`.
fn publisher_id(index: usize, node: usize, publishing: &[usize]) -> Option<usize> {
    let first = index % (FAULT_MEMBERS * NODES) < NODES;
    (first && publishing.contains(&node)).then_some(index)
}

/// Each room's publishers: `room -> [(publisher id, its node)]`.
fn publishers(clients: &[Placed], publishing: &[usize]) -> HashMap<usize, Vec<(usize, usize)>> {
    let mut map: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    for (i, (node, room, _)) in clients.iter().enumerate() {
        if let Some(id) = publisher_id(i, *node, publishing) {
            map.entry(*room).or_default().push((id, *node));
        }
    }
    map
}

/// Wait until every room spans the nodes: a probe from the first member on each node reaches
/// every member of the room.
async fn span(clients: &[Placed]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for (i, (node, room, c)) in clients.iter().enumerate() {
            if publisher_id(i, *node, &[0, 1, 2]).is_some() {
                c.send(format!("probe{room}-{node}")).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let spanned = clients.iter().all(|(_, room, c)| {
            let prefix = format!("probe{room}-");
            let from: HashSet<String> = c
                .bodies()
                .into_iter()
                .filter(|b| b.starts_with(&prefix))
                .collect();
            from.len() == NODES
        });
        if spanned {
            return;
        }
        assert!(Instant::now() < deadline, "rooms never spanned the nodes");
    }
}

/// Publish `FAULT_MESSAGES` from every publisher, paced; `fault` runs (on a thread of its own)
/// a quarter of the way through, given the count of messages sent so far.
async fn publish_with_fault(
    clients: &Arc<Vec<Placed>>,
    publishing: &[usize],
    fault: impl FnOnce(&AtomicUsize) + Send + 'static,
) {
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, (node, _, _)) in clients.iter().enumerate() {
        let Some(id) = publisher_id(i, *node, publishing) else {
            continue;
        };
        let clients = clients.clone();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..FAULT_MESSAGES {
                clients[i].2.send(format!("p{id}-{n}")).await;
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(FAULT_PAUSE).await;
            }
        }));
    }
    tokio::time::sleep(FAULT_PAUSE * (FAULT_MESSAGES as u32) / 4).await;
    tokio::task::spawn_blocking(move || fault(&sent))
        .await
        .unwrap();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Wait (bounded) until every member has the last message of every publisher of its room.
async fn wait_for_last(clients: &[Placed], rooms: &HashMap<usize, Vec<(usize, usize)>>) -> bool {
    until(Duration::from_secs(15), || {
        clients.iter().all(|(_, room, c)| {
            let per = per_publisher(&c.bodies());
            rooms[room]
                .iter()
                .all(|(id, _)| per.get(id).and_then(|n| n.last()) == Some(&(FAULT_MESSAGES - 1)))
        })
    })
    .await
}

/// The engine restarted (killed, 300 ms down) while every node's publishers publish; no
/// history. Local delivery goes on; a node's members of a room all miss the same messages from
/// the other nodes, and that is exactly what the node counted as lost.
async fn restart_without_history(kind: engines::Kind, flag: &str) {
    let engine = Arc::new(std::sync::Mutex::new(engines::Server::start(kind)));
    let url = engine.lock().unwrap().url();
    let mut nodes: Vec<Serve> = (0..NODES)
        .map(|_| Serve::start(&["--broadcast", flag, &url]))
        .collect();
    let clients = spread(&nodes, |_| None, &Arc::new(AtomicBool::new(true))).await;
    span(&clients).await;
    let publishing = [0, 1, 2];
    let rooms = publishers(&clients, &publishing);
    let clients = Arc::new(clients);
    let started = Instant::now();
    let restarted = engine.clone();
    publish_with_fault(&clients, &publishing, move |_| {
        restarted
            .lock()
            .unwrap()
            .restart(Duration::from_millis(300));
    })
    .await;
    assert!(
        wait_for_last(&clients, &rooms).await,
        "the nodes did not all reconnect"
    );
    // Per node and room, what its members received of each publisher.
    let mut by_node_room: HashMap<(usize, usize), BTreeMap<usize, Vec<usize>>> = HashMap::new();
    for (node, room, c) in clients.iter() {
        let per = per_publisher(&c.bodies());
        let mut got = BTreeMap::new();
        for (id, publisher_node) in &rooms[room] {
            let ns = per.get(id).cloned().unwrap_or_default();
            assert!(
                ns.windows(2).all(|w| w[0] < w[1]),
                "node {node} room {room} publisher {id}: a duplicate or out of order: {ns:?}"
            );
            if publisher_node == node {
                assert_eq!(
                    ns,
                    (0..FAULT_MESSAGES).collect::<Vec<_>>(),
                    "local delivery stopped (node {node} room {room} publisher {id})"
                );
            }
            got.insert(*id, ns);
        }
        match by_node_room.entry((*node, *room)) {
            std::collections::hash_map::Entry::Occupied(first) => assert_eq!(
                first.get(),
                &got,
                "members of room {room} on node {node} got different messages"
            ),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(got);
            }
        }
    }
    let mut missed = [0u64; NODES];
    for ((node, room), per) in &by_node_room {
        let received: usize = per.values().map(Vec::len).sum();
        missed[*node] += (rooms[room].len() * FAULT_MESSAGES - received) as u64;
    }
    let elapsed = started.elapsed();
    for (_, _, c) in Arc::try_unwrap(clients).ok().expect("publishers done") {
        c.stop();
    }
    let mut report = Vec::new();
    for (node, serve) in nodes.iter_mut().enumerate() {
        let (status, log) = serve.terminate();
        assert!(status.success(), "{log}");
        let (lost, gaps) = (counter(&log, "lost"), counter(&log, "gaps"));
        assert_eq!(
            lost, missed[node],
            "node {node} counted {lost} lost; its members missed {}",
            missed[node]
        );
        assert!(gaps >= 1, "node {node}: the outage was not reported");
        report.push(format!("node {node} lost {lost} (gaps {gaps})"));
    }
    println!(
        "{flag} restarted mid-run, no history: {} publishers x {FAULT_MESSAGES} messages to {} members over {NODES} nodes in {elapsed:.1?}; {}; each loss counted by its node, every member's local publishers complete",
        rooms.values().map(Vec::len).sum::<usize>(),
        FAULT_ROOMS * FAULT_MEMBERS * NODES,
        report.join(", ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_history_loses_only_what_the_nodes_count() {
    restart_without_history(engines::Kind::Redis { persistent: false }, "--redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_loses_only_what_the_nodes_count() {
    restart_without_history(engines::Kind::Nats, "--nats").await;
}

/// The fault of a history run.
enum Fault {
    /// Redis killed, 300 ms down, restarted (its append-only file kept).
    RestartRedis,
    /// The last node killed (SIGKILL); its members reconnect to the first with their position.
    KillNode,
}

/// History on, a fault mid-run: every member gets every message of its room exactly once, in
/// the room's one order (consecutive offsets of one epoch, the same message at each offset for
/// every member), across its reconnection when its node was killed.
async fn history_fault(fault: Fault) {
    let engine = Arc::new(std::sync::Mutex::new(engines::Server::start(
        engines::Kind::Redis { persistent: true },
    )));
    let url = engine.lock().unwrap().url();
    let args = ["--broadcast", "--redis", &url, "--history", "10000"];
    let nodes: Vec<Serve> = (0..NODES).map(|_| Serve::start(&args)).collect();
    let killed = NODES - 1;
    let kill = matches!(fault, Fault::KillNode);
    let (publishing, fallback): (Vec<usize>, Option<usize>) = match fault {
        Fault::RestartRedis => ((0..NODES).collect(), None),
        // The killed node's members publish nothing: a message a client sent to a process
        // that died before passing it on is the client's to send again.
        Fault::KillNode => ((0..killed).collect(), Some(0)),
    };
    // The killed node's members reconnect once the others published some more: what they
    // missed then comes from the history.
    let gate = Arc::new(AtomicBool::new(!kill));
    let clients = spread(&nodes, |n| if n == killed { fallback } else { None }, &gate).await;
    span(&clients).await;
    let rooms = publishers(&clients, &publishing);
    let clients = Arc::new(clients);
    let nodes = Arc::new(std::sync::Mutex::new(nodes));
    let started = Instant::now();
    let (e, n, g) = (engine.clone(), nodes.clone(), gate.clone());
    publish_with_fault(&clients, &publishing, move |sent| match fault {
        Fault::RestartRedis => e.lock().unwrap().restart(Duration::from_millis(300)),
        Fault::KillNode => {
            let _ = n.lock().unwrap()[killed].proc.0.kill();
            // Each publisher may have had one send under way when the count was read.
            let after = sent.load(Ordering::SeqCst) + MISSED_AFTER_KILL + publishing_count();
            let deadline = Instant::now() + Duration::from_secs(10);
            while sent.load(Ordering::SeqCst) < after && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            g.store(true, Ordering::SeqCst);
        }
    })
    .await;
    assert!(
        wait_for_last(&clients, &rooms).await,
        "not every member got every publisher's last message"
    );
    let elapsed = started.elapsed();
    // Per room: the message at each offset, the same for every member.
    let mut at_offset: HashMap<usize, HashMap<u64, String>> = HashMap::new();
    let (mut reconnected, mut recovered) = (0, 0);
    for (i, (node, room, c)) in clients.iter().enumerate() {
        let got = c.got();
        let per = per_publisher(&c.bodies());
        for (id, _) in &rooms[room] {
            assert_eq!(
                per.get(id).cloned().unwrap_or_default(),
                (0..FAULT_MESSAGES).collect::<Vec<_>>(),
                "member {i} (node {node}, room {room}) from publisher {id}: lost, twice or out of order"
            );
        }
        // Offsets: consecutive from where the member joined, across a reconnection.
        let mut last: Option<(String, u64)> = None;
        let mut since_reconnect: Option<u64> = None;
        for g in &got {
            match g {
                Got::Control(line) => {
                    let (what, at) = line.split_once(' ').expect("!what E:N");
                    let (epoch, offset) = at.split_once(':').unwrap();
                    let offset: u64 = offset.parse().unwrap();
                    match what {
                        "!position" => assert!(last.is_none(), "member {i}: {got:?}"),
                        "!recovered" => {
                            recovered += since_reconnect.take().expect("after a reconnection");
                            assert_eq!(last.as_ref().map(|(_, o)| *o), Some(offset));
                        }
                        other => panic!("member {i}: {other} after a fault"),
                    }
                    last = Some((epoch.to_owned(), offset));
                }
                Got::Message { position, body } => {
                    let (epoch, offset) = position.clone().expect("positioned");
                    if let Some((last_epoch, last_offset)) = &last {
                        assert_eq!(
                            (last_epoch, offset),
                            (&epoch, last_offset + 1),
                            "member {i}: offsets not consecutive"
                        );
                    }
                    let seen = at_offset.entry(*room).or_default();
                    let kept = seen.entry(offset).or_insert_with(|| body.clone());
                    assert_eq!(kept, body, "room {room} offset {offset}: two messages");
                    last = Some((epoch, offset));
                    if let Some(n) = &mut since_reconnect {
                        *n += 1;
                    }
                }
                Got::Reconnected => {
                    reconnected += 1;
                    since_reconnect = Some(0);
                }
            }
        }
        assert!(
            since_reconnect.is_none(),
            "member {i}: no !recovered after its reconnection"
        );
        assert_eq!(
            c.node.load(Ordering::Relaxed) > 0,
            got.contains(&Got::Reconnected)
        );
    }
    for (_, _, c) in Arc::try_unwrap(clients).ok().expect("publishers done") {
        c.stop();
    }
    let mut report = Vec::new();
    let mut nodes = Arc::try_unwrap(nodes)
        .ok()
        .expect("fault done")
        .into_inner()
        .unwrap();
    for (node, serve) in nodes.iter_mut().enumerate() {
        if kill && node == killed {
            continue;
        }
        let (status, log) = serve.terminate();
        assert!(status.success(), "{log}");
        let (lost, from_history, gaps) = (
            counter(&log, "lost"),
            counter(&log, "recovered"),
            counter(&log, "gaps"),
        );
        assert_eq!(lost, 0, "node {node} lost messages");
        if !kill {
            assert!(gaps >= 1, "node {node}: the outage was not reported");
        }
        report.push(format!(
            "node {node}: lost 0, {from_history} filled in from the history, gaps {gaps}"
        ));
    }
    let members = FAULT_ROOMS * FAULT_MEMBERS * NODES;
    let messages = rooms.values().map(Vec::len).sum::<usize>() * FAULT_MESSAGES;
    if kill {
        assert_eq!(
            reconnected,
            FAULT_ROOMS * FAULT_MEMBERS,
            "every member of the killed node"
        );
        // Every message published while they were away, by each of its room's members.
        assert!(
            recovered >= (FAULT_MEMBERS * MISSED_AFTER_KILL) as u64,
            "the reconnecting members recovered {recovered} messages"
        );
    }
    println!(
        "history, {}: {messages} messages to {members} members over {NODES} nodes in {elapsed:.1?}: nothing lost, none twice, one order per room; {reconnected} members reconnected to another node and got {recovered} missed messages from the history; {}",
        if kill { "a node killed (SIGKILL)" } else { "Redis restarted" },
        report.join("; ")
    );
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_redis_restarted_loses_nothing() {
    history_fault(Fault::RestartRedis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_node_killed_its_members_recover_on_another() {
    history_fault(Fault::KillNode).await;
}

// --- The load generator across nodes -----------------------------------------------------------

/// `gangway bench --broadcast` with its members spread over three nodes (`--also`): with history
/// (`--positioned` skips the position and control lines), every message reaches every member
/// once and in order, and the deliveries that crossed between nodes are measured apart.
#[test]
fn bench_spreads_its_members_over_the_nodes() {
    let redis = engines::Server::start(engines::Kind::Redis { persistent: false });
    let url = redis.url();
    for history in [false, true] {
        let mut args = vec!["--broadcast", "--redis", &url];
        if history {
            args.extend(["--history", "1000"]);
        }
        let mut nodes: Vec<Serve> = (0..NODES).map(|_| Serve::start(&args)).collect();
        let mut bench = support::gangway();
        bench
            .args(["bench", &nodes[0].url("/b"), "--broadcast", "--json"])
            .args(["--also", &nodes[1].url("/b"), "--also", &nodes[2].url("/b")])
            .args(["--connections", "9", "--payload", "20"])
            .args([
                "--duration",
                "0.5",
                "--warmup",
                "0.2",
                "--drain-timeout",
                "10",
            ]);
        for node in &nodes {
            bench.args(["--server-pid", &node.proc.0.id().to_string()]);
        }
        if history {
            bench.arg("--positioned");
        }
        let out = bench.output().expect("bench runs");
        let (stdout, stderr) = (support::text(&out.stdout), support::text(&out.stderr));
        // The load counts a message missing, duplicated or out of order as an error, and exits
        // 1 on any.
        assert!(out.status.success(), "{stdout}\n{stderr}");
        for expected in [
            "\"errors\":0",
            "\"lost\":0",
            "\"nodes\":3",
            "\"server_cpu_us_per\"",
        ] {
            assert!(stdout.contains(expected), "{expected} in {stdout}");
        }
        let crossed: u64 = stdout
            .split("\"crossed_count\":")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(crossed > 0, "{stdout}");
        println!("history {history}: {}", stdout.trim());
        for node in &mut nodes {
            let (status, _) = node.terminate();
            assert!(status.success());
        }
    }
}

// --- The queue toward the engine -----------------------------------------------------------------

/// History on, Redis down: what a member sends waits in the node's bounded queue toward Redis
/// (4,096 publishes, and one batch on its way); once it is full the sender is closed with 1013
/// (try again later), and the node goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_a_full_engine_queue_closes_the_sender_with_1013() {
    let mut redis = engines::Server::start(engines::Kind::Redis { persistent: false });
    let url = redis.url();
    let mut serve = Serve::start(&["--broadcast", "--redis", &url, "--history", "100"]);
    let (mut ws, _) = gangway::connect(&serve.url("/q")).await.expect("connect");
    // Joined: the room's position came from Redis.
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the position in time");
    assert!(
        matches!(&first, Some(Ok(Message::Text(t))) if t.as_str().starts_with("!position ")),
        "{first:?}"
    );
    redis.kill();
    let mut sent = 0;
    for i in 0..6000 {
        if ws.send(Message::text(format!("m{i}"))).await.is_err() {
            break;
        }
        sent += 1;
    }
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the node never closed the sender");
    let code = ws.close_frame().cloned().flatten().map(|f| f.code);
    assert_eq!(
        code,
        Some(gangway::CloseCode::TRY_AGAIN_LATER),
        "after {sent} sent"
    );
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("closed with 1013: the queue toward the message engine is full"),
        "{log}"
    );
    println!("history, Redis down: the sender was closed with 1013 after {sent} messages sent");
}
