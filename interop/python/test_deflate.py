"""permessage-deflate (RFC 7692) against Python `websockets`, both roles.

- websockets CLIENT -> `gangway serve` (which accepts the extension unless `--no-deflate`), with the
  default offer and with every window size 9-15 and no context takeover either way, against each
  of serve's modes: `window` (the default: server_no_context_takeover in every answer, and a
  12-bit client window, client_max_window_bits=12), `shared` (server_no_context_takeover and
  client_no_context_takeover in every answer) and `dedicated` (12-bit windows both ways, context
  takeover; and with 15-bit windows: the client's offer as it is);
- websockets SERVER <- `gangway connect --deflate`, with the same range of server settings.

Each test proves the extension was negotiated (the response header and the peer's negotiated
parameters) AND used: a counting TCP proxy between the two sees a highly compressible 1 MiB message
cross in a small fraction of its size, each way, and the echo is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import zlib

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)

from support import WS_CLIENT_OPTIONS, WS_OPTIONS, GangwayConnect, run

MiB = 1024 * 1024


def compressible(size: int = MiB) -> str:
    """JSON-like text that deflate shrinks more than tenfold."""
    parts = []
    total = 0
    i = 0
    while total < size:
        part = f'{{"id":{i},"name":"gangway","ok":true}},'
        parts.append(part)
        total += len(part)
        i += 1
    return "".join(parts)[:size]


class CountingProxy:
    """A TCP proxy on 127.0.0.1 to `target` that counts the bytes going each way."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.up = 0  # client -> server
        self.down = 0  # server -> client
        self._tasks: set[asyncio.Task] = set()

    async def _pipe(self, reader, writer, direction: str) -> None:
        try:
            while data := await reader.read(65536):
                setattr(self, direction, getattr(self, direction) + len(data))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        for coro in (
            self._pipe(client_reader, server_writer, "up"),
            self._pipe(server_reader, client_writer, "down"),
        ):
            task = asyncio.ensure_future(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def running(self):
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def deflate_of(ws) -> PerMessageDeflate:
    [extension] = ws.protocol.extensions
    assert isinstance(extension, PerMessageDeflate)
    return extension


# --- websockets client -> gangway serve ---------------------------------------------------------

# (server_max_window_bits, client_max_window_bits, server_no_context_takeover,
#  client_no_context_takeover) as the websockets client offers them.
CLIENT_OFFERS = [
    *[(bits, bits, False, False) for bits in range(9, 16)],
    (9, 15, True, False),
    (15, 9, False, True),
    (12, 10, True, True),
    (None, None, True, True),
]


# serve's modes: (arguments, the windows it asks for, server's then client's (15: none), whether
# it always removes context takeover, server's then client's).
SERVE_MODES = {
    "window": ((), (15, 12), (True, False)),
    "shared": (("--deflate-mode", "shared"), (15, 15), (True, True)),
    "dedicated": (("--deflate-mode", "dedicated"), (12, 12), (False, False)),
    "dedicated15": (
        ("--deflate-mode", "dedicated", "--deflate-window-bits", "15"),
        (15, 15),
        (False, False),
    ),
}


@pytest.mark.parametrize("mode", SERVE_MODES)
@pytest.mark.parametrize(
    "smwb,cmwb,snct,cnct",
    CLIENT_OFFERS,
    ids=[f"s{s}-c{c}{'-snct' if sn else ''}{'-cnct' if cn else ''}" for s, c, sn, cn in CLIENT_OFFERS],
)
def test_websockets_client_negotiates_and_uses_deflate(
    gangway_server, mode, smwb, cmwb, snct, cnct
):
    args, (server_bits, client_bits), (server_nct, client_nct) = SERVE_MODES[mode]
    server = gangway_server(*args)
    factory = ClientPerMessageDeflateFactory(
        server_no_context_takeover=snct,
        client_no_context_takeover=cnct,
        server_max_window_bits=smwb,
        client_max_window_bits=cmwb if cmwb is not None else True,
    )
    text = compressible()

    async def body():
        proxy = CountingProxy("127.0.0.1", port_of(server.url))
        async with proxy.running() as port:
            url = f"ws://127.0.0.1:{port}/"
            async with connect(url, extensions=[factory], compression=None, **WS_CLIENT_OPTIONS) as ws:
                header = ws.response.headers["Sec-WebSocket-Extensions"]
                assert header.startswith("permessage-deflate"), header
                ext = deflate_of(ws)
                # What gangway agreed to, as websockets understood it (its own side is "local").
                assert ext.remote_no_context_takeover == (snct or server_nct)
                assert ext.local_no_context_takeover == (cnct or client_nct)
                assert ext.remote_max_window_bits == min(smwb or 15, server_bits)
                # client_max_window_bits is always offered (a value, or none: any limit is fine).
                assert ext.local_max_window_bits == min(cmwb or 15, client_bits)
                up, down = proxy.up, proxy.down
                # The big message twice (context takeover, where allowed, makes the second tiny),
                # binary, and small messages in between.
                for message in (text, "small", text, os.urandom(1000), b"\x00" * 100_000, "é😀" * 50):
                    await ws.send(message)
                    assert await asyncio.wait_for(ws.recv(), 30) == message
                sent_up, sent_down = proxy.up - up, proxy.down - down
        # Uncompressed, each way would carry more than 2 MiB.
        assert sent_up < 2 * MiB // 10, f"client to server: {sent_up} bytes"
        assert sent_down < 2 * MiB // 10, f"server to client: {sent_down} bytes"

    run(body(), timeout=120)


# serve's answer to websockets' default offer in each mode, and the agreement websockets reads
# from it: (server window, client window, server no context takeover, client no context takeover).
DEFAULT_OFFER_ANSWERS = {
    "window": (
        "permessage-deflate; server_no_context_takeover; client_max_window_bits=12",
        (15, 12, True, False),
    ),
    "shared": (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        (15, 15, True, True),
    ),
    "dedicated": (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
        (12, 12, False, False),
    ),
    "dedicated15": ("permessage-deflate", (15, 15, False, False)),
}


@pytest.mark.parametrize("mode", SERVE_MODES)
def test_websockets_default_offer_is_accepted(gangway_server, mode):
    # websockets offers `permessage-deflate; client_max_window_bits` by default, as browsers do.
    server = gangway_server(*SERVE_MODES[mode][0])
    answer, agreed = DEFAULT_OFFER_ANSWERS[mode]
    # Fits in every window: with context takeover a repeat refers back to the previous copy.
    text = compressible(2000)

    async def body():
        proxy = CountingProxy("127.0.0.1", port_of(server.url))
        async with proxy.running() as port:
            url = f"ws://127.0.0.1:{port}/"
            async with connect(url, **WS_CLIENT_OPTIONS) as ws:
                offered = ws.request.headers["Sec-WebSocket-Extensions"]
                assert offered == "permessage-deflate; client_max_window_bits", offered
                assert ws.response.headers.get_all("Sec-WebSocket-Extensions") == [answer]
                ext = deflate_of(ws)
                assert (
                    ext.remote_max_window_bits,
                    ext.local_max_window_bits,
                    ext.remote_no_context_takeover,
                    ext.local_no_context_takeover,
                ) == agreed
                # Small and large, several in a row each way.
                for message in ("hello", compressible(200_000), b"\x01" * 70_000, "", "é😀" * 50):
                    await ws.send(message)
                    assert await asyncio.wait_for(ws.recv(), 30) == message
                # The same message five times: without context takeover each copy costs its
                # compressed size; with it, the repeats cost next to nothing.
                up, down = proxy.up, proxy.down
                for _ in range(5):
                    await ws.send(text)
                    assert await asyncio.wait_for(ws.recv(), 30) == text
                sent_up, sent_down = proxy.up - up, proxy.down - down
        once = len(zlib.compress(text.encode(), 6))
        assert once < len(text) // 3, once
        # Up: the client's context takeover; down: the server's.
        for sent, no_takeover in ((sent_up, agreed[3]), (sent_down, agreed[2])):
            if no_takeover:
                assert 4 * once < sent < 6 * once, (sent, once)
            else:
                assert sent < 2 * once, (sent, once)

    run(body())



def test_no_deflate_server_declines_the_offer(gangway_server):
    server = gangway_server("--no-deflate")

    async def body():
        async with connect(server.url, **WS_CLIENT_OPTIONS) as ws:
            assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
            assert ws.response.headers.get_all("Sec-WebSocket-Extensions") == []
            assert ws.protocol.extensions == []
            text = compressible(100_000)
            await ws.send(text)
            assert await asyncio.wait_for(ws.recv(), 30) == text

    run(body())


def test_deflate_bomb_is_closed_with_1009(gangway_server):
    # 10 MiB of zeros compress to about 10 KB; the limit applies to the inflated size.
    server = gangway_server("--max-message-size", str(MiB))

    async def body():
        async with connect(server.url, **WS_CLIENT_OPTIONS) as ws:
            assert deflate_of(ws)
            await ws.send(b"\x00" * MiB)  # exactly the limit: fine
            assert await asyncio.wait_for(ws.recv(), 30) == b"\x00" * MiB
            await ws.send(b"\x00" * (10 * MiB))
            with pytest.raises(ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), 30)
            assert ws.close_code == 1009, ws.close_code

    run(body())


