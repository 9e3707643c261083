#!/usr/bin/env python3
"""Side-by-side comparison of `gangway serve --broadcast` with peer broadcast servers.

Runs, on loopback, `gangway serve --broadcast`, uWebSockets.js with its pub/sub
(bench/peers/uws/pubsub.js: every connection subscribed to the topic of its path, each message
sent back to its sender and `ws.publish`ed to the others) and a
tokio-tungstenite server written the way its users write one (bench/peers/tungstenite-echo,
binary tungstenite-broadcast: a `tokio::sync::broadcast` channel and two tasks per connection),
each pinned to CPU 0, and drives each with the same load, `gangway bench URL --broadcast --json`
pinned to CPU 1: N connections in one room, each sends one message per round and waits for N
messages. The load reads the server's CPU time from /proc at the start and the end of its
measured time (--server-pid).

Scenarios: 100, 1,000 and 5,000 members, 20-byte and 1 KiB messages (delivered messages per
second, server CPU per delivered message, p50/p99 latency from send to delivery); fairness: the
same with one more connection that never reads (gangway with its default limits; the p99 of the
others with and without it); memory: RSS of the server with 10,000 idle members, then after
one 1 KiB message was published to all of them and delivered.

Rooms across processes (--cluster; gangway only): one room whose members are spread over three
`gangway serve --broadcast` processes sharing it through Debian's redis-server (pub/sub; and
with --history 10000, every message positioned by Redis and delivered from it) or nats-server,
beside the same members on a single process. The nodes and the engine are all pinned to CPU 0,
the load (`gangway bench --also URL ...`, members spread over the nodes in turn) to CPU 1; the
CPU per delivered message is that of the nodes and the engine together. The latency of the
deliveries that crossed from a member of one node to a member of another is reported apart:
minus the single process's latency, it is what the hop through the engine adds.

Deflate (--deflate): the members offer permessage-deflate as browsers do (`permessage-deflate;
client_max_window_bits`) and send JSON-like text (1 KiB unless --payloads says otherwise);
every scenario runs twice per server, the members offering the extension and not, the servers
configured to compress (gangway's default `window` mode, uWebSockets.js with its shared
compressor). The load inflates every compressed message it receives; the table shows the CPU
per delivery with and without, and the share of deliveries that arrived compressed. 100 and
1,000 members unless --members says otherwise.

With --syscalls the server's system calls that write (write, writev, sendto, sendmsg) are
counted over the whole run with `perf stat` (tracepoints; needs perf and the right to trace) and
shown per 1,000 deliveries (every message sent times the members).

Rounds are interleaved (round 1 runs every server, round 2 again in another order, ...); the
tables show medians over rounds and ratios to gangway.

Only the Python standard library is used. Every process started here is stopped before exit; the
exit status is 1 if any run failed (a server died, the load reported errors or exited non-zero).

    scripts/bench-broadcast.py                 # everything, 3 rounds (about 20 minutes)
    scripts/bench-broadcast.py --quick         # a small subset, about 2 minutes (CI)
    scripts/bench-broadcast.py --only gangway,uws --members 1000 --payloads 20 --rounds 5
    scripts/bench-broadcast.py --only-cluster --quick  # rooms across processes, about 1 minute
    scripts/bench-broadcast.py --deflate --only gangway,uws --with-uws
"""

import argparse
import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The echo comparison's helpers: processes, uWebSockets.js set-up, tables; and the idle
# connections' (opening 10,000 connections, frames, RSS).
bc = load("bench_compare", "bench-compare.py")
idle = bc.load_idle_conns()
Failure = bc.Failure

# The queue limits of the throughput runs, for every server: large enough that nobody drops a
# message (the load counts a missing message as an error). The fairness runs use gangway's
# defaults.
QUEUE_BYTES = 1 << 30
QUEUE_MESSAGES = 1 << 24
MEMORY_MEMBERS = 10_000
MEMORY_MESSAGE = 1024


