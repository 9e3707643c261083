//! `FrameHeader::decode` and re-encode: oracle in `gangway_fuzz::frame_header::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gangway_fuzz::frame_header::check(data));
