"""Shared helpers for the interop suite: locating and driving the `gangway` binary.

Every helper here is bounded in time and owns the processes it starts:
- `GangwayServer` runs `gangway serve` and is stopped by the `gangway_server` fixture at teardown,
  whatever the test did;
- `GangwayConnect` runs `gangway connect` as an async context manager that kills the process on
  exit (normal, failure or cancellation by a timeout);
- every child asks the kernel to kill it if pytest itself dies (PR_SET_PDEATHSIG), so nothing
  outlives a crashed or killed test run.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import hashlib
import os
import selectors
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Large enough for the 16 MiB messages the suite sends, escaped (binary may grow up to 4x).
LINE_LIMIT = 80 * 1024 * 1024

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Keyword arguments that make a websockets peer deterministic here: no proxy lookup from the
# environment, no keepalive pings of its own (tests send the pings they check), no size limit
# below the 16 MiB messages the suite sends.
WS_OPTIONS = {"ping_interval": None, "max_size": None, "open_timeout": 10, "close_timeout": 5}
WS_CLIENT_OPTIONS = {**WS_OPTIONS, "proxy": None}


def gangway_bin() -> str:
    """The binary under test, per the CLI contract.

    `GANGWAY_BIN` if set, else `target/release/gangway`, else `target/debug/gangway` (relative to
    the repository root). A missing binary is an error, never a skip.
    """
    env = os.environ.get("GANGWAY_BIN")
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"GANGWAY_BIN={env} does not exist")
        return str(path)
    for profile in ("release", "debug"):
        path = REPO_ROOT / "target" / profile / "gangway"
        if path.is_file():
            return str(path)
    raise FileNotFoundError(
        "gangway binary not found: set GANGWAY_BIN or run `cargo build --release -p gangway-cli`"
    )


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the test process goes away."""
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def run(coro, timeout: float = 60):
    """Run one async test body on a fresh event loop, bounded by `timeout` seconds."""

    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


# ---------------------------------------------------------------------------------------------
# gangway serve
# ---------------------------------------------------------------------------------------------


class GangwayServer:
    """A running `gangway serve --listen 127.0.0.1:0 ARGS...`."""

    def __init__(self, *args: str, startup_timeout: float = 15):
        self.args = ["serve", "--listen", "127.0.0.1:0", *args]
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [gangway_bin(), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            preexec_fn=_die_with_parent,
        )
        try:
            line = self._read_first_line(startup_timeout)
            prefix = "listening on "
            if not line.startswith(prefix):
                raise AssertionError(f"unexpected first stdout line from gangway serve: {line!r}")
            self.addr = line[len(prefix) :]
            host, _, port = self.addr.rpartition(":")
            assert host == "127.0.0.1", f"listening on unexpected host: {self.addr!r}"
            self.host = host
            self.port = int(port)
            assert self.port != 0, "gangway serve printed port 0 instead of the bound port"
        except BaseException:
            self.stop()
            raise
        self.url = f"ws://{self.addr}/"

    def _read_first_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        data = b""
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in data:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"gangway serve printed no `listening on` line within {timeout}s; "
                        f"stdout so far {data!r}; stderr: {self.stderr_text()!r}"
                    )
                if not sel.select(remaining):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise AssertionError(
                        f"gangway serve closed stdout (exit {self.proc.poll()}) before "
                        f"`listening on`; stdout {data!r}; stderr: {self.stderr_text()!r}"
                    )
                data += chunk
        first, _, _ = data.partition(b"\n")
        return first.decode("utf-8").rstrip("\r")

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def stop(self) -> None:
        """Kill the server if it still runs and reap it. Safe to call more than once."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        finally:
            if self.proc.stdout:
                self.proc.stdout.close()

    def terminate(self, timeout: float = 10) -> int:
        """Send SIGTERM and wait for the exit code (the caller still gets `stop` at teardown)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


# ---------------------------------------------------------------------------------------------
# gangway connect
# ---------------------------------------------------------------------------------------------