# The system calls that write to a socket.
WRITE_SYSCALLS = ["write", "writev", "sendto", "sendmsg"]


class Server:
    def __init__(self, name, label, argv, env=None):
        self.name = name
        self.label = label
        # A function of (port, limits, deflate): limits False for the defaults, deflate True to
        # compress (permessage-deflate accepted, as the server is set up for it).
        self.argv = argv
        self.env = env or {}


def servers(args):
    gw = args.gangway
    peer = os.path.join(bc.PEERS, "target", "release")

    def gangway(port, limits=True, deflate=False):
        # With deflate: serve's default, `--deflate-mode window` (what it sends, compressed
        # without context takeover, is compressed once per room and encoding).
        argv = [gw, "serve", "--broadcast", "--listen", f"127.0.0.1:{port}",
                "--ping-interval", "0", "--idle-timeout", "0"]
        if not deflate:
            argv.append("--no-deflate")
        if limits:
            argv += ["--broadcast-queue-bytes", str(QUEUE_BYTES),
                     "--broadcast-queue-messages", str(QUEUE_MESSAGES)]
        return argv

    all_servers = [
        Server("gangway", "gangway serve --broadcast", gangway, env={"RUST_LOG": "warn"}),
        # No permessage-deflate in tokio-tungstenite: with --deflate it answers without it.
        Server("tungstenite", "tokio-tungstenite + tokio::sync::broadcast",
               lambda port, limits=True, deflate=False: [
                   os.path.join(peer, "tungstenite-broadcast"), "--listen", f"127.0.0.1:{port}",
                   "--capacity", str(1 << 20)]),
    ]
    if args.with_uws or os.path.isdir(os.path.join(bc.UWS_DIR, "node_modules")):
        env, label = bc.uws_env()
        publish = args.uws_publish

        def uws(port, limits=True, deflate=False):
            return ["node", os.path.join(bc.UWS_DIR, "pubsub.js"), "--listen",
                    f"127.0.0.1:{port}", "--max-backpressure", str(QUEUE_BYTES),
                    "--publish", publish, "--compression", "shared" if deflate else "off"]

        all_servers.append(
            Server("uws", label.replace("(uWS C++ core, Node binding)",
                                        f"pub/sub, --publish {publish} (uWS C++ core, Node "
                                        "binding)"),
                   uws, env=env))
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {s.name for s in all_servers}
        if unknown:
            raise Failure(f"--only: unknown server(s) {', '.join(sorted(unknown))}")
        all_servers = [s for s in all_servers if s.name in wanted]
    return all_servers


def start_server(server, log, limits=True, deflate=False):
    """`bench-compare.py`'s start (pinned to CPU 0, waits until it accepts connections), with
    the server's queue limits (`limits`) or its defaults, compressing or not (`deflate`)."""
    view = bc.Server(server.name, server.label,
                     lambda port: server.argv(port, limits, deflate), env=server.env)
    return bc.start_server(view, log)


def load_argv(args, ports, members, payload, pids):
    """`gangway bench --broadcast --json` pinned to CPU 1: `members` connections in the room
    /room, spread over the servers on `ports`; the CPU time of `pids` read."""
    argv = ["taskset", "-c", "1", args.bench_bin, "bench", f"ws://127.0.0.1:{ports[0]}/room",
            "--broadcast", "--json", "--connections", str(members), "--payload", str(payload),
            "--duration", str(args.duration), "--warmup", str(args.warmup),
            "--drain-timeout", str(args.drain_timeout)]
    for port in ports[1:]:
        argv += ["--also", f"ws://127.0.0.1:{port}/room"]
    for pid in pids:
        argv += ["--server-pid", str(pid)]
    return argv


