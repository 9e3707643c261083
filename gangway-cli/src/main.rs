//! The `gangway` command-line tool: a WebSocket echo server with a demo page (`serve`), a
//! line-oriented client (`connect`), and the handshake's key arithmetic (`accept`, `key`).
//!
//! `main` only parses the command line and dispatches; each subcommand lives in its own module
//! with its own options struct.

// Denied, not forbidden: `heap` calls the C allocator (two calls, each with its SAFETY note).
#![deny(unsafe_code)]

mod backoff;
mod bench;
mod connect;
mod demo;
mod escape;
mod exit;
mod heap;
mod keys;
mod serve;
mod shutdown;
mod trace;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// WebSocket (RFC 6455) toolkit: echo server, client, and handshake helpers.
#[derive(Parser, Debug)]
#[command(name = "gangway", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an echo server with a demo page at http://ADDR/.
    Serve(serve::ServeOpts),
    /// Connect to a WebSocket server: stdin lines out, received messages on stdout.
    #[command(after_long_help = connect::AFTER_HELP)]
    Connect(connect::ConnectOpts),
    /// Print the Sec-WebSocket-Accept value for a Sec-WebSocket-Key.
    Accept(keys::AcceptOpts),
    /// Print a fresh random Sec-WebSocket-Key.
    Key(keys::KeyOpts),
    /// Load-test a WebSocket echo server: messages/s, MiB/s, latency percentiles, errors.
    #[command(after_long_help = bench::AFTER_HELP)]
    Bench(bench::BenchOpts),
}

fn main() -> ExitCode {
    // Usage errors exit with 2 (clap's convention, and the CLI contract); `--help` exits 0.
    let cli = Cli::parse();
    match cli.command {
        Command::Accept(opts) => keys::accept(&opts),
        Command::Key(opts) => keys::key(&opts),
        Command::Serve(opts) => {
            init_logging("info");
            let threads = opts.threads();
            run_serve(threads, serve::run(opts))
        }
        Command::Connect(opts) => {
            // The client's stderr belongs to the contract's `gangway: ...` lines; logs only
            // appear when asked for with RUST_LOG.
            init_logging("warn");
            run_async(connect::run(opts))
        }
        Command::Bench(opts) => {
            init_logging("warn");
            // Its own runtime: one thread by default, so the load can be pinned to one CPU.
            bench::run(opts)
        }
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the default level.
fn init_logging(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Run the server on `threads` worker threads.
///
/// One thread: a current-thread runtime, where accepting, handshakes and sessions share one
/// event loop with no cross-thread wake-ups (the cheapest setup per message on one CPU). More:
/// a multi-thread runtime with that many workers, and the accept loop itself runs on a worker
/// (spawned), so a connection task it spawns starts on that worker's local queue instead of
/// being handed over from the main thread.
fn run_serve(
    threads: usize,
    task: impl std::future::Future<Output = anyhow::Result<ExitCode>> + Send + 'static,
) -> ExitCode {
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gangway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(runtime.spawn(task)) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("gangway: {e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("gangway: the server task failed: {e}");
            ExitCode::FAILURE
        }
    };
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

/// Run a subcommand on a tokio runtime. An error that escapes it is printed as one
/// `gangway: ...` line (with its causes) and exits 1.
///
/// One thread: a single connection's reading, writing and printing wake each other at every
/// read, and on a multi-thread runtime each of those wake-ups crossed threads (a futex call and
/// a context switch each). A 1 MiB message arriving in 16,384 pieces of 64 bytes cost about two
/// futex calls per piece, and under load the connection waited for CPUs at every piece. Stdin
/// is read on a thread of its own; stdout is written by tokio's blocking pool.
fn run_async(task: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gangway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(task) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gangway: {e:#}");
            ExitCode::FAILURE
        }
    };
    // A blocking read of stdin cannot be cancelled; do not let it hold the process open.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

/// A duration option in seconds: a decimal number, fractions allowed (`0.5`); `0` turns the
/// timer off.
pub(crate) fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of seconds such as 30 or 0.5, got {s:?}"))?;
    // Negative, NaN, infinite and absurdly large values are refused here.
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("expected a number of seconds such as 30 or 0.5, got {s:?}"))
}

/// An error and its causes on one line: `outer: inner: innermost`, skipping a cause whose text
/// the previous one already contains. The system's own errors read as the rest of the line
/// does: `connection refused`, not `Connection refused (os error 111)`.
pub(crate) fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = describe(err);
    let mut source = err.source();
    while let Some(e) = source {
        let text = describe(e);
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = e.source();
    }
    line
}

/// One error's own text; an operating system error lowercase and without its number.
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let text = err.to_string();
    let Some(io) = err.downcast_ref::<std::io::Error>() else {
        return text;
    };
    let Some(number) = io.raw_os_error() else {
        return text;
    };
    let text = text
        .strip_suffix(&format!(" (os error {number})"))
        .unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_errors_read_lowercase_without_their_number() {
        let refused = std::io::Error::from_raw_os_error(111);
        assert_eq!(causes(&refused), "connection refused");
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn causes_joins_the_source_chain() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(causes(&e), "outer: inner");
    }

    #[test]
    fn command_line_parses_repeated_options() {
        let cli = Cli::try_parse_from([
            "gangway",
            "connect",
            "ws://127.0.0.1:1/",
            "--protocol",
            "a",
            "--protocol",
            "b",
            "-H",
            "X-One: 1",
            "--header",
            "X-Two:2",
            "--binary",
        ])
        .expect("valid command line");
        let Command::Connect(opts) = cli.command else {
            panic!("parsed as another subcommand");
        };
        assert_eq!(opts.protocols, ["a", "b"]);
        assert_eq!(
            opts.headers,
            [
                ("X-One".to_owned(), "1".to_owned()),
                ("X-Two".to_owned(), "2".to_owned())
            ]
        );
        assert!(opts.binary && !opts.echo);
    }

    #[test]
    fn connect_text_and_binary_exclude_each_other() {
        use clap::error::ErrorKind;
        let err = Cli::try_parse_from(["gangway", "connect", "ws://x/", "--text", "--binary"])
            .expect_err("both framings");
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        let err = Cli::try_parse_from(["gangway", "connect", "ws://x/", "--max-retries", "2"])
            .expect_err("a limit without --reconnect");
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        let cli = Cli::try_parse_from(["gangway", "connect", "ws://x/", "--reconnect", "-v"])
            .expect("valid command line");
        let Command::Connect(opts) = cli.command else {
            panic!("parsed as another subcommand");
        };
        assert!(opts.reconnect && opts.verbose && opts.max_retries.is_none());
    }

    #[test]
    fn malformed_header_option_is_a_usage_error() {
        let err = Cli::try_parse_from(["gangway", "connect", "ws://x/", "-H", "no colon"])
            .expect_err("header without a colon");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn seconds_take_fractions_and_refuse_negatives() {
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        for bad in ["-1", "NaN", "inf", "1e30", "", "soon"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serve_origin_option_takes_origins_only() {
        for good in ["https://example.com", "http://localhost:8080/", "null"] {
            let cli = Cli::try_parse_from(["gangway", "serve", "--origin", good]);
            assert!(cli.is_ok(), "{good}");
        }
        for bad in [
            "example.com",
            "https://example.com/path",
            "https://a@b",
            "https://x/?q",
        ] {
            let err = Cli::try_parse_from(["gangway", "serve", "--origin", bad])
                .expect_err("not an origin");
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
