// WebSocket over HTTP/2 (RFC 8441) against an independent HTTP/2 implementation: Node's built-in
// `http2` module, with `enableConnectProtocol`, in both roles.
//
// - Node's HTTP/2 client opens extended CONNECT streams to `gangway serve` (cleartext with prior
//   knowledge, and TLS with ALPN h2), and speaks RFC 6455 frames on them (h2ws.mjs, written from
//   the RFC); several WebSockets and a page request share one connection.
// - Node's HTTP/2 server accepts `gangway connect --http2` (h2c and TLS) and echoes.
//
// Loopback only, every wait bounded, every process and socket closed by the test.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  STEP_MS, selfSignedCertificate, spawnGangway, startServe, withTimeout,
} from './common.mjs';
import { closePayload, encodeFrame, FrameDecoder, Messages, OP } from './h2ws.mjs';

let workDir = null;
let cert = null;
let key = null;

before(() => {
  workDir = mkdtempSync(path.join(os.tmpdir(), 'gangway-h2-'));
  ({ cert, key } = selfSignedCertificate(workDir));
});

after(() => {
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

/** Resolves with the session once the server's SETTINGS are in (they say whether RFC 8441 is on). */
function connectSession(t, authority, options = {}) {
  const session = http2.connect(authority, options);
  t.after(() => session.destroy());
  return withTimeout(
    new Promise((resolve, reject) => {
      session.once('remoteSettings', () => resolve(session));
      session.once('error', reject);
    }),
    STEP_MS,
    `the HTTP/2 SETTINGS of ${authority}`,
  );
}

/**
 * A WebSocket on an HTTP/2 stream: frames out through `send`, whole messages in through `next`,
 * and `ended` once the peer's END_STREAM (or a reset) arrived.
 */
function wsOnStream(stream, role) {
  const decoder = new FrameDecoder({ expectMasked: role === 'server' });
  const assembler = new Messages();
  const queue = [];
  let waiter = null;
  let ended = null;
  const wake = () => {
    if (waiter) waiter();
  };
  stream.on('data', (chunk) => {
    for (const frame of decoder.feed(chunk)) {
      const message = assembler.push(frame);
      if (message) queue.push(message);
    }
    wake();
  });
  const end = new Promise((resolve) => {
    stream.on('end', () => resolve('end'));
    stream.on('close', () => resolve(stream.rstCode ? `reset ${stream.rstCode}` : 'closed'));
    stream.on('error', (e) => resolve(`error ${e.code}`));
  }).then((how) => {
    ended = how;
    wake();
    return how;
  });
  const ws = {
    stream,
    send(opcode, payload) {
      stream.write(encodeFrame(opcode, payload, { mask: role === 'client' }));
    },
    async next(what = 'a message') {
      return withTimeout(
        (async () => {
          for (;;) {
            if (queue.length) return queue.shift();
            if (ended) throw new Error(`stream ${ended} before ${what}`);
            await new Promise((r) => {
              waiter = r;
            });
            waiter = null;
          }
        })(),
        STEP_MS,
        what,
      );
    },
    ended: () => withTimeout(end, STEP_MS, 'the end of the stream'),
  };
  return ws;
}

/** An extended CONNECT for a WebSocket (RFC 8441 §5) on `session`; resolves with the response headers. */
function openWebSocket(session, authority, pathName, headers = {}) {
  const stream = session.request({
    ':method': 'CONNECT',
    ':protocol': 'websocket',
    ':scheme': authority.startsWith('https') ? 'https' : 'http',
    ':path': pathName,
    'sec-websocket-version': '13',
    ...headers,
  });
  return withTimeout(
    new Promise((resolve, reject) => {
      stream.once('response', (h) => resolve({ stream, headers: h }));
      stream.once('error', reject);
    }),
    STEP_MS,
    `the answer to CONNECT ${pathName}`,
  );
}

/** Text, binary, 1 MiB and a close with a code, echoed by the gangway server on `stream`. */
async function echoScenarios(ws) {
  ws.send(OP.TEXT, 'über HTTP/2 🔒');
  const text = await ws.next('the text echo');
  assert.equal(text.opcode, OP.TEXT);
  assert.equal(text.payload.toString('utf8'), 'über HTTP/2 🔒');

  const big = randomBytes(1 << 20);
  ws.send(OP.BINARY, big);
  const echoed = await ws.next('the 1 MiB echo');
  assert.equal(echoed.opcode, OP.BINARY);
  assert.ok(echoed.payload.equals(big), '1 MiB echoed exactly');

  ws.send(OP.PING, 'are you there');
  const pong = await ws.next('the pong');
  assert.equal(pong.opcode, OP.PONG);
  assert.equal(pong.payload.toString(), 'are you there');

  ws.send(OP.CLOSE, closePayload(4001, 'done'));
  const close = await ws.next('the close answer');
  assert.equal(close.opcode, OP.CLOSE);
  assert.equal(close.payload.readUInt16BE(0), 4001);
  // The server ends its side with END_STREAM (the FIN of HTTP/1.1), not a reset.
  assert.equal(await ws.ended(), 'end');
  ws.stream.end();
}

test('Node http2 client -> gangway serve over h2c: extended CONNECT, echoes, close, refusals', {
  timeout: 60_000,
}, async (t) => {
  const { addr } = await startServe(t, ['--protocol', 'chat']);
  const authority = `http://${addr}`;
  const session = await connectSession(t, authority);
  assert.equal(session.remoteSettings.enableConnectProtocol, true, 'SETTINGS_ENABLE_CONNECT_PROTOCOL');

  const { stream, headers } = await openWebSocket(session, authority, '/chat', {
    'sec-websocket-protocol': 'other, chat',
  });
  assert.equal(headers[':status'], 200);
  assert.equal(headers['sec-websocket-protocol'], 'chat');
  assert.equal(headers['sec-websocket-accept'], undefined);
  await echoScenarios(wsOnStream(stream, 'client'));

  const old = await openWebSocket(session, authority, '/chat', { 'sec-websocket-version': '8' });
  assert.equal(old.headers[':status'], 426);
  assert.equal(old.headers['sec-websocket-version'], '13');
  old.stream.close();
});

test('Node http2 client -> gangway serve over TLS (ALPN h2): page and several WebSockets on one connection', {
  timeout: 60_000,
}, async (t) => {
  const { addr } = await startServe(t, ['--tls-cert', cert, '--tls-key', key]);
  const authority = `https://${addr}`;
  const session = await connectSession(t, authority, { ca: readFileSync(cert) });
  assert.equal(session.alpnProtocol, 'h2');
  assert.equal(session.remoteSettings.enableConnectProtocol, true);

  const page = session.request({ ':path': '/' });
  const pageHeaders = await withTimeout(
    new Promise((r) => page.once('response', r)),
    STEP_MS,
    'the page',
  );
  assert.equal(pageHeaders[':status'], 200);
  assert.match(pageHeaders['content-type'], /^text\/html/);
  page.resume();

  const sockets = [];
  for (let i = 0; i < 5; i++) {
    const { stream, headers } = await openWebSocket(session, authority, `/room/${i}`);
    assert.equal(headers[':status'], 200);
    sockets.push(wsOnStream(stream, 'client'));
  }
  for (const [i, ws] of sockets.entries()) ws.send(OP.TEXT, `socket ${i}`);
  for (const [i, ws] of sockets.entries()) {
    assert.equal((await ws.next(`the echo of socket ${i}`)).payload.toString(), `socket ${i}`);
  }
  await echoScenarios(sockets[0]);
  for (const ws of sockets.slice(1)) {
    ws.send(OP.CLOSE, closePayload(1000));
    assert.equal((await ws.next('close')).payload.readUInt16BE(0), 1000);
    assert.equal(await ws.ended(), 'end');
    ws.stream.end();
  }
});

/**
 * A Node HTTP/2 server with `enableConnectProtocol` that echoes WebSocket messages and answers
 * a close (TLS with ALPN h2 when `tls` is given, else cleartext with prior knowledge).
 * Resolves with its port and the requests it saw.
 */
async function nodeEchoServer(t, { tls = null, enableConnectProtocol = true } = {}) {
  const settings = { enableConnectProtocol };
  const server = tls
    ? http2.createSecureServer({ ...tls, settings })
    : http2.createServer({ settings });
  const seen = [];
  server.on('stream', (stream, headers) => {
    seen.push(headers);
    if (headers[':method'] !== 'CONNECT' || headers[':protocol'] !== 'websocket') {
      stream.respond({ ':status': 405 });
      stream.end();
      return;
    }
    stream.respond({ ':status': 200 });
    const ws = wsOnStream(stream, 'server');
    (async () => {
      for (;;) {
        const m = await ws.next().catch(() => null);
        if (!m) return;
        if (m.opcode === OP.CLOSE) {
          stream.end(encodeFrame(OP.CLOSE, m.payload.subarray(0, 2)));
          return;
        }
        if (m.opcode === OP.PING) stream.write(encodeFrame(OP.PONG, m.payload));
        else if (m.opcode === OP.TEXT || m.opcode === OP.BINARY) {
          stream.write(encodeFrame(m.opcode, m.payload));
        }
      }
    })();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  return { port: server.address().port, seen, server };
}

async function connectThroughGangway(t, url, extra) {
  const proc = spawnGangway(t, ['connect', '--http2', ...extra, url]);
  proc.child.stdin.write('first line\n');
  proc.child.stdin.write('zweite Zeile ✓\n');
  const lines = await proc.stdoutLines(2);
  assert.deepEqual(lines, ['first line', 'zweite Zeile ✓']);
  proc.child.stdin.end();
  const exit = await proc.exited();
  assert.deepEqual(exit, { code: 0, signal: null }, proc.describe());
  return proc;
}

test('gangway connect --http2 -> Node http2 server (h2c and TLS)', { timeout: 60_000 }, async (t) => {
  const plain = await nodeEchoServer(t);
  await connectThroughGangway(t, `ws://127.0.0.1:${plain.port}/feed?x=1`, []);
  const request = plain.seen.at(-1);
  assert.equal(request[':method'], 'CONNECT');
  assert.equal(request[':protocol'], 'websocket');
  assert.equal(request[':scheme'], 'http');
  assert.equal(request[':path'], '/feed?x=1');
  assert.equal(request[':authority'], `127.0.0.1:${plain.port}`);
  assert.equal(request['sec-websocket-version'], '13');
  assert.equal(request['sec-websocket-key'], undefined, 'no key over HTTP/2 (RFC 8441 §5)');

  const secure = await nodeEchoServer(t, {
    tls: { cert: readFileSync(cert), key: readFileSync(key) },
  });
  await connectThroughGangway(t, `wss://127.0.0.1:${secure.port}/`, ['--cacert', cert]);
  assert.equal(secure.seen.at(-1)[':scheme'], 'https');
});

test('gangway connect --http2 -> Node http2 server without extended CONNECT: exit 16', {
  timeout: 30_000,
}, async (t) => {
  const { port, seen } = await nodeEchoServer(t, { enableConnectProtocol: false });
  const proc = spawnGangway(t, ['connect', '--http2', `ws://127.0.0.1:${port}/`]);
  proc.child.stdin.end();
  const exit = await proc.exited();
  assert.equal(exit.code, 16, proc.describe());
  assert.match(proc.stderr.text(), /did not enable websockets over http\/2/);
  assert.equal(seen.length, 0, 'no CONNECT was sent to a server that did not allow it');
});
