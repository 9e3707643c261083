"""Hand-made HTTP and frames against `gangway serve` and `gangway connect`.

A well-behaved library never sends a wrong handshake or a malformed frame, so these peers are
written byte by byte from RFC 6455. Each asserts the HTTP status or the close code the RFC (and
the CLI contract) requires.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import time

import pytest

from support import (
    GangwayConnect,
    RawSocket,
    accept_for,
    close_code_of,
    encode_frame,
    run,
    upgrade_request,
)

TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def open_raw(server, **overrides) -> RawSocket:
    """A raw connection that has completed the opening handshake."""
    raw = RawSocket(server.host, server.port)
    raw.send(upgrade_request(server.host, server.port, **overrides))
    status, _, head = raw.read_http_head()
    assert status == 101, head
    return raw


def expect_close(raw: RawSocket, code: int) -> None:
    """The next frame is a close with `code`, then the server closes TCP (§7.1.1)."""
    fin, opcode, payload, masked = raw.read_frame()
    while opcode in (TEXT, BINARY, PONG, CONT):  # data that was already on its way
        fin, opcode, payload, masked = raw.read_frame()
    assert opcode == CLOSE, f"expected a close frame, got opcode {opcode:#x}"
    assert not masked, "server frames must not be masked (§5.1)"
    assert close_code_of(payload) == code, f"close payload {payload!r}"
    with contextlib.suppress(OSError):
        raw.send(encode_frame(CLOSE, payload[:2], mask=True))
    # No data frames may follow the close (§5.5.1); the server then closes the connection.
    assert raw.read_until_eof() == b""


# --- opening handshake, server side (§4.2) ------------------------------------------------------


def test_rfc_sample_key_gets_the_rfc_accept(gangway_server):
    server = gangway_server()
    with RawSocket(server.host, server.port) as raw:
        raw.send(upgrade_request(server.host, server.port, key="dGhlIHNhbXBsZSBub25jZQ=="))
        status, headers, head = raw.read_http_head()
        assert status == 101, head
        assert headers["sec-websocket-accept"] == ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]
        assert [v.lower() for v in headers["upgrade"]] == ["websocket"]
        assert "upgrade" in [t.strip().lower() for v in headers["connection"] for t in v.split(",")]
        assert "sec-websocket-protocol" not in headers
        assert "sec-websocket-extensions" not in headers


def test_wrong_version_gets_426_with_supported_version(gangway_server):
    server = gangway_server()
    with RawSocket(server.host, server.port) as raw:
        raw.send(upgrade_request(server.host, server.port, Sec_WebSocket_Version="8"))
        status, headers, head = raw.read_http_head()
        assert status == 426, head
        assert headers.get("sec-websocket-version") == ["13"], head


# Requests that ask for websocket in `Upgrade` but break another rule of §4.2.1. (A request without
# `Upgrade: websocket` is plain HTTP to `gangway serve`: the demo page or 404.)
BAD_REQUESTS = {
    "connection-without-upgrade": {"Connection": "keep-alive"},
    "no-key": {"Sec-WebSocket-Key": None},
    "key-of-15-bytes": {"Sec-WebSocket-Key": base64.b64encode(b"x" * 15).decode()},
    "key-of-17-bytes": {"Sec-WebSocket-Key": base64.b64encode(b"x" * 17).decode()},
    "key-not-base64": {"Sec-WebSocket-Key": "not base64 at all!!!"},
    "no-version": {"Sec-WebSocket-Version": None},
    "no-host": {"Host": None},
}


@pytest.mark.parametrize("overrides", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_invalid_upgrade_request_gets_400(gangway_server, overrides):
    server = gangway_server()
    with RawSocket(server.host, server.port) as raw:
        raw.send(upgrade_request(server.host, server.port, **overrides))
        status, _, head = raw.read_http_head()
        assert status == 400, head


@pytest.mark.parametrize("header", ["Host", "Sec-WebSocket-Key", "Sec-WebSocket-Version"])
def test_duplicated_header_gets_400(gangway_server, header):
    server = gangway_server()
    request = upgrade_request(server.host, server.port)
    value = {
        "Host": f"{server.host}:{server.port}",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }[header]
    request = request[:-2] + f"{header}: {value}\r\n\r\n".encode()
    with RawSocket(server.host, server.port) as raw:
        raw.send(request)
        status, _, head = raw.read_http_head()
        assert status == 400, head


def test_http_1_0_gets_400(gangway_server):
    server = gangway_server()
    request = upgrade_request(server.host, server.port).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    with RawSocket(server.host, server.port) as raw:
        raw.send(request)
        status, _, head = raw.read_http_head()
        assert status == 400, head


def test_post_gets_405(gangway_server):
    server = gangway_server()
    request = b"POST" + upgrade_request(server.host, server.port)[3:]
    with RawSocket(server.host, server.port) as raw:
        raw.send(request)
        status, _, head = raw.read_http_head()
        assert status == 405, head


def test_oversized_request_head_gets_431(gangway_server):
    server = gangway_server()
    request = upgrade_request(server.host, server.port, X_Padding="p" * 20_000)
    with RawSocket(server.host, server.port) as raw:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            raw.send(request)
        status, _, head = raw.read_http_head()
        assert status == 431, head


def test_token_lists_across_lines_and_cases_are_accepted(gangway_server):
    server = gangway_server()
    request = (
        upgrade_request(server.host, server.port, Upgrade="WebSocket", Connection="keep-alive")[:-2]
        + b"connection: UPGRADE\r\n\r\n"
    )
    with RawSocket(server.host, server.port) as raw:
        raw.send(request)
        status, _, head = raw.read_http_head()
        assert status == 101, head


def test_plain_get_serves_the_demo_page(gangway_server):
    server = gangway_server()
    with RawSocket(server.host, server.port) as raw:
        raw.send(f"GET / HTTP/1.1\r\nHost: {server.addr}\r\n\r\n".encode())
        status, headers, head = raw.read_http_head()
        assert status == 200, head
        assert headers["content-type"][0].split(";")[0].strip() == "text/html"
        if "content-length" in headers:
            body = raw.read_exact(int(headers["content-length"][0]))
        else:
            body = raw.read_until_eof()
        assert b"<html" in body.lower()
        assert b"Sec-WebSocket-Accept" in body


def test_handshake_a_byte_at_a_time(gangway_server):
    server = gangway_server()
    request = upgrade_request(server.host, server.port)
    with RawSocket(server.host, server.port) as raw:
        # Each byte in its own segment, so the server really reads the head piecemeal.
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(request)):
            raw.send(request[i : i + 1])
        status, _, head = raw.read_http_head()
        assert status == 101, head
        raw.send(encode_frame(TEXT, b"slowly", mask=True))
        assert raw.read_frame() == (True, TEXT, b"slowly", False)


def test_frames_pipelined_after_the_request_head_are_kept(gangway_server):
    # The request head and two frames in one write: the bytes after the head must be fed to the
    # connection, not dropped with the HTTP parser's buffer.
    server = gangway_server()
    frames = encode_frame(TEXT, "pipelined 😀".encode(), mask=True) + encode_frame(
        BINARY, b"\x00\x01", mask=True
    )
    with RawSocket(server.host, server.port) as raw:
        raw.send(upgrade_request(server.host, server.port) + frames)
        status, _, head = raw.read_http_head()
        assert status == 101, head
        assert raw.read_frame() == (True, TEXT, "pipelined 😀".encode(), False)
        assert raw.read_frame() == (True, BINARY, b"\x00\x01", False)


# --- framing errors, server side (§5, §7.4.1) ---------------------------------------------------


PROTOCOL_ERRORS = {
    "unmasked-frame": encode_frame(TEXT, b"hi", mask=False),
    "rsv1-without-extension": encode_frame(TEXT, b"hi", mask=True, rsv=4),
    "rsv3-without-extension": encode_frame(TEXT, b"hi", mask=True, rsv=1),
    "reserved-data-opcode": encode_frame(0x3, b"hi", mask=True),
    "reserved-control-opcode": encode_frame(0xB, b"", mask=True),
    "ping-of-126-bytes": encode_frame(PING, b"p" * 126, mask=True),
    "fragmented-ping": encode_frame(PING, b"p", mask=True, fin=False),
    "continuation-without-start": encode_frame(CONT, b"x", mask=True),
    "new-message-inside-fragmented": encode_frame(TEXT, b"a", mask=True, fin=False)
    + encode_frame(TEXT, b"b", mask=True),
    "close-with-1-byte": encode_frame(CLOSE, b"\x03", mask=True),
    "close-code-999": encode_frame(CLOSE, struct.pack("!H", 999), mask=True),
    "close-code-1005": encode_frame(CLOSE, struct.pack("!H", 1005), mask=True),
    "close-code-1016": encode_frame(CLOSE, struct.pack("!H", 1016), mask=True),
    "close-code-5000": encode_frame(CLOSE, struct.pack("!H", 5000), mask=True),
    "64-bit-length-with-top-bit": bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 63) + os.urandom(4),
}


@pytest.mark.parametrize("frames", PROTOCOL_ERRORS.values(), ids=PROTOCOL_ERRORS.keys())
def test_protocol_error_closes_with_1002(gangway_server, frames):
    server = gangway_server()
    with open_raw(server) as raw:
        raw.send(frames)
        expect_close(raw, 1002)


INVALID_UTF8 = {
    "invalid-text": encode_frame(TEXT, b"ok \xff", mask=True),
    "surrogate-in-text": encode_frame(TEXT, b"\xed\xa0\x80", mask=True),
    "overlong-in-text": encode_frame(TEXT, b"\xc0\xaf", mask=True),
    # Fail fast (§8.1): the first fragment is already invalid and the message never ends.
    "invalid-first-fragment": encode_frame(TEXT, b"\xf0\x28\x8c\x28", mask=True, fin=False),
    # A 4-byte sequence cut by the frame boundary, completed wrongly in the continuation.
    "invalid-across-fragments": encode_frame(TEXT, b"\xf0\x9f", mask=True, fin=False)
    + encode_frame(CONT, b"\x41", mask=True, fin=False),
    # Mid-frame (§8.1, fail fast): a 1000-byte frame whose 3rd byte is invalid, of which only the
    # header and the first 10 bytes are ever sent.
    "invalid-mid-frame": encode_frame(TEXT, b"ab\xff" + b"x" * 997, mask=True)[: 2 + 2 + 4 + 10],
    "invalid-close-reason": encode_frame(CLOSE, struct.pack("!H", 1000) + b"\xff", mask=True),
}


@pytest.mark.parametrize("frames", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
def test_invalid_utf8_closes_with_1007(gangway_server, frames):
    server = gangway_server()
    with open_raw(server) as raw:
        raw.send(frames)
        expect_close(raw, 1007)


def test_control_frames_inside_a_fragmented_message(gangway_server):
    server = gangway_server()
    with open_raw(server) as raw:
        raw.send(
            encode_frame(TEXT, b"one ", mask=True, fin=False)
            + encode_frame(PING, b"mid-message", mask=True)
            + encode_frame(CONT, b"two ", mask=True, fin=False)
            + encode_frame(PONG, b"unsolicited", mask=True)
            + encode_frame(CONT, b"three", mask=True)
        )
        assert raw.read_frame() == (True, PONG, b"mid-message", False)
        fin, opcode, payload, _ = raw.read_frame()
        # The echo may be fragmented differently, but it is one text message.
        message = payload
        assert opcode == TEXT
        while not fin:
            fin, opcode, payload, _ = raw.read_frame()
            assert opcode == CONT
            message += payload
        assert message == b"one two three"


def test_close_reply_comes_before_the_server_closes_tcp(gangway_server):
    server = gangway_server()
    with open_raw(server) as raw:
        raw.send(encode_frame(CLOSE, struct.pack("!H", 4000) + b"bye", mask=True))
        fin, opcode, payload, masked = raw.read_frame()
        assert (fin, opcode, masked) == (True, CLOSE, False)
        assert close_code_of(payload) == 4000
        started = time.monotonic()
        assert raw.read_until_eof() == b""
        assert time.monotonic() - started < 5


# --- raw servers for `gangway connect` ----------------------------------------------------------


class RawServer:
    """An asyncio TCP server playing a WebSocket server by hand. `script(reader, writer, request)`
    runs after the request head is read; `request` is (request line, headers dict)."""

    def __init__(self, script):
        self.script = script
        self.requests = []
        self._errors = []
        self._tasks = set()

    async def errors(self, timeout: float = 10) -> list:
        """Wait for every connection's script to finish; return what they raised."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        return self._errors

    async def _handle(self, reader, writer):
        self._tasks.add(asyncio.current_task())
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers.setdefault(name.strip().lower(), []).append(value.strip())
            request = (lines[0], headers)
            self.requests.append(request)
            await self.script(reader, writer, request)
        except Exception as err:  # reported by the test, which asserts `errors()` is empty
            self._errors.append(err)
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self):
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            async with server:
                self.port = server.sockets[0].getsockname()[1]
                yield f"ws://127.0.0.1:{self.port}/path?q=1"
        finally:
            # Scripts still running (a failed test) are cancelled and awaited here, not left to
            # the end of the event loop.
            pending = [t for t in self._tasks if not t.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def switching_protocols(request, extra: str = "") -> bytes:
    key = request[1]["sec-websocket-key"][0]
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_for(key)}\r\n{extra}\r\n"
    ).encode()


