// Shared helpers for the Node interop suites (not a test file itself: `node --test` only picks up
// `*.test.mjs`). Everything here is loopback-only, bounded in time, and cleans up what it starts.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocket, WebSocketServer } from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');

/** Milliseconds granted to a single wait (start-up line, one echo, a close) on a shared machine. */
export const STEP_MS = 10_000;

/**
 * The binary under test: `GANGWAY_BIN`, else the release build, else the debug build (the CLI
 * contract in the team brief fixes this order).
 */
export function gangwayBin() {
  if (process.env.GANGWAY_BIN) return process.env.GANGWAY_BIN;
  const release = path.join(repoRoot, 'target', 'release', 'gangway');
  if (existsSync(release)) return release;
  return path.join(repoRoot, 'target', 'debug', 'gangway');
}

// Every child still running when this test process ends is killed, whatever path led there
// (a test's `after` hook normally does it first).
const liveChildren = new Set();
process.on('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
});

/**
 * A self-signed P-256 certificate for 127.0.0.1 and localhost, valid for a day, made by openssl
 * in `dir`: `{ cert, key }` (PEM file paths). An end-entity certificate (openssl's default is a
 * CA, which rustls refuses to see serving a host), so it can be trusted as itself (`--cacert`,
 * Node's `ca`).
 */
export function selfSignedCertificate(dir) {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync(
    'openssl',
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=gangway test',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-addext', 'basicConstraints=critical,CA:FALSE',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000 },
  );
  return { cert, key };
}

/** Rejects with a message naming `what` if `promise` has not settled after `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * A condition re-checked whenever something happens (output, message, exit), so a test can await
 * "stdout has 3 lines" without polling.
 */
class Waiters {
  #waiters = new Set();

  notify() {
    for (const w of [...this.#waiters]) {
      let done;
      try {
        done = w.cond();
      } catch (err) {
        this.#waiters.delete(w);
        w.reject(err);
        continue;
      }
      if (done) {
        this.#waiters.delete(w);
        w.resolve(done);
      }
    }
  }

  /** Resolves with the first truthy value of `cond()`; rejects after `ms` naming `what`. */
  waitFor(cond, ms, what, describe = () => '') {
    const first = cond();
    if (first) return Promise.resolve(first);
    let entry;
    const p = new Promise((resolve, reject) => {
      entry = { cond, resolve, reject };
      this.#waiters.add(entry);
    });
    return withTimeout(p, ms, what).catch((err) => {
      this.#waiters.delete(entry);
      const extra = describe();
      if (extra) err.message += `\n${extra}`;
      throw err;
    });
  }
}

/** Collects a byte stream (a child's stdout or stderr) and counts its lines as it arrives. */
class Output {
  chunks = [];
  bytes = 0;
  newlines = 0;
  #text = null;

  push(chunk) {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    for (let i = chunk.indexOf(0x0a); i !== -1; i = chunk.indexOf(0x0a, i + 1)) this.newlines++;
    this.#text = null;
  }

  buffer() {
    return Buffer.concat(this.chunks, this.bytes);
  }

  /** The output decoded as UTF-8 (invalid bytes become U+FFFD and then fail any comparison). */
  text() {
    this.#text ??= this.buffer().toString('utf8');
    return this.#text;
  }

