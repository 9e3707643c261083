// The Node `ws` library as a SERVER for `gangway connect` (stdin lines out, received messages on
// stdout, escaped as the CLI contract says).
//
// Run: GANGWAY_BIN=/abs/path/to/gangway node --test interop/node/

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { test } from 'node:test';
import {
  STEP_MS,
  assertSameBytes,
  assertSameText,
  expectedLine,
  spawnGangway,
  startWsServer,
  withTimeout,
} from './common.mjs';

const T = { timeout: 30_000 };
const T_BIG = { timeout: 120_000 };
const MiB = 1024 * 1024;

/** The server's view of the messages as `[isBinary, utf8 text]` pairs, easy to compare. */
const asPairs = (messages) => messages.map((m) => [m.isBinary, m.data.toString('utf8')]);

test('stdin lines are sent as text messages; EOF closes with 1000 and exits 0', T, async (t) => {
  const srv = await startWsServer(t);
  const g = spawnGangway(t, ['connect', srv.url]);
  const { rec } = await srv.connection();
  // An empty line is an empty message; a trailing \r (CRLF input) is not part of the message.
  g.child.stdin.write('hello\n\nwörld 😀 𝄞\ncrlf line\r\ntab\there, a\rb\n');
  const got = await rec.messagesN(5);
  assert.deepEqual(asPairs(got), [
    [false, 'hello'],
    [false, ''],
    [false, 'wörld 😀 𝄞'],
    [false, 'crlf line'],
    [false, 'tab\there, a\rb'],
  ]);
  g.child.stdin.end();
  const closed = await rec.closedEvent();
  assert.equal(closed.code, 1000, 'stdin EOF must send close 1000');
  assert.deepEqual(await g.exited(), { code: 0, signal: null });
  assert.equal(rec.messages.length, 5);
});

test('piped stdin: all lines sent; replies arriving after EOF are printed', T, async (t) => {
  // The server answers every message; gangway has already sent its close (stdin was at EOF from
  // the start) and must keep reading and printing until the server's close
  // (RFC 6455 §1.4, §7.1.2).
  const srv = await startWsServer(t, {}, (ws) => {
    ws.on('message', (data, isBinary) => ws.send(`got: ${data}`, { binary: isBinary }));
  });
  const g = spawnGangway(t, ['connect', srv.url]);
  g.child.stdin.end('one\ntwo\nthree\n');
  const { rec } = await srv.connection();
  const closed = await rec.closedEvent();
  assert.equal(closed.code, 1000);
  assert.deepEqual(asPairs(rec.messages), [
    [false, 'one'],
    [false, 'two'],
    [false, 'three'],
  ]);
  assert.deepEqual(await g.exited(), { code: 0, signal: null });
  assert.equal(g.stdout.text(), 'got: one\ngot: two\ngot: three\n');
});

test('piped stdin: an answer sent after some work is printed before gangway closes', T, async (t) => {
  // `printf 'hello\n' | gangway connect URL` against a handler that answers asynchronously, as
  // one that queries something first: ws refuses to send once the peer's close has arrived, so
  // gangway must wait at the end of stdin for the server to go quiet (--eof-wait, 1 s).
  const srv = await startWsServer(t, {}, (ws) => {
    ws.on('message', (data) => setTimeout(() => ws.send(`answer to ${data}`), 200));
  });
  const g = spawnGangway(t, ['connect', srv.url]);
  g.child.stdin.end('hello\n');
  const { rec } = await srv.connection();
  const closed = await rec.closedEvent();
  assert.equal(closed.code, 1000);
  assert.deepEqual(await g.exited(), { code: 0, signal: null });
  assert.equal(g.stdout.text(), 'answer to hello\n');
});

test('--max-received 1: closes as soon as the answer arrived, stdin still open', T, async (t) => {
  const srv = await startWsServer(t, {}, (ws) => {
    ws.on('message', (data) => ws.send(`answer to ${data}`));
  });
  const g = spawnGangway(t, ['connect', '--max-received', '1', srv.url]);
  g.child.stdin.write('hello\n');
  const { rec } = await srv.connection();
  const closed = await rec.closedEvent();
  assert.equal(closed.code, 1000);
  assert.deepEqual(await g.exited(), { code: 0, signal: null });
  assert.equal(g.stdout.text(), 'answer to hello\n');
});

