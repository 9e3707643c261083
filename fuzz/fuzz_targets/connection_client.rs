//! A client `Connection` fed arbitrary bytes and commands: oracle in `gangway_fuzz::connection::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gangway_fuzz::connection::check(
    gangway_proto::Role::Client,
    data
));
