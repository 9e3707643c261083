//! What one message published to 10,000 members costs in memory, counted allocation by
//! allocation (a counting global allocator: exact, and the same on every run).
//!
//! 10,000 members of one room, each over an in-memory transport, in two cases: transports that
//! take every write (the message goes out at once, as to clients that read), and transports that
//! take nothing (every member keeps the message queued, the worst case). Each member is polled
//! once to join the room's waiting list, the message (1 KiB) is published, each member is polled
//! once more (it takes the message and writes it, or queues it). Printed: the heap the publish
//! added, and what the members added per member, while the message waits and once everything is
//! done.
//!
//! ```text
//! cargo run --release -p gangway --example broadcast_memory [MEMBERS] [BYTES]
//! ```
//!
//! Exits with 1 if the publish added more than one copy of the frame (and the batch buffer it is
//! framed into), or if a member that wrote the message kept anything of it.

// The counting allocator is the only unsafe code: it forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::task::{Context, Poll};

use futures_util::Stream;
use gangway::hub::{Hub, HubConfig, Member};
use gangway::proto::{Config, Connection, Role};
use gangway::{Message, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes allocated and not freed, process-wide.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is forwarded to the system allocator with the same arguments; the counter
// has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is the same as `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout` (through `alloc` or `realloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: the caller's contract for `realloc` is the same as `System.realloc`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A transport that never has anything to read, and takes every write (`takes`) or none.
struct Transport {
    takes: bool,
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.takes {
            Poll::Ready(Ok(buf.len()))
        } else {
            Poll::Pending
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Poll every member's stream once (nothing ever arrives from the transports).
fn poll_all(members: &mut [Member<Transport>]) {
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    for member in members {
        assert!(Pin::new(member).poll_next(&mut cx).is_pending());
    }
}

/// What one message added to the heap (bytes): the publish, then the members (once each took
/// it, and after another poll, idle again).
#[derive(Debug)]
struct Added {
    published: isize,
    taken: isize,
    idle: isize,
}

/// 10,000 members (or `members`) over transports that take every write (`takes`) or none: what
/// the first message published to them adds, then (if `takes`) what the next one adds.
fn case(members: usize, size: usize, takes: bool) -> (Added, Option<Added>) {
    let hub = Hub::new(HubConfig::default());
    let mut all: Vec<Member<Transport>> = (0..members)
        .map(|_| {
            let conn = Connection::new(Role::Server, Config::default());
            let mut member =
                hub.member(WebSocket::from_parts(Transport { takes }, conn, None, &[]));
            member.join("room");
            member
        })
        .collect();
    // Every member waits for the room (registered for the next publish), as idle members do.
    poll_all(&mut all);
    let message = Message::binary(vec![7u8; size]);
    let mut one = || {
        let before = live();
        assert_eq!(hub.publish("room", &message), Ok(members));
        let published = live() - before;
        poll_all(&mut all);
        let taken = live() - before - published;
        poll_all(&mut all);
        let idle = live() - before - published;
        Added {
            published,
            taken,
            idle,
        }
    };
    let first = one();
    // A transport that takes nothing still holds the first message: the members take no more.
    let next = takes.then(&mut one);
    (first, next)
}

fn per_member(bytes: isize, members: usize) -> String {
    format!(
        "{bytes} bytes, {:.1} per member",
        bytes as f64 / members as f64
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let members: usize = args.next().map_or(10_000, |a| a.parse().expect("MEMBERS"));
    let size: usize = args.next().map_or(1024, |a| a.parse().expect("BYTES"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _guard = runtime.enter();
    // The frame: the payload and a 2-byte header, 4 with a 16-bit length, 10 with a 64-bit one.
    let frame = size
        + if size < 126 {
            2
        } else if size < 65536 {
            4
        } else {
            10
        };
    println!("one message of {size} bytes ({frame} framed) published to {members} members");
    let mut failed = false;
    let (first, next) = case(members, size, true);
    let next = next.expect("a second message");
    println!("members whose transport takes the message at once (clients that read):");
    println!(
        "  first message: publish {} bytes (the room's batch buffer, holding the frame); \
         members {}, once idle again {} (the list of members waiting for the room grown \
         again: the publish keeps the last one, a waker per member, for the next)",
        first.published,
        per_member(first.taken, members),
        per_member(first.idle, members)
    );
    println!(
        "  next message: publish {} bytes (framed into the same buffer's spare room); \
         members {}, once idle again {}",
        next.published,
        per_member(next.taken, members),
        per_member(next.idle, members)
    );
    let (stuck, _) = case(members, size, false);
    println!("members whose transport takes nothing (every member keeps the message queued):");
    println!(
        "  publish {} bytes; members {} (the frames queued on each connection: a reference to \
         the shared frame, and the connection's block of rarely used state holding it)",
        stuck.published,
        per_member(stuck.taken, members)
    );
    // One copy of the frame: the batch buffer holds it (at least 4 KiB; twice the frame for a
    // large one).
    let one_copy = (frame * 2).max(4096) as isize;
    for (what, added) in [("first", &first), ("next", &next), ("queued", &stuck)] {
        if added.published > one_copy {
            eprintln!("{what}: the publish added more than one copy of the frame");
            failed = true;
        }
    }
    if next.taken != 0 || next.idle != 0 {
        eprintln!("members that wrote the message kept something of it");
        failed = true;
    }
    if failed {
        std::process::exit(1);
    }
}
