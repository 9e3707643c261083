//! `server::parse_request`, `check_request`, `accept`/`reject`, and the same request as an HTTP/2 extended CONNECT (`check_connect_request`): oracle in `gangway_fuzz::handshake::check_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gangway_fuzz::handshake::check_request(data));