class GangwayConnect:
    """`gangway connect URL ARGS...` as an async context manager.

    Stdout is read line by line (one received message per line, escaped per the CLI contract);
    stderr goes to a temporary file read by `stderr_text()`.
    """

    def __init__(self, url: str, *args: str, stdin=asyncio.subprocess.PIPE):
        self.argv = [gangway_bin(), "connect", url, *args]
        self._stdin = stdin
        self.proc: asyncio.subprocess.Process | None = None
        self._stderr = tempfile.TemporaryFile()

    async def __aenter__(self) -> "GangwayConnect":
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=self._stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
            limit=LINE_LIMIT,
            preexec_fn=_die_with_parent,
        )
        return self

    async def __aexit__(self, *exc) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        self._stderr.close()

    async def send_line(self, line: str | bytes, newline: bytes = b"\n") -> None:
        data = line.encode("utf-8") if isinstance(line, str) else line
        self.proc.stdin.write(data + newline)
        await self.proc.stdin.drain()

    async def close_stdin(self) -> None:
        self.proc.stdin.close()
        await self.proc.stdin.wait_closed()

    async def read_line(self, timeout: float = 10) -> str:
        """The next stdout line, without its `\\n`, decoded as UTF-8 (the output is UTF-8)."""
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise AssertionError(
                f"gangway connect closed stdout (exit {self.proc.returncode}); "
                f"stderr: {self.stderr_text()!r}"
            )
        assert raw.endswith(b"\n"), f"stdout line without newline: {raw[:200]!r}"
        return raw[:-1].decode("utf-8")

    async def read_rest(self, timeout: float = 10) -> bytes:
        """Everything left on stdout until it closes."""
        return await asyncio.wait_for(self.proc.stdout.read(), timeout)

    async def wait(self, timeout: float = 10) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")


def escape(data: str | bytes) -> str:
    """The CLI contract's escaping of one received message, as an independent oracle."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    named = {0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
    out = []
    i = 0
    while i < len(raw):
        b = raw[i]
        if b in named:
            out.append(named[b])
            i += 1
        elif b < 0x20 or b == 0x7F:
            out.append(f"\\x{b:02x}")
            i += 1
        elif b < 0x80:
            out.append(chr(b))
            i += 1
        else:
            # Longest valid UTF-8 sequence starting here (1 to 4 bytes), else one escaped byte.
            for n in (2, 3, 4):
                try:
                    out.append(raw[i : i + n].decode("utf-8"))
                except UnicodeDecodeError:
                    continue
                i += n
                break
            else:
                out.append(f"\\x{b:02x}")
                i += 1
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Raw RFC 6455 pieces for tests that must send what no well-behaved library sends
# ---------------------------------------------------------------------------------------------


def accept_for(key: str) -> str:
    """Sec-WebSocket-Accept for a key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.strip().encode() + GUID).digest()).decode()


def encode_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bool, rsv: int = 0
) -> bytes:
    """One frame (RFC 6455 §5.2); masked with a random key when `mask`."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


class RawSocket:
    """A blocking TCP socket with a deadline on every read, for hand-made HTTP and frames."""

    def __init__(self, host: str, port: int, timeout: float = 10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise AssertionError(f"connection closed with {len(self.buf)} of {n} bytes read")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_http_head(self) -> tuple[int, dict[str, list[str]], str]:
        """Status code, headers (lowercased names, all values) and the raw head."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise AssertionError(f"connection closed before the end of the head: {self.buf!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        text = head.decode("latin-1")
        lines = text.split("\r\n")
        parts = lines[0].split(" ", 2)
        assert parts[0] == "HTTP/1.1", f"bad status line {lines[0]!r}"
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        return int(parts[1]), headers, text

    def read_frame(self) -> tuple[bool, int, bytes, bool]:
        """(fin, opcode, unmasked payload, was_masked) of the next frame."""
        b0, b1 = self.read_exact(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.read_exact(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.read_exact(8))
        masked = bool(b1 & 0x80)
        key = self.read_exact(4) if masked else b""
        payload = self.read_exact(n)
        if masked:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return bool(b0 & 0x80), b0 & 0x0F, payload, masked

    def read_until_eof(self) -> bytes:
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out


def close_code_of(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def upgrade_request(
    host: str, port: int, key: str | None = None, path: str = "/", **overrides
) -> bytes:
    """A valid client handshake; `overrides` maps header names (underscores for dashes) to a
    value, or to None to drop the header."""
    headers = {
        "Host": f"{host}:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key or base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    for name, value in overrides.items():
        name = name.replace("_", "-")
        match = next((k for k in headers if k.lower() == name.lower()), name)
        if value is None:
            headers.pop(match, None)
        else:
            headers[match] = value
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