def drive(args, argv, proc, log):
    """Run the load `argv` against the server `proc`; its JSON, checked."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    load = bc.start(argv, stdout=out, stderr=err)
    try:
        load.wait(timeout=args.warmup + args.duration + args.drain_timeout + 180)
    except subprocess.TimeoutExpired:
        raise Failure("the load did not finish in time")
    finally:
        bc.stop(load)
    out.seek(0)
    err.seek(0)
    result = bc.load_result(proc, log, load, out.read(), err.read())
    if "server_cpu_us_per" not in result:
        raise Failure("the load could not read the server's CPU time")
    return result


def start_syscall_count(pid):
    """`perf stat` counting the write system calls of process `pid` (all its threads) until it
    is stopped; read with `syscall_count`."""
    events = ",".join(f"syscalls:sys_enter_{name}" for name in WRITE_SYSCALLS)
    out = tempfile.TemporaryFile()
    proc = bc.start(["perf", "stat", "-x,", "-e", events, "-p", str(pid)], stdout=out,
                    stderr=out)
    return proc, out


def syscall_count(counter):
    """Stop a `start_syscall_count` and return how many write system calls it counted."""
    proc, out = counter
    proc.send_signal(bc.signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        raise Failure("perf stat did not stop")
    finally:
        bc.stop(proc)
    out.seek(0)
    text = out.read().decode(errors="replace")
    total, seen = 0, 0
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("syscalls:sys_enter_"):
            if not fields[0].isdigit():
                raise Failure(f"perf stat could not count {fields[2]}: {line}")
            total += int(fields[0])
            seen += 1
    if seen != len(WRITE_SYSCALLS):
        raise Failure(f"perf stat did not count the system calls: {text.strip()[-300:]}")
    return total


def run_load(args, server, members, payload, log, stalled=0, limits=True, deflate=None):
    """One broadcast run; the load's JSON. `deflate`: None for the usual binary load on a
    server that does not compress; False or True for the deflate scenario (text messages, a
    server set up to compress, the members offering permessage-deflate with True)."""
    proc, port = start_server(server, log, limits, deflate is not None)
    counter = None
    try:
        argv = load_argv(args, [port], members, payload, [proc.pid])
        if stalled:
            argv += ["--stalled", str(stalled)]
        if deflate is not None:
            argv.append("--text")
        if deflate:
            argv.append("--deflate")
        if args.syscalls:
            counter = start_syscall_count(proc.pid)
        result = drive(args, argv, proc, log)
        if counter:
            writes = syscall_count(counter)
            counter = None
            deliveries = result["sent"] * members
            result["writes_per_1000"] = 1000 * writes / deliveries if deliveries else 0.0
        if deflate:
            count = result["count"]
            result["compressed_share"] = result["compressed"] / count if count else 0.0
        return result
    finally:
        if counter:
            bc.stop(counter[0])
        bc.stop(proc)


# --- Rooms across processes ----------------------------------------------------------------------

CLUSTER_NODES = 3
# The set-ups compared: one process, then three sharing the room through each engine.
CLUSTER_SETUPS = [
    ("single", "one process (no engine)"),
    ("redis", "3 processes, Redis pub/sub"),
    ("redis-history", "3 processes, Redis --history 10000"),
    ("nats", "3 processes, NATS"),
]


def engine_binary(kind):
    names = (["/usr/bin/redis-server"] if kind.startswith("redis")
             else ["/usr/sbin/nats-server", "/usr/bin/nats-server"])
    for name in names:
        if os.path.exists(name):
            return name
    raise Failure(f"{' or '.join(names)} is missing (apt-get install "
                  f"{os.path.basename(names[0])}; scripts/test.sh does)")


def start_engine(kind, log):
    """Debian's redis-server (no persistence) or nats-server on a free loopback port, pinned to
    CPU 0; (process, URL) once it accepts connections."""
    port = bc.free_port()
    if kind.startswith("redis"):
        argv = [engine_binary(kind), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no"]
        url = f"redis://127.0.0.1:{port}"
    else:
        argv = [engine_binary(kind), "-a", "127.0.0.1", "-p", str(port)]
        url = f"nats://127.0.0.1:{port}"
    proc = bc.start(["taskset", "-c", "0", *argv], stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise Failure(f"{kind} exited with {proc.returncode} at start{bc.log_tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, url
        except OSError:
            if time.monotonic() > deadline:
                raise Failure(f"{kind} does not accept connections on port {port}")
            time.sleep(0.02)


def run_cluster(args, setup, members, payload, log):
    """One run of a room spread over the nodes of `setup` (see CLUSTER_SETUPS); the load's
    JSON."""
    gangway = servers_by_name(args)["gangway"]
    procs = []
    try:
        engine = []
        if setup != "single":
            proc, url = start_engine(setup, log)
            procs.append(proc)
            engine = ["--redis" if setup.startswith("redis") else "--nats", url]
            if setup == "redis-history":
                engine += ["--history", "10000"]
        node = Server("gangway", gangway.label,
                      lambda port, limits=True, deflate=False:
                      gangway.argv(port, limits, deflate) + engine,
                      env=gangway.env)
        ports = []
        for _ in range(1 if setup == "single" else CLUSTER_NODES):
            proc, port = start_server(node, log)
            procs.append(proc)
            ports.append(port)
        argv = load_argv(args, ports, members, payload, [p.pid for p in procs])
        if setup == "redis-history":
            argv.append("--positioned")
        # Checked: the first node (the load fails if any other dies: its members lose their
        # connection).
        return drive(args, argv, procs[-1], log)
    finally:
        for proc in reversed(procs):
            bc.stop(proc)


def servers_by_name(args):
    saved, args.only = args.only, None
    try:
        return {s.name: s for s in servers(args)}
    finally:
        args.only = saved


def cluster_table(results, members, payload):
    """The table of one payload: each set-up, and what the hop between nodes adds to the single
    process's latency."""
    def stat(setup, key):
        return bc.med([r.get(key) for r in results.get(setup, [])])

    base = {q: stat("single", f"{q}_us") for q in ("p50", "p99")}
    header = ["set-up", "delivered/s", "CPU µs/delivered", "p50 µs", "p99 µs",
              "across nodes p50 µs", "p99 µs", "added p50 µs", "added p99 µs", "runs"]
    rows = []
    for setup, label in CLUSTER_SETUPS:
        runs = results.get(setup)
        if not runs:
            continue
        row = [label, bc.fmt(stat(setup, "per_s")), bc.fmt(stat(setup, "server_cpu_us_per"), 3),
               bc.fmt(stat(setup, "p50_us"), 1), bc.fmt(stat(setup, "p99_us"), 1)]
        if setup == "single":
            row += ["-", "-", "-", "-"]
        else:
            crossed = {q: stat(setup, f"crossed_{q}_us") for q in ("p50", "p99")}
            added = {q: (crossed[q] - base[q] if crossed[q] is not None and base[q] is not None
                         else None) for q in ("p50", "p99")}
            row += [bc.fmt(crossed["p50"], 1), bc.fmt(crossed["p99"], 1),
                    bc.fmt(added["p50"], 1), bc.fmt(added["p99"], 1)]
        rows.append(row + [str(len(runs))])
    return bc.table(header, rows)