async def read_frame_async(reader) -> tuple[bool, int, bytes, bytes]:
    """(fin, opcode, unmasked payload, mask key) of the next frame from gangway."""
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), 10)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    key = await reader.readexactly(4) if b1 & 0x80 else b""
    payload = await reader.readexactly(n)
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bool(b0 & 0x80), b0 & 0x0F, payload, key


def test_connect_request_is_a_valid_rfc_6455_request():
    frames = []

    async def script(reader, writer, request):
        writer.write(switching_protocols(request))
        await writer.drain()
        for _ in range(3):
            frames.append(await read_frame_async(reader))
        writer.write(encode_frame(CLOSE, struct.pack("!H", 1000), mask=False))
        await writer.drain()

    async def body():
        raw = RawServer(script)
        async with raw.running() as url, GangwayConnect(url) as gw:
            await gw.send_line("one")
            await gw.send_line("two")
            await gw.close_stdin()
            assert await gw.wait() == 0, gw.stderr_text()
            assert await raw.errors() == []
            line, headers = raw.requests[0]
            assert line == "GET /path?q=1 HTTP/1.1"
            assert headers["host"] == [f"127.0.0.1:{raw.port}"]  # non-default port included
            assert [v.lower() for v in headers["upgrade"]] == ["websocket"]
            assert "upgrade" in [
                t.strip().lower() for v in headers["connection"] for t in v.split(",")
            ]
            assert headers["sec-websocket-version"] == ["13"]
            assert len(base64.b64decode(headers["sec-websocket-key"][0], validate=True)) == 16
            assert [(f, o, p) for f, o, p, _ in frames] == [
                (True, TEXT, b"one"),
                (True, TEXT, b"two"),
                (True, CLOSE, struct.pack("!H", 1000)),
            ]
            keys = [k for _, _, _, k in frames]
            assert all(len(k) == 4 for k in keys), "client frames must be masked (§5.3)"
            assert len(set(keys)) == 3, f"mask keys repeat: {keys}"

    run(body())


