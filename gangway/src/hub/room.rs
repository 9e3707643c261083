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
//! goes at once. Memory per room: at most the limits, plus the open batch.
//!
//! The log is behind a mutex that is never held across an await (or while waking anyone).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use gangway_proto::prepared::{FrameSpan, Prepared, PreparedBatch};

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

/// A room: its name and its log.
#[derive(Debug)]
pub(super) struct Room {
    name: Box<str>,
    log: Mutex<Log>,
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

#[derive(Debug)]
struct Log {
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
            log: Mutex::new(Log {
                open: PreparedBatch::new(),
                entries: VecDeque::new(),
                start: Position::default(),
                head: Position::default(),
                members: 0,
                waiters: Vec::new(),
                generation: 0,
                max_bytes: max_bytes as u64,
                max_messages: max_messages as u64,
            }),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The log: a panic elsewhere while it was held leaves it consistent (every change is made
    /// in full before anything can panic), so a poisoned lock is used as it is.
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new member: it gets what is published from now on. Returns its cursor.
    pub(super) fn join(&self) -> Position {
        let mut log = self.log();
        // What is in the open batch was published before the member joined: sealed now, it is
        // an entry the new member starts after.
        log.seal();
        log.members += 1;
        log.head
    }

    /// A member at `cursor` leaves; returns how many are left.
    pub(super) fn leave(&self, cursor: Position) -> usize {
        let mut log = self.log();
        let from = log.index(cursor.seq);
        for entry in log.entries.range_mut(from..) {
            entry.unread -= 1;
        }
        log.members -= 1;
        log.drop_read();
        if log.members == 0 {
            // Nobody left to deliver to: the open batch goes too.
            log.open.take();
        }
        log.members
    }

    /// How many members the room has.
    pub(super) fn members(&self) -> usize {
        self.log().members
    }

    /// Frame a message for the members. `None` when the room has none; else how many members
    /// it is for and where its frame is (the entry the open batch becomes, and the span in it).
    /// The members to wake are swapped into `woken` (empty on entry): wake them once the lock is
    /// released (see [`wake`]).
    pub(super) fn publish(
        &self,
        payload: Payload<'_>,
        woken: &mut Vec<Waker>,
    ) -> Option<(usize, u64, FrameSpan)> {
        let mut log = self.log();
        if log.members == 0 {
            return None;
        }
        let seq = log.head.seq;
        let span = match payload {
            Payload::Text(text) => log.open.push_text(text),
            Payload::Binary(data) => log.open.push_binary(data),
        };
        log.head.messages += 1;
        log.head.bytes += (span.end() - span.start()) as u64;
        if log.open.len() >= SEAL_AT {
            log.seal();
        }
        if !log.waiters.is_empty() {
            std::mem::swap(&mut log.waiters, woken);
            log.generation += 1;
        }
        Some((log.members, seq, span))
    }

    /// Take what the log has for a member at `cursor` (moved past it): `each(seq, frames)` for
    /// every entry, in order, with the lock held (it must not block); `each` returns false to
    /// stop before an entry it cannot take now (the cursor stays before it). With `seal`, the
    /// open batch is sealed first and taken too. When no message was taken (or `each` stopped),
    /// `waker` is registered to be woken by the next publish, in the same critical section, so
    /// that no publish is missed; `generation` tells whether it still is (see
    /// [`register`](Self::register)).
    pub(super) fn take(
        &self,
        cursor: &mut Position,
        seal: bool,
        waker: &Waker,
        generation: &mut u64,
        mut each: impl FnMut(u64, &Prepared) -> bool,
    ) -> Took {
        let mut log = self.log();
        if seal {
            log.seal();
        }
        let mut took = Took::default();
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

    /// Register `waker` for the next publish, unless it is registered already (`generation` is
    /// the current one).
    pub(super) fn register(&self, waker: &Waker, generation: &mut u64) {
        self.log().register(waker, generation);
    }

    /// What a member at `cursor` has not taken yet: (messages, bytes), the open batch included.
    pub(super) fn behind(&self, cursor: Position) -> (u64, u64) {
        let log = self.log();
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

    /// Drop the member at `cursor`'s oldest entries until at most `bytes` and `messages` are
    /// behind it (the open batch counts but is not dropped); returns the messages dropped.
    pub(super) fn skip(&self, cursor: &mut Position, bytes: u64, messages: u64) -> u64 {
        let mut log = self.log();
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

    /// Bytes and messages the log holds (sealed and open): what the slowest member has not
    /// taken, within the limits.
    pub(super) fn queued(&self) -> (usize, usize) {
        let log = self.log();
        let bytes = log.entries.iter().map(|e| e.frames.len()).sum::<usize>() + log.open.len();
        let messages = log
            .entries
            .iter()
            .map(|e| e.frames.messages())
            .sum::<usize>()
            + log.open.messages();
        (bytes, messages)
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