def run_memory(args, server, log):
    """RSS of the server with MEMORY_MEMBERS idle members in one room, then after one
    MEMORY_MESSAGE-byte message published to all of them was delivered (every member read it).
    The connections, frames and RSS readings are scripts/idle-conns.py's."""
    proc, port = start_server(server, log)
    socks = []
    try:
        addr = ("127.0.0.1", port)
        time.sleep(0.5)
        before = idle.rss_kib(proc.pid)
        # Every connection asks for the same path: one room.
        socks = [s for s, _ in idle.open_connections(addr, MEMORY_MEMBERS, 100, None)]
        time.sleep(1.5)
        members = idle.rss_kib(proc.pid)
        payload = os.urandom(MEMORY_MESSAGE)
        socks[0].sendall(idle.client_frame(payload))
        expected = idle.server_frame_len(MEMORY_MESSAGE)
        for s in socks:
            if idle.recv_exact(s, expected)[-MEMORY_MESSAGE:] != payload:
                raise Failure("a member received another message")
        time.sleep(1.5)
        after = idle.rss_kib(proc.pid)
        if proc.poll() is not None:
            raise Failure(f"server exited with {proc.returncode}{bc.log_tail(log)}")
        return {"idle_kib": (members - before) / MEMORY_MEMBERS, "added_kib": after - members}
    except idle.Failure as e:
        raise Failure(str(e)) from None
    finally:
        for s in socks:
            s.close()
        bc.stop(proc)