def test_connect_keys_are_fresh_per_connection():
    async def script(reader, writer, request):
        writer.write(switching_protocols(request))
        writer.write(encode_frame(CLOSE, struct.pack("!H", 1000), mask=False))
        await writer.drain()
        await read_frame_async(reader)

    async def body():
        raw = RawServer(script)
        async with raw.running() as url:
            for _ in range(2):
                async with GangwayConnect(url) as gw:
                    assert await gw.wait() == 0, gw.stderr_text()
            assert await raw.errors() == []
            keys = [r[1]["sec-websocket-key"][0] for r in raw.requests]
            assert len(keys) == 2 and keys[0] != keys[1]

    run(body())


def test_connect_keeps_frames_pipelined_after_the_101():
    async def script(reader, writer, request):
        writer.write(
            switching_protocols(request)
            + encode_frame(TEXT, "right behind the head 😀".encode(), mask=False)
            + encode_frame(CLOSE, struct.pack("!H", 1000), mask=False)
        )
        await writer.drain()
        _, opcode, payload, _ = await read_frame_async(reader)
        assert (opcode, close_code_of(payload)) == (CLOSE, 1000)

    async def body():
        raw = RawServer(script)
        async with raw.running() as url, GangwayConnect(url) as gw:
            assert await gw.read_line() == "right behind the head 😀"
            assert await gw.wait() == 0, gw.stderr_text()
            assert await raw.errors() == []

    run(body())


