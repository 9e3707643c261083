// Node `ws` clients in the rooms of `gangway serve --broadcast`, with Python `websockets` clients
// in the same room: every member receives every message, each sender's in order, all members in
// the same order.
//
// The Python peer runs from interop/.venv (made by scripts/test.sh before this suite; see
// interop/README.md): a missing venv is an error, not a skip.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { STEP_MS, openClient, startServe, withTimeout } from './common.mjs';
import { compressibleText, headerOf, startWireProxy } from './wire.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');
const PYTHON = path.join(repoRoot, 'interop', '.venv', 'bin', 'python');
const PEER = path.join(repoRoot, 'interop', 'python', 'broadcast_peer.py');

const T = { timeout: 60_000 };

/** `(sender, seq)` of a message `name:seq`. */
const origin = (text) => {
  const [sender, seq] = text.split(':');
  return [sender, Number(seq)];
};

/**
 * Every member received `total` messages: every sender's (`senders`: name → count), in the order
 * sent; and all members in one order.
 */
function checkDeliveries(received, senders) {
  const orders = received.map((messages, member) => {
    const bySender = new Map();
    for (const m of messages) {
      const [sender, seq] = origin(m);
      if (!bySender.has(sender)) bySender.set(sender, []);
      bySender.get(sender).push(seq);
    }
    for (const [sender, count] of Object.entries(senders)) {
      const expected = Array.from({ length: count }, (_, i) => i);
      assert.deepEqual(bySender.get(sender), expected, `member ${member}, from ${sender}`);
    }
    return messages.join('|');
  });
  for (const order of orders) assert.equal(order, orders[0], 'members saw different orders');
}

/**
 * Starts the Python peer (its messages padded with `pad` bytes of JSON-like text); resolves once
 * its clients are connected.
 */
async function startPython(t, url, clients, messages, expected, pad = 0) {
  assert.ok(existsSync(PYTHON), `${PYTHON} is missing: make interop/.venv (scripts/test.sh)`);
  const args = [PEER, url, String(clients), String(messages), String(expected), String(pad)];
  const child = spawn(PYTHON, args, {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  t.after(() => child.kill('SIGKILL'));
  let out = '';
  let err = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (err += c));
  const exited = new Promise((resolve) => child.on('close', (code) => resolve(code)));
  await withTimeout(
    new Promise((resolve, reject) => {
      const check = setInterval(() => {
        if (out.startsWith('ready\n')) {
          clearInterval(check);
          resolve();
        }
      }, 10);
      exited.then((code) => {
        clearInterval(check);
        reject(new Error(`the Python peer exited with ${code}: ${err}`));
      });
    }),
    STEP_MS,
    'the Python peer to connect',
  );
  return {
    go: () => child.stdin.write('go\n'),
    result: async () => {
      const code = await withTimeout(exited, 40_000, 'the Python peer to finish');
      assert.equal(code, 0, `the Python peer failed: ${err}`);
      return out
        .split('\n')
        .slice(1)
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l));
    },
  };
}

test('Node ws and Python websockets clients in one room get every message in order', T, async (t) => {
  const { url } = await startServe(t, ['--broadcast']);
  const room = `${url}mixed`;
  const nodeClients = 3;
  const pyClients = 3;
  const perClient = 50;
  const total = (nodeClients + pyClients) * perClient;
  const python = await startPython(t, room, pyClients, perClient, total);
  const clients = [];
  for (let i = 0; i < nodeClients; i++) clients.push(await openClient(t, room));
  // Every member has joined before anyone sends.
  await new Promise((r) => setTimeout(r, 200));
  python.go();
  for (let seq = 0; seq < perClient; seq++) {
    clients.forEach((c, i) => c.ws.send(`node${i}:${seq}`));
  }
  const fromNode = [];
  for (const c of clients) {
    const got = await c.messagesN(total, 30_000);
    for (const m of got) assert.equal(m.isBinary, false, 'text stays text');
    fromNode.push(got.map((m) => m.data.toString('utf8')));
  }
  const fromPython = await python.result();
  assert.equal(fromPython.length, pyClients);
  const senders = {};
  for (let i = 0; i < nodeClients; i++) senders[`node${i}`] = perClient;
  for (let i = 0; i < pyClients; i++) senders[`py${i}`] = perClient;
  checkDeliveries([...fromNode, ...fromPython], senders);
});

