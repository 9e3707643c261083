//! A client and a server with permessage-deflate negotiated exchanging messages, each inflating
//! what the other compressed: oracle in `gangway_fuzz::deflate::round_trip::check`.
#![no_main]

// The oracle bounds the heap.
#[global_allocator]
static ALLOCATOR: gangway_fuzz::memory::Counting = gangway_fuzz::memory::Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| gangway_fuzz::deflate::round_trip::check(data));
