#!/usr/bin/env python3
"""Side-by-side comparison of `gangway serve` with peer WebSocket echo servers.

Runs, on loopback, `gangway serve` and the bench-only echo servers of bench/peers/ (tokio-tungstenite,
fastwebsockets, a raw TCP echo that is the ceiling of the echo scenarios, a handshake floor that
is the least any server does per handshake cycle; optionally uWebSockets.js), each pinned to
CPU 0 with taskset, and drives each with the same load, `gangway bench ... --json` pinned to CPU 1.
For every scenario and round it measures the server's CPU time from /proc while the load runs, and
reads throughput and latency from the load's JSON. Rounds are interleaved: round 1 runs every
server, round 2 every server again in another order, and so on; the tables show medians over
rounds and every server's ratio to gangway.

Scenarios: echo of 16 B, 1 KiB and 64 KiB messages over 1, 64 and 1000 connections with window 1
(request/response) and 16 (pipelined), binary and text; connect-upgrade-close cycles per second
(--handshakes); RSS per idle connection with 10,000 connections, and after each has carried one
64 KiB message.

Only the Python standard library is used. Every process started here is stopped before exit; the
exit status is 1 if any run failed (a server died, the load reported errors or exited non-zero).

    scripts/bench-compare.py                      # everything, 3 rounds (tens of minutes)
    scripts/bench-compare.py --quick              # a small subset, a few minutes (CI)
    scripts/bench-compare.py --only gangway,raw --rounds 5 --markdown /tmp/bench.md
    scripts/bench-compare.py --handshakes-only --only gangway,floor --rounds 5
    scripts/bench-compare.py --only gangway,raw,floor --connections 64,1000 --windows 16 \
        --binary-only --rounds 3 --duration 2 --warmup 0.5   # pipelined ratios, a few minutes
"""

import argparse
import importlib.util
import json
import os
import platform
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "bench", "peers")
UWS_DIR = os.path.join(PEERS, "uws")

# In-flight bytes (connections * window * payload) above which an echo scenario is skipped: the
# load would only measure socket buffers and memory pressure.
MAX_IN_FLIGHT = 64 << 20
MEMORY_CONNECTIONS = 10_000
MEMORY_MESSAGE = 64 << 10
# Seconds between two readings of the server's CPU time while a load runs.
SAMPLE_INTERVAL = 0.02


class Failure(Exception):
    """A run or the setup failed."""


class Interrupted(Exception):
    """SIGTERM: unwind like Ctrl-C so every process is stopped."""


# --- the servers ----------------------------------------------------------------------------

class Server:
    """How to start one echo server on a port."""

    def __init__(self, name, label, argv, env=None, masked_echo=False, websocket=True,
                 handshakes=True, echo=True):
        self.name = name
        self.label = label
        self.argv = argv  # a function of the port
        self.env = env or {}
        # The raw TCP echo sends the client's masked frames back as they are.
        self.masked_echo = masked_echo
        # A WebSocket server (the memory scenario is about those only).
        self.websocket = websocket
        # Which scenarios the server can serve.
        self.handshakes = handshakes
        self.echo = echo


