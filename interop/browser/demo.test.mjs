// A real browser against `gangway serve`: headless Chromium (Debian's package, driven over the
// DevTools protocol by playwright-core, which never downloads a browser) loads the demo page at
// `GET /`, uses it as a person would, and opens raw WebSockets from the page's context.
//
// Oracles are independent of the page: the handshake is recomputed here with Node's crypto, and
// the headers really exchanged are read from Chromium's network events (DevTools protocol), not
// from what the page or the server says about them.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { STEP_MS, startServe, withTimeout } from '../node/common.mjs';
import { compressibleText, startWireProxy } from '../node/wire.mjs';
import { launchChromium } from './chromium.mjs';


/** Where the screenshot of the demo page goes (outside the repository). */
const SCREENSHOT = process.env.GANGWAY_DEMO_SCREENSHOT || path.join(os.tmpdir(), 'demo.png');

/** Upper bound of one test, browser start-up included. */
const TEST_MS = 60_000;

/** RFC 6455 §1.3: the GUID appended to the key before hashing. */
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** RFC 6455 §4.2.2 item 5.4: base64(SHA-1(key + GUID)), computed without the page or gangway. */
const acceptFor = (key) => createHash('sha1').update(key + GUID).digest('base64');

let context = null;
let profileDir = null;

before(async () => {
  // A fresh profile per run, so no state (cache, HSTS, settings) leaks between runs.
  profileDir = mkdtempSync(path.join(os.tmpdir(), 'gangway-chromium-'));
  context = await launchChromium(profileDir);
}, { timeout: TEST_MS });

after(async () => {
  // Bounded: a wedged browser must not hold the test run open (playwright kills it on exit).
  if (context) await withTimeout(context.close(), 10_000, 'Chromium to close').catch(() => {});
  if (profileDir) rmSync(profileDir, { recursive: true, force: true });
}, { timeout: 15_000 });

/**
 * A new tab, closed when the test ends. Page errors (uncaught exceptions) and console errors are
 * collected so a test can assert the page ran cleanly.
 */
async function openPage(t) {
  const page = await context.newPage();
  t.after(() => page.close().catch(() => {}));
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') {
      problems.push(`console error: ${msg.text()} (${msg.location().url || 'no url'})`);
    }
  });
  return { page, problems };
}

/**
 * Records the WebSocket handshakes of `page` as Chromium saw them on the wire (DevTools protocol
 * network events). `handshake(urlPredicate)` waits for the request and, if the browser got one,
 * the response of the first socket whose URL matches.
 */
async function watchHandshakes(page) {
  const cdp = await context.newCDPSession(page);
  const sockets = new Map(); // requestId -> { url, request, response }
  const entry = (id) => {
    if (!sockets.has(id)) sockets.set(id, { url: null, request: null, response: null });
    return sockets.get(id);
  };
  cdp.on('Network.webSocketCreated', (e) => {
    entry(e.requestId).url = e.url;
  });
  cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => {
    entry(e.requestId).request = e.request;
  });
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
    entry(e.requestId).response = e.response;
  });
  await cdp.send('Network.enable');
  const find = (match, withResponse) =>
    [...sockets.values()].find(
      (s) => s.url !== null && match(s.url) && s.request && (!withResponse || s.response),
    );
  return {
    /** Resolves with `{ url, request, response }`; `withResponse` also waits for the 101. */
    handshake: (match, what, { withResponse = true } = {}) =>
      poll(() => find(match, withResponse), `Chromium's handshake record of ${what}`),
  };
}

