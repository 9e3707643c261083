// permessage-deflate (RFC 7692) against the Node `ws` library, both roles, through a proxy that
// reads the frame headers on the wire (interop/node/wire.mjs):
//
// - `ws` CLIENT → `gangway serve` (accepts the extension unless --no-deflate), in each of serve's
//   modes: `window` (the default: server_no_context_takeover, and a 12-bit client window),
//   `shared` (server_no_context_takeover and client_no_context_takeover in every answer) and
//   `dedicated` (12-bit windows both ways, context takeover);
// - `ws` SERVER ← `gangway connect --deflate --echo`.
//
// `ws` runs with `threshold: 0`, so even small messages are compressed. Every test proves the
// extension was negotiated (the negotiated `Sec-WebSocket-Extensions`) AND used: RSV1 on the
// first frame of the compressed messages each way, never on continuation or control frames, and
// a highly compressible 1 MiB message crossing in a small fraction of its size.
//
// Run: GANGWAY_BIN=/abs/path/to/gangway node --test interop/node/

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
  STEP_MS,
  assertSameBytes,
  openClient,
  spawnGangway,
  startServe,
  startWsServer,
} from './common.mjs';
import { compressibleText, headerOf, startWireProxy } from './wire.mjs';

const T = { timeout: 120_000 };
const MiB = 1024 * 1024;

/** Sends `data` and waits for its echo; returns `{ data, isBinary }`. */
async function roundTrip(rec, data, options, ms = 30_000) {
  const before = rec.messages.length;
  rec.ws.send(data, options);
  const got = await rec.messagesN(before + 1, ms);
  return got[before];
}

/** RSV1 is only ever on the first frame of a data message (RFC 7692 §6). */
function assertRsv1Placement(frames, what) {
  let inMessage = false;
  for (const f of frames) {
    if (f.opcode >= 8) {
      assert.equal(f.rsv & 4, 0, `${what}: RSV1 on a control frame`);
      continue;
    }
    if (f.opcode === 0) {
      assert.ok(inMessage, `${what}: continuation outside a message`);
      assert.equal(f.rsv & 4, 0, `${what}: RSV1 on a continuation frame`);
    }
    assert.equal(f.rsv & 3, 0, `${what}: RSV2/RSV3 set`);
    inMessage = !f.fin;
  }
}

/** The messages' first frames, in order, and whether each was compressed. */
const compressedFlags = (frames) =>
  frames.filter((f) => f.opcode === 1 || f.opcode === 2).map((f) => (f.rsv & 4) !== 0);

/** Client settings `ws` offers (RFC 7692 §7.1 names in ws's camelCase). */
const CLIENT_SETTINGS = [
  {},
  ...[9, 10, 11, 12, 13, 14, 15].map((b) => ({ serverMaxWindowBits: b, clientMaxWindowBits: b })),
  { serverNoContextTakeover: true },
  { clientNoContextTakeover: true },
  { serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 10 },
];

/**
 * serve's modes: its arguments, the windows it asks for (15: none), and whether it removes
 * context takeover whatever the offer, for the server's and the client's messages.
 */
const SERVE_MODES = {
  window: { args: [], serverBits: 15, clientBits: 12, serverNct: true, clientNct: false },
  shared: {
    args: ['--deflate-mode', 'shared'],
    serverBits: 15,
    clientBits: 15,
    serverNct: true,
    clientNct: true,
  },
  dedicated: {
    args: ['--deflate-mode', 'dedicated'],
    serverBits: 12,
    clientBits: 12,
    serverNct: false,
    clientNct: false,
  },
};

/** serve's answer to the offer `ws` makes with `settings` (RFC 7692 §7.1), parameter by parameter. */
function expectedAnswer(settings, mode) {
  const expected = ['permessage-deflate'];
  if (settings.serverNoContextTakeover || mode.serverNct) {
    expected.push('server_no_context_takeover');
  }
  if (settings.clientNoContextTakeover || mode.clientNct) {
    expected.push('client_no_context_takeover');
  }
  // §7.1.2.1: the value asked for, or a smaller one of the server's own.
  const serverBits = Math.min(settings.serverMaxWindowBits ?? 15, mode.serverBits);
  if (settings.serverMaxWindowBits || serverBits < 15) {
    expected.push(`server_max_window_bits=${serverBits}`);
  }
  // §7.1.2.2: ws always offers client_max_window_bits (with a value when configured).
  const clientBits = Math.min(settings.clientMaxWindowBits ?? 15, mode.clientBits);
  if (clientBits < 15) expected.push(`client_max_window_bits=${clientBits}`);
  return expected.join('; ');
}

