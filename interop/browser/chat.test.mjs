// Two pages of headless Chromium chatting through `gangway serve --broadcast`: the demo page's
// Chat tab, in two tabs of one browser, each in the room /chat. What one types, both show. The
// browser offers permessage-deflate (it always does): a raw client in the room with the same
// offer reads the frames the pages get and checks that the room's messages were compressed.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import net from 'node:net';
import { test } from 'node:test';
import zlib from 'node:zlib';
import { STEP_MS, startServe, withTimeout } from '../node/common.mjs';
import { chromiumForTests } from './chromium.mjs';

/** What Chromium offers in `Sec-WebSocket-Extensions`. */
const CHROMIUM_OFFER = 'permessage-deflate; client_max_window_bits';

const TEST_MS = 60_000;

const browser = chromiumForTests();

/** A new tab on the demo page's Chat tab, connected to the room; closed when the test ends. */
async function chatPage(t, addr, name) {
  const page = await browser().newPage();
  t.after(() => page.close().catch(() => {}));
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
  });
  await page.goto(`http://${addr}/`);
  await page.locator('#tab-chat').click();
  await page.locator('#chat-status.open').waitFor();
  await page.locator('#chat-name').fill(name);
  return { page, problems };
}

/** The chat log of `page`: `[class, name, text]` per message (information lines left out). */
const chatLog = (page) =>
  page.$$eval('#chat-log li:not(.info)', (items) =>
    items.map((li) => {
      const name = li.querySelector('.name');
      const who = name ? name.textContent : null;
      const text = li.textContent.slice(who ? who.length : 0);
      return [li.className, who, text];
    }),
  );

async function say(page, text) {
  await page.locator('#chat-message').fill(text);
  await page.locator('#chat-message').press('Enter');
}

async function waitForLog(page, n) {
  await page.waitForFunction(
    (n) => document.querySelectorAll('#chat-log li:not(.info)').length >= n,
    n,
  );
  return chatLog(page);
}

test('two pages chat through serve --broadcast', { timeout: TEST_MS }, async (t) => {
  const { addr } = await startServe(t, ['--broadcast']);
  const alice = await chatPage(t, addr, 'alice');
  const bob = await chatPage(t, addr, 'bob');
  assert.match(
    await alice.page.textContent('#chat-note'),
    /open this page in another tab/,
    'the page knows the server broadcasts',
  );

  // Each line is said once the one before reached both pages: the order is the conversation's.
  const lines = [
    [alice, 'alice', 'hello bob 👋'],
    [bob, 'bob', 'hi alice — déjà vu 😀'],
    [alice, 'alice', 'bye'],
  ];
  for (const [i, [who, , text]] of lines.entries()) {
    await say(who.page, text);
    await waitForLog(alice.page, i + 1);
    await waitForLog(bob.page, i + 1);
  }
  // Each page shows every line, its own included (the server sends a message to every member of
  // the room, the sender too).
  for (const [me, page] of [['alice', alice.page], ['bob', bob.page]]) {
    const expected = lines.map(([, name, text]) => [name === me ? 'mine' : 'other', name, text]);
    assert.deepEqual(await chatLog(page), expected, `${me}'s page`);
  }

  // A third page that joins later gets what is said from then on, not what was said before.
  const carol = await chatPage(t, addr, 'carol');
  await say(carol.page, 'late');
  for (const { page } of [alice, bob, carol]) {
    const log = await waitForLog(page, page === carol.page ? 1 : 4);
    assert.deepEqual(log.at(-1)[1], 'carol');
    assert.deepEqual(log.at(-1)[2], 'late');
  }
  assert.equal((await chatLog(carol.page)).length, 1, 'no history before joining');

  for (const { problems } of [alice, bob, carol]) {
    assert.deepEqual(problems, [], 'the pages ran without errors');
  }
});

/**
 * A raw TCP client in the room `path` of `addr`, upgraded with Chromium's extension offer.
 * Resolves with `{ answer, frames(n) }`: the server's `Sec-WebSocket-Extensions`, and a function
 * resolving with the next `n` frames as `{ rsv, opcode, payload }`.
 */
