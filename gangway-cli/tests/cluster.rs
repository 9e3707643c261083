//! `gangway serve --broadcast` on three processes sharing rooms through a real engine (Debian's
//! redis-server or nats-server on a free loopback port): 300 members in 10 rooms, spread over
//! the three; every member gets every message of its room exactly once, in publish order per
//! publisher.

#![cfg(all(feature = "redis", feature = "nats"))]

#[path = "../../gangway-bus/tests/support/mod.rs"]
mod engines;
mod support;

use std::collections::HashMap;
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
            let from: std::collections::HashSet<_> = log
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
