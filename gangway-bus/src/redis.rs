//! The Redis engine: PUBLISH/SUBSCRIBE, and with history a Stream and a hash per room, written
//! by one Lua script so that offset, storage and publication are one step.
//!
//! Two connections per node: a [`ConnectionManager`] for publishes and history reads (it
//! reconnects by itself; a failed batch is retried), and a pub/sub connection owned by the
//! subscriber task, which reconnects and resubscribes every room after a loss.
//!
//! Keys, for prefix `P` and room `R`: channel `P:room:R`; with history, hash `P:meta:R` (fields
//! `e` epoch, `o` last offset) and stream `P:history:R` (entry id `0-<offset>`, field `m` the
//! engine message), and per publisher stream `P:publisher:<id>:<n>` (its last sequence number
//! stored, so that a retried publish is not stored twice; expires after an hour). No expiry
//! of the history: a room's stays until removed.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::bus::{Outgoing, Received, Shared};
use crate::envelope::{self, Decoded, Position};
use crate::error::BusError;
use crate::{backoff, Started};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may wait for its answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Publishes sent in one pipeline.
const BATCH: usize = 256;

/// Publish with history: epoch (kept, or set from ARGV[2] when there is none: the history was
/// lost, or never was), next offset, the message with its position line stored and published.
///
/// A publisher stream's messages (sequence number ARGV[5]; `0` for a stream of one message)
/// are stored once each and in order, whatever happens to the batches carrying them. A batch
/// whose answer was lost (the connection broke after Redis ran part of it), or of which a
/// command failed, is sent again whole. KEYS[3] keeps the stream's last sequence number
/// stored: a number already stored is skipped (not stored again under a new offset). The next
/// number stored must follow the last one the stream reached, by the key or by ARGV[6] (the
/// last number the node saw acknowledged: it is ahead of the key when the server lost writes,
/// a restart from an older snapshot, or the key expired); any other is refused (`GAP`: the
/// batch fails and is sent again, with the messages before it). The key expires an hour after
/// the stream's last publish: a retry comes within seconds of the first attempt.
const PUBLISH: &str = r"
local seq = tonumber(ARGV[5])
if seq > 0 then
  local after = tonumber(ARGV[6])
  local last = redis.call('get', KEYS[3])
  if last then
    last = tonumber(last)
    if seq <= last then
      return 0
    end
    if last > after then
      after = last
    end
  end
  if seq ~= after + 1 then
    return redis.error_reply('GAP publisher stream out of order')
  end
  redis.call('set', KEYS[3], ARGV[5], 'EX', 3600)
end
if redis.call('hsetnx', KEYS[1], 'e', ARGV[2]) == 1 then
  redis.call('del', KEYS[2])
end
local e = redis.call('hget', KEYS[1], 'e')
local o = redis.call('hincrby', KEYS[1], 'o', 1)
local m = string.sub(ARGV[1], 1, 17) .. e .. ':' .. o .. '\n' .. string.sub(ARGV[1], 18)
redis.call('xadd', KEYS[2], 'MAXLEN', ARGV[3], '0-' .. o, 'm', m)
redis.call('publish', ARGV[4], m)
return o
";

/// Where a room's history stands: its epoch (set if there is none) and last offset.
const POSITION: &str = r"
if redis.call('hsetnx', KEYS[1], 'e', ARGV[1]) == 1 then
  redis.call('del', KEYS[2])
end
local o = redis.call('hget', KEYS[1], 'o')
if not o then o = '0' end
return {redis.call('hget', KEYS[1], 'e'), o}
";

/// Reads of the rooms' histories (shared with [`Bus::recover`](crate::Bus::recover)).
#[derive(Clone)]
pub(crate) struct History {
    conn: ConnectionManager,
    prefix: String,
    position: redis::Script,
}

impl History {
    fn meta_key(&self, room: &str) -> String {
        format!("{}:meta:{room}", self.prefix)
    }

    fn stream_key(&self, room: &str) -> String {
        format!("{}:history:{room}", self.prefix)
    }