async function rawMember(t, addr, path) {
  const [host, port] = addr.split(':');
  const sock = net.connect(Number(port), host);
  t.after(() => sock.destroy());
  let buf = Buffer.alloc(0);
  let wake = () => {};
  sock.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    wake();
  });
  const more = () => new Promise((resolve) => (wake = resolve));
  const key = crypto.randomBytes(16).toString('base64');
  sock.write(
    `GET ${path} HTTP/1.1\r\nHost: ${addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
      `Sec-WebSocket-Extensions: ${CHROMIUM_OFFER}\r\n\r\n`,
  );
  const head = await withTimeout(
    (async () => {
      while (buf.indexOf('\r\n\r\n') < 0) await more();
      const end = buf.indexOf('\r\n\r\n');
      const text = buf.subarray(0, end).toString('latin1');
      buf = buf.subarray(end + 4);
      return text;
    })(),
    STEP_MS,
    'the raw client\'s handshake',
  );
  assert.match(head, /^HTTP\/1\.1 101 /);
  const answer = /^sec-websocket-extensions: *(.*)$/im.exec(head)?.[1];
  const frames = (n) =>
    withTimeout(
      (async () => {
        const out = [];
        while (out.length < n) {
          if (buf.length >= 2) {
            let len = buf[1] & 0x7f;
            let at = 2;
            if (len === 126 && buf.length >= 4) [len, at] = [buf.readUInt16BE(2), 4];
            else if (len === 127 && buf.length >= 10) [len, at] = [Number(buf.readBigUInt64BE(2)), 10];
            const whole = len < 126 || at > 2;
            if (whole && buf.length >= at + len) {
              assert.equal(buf[1] & 0x80, 0, 'server frames are not masked');
              out.push({ rsv: (buf[0] >> 4) & 7, opcode: buf[0] & 0x0f, payload: buf.subarray(at, at + len) });
              buf = buf.subarray(at + len);
              continue;
            }
          }
          await more();
        }
        return out;
      })(),
      STEP_MS,
      `${n} frames`,
    );
  return { answer, frames };
}

/** A compressed message's payload inflated (RFC 7692 §7.2.2: the removed tail added back). */
const inflate = (payload) =>
  zlib
    .inflateRawSync(Buffer.concat([payload, Buffer.from([0, 0, 0xff, 0xff])]), {
      finishFlush: zlib.constants.Z_SYNC_FLUSH,
    })
    .toString('utf8');

test('the pages chat over permessage-deflate, the room compressing once for all', { timeout: TEST_MS }, async (t) => {
  const { addr } = await startServe(t, ['--broadcast']);
  const alice = await chatPage(t, addr, 'alice');
  const bob = await chatPage(t, addr, 'bob');
  const raw = await rawMember(t, addr, '/chat');
  // Chromium negotiated the extension; the server compresses each message on its own
  // (server_no_context_takeover), so one compressed frame serves every such member.
  for (const { page } of [alice, bob]) {
    const agreed = await page.evaluate(() => chat.extensions);
    assert.match(agreed, /^permessage-deflate/, 'Chromium negotiated permessage-deflate');
    assert.match(agreed, /server_no_context_takeover/);
    assert.equal(agreed, raw.answer, 'the raw client got the answer Chromium got');
  }
  const long = 'a longer line, so that its JSON is worth compressing: ' + 'la '.repeat(40);
  const lines = [
    [alice, 'alice', long],
    [bob, 'bob', `${long} — déjà vu 😀`],
    [alice, 'alice', 'bye'],
  ];
  for (const [i, [who, , text]] of lines.entries()) {
    await say(who.page, text);
    await waitForLog(alice.page, i + 1);
    await waitForLog(bob.page, i + 1);
  }
  // The pages inflated what they got: every line shows on both, as typed.
  for (const [me, page] of [['alice', alice.page], ['bob', bob.page]]) {
    const expected = lines.map(([, name, text]) => [name === me ? 'mine' : 'other', name, text]);
    assert.deepEqual(await chatLog(page), expected, `${me}'s page`);
  }
  // What the room sent: the long lines' JSON compressed (RSV1, much smaller), the short one
  // (under 32 bytes) plain.
  const frames = await raw.frames(lines.length);
  for (const [i, [, name, text]] of lines.entries()) {
    const json = JSON.stringify({ name, text });
    const { rsv, opcode, payload } = frames[i];
    assert.equal(opcode, 1, 'text');
    if (Buffer.byteLength(json) >= 32) {
      assert.equal(rsv, 4, `line ${i} compressed (RSV1)`);
      assert.ok(payload.length < Buffer.byteLength(json) / 2, `line ${i} compressed well`);
      assert.equal(inflate(payload), json, `line ${i}`);
    } else {
      assert.equal(rsv, 0, `line ${i} plain`);
      assert.equal(payload.toString('utf8'), json, `line ${i}`);
    }
  }
  for (const { problems } of [alice, bob]) {
    assert.deepEqual(problems, [], 'the pages ran without errors');
  }
});