def servers(args):
    gw = args.gangway
    peer = os.path.join(PEERS, "target", "release")
    all_servers = [
        # permessage-deflate off (no peer here negotiates it, and the load does not offer it),
        # no keepalive pings and no idle timeout (no peer has them), logs at warn (no line per
        # connection).
        Server("gangway", "gangway serve",
               lambda port: [gw, "serve", "--listen", f"127.0.0.1:{port}", "--no-deflate",
                             "--ping-interval", "0", "--idle-timeout", "0"],
               env={"RUST_LOG": "warn"}),
        Server("tungstenite", "tokio-tungstenite",
               lambda port: [os.path.join(peer, "tungstenite-echo"), "--listen",
                             f"127.0.0.1:{port}"]),
        Server("fastwebsockets", "fastwebsockets",
               lambda port: [os.path.join(peer, "fastwebsockets-echo"), "--listen",
                             f"127.0.0.1:{port}"]),
        Server("raw", "raw TCP echo (tokio, no WebSocket)",
               lambda port: [os.path.join(peer, "raw-echo"), "--listen", f"127.0.0.1:{port}"],
               masked_echo=True, websocket=False, handshakes=False),
        # The floor of the handshake scenario: accept, read the head, a 101 with the computed
        # accept value, answer the close frame, shut down, close; no WebSocket server at all.
        Server("floor", "handshake floor (tokio, a 101 and a close frame; not a WebSocket server)",
               lambda port: [os.path.join(peer, "handshake-floor"), "--listen",
                             f"127.0.0.1:{port}"],
               websocket=False, echo=False),
        # The floor of the echo scenarios: the same program with --echo, which after the 101
        # decodes each frame's header, unmasks its payload behind a new header and writes a
        # read's answers at once; nothing else (not a WebSocket server either).
        Server("echofloor", "echo floor (tokio, WebSocket framing only; not a WebSocket server)",
               lambda port: [os.path.join(peer, "handshake-floor"), "--echo", "--listen",
                             f"127.0.0.1:{port}"],
               websocket=False, handshakes=False),
    ]
    if args.with_uws or os.path.isdir(os.path.join(UWS_DIR, "node_modules")):
        env, label = uws_env()
        all_servers.append(
            Server("uws", label,
                   lambda port: ["node", os.path.join(UWS_DIR, "echo.js"), "--listen",
                                 f"127.0.0.1:{port}"], env=env))
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {s.name for s in all_servers}
        if unknown:
            raise Failure(f"--only: unknown server(s) {', '.join(sorted(unknown))}; known: "
                          f"{', '.join(s.name for s in all_servers)}")
        all_servers = [s for s in all_servers if s.name in wanted]
    return all_servers


# --- uWebSockets.js -------------------------------------------------------------------------

UWS_LABEL = "uWebSockets.js (uWS C++ core, Node binding)"
UWS_COMPAT = os.path.join(UWS_DIR, "node_modules", ".gangway-compat")
SHIM_C = r"""
/* The C23 variants (glibc 2.38) differ from the classic functions only in also accepting the
   0b prefix of binary numbers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
int __isoc23_sscanf(const char *s, const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); int r = vsscanf(s, fmt, ap); va_end(ap); return r;
}
long __isoc23_strtol(const char *s, char **end, int base) { return strtol(s, end, base); }
unsigned long __isoc23_strtoul(const char *s, char **end, int base) {
    return strtoul(s, end, base);
}
"""


def uws_loads(env=None):
    """Whether the binding's native module loads with `env` added to the environment."""
    full = dict(os.environ)
    full.update(env or {})
    probe = ("const u = process.env.UWS_NATIVE ? require(process.env.UWS_NATIVE) : "
             "require('@btc-vision/uwebsockets.js'); if (typeof u.App !== 'function') "
             "process.exit(1);")
    r = subprocess.run(["node", "-e", probe], cwd=UWS_DIR, env=full, capture_output=True,
                       text=True)
    return r.returncode == 0, r.stderr


def weaken_glibc_238(src, dst):
    """Copy the ELF64 shared object `src` to `dst` with its need of version GLIBC_2.38 marked
    weak (VER_FLG_WEAK), so the loader of an older glibc accepts it; the symbols of that version
    must then come from elsewhere (the LD_PRELOAD shim)."""
    import struct
    data = bytearray(open(src, "rb").read())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise Failure(f"{src}: not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
                for i in range(shnum)]
    found = False
    for sec in sections:
        if sec[1] != 0x6FFFFFFE:  # SHT_GNU_verneed
            continue
        strings = sections[sec[6]][4]
        off = sec[4]
        while True:
            _, count, _, aux, nxt = struct.unpack_from("<HHIII", data, off)
            a = off + aux
            for _ in range(count):
                _, flags, _, name, anext = struct.unpack_from("<IHHII", data, a)
                end = data.index(b"\0", strings + name)
                if data[strings + name:end] == b"GLIBC_2.38":
                    struct.pack_into("<H", data, a + 4, flags | 2)
                    found = True
                if not anext:
                    break
                a += anext
            if not nxt:
                break
            off += nxt
    if not found:
        raise Failure(f"{src}: no need of GLIBC_2.38 to weaken")
    with open(dst, "wb") as f:
        f.write(data)