def deflate_tables(args, plan, results, names):
    """The deflate scenario's tables (printed; returned as Markdown lines): per members and
    size, each server with and without the members' offer."""
    md = []
    for members, payload in dict.fromkeys((m, p) for m, p, d in plan if d is not None):
        title = (f"broadcast with permessage-deflate: {members} members in one room, "
                 f"{size(payload)} JSON-like text, one message each per round, the members "
                 f"offering `permessage-deflate; client_max_window_bits` or nothing")
        header = ["server", "offer", "delivered/s", "CPU µs/delivered", "CPU vs no offer",
                  "compressed", "p50 µs", "p99 µs", "CPU vs gangway", "runs"]
        if args.syscalls:
            header.insert(6, "writes per 1,000 delivered")
        rows = []
        for name in names:
            base = bc.med([r.get("server_cpu_us_per")
                           for r in results[(members, payload, False)].get(name, [])])
            for offer in (False, True):
                runs = results[(members, payload, offer)].get(name, [])
                if not runs:
                    continue
                gangway = results[(members, payload, offer)].get("gangway", [])
                g_cpu = bc.med([r.get("server_cpu_us_per") for r in gangway])

                def stat(key):
                    return bc.med([r.get(key) for r in runs])

                cpu = stat("server_cpu_us_per")
                share = (stat("compressed_share") or 0.0) if offer else 0.0
                row = [name, "deflate" if offer else "none", bc.fmt(stat("per_s")),
                       bc.fmt(cpu, 3), bc.fmt(bc.ratio(cpu, base)), f"{share:.0%}",
                       bc.fmt(stat("p50_us"), 1), bc.fmt(stat("p99_us"), 1),
                       bc.fmt(bc.ratio(cpu, g_cpu)), str(len(runs))]
                if args.syscalls:
                    row.insert(6, bc.fmt(stat("writes_per_1000"), 1))
                rows.append(row)
        text, markdown = bc.table(header, rows)
        print(f"\n{title}\n{text}")
        md += [f"**{title}**", "", markdown, ""]
    return md


