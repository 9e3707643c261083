#!/usr/bin/env python3
"""WebSockets over one HTTP/2 connection (RFC 8441) against one TCP connection each (HTTP/1.1).

Starts `gangway serve` (release build) pinned to CPU 0 and drives it with `gangway bench`
pinned to CPU 1: N WebSockets echoing messages, either over N TCP connections (`http/1.1`) or as
N streams of one HTTP/2 connection (`h2`, `bench --http2`, cleartext with prior knowledge). For
each run it samples from /proc, while the load runs:

- the server's CPU time, per echoed message (the steady part of the run, as
  scripts/bench-compare.py measures it), and the load generator's;
- the server's resident memory above what it held before the load connected, per WebSocket
  (the connections are busy: this includes their buffers and, over HTTP/2, the streams'
  state and the connection's windows);
- and, in a run of its own (`bench --idle`), the same memory while the WebSockets are open and
  idle.

Rounds alternate the two transports; the table shows medians and the h2 / http/1.1 ratios.
Only the Python standard library is used; every process started here is stopped before exit.

    scripts/bench-http2.py                     # 100 WebSockets, 16 B and 1 KiB, 3 rounds
    scripts/bench-http2.py --connections 100 --rounds 5 --duration 5
"""

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_INTERVAL = 0.02


# Starting and stopping processes and reading their CPU time: scripts/bench-compare.py's.
_spec = importlib.util.spec_from_file_location(
    "bench_compare", os.path.join(ROOT, "scripts", "bench-compare.py"))
_compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_compare)
Failure, start, stop, cpu_ns, RUNNING = (
    _compare.Failure, _compare.start, _compare.stop, _compare.cpu_ns, _compare.RUNNING)


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def start_server(binary):
    proc = start(["taskset", "-c", "0", binary, "serve", "--listen", "127.0.0.1:0",
                  "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("listening on "):
        raise Failure(f"unexpected first line of serve: {line!r}")
    addr = line.split()[-1]
    host, port = addr.rsplit(":", 1)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise Failure("serve does not accept connections")
            time.sleep(0.02)
    # Let the probe connection's task end before the baseline is read.
    time.sleep(0.3)
    return proc, addr


def run(args, transport, payload, idle=False):
    """One run of the load against a fresh server. With `idle`, the WebSockets are opened and
    kept idle (`bench --idle`): only the memory is measured."""
    server, addr = start_server(args.bin)
    try:
        baseline = rss_bytes(server.pid)
        argv = ["taskset", "-c", "1", args.bin, "bench", f"ws://{addr}/", "--json",
                "--connections", str(args.connections), "--payload", str(payload),
                "--window", str(args.window),
                "--duration", str(args.duration), "--warmup", str(args.warmup)]
        if transport == "h2":
            argv.append("--http2")
        if idle:
            argv.append("--idle")
        out = tempfile.TemporaryFile()
        err = tempfile.TemporaryFile()
        load = start(argv, stdout=out, stderr=err)
        samples = []  # (time, server cpu, load cpu, server rss)
        deadline = time.monotonic() + args.warmup + args.duration + 60
        while load.poll() is None:
            if server.poll() is not None or time.monotonic() > deadline:
                break
            try:
                samples.append((time.monotonic(), cpu_ns(server.pid), cpu_ns(load.pid),
                                rss_bytes(server.pid)))
            except (FileNotFoundError, ProcessLookupError):
                pass
            time.sleep(SAMPLE_INTERVAL)
        exited = time.monotonic()
        stop(load)
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode(), err.read().decode(errors="replace")
        if server.poll() is not None:
            raise Failure(f"serve exited with {server.returncode}")
        if load.returncode != 0:
            raise Failure(f"bench exited with {load.returncode}: {errors.strip()[-400:]}")
        result = json.loads([l for l in text.splitlines() if l.startswith("{")][-1])
        d = result["duration_s"]
        window = [s for s in samples if exited - 0.8 * d <= s[0] <= exited - 0.2 * d]
        if len(window) < 2:
            # The sampler was starved (a busy machine): the middle third of what it took.
            window = samples[len(samples) // 3: 2 * len(samples) // 3 + 1]
        if len(window) < 2:
            raise Failure(f"{len(samples)} samples only (--duration too short?)")
        if idle:
            if result.get("errors"):
                raise Failure(f"bench reported {result.get('errors')} errors")
            rss = statistics.median(s[3] for s in window)
            return {"rss_per_ws": (rss - baseline) / args.connections}
        if result.get("errors") or not result.get("count"):
            raise Failure(f"bench reported {result.get('errors')} errors, "
                          f"{result.get('count')} messages")
        # The steady part: between 0.8 and 0.2 durations before the load exited.
        (ta, sa, la, _), (tb, sb, lb, _) = window[0], window[-1]
        rate = result["per_s"]
        rss = statistics.median(s[3] for s in window)
        return {
            "per_s": rate,
            "p50_us": result["p50_us"],
            "p99_us": result["p99_us"],
            "server_us": (sb - sa) / (tb - ta) / rate / 1000,
            "load_us": (lb - la) / (tb - ta) / rate / 1000,
            "rss_per_ws": (rss - baseline) / args.connections,
        }
    finally:
        stop(server)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "gangway"))
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--payloads", default="16,1024")
    parser.add_argument("--window", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3)
    parser.add_argument("--warmup", type=float, default=1)
    args = parser.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"bench-http2: no gangway binary at {args.bin} (cargo build --release -p gangway-cli)")
    payloads = [int(p) for p in args.payloads.split(",")]
    transports = ["http/1.1", "h2"]
    results = {(t, p): [] for t in transports for p in payloads}
    idle = {t: [] for t in transports}
    for r in range(args.rounds):
        order = transports if r % 2 == 0 else transports[::-1]
        for p in payloads:
            for t in order:
                results[(t, p)].append(run(args, t, p))
                sys.stderr.write(f"round {r + 1}: {t} {p} B done\n")
        for t in order:
            idle[t].append(run(args, t, 0, idle=True)["rss_per_ws"])
            sys.stderr.write(f"round {r + 1}: {t} idle done\n")

    def med(t, p, key):
        return statistics.median(x[key] for x in results[(t, p)])

    print(f"{args.connections} WebSockets, window {args.window}, {args.rounds} rounds "
          f"(medians); server on CPU 0, load on CPU 1\n")
    print("| payload | transport | msg/s | p50 µs | p99 µs | server CPU µs/msg | "
          "load CPU µs/msg | server RSS per WebSocket |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for p in payloads:
        for t in transports:
            label = ("100 TCP connections" if t == "http/1.1" else "1 HTTP/2 connection") \
                if args.connections == 100 else t
            print(f"| {p} B | {t} ({label}) | {med(t, p, 'per_s'):,.0f} | "
                  f"{med(t, p, 'p50_us'):.0f} | {med(t, p, 'p99_us'):.0f} | "
                  f"{med(t, p, 'server_us'):.2f} | {med(t, p, 'load_us'):.2f} | "
                  f"{med(t, p, 'rss_per_ws') / 1024:.1f} KiB |")
        ratio = lambda key: med("h2", p, key) / med("http/1.1", p, key)
        print(f"| {p} B | h2 / http/1.1 | {ratio('per_s'):.2f}× | {ratio('p50_us'):.2f}× | "
              f"{ratio('p99_us'):.2f}× | {ratio('server_us'):.2f}× | {ratio('load_us'):.2f}× | "
              f"{ratio('rss_per_ws'):.2f}× |")
    h1_idle, h2_idle = statistics.median(idle["http/1.1"]), statistics.median(idle["h2"])
    print(f"\nIdle (`bench --idle`, {args.connections} WebSockets open, nothing sent): server RSS "
          f"per WebSocket {h1_idle:,.0f} B over http/1.1, {h2_idle:,.0f} B over h2 "
          f"({h2_idle / h1_idle if h1_idle > 0 else float('nan'):.2f}×).")


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        sys.exit(f"bench-http2: {e}")
    finally:
        for proc in list(RUNNING):
            stop(proc)