/** Resolves with the first truthy value of `cond()`, re-checked every 20 ms, for `STEP_MS`. */
async function poll(cond, what) {
  const deadline = Date.now() + STEP_MS;
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${STEP_MS} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The value of header `name` (case-insensitive) in a DevTools header object, or undefined. */
function header(headers, name) {
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
  return key === undefined ? undefined : headers[key];
}

/** What gangway recorded for the handshake tagged `?id=ID` (`GET /handshake?id=ID`). */
async function serverRecord(addr, id) {
  const res = await withTimeout(
    fetch(`http://${addr}/handshake?id=${id}`),
    STEP_MS,
    `GET /handshake?id=${id}`,
  );
  assert.equal(res.status, 200, `GET /handshake?id=${id}`);
  return res.json();
}

/** The log entries of the demo page: `{ kind, dir, body }` in order. */
const pageLog = (page) =>
  page.$$eval('#log li', (items) =>
    items.map((li) => ({
      kind: li.className,
      dir: li.querySelector('.dir').textContent,
      body: li.querySelector('.body').textContent,
    })),
  );

/** How the page shows a binary message: the byte count and the first 64 bytes in hex. */
const describeBinary = (buf) => {
  const hex = [...buf.subarray(0, 64)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  return `${buf.length} bytes: ${hex}${buf.length > 64 ? ' …' : ''}`;
};

test('demo page: connects, echoes what is typed, and shows a handshake that checks out', {
  timeout: TEST_MS,
}, async (t) => {
  const { addr } = await startServe(t);
  const { page, problems } = await openPage(t);
  const wire = await watchHandshakes(page);

  const response = await page.goto(`http://${addr}/`);
  assert.equal(response.status(), 200, 'GET / status');
  assert.match(response.headers()['content-type'], /^text\/html/, 'GET / content-type');

  // Connected: the status pill says so and the Send button is enabled.
  await page.locator('#status.open').waitFor();
  assert.equal(await page.textContent('#status'), 'open');
  assert.equal(await page.isEnabled('#send'), true, 'Send is enabled once open');

  // Text, typed and sent with Enter: 4-byte UTF-8 (U+1F680, U+1D11E, U+1F600) among 2- and 3-byte.
  const text = 'hello from Chromium 🚀 𝄞 — déjà vu 😀';
  await page.locator('#message').pressSequentially(text);
  await page.locator('#message').press('Enter');
  await page.waitForFunction(() => document.querySelectorAll('#log li.received').length >= 1);

  // Binary, sent with the checkbox and the Send button: the page sends the UTF-8 bytes.
  const binText = 'bytes ✓ 😀';
  await page.locator('#binary').check();
  await page.locator('#message').fill(binText);
  await page.locator('#send').click();
  await page.waitForFunction(() => document.querySelectorAll('#log li.received').length >= 2);

  const log = await pageLog(page);
  const exchanged = log.filter((e) => e.kind === 'sent' || e.kind === 'received');
  const binShown = describeBinary(Buffer.from(binText, 'utf8'));
  assert.deepEqual(exchanged, [
    { kind: 'sent', dir: '→ text', body: text },
    { kind: 'received', dir: '← text', body: text },
    { kind: 'sent', dir: '→ binary', body: binShown },
    { kind: 'received', dir: '← binary', body: binShown },
  ]);

  // The handshake the page shows, once it has fetched the record and checked it.
  await page.locator('#hs-check.match, #hs-check.mismatch').waitFor();
  const shown = await page.evaluate(() =>
    Object.fromEntries(
      ['hs-url', 'hs-protocol', 'hs-key', 'hs-accept', 'hs-check'].map((id) => [
        id,
        document.getElementById(id).textContent,
      ]),
    ),
  );
  const key = shown['hs-key'];
  assert.match(key, /^[A-Za-z0-9+/]{22}==$/, 'Sec-WebSocket-Key shown is base64 of 16 bytes');
  assert.equal(Buffer.from(key, 'base64').length, 16, 'the key decodes to 16 bytes');
  assert.equal(shown['hs-accept'], acceptFor(key), 'Sec-WebSocket-Accept shown = SHA-1 here');
  assert.equal(shown['hs-check'], `${acceptFor(key)}  ✓ matches`, "the page's own check");
  assert.equal(await page.getAttribute('#hs-check', 'class'), 'match');
  assert.equal(shown['hs-protocol'], 'none');
  // serve accepts Chromium's permessage-deflate offer: the page names it and its parameters,
  // as Chromium reports them (ws.extensions).
  const extensions = await page.textContent('#hs-extensions');
  const negotiated = await page.evaluate(() => ws.extensions);
  assert.match(negotiated, /^permessage-deflate/, 'deflate negotiated');
  const params = negotiated.split(';').slice(1).map((p) => p.trim()).filter(Boolean);
  assert.equal(
    extensions,
    params.length ? `permessage-deflate (${params.join(', ')})` : 'permessage-deflate (default parameters)',
  );
  assert.match(shown['hs-url'], new RegExp(`^ws://${addr.replace(/\./g, '\\.')}/demo\\?id=`));

  // ...and it is what really went over the wire, as Chromium reports it.
  const hs = await wire.handshake((u) => u === shown['hs-url'], "the demo page's socket");
  assert.equal(header(hs.request.headers, 'Sec-WebSocket-Key'), key, 'key sent by Chromium');
  assert.equal(hs.response.status, 101);
  assert.equal(
    header(hs.response.headers, 'Sec-WebSocket-Accept'),
    acceptFor(key),
    'Sec-WebSocket-Accept Chromium received',
  );

  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  assert.ok(statSync(SCREENSHOT).size > 0, `screenshot written to ${SCREENSHOT}`);
  t.diagnostic(`screenshot of the demo page: ${SCREENSHOT}`);

  assert.deepEqual(problems, [], 'the page ran without errors');
});

test('demo page: a reconnect that fails says the server may be down', {
  timeout: TEST_MS,
}, async (t) => {
  const { proc, addr } = await startServe(t);
  const { page, problems } = await openPage(t);
  await page.goto(`http://${addr}/`);
  await page.locator('#status.open').waitFor();
  // The server goes away (it closes the page's socket with 1001 on SIGTERM)...
  proc.child.kill('SIGTERM');
  await proc.exited();
  await page.locator('#status.closed').waitFor();
  assert.match(await page.textContent('#status'), /^closed 1001/);
  // ...and the reconnect finds nobody: the page says what that probably means.
  await page.locator('#reconnect').click();
  await page.waitForFunction(() => document.getElementById('status').textContent === 'cannot connect');
  const last = (await pageLog(page)).at(-1);
  assert.equal(last.kind, 'info');
  assert.match(last.body, /^could not connect to .*: the server may be down/);
  assert.equal(await page.isEnabled('#reconnect'), true, 'Reconnect can be tried again');
  // Chromium reports the refused connection on its console; nothing else went wrong.
  assert.deepEqual(problems.filter((p) => !p.includes('WebSocket connection to')), []);
});

/**
 * serve's permessage-deflate modes: its arguments, its answer to Chromium's offer, and whether a
 * message repeated in a row refers back to the previous copy (context takeover).
 */
const DEFLATE_MODES = {
  window: {
    args: [],
    answer: 'permessage-deflate; server_no_context_takeover; client_max_window_bits=12',
    takeover: { up: true, down: false },
  },
  shared: {
    args: ['--deflate-mode', 'shared'],
    answer: 'permessage-deflate; server_no_context_takeover; client_no_context_takeover',
    takeover: { up: false, down: false },
  },
  dedicated: {
    args: ['--deflate-mode', 'dedicated'],
    answer: 'permessage-deflate; server_max_window_bits=12; client_max_window_bits=12',
    takeover: { up: true, down: true },
  },
};

for (const [modeName, mode] of Object.entries(DEFLATE_MODES)) {
test(`raw WebSocket in the page: text, 70000-byte binary and 1 MiB echoed exactly, deflate used (serve ${modeName})`, {
  timeout: TEST_MS,
}, async (t) => {
  const { addr } = await startServe(t, mode.args);
  // The raw socket goes through a proxy that reads the frame headers on the wire.
  const proxy = await startWireProxy(t, Number(addr.split(':')[1]));
  const { page, problems } = await openPage(t);
  const wire = await watchHandshakes(page);
  await page.goto(`http://${addr}/`);
  await page.locator('#status.open').waitFor();

  // Control characters, quotes, a NUL and 4-byte UTF-8: everything must come back as it was.
  const text = 'raw 🚀 text \u0000 "quoted" \\ tab\t end 𝄞';
  const binary = randomBytes(70_000); // > 65535: the 64-bit payload length form (RFC 6455 §5.2)
  const big = compressibleText(1 << 20); // shrinks more than tenfold with deflate
  // Sent REPEATS times in a row after the others: it fits in every window, so with context
  // takeover each repeat refers back to the previous copy and crosses in a few bytes.
  const repeated = compressibleText(3000);
  const REPEATS = 4;
  const url = `ws://127.0.0.1:${proxy.port}/any/path`;

  const result = await withTimeout(
    page.evaluate(
      async ({ url, text, binaryB64, big, repeated, repeats, stepMs }) => {
        const toBase64 = (buf) => {
          const bytes = new Uint8Array(buf);
          let s = '';
          for (let i = 0; i < bytes.length; i += 0x8000) {
            s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
          }
          return btoa(s);
        };
        const sent = Uint8Array.from(atob(binaryB64), (c) => c.charCodeAt(0));
        const ws = new WebSocket(url);
        ws.binaryType = 'arraybuffer';
        const received = [];
        const closed = new Promise((resolve) => {
          ws.onclose = (e) => resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean });
        });
        const allMessages = new Promise((resolve) => {
          ws.onmessage = (e) => {
            received.push(e.data);
            if (received.length === 3 + repeats) resolve();
          };
        });
        const within = (p, what) =>
          Promise.race([
            p,
            new Promise((_, reject) =>
              setTimeout(() => reject(new Error(`in page: timed out waiting for ${what}`)), stepMs),
            ),
          ]);
        await within(
          new Promise((resolve, reject) => {
            ws.onopen = resolve;
            ws.onerror = () => reject(new Error(`in page: ${url} failed to open`));
          }),
          'open',
        );
        const opened = { extensions: ws.extensions, protocol: ws.protocol };
        ws.send(text);
        ws.send(sent.buffer); // an ArrayBuffer: a binary message
        ws.send(big);
        for (let i = 0; i < repeats; i++) ws.send(repeated);
        await within(allMessages, 'every echo');
        ws.close(1000, 'done');
        const close = await within(closed, 'the close event');
        return {
          opened,
          close,
          echoes: received.map((d) =>
            typeof d === 'string'
              ? { type: 'string', text: d }
              : { type: Object.prototype.toString.call(d), b64: toBase64(d) },
          ),
        };
      },
      {
        url,
        text,
        binaryB64: binary.toString('base64'),
        big,
        repeated,
        repeats: REPEATS,
        stepMs: STEP_MS,
      },
    ),
    3 * STEP_MS,
    'the raw WebSocket exchange in the page',
  );

  // permessage-deflate was negotiated (Chromium always offers it), no subprotocol.
  assert.equal(result.opened.extensions, mode.answer, 'ws.extensions');
  assert.equal(result.opened.protocol, '', 'ws.protocol');

  assert.equal(result.echoes.length, 3 + REPEATS);
  const [first, second, third, ...repeats] = result.echoes;
  for (const echo of repeats) {
    assert.deepEqual(echo, { type: 'string', text: repeated }, 'repeated text echo');
  }
  assert.deepEqual(third, { type: 'string', text: big }, '1 MiB text echo');
  assert.deepEqual(first, { type: 'string', text }, 'text echo: same type, same text');
  assert.equal(second.type, '[object ArrayBuffer]', 'binary echo stays binary');
  const echoed = Buffer.from(second.b64, 'base64');
  assert.equal(echoed.length, binary.length, 'binary echo length');
  assert.ok(echoed.equals(binary), 'binary echo: same bytes');

  assert.deepEqual(result.close, { code: 1000, reason: 'done', wasClean: true }, 'close');

  // Chromium offered permessage-deflate (RFC 7692) and gangway accepted it, with the
  // parameters of its mode, which Chromium took (the socket opened with the extension).
  const hs = await wire.handshake((u) => u === url, 'the raw socket');
  const offered = header(hs.request.headers, 'Sec-WebSocket-Extensions');
  assert.equal(offered, 'permessage-deflate; client_max_window_bits', "Chromium's offer");
  assert.equal(hs.response.status, 101);
  assert.equal(
    header(hs.response.headers, 'Sec-WebSocket-Extensions'),
    mode.answer,
    'gangway accepted permessage-deflate in the 101',
  );
  // And used it, both ways: RSV1 on the compressed messages' frames on the wire (text, binary
  // and the 1 MiB text; the 40-byte text too from gangway, over its 32-byte threshold), and the
  // 1 MiB message crossing in a small fraction of its size.
  const rsv1 = (frames) =>
    frames.filter((f) => f.opcode === 1 || f.opcode === 2).map((f) => (f.rsv & 4) !== 0);
  const fromChromium = rsv1(proxy.up.frames);
  assert.equal(fromChromium.length, 3 + REPEATS, 'every message from Chromium');
  assert.ok(
    fromChromium.slice(1).every((c) => c),
    `Chromium compressed: ${fromChromium}`,
  );
  assert.ok(rsv1(proxy.down.frames).every((c) => c), 'gangway compressed every message');
  assert.ok(proxy.up.bytes < 300_000, `Chromium → gangway: ${proxy.up.bytes} bytes`);
  assert.ok(proxy.down.bytes < 300_000, `gangway → Chromium: ${proxy.down.bytes} bytes`);
  // The repeats, each way: without context takeover each costs what the first did; with it,
  // the repeats refer back to the copy before and cost a small fraction of it.
  for (const [what, frames, takeover] of [
    ['Chromium → gangway', proxy.up.frames, mode.takeover.up],
    ['gangway → Chromium', proxy.down.frames, mode.takeover.down],
  ]) {
    const sizes = frames
      .filter((f) => f.opcode === 1 || f.opcode === 2)
      .slice(3)
      .map((f) => f.length);
    assert.equal(sizes.length, REPEATS, what);
    assert.ok(sizes[0] < repeated.length / 3, `${what}: ${sizes}`);
    for (const size of sizes.slice(1)) {
      if (takeover) {
        assert.ok(size < sizes[0] / 4, `${what}, context takeover: ${sizes}`);
      } else {
        assert.ok(Math.abs(size - sizes[0]) <= 2, `${what}, no context takeover: ${sizes}`);
      }
    }
  }

  assert.deepEqual(problems, [], 'the page ran without errors');
});
}

