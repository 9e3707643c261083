//! Rooms on loopback: 1,000 members over real TCP connections, on a multi-thread runtime (rooms
//! span its threads), each a client built with gangway's own `connect`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gangway::hub::{Hub, HubConfig};
use gangway::Message;
use tokio::net::TcpListener;

const MEMBERS: usize = 1000;

/// Bound on every wait.
const STEP: Duration = Duration::from_secs(60);

/// 1,000 members mean 2,000 sockets in this process (both ends): raise the soft limit on open
/// files to the hard one if it is lower (1,024 is a common default).
#[cfg(unix)]
#[allow(unsafe_code)]
fn raise_open_files(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes the limits into the struct it is given, which lives here.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    if limit.rlim_cur >= needed {
        return;
    }
    assert!(
        limit.rlim_max >= needed,
        "need {needed} open files, the hard limit is {}",
        limit.rlim_max
    );
    limit.rlim_cur = needed;
    // SAFETY: `setrlimit` reads the struct it is given, which lives here.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

#[cfg(not(unix))]
fn raise_open_files(_needed: u64) {}

/// A server on a free port: every connection becomes a member of `room` and publishes there
/// whatever its client sends. Returns the URL.
async fn relay_server(hub: Hub) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/room", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let hub = hub.clone();
            tokio::spawn(async move {
                let Ok(ws) = gangway::accept(tcp).await else {
                    return;
                };
                let mut member = hub.member(ws);
                member.join("room");
                while let Some(Ok(message)) = member.next().await {
                    member.publish("room", &message).unwrap();
                }
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_members_on_loopback_each_get_every_message_once_in_order() {
    raise_open_files(2 * MEMBERS as u64 + 256);
    let hub = Hub::new(HubConfig::default());
    let url = relay_server(hub.clone()).await;
    let mut clients = Vec::new();
    for _ in 0..MEMBERS {
        let (ws, _) = tokio::time::timeout(STEP, gangway::connect(&url))
            .await
            .expect("connected in time")
            .expect("connected");
        clients.push(ws);
    }
    // Every member has joined before anyone sends.
    tokio::time::timeout(STEP, async {
        while hub.members("room") < MEMBERS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every connection joined");

    // Every client sends one message; the first ten send four more. Each client receives them
    // all, checks each sender's order, and hashes the order it saw: one log for the room means
    // one order for everyone.
    let extra = 4;
    let total = MEMBERS + 10 * extra;
    let mut tasks = Vec::new();
    for (i, mut ws) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let sends = if i < 10 { 1 + extra } else { 1 };
            for seq in 0..sends {
                ws.send(Message::text(format!("{i}:{seq}"))).await.unwrap();
            }
            let mut next = vec![0u32; MEMBERS];
            let mut order: u64 = 0xcbf2_9ce4_8422_2325;
            for _ in 0..total {
                let message = tokio::time::timeout(STEP, ws.next())
                    .await
                    .expect("a message in time")
                    .expect("the stream goes on")
                    .expect("no error");
                let Message::Text(text) = message else {
                    panic!("{message:?}")
                };
                let (sender, seq) = text.split_once(':').unwrap();
                let (sender, seq): (usize, u32) = (sender.parse().unwrap(), seq.parse().unwrap());
                assert_eq!(seq, next[sender], "client {i}: from {sender} out of order");
                next[sender] += 1;
                for b in text.bytes() {
                    order = (order ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
            }
            // Nothing more arrives.
            let more = tokio::time::timeout(Duration::from_millis(100), ws.next()).await;
            assert!(more.is_err(), "client {i}: {more:?}");
            ws.close(gangway::CloseCode::NORMAL, "").await.unwrap();
            order
        }));
    }
    let mut orders = Vec::new();
    for task in tasks {
        orders.push(task.await.unwrap());
    }
    assert!(
        orders.iter().all(|&o| o == orders[0]),
        "members saw different orders"
    );
    let stats = hub.stats();
    assert_eq!(stats.published, total as u64);
    assert_eq!(stats.dropped, 0);
    // Every member left as its connection closed.
    tokio::time::timeout(STEP, async {
        while hub.stats().members > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every member left");
    assert_eq!(hub.stats().rooms, 0);
}
