//! RFC 6455 conformance, table-driven, in both roles.
//!
//! The table (`conformance/cases.rs`, `conformance/handshake.rs`) walks the RFC the way the
//! Autobahn testsuite's sections 1–7, 9 and 10 do, plus the opening handshake. Each case runs
//! against gangway as a server (a scripted raw TCP client: `conformance/peer.rs`) and as a
//! client (a scripted raw TCP server), and compares what gangway sends with the expected outcome:
//! the echoed messages (bytes, type, order), the pongs, the close code, whether the connection
//! was failed before the rest of the input was sent, the TCP close.
//!
//! Targets:
//! - always: gangway in this process, an echo server and an echo client written like the CLI's;
//! - the shipped binary (`gangway serve`, `gangway connect --echo`), heavy cases included: the
//!   `*_binary` tests, ignored unless asked for, and failing without
//!   `GANGWAY_BIN=/path/to/gangway` (`cargo test -p gangway --all-features --test conformance --
//!   --include-ignored`, as `scripts/test.sh` runs them).
//!
//! Other switches: `GANGWAY_CONFORMANCE_CASES=6.4,7.1` runs only ids starting with one of the
//! prefixes; `GANGWAY_CONFORMANCE_HEAVY=1` runs the heavy cases in-process too;
//! `GANGWAY_CONFORMANCE_VERBOSE=1` lists every case.
//!
//! Accepted deviations are listed in `conformance/README.md`.

// A crate root looks for modules beside itself: point at the suite's own directory (a plain
// `mod handshake;` would pick up the `handshake.rs` integration test).
#[path = "conformance/cases.rs"]
mod cases;
#[cfg(feature = "deflate")]
#[path = "conformance/compression.rs"]
mod compression;
#[path = "conformance/handshake.rs"]
mod handshake;
#[cfg(feature = "http2")]
#[path = "conformance/http2.rs"]
mod http2;
#[path = "conformance/peer.rs"]
mod peer;
#[path = "conformance/runner.rs"]
mod runner;
#[path = "conformance/samples.rs"]
mod samples;
#[path = "conformance/target.rs"]
mod target;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use cases::Role;
use runner::Verdict;
use target::Target;

/// Cases run at the same time (each on its own connection).
const PARALLEL: usize = 8;

/// Bound on a whole run (each case has its own, far shorter); `GANGWAY_CONFORMANCE_WATCHDOG`
/// (seconds) sets another, to look into a run that does not end.
fn watchdog() -> std::time::Duration {
    std::env::var("GANGWAY_CONFORMANCE_WATCHDOG")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map_or(
            std::time::Duration::from_secs(480),
            std::time::Duration::from_secs,
        )
}

#[test]
fn raw_peer_tools_match_published_vectors() {
    peer::self_check();
    samples::self_check();
}

#[test]
fn case_ids_are_unique() {
    let mut seen = std::collections::HashSet::new();
    for case in cases::all() {
        assert!(
            seen.insert(case.id.clone()),
            "duplicate case id {}",
            case.id
        );
    }
}

#[test]
fn conformance_server_in_process() {
    run(Role::Server, &Target::InProcess);
}

#[test]
fn conformance_client_in_process() {
    run(Role::Client, &Target::InProcess);
}

/// The framing cases (sections 1 to 10) with the WebSocket on an HTTP/2 stream (RFC 8441): the
/// raw peer opens (or accepts) an extended CONNECT and runs the same scripts in its DATA frames.
#[cfg(feature = "http2")]
#[test]
fn conformance_server_http2_in_process() {
    run_over(Role::Server, &Target::InProcess, true);
}

#[cfg(feature = "http2")]
#[test]
fn conformance_client_http2_in_process() {
    run_over(Role::Client, &Target::InProcess, true);
}

// The shipped binary's runs need it built (`GANGWAY_BIN`): ignored by a plain `cargo test`, run by
// `scripts/test.sh` with `--include-ignored` after the release build. Run without `GANGWAY_BIN`
// they fail rather than pass having tested nothing.
#[cfg(feature = "http2")]
#[test]
#[ignore = "needs GANGWAY_BIN, the release binary (scripts/test.sh runs it)"]
fn conformance_server_http2_binary() {
    run_over(Role::Server, &Target::Binary(binary()), true);
}

#[cfg(feature = "http2")]
#[test]
#[ignore = "needs GANGWAY_BIN, the release binary (scripts/test.sh runs it)"]
fn conformance_client_http2_binary() {
    run_over(Role::Client, &Target::Binary(binary()), true);
}

#[test]
#[ignore = "needs GANGWAY_BIN, the release binary (scripts/test.sh runs it)"]
fn conformance_server_binary() {
    run(Role::Server, &Target::Binary(binary()));
}

