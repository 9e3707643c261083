// The Node `ws` library as a CLIENT of `gangway serve` (an echo server, per the CLI contract).
//
// Run: GANGWAY_BIN=/abs/path/to/gangway node --test interop/node/

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { WebSocket } from 'ws';
import {
  STEP_MS,
  assertSameBytes,
  openClient,
  startServe,
  withTimeout,
} from './common.mjs';

const T = { timeout: 30_000 };
const T_BIG = { timeout: 120_000 };

/** Sends `data` and waits for the next message; returns it as `{ data, isBinary }`. */
async function roundTrip(rec, data, options, ms = STEP_MS) {
  const before = rec.messages.length;
  rec.ws.send(data, options);
  const got = await rec.messagesN(before + 1, ms);
  return got[before];
}

test('text messages, including 4-byte UTF-8, are echoed as text', T, async (t) => {
  const { url } = await startServe(t);
  const rec = await openClient(t, url);
  const texts = [
    'hello',
    '',
    'héllo wörld — ünïcode',
    '😀 emoji, 𝄞 clef, 🀄 tile', // 4-byte sequences (U+1F600, U+1D11E, U+1F004)
    '\u{10FFFF}\u{10000}', // the highest and lowest 4-byte scalar values
    'x'.repeat(200), // over 125 bytes: 16-bit length
  ];
  for (const text of texts) {
    const got = await roundTrip(rec, text);
    assert.equal(got.isBinary, false, `echo of ${JSON.stringify(text.slice(0, 20))} must be text`);
    assert.equal(got.data.toString('utf8'), text);
  }
});

test('binary messages of 0, 125, 126, 65535 and 65536 bytes are echoed exactly', T, async (t) => {
  const { url } = await startServe(t);
  const rec = await openClient(t, url);
  // 125/126 and 65535/65536 straddle the 7-bit → 16-bit → 64-bit length encodings
  // (RFC 6455 §5.2).
  for (const size of [0, 1, 125, 126, 127, 65535, 65536, 65537]) {
    const payload = randomBytes(size);
    const got = await roundTrip(rec, payload);
    assert.equal(got.isBinary, true, `echo of ${size} bytes must be binary`);
    assertSameBytes(got.data, payload, `echo of ${size} random bytes`);
  }
});

test('a 16 MiB binary message is echoed exactly', T_BIG, async (t) => {
  const { url } = await startServe(t);
  const rec = await openClient(t, url);
  const payload = randomBytes(16 * 1024 * 1024);
  const got = await roundTrip(rec, payload, undefined, 90_000);
  assert.equal(got.isBinary, true);
  assertSameBytes(got.data, payload, 'echo of 16 MiB of random bytes');
});

test('the echo keeps the message type', T, async (t) => {
  const { url } = await startServe(t);
  const rec = await openClient(t, url);
  // The same bytes both ways: only the opcode tells them apart.
  const text = await roundTrip(rec, 'same bytes');
  const binary = await roundTrip(rec, Buffer.from('same bytes'));
  assert.equal(text.isBinary, false, 'text must come back as text');
  assert.equal(binary.isBinary, true, 'binary that happens to be valid UTF-8 must stay binary');
  assert.equal(text.data.toString(), 'same bytes');
  assertSameBytes(binary.data, Buffer.from('same bytes'), 'binary echo');
  // Binary that is not UTF-8 must not be rejected or altered.
  const raw = Buffer.from([0xff, 0xfe, 0x00, 0xc3, 0x28, 0xed, 0xa0, 0x80]);
  const rawEcho = await roundTrip(rec, raw);
  assert.equal(rawEcho.isBinary, true);
  assertSameBytes(rawEcho.data, raw, 'echo of non-UTF-8 binary');
});

