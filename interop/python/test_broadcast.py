"""Python `websockets` clients in the rooms of `gangway serve --broadcast`.

Every connection joins the room named by its URL path; every text or binary message a client
sends goes to every member of its room (the sender too, unless `--broadcast-exclude-self`).
"""

from __future__ import annotations

import asyncio
import os
import struct
import zlib

from websockets.asyncio.client import connect

from support import WS_CLIENT_OPTIONS, RawSocket, encode_frame, run, upgrade_request

TEXT, BINARY = 0x1, 0x2


def ws_connect(url, **kwargs):
    return connect(url, **{**WS_CLIENT_OPTIONS, **kwargs})


def message(sender: int, seq: int) -> str | bytes:
    """The seq-th message of a sender: text and binary alternate, 4-byte UTF-8 included."""
    if seq % 2:
        return f"{sender}:{seq}:".encode() + os.urandom(seq % 300)
    return f"{sender}:{seq}: 😀 {'é' * (seq % 50)}"


def origin(received: str | bytes) -> tuple[int, int]:
    """The sender and the sequence number of a message."""
    sep = ":" if isinstance(received, str) else b":"
    sender, seq, _ = received.split(sep, 2)
    return int(sender), int(seq)


async def exchange(urls, per_client, *, expect_own, per_client_options=None, **options):
    """Each client (one per URL) sends `per_client` messages, all at once; returns what each
    received, once each got what it expects. `per_client_options` (one dict per URL) adds to
    `options` client by client."""
    extra = per_client_options or [{}] * len(urls)
    clients = [await ws_connect(url, **{**options, **more}) for url, more in zip(urls, extra)]
    try:
        # Every member has joined before anyone sends (the server joins a connection to its room
        # as soon as it answered the handshake).
        await asyncio.sleep(0.2)
        sent = [[message(i, seq) for seq in range(per_client)] for i in range(len(clients))]

        async def send_all(ws, messages):
            for m in messages:
                await ws.send(m)

        async def receive(ws, count):
            return [await asyncio.wait_for(ws.recv(), 10) for _ in range(count)]

        same_room = len(set(urls)) == 1
        expected = len(clients) * per_client if same_room else per_client
        if not expect_own:
            expected -= per_client
        results = await asyncio.gather(
            *(send_all(ws, m) for ws, m in zip(clients, sent)),
            *(receive(ws, expected) for ws in clients),
        )
        received = results[len(clients) :]
        # Nothing more than that arrives.
        for ws in clients:
            try:
                extra = await asyncio.wait_for(ws.recv(), 0.3)
            except asyncio.TimeoutError:
                continue
            raise AssertionError(f"unexpected extra message {extra!r}")
        return sent, received
    finally:
        for ws in clients:
            await ws.close()


def check_order(sent, received, *, expect_own):
    """Every member got every other member's messages (and its own with `expect_own`), each
    sender's in the order sent, each message exactly as sent (text as text, binary as binary);
    and all members saw the messages in one order."""
    orders = []
    for me, got in enumerate(received):
        by_sender: dict[int, list] = {}
        for m in got:
            by_sender.setdefault(origin(m)[0], []).append(m)
        for sender, messages in enumerate(sent):
            if sender == me and not expect_own:
                assert sender not in by_sender, f"client {me} got its own messages back"
                continue
            assert by_sender.get(sender) == messages, f"client {me}, from {sender}"
        orders.append([origin(m) for m in got])
    if expect_own:
        assert all(order == orders[0] for order in orders), "members saw different orders"


def test_every_member_of_a_room_receives_every_message_in_order(gangway_server):
    server = gangway_server("--broadcast")
    url = f"{server.url}room"

    async def body():
        # Without permessage-deflate, with it (websockets' default offer), and both in one
        # room: the deflate members get the messages compressed once for them (those from 32
        # bytes up that shrink), the others plain; everyone gets every message, in one order.
        plain = [url] * 4
        sent_a, got_a = await exchange(plain, 40, expect_own=True, compression=None)
        check_order(sent_a, got_a, expect_own=True)
        sent_b, got_b = await exchange([url] * 4, 40, expect_own=True)
        check_order(sent_b, got_b, expect_own=True)
        mixed = [{"compression": None}, {}, {}, {"compression": None}, {}]
        sent_c, got_c = await exchange(
            [url] * len(mixed), 40, expect_own=True, per_client_options=mixed
        )
        check_order(sent_c, got_c, expect_own=True)

    run(body())


