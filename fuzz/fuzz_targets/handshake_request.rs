//! `server::parse_request`, `check_request`, `accept`/`reject`: oracle in `gangway_fuzz::handshake::check_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gangway_fuzz::handshake::check_request(data));
