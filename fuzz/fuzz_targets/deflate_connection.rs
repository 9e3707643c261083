//! A `Connection` with permessage-deflate negotiated, in either role and each server mode, fed
//! arbitrary bytes, compressed messages and commands: oracle in
//! `gangway_fuzz::deflate::connection::check`.
#![no_main]

// The oracle bounds the heap.
#[global_allocator]
static ALLOCATOR: gangway_fuzz::memory::Counting = gangway_fuzz::memory::Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| gangway_fuzz::deflate::connection::check(data));
