//! `ClientHandshake::parse_response`: oracle in `gangway_fuzz::handshake::check_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gangway_fuzz::handshake::check_response(data));