test('permessage-deflate members (ws, Python websockets) and a plain one share a room', T, async (t) => {
  // ws clients with perMessageDeflate (their offer: `permessage-deflate; client_max_window_bits`)
  // and Python websockets clients (their default offer) get the messages compressed, once for
  // all of them; a ws client without the extension gets them plain. Every member gets every
  // message, exactly as sent, each sender's in order, all in one order; the frames on the wire
  // (through a watching proxy) show which were compressed.
  const { url, addr } = await startServe(t, ['--broadcast']);
  const port = Number(addr.split(':')[1]);
  const room = `${url}mixed`;
  const deflateProxy = await startWireProxy(t, port);
  const plainProxy = await startWireProxy(t, port);
  const perClient = 30;
  const pad = 400;
  const body = compressibleText(pad);
  const senders = 3 + 2;
  const total = senders * perClient;
  const python = await startPython(t, room, 2, perClient, total, pad);
  const clients = [
    await openClient(t, `ws://127.0.0.1:${deflateProxy.port}/mixed`, [], { perMessageDeflate: true }),
    await openClient(t, room, [], { perMessageDeflate: true }),
    await openClient(t, `ws://127.0.0.1:${plainProxy.port}/mixed`, [], { perMessageDeflate: false }),
  ];
  const answer = headerOf(deflateProxy.down.head, 'sec-websocket-extensions');
  assert.match(answer ?? '', /^permessage-deflate/, 'deflate negotiated');
  assert.equal(headerOf(plainProxy.down.head, 'sec-websocket-extensions'), undefined);
  await new Promise((r) => setTimeout(r, 200));
  python.go();
  for (let seq = 0; seq < perClient; seq++) {
    clients.forEach((c, i) => c.ws.send(`node${i}:${seq}:${body}`));
  }
  const fromNode = [];
  for (const c of clients) {
    const got = await c.messagesN(total, 30_000);
    for (const m of got) assert.equal(m.isBinary, false, 'text stays text');
    fromNode.push(got.map((m) => m.data.toString('utf8')));
  }
  const fromPython = await python.result();
  assert.equal(fromPython.length, 2);
  const received = [...fromNode, ...fromPython];
  const names = {};
  for (let i = 0; i < 3; i++) names[`node${i}`] = perClient;
  for (let i = 0; i < 2; i++) names[`py${i}`] = perClient;
  checkDeliveries(received, names);
  // Every message exactly as sent.
  for (const got of received) {
    for (const m of got) assert.equal(m.slice(m.indexOf(':', m.indexOf(':') + 1) + 1), body);
  }
  // On the wire: every message reached the deflate member compressed, the plain one plain.
  const compressed = deflateProxy.down.dataFrames;
  assert.equal(compressed.length, total);
  assert.ok(compressed.every((f) => f.rsv === 4), 'RSV1 on every frame to the deflate member');
  assert.ok(compressed.every((f) => f.length < pad / 4), 'compressed well');
  const plain = plainProxy.down.dataFrames;
  assert.equal(plain.length, total);
  assert.ok(plain.every((f) => f.rsv === 0), 'no RSV bit to the plain member');
});

test('--broadcast-exclude-self: each ws client gets the others\' messages, not its own', T, async (t) => {
  const { url } = await startServe(t, ['--broadcast', '--broadcast-exclude-self']);
  const room = `${url}chat`;
  const clients = [];
  for (let i = 0; i < 3; i++) clients.push(await openClient(t, room));
  await new Promise((r) => setTimeout(r, 200));
  const binary = Buffer.from([0, 1, 2, 255]);
  for (let seq = 0; seq < 20; seq++) {
    clients.forEach((c, i) => c.ws.send(`c${i}:${seq}`));
  }
  clients[0].ws.send(binary);
  for (const [i, c] of clients.entries()) {
    const expected = 40 + (i === 0 ? 0 : 1);
    const got = await c.messagesN(expected, 30_000);
    const texts = got.filter((m) => !m.isBinary).map((m) => m.data.toString('utf8'));
    assert.ok(!texts.some((m) => m.startsWith(`c${i}:`)), `client ${i} got its own messages`);
    const senders = {};
    for (let j = 0; j < 3; j++) if (j !== i) senders[`c${j}`] = 20;
    checkDeliveries([texts], senders);
    if (i !== 0) {
      const bin = got.find((m) => m.isBinary);
      assert.ok(bin && bin.data.equals(binary), 'the binary message arrives as binary');
    }
    // Nothing more.
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(c.messages.length, expected, `client ${i} got more than expected`);
  }
});