# --- gangway connect --deflate -> websockets server ---------------------------------------------


@contextlib.asynccontextmanager
async def peer(factory):
    """A websockets server with `factory` (None: no compression); yields (url, accepted queue)."""
    accepted: asyncio.Queue = asyncio.Queue()

    async def handler(ws):
        await accepted.put(ws)
        await ws.wait_closed()

    extensions = {"extensions": [factory], "compression": None} if factory else {"compression": None}
    async with serve(handler, "127.0.0.1", 0, **{**WS_OPTIONS, **extensions}) as server:
        port = server.sockets[0].getsockname()[1]
        yield port, accepted


# (server_max_window_bits, client_max_window_bits, server_no_context_takeover,
#  client_no_context_takeover) as the websockets server imposes them.
SERVER_SETTINGS = [
    *[(bits, bits, False, False) for bits in range(9, 16)],
    (9, 15, True, False),
    (15, 9, False, True),
    (12, 12, True, True),
]


@pytest.mark.parametrize(
    "smwb,cmwb,snct,cnct",
    SERVER_SETTINGS,
    ids=[f"s{s}-c{c}{'-snct' if sn else ''}{'-cnct' if cn else ''}" for s, c, sn, cn in SERVER_SETTINGS],
)
def test_gangway_connect_negotiates_and_uses_deflate(smwb, cmwb, snct, cnct):
    factory = ServerPerMessageDeflateFactory(
        server_no_context_takeover=snct,
        client_no_context_takeover=cnct,
        server_max_window_bits=smwb,
        client_max_window_bits=cmwb,
    )
    text = compressible()

    async def body():
        async with peer(factory) as (port, accepted):
            proxy = CountingProxy("127.0.0.1", port)
            async with proxy.running() as proxy_port:
                url = f"ws://127.0.0.1:{proxy_port}/"
                async with GangwayConnect(url, "--echo", "--deflate") as gw:
                    ws = await asyncio.wait_for(accepted.get(), 10)
                    ext = deflate_of(ws)
                    assert ext.local_no_context_takeover == snct
                    assert ext.remote_no_context_takeover == cnct
                    assert ext.local_max_window_bits == smwb
                    assert ext.remote_max_window_bits == cmwb
                    up, down = proxy.up, proxy.down
                    for message in (text, "small", text, os.urandom(1000), b"\x00" * 100_000):
                        await ws.send(message)
                        assert await asyncio.wait_for(ws.recv(), 30) == message
                    sent_up, sent_down = proxy.up - up, proxy.down - down
                    await ws.close()
                    assert await gw.wait(30) == 0, gw.stderr_text()
                    assert "gangway: permessage-deflate: on" in gw.stderr_text()
        assert sent_up < 2 * MiB // 10, f"gangway to server: {sent_up} bytes"
        assert sent_down < 2 * MiB // 10, f"server to gangway: {sent_down} bytes"

    run(body(), timeout=120)