def size(n):
    return f"{n >> 10} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3, --quick: 1)")
    p.add_argument("--duration", type=float, help="seconds measured per run (default 4, "
                                                  "--quick: 2)")
    p.add_argument("--warmup", type=float, help="seconds before measuring (default 1, "
                                                "--quick: 0.5)")
    p.add_argument("--quick", action="store_true",
                   help="100 and 1,000 members, 20 B and 1 KiB (1,000 members: 20 B only), one "
                        "round, no fairness, no memory")
    p.add_argument("--members", type=lambda v: [int(x) for x in v.split(",")],
                   help="members per room (default 100,1000,5000)")
    p.add_argument("--payloads", type=lambda v: [int(x) for x in v.split(",")],
                   help="message sizes (default 20,1024)")
    p.add_argument("--only", metavar="SERVER,...",
                   help="run these servers only (gangway, tungstenite, uws)")
    p.add_argument("--with-uws", action="store_true",
                   help="install uWebSockets.js (npm ci in bench/peers/uws) and include it")
    p.add_argument("--uws-publish", choices=["ws", "app"], default="ws",
                   help="how uWebSockets.js publishes (bench/peers/uws/pubsub.js --publish): ws "
                        "(default: ws.send to the sender, ws.publish to the others) or app "
                        "(app.publish to all, ten times slower under bursts: bench/README.md)")
    p.add_argument("--deflate", action="store_true",
                   help="the deflate scenario instead: JSON-like text, each server set up to "
                        "compress, members offering permessage-deflate and not (default 100 and "
                        "1,000 members, 1 KiB)")
    p.add_argument("--syscalls", action="store_true",
                   help="count the server's write system calls (perf stat) and show them per "
                        "1,000 deliveries")
    p.add_argument("--drain-timeout", type=float, default=15,
                   help="seconds after a run the messages on their way may take (default 15; "
                        "later ones are reported, not counted as errors)")
    p.add_argument("--no-fairness", action="store_true", help="skip the fairness scenario")
    p.add_argument("--fairness-members", type=int, default=1000,
                   help="members of the fairness scenario (default 1000, 20 B)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory scenario")
    p.add_argument("--only-fairness", action="store_true", help="the fairness scenario only")
    p.add_argument("--only-memory", action="store_true", help="the memory scenario only")
    p.add_argument("--cluster", action="store_true",
                   help="with --quick: also rooms across processes (always in a full run)")
    p.add_argument("--only-cluster", action="store_true",
                   help="rooms across processes only (gangway over Redis and NATS)")
    p.add_argument("--cluster-members", type=int,
                   help="members of the room spread over the processes (default 300, --quick: "
                        "150)")
    p.add_argument("--markdown", metavar="FILE", help="also write the tables as Markdown")
    p.add_argument("--no-build", action="store_true", help="do not run cargo build first")
    p.add_argument("--gangway", default=os.environ.get(
        "GANGWAY_BIN", os.path.join(ROOT, "target", "release", "gangway")))
    p.add_argument("--bench-bin", help="the binary whose `bench` subcommand is the load "
                                       "(default: --gangway)")
    args = p.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (2.0 if args.quick else 4.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.bench_bin = args.bench_bin or args.gangway
    args.cluster_members = args.cluster_members or (150 if args.quick else 300)
    if args.quick or args.deflate:
        args.no_fairness = True
        args.no_memory = True
    args.cluster = args.only_cluster or args.cluster or not (args.quick or args.deflate)
    return args


def build(args):
    if args.no_build:
        return
    subprocess.run(["cargo", "build", "--release", "-p", "gangway-cli", "--quiet"], cwd=ROOT,
                   check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                    os.path.join(bc.PEERS, "Cargo.toml")], cwd=ROOT, check=True)
    if args.with_uws:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=bc.UWS_DIR,
                       check=True)