SERVER_PROTOCOL_ERRORS = {
    "masked-frame-from-server": (encode_frame(TEXT, b"hi", mask=True), 1002),
    "rsv-bit-without-extension": (encode_frame(TEXT, b"hi", mask=False, rsv=4), 1002),
    "reserved-opcode": (encode_frame(0x3, b"", mask=False), 1002),
    "invalid-utf8-text": (encode_frame(TEXT, b"\xff", mask=False), 1007),
    "invalid-utf8-first-fragment": (encode_frame(TEXT, b"\xc0", mask=False, fin=False), 1007),
}


@pytest.mark.parametrize(
    "frame, code", SERVER_PROTOCOL_ERRORS.values(), ids=SERVER_PROTOCOL_ERRORS.keys()
)
def test_connect_fails_a_misbehaving_server_with_the_right_code(frame, code):
    received = []

    async def script(reader, writer, request):
        writer.write(switching_protocols(request) + frame)
        await writer.drain()
        received.append(await read_frame_async(reader))

    async def body():
        raw = RawServer(script)
        async with raw.running() as url, GangwayConnect(url) as gw:
            assert await gw.wait() == 56  # curl's "failure receiving network data"
            err = gw.stderr_text()
            assert err.startswith("gangway: "), err
            assert await raw.errors() == []
            _, opcode, payload, key = received[0]
            assert opcode == CLOSE and key, "expected a masked close frame"
            assert close_code_of(payload) == code

    run(body())


