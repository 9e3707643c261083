#!/usr/bin/env python3
"""A 1 MiB message written to gangway in small TCP writes, in both roles: the Autobahn
testsuite's cases 9.5.x/9.6.x ("Send message with payload of length 1 MiB. Sent out data in
chops of N octets."), without Autobahn.

For each chop size (64 and 256 bytes by default) and each role, a fresh gangway process echoes
one 1 MiB binary frame that this script writes `chop` bytes at a time, one send() per chop with
TCP_NODELAY, pausing `--pace` microseconds between chops as Autobahn's reactor does (one turn of
its event loop per chop). The time is from the first chop to the last byte of the echo, as
Autobahn measures a case.

- client role: this script is the server; `gangway connect --echo ws://...` connects to it.
- server role: `gangway serve`; this script is the client (masked frames).

Printed per chop size: the median time of each role, the client/server ratio, and what the
gangway process cost (CPU time and context switches, from wait4's rusage, all its threads;
`--strace` adds `strace -c -f` syscall counts). `--load N` runs N busy loops beside the run
(stopped by PID at the end), as a shared machine does: a connection that hands every read over
between threads then waits for CPUs at every chop.

    python3 scripts/bench-chopped.py                 # release build of this checkout
    python3 scripts/bench-chopped.py --load 2 --runs 5
"""

import argparse
import base64
import hashlib
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MESSAGE = 1 << 20
TIMEOUT = 60.0


def frame(payload, masked, opcode=0x2):
    """One FIN frame (binary by default); masked with a random key when sent by a client."""
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    # XOR with the key repeated: one big-integer operation instead of a loop per byte.
    repeated = (key * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return head + key + body


def read_exact(sock, n):
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise EOFError("connection closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(sock):
    """(opcode, payload length) of the next frame, payload read and dropped."""
    b0, b1 = read_exact(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exact(sock, 8))[0]
    if b1 & 0x80:
        read_exact(sock, 4)
    read_exact(sock, n)
    return b0 & 0x0F, n


def read_head(sock):
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("connection closed inside the handshake")
        head += chunk
    return head


def send_chopped(sock, data, chop, pace_s):
    """`data` in writes of `chop` bytes, `pace_s` of busy waiting between them."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(0, len(data), chop):
        sock.sendall(data[i : i + chop])
        if pace_s:
            until = time.perf_counter() + pace_s
            while time.perf_counter() < until:
                pass


def exchange(sock, payload, chop, pace_s, masked):
    """Send `payload` chopped, read its echo, close; the seconds from first chop to echo."""
    start = time.perf_counter()
    send_chopped(sock, frame(payload, masked), chop, pace_s)
    opcode, n = read_frame(sock)
    elapsed = time.perf_counter() - start
    assert (opcode, n) == (2, len(payload)), (opcode, n)
    sock.sendall(frame(b"\x03\xe8", masked, opcode=0x8))
    read_frame(sock)  # the peer's answer to our close
    sock.close()
    return elapsed


def finish(proc):
    """Wait for the gangway process (killing it after TIMEOUT); its rusage."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = status
            return usage
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.005)


def run_client_role(args, chop, payload):
    """gangway connect --echo against this script's server: seconds, rusage."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    url = "ws://127.0.0.1:%d/" % listener.getsockname()[1]
    cmd = wrap(args, [args.bin, "connect", "--echo", url])
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sock, _ = listener.accept()
        sock.settimeout(TIMEOUT)
        head = read_head(sock)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        elapsed = exchange(sock, payload, chop, args.pace / 1e6, masked=False)
    finally:
        listener.close()
    return elapsed, finish(proc)


def run_server_role(args, chop, payload):
    """This script as the client of gangway serve: seconds, rusage."""
    cmd = wrap(args, [args.bin, "serve", "--listen", "127.0.0.1:0", "--threads", "1"])
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        line = proc.stdout.readline().decode()
        host, port = line.split()[-1].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16))
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        read_head(sock)
        elapsed = exchange(sock, payload, chop, args.pace / 1e6, masked=True)
    finally:
        stop(proc, traced=args.strace)
    return elapsed, finish(proc)


def stop(proc, traced):
    """SIGTERM to gangway (under strace, to strace's child: strace then prints its counts)."""
    pid = proc.pid
    if traced:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                pid = int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            pass
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def wrap(args, cmd):
    """`strace -c -f` around the command, when asked for."""
    if not args.strace:
        return cmd
    return ["strace", "-f", "-c", "-o", args.strace_out, "--"] + cmd


def strace_summary(path):
    """{syscall: calls} of an `strace -c` report."""
    calls = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1].isidentifier():
                    calls[parts[-1]] = int(parts[3])
    except OSError:
        pass
    return calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=None, help="gangway binary (default: target/release)")
    parser.add_argument("--chops", default="64,256", help="chop sizes in bytes (default 64,256)")
    parser.add_argument("--runs", type=int, default=3, help="runs per role and size (median)")
    parser.add_argument(
        "--pace", type=float, default=25.0,
        help="microseconds between chops (default 25, about one Autobahn reactor turn)",
    )
    parser.add_argument("--load", type=int, default=0, help="busy loops to run beside (default 0)")
    parser.add_argument("--strace", action="store_true", help="count gangway's syscalls")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if args.bin is None:
        args.bin = os.path.join(root, "target", "release", "gangway")
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"no gangway binary at {args.bin}: cargo build --release -p gangway-cli")
    args.strace_out = f"/tmp/bench-chopped-strace-{os.getpid()}.txt"

    loads = []
    for _ in range(args.load):
        loads.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
    try:
        payload = bytes(i % 251 for i in range(MESSAGE))
        print(f"1 MiB binary message in chops, {args.pace:g} us apart; {args.runs} runs each; "
              f"{args.load} busy loops beside; median time, and gangway's CPU and context "
              f"switches (all threads) per run")
        for chop in [int(c) for c in args.chops.split(",")]:
            results = {}
            for role, run in (("client", run_client_role), ("server", run_server_role)):
                times, cpus, switches, syscalls = [], [], [], []
                for _ in range(args.runs):
                    elapsed, usage = run(args, chop, payload)
                    times.append(elapsed)
                    cpus.append(usage.ru_utime + usage.ru_stime)
                    switches.append(usage.ru_nvcsw + usage.ru_nivcsw)
                    if args.strace:
                        syscalls.append(strace_summary(args.strace_out))
                results[role] = statistics.median(times)
                line = (f"  chop {chop:>4} B  {role:<6} ({'connect --echo' if role == 'client' else 'serve'})"
                        f": {statistics.median(times):.3f} s  cpu {statistics.median(cpus) * 1e3:.0f} ms"
                        f"  context switches {statistics.median(switches):.0f}")
                if syscalls:
                    last = syscalls[-1]
                    line += "  syscalls: " + ", ".join(
                        f"{name} {last.get(name, 0)}"
                        for name in ("recvfrom", "read", "epoll_wait", "futex")
                    )
                print(line, flush=True)
            print(f"  chop {chop:>4} B  client/server time: {results['client'] / results['server']:.2f}x")
    finally:
        for p in loads:
            p.kill()
            p.wait()
        if os.path.exists(args.strace_out):
            os.remove(args.strace_out)


if __name__ == "__main__":
    main()
