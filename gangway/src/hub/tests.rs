//! The hub in memory: members over in-memory transports (`tokio::io::duplex`), clients on the
//! other end reading as any client would.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gangway_proto::{Config, Connection, Role};
use tokio::io::DuplexStream;
use tokio::task::JoinHandle;

use super::*;
use crate::{Error, WebSocket};

/// Bound on every wait of these tests.
const STEP: Duration = Duration::from_secs(10);

/// A member of `hub` (in no room yet) and the client at the other end, over a transport that
/// buffers `buffer` bytes each way.
fn pair_with(hub: &Hub, buffer: usize) -> (Member<DuplexStream>, WebSocket<DuplexStream>) {
    let (server, client) = tokio::io::duplex(buffer);
    let server = WebSocket::from_parts(
        server,
        Connection::new(Role::Server, Config::default()),
        None,
        &[],
    );
    let client = WebSocket::from_parts(
        client,
        Connection::new(Role::Client, Config::default()),
        None,
        &[],
    );
    (hub.member(server), client)
}

fn pair(hub: &Hub) -> (Member<DuplexStream>, WebSocket<DuplexStream>) {
    pair_with(hub, 64 << 10)
}

/// Poll `member` until its stream ends: what a server's task does for a member that only
/// receives. Returns how it ended.
fn run(mut member: Member<DuplexStream>) -> JoinHandle<(Member<DuplexStream>, Option<Error>)> {
    tokio::spawn(async move {
        while let Some(item) = member.next().await {
            if let Err(e) = item {
                return (member, Some(e));
            }
        }
        (member, None)
    })
}

/// Poll `member`, publishing to `room` every message its client sends (to the others only, with
/// `not_self`).
fn relay(mut member: Member<DuplexStream>, room: &'static str, not_self: bool) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Ok(message)) = member.next().await {
            let published = if not_self {
                member.publish_to_others(room, &message)
            } else {
                member.publish(room, &message)
            };
            published.expect("a data message within the limits");
        }
    })
}

/// The next `n` messages `client` receives, as text.
async fn receive(client: &mut WebSocket<DuplexStream>, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let message = tokio::time::timeout(STEP, client.next())
            .await
            .expect("a message in time")
            .expect("the stream goes on")
            .expect("no error");
        match message {
            Message::Text(text) => got.push(text.to_string()),
            Message::Binary(data) => got.push(format!("binary {}", data.len())),
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

/// Whether `client` receives nothing more for a while.
async fn quiet(client: &mut WebSocket<DuplexStream>) -> bool {
    tokio::time::timeout(Duration::from_millis(100), client.next())
        .await
        .is_err()
}

fn text(s: &str) -> Message {
    Message::text(s.to_owned())
}

#[tokio::test]
async fn every_member_of_a_room_receives_what_is_published_to_it() {
    let hub = Hub::default();
    let mut clients = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (mut member, client) = pair(&hub);
        assert!(member.join("lobby"));
        assert!(!member.join("lobby"), "joined once");
        tasks.push(run(member));
        clients.push(client);
    }
    let (mut outsider, mut outside) = pair(&hub);
    outsider.join("elsewhere");
    let outsider = run(outsider);
    assert_eq!(hub.members("lobby"), 3);
    assert_eq!(hub.publish("lobby", &text("one")), Ok(3));
    assert_eq!(hub.publish("lobby", &Message::binary(vec![7; 300])), Ok(3));
    assert_eq!(hub.publish("nobody", &text("lost")), Ok(0));
    for client in &mut clients {
        assert_eq!(receive(client, 2).await, ["one", "binary 300"]);
    }
    assert!(quiet(&mut outside).await, "not in the room");
    let stats = hub.stats();
    assert_eq!((stats.rooms, stats.members, stats.published), (2, 4, 2));
    for task in tasks {
        task.abort();
    }
    outsider.abort();
}

#[tokio::test]
async fn members_relay_to_each_other_in_one_order_and_can_leave_themselves_out() {
    let hub = Hub::default();
    let mut clients = Vec::new();
    for i in 0..4 {
        let (mut member, client) = pair(&hub);
        member.join("chat");
        // Members 0 and 1 publish to everyone, 2 and 3 to the others only.
        relay(member, "chat", i >= 2);
        clients.push(client);
    }
    // Every client sends 25 messages, all at once.
    for round in 0..25 {
        for (i, client) in clients.iter_mut().enumerate() {
            client.feed(text(&format!("{i}:{round}"))).await.unwrap();
        }
    }
    for client in &mut clients {
        client.flush().await.unwrap();
    }
    let mut orders = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let expected = if i >= 2 { 75 } else { 100 };
        let got = receive(client, expected).await;
        assert!(quiet(client).await, "client {i} got more than {expected}");
        // Each sender's messages in the order sent; never its own when it left itself out.
        for sender in 0..4 {
            let from: Vec<&String> = got
                .iter()
                .filter(|m| m.starts_with(&format!("{sender}:")))
                .collect();
            let sent: Vec<String> = (0..25).map(|r| format!("{sender}:{r}")).collect();
            if sender == i && i >= 2 {
                assert!(from.is_empty(), "client {i} got its own messages back");
            } else {
                assert_eq!(from, sent.iter().collect::<Vec<_>>(), "client {i}");
            }
        }
        orders.push(got);
    }
    // One log for the room: everyone sees the messages in the same order (less their own).
    let everything = &orders[0];
    for (i, got) in orders.iter().enumerate().skip(2) {
        let expected: Vec<&String> = everything
            .iter()
            .filter(|m| !m.starts_with(&format!("{i}:")))
            .collect();
        assert_eq!(got.iter().collect::<Vec<_>>(), expected);
    }
    assert_eq!(orders[0], orders[1]);
}

