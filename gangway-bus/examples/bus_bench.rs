//! Throughput and engine-hop latency of the bus, three nodes in one process, each with its own
//! engine connections, against Debian's redis-server and nats-server started on free loopback
//! ports (and the in-process engine as the no-hop baseline).
//!
//! `cargo run --release -p gangway-bus --all-features --example bus_bench [-- MESSAGES]`
//!
//! - throughput: every node subscribed to 10 rooms; the three nodes publish MESSAGES messages
//!   each, round robin over the rooms, as fast as the bounded queue takes them; figure: node
//!   deliveries per second (each message delivered once on each of the three nodes).
//! - latency: node A publishes 2,000 messages, one every 250 µs, stamped with the time; node B
//!   records how long each took to arrive; p50/p99.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gangway_bus::{Bus, BusConfig, Engine, Kind, MemoryEngine};

const ROOMS: usize = 10;
const NODES: usize = 3;

async fn throughput(engine: &dyn Fn() -> Engine, config: &BusConfig, size: usize, n: u64) -> f64 {
    let delivered = Arc::new(AtomicU64::new(0));
    let mut nodes = Vec::new();
    let rooms: Vec<String> = (0..ROOMS).map(|i| format!("/bench{i}")).collect();
    for _ in 0..NODES {
        let count = delivered.clone();
        let bus = Bus::connect(engine(), config.clone(), move |_, _| {
            count.fetch_add(1, Relaxed);
        })
        .await
        .expect("connect");
        let subs: Vec<_> = rooms.iter().map(|r| bus.subscribe(r)).collect();
        for s in &subs {
            s.ready().await;
        }
        nodes.push((bus, subs));
    }
    let payload = Bytes::from(vec![b'x'; size]);
    let expected = n * (NODES * NODES) as u64;
    let start = Instant::now();
    let publishers: Vec<_> = nodes
        .iter()
        .map(|(bus, _)| {
            let bus = bus.clone();
            let payload = payload.clone();
            let rooms = rooms.clone();
            tokio::spawn(async move {
                for i in 0..n {
                    let room = &rooms[i as usize % ROOMS];
                    // Wait rather than have a publish refused (without history a refused
                    // publish has reached the local members already: no retry).
                    while bus.queued() + 1 >= bus.config().queue_capacity {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    bus.publish(room, Kind::Binary, payload.clone())
                        .expect("publish");
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered.load(Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let got = delivered.load(Relaxed);
    assert_eq!(got, expected, "not every message was delivered");
    got as f64 / start.elapsed().as_secs_f64()
}

async fn latency(engine: &dyn Fn() -> Engine, config: &BusConfig, size: usize) -> (f64, f64) {
    let base = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let a = Bus::connect(engine(), config.clone(), |_, _| {})
        .await
        .unwrap();
    let record = samples.clone();
    let b = Bus::connect(engine(), config.clone(), move |_, d| {
        // With history, the position line comes first.
        let body = match d.payload.iter().position(|&c| c == b'\n') {
            Some(i) if d.position.is_some() => d.payload.slice(i + 1..),
            _ => d.payload,
        };
        let sent = u64::from_be_bytes(body[..8].try_into().unwrap());
        let now = base.elapsed().as_nanos() as u64;
        record.lock().unwrap().push(now - sent);
    })
    .await
    .unwrap();
    let (sa, sb) = (a.subscribe("/lat"), b.subscribe("/lat"));
    sa.ready().await;
    sb.ready().await;
    let mut tick = tokio::time::interval(Duration::from_micros(250));
    for _ in 0..2000 {
        tick.tick().await;
        let mut p = vec![0; size.max(8)];
        p[..8].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
        a.publish("/lat", Kind::Binary, Bytes::from(p)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut s = samples.lock().unwrap().clone();
    assert_eq!(s.len(), 2000, "latency messages lost");
    s.sort_unstable();
    let pct = |q: f64| s[((s.len() as f64 * q) as usize).min(s.len() - 1)] as f64 / 1000.0;
    (pct(0.50), pct(0.99))
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(20_000, |a| a.parse().expect("MESSAGES"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = support::Server::start(support::Kind::Redis { persistent: false });
    let nats = support::Server::start(support::Kind::Nats);
    let memory = MemoryEngine::default();
    let plain = BusConfig::default();
    let history = BusConfig {
        history: std::num::NonZeroUsize::new(1000),
        ..BusConfig::default()
    };
    let (redis_url, nats_url) = (redis.url(), nats.url());
    type Run<'a> = (&'a str, Box<dyn Fn() -> Engine + 'a>, &'a BusConfig);
    let runs: Vec<Run> = vec![
        (
            "in-process (no hop)",
            Box::new(|| Engine::Memory(memory.clone())),
            &plain,
        ),
        (
            "redis pub/sub",
            Box::new(|| Engine::Redis(redis_url.clone())),
            &plain,
        ),
        (
            "redis + history",
            Box::new(|| Engine::Redis(redis_url.clone())),
            &history,
        ),
        ("nats", Box::new(|| Engine::Nats(nats_url.clone())), &plain),
    ];
    println!(
        "bus: {NODES} nodes, {ROOMS} rooms, {n} messages published per node; latency: 2,000 messages, one per 250 µs"
    );
    println!(
        "{:<22} {:>6} {:>16} {:>12} {:>12}",
        "engine", "size", "deliveries/s", "p50 µs", "p99 µs"
    );
    for (name, engine, config) in &runs {
        for size in [20, 1024] {
            let rate = rt.block_on(throughput(&**engine, config, size, n));
            let (p50, p99) = rt.block_on(latency(&**engine, config, size));
            println!("{name:<22} {size:>6} {rate:>16.0} {p50:>12.1} {p99:>12.1}");
        }
    }
}
