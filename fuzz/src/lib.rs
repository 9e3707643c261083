//! Oracles for the fuzz targets of `gangway-proto`, one module per target.
//!
//! Each `check` takes the fuzzer's bytes, drives the core through its public API and panics when
//! the outcome is anything but "accepted, or refused with a documented error" (plus the
//! target's own consistency checks). The binaries in `fuzz_targets/` only call these, so the
//! same checks also run on the committed seeds as ordinary tests (`cargo test` here).

pub mod connection;
pub mod deflate;
pub mod frame_header;
pub mod handshake;
pub mod mask;
pub mod memory;
pub mod output;
pub mod utf8;

// The seeds' memory checks count, as in the targets that check memory.
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: memory::Counting = memory::Counting;

/// The time given with input: the fuzzed connections have no timer.
pub fn now() -> std::time::Instant {
    static T0: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(std::time::Instant::now)
}

/// Check that `conn`'s `state`, `ended` and `should_close_transport` follow the close
/// handshake as the harness saw it (our close frame in the output taken, the peer's close handed
/// out, what `poll_event` failed with, `receive_eof` called): the peer's close is answered as it
/// is handed out, which ends the handshake (a client then waits for the server to close the
/// transport, RFC 6455 §7.1.1); a failure ends the connection at once, with its error.
pub fn check_life_cycle(
    conn: &gangway_proto::Connection,
    sent_close: bool,
    peer_closed: bool,
    failure: Option<gangway_proto::ProtocolError>,
    eof: bool,
) {
    use gangway_proto::{End, Role, State};
    let failed = failure.is_some();
    let expected = if failed || peer_closed {
        State::Closed
    } else if sent_close {
        State::Closing
    } else {
        State::Open
    };
    assert_eq!(conn.state(), expected, "state");
    let ended = failed || (peer_closed && (conn.role() == Role::Server || eof));
    assert_eq!(
        conn.should_close_transport(),
        ended,
        "should_close_transport"
    );
    if let Some(err) = failure {
        assert_eq!(conn.ended(), Some(End::Failed(err)));
    } else if peer_closed {
        assert_eq!(conn.ended(), Some(End::Clean));
    }
}

/// Check that input given after the connection's input ended (the peer's close handed out, or a
/// failure) is ignored: no event, no output.
pub fn check_input_ignored(conn: &mut gangway_proto::Connection) {
    assert_eq!(conn.poll_event(), Ok(None), "event after the end of input");
    assert!(conn.output().is_empty(), "output after the end of input");
}

/// A split point in `0..=data.len()` derived from the bytes themselves (FNV-1a), so the fuzzer
/// explores other splits as it mutates the input, and a crash reproduces from its input alone.
pub fn split_point(data: &[u8]) -> usize {
    let hash = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    // The remainder is at most `data.len()`, so it fits in a usize.
    usize::try_from(hash % (data.len() as u64 + 1)).unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use gangway_proto::Role;

    /// Every committed seed of `target`, which must have some.
    pub(crate) fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        seeds
    }

    #[test]
    fn committed_seeds_pass_every_oracle() {
        for seed in seeds("handshake_request") {
            super::handshake::check_request(&seed);
        }
        for seed in seeds("handshake_response") {
            super::handshake::check_response(&seed);
        }
        for seed in seeds("frame_header") {
            super::frame_header::check(&seed);
        }
        for seed in seeds("connection_server") {
            super::connection::check(Role::Server, &seed);
        }
        for seed in seeds("connection_client") {
            super::connection::check(Role::Client, &seed);
        }
        for seed in seeds("utf8") {
            super::utf8::check(&seed);
        }
        for seed in seeds("mask") {
            super::mask::check(&seed);
        }
    }

    pub(crate) fn seed(target: &str, name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target)
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The seeds must reach past the checks into the code after them, or the fuzzer starts cold.
    #[test]
    fn valid_handshake_seeds_are_accepted() {
        use gangway_proto::handshake::{accept_key, server, Parsed};

        let request = seed("handshake_request", "rfc_6455_1_3_request");
        let Ok(Parsed::Complete(req, _)) = server::parse_request(&request, 2048) else {
            panic!("the RFC request does not parse");
        };
        server::check_request(&req).expect("the RFC request is accepted");

        for name in [
            "accepted_minimal",
            "accepted_protocol_and_extension",
            "accepted_then_frame",
        ] {
            let response = seed("handshake_response", name);
            let result = super::handshake::client().parse_response(&response);
            assert!(
                matches!(result, Ok(Parsed::Complete(..))),
                "{name}: {result:?}"
            );
        }
        let accept = accept_key(super::handshake::client().key().as_bytes());
        let dict = Path::new(env!("CARGO_MANIFEST_DIR")).join("dict/handshake_response.dict");
        let dict = std::fs::read_to_string(dict).unwrap();
        assert!(
            dict.contains(&format!("\"{accept}\"")),
            "dictionary lacks {accept}"
        );
    }

    #[test]
    fn split_point_stays_within_the_input() {
        assert_eq!(super::split_point(&[]), 0);
        for len in 1..64 {
            let data: Vec<u8> = (0..len).collect();
            assert!(super::split_point(&data) <= data.len());
        }
    }
}