def uws_env():
    """The environment `echo.js` needs and the label of the server. The prebuilt native modules
    of the package are linked against glibc >= 2.38; on an older glibc (Debian 12 has 2.36) a
    copy whose GLIBC_2.38 need is weak is loaded instead, with the three C23 functions it uses
    (__isoc23_sscanf/strtol/strtoul) provided by a small preloaded shim built here."""
    if not os.path.isdir(os.path.join(UWS_DIR, "node_modules")):
        return {}, UWS_LABEL  # reported as missing before any run
    ok, _ = uws_loads()
    if ok:
        return {}, UWS_LABEL
    abi = subprocess.run(["node", "-p", "process.versions.modules"], capture_output=True,
                         text=True, check=True).stdout.strip()
    name = f"uws_linux_x64_{abi}.node"
    src = os.path.join(UWS_DIR, "node_modules", "@btc-vision", "uwebsockets.js", name)
    if not os.path.exists(src):
        raise Failure(f"uws: no prebuilt {name} for this Node.js")
    os.makedirs(UWS_COMPAT, exist_ok=True)
    native = os.path.join(UWS_COMPAT, name)
    shim = os.path.join(UWS_COMPAT, "isoc23-shim.so")
    weaken_glibc_238(src, native)
    with open(os.path.join(UWS_COMPAT, "isoc23-shim.c"), "w") as f:
        f.write(SHIM_C)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", shim,
                    os.path.join(UWS_COMPAT, "isoc23-shim.c")], check=True)
    env = {"UWS_NATIVE": native, "LD_PRELOAD": shim}
    ok, err = uws_loads(env)
    if not ok:
        raise Failure(f"uws: the native module does not load, even with the glibc shim: "
                      f"{err.strip()[-300:]}")
    return env, UWS_LABEL + "; glibc 2.38 C23 symbols shimmed"


# --- processes ------------------------------------------------------------------------------

RUNNING = []  # every process started and not yet stopped


