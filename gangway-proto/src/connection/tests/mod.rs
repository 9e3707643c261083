//! In-memory tests of [`Connection`], by subject: two endpoints with seeded randomness, the
//! output of one fed to the other, no sockets; raw frames (from `gangway-test-support`) stand in
//! for a misbehaving peer. The harness ([`pair`]) is shared with the deflate and timer tests.

pub(crate) mod pair;

mod close;
mod deliver_fragments;
mod failure;
mod fragmentation;
mod framing;
mod input;
mod lending;
mod limits;
mod messages;
mod output;
mod sending;
mod utf8;