def test_rooms_are_named_by_the_url_path(gangway_server):
    server = gangway_server("--broadcast")

    async def body():
        # Two rooms: each client only hears its own room (here: only itself).
        urls = [f"{server.url}a", f"{server.url}b", f"{server.url}a/b", f"{server.url}b?x=1"]
        async with ws_connect(urls[1]) as b, ws_connect(urls[3]) as b_query:
            await asyncio.sleep(0.2)
            await b.send("to room /b")
            # The query is not part of the room's name: /b?x=1 is in /b.
            assert await asyncio.wait_for(b_query.recv(), 5) == "to room /b"
            assert await asyncio.wait_for(b.recv(), 5) == "to room /b"
        sent, received = await exchange(urls[:3], 5, expect_own=True)
        for i, got in enumerate(received):
            assert got == sent[i], f"client {i} heard another room"

    run(body())


def test_exclude_self_leaves_the_sender_out(gangway_server):
    server = gangway_server("--broadcast", "--broadcast-exclude-self")
    url = f"{server.url}chat"

    async def body():
        sent, received = await exchange([url] * 3, 30, expect_own=False)
        check_order(sent, received, expect_own=False)

    run(body())


def read_frame_rsv(raw: RawSocket) -> tuple[int, bytes]:
    """The first byte (FIN, RSV bits, opcode) and the payload of the next frame, unmasked."""
    b0, b1 = raw.read_exact(2)
    assert not b1 & 0x80, "a server frame is never masked"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", raw.read_exact(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", raw.read_exact(8))
    return b0, raw.read_exact(n)


def inflate(payload: bytes) -> bytes:
    """A compressed message's payload inflated (RFC 7692 §7.2.2: the tail added back), with a
    fresh decompressor: the server compresses each message on its own."""
    d = zlib.decompressobj(wbits=-15)
    return d.decompress(payload + b"\x00\x00\xff\xff") + d.flush()


def test_deflate_members_get_compressed_frames_and_plain_members_plain_ones(gangway_server):
    server = gangway_server("--broadcast")
    texts = [
        ('{"user":"gangway","text":"compressible compressible compressible"},' * 20).encode(),
        b"short: under 32 bytes",
        os.urandom(300),  # does not shrink: plain for everyone
        ("compressible " * 100).encode(),
    ]

    async def body():
        with RawSocket(server.host, server.port) as deflate, RawSocket(
            server.host, server.port
        ) as plain:
            # The offer of Chromium, Python websockets and Node ws.
            deflate.send(
                upgrade_request(
                    server.host,
                    server.port,
                    path="/room",
                    Sec_WebSocket_Extensions="permessage-deflate; client_max_window_bits",
                )
            )
            status, headers, head = deflate.read_http_head()
            assert status == 101, head
            agreed = headers["sec-websocket-extensions"][0]
            assert agreed.startswith("permessage-deflate"), agreed
            assert "server_no_context_takeover" in agreed, agreed
            plain.send(upgrade_request(server.host, server.port, path="/room"))
            status, _, head = plain.read_http_head()
            assert status == 101, head
            # A websockets client in the room too, with its default offer: it reads what the
            # raw deflate member reads, through its own inflater.
            async with ws_connect(f"{server.url}room") as ws:
                await asyncio.sleep(0.2)
                for i, data in enumerate(texts):
                    opcode = TEXT if i != 2 else 0x2
                    plain.send(encode_frame(opcode, data, mask=True))
                for i, data in enumerate(texts):
                    opcode = TEXT if i != 2 else 0x2
                    b0, payload = read_frame_rsv(deflate)
                    compressed = i in (0, 3)
                    # FIN, RSV1 for the compressed ones, the opcode.
                    assert b0 == 0x80 | (0x40 if compressed else 0) | opcode, (i, hex(b0))
                    if compressed:
                        assert len(payload) < len(data) // 2, i
                        assert inflate(payload) == data, i
                    else:
                        assert payload == data, i
                    b0, payload = read_frame_rsv(plain)
                    assert b0 == 0x80 | opcode, (i, hex(b0))
                    assert payload == data, i
                    got = await asyncio.wait_for(ws.recv(), 10)
                    expected = data.decode() if opcode == TEXT else data
                    assert got == expected, i

    run(body())
