#!/usr/bin/env python3
"""Memory per idle connection of `gangway serve`.

Starts `gangway serve --listen 127.0.0.1:0`, reads its resident set size (VmRSS), opens N
WebSocket connections on loopback (every handshake completed), lets them sit idle, and reads the
RSS again; the difference divided by N is the memory one idle connection costs. Then (unless
--no-echo) it sends one message (64 KiB by default) on every connection, checks the echo, and
reads the RSS once more: buffers must be released when the connections are idle again.

Prints:

    idle connections: N, server RSS before: X KiB, after: Y KiB, per connection: Z bytes
    after one 65536-byte message each: server RSS Y KiB, per connection: Z bytes

and exits 1 if a per-connection figure is above --max-idle-bytes / --max-after-echo-bytes (when
given), if a handshake or an echo is wrong, or if the whole run takes longer than --timeout.

Only the Python standard library is used. Every process started here is stopped before exit.

    scripts/idle-conns.py                  # 10,000 connections, builds the release binary
    scripts/idle-conns.py -n 1000 --no-echo
    GANGWAY_BIN=target/debug/gangway scripts/idle-conns.py --no-build
"""

import argparse
import base64
import hashlib
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Failure(Exception):
    """The measurement could not be made (or a limit was exceeded)."""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--connections", type=int, default=10_000)
    p.add_argument("--message-size", type=int, default=64 << 10,
                   help="size of the message echoed on each connection (default 65536)")
    p.add_argument("--no-echo", action="store_true", help="skip the echo phase")
    p.add_argument("--batch", type=int, default=100,
                   help="connections opened (and echoed) at a time; keep it under the listen "
                        "backlog so no SYN is dropped")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds to wait before each RSS reading after connections went idle")
    p.add_argument("--timeout", type=int, default=120, help="bound on the whole run, seconds")
    p.add_argument("--max-idle-bytes", type=int,
                   help="fail if an idle connection costs more than this many bytes")
    p.add_argument("--max-after-echo-bytes", type=int,
                   help="fail if a connection costs more than this after its echo")
    p.add_argument("--no-build", action="store_true",
                   help="do not run `cargo build --release -p gangway-cli` first")
    return p.parse_args()


def binary(args):
    """The binary under test: $GANGWAY_BIN, else the release build (built here unless
    --no-build)."""
    env_bin = os.environ.get("GANGWAY_BIN")
    if env_bin:
        return env_bin
    if not args.no_build:
        # A no-op when the build is fresh; measuring a stale binary would mislead.
        subprocess.run(["cargo", "build", "--release", "-p", "gangway-cli", "--quiet"],
                       cwd=ROOT, check=True)
    path = os.path.join(ROOT, "target", "release", "gangway")
    if not os.path.exists(path):
        raise Failure(f"{path} does not exist; build it or set GANGWAY_BIN")
    return path


def raise_fd_limit(needed):
    """Both processes need one descriptor per connection (plus a few); the server inherits the
    limit set here."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            # Root (CAP_SYS_RESOURCE) may raise the hard limit too.
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return
        except (ValueError, OSError):
            raise Failure(f"need {needed} file descriptors, the hard limit is {hard} "
                          f"(raise it with `ulimit -Hn {needed}` as root)") from None
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def rss_kib(pid):
    """VmRSS of `pid` in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Failure(f"no VmRSS for pid {pid}")