#[test]
#[ignore = "needs GANGWAY_BIN, the release binary (scripts/test.sh runs it)"]
fn conformance_client_binary() {
    run(Role::Client, &Target::Binary(binary()));
}

/// The binary under test, from `GANGWAY_BIN`.
///
/// # Panics
///
/// If `GANGWAY_BIN` is unset or not a file: these tests have nothing to test then.
fn binary() -> PathBuf {
    let path = std::env::var_os("GANGWAY_BIN")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .expect("GANGWAY_BIN must name the gangway binary to test (see scripts/test.sh)");
    assert!(
        path.is_file(),
        "GANGWAY_BIN={} is not a file",
        path.display()
    );
    path
}

/// A line on the terminal even when the test harness captures output.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Run the table against `role` of `target`; print the summary; fail naming each failed case.
fn run(role: Role, target: &Target) {
    run_over(role, target, false);
}

/// [`run`], over HTTP/2 with `http2` (the framing cases only: the opening handshake's are
/// HTTP/1.1's).
fn run_over(role: Role, target: &Target, http2: bool) {
    let filter: Vec<String> = std::env::var("GANGWAY_CONFORMANCE_CASES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let heavy = matches!(target, Target::Binary(_)) || flag("GANGWAY_CONFORMANCE_HEAVY");
    let all = cases::all();
    let selected: Vec<_> = all
        .into_iter()
        .filter(|c| c.applies_to(role))
        .filter(|c| !http2 || matches!(c.handshake, cases::Handshake::Standard))
        .filter(|c| filter.is_empty() || filter.iter().any(|f| c.id.starts_with(f.as_str())))
        .collect();
    let (to_run, skipped): (Vec<_>, Vec<_>) = selected.into_iter().partition(|c| heavy || !c.heavy);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    // Every case has its own time limit; should the run itself not end (a wake-up lost), fail
    // with the cases still running named instead of hanging the whole test job.
    let (finished, watched) = std::sync::mpsc::channel::<()>();
    let run_name = format!("{}{}", role.name(), if http2 { " over http/2" } else { "" });
    let limit = watchdog();
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watched.recv_timeout(limit) {
            let running = runner::IN_FLIGHT
                .lock()
                .map(|set| set.iter().cloned().collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            // Straight to the file descriptor: the test harness's capture would lose it.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!(
                    "conformance {run_name}: the run did not end within {limit:?}; cases \
                     still running: [{running}]\n"
                )
                .as_bytes(),
            );
            std::process::exit(1);
        }
    });
    let verdicts = runtime.block_on(runner::run_all(&to_run, role, target, http2, PARALLEL));
    drop(finished);
    let _ = watchdog.join();
    let elapsed = started.elapsed();
    // No task of the run may outlive it (in-process servers, readers, clients).
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));

    let failed: Vec<&Verdict> = verdicts.iter().filter(|v| v.failure.is_some()).collect();
    let passed = verdicts.len() - failed.len();
    if flag("GANGWAY_CONFORMANCE_VERBOSE") {
        for v in &verdicts {
            let mark = if v.failure.is_some() { "FAIL" } else { "ok  " };
            report(&format!(
                "{mark} {:>7.1} ms {} {}",
                v.elapsed.as_secs_f64() * 1e3,
                v.id,
                v.description
            ));
        }
    }
    // Per section: passed/run.
    let mut sections: BTreeMap<u32, (String, usize, usize)> = BTreeMap::new();
    for v in &verdicts {
        let key = v.section.parse::<u32>().unwrap_or(u32::MAX);
        let entry = sections.entry(key).or_insert((v.section.clone(), 0, 0));
        entry.2 += 1;
        if v.failure.is_none() {
            entry.1 += 1;
        }
    }
    let per_section: Vec<String> = sections
        .values()
        .map(|(name, ok, total)| format!("{name}: {ok}/{total}"))
        .collect();
    let mut text = String::new();
    for v in &failed {
        text.push_str(&format!(
            "  FAILED {} [{}, {}] {}\n      {}\n",
            v.id,
            role.name(),
            target.name(),
            v.description,
            v.failure.as_deref().unwrap_or_default()
        ));
    }
    report(&format!(
        "{text}conformance {}{}: {passed} passed, {} failed ({}; {} heavy cases skipped; {:.1} s)\n  \
         by section: {}",
        role.name(),
        if http2 { " over http/2" } else { "" },
        failed.len(),
        target.name(),
        skipped.len(),
        elapsed.as_secs_f64(),
        per_section.join(", ")
    ));
    assert!(
        failed.is_empty(),
        "{} conformance case(s) failed in the {} role ({}): {}",
        failed.len(),
        role.name(),
        target.name(),
        failed
            .iter()
            .map(|v| v.id.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
}