test('fragmented messages come back as one message', T, async (t) => {
  const { url } = await startServe(t);
  const rec = await openClient(t, url);
  const { ws } = rec;

  // Text in three fragments (first frame opcode text, then continuations; RFC 6455 §5.4).
  ws.send('Hel', { fin: false });
  ws.send('lo, ', { fin: false });
  ws.send('world', { fin: true });
  let got = (await rec.messagesN(1))[0];
  assert.equal(got.isBinary, false);
  assert.equal(got.data.toString('utf8'), 'Hello, world');

  // A 4-byte character split across fragment boundaries is valid text: UTF-8 is checked over the
  // whole message, not per frame (RFC 6455 §5.6, §8.1).
  const smile = Buffer.from('😀', 'utf8'); // f0 9f 98 80
  ws.send(Buffer.concat([Buffer.from('a'), smile.subarray(0, 1)]), { binary: false, fin: false });
  ws.send(smile.subarray(1, 3), { binary: false, fin: false });
  ws.send(Buffer.concat([smile.subarray(3), Buffer.from('b')]), { binary: false, fin: true });
  got = (await rec.messagesN(2))[1];
  assert.equal(got.isBinary, false);
  assert.equal(got.data.toString('utf8'), 'a😀b');

  // Binary in fragments with a ping between them: control frames may be interleaved inside a
  // fragmented message (RFC 6455 §5.4) and are answered without disturbing it.
  const parts = [randomBytes(1000), randomBytes(70_000), randomBytes(0), randomBytes(5)];
  ws.send(parts[0], { binary: true, fin: false });
  ws.ping(Buffer.from('mid-message'));
  ws.send(parts[1], { binary: true, fin: false });
  ws.send(parts[2], { binary: true, fin: false });
  ws.send(parts[3], { binary: true, fin: true });
  got = (await rec.messagesN(3))[2];
  assert.equal(got.isBinary, true);
  assertSameBytes(got.data, Buffer.concat(parts), 'reassembled binary message');
  await rec.waitFor(() => rec.pongs.length >= 1, STEP_MS, 'the pong for the interleaved ping');
  assert.equal(rec.pongs[0].toString(), 'mid-message');
  assert.equal(rec.messages.length, 3, 'each fragmented message must arrive as exactly one');
});

test('a ping is answered with a pong carrying the same payload', T, async (t) => {
  const { url } = await startServe(t);
  const rec = await openClient(t, url);
  const payloads = [Buffer.from('ping payload'), Buffer.alloc(0), randomBytes(125)];
  for (const [i, payload] of payloads.entries()) {
    rec.ws.ping(payload);
    await rec.waitFor(() => rec.pongs.length > i, STEP_MS, `pong #${i + 1}`);
    assertSameBytes(rec.pongs[i], payload, `pong #${i + 1} payload`);
  }
  assert.equal(rec.messages.length, 0, 'pings must not produce data messages');
});

test('a close with code 4000 and reason "bye" is answered with the same code and reason', T, async (t) => {
  const { url } = await startServe(t);
  const rec = await openClient(t, url);
  rec.ws.close(4000, 'bye');
  const closed = await rec.closedEvent();
  // `ws` reports the code and reason of the close frame the server sent back. RFC 6455 §5.5.1
  // asks for the code to be echoed; gangway echoes the reason as well.
  assert.equal(closed.code, 4000);
  assert.equal(closed.reason, 'bye');
});

test('a close with code 1000 is answered with 1000', T, async (t) => {
  const { url } = await startServe(t);
  const rec = await openClient(t, url);
  // Messages still in flight before the close are delivered first.
  rec.ws.send('last');
  rec.ws.close(1000);
  const closed = await rec.closedEvent();
  assert.equal(closed.code, 1000);
  assert.equal(rec.messages.length, 1);
  assert.equal(rec.messages[0].data.toString(), 'last');
});

test('subprotocol: offered chat, superchat; server configured with chat → chat', T, async (t) => {
  const { url } = await startServe(t, ['--protocol', 'chat']);
  const rec = await openClient(t, url, ['chat', 'superchat']);
  assert.equal(rec.ws.protocol, 'chat');
  const got = await roundTrip(rec, 'with protocol');
  assert.equal(got.data.toString(), 'with protocol');
});