#[tokio::test]
async fn a_member_gets_what_is_published_after_it_joined_and_before_it_left() {
    let hub = Hub::default();
    let (mut early, mut early_client) = pair(&hub);
    early.join("r");
    let early = run(early);
    hub.publish("r", &text("before")).unwrap();
    let (mut late, mut late_client) = pair(&hub);
    late.join("r");
    hub.publish("r", &text("after")).unwrap();
    assert_eq!(receive(&mut early_client, 2).await, ["before", "after"]);
    // The first message was published (and maybe still in the open batch) before it joined.
    let late = run(late);
    assert_eq!(receive(&mut late_client, 1).await, ["after"]);
    late.abort();
    assert!(late.await.unwrap_err().is_cancelled());
    // The aborted task dropped its member, which left the room.
    assert_eq!(hub.members("r"), 1);
    let (mut member, _client) = pair(&hub);
    member.join("r");
    assert_eq!(hub.members("r"), 2);
    assert!(member.leave("r"));
    assert!(!member.leave("r"));
    assert_eq!(hub.members("r"), 1);
    early.abort();
    let _ = early.await;
    assert_eq!(hub.members("r"), 0);
    assert_eq!(hub.stats().rooms, 0, "an empty room goes");
    assert_eq!(hub.publish("r", &text("nobody")), Ok(0));
}

#[tokio::test]
async fn a_member_in_two_rooms_receives_both() {
    let hub = Hub::default();
    let (mut member, mut client) = pair(&hub);
    member.join("a");
    member.join("b");
    assert_eq!(member.rooms().collect::<Vec<_>>(), ["a", "b"]);
    let task = run(member);
    hub.publish("a", &text("to a")).unwrap();
    hub.publish("b", &text("to b")).unwrap();
    let mut got = receive(&mut client, 2).await;
    got.sort();
    assert_eq!(got, ["to a", "to b"]);
    task.abort();
}

#[tokio::test]
async fn only_data_messages_within_the_limit_are_published() {
    let hub = Hub::new(HubConfig {
        max_queued_bytes: 1000,
        ..HubConfig::default()
    });
    let (mut member, _client) = pair(&hub);
    member.join("r");
    assert_eq!(
        hub.publish("r", &Message::Ping(vec![1].into())),
        Err(PublishError::NotData)
    );
    assert_eq!(
        hub.publish("r", &Message::binary(vec![0; 991])),
        Err(PublishError::TooLarge {
            len: 1001,
            max: 1000
        })
    );
    assert_eq!(hub.publish("r", &Message::binary(vec![0; 990])), Ok(1));
    assert_eq!(hub.stats().published, 1);
}

