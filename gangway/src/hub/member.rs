//! `Member`: a connection in a hub's rooms. Its stream hands out what the peer sends and, on the
//! side, delivers what its rooms receive.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use futures_sink::Sink;
use gangway_proto::prepared::{Encoding, FrameSpan, Prepared};
use gangway_proto::{ApiMisuse, CloseCode, Connection};
use tokio::io::{AsyncRead, AsyncWrite};

use super::room::{Position, Room};
use super::{Hub, PublishError, WhenFull};
use crate::{Error, Message, WebSocket};

/// The close reason sent to a member closed for being too slow ([`WhenFull::Close`]).
const TOO_SLOW: &str = "too slow: message queue full";

/// A generation no room has: the member is registered nowhere (see `Room::register`).
const UNREGISTERED: u64 = u64::MAX;

/// A WebSocket in a [`Hub`]'s rooms: made by [`Hub::member`].
///
/// It is a `Stream` of the messages its peer sends and a `Sink` of messages to it alone, as the
/// [`WebSocket`] it wraps; what is published to its rooms is delivered while the stream is
/// polled. So keep polling it, as for a `WebSocket` (pings are answered then too): a task that
/// only sends still reads. A task that awaits something else between two messages delays its
/// own deliveries, not anyone else's; past the hub's limits,
/// [`HubConfig::when_full`](super::HubConfig::when_full) applies to it.
///
/// Deliveries wait while a fragmented message is being sent on the sink (frames of two messages
/// cannot interleave, RFC 6455 §5.4), and stop once the connection closes.
///
/// # Drop behavior
///
/// Dropping it leaves its rooms at once and drops the connection, as dropping a `WebSocket`
/// does.
pub struct Member<S> {
    ws: WebSocket<S>,
    /// Boxed: a member is a `WebSocket` and one pointer, so a server that keeps its connections'
    /// state small keeps a member's small too.
    state: Box<MemberState>,
}

/// A member's rooms and counters.
struct MemberState {
    hub: Hub,
    subs: Vec<Subscription>,
    /// A message was published since the member last delivered (see `poll_next`).
    published: bool,
    /// Bytes and messages published since the member last gave way to the other tasks (see
    /// `poll_next`).
    burst: (u64, u64),
    /// The member gave way after publishing: it delivers before it reads again.
    deliver_first: bool,
    /// The waker registered in the rooms: when the task changes, every room must be told.
    waker: Option<Waker>,
    /// Messages taken in the last delivery and maybe not written yet (they count in the queue).
    unwritten: u64,
    /// Messages dropped for this member.
    dropped: u64,
}

/// One room of a member.
struct Subscription {
    room: Arc<Room>,
    /// How the member's connection takes prepared frames: which of the room's logs it reads.
    encoding: Encoding,
    cursor: Position,
    /// The room's generation the member's waker was registered in.
    generation: u64,
    /// Frames the member published with [`Member::publish_to_others`] and must not receive:
    /// the entry each is in, and where in it.
    own: VecDeque<(u64, FrameSpan)>,
}

impl<S> Member<S> {
    pub(super) fn new(hub: Hub, ws: WebSocket<S>) -> Member<S> {
        Member {
            ws,
            state: Box::new(MemberState {
                hub,
                subs: Vec::new(),
                published: false,
                burst: (0, 0),
                deliver_first: false,
                waker: None,
                unwritten: 0,
                dropped: 0,
            }),
        }
    }

    /// Join `room`: from now on, the member receives what is published to it. Returns false if
    /// it was a member already.
    pub fn join(&mut self, room: &str) -> bool {
        if self.is_in(room) {
            return false;
        }
        // Fixed by the handshake: the connection's permessage-deflate parameters.
        let encoding = self.ws.connection().prepared_encoding();
        let (room, cursor) = self.state.hub.shared.join(room, encoding);
        self.state.subs.push(Subscription {
            room,
            encoding,
            cursor,
            generation: UNREGISTERED,
            own: VecDeque::new(),
        });
        true
    }