  /** Complete lines only (a trailing partial line is left out). */
  lines() {
    const parts = this.text().split('\n');
    parts.pop();
    return parts;
  }
}

/**
 * Spawns `gangway ARGS...` with piped stdio. The child is killed in the test's `after` hook if it
 * is still running, so no path (pass, fail, timeout) leaves it behind.
 */
export function spawnGangway(t, args) {
  const bin = gangwayBin();
  const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  liveChildren.add(child);
  const events = new Waiters();
  const proc = {
    child,
    args,
    stdout: new Output(),
    stderr: new Output(),
    exit: null, // { code, signal } once the process has ended and its pipes are closed
    spawnError: null,
  };
  child.stdout.on('data', (c) => {
    proc.stdout.push(c);
    events.notify();
  });
  child.stderr.on('data', (c) => {
    proc.stderr.push(c);
    events.notify();
  });
  // gangway may legitimately stop reading stdin (handshake failure, peer closed first); a write
  // into a closed pipe must not crash the test process.
  child.stdin.on('error', () => {});
  child.on('error', (err) => {
    proc.spawnError = err;
    liveChildren.delete(child);
    events.notify();
  });
  child.on('close', (code, signal) => {
    proc.exit = { code, signal };
    liveChildren.delete(child);
    events.notify();
  });

  const describe = () =>
    `gangway ${args.join(' ')}\n  exit: ${JSON.stringify(proc.exit)}\n` +
    `  stderr: ${JSON.stringify(proc.stderr.text().slice(0, 2000))}\n` +
    `  stdout (first 500 chars): ${JSON.stringify(proc.stdout.text().slice(0, 500))}`;
  const failIfSpawnError = () => {
    if (proc.spawnError) {
      const why = proc.spawnError.message;
      throw new Error(`cannot run ${bin} (set GANGWAY_BIN or build it): ${why}`);
    }
  };

  proc.describe = describe;
  proc.waitFor = (cond, ms, what) =>
    events.waitFor(
      () => {
        failIfSpawnError();
        return cond();
      },
      ms,
      what,
      describe,
    );
  /** Waits for the process to end; resolves with `{ code, signal }`. */
  proc.exited = (ms = STEP_MS) => proc.waitFor(() => proc.exit, ms, 'gangway to exit');
  /** Waits until stdout holds at least `n` complete lines; resolves with all complete lines. */
  proc.stdoutLines = (n, ms = STEP_MS) =>
    proc.waitFor(
      () => {
        if (proc.stdout.newlines >= n) return proc.stdout.lines();
        if (proc.exit) {
          const got = proc.stdout.newlines;
          throw new Error(`gangway exited after ${got} of ${n} stdout line(s)\n${describe()}`);
        }
        return false;
      },
      ms,
      `${n} stdout line(s)`,
    );
  /** The stderr lines (complete or not). */
  proc.stderrLines = () => proc.stderr.text().split('\n').filter((l) => l !== '');

  t.after(() => {
    if (proc.exit === null && proc.spawnError === null) child.kill('SIGKILL');
  });
  return proc;
}

/**
 * Starts `gangway serve --listen 127.0.0.1:0 EXTRA...` and resolves with the process and the
 * address it printed (`listening on 127.0.0.1:PORT`, exactly, as the first stdout line).
 */
export async function startServe(t, extra = []) {
  const proc = spawnGangway(t, ['serve', '--listen', '127.0.0.1:0', ...extra]);
  const [first] = await proc.stdoutLines(1);
  const m = /^listening on (127\.0\.0\.1:(\d+))$/.exec(first);
  assert.ok(m, `first stdout line of serve is ${JSON.stringify(first)}`);
  assert.notEqual(m[2], '0', 'serve must print the real bound port, not 0');
  return { proc, addr: m[1], url: `ws://${m[1]}/` };
}

/**
 * Records everything a `ws` socket (client or server side) reports, attaching the listeners at
 * once so nothing that arrives early is missed.
 */
export function record(ws) {
  const events = new Waiters();
  const rec = {
    ws,
    messages: [], // { data: Buffer, isBinary }
    pings: [],
    pongs: [],
    errors: [],
    closed: null, // { code, reason }
  };
  ws.on('message', (data, isBinary) => {
    rec.messages.push({ data: Buffer.isBuffer(data) ? data : Buffer.concat(data), isBinary });
    events.notify();
  });
  ws.on('ping', (data) => {
    rec.pings.push(data);
    events.notify();
  });
  ws.on('pong', (data) => {
    rec.pongs.push(data);
    events.notify();
  });
  ws.on('error', (err) => {
    rec.errors.push(err);
    events.notify();
  });
  ws.on('close', (code, reason) => {
    rec.closed = { code, reason: reason.toString('utf8') };
    events.notify();
  });
  const describe = () =>
    `  messages so far: ${rec.messages.length}, closed: ${JSON.stringify(rec.closed)}, ` +
    `errors: ${rec.errors.map((e) => e.message).join('; ')}`;
  rec.waitFor = (cond, ms, what) => events.waitFor(cond, ms, what, describe);
  /** Resolves with the first `n` messages once they have arrived. */
  rec.messagesN = (n, ms = STEP_MS) =>
    rec.waitFor(
      () => {
        if (rec.messages.length >= n) return rec.messages.slice(0, n);
        if (rec.closed) {
          throw new Error(
            `connection closed (code ${rec.closed.code}, ` +
              `reason ${JSON.stringify(rec.closed.reason)}) ` +
              `after ${rec.messages.length} of ${n} expected message(s)`,
          );
        }
        return false;
      },
      ms,
      `${n} message(s)`,
    );
  rec.closedEvent = (ms = STEP_MS) => rec.waitFor(() => rec.closed, ms, 'the close event');
  return rec;
}

/** Opens a `ws` client; terminated in `after` if still open. Resolves with its recorder. */
export async function openClient(t, url, protocols, options) {
  const ws = new WebSocket(url, protocols, options);
  const rec = record(ws);
  t.after(() => ws.terminate());
  await withTimeout(
    new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) =>
        reject(new Error(`unexpected response ${res.statusCode}`)),
      );
    }),
    STEP_MS,
    `the WebSocket handshake with ${url}`,
  );
  return rec;
}

/**
 * Starts a `ws` server on 127.0.0.1 (free port). `onConnection(ws, req, rec)` runs synchronously
 * in the 'connection' event, before any message can be delivered. Closed in `after`.
 */
