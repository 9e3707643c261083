"""A Python `websockets` peer for the mixed-room test of the Node suite (not a pytest file).

    python broadcast_peer.py URL CLIENTS MESSAGES EXPECTED [PAD]

Opens CLIENTS connections to URL (websockets' default options: it offers permessage-deflate)
and prints `ready`; on a line `go` on stdin, each client sends MESSAGES text messages
`py{client}:{seq}` (followed by `:` and PAD bytes of JSON-like text, which compresses well, when
PAD is given) while receiving; once every client received EXPECTED messages, prints one JSON line
per client (the list of what it received, in order) and exits 0. Every wait is bounded: a client
that does not get EXPECTED messages in 30 s makes it exit 1.
"""

from __future__ import annotations

import asyncio
import json
import sys

from websockets.asyncio.client import connect


def padding(size: int) -> str:
    """JSON-like text of `size` bytes."""
    text = "".join(f'{{"id":{i},"name":"gangway","ok":true}},' for i in range(size // 30 + 1))
    return text[:size]


async def main(url: str, clients: int, messages: int, expected: int, pad: int) -> int:
    options = {"ping_interval": None, "max_size": None, "open_timeout": 10, "proxy": None}
    conns = [await connect(url, **options) for _ in range(clients)]
    print("ready", flush=True)
    line = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
        None, sys.stdin.readline), 30)
    if line.strip() != "go":
        return 1

    async def send(i, ws):
        tail = f":{padding(pad)}" if pad else ""
        for seq in range(messages):
            await ws.send(f"py{i}:{seq}{tail}")

    async def receive(ws):
        return [await ws.recv() for _ in range(expected)]

    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(send(i, ws) for i, ws in enumerate(conns)),
                           *(receive(ws) for ws in conns)), 30)
    except asyncio.TimeoutError:
        print("timed out", file=sys.stderr)
        return 1
    for got in results[clients:]:
        print(json.dumps(got), flush=True)
    for ws in conns:
        await ws.close()
    return 0


if __name__ == "__main__":
    url, clients, messages, expected = sys.argv[1], *map(int, sys.argv[2:5])
    pad = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    sys.exit(asyncio.run(main(url, clients, messages, expected, pad)))
