//! Fast masking against the scalar reference: oracle in `gangway_fuzz::mask::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gangway_fuzz::mask::check(data));
