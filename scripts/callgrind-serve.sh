#!/usr/bin/env bash
# User-space instructions per echoed message of an echo server, counted by callgrind (repeatable
# where timing is not): the server runs under valgrind with instrumentation off, a run of
# `gangway bench` load (the same as measured) warms it up, then instrumentation is switched on
# for a measured run.
#
#   scripts/callgrind-serve.sh [--server raw|floor|echofloor|gangway] [--out FILE] [BENCH ARGS...]
#
#   scripts/callgrind-serve.sh --connections 64 --window 16 --payload 16 --duration 2
#   scripts/callgrind-serve.sh --server raw --connections 64 --window 16 --payload 16 --duration 2
#
#   scripts/callgrind-serve.sh --server floor --connections 64 --handshakes --duration 2
#
# `gangway` is target/release/gangway serve, keepalive and idle timeout off as in
# scripts/bench-compare.py (or $GANGWAY_BIN: a release build with line tables gives per-line
# figures); `raw` is the raw TCP echo of bench/peers, `floor` its handshake floor and `echofloor`
# its echo floor (built by bench-compare.py). Messages are handshake cycles with --handshakes.
# Prints the messages echoed, the instructions counted and their quotient; `callgrind_annotate
# FILE` shows where they went. Needs valgrind (Debian package `valgrind`). Loopback only; the
# server is stopped on exit.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

server=gangway
out=$(mktemp /tmp/callgrind.serve.XXXXXX)
while [[ $# -gt 0 ]]; do
    case $1 in
        --server) server=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) break ;;
    esac
done
command -v valgrind >/dev/null || { echo "callgrind-serve.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 2; }
gw=${GANGWAY_BIN:-target/release/gangway}
[[ -x $gw ]] || { echo "callgrind-serve.sh: build first: cargo build --release -p gangway-cli" >&2; exit 2; }

port=$((20000 + RANDOM % 20000))
extra=()
case $server in
    gangway) cmd=("$gw" serve --listen "127.0.0.1:$port" --no-deflate --ping-interval 0 --idle-timeout 0) ;;
    raw)
        cmd=(bench/peers/target/release/raw-echo --listen "127.0.0.1:$port")
        [[ -x ${cmd[0]} ]] || { echo "callgrind-serve.sh: build bench/peers first (cd bench/peers && cargo build --release)" >&2; exit 2; }
        extra=(--raw-echo) ;;
    floor|echofloor)
        cmd=(bench/peers/target/release/handshake-floor --listen "127.0.0.1:$port")
        [[ $server == echofloor ]] && cmd+=(--echo)
        [[ -x ${cmd[0]} ]] || { echo "callgrind-serve.sh: build bench/peers first (cd bench/peers && cargo build --release)" >&2; exit 2; } ;;
    *) echo "callgrind-serve.sh: --server raw|floor|echofloor|gangway" >&2; exit 2 ;;
esac

RUST_LOG=warn taskset -c 0 valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$out" "${cmd[@]}" >/dev/null 2>"$out.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    sleep 0.2
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
done
# Warm-up: the same load, not counted.
taskset -c 1 "$gw" bench "ws://127.0.0.1:$port/" --warmup 0 "${extra[@]}" "$@" >/dev/null
callgrind_control -i on "$pid" >/dev/null 2>&1
result=$(taskset -c 1 "$gw" bench "ws://127.0.0.1:$port/" --json --warmup 0 "${extra[@]}" "$@")
callgrind_control -i off "$pid" >/dev/null 2>&1
# Dumped while it runs (to FILE.1): not every server exits cleanly on a signal.
callgrind_control -d "$pid" >/dev/null 2>&1
kill -INT "$pid"
for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
trap - EXIT
mv "$out.1" "$out"
count=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["count"])' "$result")
# The sum of every function's own cost (the program total is not kept for a run whose
# instrumentation was switched on and off).
# (`--auto=no`: a build with debug info would otherwise add its annotated source lines.)
instr=$(callgrind_annotate --auto=no --threshold=100 "$out" 2>/dev/null |
    awk '/file:function/ {f = 1; next} f && $1 ~ /^[0-9,]+$/ {gsub(",", "", $1); s += $1} END {printf "%.0f\n", s}')
echo "server=$server messages=$count instructions=$instr per_message=$((instr / count)) file=$out"