def start(argv, env=None, **kw):
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen(argv, env=full_env, stdin=subprocess.DEVNULL, **kw)
    RUNNING.append(proc)
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in RUNNING:
        RUNNING.remove(proc)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(server, log):
    """Start `server` pinned to CPU 0 and wait until it accepts connections."""
    port = free_port()
    proc = start(["taskset", "-c", "0", *server.argv(port)], env=server.env,
                 stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise Failure(f"{server.name} exited with {proc.returncode} at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                raise Failure(f"{server.name} does not accept connections on port {port}")
            time.sleep(0.02)


def cpu_ns(pid):
    """CPU time of every thread of `pid`, in nanoseconds: the first field of each thread's
    schedstat (precise), else utime + stime from /proc/PID/stat (clock ticks)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except FileNotFoundError:
                pass  # the thread ended between the listing and the read
        if total:
            return total
    except (FileNotFoundError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def log_tail(log):
    log.flush()
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()[-5:]
    return "".join(f"\n    {line}" for line in lines)


# --- one run --------------------------------------------------------------------------------

def run_load(args, server, scenario, log):
    """Start `server`, run the load of `scenario` against it, and return the load's JSON with
    `cpu_us_per` (server CPU per message or per handshake cycle) added."""
    proc, port = start_server(server, log)
    try:
        url = f"ws://127.0.0.1:{port}/"
        argv = ["taskset", "-c", "1", args.bench_bin, "bench", url, "--json",
                "--duration", str(args.duration), "--warmup", str(args.warmup)]
        if scenario["mode"] == "handshakes":
            argv += ["--handshakes", "--connections", str(scenario["connections"])]
        else:
            argv += ["--connections", str(scenario["connections"]),
                     "--payload", str(scenario["payload"]), "--window", str(scenario["window"])]
            if scenario["text"]:
                argv.append("--text")
        if server.masked_echo:
            argv.append("--raw-echo")
        out_file, err_file = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        load = start(argv, stdout=out_file, stderr=err_file)
        # The server's CPU time is sampled all along. The load first opens its connections (how
        # long that takes varies), warms up, measures for --duration, then closes and exits; so
        # the measured part is found backwards from the exit: the server's CPU rate is taken
        # between 0.8 and 0.2 durations before the exit (steady state, assuming the load's
        # teardown takes less than a fifth of --duration) and divided by the load's rate.
        samples = []
        deadline = time.monotonic() + args.warmup + args.duration + 120
        while load.poll() is None:
            if proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                raise Failure("the load did not finish in time")
            samples.append((time.monotonic(), cpu_ns(proc.pid)))
            time.sleep(SAMPLE_INTERVAL)
        exited = time.monotonic()
        stop(load)  # a no-op unless the server died first
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
        out_file.close()
        err_file.close()
        result = load_result(proc, log, load, out, err)
        d = result["duration_s"]
        first = [x for x in samples if x[0] >= exited - 0.8 * d]
        last = [x for x in samples if x[0] <= exited - 0.2 * d]
        if not first or not last or last[-1][0] - first[0][0] < 0.25 * d:
            raise Failure("too few samples of the server's CPU time (--duration too short?)")
        (ta, ca), (tb, cb) = first[0], last[-1]
        cpu_per_s = (cb - ca) / (tb - ta)  # ns of server CPU per second of wall time
        result["cpu_us_per"] = cpu_per_s / result["per_s"] / 1000
        result["cpu_share"] = cpu_per_s / 1e9
        return result
    finally:
        stop(proc)


def interleaved(rounds, servers, rng):
    """(round, servers in the order to run them) for each round: round 1 in the listed order,
    then shuffled, so no server always runs right after the same one (thermal state, page cache,
    other load on the machine)."""
    for rnd in range(rounds):
        order = list(servers)
        if rnd:
            rng.shuffle(order)
        print(f"round {rnd + 1}/{rounds}: {', '.join(s.name for s in order)}",
              file=sys.stderr, flush=True)
        yield rnd, order


def load_result(proc, log, load, out, err):
    """The JSON line of a finished load (`out`, `err`: its stdout and stderr as bytes), checked:
    the server still runs, the load exited 0, counted something and no error."""
    if proc.poll() is not None:
        raise Failure(f"server exited with {proc.returncode}{log_tail(log)}")
    if load.returncode != 0:
        raise Failure(f"load exited with {load.returncode}: "
                      f"{err.decode(errors='replace').strip()[-500:]} "
                      f"{out.decode(errors='replace').strip()[-300:]}")
    lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
    if not lines:
        raise Failure(f"no JSON line from the load: {out.decode(errors='replace')[-300:]}")
    result = json.loads(lines[-1])
    if result.get("errors"):
        raise Failure(f"the load reported {result['errors']} error(s)")
    if not result.get("count"):
        raise Failure("the load completed nothing")
    return result


def load_idle_conns():
    """scripts/idle-conns.py as a module: its handshake, echo and RSS helpers."""
    spec = importlib.util.spec_from_file_location(
        "idle_conns", os.path.join(ROOT, "scripts", "idle-conns.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_memory(args, server, log, idle):
    """RSS per connection with MEMORY_CONNECTIONS idle connections, then after each carried one
    MEMORY_MESSAGE-byte message (idle again)."""
    proc, port = start_server(server, log)
    socks = []
    try:
        addr = ("127.0.0.1", port)
        time.sleep(0.5)
        before = idle.rss_kib(proc.pid)
        # (socket, None) pairs: no permessage-deflate offered.
        socks = idle.open_connections(addr, args.memory_connections, 100, None)
        time.sleep(1)
        if proc.poll() is not None:
            raise Failure(f"server exited with {proc.returncode}{log_tail(log)}")
        opened = idle.rss_kib(proc.pid)
        idle.echo_all(socks, MEMORY_MESSAGE, 100)
        time.sleep(1)
        after = idle.rss_kib(proc.pid)
        n = args.memory_connections
        return {"idle_kib": (opened - before) / n, "after_kib": (after - before) / n}
    except idle.Failure as e:
        raise Failure(str(e)) from None
    finally:
        for s, _ in socks:
            s.close()
        stop(proc)


# --- scenarios ------------------------------------------------------------------------------

def scenarios(args):
    """The echo scenarios, the skipped ones (with the reason), and the handshake scenario."""
    if args.quick:
        combos = [(16, 64, 1, False), (16, 64, 16, False), (16, 64, 1, True),
                  (16, 64, 16, True), (65536, 64, 1, False), (65536, 64, 16, False)]
    else:
        combos = [(p, c, w, t) for p in (16, 1024, 65536) for c in (1, 64, 1000)
                  for w in (1, 16) for t in (False, True)]
    if args.payloads:
        combos = [c for c in combos if c[0] in args.payloads]
    if args.connections:
        combos = [c for c in combos if c[1] in args.connections]
    if args.windows:
        combos = [c for c in combos if c[2] in args.windows]
    if args.binary_only:
        combos = [c for c in combos if not c[3]]
    run, skipped = [], []
    for payload, conns, window, text in combos:
        s = {"mode": "echo", "payload": payload, "connections": conns, "window": window,
             "text": text}
        if conns * window * payload > MAX_IN_FLIGHT:
            skipped.append(s)
        else:
            run.append(s)
    return run, skipped


def size(n):
    return f"{n >> 10} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def title(s):
    if s["mode"] == "handshakes":
        return f"handshakes: connect-upgrade-close cycles, {s['connections']} at a time"
    kind = "text" if s["text"] else "binary"
    return (f"echo {size(s['payload'])} {kind}, {s['connections']} connection"
            f"{'s' if s['connections'] != 1 else ''}, window {s['window']}")


# --- output ---------------------------------------------------------------------------------

def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def fmt(x, digits=2):
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def ratio(x, base):
    return None if x is None or not base else x / base


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def table(header, rows):
    """Plain text and Markdown renderings of one table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    text = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                      for i, (c, w) in enumerate(zip(r, widths))) for r in [header, *rows]]
    text.insert(1, "  ".join("-" * w for w in widths))
    md = ["| " + " | ".join(header) + " |",
          "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(text), "\n".join(md)


def echo_table(results, names, mode):
    def stat(name, key):
        return med([r.get(key) for r in results.get(name, [])])

    g_rate, g_cpu = stat("gangway", "per_s"), stat("gangway", "cpu_us_per")
    # The reference: the raw echo (the ceiling) for echoes, the floor for handshakes.
    base = "floor" if mode == "handshakes" else "raw"
    r_cpu = stat(base, "cpu_us_per")
    unit = "cycles/s" if mode == "handshakes" else "msgs/s"
    per = "cycle" if mode == "handshakes" else "msg"
    header = ["server", unit, f"CPU µs/{per}", "server CPU", "p50 µs", "p99 µs", "p99/p50",
              f"{unit} vs gangway", "CPU vs gangway", f"CPU vs {base}", "runs"]
    rows = []
    for name in names:
        runs = results.get(name, [])
        if not runs:
            continue
        rate, cpu = stat(name, "per_s"), stat(name, "cpu_us_per")
        p50, p99 = stat(name, "p50_us"), stat(name, "p99_us")
        tail = med([r["p99_us"] / r["p50_us"] for r in runs if r.get("p50_us")])
        share = stat(name, "cpu_share")
        rows.append([name, fmt(rate), fmt(cpu, 3), f"{share:.0%}", fmt(p50, 1), fmt(p99, 1), fmt(tail),
                     fmt(ratio(rate, g_rate)), fmt(ratio(cpu, g_cpu)), fmt(ratio(cpu, r_cpu)),
                     str(len(runs))])
    return table(header, rows)


def memory_table(results, names):
    header = ["server", f"KiB/conn idle ({MEMORY_CONNECTIONS // 1000}k)",
              f"KiB/conn after {MEMORY_MESSAGE >> 10} KiB msg", "idle vs gangway", "runs"]
    g = med([r["idle_kib"] for r in results.get("gangway", [])])
    rows = []
    for name in names:
        runs = results.get(name, [])
        if runs:
            idle = med([r["idle_kib"] for r in runs])
            after = med([r["after_kib"] for r in runs])
            rows.append([name, fmt(idle), fmt(after), fmt(ratio(idle, g)), str(len(runs))])
    return table(header, rows)


# --- main -----------------------------------------------------------------------------------

def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3, --quick: 1)")
    p.add_argument("--duration", type=float,
                   help="seconds measured per run (default 3, --quick: 2)")
    p.add_argument("--warmup", type=float,
                   help="seconds of load before measuring (default 1, --quick: 0.5)")
    p.add_argument("--quick", action="store_true",
                   help="a small subset for CI: 16 B and 64 KiB, 64 connections, handshakes, "
                        "memory")
    p.add_argument("--only", metavar="SERVER,...",
                   help="run these servers only (gangway, tungstenite, fastwebsockets, raw, floor, "
                        "echofloor, uws)")
    p.add_argument("--markdown", metavar="FILE", help="also write the tables as Markdown")
    p.add_argument("--with-uws", action="store_true",
                   help="install uWebSockets.js (npm ci in bench/peers/uws) and include it")
    p.add_argument("--no-memory", action="store_true", help="skip the memory scenario")
    p.add_argument("--no-handshakes", action="store_true", help="skip the handshake scenario")
    p.add_argument("--handshakes-only", action="store_true",
                   help="run the handshake scenario only (no echo, no memory)")
    p.add_argument("--payloads", metavar="BYTES,...",
                   type=lambda v: [int(x) for x in v.split(",")],
                   help="run the echo scenarios of these payload sizes only (16, 1024, 65536)")
    p.add_argument("--connections", metavar="N,...",
                   type=lambda v: [int(x) for x in v.split(",")],
                   help="run the echo scenarios of these connection counts only (1, 64, 1000)")
    p.add_argument("--windows", metavar="N,...",
                   type=lambda v: [int(x) for x in v.split(",")],
                   help="run the echo scenarios of these windows only (1, 16)")
    p.add_argument("--binary-only", action="store_true",
                   help="run the binary echo scenarios only (no text)")
    p.add_argument("--memory-only", action="store_true",
                   help="run the memory scenario only (no echo, no handshakes)")
    p.add_argument("--no-build", action="store_true", help="do not run cargo build first")
    p.add_argument("--memory-connections", type=int, default=MEMORY_CONNECTIONS,
                   help=argparse.SUPPRESS)
    p.add_argument("--gangway", default=os.environ.get(
        "GANGWAY_BIN", os.path.join(ROOT, "target", "release", "gangway")),
        help="the gangway binary serving (default target/release/gangway, or $GANGWAY_BIN)")
    p.add_argument("--bench-bin", help="the binary whose `bench` subcommand is the load "
                                       "(default: --gangway)")
    args = p.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (2.0 if args.quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.bench_bin = args.bench_bin or args.gangway
    if args.handshakes_only and args.no_handshakes:
        p.error("--handshakes-only and --no-handshakes exclude each other")
    if args.handshakes_only:
        args.no_memory = True
    if args.memory_only and (args.no_memory or args.handshakes_only):
        p.error("--memory-only excludes --no-memory and --handshakes-only")
    if args.memory_only:
        args.no_handshakes = True
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--rounds, --duration must be positive and --warmup not negative")
    return args


def build(args):
    if args.no_build:
        return
    subprocess.run(["cargo", "build", "--release", "-p", "gangway-cli", "--quiet"],
                   cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                    os.path.join(PEERS, "Cargo.toml")], cwd=ROOT, check=True)
    if args.with_uws:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=UWS_DIR,
                       check=True)


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise Failure(f"need {needed} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def on_sigterm(_signum, _frame):
    raise Interrupted()


def main():
    args = parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    build(args)
    # This script samples /proc and drives the memory scenario's connections: it stays off the
    # server's CPU.
    if os.cpu_count() >= 2:
        os.sched_setaffinity(0, {1})
    # The servers inherit the limit: 10,000 connections plus the 1000-connection runs.
    raise_fd_limit(args.memory_connections + 1000 + 256)
    if os.cpu_count() < 2:
        raise Failure("two CPUs are needed: the server is pinned to CPU 0, the load to CPU 1")
    help_text = subprocess.run([args.bench_bin, "bench", "--help"], capture_output=True,
                               text=True)
    if help_text.returncode != 0:
        raise Failure(f"`{args.bench_bin} bench --help` failed: {help_text.stderr.strip()}")
    all_servers = servers(args)
    notes = []
    if "--raw-echo" not in help_text.stdout:
        notes.append("raw: skipped, `gangway bench` has no --raw-echo (the raw echo sends "
                     "the client's masked frames back unchanged)")
        all_servers = [s for s in all_servers if not s.masked_echo]
    for name in ("floor", "echofloor"):
        floor = [s for s in all_servers if s.name == name]
        if floor and not os.path.exists(floor[0].argv(0)[0]):
            # A peers build from before the floor existed (with --no-build).
            notes.append(f"{name}: skipped, bench/peers has no handshake-floor binary (build the "
                         "peers: cargo build --release --manifest-path bench/peers/Cargo.toml)")
            all_servers = [s for s in all_servers if s.name != name]
    if any(s.name == "uws" for s in all_servers) and not os.path.isdir(
            os.path.join(UWS_DIR, "node_modules")):
        raise Failure("uws: bench/peers/uws/node_modules is missing (run with --with-uws)")
    names = [s.name for s in all_servers]

    echo, skipped = scenarios(args)
    if args.handshakes_only or args.memory_only:
        echo, skipped = [], []
    plan = [(title(s), s) for s in echo]
    if not args.no_handshakes:
        hs = {"mode": "handshakes", "connections": 64}
        plan.append((title(hs), hs))

    head = [f"machine: {machine()}",
            f"command: {' '.join(['scripts/bench-compare.py', *sys.argv[1:]])}",
            f"servers: {', '.join(f'{s.name} = {s.label}' for s in all_servers)}",
            f"rounds: {args.rounds}, {args.duration:g} s measured per run after "
            f"{args.warmup:g} s of warm-up; server on CPU 0, load on CPU 1; medians over rounds"]
    head += [f"skipped: {title(s)}: {size(s['connections'] * s['window'] * s['payload'])} in "
             f"flight exceeds {size(MAX_IN_FLIGHT)}" for s in skipped]
    head += notes
    print("\n".join(head), flush=True)

    failures = []
    results = {t: {} for t, _ in plan}
    memory = {}
    idle = None if args.no_memory else load_idle_conns()
    mem_servers = [s for s in all_servers if s.websocket]
    log = tempfile.TemporaryFile()  # the current server's stderr, quoted when it fails
    rng = random.Random(6)
    try:
        for rnd, order in interleaved(args.rounds, all_servers, rng):
            for name, scenario in plan:
                for server in order:
                    if not (server.handshakes if scenario["mode"] == "handshakes"
                            else server.echo):
                        # The raw echo never closes (a handshake cycle cannot end); the floor
                        # answers nothing but one close frame.
                        continue
                    log.seek(0)
                    log.truncate()
                    try:
                        r = run_load(args, server, scenario, log)
                        results[name].setdefault(server.name, []).append(r)
                    except Failure as e:
                        failures.append(f"round {rnd + 1}, {name}, {server.name}: {e}")
                        print(f"FAILED: {failures[-1]}", file=sys.stderr, flush=True)
            if idle is not None:
                for server in [s for s in order if s.websocket]:
                    log.seek(0)
                    log.truncate()
                    try:
                        memory.setdefault(server.name, []).append(
                            run_memory(args, server, log, idle))
                    except Failure as e:
                        failures.append(f"round {rnd + 1}, memory, {server.name}: {e}")
                        print(f"FAILED: {failures[-1]}", file=sys.stderr, flush=True)
    finally:
        for proc in list(RUNNING):
            stop(proc)
        log.close()

    md = ["Produced by `" + " ".join(["scripts/bench-compare.py", *sys.argv[1:]]) + "` on "
          + machine() + ".", ""]
    for name, scenario in plan:
        text, markdown = echo_table(results[name], names, scenario["mode"])
        print(f"\n{name}\n{text}")
        md += [f"**{name}**", "", markdown, ""]
    if idle is not None:
        text, markdown = memory_table(memory, [s.name for s in mem_servers])
        mem_title = (f"memory: RSS per connection, {args.memory_connections} connections idle, "
                     f"then after one {size(MEMORY_MESSAGE)} message each")
        print(f"\n{mem_title}\n{text}")
        md += [f"**{mem_title}**", "", markdown, ""]
    return finish(args.markdown, md, failures)


def finish(markdown, md, failures):
    """Write the Markdown lines `md` to the file `markdown` (if any), list the failed runs; the
    exit status: 1 if any run failed."""
    if markdown:
        with open(markdown, "w") as f:
            f.write("\n".join(md))
    if failures:
        print(f"\n{len(failures)} run(s) failed:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def run_script(main_fn, name):
    """Run `main_fn` and exit with its status; on Ctrl-C, SIGTERM or a failure, stop every process
    started first (also for scripts that import this one)."""
    try:
        sys.exit(main_fn())
    except (KeyboardInterrupt, Interrupted):
        for p in list(RUNNING):
            stop(p)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except (Failure, subprocess.CalledProcessError, OSError) as e:
        for p in list(RUNNING):
            stop(p)
        print(f"{name}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_script(main, "bench-compare")