export async function startWsServer(t, options = {}, onConnection = () => {}) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, ...options });
  const conns = [];
  const events = new Waiters();
  wss.on('connection', (ws, req) => {
    const rec = record(ws);
    conns.push({ ws, req, rec });
    onConnection(ws, req, rec);
    events.notify();
  });
  // Bounded: a connection still in its handshake could otherwise hold `close` open.
  t.after(() =>
    withTimeout(
      new Promise((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => resolve());
      }),
      2_000,
      'the ws server to close',
    ).catch(() => {}),
  );
  await withTimeout(
    new Promise((resolve, reject) => {
      wss.once('listening', resolve);
      wss.once('error', reject);
    }),
    STEP_MS,
    'the ws server to listen',
  );
  const { port } = wss.address();
  return {
    wss,
    port,
    url: `ws://127.0.0.1:${port}/`,
    conns,
    /** Resolves with `{ ws, req, rec }` of the first connection. */
    connection: (ms = STEP_MS) =>
      events.waitFor(() => conns[0], ms, 'gangway to connect to the ws server'),
  };
}

// --- the stdout escaping of `gangway connect`, written from the CLI contract ---

const HEX = '0123456789abcdef';
const hexEscape = (b) => `\\x${HEX[b >> 4]}${HEX[b & 15]}`;

/** Length of the valid UTF-8 sequence (RFC 3629 §4) starting at `i`, or 0 if there is none. */
function utf8SeqLen(buf, i) {
  const b0 = buf[i];
  const cont = (j, lo = 0x80, hi = 0xbf) => j < buf.length && buf[j] >= lo && buf[j] <= hi;
  if (b0 >= 0xc2 && b0 <= 0xdf) return cont(i + 1) ? 2 : 0;
  if (b0 >= 0xe0 && b0 <= 0xef) {
    const [lo, hi] = b0 === 0xe0 ? [0xa0, 0xbf] : b0 === 0xed ? [0x80, 0x9f] : [0x80, 0xbf];
    return cont(i + 1, lo, hi) && cont(i + 2) ? 3 : 0;
  }
  if (b0 >= 0xf0 && b0 <= 0xf4) {
    const [lo, hi] = b0 === 0xf0 ? [0x90, 0xbf] : b0 === 0xf4 ? [0x80, 0x8f] : [0x80, 0xbf];
    return cont(i + 1, lo, hi) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  }
  return 0;
}

/**
 * The line `gangway connect` must print for a received message (without the `\n`):
 * `\` `\n` `\r` `\t` escaped, other bytes 0x00–0x1F and 0x7F as `\xNN`, bytes that are not part
 * of valid UTF-8 as `\xNN`, everything else verbatim.
 */
export function expectedLine(buf) {
  const parts = [];
  let run = 0; // start of the current verbatim run
  let i = 0;
  const flush = (end) => {
    if (end > run) parts.push(buf.toString('utf8', run, end));
  };
  while (i < buf.length) {
    const b = buf[i];
    if (b >= 0x20 && b < 0x7f && b !== 0x5c) {
      i++;
      continue;
    }
    if (b >= 0x80) {
      const n = utf8SeqLen(buf, i);
      if (n > 0) {
        i += n;
        continue;
      }
    }
    flush(i);
    if (b === 0x5c) parts.push('\\\\');
    else if (b === 0x0a) parts.push('\\n');
    else if (b === 0x0d) parts.push('\\r');
    else if (b === 0x09) parts.push('\\t');
    else parts.push(hexEscape(b));
    i++;
    run = i;
  }
  flush(i);
  return parts.join('');
}

// --- compact comparisons (a 16 MiB diff is useless in a report) ---

function firstDifference(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Asserts two Buffers are byte-for-byte equal; on failure names the first differing offset. */
export function assertSameBytes(actual, expected, what) {
  assert.ok(Buffer.isBuffer(actual), `${what}: expected a Buffer, got ${typeof actual}`);
  if (actual.equals(expected)) return;
  const i = firstDifference(actual, expected);
  const ctx = (b) => b.subarray(Math.max(0, i - 8), i + 8).toString('hex');
  assert.fail(
    `${what}: ${actual.length} bytes received, ${expected.length} expected; first difference at ` +
      `offset ${i}: got ${ctx(actual)}, expected ${ctx(expected)} ` +
      `(hex, from offset ${Math.max(0, i - 8)})`,
  );
}

/** Asserts two strings are equal; on failure shows only the text around the first difference. */
export function assertSameText(actual, expected, what) {
  if (actual === expected) return;
  const i = firstDifference(actual, expected);
  const ctx = (s) => JSON.stringify(s.slice(Math.max(0, i - 40), i + 40));
  assert.fail(
    `${what}: length ${actual.length}, expected ${expected.length}; ` +
      `first difference at char ${i}:\n` +
      `  got      ${ctx(actual)}\n  expected ${ctx(expected)}`,
  );
}