test('without --broadcast the chat tab echoes and says so', { timeout: TEST_MS }, async (t) => {
  const { addr } = await startServe(t);
  const alice = await chatPage(t, addr, 'alice');
  const bob = await chatPage(t, addr, 'bob');
  assert.match(await alice.page.textContent('#chat-note'), /gangway serve --broadcast/);
  await say(alice.page, 'anyone?');
  assert.deepEqual(await waitForLog(alice.page, 1), [['mine', 'alice', 'anyone?']]);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(await chatLog(bob.page), [], 'an echo server does not relay');
});

/** A free loopback port (bound, read, released). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Debian's redis-server on a free loopback port, killed by PID when the test ends. */
async function startRedis(t) {
  const port = await freePort();
  const child = spawn(
    '/usr/bin/redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  t.after(() => child.kill('SIGKILL'));
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (up) break;
    assert.ok(Date.now() < deadline, 'redis-server did not start');
    await new Promise((r) => setTimeout(r, 20));
  }
  return `redis://127.0.0.1:${port}`;
}

/** Every line of the chat log, information lines included: `[class, name, text]`. */
const fullLog = (page) =>
  page.$$eval('#chat-log li', (items) =>
    items.map((li) => {
      const name = li.querySelector('.name');
      const who = name ? name.textContent : null;
      return [li.className, who, li.textContent.slice(who ? who.length : 0)];
    }),
  );

test('with --history the chat tab reconnects and catches up', { timeout: TEST_MS }, async (t) => {
  const redis = await startRedis(t);
  const { addr } = await startServe(t, ['--broadcast', '--redis', redis, '--history', '100']);
  const alice = await chatPage(t, addr, 'alice');
  const bob = await chatPage(t, addr, 'bob');
  await say(alice.page, 'one');
  await waitForLog(bob.page, 1);
  // Bob's socket goes (as when a laptop sleeps); the page reconnects half a second later with
  // the position of the last message it showed. What Alice says meanwhile reaches Bob from the
  // room's history, before the line saying it caught up.
  await bob.page.evaluate(() => chat.close());
  await bob.page.locator('#chat-status.closed').waitFor();
  await say(alice.page, 'two');
  await say(alice.page, 'three');
  await waitForLog(alice.page, 3);
  await waitForLog(bob.page, 3);
  await bob.page.locator('#chat-status.open').waitFor();
  await say(alice.page, 'four');
  await waitForLog(bob.page, 4);
  await waitForLog(alice.page, 4);
  const said = ['one', 'two', 'three', 'four'];
  assert.deepEqual(
    await chatLog(bob.page),
    said.map((text) => ['other', 'alice', text]),
    "bob's page: every line once, in order",
  );
  assert.deepEqual(
    await chatLog(alice.page),
    said.map((text) => ['mine', 'alice', text]),
  );
  const info = (await fullLog(bob.page)).map(([cls, , text]) => (cls === 'info' ? text : null));
  const caughtUp = info.indexOf('reconnected; caught up');
  assert.ok(caughtUp > 0, `bob's page says it caught up: ${JSON.stringify(info)}`);
  const texts = (await fullLog(bob.page)).map(([, , text]) => text);
  assert.ok(
    texts.indexOf('three') < caughtUp && texts.indexOf('four') > caughtUp,
    `what was missed came from the history, before the line: ${JSON.stringify(texts)}`,
  );
  for (const { problems } of [alice, bob]) {
    assert.deepEqual(problems, [], 'the pages ran without errors');
  }
});