test('--binary: stdin lines are sent as binary messages', T, async (t) => {
  const srv = await startWsServer(t);
  const g = spawnGangway(t, ['connect', srv.url, '--binary']);
  const { rec } = await srv.connection();
  const lines = [
    Buffer.from('binary line'),
    Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x0d, 0x41]), // \r in the middle stays
    Buffer.alloc(0),
    Buffer.from('😀'),
  ];
  for (const line of lines) g.child.stdin.write(Buffer.concat([line, Buffer.from('\n')]));
  const got = await rec.messagesN(lines.length);
  got.forEach((m, i) => {
    assert.equal(m.isBinary, true, `message ${i} must be binary`);
    assertSameBytes(m.data, lines[i], `binary message ${i}`);
  });
  g.child.stdin.end();
  assert.equal((await rec.closedEvent()).code, 1000);
  assert.deepEqual(await g.exited(), { code: 0, signal: null });
});

test('received messages are printed one per line, escaped per the contract', T, async (t) => {
  // [payload sent by the server, exact line expected on stdout]
  const cases = [
    ['plain text', 'plain text'],
    ['', ''],
    ['new\nline', 'new\\nline'],
    ['tab\there', 'tab\\there'],
    ['back\\slash \\n', 'back\\\\slash \\\\n'],
    ['cr\rhere', 'cr\\rhere'],
    ['\x01 ctrl', '\\x01 ctrl'],
    ['nul\x00 esc\x1b us\x1f del\x7f', 'nul\\x00 esc\\x1b us\\x1f del\\x7f'],
    ['4-byte: 😀 𝄞 \u{10FFFF}', '4-byte: 😀 𝄞 \u{10FFFF}'],
    ['C1 \u0085 and nbsp \u00a0 stay verbatim', 'C1 \u0085 and nbsp \u00a0 stay verbatim'],
    [Buffer.from('binary, valid UTF-8: é 😀'), 'binary, valid UTF-8: é 😀'],
    [Buffer.from([0x61, 0xff, 0xfe, 0x62]), 'a\\xff\\xfeb'],
    [Buffer.from([0xf0, 0x9f, 0x98, 0x41]), '\\xf0\\x9f\\x98A'], // truncated 4-byte sequence
    [Buffer.from([0xed, 0xa0, 0x80, 0x2e]), '\\xed\\xa0\\x80.'], // UTF-16 surrogate
    [Buffer.from([0xc0, 0xaf, 0x2e]), '\\xc0\\xaf.'], // overlong encoding
    [Buffer.from([0x0a, 0x00, 0x5c, 0x09, 0x0d]), '\\n\\x00\\\\\\t\\r'],
    [Buffer.from([0x7a, 0xc3]), 'z\\xc3'], // truncated at the end of the message
    [Buffer.alloc(0), ''],
  ];
  // The helper used for the 16 MiB case must agree with these hand-written lines.
  for (const [payload, line] of cases) {
    assert.equal(expectedLine(Buffer.from(payload)), line, `expectedLine(${JSON.stringify(line)})`);
  }
  const srv = await startWsServer(t, {}, (ws) => {
    for (const [payload] of cases) ws.send(payload);
    ws.close(1000);
  });
  const g = spawnGangway(t, ['connect', srv.url]);
  const { rec } = await srv.connection();
  assert.deepEqual(await g.exited(), { code: 0, signal: null });
  assert.equal((await rec.closedEvent()).code, 1000);
  assert.deepEqual(g.stdout.lines(), cases.map(([, line]) => line));
  assert.equal(g.stdout.text(), cases.map(([, line]) => `${line}\n`).join(''));
  assert.ok(
    !g.stderr.text().includes('closed by peer'),
    `a peer close with 1000 prints nothing: ${g.stderr.text()}`,
  );
});

test('--binary: a 16 MiB stdin line arrives as one binary message', T_BIG, async (t) => {
  const payload = randomBytes(16 * MiB);
  for (let i = 0; i < payload.length; i++) if (payload[i] === 0x0a) payload[i] = 0x0b;
  if (payload[payload.length - 1] === 0x0d) payload[payload.length - 1] = 0x0e;
  const srv = await startWsServer(t);
  const g = spawnGangway(t, ['connect', srv.url, '--binary']);
  const { rec } = await srv.connection();
  g.child.stdin.write(payload);
  g.child.stdin.end('\n');
  const [got] = await rec.messagesN(1, 90_000);
  assert.equal(got.isBinary, true);
  assertSameBytes(got.data, payload, '16 MiB line');
  assert.equal((await rec.closedEvent()).code, 1000);
  assert.deepEqual(await g.exited(), { code: 0, signal: null });
});

test('a 16 MiB binary message from the server is printed as one escaped line', T_BIG, async (t) => {
  const payload = randomBytes(16 * MiB);
  const srv = await startWsServer(t, {}, (ws) => {
    ws.send(payload);
    ws.close(1000);
  });
  const g = spawnGangway(t, ['connect', srv.url]);
  await srv.connection();
  assert.deepEqual(await g.exited(90_000), { code: 0, signal: null });
  assert.equal(g.stdout.newlines, 1, 'exactly one line for one message');
  assertSameText(g.stdout.lines()[0], expectedLine(payload), 'the printed 16 MiB line');
});