def main():
    args = parse_args()
    bc.signal.signal(bc.signal.SIGTERM, bc.on_sigterm)
    bc.signal.signal(bc.signal.SIGINT, bc.signal.default_int_handler)
    build(args)
    if os.cpu_count() < 2:
        raise Failure("two CPUs are needed: the server is pinned to CPU 0, the load to CPU 1")
    os.sched_setaffinity(0, {1})
    bc.raise_fd_limit(MEMORY_MEMBERS + 5000 + 256)
    all_servers = servers(args)
    if any(s.name == "uws" for s in all_servers) and not os.path.isdir(
            os.path.join(bc.UWS_DIR, "node_modules")):
        raise Failure("uws: bench/peers/uws/node_modules is missing (run with --with-uws)")
    names = [s.name for s in all_servers]

    # (members, payload, deflate): deflate None for the usual scenarios, else whether the
    # members offer permessage-deflate (see run_load).
    if args.deflate:
        members = args.members or ([100] if args.quick else [100, 1000])
        payloads = args.payloads or [1024]
        plan = [(m, p, d) for m in members for p in payloads for d in (False, True)]
    elif args.quick:
        plan = [(100, 20, None), (100, 1024, None), (1000, 20, None)]
    else:
        members = args.members or [100, 1000, 5000]
        payloads = args.payloads or [20, 1024]
        plan = [(m, p, None) for m in members for p in payloads]
    if args.only_fairness or args.only_memory or args.only_cluster:
        plan = []
    fairness = not args.no_fairness and not args.only_memory and not args.only_cluster
    memory = not args.no_memory and not args.only_fairness and not args.only_cluster
    cluster = args.cluster and not args.only_fairness and not args.only_memory
    cluster_payloads = args.payloads or [20, 1024]

    head = [f"machine: {bc.machine()}",
            f"command: {' '.join(['scripts/bench-broadcast.py', *sys.argv[1:]])}",
            f"servers: {', '.join(f'{s.name} = {s.label}' for s in all_servers)}",
            f"rounds: {args.rounds}, {args.duration:g} s measured per run after "
            f"{args.warmup:g} s of warm-up; server on CPU 0, load on CPU 1; medians over rounds"]
    print("\n".join(head), flush=True)

    failures = []
    results = {key: {} for key in plan}
    fair = {"alone": [], "stalled": []}
    mem = {}
    spread = {payload: {} for payload in cluster_payloads}
    log = tempfile.TemporaryFile()
    rng = random.Random(16)
    gangway = [s for s in all_servers if s.name == "gangway"]

    def attempt(what, fn):
        log.seek(0)
        log.truncate()
        try:
            return fn()
        except Failure as e:
            failures.append(f"{what}: {e}")
            print(f"FAILED: {failures[-1]}", file=sys.stderr, flush=True)
            return None

    try:
        for rnd, order in bc.interleaved(args.rounds, all_servers, rng):
            for members, payload, deflate in plan:
                for server in order:
                    offer = {None: "", False: ", no offer", True: ", deflate offered"}[deflate]
                    r = attempt(f"round {rnd + 1}, {members} members, {size(payload)}{offer}, "
                                f"{server.name}",
                                lambda: run_load(args, server, members, payload, log,
                                                 deflate=deflate))
                    if r:
                        results[(members, payload, deflate)].setdefault(server.name,
                                                                        []).append(r)
            if fairness and gangway:
                # Alternated, so that drifts of the machine hit both alike.
                for key, stalled in (("alone", 0), ("stalled", 1)):
                    r = attempt(f"round {rnd + 1}, fairness ({key})",
                                lambda: run_load(args, gangway[0], args.fairness_members, 20,
                                                 log, stalled=stalled, limits=False))
                    if r:
                        fair[key].append(r)
            if memory:
                for server in order:
                    r = attempt(f"round {rnd + 1}, memory, {server.name}",
                                lambda: run_memory(args, server, log))
                    if r:
                        mem.setdefault(server.name, []).append(r)
            if cluster:
                setups = [name for name, _ in CLUSTER_SETUPS]
                if rnd:
                    rng.shuffle(setups)
                for payload in cluster_payloads:
                    for setup in setups:
                        r = attempt(f"round {rnd + 1}, across processes, {size(payload)}, "
                                    f"{setup}",
                                    lambda: run_cluster(args, setup, args.cluster_members,
                                                        payload, log))
                        if r:
                            spread[payload].setdefault(setup, []).append(r)
    finally:
        for proc in list(bc.RUNNING):
            bc.stop(proc)
        log.close()

    md = ["Produced by `" + " ".join(["scripts/bench-broadcast.py", *sys.argv[1:]]) + "` on "
          + bc.machine() + ".", ""]
    if args.deflate:
        md += deflate_tables(args, plan, results, names)
    for members, payload, deflate in plan:
        if deflate is not None:
            continue
        title = (f"broadcast: {members} members in one room, {size(payload)} binary, one "
                 f"message each per round")
        res = results[(members, payload, deflate)]

        def stat(name, key):
            return bc.med([r.get(key) for r in res.get(name, [])])

        g_rate, g_cpu = stat("gangway", "per_s"), stat("gangway", "server_cpu_us_per")
        header = ["server", "delivered/s", "CPU µs/delivered", "server CPU", "p50 µs", "p99 µs",
                  "delivered/s vs gangway", "CPU vs gangway", "runs"]
        if args.syscalls:
            header.insert(4, "writes per 1,000 delivered")
        rows = []
        for name in names:
            if not res.get(name):
                continue
            rate, cpu = stat(name, "per_s"), stat(name, "server_cpu_us_per")
            share = stat(name, "server_cpu_share")
            row = [name, bc.fmt(rate), bc.fmt(cpu, 3), f"{share:.0%}",
                   bc.fmt(stat(name, "p50_us"), 1), bc.fmt(stat(name, "p99_us"), 1),
                   bc.fmt(bc.ratio(rate, g_rate)), bc.fmt(bc.ratio(cpu, g_cpu)),
                   str(len(res[name]))]
            if args.syscalls:
                row.insert(4, bc.fmt(stat(name, "writes_per_1000"), 1))
            rows.append(row)
        text, markdown = bc.table(header, rows)
        slow = [f"{name} ({sum(r.get('undelivered', 0) for r in res[name]):,})"
                for name in names if any(r.get("undelivered") for r in res.get(name, []))]
        if slow:
            note = (f"still delivering {args.drain_timeout:g} s after the run (messages not yet "
                    f"received, summed over runs): {', '.join(slow)}")
            text += f"\n{note}"
            markdown += f"\n\n{note}"
        print(f"\n{title}\n{text}")
        md += [f"**{title}**", "", markdown, ""]
    if fairness and (fair["alone"] or fair["stalled"]):
        title = (f"fairness: gangway, {args.fairness_members} members, 20 B, default limits "
                 f"and policy (drop), without and with one more member that never reads")
        header = ["run", "delivered/s", "p50 µs", "p99 µs", "p99 vs alone", "runs"]
        base = bc.med([r["p99_us"] for r in fair["alone"]])
        rows = []
        for key in ("alone", "stalled"):
            runs = fair[key]
            if runs:
                p99 = bc.med([r["p99_us"] for r in runs])
                rows.append([key if key == "alone" else "one never reads",
                             bc.fmt(bc.med([r["per_s"] for r in runs])),
                             bc.fmt(bc.med([r["p50_us"] for r in runs]), 1), bc.fmt(p99, 1),
                             bc.fmt(bc.ratio(p99, base)), str(len(runs))])
        text, markdown = bc.table(header, rows)
        print(f"\n{title}\n{text}")
        md += [f"**{title}**", "", markdown, ""]
    if memory and mem:
        title = (f"memory: RSS with {MEMORY_MEMBERS} idle members in one room, then after one "
                 f"{size(MEMORY_MESSAGE)} message was published to all and delivered")
        header = ["server", "KiB per idle member", "KiB added by the message", "runs"]
        rows = []
        for name in names:
            runs = mem.get(name)
            if runs:
                rows.append([name, bc.fmt(bc.med([r["idle_kib"] for r in runs])),
                             bc.fmt(bc.med([r["added_kib"] for r in runs]), 0), str(len(runs))])
        text, markdown = bc.table(header, rows)
        print(f"\n{title}\n{text}")
        md += [f"**{title}**", "", markdown, ""]
    if cluster:
        for payload in cluster_payloads:
            if not spread[payload]:
                continue
            title = (f"rooms across processes: {args.cluster_members} members in one room, "
                     f"{size(payload)} binary, spread over {CLUSTER_NODES} gangway processes "
                     f"(or all on one); processes and engine on CPU 0, load on CPU 1")
            text, markdown = cluster_table(spread[payload], args.cluster_members, payload)
            print(f"\n{title}\n{text}")
            md += [f"**{title}**", "", markdown, ""]
    return bc.finish(args.markdown, md, failures)


if __name__ == "__main__":
    bc.run_script(main, "bench-broadcast")
