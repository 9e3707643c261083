//! The bus against real engines (Debian's redis-server and nats-server on loopback): every node
//! gets every message of its rooms once and in order; engine restarts are survived, counted and
//! (with history) repaired; recovery after a gap.

#![cfg(any(feature = "redis", feature = "nats"))]

mod support;

use std::collections::HashMap;
#[cfg(feature = "redis")]
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gangway_bus::{Bus, BusConfig, Engine, Kind, Subscription};
// History is the Redis engine's.
#[cfg(feature = "redis")]
use gangway_bus::{Position, RecoverError};
use support::Server;

type Log = Arc<Mutex<Vec<(String, Bytes)>>>;

struct Node {
    bus: Bus,
    log: Log,
    _subs: Vec<Subscription>,
}

async fn node(engine: Engine, config: BusConfig, rooms: &[String]) -> Node {
    let log = Log::default();
    let sink = log.clone();
    let bus = Bus::connect(engine, config, move |room, d| {
        sink.lock().unwrap().push((room.to_owned(), d.payload));
    })
    .await
    .expect("connect to the engine");
    let subs: Vec<_> = rooms.iter().map(|r| bus.subscribe(r)).collect();
    for s in &subs {
        s.ready().await;
    }
    Node {
        bus,
        log,
        _subs: subs,
    }
}

/// The message text after the position line, if any.
fn body(payload: &Bytes) -> String {
    let text = std::str::from_utf8(payload).expect("text");
    match text.split_once('\n') {
        Some((_, body)) => body.to_owned(),
        None => text.to_owned(),
    }
}

/// Wait until `done` or the deadline.
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

/// Per room, the bodies a node received.
fn by_room(log: &Log) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for (room, p) in log.lock().unwrap().iter() {
        m.entry(room.clone()).or_default().push(body(p));
    }
    m
}

/// Bodies are `<publisher>-<n>`: every publisher's messages arrive once, in increasing order.
/// Returns, per publisher, the numbers received.
fn check_order(bodies: &[String]) -> HashMap<String, Vec<u64>> {
    let mut per: HashMap<String, Vec<u64>> = HashMap::new();
    for b in bodies {
        let (publisher, n) = b.rsplit_once('-').expect("publisher-n");
        let n: u64 = n.parse().unwrap();
        let seen = per.entry(publisher.to_owned()).or_default();
        if let Some(&last) = seen.last() {
            assert!(
                n > last,
                "{publisher}: {n} after {last} (duplicate or out of order)"
            );
        }
        seen.push(n);
    }
    per
}

/// Three nodes with members in five rooms, and a fourth with none, publish to every room: each
/// of the three gets every message once, in each publisher's order. (The fourth node's messages
/// are each a stream of their own, sent unsequenced.)
async fn three_nodes(engine: impl Fn() -> Engine) {
    let rooms: Vec<String> = (0..5).map(|i| format!("/room{i}")).collect();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(node(engine(), BusConfig::default(), &rooms).await);
    }
    let outsider = node(engine(), BusConfig::default(), &[]).await;
    const N: u64 = 200;
    for i in 0..N {
        let publishers = nodes.iter().map(|n| &n.bus).chain([&outsider.bus]);
        for (k, bus) in publishers.enumerate() {
            for room in &rooms {
                bus.publish(room, Kind::Text, Bytes::from(format!("node{k}-{i}")))
                    .unwrap();
            }
        }
    }
    let expected = 4 * N as usize * rooms.len();
    let all = until(Duration::from_secs(20), || {
        nodes
            .iter()
            .all(|n| n.log.lock().unwrap().len() >= expected)
    })
    .await;
    for (k, n) in nodes.iter().enumerate() {
        let got = by_room(&n.log);
        for room in &rooms {
            let per = check_order(&got[room]);
            for p in 0..4 {
                assert_eq!(
                    per[&format!("node{p}")].len() as u64,
                    N,
                    "node {k} room {room}"
                );
            }
        }
        let stats = n.bus.stats();
        assert_eq!((stats.lost, stats.duplicates), (0, 0), "node {k}");
    }
    assert!(outsider.log.lock().unwrap().is_empty());
    assert!(all, "not every message arrived");
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_nodes_get_every_message_once_in_order() {
    let server = Server::start(support::Kind::Redis { persistent: false });
    three_nodes(|| Engine::Redis(server.url())).await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_three_nodes_get_every_message_once_in_order() {
    let server = Server::start(support::Kind::Nats);
    three_nodes(|| Engine::Nats(server.url())).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_history_three_nodes_one_order() {
    let server = Server::start(support::Kind::Redis { persistent: false });
    let config = BusConfig {
        history: NonZeroUsize::new(10_000),
        ..BusConfig::default()
    };
    let rooms = vec!["/h".to_owned()];
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(node(Engine::Redis(server.url()), config.clone(), &rooms).await);
    }
    for i in 0..100 {
        for (k, n) in nodes.iter().enumerate() {
            n.bus
                .publish("/h", Kind::Text, Bytes::from(format!("node{k}-{i}")))
                .unwrap();
        }
    }
    assert!(
        until(Duration::from_secs(20), || nodes.iter().all(|n| n
            .log
            .lock()
            .unwrap()
            .len()
            >= 300))
        .await
    );
    // Every node saw the same sequence, offsets 1..=300 of one epoch.
    let first: Vec<Bytes> = nodes[0]
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    for n in &nodes {
        let got: Vec<Bytes> = n
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| p.clone())
            .collect();
        assert_eq!(got, first);
    }
    let epoch = std::str::from_utf8(&first[0])
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    for (i, p) in first.iter().enumerate() {
        let line = std::str::from_utf8(p).unwrap().split('\n').next().unwrap();
        assert_eq!(line, format!("{epoch}:{}", i + 1));
    }
    check_order(&first.iter().map(body).collect::<Vec<_>>());
}