#[tokio::test]
async fn the_member_sends_its_own_messages_and_the_rooms_in_one_stream() {
    let hub = Hub::default();
    let (mut member, mut client) = pair(&hub);
    member.join("r");
    hub.publish("r", &text("from the room")).unwrap();
    member.send(text("direct")).await.unwrap();
    let task = run(member);
    let mut got = receive(&mut client, 2).await;
    got.sort();
    assert_eq!(got, ["direct", "from the room"]);
    task.abort();
}

/// A member whose client reads nothing, behind a transport that takes `buffer` bytes, and one
/// that reads everything; `hub` publishes `count` messages of `size` bytes. Returns the stalled
/// member's task, its client, and the reader's task.
async fn one_stalled(
    hub: &Hub,
    buffer: usize,
    count: usize,
    size: usize,
) -> (
    JoinHandle<(Member<DuplexStream>, Option<Error>)>,
    WebSocket<DuplexStream>,
    JoinHandle<(Member<DuplexStream>, Option<Error>)>,
) {
    let (mut stalled, stalled_client) = pair_with(hub, buffer);
    stalled.join("feed");
    let stalled = run(stalled);
    let (mut reader, mut client) = pair(hub);
    reader.join("feed");
    let reader = run(reader);
    for i in 0..count {
        let mut payload = vec![b'x'; size];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        hub.publish("feed", &Message::binary(payload)).unwrap();
        // The others are never held up: the reader gets each message before the next is
        // published, however far behind the stalled one is.
        let message = tokio::time::timeout(STEP, client.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Message::Binary(data) = message else {
            panic!("{message:?}")
        };
        assert_eq!(data[..8], (i as u64).to_be_bytes());
        // The queue of the room never holds more than the limit.
        let queued = hub.queued("feed").unwrap();
        assert!(
            queued.bytes <= hub.config().max_queued_bytes
                && queued.messages <= hub.config().max_queued_messages,
            "{queued:?}"
        );
    }
    (stalled, stalled_client, reader)
}

#[tokio::test]
async fn a_member_that_stops_reading_loses_its_oldest_messages_and_the_others_nothing() {
    let hub = Hub::new(HubConfig {
        max_queued_bytes: 64 << 10,
        max_queued_messages: 100,
        when_full: WhenFull::Drop,
    });
    // 2,000 messages of 1 KiB: 2 MB, through a transport that holds 16 KiB.
    let (stalled, mut stalled_client, reader) = one_stalled(&hub, 16 << 10, 2000, 1024).await;
    let dropped = hub.stats().dropped;
    assert!(dropped > 1700, "dropped {dropped}");
    // What it did not lose is still there, in order: what its transport held, then the last
    // messages of the room.
    let mut got = Vec::new();
    while let Ok(Some(Ok(Message::Binary(data)))) =
        tokio::time::timeout(Duration::from_millis(200), stalled_client.next()).await
    {
        got.push(u64::from_be_bytes(data[..8].try_into().unwrap()));
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    assert_eq!(got.last(), Some(&1999), "the latest message arrives");
    assert_eq!(
        got.len() as u64 + dropped,
        2000,
        "each message received or dropped"
    );
    stalled.abort();
    reader.abort();
}

#[tokio::test(start_paused = true)]
async fn a_member_that_stops_reading_is_closed_with_the_policy_code() {
    let hub = Hub::new(HubConfig {
        max_queued_bytes: 64 << 10,
        max_queued_messages: 100,
        when_full: WhenFull::Close(CloseCode::TRY_AGAIN_LATER),
    });
    // A second member whose client never reads again.
    let (mut gone, _gone_client) = pair_with(&hub, 16 << 10);
    gone.join("feed");
    let gone = run(gone);
    let (stalled, mut stalled_client, reader) = one_stalled(&hub, 16 << 10, 500, 1024).await;
    assert_eq!(hub.stats().closed, 2);
    // Both left the room at once (the reader is still in it).
    assert_eq!(hub.members("feed"), 1);
    reader.abort();
    // The client that reads at last gets what was written before the close frame, then the
    // close frame with the policy's code; its answer ends the server's side cleanly.
    let mut messages = 0;
    loop {
        match stalled_client.next().await {
            Some(Ok(Message::Binary(_))) => messages += 1,
            None => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(messages > 0);
    let close = stalled_client
        .close_frame()
        .cloned()
        .flatten()
        .expect("a close frame");
    assert_eq!(close.code, CloseCode::TRY_AGAIN_LATER);
    let (_, ended) = stalled.await.unwrap();
    assert!(ended.is_none(), "{ended:?}");
    // The other never gets the close frame: its connection ends at the close timeout.
    let (_, ended) = tokio::time::timeout(Duration::from_secs(30), gone)
        .await
        .expect("the connection ends")
        .unwrap();
    assert!(matches!(ended, Some(Error::Timeout)), "{ended:?}");
}

#[tokio::test]
async fn a_member_sending_a_fragmented_message_gets_deliveries_after_its_end() {
    let hub = Hub::default();
    let (mut member, mut client) = pair(&hub);
    member.join("r");
    let fragment = |data: &'static str, fin| {
        Message::Fragment(crate::Fragment {
            kind: DataKind::Text,
            data: data.into(),
            fin,
        })
    };
    member.send(fragment("frag", false)).await.unwrap();
    hub.publish("r", &text("published")).unwrap();
    // Polled while the fragmented message is open: nothing may go between its frames.
    let pending = tokio::time::timeout(Duration::from_millis(50), member.next()).await;
    assert!(pending.is_err());
    member.send(fragment("ment", true)).await.unwrap();
    hub.publish("r", &text("next")).unwrap();
    let task = run(member);
    assert_eq!(
        receive(&mut client, 3).await,
        ["fragment", "published", "next"]
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rooms_span_the_threads_of_a_runtime() {
    let hub = Hub::default();
    let mut clients = Vec::new();
    for _ in 0..40 {
        let (mut member, client) = pair(&hub);
        member.join("everyone");
        relay(member, "everyone", false);
        clients.push(client);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(text(&i.to_string())).await.unwrap();
    }
    let mut first: Option<Vec<String>> = None;
    for client in &mut clients {
        let got = receive(client, 40).await;
        let mut sorted = got.clone();
        sorted.sort_by_key(|s| s.parse::<u32>().unwrap());
        assert_eq!(sorted, (0..40).map(|i| i.to_string()).collect::<Vec<_>>());
        // One order for all.
        match &first {
            Some(order) => assert_eq!(&got, order),
            None => first = Some(got),
        }
    }
}

/// A bus that records what the hub tells it; `ordered` as asked; refuses everything once
/// `refuse` is set.
#[derive(Default)]
struct Recorder {
    ordered: bool,
    refuse: std::sync::atomic::AtomicBool,
    calls: Mutex<Vec<String>>,
}

impl Bus for Recorder {
    fn subscribe(&self, room: &str) {
        self.calls.lock().unwrap().push(format!("subscribe {room}"));
    }

    fn unsubscribe(&self, room: &str) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("unsubscribe {room}"));
    }

    fn publish(&self, room: &str, kind: DataKind, payload: &[u8]) -> Result<(), BusRefused> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err(BusRefused);
        }
        let payload = String::from_utf8_lossy(payload);
        self.calls
            .lock()
            .unwrap()
            .push(format!("publish {room} {kind:?} {payload}"));
        Ok(())
    }

    fn ordered(&self) -> bool {
        self.ordered
    }
}

#[tokio::test]
async fn a_bus_hears_of_rooms_coming_and_going_and_of_every_publish() {
    let bus = Arc::new(Recorder::default());
    let hub = Hub::with_bus(HubConfig::default(), bus.clone());
    let (mut a, mut client_a) = pair(&hub);
    let (mut b, _client_b) = pair(&hub);
    a.join("r");
    b.join("r");
    let a = run(a);
    assert_eq!(hub.publish("r", &text("here and there")), Ok(2));
    // Local delivery does not wait for the bus.
    assert_eq!(receive(&mut client_a, 1).await, ["here and there"]);
    // Another process's message: to the members here, never back to the bus.
    assert_eq!(hub.publish_local("r", &text("from afar")), Ok(2));
    assert_eq!(receive(&mut client_a, 1).await, ["from afar"]);
    // A refusal costs the other processes the message, not the members here.
    bus.refuse.store(true, Ordering::Relaxed);
    assert_eq!(hub.publish("r", &text("local only")), Ok(2));
    assert_eq!(receive(&mut client_a, 1).await, ["local only"]);
    a.abort();
    drop(b);
    let _ = a.await;
    assert_eq!(
        *bus.calls.lock().unwrap(),
        [
            "subscribe r",
            "publish r Text here and there",
            "unsubscribe r"
        ]
    );
}

#[tokio::test]
async fn an_ordered_bus_delivers_this_process_messages_itself() {
    let bus = Arc::new(Recorder {
        ordered: true,
        ..Recorder::default()
    });
    let hub = Hub::with_bus(HubConfig::default(), bus.clone());
    let (mut member, mut client) = pair(&hub);
    member.join("r");
    assert_eq!(member.publish("r", &text("mine")), Ok(1));
    assert_eq!(
        member.publish_to_others("r", &text("not mine")),
        Err(PublishError::OthersOnlyUnordered)
    );
    let member = run(member);
    assert_eq!(hub.publish("r", &text("yours")), Ok(1));
    // Nothing is delivered here until the bus gives the messages back, in its order.
    assert!(
        quiet(&mut client).await,
        "delivered before the bus ordered it"
    );
    assert_eq!(hub.publish_local("r", &text("1:yours")), Ok(1));
    assert_eq!(hub.publish_local("r", &text("2:mine")), Ok(1));
    assert_eq!(receive(&mut client, 2).await, ["1:yours", "2:mine"]);
    // Refused by an ordered bus: nobody receives it, and the publisher is told.
    bus.refuse.store(true, Ordering::Relaxed);
    assert_eq!(hub.publish("r", &text("lost")), Err(PublishError::Refused));
    assert!(quiet(&mut client).await);
    assert_eq!(
        *bus.calls.lock().unwrap(),
        ["subscribe r", "publish r Text mine", "publish r Text yours"]
    );
    member.abort();
}

/// Rooms whose members negotiated permessage-deflate differently: each gets the frames of its
/// encoding, compressed once per distinct compression.
#[cfg(feature = "deflate")]
mod deflate {
    use gangway_proto::extensions::permessage_deflate::{
        Decompressor, DeflateConfig, DeflateParams, StatelessCompression,
    };
    use gangway_proto::frame::{FrameHeader, OpCode};
    use gangway_proto::handshake::Negotiated;
    use tokio::io::AsyncReadExt as _;

    use super::*;

    /// RSV1, "Per-Message Compressed" (RFC 7692 §6).
    const RSV1: u8 = 0b100;

    /// What members negotiate: nothing, or permessage-deflate with these parameters.
    #[derive(Clone, Copy, Debug)]
    enum Agreed {
        Plain,
        Deflate(DeflateParams),
    }

    /// The server compresses each message on its own with a 2^`bits` window (a browser's
    /// offer answered in serve's `window` mode has 15).
    fn no_takeover(bits: u8) -> Agreed {
        Agreed::Deflate(DeflateParams {
            server_no_context_takeover: true,
            server_max_window_bits: bits,
            client_max_window_bits: 12,
            ..DeflateParams::default()
        })
    }

    /// The server keeps its context between messages (serve's `dedicated` mode).
    fn takeover() -> Agreed {
        Agreed::Deflate(DeflateParams::default())
    }

    fn connection(role: Role, agreed: Agreed) -> Connection {
        let negotiated = Negotiated {
            permessage_deflate: match agreed {
                Agreed::Plain => None,
                Agreed::Deflate(params) => Some(params),
            },
            ..Negotiated::default()
        };
        let mut config = Config::default();
        config.deflate = DeflateConfig::default();
        Connection::from_negotiated(role, config, &negotiated)
    }

    /// A member that agreed on `agreed` (in no room yet), and the raw transport of its client.
    fn raw_member(hub: &Hub, agreed: Agreed) -> (Member<DuplexStream>, DuplexStream) {
        let (server, client) = tokio::io::duplex(1 << 20);
        let server = WebSocket::from_parts(server, connection(Role::Server, agreed), None, &[]);
        (hub.member(server), client)
    }

    /// A member that agreed on `agreed` and its client, a WebSocket that agreed on the same.
    fn ws_member(hub: &Hub, agreed: Agreed) -> (Member<DuplexStream>, WebSocket<DuplexStream>) {
        let (server, client) = tokio::io::duplex(1 << 20);
        let server = WebSocket::from_parts(server, connection(Role::Server, agreed), None, &[]);
        let client = WebSocket::from_parts(client, connection(Role::Client, agreed), None, &[]);
        (hub.member(server), client)
    }

    /// One frame as a client reads it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct RawFrame {
        rsv: u8,
        opcode: OpCode,
        payload: Vec<u8>,
    }

    /// The next `n` frames on `io`: whole, unmasked, single-frame messages (what the hub sends).
    async fn raw_frames(io: &mut DuplexStream, n: usize) -> Vec<RawFrame> {
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        while frames.len() < n {
            match FrameHeader::decode(&buf).expect("a valid header") {
                Some((header, len)) if buf.len() >= len + header.payload_len as usize => {
                    assert!(header.fin && header.mask.is_none(), "{header:?}");
                    let end = len + header.payload_len as usize;
                    frames.push(RawFrame {
                        rsv: header.rsv,
                        opcode: header.opcode,
                        payload: buf[len..end].to_vec(),
                    });
                    buf.drain(..end);
                }
                _ => {
                    let mut chunk = [0u8; 4096];
                    let read = tokio::time::timeout(STEP, io.read(&mut chunk))
                        .await
                        .expect("frames in time")
                        .unwrap();
                    assert!(read > 0, "the connection ended");
                    buf.extend_from_slice(&chunk[..read]);
                }
            }
        }
        assert!(buf.is_empty(), "nothing more than whole frames");
        frames
    }

    /// A compressed payload inflated (RFC 7692 §7.2.2), as a client of a server with a
    /// 2^`bits` window and no context takeover does it.
    fn inflate(payload: &[u8], bits: u8) -> Vec<u8> {
        let mut d = Decompressor::new(bits, true);
        let mut out = Vec::new();
        d.decompress(payload, &mut out, 1 << 20)
            .expect("deflate data");
        d.finish(&mut out, 1 << 20).expect("deflate data");
        out
    }

    /// A JSON-like text of about `len` bytes (compresses well).
    fn json(len: usize) -> String {
        let mut s = String::from("[");
        let mut i = 0;
        while s.len() < len {
            s.push_str(&format!(
                r#"{{"id":{i},"user":"member-{}","text":"hello"}},"#,
                i % 7
            ));
            i += 1;
        }
        s.truncate(len);
        s
    }

    /// Bytes that do not compress (an xorshift sequence).
    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The frame a plain member gets for `payload`: its header and the payload as it is.
    fn plain_len(payload: usize) -> usize {
        payload + if payload < 126 { 2 } else { 4 }
    }

    #[tokio::test]
    async fn members_with_and_without_deflate_in_one_room_each_get_their_encoding() {
        let hub = Hub::default();
        // Members of four encodings: plain (no deflate, and deflate with context takeover),
        // no context takeover with a 15-bit window (three of them), and with a 10-bit window.
        let agreements = [
            ("plain", Agreed::Plain),
            ("takeover", takeover()),
            ("window 15", no_takeover(15)),
            ("window 15", no_takeover(15)),
            ("window 15", no_takeover(15)),
            ("window 10", no_takeover(10)),
        ];
        let mut members = Vec::new();
        let mut clients = Vec::new();
        for (name, agreed) in agreements {
            let (mut member, client) = raw_member(&hub, agreed);
            member.join("mixed");
            members.push(member);
            clients.push((name, agreed, client));
        }
        let long_text = json(1024);
        let long_binary = json(2000).into_bytes();
        let random = noise(1500);
        let messages = [
            Message::text(long_text.clone()),
            Message::text("under the threshold"),
            Message::binary(random.clone()),
            Message::binary(long_binary.clone()),
        ];
        // Published before any member runs: the room holds them, framed once per encoding.
        for message in &messages {
            assert_eq!(hub.publish("mixed", message), Ok(agreements.len()));
        }
        // Compressed once per message from the threshold up and distinct compression (two of
        // them), not once per member: the random bytes too (they did not shrink: sent plain).
        assert_eq!(hub.stats().compressed, 3 * 2);
        let compressed_len = |bits: u8, data: &[u8]| {
            let how = StatelessCompression::new(bits, 6);
            let payload = how.compress_binary(data).payload().len();
            payload + if payload < 126 { 2 } else { 4 }
        };
        let plain: usize = [long_text.len(), 19, random.len(), long_binary.len()]
            .into_iter()
            .map(plain_len)
            .sum();
        let in_window = |bits| {
            compressed_len(bits, long_text.as_bytes())
                + plain_len(19)
                + plain_len(random.len())
                + compressed_len(bits, &long_binary)
        };
        let queued = hub.queued("mixed").unwrap();
        assert_eq!(queued.messages, 4);
        assert_eq!(
            queued.bytes,
            plain + in_window(15) + in_window(10),
            "one copy of each frame per encoding, shared by its members"
        );
        let tasks: Vec<_> = members.into_iter().map(run).collect();
        let mut window_frames = None;
        for (name, agreed, client) in &mut clients {
            let frames = raw_frames(client, messages.len()).await;
            let opcodes: Vec<OpCode> = frames.iter().map(|f| f.opcode).collect();
            assert_eq!(
                opcodes,
                [OpCode::Text, OpCode::Text, OpCode::Binary, OpCode::Binary],
                "{name}"
            );
            let expected: [&[u8]; 4] = [
                long_text.as_bytes(),
                b"under the threshold",
                &random,
                &long_binary,
            ];
            let compressing = match agreed {
                Agreed::Deflate(p) if p.server_no_context_takeover => {
                    Some(p.server_max_window_bits)
                }
                _ => None,
            };
            for (i, (frame, sent)) in frames.iter().zip(expected).enumerate() {
                // Compressed: the long messages, for the members without context takeover;
                // under the threshold and incompressible: plain for everyone.
                let compressed = compressing.is_some() && (i == 0 || i == 3);
                if compressed {
                    assert_eq!(frame.rsv, RSV1, "{name}, message {i}");
                    let bits = compressing.unwrap_or(15);
                    assert_eq!(inflate(&frame.payload, bits), sent, "{name}, message {i}");
                    assert!(frame.payload.len() < sent.len() / 2, "{name}, message {i}");
                } else {
                    assert_eq!(frame.rsv, 0, "{name}, message {i}");
                    assert_eq!(frame.payload, sent, "{name}, message {i}");
                }
            }
            if *name == "window 15" {
                // The members of one encoding get the same bytes.
                match &window_frames {
                    None => window_frames = Some(frames),
                    Some(first) => assert_eq!(first, &frames),
                }
            }
        }
        for task in tasks {
            task.abort();
        }
    }

    #[tokio::test]
    async fn compressed_frames_decode_in_the_members_own_connections() {
        // Clients that are WebSockets with the same agreement: they inflate what they get, and
        // a compressing member with context takeover of its own keeps its state intact.
        let hub = Hub::default();
        let mut clients = Vec::new();
        let mut tasks = Vec::new();
        for agreed in [Agreed::Plain, takeover(), no_takeover(15), no_takeover(12)] {
            let (mut member, client) = ws_member(&hub, agreed);
            member.join("r");
            tasks.push(run(member));
            clients.push(client);
        }
        let text = json(3000);
        for i in 0..20 {
            hub.publish("r", &Message::text(format!("{i}:{text}")))
                .unwrap();
            if i % 5 == 0 {
                hub.publish("r", &text_message("small")).unwrap();
            }
        }
        for client in &mut clients {
            let got = receive(client, 24).await;
            let mut expected = Vec::new();
            for i in 0..20 {
                expected.push(format!("{i}:{text}"));
                if i % 5 == 0 {
                    expected.push("small".to_owned());
                }
            }
            assert_eq!(got, expected);
        }
        // Two compressions (15 and 12 bits) of each of the 20 long messages.
        assert_eq!(hub.stats().compressed, 40);
        for task in tasks {
            task.abort();
        }
    }

    fn text_message(s: &str) -> Message {
        Message::text(s.to_owned())
    }

    #[tokio::test]
    async fn members_of_different_encodings_relay_to_each_other_in_one_order() {
        let hub = Hub::default();
        let agreements = [
            Agreed::Plain,
            no_takeover(15),
            no_takeover(15),
            takeover(),
            no_takeover(10),
        ];
        let mut clients = Vec::new();
        for (i, agreed) in agreements.into_iter().enumerate() {
            let (mut member, client) = ws_member(&hub, agreed);
            member.join("chat");
            // Members 2 and 4 (compressing) publish to the others only.
            relay(member, "chat", i == 2 || i == 4);
            clients.push(client);
        }
        let body = json(200);
        for round in 0..20 {
            for (i, client) in clients.iter_mut().enumerate() {
                client
                    .feed(Message::text(format!("{i}:{round}:{body}")))
                    .await
                    .unwrap();
            }
        }
        for client in &mut clients {
            client.flush().await.unwrap();
        }
        let mut orders = Vec::new();
        for (i, client) in clients.iter_mut().enumerate() {
            let left_out = i == 2 || i == 4;
            let expected = if left_out { 80 } else { 100 };
            let got = receive(client, expected).await;
            assert!(quiet(client).await, "client {i} got more than {expected}");
            for sender in 0..5 {
                let from: Vec<String> = got
                    .iter()
                    .filter(|m| m.starts_with(&format!("{sender}:")))
                    .cloned()
                    .collect();
                if sender == i && left_out {
                    assert!(from.is_empty(), "client {i} got its own messages back");
                } else {
                    let sent: Vec<String> =
                        (0..20).map(|r| format!("{sender}:{r}:{body}")).collect();
                    assert_eq!(from, sent, "client {i}, from {sender}");
                }
            }
            orders.push(got);
        }
        // One order for the room, whatever the encoding.
        for (i, got) in orders.iter().enumerate() {
            let expected: Vec<&String> = orders[0]
                .iter()
                .filter(|m| !(i == 2 || i == 4) || !m.starts_with(&format!("{i}:")))
                .collect();
            assert_eq!(got.iter().collect::<Vec<_>>(), expected, "client {i}");
        }
    }

    #[tokio::test]
    async fn a_room_whose_compressing_members_left_goes_back_to_one_log() {
        let hub = Hub::default();
        let (mut plain, mut plain_client) = raw_member(&hub, Agreed::Plain);
        plain.join("r");
        let (mut compressing, _client) = raw_member(&hub, no_takeover(15));
        compressing.join("r");
        hub.publish("r", &Message::text(json(500))).unwrap();
        assert_eq!(hub.stats().compressed, 1);
        assert!(compressing.leave("r"));
        // Its log went with it: nothing is compressed for nobody.
        hub.publish("r", &Message::text(json(600))).unwrap();
        assert_eq!(hub.stats().compressed, 1);
        assert_eq!(hub.queued("r").unwrap().messages, 2);
        let task = run(plain);
        let frames = raw_frames(&mut plain_client, 2).await;
        assert!(frames.iter().all(|f| f.rsv == 0));
        assert_eq!(frames[1].payload, json(600).into_bytes());
        task.abort();
    }
}
