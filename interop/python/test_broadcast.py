"""Python `websockets` clients in the rooms of `gangway serve --broadcast`.

Every connection joins the room named by its URL path; every text or binary message a client
sends goes to every member of its room (the sender too, unless `--broadcast-exclude-self`).
"""

from __future__ import annotations

import asyncio
import os

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


async def exchange(urls, per_client, *, expect_own, **options):
    """Each client (one per URL) sends `per_client` messages, all at once; returns what each
    received, once each got what it expects."""
    clients = [await ws_connect(url, **options) for url in urls]
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
        # Half the clients negotiate permessage-deflate (websockets' default offer): broadcast
        # frames reach them uncompressed, which RFC 7692 §6 allows.
        plain = [url] * 4
        sent_a, got_a = await exchange(plain, 40, expect_own=True, compression=None)
        check_order(sent_a, got_a, expect_own=True)
        sent_b, got_b = await exchange([url] * 4, 40, expect_own=True)
        check_order(sent_b, got_b, expect_own=True)

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


def test_deflate_members_get_the_shared_uncompressed_frames(gangway_server):
    server = gangway_server("--broadcast")
    payload = ("compressible " * 100).encode()

    async def body():
        with RawSocket(server.host, server.port) as deflate, RawSocket(
            server.host, server.port
        ) as plain:
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
            assert headers["sec-websocket-extensions"][0].startswith("permessage-deflate")
            plain.send(upgrade_request(server.host, server.port, path="/room"))
            status, _, head = plain.read_http_head()
            assert status == 101, head
            await asyncio.sleep(0.2)
            plain.send(encode_frame(TEXT, payload, mask=True))
            # The same frame, byte for byte, to both: FIN, text, RSV1 clear (not compressed).
            for raw in (deflate, plain):
                head = raw.read_exact(4)
                assert head == bytes([0x81, 126]) + len(payload).to_bytes(2, "big"), head
                assert raw.read_exact(len(payload)) == payload

    run(body())