def test_gangway_connect_without_a_deflate_server_runs_uncompressed():
    async def body():
        async with peer(None) as (port, accepted):
            async with GangwayConnect(f"ws://127.0.0.1:{port}/", "--deflate") as gw:
                ws = await asyncio.wait_for(accepted.get(), 10)
                assert ws.protocol.extensions == []
                await gw.send_line("plain text")
                assert await asyncio.wait_for(ws.recv(), 10) == "plain text"
                await gw.close_stdin()
                with pytest.raises(ConnectionClosedOK):
                    await asyncio.wait_for(ws.recv(), 10)
                assert await gw.wait() == 0
                assert "gangway: permessage-deflate: off" in gw.stderr_text()

    run(body())


def test_gangway_connect_does_not_offer_deflate_by_default():
    async def body():
        async with peer(ServerPerMessageDeflateFactory()) as (port, accepted):
            async with GangwayConnect(f"ws://127.0.0.1:{port}/") as gw:
                ws = await asyncio.wait_for(accepted.get(), 10)
                assert "Sec-WebSocket-Extensions" not in ws.request.headers
                assert ws.protocol.extensions == []
                await gw.close_stdin()
                with pytest.raises(ConnectionClosedOK):
                    await asyncio.wait_for(ws.recv(), 10)
                assert await gw.wait() == 0
                assert "permessage-deflate" not in gw.stderr_text()

    run(body())
