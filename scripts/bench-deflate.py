#!/usr/bin/env python3
"""Compressed echo throughput: `gangway serve` beside Python `websockets` and Node `ws` servers.

Each server echoes over permessage-deflate (RFC 7692) on 127.0.0.1. The load is the same for all
three: `gangway connect --deflate` (release build, a compiled client) sends N JSON-like text
messages of SIZE bytes from stdin, back to back, and prints every echo; the time from the start
to the last echo gives the throughput (message bytes echoed per second, counted once). Stdin stays
open until the last echo, as a server may drop the echoes it still owes once the client's close
arrives. Each server runs with its library's default compression settings:

- gangway: `gangway serve` (`--deflate-mode window`: server messages without context takeover
  and a 15-bit window, client messages with context takeover in a 12-bit window; level 6,
  threshold 32 bytes);
- websockets: `serve(..., compression="deflate")` (context takeover, 12-bit windows, memLevel 5);
- ws: `new WebSocketServer({ perMessageDeflate: true })` (window 15 bits, threshold 1024 bytes).

Prints one line per server and size, then the throughputs side by side, then each server's own
CPU time per echoed message side by side (from /proc: what the server itself costs, whatever
else the machine was doing):

    gangway      16384 B x 1953:   0.31 s,  103.1 MB/s, server CPU   41.0 us/message (deflate on)

With --memory N it measures memory instead: N Python `websockets` clients (one process, their
default offer `permessage-deflate; client_max_window_bits`) connect to each server, each echoes
one JSON-like text message of --message-size bytes (1 KiB), and all stay connected, idle; the
server's resident set size (VmRSS) grows by what N such connections cost. It runs `gangway serve`
in each --deflate-mode, and the websockets server:

    gangway window      2000 connections:   +11236 KiB,    5752 bytes per connection

Needs the interop peers (interop/.venv with websockets, interop/node_modules with ws) and the
release binary (GANGWAY_BIN overrides target/release/gangway). Every process started here is
stopped before exit; each run is bounded by --timeout.

    scripts/bench-deflate.py
    scripts/bench-deflate.py --sizes 1024,65536 --bytes 16000000
    scripts/bench-deflate.py --memory 2000
"""

import argparse
import json
import os
import resource
import subprocess
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PY_SERVER = r"""
import asyncio
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def run():
    async with serve(echo, "127.0.0.1", 0, compression="deflate", max_size=None,
                     ping_interval=None) as s:
        print(f"listening on 127.0.0.1:{s.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()
asyncio.run(run())
"""

NODE_SERVER = r"""
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: true,
                                  maxPayload: 0 });
wss.on('connection', (ws) => ws.on('message', (d, isBinary) => ws.send(d, { binary: isBinary })));
wss.on('listening', () => console.log(`listening on 127.0.0.1:${wss.address().port}`));
"""


