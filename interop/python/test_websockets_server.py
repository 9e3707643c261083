"""Python `websockets` as the SERVER for `gangway connect`.

Each test starts a websockets server on 127.0.0.1 (port 0) in its own event loop, runs the binary
with `GangwayConnect`, and drives the accepted connection directly from the test body.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import socket
import time

import pytest
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosedOK

from support import WS_OPTIONS, GangwayConnect, escape, run

MiB = 1024 * 1024


@contextlib.asynccontextmanager
async def peer(**kwargs):
    """A websockets server; yields (url, queue of accepted connections).

    The handler hands each connection to the test and keeps it open until it closes, so the test
    body decides everything that happens on it.
    """
    accepted: asyncio.Queue = asyncio.Queue()

    async def handler(ws):
        await accepted.put(ws)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, **{**WS_OPTIONS, **kwargs}) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/", accepted


async def next_connection(accepted: asyncio.Queue, gw: GangwayConnect, timeout: float = 10):
    try:
        return await asyncio.wait_for(accepted.get(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"gangway connect did not connect; stderr: {gw.stderr_text()!r}")


async def finish(gw: GangwayConnect, ws, expected_exit: int = 0) -> None:
    """Close stdin, expect a clean close 1000 from gangway and the given exit code."""
    await gw.close_stdin()
    with pytest.raises(ConnectionClosedOK):
        await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1000
    assert await gw.wait() == expected_exit, gw.stderr_text()


# --- stdin -> messages --------------------------------------------------------------------------


def test_stdin_lines_are_sent_as_text_messages():
    lines = ["hello", "😀𝄞 four-byte", "tab\there", "", "back\\slash", "last"]

    async def body():
        async with peer() as (url, accepted), GangwayConnect(url) as gw:
            ws = await next_connection(accepted, gw)
            for line in lines:
                await gw.send_line(line)
            for line in lines:
                msg = await asyncio.wait_for(ws.recv(), 10)
                assert isinstance(msg, str), f"got {type(msg).__name__} for line {line!r}"
                assert msg == line
            await finish(gw, ws)

    run(body())


def test_trailing_carriage_return_is_stripped():
    async def body():
        async with peer() as (url, accepted), GangwayConnect(url) as gw:
            ws = await next_connection(accepted, gw)
            await gw.send_line("windows line", newline=b"\r\n")
            await gw.send_line("inner\rcarriage return")
            assert await asyncio.wait_for(ws.recv(), 10) == "windows line"
            assert await asyncio.wait_for(ws.recv(), 10) == "inner\rcarriage return"
            await finish(gw, ws)

    run(body())


def test_stdin_lines_are_sent_as_binary_with_binary_flag():
    lines = [b"plain", b"\xff\xfe not utf-8 \x00", "😀".encode(), b""]

    async def body():
        async with peer() as (url, accepted), GangwayConnect(url, "--binary") as gw:
            ws = await next_connection(accepted, gw)
            for line in lines:
                await gw.send_line(line)
            for line in lines:
                msg = await asyncio.wait_for(ws.recv(), 10)
                assert isinstance(msg, bytes), f"got {type(msg).__name__} for line {line!r}"
                assert msg == line
            await finish(gw, ws)

    run(body())


def test_16_mib_binary_line():
    payload = os.urandom(16 * MiB).replace(b"\n", b"N")
    if payload.endswith(b"\r"):
        payload = payload[:-1] + b"R"

    async def body():
        async with peer() as (url, accepted), GangwayConnect(url, "--binary") as gw:
            ws = await next_connection(accepted, gw)
            _, msg = await asyncio.gather(gw.send_line(payload), asyncio.wait_for(ws.recv(), 60))
            assert isinstance(msg, bytes)
            assert len(msg) == len(payload)
            assert msg == payload
            await finish(gw, ws)

    run(body(), timeout=120)


def test_16_mib_text_line_and_reply():
    # 16 MiB of text with a 4-byte character every 4 KiB, and nothing the CLI escapes.
    ascii_part = base64.b64encode(os.urandom(12 * MiB)).decode()
    text = "😀".join(ascii_part[i : i + 4096] for i in range(0, len(ascii_part), 4096))

    async def body():
        async with peer() as (url, accepted), GangwayConnect(url) as gw:
            ws = await next_connection(accepted, gw)
            _, msg = await asyncio.gather(gw.send_line(text), asyncio.wait_for(ws.recv(), 60))
            assert msg == text
            await ws.send(text)
            assert await gw.read_line(timeout=60) == text
            await finish(gw, ws)

    run(body(), timeout=120)


# --- messages -> stdout -------------------------------------------------------------------------


REPLIES = [
    "plain",
    "😀𝄞 four-byte",
    "line1\nline2",
    "cr\rtab\tbackslash\\",
    "\x00\x01\x1f\x7f controls",
    "\u0085 and \u2028 are not escaped",
    "",
    b"binary \x00\xff\xfe",
    b"valid utf-8 in binary: \xc3\xa9 \xf0\x9f\x98\x80, truncated: \xf0\x9f\x98",
    b"\n",
    b"",
]


def test_received_messages_are_printed_escaped_one_per_line():
    async def body():
        async with peer() as (url, accepted), GangwayConnect(url) as gw:
            ws = await next_connection(accepted, gw)
            for reply in REPLIES:
                await ws.send(reply)
            for reply in REPLIES:
                assert await gw.read_line() == escape(reply), f"for {reply!r}"
            await finish(gw, ws)

    run(body())


def test_escaping_follows_the_contract_literally():
    # The oracle `escape` itself, pinned to the CLI contract's examples.
    assert escape("a\nb") == "a\\nb"
    assert escape("\\") == "\\\\"
    assert escape("\r\t") == "\\r\\t"
    assert escape("\x00\x1b\x7f") == "\\x00\\x1b\\x7f"
    assert escape("😀") == "😀"
    assert escape(b"\xff\xc3\xa9\xf0\x9f") == "\\xffé\\xf0\\x9f"


def test_fragmented_messages_from_the_server_are_printed_as_one_line():
    async def body():
        async with peer() as (url, accepted), GangwayConnect(url) as gw:
            ws = await next_connection(accepted, gw)
            await ws.send(["frag", "men", "ted ", "😀"])
            await ws.send([b"bin", b"", b"ary"])
            emoji = "𝄞".encode()
            await ws.send([emoji[:2], emoji[2:]], text=True)
            assert await gw.read_line() == "fragmented 😀"
            assert await gw.read_line() == "binary"
            assert await gw.read_line() == "𝄞"
            await finish(gw, ws)

    run(body())


def test_server_ping_is_answered_and_not_printed():
    async def body():
        async with peer() as (url, accepted), GangwayConnect(url) as gw:
            ws = await next_connection(accepted, gw)
            for payload in (b"server ping", b"", bytes(range(125))):
                pong_waiter = await ws.ping(payload)
                # Completes only on a pong with exactly this payload (§5.5.3).
                await asyncio.wait_for(pong_waiter, 10)
            await ws.send("after pings")
            assert await gw.read_line() == "after pings"
            await finish(gw, ws)

    run(body())


# --- close --------------------------------------------------------------------------------------


def test_stdin_eof_sends_close_1000_and_exits_0():
    async def body():
        async with peer() as (url, accepted), GangwayConnect(url) as gw:
            ws = await next_connection(accepted, gw)
            await gw.send_line("only line")
            assert await asyncio.wait_for(ws.recv(), 10) == "only line"
            await finish(gw, ws)
            assert await gw.read_rest() == b""
            assert "closed by peer" not in gw.stderr_text()

    run(body())


def test_messages_in_flight_at_stdin_eof_are_still_printed():
    # gangway sends its close at stdin EOF; the server has not read that close yet and sends more
    # messages. §7.1.2: the side that sent a close keeps reading until the peer's close arrives,
    # and the CLI contract says it keeps printing what still arrives.
    burst = [f"{i:03d} " + "x" * 500 for i in range(100)]

    async def body():
        # stdin is a pipe this test owns, so that it can be closed without yielding to the event
        # loop (asyncio closes its own pipes on a later loop iteration).
        read_fd, write_fd = os.pipe()
        try:
            async with peer() as (url, accepted), GangwayConnect(url, stdin=read_fd) as gw:
                os.close(read_fd)
                read_fd = -1
                ws = await next_connection(accepted, gw)
                os.write(write_fd, b"ready\n")
                assert await asyncio.wait_for(ws.recv(), 10) == "ready"
                os.close(write_fd)
                write_fd = -1
                # Block this event loop so that websockets does not process gangway's close frame
                # yet: wait (blocking, bounded) until that frame is waiting unread in the socket,
                # then queue the burst through websockets' sans-I/O layer without yielding.
                deadline = time.monotonic() + 10
                while peek(ws) != bytes([0x88]):
                    assert time.monotonic() < deadline, "gangway sent no close frame at stdin EOF"
                    time.sleep(0.02)
                for message in burst:
                    ws.protocol.send_text(message.encode())
                for data in ws.protocol.data_to_send():
                    ws.transport.write(data)
                with pytest.raises(ConnectionClosedOK):
                    await asyncio.wait_for(ws.recv(), 10)
                assert ws.close_code == 1000
                printed = (await gw.read_rest(timeout=20)).decode().split("\n")
                assert printed[-1] == "", "output does not end with a newline"
                assert printed[:-1] == burst
                assert await gw.wait() == 0, gw.stderr_text()
        finally:
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)

    run(body())


@pytest.mark.parametrize("delay", [0, 0.2])
def test_piped_line_gets_its_answer_from_an_echo_handler(delay):
    # `printf 'hello\n' | gangway connect URL`: stdin ends at once. A websockets handler that
    # answers in its own task (here after `delay` seconds, as one that does some work) may
    # only send while the connection is open: a close that arrived first takes the answer's
    # place (RFC 6455 §5.5.1). gangway waits for a quiet server before closing.
    async def echo(ws):
        async for message in ws:
            await asyncio.sleep(delay)
            await ws.send(message)

    async def body():
        async with serve(echo, "127.0.0.1", 0, **WS_OPTIONS) as server:
            port = server.sockets[0].getsockname()[1]
            for _ in range(3):
                read_fd, write_fd = os.pipe()
                os.write(write_fd, b"hello\n")
                os.close(write_fd)
                try:
                    async with GangwayConnect(f"ws://127.0.0.1:{port}/", stdin=read_fd) as gw:
                        os.close(read_fd)
                        read_fd = -1
                        assert await gw.read_rest(timeout=10) == b"hello\n", gw.stderr_text()
                        assert await gw.wait() == 0, gw.stderr_text()
                finally:
                    if read_fd >= 0:
                        os.close(read_fd)

    run(body())


def test_max_received_closes_once_the_answers_arrived():
    async def answer_twice(ws):
        async for message in ws:
            await ws.send(f"1: {message}")
            await asyncio.sleep(0.1)
            await ws.send(f"2: {message}")

    async def body():
        async with serve(answer_twice, "127.0.0.1", 0, **WS_OPTIONS) as server:
            port = server.sockets[0].getsockname()[1]
            url = f"ws://127.0.0.1:{port}/"
            async with GangwayConnect(url, "--max-received", "2") as gw:
                await gw.send_line("q")
                assert await gw.read_line() == "1: q"
                assert await gw.read_line() == "2: q"
                # Stdin is still open: the count ended the session.
                assert await gw.wait() == 0, gw.stderr_text()

    run(body())


def peek(ws) -> bytes:
    """The first byte waiting unread on the server side of the connection, without reading it."""
    fd = os.dup(ws.transport.get_extra_info("socket").fileno())
    with socket.socket(fileno=fd) as sock:
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return b""


@pytest.mark.parametrize("code, reason", [(4001, "x"), (1001, "going away"), (3000, "😀")])
def test_server_close_is_echoed_and_exits_0(code, reason):
    async def body():
        async with peer() as (url, accepted), GangwayConnect(url) as gw:
            ws = await next_connection(accepted, gw)
            await ws.close(code, reason)
            assert ws.protocol.close_rcvd is not None, "gangway did not answer the close"
            assert ws.protocol.close_rcvd.code == code
            assert await gw.wait() == 0, gw.stderr_text()
            assert f"gangway: closed by peer: {code} {reason}" in gw.stderr_text().splitlines()

    run(body())


def test_server_close_1000_exits_0_quietly():
    async def body():
        async with peer() as (url, accepted), GangwayConnect(url) as gw:
            ws = await next_connection(accepted, gw)
            await ws.send("bye soon")
            await ws.close(1000, "done")
            assert ws.protocol.close_rcvd.code == 1000
            assert await gw.read_line() == "bye soon"
            assert await gw.wait() == 0, gw.stderr_text()
            assert "closed by peer" not in gw.stderr_text()

    run(body())


def test_server_dropping_the_connection_exits_56():
    async def body():
        async with peer() as (url, accepted), GangwayConnect(url) as gw:
            ws = await next_connection(accepted, gw)
            ws.transport.abort()  # TCP reset without a close frame: the connection is lost
            assert await gw.wait() == 56  # curl's "failure receiving network data"
            assert gw.stderr_text().startswith("gangway: ")

    run(body())


# --- subprotocol, headers -----------------------------------------------------------------------


def test_subprotocol_chat_is_selected():
    async def body():
        async with peer(subprotocols=["chat"]) as (url, accepted), GangwayConnect(
            url, "--protocol", "chat", "--protocol", "superchat"
        ) as gw:
            ws = await next_connection(accepted, gw)
            offered = ws.request.headers.get_all("Sec-WebSocket-Protocol")
            assert [p.strip() for h in offered for p in h.split(",")] == ["chat", "superchat"]
            assert ws.subprotocol == "chat"
            await gw.send_line("hi")
            assert await asyncio.wait_for(ws.recv(), 10) == "hi"
            await finish(gw, ws)
            assert "gangway: subprotocol: chat" in gw.stderr_text().splitlines()

    run(body())


def test_no_subprotocol_selected_is_reported_as_none():
    async def body():
        async with peer() as (url, accepted), GangwayConnect(url, "--protocol", "chat") as gw:
            ws = await next_connection(accepted, gw)
            assert ws.subprotocol is None
            await finish(gw, ws)
            assert "gangway: subprotocol: none" in gw.stderr_text().splitlines()

    run(body())


def test_extra_headers_are_sent():
    async def body():
        async with peer() as (url, accepted), GangwayConnect(
            url, "--header", "X-Gangway-Test: 42", "--header", "Authorization: Bearer t0ken"
        ) as gw:
            ws = await next_connection(accepted, gw)
            assert ws.request.headers["X-Gangway-Test"] == "42"
            assert ws.request.headers["Authorization"] == "Bearer t0ken"
            assert ws.request.headers["Sec-WebSocket-Version"] == "13"
            await finish(gw, ws)

    run(body())


# --- --echo -------------------------------------------------------------------------------------


def test_echo_mode_sends_every_message_back_unchanged():
    rng = random.Random(6455)
    messages = []
    for size in [0, 1, 125, 126, 65535, 65536, 300_000, MiB]:
        messages.append(os.urandom(size))
        messages.append("".join(rng.choices("ab😀é\n\\\x00", k=size // 4)))

    async def body():
        async with peer() as (url, accepted), GangwayConnect(url, "--echo") as gw:
            ws = await next_connection(accepted, gw)

            async def send_all():
                for message in messages:
                    await ws.send(message)
                await ws.send(["frag", "mented"])

            sender = asyncio.create_task(send_all())
            for message in messages:
                echoed = await asyncio.wait_for(ws.recv(), 30)
                assert type(echoed) is type(message)
                assert echoed == message
            assert await asyncio.wait_for(ws.recv(), 10) == "fragmented"
            await sender
            pong_waiter = await ws.ping(b"echo mode ping")
            await asyncio.wait_for(pong_waiter, 10)
            await ws.close(1000, "done")
            assert ws.protocol.close_rcvd.code == 1000
            assert await gw.wait() == 0, gw.stderr_text()

    run(body(), timeout=120)


# --- handshake failures -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_http_server(response: bytes):
    """A TCP server that reads one request head and answers `response` verbatim."""

    async def handle(reader, writer):
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(response)
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


def test_handshake_404_exits_22_naming_the_status():
    response = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found"

    async def body():
        async with raw_http_server(response) as url, GangwayConnect(url) as gw:
            assert await gw.wait() == 22  # curl's "HTTP error", as for a refused upgrade
            err = gw.stderr_text()
            assert err.startswith("gangway: "), err
            assert "404" in err
            assert len(err.strip().splitlines()) == 1, f"expected one line: {err!r}"

    run(body())


def test_handshake_with_wrong_accept_exits_8():
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )

    async def body():
        async with raw_http_server(response) as url, GangwayConnect(url) as gw:
            assert await gw.wait() == 8  # curl's "weird server reply"
            err = gw.stderr_text()
            assert err.startswith("gangway: "), err
            assert "accept" in err.lower(), err

    run(body())


def test_connection_refused_exits_7():
    async def body():
        # Bind then close a port so that nothing listens on it.
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        async with GangwayConnect(f"ws://127.0.0.1:{port}/") as gw:
            assert await gw.wait() == 7  # curl's "failed to connect"
            assert gw.stderr_text().startswith("gangway: ")

    run(body())


def test_usage_error_exits_2():
    async def body():
        async with GangwayConnect("not a url", "--no-such-flag") as gw:
            assert await gw.wait() == 2

    run(body())