test('a fragmented message from the server is printed as one line', T, async (t) => {
  const bin = [randomBytes(300), randomBytes(70_000), randomBytes(7)];
  const smile = Buffer.from('😀'); // f0 9f 98 80, split over three frames below
  const srv = await startWsServer(t, {}, (ws) => {
    ws.send('frag', { fin: false });
    ws.ping(Buffer.from('in between')); // control frames may interleave (RFC 6455 §5.4)
    ws.send('ment', { fin: false });
    ws.send('ed', { fin: true });
    ws.send(bin[0], { fin: false });
    ws.send(bin[1], { fin: false });
    ws.send(bin[2], { fin: true });
    ws.send(Buffer.concat([Buffer.from('a'), smile.subarray(0, 2)]), { binary: false, fin: false });
    ws.send(smile.subarray(2, 3), { binary: false, fin: false });
    ws.send(Buffer.concat([smile.subarray(3), Buffer.from('b')]), { binary: false, fin: true });
  });
  const g = spawnGangway(t, ['connect', srv.url]);
  const { ws, rec } = await srv.connection();
  const lines = await g.stdoutLines(3);
  assert.equal(lines[0], 'fragmented');
  assertSameText(lines[1], expectedLine(Buffer.concat(bin)), 'reassembled binary message');
  assert.equal(lines[2], 'a😀b');
  await rec.waitFor(() => rec.pongs.length >= 1, STEP_MS, 'the pong to the interleaved ping');
  assert.equal(rec.pongs[0].toString(), 'in between');
  ws.close(1000);
  assert.deepEqual(await g.exited(), { code: 0, signal: null });
  assert.equal(g.stdout.newlines, 3, 'three messages, three lines');
});

test('server pings are answered with pongs carrying the same payload', T, async (t) => {
  const srv = await startWsServer(t);
  const g = spawnGangway(t, ['connect', srv.url]);
  const { ws, rec } = await srv.connection();
  const payloads = [Buffer.from('are you there?'), Buffer.alloc(0), randomBytes(125)];
  for (const [i, payload] of payloads.entries()) {
    ws.ping(payload);
    await rec.waitFor(() => rec.pongs.length > i, STEP_MS, `pong #${i + 1}`);
    assertSameBytes(rec.pongs[i], payload, `pong #${i + 1} payload`);
  }
  ws.close(1000);
  assert.deepEqual(await g.exited(), { code: 0, signal: null });
  assert.equal(g.stdout.text(), '', 'pings and pongs are not printed');
});

test('server closes with 4001 "x": exit 0, code echoed, stderr names it', T, async (t) => {
  const srv = await startWsServer(t, {}, (ws) => ws.close(4001, 'x'));
  const g = spawnGangway(t, ['connect', srv.url]);
  const { rec } = await srv.connection();
  assert.deepEqual(await g.exited(), { code: 0, signal: null });
  // `ws` reports the code of the close frame it received back (RFC 6455 §5.5.1: echo the code).
  assert.equal((await rec.closedEvent()).code, 4001);
  assert.ok(
    g.stderrLines().includes('gangway: closed by peer: 4001 x'),
    `stderr: ${JSON.stringify(g.stderr.text())}`,
  );
});

test('subprotocol: offers chat and superchat, the server picks chat', T, async (t) => {
  const offered = [];
  const srv = await startWsServer(t, {
    handleProtocols: (protocols) => {
      offered.push([...protocols]);
      return 'chat';
    },
  });
  const g = spawnGangway(t, ['connect', srv.url, '--protocol', 'chat', '--protocol', 'superchat']);
  const { ws, rec } = await srv.connection();
  assert.deepEqual(offered, [['chat', 'superchat']], 'both offered, in order, once');
  assert.equal(ws.protocol, 'chat');
  await g.waitFor(
    () => g.stderrLines().includes('gangway: subprotocol: chat'),
    STEP_MS,
    'stderr line "gangway: subprotocol: chat"',
  );
  g.child.stdin.end('over chat\n');
  assert.deepEqual(asPairs(await rec.messagesN(1)), [[false, 'over chat']]);
  assert.equal((await rec.closedEvent()).code, 1000);
  assert.deepEqual(await g.exited(), { code: 0, signal: null });
});