    /// Leave `room`: what is published to it from now on, and what it had not delivered yet,
    /// does not reach this member. Returns false if it was not a member.
    pub fn leave(&mut self, room: &str) -> bool {
        let Some(i) = self.state.subs.iter().position(|s| s.room.name() == room) else {
            return false;
        };
        let sub = self.state.subs.swap_remove(i);
        self.state
            .hub
            .shared
            .leave(&sub.room, sub.encoding, sub.cursor);
        true
    }

    /// Whether the member is in `room`.
    pub fn is_in(&self, room: &str) -> bool {
        self.state.subs.iter().any(|s| s.room.name() == room)
    }

    /// The rooms the member is in.
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.state.subs.iter().map(|s| s.room.name())
    }

    /// Publish `message` to every member of `room`, this one included if it is in the room:
    /// [`Hub::publish`], without looking the room up when this member is in it.
    ///
    /// # Errors
    ///
    /// As [`Hub::publish`].
    pub fn publish(&mut self, room: &str, message: &Message) -> Result<usize, PublishError> {
        self.publish_as(room, message, false)
    }

    /// Publish `message` to every other member of `room`; returns how many there are (in this
    /// process).
    ///
    /// # Errors
    ///
    /// As [`Hub::publish`]; [`PublishError::OthersOnlyUnordered`] when the hub's bus is
    /// [ordered](super::Bus::ordered) (it delivers every message to every member).
    pub fn publish_to_others(
        &mut self,
        room: &str,
        message: &Message,
    ) -> Result<usize, PublishError> {
        self.publish_as(room, message, true)
    }

    fn publish_as(
        &mut self,
        room: &str,
        message: &Message,
        not_self: bool,
    ) -> Result<usize, PublishError> {
        let state = &mut *self.state;
        let payload = state.hub.check(message)?;
        let ordered = state.hub.shared.ordered;
        if ordered && not_self {
            return Err(PublishError::OthersOnlyUnordered);
        }
        state.hub.to_bus(room, payload)?;
        let mine = state.subs.iter().position(|s| s.room.name() == room);
        if ordered {
            // The bus delivers it back, to this member too: count it for the turn this member
            // gives way after (see `poll_next`), as if it had been framed here.
            if let Some(i) = mine {
                state.published = true;
                state.burst.0 += payload.len() as u64;
                state.burst.1 += 1;
                return Ok(state.subs[i].room.members());
            }
            return Ok(state.hub.members(room));
        }
        let target = match mine {
            Some(i) => Arc::clone(&state.subs[i].room),
            None => match state.hub.room(room) {
                Some(room) => room,
                None => return Ok(0),
            },
        };
        let publisher = mine.map(|i| state.subs[i].encoding);
        let (members, at) = state.hub.shared.publish_to(&target, payload, publisher);
        let Some(i) = mine else {
            return Ok(members);
        };
        // Delivered on this member's next poll, after the other members have had their turn to
        // publish (see `poll_next`).
        state.published = true;
        state.burst.0 += payload.len() as u64;
        state.burst.1 += 1;
        if not_self {
            if let Some(at) = at {
                state.subs[i].own.push_back(at);
            }
            return Ok(members.saturating_sub(1));
        }
        Ok(members)
    }

    /// Messages dropped for this member because it was too slow ([`WhenFull::Drop`]).
    pub fn dropped(&self) -> u64 {
        self.state.dropped
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        &self.state.hub
    }

    /// The connection.
    pub fn websocket(&self) -> &WebSocket<S> {
        &self.ws
    }

    /// The connection, e.g. to [`close`](WebSocket::close) it.
    pub fn websocket_mut(&mut self) -> &mut WebSocket<S> {
        &mut self.ws
    }

    /// Leave every room and give the connection back.
    pub fn into_websocket(self) -> WebSocket<S> {
        // The state's `Drop` leaves the rooms.
        self.ws
    }
}

impl MemberState {
    /// Whether the member published more since it last gave way than one turn should carry: a
    /// quarter of what a member may have queued (so that one peer sending without pause cannot
    /// fill the others' queues between two of their turns).
    fn burst_is_over(&self) -> bool {
        let config = &self.hub.shared.config;
        self.burst.0 >= (config.max_queued_bytes / 4) as u64
            || self.burst.1 >= (config.max_queued_messages / 4).max(1) as u64
    }

