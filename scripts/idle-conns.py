#!/usr/bin/env python3
"""Memory per idle connection of `gangway serve`.

Starts `gangway serve --listen 127.0.0.1:0`, reads its resident set size (VmRSS), opens N
WebSocket connections on loopback (every handshake completed), lets them sit idle, and reads the
RSS again; the difference divided by N is the memory one idle connection costs. Then (unless
--no-echo) it sends one message (64 KiB by default) on every connection, checks the echo, and
reads the RSS once more: buffers must be released when the connections are idle again.

With --deflate OFFER every handshake offers permessage-deflate (RFC 7692) with that
Sec-WebSocket-Extensions value, e.g. "permessage-deflate; client_max_window_bits" (what Python
websockets, Node ws and Chromium send) or "permessage-deflate" (Firefox); the server must accept
it. The message is then JSON-like text, sent compressed as the server's answer allows (its
client_max_window_bits), and the echo is inflated and checked: every connection has compressed
and inflated a message before it goes idle again.

Prints:

    idle connections: N, server RSS before: X KiB, after: Y KiB, per connection: Z bytes
    after one 65536-byte message each: server RSS Y KiB, per connection: Z bytes

and exits 1 if a per-connection figure is above --max-idle-bytes / --max-after-echo-bytes (when
given), if a handshake or an echo is wrong, or if the whole run takes longer than --timeout.

Only the Python standard library is used. Every process started here is stopped before exit.

    scripts/idle-conns.py                  # 10,000 connections, builds the release binary
    scripts/idle-conns.py -n 1000 --no-echo
    scripts/idle-conns.py --deflate "permessage-deflate; client_max_window_bits" --message-size 1024
    scripts/idle-conns.py --deflate permessage-deflate --server-arg=--deflate-mode=takeover
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
import zlib

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
    p.add_argument("--deflate", metavar="OFFER",
                   help="offer permessage-deflate with this Sec-WebSocket-Extensions value and "
                        "echo one compressed JSON-like text message")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `gangway serve` (repeatable), e.g. "
                        "--server-arg=--deflate-mode=takeover")
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


def start_server(path, log, extra):
    # Keepalive stays on (its timer is part of what a connection costs) but with an interval
    # longer than any run, so no ping frame arrives in the middle of the echo phase.
    server = subprocess.Popen([path, "serve", "--listen", "127.0.0.1:0",
                               "--ping-interval", "600", "--idle-timeout", "1200", *extra],
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


def handshake_request(addr, key, offer):
    extensions = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer else ""
    return (f"GET /idle HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extensions}\r\n").encode()


def header_values(head, name):
    prefix = name.lower().encode() + b":"
    return [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
            if line.lower().startswith(prefix)]


class Deflate:
    """What the server's permessage-deflate answer (RFC 7692 §7.1) lets this client do: the
    window it may compress with (client_max_window_bits, 15 when absent)."""

    def __init__(self, answer):
        name, *params = [p.strip() for p in answer.split(";")]
        if name.lower() != "permessage-deflate":
            raise Failure(f"unexpected extension in the answer: {answer!r}")
        self.client_window_bits = 15
        for param in params:
            key, _, value = param.partition("=")
            if key == "client_max_window_bits":
                self.client_window_bits = int(value.strip('"'))
            elif key not in ("server_no_context_takeover", "client_no_context_takeover",
                             "server_max_window_bits"):
                raise Failure(f"unknown parameter in the answer: {answer!r}")

    def compress(self, data):
        """One whole message, compressed on its own (§7.2.1: sync flush, tail removed)."""
        c = zlib.compressobj(6, zlib.DEFLATED, -max(self.client_window_bits, 9))
        out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
        if not out.endswith(b"\x00\x00\xff\xff"):
            raise Failure("zlib's sync flush did not end with 00 00 ff ff")
        return out[:-4]


def inflate(payload):
    """A compressed message from the server (§7.2.2: the tail appended). Any window the server
    used inflates with 15 bits."""
    d = zlib.decompressobj(-15)
    return d.decompress(payload + b"\x00\x00\xff\xff") + d.flush()


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


def open_connections(addr, count, batch, offer):
    """Open `count` connections, `batch` at a time: connect them all, send every request, then
    read and check every 101. Returns (socket, Deflate or None) pairs."""
    socks = []
    while len(socks) < count:
        group = []
        for _ in range(min(batch, count - len(socks))):
            s = socket.create_connection(addr, timeout=10)
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall(handshake_request(addr, key, offer))
            group.append((s, key))
        for s, key in group:
            head = read_response_head(s)
            status = head.split(b"\r\n", 1)[0]
            if not status.startswith(b"HTTP/1.1 101"):
                raise Failure(f"handshake refused: {status.decode(errors='replace')}")
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            if header_values(head, "Sec-WebSocket-Accept") != [accept]:
                raise Failure("wrong or missing Sec-WebSocket-Accept")
            deflate = None
            if offer:
                answer = header_values(head, "Sec-WebSocket-Extensions")
                if len(answer) != 1:
                    raise Failure(f"permessage-deflate not accepted: {answer!r}")
                deflate = Deflate(answer[0])
            socks.append((s, deflate))
    return socks


def client_frame(payload, b0=0x82):
    """A masked frame (RFC 6455 §5.2) carrying `payload`; `b0` is its first byte (FIN, RSV,
    opcode), a binary message by default."""
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([b0, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, 0x80 | 127]) + n.to_bytes(8, "big")
    key = os.urandom(4)
    # Mask through integer XOR: a Python loop over 64 KiB per byte would be slow.
    mask = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
    return head + key + masked


def server_frame_len(n):
    return n + (2 if n < 126 else 4 if n < 1 << 16 else 10)


def read_frame(sock):
    """One unmasked frame from the server: (first byte, payload)."""
    b0, b1 = recv_exact(sock, 2)
    if b1 & 0x80:
        raise Failure("the server masked a frame")
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(recv_exact(sock, 2), "big")
    elif n == 127:
        n = int.from_bytes(recv_exact(sock, 8), "big")
    return b0, recv_exact(sock, n)


def json_text(size):
    """JSON-like text of `size` bytes, as a chat or dashboard sends (compresses about tenfold)."""
    parts, total, i = [], 0, 0
    while total < size:
        part = f'{{"id":{i},"user":"gangway","text":"hello from the room","ok":true}},'
        parts.append(part)
        total += len(part)
        i += 1
    return "".join(parts)[:size].encode()


def echo_all(socks, size, batch):
    """Send one `size`-byte message on every connection, `batch` connections at a time, and check
    every echo. On a connection with permessage-deflate the message is compressed text and the
    echo is inflated before the check."""
    payload = os.urandom(size)
    frame = client_frame(payload)
    text = json_text(size)
    expected_len = server_frame_len(size)
    for i in range(0, len(socks), batch):
        group = socks[i:i + batch]
        for s, deflate in group:
            if deflate is None:
                s.sendall(frame)
            else:
                # FIN, RSV1 (compressed, RFC 7692 §6), text.
                s.sendall(client_frame(deflate.compress(text), 0xC1))
        for s, deflate in group:
            if deflate is None:
                reply = recv_exact(s, expected_len)
                if reply[0] != 0x82 or reply[-size:] != payload:
                    raise Failure("echo differs from the message sent")
                continue
            b0, body = read_frame(s)
            if b0 & 0x0F != 0x1 or not b0 & 0x80 or b0 & 0x30:
                raise Failure(f"unexpected echo frame, first byte {b0:#x}")
            if (inflate(body) if b0 & 0x40 else body) != text:
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
        server, addr = start_server(path, log, args.server_arg)
        time.sleep(args.settle / 2)
        before = rss_kib(server.pid)
        started = time.monotonic()
        socks = open_connections(addr, n, args.batch, args.deflate)
        opened_in = time.monotonic() - started
        time.sleep(args.settle)
        if server.poll() is not None:
            raise Failure(f"server exited with {server.returncode}")
        idle = rss_kib(server.pid)
        idle_per_conn = per_conn(before, idle, n)
        offer = f", offering {args.deflate!r}" if args.deflate else ""
        print(f"idle connections: {n}{offer}, server RSS before: {before} KiB, after: {idle} KiB, "
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
            kind = "compressed text message" if args.deflate else "message"
            print(f"after one {args.message_size}-byte {kind} each: server RSS {after} KiB, "
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
        for s, _ in socks:
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
