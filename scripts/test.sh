#!/usr/bin/env bash
# Run every check and test of the project: the command the README gives and CI runs (.ci/run).
#
# Needs the Rust toolchain (with rustfmt and clippy), Python 3.11+, Node.js 20+ with npm, and the
# package registries. It installs, inside the repository only:
#   - interop/.venv        a Python venv with the pinned peers of interop/python/requirements.txt
#                          (websockets, pytest); python3-venv comes from apt if venv is missing;
#   - interop/node_modules the npm packages of interop/package.json (ws, playwright-core);
# and, outside it, Debian's chromium with apt-get when /usr/bin/chromium is missing (the browser
# test drives it headless; no tool ever downloads a browser of its own), and Debian's
# redis-server and nats-server when missing (gangway-bus's tests start them on loopback ports).
#
# Every step runs, in order, and any failure stops the script with a non-zero exit: there is no
# switch to skip a step.
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

TOTAL_STEPS=17
steps_done=0
current=""
started_all=$SECONDS

step() {
    current=$1
    step_started=$SECONDS
    printf '\n==> [%d/%d] %s\n' "$((steps_done + 1))" "$TOTAL_STEPS" "$current"
}

step_ok() {
    steps_done=$((steps_done + 1))
    printf -- '--> ok: %s (%ds)\n' "$current" "$((SECONDS - step_started))"
}

on_error() {
    local status=$?
    printf '\ntest.sh: FAILED at step "%s" (exit %d)\n' "$current" "$status" >&2
    printf 'steps: %d passed, 1 failed\n' "$steps_done"
    exit "$status"
}
trap on_error ERR

# playwright-core never downloads a browser, but make sure nothing in the npm tree tries: the
# browser test uses Debian's chromium.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

fail() {
    printf 'test.sh: %s\n' "$*" >&2
    false
}

require() {
    command -v "$1" >/dev/null 2>&1 || fail "$1 is required but not installed ($2)"
}

# Runs a command as root, through sudo when we are not root (fresh CI machines run as root).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        fail "need root to run: $*"
    fi
}

current="prerequisites"
require cargo "install Rust with rustup"
require python3 "apt-get install python3"
require node "apt-get install nodejs, or Node.js 20+"
require npm "apt-get install npm"
require openssl "apt-get install openssl (the browser test makes a self-signed certificate)"
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        require rustup "the $component component is missing and rustup is not there to add it"
        rustup component add "$component"
    fi
done
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    fail "Python 3.11 or later is required (websockets 17), found $(python3 --version 2>&1)"
echo "$(cargo --version); $(python3 --version); node $(node --version); npm $(npm --version)"
# The builds (debug, release, fuzz) take about 5 GB here: say what is free, so that a run that
# fails for want of space says so from the start.
free_kib=$(df -Pk . | awk 'NR == 2 {print $4}')
echo "disk: $((free_kib / 1024 / 1024)) GiB free where the builds go"
if [ "$free_kib" -lt $((6 * 1024 * 1024)) ]; then
    echo "test.sh: warning: less than 6 GiB free; the builds may run out of space" >&2
fi

# --- Rust ---------------------------------------------------------------------------------------

step "cargo fmt --all -- --check"
cargo fmt --all -- --check
step_ok

step "cargo clippy (default features, all features, no default features), warnings denied"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo clippy -p gangway-proto -p gangway --all-targets --no-default-features -- -D warnings
# The bus with one engine each (a user who needs one builds only that one).
cargo clippy -p gangway-bus --all-targets --no-default-features --features redis -- -D warnings
cargo clippy -p gangway-bus --all-targets --no-default-features --features nats -- -D warnings
step_ok

step "cargo doc --workspace --no-deps --all-features (warnings denied)"
RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps --all-features
step_ok