    /// The room's messages with offsets `from..to`, those still kept, in order.
    pub(crate) async fn range(
        &self,
        room: &str,
        from: u64,
        to: u64,
    ) -> redis::RedisResult<Vec<Decoded>> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.stream_key(room))
            .arg(format!("0-{from}"))
            .arg(format!("0-{}", to.saturating_sub(1)))
            .query_async(&mut conn)
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .filter_map(|entry| match entry.map.get("m") {
                Some(redis::Value::BulkString(m)) => envelope::decode(Bytes::from(m.clone())),
                _ => None,
            })
            .collect())
    }

    /// Where the room's history stands now.
    async fn position(&self, room: &str) -> redis::RedisResult<Position> {
        let mut conn = self.conn.clone();
        let (epoch, offset): (String, u64) = self
            .position
            .key(self.meta_key(room))
            .key(self.stream_key(room))
            .arg(new_epoch())
            .invoke_async(&mut conn)
            .await?;
        Position::from_parts(&epoch, &offset.to_string())
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::TypeError, "bad epoch")))
    }
}

/// A fresh epoch: 16 hex digits from the OS's random source (the time if it fails).
fn new_epoch() -> String {
    let mut b = [0; 8];
    let n = match getrandom::fill(&mut b) {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    format!("{n:016x}")
}

fn channel(prefix: &str, room: &str) -> String {
    format!("{prefix}:room:{room}")
}

pub(crate) async fn start(
    url: &str,
    shared: Arc<Shared>,
    outgoing: mpsc::Receiver<Outgoing>,
) -> Result<Started, BusError> {
    let engine_error = |e: redis::RedisError| BusError::Engine(Box::new(e));
    let client = redis::Client::open(url).map_err(engine_error)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
        .set_number_of_retries(1)
        .set_max_delay(1000);
    let conn = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(engine_error)?;
    let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| BusError::Engine("redis pub/sub connection timed out".into()))?
        .map_err(engine_error)?;
    let history = History {
        conn: conn.clone(),
        prefix: shared.config.prefix.clone(),
        position: redis::Script::new(POSITION),
    };
    let publisher = tokio::spawn(publish_loop(conn, shared.clone(), outgoing));
    let subscriber = tokio::spawn(subscribe_loop(
        client,
        pubsub,
        shared.clone(),
        history.clone(),
    ));
    Ok(Started {
        tasks: vec![publisher.abort_handle(), subscriber.abort_handle()],
        history: shared.history().then_some(history),
    })
}