MEMORY_CLIENT = r"""
import asyncio, sys
from websockets.asyncio.client import connect
url, n, text = sys.argv[1], int(sys.argv[2]), sys.stdin.readline().rstrip("\n")
async def one():
    ws = await connect(url, max_size=None, ping_interval=None, proxy=None, open_timeout=30)
    await ws.send(text)
    if await ws.recv() != text:
        raise SystemExit("echo differs")
    return ws
async def run():
    conns = []
    for i in range(0, n, 100):
        conns += await asyncio.gather(*(one() for _ in range(min(100, n - i))))
    agreed = {c.response.headers.get("Sec-WebSocket-Extensions") for c in conns}
    print(f"ready {sorted(agreed, key=str)!r}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.gather(*(c.close() for c in conns))
asyncio.run(run())
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")


def measure_memory(name, argv, cwd, venv_python, n, size, timeout):
    """Server RSS growth for `n` idle websockets clients that each echoed one message."""
    proc, addr = start(argv, cwd)
    client = None
    try:
        time.sleep(0.5)
        before = rss_kib(proc.pid)
        client = subprocess.Popen([venv_python, "-c", MEMORY_CLIENT, f"ws://{addr}/", str(n)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        deadline = threading.Timer(timeout, client.kill)
        deadline.start()
        client.stdin.write(message(size, 0) + "\n")
        client.stdin.flush()
        line = client.stdout.readline().strip()
        deadline.cancel()
        if not line.startswith("ready"):
            raise SystemExit(f"{name}: the clients did not get ready ({line!r})")
        time.sleep(2)
        after = rss_kib(proc.pid)
        per_conn = (after - before) * 1024 // n
        print(f"{name:<19} {n} connections: {after - before:+8d} KiB, {per_conn:7d} bytes per "
              f"connection (answer {line.removeprefix('ready ')})", flush=True)
        return per_conn
    finally:
        if client is not None:
            client.kill()
            client.wait()
        proc.kill()
        proc.wait()


def message(size, i):
    """JSON-like text of `size` bytes (no newline): compresses about tenfold."""
    parts, total, j = [], 0, i * 1000
    while total < size:
        part = f'{{"id":{j},"name":"gangway","tags":["ws","deflate"],"ok":true}},'
        parts.append(part)
        total += len(part)
        j += 1
    return "".join(parts)[:size]


def start(argv, cwd):
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        raise SystemExit(f"{argv[0]} did not start: {line!r}")
    return proc, line.removeprefix("listening on ")


def cpu_seconds(pid):
    """User + system CPU time of `pid` so far (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(gangway, addr, size, count, timeout):
    """Send `count` messages, wait for every echo, then close: (seconds to the last echo,
    "on"/"OFF" for deflate)."""
    lines = [(message(size, i) + "\n").encode() for i in range(count)]
    proc = subprocess.Popen([gangway, "connect", "--deflate", f"ws://{addr}/"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = threading.Timer(timeout, proc.kill)
    deadline.start()

    def feed():
        try:
            for line in lines:
                proc.stdin.write(line)
            proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    started = time.monotonic()
    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    echoed = 0
    while echoed < count and proc.stdout.readline():
        echoed += 1
    elapsed = time.monotonic() - started
    writer.join()
    proc.stdin.close()
    proc.stdout.read()
    stderr = proc.stderr.read()
    status = proc.wait()
    deadline.cancel()
    if echoed != count or status != 0:
        raise SystemExit(f"{echoed} of {count} echoes, exit {status}: {stderr.decode()!r}")
    deflate = "on" if b"permessage-deflate: on" in stderr else "OFF"
    return elapsed, deflate


def side_by_side(results, key, suffix, fmt, servers, sizes):
    """A table of `key` per size (rows) and server (columns), each with its ratio to gangway's."""
    values = {(r["server"], r["size"]): r[key] for r in results}
    print(f"\n{'size':>8}  " + "  ".join(f"{name + suffix:>16}" for name in servers))
    for size in sizes:
        base = values.get(("gangway", size))
        cells = []
        for name in servers:
            value = values.get((name, size))
            ratio = f"{value / base:4.2f}x" if value and base else "  - "
            cells.append(f"{fmt.format(value)} {ratio}" if value is not None else f"{'-':>16}")
        print(f"{size:>8}  " + "  ".join(f"{c:>16}" for c in cells))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1024,16384,131072", help="message sizes, bytes")
    p.add_argument("--bytes", type=int, default=32_000_000, help="message bytes sent per run")
    p.add_argument("--timeout", type=int, default=300, help="bound on each run, seconds")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    p.add_argument("--memory", type=int, metavar="N",
                   help="measure server memory with N idle websockets clients instead")
    p.add_argument("--message-size", type=int, default=1024,
                   help="with --memory: the message each client echoes (default 1024)")
    args = p.parse_args()
    gangway = os.environ.get("GANGWAY_BIN", os.path.join(ROOT, "target", "release", "gangway"))
    venv_python = os.path.join(ROOT, "interop", ".venv", "bin", "python")
    if args.memory:
        # Both ends need a descriptor per connection; the processes inherit the limit.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = args.memory + 256
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
        serve = [gangway, "serve", "--listen", "127.0.0.1:0"]
        for name, argv in [
            ("gangway window", serve),
            ("gangway shared", [*serve, "--deflate-mode", "shared"]),
            ("gangway dedicated", [*serve, "--deflate-mode", "dedicated"]),
            ("websockets", [venv_python, "-c", PY_SERVER]),
        ]:
            measure_memory(name, argv, ROOT, venv_python, args.memory, args.message_size,
                           args.timeout)
        return
    servers = {
        "gangway": ([gangway, "serve", "--listen", "127.0.0.1:0"], ROOT),
        "websockets": ([venv_python, "-c", PY_SERVER], ROOT),
        "ws": (["node", "-e", NODE_SERVER], os.path.join(ROOT, "interop")),
    }
    results = []
    for name, (argv, cwd) in servers.items():
        proc, addr = start(argv, cwd)
        try:
            for size in [int(s) for s in args.sizes.split(",")]:
                count = max(1, args.bytes // size)
                cpu_before = cpu_seconds(proc.pid)
                elapsed, deflate = run_load(gangway, addr, size, count, args.timeout)
                cpu_us = (cpu_seconds(proc.pid) - cpu_before) / count * 1e6
                rate = size * count / elapsed / 1e6
                print(f"{name:<11} {size:>7} B x {count}: {elapsed:6.2f} s, {rate:6.1f} MB/s, "
                      f"server CPU {cpu_us:6.1f} us/message (deflate {deflate})", flush=True)
                results.append({"server": name, "size": size, "count": count,
                                "seconds": round(elapsed, 3), "mb_per_s": round(rate, 1),
                                "server_cpu_us": round(cpu_us, 1)})
        finally:
            proc.kill()
            proc.wait()
    sizes = [int(s) for s in args.sizes.split(",")]
    # Side by side: each server's throughput as a ratio to gangway's at the same size
    # (above 1.00 means faster than gangway).
    side_by_side(results, "mb_per_s", "", "{:7.1f} MB/s", list(servers), sizes)
    # The part each server controls, measured whatever else the two shared CPUs were doing: its
    # own CPU time per echoed message (user + system, from /proc), and the ratio to gangway's
    # (above 1.00 means more CPU than gangway).
    side_by_side(results, "server_cpu_us", " CPU", "{:6.1f} us", list(servers), sizes)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
