//! The incremental UTF-8 validator against `std::str::from_utf8`: oracle in `gangway_fuzz::utf8::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gangway_fuzz::utf8::check(data));