step "cargo test --workspace --all-features (examples included)"
# The bus's tests run real engines: Debian's redis-server and nats-server, started by the tests
# on free loopback ports and killed by PID afterwards.
engines=()
[ -x /usr/bin/redis-server ] || engines+=(redis-server)
[ -x /usr/sbin/nats-server ] || [ -x /usr/bin/nats-server ] || engines+=(nats-server)
if [ "${#engines[@]}" -gt 0 ]; then
    echo "installing ${engines[*]} with apt-get"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${engines[@]}"
    # Debian starts the packaged services; the tests start their own, on other ports.
    for service in "${engines[@]}"; do
        as_root systemctl stop "$service" >/dev/null 2>&1 || true
    done
fi
/usr/bin/redis-server --version
{ /usr/sbin/nats-server --version || /usr/bin/nats-server --version; } 2>/dev/null
cargo test --workspace --all-features
step_ok

step "cargo build --release -p gangway-cli"
cargo build --release -p gangway-cli
# Honour CARGO_TARGET_DIR and any other way the target directory was moved.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
GANGWAY_BIN="$target_dir/release/gangway"
[ -x "$GANGWAY_BIN" ] || fail "the release build did not produce $GANGWAY_BIN"
export GANGWAY_BIN
echo "GANGWAY_BIN=$GANGWAY_BIN"
step_ok

# ---------------------------------------------------------------------------------------------
step "10,000 idle connections, with and without permessage-deflate: server RSS per connection (scripts/idle-conns.py)"
# Prints the figures; fails above 1.5 KiB per idle connection, also after one 64 KiB echo on each
# connection (a guard against regressions: with serve's defaults, keepalive on, the figures are
# about 1,070 and 1,150 bytes; bench/RESULTS.md).
python3 scripts/idle-conns.py --no-build --connections 10000 --settle 2 --max-idle-bytes 1536 --max-after-echo-bytes 1536
# The same with permessage-deflate, serve's default configuration: each connection echoes one
# compressed 1 KiB JSON-like text message, then idles. Fails above 16 KiB per connection, with
# the offer of Chromium, Python websockets and Node ws, then with Firefox's (about 5.3 KB and
# 1.2 KB: the client's 4 KiB window is all a connection keeps; docs/deflate.md).
for offer in "permessage-deflate; client_max_window_bits" "permessage-deflate"; do
    python3 scripts/idle-conns.py --no-build --connections 10000 --settle 2 --message-size 1024 \
        --deflate "$offer" --max-idle-bytes 1536 --max-after-echo-bytes 16384
done
step_ok

# ---------------------------------------------------------------------------------------------
step "conformance suite against the release binary, both roles (serve, connect --echo)"
# GANGWAY_BIN (exported above) names the shipped binary for the suite's binary runs (ignored by a
# plain `cargo test`, included here), heavy 8 and 16 MiB cases included.
cargo test -p gangway --all-features --test conformance -- --include-ignored --nocapture
step_ok

# ---------------------------------------------------------------------------------------------
step "1 GiB message streamed fragment by fragment through an echo: peak RSS (examples/big_message.rs)"
cargo run --release -p gangway --example big_message
step_ok

# ---------------------------------------------------------------------------------------------
step "fuzz every target of the core (scripts/fuzz.sh, ${FUZZ_SECONDS:-60}s each)"
bash scripts/fuzz.sh
step_ok

# --- Interop: Python websockets -----------------------------------------------------------------

step "Python venv with the interop peers (interop/.venv)"
VENV="$ROOT/interop/.venv"
venv_python="$VENV/bin/python"
# Reuse the venv only when it still runs and was made by this python3.
if [ -x "$venv_python" ] &&
    [ "$("$venv_python" -c 'import sys; print(sys.version)' 2>/dev/null)" = \
        "$(python3 -c 'import sys; print(sys.version)')" ]; then
    echo "reusing $VENV"
else
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV"; then
        # Debian ships venv/ensurepip separately from python3.
        echo "python3 -m venv failed; installing python3-venv with apt-get"
        rm -rf "$VENV"
        as_root apt-get update
        py_minor=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv "python${py_minor}-venv"
        python3 -m venv "$VENV"
    fi
fi
"$venv_python" -m pip install --disable-pip-version-check --quiet -r interop/python/requirements.txt
"$venv_python" -m pip --disable-pip-version-check list 2>/dev/null | grep -Ei '^(websockets|pytest) '
step_ok