test('subprotocol: the server selects none → connected without one', T, async (t) => {
  const srv = await startWsServer(t, { handleProtocols: () => false });
  const g = spawnGangway(t, ['connect', srv.url, '--protocol', 'chat']);
  const { ws, rec } = await srv.connection();
  assert.equal(ws.protocol, '');
  await g.waitFor(
    () => g.stderrLines().includes('gangway: subprotocol: none'),
    STEP_MS,
    'stderr line "gangway: subprotocol: none"',
  );
  g.child.stdin.end('no protocol\n');
  assert.deepEqual(asPairs(await rec.messagesN(1)), [[false, 'no protocol']]);
  assert.equal((await rec.closedEvent()).code, 1000);
  assert.deepEqual(await g.exited(), { code: 0, signal: null });
});

test('--echo: every message comes back unchanged, then the server closes', T, async (t) => {
  const sent = [
    'hello',
    '',
    '4-byte 😀 𝄞',
    'multi\nline\\',
    Buffer.alloc(0),
    randomBytes(1),
    randomBytes(125),
    randomBytes(126),
    randomBytes(65536),
    Buffer.from([0xff, 0x00, 0xc3]),
    Buffer.from('valid UTF-8, still binary'),
  ];
  const srv = await startWsServer(t, {}, (ws) => {
    for (const m of sent) ws.send(m);
  });
  const g = spawnGangway(t, ['connect', srv.url, '--echo']);
  // --echo ignores stdin: this line must never reach the server.
  g.child.stdin.write('stdin is ignored in echo mode\n');
  const { ws, rec } = await srv.connection();
  const got = await rec.messagesN(sent.length);
  got.forEach((m, i) => {
    assert.equal(m.isBinary, typeof sent[i] !== 'string', `type of echo ${i}`);
    assertSameBytes(m.data, Buffer.from(sent[i]), `echo ${i}`);
  });
  ws.close(1000);
  assert.deepEqual(await g.exited(), { code: 0, signal: null });
  assert.equal((await rec.closedEvent()).code, 1000);
  assert.equal(rec.messages.length, sent.length, 'nothing but the echoes was sent');
});

test('--header values arrive at the server', T, async (t) => {
  const srv = await startWsServer(t);
  const g = spawnGangway(t, [
    'connect',
    srv.url,
    '--header',
    'X-Test: 1',
    '--header',
    'X-Other: two words',
  ]);
  const { req, rec } = await srv.connection();
  assert.equal(req.headers['x-test'], '1');
  assert.equal(req.headers['x-other'], 'two words');
  g.child.stdin.end();
  assert.equal((await rec.closedEvent()).code, 1000);
  assert.deepEqual(await g.exited(), { code: 0, signal: null });
});

test('invalid UTF-8 in a text message: close 1007, exit 56 (curl: receive failure)', T, async (t) => {
  // `ws` does not validate what it sends, so a server can send a broken text frame.
  const srv = await startWsServer(t, {}, (ws) =>
    ws.send(Buffer.from([0x6f, 0x6b, 0xff, 0x21]), { binary: false }),
  );
  const g = spawnGangway(t, ['connect', srv.url]);
  const { rec } = await srv.connection();
  assert.equal((await rec.closedEvent()).code, 1007, 'RFC 6455 §8.1: fail with 1007');
  const exit = await g.exited();
  assert.equal(exit.code, 56, g.describe());
  assert.match(g.stderrLines()[0] ?? '', /^gangway: /);
  assert.equal(g.stdout.text(), '', 'the invalid message must not be printed');
});

test('handshake failure: 404 to the upgrade → exit 22 (curl: HTTP error), "unexpected status 404"', T, async (t) => {
  const server = http.createServer((_req, res) => {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not here');
  });
  server.on('upgrade', (_req, socket) => {
    socket.end(
      'HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n' +
        'Connection: close\r\n\r\nnot here',
    );
  });
  t.after(() => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(() => resolve()));
  });
  await withTimeout(
    new Promise((resolve) => server.listen(0, '127.0.0.1', resolve)),
    STEP_MS,
    'the http server to listen',
  );
  const g = spawnGangway(t, ['connect', `ws://127.0.0.1:${server.address().port}/`]);
  const exit = await g.exited();
  assert.equal(exit.code, 22, g.describe());
  const stderr = g.stderrLines();
  assert.equal(stderr.length, 1, `one line on stderr: ${JSON.stringify(stderr)}`);
  assert.match(stderr[0], /^gangway: .*unexpected status 404/);
});

test('connection refused → exit 7 (curl: failed to connect) with a gangway: error line', T, async (t) => {
  // A port that was free a moment ago and has nothing listening now.
  const probe = net.createServer();
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  const g = spawnGangway(t, ['connect', `ws://127.0.0.1:${port}/`]);
  const exit = await g.exited();
  assert.equal(exit.code, 7, g.describe());
  assert.match(g.stderrLines()[0] ?? '', /^gangway: /);
});