    /// Let the other tasks ready to run go first; this one runs again after them (its waker is
    /// woken now: tokio puts it at the back of the queue) and delivers first.
    fn give_way(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        self.published = false;
        self.burst = (0, 0);
        self.deliver_first = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Leave every room.
    fn leave_all(&mut self) {
        for sub in self.subs.drain(..) {
            self.hub.shared.leave(&sub.room, sub.encoding, sub.cursor);
        }
    }

    /// `waker` is the one to register in the rooms from now on: rooms that have another must
    /// get this one.
    fn use_waker(&mut self, waker: &Waker) {
        if self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            return;
        }
        self.waker = Some(waker.clone());
        for sub in &mut self.subs {
            sub.generation = UNREGISTERED;
        }
    }

    /// Take what the rooms have for the member and queue it on `conn`, whose output is empty.
    /// Returns whether anything was queued; when nothing was, the member is registered in every
    /// room for the next publish.
    fn take(&mut self, conn: &mut Connection, waker: &Waker) -> bool {
        // Output that starts waiting starts the write timeout, from the time the core is given
        // next (the driver gives it when it re-arms its timer).
        let mut queued = false;
        let mut refused = None;
        let mut lost = 0;
        let mut messages = 0;
        for sub in &mut self.subs {
            let own = &mut sub.own;
            let took = sub.room.take(
                sub.encoding,
                &mut sub.cursor,
                true,
                waker,
                &mut sub.generation,
                |seq, frames| match queue(conn, seq, frames, own) {
                    Ok(()) => true,
                    Err(e) => {
                        refused = Some(e);
                        false
                    }
                },
            );
            queued |= took.messages > 0;
            messages += took.messages;
            lost += took.lost;
            if refused.is_some() {
                break;
            }
        }
        self.unwritten = messages;
        if lost > 0 {
            self.overflowed(conn, lost);
        }
        if refused == Some(ApiMisuse::AlreadyClosing) {
            // Closed (by us, the peer, or a failure): nothing more goes out.
            self.leave_all();
        }
        // `FragmentOrder`: the application is sending a fragmented message; the member is
        // registered and tries again at the next publish.
        queued
    }

    /// The member's connection did not take everything queued: if what waits (its output and
    /// what its rooms hold for it) is over the limits, apply the policy. Then wait for the next
    /// publish as well as for the transport, so that the policy applies without delay. Returns
    /// whether the policy closed the member.
    fn check_backlog(&mut self, conn: &mut Connection, waker: &Waker) -> bool {
        let config = &self.hub.shared.config;
        let max_bytes = config.max_queued_bytes as u64;
        let max_messages = config.max_queued_messages as u64;
        let out_bytes = conn.output_len() as u64;
        let mut over = false;
        for sub in &self.subs {
            let (messages, bytes) = sub.room.behind(sub.encoding, sub.cursor);
            over |= bytes + out_bytes > max_bytes || messages + self.unwritten > max_messages;
        }
        if over {
            match config.when_full {
                WhenFull::Drop => {
                    let room_bytes = max_bytes.saturating_sub(out_bytes);
                    let room_messages = max_messages.saturating_sub(self.unwritten);
                    let mut dropped = 0;
                    for sub in &mut self.subs {
                        dropped +=
                            sub.room
                                .skip(sub.encoding, &mut sub.cursor, room_bytes, room_messages);
                        let next = sub.cursor.seq;
                        while sub.own.front().is_some_and(|(seq, _)| *seq < next) {
                            sub.own.pop_front();
                        }
                    }
                    self.count_dropped(dropped);
                }
                WhenFull::Close(_) => {
                    self.overflowed(conn, 0);
                    return true;
                }
            }
        }
        for sub in &mut self.subs {
            sub.room.register(sub.encoding, waker, &mut sub.generation);
        }
        false
    }

    /// The member's queue overflowed: `lost` messages were dropped from its rooms' logs before
    /// it took them. Apply the policy.
    fn overflowed(&mut self, conn: &mut Connection, lost: u64) {
        match self.hub.shared.config.when_full {
            WhenFull::Drop => self.count_dropped(lost),
            WhenFull::Close(code) => {
                self.leave_all();
                self.hub.shared.closed.fetch_add(1, Ordering::Relaxed);
                // Fails only if a close was sent already: closing anyway.
                let _ = conn.send_close(code, TOO_SLOW);
            }
        }
    }