/// Send queued publishes in pipelines; a batch that fails is retried until the engine takes it.
async fn publish_loop(
    mut conn: ConnectionManager,
    shared: Arc<Shared>,
    mut outgoing: mpsc::Receiver<Outgoing>,
) {
    let prefix = shared.config.prefix.clone();
    let history = shared.config.history.map(|n| n.get());
    let script = redis::Script::new(PUBLISH);
    let mut batch = Vec::with_capacity(BATCH);
    while outgoing.recv_many(&mut batch, BATCH).await > 0 {
        let pipe = pipeline(&prefix, history, &script, &batch);
        let mut failing: Option<Instant> = None;
        let mut attempt = 0;
        loop {
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => break,
                Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                    // A restarted server has an empty script cache.
                    let loaded: redis::RedisResult<String> = redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(PUBLISH)
                        .query_async(&mut conn)
                        .await;
                    if let Err(e) = loaded {
                        warn!("redis: cannot load the publish script: {e}");
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                    }
                }
                Err(e) => {
                    if failing.is_none() {
                        warn!(
                            queued = outgoing.len() + batch.len(),
                            "redis: publishing failed ({e}); retrying"
                        );
                        failing = Some(Instant::now());
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
        if let Some(since) = failing {
            info!(
                after = ?since.elapsed(),
                "redis: publishing again; {} publishes had waited",
                outgoing.len() + batch.len()
            );
        }
        shared
            .counters
            .published
            .fetch_add(batch.len() as u64, Relaxed);
        for out in &batch {
            if let Some(stream) = &out.stream {
                stream.stored.fetch_max(stream.seq, Relaxed);
            }
        }
        batch.clear();
    }
}

/// The commands publishing `batch`: PUBLISH each, or with history (keeping the last `history`
/// messages per room) the publish script.
fn pipeline(
    prefix: &str,
    history: Option<usize>,
    script: &redis::Script,
    batch: &[Outgoing],
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for (i, out) in batch.iter().enumerate() {
        let channel = channel(prefix, &out.room);
        match history {
            None => pipe.cmd("PUBLISH").arg(channel).arg(&out.wire[..]).ignore(),
            Some(n) => {
                // Read once per batch: the batch and its retries say the same.
                let (stream, seq, stored) = match &out.stream {
                    Some(s) => (
                        format!("{:016x}:{:x}", s.id, s.key),
                        s.seq,
                        s.stored.load(Relaxed),
                    ),
                    None => (String::new(), 0, 0),
                };
                // The script's text first, its hash after: the script is in the server's cache
                // for the rest of the batch, whoever flushed it before (a restart), so no
                // command of the batch fails for want of it while others run.
                if i == 0 {
                    pipe.cmd("EVAL").arg(PUBLISH);
                } else {
                    pipe.cmd("EVALSHA").arg(script.get_hash());
                }
                pipe.arg(3)
                    .arg(format!("{prefix}:meta:{}", out.room))
                    .arg(format!("{prefix}:history:{}", out.room))
                    .arg(format!("{prefix}:publisher:{stream}"))
                    .arg(&out.wire[..])
                    .arg(new_epoch())
                    .arg(n)
                    .arg(channel)
                    .arg(seq)
                    .arg(stored)
                    .ignore()
            }
        };
    }
    pipe
}

/// Keep one pub/sub connection, subscribed to every room with local members; deliver what
/// arrives; on a loss, count the gap, reconnect, resubscribe, and with history fetch what was
/// missed.
async fn subscribe_loop(
    client: redis::Client,
    first: redis::aio::PubSub,
    shared: Arc<Shared>,
    history: History,
) {
    let prefix = format!("{}:room:", shared.config.prefix);
    let mut connection = Some(first);
    let mut attempt = 0;
    let mut lost_at: Option<Instant> = None;
    loop {
        let pubsub = match connection.take() {
            Some(p) => p,
            None => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                match tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await {
                    Ok(Ok(p)) => p,
                    _ => continue,
                }
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut session = Session {
            shared: &shared,
            history: &history,
            prefix: &prefix,
            subscribed: HashSet::new(),
        };
        // Every room again, and with history what was published meanwhile.
        let error = match session.reconcile(&mut sink, lost_at.is_some()).await {
            Ok(()) => {
                if let Some(since) = lost_at.take() {
                    info!(
                        after = ?since.elapsed(),
                        rooms = session.subscribed.len(),
                        "redis: reconnected and resubscribed"
                    );
                }
                attempt = 0;
                session.run(&mut sink, &mut stream).await
            }
            Err(e) => e.to_string(),
        };
        if lost_at.is_none() {
            shared.gap("redis", &error);
            lost_at = Some(Instant::now());
        }
    }
}

/// One pub/sub connection's life.
struct Session<'a> {
    shared: &'a Shared,
    history: &'a History,
    prefix: &'a str,
    subscribed: HashSet<Arc<str>>,
}

impl Session<'_> {
    /// Deliver messages and follow subscription changes until the connection fails; returns
    /// why.
    async fn run(&mut self, sink: &mut PubSubSink, stream: &mut PubSubStream) -> String {
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return "connection closed".to_owned();
                    };
                    let Some(room) = message.get_channel_name().strip_prefix(self.prefix) else {
                        continue;
                    };
                    let wire = Bytes::copy_from_slice(message.get_payload_bytes());
                    let received = self.shared.receive_wire(room, wire);
                    self.fill(room, received).await;
                }
                () = self.shared.changed.notified() => {
                    if let Err(e) = self.reconcile(sink, false).await {
                        return e.to_string();
                    }
                }
            }
        }
    }

    /// Subscribe to the rooms that gained local members, unsubscribe from those that lost
    /// them. With history, read where each new room stands (`resync`: every room, after a
    /// reconnection) and deliver what it missed.
    async fn reconcile(&mut self, sink: &mut PubSubSink, resync: bool) -> redis::RedisResult<()> {
        let wanted: HashSet<Arc<str>> = self.shared.wanted().into_iter().collect();
        let gone: Vec<_> = self.subscribed.difference(&wanted).cloned().collect();
        for room in gone {
            sink.unsubscribe(channel(&self.shared.config.prefix, &room))
                .await?;
            self.subscribed.remove(&room);
        }
        let new: Vec<_> = wanted.difference(&self.subscribed).cloned().collect();
        for room in &new {
            sink.subscribe(channel(&self.shared.config.prefix, room))
                .await?;
            self.subscribed.insert(room.clone());
        }
        if !self.shared.history() {
            for room in &new {
                self.shared.set_ready_by_name(room);
            }
            return Ok(());
        }
        // After SUBSCRIBE: anything published after the position read below arrives on the
        // connection, anything before is in the history.
        let rooms: Vec<_> = if resync {
            self.subscribed.iter().cloned().collect()
        } else {
            new
        };
        for name in rooms {
            let Some(room) = self.shared.room(&name) else {
                continue;
            };
            let now = self.history.position(&name).await?;
            match room.position() {
                Some(ours) => self.catch_up(&name, &ours, &now).await,
                None => self.shared.set_ready(&room, Some(now)),
            }
        }
        Ok(())
    }

    /// History: the room stands at `now` in the engine; deliver what this node has not.
    async fn catch_up(&mut self, room: &str, ours: &Position, now: &Position) {
        let from = if ours.epoch == now.epoch {
            if ours.offset >= now.offset {
                return;
            }
            ours.offset + 1
        } else {
            // A new epoch: all of it is new here.
            1
        };
        let entries = match self.history.range(room, from, now.offset + 1).await {
            Ok(entries) => entries,
            Err(e) => {
                warn!(room, "redis: cannot read the history to catch up: {e}");
                return;
            }
        };
        let before = self.shared.counters.delivered.load(Relaxed);
        for entry in entries {
            let received = self.shared.receive(room, entry);
            Box::pin(self.fill(room, received)).await;
        }
        let recovered = self.shared.counters.delivered.load(Relaxed) - before;
        self.shared.counters.recovered.fetch_add(recovered, Relaxed);
        if recovered > 0 {
            info!(
                room,
                recovered, "redis: delivered from the history what was missed"
            );
        }
    }

    /// History: a message arrived after a gap; deliver the missing ones from the history first.
    async fn fill(&mut self, room: &str, mut received: Received) {
        // Each round moves the room's position forward; a few rounds at most.
        for _ in 0..4 {
            let Received::Gap {
                epoch,
                from,
                to,
                message,
            } = received
            else {
                return;
            };
            let entries = match self.history.range(room, from, to).await {
                Ok(entries) => entries,
                Err(e) => {
                    // The reconnection's catch-up will fetch them.
                    warn!(room, "redis: cannot read the history to fill a gap: {e}");
                    return;
                }
            };
            let before = self.shared.counters.delivered.load(Relaxed);
            let mut expected = from;
            for entry in entries {
                let Some(at) = entry.position.as_ref() else {
                    continue;
                };
                if at.epoch != epoch {
                    break;
                }
                if at.offset > expected {
                    self.shared.skip_lost(room, &epoch, expected, at.offset);
                }
                expected = at.offset + 1;
                // Entries follow each other: no gap can come of them.
                let _ = self.shared.receive(room, entry);
            }
            if expected < to {
                self.shared.skip_lost(room, &epoch, expected, to);
            }
            let recovered = self.shared.counters.delivered.load(Relaxed) - before;
            self.shared.counters.recovered.fetch_add(recovered, Relaxed);
            received = self.shared.receive(room, message);
        }
    }
}

