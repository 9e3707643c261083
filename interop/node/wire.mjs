// A loopback TCP proxy that watches the WebSocket bytes going through it: how many bytes cross
// each way, and every frame header (FIN, RSV bits, opcode, payload length) after the HTTP heads.
// The frames' RSV1 bits are the wire proof that permessage-deflate (RFC 7692 §6) is in use, and
// the byte counts show what compression saved.
//
// Not a test file itself (`node --test` only picks up `*.test.mjs`). Bounded and cleaned up: the
// proxy and its sockets are closed when the test ends.

import net from 'node:net';

/** Scans one direction of a WebSocket connection: the HTTP head, then frame headers. */
class FrameScanner {
  bytes = 0;
  /** The HTTP head (request or response) that opened the connection, once complete. */
  head = null;
  /** `{ fin, rsv, opcode, length }` of every frame seen, in order. */
  frames = [];
  #head = Buffer.alloc(0);
  #inHead = true;
  #pending = Buffer.alloc(0); // an incomplete frame header
  #skip = 0; // payload bytes of the current frame still to pass

  feed(chunk) {
    this.bytes += chunk.length;
    let data = chunk;
    if (this.#inHead) {
      this.#head = Buffer.concat([this.#head, data]);
      const end = this.#head.indexOf('\r\n\r\n');
      if (end < 0) return;
      this.#inHead = false;
      this.head = this.#head.subarray(0, end).toString('latin1');
      data = this.#head.subarray(end + 4);
      this.#head = Buffer.alloc(0);
    }
    while (data.length > 0) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, data.length);
        this.#skip -= n;
        data = data.subarray(n);
        continue;
      }
      const buf = Buffer.concat([this.#pending, data]);
      const header = parseHeader(buf);
      if (header === null) {
        this.#pending = buf;
        return;
      }
      this.#pending = Buffer.alloc(0);
      this.frames.push(header.frame);
      this.#skip = header.frame.length;
      data = buf.subarray(header.headerLength);
    }
  }

  /** Data frames (text, binary, continuation) and whether each had RSV1. */
  get dataFrames() {
    return this.frames.filter((f) => f.opcode < 8);
  }
}

/** The value of header `name` in an HTTP head (case-insensitive; lines joined with ", "). */
export function headerOf(head, name) {
  const values = (head ?? '')
    .split('\r\n')
    .slice(1)
    .filter((line) => line.toLowerCase().startsWith(`${name.toLowerCase()}:`))
    .map((line) => line.slice(name.length + 1).trim());
  return values.length ? values.join(', ') : undefined;
}

/** `{ frame, headerLength }` from the start of `buf`, or null if the header is incomplete. */
function parseHeader(buf) {
  if (buf.length < 2) return null;
  const b0 = buf[0];
  const b1 = buf[1];
  let length = b1 & 0x7f;
  let offset = 2;
  if (length === 126) {
    if (buf.length < 4) return null;
    length = buf.readUInt16BE(2);
    offset = 4;
  } else if (length === 127) {
    if (buf.length < 10) return null;
    length = Number(buf.readBigUInt64BE(2));
    offset = 10;
  }
  if (b1 & 0x80) offset += 4; // masking key
  if (buf.length < offset) return null;
  return {
    frame: { fin: (b0 & 0x80) !== 0, rsv: (b0 >> 4) & 7, opcode: b0 & 0x0f, length },
    headerLength: offset,
  };
}

/**
 * Starts a proxy on 127.0.0.1 (free port) to `targetPort`, for any number of connections.
 * Returns `{ port, up, down }`: `up` scans what clients send, `down` what the target sends
 * (of the most recent connection; `reset()` starts counting afresh).
 */
export async function startWireProxy(t, targetPort) {
  const sockets = new Set();
  const state = { port: 0, up: new FrameScanner(), down: new FrameScanner() };
  state.reset = () => {
    state.up = new FrameScanner();
    state.down = new FrameScanner();
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    const up = state.up;
    const down = state.down;
    client.on('data', (chunk) => {
      up.feed(chunk);
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      down.feed(chunk);
      client.write(chunk);
    });
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  state.port = server.address().port;
  t.after(
    () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
        setTimeout(resolve, 2_000).unref();
      }),
  );
  return state;
}

/** JSON-like text of about `size` bytes that deflate shrinks more than tenfold. */
export function compressibleText(size) {
  const parts = [];
  let total = 0;
  for (let i = 0; total < size; i++) {
    const part = `{"id":${i},"name":"gangway","ok":true},`;
    parts.push(part);
    total += part.length;
  }
  return parts.join('').slice(0, size);
}