for (const [modeName, mode] of Object.entries(SERVE_MODES)) for (const settings of CLIENT_SETTINGS) {
  test(`ws client ${JSON.stringify(settings)} → gangway serve (${modeName}): negotiated and used`, T, async (t) => {
    const { addr } = await startServe(t, mode.args);
    const proxy = await startWireProxy(t, Number(addr.split(':')[1]));
    const rec = await openClient(t, `ws://127.0.0.1:${proxy.port}/`, undefined, {
      perMessageDeflate: { threshold: 0, ...settings },
    });
    assert.equal(rec.ws.extensions, 'permessage-deflate', 'ws.extensions');
    // The answer gangway gave on the wire, parameter by parameter (RFC 7692 §7.1).
    const answer = headerOf(proxy.down.head, 'Sec-WebSocket-Extensions');
    assert.equal(answer, expectedAnswer(settings, mode), 'Sec-WebSocket-Extensions of the 101');

    const big = compressibleText(MiB);
    const binary = randomBytes(3000);
    const messages = [
      ['small', {}],
      [big, {}],
      [binary, { binary: true }],
      [big, {}],
      ['é😀 ✓', {}],
    ];
    for (const [data, options] of messages) {
      const got = await roundTrip(rec, data, options);
      if (typeof data === 'string') {
        assert.equal(got.isBinary, false);
        assert.equal(got.data.toString('utf8'), data);
      } else {
        assert.equal(got.isBinary, true);
        assertSameBytes(got.data, data, 'binary echo');
      }
    }
    // A ping between messages stays uncompressed (control frames never are).
    rec.ws.ping('p');
    await rec.waitFor(() => rec.pongs.length > 0, STEP_MS, "the pong");

    assertRsv1Placement(proxy.up.frames, 'ws → gangway');
    assertRsv1Placement(proxy.down.frames, 'gangway → ws');
    // ws compresses every message (threshold 0); gangway every one from 32 bytes up: all but
    // the 5-byte "small" and the 9-byte "é😀 ✓".
    assert.deepEqual(compressedFlags(proxy.up.frames), [true, true, true, true, true]);
    assert.deepEqual(compressedFlags(proxy.down.frames), [false, true, true, true, false]);
    // Two 1 MiB messages each way, uncompressed, would be over 2 MiB.
    assert.ok(proxy.up.bytes < (2 * MiB) / 10, `ws → gangway: ${proxy.up.bytes} bytes`);
    assert.ok(proxy.down.bytes < (2 * MiB) / 10, `gangway → ws: ${proxy.down.bytes} bytes`);
  });
}

test('gangway serve --no-deflate: the offer is declined and nothing is compressed', T, async (t) => {
  const { addr } = await startServe(t, ['--no-deflate']);
  const proxy = await startWireProxy(t, Number(addr.split(':')[1]));
  const rec = await openClient(t, `ws://127.0.0.1:${proxy.port}/`, undefined, {
    perMessageDeflate: { threshold: 0 },
  });
  assert.equal(rec.ws.extensions, '');
  const big = compressibleText(100_000);
  const got = await roundTrip(rec, big);
  assert.equal(got.data.toString('utf8'), big);
  assert.deepEqual(compressedFlags(proxy.up.frames), [false]);
  assert.deepEqual(compressedFlags(proxy.down.frames), [false]);
  assert.ok(proxy.down.bytes > big.length);
});

/** Server settings `ws` imposes on `gangway connect --deflate`. */
const SERVER_SETTINGS = [
  {},
  ...[9, 10, 11, 12, 13, 14, 15].map((b) => ({ serverMaxWindowBits: b, clientMaxWindowBits: b })),
  { serverNoContextTakeover: true },
  { clientNoContextTakeover: true },
  { serverNoContextTakeover: true, clientNoContextTakeover: true, clientMaxWindowBits: 9 },
];

for (const settings of SERVER_SETTINGS) {
  test(`gangway connect --deflate → ws server ${JSON.stringify(settings)}: negotiated and used`, T, async (t) => {
    const srv = await startWsServer(t, { perMessageDeflate: { threshold: 0, ...settings } });
    const proxy = await startWireProxy(t, srv.port);
    const g = spawnGangway(t, ['connect', `ws://127.0.0.1:${proxy.port}/`, '--echo', '--deflate']);
    const { ws, req, rec } = await srv.connection();
    assert.match(req.headers['sec-websocket-extensions'] ?? '', /^permessage-deflate/);
    await g.waitFor(
      () => g.stderrLines().includes('gangway: permessage-deflate: on'),
      STEP_MS,
      'the permessage-deflate line',
    );
    assert.equal(ws.extensions, 'permessage-deflate', 'the ws server negotiated it');
    // What gangway offered, and what ws answered and gangway accepted, on the wire.
    assert.equal(
      headerOf(proxy.up.head, 'Sec-WebSocket-Extensions'),
      'permessage-deflate; client_max_window_bits',
    );
    assert.match(headerOf(proxy.down.head, 'Sec-WebSocket-Extensions'), /^permessage-deflate/);

    const big = compressibleText(MiB);
    const binary = randomBytes(2000);
    const messages = [
      ['tiny', {}],
      [big, {}],
      [binary, { binary: true }],
      [big, {}],
    ];
    for (const [data, options] of messages) {
      const got = await roundTrip(rec, data, options);
      if (typeof data === 'string') {
        assert.equal(got.data.toString('utf8'), data);
      } else {
        assertSameBytes(got.data, data, 'binary echo');
      }
    }
    ws.close(1000, 'done');
    assert.deepEqual(await g.exited(), { code: 0, signal: null }, g.describe());

    assertRsv1Placement(proxy.up.frames, 'gangway → ws');
    assertRsv1Placement(proxy.down.frames, 'ws → gangway');
    assert.deepEqual(compressedFlags(proxy.down.frames), [true, true, true, true]);
    assert.deepEqual(compressedFlags(proxy.up.frames), [false, true, true, true]);
    assert.ok(proxy.up.bytes < (2 * MiB) / 10, `gangway → ws: ${proxy.up.bytes} bytes`);
    assert.ok(proxy.down.bytes < (2 * MiB) / 10, `ws → gangway: ${proxy.down.bytes} bytes`);
  });
}