step "interop: Python websockets <-> gangway (pytest interop/python)"
# pytest exits non-zero when a test fails and when it collects none (exit 5).
"$venv_python" -m pytest -q interop/python
step_ok

# --- Interop: Node ws ---------------------------------------------------------------------------

step "interop: Node ws <-> gangway (npm packages, node --test interop/node)"
if [ -f interop/package-lock.json ]; then
    npm ci --prefix interop --no-audit --no-fund
else
    npm install --prefix interop --no-audit --no-fund
fi
shopt -s nullglob
node_tests=(interop/node/*.test.mjs interop/node/*.test.js interop/node/*.test.cjs)
shopt -u nullglob
[ "${#node_tests[@]}" -gt 0 ] || fail "no Node interop tests found in interop/node"
# The files are listed explicitly: how `node --test` expands a directory differs across Node
# versions. It exits non-zero on any failure.
node --test "${node_tests[@]}"
step_ok

# --- Interop: headless Chromium -----------------------------------------------------------------

step "interop: headless Chromium <-> gangway serve demo page (node --test interop/browser)"
CHROMIUM_BIN=/usr/bin/chromium
if [ ! -x "$CHROMIUM_BIN" ]; then
    echo "$CHROMIUM_BIN is missing; installing Debian's chromium with apt-get"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
[ -x "$CHROMIUM_BIN" ] || fail "apt-get install chromium did not provide $CHROMIUM_BIN"
# The wrapper script may print noise on stderr; the version line is on stdout.
"$CHROMIUM_BIN" --version 2>/dev/null
export CHROMIUM_BIN
shopt -s nullglob
browser_tests=(interop/browser/*.test.mjs)
shopt -u nullglob
[ "${#browser_tests[@]}" -gt 0 ] || fail "no browser tests found in interop/browser"
# interop/node_modules (playwright-core) was installed by the previous step.
node --test "${browser_tests[@]}"
step_ok

# --- Performance: figures, side by side -------------------------------------------------------
# These steps print figures (ratios to gangway and to the raw TCP ceiling); they fail only when a
# run fails (a server dies, the load counts an error), never on a figure: speed is read, not
# asserted. The full comparison for bench/RESULTS.md is `scripts/bench-compare.py` without --quick.

step "criterion micro-benchmarks of the core, short (masking, UTF-8, frame headers, handshake, echo path)"
cargo bench -p gangway-proto --bench protocol -- --warm-up-time 0.2 --measurement-time 0.6
step_ok

step "side-by-side echo benchmark, quick: gangway vs tokio-tungstenite, fastwebsockets, uWebSockets.js, raw TCP"
# Builds the peers of bench/peers (crates.io), installs uWebSockets.js from npm, pins the server
# to CPU 0 and the load (gangway bench) to CPU 1.
python3 scripts/bench-compare.py --quick --with-uws
step_ok

step "WebSocket over HTTP/2, quick: 100 WebSockets on one HTTP/2 connection vs 100 TCP connections"
# Server and load CPU per message and server memory per WebSocket, side by side (the full run for
# bench/RESULTS.md is three rounds of three seconds: scripts/bench-http2.py without options).
python3 scripts/bench-http2.py --bin "$GANGWAY_BIN" --rounds 1 --duration 1 --warmup 0.5
step_ok

step "broadcast, quick: gangway serve --broadcast vs tokio-tungstenite + broadcast, uWebSockets.js pub/sub; memory of one publish"
# The same pinning as above; 100 and 1,000 members in one room (scripts/bench-broadcast.py
# without --quick runs 5,000 too, the fairness and the memory scenarios). Then the memory one
# message published to 10,000 members adds, counted allocation by allocation; the example exits
# 1 if the publish kept more than one copy of the frame, or members that wrote it kept anything.
python3 scripts/bench-broadcast.py --quick --with-uws
cargo run --release -p gangway --example broadcast_memory
step_ok

trap - ERR
printf '\ntest.sh: all %d steps passed in %ds\n' "$steps_done" "$((SECONDS - started_all))"
printf 'steps: %d passed, 0 failed\n' "$steps_done"
