// A real browser's WebSocket over HTTP/2 (RFC 8441): `gangway serve --tls-cert --tls-key`
// offers ALPN h2, headless Chromium (Debian's package, driven by playwright-core, which never
// downloads a browser) loads the demo page over h2, and `new WebSocket('wss://…')` on the same
// origin then opens as an extended CONNECT stream of that connection.
//
// Oracles are Chromium's own: the DevTools protocol's network events say which protocol the page
// came over (`h2`) and what the WebSocket handshake's answer was: `200` on HTTP/2, where HTTP/1.1
// would say `101`. The echoes are checked byte for byte in the page.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { STEP_MS, selfSignedCertificate, startServe, withTimeout } from '../node/common.mjs';
import { launchChromium } from './chromium.mjs';

/** Upper bound of one test, browser start-up included. */
const TEST_MS = 90_000;

let context = null;
let workDir = null;
let cert = null;
let key = null;

before(async () => {
  workDir = mkdtempSync(path.join(os.tmpdir(), 'gangway-h2-browser-'));
  ({ cert, key } = selfSignedCertificate(workDir));
  // The certificate is self-signed: the browser is told to accept it.
  context = await launchChromium(path.join(workDir, 'profile'), { tls: true });
}, { timeout: TEST_MS });

after(async () => {
  if (context) await withTimeout(context.close(), 10_000, 'Chromium to close').catch(() => {});
  if (workDir) rmSync(workDir, { recursive: true, force: true });
}, { timeout: 15_000 });

/**
 * What Chromium's network log says: the protocol of each HTTP response by URL, and the
 * WebSocket handshakes by URL (request, response, and the frames' count).
 */
async function watchNetwork(page) {
  const cdp = await context.newCDPSession(page);
  const protocols = new Map();
  const sockets = new Map();
  const entry = (id) => {
    if (!sockets.has(id)) sockets.set(id, { frames: 0 });
    return sockets.get(id);
  };
  cdp.on('Network.responseReceived', (e) => protocols.set(e.response.url, e.response.protocol));
  cdp.on('Network.webSocketCreated', (e) => { entry(e.requestId).url = e.url; });
  cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => { entry(e.requestId).request = e.request; });
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => { entry(e.requestId).response = e.response; });
  cdp.on('Network.webSocketFrameReceived', (e) => { entry(e.requestId).frames++; });
  cdp.on('Network.webSocketClosed', (e) => { entry(e.requestId).closed = true; });
  await cdp.send('Network.enable');
  return {
    protocolOf: (url) => protocols.get(url),
    handshakeOf: async (url) => {
      const deadline = Date.now() + STEP_MS;
      for (;;) {
        const found = [...sockets.values()].find((s) => s.url === url && s.response);
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`no handshake record of ${url} from Chromium`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}

test('Chromium loads the page over h2 and opens wss:// on that connection: 200, echoes, close codes', {
  timeout: TEST_MS,
}, async (t) => {
  const { addr } = await startServe(t, ['--tls-cert', cert, '--tls-key', key]);
  const page = await context.newPage();
  t.after(() => page.close().catch(() => {}));
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  const network = await watchNetwork(page);

  const origin = `https://${addr}`;
  const response = await page.goto(`${origin}/`);
  assert.equal(response.status(), 200, 'GET / over https');
  assert.equal(network.protocolOf(`${origin}/`), 'h2', 'the page came over HTTP/2');

  // The demo page's own socket: its record shows an HTTP/2 handshake (no key to recompute).
  await page.locator('#status.open').waitFor();
  await page.locator('#hs-check.http2').waitFor();
  const demoUrl = await page.textContent('#hs-url');
  const demo = await network.handshakeOf(demoUrl);
  assert.equal(demo.response.status, 200, 'the demo socket opened with a 200, not a 101');

  const binary = randomBytes(70_000);
  const result = await withTimeout(
    page.evaluate(
      async ({ url, binaryB64, stepMs }) => {
        const within = (p, what) =>
          Promise.race([
            p,
            new Promise((_, reject) =>
              setTimeout(() => reject(new Error(`in page: timed out waiting for ${what}`)), stepMs),
            ),
          ]);
        const open = async () => {
          const ws = new WebSocket(url);
          ws.binaryType = 'arraybuffer';
          const messages = [];
          let notify = null;
          ws.onmessage = (e) => {
            messages.push(e.data);
            if (notify) notify();
          };
          const closed = new Promise((resolve) => {
            ws.onclose = (e) => resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean });
          });
          await within(
            new Promise((resolve, reject) => {
              ws.onopen = resolve;
              ws.onerror = () => reject(new Error(`in page: ${url} failed to open`));
            }),
            'open',
          );
          const next = async (what) => {
            while (messages.length === 0) {
              await within(new Promise((r) => { notify = r; }), what);
            }
            return messages.shift();
          };
          return { ws, next, closed };
        };
        const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

        // Echo of text and binary.
        const one = await open();
        one.ws.send('h2 text \u0000 end ✓');
        const text = await one.next('the text echo');
        const sent = Uint8Array.from(atob(binaryB64), (c) => c.charCodeAt(0));
        one.ws.send(sent.buffer);
        const binaryOk = same(new Uint8Array(await one.next('the binary echo')), sent);
        // 1 MiB, more than one HTTP/2 stream window: flow control both ways.
        const mib = new Uint8Array(1 << 20);
        for (let i = 0; i < mib.length; i++) mib[i] = (i * 7 + (i >> 11)) & 0xff;
        one.ws.send(mib.buffer);
        const mibOk = same(new Uint8Array(await one.next('the 1 MiB echo')), mib);
        one.ws.close(4321, 'bye over h2');
        const closeOne = await within(one.closed, 'the first close');

        // A second socket on the same connection, closed with 1000.
        const two = await open();
        two.ws.send('second');
        const second = await two.next('the second echo');
        two.ws.close(1000);
        const closeTwo = await within(two.closed, 'the second close');
        return { text, binaryOk, mibOk, closeOne, second, closeTwo };
      },
      { url: `wss://${addr}/h2-echo`, binaryB64: binary.toString('base64'), stepMs: STEP_MS },
    ),
    6 * STEP_MS,
    'the wss exchange in the page',
  );
  assert.equal(result.text, 'h2 text \u0000 end ✓');
  assert.ok(result.binaryOk, 'binary echo: same bytes');
  assert.ok(result.mibOk, '1 MiB echo: same bytes');
  assert.deepEqual(result.closeOne, { code: 4321, reason: 'bye over h2', wasClean: true });
  assert.equal(result.second, 'second');
  assert.deepEqual(result.closeTwo, { code: 1000, reason: '', wasClean: true });

  // DevTools: the handshakes were answered 200 (HTTP/2 extended CONNECT), not 101.
  const hs = await network.handshakeOf(`wss://${addr}/h2-echo`);
  assert.equal(hs.response.status, 200, 'WebSocket handshake over HTTP/2');
  assert.equal(
    Object.keys(hs.response.headers).find((h) => h.toLowerCase() === 'sec-websocket-accept'),
    undefined,
    'no Sec-WebSocket-Accept over HTTP/2',
  );
  // The three echoes of the first socket (text, binary, 1 MiB) went through DevTools' log.
  assert.ok(hs.frames >= 3, `Chromium logged ${hs.frames} received frames`);
  assert.deepEqual(problems, [], 'the page ran without errors');
});