    fn count_dropped(&mut self, dropped: u64) {
        if dropped > 0 {
            self.dropped += dropped;
            self.hub
                .shared
                .dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
    }
}

/// Queue `frames` (entry `seq` of a room) on `conn`, less the frames in `own` that the member
/// published to the others.
fn queue(
    conn: &mut Connection,
    seq: u64,
    frames: &Prepared,
    own: &mut VecDeque<(u64, FrameSpan)>,
) -> Result<(), ApiMisuse> {
    // Frames of entries lost before they were taken are gone anyway.
    while own.front().is_some_and(|(s, _)| *s < seq) {
        own.pop_front();
    }
    if !own.front().is_some_and(|(s, _)| *s == seq) {
        return conn.send_prepared(frames);
    }
    let mut spans = Vec::new();
    while let Some(&(s, span)) = own.front() {
        if s != seq {
            break;
        }
        spans.push(span);
        own.pop_front();
    }
    // Checked first: a fragmented message in progress must not lose these frames.
    conn.send_prepared(&Prepared::default())?;
    for piece in frames.without(&spans) {
        conn.send_prepared(&piece)?;
    }
    Ok(())
}

impl Drop for MemberState {
    fn drop(&mut self) {
        self.leave_all();
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Member<S> {
    /// Leave every room, then close the connection as [`WebSocket::close`] does.
    ///
    /// # Errors
    ///
    /// As [`WebSocket::close`].
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.state.leave_all();
        self.ws.close(code, reason).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for Member<S> {
    type Item = Result<Message, Error>;

    /// The next message from the peer, as [`WebSocket`]'s stream; meanwhile, what the rooms
    /// have for this member is written to it.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let state = &mut *this.state;
            if std::mem::take(&mut state.deliver_first) {
                // Back after giving way (below): deliver before reading more, so that a member
                // whose peer keeps sending still gets what its rooms have, every turn.
                let conn = this.ws.connection_mut();
                if conn.output_len() == 0 && !state.subs.is_empty() {
                    state.use_waker(cx.waker());
                    state.unwritten = 0;
                    state.take(conn, cx.waker());
                }
            }
            if state.burst_is_over() {
                // This member's peer sends faster than one turn of the event loop should
                // carry: give way before reading more, so that the members of its rooms (this
                // one too) take what it published before it is more than their queues hold.
                return state.give_way(cx);
            }
            // Reading first; the stream also writes what is queued (deliveries queued by the
            // last pass, with anything else waiting) before it reads.
            match Pin::new(&mut this.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => return Poll::Ready(Some(Ok(message))),
                Poll::Ready(end) => {
                    this.state.leave_all();
                    return Poll::Ready(end);
                }
                Poll::Pending => {}
            }
            let state = &mut *this.state;
            if state.subs.is_empty() {
                return Poll::Pending;
            }
            if state.published {
                // This member published since it last delivered: let the other tasks that are
                // ready in this turn of the event loop run first (this one goes to the back of
                // the queue), so that what they publish joins the same batch, delivered to every
                // member in one write. The same corking as uWebSockets' publish, by the
                // scheduler's order.
                return state.give_way(cx);
            }
            state.use_waker(cx.waker());
            let conn = this.ws.connection_mut();
            if conn.output_len() > 0 {
                // The transport did not take everything (the stream waits for it): this member
                // is behind.
                if state.check_backlog(conn, cx.waker()) {
                    // Closed for being too slow: the stream must see it (the close timer).
                    continue;
                }
                return Poll::Pending;
            }
            state.unwritten = 0;
            if !state.take(conn, cx.waker()) {
                if conn.output_len() > 0 {
                    // Nothing was taken, but the policy closed the member: write the close.
                    continue;
                }
                return Poll::Pending;
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for Member<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.get_mut().ws).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        Pin::new(&mut self.get_mut().ws).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.get_mut().ws).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        this.state.leave_all();
        Pin::new(&mut this.ws).poll_close(cx)
    }
}

impl<S> std::fmt::Debug for Member<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("rooms", &self.rooms().collect::<Vec<_>>())
            .field("dropped", &self.state.dropped)
            .field("ws", &self.ws)
            .finish()
    }
}
