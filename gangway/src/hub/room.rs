//! One room: the messages published to it, framed once, and where each member is in them.
//!
//! A room keeps one log for all its members rather than a queue per member. Messages published
//! go into the open batch (framed once, one after the other in one buffer); the first member to
//! deliver seals the batch into an entry of the log, a [`Prepared`] every member then queues on
//! its connection as it is: one reference count per member and batch, one part of one write.
//! Each member keeps its own cursor in the log. So a publish costs the same with 5 members or
//! 5,000 (framing, a copy of the payload, waking the members that wait), and the members' queues
//! are the one log: a member that falls behind costs no memory of its own.
//!
//! Bounds: the log holds the entries some member has not taken yet, and never more than the
//! hub's limits ([`HubConfig`](super::HubConfig)): past them the oldest entries go, and a member
//! still behind them has lost them (it finds its cursor before the log's start: the policy
//! decides what then, see [`WhenFull`](super::WhenFull)). An entry that every member has taken
//! goes at once. Memory per room: at most the limits, plus the open batch, for each encoding.
//!
//! One log per encoding: members whose connections send the frames of a batch as they are take
//! the same log ([`Encoding`], given by their connection). Without permessage-deflate, or with
//! context takeover, that is the plain log; a connection that compresses each message on its own
//! (no context takeover) takes the log of its compression, whose frames are compressed once for
//! all its members (see [`Copies`]). A message is framed into every log of the room, in the same
//! order: members of different encodings receive the same messages in the same order.
//!
//! The logs are behind a mutex that is never held across an await (or while waking anyone, or
//! compressing).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Waker;

#[cfg(feature = "deflate")]
use gangway_proto::extensions::permessage_deflate::{CompressedMessage, StatelessCompression};
use gangway_proto::prepared::{Encoding, FrameSpan, Prepared, PreparedBatch};

/// What a publish reached: how many members, and for a publisher of an encoding among them,
/// its frame's entry and span in the publisher's log.
pub(super) type Published = (usize, Option<(u64, FrameSpan)>);

/// The open batch is sealed by the publisher once it holds this much, so that an entry stays
/// well below the limits and a long burst without any member running does not grow it without
/// bound.
const SEAL_AT: usize = 256 << 10;

/// A place in a room's log: the next entry to take, and the messages and bytes published before
/// it (cumulative since the room was made).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) seq: u64,
    pub(super) messages: u64,
    pub(super) bytes: u64,
}

/// A message to publish: text (UTF-8, checked) or binary.
#[derive(Clone, Copy, Debug)]
pub(super) enum Payload<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

impl Payload<'_> {
    /// The payload's length in bytes.
    pub(super) fn len(&self) -> usize {
        match self {
            Payload::Text(text) => text.len(),
            Payload::Binary(data) => data.len(),
        }
    }
}

/// A room: its name and its logs, one per encoding among its members.
#[derive(Debug)]
pub(super) struct Room {
    name: Box<str>,
    logs: Mutex<Logs>,
}

/// The logs of a room: a few at most (one per distinct encoding among the members), looked up
/// by encoding.
#[derive(Debug)]
struct Logs {
    logs: Vec<Log>,
    /// Limits (from the hub's configuration), for each log.
    max_bytes: u64,
    max_messages: u64,
}

/// A compression that the message being published needs and that [`Copies`] does not hold
/// yet: made outside the room's lock, then the publish is tried again.
#[cfg(feature = "deflate")]
pub(super) type Missing = StatelessCompression;
/// Without compression, nothing is ever missing.
#[cfg(not(feature = "deflate"))]
pub(super) type Missing = std::convert::Infallible;

/// The compressed copies of the message being published: one per distinct compression among
/// the encodings of the room's members that compress a message of its size, each made once
/// (and outside the room's lock) and framed into the batch of every encoding that compresses
/// with it.
#[derive(Debug, Default)]
pub(super) struct Copies {
    #[cfg(feature = "deflate")]
    made: Vec<CompressedMessage>,
}

impl Copies {
    /// Whether what `encoding` needs for `payload` is here: `Err` names the compression to make
    /// first.
    #[cfg_attr(not(feature = "deflate"), allow(clippy::unused_self, unused_variables))]
    fn check(&self, encoding: Encoding, payload: Payload<'_>) -> Result<(), Missing> {
        #[cfg(feature = "deflate")]
        if let Some(compression) = encoding.compression(payload.len()) {
            if !self.made.iter().any(|m| m.compression() == compression) {
                return Err(compression);
            }
        }
        Ok(())
    }