# Each with gangway's exit code: curl's 22 ("HTTP error") for a status other than 101, curl's 8
# ("weird server reply") for a 101 that is not a valid upgrade.
BAD_RESPONSES = {
    "status-200": (lambda req: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 22),
    "no-upgrade-header": (
        lambda req: switching_protocols(req).replace(b"Upgrade: websocket\r\n", b""),
        8,
    ),
    "no-connection-header": (
        lambda req: switching_protocols(req).replace(b"Connection: Upgrade\r\n", b""),
        8,
    ),
    "two-accept-headers": (
        lambda req: switching_protocols(
            req, f"Sec-WebSocket-Accept: {accept_for(req[1]['sec-websocket-key'][0])}\r\n"
        ),
        8,
    ),
    "subprotocol-not-offered": (
        lambda req: switching_protocols(req, "Sec-WebSocket-Protocol: chat\r\n"),
        8,
    ),
    "extension-not-offered": (
        lambda req: switching_protocols(req, "Sec-WebSocket-Extensions: permessage-deflate\r\n"),
        8,
    ),
}


@pytest.mark.parametrize(
    "respond, exit_code", BAD_RESPONSES.values(), ids=BAD_RESPONSES.keys()
)
def test_connect_rejects_an_invalid_handshake_response(respond, exit_code):
    async def script(reader, writer, request):
        writer.write(respond(request))
        await writer.drain()
        await asyncio.sleep(0.2)

    async def body():
        raw = RawServer(script)
        async with raw.running() as url, GangwayConnect(url) as gw:
            assert await gw.wait() == exit_code, gw.stderr_text()
            err = gw.stderr_text()
            assert err.startswith("gangway: "), err
            assert len(err.strip().splitlines()) == 1, err
            assert await raw.errors() == []

    run(body())