/// One publisher on node A, one more node B; the engine restarts in the middle. Returns
/// (A's log, B's log, A, B).
async fn restart_run(
    server: &mut Server,
    engine: impl Fn() -> Engine,
    config: BusConfig,
    total: u64,
) -> (Node, Node) {
    let rooms = vec!["/r".to_owned()];
    let a = node(engine(), config.clone(), &rooms).await;
    let b = node(engine(), config, &rooms).await;
    let mut refused = 0;
    for i in 1..=total {
        if i == total / 4 {
            // Killed, down for 300 ms, back on the same port; publishing goes on.
            server.restart(Duration::from_millis(300));
        }
        if a.bus
            .publish("/r", Kind::Text, Bytes::from(format!("a-{i}")))
            .is_err()
        {
            refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    assert_eq!(refused, 0, "the queue is large enough for the outage");
    // Reconnected by themselves: the last message reaches B.
    let last = format!("a-{total}");
    assert!(
        until(Duration::from_secs(15), || b
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|(_, p)| body(p) == last))
        .await,
        "B never got the last message: the bus did not reconnect"
    );
    (a, b)
}

/// Without history: A's members get everything (local delivery does not stop), B misses what
/// was published while it was disconnected, and counts exactly that.
async fn plain_restart(mut server: Server, engine: impl Fn() -> Engine, name: &str) {
    let (a, b) = restart_run(&mut server, engine, BusConfig::default(), TOTAL).await;
    let a_got = check_order(&by_room(&a.log)["/r"]);
    assert_eq!(
        a_got["a"],
        (1..=TOTAL).collect::<Vec<_>>(),
        "local delivery stopped"
    );
    let b_got = check_order(&by_room(&b.log)["/r"]);
    let received = b_got["a"].len() as u64;
    let (sa, sb) = (a.bus.stats(), b.bus.stats());
    println!(
        "{name} restart, no history: {TOTAL} published, B received {received}, lost {} (counted {}), gaps A {} B {}",
        TOTAL - received,
        sb.lost,
        sa.gaps,
        sb.gaps
    );
    // Every message B did not get is counted as lost (the last one arrived, so no jump is
    // still unseen), and nothing came twice.
    assert_eq!(sb.lost, TOTAL - received);
    assert_eq!(sb.duplicates, 0);
    assert!(sb.gaps >= 1 && sa.gaps >= 1, "the outage was not reported");
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_without_history_counts_what_was_lost() {
    let server = Server::start(support::Kind::Redis { persistent: false });
    let url = server.url();
    plain_restart(server, || Engine::Redis(url.clone()), "redis").await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_counts_what_was_lost() {
    let server = Server::start(support::Kind::Nats);
    let url = server.url();
    plain_restart(server, || Engine::Nats(url.clone()), "nats").await;
}

/// Messages published by A in the restart runs.
const TOTAL: u64 = 400;

/// A restart run on Redis with history, the server's files kept or not.
#[cfg(feature = "redis")]
async fn history_restart(persistent: bool) -> (Server, Node, Node) {
    let mut server = Server::start(support::Kind::Redis { persistent });
    let url = server.url();
    let config = BusConfig {
        history: NonZeroUsize::new(10_000),
        ..BusConfig::default()
    };
    let (a, b) = restart_run(&mut server, || Engine::Redis(url.clone()), config, TOTAL).await;
    (server, a, b)
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_with_history_loses_nothing() {
    // The history survives the restart (append-only file, fsync per write), so every node
    // fills its gap from it.
    let (_server, a, b) = history_restart(true).await;
    for (name, n) in [("A", &a), ("B", &b)] {
        let got = check_order(&by_room(&n.log)["/r"]);
        let s = n.bus.stats();
        println!(
            "redis restart, history: node {name} received {} of {TOTAL}, {} of them from the history after the gap, duplicates dropped {}, gaps {}, lost {}",
            got["a"].len(),
            s.recovered,
            s.duplicates,
            s.gaps,
            s.lost
        );
        assert_eq!(got["a"], (1..=TOTAL).collect::<Vec<_>>(), "node {name}");
        assert_eq!((s.lost, s.epoch_changes), (0, 0), "node {name}");
        assert!(s.gaps >= 1, "node {name}: the outage was not reported");
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_without_persistence_starts_a_new_epoch() {
    let (_server, a, b) = history_restart(false).await;
    for (name, n) in [("A", &a), ("B", &b)] {
        let log = n.log.lock().unwrap().clone();
        let bodies: Vec<String> = log.iter().map(|(_, p)| body(p)).collect();
        let got = check_order(&bodies);
        let epochs: Vec<&str> = log
            .iter()
            .map(|(_, p)| std::str::from_utf8(p).unwrap().split(':').next().unwrap())
            .collect();
        let mut distinct = epochs.clone();
        distinct.dedup();
        let s = n.bus.stats();
        println!(
            "redis restart without persistence, history: node {name} received {} of {TOTAL}, epochs {}, epoch changes {}, recovered {}, lost {}",
            got["a"].len(),
            distinct.len(),
            s.epoch_changes,
            s.recovered,
            s.lost
        );
        // The history was lost with the server: a new epoch, seen by every node.
        assert_eq!(distinct.len(), 2, "node {name}: {distinct:?}");
        assert!(s.epoch_changes >= 1);
        // Whatever was published after the restart is all there: the new epoch's offsets
        // from 1 without a hole.
        let new_epoch = distinct[1];
        let offsets: Vec<u64> = log
            .iter()
            .filter(|(_, p)| p.starts_with(new_epoch.as_bytes()))
            .map(|(_, p)| {
                let line = std::str::from_utf8(p).unwrap().split('\n').next().unwrap();
                line.split(':').nth(1).unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(offsets, (1..=offsets.len() as u64).collect::<Vec<_>>());
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_recovery_gives_what_was_missed_or_says_it_cannot() {
    let server = Server::start(support::Kind::Redis { persistent: false });
    let config = BusConfig {
        history: NonZeroUsize::new(5),
        ..BusConfig::default()
    };
    let rooms = vec!["/rec".to_owned()];
    let a = node(Engine::Redis(server.url()), config, &rooms).await;
    let start = a._subs[0].ready().await.expect("history on: a position");
    assert_eq!(start.offset, 0);
    for i in 1..=8 {
        a.bus
            .publish("/rec", Kind::Text, Bytes::from(format!("a-{i}")))
            .unwrap();
    }
    assert!(until(Duration::from_secs(5), || a.log.lock().unwrap().len() == 8).await);
    let now = Position {
        epoch: start.epoch.clone(),
        offset: 8,
    };
    // The member's view matches: it is at 8, and joining there succeeds.
    assert_eq!(a._subs[0].join_at(&now, || "joined"), Ok("joined"));
    let stale = Position {
        epoch: start.epoch.clone(),
        offset: 6,
    };
    assert_eq!(a._subs[0].join_at(&stale, || ()), Err(now.clone()));

    let missed = a.bus.recover("/rec", &stale, &now).await.unwrap();
    let bodies: Vec<String> = missed.iter().map(|d| body(&d.payload)).collect();
    assert_eq!(bodies, ["a-7", "a-8"]);
    assert_eq!(missed[1].position, Some(now.clone()));

    // Offsets 4..=8 are kept (the last 5): from 3 on is possible, from 2 is not.
    let from3 = Position {
        epoch: start.epoch.clone(),
        offset: 3,
    };
    assert_eq!(a.bus.recover("/rec", &from3, &now).await.unwrap().len(), 5);
    let from2 = Position {
        epoch: start.epoch.clone(),
        offset: 2,
    };
    assert!(matches!(
        a.bus.recover("/rec", &from2, &now).await,
        Err(RecoverError::Unrecoverable)
    ));
    let other_epoch = Position {
        epoch: "0123abcd".to_owned(),
        offset: 7,
    };
    assert!(matches!(
        a.bus.recover("/rec", &other_epoch, &now).await,
        Err(RecoverError::Unrecoverable)
    ));
}

/// The offset in a positioned delivery's line (`E:N`).
#[cfg(feature = "redis")]
fn offset(payload: &Bytes) -> u64 {
    let text = std::str::from_utf8(payload).expect("text");
    let (line, _) = text.split_once('\n').expect("a position line");
    let (_, n) = line.rsplit_once(':').expect("E:N");
    n.parse().expect("an offset")
}

/// Limits against a real Redis, history on: a publish over the maximum is refused before the
/// engine (nothing stored, nothing delivered); with Redis down the engine queue fills and
/// refuses (counted, bounded); once Redis is back every publish accepted is delivered to every
/// node once and in order, and the refused ones leave no hole in the publisher's stream.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_oversized_refused_before_the_engine_and_the_queue_bounded() {
    use gangway_bus::PublishError;

    const QUEUE: usize = 8;
    let mut server = Server::start(support::Kind::Redis { persistent: true });
    let url = server.url();
    let rooms = ["/lim".to_owned()];
    let config = BusConfig {
        max_message_size: 64,
        queue_capacity: QUEUE,
        history: NonZeroUsize::new(1000),
        ..BusConfig::default()
    };
    let a = node(Engine::Redis(url.clone()), config.clone(), &rooms).await;
    let b = node(Engine::Redis(url.clone()), config, &rooms).await;

    let err = a
        .bus
        .publish("/lim", Kind::Text, Bytes::from("x".repeat(65)))
        .unwrap_err();
    assert_eq!(err, PublishError::TooLarge { size: 65, max: 64 });
    a.bus
        .publish("/lim", Kind::Text, Bytes::from("a-1"))
        .unwrap();
    assert!(until(Duration::from_secs(10), || b.log.lock().unwrap().len() == 1).await);
    {
        let log = b.log.lock().unwrap();
        // The first message the room's history stored: the oversized one never reached it.
        assert_eq!((body(&log[0].1), offset(&log[0].1)), ("a-1".to_owned(), 1));
    }
    assert_eq!(a.bus.stats().refused_too_large, 1);
    assert_eq!(a.bus.stats().published, 1);

    server.kill();
    let mut accepted = vec![1];
    let mut refused = 0u64;
    for i in 2..=2000u64 {
        match a
            .bus
            .publish("/lim", Kind::Text, Bytes::from(format!("a-{i}")))
        {
            Ok(()) => accepted.push(i),
            Err(PublishError::QueueFull) => refused += 1,
            Err(e) => panic!("publish {i}: {e}"),
        }
    }
    // What waits for Redis: the queue, and at most one batch the engine task took from it.
    assert!(
        accepted.len() <= 1 + QUEUE + 256,
        "{} accepted",
        accepted.len()
    );
    assert_eq!(a.bus.stats().dropped_queue_full, refused);
    assert!(refused > 0);
    assert_eq!(a.bus.queued(), QUEUE);

    server.restart(Duration::ZERO);
    // Publishes after the refused ones follow the accepted ones in the publisher's stream.
    let mut expected: Vec<String> = accepted.iter().map(|i| format!("a-{i}")).collect();
    for i in 2001..=2005 {
        let message = format!("a-{i}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = a
            .bus
            .publish("/lim", Kind::Text, Bytes::from(message.clone()))
        {
            assert_eq!(e, PublishError::QueueFull);
            assert!(Instant::now() < deadline, "the queue never drained");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        expected.push(message);
    }
    let all = until(Duration::from_secs(20), || {
        [&a, &b]
            .iter()
            .all(|n| n.log.lock().unwrap().len() >= expected.len())
    })
    .await;
    for (name, n) in [("A", &a), ("B", &b)] {
        let log = n.log.lock().unwrap();
        let bodies: Vec<String> = log.iter().map(|(_, p)| body(p)).collect();
        let offsets: Vec<u64> = log.iter().map(|(_, p)| offset(p)).collect();
        assert_eq!(bodies, expected, "node {name}");
        assert_eq!(
            offsets,
            (1..=expected.len() as u64).collect::<Vec<_>>(),
            "node {name}"
        );
        assert_eq!(n.bus.stats().lost, 0, "node {name}");
    }
    assert!(all);
    println!(
        "redis limits: 1 oversized refused before the engine; Redis down: {} accepted, {refused} refused (queue {QUEUE}); after the restart, with 5 more, all {} delivered once, in order, to both nodes",
        accepted.len() - 1,
        expected.len()
    );
}

/// Redis's own count of subscribers to a room's channel (`PUBSUB NUMSUB`).
#[cfg(feature = "redis")]
async fn redis_subscribers(url: &str, room: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (_, n): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("gangway:room:{room}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    n
}

/// The engine server's own count of subscriptions to a room: Redis's subscribers to its
/// channel, NATS's subscriptions to its subject.
async fn engine_subscriptions(server: &Server, room: &str) -> u64 {
    #[cfg(feature = "redis")]
    if server.url().starts_with("redis:") {
        return redis_subscribers(&server.url(), room).await;
    }
    server.nats_subscriptions(&format!("gangway.room.{room}"))
}

/// Wait (bounded) until the engine server counts `n` subscriptions to the room.
async fn subscriptions_become(server: &Server, room: &str, n: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if engine_subscriptions(server, room).await == n {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counted by the engine server itself: one subscription per room and node, made when the first
/// local member joins and dropped when the last leaves, whatever the number of members.
async fn one_subscription_per_room_and_node(server: &Server, engine: impl Fn() -> Engine) {
    let a = node(engine(), BusConfig::default(), &[]).await;
    let b = node(engine(), BusConfig::default(), &[]).await;
    assert_eq!(engine_subscriptions(server, "/sub").await, 0);
    let on_a: Vec<Subscription> = (0..50).map(|_| a.bus.subscribe("/sub")).collect();
    for s in &on_a {
        s.ready().await;
    }
    assert!(
        subscriptions_become(server, "/sub", 1).await,
        "one subscription for 50 members of node A"
    );
    let on_b: Vec<Subscription> = (0..50).map(|_| b.bus.subscribe("/sub")).collect();
    for s in &on_b {
        s.ready().await;
    }
    assert!(
        subscriptions_become(server, "/sub", 2).await,
        "one more for node B's"
    );
    // Another room is a subscription of its own.
    let other = a.bus.subscribe("/other");
    other.ready().await;
    assert!(subscriptions_become(server, "/other", 1).await);
    assert_eq!(engine_subscriptions(server, "/sub").await, 2);
    let mut on_a = on_a;
    on_a.truncate(1);
    drop(on_b);
    assert!(
        subscriptions_become(server, "/sub", 1).await,
        "node B's last member left; node A has one"
    );
    drop(on_a);
    drop(other);
    assert!(
        subscriptions_become(server, "/sub", 0).await,
        "no member left"
    );
    assert!(subscriptions_become(server, "/other", 0).await);
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_one_subscription_per_room_and_node() {
    let server = Server::start(support::Kind::Nats);
    one_subscription_per_room_and_node(&server, || Engine::Nats(server.url())).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_one_subscription_per_room_and_node() {
    let server = Server::start(support::Kind::Redis { persistent: false });
    one_subscription_per_room_and_node(&server, || Engine::Redis(server.url())).await;
}
