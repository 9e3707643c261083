// A real browser over TLS: `gangway serve --tls-cert --tls-key` with a self-signed certificate
// made here by openssl, and headless Chromium (Debian's package, driven by playwright-core, which
// never downloads a browser) told to accept it (`--ignore-certificate-errors`). The demo page is
// loaded over https://, so it opens its socket with wss://, and the echo must come back through
// TLS in both directions.
//
// Oracles are independent of the page: the accept value is recomputed here with Node's crypto, and
// the URL and headers really exchanged are read from Chromium's network events.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { STEP_MS, selfSignedCertificate, startServe, withTimeout } from '../node/common.mjs';
import { launchChromium } from './chromium.mjs';

/** Upper bound of one test, browser start-up included. */
const TEST_MS = 60_000;

/** RFC 6455 §1.3: the GUID appended to the key before hashing. */
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const acceptFor = (key) => createHash('sha1').update(key + GUID).digest('base64');

let context = null;
let workDir = null;
let cert = null;
let key = null;

before(async () => {
  workDir = mkdtempSync(path.join(os.tmpdir(), 'gangway-wss-'));
  ({ cert, key } = selfSignedCertificate(workDir));
  // The certificate is self-signed: the browser is told to accept it. HTTP/1.1 only: serve
  // offers h2 too, and over h2 the socket opens with a 200 and no Sec-WebSocket-Accept
  // (h2.test.mjs covers that); this file checks the 101 over TLS.
  context = await launchChromium(path.join(workDir, 'profile'), {
    tls: true,
    extraArgs: ['--disable-http2'],
  });
}, { timeout: TEST_MS });

after(async () => {
  if (context) await withTimeout(context.close(), 10_000, 'Chromium to close').catch(() => {});
  if (workDir) rmSync(workDir, { recursive: true, force: true });
}, { timeout: 15_000 });

/** The WebSocket handshakes Chromium saw on the wire, by URL (DevTools protocol events). */
async function watchHandshakes(page) {
  const cdp = await context.newCDPSession(page);
  const sockets = new Map();
  const entry = (id) => {
    if (!sockets.has(id)) sockets.set(id, {});
    return sockets.get(id);
  };
  cdp.on('Network.webSocketCreated', (e) => { entry(e.requestId).url = e.url; });
  cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => { entry(e.requestId).request = e.request; });
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => { entry(e.requestId).response = e.response; });
  await cdp.send('Network.enable');
  return async (url) => {
    const deadline = Date.now() + STEP_MS;
    for (;;) {
      const found = [...sockets.values()].find((s) => s.url === url && s.request && s.response);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no handshake record of ${url} from Chromium`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
}

const header = (headers, name) => {
  const k = Object.keys(headers).find((h) => h.toLowerCase() === name.toLowerCase());
  return k === undefined ? undefined : headers[k];
};

test('demo page over https: its socket is wss:// and echoes what is typed', {
  timeout: TEST_MS,
}, async (t) => {
  const { addr } = await startServe(t, ['--tls-cert', cert, '--tls-key', key]);
  const page = await context.newPage();
  t.after(() => page.close().catch(() => {}));
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  const handshakeOf = await watchHandshakes(page);

  const response = await page.goto(`https://${addr}/`);
  assert.equal(response.status(), 200, 'GET / over https');
  assert.match(response.headers()['content-type'], /^text\/html/);
  const security = await response.securityDetails();
  assert.ok(security, 'the page came over TLS');
  assert.equal(security.subjectName, 'gangway test', 'the certificate gangway served');

  await page.locator('#status.open').waitFor();
  const text = 'über TLS 🔒 𝄞';
  await page.locator('#message').pressSequentially(text);
  await page.locator('#message').press('Enter');
  await page.waitForFunction(() => document.querySelectorAll('#log li.received').length >= 1);
  const received = await page.$$eval('#log li.received .body', (els) => els.map((e) => e.textContent));
  assert.deepEqual(received, [text]);

  await page.locator('#hs-check.match, #hs-check.mismatch').waitFor();
  const url = await page.textContent('#hs-url');
  assert.match(url, new RegExp(`^wss://${addr.replace(/\./g, '\\.')}/demo\\?id=`), 'wss:// URL');
  assert.equal(await page.getAttribute('#hs-check', 'class'), 'match');

  const hs = await handshakeOf(url);
  assert.equal(hs.response.status, 101);
  const sentKey = header(hs.request.headers, 'Sec-WebSocket-Key');
  assert.equal(header(hs.response.headers, 'Sec-WebSocket-Accept'), acceptFor(sentKey));
  assert.deepEqual(problems, [], 'the page ran without errors');
});

test('raw wss:// socket in the page: text and 70000-byte binary echoed exactly', {
  timeout: TEST_MS,
}, async (t) => {
  const { addr } = await startServe(t, ['--tls-cert', cert, '--tls-key', key]);
  const page = await context.newPage();
  t.after(() => page.close().catch(() => {}));
  await page.goto(`https://${addr}/`);
  await page.locator('#status.open').waitFor();

  const binary = randomBytes(70_000);
  const result = await withTimeout(
    page.evaluate(
      async ({ url, binaryB64, stepMs }) => {
        const sent = Uint8Array.from(atob(binaryB64), (c) => c.charCodeAt(0));
        const ws = new WebSocket(url);
        ws.binaryType = 'arraybuffer';
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
        const messages = [];
        const two = new Promise((resolve) => {
          ws.onmessage = (e) => {
            messages.push(e.data);
            if (messages.length === 2) resolve();
          };
        });
        const closed = new Promise((resolve) => {
          ws.onclose = (e) => resolve({ code: e.code, wasClean: e.wasClean });
        });
        ws.send('tls text \u0000 end');
        ws.send(sent.buffer);
        await within(two, 'two echoes');
        ws.close(1000);
        const close = await within(closed, 'close');
        const echoed = new Uint8Array(messages[1]);
        let same = echoed.length === sent.length;
        for (let i = 0; same && i < sent.length; i++) same = echoed[i] === sent[i];
        return { text: messages[0], binaryLength: echoed.length, same, close };
      },
      { url: `wss://${addr}/raw`, binaryB64: binary.toString('base64'), stepMs: STEP_MS },
    ),
    3 * STEP_MS,
    'the raw wss exchange in the page',
  );
  assert.equal(result.text, 'tls text \u0000 end');
  assert.equal(result.binaryLength, binary.length);
  assert.ok(result.same, 'binary echo: same bytes');
  assert.deepEqual(result.close, { code: 1000, wasClean: true });
});