def start_server(path, log):
    # Keepalive stays on (its timer is part of what a connection costs) but with an interval
    # longer than any run, so no ping frame arrives in the middle of the echo phase.
    server = subprocess.Popen([path, "serve", "--listen", "127.0.0.1:0",
                               "--ping-interval", "600", "--idle-timeout", "1200"],
                              stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    # The contract: exactly one line on stdout, `listening on 127.0.0.1:PORT`.
    sel = selectors.DefaultSelector()
    sel.register(server.stdout, selectors.EVENT_READ)
    if not sel.select(timeout=10):
        raise Failure("server did not print its address within 10 s")
    line = server.stdout.readline().decode().strip()
    sel.close()
    if not line.startswith("listening on "):
        raise Failure(f"unexpected first line from the server: {line!r}")
    host, port = line.removeprefix("listening on ").rsplit(":", 1)
    return server, (host, int(port))


def recv_exact(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise Failure("server closed a connection unexpectedly")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def handshake_request(addr, key):
    return (f"GET /idle HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def read_response_head(sock):
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise Failure("server closed a connection during the handshake")
        head += chunk
        if len(head) > 16 << 10:
            raise Failure("handshake response head too long")
    end = head.index(b"\r\n\r\n") + 4
    if end != len(head):
        # The server sends nothing unasked after the 101.
        raise Failure("unexpected bytes after the handshake response")
    return head


def open_connections(addr, count, batch):
    """Open `count` connections, `batch` at a time: connect them all, send every request, then
    read and check every 101."""
    socks = []
    while len(socks) < count:
        group = []
        for _ in range(min(batch, count - len(socks))):
            s = socket.create_connection(addr, timeout=10)
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall(handshake_request(addr, key))
            group.append((s, key))
        for s, key in group:
            head = read_response_head(s)
            status = head.split(b"\r\n", 1)[0]
            if not status.startswith(b"HTTP/1.1 101"):
                raise Failure(f"handshake refused: {status.decode(errors='replace')}")
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())
            values = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                      if line.lower().startswith(b"sec-websocket-accept:")]
            if values != [accept]:
                raise Failure("wrong or missing Sec-WebSocket-Accept")
            socks.append(s)
    return socks


def client_frame(payload):
    """A masked binary frame (RFC 6455 §5.2) carrying `payload`."""
    n = len(payload)
    if n < 126:
        head = bytes([0x82, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x82, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x82, 0x80 | 127]) + n.to_bytes(8, "big")
    key = os.urandom(4)
    # Mask through integer XOR: a Python loop over 64 KiB per byte would be slow.
    mask = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
    return head + key + masked


def server_frame_len(n):
    return n + (2 if n < 126 else 4 if n < 1 << 16 else 10)


def echo_all(socks, size, batch):
    """Send one `size`-byte message on every connection, `batch` connections at a time, and check
    every echo."""
    payload = os.urandom(size)
    frame = client_frame(payload)
    expected_len = server_frame_len(size)
    for i in range(0, len(socks), batch):
        group = socks[i:i + batch]
        for s in group:
            s.sendall(frame)
        for s in group:
            reply = recv_exact(s, expected_len)
            if reply[0] != 0x82 or reply[-size:] != payload:
                raise Failure("echo differs from the message sent")


def per_conn(before, after, n):
    return (after - before) * 1024 // n


def on_alarm(_signum, _frame):
    raise Failure("timed out")


def main():
    args = parse_args()
    n = args.connections
    if n < 1 or args.batch < 1:
        raise Failure("--connections and --batch must be positive")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.timeout)
    path = binary(args)
    raise_fd_limit(n + 64)

    server = None
    socks = []
    log = tempfile.TemporaryFile()
    try:
        server, addr = start_server(path, log)
        time.sleep(args.settle / 2)
        before = rss_kib(server.pid)
        started = time.monotonic()
        socks = open_connections(addr, n, args.batch)
        opened_in = time.monotonic() - started
        time.sleep(args.settle)
        if server.poll() is not None:
            raise Failure(f"server exited with {server.returncode}")
        idle = rss_kib(server.pid)
        idle_per_conn = per_conn(before, idle, n)
        print(f"idle connections: {n}, server RSS before: {before} KiB, after: {idle} KiB, "
              f"per connection: {idle_per_conn} bytes (opened in {opened_in:.1f} s)",
              flush=True)
        failures = []
        if args.max_idle_bytes is not None and idle_per_conn > args.max_idle_bytes:
            failures.append(f"idle connection costs {idle_per_conn} bytes, "
                            f"limit {args.max_idle_bytes}")

        if not args.no_echo:
            started = time.monotonic()
            echo_all(socks, args.message_size, args.batch)
            echoed_in = time.monotonic() - started
            time.sleep(args.settle)
            after = rss_kib(server.pid)
            after_per_conn = per_conn(before, after, n)
            print(f"after one {args.message_size}-byte message each: server RSS {after} KiB, "
                  f"per connection: {after_per_conn} bytes (echoed in {echoed_in:.1f} s)",
                  flush=True)
            if (args.max_after_echo_bytes is not None
                    and after_per_conn > args.max_after_echo_bytes):
                failures.append(f"connection costs {after_per_conn} bytes after its echo, "
                                f"limit {args.max_after_echo_bytes}")
        if failures:
            raise Failure("; ".join(failures))
    except Failure:
        log.seek(0)
        tail = log.read().decode(errors="replace").splitlines()[-10:]
        if tail:
            print("last lines of the server's log:", *tail, sep="\n  ", file=sys.stderr)
        raise
    finally:
        signal.alarm(0)
        for s in socks:
            s.close()
        if server is not None:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            server.stdout.close()
        log.close()


if __name__ == "__main__":
    try:
        main()
    except (Failure, subprocess.CalledProcessError, OSError) as e:
        print(f"idle-conns: {e}", file=sys.stderr)
        sys.exit(1)