    /// Compress `payload` with `missing` (see [`check`](Self::check)).
    pub(super) fn make(&mut self, missing: Missing, payload: Payload<'_>) {
        #[cfg(feature = "deflate")]
        self.made.push(match payload {
            Payload::Text(text) => missing.compress_text(text),
            Payload::Binary(data) => missing.compress_binary(data),
        });
        #[cfg(not(feature = "deflate"))]
        match (missing, payload) {}
    }

    /// Frame `payload` into `batch`, the open batch of `encoding`'s log: compressed if the
    /// encoding compresses it and that makes it smaller, else as it is (RFC 7692 §6 lets any
    /// message go uncompressed).
    #[cfg_attr(not(feature = "deflate"), allow(clippy::unused_self, unused_variables))]
    fn push(
        &self,
        batch: &mut PreparedBatch,
        encoding: Encoding,
        payload: Payload<'_>,
    ) -> FrameSpan {
        #[cfg(feature = "deflate")]
        if let Some(compression) = encoding.compression(payload.len()) {
            let copy = self.made.iter().find(|m| m.compression() == compression);
            if let Some(copy) = copy.filter(|c| c.payload().len() < payload.len()) {
                // A log's batch holds frames of its own compression only, so this is not
                // refused; were it, the message would go uncompressed, which is valid too.
                if let Ok(span) = batch.push_compressed(copy) {
                    return span;
                }
            }
        }
        match payload {
            Payload::Text(text) => batch.push_text(text),
            Payload::Binary(data) => batch.push_binary(data),
        }
    }
}

/// What a member took from a room (see [`Room::take`]).
#[derive(Debug, Default)]
pub(super) struct Took {
    /// Messages taken.
    pub(super) messages: u64,
    /// Bytes of frames taken.
    pub(super) bytes: u64,
    /// Messages the member had lost: the log dropped them before it took them.
    pub(super) lost: u64,
}

/// The log of one encoding: what its members have not all taken yet.
#[derive(Debug)]
struct Log {
    /// How the frames of this log are encoded (the members' connections').
    encoding: Encoding,
    /// Messages published since the last seal.
    open: PreparedBatch,
    /// Sealed batches, oldest first: `entries[i]` is entry `start.seq + i`.
    entries: VecDeque<Entry>,
    /// Where the log starts (what was published before `entries[0]`).
    start: Position,
    /// Everything published, the open batch included (its `seq` is the open batch's, the entry
    /// it becomes when sealed).
    head: Position,
    members: usize,
    /// The members waiting for more (see [`Room::register`]).
    waiters: Vec<Waker>,
    /// Counts the times `waiters` was handed out to be woken: a member that registered in the
    /// current generation is still in the list.
    generation: u64,
    /// Limits (from the hub's configuration).
    max_bytes: u64,
    max_messages: u64,
}

#[derive(Debug)]
struct Entry {
    frames: Prepared,
    /// Where the entry ends.
    end: Position,
    /// Members that have not taken it yet.
    unread: usize,
}