/// Real engine servers for the tests (shared with the integration tests).
#[cfg(test)]
#[path = "../tests/support/mod.rs"]
mod support;

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::support;
    use super::*;
    use crate::bus::StreamRef;
    use crate::envelope::Kind;

    /// A Redis server, a connection to it, and a reader of the history of room `/r` (prefix
    /// `t`).
    async fn redis() -> (support::Server, redis::aio::MultiplexedConnection, History) {
        let server = support::Server::start(support::Kind::Redis { persistent: false });
        let client = redis::Client::open(server.url()).unwrap();
        let conn = client.get_multiplexed_async_connection().await.unwrap();
        let history = History {
            conn: ConnectionManager::new(client).await.unwrap(),
            prefix: "t".to_owned(),
            position: redis::Script::new(POSITION),
        };
        (server, conn, history)
    }

    /// Message `seq` of publisher stream `stream` (`None`: a stream of one message), number 0
    /// on its node, of which the node saw the engine take up to `stored`.
    fn message(stream: Option<u64>, seq: u64, stored: u64) -> Outgoing {
        Outgoing {
            room: Arc::from("/r"),
            wire: envelope::encode(
                Kind::Text,
                true,
                stream.unwrap_or(99),
                seq,
                format!("m{seq}").as_bytes(),
            ),
            stream: stream.map(|id| StreamRef {
                id,
                key: 0,
                seq,
                stored: Arc::new(AtomicU64::new(stored)),
            }),
        }
    }

    async fn publish(
        conn: &mut redis::aio::MultiplexedConnection,
        batch: &[Outgoing],
    ) -> redis::RedisResult<()> {
        let script = redis::Script::new(PUBLISH);
        pipeline("t", Some(100), &script, batch)
            .query_async::<()>(conn)
            .await
    }

    /// The bodies stored in the history, in offset order, and their offsets.
    async fn stored(history: &History) -> (Vec<String>, Vec<u64>) {
        let stored = history.range("/r", 1, 100).await.unwrap();
        let bodies = stored
            .iter()
            .map(|m| {
                let text = std::str::from_utf8(&m.client).unwrap();
                text.split_once('\n').unwrap().1.to_owned()
            })
            .collect();
        let offsets = stored
            .iter()
            .map(|m| m.position.as_ref().unwrap().offset)
            .collect();
        (bodies, offsets)
    }

    #[tokio::test]
    async fn a_retried_batch_is_stored_once() {
        let (_server, mut conn, history) = redis().await;
        // The first two reached Redis, the answer was lost (so the node saw nothing taken):
        // the batch goes again, whole, with the next message; then two streams of one message
        // each (never retried).
        let s = Some(7);
        let first = [message(s, 1, 0), message(s, 2, 0)];
        let again = [message(s, 1, 0), message(s, 2, 0), message(s, 3, 0)];
        let single = [message(None, 1, 0), message(None, 1, 0)];
        for batch in [&first[..], &again[..], &single[..]] {
            publish(&mut conn, batch).await.unwrap();
        }
        let (bodies, offsets) = stored(&history).await;
        assert_eq!(bodies, ["m1", "m2", "m3", "m1", "m1"]);
        assert_eq!(offsets, [1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn a_stream_is_stored_in_order_only() {
        let (_server, mut conn, history) = redis().await;
        let key = format!("t:publisher:{:016x}:0", 8);
        // The first command of a batch failed and the others ran (as when a command fails for
        // a reason of its own): the ones after it are refused, the batch fails, and its retry
        // stores all of them in order.
        let s = Some(8);
        let err = publish(&mut conn, &[message(s, 2, 0), message(s, 3, 0)])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("GAP"), "{err}");
        publish(&mut conn, &[message(s, 1, 0)]).await.unwrap();
        let err = publish(&mut conn, &[message(s, 3, 1)]).await.unwrap_err();
        assert!(err.to_string().contains("GAP"), "{err}");
        let retried = [message(s, 1, 1), message(s, 2, 1), message(s, 3, 1)];
        publish(&mut conn, &retried).await.unwrap();
        // The key is gone (expired, or lost with the server's data) while the node saw 3
        // taken: the stream goes on from there, and only from there.
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let err = publish(&mut conn, &[message(s, 5, 3)]).await.unwrap_err();
        assert!(err.to_string().contains("GAP"), "{err}");
        publish(&mut conn, &[message(s, 4, 3)]).await.unwrap();
        // The server came back from an older snapshot: the key says 1, the node saw 4 taken.
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .query_async(&mut conn)
            .await
            .unwrap();
        publish(&mut conn, &[message(s, 5, 4)]).await.unwrap();
        // A stream whose id comes round again on its node (a new number) starts afresh.
        let mut again = message(s, 1, 0);
        again.stream.as_mut().unwrap().key = 1;
        publish(&mut conn, &[again]).await.unwrap();
        let (bodies, offsets) = stored(&history).await;
        assert_eq!(bodies, ["m1", "m2", "m3", "m4", "m5", "m1"]);
        assert_eq!(offsets, [1, 2, 3, 4, 5, 6]);
    }

    #[tokio::test]
    async fn publishes_to_rooms_without_a_local_member_are_one_stream() {
        let (server, mut conn, history) = redis().await;
        let config = crate::BusConfig {
            history: std::num::NonZeroUsize::new(100),
            prefix: "t".to_owned(),
            ..crate::BusConfig::default()
        };
        let bus = crate::Bus::connect(crate::Engine::Redis(server.url()), config, |_, _| {})
            .await
            .unwrap();
        for (room, body) in [("/r", "m1"), ("/s", "m2"), ("/r", "m3")] {
            bus.publish(room, Kind::Text, Bytes::from(body)).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while bus.stats().published < 3 {
            assert!(Instant::now() < deadline, "not published");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // One stream at the engine, numbered across the rooms: a batch sent again is stored
        // once.
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("t:publisher:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(keys.len(), 1, "{keys:?}");
        let last: u64 = redis::cmd("GET")
            .arg(&keys[0])
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(last, 3);
        let (bodies, offsets) = stored(&history).await;
        assert_eq!(
            (bodies, offsets),
            (vec!["m1".to_owned(), "m3".to_owned()], vec![1, 2])
        );
    }
}