test('subprotocols: serve --protocol chat selects chat; nothing in common is no refusal', {
  timeout: TEST_MS,
}, async (t) => {
  const { addr } = await startServe(t, ['--protocol', 'chat']);
  const { page } = await openPage(t);
  const wire = await watchHandshakes(page);
  await page.goto(`http://${addr}/`);
  await page.locator('#status.open').waitFor();

  // Each socket is tagged `?id=` so gangway's record of it can be fetched afterwards.
  const open = (offered, id) =>
    withTimeout(
      page.evaluate(
        ({ url, offered, stepMs }) =>
          new Promise((resolve) => {
            const ws = new WebSocket(url, offered);
            const timer = setTimeout(() => resolve({ outcome: 'timeout' }), stepMs);
            ws.onopen = () => {
              clearTimeout(timer);
              const protocol = ws.protocol;
              ws.onclose = () => resolve({ outcome: 'open', protocol });
              ws.close(1000);
            };
            ws.onclose = (e) => {
              clearTimeout(timer);
              resolve({ outcome: 'closed', code: e.code });
            };
          }),
        { url: `ws://${addr}/chat?id=${id}`, offered, stepMs: STEP_MS },
      ),
      2 * STEP_MS,
      `a socket offering ${offered.join(', ')}`,
    );

  assert.deepEqual(await open(['chat'], 'only-chat'), { outcome: 'open', protocol: 'chat' });
  // The server's list decides among what the client offered; the client's order does not.
  assert.deepEqual(await open(['superchat', 'chat'], 'two'), { outcome: 'open', protocol: 'chat' });
  const two = await wire.handshake((u) => u.endsWith('?id=two'), 'the two-protocol socket');
  assert.equal(header(two.request.headers, 'Sec-WebSocket-Protocol'), 'superchat, chat');
  assert.equal(header(two.response.headers, 'Sec-WebSocket-Protocol'), 'chat');

  // Nothing in common: gangway still accepts, without the header (not a refusal), and the
  // browser then fails the connection itself, as the WHATWG WebSocket standard requires when
  // protocols were requested and none came back.
  assert.deepEqual(await open(['superchat'], 'none-common'), { outcome: 'closed', code: 1006 });
  const record = await serverRecord(addr, 'none-common');
  assert.equal(record.protocol, null, 'gangway selected no subprotocol');
  const offered = record.headers.find(([name]) => name === 'sec-websocket-protocol');
  assert.deepEqual(offered, ['sec-websocket-protocol', 'superchat'], 'what gangway received');
  const none = await wire.handshake((u) => u.endsWith('?id=none-common'), 'the mismatched socket', {
    withResponse: false,
  });
  assert.equal(header(none.request.headers, 'Sec-WebSocket-Protocol'), 'superchat');
});