impl Room {
    pub(super) fn new(name: &str, max_bytes: usize, max_messages: usize) -> Room {
        Room {
            name: name.into(),
            logs: Mutex::new(Logs {
                logs: Vec::new(),
                max_bytes: max_bytes as u64,
                max_messages: max_messages as u64,
            }),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The logs: a panic elsewhere while they were held leaves them consistent (every change is
    /// made in full before anything can panic), so a poisoned lock is used as it is.
    fn logs(&self) -> MutexGuard<'_, Logs> {
        self.logs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new member whose connection takes `encoding`: it gets what is published from now on.
    /// Returns its cursor in the log of its encoding.
    pub(super) fn join(&self, encoding: Encoding) -> Position {
        let mut logs = self.logs();
        let log = logs.get_or_insert(encoding);
        // What is in the open batch was published before the member joined: sealed now, it is
        // an entry the new member starts after.
        log.seal();
        log.members += 1;
        log.head
    }

    /// A member of `encoding` at `cursor` leaves; returns how many members the room has left.
    pub(super) fn leave(&self, encoding: Encoding, cursor: Position) -> usize {
        let mut logs = self.logs();
        if let Some(i) = logs.index(encoding) {
            let log = &mut logs.logs[i];
            let from = log.index(cursor.seq);
            for entry in log.entries.range_mut(from..) {
                entry.unread -= 1;
            }
            log.members -= 1;
            log.drop_read();
            if log.members == 0 {
                // Nobody left to deliver to in this encoding: the log goes, its open batch too.
                logs.logs.swap_remove(i);
            }
        }
        logs.members()
    }

    /// How many members the room has.
    pub(super) fn members(&self) -> usize {
        self.logs().members()
    }

    /// Frame a message for the members, in every encoding among them. `Ok(None)` when the room
    /// has none; else how many members it is for and, for a `publisher` of that encoding, where
    /// its frame is in the publisher's log (the entry the open batch becomes, and the span in
    /// it). `Err` when a compressed copy the members need is not in `copies` yet: make it (not
    /// under the lock) and try again; nothing was published. The members to wake are moved
    /// into `woken` (empty on entry): wake them once the lock is released (see [`wake`]).
    pub(super) fn publish(
        &self,
        payload: Payload<'_>,
        copies: &Copies,
        publisher: Option<Encoding>,
        woken: &mut Vec<Waker>,
    ) -> Result<Option<Published>, Missing> {
        let mut logs = self.logs();
        if logs.logs.is_empty() {
            return Ok(None);
        }
        // Every copy first: the message goes into every log or into none.
        for log in &logs.logs {
            copies.check(log.encoding, payload)?;
        }
        let mut members = 0;
        let mut at = None;
        for log in &mut logs.logs {
            let seq = log.head.seq;
            let span = copies.push(&mut log.open, log.encoding, payload);
            log.head.messages += 1;
            log.head.bytes += (span.end() - span.start()) as u64;
            if log.open.len() >= SEAL_AT {
                log.seal();
            }
            if !log.waiters.is_empty() {
                if woken.is_empty() {
                    // The list with its room goes to be woken; the log gets the empty one.
                    std::mem::swap(&mut log.waiters, woken);
                } else {
                    woken.append(&mut log.waiters);
                }
                log.generation += 1;
            }
            members += log.members;
            if publisher == Some(log.encoding) {
                at = Some((seq, span));
            }
        }
        Ok(Some((members, at)))
    }

    /// Take what the log of `encoding` has for a member at `cursor` (moved past it):
    /// `each(seq, frames)` for every entry, in order, with the lock held (it must not block);
    /// `each` returns false to stop before an entry it cannot take now (the cursor stays before
    /// it). With `seal`, the open batch is sealed first and taken too. When no message was
    /// taken (or `each` stopped), `waker` is registered to be woken by the next publish, in the
    /// same critical section, so that no publish is missed; `generation` tells whether it still
    /// is (see [`register`](Self::register)).
    pub(super) fn take(
        &self,
        encoding: Encoding,
        cursor: &mut Position,
        seal: bool,
        waker: &Waker,
        generation: &mut u64,
        mut each: impl FnMut(u64, &Prepared) -> bool,
    ) -> Took {
        let mut logs = self.logs();
        let mut took = Took::default();
        let Some(log) = logs.get_mut(encoding) else {
            // Not a member (cannot happen while it is one).
            return took;
        };
        if seal {
            log.seal();
        }
        if cursor.seq < log.start.seq {
            // Dropped from the log before this member took it: lost.
            took.lost = log.start.messages - cursor.messages;
            *cursor = log.start;
        }
        let from = log.index(cursor.seq);
        let mut stopped = false;
        for entry in log.entries.range_mut(from..) {
            if !each(cursor.seq, &entry.frames) {
                stopped = true;
                break;
            }
            entry.unread -= 1;
            took.messages += entry.end.messages - cursor.messages;
            took.bytes += entry.end.bytes - cursor.bytes;
            *cursor = entry.end;
        }
        log.drop_read();
        if stopped || took.messages == 0 {
            log.register(waker, generation);
        }
        took
    }

    /// Register `waker` for the next publish in the log of `encoding`, unless it is registered
    /// already (`generation` is the current one).
    pub(super) fn register(&self, encoding: Encoding, waker: &Waker, generation: &mut u64) {
        if let Some(log) = self.logs().get_mut(encoding) {
            log.register(waker, generation);
        }
    }

    /// What a member of `encoding` at `cursor` has not taken yet: (messages, bytes), the open
    /// batch included.
    pub(super) fn behind(&self, encoding: Encoding, cursor: Position) -> (u64, u64) {
        let mut logs = self.logs();
        let Some(log) = logs.get_mut(encoding) else {
            return (0, 0);
        };
        let from = if cursor.seq < log.start.seq {
            log.start
        } else {
            cursor
        };
        (
            log.head.messages - from.messages,
            log.head.bytes - from.bytes,
        )
    }

    /// Drop the oldest entries of the member of `encoding` at `cursor` until at most `bytes`
    /// and `messages` are behind it (the open batch counts but is not dropped); returns the
    /// messages dropped.
    pub(super) fn skip(
        &self,
        encoding: Encoding,
        cursor: &mut Position,
        bytes: u64,
        messages: u64,
    ) -> u64 {
        let mut logs = self.logs();
        let Some(log) = logs.get_mut(encoding) else {
            return 0;
        };
        let mut dropped = 0;
        if cursor.seq < log.start.seq {
            dropped += log.start.messages - cursor.messages;
            *cursor = log.start;
        }
        let head = log.head;
        let from = log.index(cursor.seq);
        for entry in log.entries.range_mut(from..) {
            if head.bytes - cursor.bytes <= bytes && head.messages - cursor.messages <= messages {
                break;
            }
            entry.unread -= 1;
            dropped += entry.end.messages - cursor.messages;
            *cursor = entry.end;
        }
        log.drop_read();
        dropped
    }

    /// What the logs hold (sealed and open): the bytes of every encoding's frames together, and
    /// the messages of the log that holds the most; within the limits, for each log.
    pub(super) fn queued(&self) -> (usize, usize) {
        let logs = self.logs();
        let mut bytes = 0;
        let mut messages = 0;
        for log in &logs.logs {
            bytes += log.entries.iter().map(|e| e.frames.len()).sum::<usize>() + log.open.len();
            let held = log
                .entries
                .iter()
                .map(|e| e.frames.messages())
                .sum::<usize>()
                + log.open.messages();
            messages = messages.max(held);
        }
        (bytes, messages)
    }
}

impl Logs {
    fn index(&self, encoding: Encoding) -> Option<usize> {
        self.logs.iter().position(|l| l.encoding == encoding)
    }

    fn get_mut(&mut self, encoding: Encoding) -> Option<&mut Log> {
        self.logs.iter_mut().find(|l| l.encoding == encoding)
    }

    /// The log of `encoding`, made if the room has none.
    fn get_or_insert(&mut self, encoding: Encoding) -> &mut Log {
        let i = match self.index(encoding) {
            Some(i) => i,
            None => {
                self.logs.push(Log {
                    encoding,
                    open: PreparedBatch::new(),
                    entries: VecDeque::new(),
                    start: Position::default(),
                    head: Position::default(),
                    members: 0,
                    waiters: Vec::new(),
                    generation: 0,
                    max_bytes: self.max_bytes,
                    max_messages: self.max_messages,
                });
                self.logs.len() - 1
            }
        };
        &mut self.logs[i]
    }

    fn members(&self) -> usize {
        self.logs.iter().map(|l| l.members).sum()
    }
}

impl Log {
    /// The index in `entries` of entry `seq` (at or after the start).
    fn index(&self, seq: u64) -> usize {
        // A member's cursor is never past the head, so this is at most `entries.len()` (cannot
        // truncate); clamped all the same, so that a wrong cursor takes nothing rather than
        // panicking.
        (seq.saturating_sub(self.start.seq) as usize).min(self.entries.len())
    }

    /// Make the open batch an entry of the log, for every member, and keep the log within the
    /// limits.
    fn seal(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let frames = self.open.take();
        if self.members == 0 {
            return;
        }
        let end = Position {
            seq: self.head.seq + 1,
            ..self.head
        };
        self.entries.push_back(Entry {
            frames,
            end,
            unread: self.members,
        });
        self.head.seq += 1;
        // Past the limits, the oldest entries go: the members that have not taken them lost
        // them (they find out at their next take).
        while self.head.bytes - self.start.bytes > self.max_bytes
            || self.head.messages - self.start.messages > self.max_messages
        {
            if !self.pop_front() {
                break;
            }
        }
    }

    /// Drop the entries every member has taken.
    fn drop_read(&mut self) {
        while self.entries.front().is_some_and(|e| e.unread == 0) {
            self.pop_front();
        }
    }

    /// Drop the oldest entry; false if there is none.
    fn pop_front(&mut self) -> bool {
        match self.entries.pop_front() {
            Some(entry) => {
                self.start = entry.end;
                true
            }
            None => false,
        }
    }

    fn register(&mut self, waker: &Waker, generation: &mut u64) {
        if *generation != self.generation {
            self.waiters.push(waker.clone());
            *generation = self.generation;
        }
    }
}

/// Wake the members taken from a room's waiters (outside its lock), leaving `woken` empty with
/// its room kept for the next publish.
pub(super) fn wake(woken: &mut Vec<Waker>) {
    for waker in woken.drain(..) {
        waker.wake();
    }
}
