//! `gangway accept KEY` and `gangway key`: the handshake's key arithmetic, for debugging by hand.

use std::process::ExitCode;

use clap::Args;
use gangway_proto::handshake::{accept_key, generate_key, is_valid_key};
use gangway_proto::OsRandom;

/// Options of `gangway accept`.
#[derive(Args, Debug)]
pub(crate) struct AcceptOpts {
    /// A Sec-WebSocket-Key, as a client sent it (surrounding whitespace is ignored).
    key: String,
}

/// Options of `gangway key` (none yet).
#[derive(Args, Debug)]
pub(crate) struct KeyOpts {}

/// Print the `Sec-WebSocket-Accept` a server answers to `opts.key` (RFC 6455 §4.2.2).
///
/// A key that is not 16 bytes in base64 still gets its value computed (that is what the arithmetic
/// says), with a warning on stderr, since a conforming server refuses such a key with 400.
pub(crate) fn accept(opts: &AcceptOpts) -> ExitCode {
    if !is_valid_key(opts.key.as_bytes()) {
        eprintln!("gangway: warning: key is not 16 bytes in base64; a server answers 400 to it");
    }
    println!("{}", accept_key(opts.key.as_bytes()));
    ExitCode::SUCCESS
}

/// Print a fresh `Sec-WebSocket-Key`: 16 bytes from the OS CSPRNG, base64 (RFC 6455 §4.1).
pub(crate) fn key(_opts: &KeyOpts) -> ExitCode {
    println!("{}", generate_key(&mut OsRandom::new()));
    ExitCode::SUCCESS
}