test('subprotocol: the server picks the first of its own list that was offered', T, async (t) => {
  const { url } = await startServe(t, ['--protocol', 'superchat', '--protocol', 'chat']);
  const rec = await openClient(t, url, ['chat', 'superchat']);
  assert.equal(rec.ws.protocol, 'superchat');
});

test('subprotocol: none in common → 101 without Sec-WebSocket-Protocol', T, async (t) => {
  const { url } = await startServe(t, ['--protocol', 'chat']);
  const ws = new WebSocket(url, ['superchat']);
  t.after(() => ws.terminate());
  // `ws` itself then refuses the connection ("Server sent no subprotocol"); what is checked here is
  // the server's answer: a successful upgrade that simply carries no protocol (RFC 6455 §4.2.2).
  const res = await withTimeout(
    new Promise((resolve, reject) => {
      ws.once('upgrade', resolve);
      ws.once('unexpected-response', (_req, r) => reject(new Error(`status ${r.statusCode}`)));
      ws.on('error', () => {});
    }),
    STEP_MS,
    'the upgrade response',
  );
  assert.equal(res.statusCode, 101);
  assert.equal(res.headers['sec-websocket-protocol'], undefined);
});

test('a message over --max-message-size fails the connection with 1009', T, async (t) => {
  const { url } = await startServe(t, ['--max-message-size', '1024']);
  const rec = await openClient(t, url);
  const ok = randomBytes(1024);
  const got = await roundTrip(rec, ok);
  assertSameBytes(got.data, ok, 'a message of exactly the limit');
  rec.ws.send(randomBytes(1025));
  const closed = await rec.closedEvent();
  assert.equal(closed.code, 1009, `close code (reason ${JSON.stringify(closed.reason)})`);
  assert.equal(rec.messages.length, 1, 'the oversized message must not be echoed');
});

test('a fragmented message over --max-message-size fails with 1009', T, async (t) => {
  const { url } = await startServe(t, ['--max-message-size', '1024']);
  const rec = await openClient(t, url);
  // Each frame is under the limit; the message is not.
  rec.ws.send(randomBytes(600), { binary: true, fin: false });
  rec.ws.send(randomBytes(600), { binary: true, fin: true });
  const closed = await rec.closedEvent();
  assert.equal(closed.code, 1009, `close code (reason ${JSON.stringify(closed.reason)})`);
  assert.equal(rec.messages.length, 0);
});

test('1000 pipelined messages come back complete and in order', T, async (t) => {
  const { url } = await startServe(t);
  const rec = await openClient(t, url);
  const N = 1000;
  const sent = [];
  for (let i = 0; i < N; i++) {
    // Alternate types and vary sizes so frames of different header lengths are interleaved.
    const msg =
      i % 2 === 0
        ? { data: `message ${i} ${'·'.repeat(i % 70)}`, isBinary: false }
        : { data: randomBytes((i * 37) % 300), isBinary: true };
    sent.push(msg);
    rec.ws.send(msg.data);
  }
  const got = await rec.messagesN(N, 20_000);
  for (let i = 0; i < N; i++) {
    assert.equal(got[i].isBinary, sent[i].isBinary, `type of message ${i}`);
    assertSameBytes(got[i].data, Buffer.from(sent[i].data), `message ${i}`);
  }
});

test('the echo works on any path', T, async (t) => {
  const { addr } = await startServe(t);
  const rec = await openClient(t, `ws://${addr}/some/deeper/path?query=1`);
  const got = await roundTrip(rec, 'path');
  assert.equal(got.data.toString(), 'path');
});

test('SIGTERM closes open connections with 1001 and exits 0', T, async (t) => {
  const { proc, url } = await startServe(t);
  const rec = await openClient(t, url);
  await roundTrip(rec, 'up'); // the server side of the connection is surely established
  proc.child.kill('SIGTERM');
  const closed = await rec.closedEvent();
  assert.equal(closed.code, 1001);
  const exit = await proc.exited();
  assert.deepEqual(exit, { code: 0, signal: null });
});
