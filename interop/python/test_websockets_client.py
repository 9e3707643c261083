"""Python `websockets` as the CLIENT of `gangway serve` (an echo server)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from support import WS_CLIENT_OPTIONS, run

MiB = 1024 * 1024


def ws_connect(server, **kwargs):
    return connect(server.url, **{**WS_CLIENT_OPTIONS, **kwargs})


# --- data messages ------------------------------------------------------------------------------


TEXTS = [
    "hello",
    "",
    "😀𝄞",  # 4-byte UTF-8 sequences only
    "mixed: ascii, é (2 bytes), € (3 bytes), 😀 (4 bytes), \u0000 and \u007f control chars",
    "𝄞" * 40_000,  # 160 KB of 4-byte characters: 64-bit length, many read chunks
]


@pytest.mark.parametrize("text", TEXTS, ids=["ascii", "empty", "4-byte", "mixed", "160k-4-byte"])
def test_text_message_is_echoed_as_text(gangway_server, text):
    server = gangway_server()

    async def body():
        async with ws_connect(server) as ws:
            await ws.send(text)
            reply = await ws.recv()
            assert isinstance(reply, str), f"text came back as {type(reply).__name__}"
            assert reply == text

    run(body())


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 16 * MiB])
def test_binary_message_is_echoed_exactly(gangway_server, size):
    # 125/126 and 65535/65536 straddle the 7-bit, 16-bit and 64-bit length encodings (§5.2).
    server = gangway_server()
    payload = os.urandom(size)

    async def body():
        async with ws_connect(server) as ws:
            await ws.send(payload)
            reply = await ws.recv()
            assert isinstance(reply, bytes), f"binary came back as {type(reply).__name__}"
            assert len(reply) == size
            assert reply == payload

    run(body(), timeout=120)


def test_messages_sent_back_to_back_come_back_in_order(gangway_server):
    server = gangway_server()
    messages = [f"message {i} 😀" if i % 2 else os.urandom(i) for i in range(500)]

    async def body():
        async with ws_connect(server) as ws:
            for message in messages:
                await ws.send(message)
            for expected in messages:
                assert await ws.recv() == expected

    run(body())


# --- fragmentation (§5.4) -----------------------------------------------------------------------


def test_fragmented_text_comes_back_as_one_message(gangway_server):
    server = gangway_server()

    async def body():
        async with ws_connect(server) as ws:
            await ws.send(["frag", "men", "ted ", "😀𝄞", ""])
            assert await ws.recv() == "fragmented 😀𝄞"

    run(body())


def test_fragmented_text_split_inside_a_4_byte_character(gangway_server):
    # UTF-8 validation must carry across frame boundaries (§8.1): the 4 bytes of 😀 arrive in
    # three different frames.
    server = gangway_server()
    emoji = "😀".encode()

    async def body():
        async with ws_connect(server) as ws:
            await ws.send([b"a" + emoji[:1], emoji[1:3], emoji[3:] + b"b"], text=True)
            reply = await ws.recv()
            assert isinstance(reply, str)
            assert reply == "a😀b"

    run(body())


def test_fragmented_binary_comes_back_as_one_message(gangway_server):
    server = gangway_server()
    parts = [os.urandom(1), b"", os.urandom(125), os.urandom(70_000), os.urandom(3)]

    async def body():
        async with ws_connect(server) as ws:
            await ws.send(parts)
            reply = await ws.recv()
            assert isinstance(reply, bytes)
            assert reply == b"".join(parts)

    run(body())


def test_ping_interleaved_in_a_fragmented_message(gangway_server):
    # Control frames may be injected between the fragments of a message (§5.4); the pong comes
    # first, then the whole message.
    server = gangway_server()

    async def body():
        async with ws_connect(server) as ws:
            pongs = []

            async def fragments():
                yield "first half, "
                pongs.append(await ws.ping(b"in the middle"))
                yield "second half"

            await ws.send(fragments())
            await asyncio.wait_for(pongs[0], 10)
            assert await ws.recv() == "first half, second half"

    run(body())


# --- ping / pong (§5.5.2, §5.5.3) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"", b"ping payload \x00\xff", bytes(range(125))],
    ids=["empty", "binary", "125-bytes"],
)
def test_ping_is_answered_with_the_same_payload(gangway_server, payload):
    server = gangway_server()

    async def body():
        async with ws_connect(server) as ws:
            pong_waiter = await ws.ping(payload)
            # websockets completes the waiter only for a pong carrying this exact payload.
            latency = await asyncio.wait_for(pong_waiter, 10)
            assert latency >= 0
            # The connection is still usable, and the pong was not echoed as a message.
            await ws.send("after ping")
            assert await ws.recv() == "after ping"

    run(body())


def test_unsolicited_pong_is_ignored(gangway_server):
    server = gangway_server()

    async def body():
        async with ws_connect(server) as ws:
            await ws.pong(b"nobody asked")
            await ws.send("still here")
            assert await ws.recv() == "still here"

    run(body())


# --- close (§5.5.1, §7) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, reason",
    [(4000, "bye"), (1000, ""), (1001, "going away"), (3000, "reason with 😀 and é")],
)
def test_client_close_code_is_echoed(gangway_server, code, reason):
    server = gangway_server()

    async def body():
        async with ws_connect(server) as ws:
            await ws.send("before close")
            assert await ws.recv() == "before close"
            started = time.monotonic()
            await ws.close(code, reason)
            elapsed = time.monotonic() - started
            received = ws.protocol.close_rcvd
            assert received is not None, "gangway did not answer the close frame"
            # §5.5.1: the answer typically echoes the status code received.
            assert received.code == code
            assert ws.close_code == code
            # gangway echoes the reason too (the RFC only asks for the code).
            assert received.reason == reason
            # §7.1.1: the server closes TCP first, so the client does not wait for its own
            # close_timeout (5 s) before seeing the connection end.
            assert elapsed < 3, f"closing took {elapsed:.1f}s: did the server close TCP?"

    run(body())


# --- subprotocol (§1.9, §4.2.2) -----------------------------------------------------------------


@pytest.mark.parametrize(
    "server_protocols, offered, selected",
    [
        (["chat"], ["chat", "superchat"], "chat"),
        # The server's order decides, not the client's.
        (["superchat", "chat"], ["chat", "superchat"], "superchat"),
        # Nothing in common: no header at all, and the connection still opens.
        (["chat"], ["superchat"], None),
        # The server has no subprotocols configured: no header.
        ([], ["chat", "superchat"], None),
        # The client offers none: no header even though the server has some.
        (["chat"], None, None),
    ],
    ids=["chat", "server-order-wins", "no-common", "server-has-none", "client-offers-none"],
)
def test_subprotocol_selection(gangway_server, server_protocols, offered, selected):
    args = [arg for name in server_protocols for arg in ("--protocol", name)]
    server = gangway_server(*args)

    async def body():
        async with ws_connect(server, subprotocols=offered) as ws:
            assert ws.subprotocol == selected
            header = ws.response.headers.get_all("Sec-WebSocket-Protocol")
            assert header == ([selected] if selected else [])
            await ws.send("hi")
            assert await ws.recv() == "hi"

    run(body())


def test_extension_offer_is_accepted(gangway_server):
    # websockets offers permessage-deflate by default and `gangway serve` accepts it (RFC 7692;
    # test_deflate.py covers every parameter and proves the compression on the wire).
    server = gangway_server()

    async def body():
        async with ws_connect(server, compression="deflate") as ws:
            assert "permessage-deflate" in ws.request.headers.get("Sec-WebSocket-Extensions", "")
            # serve's default mode: the server's messages without context takeover, the client's
            # within a 12-bit window.
            assert ws.response.headers.get_all("Sec-WebSocket-Extensions") == [
                "permessage-deflate; server_no_context_takeover; client_max_window_bits=12"
            ]
            assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
            text = "compressible " * 1000
            await ws.send(text)
            assert await ws.recv() == text

    run(body())


# --- limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fragmented", [False, True], ids=["single-frame", "fragmented"])
def test_message_over_max_message_size_is_closed_with_1009(gangway_server, fragmented):
    server = gangway_server("--max-message-size", "1024")

    async def body():
        async with ws_connect(server) as ws:
            # Exactly at the limit is fine.
            at_limit = os.urandom(1024)
            await ws.send(at_limit)
            assert await ws.recv() == at_limit
            over = os.urandom(1025)
            await ws.send([over[:600], over[600:]] if fragmented else over)
            with pytest.raises(ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.rcvd is not None, "no close frame received from gangway"
            assert info.value.rcvd.code == 1009

    run(body())


# --- handshake ----------------------------------------------------------------------------------


def test_upgrade_works_on_any_path(gangway_server):
    server = gangway_server()

    async def body():
        async with connect(server.url + "any/path?query=1", **WS_CLIENT_OPTIONS) as ws:
            await ws.send("on any path")
            assert await ws.recv() == "on any path"

    run(body())


def test_sigterm_closes_open_connections_with_1001(gangway_server):
    server = gangway_server()

    async def body():
        async with ws_connect(server) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            loop = asyncio.get_running_loop()
            exit_code = loop.run_in_executor(None, server.terminate)
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 10)
            assert info.value.rcvd is not None, f"no close frame: {info.value!r}"
            assert info.value.rcvd.code == 1001
            assert await exit_code == 0

    run(body())
